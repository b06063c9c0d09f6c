//! Counts and estimates of a shard's rows, and every shard's statistics on a backend (for
//! the rebalance planner).

use tokio_postgres::types::Type;

use super::{col, long_lease};
use crate::schema::cells_table;
use crate::{Backend, StorageError};

/// The highest `added_id` of the shard's table on `backend`, 0 when it is empty.
pub async fn max_added_id(backend: &Backend, shard: u32) -> Result<i64, StorageError> {
    let lease = backend.lease().await?;
    let rows = lease
        .query(
            &format!(
                "SELECT coalesce(max(added_id), 0) FROM {}",
                cells_table(shard)
            ),
            &[],
        )
        .await?;
    rows.first().map(|r| col(backend, r, 0)).unwrap_or(Ok(0))
}

/// The exact number of rows of the shard's table (a full scan: a long step).
pub async fn count_rows(backend: &Backend, shard: u32) -> Result<i64, StorageError> {
    let lease = long_lease(backend).await?;
    let rows = lease
        .query(&format!("SELECT count(*) FROM {}", cells_table(shard)), &[])
        .await?;
    rows.first().map(|r| col(backend, r, 0)).unwrap_or(Ok(0))
}

/// PostgreSQL's estimate of the shard's row count (`pg_class.reltuples`, as of the last
/// vacuum or analyze): cheap, for progress. `None` when the table is missing or was never
/// analyzed.
pub async fn estimate_rows(backend: &Backend, shard: u32) -> Result<Option<i64>, StorageError> {
    let lease = backend.lease().await?;
    let table = cells_table(shard);
    let rows = lease
        .query(
            "SELECT reltuples::int8 FROM pg_class WHERE oid = to_regclass($1)",
            &[(&table, Type::TEXT)],
        )
        .await?;
    match rows.first() {
        Some(r) => {
            let n: i64 = col(backend, r, 0)?;
            Ok((n >= 0).then_some(n))
        }
        None => Ok(None),
    }
}

/// What PostgreSQL's statistics say of one shard's table: for the rebalance planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardStats {
    pub shard: u32,
    /// Rows: `n_live_tup` (or `reltuples` when the statistics were reset); counted exactly
    /// for a small table the statistics know no row of yet.
    pub rows: i64,
    /// On disk, with indexes and TOAST (`pg_total_relation_size`).
    pub bytes: i64,
    /// Rows inserted since the statistics were last reset (`n_tup_ins`): sampled twice, the
    /// difference is the recent write rate.
    pub inserts: i64,
}

/// Tables of which PostgreSQL's statistics know no row yet are counted exactly by
/// [`shard_stats`] if their heap is at most this many bytes.
pub const EXACT_COUNT_BELOW: i64 = 1 << 20;

/// The statistics of every `cells_NNNN` table of the backend, in one statement. Row counts
/// are PostgreSQL's (`n_live_tup`, or `reltuples`), which lag behind recent writes by seconds;
/// a young table they know nothing of yet is counted exactly when small. A long step (it
/// reads the catalog of thousands of tables, and counts some). A table dropped while the
/// statement runs (a move's source) has no size any more: it counts as empty, not as an error.
pub async fn shard_stats(backend: &Backend) -> Result<Vec<ShardStats>, StorageError> {
    let lease = long_lease(backend).await?;
    let rows = lease
        .query(
            "SELECT substr(c.relname, 7)::int4, \
                    CASE WHEN coalesce(s.n_live_tup, 0) = 0 AND c.reltuples <= 0 \
                              AND pg_relation_size(c.oid) <= $1 THEN \
                      (xpath('/row/n/text()', query_to_xml( \
                         format('SELECT count(*) AS n FROM %I', c.relname), false, true, '')))[1]::text::int8 \
                    ELSE greatest(coalesce(s.n_live_tup, 0), c.reltuples::int8, 0) END, \
                    coalesce(pg_total_relation_size(c.oid), 0), coalesce(s.n_tup_ins, 0) \
             FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid \
             WHERE c.relkind = 'r' \
               AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) \
               AND c.relname ~ '^cells_[0-9]{4,}$'",
            &[(&EXACT_COUNT_BELOW, Type::INT8)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let shard: i32 = col(backend, r, 0)?;
            Ok(ShardStats {
                shard: shard as u32,
                rows: col(backend, r, 1)?,
                bytes: col(backend, r, 2)?,
                inserts: col(backend, r, 3)?,
            })
        })
        .collect()
}
