//! The HTTP layer: routes, middleware (request id, metrics, timeouts, body limit, problem
//! answers for every error) and the connection loop with graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::problem::Problem;
use crate::{api, ops, plugins, AppState};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The application: every route with its middleware.
pub fn router(state: Arc<AppState>) -> Router {
    let cfg = &state.config;
    let request_timeout = cfg.http_write_timeout + cfg.http_read_timeout;
    Router::new()
        .route("/v1/cells", post(api::write_cell))
        .route("/v1/cells/batch", post(api::write_batch))
        .route("/v1/cells/partitionRead", get(api::partition_read))
        .route("/v1/cells/{row_key}", get(api::get_row))
        .route("/v1/cells/{row_key}/{column_name}", get(api::get_latest))
        .route("/v1/cells/{row_key}/{column_name}/{ref_key}", get(api::get_cell))
        .route("/v1/shards/count", get(api::shard_count))
        .route("/v1/plugins", post(plugins::register).get(plugins::list))
        .route("/v1/plugins/{plugin_id}", get(plugins::get).delete(plugins::delete))
        .route("/v1/livez", get(ops::livez))
        .route("/v1/readyz", get(ops::readyz))
        .route("/v1/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .merge(crate::admin::routes())
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), crate::auth::guard))
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, request_timeout))
        .layer(middleware::from_fn_with_state(state.clone(), edge))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::debug_span!("request", method = %req.method(), uri = %req.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// The edge of every request, as one middleware (each layer costs a boxed future per
/// request): refuses at once a request whose target is too long (414), or whose declared
/// `Content-Length` exceeds the body limit, before any of its body is read (a client must
/// not hold a handler by announcing a huge body); answers 429 to a caller over its rate
/// limit ([`crate::auth::rate_limit`]), before the body too; reads the body within the buffered-bytes
/// budget and the read timeout ([`crate::buffer::take_body`]); makes the request's id known
/// to the problems its handler makes ([`crate::problem::in_request`]); turns every error
/// answer into a problem ([`problems_everywhere`]); counts the request in the metrics.
async fn edge(
    axum::extract::State(st): axum::extract::State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let track = crate::metrics::Track::start(&req);
    let limit = st.config.max_body_bytes;
    let ctx = crate::problem::RequestContext {
        id: req
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        public: !req.uri().path().starts_with("/admin/"),
    };
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let resp = if let Some(over) = crate::auth::rate_limit(&st.auth, &mut req) {
        // Before the body is read: a client over its limit costs nothing more.
        over
    } else if target > crate::conn::MAX_URI_BYTES {
        Problem::new(
            StatusCode::URI_TOO_LONG,
            format!(
                "the request target is {target} bytes long, above the limit of {}",
                crate::conn::MAX_URI_BYTES
            ),
        )
        .into_response()
    } else {
        match crate::buffer::take_body(req, &st.bodies, limit, st.config.http_read_timeout).await {
            Err(resp) => resp,
            Ok((req, held)) => {
                let resp =
                    problems_everywhere(crate::problem::in_request(ctx, next.run(req)).await).await;
                drop(held);
                resp
            }
        }
    };
    track.finish(resp.status());
    resp
}

/// Turns every error answer that is not already a problem (a rejection by the framework, an
/// unknown method, a timeout) into an RFC 9457 problem with the same status.
async fn problems_everywhere(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    // Problems, and deliberate JSON answers such as readyz's 503, pass through.
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("application/problem+json") || ct.starts_with("application/json")
        });
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = match tokio::time::timeout(
        Duration::from_secs(1),
        axum::body::to_bytes(body, 64 * 1024),
    )
    .await
    {
        Ok(Ok(b)) => String::from_utf8_lossy(&b).into_owned(),
        _ => String::new(),
    };
    let detail = match (status, text.trim()) {
        (StatusCode::METHOD_NOT_ALLOWED, _) => {
            "this method is not allowed on this endpoint".to_owned()
        }
        (StatusCode::SERVICE_UNAVAILABLE, "") => {
            "the request took longer than the HTTP timeouts allow".to_owned()
        }
        (_, "") => status.canonical_reason().unwrap_or("error").to_owned(),
        (_, t) => t.to_owned(),
    };
    let p = if status == StatusCode::SERVICE_UNAVAILABLE {
        Problem::unavailable(detail)
    } else {
        Problem::new(status, detail)
    };
    let mut out = p.into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and lets the
/// requests in flight finish (bounded by `limits.drain_timeout`). At most
/// `limits.max_connections` connections are served at once; those beyond are answered 503
/// ([`crate::conn`]). With `tls` ([`crate::Server::tls`]) every connection is HTTPS: its
/// handshake runs in the connection's own task, within `HTTP_READ_TIMEOUT`, and the
/// connection counts against `MAX_CONNECTIONS` from its acceptance.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: crate::conn::Limits,
    tls: Option<Arc<crate::tls::Tls>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    use crate::conn::{Answering, MAX_HEAD_BYTES, MAX_REFUSING};
    let crate::conn::Limits {
        read_timeout,
        idle_timeout,
        drain_timeout,
        max_connections,
    } = limits;
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // hyper applies the header timeout both to a new request's headers and to the wait for the
    // next request on a kept-alive connection: the tighter of the two settings bounds both.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout.min(idle_timeout))
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(idle_timeout));
    // Connections beyond the limit: one answer, then closed.
    let mut refusing = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    refusing
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(false);
    refusing.http2().timer(TokioTimer::new());
    let open = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let refusals = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                if let Some(tls) = &tls {
                    // Beyond MAX_CONNECTIONS too the handshake comes first (within the
                    // refusals' bound), so that the 503 reaches an HTTPS client.
                    let (permit, refused) = match open.clone().try_acquire_owned() {
                        Ok(p) => (p, false),
                        Err(_) => match refusals.clone().try_acquire_owned() {
                            Ok(p) => (p, true),
                            Err(_) => continue,
                        },
                    };
                    let (tls, app, builder, refusing) = (tls.clone(), app.clone(), builder.clone(), refusing.clone());
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let Some(stream) = tls.handshake(stream, read_timeout, peer).await else {
                            return;
                        };
                        let io = TokioIo::new(Answering::new(stream, peer.to_string()));
                        if refused {
                            let conn = refusing.serve_connection_with_upgrades(io, refuse(max_connections)).into_owned();
                            let _ = tokio::time::timeout(read_timeout, conn).await;
                        } else {
                            let conn = builder.serve_connection_with_upgrades(io, application(app, peer)).into_owned();
                            let _ = watcher.watch(conn).await;
                        }
                        drop(permit);
                    });
                    continue;
                }
                let io = TokioIo::new(Answering::new(stream, peer.to_string()));
                if let Ok(permit) = open.clone().try_acquire_owned() {
                    let conn = builder.serve_connection_with_upgrades(io, application(app.clone(), peer)).into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _ = conn.await;
                        drop(permit);
                    });
                } else if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    let conn = refusing.serve_connection_with_upgrades(io, refuse(max_connections)).into_owned();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(read_timeout, conn).await;
                        drop(permit);
                    });
                }
                // Else: closed at once (dropped).
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: finishing requests in flight");
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still busy after the drain timeout");
    }
    Ok(())
}

/// The application as a connection's service, with the client's address (for the audit log,
/// [`crate::auth`]).
fn application(
    app: Router,
    peer: std::net::SocketAddr,
) -> TowerToHyperService<
    tower::util::MapRequest<
        Router,
        impl FnMut(
                axum::http::Request<hyper::body::Incoming>,
            ) -> axum::http::Request<hyper::body::Incoming>
            + Clone,
    >,
> {
    TowerToHyperService::new(app.map_request(
        move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            req
        },
    ))
}

/// The service of a connection beyond `MAX_CONNECTIONS` ([`crate::conn::over_capacity`]).
fn refuse(
    max_connections: usize,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = std::future::Ready<Result<Response, std::convert::Infallible>>,
> + Clone {
    hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (parts, _) = req.into_parts();
        std::future::ready(Ok::<_, std::convert::Infallible>(
            crate::conn::over_capacity(&parts, max_connections),
        ))
    })
}
