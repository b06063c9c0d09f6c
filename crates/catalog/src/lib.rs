//! mezzanine's catalog (DESIGN §4): the source of truth for the topology once seeded.
//!
//! It lives in the schema `mezzanine` of a PostgreSQL database (`CATALOG_URL`, or where the
//! backends of `shards.json` record it, or for a new cluster the first backend of
//! `shards.json`: [`cluster`]) and holds:
//!
//! - `meta`: `num_shards` (recorded once), the cluster id (made with the catalog, recorded in
//!   every backend: [`cluster`]) and the map version, bumped by every map change;
//! - `backends` and `shards` (shard → backend, with an epoch bumped by every move);
//! - `moves` and `move_shards`: move jobs and each shard's state in them (a partial unique
//!   index allows one in-flight move per shard);
//! - `audit`: one row per change of the map, the backends or a move (with who asked, when an
//!   admin request did: [`acting`]), per admin request, and per refused request (bounded);
//! - `plugins`: go-mezzanine's trigger plugins, registered through `/v1/plugins` or imported
//!   from go-mezzanine's table on adoption ([`plugins`]), with their own version in `meta`;
//!   their delivery (`plugin_offsets`, `plugin_parked`) as operators see and change it
//!   ([`plugin_ops`]);
//! - `leader`: who leads the mover (valid only while its session holds the advisory lock) and
//!   its term, incremented at every acquisition (the fence of the backends against a leader
//!   that lost its place: [`leader`]).
//!
//! Every change is committed with `pg_notify('mezzanine_catalog', kind)`; [`listen`] delivers
//! those notifications to server nodes, which reload the map.

pub mod cluster;
pub mod delivery;
mod ensure;
pub use ensure::SCHEMA_VERSION;
pub mod leader;
pub mod moves;
pub mod plugin_ops;
pub mod plugins;
pub mod rebalance;

use std::sync::Arc;

use mezzanine_core::{MapBackend, ShardMap};
use mezzanine_storage::backend::Lease;
use mezzanine_storage::{Backend, PoolSettings, StorageError};
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::Row;

pub use leader::{
    current_leader, CurrentLeader, Dedicated, Fence, Leader, LeaderInfo, LeaderSession,
};
pub use moves::{MoveJob, MoveShard, NewMove, Request};
pub use plugin_ops::{Offset, ParkedEvent, PluginDelivery};
pub use plugins::{Plugin, PluginSet};
pub use rebalance::{NewRebalance, Progress, Rebalance};

/// The notification channel of catalog changes.
pub const CHANNEL: &str = "mezzanine_catalog";

/// What can go wrong with the catalog.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CatalogError {
    /// From the catalog's database (its messages name it `the catalog database`).
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "the catalog records NUM_SHARDS={catalog}, but NUM_SHARDS={given} was given; the shard \
         of every row key depends on it, so mezzanine refuses to start"
    )]
    NumShards { catalog: u32, given: u32 },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A plugin of this name is registered already (`name` as given).
    #[error("plugin {0:?} already registered")]
    PluginNameTaken(String),
    #[error("{0}")]
    Invalid(String),
    #[error("catalog: {0}")]
    Corrupt(String),
    /// The catalog and the backends do not belong to one cluster (the message names the ids
    /// and what to do).
    #[error("{0}")]
    Cluster(String),
    /// A dedicated catalog session (a listener's, or the mover leader's) failed or was lost.
    #[error("catalog session: {0}")]
    Session(String),
}

/// The map as the catalog holds it.
#[derive(Debug, Clone)]
pub struct MapSnapshot {
    /// Bumped by every change of the map or of the backends.
    pub version: i64,
    pub map: ShardMap,
    /// The registered backends with their weight and draining mark, in the map's order.
    pub backends: Vec<BackendRecord>,
}

/// What [`Catalog::ensure`] found.
#[derive(Debug, Clone, Default)]
pub struct EnsureReport {
    /// The catalog was created now, from `shards.json`.
    pub seeded: bool,
    /// Where `shards.json` disagrees with the catalog (which wins).
    pub differences: Vec<String>,
    /// The cluster's id (made with the catalog).
    pub cluster_id: String,
}

/// A backend as registered.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendRecord {
    pub name: String,
    pub url: String,
    /// Its relative share of the data in a rebalance (default 1).
    pub weight: f64,
    /// Marked for retirement: receives nothing, and a rebalance moves its shards away.
    pub draining: bool,
}

/// A backend from a row of `name, url, weight, draining`.
fn backend_from(r: &Row) -> Result<BackendRecord, CatalogError> {
    Ok(BackendRecord {
        name: r.try_get(0).map_err(corrupt)?,
        url: r.try_get(1).map_err(corrupt)?,
        weight: r.try_get(2).map_err(corrupt)?,
        draining: r.try_get(3).map_err(corrupt)?,
    })
}

/// Weights are positive finite numbers.
fn check_weight(w: f64) -> Result<(), CatalogError> {
    if !(w.is_finite() && w > 0.0 && w <= 1e6) {
        return Err(CatalogError::Invalid(format!(
            "weight: {w} is not a positive number of at most 1000000"
        )));
    }
    Ok(())
}

/// Where the catalog is, and how messages name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogLocation {
    pub url: String,
    /// `the catalog database (CATALOG_URL)`, or which backend of shards.json holds it.
    pub label: String,
}

/// The catalog's database by configuration alone: `catalog_url` (`CATALOG_URL`) if given, else
/// the first backend of `shards.json` (`seed`). Nodes use [`cluster::Membership::locate`],
/// which asks the backends first.
pub fn locate(catalog_url: Option<&str>, seed: &ShardMap) -> CatalogLocation {
    match (catalog_url, seed.backends().first()) {
        (Some(u), _) => CatalogLocation {
            url: u.to_owned(),
            label: "the catalog database (CATALOG_URL)".to_owned(),
        },
        (None, Some(b)) => CatalogLocation {
            url: b.database_url.clone(),
            label: format!(
                "the catalog database (backend {}'s, the first of shards.json; CATALOG_URL \
                 puts it elsewhere)",
                b.name
            ),
        },
        (None, None) => CatalogLocation {
            url: String::new(),
            label: "the catalog database".to_owned(),
        },
    }
}

/// A handle on the catalog database.
pub struct Catalog {
    db: Arc<Backend>,
    url: String,
    node: String,
    /// The cluster's id, once [`Catalog::ensure`] read it.
    cluster_id: std::sync::OnceLock<String>,
}

impl Catalog {
    /// A pool on the catalog database; `node` names this process in the audit log; messages
    /// name the database `label` (`the catalog database (CATALOG_URL)`).
    pub fn open(
        url: &str,
        label: &str,
        settings: PoolSettings,
        node: &str,
    ) -> Result<Catalog, CatalogError> {
        Ok(Catalog {
            db: Backend::with_label("catalog", label, url, settings)?,
            url: url.to_owned(),
            node: node.to_owned(),
            cluster_id: std::sync::OnceLock::new(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Probes the catalog's pool forever (until the catalog is dropped), like a backend's: a
    /// pool marked down (a partition, a catalog restart) fails fast until a probe sees the
    /// catalog answer again, and then serves again. Without it, a node cut off from the
    /// catalog once would never read its map again.
    pub fn spawn_health_loop(&self) -> tokio::task::JoinHandle<()> {
        self.db.spawn_health_loop()
    }

    pub(crate) async fn lease(&self) -> Result<Lease<'_>, CatalogError> {
        Ok(self.db.lease().await?)
    }

    /// The current map, read in one statement (one snapshot).
    pub async fn load(&self) -> Result<MapSnapshot, CatalogError> {
        let lease = self.lease().await?;
        Ok(self.load_on(&lease).await?.ok_or_else(no_meta)?.0)
    }

    /// The cluster's id, once [`Catalog::ensure`] ran.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.get().map(String::as_str)
    }

    /// The map, the catalog's layout version and its cluster id, or `None` when the catalog's
    /// tables exist but were never seeded.
    async fn load_on(
        &self,
        lease: &Lease<'_>,
    ) -> Result<Option<(MapSnapshot, i32, Option<String>)>, CatalogError> {
        let rows = lease
            .query(
                "SELECT m.map_version, \
                        ARRAY(SELECT name FROM mezzanine.backends ORDER BY added_at, name), \
                        ARRAY(SELECT url FROM mezzanine.backends ORDER BY added_at, name), \
                        ARRAY(SELECT backend FROM mezzanine.shards ORDER BY shard), \
                        m.schema_version, \
                        ARRAY(SELECT weight FROM mezzanine.backends ORDER BY added_at, name), \
                        ARRAY(SELECT draining FROM mezzanine.backends ORDER BY added_at, name), \
                        to_jsonb(m)->>'cluster_id' \
                 FROM mezzanine.meta m",
                &[],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let version: i64 = row.try_get(0).map_err(corrupt)?;
        let names: Vec<String> = row.try_get(1).map_err(corrupt)?;
        let urls: Vec<String> = row.try_get(2).map_err(corrupt)?;
        let owners: Vec<String> = row.try_get(3).map_err(corrupt)?;
        let schema: i32 = row.try_get(4).map_err(corrupt)?;
        let weights: Vec<f64> = row.try_get(5).map_err(corrupt)?;
        let draining: Vec<bool> = row.try_get(6).map_err(corrupt)?;
        let cluster_id: Option<String> = row.try_get(7).map_err(corrupt)?;
        let records: Vec<BackendRecord> = names
            .into_iter()
            .zip(urls)
            .zip(weights.into_iter().zip(draining))
            .map(|((name, url), (weight, draining))| BackendRecord {
                name,
                url,
                weight,
                draining,
            })
            .collect();
        let backends = records
            .iter()
            .map(|r| MapBackend {
                name: r.name.clone(),
                database_url: r.url.clone(),
            })
            .collect();
        let owners: Vec<&str> = owners.iter().map(String::as_str).collect();
        let map = ShardMap::from_owners(backends, &owners)
            .map_err(|e| CatalogError::Corrupt(e.to_string()))?;
        Ok(Some((
            MapSnapshot {
                version,
                map,
                backends: records,
            },
            schema,
            cluster_id,
        )))
    }

    /// The map version only (a cheap poll).
    pub async fn version(&self) -> Result<i64, CatalogError> {
        let lease = self.lease().await?;
        scalar(&lease, "SELECT map_version FROM mezzanine.meta", &[]).await
    }

    /// The registered backends, URLs unmasked (callers mask them before showing them), in
    /// the order they were added.
    pub async fn backends(&self) -> Result<Vec<BackendRecord>, CatalogError> {
        Ok(self.load().await?.backends)
    }

    /// Registers an empty backend with a weight (its relative share in a rebalance). The
    /// caller checks the connection and prepares the schema first.
    pub async fn add_backend(
        &self,
        name: &str,
        url: &str,
        weight: f64,
    ) -> Result<i64, CatalogError> {
        if !mezzanine_core::shardmap::valid_backend_name(name) {
            return Err(CatalogError::Invalid(format!(
                "name {name:?} is invalid: use 1 to 63 characters of letters, digits, '_', '-' or '.'"
            )));
        }
        check_weight(weight)?;
        let detail = serde_json::json!({"name": name, "url": mezzanine_storage::mask_url(url), "weight": weight});
        let lease = self.begin_change().await?;
        let body = async {
            let rows = lease
                .query(
                    "INSERT INTO mezzanine.backends (name, url, weight) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO NOTHING RETURNING name",
                    &[
                        (&name, Type::TEXT),
                        (&url, Type::TEXT),
                        (&weight, Type::FLOAT8),
                    ],
                )
                .await?;
            if rows.is_empty() {
                return Err(CatalogError::Conflict(format!(
                    "backend {name:?} exists already"
                )));
            }
            Ok(())
        }
        .await;
        Ok(self
            .end_change(lease, body, "backend_add", &detail)
            .await?
            .1)
    }

    /// Changes a backend's weight or draining mark (`None` leaves it as it is). A draining
    /// backend receives no shard: no move may target it and the planner moves its shards
    /// away.
    pub async fn update_backend(
        &self,
        name: &str,
        weight: Option<f64>,
        draining: Option<bool>,
    ) -> Result<BackendRecord, CatalogError> {
        if let Some(w) = weight {
            check_weight(w)?;
        }
        let detail = serde_json::json!({"name": name, "weight": weight, "draining": draining});
        let lease = self.begin_change().await?;
        let body = async {
            let rows = lease
                .query(
                    "UPDATE mezzanine.backends SET weight = coalesce($2, weight), \
                            draining = coalesce($3, draining) \
                     WHERE name = $1 RETURNING name, url, weight, draining",
                    &[
                        (&name, Type::TEXT),
                        (&weight, Type::FLOAT8),
                        (&draining, Type::BOOL),
                    ],
                )
                .await?;
            backend_from(
                rows.first()
                    .ok_or_else(|| CatalogError::NotFound(format!("no backend {name:?}")))?,
            )
        }
        .await;
        Ok(self
            .end_change(lease, body, "backend_update", &detail)
            .await?
            .0)
    }

    /// Unregisters a backend that owns no shard and takes part in no unfinished move.
    pub async fn remove_backend(&self, name: &str) -> Result<i64, CatalogError> {
        let detail = serde_json::json!({"name": name});
        let lease = self.begin_change().await?;
        let body = async {
            let rows = lease
                .query(
                    "SELECT (SELECT count(*) FROM mezzanine.backends WHERE name = $1), \
                            (SELECT count(*) FROM mezzanine.shards WHERE backend = $1), \
                            (SELECT count(*) FROM mezzanine.move_shards \
                              WHERE (from_backend = $1 OR to_backend = $1) \
                                AND state IN ('pending', 'copying', 'catching_up', 'cutover') \
                                 OR from_backend = $1 AND state = 'switched')",
                    &[(&name, Type::TEXT)],
                )
                .await?;
            let row = rows.first().ok_or_else(|| CatalogError::Corrupt("no row".into()))?;
            let (exists, owned, moving): (i64, i64, i64) = (
                row.try_get(0).map_err(corrupt)?,
                row.try_get(1).map_err(corrupt)?,
                row.try_get(2).map_err(corrupt)?,
            );
            if exists == 0 {
                return Err(CatalogError::NotFound(format!("no backend {name:?}")));
            }
            if owned > 0 {
                return Err(CatalogError::Conflict(format!(
                    "backend {name:?} owns {owned} shards: move them away first (mezzanine backend drain, or move start)"
                )));
            }
            if moving > 0 {
                return Err(CatalogError::Conflict(format!(
                    "backend {name:?} takes part in {moving} unfinished shard moves (running, or switched from it and not completed: it holds their retired copies): finish, complete or abort them first"
                )));
            }
            lease
                .query(
                    "DELETE FROM mezzanine.backends WHERE name = $1",
                    &[(&name, Type::TEXT)],
                )
                .await?;
            Ok(())
        }
        .await;
        Ok(self
            .end_change(lease, body, "backend_remove", &detail)
            .await?
            .1)
    }

    /// Starts a change of the catalog: a transaction holding the `meta` row lock, which
    /// serialises changes and orders them by version. End it with [`Catalog::end_change`].
    pub(crate) async fn begin_change(&self) -> Result<Lease<'_>, CatalogError> {
        self.begin_with("SELECT map_version FROM mezzanine.meta FOR UPDATE")
            .await
    }

    /// Begins a transaction on a fresh lease and runs `first` in it (the statement taking the
    /// lock that orders this kind of change); rolls back if that fails.
    pub(crate) async fn begin_with(&self, first: &str) -> Result<Lease<'_>, CatalogError> {
        let lease = self.lease().await?;
        lease.batch_execute("BEGIN").await?;
        if let Err(e) = lease.query(first, &[]).await {
            let _ = lease.batch_execute("ROLLBACK").await;
            return Err(e.into());
        }
        Ok(lease)
    }

    /// Ends a change begun with [`Catalog::begin_change`]: when `body` succeeded, bumps the map
    /// version, writes the audit row, notifies every node and commits (returning the new
    /// version); otherwise rolls back.
    pub(crate) async fn end_change<T>(
        &self,
        lease: Lease<'_>,
        body: Result<T, CatalogError>,
        kind: &str,
        detail: &serde_json::Value,
    ) -> Result<(T, i64), CatalogError> {
        commit_if_ok(&lease, body, || self.bump_on(&lease, kind, detail)).await
    }

    /// Bumps the map version, audits and notifies, inside the caller's transaction.
    pub(crate) async fn bump_on(
        &self,
        lease: &Lease<'_>,
        kind: &str,
        detail: &serde_json::Value,
    ) -> Result<i64, CatalogError> {
        let version: i64 = scalar(
            lease,
            "UPDATE mezzanine.meta SET map_version = map_version + 1 RETURNING map_version",
            &[],
        )
        .await?;
        audit(lease, &self.node, kind, detail).await?;
        notify(lease, "map").await?;
        Ok(version)
    }

    /// Appends an entry of `kind` to the audit log on its own: an admin request and its
    /// outcome, a refused request, or something that changed nothing (a refused or failed
    /// `backend add`, say). `detail` should name who asked (`by`) and must hold no secret:
    /// mask URLs first.
    pub async fn record(&self, kind: &str, detail: &serde_json::Value) -> Result<(), CatalogError> {
        let lease = self.lease().await?;
        audit(&lease, &self.node, kind, detail).await
    }

    /// The most recent audit entries, newest first: `(at, node, kind, detail)`.
    pub async fn audit(&self, limit: i64) -> Result<Vec<AuditEntry>, CatalogError> {
        let lease = self.lease().await?;
        let rows = lease
            .query(
                "SELECT id, at, node, kind, detail FROM mezzanine.audit ORDER BY id DESC LIMIT $1",
                &[(&limit, Type::INT8)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get(0).map_err(corrupt)?,
                    at: r.try_get(1).map_err(corrupt)?,
                    node: r.try_get(2).map_err(corrupt)?,
                    kind: r.try_get(3).map_err(corrupt)?,
                    detail: r.try_get(4).map_err(corrupt)?,
                })
            })
            .collect()
    }
}

/// One entry of the audit log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub node: String,
    pub kind: String,
    pub detail: serde_json::Value,
}

/// Where catalog statements run: a connection from the pool, or a dedicated session (the
/// listener's, the mover leader's).
pub(crate) trait Db {
    async fn rows(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, CatalogError>;
}

impl Db for Lease<'_> {
    async fn rows(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, CatalogError> {
        Ok(self.query(sql, params).await?)
    }
}

/// The first column of the first row of `sql` (an error when there is no row).
pub(crate) async fn scalar<T: for<'a> FromSql<'a>>(
    db: &impl Db,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<T, CatalogError> {
    db.rows(sql, params)
        .await?
        .first()
        .ok_or_else(|| CatalogError::Corrupt(format!("no row from {sql:?}")))?
        .try_get(0)
        .map_err(corrupt)
}

/// Who asks for a change: the name of the bearer token an admin request carried (never the
/// token itself; `None` when the admin API is open) and the client's address. Set for a
/// request's whole handling by [`acting`]; the audit entries written meanwhile record it as
/// `detail.by`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Actor {
    pub token: Option<String>,
    pub client: String,
}

tokio::task_local! {
    static ACTOR: Actor;
}

/// Runs `f` (an admin request's handling) on behalf of `actor`: every audit entry it writes
/// records who asked (`detail.by`).
pub async fn acting<F: std::future::Future>(actor: Actor, f: F) -> F::Output {
    ACTOR.scope(actor, f).await
}

/// `detail` with `by` (the [`Actor`] of the request being handled, if any) added, unless it
/// names one already.
fn with_actor(detail: &serde_json::Value) -> std::borrow::Cow<'_, serde_json::Value> {
    let actor = ACTOR.try_with(|a| a.clone()).ok();
    match (actor, detail) {
        (Some(a), serde_json::Value::Object(map)) if !map.contains_key("by") => {
            let mut map = map.clone();
            map.insert(
                "by".to_owned(),
                serde_json::to_value(a).unwrap_or(serde_json::Value::Null),
            );
            std::borrow::Cow::Owned(serde_json::Value::Object(map))
        }
        _ => std::borrow::Cow::Borrowed(detail),
    }
}

/// Appends an entry to the audit log (with the request's [`Actor`], if any).
pub(crate) async fn audit(
    db: &impl Db,
    node: &str,
    kind: &str,
    detail: &serde_json::Value,
) -> Result<(), CatalogError> {
    let detail = with_actor(detail);
    db.rows(
        "INSERT INTO mezzanine.audit (node, kind, detail) VALUES ($1, $2, $3)",
        &[
            (&node, Type::TEXT),
            (&kind, Type::TEXT),
            (detail.as_ref(), Type::JSONB),
        ],
    )
    .await?;
    Ok(())
}

/// Notifies every node of a change (`map`, `moves` or `plugins`), at the commit of the
/// transaction.
pub(crate) async fn notify(db: &impl Db, kind: &str) -> Result<(), CatalogError> {
    db.rows(
        "SELECT pg_notify($1, $2)",
        &[(&CHANNEL, Type::TEXT), (&kind, Type::TEXT)],
    )
    .await?;
    Ok(())
}

pub(crate) fn corrupt(e: tokio_postgres::Error) -> CatalogError {
    CatalogError::Corrupt(format!("unexpected row shape: {e}"))
}

fn no_meta() -> CatalogError {
    CatalogError::Corrupt("the catalog has no meta row".into())
}

fn check_num_shards(map: &ShardMap, given: u32) -> Result<(), CatalogError> {
    if map.num_shards() != given {
        return Err(CatalogError::NumShards {
            catalog: map.num_shards(),
            given,
        });
    }
    Ok(())
}

/// Where `seed` (shards.json) and `catalog` disagree, as sentences for the log.
pub fn differences(seed: &ShardMap, catalog: &ShardMap) -> Vec<String> {
    let mut out = Vec::new();
    for b in seed.backends() {
        match catalog.backends().iter().find(|c| c.name == b.name) {
            None => out.push(format!(
                "backend {:?} is in shards.json but not in the catalog",
                b.name
            )),
            Some(c) if c.database_url != b.database_url => out.push(format!(
                "backend {:?} has another database_url in shards.json ({}) than in the catalog ({})",
                b.name,
                mezzanine_storage::mask_url(&b.database_url),
                mezzanine_storage::mask_url(&c.database_url)
            )),
            Some(_) => {}
        }
    }
    let moved: Vec<u32> = (0..catalog.num_shards().min(seed.num_shards()))
        .filter(|&s| seed.owner_name(s) != catalog.owner_name(s))
        .collect();
    if !moved.is_empty() {
        out.push(format!(
            "{} shards have another owner in the catalog than in shards.json (shards {}); the catalog is the source of truth: `mezzanine shards export` prints it",
            moved.len(),
            mezzanine_core::format_shard_set(&moved)
        ));
    }
    out
}

/// Runs `sql` with `params` on a fresh lease of the catalog: a helper for single statements.
pub(crate) async fn query(
    catalog: &Catalog,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<Vec<tokio_postgres::Row>, CatalogError> {
    let lease = catalog.lease().await?;
    Ok(lease.query(sql, params).await?)
}

/// Ends a transaction on `lease`: when `body` succeeded, runs `last` (the change's last
/// statements: a version bump, an audit row, a notification) and commits, returning both
/// results; otherwise, or when `last` or the commit fails, rolls back.
pub(crate) async fn commit_if_ok<T, U, F, Fut>(
    lease: &Lease<'_>,
    body: Result<T, CatalogError>,
    last: F,
) -> Result<(T, U), CatalogError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<U, CatalogError>>,
{
    let done = match body {
        Ok(v) => match last().await {
            Ok(u) => lease
                .batch_execute("COMMIT")
                .await
                .map(|()| (v, u))
                .map_err(CatalogError::from),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    if done.is_err() {
        let _ = lease.batch_execute("ROLLBACK").await;
    }
    done
}
