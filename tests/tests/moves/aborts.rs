//! Abort in each phase before the switch, and revert.

use super::*;

// ---------------------------------------------------------------------------------------------
// 5. Abort in each phase before the switch
// ---------------------------------------------------------------------------------------------

/// After an abort: the job is `aborted`, the source serves the shard with all its cells, the
/// target holds no copy, and clients read and write the shard (at the source).
async fn assert_undone(srv: &TestServer, urls: &[String], shard: u32, cells: &[Value]) {
    let c = client();
    assert_eq!(
        shard_state_in(&urls[0], shard).await.as_deref(),
        Some("active")
    );
    assert_eq!(shard_state_in(&urls[2], shard).await, None);
    assert!(
        !table_exists(&urls[2], shard).await || cells_in(&urls[2], shard).await == 0,
        "the target kept a copy"
    );
    assert_eq!(cells_in(&urls[0], shard).await, cells.len() as i64);
    assert_eq!(owner_of(&c, srv, shard).await, "db1");
    assert_eq!(read_shard(&c, srv, shard).await, cells);
    let row = key_in_shard(shard, SHARDS);
    let v = write_one(&c, srv, &row, "after_abort", 1).await;
    assert!(holds_row(&urls[0], shard, &row).await);
    let (s, r) = get_json(&c, &srv.url(&format!("/v1/cells/{row}/after_abort"))).await;
    assert_eq!((s, r), (200, v));
}

async fn abort(c: &reqwest::Client, srv: &TestServer, id: i64) {
    let (s, v) = admin_post(c, srv, &format!("/admin/v1/moves/{id}/abort")).await;
    assert_eq!(s, 202, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_while_pending_and_after_the_switch() {
    let (srv, urls) = cluster().await;
    let c = client();
    let one = fill(&srv, 1, 300).await;
    let two = fill(&srv, 2, 20).await;
    let id = start_move(
        &srv,
        json!({"shards": "1-2", "to": "db3", "parallel": 1, "max_rows_per_sec": 100}),
    )
    .await;
    wait_job(&srv, id, LONG, |j| {
        j["shards"][0]["state"] == "copying" && j["shards"][1]["state"] == "pending"
    })
    .await;
    abort(&c, &srv, id).await;
    let job = wait_job(&srv, id, LONG, |j| j["state"] != "running").await;
    assert_eq!(job["state"], "aborted", "{job}");
    assert_eq!(job["shards"][1]["state"], "aborted", "{job}");
    assert_undone(&srv, &urls, 1, &one).await;
    assert_undone(&srv, &urls, 2, &two).await;

    // Once switched, a move cannot be aborted: it is reverted.
    let id = start_move(&srv, json!({"shards": "3", "to": "db3"})).await;
    wait_job_state(&srv, id, "switched", LONG).await;
    let (s, p) = admin_post(&c, &srv, &format!("/admin/v1/moves/{id}/abort")).await;
    assert_eq!(s, 409, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("revert"), "{p}");
    assert_eq!(owner_of(&c, &srv, 3).await, "db3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_while_copying() {
    let (srv, urls) = cluster().await;
    let c = client();
    let cells = fill(&srv, 1, 300).await;
    let id = start_move(
        &srv,
        json!({"shards": "1", "to": "db3", "max_rows_per_sec": 100}),
    )
    .await;
    wait_job(&srv, id, LONG, |j| {
        j["shards"][0]["state"] == "copying" && j["shards"][0]["rows_copied"].as_i64() >= Some(20)
    })
    .await;
    assert!(cells_in(&urls[2], 1).await > 0, "nothing copied yet");
    abort(&c, &srv, id).await;
    let job = wait_job(&srv, id, LONG, |j| j["state"] != "running").await;
    assert_eq!(job["state"], "aborted", "{job}");
    assert_undone(&srv, &urls, 1, &cells).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_while_catching_up() {
    let mut cfg = default_config();
    cfg.failpoints = "catching_up=3s".into();
    let (srv, urls) = cluster_with(cfg).await;
    let c = client();
    let cells = fill(&srv, 1, 30).await;
    let id = start_move(&srv, json!({"shards": "1", "to": "db3"})).await;
    wait_shard_state(&srv, id, 1, "catching_up", LONG).await;
    abort(&c, &srv, id).await;
    let job = wait_job(&srv, id, LONG, |j| j["state"] != "running").await;
    assert_eq!(job["state"], "aborted", "{job}");
    assert_undone(&srv, &urls, 1, &cells).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_during_the_cutover() {
    let mut cfg = default_config();
    cfg.failpoints = "after_freeze=5s".into();
    let (srv, urls) = cluster_with(cfg).await;
    let srv = Arc::new(srv);
    let c = client();
    let mut cells = fill(&srv, 1, 30).await;
    let id = start_move(&srv, json!({"shards": "1", "to": "db3"})).await;
    wait_shard_state(&srv, id, 1, "cutover", LONG).await;
    wait_backend_state(&urls[0], 1, "frozen").await;
    // A write meeting the frozen shard is held, and completes at the source after the abort.
    let row = key_in_shard(1, SHARDS);
    let held = {
        let srv = srv.clone();
        tokio::spawn(async move { write_one(&client(), &srv, &row, "held", 1).await })
    };
    abort(&c, &srv, id).await;
    let job = wait_job(&srv, id, LONG, |j| j["state"] != "running").await;
    assert_eq!(job["state"], "aborted", "{job}");
    cells.push(held.await.unwrap());
    assert!(holds_row(&urls[0], 1, &row).await);
    assert_undone(&srv, &urls, 1, &cells).await;
}

// ---------------------------------------------------------------------------------------------
// 6. Revert
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revert_moves_a_switched_shard_back_with_everything_written_meanwhile() {
    let (srv, urls) = cluster().await;
    let c = client();
    let shard = 1;
    let mut cells = fill(&srv, shard, 30).await;
    let id = start_move(&srv, json!({"shards": "1", "to": "db3"})).await;
    wait_job_state(&srv, id, "switched", LONG).await;
    // Written while on the target.
    for i in 0..10 {
        cells.push(write_one(&c, &srv, &key_in_shard(shard, SHARDS), "on_db3", i).await);
    }
    assert_eq!(cells_in(&urls[2], shard).await, 40);

    let (s, back) = admin_post(&c, &srv, &format!("/admin/v1/moves/{id}/revert")).await;
    assert_eq!(s, 202, "{back}");
    let back_id = back["id"].as_i64().unwrap();
    assert_ne!(back_id, id);
    assert_eq!(back["reverts"], id, "{back}");
    assert_eq!(back["shards"][0]["from"], "db3", "{back}");
    assert_eq!(back["shards"][0]["to"], "db1", "{back}");
    wait_job_state(&srv, back_id, "switched", LONG).await;
    let (_, job) = get_json(&c, &srv.url(&format!("/admin/v1/moves/{id}"))).await;
    assert_eq!(job["state"], "reverted", "{job}");
    assert_eq!(job["reverted_by"], back_id, "{job}");
    // A second revert of the same job is refused.
    let (s, p) = admin_post(&c, &srv, &format!("/admin/v1/moves/{id}/revert")).await;
    assert_eq!(s, 409, "{p}");

    assert_eq!(owner_of(&c, &srv, shard).await, "db1");
    assert_eq!(
        shard_state_in(&urls[0], shard).await.as_deref(),
        Some("active")
    );
    assert_eq!(
        shard_state_in(&urls[2], shard).await.as_deref(),
        Some("retired")
    );
    assert_eq!(cells_in(&urls[0], shard).await, 40);
    assert_eq!(read_shard(&c, &srv, shard).await, cells);
    let next = write_one(&c, &srv, &key_in_shard(shard, SHARDS), "back", 1).await;
    assert!(next["added_id"].as_i64().unwrap() > *added_ids(&cells).iter().max().unwrap());
    cells.push(next);
    assert_eq!(read_shard(&c, &srv, shard).await, cells);
}
