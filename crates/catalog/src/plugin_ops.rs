//! Operating plugins (`/admin/v1/plugins…`, `mezzanine plugins …`), by plugin name: each
//! plugin with its delivery as the deliverer records it (`plugins.paused`, `delivery_state`,
//! `last_error[_at]`, the offsets of `plugin_offsets`, the dead letters of `plugin_parked`),
//! and the operator's changes: pause and resume (`plugins.paused`), replay of parked events
//! (`plugin_parked.replay_requested`, which the deliverer acts on) and their removal.
//!
//! Every change is one transaction that bumps `meta.plugins_version`, is audited
//! (`plugin_pause`, `plugin_resume`, `plugin_replay`, `plugin_drop_parked`) and commits with
//! the catalog's `plugins` notification, so that the deliverer reacts at once rather than at
//! its next poll ([`Catalog::begin_plugins_change`], as registrations do).

use chrono::{DateTime, Utc};
use mezzanine_core::plugin_ops::EventId;
use mezzanine_storage::backend::Lease;
use tokio_postgres::types::Type;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::plugins::{plugin_from, Plugin};
use crate::{audit, corrupt, scalar, Catalog, CatalogError};

/// A plugin with its delivery, as the catalog records it.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginDelivery {
    pub plugin: Plugin,
    /// Cells created at or after this are delivered (a shard without an offset starts here).
    pub deliver_from: DateTime<Utc>,
    /// Paused by an operator.
    pub paused: bool,
    /// The deliverer's state: `delivering` or `backing_off`.
    pub delivery_state: String,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Events in the dead-letter list.
    pub parked: i64,
    /// The shards with an offset, in shard order.
    pub offsets: Vec<Offset>,
}

/// Where a plugin's delivery of one shard stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset {
    pub shard: u32,
    /// Every event of the shard up to this `added_id` is delivered, skipped or parked.
    pub delivered_upto: i64,
    pub updated_at: DateTime<Utc>,
}

/// A parked event (a dead letter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    pub shard: u32,
    pub added_id: i64,
    pub row_key: Uuid,
    pub column_name: String,
    pub attempts: i32,
    pub error: String,
    pub parked_at: DateTime<Utc>,
    /// An operator asked for it to be sent again; the deliverer has yet to.
    pub replay_requested: bool,
}

/// The columns [`delivery_from`] reads, `p` being `mezzanine.plugins`.
const DELIVERY_COLUMNS: &str = "p.id, p.name, p.endpoint, p.subscribed_columns, p.status, \
     p.created_at, p.deliver_from, p.paused, p.delivery_state, p.last_error, p.last_error_at, \
     (SELECT count(*) FROM mezzanine.plugin_parked k WHERE k.plugin_id = p.id), \
     ARRAY(SELECT shard FROM mezzanine.plugin_offsets o WHERE o.plugin_id = p.id ORDER BY shard), \
     ARRAY(SELECT delivered_upto FROM mezzanine.plugin_offsets o WHERE o.plugin_id = p.id ORDER BY shard), \
     ARRAY(SELECT updated_at FROM mezzanine.plugin_offsets o WHERE o.plugin_id = p.id ORDER BY shard)";

fn delivery_from(r: &Row) -> Result<PluginDelivery, CatalogError> {
    let shards: Vec<i32> = r.try_get(12).map_err(corrupt)?;
    let upto: Vec<i64> = r.try_get(13).map_err(corrupt)?;
    let at: Vec<DateTime<Utc>> = r.try_get(14).map_err(corrupt)?;
    let offsets = shards
        .into_iter()
        .zip(upto)
        .zip(at)
        .map(|((shard, delivered_upto), updated_at)| {
            Ok(Offset {
                shard: u32::try_from(shard)
                    .map_err(|_| CatalogError::Corrupt(format!("offset of shard {shard}")))?,
                delivered_upto,
                updated_at,
            })
        })
        .collect::<Result<Vec<_>, CatalogError>>()?;
    Ok(PluginDelivery {
        plugin: plugin_from(r, 0)?,
        deliver_from: r.try_get(6).map_err(corrupt)?,
        paused: r.try_get(7).map_err(corrupt)?,
        delivery_state: r.try_get(8).map_err(corrupt)?,
        last_error: r.try_get(9).map_err(corrupt)?,
        last_error_at: r.try_get(10).map_err(corrupt)?,
        parked: r.try_get(11).map_err(corrupt)?,
        offsets,
    })
}

fn no_plugin(name: &str) -> CatalogError {
    CatalogError::NotFound(format!(
        "no plugin named {name:?} (mezzanine plugins list shows them)"
    ))
}

impl Catalog {
    /// Every plugin with its delivery, in registration order (one statement, one snapshot).
    pub async fn plugin_deliveries(&self) -> Result<Vec<PluginDelivery>, CatalogError> {
        let lease = self.lease().await?;
        let rows = lease
            .query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM mezzanine.plugins p ORDER BY p.created_at, p.id"
                ),
                &[],
            )
            .await?;
        rows.iter().map(delivery_from).collect()
    }

    /// One plugin with its delivery; an unknown name is a [`CatalogError::NotFound`].
    pub async fn plugin_delivery(&self, name: &str) -> Result<PluginDelivery, CatalogError> {
        let lease = self.lease().await?;
        let rows = lease
            .query(
                &format!("SELECT {DELIVERY_COLUMNS} FROM mezzanine.plugins p WHERE p.name = $1"),
                &[(&name, Type::TEXT)],
            )
            .await?;
        delivery_from(rows.first().ok_or_else(|| no_plugin(name))?)
    }

    /// Pauses (`true`) or resumes a plugin's delivery (audited `plugin_pause` /
    /// `plugin_resume`, with the flag it had: asking twice changes nothing the second time
    /// but is still recorded).
    pub async fn set_plugin_paused(&self, name: &str, paused: bool) -> Result<(), CatalogError> {
        let lease = self.begin_plugins_change().await?;
        let body = async {
            let rows = lease
                .query(
                    "UPDATE mezzanine.plugins p SET paused = $2 \
                     FROM (SELECT id, paused FROM mezzanine.plugins WHERE name = $1 FOR UPDATE) o \
                     WHERE p.id = o.id RETURNING p.id, o.paused",
                    &[(&name, Type::TEXT), (&paused, Type::BOOL)],
                )
                .await?;
            let row = rows.first().ok_or_else(|| no_plugin(name))?;
            let id: Uuid = row.try_get(0).map_err(corrupt)?;
            let was: bool = row.try_get(1).map_err(corrupt)?;
            let kind = if paused {
                "plugin_pause"
            } else {
                "plugin_resume"
            };
            let detail = serde_json::json!({"id": id, "name": name, "was_paused": was});
            audit(&lease, &self.node, kind, &detail).await
        }
        .await;
        self.end_plugins_change(lease, body).await
    }

    /// A page of a plugin's parked events in `(shard, added_id)` order: at most `limit`, after
    /// `after` (the last of the previous page) when given.
    pub async fn parked_events(
        &self,
        name: &str,
        limit: i64,
        after: Option<EventId>,
    ) -> Result<Vec<ParkedEvent>, CatalogError> {
        let (shard, added_id) = match after {
            Some(e) => (i64::from(e.shard), e.added_id),
            None => (-1, -1),
        };
        let lease = self.lease().await?;
        let rows = lease
            .query(
                "SELECT k.shard, k.added_id, k.row_key, k.column_name, k.attempts, k.error, \
                        k.parked_at, k.replay_requested \
                 FROM mezzanine.plugins p LEFT JOIN LATERAL ( \
                   SELECT * FROM mezzanine.plugin_parked k \
                   WHERE k.plugin_id = p.id AND (k.shard, k.added_id) > ($2::int8, $3::int8) \
                   ORDER BY k.shard, k.added_id LIMIT $4) k ON true \
                 WHERE p.name = $1",
                &[
                    (&name, Type::TEXT),
                    (&shard, Type::INT8),
                    (&added_id, Type::INT8),
                    (&limit, Type::INT8),
                ],
            )
            .await?;
        if rows.is_empty() {
            return Err(no_plugin(name));
        }
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let Some(shard) = r.try_get::<_, Option<i32>>(0).map_err(corrupt)? else {
                continue; // the plugin has none (left)
            };
            out.push(ParkedEvent {
                shard: u32::try_from(shard)
                    .map_err(|_| CatalogError::Corrupt(format!("parked event of shard {shard}")))?,
                added_id: r.try_get(1).map_err(corrupt)?,
                row_key: r.try_get(2).map_err(corrupt)?,
                column_name: r.try_get(3).map_err(corrupt)?,
                attempts: r.try_get(4).map_err(corrupt)?,
                error: r.try_get(5).map_err(corrupt)?,
                parked_at: r.try_get(6).map_err(corrupt)?,
                replay_requested: r.try_get(7).map_err(corrupt)?,
            });
        }
        Ok(out)
    }

    /// Asks the deliverer to send parked events again: one (`Some`), or all of the plugin's
    /// (`None`). Returns how many are marked (those marked already count too). Audited
    /// (`plugin_replay`).
    pub async fn request_replay(
        &self,
        name: &str,
        event: Option<EventId>,
    ) -> Result<u64, CatalogError> {
        self.change_parked(name, event, ParkedChange::Replay).await
    }

    /// Removes parked events for good: one (`Some`), or all of the plugin's (`None`).
    /// Returns how many. Audited (`plugin_drop_parked`).
    pub async fn drop_parked(
        &self,
        name: &str,
        event: Option<EventId>,
    ) -> Result<u64, CatalogError> {
        self.change_parked(name, event, ParkedChange::Drop).await
    }

    async fn change_parked(
        &self,
        name: &str,
        event: Option<EventId>,
        change: ParkedChange,
    ) -> Result<u64, CatalogError> {
        let lease = self.begin_plugins_change().await?;
        let body = async {
            let id = plugin_id_for_update(&lease, name).await?;
            let statement = match change {
                ParkedChange::Replay => {
                    "WITH c AS (UPDATE mezzanine.plugin_parked SET replay_requested = true \
                       WHERE plugin_id = $1 AND ($2::int8 IS NULL OR shard = $2 AND added_id = $3) \
                       RETURNING 1) SELECT count(*) FROM c"
                }
                ParkedChange::Drop => {
                    "WITH c AS (DELETE FROM mezzanine.plugin_parked \
                       WHERE plugin_id = $1 AND ($2::int8 IS NULL OR shard = $2 AND added_id = $3) \
                       RETURNING 1) SELECT count(*) FROM c"
                }
            };
            let shard = event.map(|e| i64::from(e.shard));
            let added_id = event.map(|e| e.added_id);
            let n: i64 = scalar(
                &lease,
                statement,
                &[
                    (&id, Type::UUID),
                    (&shard, Type::INT8),
                    (&added_id, Type::INT8),
                ],
            )
            .await?;
            let n = u64::try_from(n).unwrap_or(0);
            if let (Some(e), 0) = (event, n) {
                return Err(CatalogError::NotFound(format!(
                    "plugin {name:?} has no parked event {e} (mezzanine plugins parked {name} lists them)"
                )));
            }
            let mut detail = serde_json::json!({"id": id, "name": name, "count": n});
            match event {
                Some(e) => {
                    detail["shard"] = e.shard.into();
                    detail["added_id"] = e.added_id.into();
                }
                None => detail["all"] = true.into(),
            }
            audit(&lease, &self.node, change.audit_kind(), &detail).await?;
            Ok(n)
        }
        .await;
        self.end_plugins_change(lease, body).await
    }
}

#[derive(Clone, Copy)]
enum ParkedChange {
    Replay,
    Drop,
}

impl ParkedChange {
    fn audit_kind(self) -> &'static str {
        match self {
            ParkedChange::Replay => "plugin_replay",
            ParkedChange::Drop => "plugin_drop_parked",
        }
    }
}

/// The id of the plugin named `name`, its row locked against a concurrent deletion until the
/// transaction ends.
async fn plugin_id_for_update(lease: &Lease<'_>, name: &str) -> Result<Uuid, CatalogError> {
    let rows = lease
        .query(
            "SELECT id FROM mezzanine.plugins WHERE name = $1 FOR SHARE",
            &[(&name, Type::TEXT)],
        )
        .await?;
    rows.first()
        .ok_or_else(|| no_plugin(name))?
        .try_get(0)
        .map_err(corrupt)
}
