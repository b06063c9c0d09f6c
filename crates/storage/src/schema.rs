//! The layout of a backend and the start-up migration.
//!
//! Cell tables are go-mezzanine's, one per shard (`cells_0007`). mezzanine adds two small
//! tables of its own and never alters a cells table that exists already:
//!
//! - `mezzanine_schema`: one row, the layout version and the `num_shards` the backend was laid
//!   out for, and the cluster it belongs to (`cluster_id`, made with the catalog) with where
//!   that cluster's catalog is (`catalog_url`). When it is current, start-up costs one round
//!   trip per backend.
//! - `mezzanine_shard_state`: one row per shard the backend holds, with its state and epoch.
//!   Every client write locks its shard's row (invariant I1: commits, and so visibility, follow
//!   `added_id` order) and checks that the shard is `active` on this backend. The row also
//!   holds the highest term of the mover's leadership that changed the shard here (`term`):
//!   the mover's changes from a lower term are refused (`crate::transfer`). And it holds the
//!   latest `created_at` given to a cell of the shard here (`last_created_at`; set by the
//!   migration for tables that hold cells already, and when an import is activated; NULL for
//!   an empty shard): the next write's cells are created after it (invariant I7,
//!   `crate::cells`).
//!
//! One index mezzanine adds to every cells table, go-mezzanine's or its own:
//! `idx_cells_NNNN_created_added` on `(created_at, added_id)`, which serves partition reads by
//! `created_at`. A new table gets it with the others; an existing one gets it online
//! ([`crate::stream_index`], `CREATE INDEX CONCURRENTLY`), columns untouched.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use tokio_postgres::types::Type;

use crate::error::SqlState;
use crate::{Backend, StorageError};

/// The version of mezzanine's own layout on a backend. 2: the cluster (`cluster_id`,
/// `catalog_url`); 3: the leader's term on each shard's row (`mezzanine_shard_state.term`);
/// 4: the latest `created_at` of each shard (`mezzanine_shard_state.last_created_at`).
pub const SCHEMA_VERSION: i32 = 4;

/// Key of the session advisory lock that lets one node at a time build missing stream
/// indexes on a backend (`crate::stream_index`; taken with `pg_try_advisory_lock`, never
/// waited for).
pub(crate) const STREAM_INDEX_LOCK: i64 = 0x6d65_7a7a_0002;

/// The key of the index that serves partition reads by `created_at`, as `pg_get_indexdef`
/// prints it (see [`CellsIndex::key`]).
pub const STREAM_INDEX_KEY: &str = "(created_at, added_id)";

/// The name of a shard's stream index: `idx_cells_NNNN_created_added`, in go-mezzanine's style
/// (`idx_cells_NNNN_row_col`, …) and a name go-mezzanine never uses, on a key none of its
/// indexes has, so go-mezzanine starting on the table adds no duplicate.
pub fn stream_index_name(shard: u32) -> String {
    format!("idx_{}_created_added", cells_table(shard))
}

/// Shards created per statement batch during a cold start (each batch is one transaction).
const CREATE_CHUNK: usize = 64;

/// Key of the session advisory lock that serialises migrations of one backend.
pub(crate) const MIGRATION_LOCK: i64 = 0x6d65_7a7a_0001;

/// The name of a shard's cells table: `cells_` and the shard number on four digits.
pub fn cells_table(shard: u32) -> String {
    format!("cells_{shard:04}")
}

/// The DDL of one shard's cells table, exactly as go-mezzanine lays it out: the table with its
/// primary key ([`cells_table_bare_ddl`]) and its unique constraint and secondary indexes
/// ([`cells_index_ddl`]).
pub fn cells_table_ddl(shard: u32) -> String {
    let mut ddl = cells_table_bare_ddl(shard);
    for index in cells_index_ddl(shard) {
        let _ = writeln!(ddl, "{};", index.ddl);
    }
    ddl
}

/// The table alone, with its primary key (`added_id`) but without the unique constraint and
/// secondary indexes: what an import copies into (building those once, after the bulk copy,
/// costs a fraction of maintaining them row by row).
pub fn cells_table_bare_ddl(shard: u32) -> String {
    let t = cells_table(shard);
    format!(
        "CREATE TABLE {t} (\
           added_id BIGSERIAL PRIMARY KEY, \
           row_key UUID NOT NULL, \
           column_name TEXT NOT NULL, \
           ref_key BIGINT NOT NULL, \
           body JSONB NOT NULL, \
           created_at TIMESTAMPTZ NOT NULL DEFAULT now());\n"
    )
}

/// One of the indexes of a cells table besides its primary key.
pub struct CellsIndex {
    /// Whether it is unique (the cell key's constraint).
    pub unique: bool,
    /// Its key as `pg_get_indexdef` prints it after `USING btree `: `(row_key, column_name,
    /// ref_key DESC)`. An index of the same uniqueness and key is the same index, whatever
    /// its name (go-mezzanine's tables may name them otherwise).
    pub key: &'static str,
    /// The statement that builds it.
    pub ddl: String,
}

/// The unique constraint and the secondary indexes of a cells table: go-mezzanine's, and the
/// stream index on `(created_at, added_id)` ([`stream_index_name`]).
pub fn cells_index_ddl(shard: u32) -> [CellsIndex; 5] {
    let t = cells_table(shard);
    let index = |name: &str, key: &'static str| CellsIndex {
        unique: false,
        key,
        ddl: format!("CREATE INDEX {t}_{name} ON {t} {key}"),
    };
    [
        CellsIndex {
            unique: true,
            key: "(row_key, column_name, ref_key)",
            ddl: format!(
                "ALTER TABLE {t} ADD CONSTRAINT {t}_cell_key UNIQUE (row_key, column_name, ref_key)"
            ),
        },
        index("row_col_ref", "(row_key, column_name, ref_key DESC)"),
        index("col_added", "(column_name, added_id)"),
        index("col_created", "(column_name, created_at)"),
        CellsIndex {
            unique: false,
            key: STREAM_INDEX_KEY,
            ddl: format!(
                "CREATE INDEX {} ON {t} {STREAM_INDEX_KEY}",
                stream_index_name(shard)
            ),
        },
    ]
}

const META_DDL: &str = "\
CREATE TABLE IF NOT EXISTS mezzanine_schema (
    id INT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    version INT NOT NULL,
    num_shards INT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now());
ALTER TABLE mezzanine_schema ADD COLUMN IF NOT EXISTS cluster_id UUID;
ALTER TABLE mezzanine_schema ADD COLUMN IF NOT EXISTS catalog_url TEXT;
CREATE TABLE IF NOT EXISTS mezzanine_shard_state (
    shard INT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('active', 'importing', 'frozen', 'retired')),
    epoch BIGINT NOT NULL DEFAULT 1,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now());
ALTER TABLE mezzanine_shard_state ADD COLUMN IF NOT EXISTS term BIGINT NOT NULL DEFAULT 0;
ALTER TABLE mezzanine_shard_state ADD COLUMN IF NOT EXISTS last_created_at TIMESTAMPTZ;";

/// What the start-up migration found and did on one backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// The schema was current: nothing was changed (one round trip).
    pub warm: bool,
    /// Cells tables created now.
    pub created_tables: usize,
    /// Cells tables that existed already (go-mezzanine's, or an earlier run's) and were adopted.
    pub adopted_tables: usize,
    /// Shards this backend marks active although the configured map gives them elsewhere.
    pub foreign_active: Vec<u32>,
    /// Shards the map gives to this backend that it does not mark active (left alone when
    /// `create_missing` is false: a cutover in progress, or a damaged backend).
    pub not_active: Vec<u32>,
}

/// Makes sure `backend` holds `shards` ready for traffic. When the layout is current this is a
/// single query; otherwise the missing tables and metadata are created, in batches, under an
/// advisory lock so that nodes starting together do not race.
///
/// `create_missing` is true only when the shard map comes from `shards.json` for the first
/// time (a new cluster, or adopting go-mezzanine databases): then a shard without a state row
/// is taken to be served here and marked `active`. Once the catalog exists, only moves create
/// shards on a backend, so a missing one is reported ([`MigrationReport::not_active`]) and
/// never created empty (which would serve an empty shard in place of its data).
pub async fn prepare_backend(
    backend: &Backend,
    num_shards: u32,
    shards: &[u32],
    create_missing: bool,
) -> Result<MigrationReport, StorageError> {
    prepare_member(backend, num_shards, shards, create_missing, None).await
}

/// The cluster a backend belongs to, as its `mezzanine_schema` row records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTag {
    /// The cluster's id (a UUID, made with its catalog).
    pub cluster_id: String,
    /// The catalog's database URL, as the nodes reach it (never shown unmasked).
    pub catalog_url: String,
}

/// [`prepare_backend`] for a member of the cluster `cluster`: a backend that records another
/// cluster is refused ([`StorageError::Layout`], naming both ids); one that records none (new,
/// go-mezzanine's, or laid out before cluster ids) is tagged with `cluster`, and so is one
/// whose recorded catalog location changed. One round trip when all is current.
pub async fn prepare_member(
    backend: &Backend,
    num_shards: u32,
    shards: &[u32],
    create_missing: bool,
    cluster: Option<&ClusterTag>,
) -> Result<MigrationReport, StorageError> {
    let layout = |message: String| StorageError::Layout {
        backend: backend.label().to_owned(),
        message,
    };
    let mut lease = backend.lease().await?;
    let current = lease
        .query(
            "SELECT version, num_shards, \
                    ARRAY(SELECT shard FROM mezzanine_shard_state WHERE state = 'active' ORDER BY shard), \
                    to_jsonb(s)->>'cluster_id', to_jsonb(s)->>'catalog_url' \
             FROM mezzanine_schema s",
            &[],
        )
        .await;
    let mut active: BTreeSet<u32> = BTreeSet::new();
    let mut version = None;
    let mut recorded = None;
    match current {
        Ok(rows) => {
            if let Some(row) = rows.first() {
                let v: i32 = row.try_get(0).map_err(|e| layout(e.to_string()))?;
                let n: i32 = row.try_get(1).map_err(|e| layout(e.to_string()))?;
                let a: Vec<i32> = row.try_get(2).map_err(|e| layout(e.to_string()))?;
                check_recorded(backend, v, n, num_shards)?;
                recorded = tag_from(backend, row, 3)?;
                if let (Some(want), Some(have)) = (cluster, &recorded) {
                    check_member(backend, have, want)?;
                }
                version = Some(v);
                active = a.into_iter().map(|s| s as u32).collect();
            }
        }
        Err(e) if e.is(&SqlState::UNDEFINED_TABLE) => {} // no metadata yet
        Err(e) => return Err(e),
    }
    let wanted: BTreeSet<u32> = shards.iter().copied().collect();
    let foreign_active: Vec<u32> = active.difference(&wanted).copied().collect();
    let not_active: Vec<u32> = wanted.difference(&active).copied().collect();
    if version == Some(SCHEMA_VERSION) && (not_active.is_empty() || !create_missing) {
        if let Some(want) = cluster.filter(|w| recorded.as_ref() != Some(*w)) {
            record_member(&lease, backend, want).await?;
        }
        return Ok(MigrationReport {
            warm: true,
            foreign_active,
            not_active,
            ..Default::default()
        });
    }
    let wanted = if create_missing {
        wanted
    } else {
        BTreeSet::new()
    };

    // Cold or partial: create what is missing.
    lease.extend(Duration::from_secs(600));
    lease
        .query(
            "SELECT pg_advisory_lock($1)",
            &[(&MIGRATION_LOCK, Type::INT8)],
        )
        .await?;
    let result = migrate(&lease, num_shards, &wanted).await;
    let unlock = lease
        .query(
            "SELECT pg_advisory_unlock($1)",
            &[(&MIGRATION_LOCK, Type::INT8)],
        )
        .await;
    let (created_tables, adopted_tables) = result?;
    unlock?;
    if let Some(want) = cluster {
        record_member(&lease, backend, want).await?;
    }
    Ok(MigrationReport {
        warm: false,
        created_tables,
        adopted_tables,
        foreign_active,
        not_active: if create_missing {
            Vec::new()
        } else {
            not_active
        },
    })
}

/// The cluster `backend` records (`None`: no mezzanine metadata, or no cluster recorded yet):
/// one round trip.
pub async fn recorded_cluster(backend: &Backend) -> Result<Option<ClusterTag>, StorageError> {
    let rows = match backend
        .lease()
        .await?
        .query(
            "SELECT to_jsonb(s)->>'cluster_id', to_jsonb(s)->>'catalog_url' FROM mezzanine_schema s",
            &[],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) if e.is(&SqlState::UNDEFINED_TABLE) => return Ok(None),
        Err(e) => return Err(e),
    };
    match rows.first() {
        Some(row) => tag_from(backend, row, 0),
        None => Ok(None),
    }
}

/// The cluster tag in columns `at` and `at + 1` of `row`, if a cluster id is recorded.
fn tag_from(
    backend: &Backend,
    row: &tokio_postgres::Row,
    at: usize,
) -> Result<Option<ClusterTag>, StorageError> {
    let id: Option<String> = row
        .try_get(at)
        .map_err(|e| StorageError::shape(backend, e))?;
    let url: Option<String> = row
        .try_get(at + 1)
        .map_err(|e| StorageError::shape(backend, e))?;
    Ok(id.map(|cluster_id| ClusterTag {
        cluster_id,
        catalog_url: url.unwrap_or_default(),
    }))
}

/// Refuses a backend that records another cluster than `want`.
fn check_member(
    backend: &Backend,
    have: &ClusterTag,
    want: &ClusterTag,
) -> Result<(), StorageError> {
    if have.cluster_id == want.cluster_id {
        return Ok(());
    }
    Err(StorageError::Layout {
        backend: backend.label().to_owned(),
        message: other_cluster(have, want),
    })
}

/// Why a backend of cluster `have` is refused by a node of cluster `want`.
pub fn other_cluster(have: &ClusterTag, want: &ClusterTag) -> String {
    format!(
        "this database belongs to cluster {} (its catalog is at {}), not to cluster {} of the \
         catalog this node uses ({}); a backend belongs to one cluster only: use that cluster's \
         shards.json or CATALOG_URL, or give this cluster a fresh database",
        have.cluster_id,
        crate::mask_url(&have.catalog_url),
        want.cluster_id,
        crate::mask_url(&want.catalog_url)
    )
}

/// Records `want` as the cluster of `backend` (keeping a cluster id recorded meanwhile by
/// another node, which is then refused).
async fn record_member(
    lease: &crate::backend::Lease<'_>,
    backend: &Backend,
    want: &ClusterTag,
) -> Result<(), StorageError> {
    let rows = lease
        .query(
            "UPDATE mezzanine_schema SET cluster_id = coalesce(cluster_id, $1::text::uuid), \
                    catalog_url = CASE WHEN cluster_id IS NULL OR cluster_id = $1::text::uuid \
                                       THEN $2 ELSE catalog_url END, updated_at = now() \
             WHERE id = 1 RETURNING cluster_id::text, catalog_url",
            &[
                (&want.cluster_id, Type::TEXT),
                (&want.catalog_url, Type::TEXT),
            ],
        )
        .await?;
    match rows.first() {
        Some(row) => match tag_from(backend, row, 0)? {
            Some(have) => check_member(backend, &have, want),
            None => Err(StorageError::shape(backend, "no cluster id recorded")),
        },
        None => Err(StorageError::shape(backend, "no mezzanine_schema row")),
    }
}

/// Refuses a backend whose recorded layout (`mezzanine_schema`) does not fit `num_shards` or
/// is newer than this mezzanine.
pub(crate) fn check_recorded(
    backend: &Backend,
    version: i32,
    recorded_shards: i32,
    num_shards: u32,
) -> Result<(), StorageError> {
    let layout = |message: String| StorageError::Layout {
        backend: backend.label().to_owned(),
        message,
    };
    if recorded_shards as u32 != num_shards {
        return Err(layout(format!(
            "this database was laid out for NUM_SHARDS={recorded_shards}, but NUM_SHARDS={num_shards} was given; \
             the shard of every row key depends on it, so mezzanine refuses to start"
        )));
    }
    if version > SCHEMA_VERSION {
        return Err(layout(format!(
            "the schema version is {version}, newer than this mezzanine understands ({SCHEMA_VERSION}): upgrade mezzanine"
        )));
    }
    Ok(())
}

/// Creates mezzanine's metadata tables where missing (idempotent). Callers hold
/// [`MIGRATION_LOCK`].
pub(crate) async fn ensure_metadata(lease: &crate::backend::Lease<'_>) -> Result<(), StorageError> {
    lease.batch_execute(META_DDL).await
}

/// Creates the cells tables of `wanted` that do not exist yet (go-mezzanine's DDL; `indexed`:
/// with their unique constraint and secondary indexes, which an import builds after its bulk
/// copy) and adopts the others untouched. Returns (created, adopted). Callers hold
/// [`MIGRATION_LOCK`].
pub(crate) async fn create_missing_tables(
    lease: &crate::backend::Lease<'_>,
    wanted: &BTreeSet<u32>,
    indexed: bool,
) -> Result<(usize, usize), StorageError> {
    let rows = lease
        .query(
            "SELECT c.relname::text FROM pg_class c \
             WHERE c.relnamespace = current_schema()::regnamespace \
               AND c.relkind IN ('r', 'p') AND c.relname ~ '^cells_[0-9]{4,}$'",
            &[],
        )
        .await?;
    let existing: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r.try_get::<_, String>(0).ok())
        .collect();
    let missing: Vec<u32> = wanted
        .iter()
        .copied()
        .filter(|&s| !existing.contains(&cells_table(s)))
        .collect();
    for chunk in missing.chunks(CREATE_CHUNK) {
        let mut sql = String::new();
        for &s in chunk {
            match indexed {
                true => sql.push_str(&cells_table_ddl(s)),
                false => sql.push_str(&cells_table_bare_ddl(s)),
            }
        }
        lease.batch_execute(&sql).await?;
    }
    Ok((missing.len(), wanted.len() - missing.len()))
}

/// How many of a table's last cells (by `added_id`) [`record_latest_created`] looks at.
const LATEST_TAIL: i64 = 1000;

/// Records the latest `created_at` (`mezzanine_shard_state.last_created_at`) of every shard
/// here that has cells but none recorded: tables adopted from go-mezzanine or written before
/// layout 4 (an import gets its own when activated, `crate::transfer::set_state`). Their
/// cells' `created_at` is their transaction's start, not in `added_id` order, so the latest
/// of the last [`LATEST_TAIL`] cells by `added_id` is taken (a primary-key range, cheap on
/// any table, where `max(created_at)` over the table would be a full scan without the stream
/// index): only a transaction that started after the last thousand cells' transactions yet
/// inserted before them would be later, and the next write is never earlier than the clock
/// anyway, which has passed every `now()` go-mezzanine took on this server. Returns how many
/// it recorded. Callers hold [`MIGRATION_LOCK`].
async fn record_latest_created(lease: &crate::backend::Lease<'_>) -> Result<usize, StorageError> {
    // The shards with a cells table (named as `cells_table` names them).
    let rows = lease
        .query(
            "SELECT shard FROM mezzanine_shard_state \
             WHERE state <> 'importing' AND last_created_at IS NULL \
               AND to_regclass(format('%I', 'cells_' || CASE WHEN shard < 10000 \
                     THEN lpad(shard::text, 4, '0') ELSE shard::text END)) IS NOT NULL \
             ORDER BY 1",
            &[],
        )
        .await?;
    let shards: Vec<i32> = rows.iter().filter_map(|r| r.try_get(0).ok()).collect();
    for chunk in shards.chunks(CREATE_CHUNK) {
        // The primary key's order, never a scan (an empty table's plan might be one).
        let mut sql =
            String::from("BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off;\n");
        for &s in chunk {
            let t = cells_table(s as u32);
            let _ = writeln!(
                sql,
                "UPDATE mezzanine_shard_state SET last_created_at = \
                   (SELECT max(created_at) FROM \
                      (SELECT created_at FROM {t} ORDER BY added_id DESC LIMIT {LATEST_TAIL}) AS tail) \
                 WHERE shard = {s} AND last_created_at IS NULL;"
            );
        }
        sql.push_str("COMMIT;");
        if let Err(e) = lease.batch_execute(&sql).await {
            if lease.is_idle() {
                let _ = lease.batch_execute("ROLLBACK").await;
            }
            return Err(e);
        }
    }
    Ok(shards.len())
}

async fn migrate(
    lease: &crate::backend::Lease<'_>,
    num_shards: u32,
    wanted: &BTreeSet<u32>,
) -> Result<(usize, usize), StorageError> {
    ensure_metadata(lease).await?;
    let (created, adopted) = create_missing_tables(lease, wanted, true).await?;
    let shards: Vec<i32> = wanted.iter().map(|&s| s as i32).collect();
    lease
        .query(
            "INSERT INTO mezzanine_shard_state (shard, state) SELECT unnest($1::int4[]), 'active' \
             ON CONFLICT (shard) DO NOTHING",
            &[(&shards, Type::INT4_ARRAY)],
        )
        .await?;
    record_latest_created(lease).await?;
    let n = num_shards as i32;
    lease
        .query(
            "INSERT INTO mezzanine_schema (id, version, num_shards) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, updated_at = now()",
            &[(&SCHEMA_VERSION, Type::INT4), (&n, Type::INT4)],
        )
        .await?;
    Ok((created, adopted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_padded_to_four_digits() {
        assert_eq!(cells_table(7), "cells_0007");
        assert_eq!(cells_table(4095), "cells_4095");
    }

    #[test]
    fn ddl_has_the_go_mezzanine_shape() {
        let ddl = cells_table_ddl(7);
        for part in [
            "added_id BIGSERIAL PRIMARY KEY",
            "row_key UUID NOT NULL",
            "column_name TEXT NOT NULL",
            "ref_key BIGINT NOT NULL",
            "body JSONB NOT NULL",
            "created_at TIMESTAMPTZ NOT NULL DEFAULT now()",
            "UNIQUE (row_key, column_name, ref_key)",
            "ON cells_0007 (row_key, column_name, ref_key DESC)",
            "ON cells_0007 (column_name, added_id)",
            "ON cells_0007 (column_name, created_at)",
            "CREATE INDEX idx_cells_0007_created_added ON cells_0007 (created_at, added_id)",
        ] {
            assert!(ddl.contains(part), "missing {part}");
        }
    }
}
