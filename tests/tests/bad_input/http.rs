//! The request around the body: content type, size, batch shape, routes, methods, path segments; and that none of it harms stored data.

use super::*;

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
