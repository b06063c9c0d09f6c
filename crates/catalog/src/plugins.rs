//! Plugin registrations (go-mezzanine's trigger plugins) in the catalog: `mezzanine.plugins`
//! (go-mezzanine's columns: id, name (unique), endpoint, subscribed_columns, status,
//! created_at), and `meta.plugins_version`, bumped by every registration, deletion and
//! import, so that a node can tell cheaply whether its copy is current. Every change is
//! committed with `pg_notify('mezzanine_catalog', 'plugins')` and audited; every node keeps
//! the current set in memory (the server's `plugins` module).
//!
//! The state of delivery (offsets per plugin and shard, pauses, parked events) is not here:
//! it belongs in tables of its own keyed by `plugins.id` with `ON DELETE CASCADE`, so that a
//! deletion removes it in the same transaction, and it never shows in the `/v1` answers.
//!
//! Adoption: a go-mezzanine cluster keeps its plugins in a table `plugins` on its first
//! backend ([`read_go_plugins`]); [`Catalog::import_go_plugins`] copies them once, with their
//! ids, and records that it did in `meta.go_plugins_imported_at`.

use chrono::{DateTime, Utc};
use mezzanine_core::plugin::NewPlugin;
use mezzanine_storage::backend::Lease;
use mezzanine_storage::{Backend, StorageError};
use tokio_postgres::types::Type;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{audit, corrupt, notify, scalar, Catalog, CatalogError};

/// The notification of a change of the plugins.
pub const NOTIFY_KIND: &str = "plugins";

/// A registered plugin, as `/v1/plugins` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    pub id: Uuid,
    pub name: String,
    pub endpoint: String,
    pub subscribed_columns: Vec<String>,
    /// `active` (every registration), or `inactive` (only imported from go-mezzanine).
    pub status: String,
    pub created_at: DateTime<Utc>,
}

/// Every registered plugin and the version of the set (`meta.plugins_version`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginSet {
    pub version: i64,
    /// In registration order (`created_at`, then `id`).
    pub plugins: Vec<Plugin>,
}

/// What an import from go-mezzanine's table did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Imported with their ids.
    pub imported: Vec<Plugin>,
    /// Left out: their id or name is in the catalog already.
    pub skipped: Vec<Plugin>,
}

pub(crate) const COLUMNS: &str = "id, name, endpoint, subscribed_columns, status, created_at";

pub(crate) fn plugin_from(r: &Row, at: usize) -> Result<Plugin, CatalogError> {
    let columns: Vec<Option<String>> = r.try_get(at + 3).map_err(corrupt)?;
    Ok(Plugin {
        id: r.try_get(at).map_err(corrupt)?,
        name: r.try_get(at + 1).map_err(corrupt)?,
        endpoint: r.try_get(at + 2).map_err(corrupt)?,
        subscribed_columns: columns.into_iter().flatten().collect(),
        status: r.try_get(at + 4).map_err(corrupt)?,
        created_at: r.try_get(at + 5).map_err(corrupt)?,
    })
}

fn summary(p: &Plugin) -> serde_json::Value {
    serde_json::json!({"id": p.id, "name": p.name})
}

impl Catalog {
    /// Every registered plugin with the set's version, in one statement (one snapshot).
    pub async fn plugins(&self) -> Result<PluginSet, CatalogError> {
        let lease = self.lease().await?;
        let rows = lease
            .query(
                "SELECT m.plugins_version, p.id, p.name, p.endpoint, p.subscribed_columns, \
                        p.status, p.created_at \
                 FROM mezzanine.meta m LEFT JOIN mezzanine.plugins p ON true \
                 ORDER BY p.created_at, p.id",
                &[],
            )
            .await?;
        let mut set = PluginSet::default();
        for r in &rows {
            set.version = r.try_get(0).map_err(corrupt)?;
            let id: Option<Uuid> = r.try_get(1).map_err(corrupt)?;
            if id.is_some() {
                set.plugins.push(plugin_from(r, 1)?);
            }
        }
        Ok(set)
    }

    /// One plugin, if registered.
    pub async fn plugin(&self, id: Uuid) -> Result<Option<Plugin>, CatalogError> {
        let lease = self.lease().await?;
        let rows = lease
            .query(
                &format!("SELECT {COLUMNS} FROM mezzanine.plugins WHERE id = $1"),
                &[(&id, Type::UUID)],
            )
            .await?;
        rows.first().map(|r| plugin_from(r, 0)).transpose()
    }

    /// The map's and the plugins' versions, in one statement (the refresher's poll).
    pub async fn versions(&self) -> Result<(i64, i64), CatalogError> {
        let lease = self.lease().await?;
        let rows = lease
            .query(
                "SELECT map_version, plugins_version FROM mezzanine.meta",
                &[],
            )
            .await?;
        let r = rows
            .first()
            .ok_or_else(|| CatalogError::Corrupt("the catalog has no meta row".into()))?;
        Ok((
            r.try_get(0).map_err(corrupt)?,
            r.try_get(1).map_err(corrupt)?,
        ))
    }

    /// Registers a checked plugin (`active`, a new id, the catalog's time); a name
    /// registered already is a [`CatalogError::PluginNameTaken`]; a registration beyond `max`
    /// plugins (`PLUGINS_MAX`: metrics carry each plugin's name) a [`CatalogError::Conflict`],
    /// checked under the change's lock so that concurrent registrations cannot pass it
    /// together.
    pub async fn register_plugin(&self, new: &NewPlugin, max: u32) -> Result<Plugin, CatalogError> {
        let id = Uuid::new_v4();
        let lease = self.begin_plugins_change().await?;
        let body = async {
            let count: i64 = scalar(&lease, "SELECT count(*) FROM mezzanine.plugins", &[]).await?;
            if count >= i64::from(max) {
                return Err(CatalogError::Conflict(format!(
                    "{count} plugins are registered, the most this cluster allows \
                     (PLUGINS_MAX={max}): delete one, or raise PLUGINS_MAX on every node"
                )));
            }
            let rows = lease
                .query(
                    &format!(
                        "INSERT INTO mezzanine.plugins (id, name, endpoint, subscribed_columns) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING \
                         RETURNING {COLUMNS}"
                    ),
                    &[
                        (&id, Type::UUID),
                        (&new.name, Type::TEXT),
                        (&new.endpoint, Type::TEXT),
                        (&new.subscribed_columns, Type::TEXT_ARRAY),
                    ],
                )
                .await?;
            let Some(row) = rows.first() else {
                return Err(CatalogError::PluginNameTaken(new.name.clone()));
            };
            let p = plugin_from(row, 0)?;
            let detail = serde_json::json!({
                "id": p.id, "name": p.name, "endpoint": p.endpoint,
                "subscribed_columns": p.subscribed_columns,
            });
            audit(&lease, &self.node, "plugin_register", &detail).await?;
            Ok(p)
        }
        .await;
        self.end_plugins_change(lease, body).await
    }

    /// Unregisters a plugin; an unknown id is a [`CatalogError::NotFound`].
    pub async fn delete_plugin(&self, id: Uuid) -> Result<Plugin, CatalogError> {
        let lease = self.begin_plugins_change().await?;
        let body = async {
            let rows = lease
                .query(
                    &format!("DELETE FROM mezzanine.plugins WHERE id = $1 RETURNING {COLUMNS}"),
                    &[(&id, Type::UUID)],
                )
                .await?;
            let row = rows
                .first()
                .ok_or_else(|| CatalogError::NotFound(format!("no plugin with id {id}")))?;
            let p = plugin_from(row, 0)?;
            audit(&lease, &self.node, "plugin_delete", &summary(&p)).await?;
            Ok(p)
        }
        .await;
        self.end_plugins_change(lease, body).await
    }

    /// Whether go-mezzanine's plugins were imported already (or found absent).
    pub async fn go_plugins_imported(&self) -> Result<bool, CatalogError> {
        let lease = self.lease().await?;
        scalar(
            &lease,
            "SELECT go_plugins_imported_at IS NOT NULL FROM mezzanine.meta",
            &[],
        )
        .await
    }

    /// Imports go-mezzanine's plugins `found` in `source` (`None`: it has no such table),
    /// once: with their ids, names, endpoints, columns, status and times; a plugin whose id
    /// or name the catalog holds already is left out. Audited (`plugins_import`) when
    /// `source` had the table. `None` when an import was done before (by another node, say).
    pub async fn import_go_plugins(
        &self,
        source: &str,
        found: Option<&[Plugin]>,
    ) -> Result<Option<ImportReport>, CatalogError> {
        let lease = self.lease().await?;
        lease.batch_execute("BEGIN").await?;
        let body = async {
            let done: bool = scalar(
                &lease,
                "SELECT go_plugins_imported_at IS NOT NULL FROM mezzanine.meta FOR UPDATE",
                &[],
            )
            .await?;
            if done {
                return Ok(None);
            }
            let mut report = ImportReport::default();
            for p in found.unwrap_or_default() {
                let rows = lease
                    .query(
                        "INSERT INTO mezzanine.plugins \
                           (id, name, endpoint, subscribed_columns, status, created_at) \
                         VALUES ($1, $2, $3, $4, \
                           CASE WHEN $5 IN ('active', 'inactive') THEN $5 ELSE 'inactive' END, $6) \
                         ON CONFLICT DO NOTHING RETURNING id",
                        &[
                            (&p.id, Type::UUID),
                            (&p.name, Type::TEXT),
                            (&p.endpoint, Type::TEXT),
                            (&p.subscribed_columns, Type::TEXT_ARRAY),
                            (&p.status, Type::TEXT),
                            (&p.created_at, Type::TIMESTAMPTZ),
                        ],
                    )
                    .await?;
                if rows.is_empty() {
                    report.skipped.push(p.clone());
                } else {
                    report.imported.push(p.clone());
                }
            }
            lease
                .query(
                    "UPDATE mezzanine.meta SET go_plugins_imported_at = now(), \
                            plugins_version = plugins_version + $1",
                    &[(&i64::from(!report.imported.is_empty()), Type::INT8)],
                )
                .await?;
            if found.is_some() {
                let detail = serde_json::json!({
                    "from": source,
                    "imported": report.imported.iter().map(summary).collect::<Vec<_>>(),
                    "skipped": report.skipped.iter().map(summary).collect::<Vec<_>>(),
                });
                audit(&lease, &self.node, "plugins_import", &detail).await?;
            }
            if !report.imported.is_empty() {
                notify(&lease, NOTIFY_KIND).await?;
            }
            Ok(Some(report))
        }
        .await;
        Ok(crate::commit_if_ok(&lease, body, || async { Ok(()) })
            .await?
            .0)
    }

    /// Starts a change of the plugins: a transaction that has bumped `plugins_version` (its
    /// row lock orders changes). End it with [`Catalog::end_plugins_change`].
    pub(crate) async fn begin_plugins_change(&self) -> Result<Lease<'_>, CatalogError> {
        self.begin_with("UPDATE mezzanine.meta SET plugins_version = plugins_version + 1")
            .await
    }

    /// Notifies every node and commits when `body` succeeded; otherwise rolls back.
    pub(crate) async fn end_plugins_change<T>(
        &self,
        lease: Lease<'_>,
        body: Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        let notified = crate::commit_if_ok(&lease, body, || notify(&lease, NOTIFY_KIND)).await?;
        Ok(notified.0)
    }
}

/// go-mezzanine's plugins on `backend` (its first backend): the rows of its table `plugins`
/// (`id UUID PRIMARY KEY, name TEXT UNIQUE NOT NULL, endpoint TEXT NOT NULL,
/// subscribed_columns TEXT[] NOT NULL, status TEXT NOT NULL DEFAULT 'active', created_at
/// TIMESTAMPTZ NOT NULL DEFAULT now()`), found as go-mezzanine finds it (by the search path);
/// `None` when there is no such table (or the name finds the catalog's own).
pub async fn read_go_plugins(backend: &Backend) -> Result<Option<Vec<Plugin>>, StorageError> {
    let lease = backend.lease().await?;
    let rows = lease
        .query(
            "SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = to_regclass('plugins')",
            &[],
        )
        .await?;
    let schema: Option<String> = rows.first().and_then(|r| r.try_get(0).ok());
    let Some(schema) = schema.filter(|s| s != "mezzanine") else {
        return Ok(None);
    };
    let table = format!("\"{}\".plugins", schema.replace('"', "\"\""));
    let rows = lease
        .query(
            &format!("SELECT {COLUMNS} FROM {table} ORDER BY created_at, id"),
            &[],
        )
        .await?;
    let plugins = rows
        .iter()
        .map(|r| plugin_from(r, 0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StorageError::Layout {
            backend: backend.name().to_owned(),
            message: format!("its table {table} is not go-mezzanine's plugins table: {e}"),
        })?;
    Ok(Some(plugins))
}
