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
/// (`NUM_SHARDS` less one) and the body limit (`MAX_BODY_BYTES`), and what authentication
/// and the rate limits add ([`with_security`]).
pub fn document(num_shards: u32, max_body_bytes: usize) -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    with_security(&mut doc);
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
    // A written cell links to its reads (for clients and stateful testers). Added here, as
    // utoipa 5.5 writes a link's `operationId` as `operation_id`.
    let link = |op: &str, params: &[&str]| {
        let params: serde_json::Map<String, serde_json::Value> = params
            .iter()
            .map(|p| ((*p).to_owned(), format!("$response.body#/{p}").into()))
            .collect();
        serde_json::json!({ "operationId": op, "parameters": params })
    };
    let links = serde_json::json!({
        "GetCell": link("get-cell", &["row_key", "column_name", "ref_key"]),
        "GetCellLatest": link("get-cell-latest", &["row_key", "column_name"]),
        "GetRow": link("get-row", &["row_key"]),
    });
    for status in ["200", "201"] {
        if let Some(r) = doc.pointer_mut(&format!("/paths/~1v1~1cells/post/responses/{status}")) {
            r["links"] = links.clone();
        }
    }
    doc
}

/// The operations of the probes: they need no token, and are never limited.
const PROBES: [&str; 3] = ["/v1/livez", "/v1/readyz", "/v1/health"];

/// Adds the `bearerAuth` scheme (optional: `/v1` needs a token only once tokens are
/// configured, and not under `OPEN_DATA_API`), and to every operation but the probes the
/// answers of authentication and of the rate limit: 401, 403 and 429 (problem+json). The
/// paths and operation ids stay as they are (go-mezzanine's clients are generated from them).
fn with_security(doc: &mut serde_json::Value) {
    use serde_json::json;
    let problem = |description: &str, retry: bool| {
        let mut headers = json!({"X-Request-ID": {
            "description": "The request's id (the client's own, or one the server made)",
            "schema": {"type": "string"}}});
        if retry {
            headers["Retry-After"] = json!({
                "description": "Whole seconds to wait before trying again (at least 1)",
                "schema": {"type": "integer", "minimum": 1}});
        }
        json!({
            "description": description,
            "headers": headers,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        })
    };
    doc["components"]["securitySchemes"] = json!({"bearerAuth": {
        "type": "http", "scheme": "bearer",
        "description": "A token of the token file (TOKEN_FILE or TOKENS): scope read for GET, write for the writes. Needed once tokens are configured (unless OPEN_DATA_API)",
    }});
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for op in ops.values_mut().filter(|op| op.get("responses").is_some()) {
            op["security"] = json!([{}, {"bearerAuth": []}]);
            if PROBES.contains(&path.as_str()) {
                continue;
            }
            let Some(responses) = op["responses"].as_object_mut() else {
                continue;
            };
            for (status, answer) in [
                ("401", problem("Tokens are configured, and the request has none, a malformed Authorization header, or a token this server does not know (with WWW-Authenticate: Bearer)", false)),
                ("403", problem("The token's scope does not allow this (read for GET, write for the writes)", false)),
                ("429", problem("The caller is over its rate limit (the token's rate= in the token file, else RATE_LIMIT; without a token, ANON_RATE_LIMIT): retry after Retry-After seconds", true)),
            ] {
                responses.entry(status).or_insert(answer);
            }
        }
    }
}

/// This process's resident set size, from /proc (Linux).
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// (path, method, operation id) of every operation of `doc`.
    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                out.push((path.clone(), method.clone(), op["operationId"].clone()));
            }
        }
        out
    }

    #[test]
    fn the_v1_document_gains_the_token_scheme_without_changing_an_operation() {
        let plain = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let doc = document(64, 1 << 20);
        // go-mezzanine's clients are generated from the paths and ids: unchanged.
        assert_eq!(operations(&plain), operations(&doc));
        oas3::from_json(doc.to_string()).expect("an OpenAPI 3.1 document");
        assert_eq!(
            doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
            "bearer"
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["bearerAuth"]["type"],
            "http"
        );
        for (path, method, _) in operations(&doc) {
            let op = &doc["paths"][&path][&method];
            assert_eq!(
                op["security"],
                json!([{}, {"bearerAuth": []}]),
                "{method} {path}"
            );
            let probe = PROBES.contains(&path.as_str());
            for status in ["401", "403", "429"] {
                let r = &op["responses"][status];
                assert_eq!(r.is_object(), !probe, "{method} {path} {status}");
                if !probe {
                    assert_eq!(
                        r["content"]["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/Problem"
                    );
                }
            }
            if !probe {
                assert!(op["responses"]["429"]["headers"]["Retry-After"].is_object());
            }
        }
    }

    /// Every link of the document names an operation of it (by `operationId`, as OpenAPI
    /// spells it) and only parameters that operation has.
    #[test]
    fn links_name_operations_and_their_parameters() {
        let doc = document(64, 1 << 20);
        let mut operations = std::collections::HashMap::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let params: Vec<String> = op["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .map(|p| p["name"].as_str().unwrap().to_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                operations.insert(op["operationId"].as_str().unwrap().to_owned(), params);
            }
        }
        let mut links = 0;
        for status in ["200", "201"] {
            let found = doc["paths"]["/v1/cells"]["post"]["responses"][status]["links"]
                .as_object()
                .unwrap();
            for link in found.values() {
                links += 1;
                let target = link["operationId"].as_str().expect("operationId");
                let params = &operations[target];
                for (name, value) in link["parameters"].as_object().unwrap() {
                    assert!(params.contains(name), "{target} has no parameter {name}");
                    assert_eq!(value, &format!("$response.body#/{name}"));
                }
            }
        }
        assert_eq!(links, 6);
    }
}
