//! What operators read from the real server's admin API, end to end: a job's `updated_at`
//! follows its changes of state, the answers of abort and complete show the request taken,
//! and the exported map keeps the backends that own nothing.
//!
//! The cluster: db1 holds shards 0-3, db2 shards 4-7, db3 is a registered empty backend.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mezzanine_core::ShardMap;
use mezzanine_e2e::*;
use serde_json::{json, Value};

const SHARDS: u32 = 8;
/// Bound of every wait for a move (generous: a loaded 2-core machine).
const LONG: Duration = Duration::from_secs(60);

async fn cluster() -> (TestServer, Vec<String>) {
    cluster_with_spare(default_config(), SHARDS).await
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {v}"))
}

/// Writes `n` cells to `shard`.
async fn fill(srv: &TestServer, shard: u32, n: usize) {
    let c = client();
    for i in 0..n {
        let k = key_in_shard(shard, SHARDS);
        let (s, v) = post_json(
            &c,
            &srv.url("/v1/cells"),
            &cell(&k, "c", i as i64, json!({"i": i})),
        )
        .await;
        assert_eq!(s, 201, "{v}");
    }
}

/// A job's `updated_at` moves with its state: the switch of its shard (the mover's doing, no
/// operator's request) shows, and so does the cleaning that `complete` asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jobs_updated_at_follows_its_changes_of_state() {
    let (srv, _urls) = cluster().await;
    fill(&srv, 1, 20).await;
    let (s, created) = post_json(
        &client(),
        &srv.url("/admin/v1/moves"),
        &json!({"shards": "1", "to": "db3"}),
    )
    .await;
    assert_eq!(s, 202, "{created}");
    let id = created["id"].as_i64().unwrap();
    // The answer is the job as read after its creation: the mover may have started it by then
    // (a change of state), so its updated_at is at least its created_at.
    assert!(
        time(&created["updated_at"]) >= time(&created["created_at"]),
        "{created}"
    );

    let switched = wait_job_state(&srv, id, "switched", LONG).await;
    let switched_at = time(&switched["shards"][0]["switched_at"]);
    let updated = time(&switched["updated_at"]);
    assert!(
        updated > time(&created["updated_at"]),
        "the switch did not change updated_at: {switched}"
    );
    assert!(
        updated >= switched_at,
        "updated_at {updated} is before the switch at {switched_at}: {switched}"
    );

    let (s, answer) = post_json(
        &client(),
        &srv.url(&format!("/admin/v1/moves/{id}/complete")),
        &json!(null),
    )
    .await;
    assert_eq!(s, 202, "{answer}");
    assert!(
        answer["requested"] == "complete" || answer["state"] == "completed",
        "the answer does not show the request: {answer}"
    );
    let completed = wait_job(&srv, id, LONG, |j| {
        j["state"] == "completed" && j["requested"].is_null()
    })
    .await;
    assert!(
        time(&completed["updated_at"]) > updated,
        "the cleaning did not change updated_at: {completed}"
    );
}

/// `shards export` keeps a backend that owns nothing (shards.json's ranges cannot name it) in
/// `spare_backends`, and what it prints loads back: a new catalog seeded from it has the same
/// owners and the empty backend too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_export_keeps_empty_backends_and_loads_back() {
    let (srv, urls) = cluster().await;
    let c = client();
    let (s, file) = get_json(&c, &srv.url("/admin/v1/shards/export")).await;
    assert_eq!(s, 200, "{file}");
    assert_eq!(
        file["spare_backends"],
        json!([{"name": "db3", "database_url": urls[2]}]),
        "{file}"
    );
    let map = ShardMap::parse(&file.to_string(), SHARDS)
        .unwrap_or_else(|e| panic!("the export does not load: {e}\n{file}"));
    let names: Vec<&str> = map.backends().iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["db1", "db2", "db3"]);

    // A node started from the export finds the same catalog (its backends record it; a new
    // catalog over them would be a second cluster, refused: tests/cluster.rs), with db3
    // owning nothing.
    let other = TestServer::start(default_config(), map).await;
    let (s, list) = get_json(&c, &other.url("/admin/v1/backends")).await;
    assert_eq!(s, 200, "{list}");
    let shards: Vec<(String, u64)> = list["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_owned(),
                b["shards"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shards,
        [("db1".into(), 4), ("db2".into(), 4), ("db3".into(), 0)]
    );
    let (_, again) = get_json(&c, &other.url("/admin/v1/shards/export")).await;
    assert_eq!(again, file);
}

/// The answer to an abort shows the request taken (`requested`, or the state it led to); the
/// request is cleared once the mover has carried it out, also when it stopped every shard
/// (the job then has nothing in flight or switched left for the mover to look at).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abort_is_shown_pending_then_cleared() {
    let (srv, _urls) = cluster().await;
    fill(&srv, 1, 50).await;
    fill(&srv, 2, 5).await;
    let (s, created) = post_json(
        &client(),
        &srv.url("/admin/v1/moves"),
        &json!({"shards": "1-2", "to": "db3", "parallel": 1, "max_rows_per_sec": 1}),
    )
    .await;
    assert_eq!(s, 202, "{created}");
    let id = created["id"].as_i64().unwrap();
    wait_shard_state(&srv, id, 1, "copying", LONG).await;
    let (s, answer) = post_json(
        &client(),
        &srv.url(&format!("/admin/v1/moves/{id}/abort")),
        &json!(null),
    )
    .await;
    assert_eq!(s, 202, "{answer}");
    assert!(
        answer["requested"] == "abort" || answer["state"] == "aborted",
        "the answer does not show the abort: {answer}"
    );
    let job = wait_job(&srv, id, LONG, |j| {
        j["state"] != "running" && j["requested"].is_null()
    })
    .await;
    assert_eq!(job["state"], "aborted", "{job}");
}
