//! The deliverer's catalog reads and writes (issue 17, catalog layout 6): the plugins to
//! deliver to (with `deliver_from` and `paused`), offsets per (plugin, shard), parked events,
//! replay requests, and the state the operators see (`delivery_state`, `last_error`).
//!
//! Offsets only move forward (`greatest(delivered_upto, $new)`), so two deliverers acting
//! at once for a moment (a lock holder cut off and its successor) can only deliver twice,
//! never skip.

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::{corrupt, query, Catalog, CatalogError};

/// An active plugin as the deliverer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPlugin {
    pub id: Uuid,
    pub name: String,
    pub endpoint: String,
    pub subscribed_columns: Vec<String>,
    /// Cells created before this are not delivered.
    pub deliver_from: DateTime<Utc>,
    pub paused: bool,
}

/// A parked event whose replay an operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRequest {
    pub plugin_id: Uuid,
    pub shard: u32,
    pub added_id: i64,
}

fn shard_of(v: i32) -> Result<u32, CatalogError> {
    u32::try_from(v).map_err(|_| CatalogError::Corrupt(format!("shard {v} in plugin delivery")))
}

impl Catalog {
    /// The plugins to deliver to: every `active` one, paused or not, in registration order.
    pub async fn delivery_plugins(&self) -> Result<Vec<DeliveryPlugin>, CatalogError> {
        let rows = query(
            self,
            "SELECT id, name, endpoint, subscribed_columns, deliver_from, paused \
             FROM mezzanine.plugins WHERE status = 'active' ORDER BY created_at, id",
            &[],
        )
        .await?;
        rows.iter()
            .map(|r| {
                let columns: Vec<Option<String>> = r.try_get(3).map_err(corrupt)?;
                Ok(DeliveryPlugin {
                    id: r.try_get(0).map_err(corrupt)?,
                    name: r.try_get(1).map_err(corrupt)?,
                    endpoint: r.try_get(2).map_err(corrupt)?,
                    subscribed_columns: columns.into_iter().flatten().collect(),
                    deliver_from: r.try_get(4).map_err(corrupt)?,
                    paused: r.try_get(5).map_err(corrupt)?,
                })
            })
            .collect()
    }

    /// The offsets of a plugin's shards that have one.
    pub async fn delivery_offsets(&self, plugin: Uuid) -> Result<Vec<(u32, i64)>, CatalogError> {
        let rows = query(
            self,
            "SELECT shard, delivered_upto FROM mezzanine.plugin_offsets WHERE plugin_id = $1",
            &[(&plugin, Type::UUID)],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    shard_of(r.try_get(0).map_err(corrupt)?)?,
                    r.try_get(1).map_err(corrupt)?,
                ))
            })
            .collect()
    }

    /// Records the first offset of (plugin, shard) unless one exists (another deliverer's),
    /// and returns the offset the catalog holds. `None`: the plugin is gone.
    pub async fn start_offset(
        &self,
        plugin: Uuid,
        shard: u32,
        upto: i64,
    ) -> Result<Option<i64>, CatalogError> {
        let s = shard as i32;
        let rows = query(
            self,
            "WITH i AS (INSERT INTO mezzanine.plugin_offsets (plugin_id, shard, delivered_upto, updated_at) \
                        SELECT $1, $2, $3, now() WHERE EXISTS (SELECT 1 FROM mezzanine.plugins WHERE id = $1) \
                        ON CONFLICT (plugin_id, shard) DO NOTHING RETURNING delivered_upto) \
             SELECT delivered_upto FROM i \
             UNION ALL SELECT delivered_upto FROM mezzanine.plugin_offsets WHERE plugin_id = $1 AND shard = $2",
            &[(&plugin, Type::UUID), (&s, Type::INT4), (&upto, Type::INT8)],
        )
        .await?;
        rows.first()
            .map(|r| r.try_get(0).map_err(corrupt))
            .transpose()
    }

    /// Moves the offset of (plugin, shard) forward to `upto` (never back).
    pub async fn advance_offset(
        &self,
        plugin: Uuid,
        shard: u32,
        upto: i64,
    ) -> Result<(), CatalogError> {
        let s = shard as i32;
        query(
            self,
            "UPDATE mezzanine.plugin_offsets SET delivered_upto = greatest(delivered_upto, $3), \
                    updated_at = now() WHERE plugin_id = $1 AND shard = $2",
            &[(&plugin, Type::UUID), (&s, Type::INT4), (&upto, Type::INT8)],
        )
        .await?;
        Ok(())
    }

    /// Parks an event the plugin kept refusing (or records a failed replay: the row's
    /// attempts grow, its replay request is cleared).
    #[allow(clippy::too_many_arguments)]
    pub async fn park_event(
        &self,
        plugin: Uuid,
        shard: u32,
        added_id: i64,
        row_key: Uuid,
        column_name: &str,
        attempts: i32,
        error: &str,
    ) -> Result<(), CatalogError> {
        let s = shard as i32;
        query(
            self,
            "INSERT INTO mezzanine.plugin_parked (plugin_id, shard, added_id, row_key, column_name, \
                    attempts, error, parked_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, now() \
             WHERE EXISTS (SELECT 1 FROM mezzanine.plugins WHERE id = $1) \
             ON CONFLICT (plugin_id, shard, added_id) DO UPDATE SET \
                attempts = mezzanine.plugin_parked.attempts + EXCLUDED.attempts, \
                error = EXCLUDED.error, parked_at = EXCLUDED.parked_at, replay_requested = false",
            &[
                (&plugin, Type::UUID),
                (&s, Type::INT4),
                (&added_id, Type::INT8),
                (&row_key, Type::UUID),
                (&column_name, Type::TEXT),
                (&attempts, Type::INT4),
                (&error, Type::TEXT),
            ],
        )
        .await?;
        Ok(())
    }

    /// The parked events whose replay was asked for, oldest first per plugin and shard.
    pub async fn replay_requests(&self) -> Result<Vec<ReplayRequest>, CatalogError> {
        let rows = query(
            self,
            "SELECT plugin_id, shard, added_id FROM mezzanine.plugin_parked \
             WHERE replay_requested ORDER BY plugin_id, shard, added_id",
            &[],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReplayRequest {
                    plugin_id: r.try_get(0).map_err(corrupt)?,
                    shard: shard_of(r.try_get(1).map_err(corrupt)?)?,
                    added_id: r.try_get(2).map_err(corrupt)?,
                })
            })
            .collect()
    }

    /// A replayed event was delivered (or no longer exists): its parked row goes.
    pub async fn replayed(
        &self,
        plugin: Uuid,
        shard: u32,
        added_id: i64,
    ) -> Result<(), CatalogError> {
        let s = shard as i32;
        query(
            self,
            "DELETE FROM mezzanine.plugin_parked WHERE plugin_id = $1 AND shard = $2 AND added_id = $3",
            &[(&plugin, Type::UUID), (&s, Type::INT4), (&added_id, Type::INT8)],
        )
        .await?;
        Ok(())
    }

    /// Records a plugin's delivery state (`delivering`, or `backing_off`) and, when given, its
    /// last error (with its time). Writes only when something changes.
    pub async fn set_delivery_state(
        &self,
        plugin: Uuid,
        backing_off: bool,
        error: Option<&str>,
    ) -> Result<(), CatalogError> {
        let state = if backing_off {
            "backing_off"
        } else {
            "delivering"
        };
        query(
            self,
            "UPDATE mezzanine.plugins SET delivery_state = $2, \
                    last_error = coalesce($3, last_error), \
                    last_error_at = CASE WHEN $3 IS NULL THEN last_error_at ELSE now() END \
             WHERE id = $1 AND (delivery_state <> $2 OR $3 IS NOT NULL)",
            &[
                (&plugin, Type::UUID),
                (&state, Type::TEXT),
                (&error, Type::TEXT),
            ],
        )
        .await?;
        Ok(())
    }
}
