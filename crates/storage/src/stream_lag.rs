//! How far plugins are behind in one shard's change stream (`/admin/v1/plugins`' lag): one
//! fenced statement per shard, for any number of plugins at once, each an index probe.

use chrono::{DateTime, Utc};
use mezzanine_core::plugin_ops::ShardProbe;
use tokio_postgres::types::{ToSql, Type};

use crate::cells::fence;
use crate::schema::cells_table;
use crate::shard_state::ShardState;
use crate::{Backend, StorageError};

/// Where a plugin's undelivered events of a shard begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// After its offset: every cell with `added_id` above it (the primary key's index).
    After(i64),
    /// No offset yet: from the first cell created at or after the plugin's `deliver_from`
    /// (the stream index on `(created_at, added_id)`).
    Since(DateTime<Utc>),
}

/// For each of `starts` (one per plugin), what the shard's stream holds beyond it: the
/// shard's highest `added_id` and the first cell after the start, with its age by the
/// backend's clock. One statement, fenced like a read (I2: only where the shard is served;
/// [`StorageError::NotServed`] elsewhere).
pub async fn probe(
    backend: &Backend,
    shard: u32,
    starts: &[StreamStart],
) -> Result<Vec<ShardProbe>, StorageError> {
    let t = cells_table(shard);
    let mut after: Vec<Option<i64>> = Vec::with_capacity(starts.len());
    let mut since: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(starts.len());
    for s in starts {
        match s {
            StreamStart::After(id) => {
                after.push(Some(*id));
                since.push(None);
            }
            StreamStart::Since(at) => {
                after.push(None);
                since.push(Some(*at));
            }
        }
    }
    // A NULL bound matches no row, and the index scan sees that without reading any.
    let sql = format!(
        "SELECT st.state, m.max_id, f.ord, f.added_id, f.age \
         FROM mezzanine_shard_state st \
         LEFT JOIN LATERAL (SELECT max(added_id) AS max_id FROM {t}) m \
           ON st.state IN ('active', 'frozen') \
         LEFT JOIN LATERAL ( \
           SELECT o.ord, c.added_id, \
                  extract(epoch FROM clock_timestamp() - c.created_at)::float8 AS age \
           FROM unnest($2::int8[], $3::timestamptz[]) WITH ORDINALITY AS o(after, since, ord) \
           CROSS JOIN LATERAL ( \
             (SELECT added_id, created_at FROM {t} WHERE added_id > o.after \
              ORDER BY added_id LIMIT 1) \
             UNION ALL \
             (SELECT added_id, created_at FROM {t} WHERE created_at >= o.since \
              ORDER BY created_at, added_id LIMIT 1)) c \
         ) f ON st.state IN ('active', 'frozen') \
         WHERE st.shard = $1"
    );
    let shard_i = shard as i32;
    let params: [(&(dyn ToSql + Sync), Type); 3] = [
        (&shard_i, Type::INT4),
        (&after, Type::INT8_ARRAY),
        (&since, Type::TIMESTAMPTZ_ARRAY),
    ];
    let lease = backend.lease().await?;
    let rows = lease.query(&sql, &params).await?;
    let shape = |e| StorageError::shape(backend, e);
    let state: Option<String> = match rows.first() {
        Some(r) => r.try_get(0).map_err(shape)?,
        None => None,
    };
    fence(backend, shard, state, ShardState::serves)?;
    let mut out = vec![
        ShardProbe {
            max_added_id: None,
            first_undelivered: None,
        };
        starts.len()
    ];
    for r in &rows {
        let max: Option<i64> = r.try_get(1).map_err(shape)?;
        let ord: Option<i64> = r.try_get(2).map_err(shape)?;
        for p in out.iter_mut() {
            p.max_added_id = max;
        }
        let Some(ord) = ord else { continue };
        let slot = usize::try_from(ord - 1)
            .ok()
            .and_then(|i| out.get_mut(i))
            .ok_or_else(|| StorageError::shape(backend, format!("ordinal {ord} out of range")))?;
        slot.first_undelivered = Some((r.try_get(3).map_err(shape)?, r.try_get(4).map_err(shape)?));
    }
    Ok(out)
}
