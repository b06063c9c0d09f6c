//! `move|rebalance abort|complete`: what they print is the state after the request, never the
//! state before it as if nothing happened; with `--wait`, the end the request led to.

use super::*;

fn requested(mut job: Value, request: &str) -> Value {
    job["requested"] = json!(request);
    job
}

/// A job whose shard 8 switched and shard 9 is `state9`.
fn partly(id: u64, job_state: &str, state9: &str) -> Value {
    let mut j = job(id, job_state, 5000);
    j["shards"][0]["state"] = json!("switched");
    j["shards"][1]["state"] = json!(state9);
    j
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_and_complete_say_the_request_is_taken() {
    let (fake, url) = fake().await;
    let aborting = requested(job(7, "running", 1200), "abort");
    fake.on("POST", "/admin/v1/moves/7/abort", 202, aborting.clone());
    fake.on(
        "POST",
        "/admin/v1/moves/8/complete",
        202,
        requested(partly(8, "switched", "switched"), "complete"),
    );
    let out = run(&url, &["move", "abort", "7"]).await;
    out.ok()
        .stdout_has("move 7: abort requested; the mover stops the shards not switched yet")
        .stdout_has("(until then the move is running)")
        .stdout_has("follow it with: mezzanine move status 7 --wait");
    assert!(!out.stdout.contains("move 7: running"), "{}", out.stdout);
    run(&url, &["move", "complete", "8"])
        .await
        .ok()
        .stdout_has("move 8: complete requested; the mover drops the old source copies")
        .stdout_has("(until then the move is switched)");
    // --json: the answer as it came, with its `requested`.
    let out = run(&url, &["move", "abort", "7", "--json"]).await;
    out.ok();
    assert_eq!(out.stdout_json(), aborting);
    // The mover was quicker: the answer shows the state the request led to.
    let (fake, url) = self::fake().await;
    fake.on("POST", "/admin/v1/moves/7/abort", 202, job(7, "aborted", 0));
    run(&url, &["move", "abort", "7"])
        .await
        .ok()
        .stdout_has("move 7: aborted, shards 8-9");
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_wait_follows_to_the_end_and_an_aborted_job_is_a_success() {
    let (fake, url) = fake().await;
    fake.on(
        "POST",
        "/admin/v1/moves/7/abort",
        202,
        requested(job(7, "running", 1200), "abort"),
    );
    fake.on(
        "GET",
        "/admin/v1/moves/7",
        200,
        requested(job(7, "running", 1200), "abort"),
    )
    .on("GET", "/admin/v1/moves/7", 200, job(7, "aborted", 0));
    let out = run(&url, &["move", "abort", "7", "--wait"]).await;
    out.ok().stdout_has("move 7: aborted, shards 8-9");
    assert_eq!(out.stdout.matches("move 7:").count(), 1, "{}", out.stdout);
    let calls: Vec<_> = fake
        .seen()
        .iter()
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect();
    assert_eq!(calls.len(), 3, "{calls:?}");

    // Some shards had switched: they stay, and the output says how to move them back.
    let (fake, url) = self::fake().await;
    fake.on(
        "POST",
        "/admin/v1/moves/7/abort",
        202,
        requested(partly(7, "running", "copying"), "abort"),
    );
    fake.on(
        "GET",
        "/admin/v1/moves/7",
        200,
        partly(7, "switched", "aborted"),
    );
    run(&url, &["move", "abort", "7", "--wait"])
        .await
        .ok()
        .stdout_has("move 7: switched")
        .stdout_has("1 of its shards had switched before the abort")
        .stdout_has("mezzanine move revert 7 moves them back");

    // A job that failed meanwhile: exit code 1.
    let (fake, url) = self::fake().await;
    fake.on(
        "POST",
        "/admin/v1/moves/7/abort",
        202,
        requested(job(7, "running", 0), "abort"),
    );
    let mut failed = job(7, "failed", 0);
    failed["error"] = json!("target db3 is down");
    fake.on("GET", "/admin/v1/moves/7", 200, failed);
    let out = run(&url, &["move", "abort", "7", "--wait"]).await;
    out.failed();
    assert!(
        out.stderr
            .contains("error: move 7 failed: target db3 is down"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn complete_wait_ends_when_the_sources_are_dropped() {
    let (fake, url) = fake().await;
    let pending = requested(partly(8, "switched", "switched"), "complete");
    fake.on("POST", "/admin/v1/moves/8/complete", 202, pending.clone());
    fake.on("GET", "/admin/v1/moves/8", 200, pending.clone())
        .on("GET", "/admin/v1/moves/8", 200, job(8, "completed", 5000));
    let out = run(&url, &["move", "complete", "8", "--wait"]).await;
    out.ok().stdout_has("move 8: completed");
    assert_eq!(fake.seen().len(), 3);
    // `status --wait` also waits for a pending request, not only for shards in flight.
    let (fake, url) = self::fake().await;
    fake.on("GET", "/admin/v1/moves/8", 200, pending.clone())
        .on("GET", "/admin/v1/moves/8", 200, job(8, "completed", 5000));
    run(&url, &["move", "status", "8", "--wait"])
        .await
        .ok()
        .stdout_has("move 8: completed");
    assert_eq!(fake.seen().len(), 2);
    // Ending otherwise than completed is an error.
    let (fake, url) = self::fake().await;
    fake.on("POST", "/admin/v1/moves/8/complete", 202, pending);
    fake.on(
        "GET",
        "/admin/v1/moves/8",
        200,
        partly(8, "reverted", "switched"),
    );
    let out = run(&url, &["move", "complete", "8", "--wait"]).await;
    out.failed();
    assert!(
        out.stderr
            .contains("error: move 8 is reverted, not completed"),
        "{}",
        out.stderr
    );
}

fn rebalance(state: &str, request: Option<&str>) -> Value {
    json!({"id": 3, "state": state, "strategy": "count", "requested": request,
           "progress": {"shards": 2, "switched": 0, "rows_copied": 0, "rows_total": 100},
           "jobs": [{"id": 7, "state": state, "requested": request, "to": "db3",
                     "shards_spec": "8-9", "shards": [
                {"shard": 8, "state": if state == "running" { "copying" } else { state }},
                {"shard": 9, "state": if state == "running" { "pending" } else { state }}]}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn rebalance_abort_and_complete_too() {
    let (fake, url) = fake().await;
    fake.on(
        "POST",
        "/admin/v1/rebalance/3/abort",
        202,
        rebalance("running", Some("abort")),
    );
    run(&url, &["rebalance", "abort", "3"])
        .await
        .ok()
        .stdout_has("rebalance 3: abort requested; the mover stops the shards not switched yet")
        .stdout_has("follow it with: mezzanine rebalance status 3 --wait");
    fake.on(
        "GET",
        "/admin/v1/rebalance/3",
        200,
        rebalance("running", Some("abort")),
    )
    .on(
        "GET",
        "/admin/v1/rebalance/3",
        200,
        rebalance("aborted", None),
    );
    run(&url, &["rebalance", "abort", "3", "--wait"])
        .await
        .ok()
        .stdout_has("rebalance 3 (by count): aborted");
    let (fake, url) = self::fake().await;
    fake.on(
        "POST",
        "/admin/v1/rebalance/3/complete",
        202,
        rebalance("switched", Some("complete")),
    );
    run(&url, &["rebalance", "complete", "3"])
        .await
        .ok()
        .stdout_has("rebalance 3: complete requested;");
    // The one-line state shows a pending request too.
    fake.on(
        "GET",
        "/admin/v1/rebalance",
        200,
        json!({"rebalances": [rebalance("switched", Some("complete"))]}),
    );
    run(&url, &["rebalance", "list"])
        .await
        .ok()
        .stdout_has("rebalance 3 (by count): switched (complete requested)");
}
