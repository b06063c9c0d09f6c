//! Bad input at every endpoint: malformed JSON, wrong types, missing fields, non-UUID keys,
//! empty or over-long column names, bad integers in body, path and query, bad times, wrong
//! content types, oversized bodies, unknown routes and methods. Each answer must be a 4xx
//! RFC 9457 problem (`application/problem+json`, `status`, `title`, `detail`) whose `errors`
//! name exactly the fields at fault. Never a 5xx, never a panic, never harm to stored data.

use std::collections::BTreeSet;

use mezzanine_e2e::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const SHARDS: u32 = 16;
const ROW: &str = "550e8400-e29b-41d4-a716-446655440000";
const BIG: &str = "99999999999999999999";

/// An answer, whichever way it was obtained.
struct Answer {
    what: String,
    status: u16,
    content_type: String,
    allow: String,
    request_id: bool,
    text: String,
}

async fn server() -> TestServer {
    TestServer::fresh(1, SHARDS).await.0
}

/// Sends a request built with reqwest.
async fn send(rb: reqwest::RequestBuilder) -> Answer {
    let (client, req) = rb.build_split();
    let req = req.expect("request builds");
    let what = format!("{} {}", req.method(), req.url());
    let resp = match client.execute(req).await {
        Ok(r) => r,
        Err(e) => panic!("{what}: {e}"),
    };
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (content_type, allow) = (header("content-type"), header("allow"));
    let request_id = resp.headers().contains_key("x-request-id");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    Answer {
        what,
        status,
        content_type,
        allow,
        request_id,
        text,
    }
}

/// POSTs `body` as it is, with `content_type` if given.
async fn post(
    srv: &TestServer,
    path: &str,
    ct: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Answer {
    let mut rb = client().post(srv.url(path)).body(body);
    if let Some(ct) = ct {
        rb = rb.header("content-type", ct);
    }
    send(rb).await
}

/// POSTs `body` as `application/json`.
async fn post_text(srv: &TestServer, path: &str, body: &str) -> Answer {
    post(srv, path, Some("application/json"), body.to_owned()).await
}

async fn get(srv: &TestServer, path: &str) -> Answer {
    send(client().get(srv.url(path))).await
}

/// Sends raw HTTP/1.1 bytes (for what reqwest would normalise or cannot send).
async fn raw(srv: &TestServer, head: &str, body: &[u8]) -> Answer {
    let addr = srv.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes();
    req.extend_from_slice(body);
    // The server may answer (413) before reading the whole body; a reset write is fine then.
    let _ = s.write_all(&req).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut out)).await;
    let mut text = String::from_utf8_lossy(&out).into_owned();
    let what = head.lines().next().unwrap_or("").to_owned();
    // Skip interim answers (100 Continue).
    while text.starts_with("HTTP/1.1 1") {
        text = text
            .split_once("\r\n\r\n")
            .map(|(_, r)| r.to_owned())
            .unwrap_or_default();
    }
    let (head_part, body_part) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head_part.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no HTTP answer: {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let text = if header("transfer-encoding").contains("chunked") {
        dechunk(body_part)
    } else {
        body_part.to_owned()
    };
    Answer {
        what,
        status,
        content_type: header("content-type"),
        allow: header("allow"),
        request_id: !header("x-request-id").is_empty(),
        text,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Checks a problem document: its status, title, detail and exactly these error locations.
fn check_problem(p: &Value, status: u16, locations: &[&str], what: &str) {
    assert_eq!(p["status"], status, "{what}: {p}");
    assert!(
        p["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{what}: no title: {p}"
    );
    assert!(
        p["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "{what}: no detail: {p}"
    );
    let errors = p["errors"].as_array().cloned().unwrap_or_default();
    for e in &errors {
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {e}"
        );
    }
    let got: BTreeSet<&str> = errors
        .iter()
        .filter_map(|e| e["location"].as_str())
        .collect();
    let want: BTreeSet<&str> = locations.iter().copied().collect();
    assert_eq!(got, want, "{what}: error locations of {p}");
}

/// Asserts the answer is a problem with `status` naming exactly `locations`.
fn expect_problem(a: &Answer, status: u16, locations: &[&str]) -> Value {
    let what = &a.what;
    assert_eq!(a.status, status, "{what}: {}", a.text);
    assert!(
        a.content_type.starts_with("application/problem+json"),
        "{what}: content-type {:?}: {}",
        a.content_type,
        a.text
    );
    assert!(a.request_id, "{what}: no X-Request-ID");
    let p: Value = serde_json::from_str(&a.text)
        .unwrap_or_else(|e| panic!("{what}: problem is not JSON ({e}): {}", a.text));
    check_problem(&p, status, locations, what);
    p
}

/// Asserts any 4xx problem (where the exact status is a matter of taste, never a 5xx).
fn expect_4xx(a: &Answer) -> Value {
    assert!(
        (400..500).contains(&a.status),
        "{}: {} {}",
        a.what,
        a.status,
        a.text
    );
    let p: Value = serde_json::from_str(&a.text)
        .unwrap_or_else(|e| panic!("{}: problem is not JSON ({e}): {}", a.what, a.text));
    assert!(
        a.content_type.starts_with("application/problem+json"),
        "{}: {}",
        a.what,
        a.content_type
    );
    assert_eq!(p["status"], a.status, "{}: {p}", a.what);
    assert!(
        p["title"].is_string() && p["detail"].is_string(),
        "{}: {p}",
        a.what
    );
    p
}

fn expect_status(a: &Answer, status: u16) -> Value {
    assert_eq!(a.status, status, "{}: {}", a.what, a.text);
    serde_json::from_str(&a.text).unwrap_or(Value::Null)
}

/// A batch answer: 200 whose result `i` is a 422 problem naming exactly `locations`.
fn expect_batch_item(a: &Answer, i: usize, locations: &[&str]) -> Value {
    let v = expect_status(a, 200);
    let r = &v["results"][i];
    assert_eq!(r["status"], 422, "{}: result {i}: {v}", a.what);
    assert!(
        r.get("cell").is_none(),
        "{}: result {i} stored: {r}",
        a.what
    );
    check_problem(
        &r["error"],
        422,
        locations,
        &format!("{} result {i}", a.what),
    );
    v
}

fn good(row: &str, col: &str, rk: i64) -> Value {
    json!({"row_key": row, "column_name": col, "ref_key": rk, "body": {"ok": true}})
}

/// `{"cells": [good, good, item, good]}`: the bad item is at index 2.
fn batch_with(item: Value) -> Value {
    json!({"cells": [
        good(&Uuid::new_v4().to_string(), "c", 1),
        good(&Uuid::new_v4().to_string(), "c", 1),
        item,
        good(&Uuid::new_v4().to_string(), "c", 1),
    ]})
}

/// Writes `item` alone and inside a batch (at index 2); expects `locs` (under `body.` /
/// `body.cells[2].`) refused in both, and the good batch neighbours stored.
async fn refused_everywhere(srv: &TestServer, item: Value, locs: &[&str]) {
    let single: Vec<String> = locs.iter().map(|l| format!("body{l}")).collect();
    let single: Vec<&str> = single.iter().map(String::as_str).collect();
    expect_problem(
        &post_text(srv, "/v1/cells", &item.to_string()).await,
        422,
        &single,
    );
    let batch: Vec<String> = locs.iter().map(|l| format!("body.cells[2]{l}")).collect();
    let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
    let a = post_text(srv, "/v1/cells/batch", &batch_with(item).to_string()).await;
    let v = expect_batch_item(&a, 2, &batch);
    for i in [0, 1, 3] {
        assert_eq!(v["results"][i]["status"], 201, "{v}");
    }
}

fn pr(query: &str) -> String {
    format!("/v1/cells/partitionRead?{query}")
}

mod fields;
mod http;
mod queries;
