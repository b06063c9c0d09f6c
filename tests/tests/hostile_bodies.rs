//! Hostile cell bodies: numbers outside PostgreSQL's numeric range, short texts that would be
//! stored as huge ones, and batches mixing such cells with good ones. Each fault is a 422
//! naming where it is (or a 413 for a whole batch whose bodies would be stored too large),
//! never a 5xx and never a backend's name; every valid cell of a batch is stored whatever its
//! neighbours, also when only PostgreSQL knows a cell is bad.

use mezzanine_e2e::*;
use serde_json::Value;
use uuid::Uuid;

const SHARDS: u32 = 8;

/// POSTs JSON text; returns the status and the answer (its text too).
async fn post_text(srv: &TestServer, path: &str, text: &str) -> (u16, Value, String) {
    let resp = match client()
        .post(srv.url(path))
        .header("content-type", "application/json")
        .body(text.to_owned())
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => panic!("POST {path}: {e}"),
    };
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, v, text)
}

fn cell_text(row: &Uuid, col: &str, rk: i64, body: &str) -> String {
    format!(r#"{{"row_key":"{row}","column_name":"{col}","ref_key":{rk},"body":{body}}}"#)
}

fn good(row: &Uuid) -> String {
    cell_text(row, "c", 1, r#"{"ok":true}"#)
}

fn batch_text(cells: &[String]) -> String {
    format!(r#"{{"cells":[{}]}}"#, cells.join(","))
}

/// Asserts `p` is a problem of `status` naming exactly `locations`, none of whose words
/// name a backend or sound like a server fault.
fn assert_names(p: &Value, status: u16, locations: &[&str], what: &str) {
    assert_eq!(p["status"], status, "{what}: {p}");
    let got: Vec<&str> = p["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["location"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(got, locations, "{what}: {p}");
    let text = p.to_string();
    for word in ["db1", "db2", "internal", "SQLSTATE 5", "backend"] {
        assert!(!text.contains(word), "{what}: {word:?} in {p}");
    }
}

/// The status of `GET /v1/cells/{row}/c/1`.
async fn stored(srv: &TestServer, row: &Uuid) -> u16 {
    get_json(&client(), &srv.url(&format!("/v1/cells/{row}/c/1")))
        .await
        .0
}

#[tokio::test]
async fn numbers_outside_postgresqls_range_are_422_naming_their_path() {
    let (srv, _) = TestServer::fresh(2, SHARDS).await;
    for bad in [
        "1e131072",
        "-1e131072",
        "1e-16384",
        "0e-16384",
        "1.5e-16383",
        "12345678901234567890e131060",
        "1e1073741823",
        "1E+999999999999",
    ] {
        for (body, path) in [
            (bad.to_owned(), ""),
            (format!(r#"{{"a":[1,{bad}]}}"#), ".a[1]"),
            (format!(r#"{{"x":{{"y":{bad}}},"z":"ok"}}"#), ".x.y"),
        ] {
            let what = body.clone();
            let row = Uuid::new_v4();
            let (s, p, _) = post_text(&srv, "/v1/cells", &cell_text(&row, "c", 1, &body)).await;
            assert_eq!(s, 422, "{what}: {p}");
            assert_names(&p, 422, &[&format!("body.body{path}")], &what);
            assert!(
                p["errors"][0]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("PostgreSQL's numeric range")),
                "{what}: {p}"
            );
            assert_eq!(stored(&srv, &row).await, 404, "{what}");
            // In a batch: that cell alone is refused, its neighbours (on both backends) stored.
            let rows: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
            let mut cells: Vec<String> = rows.iter().map(good).collect();
            cells[2] = cell_text(&rows[2], "c", 1, &body);
            let (s, v, _) = post_text(&srv, "/v1/cells/batch", &batch_text(&cells)).await;
            assert_eq!(s, 200, "{what}: {v}");
            for (i, r) in rows.iter().enumerate() {
                let result = &v["results"][i];
                if i == 2 {
                    assert_names(
                        &result["error"],
                        422,
                        &[&format!("body.cells[2].body{path}")],
                        &what,
                    );
                    assert_eq!(result["status"], 422, "{what}: {v}");
                    assert_eq!(stored(&srv, r).await, 404, "{what}");
                } else {
                    assert_eq!(result["status"], 201, "{what}: {v}");
                    assert_eq!(stored(&srv, r).await, 200, "{what}");
                }
            }
        }
    }
}

#[tokio::test]
async fn numbers_at_the_edge_of_the_range_keep_every_digit() {
    let (srv, _) = TestServer::fresh(1, SHARDS).await;
    let c = client();
    for (text, written_out) in [
        ("1e131071", format!("1{}", "0".repeat(131_071))),
        ("-9.5e131071", format!("-95{}", "0".repeat(131_070))),
        ("1e-16383", format!("0.{}1", "0".repeat(16_382))),
        ("0e-16383", format!("0.{}", "0".repeat(16_383))),
        ("1.50", "1.50".to_owned()),
        ("-0", "0".to_owned()),
        ("1E+2", "100".to_owned()),
        (
            "123456789012345678901234567890.000000000000000000001",
            "123456789012345678901234567890.000000000000000000001".to_owned(),
        ),
    ] {
        let row = Uuid::new_v4();
        let (s, v, _) = post_text(&srv, "/v1/cells", &cell_text(&row, "c", 1, text)).await;
        assert_eq!(s, 201, "{text}: {v}");
        let (s, v) = get_json(&c, &srv.url(&format!("/v1/cells/{row}/c/1"))).await;
        assert_eq!(s, 200);
        assert_eq!(v["body"].to_string(), written_out, "{text}");
    }
}

#[tokio::test]
async fn a_short_body_cannot_be_stored_as_a_huge_one() {
    let (srv, _) = TestServer::fresh(2, SHARDS).await;
    let numbers = |n: usize| format!("[{}]", vec!["1e131071"; n].join(","));
    // 9 KB that would be 131 MB once stored.
    let row = Uuid::new_v4();
    let text = cell_text(&row, "c", 1, &numbers(1000));
    assert!(text.len() < 10_000);
    let (s, p, _) = post_text(&srv, "/v1/cells", &text).await;
    assert_eq!(s, 422, "{p}");
    assert_names(&p, 422, &["body.body"], "1000 numbers");
    let message = p["errors"][0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("131073001 bytes once stored") && message.contains("MAX_BODY_BYTES"),
        "{message}"
    );
    assert_eq!(stored(&srv, &row).await, 404);
    // The bound is MAX_BODY_BYTES (1 MiB by default) of the body written out: 7 such numbers
    // (917 512 bytes) fit, 8 (1 048 585) do not.
    let (s, v, _) = post_text(&srv, "/v1/cells", &cell_text(&row, "c", 1, &numbers(7))).await;
    assert_eq!(s, 201, "{v}");
    let (s, p, _) = post_text(&srv, "/v1/cells", &cell_text(&row, "c", 2, &numbers(8))).await;
    assert_eq!(s, 422, "{p}");
    assert!(p.to_string().contains("1048585 bytes once stored"), "{p}");

    // In a batch: the cell alone is refused, its neighbours stored.
    let rows: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let mut cells: Vec<String> = rows.iter().map(good).collect();
    cells[3] = cell_text(&rows[3], "c", 1, &numbers(1000));
    let (s, v, _) = post_text(&srv, "/v1/cells/batch", &batch_text(&cells)).await;
    assert_eq!(s, 200, "{v}");
    for (i, r) in rows.iter().enumerate() {
        if i == 3 {
            assert_names(
                &v["results"][3]["error"],
                422,
                &["body.cells[3].body"],
                "batch",
            );
            assert_eq!(stored(&srv, r).await, 404);
        } else {
            assert_eq!(v["results"][i]["status"], 201, "{v}");
        }
    }
    // Cells that each fit but together would be stored larger than MAX_BODY_BYTES: the batch
    // is refused as a whole (413), nothing stored.
    let rows: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let cells: Vec<String> = rows
        .iter()
        .map(|r| cell_text(r, "c", 1, &numbers(4)))
        .collect();
    let (s, p, _) = post_text(&srv, "/v1/cells/batch", &batch_text(&cells)).await;
    assert_eq!(s, 413, "{p}");
    assert_names(&p, 413, &["body.cells"], "batch of big ones");
    for r in &rows {
        assert_eq!(stored(&srv, r).await, 404);
    }
}

#[tokio::test]
async fn the_stored_size_is_what_postgresql_stores() {
    let (srv, _) = TestServer::fresh(1, SHARDS).await;
    let c = client();
    for body in [
        r#"{"a":1e3,"b":[1.5e-3,-2E+2,0.0,-0,1.50],"c":"é\n\u0001\"\\/","d":{}}"#,
        r#"[[],{},null,true,false,"",123456789012345678901234567890]"#,
        r#"{"k":[1e300,5e-324,-1.7976931348623157e308]}"#,
        r#""😀 \ud83d\ude00""#,
        "1e5000",
        "-1e-5000",
        r#"{"n":[0.1e1,10e-1,100e-2,0.001e3]}"#,
    ] {
        let row = Uuid::new_v4();
        let (s, v, _) = post_text(&srv, "/v1/cells", &cell_text(&row, "c", 1, body)).await;
        assert_eq!(s, 201, "{body}: {v}");
        let (s, v) = get_json(&c, &srv.url(&format!("/v1/cells/{row}/c/1"))).await;
        assert_eq!(s, 200);
        // What PostgreSQL gives back, compact, against what validation reckoned from the
        // text sent.
        let back = v["body"].to_string();
        let sent: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        assert_eq!(
            mezzanine_core::cell::stored_size(&sent),
            back.len() as u64,
            "{body} came back as {back}"
        );
    }
}

#[tokio::test]
async fn in_a_batch_every_invalid_cell_gets_its_own_422() {
    let (srv, _) = TestServer::fresh(2, SHARDS).await;
    let rows: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    let mut cells: Vec<String> = rows.iter().map(good).collect();
    let big = format!("[{}]", vec!["1e131071"; 100].join(","));
    let bad = [
        (
            5,
            cell_text(&rows[5], "c", 1, r#"{"n":[1e131072]}"#),
            "body.cells[5].body.n[0]",
        ),
        (
            17,
            cell_text(&rows[17], "c", 1, r#"{"s":"\u0000"}"#),
            "body.cells[17].body.s",
        ),
        (
            23,
            cell_text(&rows[23], "c", 1, &big),
            "body.cells[23].body",
        ),
        (
            31,
            format!(
                r#"{{"row_key":"{}","column_name":"c","ref_key":1,"body":1,"x":1}}"#,
                rows[31]
            ),
            "body.cells[31].x",
        ),
        (
            39,
            cell_text(&rows[39], "c", 1, "-1e-99999"),
            "body.cells[39].body",
        ),
    ];
    for (i, text, _) in &bad {
        cells[*i] = text.clone();
    }
    let (s, v, _) = post_text(&srv, "/v1/cells/batch", &batch_text(&cells)).await;
    assert_eq!(s, 200, "{v}");
    for (i, r) in rows.iter().enumerate() {
        match bad.iter().find(|(b, _, _)| *b == i) {
            Some((_, _, loc)) => {
                assert_names(&v["results"][i]["error"], 422, &[loc], "mixed batch");
                assert_eq!(stored(&srv, r).await, 404);
            }
            None => {
                assert_eq!(v["results"][i]["status"], 201, "cell {i}: {v}");
                assert_eq!(stored(&srv, r).await, 200, "cell {i}");
            }
        }
    }
}

/// A database in LATIN1, where PostgreSQL itself refuses characters validation cannot know
/// about (a euro sign has no LATIN1 byte): the one thing here that only PostgreSQL finds.
async fn latin1_server() -> TestServer {
    let pg = &shared_pg()[0];
    let name = format!("latin1_{}", Uuid::new_v4().simple());
    sql(
        &pg.url("postgres"),
        &format!(
            "CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        ),
    )
    .await;
    TestServer::start(default_config(), even_map(&[pg.url(&name)], SHARDS)).await
}

#[tokio::test]
async fn cells_postgresql_refuses_fail_alone() {
    let srv = latin1_server().await;
    let euro = r#"{"price":"5 €"}"#;
    // A single write: a 422 naming the body in PostgreSQL's words, no backend named.
    let row = Uuid::new_v4();
    let (s, p, _) = post_text(&srv, "/v1/cells", &cell_text(&row, "c", 1, euro)).await;
    assert_eq!(s, 422, "{p}");
    assert_names(&p, 422, &["body"], "euro");
    assert!(p.to_string().contains("LATIN1"), "{p}");
    // What LATIN1 holds is stored.
    let (s, v, _) = post_text(&srv, "/v1/cells", &cell_text(&row, "c", 1, r#""café""#)).await;
    assert_eq!(s, 201, "{v}");

    // A batch whose cells share the bad cell's shard, and others: only that cell is refused.
    let shard = mezzanine_core::shard_for_row_key(&row, SHARDS);
    let mut rows: Vec<Uuid> = (0..10).map(|_| key_in_shard(shard, SHARDS)).collect();
    rows.extend((0..10).map(|_| Uuid::new_v4()));
    let mut cells: Vec<String> = rows.iter().map(good).collect();
    cells[7] = cell_text(&rows[7], "c", 1, euro);
    let (s, v, _) = post_text(&srv, "/v1/cells/batch", &batch_text(&cells)).await;
    assert_eq!(s, 200, "{v}");
    for (i, r) in rows.iter().enumerate() {
        if i == 7 {
            assert_names(&v["results"][7]["error"], 422, &["body.cells[7]"], "batch");
            assert_eq!(stored(&srv, r).await, 404);
        } else {
            assert_eq!(v["results"][i]["status"], 201, "cell {i}: {v}");
            assert_eq!(stored(&srv, r).await, 200, "cell {i}");
        }
    }
    // A batch of that cell alone.
    let (s, v, _) = post_text(&srv, "/v1/cells/batch", &batch_text(&[cells[7].clone()])).await;
    assert_eq!(s, 200, "{v}");
    assert_names(&v["results"][0]["error"], 422, &["body.cells[0]"], "alone");
}
