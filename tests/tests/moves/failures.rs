//! Requests held during the cutover, and I6: a target that fails mid-copy.

use super::*;

// ---------------------------------------------------------------------------------------------
// 3. Requests held during the cutover
// ---------------------------------------------------------------------------------------------

/// The mover pauses 2 s with the source frozen. A write through node A (default hold bound)
/// waits and completes at the target after the switch; a write through node B, whose hold
/// bound is 500 ms, gets a 503 with Retry-After at that bound; the move completes anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_meeting_a_cutover_are_held_until_the_switch_or_their_bound() {
    let mut cfg = default_config();
    cfg.failpoints = "after_freeze=2s".into();
    let (a, urls) = cluster_with(cfg).await;
    let mut cfg = no_mover();
    cfg.move_hold_timeout = Duration::from_millis(500);
    let b = node(cfg, &urls).await;
    let c = client();
    let before = fill(&a, 1, 20).await;

    let id = start_move(&a, json!({"shards": "1", "to": "db3"})).await;
    wait_backend_state(&urls[0], 1, "frozen").await;
    let held_row = key_in_shard(1, SHARDS);
    let held = {
        let (c, url) = (c.clone(), a.url("/v1/cells"));
        tokio::spawn(async move {
            post_json(&c, &url, &cell(&held_row, "held", 1, json!({"held": true}))).await
        })
    };
    let bounded_row = key_in_shard(1, SHARDS);
    let bounded = cell(&bounded_row, "bounded", 1, json!({"bounded": true}));
    let (s, retry, problem, took) = timed_post(&c, &b.url("/v1/cells"), &bounded).await;
    assert_eq!(s, 503, "{problem}");
    assert!(retry.is_some(), "503 without Retry-After");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("MOVE_HOLD_TIMEOUT"),
        "{problem}"
    );
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(2500),
        "held {took:?} with a bound of 500ms"
    );

    let (s, stored) = held.await.unwrap();
    assert_eq!(s, 201, "{stored}");
    // Answered only once the shard was switched, and stored at the target only.
    let (_, job) = get_json(&c, &a.url(&format!("/admin/v1/moves/{id}"))).await;
    assert_eq!(
        job["state"], "switched",
        "answered before the switch: {job}"
    );
    assert!(job["shards"][0]["pause_ms"].is_number(), "{job}");
    assert!(stored["added_id"].as_i64().unwrap() > *added_ids(&before).iter().max().unwrap());
    assert!(holds_row(&urls[2], 1, &held_row).await);
    assert!(!holds_row(&urls[0], 1, &held_row).await);
    // The refused write was not stored; retried, it is stored at the target.
    assert!(!holds_row(&urls[0], 1, &bounded_row).await);
    assert!(!holds_row(&urls[2], 1, &bounded_row).await);
    let (s, v) = post_json(&c, &b.url("/v1/cells"), &bounded).await;
    assert_eq!(s, 201, "{v}");
    assert!(holds_row(&urls[2], 1, &bounded_row).await);
    assert_eq!(cells_in(&urls[2], 1).await, 22);
    assert_eq!(cells_in(&urls[0], 1).await, 20);
}

// ---------------------------------------------------------------------------------------------
// 4. I6: a target that fails mid-copy
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_that_dies_mid_copy_fails_the_move_cleanly_and_a_retry_succeeds() {
    let target = tokio::task::spawn_blocking(|| dedicated_pg(1).remove(0))
        .await
        .unwrap();
    let target_url = create_database(&target).await;
    let urls = fresh_databases(2).await;
    let srv = Arc::new(TestServer::start(default_config(), even_map(&urls, SHARDS)).await);
    let c = client();
    let (s, v) = post_json(
        &c,
        &srv.url("/admin/v1/backends"),
        &json!({"name": "db3", "url": target_url}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let shard = 1;
    let seeded = fill(&srv, shard, 3000).await;

    // Client traffic on the moving shard and another, checked throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (srv, stop) = (srv.clone(), stop.clone());
        tokio::spawn(async move {
            let c = client();
            let mut written: Vec<Value> = Vec::new();
            let mut i = 0i64;
            while !stop.load(Ordering::Acquire) {
                for s in [shard, 6] {
                    i += 1;
                    let row = key_in_shard(s, SHARDS);
                    let v = write_one(&c, &srv, &row, "traffic", i).await;
                    let (st, r) = get_json(&c, &srv.url(&format!("/v1/cells/{row}/traffic"))).await;
                    assert_eq!(st, 200, "{r}");
                    assert_eq!(r, v);
                    if s == shard {
                        written.push(v);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            written
        })
    };

    let id = start_move(
        &srv,
        json!({"shards": "1", "to": "db3", "max_rows_per_sec": 600}),
    )
    .await;
    wait_job(&srv, id, LONG, |j| {
        j["shards"][0]["state"] == "copying" && j["shards"][0]["rows_copied"].as_i64() >= Some(300)
    })
    .await;
    let mut target = tokio::task::spawn_blocking(move || {
        let mut t = target;
        t.stop().unwrap();
        t
    })
    .await
    .unwrap();
    let job = wait_job(&srv, id, LONG, |j| j["state"] != "running").await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["shards"][0]["error"].is_string(), "no error: {job}");
    eprintln!("failed move: {}", job["shards"][0]["error"]);
    // The source stayed authoritative.
    assert_eq!(
        shard_state_in(&urls[0], shard).await.as_deref(),
        Some("active")
    );
    assert_eq!(owner_of(&c, &srv, shard).await, "db1");
    assert!(!traffic.is_finished(), "client traffic failed");

    // The target comes back: a new move of the shard succeeds and verifies.
    target = tokio::task::spawn_blocking(move || {
        target.restart().unwrap();
        target
    })
    .await
    .unwrap();
    // As an operator would, wait until the node sees the target healthy again. (A node
    // notices a returning backend within 250 ms; a move switching to it sooner would meet
    // the node's "known down" fail-fast for the rest of that window.)
    eventually("the node sees db3 again", LONG, || async {
        get_json(&c, &srv.url("/v1/readyz")).await.0 == 200
    })
    .await;
    let id2 = start_move(&srv, json!({"shards": "1", "to": "db3"})).await;
    assert_ne!(id, id2);
    let job = wait_job(&srv, id2, LONG, |j| j["state"] != "running").await;
    assert_eq!(job["state"], "switched", "{job}");
    stop.store(true, Ordering::Release);
    let during = traffic.await.unwrap();
    assert_eq!(owner_of(&c, &srv, shard).await, "db3");
    let (s, report) = post_json(
        &c,
        &srv.url("/admin/v1/verify"),
        &json!({"shards": shard.to_string()}),
    )
    .await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    let cells = read_shard(&c, &srv, shard).await;
    assert_eq!(cells.len(), seeded.len() + during.len());
    assert_eq!(&cells[..seeded.len()], &seeded[..]);
    drop(srv);
    tokio::task::spawn_blocking(move || drop(target))
        .await
        .unwrap();
}
