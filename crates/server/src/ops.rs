//! Operations endpoints: liveness, readiness, health, metrics, the OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use mezzanine_storage::BackendHealth;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::AppState;

/// Health of the service and of each backend.
#[derive(Serialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`, or `unavailable` when a backend is down.
    pub status: &'static str,
    #[schema(value_type = Vec<Object>)]
    pub backends: Vec<BackendStatus>,
}

/// One backend's status.
#[derive(Serialize)]
pub struct BackendStatus {
    #[serde(flatten)]
    pub health: BackendHealth,
    /// Whether its schema is prepared for traffic.
    pub ready: bool,
}

/// Liveness: the process answers.
#[derive(Serialize, ToSchema)]
pub struct LiveResponse {
    pub status: &'static str,
}

#[utoipa::path(get, path = "/v1/livez", tag = "health", operation_id = "livez",
    responses((status = 200, description = "The process is alive", body = LiveResponse),
        (status = "default", description = "Error", body = crate::problem::Problem, content_type = "application/problem+json")))]
pub async fn livez() -> Json<LiveResponse> {
    Json(LiveResponse { status: "ok" })
}

fn health_of(st: &AppState) -> (StatusCode, HealthResponse) {
    let topo = st.topology();
    let backends: Vec<BackendStatus> = topo
        .backends
        .iter()
        .map(|s| BackendStatus {
            health: s.backend.health(),
            ready: s.is_ready(),
        })
        .collect();
    let ok = backends.iter().all(|b| b.health.up && b.ready);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        HealthResponse {
            status: if ok { "ok" } else { "unavailable" },
            backends,
        },
    )
}

/// Readiness with per-backend status and probe latency; 503 when a backend is down. Open to
/// every caller; once /v1 needs a token, `backends` is empty for a caller without `read`.
#[utoipa::path(get, path = "/v1/readyz", tag = "health", operation_id = "readyz",
    responses((status = 200, description = "Every backend is up", body = HealthResponse),
              (status = 503, description = "A backend is down", body = HealthResponse),
        (status = "default", description = "Error", body = crate::problem::Problem, content_type = "application/problem+json")))]
pub async fn readyz(
    State(st): State<Arc<AppState>>,
    caller: Option<Extension<crate::auth::Caller>>,
) -> Response {
    let (status, mut body) = health_of(&st);
    // A probe needs no token; the backends (names, addresses in errors) are for callers
    // that may read.
    if !st.auth.may_read(caller.as_deref()) {
        body.backends.clear();
    }
    (status, Json(body)).into_response()
}

/// Health check (go-mezzanine's), with per-backend status; 503 when a backend is down.
#[utoipa::path(get, path = "/v1/health", tag = "health", operation_id = "health-check",
    responses((status = 200, description = "OK", body = HealthResponse),
              (status = 503, description = "A backend is down", body = HealthResponse),
        (status = "default", description = "Error", body = crate::problem::Problem, content_type = "application/problem+json")))]
pub async fn health(
    State(st): State<Arc<AppState>>,
    caller: Option<Extension<crate::auth::Caller>>,
) -> Response {
    readyz(State(st), caller).await
}

/// Prometheus metrics in text format.
pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    for slot in &st.topology().backends {
        let h = slot.backend.health();
        let b = h.name.clone();
        metrics::gauge!("mezzanine_backend_up", "backend" => b.clone()).set(if h.up {
            1.0
        } else {
            0.0
        });
        metrics::gauge!("mezzanine_backend_probe_latency_seconds", "backend" => b.clone())
            .set(h.latency_ms.unwrap_or(0.0) / 1000.0);
        metrics::gauge!("mezzanine_pool_connections", "backend" => b.clone(), "state" => "idle")
            .set(h.pool_available as f64);
        metrics::gauge!("mezzanine_pool_connections", "backend" => b.clone(), "state" => "in_use")
            .set(h.pool_size.saturating_sub(h.pool_available) as f64);
        metrics::gauge!("mezzanine_pool_max_connections", "backend" => b.clone())
            .set(h.pool_max as f64);
        metrics::gauge!("mezzanine_pool_waiting", "backend" => b).set(h.pool_waiting as f64);
    }
    if let Some(rss) = resident_memory_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(rss as f64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}

/// The OpenAPI document of this API, generated from the code.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "mezzanine API",
        version = "1.0.0",
        description = "Sharded, append-only cell store; a drop-in replacement for go-mezzanine."
    ),
    paths(
        crate::api::write_cell,
        crate::api::write_batch,
        crate::api::get_cell,
        crate::api::get_latest,
        crate::api::get_row,
        crate::api::partition_read,
        crate::api::shard_count,
        crate::plugins::register,
        crate::plugins::list,
        crate::plugins::get,
        crate::plugins::delete,
        livez,
        readyz,
        health,
    ),
    components(schemas(crate::problem::Problem, crate::problem::ErrorDetail))
)]
pub struct ApiDoc;

/// The OpenAPI document, with what this node's configuration enforces.
pub async fn openapi(State(st): State<Arc<AppState>>) -> Response {
    let doc = document(st.num_shards(), st.config.max_body_bytes);
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&doc).unwrap_or_default(),
    )
        .into_response()
}

/// [`ApiDoc`] with the bounds a node's configuration sets: the highest partition number
/// (`NUM_SHARDS` less one) and the body limit (`MAX_BODY_BYTES`).
pub fn document(num_shards: u32, max_body_bytes: usize) -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if let Some(params) = doc
        .pointer_mut("/paths/~1v1~1cells~1partitionRead/get/parameters")
        .and_then(serde_json::Value::as_array_mut)
    {
        for p in params
            .iter_mut()
            .filter(|p| p["name"] == "partition_number")
        {
            p["schema"]["maximum"] = num_shards.saturating_sub(1).into();
        }
    }
    for (path, what) in [("/v1/cells", "The cell"), ("/v1/cells/batch", "The cells")] {
        let at = format!("/paths/{}/post/requestBody", path.replace('/', "~1"));
        if let Some(body) = doc.pointer_mut(&at) {
            body["description"] = format!(
                "{what}: at most {max_body_bytes} bytes (MAX_BODY_BYTES; larger: 413), and at \
                 most as many once stored, every number written out in full as PostgreSQL \
                 stores it (1e3 as 1000)"
            )
            .into();
        }
    }
    doc
}

/// This process's resident set size, from /proc (Linux).
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
