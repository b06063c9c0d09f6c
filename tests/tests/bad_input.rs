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

#[tokio::test]
async fn malformed_json_is_400_naming_the_body() {
    let srv = server().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let bodies: Vec<Vec<u8>> = [
        "",
        " ",
        "{",
        "{\"row_key\": }",
        "{'row_key': 'x'}",
        "{\"cells\": [1,]}",
        "{\"a\": 1} trailing",
        "{\"a\": 1}{\"b\": 2}",
        "NaN",
        "{\"ref_key\": 01}",
        "\"unterminated",
        deep.as_str(),
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([
        vec![0xff, 0xfe, b'{', b'}'],
        b"{\"body\": \"\xc3\x28\"}".to_vec(),
    ])
    .collect();
    for path in ["/v1/cells", "/v1/cells/batch"] {
        for b in &bodies {
            let a = post(&srv, path, Some("application/json"), b.clone()).await;
            expect_problem(&a, 400, &["body"]);
        }
    }
}

#[tokio::test]
async fn wrong_types_are_422_naming_each_field() {
    let srv = server().await;
    for (field, value) in [
        ("row_key", json!(5)),
        ("row_key", json!(null)),
        ("row_key", json!({"uuid": ROW})),
        ("column_name", json!([])),
        ("column_name", json!(7)),
        ("column_name", json!(null)),
        ("ref_key", json!("x")),
        ("ref_key", json!("1")),
        ("ref_key", json!(true)),
        ("ref_key", json!(null)),
        ("ref_key", json!([1])),
    ] {
        let mut item = good(&Uuid::new_v4().to_string(), "c", 1);
        item[field] = value;
        refused_everywhere(&srv, item, &[&format!(".{field}")]).await;
    }
    // The document itself of the wrong type.
    for doc in ["[1]", "\"x\"", "null", "42", "true", "[]"] {
        expect_problem(&post_text(&srv, "/v1/cells", doc).await, 422, &["body"]);
        expect_problem(
            &post_text(&srv, "/v1/cells/batch", doc).await,
            422,
            &["body"],
        );
    }
}

#[tokio::test]
async fn missing_fields_are_422_naming_each() {
    let srv = server().await;
    let all = [".row_key", ".column_name", ".ref_key", ".body"];
    refused_everywhere(&srv, json!({}), &all).await;
    for (i, field) in ["row_key", "column_name", "ref_key", "body"]
        .iter()
        .enumerate()
    {
        let mut item = good(&Uuid::new_v4().to_string(), "c", 1);
        item.as_object_mut().unwrap().remove(*field);
        refused_everywhere(&srv, item, &[all[i]]).await;
    }
    // A null body is a JSON value like any other: stored, not missing.
    let v = json!({"row_key": Uuid::new_v4().to_string(), "column_name": "c", "ref_key": 1, "body": null});
    expect_status(&post_text(&srv, "/v1/cells", &v.to_string()).await, 201);
}

#[tokio::test]
async fn non_uuid_keys_are_422() {
    let srv = server().await;
    for bad in [
        "nope",
        "",
        " ",
        "550e8400-e29b-41d4-a716-44665544000",
        "550e8400-e29b-41d4-a716-4466554400000",
        "g50e8400-e29b-41d4-a716-446655440000",
        "550e8400-e29b-41d4-a716-446655440000x",
        "12345",
    ] {
        refused_everywhere(
            &srv,
            json!({"row_key": bad, "column_name": "c", "ref_key": 1, "body": 1}),
            &[".row_key"],
        )
        .await;
    }
    for bad in [
        "nope",
        "12345",
        "550e8400-e29b-41d4-a716-44665544000",
        "550e8400e29b41d4a716446655440000zz",
    ] {
        for path in [
            format!("/v1/cells/{bad}"),
            format!("/v1/cells/{bad}/c"),
            format!("/v1/cells/{bad}/c/1"),
        ] {
            expect_problem(&get(&srv, &path).await, 422, &["path.row_key"]);
        }
    }
}

#[tokio::test]
async fn empty_column_names_are_422() {
    let srv = server().await;
    refused_everywhere(&srv, good(ROW, "", 1), &[".column_name"]).await;
    // In the path: an empty segment in the column position is named; a trailing slash is
    // another (unknown) route.
    let a = get(&srv, &format!("/v1/cells/{ROW}//1")).await;
    expect_problem(&a, 422, &["path.column_name"]);
    expect_4xx(&get(&srv, &format!("/v1/cells/{ROW}/")).await);
}

#[tokio::test]
async fn overlong_column_names_are_422_counted_in_bytes() {
    let srv = server().await;
    let c = client();
    let ascii255 = "x".repeat(255);
    let euro255 = "€".repeat(85); // 3 bytes each
    let mixed255 = format!("{}x", "é".repeat(127)); // 2 bytes each
    for (i, ok) in [&ascii255, &euro255, &mixed255].into_iter().enumerate() {
        assert_eq!(ok.len(), 255);
        let row = Uuid::new_v4();
        let (s, v) = post_json(
            &c,
            &srv.url("/v1/cells"),
            &cell(&row, ok, i as i64, json!(i)),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["column_name"], ok.as_str());
        let (s, v) = get_json(&c, &srv.url(&format!("/v1/cells/{row}/{ok}/{i}"))).await;
        assert_eq!((s, v["column_name"].as_str()), (200, Some(ok.as_str())));
        let (s, _) = get_json(&c, &srv.url(&format!("/v1/cells/{row}/{ok}"))).await;
        assert_eq!(s, 200);
    }
    for bad in [
        "x".repeat(256),
        "é".repeat(128), // 128 characters, 256 bytes
        "€".repeat(86),  // 86 characters, 258 bytes
        "x".repeat(10_000),
    ] {
        assert!(bad.len() > 255);
        refused_everywhere(&srv, good(ROW, &bad, 1), &[".column_name"]).await;
        expect_problem(
            &get(&srv, &format!("/v1/cells/{ROW}/{bad}")).await,
            422,
            &["path.column_name"],
        );
        expect_problem(
            &get(&srv, &format!("/v1/cells/{ROW}/{bad}/1")).await,
            422,
            &["path.column_name"],
        );
    }
}

#[tokio::test]
async fn bad_ref_keys_are_422_in_body_and_path() {
    let srv = server().await;
    for bad in [
        "1.5",
        "-0.5",
        "1e30",
        "9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        BIG,
    ] {
        let doc = format!(
            r#"{{"row_key": "{}", "column_name": "c", "ref_key": {bad}, "body": 1}}"#,
            Uuid::new_v4()
        );
        let item: Value = serde_json::from_str(&doc).unwrap();
        refused_everywhere(&srv, item, &[".ref_key"]).await;
    }
    for bad in [
        "abc",
        "1.5",
        "1e3",
        "9223372036854775808",
        "-9223372036854775809",
        BIG,
        "0x10",
        "%20",
        "1%00",
    ] {
        expect_problem(
            &get(&srv, &format!("/v1/cells/{ROW}/c/{bad}")).await,
            422,
            &["path.ref_key"],
        );
    }
    // The extremes of i64 are valid, in the body and in the path.
    let row = Uuid::new_v4();
    for rk in [i64::MAX, i64::MIN] {
        let a = post_text(
            &srv,
            "/v1/cells",
            &good(&row.to_string(), "c", rk).to_string(),
        )
        .await;
        assert_eq!(expect_status(&a, 201)["ref_key"], rk);
        let v = expect_status(&get(&srv, &format!("/v1/cells/{row}/c/{rk}")).await, 200);
        assert_eq!(v["ref_key"], rk);
    }
}

#[tokio::test]
async fn bad_partition_numbers_are_422() {
    let srv = server().await;
    for bad in [
        "abc",
        "-1",
        "16",
        "17",
        "4096",
        BIG,
        "-99999999999999999999",
        "1.5",
        "",
        "1e1",
    ] {
        let a = get(&srv, &pr(&format!("partition_number={bad}&read_type=2"))).await;
        expect_problem(&a, 422, &["query.partition_number"]);
    }
    expect_problem(
        &get(&srv, &pr("read_type=2")).await,
        422,
        &["query.partition_number"],
    );
    expect_status(
        &get(&srv, &pr("partition_number=15&read_type=2")).await,
        200,
    );
}

#[tokio::test]
async fn bad_read_types_are_422() {
    let srv = server().await;
    for bad in ["0", "3", "-1", "two", BIG, "1.0", ""] {
        let a = get(&srv, &pr(&format!("partition_number=0&read_type={bad}"))).await;
        expect_problem(&a, 422, &["query.read_type"]);
    }
    expect_problem(
        &get(&srv, &pr("partition_number=0")).await,
        422,
        &["query.read_type"],
    );
}

#[tokio::test]
async fn bad_limits_are_422() {
    let srv = server().await;
    for bad in ["ten", BIG, "-99999999999999999999", "1.5", "1e3", ""] {
        let a = get(
            &srv,
            &pr(&format!("partition_number=0&read_type=2&limit={bad}")),
        )
        .await;
        expect_problem(&a, 422, &["query.limit"]);
    }
    // In range but outside 1..=1000: clamped, as in go-mezzanine.
    for ok in [
        "-1",
        "0",
        "1001",
        "9223372036854775807",
        "-9223372036854775808",
    ] {
        let a = get(
            &srv,
            &pr(&format!("partition_number=0&read_type=2&limit={ok}")),
        )
        .await;
        expect_status(&a, 200);
    }
}

#[tokio::test]
async fn bad_added_ids_are_422() {
    let srv = server().await;
    for bad in [
        "first",
        BIG,
        "-99999999999999999999",
        "9223372036854775808",
        "1.5",
        "",
    ] {
        let a = get(
            &srv,
            &pr(&format!("partition_number=0&read_type=2&added_id={bad}")),
        )
        .await;
        expect_problem(&a, 422, &["query.added_id"]);
    }
    for ok in ["-1", "9223372036854775807"] {
        expect_status(
            &get(
                &srv,
                &pr(&format!("partition_number=0&read_type=2&added_id={ok}")),
            )
            .await,
            200,
        );
    }
}

#[tokio::test]
async fn bad_created_after_is_422() {
    let srv = server().await;
    for bad in [
        "yesterday",
        "2024-01-31",
        "2024-01-31T12:00:00",
        "2024-13-01T00:00:00Z",
        "2024-01-31T25:00:00Z",
        "1706702400",
        "",
    ] {
        let a = get(
            &srv,
            &pr(&format!(
                "partition_number=0&read_type=1&created_after={bad}"
            )),
        )
        .await;
        expect_problem(&a, 422, &["query.created_after"]);
    }
    for ok in [
        "2024-01-31T12:00:00Z",
        "2024-01-31T12:00:00.123456%2B02:00",
        "2024-01-31T12:00:00-05:00",
    ] {
        expect_status(
            &get(
                &srv,
                &pr(&format!(
                    "partition_number=0&read_type=1&created_after={ok}"
                )),
            )
            .await,
            200,
        );
    }
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let srv = server().await;
    let one = good(&Uuid::new_v4().to_string(), "c", 1);
    let bodies = [
        ("/v1/cells", one.clone()),
        ("/v1/cells/batch", json!({"cells": [one]})),
    ];
    for (path, body) in &bodies {
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/xml"),
            Some("application/jsonx"),
            Some("json"),
            Some(""),
        ] {
            let a = post(&srv, path, ct, body.to_string()).await;
            expect_problem(&a, 415, &["header.Content-Type"]);
        }
        // Wrong type and malformed too: the content type is what is reported.
        expect_problem(
            &post(&srv, path, Some("text/plain"), "{".to_owned()).await,
            415,
            &["header.Content-Type"],
        );
    }
    // What JSON clients really send is accepted.
    for (i, ct) in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/problem+json",
    ]
    .into_iter()
    .enumerate()
    {
        let item = good(&Uuid::new_v4().to_string(), "c", i as i64);
        expect_status(
            &post(&srv, "/v1/cells", Some(ct), item.to_string()).await,
            201,
        );
        let batch = json!({"cells": [good(&Uuid::new_v4().to_string(), "c", 1)]});
        expect_status(
            &post(&srv, "/v1/cells/batch", Some(ct), batch.to_string()).await,
            200,
        );
    }
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let urls = fresh_databases(1).await;
    let mut cfg = default_config();
    cfg.max_body_bytes = 4096;
    let srv = TestServer::start(cfg, even_map(&urls, SHARDS)).await;
    let big_one =
        json!({"row_key": ROW, "column_name": "c", "ref_key": 1, "body": "x".repeat(8192)});
    let big_batch = json!({"cells": (0..100).map(|i| good(&Uuid::new_v4().to_string(), "c", i)).collect::<Vec<_>>()});
    for (path, body) in [("/v1/cells", &big_one), ("/v1/cells/batch", &big_batch)] {
        let text = body.to_string();
        assert!(text.len() > 4096);
        // With a Content-Length.
        expect_problem(&post_text(&srv, path, &text).await, 413, &["body"]);
        // Chunked, without a Content-Length: the limit holds as the body streams in.
        let mut chunked = Vec::new();
        for part in text.as_bytes().chunks(1000) {
            chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            chunked.extend_from_slice(part);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let head = format!(
            "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"
        );
        expect_problem(&raw(&srv, &head, &chunked).await, 413, &["body"]);
        // A Content-Length far beyond the limit, the body streaming in.
        let head = format!(
            "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 1000000000"
        );
        expect_problem(&raw(&srv, &head, &[b' '; 8192]).await, 413, &["body"]);
    }
    // Nothing of the refused cell was stored; a small cell still is.
    expect_problem(&get(&srv, &format!("/v1/cells/{ROW}/c/1")).await, 404, &[]);
    let small = good(ROW, "c", 1).to_string();
    expect_status(&post_text(&srv, "/v1/cells", &small).await, 201);
}

#[tokio::test]
async fn declared_oversized_length_is_413_before_the_body_arrives() {
    let urls = fresh_databases(1).await;
    let mut cfg = default_config();
    cfg.max_body_bytes = 4096;
    let srv = TestServer::start(cfg, even_map(&urls, SHARDS)).await;
    // The client announces 1 GB and waits for a verdict before sending it (as with
    // `Expect: 100-continue`, or a slow client): the length alone decides, at once.
    for path in ["/v1/cells", "/v1/cells/batch"] {
        for expect in ["", "\r\nExpect: 100-continue"] {
            let head = format!(
                "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 1000000000{expect}"
            );
            let started = std::time::Instant::now();
            let a = tokio::time::timeout(std::time::Duration::from_secs(5), raw(&srv, &head, b""))
                .await
                .unwrap_or_else(|_| panic!("{head:?}: no answer within 5 s"));
            expect_problem(&a, 413, &["body"]);
            assert!(
                started.elapsed().as_secs() < 5,
                "{}: took {:?}",
                a.what,
                started.elapsed()
            );
        }
    }
}

#[tokio::test]
async fn batch_shape_faults_are_named() {
    let srv = server().await;
    let b = "/v1/cells/batch";
    // cells missing, or not an array.
    expect_problem(&post_text(&srv, b, "{}").await, 422, &["body.cells"]);
    for cells in [
        json!("x"),
        json!({}),
        json!(1),
        json!(null),
        json!(true),
        json!({"0": good(ROW, "c", 1)}),
    ] {
        let a = post_text(&srv, b, &json!({"cells": cells}).to_string()).await;
        expect_problem(&a, 422, &["body.cells"]);
    }
    // Too few or too many cells.
    expect_problem(
        &post_text(&srv, b, r#"{"cells": []}"#).await,
        422,
        &["body.cells"],
    );
    let many: Vec<Value> = (0..1001)
        .map(|i| good(&Uuid::new_v4().to_string(), "c", i))
        .collect();
    expect_problem(
        &post_text(&srv, b, &json!({"cells": many}).to_string()).await,
        422,
        &["body.cells"],
    );
    // An unknown property beside cells.
    let a = post_text(
        &srv,
        b,
        &json!({"cells": [good(ROW, "c", 1)], "extra": 1}).to_string(),
    )
    .await;
    expect_problem(&a, 422, &["body.extra"]);
    // Items that are not objects: each answered in its slot, the good ones stored.
    for item in [
        json!(1),
        json!("x"),
        json!([]),
        json!(null),
        json!([good(ROW, "c", 1)]),
    ] {
        refused_everywhere_in_batch(&srv, item, &["body.cells[2]"]).await;
    }
    // An unknown property inside an item.
    let mut item = good(&Uuid::new_v4().to_string(), "c", 1);
    item["extra"] = json!(true);
    refused_everywhere(&srv, item, &[".extra"]).await;
}

async fn refused_everywhere_in_batch(srv: &TestServer, item: Value, locs: &[&str]) {
    let a = post_text(srv, "/v1/cells/batch", &batch_with(item).to_string()).await;
    let v = expect_batch_item(&a, 2, locs);
    for i in [0, 1, 3] {
        assert_eq!(v["results"][i]["status"], 201, "{v}");
    }
}

#[tokio::test]
async fn several_faults_are_all_reported() {
    let srv = server().await;
    let item = json!({"row_key": "nope", "column_name": "", "ref_key": 1.5, "extra": 1});
    refused_everywhere(
        &srv,
        item,
        &[".row_key", ".column_name", ".ref_key", ".body", ".extra"],
    )
    .await;
    let item = json!({"row_key": 1, "column_name": "x".repeat(300), "ref_key": "1", "body": {"a": "\u{0}"}});
    refused_everywhere(
        &srv,
        item,
        &[".row_key", ".column_name", ".ref_key", ".body.a"],
    )
    .await;
    // Several bad items of one batch, each with its own faults.
    let batch = json!({"cells": [{"row_key": "a"}, good(ROW, "", 1), 7]});
    let a = post_text(&srv, "/v1/cells/batch", &batch.to_string()).await;
    let v = expect_status(&a, 200);
    let locs = [
        vec![
            "body.cells[0].row_key",
            "body.cells[0].column_name",
            "body.cells[0].ref_key",
            "body.cells[0].body",
        ],
        vec!["body.cells[1].column_name"],
        vec!["body.cells[2]"],
    ];
    for (i, l) in locs.iter().enumerate() {
        assert_eq!(v["results"][i]["status"], 422, "{v}");
        check_problem(&v["results"][i]["error"], 422, l, "batch");
    }
    // Path and query.
    let long = "x".repeat(256);
    let a = get(&srv, &format!("/v1/cells/nope/{long}/abc")).await;
    expect_problem(
        &a,
        422,
        &["path.row_key", "path.column_name", "path.ref_key"],
    );
    let a = get(&srv, &format!("/v1/cells/nope/{long}")).await;
    expect_problem(&a, 422, &["path.row_key", "path.column_name"]);
    let a = get(
        &srv,
        &pr("partition_number=x&read_type=9&limit=y&added_id=z&created_after=w"),
    )
    .await;
    expect_problem(
        &a,
        422,
        &[
            "query.partition_number",
            "query.read_type",
            "query.limit",
            "query.added_id",
            "query.created_after",
        ],
    );
    expect_problem(
        &get(&srv, &pr("")).await,
        422,
        &["query.partition_number", "query.read_type"],
    );
}

#[tokio::test]
async fn nul_characters_are_422_naming_their_path() {
    let srv = server().await;
    let row = || Uuid::new_v4().to_string();
    for (body, loc) in [
        (json!("a\u{0}b"), ".body"),
        (json!({"a": [1, "x\u{0}"]}), ".body.a[1]"),
        (json!({"a": {"b": "\u{0}"}}), ".body.a.b"),
        (json!(["\u{0}"]), ".body[0]"),
        (json!({"k\u{0}": 1}), ".body.k\u{0}"),
    ] {
        let item = json!({"row_key": row(), "column_name": "c", "ref_key": 1, "body": body});
        refused_everywhere(&srv, item, &[loc]).await;
    }
    refused_everywhere(&srv, good(&row(), "c\u{0}", 1), &[".column_name"]).await;
    refused_everywhere(&srv, good(&format!("{ROW}\u{0}"), "c", 1), &[".row_key"]).await;
    // Escaped in the text of the body, too (what most clients send).
    let text = format!(
        r#"{{"row_key": "{}", "column_name": "c", "ref_key": 1, "body": {{"s": "\u0000"}}}}"#,
        row()
    );
    expect_problem(
        &post_text(&srv, "/v1/cells", &text).await,
        422,
        &["body.body.s"],
    );
    // In the path.
    expect_problem(
        &get(&srv, &format!("/v1/cells/{ROW}/c%00")).await,
        422,
        &["path.column_name"],
    );
    expect_problem(
        &get(&srv, &format!("/v1/cells/{ROW}/c%00/1")).await,
        422,
        &["path.column_name"],
    );
    expect_problem(&get(&srv, "/v1/cells/%00").await, 422, &["path.row_key"]);
}

#[tokio::test]
async fn unknown_routes_are_404_problems() {
    let srv = server().await;
    for path in [
        "/",
        "/v1",
        "/v1/",
        "/v1/nope",
        "/v2/cells",
        "/nope",
        "/v1/cells/a/b/c/d",
        "/v1/shards",
        "/metrics/x",
    ] {
        expect_problem(&get(&srv, path).await, 404, &[]);
    }
    expect_problem(&post_text(&srv, "/v1/nothing", "{}").await, 404, &[]);
    // An absent cell is a 404 problem too.
    expect_problem(
        &get(&srv, &format!("/v1/cells/{}/c/1", Uuid::new_v4())).await,
        404,
        &[],
    );
    expect_problem(
        &get(&srv, &format!("/v1/cells/{}/c", Uuid::new_v4())).await,
        404,
        &[],
    );
}

#[tokio::test]
async fn wrong_methods_are_405_problems() {
    let srv = server().await;
    let c = client();
    let row = Uuid::new_v4();
    for (method, path, allowed) in [
        (reqwest::Method::DELETE, "/v1/cells".to_owned(), "POST"),
        (reqwest::Method::GET, "/v1/cells".to_owned(), "POST"),
        (reqwest::Method::PUT, "/v1/cells".to_owned(), "POST"),
        (reqwest::Method::PATCH, "/v1/cells".to_owned(), "POST"),
        (
            reqwest::Method::DELETE,
            "/v1/cells/batch".to_owned(),
            "POST",
        ),
        (
            reqwest::Method::POST,
            "/v1/cells/partitionRead".to_owned(),
            "GET",
        ),
        (reqwest::Method::POST, "/v1/shards/count".to_owned(), "GET"),
        (reqwest::Method::DELETE, format!("/v1/cells/{row}"), "GET"),
        (reqwest::Method::POST, format!("/v1/cells/{row}/c"), "GET"),
        (reqwest::Method::PUT, format!("/v1/cells/{row}/c/1"), "GET"),
        (reqwest::Method::DELETE, "/v1/livez".to_owned(), "GET"),
    ] {
        let a = send(
            c.request(method, srv.url(&path))
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await;
        expect_problem(&a, 405, &[]);
        assert!(a.allow.contains(allowed), "{}: Allow {:?}", a.what, a.allow);
    }
}

#[tokio::test]
async fn odd_path_segments_never_5xx() {
    let srv = server().await;
    let odd = [
        "%ZZ",
        "%",
        "%4",
        "%FF",
        "%C3%28",
        "%00",
        "%2F",
        "%2e%2e",
        "..",
        "%25",
        "%20",
        "a%2Fb",
        "%E2%82",
        "%F0%9F%98%80",
        "%7F",
        "~",
        "%7B%7D",
        "%E2%80%AE",
        "%EF%BB%BF",
    ];
    for o in odd {
        for path in [
            format!("/v1/cells/{o}"),
            format!("/v1/cells/{o}/c"),
            format!("/v1/cells/{o}/c/1"),
            format!("/v1/cells/{ROW}/{o}"),
            format!("/v1/cells/{ROW}/{o}/1"),
            format!("/v1/cells/{ROW}/c/{o}"),
            pr(&format!("partition_number={o}&read_type=2")),
            pr(&format!("partition_number=0&read_type=1&created_after={o}")),
        ] {
            let a = raw(&srv, &format!("GET {path} HTTP/1.1"), b"").await;
            if (200..300).contains(&a.status) {
                continue; // an odd but valid column name, say
            }
            let p = expect_4xx(&a);
            // A row key like these is never a UUID: when the segment reaches the handler,
            // it says so.
            if path.starts_with(&format!("/v1/cells/{o}")) && a.status == 422 {
                check_problem(&p, 422, &["path.row_key"], &a.what);
            }
        }
    }
    // %ZZ (not an escape at all) reaches the handler as text and is named.
    expect_problem(
        &raw(&srv, "GET /v1/cells/%ZZ HTTP/1.1", b"").await,
        422,
        &["path.row_key"],
    );
    expect_problem(
        &raw(&srv, &format!("GET /v1/cells/{ROW}/c/%ZZ HTTP/1.1"), b"").await,
        422,
        &["path.ref_key"],
    );
    // Invalid UTF-8 in a segment is still a fault of that field, and is named (400 or 422).
    for (path, loc) in [
        ("/v1/cells/%FF".to_owned(), "path.row_key"),
        ("/v1/cells/%FF/c/1".to_owned(), "path.row_key"),
        (format!("/v1/cells/{ROW}/%C3%28"), "path.column_name"),
        (format!("/v1/cells/{ROW}/c/%FF"), "path.ref_key"),
    ] {
        let a = raw(&srv, &format!("GET {path} HTTP/1.1"), b"").await;
        let p = expect_4xx(&a);
        check_problem(&p, a.status, &[loc], &a.what);
    }
}

#[tokio::test]
async fn bad_requests_do_no_harm_to_stored_data() {
    let srv = server().await;
    let c = client();
    let row = Uuid::parse_str(ROW).unwrap();
    let shard = mezzanine_core::shard_for_row_key(&row, SHARDS);
    let (s, stored) = post_json(
        &c,
        &srv.url("/v1/cells"),
        &cell(&row, "profile", 7, json!({"name": "alice"})),
    )
    .await;
    assert_eq!(s, 201, "{stored}");

    let long = "x".repeat(256);
    let same_coords_bad = |extra: (&str, Value)| {
        let mut v = good(ROW, "profile", 7);
        v[extra.0] = extra.1;
        v.to_string()
    };
    // Writes at the cell's own coordinates, each faulty in another way.
    let bad_writes = [
        same_coords_bad(("column_name", json!(""))),
        same_coords_bad(("column_name", json!(long))),
        same_coords_bad(("ref_key", json!(7.5))),
        same_coords_bad(("ref_key", json!("7"))),
        same_coords_bad(("body", json!({"name": "\u{0}"}))),
        same_coords_bad(("extra", json!(1))),
        same_coords_bad(("row_key", json!(format!("{ROW}0")))),
        "{\"row_key\": \"550e8400-e29b-41d4-a716-446655440000\", \"column_name\": \"profile\""
            .to_owned(),
        "{}".to_owned(),
        "[]".to_owned(),
    ];
    for w in &bad_writes {
        let a = post_text(&srv, "/v1/cells", w).await;
        assert!(
            (400..500).contains(&a.status),
            "{w}: {} {}",
            a.status,
            a.text
        );
        let a = post_text(&srv, "/v1/cells/batch", &format!("{{\"cells\": [{w}]}}")).await;
        assert!(
            a.status < 500
                && !a.text.contains("\"status\":201")
                && !a.text.contains("\"status\":200"),
            "{w}: {}",
            a.text
        );
        let a = post_text(&srv, "/v1/cells/batch", &format!("{{\"cells\": {w}}}")).await;
        assert!(
            (400..500).contains(&a.status),
            "{w}: {} {}",
            a.status,
            a.text
        );
    }
    for ct in [None, Some("text/plain")] {
        let a = post(
            &srv,
            "/v1/cells",
            ct,
            json!(good(ROW, "profile", 8)).to_string(),
        )
        .await;
        assert_eq!(a.status, 415);
    }
    for path in [
        "/v1/cells/nope".to_owned(),
        format!("/v1/cells/{ROW}/{long}"),
        format!("/v1/cells/{ROW}/profile/x"),
        pr(&format!("partition_number={shard}&read_type=3")),
        pr(&format!("partition_number={shard}&read_type=2&limit={BIG}")),
        pr(&format!(
            "partition_number={shard}&read_type=1&created_after=now"
        )),
        pr("partition_number=-1&read_type=2"),
    ] {
        expect_4xx(&get(&srv, &path).await);
    }
    for m in [reqwest::Method::DELETE, reqwest::Method::PUT] {
        let a = send(
            c.request(m, srv.url("/v1/cells"))
                .body(good(ROW, "profile", 7).to_string()),
        )
        .await;
        assert_eq!(a.status, 405);
    }

    // The cell reads back identically, and its shard holds exactly that one cell.
    for path in [
        format!("/v1/cells/{ROW}/profile/7"),
        format!("/v1/cells/{ROW}/profile"),
    ] {
        let (s, v) = get_json(&c, &srv.url(&path)).await;
        assert_eq!((s, &v), (200, &stored), "{path}");
    }
    let (s, v) = get_json(&c, &srv.url(&format!("/v1/cells/{ROW}"))).await;
    assert_eq!(
        (s, v),
        (200, json!({"row_key": ROW, "cells": [stored.clone()]}))
    );
    for read_type in [1, 2] {
        let (s, v) = get_json(
            &c,
            &srv.url(&pr(&format!(
                "partition_number={shard}&read_type={read_type}&limit=1000"
            ))),
        )
        .await;
        assert_eq!(
            (s, v),
            (200, json!([stored.clone()])),
            "read_type {read_type}"
        );
    }
    // And no other shard holds anything.
    for other in (0..SHARDS).filter(|s| *s != shard) {
        let (s, v) = get_json(
            &c,
            &srv.url(&pr(&format!("partition_number={other}&read_type=2"))),
        )
        .await;
        assert_eq!((s, v), (200, json!([])), "shard {other}");
    }
}
