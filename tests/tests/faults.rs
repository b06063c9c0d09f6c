//! Failure isolation: a backend that is stopped or hung affects only its own shards. Those
//! answer 503 with Retry-After within DB_QUERY_TIMEOUT, then fail fast while it stays bad;
//! other shards keep serving; service resumes by itself when the backend returns.

use std::time::{Duration, Instant};

use mezzanine_core::shard_for_row_key;
use mezzanine_e2e::*;
use mezzanine_pgcluster::PgServer;
use serde_json::{json, Value};
use uuid::Uuid;

const SHARDS: u32 = 8; // db1: 0-3, db2: 4-7
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

fn key_on(backend: usize) -> Uuid {
    std::iter::repeat_with(Uuid::new_v4)
        .find(|u| (shard_for_row_key(u, SHARDS) as usize) / 4 == backend)
        .unwrap()
}

async fn timed_get(c: &reqwest::Client, url: &str) -> (u16, Option<String>, Value, Duration) {
    timed(c.get(url)).await
}

enum Fault {
    Stop,
    Pause,
}

async fn isolation(fault: Fault) {
    let mut servers: Vec<PgServer> = tokio::task::spawn_blocking(|| dedicated_pg(2))
        .await
        .unwrap();
    let urls = vec![
        create_database(&servers[0]).await,
        create_database(&servers[1]).await,
    ];
    let mut cfg = default_config();
    cfg.db_query_timeout = QUERY_TIMEOUT;
    cfg.db_health_check_period = Duration::from_millis(500);
    let srv = TestServer::start(cfg, even_map(&urls, SHARDS)).await;
    let c = client();
    let (good, bad) = (key_on(0), key_on(1));
    for k in [good, bad] {
        let (s, _) = post_json(
            &c,
            &srv.url("/v1/cells"),
            &cell(&k, "c", 1, json!("before")),
        )
        .await;
        assert_eq!(s, 201);
    }
    let bad_url = srv.url(&format!("/v1/cells/{bad}/c"));
    let good_url = srv.url(&format!("/v1/cells/{good}/c"));

    let mut sick = servers.remove(1);
    sick = tokio::task::spawn_blocking(move || {
        match fault {
            Fault::Stop => sick.stop().unwrap(),
            Fault::Pause => sick.pause().unwrap(),
        }
        sick
    })
    .await
    .unwrap();

    // First request to the sick backend: 503 with Retry-After, bounded by the query timeout
    // (the client's own timeout is far longer: a request left hanging would fail here).
    let (s, retry, body, _) = timed_get(&c, &bad_url).await;
    assert_eq!(s, 503, "{body}");
    assert!(retry.is_some(), "Retry-After missing");
    assert_eq!(body["status"], 503);
    // Then it fails fast while the backend stays bad, for reads and writes: the node knows the
    // backend is down and answers without trying it.
    for _ in 0..5 {
        let (s, retry, body, _) = timed_get(&c, &bad_url).await;
        assert_eq!(s, 503);
        assert!(retry.is_some());
        assert!(
            body["detail"].as_str().unwrap_or("").contains("known down"),
            "not failed fast: {body}"
        );
    }
    let (s, body) = post_json(
        &c,
        &srv.url("/v1/cells"),
        &cell(&bad, "c", 2, json!("during")),
    )
    .await;
    assert_eq!(s, 503);
    assert!(
        body["detail"].as_str().unwrap_or("").contains("known down"),
        "not failed fast: {body}"
    );
    // The healthy backend's shards are unaffected.
    for i in 0..20 {
        let (s, _, body, _) = timed_get(&c, &good_url).await;
        assert_eq!(s, 200, "{body}");
        let (s, _) = post_json(
            &c,
            &srv.url("/v1/cells"),
            &cell(&good, "c", 10 + i, json!(i)),
        )
        .await;
        assert_eq!(s, 201);
    }
    let (s, health) = get_json(&c, &srv.url("/v1/readyz")).await;
    assert_eq!(s, 503);
    assert_eq!(health["backends"][0]["up"], true);
    assert_eq!(health["backends"][1]["up"], false);
    assert!(health["backends"][1]["error"].is_string());

    // The backend comes back: service resumes by itself.
    let sick = tokio::task::spawn_blocking(move || {
        let mut sick = sick;
        match sick.is_paused() {
            true => sick.resume().unwrap(),
            false => sick.restart().unwrap(),
        }
        sick
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, _, body, _) = timed_get(&c, &bad_url).await;
        if s == 200 {
            assert_eq!(body["body"], "before");
            break;
        }
        assert!(Instant::now() < deadline, "did not recover: {s} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, _) = post_json(
        &c,
        &srv.url("/v1/cells"),
        &cell(&bad, "c", 3, json!("after")),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = get_json(&c, &srv.url("/v1/readyz")).await;
    assert_eq!(s, 200);
    drop(srv);
    tokio::task::spawn_blocking(move || drop((sick, servers)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_backend_affects_only_its_shards() {
    isolation(Fault::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_backend_affects_only_its_shards() {
    isolation(Fault::Pause).await;
}

/// Graceful shutdown: a request in flight when the server is told to stop completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_lets_requests_in_flight_finish() {
    let servers: Vec<PgServer> = tokio::task::spawn_blocking(|| dedicated_pg(1))
        .await
        .unwrap();
    let urls = vec![create_database(&servers[0]).await];
    let mut cfg = default_config();
    cfg.db_query_timeout = Duration::from_secs(5);
    let srv = TestServer::start(cfg, even_map(&urls, SHARDS)).await;
    let c = client();
    let url = srv.url("/v1/cells");
    // Hold the database so that the write is certainly in flight when the stop begins.
    let servers = tokio::task::spawn_blocking(move || {
        servers[0].pause().unwrap();
        servers
    })
    .await
    .unwrap();
    let row = Uuid::new_v4();
    let write =
        tokio::spawn(
            async move { post_json(&c, &url, &cell(&row, "c", 1, json!("in flight"))).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = srv.base.clone();
    let stopping = tokio::spawn(srv.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New connections are refused while the old request is still running.
    assert!(
        reqwest::get(format!("{base}/v1/livez")).await.is_err(),
        "still accepting after stop"
    );
    let servers = tokio::task::spawn_blocking(move || {
        servers[0].resume().unwrap();
        servers
    })
    .await
    .unwrap();
    let (s, v) = write.await.unwrap();
    assert_eq!(s, 201, "{v}");
    stopping.await.unwrap();
    tokio::task::spawn_blocking(move || drop(servers))
        .await
        .unwrap();
}

/// A pool whose connections are all busy answers "unavailable" for that request but does not
/// mark a healthy backend down: load must never turn into an outage.
#[tokio::test]
async fn a_busy_pool_is_load_not_an_outage() {
    let urls = fresh_databases(1).await;
    let settings = mezzanine_storage::PoolSettings {
        max_conns: 1,
        query_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let backend = mezzanine_storage::Backend::new("db1", &urls[0], settings).unwrap();
    let held = backend.lease().await.unwrap();
    let second = backend.lease().await;
    assert!(matches!(
        second,
        Err(mezzanine_storage::StorageError::Unavailable { .. })
    ));
    assert!(backend.is_up(), "a busy pool marked the backend down");
    drop(held);
    let lease = backend.lease().await.unwrap();
    lease.query("SELECT 1", &[]).await.unwrap();
}

/// The pool hands out the connection returned last: its caches (plans, the catalog entries of
/// the shard tables it opened) are the warmest, and spare connections age out when idle.
#[tokio::test]
async fn the_most_recently_returned_connection_is_leased_first() {
    let urls = fresh_databases(1).await;
    let settings = mezzanine_storage::PoolSettings {
        max_conns: 3,
        ..Default::default()
    };
    let backend = mezzanine_storage::Backend::new("db1", &urls[0], settings).unwrap();
    async fn pid(lease: &mezzanine_storage::backend::Lease<'_>) -> i32 {
        let rows = lease.query("SELECT pg_backend_pid()", &[]).await.unwrap();
        rows[0].get(0)
    }
    let (a, b, c) = (
        backend.lease().await.unwrap(),
        backend.lease().await.unwrap(),
        backend.lease().await.unwrap(),
    );
    let (pa, pb, pc) = (pid(&a).await, pid(&b).await, pid(&c).await);
    assert!(pa != pb && pb != pc && pa != pc);
    drop(a);
    drop(c);
    drop(b);
    for _ in 0..3 {
        let again = backend.lease().await.unwrap();
        assert_eq!(pid(&again).await, pb);
    }
    let (x, y) = (
        backend.lease().await.unwrap(),
        backend.lease().await.unwrap(),
    );
    assert_eq!((pid(&x).await, pid(&y).await), (pb, pc));
}
