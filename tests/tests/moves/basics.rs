//! The first move, and invariant I2 (a node with a stale map).

use super::*;

// ---------------------------------------------------------------------------------------------
// The first move: a shard moves with its cells, complete drops the source
// ---------------------------------------------------------------------------------------------

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
    let page = read_shard(&c, &srv, shard).await;
    assert_eq!(
        added_ids(&page),
        written.keys().copied().collect::<Vec<_>>()
    );
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
    assert_eq!(owner_of(&c, &srv, shard).await, "db3");
    // complete drops the source.
    let (s, _) = admin_post(&c, &srv, &format!("/admin/v1/moves/{id}/complete")).await;
    assert_eq!(s, 202);
    wait_job_state(&srv, id, "completed", Duration::from_secs(30)).await;
    assert_eq!(shard_state_in(&urls[0], shard).await, None);
    assert!(!table_exists(&urls[0], shard).await);
}

// ---------------------------------------------------------------------------------------------
// 1. I2: a node with a stale map
// ---------------------------------------------------------------------------------------------

/// Node B ignores every catalog notification and poll (`hold_refresh`), so its map is stale
/// after each move made through node A. Its requests still never touch the moved shard's old
/// copy: the fence in the database answers "moved", B re-reads the map and retries at the new
/// place, and the client sees a plain 2xx answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_node_never_writes_to_or_reads_from_the_old_copy() {
    let (a, urls) = cluster().await;
    let b = node(no_mover(), &urls).await;
    b.state.hold_refresh.store(true, Ordering::SeqCst);
    let c = client();

    // Reads. A column with version 1 on db1; after the move A writes version 2 at db3. B's
    // map still says db1, whose retired copy has only version 1: B must answer version 2.
    let row = key_in_shard(1, SHARDS);
    write_one(&c, &a, &row, "profile", 1).await;
    let stale = b.state.map_version();
    let id = start_move(&a, json!({"shards": "1", "to": "db3"})).await;
    wait_job_state(&a, id, "switched", LONG).await;
    assert_eq!(b.state.map_version(), stale, "node B's map must be stale");
    let v2 = write_one(&c, &a, &row, "profile", 2).await;
    assert!(holds_row(&urls[2], 1, &row).await);
    let (s, latest) = get_json(&c, &b.url(&format!("/v1/cells/{row}/profile"))).await;
    assert_eq!(s, 200, "{latest}");
    assert_eq!(latest, v2, "a stale node read the old copy");
    assert!(b.state.map_version() > stale, "B re-read the map on demand");
    // Its other reads are current too (one of each kind).
    let (s, exact) = get_json(&c, &b.url(&format!("/v1/cells/{row}/profile/2"))).await;
    assert_eq!((s, &exact), (200, &v2));
    let (s, whole) = get_json(&c, &b.url(&format!("/v1/cells/{row}"))).await;
    assert_eq!(s, 200, "{whole}");
    assert_eq!(whole["cells"], json!([v2]));

    // Writes. Shard 2 moves while B is stale again; B's write must land on db3 only.
    let before = fill(&a, 2, 10).await;
    let stale = b.state.map_version();
    let id = start_move(&a, json!({"shards": "2", "to": "db3"})).await;
    wait_job_state(&a, id, "switched", LONG).await;
    assert_eq!(b.state.map_version(), stale, "node B's map must be stale");
    let row = key_in_shard(2, SHARDS);
    let written = write_one(&c, &b, &row, "w", 1).await;
    assert!(
        written["added_id"].as_i64().unwrap() > *added_ids(&before).iter().max().unwrap(),
        "{written}"
    );
    assert!(
        holds_row(&urls[2], 2, &row).await,
        "the write is not on db3"
    );
    assert!(
        !holds_row(&urls[0], 2, &row).await,
        "a stale node wrote to the retired source"
    );
    assert_eq!(cells_in(&urls[0], 2).await, 10);
    assert_eq!(cells_in(&urls[2], 2).await, 11);

    // Change stream. Shard 3 moves, A writes after the move, B (stale) pages the shard.
    let mut expected = fill(&a, 3, 5).await;
    let stale = b.state.map_version();
    let id = start_move(&a, json!({"shards": "3", "to": "db3"})).await;
    wait_job_state(&a, id, "switched", LONG).await;
    assert_eq!(b.state.map_version(), stale, "node B's map must be stale");
    expected.push(write_one(&c, &a, &key_in_shard(3, SHARDS), "late", 1).await);
    let seen = read_shard(&c, &b, 3).await;
    assert_eq!(seen, expected, "a stale node paged the old copy");
}
