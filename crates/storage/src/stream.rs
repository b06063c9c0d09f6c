//! A shard's change stream as plugin delivery reads it (`mezzanine-triggers`): its cells in
//! `added_id` order (invariant I1: no gap once visible), fenced like every read (I2), with
//! bodies only of the columns a plugin subscribes to; where a plugin's stream starts
//! (by `created_at`, I7); and, per backend, cheap signs of new cells
//! (`mezzanine_shard_state.last_created_at`, changed by every write) and the latest
//! `added_id` of each shard (for lag).

use chrono::{DateTime, Utc};
use tokio_postgres::types::{ToSql, Type};

use crate::cells::{fence, read_cells};
use crate::schema::cells_table;
use crate::shard_state::ShardState;
use crate::{Backend, Cell, StorageError};

/// At most `limit` cells of `shard` after `after`, in `added_id` order. The body of a cell
/// whose column is not in `columns` is not sent by the backend (`null` in its place): its
/// event is skipped without a call.
pub async fn read_stream(
    backend: &Backend,
    shard: u32,
    after: i64,
    limit: i64,
    columns: &[String],
) -> Result<Vec<Cell>, StorageError> {
    let sql = format!(
        "SELECT added_id, row_key, column_name, ref_key, \
                CASE WHEN column_name = ANY($4) THEN body::text ELSE 'null' END, created_at \
         FROM {t} WHERE added_id > $2 ORDER BY added_id LIMIT $3",
        t = cells_table(shard)
    );
    let limit = limit.max(1);
    let params: [(&(dyn ToSql + Sync), Type); 3] = [
        (&after, Type::INT8),
        (&limit, Type::INT8),
        (&columns, Type::TEXT_ARRAY),
    ];
    let mut cells = Vec::new();
    read_cells(backend, shard, &sql, &params, |c| {
        cells.push(c);
        true
    })
    .await?;
    Ok(cells)
}

/// One cell of `shard` by its `added_id` (a parked event's replay), if it exists.
pub async fn read_event(
    backend: &Backend,
    shard: u32,
    added_id: i64,
) -> Result<Option<Cell>, StorageError> {
    let sql = format!(
        "SELECT {c} FROM {t} WHERE added_id = $2",
        c = crate::cells::CELL_COLUMNS,
        t = cells_table(shard)
    );
    let mut found = None;
    read_cells(backend, shard, &sql, &[(&added_id, Type::INT8)], |c| {
        found = Some(c);
        false
    })
    .await?;
    Ok(found)
}

/// The `added_id` of the last cell of `shard` created before `before` (0 when none): where a
/// plugin registered at `before` starts. One probe of the stream index (`created_at` is
/// strictly increasing per shard in commit order, I7). Fenced: only the shard's owner answers.
pub async fn start_offset(
    backend: &Backend,
    shard: u32,
    before: DateTime<Utc>,
) -> Result<i64, StorageError> {
    let sql = format!(
        "SELECT st.state, coalesce((SELECT added_id FROM {t} WHERE created_at < $2 \
                ORDER BY created_at DESC, added_id DESC LIMIT 1), 0) \
         FROM mezzanine_shard_state st WHERE st.shard = $1",
        t = cells_table(shard)
    );
    let s = shard as i32;
    let lease = backend.lease().await?;
    let rows = lease
        .query(&sql, &[(&s, Type::INT4), (&before, Type::TIMESTAMPTZ)])
        .await?;
    let state: Option<String> = rows.first().and_then(|r| r.try_get(0).ok());
    fence(backend, shard, state, ShardState::serves)?;
    rows.first()
        .map(|r| r.try_get(1).map_err(|e| StorageError::shape(backend, e)))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// The shards this backend serves, each with the `created_at` of its latest cell (`None`:
/// empty): one small read, which changes with every write.
pub async fn heads(backend: &Backend) -> Result<Vec<(u32, Option<DateTime<Utc>>)>, StorageError> {
    let lease = backend.lease().await?;
    let rows = lease
        .query(
            "SELECT shard, last_created_at FROM mezzanine_shard_state \
             WHERE state IN ('active', 'frozen')",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let s: i32 = r.try_get(0).map_err(|e| StorageError::shape(backend, e))?;
            let at = r.try_get(1).map_err(|e| StorageError::shape(backend, e))?;
            Ok((s as u32, at))
        })
        .collect()
}

/// The highest `added_id` of each of `shards` on this backend (0 when empty; shards without
/// a table here are left out): one statement, one index probe per shard.
pub async fn tails(backend: &Backend, shards: &[u32]) -> Result<Vec<(u32, i64)>, StorageError> {
    if shards.is_empty() {
        return Ok(Vec::new());
    }
    let lease = backend.lease().await?;
    let present: Vec<String> = shards.iter().map(|s| cells_table(*s)).collect();
    let rows = lease
        .query(
            "SELECT relname::text FROM pg_class WHERE relname = ANY($1) AND relkind IN ('r', 'p') \
             AND pg_table_is_visible(oid)",
            &[(&present, Type::TEXT_ARRAY)],
        )
        .await?;
    let have: std::collections::HashSet<String> =
        rows.iter().filter_map(|r| r.try_get(0).ok()).collect();
    let parts: Vec<String> = shards
        .iter()
        .filter(|s| have.contains(&cells_table(**s)))
        .map(|s| {
            format!(
                "SELECT {s}, coalesce((SELECT max(added_id) FROM {t}), 0)",
                t = cells_table(*s)
            )
        })
        .collect();
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let rows = lease.query(&parts.join(" UNION ALL "), &[]).await?;
    rows.iter()
        .map(|r| {
            let s: i32 = r.try_get(0).map_err(|e| StorageError::shape(backend, e))?;
            let m: i64 = r.try_get(1).map_err(|e| StorageError::shape(backend, e))?;
            Ok((s as u32, m))
        })
        .collect()
}
