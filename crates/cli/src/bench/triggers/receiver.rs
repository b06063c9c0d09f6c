//! The plugin of `bench triggers`: a JSON-RPC endpoint in the bench process that answers
//! go-mezzanine's `cell.written` calls and records each one's event and receipt time. It can
//! be taken down (its listener closed, its connections dropped: calls are refused) and
//! brought back on the same address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::ledger::{Key, Receipt};

/// Bound on reading one call's headers, and its body.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest call read (a cell's body is at most the server's `MAX_BODY_BYTES`).
const MAX_CALL_BYTES: usize = 64 << 20;

/// What the connections share: the calls taken, in order.
struct Shared {
    epoch: Instant,
    receipts: Mutex<Vec<Receipt>>,
    /// Calls that were not a well-formed `cell.written` (answered with a JSON-RPC error).
    malformed: AtomicU64,
}

/// The receiver; it stops serving when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    serving: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Listens on `addr` (port 0: any free port, kept for the life of the receiver); times
    /// are taken since `epoch`.
    pub async fn start(addr: SocketAddr, epoch: Instant) -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --receiver-addr {addr}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            epoch,
            receipts: Mutex::new(Vec::new()),
            malformed: AtomicU64::new(0),
        });
        let serving = Some(tokio::spawn(serve(listener, shared.clone())));
        Ok(Receiver {
            addr,
            shared,
            serving,
        })
    }

    /// The address it listens on (also while down: where it comes back).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and every connection: calls are refused until [`Receiver::up`].
    pub async fn down(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
            // Once the task has ended, its listener and connections are closed.
            let _ = serving.await;
        }
    }

    /// Listens again on the same address.
    pub async fn up(&mut self) -> anyhow::Result<()> {
        if self.serving.is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr).await.with_context(|| {
            format!(
                "cannot listen on {} again after the outage (is another process on the port?)",
                self.addr
            )
        })?;
        self.serving = Some(tokio::spawn(serve(listener, self.shared.clone())));
        Ok(())
    }

    /// The calls taken since the last time, in the order they were taken.
    pub fn take(&self) -> Vec<Receipt> {
        let mut receipts = self
            .shared
            .receipts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *receipts)
    }

    /// The calls answered with a JSON-RPC error so far.
    pub fn malformed(&self) -> u64 {
        self.shared.malformed.load(Ordering::Relaxed)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(serving) = &self.serving {
            serving.abort();
        }
    }
}

/// Accepts connections until aborted; aborting drops the listener and, with the `JoinSet`,
/// every connection.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    conns.spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let shared = shared.clone();
                            async move { Ok::<_, std::convert::Infallible>(handle(&shared, req).await) }
                        });
                        let mut builder = auto::Builder::new(TokioExecutor::new());
                        builder
                            .http1()
                            .timer(TokioTimer::new())
                            .header_read_timeout(READ_TIMEOUT);
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                // Out of file descriptors and the like: try again shortly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = Limited::new(req.into_body(), MAX_CALL_BYTES);
    let body = match tokio::time::timeout(READ_TIMEOUT, body.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        _ => {
            shared.malformed.fetch_add(1, Ordering::Relaxed);
            return reply(StatusCode::BAD_REQUEST, Bytes::new());
        }
    };
    let at = shared.epoch.elapsed();
    let (key, answer) = answer(&body);
    match key {
        Some(key) => shared
            .receipts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Receipt { key, at }),
        None => {
            shared.malformed.fetch_add(1, Ordering::Relaxed);
        }
    }
    reply(StatusCode::OK, Bytes::from(answer))
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// go-mezzanine's `cell.written` params: every field must be there.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Params {
    added_id: i64,
    row_key: uuid::Uuid,
    column_name: String,
    ref_key: i64,
    body: IgnoredAny,
    created_at: String,
    shard_id: u32,
}

/// A call's event and the answer to it: `{"jsonrpc":"2.0","result":"ok","id":N}` (as
/// go-mezzanine's example plugin answers) for a well-formed `cell.written`, otherwise a
/// JSON-RPC error object and no event.
pub fn answer(body: &[u8]) -> (Option<Key>, Vec<u8>) {
    let error = |id: &Value, code: i64, message: String| {
        let e = json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id});
        (None, e.to_string().into_bytes())
    };
    let call: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(&Value::Null, -32700, format!("parse error: {e}")),
    };
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    if call.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return error(
            &id,
            -32600,
            "invalid request: jsonrpc must be \"2.0\"".into(),
        );
    }
    match call.get("method").and_then(Value::as_str) {
        Some("cell.written") => {}
        other => return error(&id, -32601, format!("method not found: {other:?}")),
    }
    let params = call.get("params").cloned().unwrap_or(Value::Null);
    match serde_json::from_value::<Params>(params) {
        Ok(p) => {
            let ok = json!({"jsonrpc": "2.0", "result": "ok", "id": id});
            (Some((p.shard_id, p.added_id)), ok.to_string().into_bytes())
        }
        Err(e) => error(&id, -32602, format!("invalid params: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: u64, shard: u32, added_id: i64) -> Value {
        json!({"jsonrpc": "2.0", "method": "cell.written", "params": {
            "added_id": added_id, "row_key": "0b6f3f56-7a5b-4d0e-9a43-2a1c8d2f0e11",
            "column_name": "c", "ref_key": 1, "body": {"a": [1, 2]},
            "created_at": "2026-11-30T17:00:00.123456Z", "shard_id": shard}, "id": id})
    }

    #[test]
    fn a_cell_written_call_is_answered_with_its_id_and_names_its_event() {
        let body = call(42, 3, 17).to_string();
        let (key, answer) = answer(body.as_bytes());
        assert_eq!(key, Some((3, 17)));
        // Compared as JSON: the order of the keys follows serde_json's `preserve_order`,
        // which another crate of the workspace may turn on.
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer, json!({"jsonrpc": "2.0", "result": "ok", "id": 42}));
    }

    #[test]
    fn anything_else_is_a_json_rpc_error_without_an_event() {
        let mut wrong_method = call(1, 0, 1);
        wrong_method["method"] = json!("cell.deleted");
        let mut no_shard = call(2, 0, 1);
        no_shard["params"]
            .as_object_mut()
            .unwrap()
            .remove("shard_id");
        let mut v1 = call(3, 0, 1);
        v1["jsonrpc"] = json!("1.0");
        for (body, code) in [
            (b"{not json".to_vec(), -32700),
            (wrong_method.to_string().into_bytes(), -32601),
            (no_shard.to_string().into_bytes(), -32602),
            (v1.to_string().into_bytes(), -32600),
        ] {
            let (key, answer) = answer(&body);
            assert_eq!(key, None);
            let v: Value = serde_json::from_slice(&answer).unwrap();
            assert_eq!(v["error"]["code"], code, "{v}");
        }
    }

    async fn post(
        client: &reqwest::Client,
        addr: SocketAddr,
        body: &Value,
    ) -> reqwest::Result<Value> {
        client
            .post(format!("http://{addr}/"))
            .json(body)
            .send()
            .await?
            .json()
            .await
    }

    #[tokio::test]
    async fn the_receiver_records_calls_refuses_them_while_down_and_comes_back_on_its_port() {
        let epoch = Instant::now();
        let mut r = Receiver::start("127.0.0.1:0".parse().unwrap(), epoch)
            .await
            .unwrap();
        let addr = r.addr();
        assert_ne!(addr.port(), 0);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let a = post(&client, addr, &call(1, 5, 10)).await.unwrap();
        assert_eq!(a["result"], "ok");
        assert_eq!(a["id"], 1);
        let unknown = json!({"jsonrpc": "2.0", "method": "x", "id": 2});
        let bad = post(&client, addr, &unknown).await.unwrap();
        assert_eq!(bad["error"]["code"], -32601);
        let got = r.take();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].key, (5, 10));
        assert_eq!(r.malformed(), 1);
        assert!(r.take().is_empty(), "take empties the log");

        // Down: the kept-alive connection is gone too, and new ones are refused.
        tokio::time::timeout(Duration::from_secs(10), r.down())
            .await
            .expect("down within 10 s");
        let refused = post(&client, addr, &call(3, 5, 11)).await.unwrap_err();
        assert!(refused.is_connect() || refused.is_request(), "{refused:?}");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the port is closed while down"
        );
        assert!(r.take().is_empty());

        // Back on the same port.
        r.up().await.unwrap();
        assert_eq!(r.addr(), addr);
        let a = post(&client, addr, &call(4, 5, 12)).await.unwrap();
        assert_eq!(a["id"], 4);
        let got = r.take();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].key, (5, 12));
    }
}
