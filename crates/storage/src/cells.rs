//! The statements that write and read the cells of one shard.
//!
//! Every statement here is a single round trip (`query_typed`: parameters bound with their
//! types, nothing prepared server-side, so thousands of shard tables cost no statement cache).

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use mezzanine_core::page::Page;
use mezzanine_core::{CellKey, NewCell};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::schema::cells_table;
use crate::shard_state::ShardState;
use crate::{Backend, StorageError};

/// A stored cell, as clients see it.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub added_id: i64,
    pub row_key: Uuid,
    pub column_name: String,
    pub ref_key: i64,
    /// The body as PostgreSQL's JSONB renders it.
    pub body: Box<RawValue>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl Cell {
    /// About what the cell weighs in an answer: its body and its other fields.
    pub fn stored_size(&self) -> usize {
        self.body.get().len() + self.column_name.len() + 128
    }
}

fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// The result of writing one cell.
#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// Newly stored.
    Created(Cell),
    /// The same cell (same coordinates, equal body) was stored before: an idempotent success.
    Existing(Cell),
    /// Another body is stored at these coordinates; the stored cell is returned.
    Conflict(Cell),
}

/// Where a partition read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionRead {
    /// Cells with `added_id` greater than this, in `added_id` order.
    AfterAddedId(i64),
    /// Cells created after this instant (all cells when `None`), in `created_at` (then
    /// `added_id`) order.
    AfterCreatedAt(Option<DateTime<Utc>>),
}

pub(crate) const CELL_COLUMNS: &str =
    "added_id, row_key, column_name, ref_key, body::text, created_at";

fn cell_from(row: &Row, first: usize, backend: &Backend) -> Result<Cell, StorageError> {
    let err = |e: tokio_postgres::Error| StorageError::shape(backend, e);
    let body: String = row.try_get(first + 4).map_err(err)?;
    let body = RawValue::from_string(body).map_err(|e| StorageError::Database {
        backend: backend.label().to_owned(),
        code: None,
        message: format!("stored body is not JSON: {e}"),
    })?;
    Ok(Cell {
        added_id: row.try_get(first).map_err(err)?,
        row_key: row.try_get(first + 1).map_err(err)?,
        column_name: row.try_get(first + 2).map_err(err)?,
        ref_key: row.try_get(first + 3).map_err(err)?,
        body,
        created_at: row.try_get(first + 5).map_err(err)?,
    })
}

/// Runs a fenced read of one shard on a fresh lease. `sql` selects `CELL_COLUMNS` from the
/// shard's table; it is wrapped so that the same statement (one snapshot) also reads the
/// shard's state row on this backend, and nothing is returned unless the shard is `active`
/// or `frozen` here (invariant I2: a node with a stale map never reads a copy that moved
/// away). `$1` is the shard; the query's own parameters start at `$2`.
async fn select_cells(
    backend: &Backend,
    shard: u32,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<Vec<Cell>, StorageError> {
    let mut cells = Vec::new();
    read_cells(backend, shard, sql, params, |c| {
        cells.push(c);
        true
    })
    .await?;
    Ok(cells)
}

/// [`select_cells`], handing the cells to `each` as they arrive (until it returns `false`),
/// so that the caller holds only what it keeps. `each` sees no cell unless the fence allows.
pub(crate) async fn read_cells(
    backend: &Backend,
    shard: u32,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
    mut each: impl FnMut(Cell) -> bool,
) -> Result<(), StorageError> {
    let fenced = format!(
        "SELECT st.state, c.* FROM mezzanine_shard_state st \
         LEFT JOIN LATERAL ({sql}) c ON st.state IN ('active', 'frozen') \
         WHERE st.shard = $1"
    );
    let shard_i = shard as i32;
    let mut all: Vec<(&(dyn ToSql + Sync), Type)> = Vec::with_capacity(params.len() + 1);
    all.push((&shard_i, Type::INT4));
    all.extend(params.iter().map(|(v, t)| (*v, t.clone())));
    let lease = backend.lease().await?;
    // The first row carries the state (every row does); no row: no state row here.
    let mut state: Option<Option<String>> = None;
    let mut bad = None;
    lease
        .query_each(&fenced, &all, |row| {
            if state.is_none() {
                let s: Option<String> = row.try_get(0).ok();
                let serves = allowed(s.as_deref(), ShardState::serves);
                state = Some(s);
                if !serves {
                    return false;
                }
            }
            if row.try_get::<_, Option<i64>>(1).ok().flatten().is_none() {
                return true; // the lateral join's empty side: no cell matched
            }
            match cell_from(&row, 1, backend) {
                Ok(c) => each(c),
                Err(e) => {
                    bad = Some(e);
                    false
                }
            }
        })
        .await?;
    fence(backend, shard, state.flatten(), ShardState::serves)?;
    bad.map_or(Ok(()), Err)
}

fn allowed(state: Option<&str>, allows: impl Fn(ShardState) -> bool) -> bool {
    matches!(state.map(str::parse::<ShardState>), Some(Ok(s)) if allows(s))
}

/// The fence (I2): the shard's state row on this backend, read by the statement itself (its
/// first column), must be one that `allows` the operation; otherwise the request belongs
/// elsewhere ([`StorageError::NotServed`], which the server holds and retries at the new
/// place).
pub(crate) fn fence(
    backend: &Backend,
    shard: u32,
    state: Option<String>,
    allows: impl Fn(ShardState) -> bool,
) -> Result<(), StorageError> {
    if allowed(state.as_deref(), allows) {
        return Ok(());
    }
    Err(StorageError::NotServed {
        shard,
        backend: backend.label().to_owned(),
        state: state.unwrap_or_else(|| "absent".to_owned()),
    })
}

/// Cells as column arrays, bound to `unnest($n::uuid[], $n::text[], $n::int8[], $n::jsonb[])`.
struct CellArrays<'a> {
    row_keys: Vec<Uuid>,
    columns: Vec<&'a str>,
    ref_keys: Vec<i64>,
    bodies: Vec<&'a serde_json::Value>,
}

impl<'a> CellArrays<'a> {
    fn of(cells: impl Iterator<Item = &'a NewCell>) -> Self {
        let mut a = CellArrays {
            row_keys: Vec::new(),
            columns: Vec::new(),
            ref_keys: Vec::new(),
            bodies: Vec::new(),
        };
        for c in cells {
            a.row_keys.push(c.key.row_key);
            a.columns.push(c.key.column_name.as_str());
            a.ref_keys.push(c.key.ref_key);
            a.bodies.push(&c.body);
        }
        a
    }
}

/// Writes cells that all belong to `shard`, as one statement (one transaction).
///
/// The statement first locks the shard's row in `mezzanine_shard_state` and checks that the
/// shard is `active` here (the fence), and only then inserts: writers of one shard are
/// serialised, so `added_id` values are taken and committed in the same order and the change
/// stream never skips (invariant I1). Under the same lock it gives the cells their
/// `created_at`: strictly increasing per shard in commit order, each cell after the shard's
/// previous one (`mezzanine_shard_state.last_created_at`, updated in the same statement) and
/// no earlier than the clock (invariant I7), so a reader paging by `created_at` skips and
/// repeats nothing. Cells whose coordinates exist already are reported as
/// [`WriteOutcome::Existing`] (equal body) or [`WriteOutcome::Conflict`]; the others are stored.
/// Results come back in input order.
pub async fn write_cells(
    backend: &Backend,
    shard: u32,
    cells: &[&NewCell],
) -> Result<Vec<WriteOutcome>, StorageError> {
    if cells.is_empty() {
        return Ok(Vec::new());
    }
    let lease = backend.lease().await?;
    write_group(&lease, backend, shard, cells).await
}

/// Writes several shards' groups of cells held by one backend in one transaction, on one
/// connection. The groups' statements are pipelined (sent together, answered in order) in
/// ascending shard order, so concurrent batches take shard locks in the same order and never
/// deadlock, and each shard's lock is held until the commit (I1). Results are returned only
/// once the commit succeeded; if anything fails, every group is reported failed. A single
/// group is one statement, its own transaction. `groups` must be sorted by shard; results come
/// back in the same order.
///
/// Why one transaction per backend rather than per shard: measured on 4096 shards (a
/// 1000-cell batch touches ~1000 tables), it is 2.5 times faster, because each commit is a
/// WAL flush; the price is that concurrent batches touching the same shards queue behind each
/// other's commit.
pub async fn write_shard_groups(
    backend: &Backend,
    groups: &[(u32, Vec<&NewCell>)],
) -> Vec<Result<Vec<WriteOutcome>, StorageError>> {
    let all_failed = |e: StorageError| groups.iter().map(|_| Err(e.clone())).collect();
    let lease = match backend.lease().await {
        Ok(l) => l,
        Err(e) => return all_failed(e),
    };
    let lease = &lease;
    if let [(shard, cells)] = groups {
        return vec![write_group(lease, backend, *shard, cells).await];
    }
    if let Err(e) = lease.batch_execute("BEGIN").await {
        return all_failed(e);
    }
    let results: Vec<Result<Vec<WriteOutcome>, StorageError>> = futures::future::join_all(
        groups
            .iter()
            .map(|(shard, cells)| write_group(lease, backend, *shard, cells)),
    )
    .await;
    if let Some(e) = results.iter().find_map(|r| r.as_ref().err().cloned()) {
        let _ = lease.batch_execute("ROLLBACK").await;
        return all_failed(e);
    }
    match lease.batch_execute("COMMIT").await {
        Ok(()) => results,
        Err(e) => all_failed(e),
    }
}

async fn write_group(
    lease: &crate::backend::Lease<'_>,
    backend: &Backend,
    shard: u32,
    cells: &[&NewCell],
) -> Result<Vec<WriteOutcome>, StorageError> {
    if cells.is_empty() {
        return Ok(Vec::new());
    }
    let t = cells_table(shard);
    // The shard's row is locked by the update (as `FOR NO KEY UPDATE`: I1) before anything
    // else; under READ COMMITTED an update that waited for the lock works on the row's latest
    // version, so `last_created_at` is the previous writer's, committed (I7). The cells get
    // one microsecond apart, in input (so `added_id`) order, the last at `top`. NULL
    // `last_created_at`: an empty shard (an activation or the migration sets it otherwise).
    // No read of the cells table here: it would cost its planning on every write.
    let sql = format!(
        "WITH s AS (UPDATE mezzanine_shard_state st SET last_created_at = CASE \
                      WHEN st.state = 'active' THEN greatest(clock_timestamp(), \
                           coalesce(st.last_created_at, '-infinity') \
                           + interval '1 microsecond') + ($6::int8 - 1) * interval '1 microsecond' \
                      ELSE st.last_created_at END \
                    WHERE st.shard = $1 RETURNING st.state, st.last_created_at AS top), \
         ins AS (INSERT INTO {t} (row_key, column_name, ref_key, body, created_at) \
                 SELECT u.r, u.c, u.k, u.b, s.top - ($6::int8 - u.o) * interval '1 microsecond' FROM s, \
                        unnest($2::uuid[], $3::text[], $4::int8[], $5::jsonb[]) WITH ORDINALITY AS u(r, c, k, b, o) \
                 WHERE s.state = 'active' ORDER BY u.o \
                 ON CONFLICT (row_key, column_name, ref_key) DO NOTHING \
                 RETURNING {CELL_COLUMNS}) \
         SELECT (SELECT state FROM s), ins.* FROM (VALUES (1)) AS one(x) LEFT JOIN ins ON true"
    );
    let shard_i = shard as i32;
    let n = cells.len() as i64;
    let all = CellArrays::of(cells.iter().copied());
    let rows = lease
        .query(
            &sql,
            &[
                (&shard_i, Type::INT4),
                (&all.row_keys, Type::UUID_ARRAY),
                (&all.columns, Type::TEXT_ARRAY),
                (&all.ref_keys, Type::INT8_ARRAY),
                (&all.bodies, Type::JSONB_ARRAY),
                (&n, Type::INT8),
            ],
        )
        .await?;
    let state = rows.first().and_then(|r| r.try_get(0).ok());
    fence(backend, shard, state, |s| s == ShardState::Active)?;
    let mut inserted: HashMap<CellKey, Cell> = HashMap::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<_, Option<i64>>(1).ok().flatten().is_some() {
            let cell = cell_from(row, 1, backend)?;
            let key = CellKey {
                row_key: cell.row_key,
                column_name: cell.column_name.clone(),
                ref_key: cell.ref_key,
            };
            inserted.insert(key, cell);
        }
    }
    let mut results: Vec<Option<WriteOutcome>> = cells
        .iter()
        .map(|c| inserted.remove(&c.key).map(WriteOutcome::Created))
        .collect();

    // Cells not inserted met existing coordinates: compare bodies in the database (JSONB
    // equality, so key order and spacing do not matter).
    let pending: Vec<usize> = (0..cells.len()).filter(|&i| results[i].is_none()).collect();
    if !pending.is_empty() {
        let sql = format!(
            "SELECT u.o, c.body = u.b, {cols} \
             FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::jsonb[], $5::int4[]) AS u(r, cn, k, b, o) \
             JOIN {t} c ON c.row_key = u.r AND c.column_name = u.cn AND c.ref_key = u.k",
            cols = CELL_COLUMNS.split(", ").map(|c| format!("c.{c}")).collect::<Vec<_>>().join(", ")
        );
        let p = CellArrays::of(pending.iter().map(|&i| cells[i]));
        let p_idx: Vec<i32> = pending.iter().map(|&i| i as i32).collect();
        let rows = lease
            .query(
                &sql,
                &[
                    (&p.row_keys, Type::UUID_ARRAY),
                    (&p.columns, Type::TEXT_ARRAY),
                    (&p.ref_keys, Type::INT8_ARRAY),
                    (&p.bodies, Type::JSONB_ARRAY),
                    (&p_idx, Type::INT4_ARRAY),
                ],
            )
            .await?;
        for row in &rows {
            let idx: i32 = row
                .try_get(0)
                .map_err(|e| StorageError::shape(backend, e))?;
            let same: bool = row
                .try_get(1)
                .map_err(|e| StorageError::shape(backend, e))?;
            let cell = cell_from(row, 2, backend)?;
            if let Some(slot) = results.get_mut(idx as usize) {
                *slot = Some(if same {
                    WriteOutcome::Existing(cell)
                } else {
                    WriteOutcome::Conflict(cell)
                });
            }
        }
    }
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.ok_or_else(|| StorageError::Database {
                backend: backend.label().to_owned(),
                code: None,
                message: format!("cell {i} was neither stored nor found"),
            })
        })
        .collect()
}

/// One exact version of a cell.
pub async fn get_cell(
    backend: &Backend,
    shard: u32,
    key: &CellKey,
) -> Result<Option<Cell>, StorageError> {
    let sql = format!(
        "SELECT {CELL_COLUMNS} FROM {t} WHERE row_key = $2 AND column_name = $3 AND ref_key = $4",
        t = cells_table(shard)
    );
    let params: [(&(dyn ToSql + Sync), Type); 3] = [
        (&key.row_key, Type::UUID),
        (&key.column_name, Type::TEXT),
        (&key.ref_key, Type::INT8),
    ];
    Ok(select_cells(backend, shard, &sql, &params).await?.pop())
}

/// The latest version (highest `ref_key`) of a column.
pub async fn get_latest(
    backend: &Backend,
    shard: u32,
    row_key: &Uuid,
    column_name: &str,
) -> Result<Option<Cell>, StorageError> {
    let sql = format!(
        "SELECT {CELL_COLUMNS} FROM {t} WHERE row_key = $2 AND column_name = $3 ORDER BY ref_key DESC LIMIT 1",
        t = cells_table(shard)
    );
    Ok(select_cells(
        backend,
        shard,
        &sql,
        &[(row_key, Type::UUID), (&column_name, Type::TEXT)],
    )
    .await?
    .pop())
}

/// The latest cell of every column of a row, ordered by column name.
pub async fn get_row(
    backend: &Backend,
    shard: u32,
    row_key: &Uuid,
) -> Result<Vec<Cell>, StorageError> {
    let sql = format!(
        "SELECT DISTINCT ON (column_name) {CELL_COLUMNS} FROM {t} WHERE row_key = $2 \
         ORDER BY column_name, ref_key DESC",
        t = cells_table(shard)
    );
    select_cells(backend, shard, &sql, &[(row_key, Type::UUID)]).await
}

/// A page of a shard's cells in change-stream order: at most `limit` cells and, past the
/// first, at most `max_bytes` of them, ending where a reader paging by `created_at` skips
/// nothing ([`mezzanine_core::page`]).
pub async fn partition_read(
    backend: &Backend,
    shard: u32,
    from: PartitionRead,
    limit: i64,
    max_bytes: usize,
) -> Result<Vec<Cell>, StorageError> {
    let t = cells_table(shard);
    let limit = limit.max(1);
    // One more row than the page holds, to see whether its last group goes on.
    let fetch = limit.saturating_add(1);
    let mut page = Page::new(usize::try_from(limit).unwrap_or(usize::MAX), max_bytes);
    let by_time = matches!(from, PartitionRead::AfterCreatedAt(_));
    let take = |c: Cell| {
        let size = c.stored_size();
        let group = by_time.then_some(c.created_at);
        page.offer(c, size, group)
    };
    match from {
        PartitionRead::AfterAddedId(id) => {
            let sql = format!(
                "SELECT {CELL_COLUMNS} FROM {t} WHERE added_id > $2 ORDER BY added_id LIMIT $3"
            );
            let params: [(&(dyn ToSql + Sync), Type); 2] =
                [(&id, Type::INT8), (&fetch, Type::INT8)];
            read_cells(backend, shard, &sql, &params, take).await?;
        }
        PartitionRead::AfterCreatedAt(Some(at)) => {
            let sql = format!(
                "SELECT {CELL_COLUMNS} FROM {t} WHERE created_at > $2 ORDER BY created_at, added_id LIMIT $3"
            );
            let params: [(&(dyn ToSql + Sync), Type); 2] =
                [(&at, Type::TIMESTAMPTZ), (&fetch, Type::INT8)];
            read_cells(backend, shard, &sql, &params, take).await?;
        }
        PartitionRead::AfterCreatedAt(None) => {
            let sql =
                format!("SELECT {CELL_COLUMNS} FROM {t} ORDER BY created_at, added_id LIMIT $2");
            read_cells(backend, shard, &sql, &[(&fetch, Type::INT8)], take).await?;
        }
    }
    Ok(page.into_items())
}
