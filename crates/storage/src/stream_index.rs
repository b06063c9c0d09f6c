//! The stream index (`idx_cells_NNNN_created_added` on `(created_at, added_id)`) on cells
//! tables that existed before mezzanine added it: go-mezzanine's adopted tables, and tables of
//! an earlier mezzanine. New tables and a move's target get it with their other indexes
//! ([`crate::schema::cells_index_ddl`]); these get it online, in the background after start,
//! with `CREATE INDEX CONCURRENTLY`: client reads and writes go on while it is built, the
//! table's columns are untouched (go-mezzanine still runs on it), and a table that has an
//! index of the same key under any name gets no second one.
//!
//! Until a table has it, partition reads by `created_at` on it are a scan and a sort, as they
//! were before; nothing else depends on it.

use std::time::Duration;

use tokio_postgres::types::Type;

use crate::error::SqlState;
use crate::schema::{cells_table, stream_index_name, STREAM_INDEX_KEY, STREAM_INDEX_LOCK};
use crate::{Backend, StorageError};

/// The longest one table's build may take before the node gives up on it (it is retried at
/// the next start).
const BUILD_BOUND: Duration = Duration::from_secs(6 * 3600);

/// What [`build_stream_indexes`] did on one backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamIndexReport {
    /// Tables that lacked the index when looked at.
    pub missing: usize,
    /// Indexes built now.
    pub built: usize,
    /// Another node holds the builder's lock: it builds them (nothing done here).
    pub busy: bool,
}

/// The shards of `backend` whose cells table lacks a valid index on `(created_at, added_id)`
/// (whatever its name), but for imports in progress (the mover builds theirs): two queries.
async fn missing_on(
    lease: &crate::backend::Lease<'_>,
    backend: &Backend,
) -> Result<Vec<u32>, StorageError> {
    let rows = lease
        .query(
            "SELECT c.relname::text FROM pg_class c \
             WHERE c.relnamespace = current_schema()::regnamespace \
               AND c.relkind = 'r' AND c.relname ~ '^cells_[0-9]{4,}$' \
               AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisvalid \
                     AND substring(pg_get_indexdef(i.indexrelid) from ' USING btree (.*)$') = $1) \
             ORDER BY 1",
            &[(&STREAM_INDEX_KEY, Type::TEXT)],
        )
        .await?;
    // An import's table gets all its indexes from the mover (`build_indexes`), after its
    // bulk copy: left to it.
    let importing: Vec<i32> = match lease
        .query(
            "SELECT shard FROM mezzanine_shard_state WHERE state = 'importing'",
            &[],
        )
        .await
    {
        Ok(rows) => rows.iter().filter_map(|r| r.try_get(0).ok()).collect(),
        Err(e) if e.is(&SqlState::UNDEFINED_TABLE) => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut shards = Vec::with_capacity(rows.len());
    for row in &rows {
        let name: String = row
            .try_get(0)
            .map_err(|e| StorageError::shape(backend, e))?;
        if let Some(shard) = shard_of_table(&name) {
            if !importing.contains(&(shard as i32)) {
                shards.push(shard);
            }
        }
    }
    Ok(shards)
}

/// The shard of a cells table's name (`cells_0042` → 42).
fn shard_of_table(name: &str) -> Option<u32> {
    name.strip_prefix("cells_")?.parse().ok()
}

/// Builds the stream index on every cells table of `backend` that lacks one, one table at a
/// time, online (`CREATE INDEX CONCURRENTLY`). One node at a time per backend: when another
/// node holds the builder's lock, nothing is done here (`busy`). An invalid index of the
/// stream index's name (a build interrupted earlier) is dropped first and built again. A
/// table dropped meanwhile (its shard moved away) is skipped. When every table has it, this
/// costs one query.
pub async fn build_stream_indexes(backend: &Backend) -> Result<StreamIndexReport, StorageError> {
    let mut lease = backend.lease().await?;
    let missing = missing_on(&lease, backend).await?;
    let mut report = StreamIndexReport {
        missing: missing.len(),
        ..Default::default()
    };
    if missing.is_empty() {
        return Ok(report);
    }
    // A session lock, tried and never waited for: a wait inside a statement would hold a
    // snapshot that another node's concurrent build waits for.
    let rows = lease
        .query(
            "SELECT pg_try_advisory_lock($1)",
            &[(&STREAM_INDEX_LOCK, Type::INT8)],
        )
        .await?;
    let locked: bool = match rows.first() {
        Some(r) => r.try_get(0).map_err(|e| StorageError::shape(backend, e))?,
        None => false,
    };
    if !locked {
        report.busy = true;
        return Ok(report);
    }
    let mut result = Ok(());
    // Again under the lock: another node may have built some meanwhile.
    let missing = match missing_on(&lease, backend).await {
        Ok(m) => m,
        Err(e) => {
            result = Err(e);
            Vec::new()
        }
    };
    for shard in missing {
        lease.extend(BUILD_BOUND);
        match build_one(&lease, shard).await {
            Ok(true) => {
                report.built += 1;
                tracing::info!(backend = backend.name(), shard, "stream index built");
            }
            Ok(false) => {}
            Err(e) if e.is(&SqlState::UNDEFINED_TABLE) => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if lease.is_idle() {
        // A failed unlock leaves the lock to the session's end (the lease is then discarded).
        let _ = lease
            .query(
                "SELECT pg_advisory_unlock($1)",
                &[(&STREAM_INDEX_LOCK, Type::INT8)],
            )
            .await;
    }
    result.map(|()| report)
}

/// Builds one table's stream index (dropping an invalid leftover of its name first). Returns
/// whether it built one.
async fn build_one(lease: &crate::backend::Lease<'_>, shard: u32) -> Result<bool, StorageError> {
    let name = stream_index_name(shard);
    let t = cells_table(shard);
    let rows = lease
        .query(
            "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)",
            &[(&name, Type::TEXT)],
        )
        .await?;
    match rows.first().map(|r| r.try_get::<_, bool>(0)) {
        Some(Ok(true)) => return Ok(false), // built meanwhile, or present under its name
        Some(Ok(false)) => {
            lease
                .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                .await?;
        }
        _ => {}
    }
    // One statement, outside any transaction (CONCURRENTLY requires it).
    lease
        .batch_execute(&format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {t} {STREAM_INDEX_KEY}"
        ))
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_give_their_shard() {
        assert_eq!(shard_of_table("cells_0042"), Some(42));
        assert_eq!(shard_of_table("cells_12345"), Some(12345));
        assert_eq!(shard_of_table("cells_x"), None);
        assert_eq!(shard_of_table("other_0001"), None);
    }
}
