//! The cell API against real PostgreSQL: writes, idempotency, conflicts, batches, reads,
//! partition reads, placement by the FNV-1a shard function, operations endpoints.

use mezzanine_e2e::*;
use serde_json::{json, Value};
use uuid::Uuid;

#[tokio::test]
async fn write_is_idempotent_and_conflicts_are_409() {
    let (srv, _) = TestServer::fresh(2, 16).await;
    let c = client();
    let row = Uuid::new_v4();
    let (s, first) = post_json(
        &c,
        &srv.url("/v1/cells"),
        &cell(&row, "profile", 1, json!({"name": "alice", "age": 30})),
    )
    .await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(first["row_key"], row.to_string());
    assert_eq!(first["column_name"], "profile");
    assert_eq!(first["ref_key"], 1);
    assert_eq!(first["body"], json!({"name": "alice", "age": 30}));
    assert!(first["added_id"].as_i64().unwrap() >= 1);
    assert!(chrono_like(&first["created_at"]));

    // The same cell again (keys in another order): 200 with the stored cell.
    let (s, again) = post_json(
        &c,
        &srv.url("/v1/cells"),
        &cell(&row, "profile", 1, json!({"age": 30, "name": "alice"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(again, first);

    // Another body at the same coordinates: 409 problem, stored cell untouched.
    let resp = c
        .post(srv.url("/v1/cells"))
        .json(&cell(&row, "profile", 1, json!({"name": "mallory"})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let p: Value = resp.json().await.unwrap();
    assert_eq!(p["status"], 409);
    assert_eq!(p["errors"][0]["location"], "body.body");
    let (s, stored) = get_json(&c, &srv.url(&format!("/v1/cells/{row}/profile/1"))).await;
    assert_eq!(s, 200);
    assert_eq!(stored, first);
}

fn chrono_like(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() >= 20 && s.contains('T') && s.ends_with('Z'))
}

#[tokio::test]
async fn reads_exact_latest_and_row() {
    let (srv, _) = TestServer::fresh(2, 16).await;
    let c = client();
    let row = Uuid::new_v4();
    for (col, rk, body) in [
        ("profile", 1, json!(1)),
        ("profile", 5, json!(5)),
        ("profile", 3, json!(3)),
        ("billing", 2, json!("b2")),
    ] {
        let (s, _) = post_json(&c, &srv.url("/v1/cells"), &cell(&row, col, rk, body)).await;
        assert_eq!(s, 201);
    }
    let (s, v) = get_json(&c, &srv.url(&format!("/v1/cells/{row}/profile/3"))).await;
    assert_eq!((s, v["body"].clone()), (200, json!(3)));
    let (s, v) = get_json(&c, &srv.url(&format!("/v1/cells/{row}/profile"))).await;
    assert_eq!(
        (s, v["ref_key"].clone(), v["body"].clone()),
        (200, json!(5), json!(5))
    );
    let (s, v) = get_json(&c, &srv.url(&format!("/v1/cells/{row}"))).await;
    assert_eq!(s, 200);
    assert_eq!(v["row_key"], row.to_string());
    let cells = v["cells"].as_array().unwrap();
    let got: Vec<(String, i64)> = cells
        .iter()
        .map(|c| {
            (
                c["column_name"].as_str().unwrap().to_owned(),
                c["ref_key"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [("billing".to_owned(), 2), ("profile".to_owned(), 5)]);

    // Absent things are 404 problems; an unknown row is an empty row.
    for path in [
        format!("/v1/cells/{row}/profile/4"),
        format!("/v1/cells/{row}/nothing"),
    ] {
        let resp = c.get(srv.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
    let (s, v) = get_json(&c, &srv.url(&format!("/v1/cells/{}", Uuid::new_v4()))).await;
    assert_eq!((s, v["cells"].clone()), (200, json!([])));
}

#[tokio::test]
async fn batch_reports_one_result_per_cell_in_order() {
    let (srv, _) = TestServer::fresh(2, 16).await;
    let c = client();
    let existing = Uuid::new_v4();
    let (s, _) = post_json(
        &c,
        &srv.url("/v1/cells"),
        &cell(&existing, "c", 1, json!({"v": 1})),
    )
    .await;
    assert_eq!(s, 201);
    let fresh: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    let mut cells: Vec<Value> = fresh
        .iter()
        .map(|r| cell(r, "c", 1, json!({"row": r.to_string()})))
        .collect();
    cells.insert(3, cell(&existing, "c", 1, json!({"v": 1}))); // identical repeat → 200
    cells.insert(7, cell(&existing, "c", 1, json!({"v": 2}))); // conflict → 409
    cells.insert(
        9,
        json!({"row_key": "nope", "column_name": "c", "ref_key": 1, "body": 1}),
    ); // invalid → 422
    cells.push(cell(
        &fresh[0],
        "c",
        1,
        json!({"row": fresh[0].to_string()}),
    )); // in-batch repeat → 200
    cells.push(cell(&fresh[1], "c", 1, json!("different"))); // in-batch conflict → 409
    let (s, v) = post_json(&c, &srv.url("/v1/cells/batch"), &json!({"cells": cells})).await;
    assert_eq!(s, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), cells.len());
    let statuses: Vec<i64> = results
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    let mut expected = vec![201; 40];
    expected.insert(3, 200);
    expected.insert(7, 409);
    expected.insert(9, 422);
    expected.push(200);
    expected.push(409);
    assert_eq!(statuses, expected);
    assert_eq!(
        results[9]["error"]["errors"][0]["location"],
        "body.cells[9].row_key"
    );
    assert_eq!(results[7]["error"]["status"], 409);
    // Every stored cell is readable and matches its slot.
    for (i, r) in results.iter().enumerate() {
        if r["status"] == 201 {
            assert_eq!(r["cell"]["body"], cells[i]["body"]);
            let (s, got) = get_json(
                &c,
                &srv.url(&format!(
                    "/v1/cells/{}/c/1",
                    cells[i]["row_key"].as_str().unwrap()
                )),
            )
            .await;
            assert_eq!((s, &got), (200, &r["cell"]));
        }
    }
    let (_, stored) = get_json(&c, &srv.url(&format!("/v1/cells/{existing}/c/1"))).await;
    assert_eq!(stored["body"], json!({"v": 1}));
}

#[tokio::test]
async fn batch_limits() {
    let (srv, _) = TestServer::fresh(1, 4).await;
    let c = client();
    let too_many: Vec<Value> = (0..1001)
        .map(|i| cell(&Uuid::new_v4(), "c", i, json!(i)))
        .collect();
    let (s, v) = post_json(&c, &srv.url("/v1/cells/batch"), &json!({"cells": too_many})).await;
    assert_eq!(s, 422);
    assert_eq!(v["errors"][0]["location"], "body.cells");
    let (s, _) = post_json(&c, &srv.url("/v1/cells/batch"), &json!({"cells": []})).await;
    assert_eq!(s, 422);
    let thousand: Vec<Value> = (0..1000)
        .map(|i| cell(&Uuid::new_v4(), "c", i, json!({"i": i})))
        .collect();
    let (s, v) = post_json(&c, &srv.url("/v1/cells/batch"), &json!({"cells": thousand})).await;
    assert_eq!(s, 200);
    assert!(v["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == 201));
}

/// Row keys whose shard (of `n`) is `shard`.
fn keys_in_shard(shard: u32, n: u32, count: usize) -> Vec<Uuid> {
    std::iter::repeat_with(Uuid::new_v4)
        .filter(|u| mezzanine_core::shard_for_row_key(u, n) == shard)
        .take(count)
        .collect()
}

#[tokio::test]
async fn partition_read_pages_by_added_id_and_created_at() {
    let (srv, _) = TestServer::fresh(2, 8).await;
    let c = client();
    let keys = keys_in_shard(5, 8, 30);
    let mut ids = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let (s, v) = post_json(&c, &srv.url("/v1/cells"), &cell(k, "c", i as i64, json!(i))).await;
        assert_eq!(s, 201);
        ids.push(v["added_id"].as_i64().unwrap());
    }
    // Page by added_id, 7 at a time.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let (s, page) = get_json(
            &c,
            &srv.url(&format!(
                "/v1/cells/partitionRead?partition_number=5&read_type=2&added_id={after}&limit=7"
            )),
        )
        .await;
        assert_eq!(s, 200);
        let page = page.as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        for cell in &page {
            seen.push(cell["added_id"].as_i64().unwrap());
        }
        after = *seen.last().unwrap();
    }
    assert_eq!(seen, ids);
    // By created_at, from the beginning; and after the last cell's time there is nothing.
    let (s, all) = get_json(
        &c,
        &srv.url("/v1/cells/partitionRead?partition_number=5&read_type=1&limit=1000"),
    )
    .await;
    assert_eq!(s, 200);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 30);
    let last = all[29]["created_at"].as_str().unwrap();
    let (_, none) = get_json(
        &c,
        &srv.url(&format!(
            "/v1/cells/partitionRead?partition_number=5&read_type=1&created_after={}",
            urlenc(last)
        )),
    )
    .await;
    assert_eq!(none, json!([]));
    // limit ≤ 0 means 100; another shard is empty.
    let (_, v) = get_json(
        &c,
        &srv.url("/v1/cells/partitionRead?partition_number=5&read_type=2&limit=0"),
    )
    .await;
    assert_eq!(v.as_array().unwrap().len(), 30);
    let (_, v) = get_json(
        &c,
        &srv.url("/v1/cells/partitionRead?partition_number=4&read_type=2"),
    )
    .await;
    assert_eq!(v, json!([]));
}

fn urlenc(s: &str) -> String {
    s.replace(':', "%3A").replace('+', "%2B")
}

#[tokio::test]
async fn cells_land_in_the_table_the_shard_function_names() {
    let (srv, urls) = TestServer::fresh(2, 64).await;
    let c = client();
    // DESIGN's vector: this UUID is shard 50 of 64, which the even split gives to db2.
    let row = Uuid::parse_str("550e8400-e29b-41d4-a716-446655440000").unwrap();
    let (s, v) = post_json(
        &c,
        &srv.url("/v1/cells"),
        &cell(&row, "profile", 1, json!({"x": 1})),
    )
    .await;
    assert_eq!(s, 201);
    let db2 = connect(&urls[1]).await;
    let n: i64 = db2
        .query_one(
            "SELECT count(*) FROM cells_0050 WHERE row_key = $1",
            &[&row],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let id: i64 = db2
        .query_one(
            "SELECT added_id FROM cells_0050 WHERE row_key = $1",
            &[&row],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(Some(id), v["added_id"].as_i64());
    let db1 = connect(&urls[0]).await;
    let missing = db1
        .query_opt("SELECT 1 FROM pg_class WHERE relname = 'cells_0050'", &[])
        .await
        .unwrap();
    assert!(missing.is_none(), "db1 must not hold shard 50");
    let (s, v) = get_json(&c, &srv.url("/v1/shards/count")).await;
    assert_eq!((s, v), (200, json!({"num_shards": 64})));
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let (srv, _) = TestServer::fresh(1, 4).await;
    let c = client();
    let resp = c
        .get(srv.url("/v1/livez"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let resp = c.get(srv.url("/v1/cells/not-a-uuid")).send().await.unwrap();
    assert_eq!(resp.status(), 422);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(Uuid::parse_str(&id).is_ok(), "{id}");
}

#[tokio::test]
async fn operations_endpoints() {
    let (srv, _) = TestServer::fresh(2, 8).await;
    let c = client();
    let (s, v) = get_json(&c, &srv.url("/v1/livez")).await;
    assert_eq!((s, v["status"].clone()), (200, json!("ok")));
    for path in ["/v1/readyz", "/v1/health"] {
        let (s, v) = get_json(&c, &srv.url(path)).await;
        assert_eq!(s, 200, "{path} {v}");
        assert_eq!(v["status"], "ok");
        let backends = v["backends"].as_array().unwrap();
        assert_eq!(backends.len(), 2);
        assert!(backends
            .iter()
            .all(|b| b["up"] == true && b["ready"] == true));
    }
    // Make some traffic, then the metrics show it by route and status, and the pools.
    let _ = post_json(
        &c,
        &srv.url("/v1/cells"),
        &cell(&Uuid::new_v4(), "c", 1, json!(1)),
    )
    .await;
    let text = c
        .get(srv.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("http_requests_total{"), "{text}");
    assert!(text.contains("route=\"/v1/cells\""), "{text}");
    assert!(text.contains("status=\"201\""), "{text}");
    assert!(
        text.contains("http_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        text.contains("mezzanine_pool_connections{backend=\"db1\""),
        "{text}"
    );
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
}

#[tokio::test]
async fn openapi_covers_every_implemented_path_of_the_peer() {
    let (srv, _) = TestServer::fresh(1, 4).await;
    let (s, ours) = get_json(&client(), &srv.url("/openapi.json")).await;
    assert_eq!(s, 200);
    // The peer's paths, parameters and response statuses: a fixture of this repository,
    // extracted from go-mezzanine's OpenAPI document.
    let peer: Value =
        serde_json::from_str(include_str!("../fixtures/go-mezzanine-paths.json")).unwrap();
    assert!(peer["paths"].as_object().unwrap().len() >= 7, "{peer}");
    for (path, methods) in peer["paths"].as_object().unwrap() {
        if path.starts_with("/v1/index") {
            continue; // secondary indexes: a later version
        }
        for (method, op) in methods.as_object().unwrap() {
            let mine = &ours["paths"][path][method];
            assert!(
                mine.is_object(),
                "{method} {path} missing from /openapi.json"
            );
            let names = operation_parameters(mine);
            let theirs: Vec<String> = serde_json::from_value(op["parameters"].clone()).unwrap();
            assert_eq!(names, theirs, "{method} {path} parameters");
            for status in op["responses"].as_array().unwrap() {
                let status = status.as_str().unwrap();
                assert!(
                    mine["responses"][status].is_object(),
                    "{method} {path} lacks response {status}"
                );
            }
        }
    }
    for extra in ["/v1/cells/batch", "/v1/livez", "/v1/readyz"] {
        assert!(ours["paths"][extra].is_object(), "{extra}");
    }
}

#[tokio::test]
async fn body_limit_is_configurable_and_answers_413() {
    let urls = fresh_databases(1).await;
    let mut cfg = default_config();
    cfg.max_body_bytes = 2048;
    let srv = TestServer::start(cfg, even_map(&urls, 4)).await;
    let c = client();
    let big = cell(&Uuid::new_v4(), "c", 1, json!("x".repeat(4096)));
    let resp = c
        .post(srv.url("/v1/cells"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let small = cell(&Uuid::new_v4(), "c", 1, json!("x".repeat(100)));
    let (s, _) = post_json(&c, &srv.url("/v1/cells"), &small).await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn bodies_keep_every_digit_and_character() {
    let (srv, _) = TestServer::fresh(1, 4).await;
    let c = client();
    let row = Uuid::new_v4();
    let raw = format!(
        r#"{{"row_key":"{row}","column_name":"c","ref_key":1,"body":{{"big":123456789012345678901234567890,"pi":3.14159265358979323846264338327950288,"tiny":1e-30,"neg":-0.5,"s":"héllo \ud83d\ude00 \"q\"","nested":[[],{{}},null,true]}}}}"#
    );
    let resp = c
        .post(srv.url("/v1/cells"))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let text = c
        .get(srv.url(&format!("/v1/cells/{row}/c/1")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for exact in [
        "123456789012345678901234567890",
        "3.14159265358979323846264338327950288",
        "\"héllo 😀 \\\"q\\\"\"",
        "[[], {}, null, true]",
    ] {
        assert!(text.contains(exact), "{exact} not kept in {text}");
    }
}
