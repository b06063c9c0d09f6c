//! Found before the fixes: a silent cut, a stale activation meeting a new move, and the partition healing.

use super::*;

/// (e): within `DEAD_PEER_BOUND` + 5 s of the cut, A's mover says it lost the leadership,
/// and its paused cutover takes no step after the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_silently_stops_leading_within_the_dead_peer_bound() {
    let run = cut_in_cutover("after_freeze", Then::Finishes).await;
    let bound = DEAD_PEER_BOUND + STOP_MARGIN;
    let lost = run.a_lost.map(|t| signed(t, run.cut));
    assert!(
        lost.is_some_and(|s| s <= bound.as_secs_f64()),
        "A's mover said it lost the leadership at {lost:?} s after the cut, not within {bound:?}"
    );
    assert!(
        !run.a_stepped_after_pause,
        "A's cutover went on after its pause ended ({:.3} s after the cut)",
        signed(run.a_pause_end, run.cut)
    );
}

/// A is cut off with the source retired (its next step: activate the target). B resumes the
/// cutover; an operator aborts the move through B (db1 is `active` again, db3's copy dropped)
/// and moves the shard to db3 again through B. That new move prepares db3 and catches up,
/// round after round while writes keep coming (B pauses 2 s after each round, and its
/// `MOVE_MAX_PAUSE` of 0 lets no round with new rows end the catching up), so db3 holds an
/// `importing` copy with its unique constraint, as any move's target does for a while. Then
/// A's pause ends and A activates db3 with the epoch it chose before the cut: db1 is active,
/// the map names db1, and db3 is active too. On main the new move's next round finds db3
/// active, fails, and its undo refuses to drop an active copy ("left for an operator"), which
/// no fence ever demotes: two active copies for good, and no later move can prepare db3.
/// The operator then aborts the new move (if it is still running). Expected: A's stale
/// activation is refused, the new move is aborted, db3 keeps no copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_activation_meets_a_new_move_of_the_shard_and_makes_no_second_active_copy() {
    let tag = "stale-activation";
    let scene = Scene::start(
        tag,
        "after_retire",
        "after_freeze=120s,catching_up=2s",
        |c| c.move_max_pause = Duration::ZERO,
    )
    .await;
    let (b, id) = (&scene.nodes.b, scene.id);
    let probed = scene
        .write_through_b_within_the_bound(scene.abort_through_b_in_its_pause(id))
        .await;
    wait_job(b, id, LONG, |j| j["shards"][0]["state"] == "aborted").await;
    // The operator moves the shard again.
    let again = start_move(b, json!({"shards": SHARD.to_string(), "to": "db3"})).await;
    logs::wait_event(
        "the new move catches up",
        LONG,
        reached(&b.label, "catching_up"),
    )
    .await;
    let now = states_now(&scene.nodes.urls).await;
    eprintln!(
        "[{tag}] the new move {again} catches up at +{:.3}s: {}",
        scene.cut.elapsed().as_secs_f64(),
        show(&now)
    );
    assert!(
        Instant::now() < scene.a_pause_end,
        "[{tag}] the new move caught up only after A's pause ended: the scenario did not happen"
    );
    scene.a_stale_steps().await;
    eprintln!(
        "[{tag}] after A's stale steps: {}",
        show(&states_now(&scene.nodes.urls).await)
    );
    let (s, v) = post_json(
        &client(),
        &b.url(&format!("/admin/v1/moves/{again}/abort")),
        &json!({}),
    )
    .await;
    eprintln!(
        "[{tag}] abort of move {again} through B: {s} {}",
        v["state"]
    );
    let job = wait_job(b, again, LONG, |j| j["state"] != "running").await;
    eprintln!(
        "[{tag}] move {again} ended {}: {}",
        job["state"], job["shards"][0]["error"]
    );
    let (states, _nodes) = scene.finish("db1", &[probed]).await;
    assert_eq!(
        states[2],
        None,
        "[{tag}] the target kept a copy: {}",
        show(&states)
    );
}

// ---------------------------------------------------------------------------------------------
// The partition heals
// ---------------------------------------------------------------------------------------------

/// Once the partition heals, A follows B and serves the moved shard with the current map.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_the_partition_heals_a_follows_b_and_serves_with_the_current_map() {
    let run = cut_in_cutover("after_freeze", Then::Finishes).await;
    heal(run).await;
}
