//! A JSON-RPC plugin for the delivery suites (`tests/triggers/`): records every
//! `cell.written` it takes as `(shard_id, added_id)` with the rest of the call, and can be
//! told to go down (its port refuses connections, open connections are cut), to answer 500,
//! or to refuse the events of given rows (HTTP 400 or a JSON-RPC error object).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::task::JoinSet;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Takes every call (200 with a JSON-RPC result), except refused rows.
    Up,
    /// Answers every call with HTTP 500.
    Error500,
}

/// How an event of a refused row is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Http400,
    RpcError,
}

/// One call the receiver took (answered 200 with a result).
#[derive(Debug, Clone)]
pub struct Received {
    pub shard: u32,
    pub added_id: i64,
    pub row_key: String,
    pub column_name: String,
    /// The whole request body.
    pub request: Value,
    pub content_type: String,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// Every call, whatever the answer: (shard, added_id, status).
    calls: Vec<(u32, i64, u16)>,
    mode: Option<Mode>,
    refused: HashMap<String, Refusal>,
}

type Shared = Arc<Mutex<Inner>>;

/// A JSON-RPC receiver on a local port.
pub struct Receiver {
    pub addr: SocketAddr,
    /// The endpoint to register (`http://127.0.0.1:PORT/rpc`).
    pub url: String,
    inner: Shared,
    serving: Mutex<Option<JoinSet<()>>>,
}

impl Receiver {
    /// Starts a receiver that takes every call.
    pub async fn start() -> Receiver {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("receiver cannot bind: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("receiver has no address: {e}"),
        };
        let inner: Shared = Arc::new(Mutex::new(Inner {
            mode: Some(Mode::Up),
            ..Default::default()
        }));
        let r = Receiver {
            addr,
            url: format!("http://{addr}/rpc"),
            inner,
            serving: Mutex::new(None),
        };
        r.serve(listener);
        r
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new()
            .route("/rpc", axum::routing::post(handle))
            .with_state(self.inner.clone());
        let mut set = JoinSet::new();
        set.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let svc = TowerToHyperService::new(app.clone());
                conns.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        *self.serving.lock().unwrap_or_else(|e| e.into_inner()) = Some(set);
    }

    /// Goes down: the port refuses connections, and open ones are cut.
    pub async fn go_down(&self) {
        let set = self
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut set) = set {
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
    }

    /// Comes back on the same port.
    pub async fn come_back(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => {
                    self.serve(l);
                    return;
                }
                Err(e) if Instant::now() > deadline => {
                    panic!("receiver cannot rebind {}: {e}", self.addr)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.lock().mode = Some(mode);
    }

    /// Refuses every event of row `row_key` (until [`Receiver::accept_row`]).
    pub fn refuse_row(&self, row_key: &str, how: Refusal) {
        self.lock().refused.insert(row_key.to_owned(), how);
    }

    pub fn accept_row(&self, row_key: &str) {
        self.lock().refused.remove(row_key);
    }

    /// The calls taken, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// Every call, whatever the answer: (shard, added_id, status).
    pub fn calls(&self) -> Vec<(u32, i64, u16)> {
        self.lock().calls.clone()
    }

    /// Waits until `done` holds for what was received, or panics after `within` with `what`.
    pub async fn wait_until(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) {
        let deadline = Instant::now() + within;
        loop {
            if done(&self.received()) {
                return;
            }
            if Instant::now() > deadline {
                let n = self.received().len();
                panic!("receiver: {what} not seen within {within:?} ({n} events received)");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(mut set) = self
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            set.abort_all();
        }
    }
}

async fn handle(
    State(inner): State<Shared>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let params = &request["params"];
    let shard = params["shard_id"].as_u64().unwrap_or(u64::MAX) as u32;
    let added_id = params["added_id"].as_i64().unwrap_or(-1);
    let row_key = params["row_key"].as_str().unwrap_or_default().to_owned();
    let id = request["id"].clone();
    let mut g = inner.lock().unwrap_or_else(|e| e.into_inner());
    let answer = match (g.mode, g.refused.get(&row_key)) {
        (Some(Mode::Error500), _) => (StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "down"})),
        (_, Some(Refusal::Http400)) => (StatusCode::BAD_REQUEST, json!({"error": "poisoned"})),
        (_, Some(Refusal::RpcError)) => (
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "error": {"code": -32000, "message": "poisoned"}, "id": id}),
        ),
        _ => (
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "result": "ok", "id": id}),
        ),
    };
    g.calls.push((shard, added_id, answer.0.as_u16()));
    if answer.0 == StatusCode::OK && answer.1.get("result").is_some() {
        g.received.push(Received {
            shard,
            added_id,
            row_key,
            column_name: params["column_name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            content_type: headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            request: request.clone(),
            at: Instant::now(),
        });
    }
    drop(g);
    (answer.0, axum::Json(answer.1)).into_response()
}
