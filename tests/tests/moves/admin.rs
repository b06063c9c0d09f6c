//! The backends and verify admin API.

use super::*;

// ---------------------------------------------------------------------------------------------
// 7. Backends
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backends_are_checked_masked_and_removed_only_when_empty() {
    let (srv, urls) = cluster().await;
    let c = client();
    let secret = "s3cr3t-Pw";
    let url = srv.url("/admin/v1/backends");
    let port = urls[0]
        .split(['@', '/'])
        .find_map(|p| p.strip_prefix("127.0.0.1:"))
        .unwrap()
        .to_owned();

    // Bad URLs and unreachable servers: a 4xx problem naming body.url, no password in it.
    let bad = [
        format!("postgres://postgres:{secret}@127.0.0.1:notaport/db"),
        format!("postgres://postgres:{secret}@127.0.0.1:{port}/x?sslmode=bogus"),
        format!("host=127.0.0.1 user=postgres password={secret} dbname"),
        format!("postgres://postgres:{secret}@127.0.0.1:1/nodb"),
        format!("postgres://postgres:{secret}@127.0.0.1:{port}/no_such_database"),
    ];
    for (i, u) in bad.iter().enumerate() {
        let (s, text) = text_of(
            c.post(&url)
                .json(&json!({"name": format!("bad{i}"), "url": u})),
        )
        .await;
        assert!((400..500).contains(&s), "{u}: {s} {text}");
        assert!(!text.contains(secret), "{u}: the password leaked: {text}");
        let p: Value = serde_json::from_str(&text).unwrap();
        assert!(
            p["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["location"] == "body.url")),
            "{u}: {p}"
        );
    }

    // A duplicate name.
    let spare = fresh_databases(1).await.remove(0);
    let (s, p) = post_json(&c, &url, &json!({"name": "db1", "url": spare})).await;
    assert_eq!(s, 409, "{p}");

    // A backend whose URL has a password (the test servers trust local connections).
    let with_pw = spare.replacen("postgres@", &format!("postgres:{secret}@"), 1);
    assert!(with_pw.contains(secret));
    let (s, text) = text_of(c.post(&url).json(&json!({"name": "db4", "url": with_pw}))).await;
    assert_eq!(s, 201, "{text}");
    assert!(!text.contains(secret), "the password leaked: {text}");
    let (s, text) = text_of(c.get(&url)).await;
    assert_eq!(s, 200, "{text}");
    assert!(!text.contains(secret), "the password leaked: {text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = list["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db1", "db2", "db3", "db4"]);
    let db4 = &list["backends"][3];
    assert!(db4["url"].as_str().unwrap().contains("***"), "{db4}");
    assert_eq!(db4["shards"], 0);
    let (_, text) = text_of(c.get(srv.url("/admin/v1/audit"))).await;
    assert!(!text.contains(secret), "the password leaked: {text}");

    // Removal: refused while the backend owns shards, done when it owns none.
    let (s, text) = text_of(c.delete(srv.url("/admin/v1/backends/db1"))).await;
    assert_eq!(s, 409, "{text}");
    let (s, text) = text_of(c.delete(srv.url("/admin/v1/backends/db4"))).await;
    assert_eq!(s, 204, "{text}");
    let (s, text) = text_of(c.delete(srv.url("/admin/v1/backends/db4"))).await;
    assert_eq!(s, 404, "{text}");
    let (_, list) = get_json(&c, &url).await;
    assert_eq!(list["backends"].as_array().unwrap().len(), 3, "{list}");
}

// ---------------------------------------------------------------------------------------------
// 8. verify
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_reports_exactly_the_rows_that_differ() {
    let (srv, urls) = cluster().await;
    let c = client();
    let one = fill(&srv, 1, 20).await;
    fill(&srv, 2, 20).await;
    let id = start_move(&srv, json!({"shards": "1-2", "to": "db3"})).await;
    wait_job_state(&srv, id, "switched", LONG).await;
    let verify = |shards: &'static str| {
        let c = c.clone();
        let url = srv.url("/admin/v1/verify");
        async move { post_json(&c, &url, &json!({ "shards": shards })).await }
    };
    let (s, r) = verify("1-2").await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["ok"], true, "{r}");

    // Tamper with the retired source of shard 1: one body changed, one row deleted.
    let ids = added_ids(&one);
    let (changed, deleted) = (ids[4], ids[11]);
    sql(
        &urls[0],
        &format!(
            "UPDATE cells_0001 SET body = '{{\"tampered\": true}}' WHERE added_id = {changed}; \
             DELETE FROM cells_0001 WHERE added_id = {deleted};"
        ),
    )
    .await;
    let (s, r) = verify("1").await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["ok"], false, "{r}");
    let report = &r["shards"][0];
    assert_eq!(report["shard"], 1);
    assert_eq!(report["owner"], "db3");
    assert_eq!(
        report["differences"],
        json!([
            {"kind": "changed", "backend": "db1", "added_id": changed, "columns": ["body"]},
            {"kind": "missing", "backend": "db1", "added_id": deleted},
        ]),
        "{r}"
    );
    assert_eq!(report["more"], false, "{r}");
    assert_eq!(report["problems"], json!([]), "{r}");
    // The untampered shard still verifies.
    let (s, r) = verify("2").await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["shards"][0]["differences"], json!([]), "{r}");
    let (_, r) = verify("1-2").await;
    assert_eq!(r["ok"], false, "{r}");
}
