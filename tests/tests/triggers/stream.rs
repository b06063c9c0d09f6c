//! The stream: every acknowledged cell delivered at least once, in `added_id` order per
//! shard, with concurrent single and batch writers; cells of columns the plugin does not
//! subscribe to, and cells created before its registration, never sent; the request as
//! go-mezzanine sends it; offsets in the catalog past the skipped cells; the metrics; and
//! `PLUGINS_MAX`.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_cell_arrives_in_order_and_only_subscribed_columns() {
    let urls = fresh_databases(2).await;
    let srv = TestServer::start(config(), even_map(&urls, SHARDS)).await;
    let c = client();
    // Before the registration: never delivered.
    let early = write(&c, &srv, &Uuid::new_v4(), "a", 1).await;
    let rx = Receiver::start().await;
    register(&srv, "stream", &rx.url, &["a", "b"]).await;

    let mut writers = Vec::new();
    for w in 0..4 {
        let (c, base) = (c.clone(), srv.base.clone());
        writers.push(tokio::spawn(async move {
            let srv = Base(base);
            let mut acks = Vec::new();
            for i in 0..60 {
                let col = ["a", "b", "z"][(i + w) % 3];
                let body = json!({"w": w, "i": i});
                let row = Uuid::new_v4();
                let (s, v) = post_json(&c, &srv.url("/v1/cells"), &cell(&row, col, 1, body)).await;
                assert_eq!(s, 201, "{v}");
                acks.push((col.to_owned(), ack_of(&v)));
            }
            acks
        }));
    }
    let mut batch_writers = Vec::new();
    for col in ["a", "z"] {
        let (c, base) = (c.clone(), srv.base.clone());
        batch_writers.push(tokio::spawn(async move {
            let srv = Base(base);
            let mut acks = Vec::new();
            for _ in 0..6 {
                let cells: Vec<Value> = (0..25)
                    .map(|i| cell(&Uuid::new_v4(), col, i, json!({"col": col})))
                    .collect();
                let (s, v) =
                    post_json(&c, &srv.url("/v1/cells/batch"), &json!({"cells": cells})).await;
                assert_eq!(s, 200, "{v}");
                for r in v["results"].as_array().unwrap() {
                    assert_eq!(r["status"], 201, "{r}");
                    acks.push((col.to_owned(), ack_of(&r["cell"])));
                }
            }
            acks
        }));
    }
    let mut all = Vec::new();
    for w in writers.into_iter().chain(batch_writers) {
        all.extend(w.await.unwrap());
    }
    let wanted: Vec<Ack> = all
        .iter()
        .filter(|(col, _)| col != "z")
        .map(|(_, a)| *a)
        .collect();
    let skipped: BTreeSet<Ack> = all
        .iter()
        .filter(|(col, _)| col == "z")
        .map(|(_, a)| *a)
        .collect();
    assert!(wanted.len() > 200 && skipped.len() > 100);
    wait_all(&rx, &wanted).await;

    let got = rx.received();
    assert_in_order(&got);
    assert!(
        rx.calls()
            .iter()
            .all(|(s, id, _)| !skipped.contains(&(*s, *id))),
        "an unsubscribed column's cell was sent"
    );
    assert!(
        !got.iter().any(|r| (r.shard, r.added_id) == early),
        "a cell created before the registration was delivered"
    );
    // Without failures, each event once.
    assert!(
        receipts(&got).values().all(|n| *n == 1),
        "duplicates without a failure"
    );

    // The request, as go-mezzanine sends it.
    let one = &got[0];
    assert_eq!(one.content_type, "application/json");
    let req = &one.request;
    assert_eq!(req["jsonrpc"], "2.0");
    assert_eq!(req["method"], "cell.written");
    assert!(req["id"].is_u64(), "{req}");
    let keys: BTreeSet<&str> = req["params"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "added_id",
            "row_key",
            "column_name",
            "ref_key",
            "body",
            "created_at",
            "shard_id"
        ])
    );
    // `params` is the cell as /v1 renders it.
    let path = format!(
        "/v1/cells/{}/{}/{}",
        req["params"]["row_key"].as_str().unwrap(),
        req["params"]["column_name"].as_str().unwrap(),
        req["params"]["ref_key"]
    );
    let (s, stored) = get_json(&c, &srv.url(&path)).await;
    assert_eq!(s, 200, "{stored}");
    for f in [
        "added_id",
        "row_key",
        "column_name",
        "ref_key",
        "body",
        "created_at",
    ] {
        assert_eq!(stored[f], req["params"][f], "{f}");
    }

    // The offsets moved past the skipped cells too.
    let last_skipped = skipped
        .iter()
        .map(|(s, id)| (*s, *id))
        .collect::<BTreeMap<u32, i64>>();
    let offsets = catalog_texts(
        &urls[0],
        "SELECT shard || ':' || delivered_upto FROM mezzanine.plugin_offsets",
    )
    .await;
    let offsets: HashMap<u32, i64> = offsets
        .iter()
        .map(|t| {
            let (s, o) = t.split_once(':').unwrap();
            (s.parse().unwrap(), o.parse().unwrap())
        })
        .collect();
    let wait_offsets = async {
        for (shard, id) in &last_skipped {
            let deadline = std::time::Instant::now() + LONG;
            loop {
                let o = catalog_texts(
                    &urls[0],
                    &format!("SELECT delivered_upto::text FROM mezzanine.plugin_offsets WHERE shard = {shard}"),
                )
                .await;
                if o.first().is_some_and(|o| o.parse::<i64>().unwrap() >= *id) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "shard {shard}'s offset never passed {id}: {o:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_offsets.await;
    assert_eq!(offsets.len() as u32, SHARDS, "{offsets:?}");

    // The metrics of the delivering node.
    let text = c
        .get(srv.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"mezzanine_plugin_deliveries_total{plugin="stream",outcome="delivered"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"mezzanine_plugin_delivery_seconds_bucket{plugin="stream""#),
        "{text}"
    );
}

/// A base URL for writers on other tasks.
struct Base(String);

impl Base {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_beyond_plugins_max_are_refused() {
    let urls = fresh_databases(1).await;
    let mut cfg = config();
    cfg.plugins_max = 2;
    let srv = TestServer::start(cfg, even_map(&urls, SHARDS)).await;
    register(&srv, "one", "http://127.0.0.1:9/rpc", &["a"]).await;
    register(&srv, "two", "http://127.0.0.1:9/rpc", &["a"]).await;
    let (s, v) = post_json(
        &client(),
        &srv.url("/v1/plugins"),
        &json!({"name": "three", "endpoint": "http://127.0.0.1:9/rpc", "subscribed_columns": ["a"]}),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("PLUGINS_MAX=2"),
        "{v}"
    );
}
