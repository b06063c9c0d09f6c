//! The control plane's bounds and checks (issue 15), end to end against real PostgreSQL
//! servers: a stale node meeting a dropped source, 5xx answers that keep internals to the
//! log, held requests bounded in bytes, state changes that changed nothing, aborts that leave
//! no table behind, and the address a node reports.
//!
//! The clusters: db1 holds shards 0-3, db2 shards 4-7, db3 is a registered empty backend.
//! Node A leads the mover; other nodes (`--no-mover`) share the catalog.

use std::sync::atomic::Ordering;
use std::time::Duration;

use mezzanine_e2e::*;
use mezzanine_server::ServeConfig;
use serde_json::{json, Value};
use uuid::Uuid;

const SHARDS: u32 = 8;
/// Bound of every wait for a move (generous: a loaded 2-core machine).
const LONG: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Two backends with the shards, plus a spare registered as an empty backend (db3); node A
/// runs with `config`.
async fn cluster_with(config: ServeConfig) -> (TestServer, Vec<String>) {
    cluster_with_spare(config, SHARDS).await
}

/// Another node of the same cluster (same seed map, so the same catalog).
async fn node(config: ServeConfig, urls: &[String]) -> TestServer {
    TestServer::start(config, even_map(&urls[..2], SHARDS)).await
}

fn no_mover() -> ServeConfig {
    let mut c = default_config();
    c.no_mover = true;
    c
}

/// A node whose map stays stale: it ignores every catalog notification and poll (on-demand
/// reloads, asked for by a request that meets a moved shard, still happen).
async fn stale_node(urls: &[String]) -> TestServer {
    let n = node(no_mover(), urls).await;
    n.state.hold_refresh.store(true, Ordering::SeqCst);
    n
}

/// Whether the shard's cells table exists in the database at `url`.
async fn table_exists(url: &str, shard: u32) -> bool {
    let c = connect(url).await;
    let rows = c
        .query(
            &format!("SELECT to_regclass('cells_{shard:04}') IS NOT NULL"),
            &[],
        )
        .await
        .unwrap();
    rows[0].get(0)
}

/// Whether the database at `url` holds a cell of `row` in the shard's table.
async fn holds_row(url: &str, shard: u32, row: &Uuid) -> bool {
    let c = connect(url).await;
    match c
        .query(
            &format!("SELECT 1 FROM cells_{shard:04} WHERE row_key = $1"),
            &[row],
        )
        .await
    {
        Ok(rows) => !rows.is_empty(),
        Err(_) => false,
    }
}

/// Polls `check` until it holds, panicking with `what` after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the state row of `shard` in the database at `url` says `state`.
async fn wait_backend_state(url: &str, shard: u32, state: &str) {
    eventually(&format!("shard {shard} {state}"), LONG, || async {
        shard_state_in(url, shard).await.as_deref() == Some(state)
    })
    .await;
}

async fn admin_post(c: &reqwest::Client, srv: &TestServer, path: &str) -> (u16, Value) {
    post_json(c, &srv.url(path), &json!({})).await
}

/// Status, `X-Request-ID` and parsed body of a request.
async fn with_request_id(req: reqwest::RequestBuilder) -> (u16, String, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, id, resp.json().await.unwrap_or(Value::Null))
}

// ---------------------------------------------------------------------------------------------
// 1. A stale node meeting a dropped source
// ---------------------------------------------------------------------------------------------

/// Shard 1 moves to db3 and the move is completed, which drops db1's copy (its table and its
/// state row) at once, as drains do. Nodes B, C and D started before the move and never
/// refresh their maps on their own, so each still sends shard 1 to db1, where there is no
/// table any more: each must re-read the map and serve the request at db3 (a read of every
/// kind, a single write, a batch), never answer an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_node_meeting_a_dropped_source_is_served_at_the_owner() {
    let (a, urls) = cluster_with(default_config()).await;
    let (b, c_node, d) = (
        stale_node(&urls).await,
        stale_node(&urls).await,
        stale_node(&urls).await,
    );
    let c = client();
    let row = key_in_shard(1, SHARDS);
    let v1 = write_one(&c, &a, &row, "profile", 1).await;
    let stale = b.state.map_version();

    let id = start_move(&a, json!({"shards": "1", "to": "db3"})).await;
    wait_job_state(&a, id, "switched", LONG).await;
    let (s, v) = admin_post(&c, &a, &format!("/admin/v1/moves/{id}/complete")).await;
    assert_eq!(s, 202, "{v}");
    wait_job_state(&a, id, "completed", LONG).await;
    assert!(
        !table_exists(&urls[0], 1).await,
        "the source was not dropped"
    );
    assert_eq!(shard_state_in(&urls[0], 1).await, None);
    for n in [&b, &c_node, &d] {
        assert_eq!(n.state.map_version(), stale, "a node's map must be stale");
    }
    let v2 = write_one(&c, &a, &row, "profile", 2).await;

    // Reads through B: every kind.
    let (s, latest) = get_json(&c, &b.url(&format!("/v1/cells/{row}/profile"))).await;
    assert_eq!((s, &latest), (200, &v2), "{latest}");
    assert!(b.state.map_version() > stale, "B re-read the map on demand");
    let (s, exact) = get_json(&c, &b.url(&format!("/v1/cells/{row}/profile/1"))).await;
    assert_eq!((s, &exact), (200, &v1), "{exact}");
    let (s, whole) = get_json(&c, &b.url(&format!("/v1/cells/{row}"))).await;
    assert_eq!(s, 200, "{whole}");
    assert_eq!(whole["cells"], json!([v2]));
    assert_eq!(read_shard(&c, &b, 1).await, vec![v1.clone(), v2.clone()]);

    // A single write through C: stored at db3.
    let row_c = key_in_shard(1, SHARDS);
    let (s, written) = post_json(
        &c,
        &c_node.url("/v1/cells"),
        &cell(&row_c, "w", 1, json!({"by": "C"})),
    )
    .await;
    assert_eq!(s, 201, "{written}");
    assert!(
        holds_row(&urls[2], 1, &row_c).await,
        "the write is not on db3"
    );

    // A batch through D: a cell of the dropped shard, and one of each other backend's shard
    // (shard 2 stays on db1, shard 5 on db2), all stored.
    let cells: Vec<Value> = [1u32, 2, 5]
        .iter()
        .map(|&shard| {
            cell(
                &key_in_shard(shard, SHARDS),
                "batch",
                1,
                json!({"shard": shard}),
            )
        })
        .collect();
    let (s, v) = post_json(&c, &d.url("/v1/cells/batch"), &json!({ "cells": cells })).await;
    assert_eq!(s, 200, "{v}");
    for r in v["results"].as_array().unwrap() {
        assert_eq!(r["status"], 201, "{v}");
    }
    assert_eq!(read_shard(&c, &a, 1).await.len(), 4);
}

/// A database fault on a client request (here a column renamed behind mezzanine's back) is a
/// 500 whose detail names the request id and nothing of PostgreSQL's message or SQL; a batch
/// reports it the same way for each cell.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_fault_is_a_generic_500_with_the_request_id() {
    let (a, urls) = cluster_with(default_config()).await;
    let c = client();
    let row = key_in_shard(5, SHARDS);
    write_one(&c, &a, &row, "c", 1).await;
    sql(
        &urls[1],
        "ALTER TABLE cells_0005 RENAME COLUMN body TO body_renamed",
    )
    .await;
    let leaks = |detail: &str| {
        [
            "body",
            "cells_0005",
            "does not exist",
            "column",
            "SELECT",
            "db2",
        ]
        .iter()
        .find(|w| detail.contains(*w))
        .map(|w| w.to_string())
    };

    let (s, id, p) = with_request_id(c.get(a.url(&format!("/v1/cells/{row}/c")))).await;
    assert_eq!(s, 500, "{p}");
    let detail = p["detail"].as_str().unwrap_or("");
    assert_eq!(
        leaks(detail),
        None,
        "the answer leaks an internal message: {p}"
    );
    assert!(!id.is_empty() && detail.contains(&id), "no request id: {p}");

    let (s, id, p) = with_request_id(
        c.post(a.url("/v1/cells"))
            .header("x-request-id", "my-request-7")
            .json(&cell(&row, "c", 2, json!({}))),
    )
    .await;
    assert_eq!((s, id.as_str()), (500, "my-request-7"), "{p}");
    let detail = p["detail"].as_str().unwrap_or("");
    assert_eq!(
        leaks(detail),
        None,
        "the answer leaks an internal message: {p}"
    );
    assert!(detail.contains("my-request-7"), "{p}");

    let (s, v) = post_json(
        &c,
        &a.url("/v1/cells/batch"),
        &json!({"cells": [cell(&row, "c", 3, json!({}))]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let r = &v["results"][0];
    assert_eq!(r["status"], 500, "{v}");
    let detail = r["error"]["detail"].as_str().unwrap_or("");
    assert_eq!(
        leaks(detail),
        None,
        "the answer leaks an internal message: {v}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Held requests are bounded in bytes
// ---------------------------------------------------------------------------------------------

/// A write of about `size` bytes to a new row of `shard`.
fn padded(shard: u32, size: usize) -> Value {
    cell(
        &key_in_shard(shard, SHARDS),
        "padded",
        1,
        json!({"pad": "x".repeat(size.saturating_sub(110))}),
    )
}

/// Shard 1 is frozen on db1 (as in a cutover) and `MOVE_HOLD_MAX_BYTES` is 600. A write of
/// ~450 bytes is held; while it is, another of ~450 bytes, and a batch for the shard, get a
/// 503 with Retry-After at once (naming the bound), as does a write that alone exceeds it;
/// writes to other shards go on. Once the shard is active again the held write is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_requests_are_bounded_in_bytes() {
    let mut cfg = no_mover();
    cfg.move_hold_max_bytes = 600;
    // Under the test client's timeout: without the byte bound, a write would be held this long.
    cfg.move_hold_timeout = Duration::from_secs(20);
    let urls = fresh_databases(2).await;
    let a = TestServer::start(cfg, even_map(&urls, SHARDS)).await;
    let c = client();
    sql(
        &urls[0],
        "UPDATE mezzanine_shard_state SET state = 'frozen' WHERE shard = 1",
    )
    .await;

    let first = padded(1, 450);
    let first_size = serde_json::to_vec(&first).unwrap().len();
    assert!((400..=600).contains(&first_size), "{first_size}");
    let held = {
        let (c, url, body) = (c.clone(), a.url("/v1/cells"), first.clone());
        tokio::spawn(async move { post_json(&c, &url, &body).await })
    };
    let deadline = std::time::Instant::now() + LONG;
    while a.state.held_now().0 != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the write is not held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let refused = |what: &str, s: u16, retry: &Option<String>, p: &Value| {
        assert_eq!(s, 503, "{what}: {p}");
        assert!(retry.is_some(), "{what}: 503 without Retry-After");
        assert!(
            p["detail"]
                .as_str()
                .unwrap_or("")
                .contains("MOVE_HOLD_MAX_BYTES=600"),
            "{what}: {p}"
        );
    };
    let (s, retry, p, _) = timed(c.post(a.url("/v1/cells")).json(&padded(1, 450))).await;
    refused("a second write", s, &retry, &p);
    let (s, retry, p, _) = timed(c.post(a.url("/v1/cells")).json(&padded(1, 700))).await;
    refused("a write over the bound", s, &retry, &p);
    let (s, v) = post_json(
        &c,
        &a.url("/v1/cells/batch"),
        &json!({"cells": [padded(1, 300), padded(1, 300)]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    for r in v["results"].as_array().unwrap() {
        assert_eq!(r["status"], 503, "{v}");
        assert!(
            r["error"]["detail"]
                .as_str()
                .unwrap_or("")
                .contains("MOVE_HOLD_MAX_BYTES=600"),
            "{v}"
        );
    }
    assert!(!held.is_finished(), "the held write was answered");
    assert_eq!(
        a.state.held_now(),
        (1, first_size),
        "(requests, bytes) held"
    );
    let (s, v) = post_json(&c, &a.url("/v1/cells"), &padded(5, 450)).await;
    assert_eq!(s, 201, "another shard's write: {v}");

    sql(
        &urls[0],
        "UPDATE mezzanine_shard_state SET state = 'active' WHERE shard = 1",
    )
    .await;
    let (s, v) = held.await.unwrap();
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["body"], first["body"]);
    assert_eq!(a.state.held_now(), (0, 0));
    let (s, v) = post_json(&c, &a.url("/v1/cells"), &padded(1, 450)).await;
    assert_eq!(s, 201, "{v}");
}

// ---------------------------------------------------------------------------------------------
// 3. A state change that changed nothing is an error
// ---------------------------------------------------------------------------------------------

/// While shard 1's cutover is paused with the source frozen, someone gives the shard to db2
/// in the catalog, behind the mover's back. The switch must not pretend it switched: the
/// shard's move fails, saying what it expected and found, and the map keeps what was found.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_switch_whose_map_was_changed_behind_the_movers_back_fails() {
    let mut cfg = default_config();
    cfg.failpoints = "after_freeze=3s".into();
    let (a, urls) = cluster_with(cfg).await;
    write_one(&client(), &a, &key_in_shard(1, SHARDS), "c", 1).await;
    let id = start_move(&a, json!({"shards": "1", "to": "db3"})).await;
    wait_backend_state(&urls[0], 1, "frozen").await;
    sql(
        &urls[0],
        "UPDATE mezzanine.shards SET backend = 'db2' WHERE shard = 1",
    )
    .await;
    let job = wait_job(&a, id, LONG, |j| j["state"] != "running").await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["shards"][0]["error"].as_str().unwrap_or("");
    assert!(
        error.contains("expected the map to name db1 (or db3)")
            && error.contains("found the map naming db2"),
        "{job}"
    );
    assert_eq!(
        catalog_owner(&urls[0], 1).await,
        "db2",
        "the mover changed the map"
    );
}

/// While shard 1's cutover is paused with the source frozen, the target's table loses its
/// unique constraint, so the target cannot be activated (client writes rely on it). The
/// activation that changed nothing must stop the cutover: the move fails, saying so, and is
/// undone (the source serves the shard again, the target's copy is dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_activation_that_changed_nothing_fails_the_move() {
    let mut cfg = default_config();
    cfg.failpoints = "after_freeze=3s".into();
    let (a, urls) = cluster_with(cfg).await;
    let c = client();
    let row = key_in_shard(1, SHARDS);
    let before = write_one(&c, &a, &row, "c", 1).await;
    let id = start_move(&a, json!({"shards": "1", "to": "db3"})).await;
    wait_backend_state(&urls[0], 1, "frozen").await;
    sql(
        &urls[2],
        "ALTER TABLE cells_0001 DROP CONSTRAINT cells_0001_cell_key",
    )
    .await;
    let job = wait_job(&a, id, LONG, |j| j["state"] != "running").await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["shards"][0]["error"].as_str().unwrap_or("");
    assert!(
        error.contains("expected the target db3 to go from importing to active")
            && error.contains("lacks the unique constraint"),
        "{job}"
    );
    assert_eq!(catalog_owner(&urls[0], 1).await, "db1");
    assert_eq!(shard_state_in(&urls[0], 1).await.as_deref(), Some("active"));
    assert_eq!(shard_state_in(&urls[2], 1).await, None);
    assert!(!table_exists(&urls[2], 1).await, "the target kept its copy");
    let (s, v) = get_json(&c, &a.url(&format!("/v1/cells/{row}/c"))).await;
    assert_eq!((s, &v), (200, &before), "{v}");
    write_one(&c, &a, &row, "c", 2).await;
}

// ---------------------------------------------------------------------------------------------
// 4. A vanished peer is noticed within seconds, on both sides
// ---------------------------------------------------------------------------------------------

/// The socket of this process whose local TCP port is `port`, if any.
fn own_socket(port: u16) -> Option<std::os::fd::RawFd> {
    use nix::sys::socket::{getsockname, SockaddrIn};
    std::fs::read_dir("/proc/self/fd")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|&fd| getsockname::<SockaddrIn>(fd).is_ok_and(|a| a.port() == port))
}

/// The keepalive timer of the server's end of the connection from `client_port` to
/// `server_port` (both on this machine), as `ss` shows it when the connection is idle (with
/// data in flight it shows the retransmission timer instead: asked again, a few times).
async fn server_keepalive_timer(server_port: u16, client_port: u16) -> Option<Duration> {
    for _ in 0..100 {
        if let Some(t) = keepalive_timer_now(server_port, client_port) {
            return Some(t);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn keepalive_timer_now(server_port: u16, client_port: u16) -> Option<Duration> {
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!(
            "( sport = :{server_port} and dport = :{client_port} )"
        ))
        .output()
        .expect("the test needs ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let timer = text.split("timer:(keepalive,").nth(1)?.split(',').next()?;
    let number = |unit: &str| timer.strip_suffix(unit)?.parse::<f64>().ok();
    if let Some(ms) = number("ms") {
        Some(Duration::from_secs_f64(ms / 1000.0))
    } else if let Some(s) = number("sec") {
        Some(Duration::from_secs_f64(s))
    } else {
        number("min").map(|m| Duration::from_secs_f64(m * 60.0))
    }
}

/// Every connection a node keeps to the catalog's database (the leader's session, the
/// listeners, the pools) has TCP keepalives after 5 s of silence, every 2 s, 3 of them, and a
/// 12 s TCP user timeout; PostgreSQL's end of each has keepalives after 5 s as well (it holds
/// the leader's lock until it notices the leader is gone). So a silent partition ends the
/// leader's session on both sides within about 12 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_notice_a_vanished_peer_within_seconds() {
    use nix::sys::socket::{getsockopt, sockopt};
    let (a, urls) = cluster_with(default_config()).await;
    wait_admin(
        &a,
        "/admin/v1/status",
        LONG,
        Duration::from_millis(50),
        |s| !s["leader"].is_null(),
    )
    .await;
    let pg_port: u16 = urls[0]
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    let c = connect(&urls[0]).await;
    let rows = c
        .query(
            "SELECT application_name, client_port FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
               AND application_name LIKE 'mezzanine%' AND client_port IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    let sessions: Vec<(String, u16)> = rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, i32>(1) as u16))
        .collect();
    assert!(
        sessions.iter().any(|(app, _)| app == "mezzanine-catalog")
            && sessions.iter().any(|(app, _)| app == "mezzanine"),
        "the catalog sessions and pools: {sessions:?}"
    );
    for (app, port) in &sessions {
        let fd = own_socket(*port).unwrap_or_else(|| panic!("no socket of {app} on port {port}"));
        // SAFETY: the descriptor belongs to this process and stays open while the node
        // runs; it is only read.
        let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let opts = (
            getsockopt(&sock, sockopt::KeepAlive).unwrap(),
            getsockopt(&sock, sockopt::TcpKeepIdle).unwrap(),
            getsockopt(&sock, sockopt::TcpKeepInterval).unwrap(),
            getsockopt(&sock, sockopt::TcpKeepCount).unwrap(),
            getsockopt(&sock, sockopt::TcpUserTimeout).unwrap(),
        );
        assert_eq!(opts, (true, 5, 2, 3, 12_000), "{app} on port {port}");
        let timer = server_keepalive_timer(pg_port, *port).await;
        assert!(
            timer.is_some_and(|t| t <= Duration::from_secs(5)),
            "PostgreSQL's end of {app} (port {port}) has keepalive timer {timer:?}, not 5 s"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. An abort in any phase leaves no table behind on the target
// ---------------------------------------------------------------------------------------------

/// The target holds neither a table nor a state row for `shard`; the source serves it with
/// `cells` (read back in order), and takes a new write.
async fn nothing_left_on_the_target(
    srv: &TestServer,
    urls: &[String],
    shard: u32,
    cells: &[Value],
) {
    assert_eq!(shard_state_in(&urls[2], shard).await, None, "shard {shard}");
    assert!(
        !table_exists(&urls[2], shard).await,
        "shard {shard}: the target kept a table"
    );
    assert_eq!(
        shard_state_in(&urls[0], shard).await.as_deref(),
        Some("active")
    );
    let c = client();
    assert_eq!(read_shard(&c, srv, shard).await, cells);
    let row = key_in_shard(shard, SHARDS);
    write_one(&c, srv, &row, "after_abort", 1).await;
    assert!(holds_row(&urls[0], shard, &row).await);
}

/// Writes `n` cells to `shard` and returns them as stored.
async fn fill(c: &reqwest::Client, srv: &TestServer, shard: u32, n: i64) -> Vec<Value> {
    let row = key_in_shard(shard, SHARDS);
    let mut out = Vec::new();
    for i in 0..n {
        out.push(write_one(c, srv, &row, "fill", i).await);
    }
    out
}

/// The mover pauses right after preparing the target (the shard still `pending`, its table
/// `importing` on the target); an abort then drops that table and its state row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abort_of_a_pending_shard_whose_target_was_prepared_drops_the_copy() {
    let mut cfg = default_config();
    cfg.failpoints = "after_prepare=30s".into();
    let (a, urls) = cluster_with(cfg).await;
    let c = client();
    let cells = fill(&c, &a, 1, 5).await;
    let id = start_move(&a, json!({"shards": "1", "to": "db3"})).await;
    wait_backend_state(&urls[2], 1, "importing").await;
    let (_, job) = get_json(&c, &a.url(&format!("/admin/v1/moves/{id}"))).await;
    assert_eq!(job["shards"][0]["state"], "pending", "{job}");
    assert!(table_exists(&urls[2], 1).await);
    let (s, v) = admin_post(&c, &a, &format!("/admin/v1/moves/{id}/abort")).await;
    assert_eq!(s, 202, "{v}");
    let job = wait_job(&a, id, LONG, |j| j["state"] != "running").await;
    assert_eq!(job["state"], "aborted", "{job}");
    nothing_left_on_the_target(&a, &urls, 1, &cells).await;
}

/// Shard 1 is copying (paused after its first chunk, so it holds rows on the target) and
/// shard 2 waits for a slot (`parallel` 1), pending, with a target prepared by a leader that
/// died before it recorded `copying` (here: prepared by hand). An abort drops both copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abort_while_copying_or_pending_leaves_no_table_on_the_target() {
    let mut cfg = default_config();
    cfg.failpoints = "copying=30s".into();
    let (a, urls) = cluster_with(cfg).await;
    let c = client();
    let one = fill(&c, &a, 1, 5).await;
    let two = fill(&c, &a, 2, 5).await;
    let id = start_move(&a, json!({"shards": "1-2", "to": "db3", "parallel": 1})).await;
    wait_job(&a, id, LONG, |j| {
        j["shards"][0]["state"] == "copying" && j["shards"][0]["rows_copied"].as_i64() >= Some(5)
    })
    .await;
    // Prepared as an earlier leader would have: with a term below the current leader's.
    let (_, status) = get_json(&c, &a.url("/admin/v1/status")).await;
    let earlier = mezzanine_core::Term(status["leader"]["term"].as_i64().unwrap() - 1);
    let target = mezzanine_storage::Backend::new("db3", &urls[2], Default::default()).unwrap();
    mezzanine_storage::transfer::prepare_import(&target, SHARDS, 2, earlier)
        .await
        .unwrap();
    assert_eq!(
        shard_state_in(&urls[2], 2).await.as_deref(),
        Some("importing")
    );
    let (_, job) = get_json(&c, &a.url(&format!("/admin/v1/moves/{id}"))).await;
    assert_eq!(job["shards"][1]["state"], "pending", "{job}");
    assert!(
        holds_row(
            &urls[2],
            1,
            &one[0]["row_key"].as_str().unwrap().parse().unwrap()
        )
        .await
    );

    let (s, v) = admin_post(&c, &a, &format!("/admin/v1/moves/{id}/abort")).await;
    assert_eq!(s, 202, "{v}");
    let job = wait_job(&a, id, LONG, |j| j["state"] != "running").await;
    assert_eq!(job["state"], "aborted", "{job}");
    nothing_left_on_the_target(&a, &urls, 1, &one).await;
    nothing_left_on_the_target(&a, &urls, 2, &two).await;
}

// ---------------------------------------------------------------------------------------------
// 6. The address a node reports
// ---------------------------------------------------------------------------------------------

/// The port of a test server's base URL.
fn port_of(srv: &TestServer) -> u16 {
    srv.base.rsplit(':').next().unwrap().parse().unwrap()
}

/// With `ADVERTISE_ADDR`, `status` reports it as the node's address and, as it leads the
/// mover, as the leader's; another node reports the leader's advertised address too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_reports_the_advertised_address() {
    let mut cfg = default_config();
    cfg.advertise_addr = Some("mezz-a.example:9000".into());
    let (a, urls) = cluster_with(cfg).await;
    let status = wait_admin(
        &a,
        "/admin/v1/status",
        LONG,
        Duration::from_millis(50),
        |s| !s["leader"].is_null(),
    )
    .await;
    assert_eq!(status["node"]["addr"], "mezz-a.example:9000", "{status}");
    assert_eq!(status["leader"]["addr"], "mezz-a.example:9000", "{status}");
    let b = node(no_mover(), &urls).await;
    let (s, status) = get_json(&client(), &b.url("/admin/v1/status")).await;
    assert_eq!(s, 200, "{status}");
    assert_eq!(status["node"]["addr"], format!("127.0.0.1:{}", port_of(&b)));
    assert_eq!(status["leader"]["addr"], "mezz-a.example:9000", "{status}");
}

/// A node listening on every interface (0.0.0.0) without `ADVERTISE_ADDR` reports this
/// machine's host name with its port, never the unspecified address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_listening_everywhere_reports_its_host_name() {
    let mut cfg = default_config();
    cfg.host = "0.0.0.0".into();
    let (a, _urls) = cluster_with(cfg).await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let want = format!("{}:{}", host.trim(), port_of(&a));
    let status = wait_admin(
        &a,
        "/admin/v1/status",
        LONG,
        Duration::from_millis(50),
        |s| !s["leader"].is_null(),
    )
    .await;
    assert_eq!(status["node"]["addr"], want.as_str(), "{status}");
    assert_eq!(status["leader"]["addr"], want.as_str(), "{status}");
}
