//! The admin API (`/admin/v1`, DESIGN §8): the map, backends, moves, verification, reload,
//! status and the plugins' delivery. Every node serves it; changes go to the catalog, and the
//! mover's leader carries out moves. Passwords in database URLs are never shown, except by
//! `shards/export?with_secrets=true` (audited).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use mezzanine_catalog::{current_leader, NewMove, Request};
use mezzanine_core::{parse_shard_set, FieldError, ShardMap};
use mezzanine_storage::mask_url;
use serde::Serialize;
use serde_json::{json, Value};

use crate::api::{path_problem, read_text_json};
use crate::problem::Problem;
use crate::AppState;

pub mod backends;
#[cfg(test)]
mod fuzz;
pub mod openapi;
pub mod plugins;
pub mod rebalance;
pub mod verify;

/// One admin route: its path template, method and handler.
pub(crate) struct Route {
    pub path: &'static str,
    /// The method (its filter is in `handler`; the document's test reads it).
    #[cfg_attr(not(test), allow(dead_code))]
    pub method: Method,
    handler: MethodRouter<Arc<AppState>>,
}

fn route<H, T>(path: &'static str, method: Method, handler: H) -> Route
where
    H: Handler<T, Arc<AppState>>,
    T: 'static,
{
    let filter = match method {
        Method::POST => MethodFilter::POST,
        Method::PATCH => MethodFilter::PATCH,
        Method::DELETE => MethodFilter::DELETE,
        Method::PUT => MethodFilter::PUT,
        _ => MethodFilter::GET,
    };
    Route {
        path,
        method,
        handler: on(filter, handler),
    }
}

/// Every admin route: the router is made from this table, and the document's test compares
/// it with [`openapi::document`].
pub(crate) fn table() -> Vec<Route> {
    vec![
        route("/admin/v1/shards", Method::GET, shards),
        route("/admin/v1/shards/export", Method::GET, export),
        route("/admin/v1/backends", Method::GET, list_backends),
        route("/admin/v1/backends", Method::POST, add_backend),
        route("/admin/v1/backends/{name}", Method::DELETE, remove_backend),
        route("/admin/v1/backends/{name}", Method::PATCH, update_backend),
        route(
            "/admin/v1/backends/{name}/drain",
            Method::POST,
            rebalance::drain_endpoint,
        ),
        route("/admin/v1/rebalance", Method::GET, rebalance::list),
        route(
            "/admin/v1/rebalance/plan",
            Method::POST,
            rebalance::plan_endpoint,
        ),
        route(
            "/admin/v1/rebalance/apply",
            Method::POST,
            rebalance::apply_endpoint,
        ),
        route("/admin/v1/rebalance/{id}", Method::GET, rebalance::get_one),
        route(
            "/admin/v1/rebalance/{id}/{action}",
            Method::POST,
            rebalance::action,
        ),
        route("/admin/v1/moves", Method::GET, list_moves),
        route("/admin/v1/moves", Method::POST, start_move),
        route("/admin/v1/moves/{id}", Method::GET, get_move),
        route("/admin/v1/moves/{id}/{action}", Method::POST, move_action),
        route("/admin/v1/verify", Method::POST, verify::verify),
        route("/admin/v1/reload", Method::POST, reload),
        route("/admin/v1/status", Method::GET, status),
        route("/admin/v1/audit", Method::GET, audit),
        route("/admin/v1/plugins", Method::GET, plugins::list),
        route("/admin/v1/plugins/{name}", Method::GET, plugins::get_one),
        route(
            "/admin/v1/plugins/{name}/pause",
            Method::POST,
            plugins::pause,
        ),
        route(
            "/admin/v1/plugins/{name}/resume",
            Method::POST,
            plugins::resume,
        ),
        route(
            "/admin/v1/plugins/{name}/parked",
            Method::GET,
            plugins::parked,
        ),
        route(
            "/admin/v1/plugins/{name}/parked",
            Method::DELETE,
            plugins::drop_parked,
        ),
        route(
            "/admin/v1/plugins/{name}/replay",
            Method::POST,
            plugins::replay,
        ),
        route("/admin/v1/openapi.json", Method::GET, openapi::serve),
    ]
}

/// The admin routes.
pub fn routes() -> Router<Arc<AppState>> {
    table()
        .into_iter()
        .fold(Router::new(), |r, x| r.route(x.path, x.handler))
}

#[derive(Serialize)]
struct Range {
    start: u32,
    end: u32,
    backend: String,
    state: &'static str,
}

/// Contiguous shards with the same owner and state, as ranges.
fn ranges(map: &ShardMap, state_of: impl Fn(u32) -> &'static str) -> Vec<Range> {
    let mut out: Vec<Range> = Vec::new();
    for s in 0..map.num_shards() {
        let backend = map.owner_name(s).unwrap_or_default();
        let state = state_of(s);
        match out.last_mut() {
            Some(r) if r.backend == backend && r.state == state && r.end + 1 == s => r.end = s,
            _ => out.push(Range {
                start: s,
                end: s,
                backend: backend.to_owned(),
                state,
            }),
        }
    }
    out
}

/// `GET /admin/v1/shards`: the catalog's map, as ranges with their owner and state (`active`,
/// or the state of a move in progress).
async fn shards(State(st): State<Arc<AppState>>) -> Result<Response, Problem> {
    let (snap, moves) = tokio::try_join!(st.catalog.load(), st.catalog.open_moves())?;
    let mut moving: Vec<&'static str> = vec!["active"; snap.map.num_shards() as usize];
    for job in &moves {
        for s in &job.shards {
            if s.state.in_flight() {
                if let Some(slot) = moving.get_mut(s.shard as usize) {
                    *slot = s.state.as_str();
                }
            }
        }
    }
    Ok(Json(json!({
        "num_shards": snap.map.num_shards(),
        "version": snap.version,
        "ranges": ranges(&snap.map, |s| moving.get(s as usize).copied().unwrap_or("active")),
    }))
    .into_response())
}

/// `GET /admin/v1/shards/export[?with_secrets=true]`: the catalog's map in `shards.json`
/// form, its passwords masked unless asked for (which is audited).
async fn export(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Problem> {
    let with_secrets = backends::with_secrets(q.as_deref())?;
    if with_secrets {
        st.catalog
            .record("shards_export_with_secrets", &json!({}))
            .await?;
    }
    let snap = st.catalog.load().await?;
    Ok(Json(backends::export_file(&snap.map, with_secrets)).into_response())
}

#[derive(Serialize)]
struct BackendView {
    name: String,
    url: String,
    weight: f64,
    draining: bool,
    shards: usize,
    up: Option<bool>,
    latency_ms: Option<f64>,
    error: Option<String>,
}

async fn backend_views(st: &AppState) -> Result<Vec<BackendView>, Problem> {
    let snap = st.catalog.load().await?;
    let topo = st.topology();
    Ok(snap
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let health = topo
                .backends
                .iter()
                .find(|s| s.backend.name() == b.name)
                .map(|s| s.backend.health());
            BackendView {
                name: b.name.clone(),
                url: mask_url(&b.url),
                weight: b.weight,
                draining: b.draining,
                shards: snap.map.shards_of(i).count(),
                up: health.as_ref().map(|h| h.up),
                latency_ms: health.as_ref().and_then(|h| h.latency_ms),
                error: health.and_then(|h| h.error),
            }
        })
        .collect())
}

/// `GET /admin/v1/backends`.
async fn list_backends(State(st): State<Arc<AppState>>) -> Result<Response, Problem> {
    Ok(Json(json!({ "backends": backend_views(&st).await? })).into_response())
}

/// A required, non-empty string field of the body.
pub(crate) fn required_string(v: &Value, name: &str) -> Result<String, Problem> {
    match v.get(name) {
        None | Some(Value::Null) => Err(Problem::field(FieldError::new(
            format!("body.{name}"),
            "is required",
            None,
        ))),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Some(other) => Err(Problem::field(FieldError::new(
            format!("body.{name}"),
            "must be a non-empty string",
            Some(other.clone()),
        ))),
    }
}

/// An optional boolean field of the body.
pub(crate) fn optional_bool(v: &Value, name: &str) -> Result<Option<bool>, Problem> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(Problem::field(FieldError::new(
            format!("body.{name}"),
            "must be true or false",
            Some(other.clone()),
        ))),
    }
}

pub(crate) fn positive_field(v: &Value, name: &str) -> Result<Option<i64>, Problem> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => match n.as_i64() {
            Some(i) if i >= 1 => Ok(Some(i)),
            _ => Err(Problem::field(FieldError::new(
                format!("body.{name}"),
                "must be a positive integer",
                Some(n.clone()),
            ))),
        },
    }
}

pub(crate) fn object(v: Value, allowed: &[&str]) -> Result<Value, Problem> {
    let Some(obj) = v.as_object() else {
        return Err(Problem::field(FieldError::new(
            "body",
            "must be a JSON object",
            None,
        )));
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Problem::field(FieldError::new(
            format!("body.{k}"),
            "unexpected property",
            None,
        )));
    }
    Ok(v)
}

/// `POST /admin/v1/backends` `{name, url}`: checks the connection, prepares mezzanine's
/// metadata there (no shard), and registers the backend with no shards.
async fn add_backend(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let v = object(
        read_text_json(&headers, body, st.config.max_body_bytes)?,
        &["name", "url", "weight"],
    )?;
    let name = required_string(&v, "name")?;
    let url = required_string(&v, "url")?;
    let weight = weight_field(&v)?.unwrap_or(1.0);
    st.add_backend(&name, &url, weight).await?;
    let view = backend_views(&st)
        .await?
        .into_iter()
        .find(|b| b.name == name);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// The `body.weight` field: a positive number.
fn weight_field(v: &Value) -> Result<Option<f64>, Problem> {
    match v.get("weight") {
        None | Some(Value::Null) => Ok(None),
        Some(n) => match n.as_f64() {
            Some(w) if w.is_finite() && w > 0.0 && w <= 1e6 => Ok(Some(w)),
            _ => Err(Problem::field(FieldError::new(
                "body.weight",
                "must be a positive number of at most 1000000",
                Some(n.clone()),
            ))),
        },
    }
}

/// `PATCH /admin/v1/backends/{name}` `{weight?, draining?}`: changes the backend's share in
/// a rebalance, or takes a draining backend back (`draining: false`).
async fn update_backend(
    State(st): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let name = backend_in_path(path)?;
    let v = object(
        read_text_json(&headers, body, st.config.max_body_bytes)?,
        &["weight", "draining"],
    )?;
    let weight = weight_field(&v)?;
    let draining = optional_bool(&v, "draining")?;
    if weight.is_none() && draining.is_none() {
        return Err(Problem::field(FieldError::new(
            "body",
            "give weight, draining or both",
            None,
        )));
    }
    if draining == Some(true) {
        st.refuse_catalog_home(&name, "drain").await?;
    }
    st.catalog.update_backend(&name, weight, draining).await?;
    let view = backend_views(&st)
        .await?
        .into_iter()
        .find(|b| b.name == name);
    Ok(Json(view).into_response())
}

/// The `{name}` of a backend's path. A name no backend can have (`shardmap::valid_backend_name`:
/// a NUL character, say, which the catalog could not even look up) names no backend: 404.
pub(crate) fn backend_in_path(
    path: Result<Path<String>, PathRejection>,
) -> Result<String, Problem> {
    let Path(name) = path.map_err(path_problem)?;
    if !mezzanine_core::shardmap::valid_backend_name(&name) {
        return Err(Problem::not_found(format!(
            "no backend {name:?}: a backend's name is 1 to 63 letters, digits, '_', '-' or '.'"
        )));
    }
    Ok(name)
}

/// `DELETE /admin/v1/backends/{name}`: only a backend that owns nothing.
async fn remove_backend(
    State(st): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let name = backend_in_path(path)?;
    st.refuse_catalog_home(&name, "remove").await?;
    st.catalog.remove_backend(&name).await?;
    let _ = st.reload().await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /admin/v1/moves` `{shards: "8-15", to, parallel?, max_rows_per_sec?}` → 202 with
/// the job.
async fn start_move(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let v = object(
        read_text_json(&headers, body, st.config.max_body_bytes)?,
        &["shards", "to", "parallel", "max_rows_per_sec"],
    )?;
    let (spec, shards) = shards_field(&v, st.num_shards())?;
    let to = required_string(&v, "to")?;
    let parallel = positive_field(&v, "parallel")?.unwrap_or(4).min(64) as i32;
    let rate = positive_field(&v, "max_rows_per_sec")?;
    let job = st
        .catalog
        .create_move(&NewMove {
            shards: shards.iter().map(|&s| (s, to.clone())).collect(),
            shards_spec: spec,
            parallel,
            max_rows_per_sec: rate,
            reverts: None,
            auto_complete: false,
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// `GET /admin/v1/moves`: the most recent jobs, newest first.
async fn list_moves(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Problem> {
    let limit = limit_param(q.as_deref(), 100)?;
    let moves = st.catalog.list_moves(limit).await?;
    Ok(Json(json!({ "moves": moves })).into_response())
}

pub(crate) fn limit_param(q: Option<&str>, default: i64) -> Result<i64, Problem> {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    match params.iter().find(|(k, _)| k == "limit") {
        None => Ok(default),
        Some((_, v)) => match v.parse::<i64>() {
            Ok(n) if (1..=10_000).contains(&n) => Ok(n),
            _ => Err(Problem::field(FieldError::new(
                "query.limit",
                "must be an integer from 1 to 10000",
                Some(Value::String(v.clone())),
            ))),
        },
    }
}

/// The `body.shards` field: its text and the shard set it names.
pub(crate) fn shards_field(v: &Value, num_shards: u32) -> Result<(String, Vec<u32>), Problem> {
    let spec = required_string(v, "shards")?;
    let shards = parse_shard_set(&spec, num_shards).map_err(|e| {
        Problem::field(FieldError::new(
            "body.shards",
            e.to_string(),
            Some(Value::String(spec.clone())),
        ))
    })?;
    Ok((spec, shards))
}

/// The `path.id` of a `what` (`move`, `rebalance`): a positive integer.
pub(crate) fn parse_id(id: String, what: &str) -> Result<i64, Problem> {
    id.parse::<i64>().ok().filter(|&i| i > 0).ok_or_else(|| {
        Problem::field(FieldError::new(
            "path.id",
            format!("must be a {what} id (a positive integer)"),
            Some(Value::String(id)),
        ))
    })
}

/// `GET /admin/v1/moves/{id}`.
async fn get_move(
    State(st): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let Path(id) = path.map_err(path_problem)?;
    let id = parse_id(id, "move")?;
    Ok(Json(st.catalog.get_move(id).await?).into_response())
}

/// `POST /admin/v1/moves/{id}/abort|complete|revert` → 202 with the job as it is once the
/// request is recorded (for revert, the new job that moves the switched shards back). An
/// abort or complete is carried out by the mover's leader: until then the job keeps its state
/// and `requested` names the request (cleared when done). `abort` stops every shard not yet
/// switched (the source stays authoritative, the target is cleaned); `complete` drops the
/// retired sources of the switched shards.
async fn move_action(
    State(st): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, Problem> {
    let Path((id, action)) = path.map_err(path_problem)?;
    let request = match action.as_str() {
        "abort" => Some(Request::Abort),
        "complete" => Some(Request::Complete),
        "revert" => None,
        _ => return Err(Problem::not_found("no such endpoint")),
    };
    let id = parse_id(id, "move")?;
    let job = match request {
        Some(r) => st.catalog.request_move(id, r).await?,
        None => st.catalog.revert_move(id).await?,
    };
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// `POST /admin/v1/reload`: re-reads the catalog now.
async fn reload(State(st): State<Arc<AppState>>) -> Result<Response, Problem> {
    let version = st.reload().await?;
    Ok(Json(json!({ "map_version": version })).into_response())
}

/// `GET /admin/v1/status`: this node, the mover's leader, the map version in use.
async fn status(State(st): State<Arc<AppState>>) -> Result<Response, Problem> {
    let leader = current_leader(&st.catalog).await?;
    let (auth, mut warnings) = st.auth.status();
    let tls = match &st.tls {
        Some(t) => {
            let (view, more) = t.status();
            warnings.extend(more);
            view
        }
        None => json!({"enabled": false}),
    };
    Ok(Json(json!({
        "node": {"id": st.node_id, "addr": st.addr(), "mover": st.config.mover()},
        "leader": leader,
        "map_version": st.map_version(),
        "cluster_id": st.catalog.cluster_id(),
        "auth": auth,
        "tls": tls,
        "warnings": warnings,
    }))
    .into_response())
}

/// `GET /admin/v1/audit?limit=N`: the most recent changes, newest first.
async fn audit(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Problem> {
    let limit = limit_param(q.as_deref(), 100)?;
    let entries = st.catalog.audit(limit).await?;
    Ok(Json(json!({ "entries": entries })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_every_documented_operation_is_routed() {
        let mut routed: Vec<(String, String)> = table()
            .iter()
            .map(|r| (r.path.to_owned(), r.method.to_string()))
            .collect();
        let mut documented = openapi::documented();
        routed.sort();
        documented.sort();
        assert_eq!(routed, documented);
        // And the router takes every route of the table (it panics on a bad one).
        let _ = routes();
    }
}
