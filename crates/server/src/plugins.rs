//! go-mezzanine's trigger plugins: `POST /v1/plugins`, `GET /v1/plugins`,
//! `GET /v1/plugins/{plugin_id}`, `DELETE /v1/plugins/{plugin_id}`, with go-mezzanine's
//! operation ids, status codes and answers (exactly `id, name, endpoint, subscribed_columns,
//! status, created_at`: its generated client refuses unknown fields).
//!
//! Registrations live in the catalog ([`mezzanine_catalog::plugins`]): a registration or
//! deletion through any node is what every node answers as soon as it is acknowledged (the
//! handlers read the catalog), and every node keeps the current set in memory ([`Registry`],
//! refreshed on the catalog's `plugins` notification and by the refresher's poll) for the
//! delivery to come. A go-mezzanine `plugins` table on the first backend of shards.json is
//! imported once when the node starts ([`adopt`]).
//!
//! Who may: reading needs what `/v1` reads need; registering and deleting make the server
//! send data to an endpoint, so once `/v1` needs tokens they need scope `admin`
//! ([`crate::auth`]). Endpoints must name a host `PLUGIN_HOSTS_ALLOWED` allows.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::SecondsFormat;
use mezzanine_catalog::{CatalogError, Plugin, PluginSet};
use mezzanine_core::plugin::{parse_plugin_id, NewPlugin};
use mezzanine_core::FieldError;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::problem::Problem;
use crate::AppState;

/// A registered plugin (go-mezzanine's `PluginResponse`, field for field and in its order).
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginResponse {
    /// Plugin UUID.
    #[schema(format = "uuid")]
    pub id: String,
    /// Plugin name.
    pub name: String,
    /// JSON-RPC endpoint URL.
    pub endpoint: String,
    /// Subscribed columns.
    pub subscribed_columns: Vec<String>,
    /// Plugin status.
    #[schema(example = "active")]
    pub status: String,
    /// Creation timestamp (RFC 3339, like the cells' `created_at`).
    #[schema(format = "date-time")]
    pub created_at: String,
}

impl From<&Plugin> for PluginResponse {
    fn from(p: &Plugin) -> Self {
        PluginResponse {
            id: p.id.hyphenated().to_string(),
            name: p.name.clone(),
            endpoint: p.endpoint.clone(),
            subscribed_columns: p.subscribed_columns.clone(),
            status: p.status.clone(),
            created_at: p.created_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        }
    }
}

/// A plugin to register. Unknown properties are refused (422).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RegisterPluginBody {
    /// A URL to the JSON Schema for this object (ignored).
    #[serde(rename = "$schema")]
    #[schema(format = "uri", read_only, nullable = false)]
    schema: Option<String>,
    /// Plugin name: 1 to 255 bytes of UTF-8, without NUL; unique (409).
    #[schema(min_length = 1, max_length = 255, pattern = "^[^\\u0000]+$")]
    name: String,
    /// JSON-RPC endpoint URL: `http` or `https`, with a host that PLUGIN_HOSTS_ALLOWED allows,
    /// without a user name or password.
    #[schema(min_length = 1, max_length = 2048, format = "uri")]
    endpoint: String,
    /// Columns to subscribe to (column names: 1 to 255 bytes, without NUL).
    #[schema(min_items = 1, max_items = 1000)]
    subscribed_columns: Vec<String>,
}

/// This node's copy of the registered plugins: what the delivery will act on. Replaced
/// whole (one atomic store) when the catalog's set changes.
pub struct Registry {
    set: ArcSwap<PluginSet>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            // Older than any catalog's set: the first look loads it.
            set: ArcSwap::from_pointee(PluginSet {
                version: -1,
                plugins: Vec::new(),
            }),
        }
    }
}

impl Registry {
    /// The set as this node knows it.
    pub fn current(&self) -> Arc<PluginSet> {
        self.set.load_full()
    }

    /// The version of the set held (-1 before the first load).
    pub fn version(&self) -> i64 {
        self.set.load().version
    }

    /// Installs `set` unless the one held is newer (two loads may finish out of order).
    pub fn install(&self, set: PluginSet) {
        let new = Arc::new(set);
        self.set.rcu(|old| {
            if old.version > new.version {
                old.clone()
            } else {
                new.clone()
            }
        });
    }

    /// The active plugins subscribed to `column` (what one write will be delivered to).
    pub fn for_column(&self, column: &str) -> Vec<Plugin> {
        self.set
            .load()
            .plugins
            .iter()
            .filter(|p| p.status == "active" && p.subscribed_columns.iter().any(|c| c == column))
            .cloned()
            .collect()
    }
}

/// Reads the catalog's set into `st`'s registry.
pub async fn reload(st: &AppState) {
    match st.catalog.plugins().await {
        Ok(set) => {
            if set.version != st.plugins.version() {
                tracing::debug!(
                    version = set.version,
                    plugins = set.plugins.len(),
                    "plugins reloaded"
                );
            }
            st.plugins.install(set);
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the plugins from the catalog; keeping this node's copy")
        }
    }
}

/// Imports go-mezzanine's plugins from its table on `first` (the first backend of
/// shards.json, where go-mezzanine keeps them) into the catalog, once per cluster. A failure
/// is logged and tried again at the next start.
pub async fn adopt(st: &AppState, first: Option<Arc<mezzanine_storage::Backend>>) {
    let Some(backend) = first else { return };
    match st.catalog.go_plugins_imported().await {
        Ok(false) => {}
        Ok(true) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell whether go-mezzanine's plugins were imported; trying at the next start");
            return;
        }
    }
    let found = match mezzanine_catalog::plugins::read_go_plugins(&backend).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(backend = %backend.name(), error = %e, "cannot look for go-mezzanine's plugins table; trying at the next start");
            return;
        }
    };
    let source = format!("backend {} (table plugins)", backend.name());
    match st
        .catalog
        .import_go_plugins(&source, found.as_deref())
        .await
    {
        Ok(Some(report)) if found.is_some() => {
            let hosts = plugin_hosts(st);
            for p in &report.imported {
                if let Err(e) =
                    mezzanine_core::plugin::check_endpoint(&p.endpoint, "endpoint", &hosts)
                {
                    tracing::warn!(plugin = %p.name, error = %e.message, "an imported plugin's endpoint would not be accepted by POST /v1/plugins");
                }
            }
            let names = |ps: &[Plugin]| ps.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
            tracing::info!(
                from = %source,
                imported = ?names(&report.imported),
                skipped = ?names(&report.skipped),
                "go-mezzanine's plugins imported into the catalog (same ids)"
            );
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot import go-mezzanine's plugins; trying at the next start")
        }
    }
}

pub(crate) fn plugin_hosts(st: &AppState) -> mezzanine_core::hosts::HostsAllowed {
    st.config.plugin_hosts_allowed.clone().unwrap_or_else(|| {
        mezzanine_core::hosts::HostsAllowed::default_for(
            mezzanine_core::plugin::PLUGIN_HOSTS_ALLOWED,
        )
    })
}

/// Who asks (the audit log's `by`): the token's name and the client's address.
fn actor(
    caller: Option<&Caller>,
    peer: Option<&ConnectInfo<SocketAddr>>,
) -> mezzanine_catalog::Actor {
    mezzanine_catalog::Actor {
        token: caller.and_then(Caller::name).map(str::to_owned),
        client: peer.map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string()),
    }
}

fn plugin_id(id: Result<Path<String>, PathRejection>) -> Result<Uuid, Problem> {
    let Path(id) = id.map_err(crate::api::path_problem)?;
    parse_plugin_id(&id, "path.plugin_id").map_err(Problem::field)
}

fn not_found(id: Uuid) -> Problem {
    Problem::not_found(format!("plugin not found: no plugin has the id {id}"))
}

/// Register a trigger plugin.
#[utoipa::path(post, path = "/v1/plugins", tag = "plugins", operation_id = "register-plugin",
    request_body(content = RegisterPluginBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered", body = PluginResponse),
        (status = 409, description = "A plugin of that name is registered, or PLUGINS_MAX plugins are", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (an endpoint that is not an http or https URL, or names a host PLUGIN_HOSTS_ALLOWED does not allow); each fault is named in `errors`", body = Problem, content_type = "application/problem+json"),
        (status = "default", description = "Error", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn register(
    State(st): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let v = crate::api::read_text_json(&headers, body, st.config.max_body_bytes)?;
    let new = NewPlugin::from_json(v, "body", &plugin_hosts(&st)).map_err(Problem::invalid)?;
    let who = actor(caller.as_deref(), peer.as_deref());
    let p = mezzanine_catalog::acting(who, st.catalog.register_plugin(&new, st.config.plugins_max))
        .await
        .map_err(|e| match e {
            e @ CatalogError::PluginNameTaken(_) => {
                let mut p = Problem::new(StatusCode::CONFLICT, e.to_string());
                p.errors.push(FieldError::new(
                    "body.name",
                    "is registered already",
                    Some(new.name.clone().into()),
                ));
                p
            }
            e => Problem::from(e),
        })?;
    tracing::info!(id = %p.id, name = %p.name, endpoint = %p.endpoint, "plugin registered");
    Ok((StatusCode::CREATED, Json(PluginResponse::from(&p))).into_response())
}

/// List all plugins.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins", operation_id = "list-plugins",
    responses(
        (status = 200, description = "Every registered plugin, in registration order", body = Vec<PluginResponse>),
        (status = "default", description = "Error", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(State(st): State<Arc<AppState>>) -> Result<Json<Vec<PluginResponse>>, Problem> {
    let set = st.catalog.plugins().await?;
    Ok(Json(set.plugins.iter().map(PluginResponse::from).collect()))
}

/// Get a plugin by ID.
#[utoipa::path(get, path = "/v1/plugins/{plugin_id}", tag = "plugins", operation_id = "get-plugin",
    params(("plugin_id" = String, Path, description = "Plugin UUID", format = Uuid)),
    responses(
        (status = 200, description = "The plugin", body = PluginResponse),
        (status = 404, description = "No plugin has this id", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = "default", description = "Error", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    State(st): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<PluginResponse>, Problem> {
    let id = plugin_id(id)?;
    let p = st.catalog.plugin(id).await?.ok_or_else(|| not_found(id))?;
    Ok(Json(PluginResponse::from(&p)))
}

/// Delete a plugin.
#[utoipa::path(delete, path = "/v1/plugins/{plugin_id}", tag = "plugins", operation_id = "delete-plugin",
    params(("plugin_id" = String, Path, description = "Plugin UUID", format = Uuid)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No plugin has this id", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = "default", description = "Error", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(
    State(st): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, Problem> {
    let id = plugin_id(id)?;
    let who = actor(caller.as_deref(), peer.as_deref());
    match mezzanine_catalog::acting(who, st.catalog.delete_plugin(id)).await {
        Ok(p) => {
            tracing::info!(id = %p.id, name = %p.name, "plugin deleted");
            Ok(StatusCode::NO_CONTENT)
        }
        Err(CatalogError::NotFound(_)) => Err(not_found(id)),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn plugin(name: &str, columns: &[&str], status: &str) -> Plugin {
        Plugin {
            id: Uuid::new_v4(),
            name: name.into(),
            endpoint: "http://localhost:9000/rpc".into(),
            subscribed_columns: columns.iter().map(|c| c.to_string()).collect(),
            status: status.into(),
            created_at: chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        }
    }

    #[test]
    fn answers_have_go_mezzanines_fields_in_its_order() {
        let p = plugin("billing", &["profile"], "active");
        let text = serde_json::to_string(&PluginResponse::from(&p)).unwrap();
        let expected = format!(
            r#"{{"id":"{}","name":"billing","endpoint":"http://localhost:9000/rpc","subscribed_columns":["profile"],"status":"active","created_at":"2026-01-02T03:04:05Z"}}"#,
            p.id
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn the_registry_keeps_the_newest_set_and_finds_subscribers() {
        let r = Registry::default();
        assert_eq!(r.version(), -1);
        let set = |v, ps| PluginSet {
            version: v,
            plugins: ps,
        };
        r.install(set(
            2,
            vec![
                plugin("a", &["profile", "x"], "active"),
                plugin("b", &["profile"], "inactive"),
                plugin("c", &["other"], "active"),
            ],
        ));
        r.install(set(1, Vec::new()));
        assert_eq!(r.version(), 2);
        let names: Vec<String> = r
            .for_column("profile")
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["a"]);
        r.install(set(3, Vec::new()));
        assert!(r.for_column("profile").is_empty());
    }
}
