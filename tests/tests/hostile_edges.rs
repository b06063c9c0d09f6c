//! The server's edges under hostile clients: metric labels from a fixed set, a cap on open
//! connections, a budget of buffered request bytes that stalled bodies cannot exceed, RFC 9457
//! problems (with `X-Request-ID`) also for requests whose head hyper could not read, and an
//! OpenAPI document that says what the server enforces.

use std::collections::BTreeSet;
use std::time::Duration;

use mezzanine_e2e::raw::{self, RawAnswer};
use mezzanine_e2e::*;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

const SHARDS: u32 = 8;

/// The route and method labels of `http_requests_total` in a metrics text.
fn labels(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut routes = BTreeSet::new();
    let mut methods = BTreeSet::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
    {
        for part in line.split(['{', '}', ',']) {
            if let Some((k, v)) = part.split_once('=') {
                let v = v.trim_matches('"').to_owned();
                match k {
                    "route" => routes.insert(v),
                    "method" => methods.insert(v),
                    _ => false,
                };
            }
        }
    }
    (routes, methods)
}

async fn metrics_text(srv: &TestServer) -> String {
    match client().get(srv.url("/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => panic!("/metrics: {e}"),
    }
}

/// `n` requests with invented methods and random paths (some under real routes).
async fn random_requests(srv: &TestServer, n: usize, seed: usize) {
    let c = client();
    for i in 0..n {
        let token = format!("ZQZ{}", &Uuid::new_v4().simple().to_string()[..12]);
        let method = match i % 4 {
            0 => reqwest::Method::GET,
            _ => match reqwest::Method::from_bytes(token.to_uppercase().as_bytes()) {
                Ok(m) => m,
                Err(e) => panic!("method: {e}"),
            },
        };
        let path = match i % 3 {
            0 => format!("/{token}/{seed}/{i}"),
            1 => format!("/v1/cells/{token}"),
            _ => format!("/admin/{token}?x={i}"),
        };
        let _ = c.request(method, srv.url(&path)).send().await;
    }
}

#[tokio::test]
async fn metric_labels_come_from_a_fixed_set() {
    let (srv, _) = TestServer::fresh(1, SHARDS).await;
    random_requests(&srv, 200, 0).await;
    let before = metrics_text(&srv).await;
    random_requests(&srv, 2000, 1).await;
    let after = metrics_text(&srv).await;
    let (routes, methods) = labels(&after);
    let fixed_methods: BTreeSet<String> = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other",
    ]
    .iter()
    .map(|m| m.to_string())
    .collect();
    assert!(methods.is_subset(&fixed_methods), "{methods:?}");
    assert!(methods.contains("other"), "{methods:?}");
    for r in &routes {
        assert!(
            r == "other"
                || r.starts_with("/v1/")
                || r.starts_with("/admin/v1/")
                || r == "/metrics"
                || r == "/openapi.json",
            "route label {r:?}"
        );
        assert!(!r.contains("ZQZ"), "a random path as a label: {r}");
    }
    // 2000 more random requests add no series (other tests of this binary may add a few).
    assert!(
        after.len() < before.len() + 32 * 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
}

/// Sends `GET /v1/livez` on `s` (kept alive) and reads the answer.
async fn livez_on(s: &mut tokio::net::TcpStream) -> Option<RawAnswer> {
    let req = b"GET /v1/livez HTTP/1.1\r\nHost: mezzanine\r\n\r\n";
    s.write_all(req).await.ok()?;
    raw::read_answer(s, Duration::from_secs(10)).await
}

#[tokio::test]
async fn connections_beyond_the_limit_get_503() {
    let urls = fresh_databases(1).await;
    let mut cfg = default_config();
    cfg.max_connections = 8;
    let srv = TestServer::start(cfg, even_map(&urls, SHARDS)).await;
    let mut open = Vec::new();
    for i in 0..8 {
        let mut s = raw::connect(&srv.base).await;
        let a = livez_on(&mut s).await;
        assert_eq!(a.map(|a| a.status), Some(200), "connection {i}");
        open.push(s);
    }
    // The ninth: answered 503 with Retry-After and a request id, then closed.
    for _ in 0..3 {
        let mut s = raw::connect(&srv.base).await;
        let Some(a) = livez_on(&mut s).await else {
            panic!("no answer beyond the limit");
        };
        let p = a.assert_problem(503, "beyond MAX_CONNECTIONS");
        assert_eq!(a.header("retry-after"), "1");
        assert!(
            p["detail"]
                .as_str()
                .is_some_and(|d| d.contains("MAX_CONNECTIONS=8")),
            "{p}"
        );
        assert_eq!(
            raw::read_answer(&mut s, Duration::from_secs(10))
                .await
                .map(|a| a.status),
            None
        );
    }
    // The ones open are still served.
    for s in &mut open {
        assert_eq!(livez_on(s).await.map(|a| a.status), Some(200));
    }
    // One closed: a new connection is served again.
    drop(open.pop());
    let mut served = false;
    for _ in 0..200 {
        let mut s = raw::connect(&srv.base).await;
        if livez_on(&mut s).await.map(|a| a.status) == Some(200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "no connection served after one closed");
}

/// Starts a POST of `len` bytes announced, with `Expect: 100-continue`: the server either
/// asks for the body (then `sent` bytes of it are sent and the connection stalls; returned),
/// or answers at once (returned as `Err`).
async fn stalled_post(
    srv: &TestServer,
    len: usize,
    sent: usize,
) -> Result<tokio::net::TcpStream, Option<RawAnswer>> {
    let mut s = raw::connect(&srv.base).await;
    let head = format!(
        "POST /v1/cells HTTP/1.1\r\nHost: mezzanine\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\nExpect: 100-continue\r\n\r\n"
    );
    if s.write_all(head.as_bytes()).await.is_err() {
        return Err(None);
    }
    raw::read_continue(&mut s, Duration::from_secs(10)).await?;
    let _ = s.write_all(&vec![b' '; sent]).await;
    Ok(s)
}

#[tokio::test]
async fn stalled_bodies_hold_no_more_than_the_budget() {
    let urls = fresh_databases(1).await;
    let mut cfg = default_config();
    let budget = 4 << 20;
    cfg.max_buffered_bytes = budget;
    // Long enough for the checks made while the bodies stall (the test waits it out once).
    cfg.http_read_timeout = Duration::from_secs(8);
    let srv = TestServer::start(cfg, even_map(&urls, SHARDS)).await;
    let held = || srv.state.bodies.held();
    // 30 clients announce 1 MiB each, send 600 KB and stall.
    let mut stalled = Vec::new();
    let mut refused = 0;
    for i in 0..30 {
        match stalled_post(&srv, 1 << 20, 600_000).await {
            Ok(s) => stalled.push(s),
            Err(a) => {
                let a = a.unwrap_or_else(|| panic!("client {i}: no answer"));
                a.assert_problem(503, "over the budget");
                assert_eq!(a.header("retry-after"), "1");
                refused += 1;
            }
        }
        assert!(held() <= budget, "{} bytes held", held());
    }
    // A chunked body stalls too; it holds what arrived, within the same budget.
    let mut chunked = raw::connect(&srv.base).await;
    let head = "POST /v1/cells HTTP/1.1\r\nHost: m\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let _ = chunked.write_all(head.as_bytes()).await;
    for _ in 0..10 {
        let _ = chunked
            .write_all(format!("{:x}\r\n{}\r\n", 100_000, " ".repeat(100_000)).as_bytes())
            .await;
    }
    assert!(held() <= budget, "{} bytes held", held());
    assert_eq!(
        stalled.len(),
        4,
        "{} stalled, {refused} refused",
        stalled.len()
    );
    assert_eq!(held(), budget);
    // Meanwhile, requests without a body are served; one with a body waits for room.
    let (s, _) = get_json(&client(), &srv.url("/v1/livez")).await;
    assert_eq!(s, 200);
    let small = cell(&Uuid::new_v4(), "c", 1, json!({"ok": true}));
    let (s, p) = post_json(&client(), &srv.url("/v1/cells"), &small).await;
    assert_eq!(s, 503, "{p}");
    // The stalled bodies end with 408 (HTTP_READ_TIMEOUT), and give their bytes back.
    for mut s in stalled {
        let a = raw::read_answer(&mut s, Duration::from_secs(30)).await;
        let a = a.unwrap_or_else(|| panic!("a stalled body got no answer"));
        a.assert_problem(408, "stalled body");
    }
    drop(chunked);
    let mut stored = false;
    for _ in 0..300 {
        let (s, _) = post_json(&client(), &srv.url("/v1/cells"), &small).await;
        if s == 201 {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        stored,
        "a normal write was never served again ({} bytes held)",
        held()
    );
}

#[tokio::test]
async fn errors_below_the_application_are_problems() {
    let (srv, _) = TestServer::fresh(1, SHARDS).await;
    let b = &srv.base;
    let post = |headers: &[&str]| -> Vec<u8> {
        let h: Vec<String> = headers.iter().map(|s| s.to_string()).collect();
        raw::request("POST /v1/cells HTTP/1.1", &h, b"{}")
    };
    let many: Vec<String> = (0..120).map(|i| format!("X-H{i}: {i}")).collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "duplicate Content-Length",
            post(&["Content-Length: 2", "Content-Length: 3"]),
            400,
        ),
        (
            "Content-Length not a number",
            post(&["Content-Length: two"]),
            400,
        ),
        ("a bad request line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        (
            "a bad method",
            raw::request("G(T /v1/livez HTTP/1.1", &[], b""),
            400,
        ),
        (
            "a bad version",
            raw::request("GET /v1/livez HTTP/7.1", &[], b""),
            400,
        ),
        (
            "a bad header name",
            raw::request("GET /v1/livez HTTP/1.1", &["Bad Header: x".into()], b""),
            400,
        ),
        (
            "too many headers",
            raw::request("GET /v1/livez HTTP/1.1", &many, b""),
            431,
        ),
        (
            "a huge header",
            raw::request(
                "GET /v1/livez HTTP/1.1",
                &[format!("X-Big: {}", "x".repeat(70_000))],
                b"",
            ),
            431,
        ),
        (
            "a long target",
            raw::request(
                &format!("GET /v1/livez?{} HTTP/1.1", "q".repeat(20_000)),
                &[],
                b"",
            ),
            414,
        ),
        (
            "a huge target",
            raw::request(
                &format!("GET /v1/{} HTTP/1.1", "q".repeat(70_000)),
                &[],
                b"",
            ),
            431,
        ),
    ];
    for (what, bytes, status) in cases {
        let a = raw::exchange(b, &bytes).await;
        let a = a.unwrap_or_else(|| panic!("{what}: no answer"));
        a.assert_problem(status, what);
    }
    // The server still serves.
    let (s, _) = get_json(&client(), &srv.url("/v1/livez")).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn openapi_states_what_the_server_enforces() {
    let (srv, _) = TestServer::fresh(1, SHARDS).await;
    let c = client();
    let (s, doc) = get_json(&c, &srv.url("/openapi.json")).await;
    assert_eq!(s, 200);
    let schemas = &doc["components"]["schemas"];
    let write = &schemas["WriteCellBody"];
    let batch = &schemas["BatchWriteBody"];
    assert_eq!(write["additionalProperties"], false, "{write}");
    assert_eq!(batch["additionalProperties"], false, "{batch}");
    let (min_items, max_items) = (
        &batch["properties"]["cells"]["minItems"],
        &batch["properties"]["cells"]["maxItems"],
    );
    assert_eq!((min_items, max_items), (&json!(1), &json!(1000)), "{batch}");
    let param = |name: &str| -> Value {
        doc["paths"]["/v1/cells/partitionRead"]["get"]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or(Value::Null)
    };
    let partition = param("partition_number")["schema"].clone();
    let read_type = param("read_type")["schema"].clone();
    assert_eq!(
        (&partition["minimum"], &partition["maximum"]),
        (&json!(0), &json!(SHARDS - 1)),
        "{partition}"
    );
    assert_eq!(
        (&read_type["minimum"], &read_type["maximum"]),
        (&json!(1), &json!(2)),
        "{read_type}"
    );
    for path in ["/v1/cells", "/v1/cells/batch"] {
        let d = doc["paths"][path]["post"]["requestBody"]["description"]
            .as_str()
            .unwrap_or("");
        assert!(d.contains("1048576 bytes"), "{path}: {d}");
        assert!(
            doc["paths"][path]["post"]["responses"]["413"].is_object(),
            "{path}"
        );
    }

    // The server does what the document says: each bound probed on both sides.
    let row = Uuid::new_v4().to_string();
    let props: Vec<String> = write["properties"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    assert!(props.contains(&"$schema".to_owned()), "{props:?}");
    // `$schema` is a string, and only a string.
    for schema in [
        &write["properties"]["$schema"],
        &batch["properties"]["$schema"],
    ] {
        assert_eq!(schema["type"], "string", "{schema}");
    }
    let mut one = json!({"row_key": row, "column_name": "c", "ref_key": 1, "body": 1, "$schema": "https://x/y.json"});
    let (s, v) = post_json(&c, &srv.url("/v1/cells"), &one).await;
    assert_eq!(s, 201, "a documented property refused: {v}");
    for not_a_string in [json!(null), json!(1)] {
        let mut bad = one.clone();
        bad["$schema"] = not_a_string;
        let (s, v) = post_json(&c, &srv.url("/v1/cells"), &bad).await;
        assert_eq!(s, 422, "{v}");
    }
    one["not_in_the_document"] = json!(1);
    let (s, _) = post_json(&c, &srv.url("/v1/cells"), &one).await;
    assert_eq!(s, 422, "an undocumented property accepted");
    let cells = |n: i64| json!({"cells": (0..n).map(|i| json!({"row_key": row, "column_name": "b", "ref_key": i, "body": 1})).collect::<Vec<_>>()});
    let max = max_items.as_i64().unwrap_or(0);
    let min = min_items.as_i64().unwrap_or(0);
    assert_eq!(
        post_json(&c, &srv.url("/v1/cells/batch"), &cells(max))
            .await
            .0,
        200
    );
    assert_eq!(
        post_json(&c, &srv.url("/v1/cells/batch"), &cells(max + 1))
            .await
            .0,
        422
    );
    assert_eq!(
        post_json(&c, &srv.url("/v1/cells/batch"), &cells(min))
            .await
            .0,
        200
    );
    assert_eq!(
        post_json(&c, &srv.url("/v1/cells/batch"), &cells(min - 1))
            .await
            .0,
        422
    );
    let mut extra = cells(1);
    extra["extra"] = json!(1);
    assert_eq!(
        post_json(&c, &srv.url("/v1/cells/batch"), &extra).await.0,
        422
    );
    let pr = |p: &Value, t: &Value| {
        format!("/v1/cells/partitionRead?partition_number={p}&read_type={t}")
    };
    let (lo, hi) = (&partition["minimum"], &partition["maximum"]);
    let (tlo, thi) = (&read_type["minimum"], &read_type["maximum"]);
    for (p, t, ok) in [
        (lo.clone(), tlo.clone(), true),
        (hi.clone(), thi.clone(), true),
        (json!(hi.as_i64().unwrap_or(0) + 1), tlo.clone(), false),
        (json!(lo.as_i64().unwrap_or(0) - 1), tlo.clone(), false),
        (lo.clone(), json!(tlo.as_i64().unwrap_or(0) - 1), false),
        (lo.clone(), json!(thi.as_i64().unwrap_or(0) + 1), false),
    ] {
        let (s, v) = get_json(&c, &srv.url(&pr(&p, &t))).await;
        assert_eq!(s == 200, ok, "partition {p}, read_type {t}: {s} {v}");
        if !ok {
            assert_eq!(s, 422);
        }
    }
}

/// A NUL character (which PostgreSQL's text cannot hold) in an admin or plugin body, or in a
/// path parameter, is the client's fault: 422 (or 404) naming where, never a 500 from the
/// catalog. Found by schemathesis: `POST /admin/v1/moves {"to": "…\u0000"}` answered 500.
#[tokio::test]
async fn a_nul_character_in_admin_and_plugin_input_is_a_client_error() {
    let (srv, _urls) = TestServer::fresh(1, SHARDS).await;
    let c = client();
    let bodies = [
        (
            "/admin/v1/moves",
            json!({"to": "db\u{0}2", "shards": "5"}),
            "body.to",
        ),
        (
            "/admin/v1/backends",
            json!({"name": "x\u{0}", "url": "postgres://u@127.0.0.1:1/db"}),
            "body.name",
        ),
        (
            "/admin/v1/rebalance/plan",
            json!({"drain": "db\u{0}1"}),
            "body.drain",
        ),
        (
            "/v1/plugins",
            json!({"name": "p\u{0}", "endpoint": "http://127.0.0.1:9/", "subscribed_columns": ["a"]}),
            "body.name",
        ),
    ];
    for (path, body, field) in bodies {
        let (s, v) = post_json(&c, &srv.url(path), &body).await;
        assert_eq!(s, 422, "{path}: {v}");
        assert!(
            v.to_string().contains(field),
            "{path} does not name {field}: {v}"
        );
    }
    for path in [
        "/admin/v1/backends/a%00b/drain",
        "/admin/v1/backends/a%00b",
        "/v1/plugins/a%00b",
    ] {
        for method in [
            reqwest::Method::GET,
            reqwest::Method::POST,
            reqwest::Method::DELETE,
        ] {
            let r = c
                .request(method.clone(), srv.url(path))
                .send()
                .await
                .unwrap();
            assert!(
                r.status().is_client_error(),
                "{method} {path}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
    }
    srv.stop().await;
}
