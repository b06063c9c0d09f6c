//! The cutover's bounds (issue 15, parts 2 and D), end to end against real PostgreSQL:
//!
//! - a target that dies (stopped) or hangs (SIGSTOPped) at any step of the cutover gives the
//!   shard back to its source: client writes succeed again within `MOVE_HOLD_TIMEOUT` + 5 s of
//!   the fault, the move ends `failed` (or, a hung target that returns, is carried on), no
//!   acknowledged write is lost, and once the target is back it holds no active copy that the
//!   map does not name;
//! - a tail too long for `MOVE_MAX_PAUSE` gives the freeze up (the source active again) and,
//!   after the allowed freezes, fails the move cleanly; client writes never fail.
//!
//! The cluster: db1 holds shards 0-3, db2 shards 4-7 (on the shared servers); db3, the
//! target, is a database on a dedicated server of the test, which the test stops or pauses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mezzanine_e2e::*;
use mezzanine_pgcluster::PgServer;
use mezzanine_server::ServeConfig;
use serde_json::{json, Value};

const SHARDS: u32 = 8;
const SHARD: u32 = 1;
/// Bound of every wait for a move (generous: a loaded 2-core machine).
const LONG: Duration = Duration::from_secs(120);
/// How long the mover pauses at the failpoint under test; the fault comes during the pause.
const POINT_PAUSE: &str = "2s";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Stop,
    Pause,
}

/// The steps of the cutover, as failpoints, with what a test sees from outside while the
/// mover pauses there: the source's state, or the target's.
const STEPS: [(&str, Seen); 5] = [
    ("after_freeze", Seen::Source("frozen")),
    ("after_tail", Seen::Source("frozen")),
    ("after_verify", Seen::Source("frozen")),
    ("after_retire", Seen::Source("retired")),
    ("after_activate", Seen::Target("active")),
];

#[derive(Debug, Clone, Copy)]
enum Seen {
    Source(&'static str),
    Target(&'static str),
}

/// Client writes to the moving shard, one after another, from the start to `stop`: the
/// cells acknowledged, and the failures (status and answer).
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Value>>>,
    failed: Arc<Mutex<Vec<(u16, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(srv: Arc<TestServer>, shard: u32, tasks: usize) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for t in 0..tasks {
            let (srv, stop, acked, failed) =
                (srv.clone(), stop.clone(), acked.clone(), failed.clone());
            handles.push(tokio::spawn(async move {
                let c = client();
                let mut i = 0i64;
                while !stop.load(Ordering::Acquire) {
                    i += 1;
                    let row = key_in_shard(shard, SHARDS);
                    let body = cell(&row, "w", i, json!({"task": t, "i": i}));
                    let (s, v) = post_json(&c, &srv.url("/v1/cells"), &body).await;
                    if s == 201 {
                        acked.lock().unwrap().push(v);
                    } else {
                        failed.lock().unwrap().push((s, v));
                    }
                    if tasks == 1 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }));
        }
        let task = tokio::spawn(async move {
            for h in handles {
                h.await.unwrap();
            }
        });
        Writer {
            stop,
            acked,
            failed,
            task,
        }
    }

    async fn finish(self) -> (Vec<Value>, Vec<(u16, Value)>) {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap();
        let acked = self.acked.lock().unwrap().clone();
        let failed = self.failed.lock().unwrap().clone();
        (acked, failed)
    }
}

/// Polls `check` until it holds, panicking with `what` after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node over db1 and db2 with `config`, db3 (`target_url`) registered.
async fn cluster(config: ServeConfig, target_url: &str) -> (Arc<TestServer>, Vec<String>) {
    let urls = fresh_databases(2).await;
    let srv = TestServer::start(config, even_map(&urls, SHARDS)).await;
    let (s, b) = post_json(
        &client(),
        &srv.url("/admin/v1/backends"),
        &json!({"name": "db3", "url": target_url}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    (Arc::new(srv), urls)
}

async fn fault(target: PgServer, f: Fault) -> PgServer {
    tokio::task::spawn_blocking(move || {
        let mut t = target;
        match f {
            Fault::Stop => t.stop().unwrap(),
            Fault::Pause => t.pause().unwrap(),
        }
        t
    })
    .await
    .unwrap()
}

async fn restore(target: PgServer, f: Fault) -> PgServer {
    tokio::task::spawn_blocking(move || {
        let mut t = target;
        match f {
            Fault::Stop => t.restart().unwrap(),
            Fault::Pause => t.resume().unwrap(),
        }
        t
    })
    .await
    .unwrap()
}

/// Moves shard 1 to db3 with the mover pausing at `point`; while it pauses there, the target
/// suffers `f`. Checks the guarantee (see the module documentation); returns the target.
async fn target_fails_at(target: PgServer, point: &str, seen: Seen, f: Fault) -> PgServer {
    eprintln!("--- {f:?} at {point}");
    let target_url = create_database(&target).await;
    let mut cfg = default_config();
    cfg.failpoints = format!("{point}={POINT_PAUSE}");
    let hold = cfg.move_hold_timeout;
    let (srv, urls) = cluster(cfg, &target_url).await;
    let c = client();
    for i in 0..200 {
        let row = key_in_shard(SHARD, SHARDS);
        let (s, v) = post_json(&c, &srv.url("/v1/cells"), &cell(&row, "seed", i, json!(i))).await;
        assert_eq!(s, 201, "{v}");
    }
    let writer = Writer::start(srv.clone(), SHARD, 1);
    let id = start_move(&srv, json!({"shards": SHARD.to_string(), "to": "db3"})).await;
    wait_job(&srv, id, LONG, |j| j["shards"][0]["state"] == "cutover").await;
    let (url, state) = match seen {
        Seen::Source(s) => (&urls[0], s),
        Seen::Target(s) => (&target_url, s),
    };
    eventually(&format!("{point}: {state}"), LONG, || async {
        shard_state_in(url, SHARD).await.as_deref() == Some(state)
    })
    .await;
    // Well inside the failpoint's pause (the steps before it take milliseconds).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let target = fault(target, f).await;
    let t0 = Instant::now();

    // The guarantee: a write to the shard succeeds within MOVE_HOLD_TIMEOUT + 5 s.
    let bound = hold + Duration::from_secs(5);
    let probe = async {
        loop {
            let row = key_in_shard(SHARD, SHARDS);
            let (s, v) =
                post_json(&c, &srv.url("/v1/cells"), &cell(&row, "probe", 1, json!(1))).await;
            if s == 201 {
                return v;
            }
            eprintln!("{point}: probe answered {s}: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let probed = match tokio::time::timeout(bound, probe).await {
        Ok(v) => v,
        Err(_) => panic!("{f:?} at {point}: no write succeeded within {bound:?} of the fault"),
    };
    eprintln!(
        "{f:?} at {point}: writes succeed again {:?} after the fault",
        t0.elapsed()
    );
    // The source is authoritative again, the map names it.
    assert_eq!(
        shard_state_in(&urls[0], SHARD).await.as_deref(),
        Some("active"),
        "{point}"
    );
    assert_eq!(catalog_owner(&urls[0], SHARD).await, "db1", "{point}");
    let (_, job) = get_json(&c, &srv.url(&format!("/admin/v1/moves/{id}"))).await;
    eprintln!(
        "{point}: the move while the target is down: {}",
        job["shards"][0]
    );
    if f == Fault::Stop {
        let job = wait_job(&srv, id, LONG, |j| j["state"] != "running").await;
        assert_eq!(job["state"], "failed", "{point}: {job}");
        // The target's copy could not be cleaned: operators see that it is still to fence.
        assert_eq!(job["shards"][0]["fence_pending"], true, "{point}: {job}");
    }
    if f == Fault::Pause && point == "after_freeze" {
        // The tail copy to a hung target outlasts MOVE_MAX_PAUSE: the freeze is given up and
        // catching up resumes (it goes on once the target answers again).
        wait_job(&srv, id, LONG, |j| j["shards"][0]["state"] == "catching_up").await;
    }

    // The target returns: it holds no active copy the map does not name.
    let target = restore(target, f).await;
    let job = wait_job(&srv, id, LONG, |j| j["state"] != "running").await;
    let owner = catalog_owner(&urls[0], SHARD).await;
    match job["state"].as_str() {
        Some("failed") => {
            assert_eq!(owner, "db1");
            eventually(
                &format!("{point}: the target's copy fenced"),
                LONG,
                || async { shard_state_in(&target_url, SHARD).await.as_deref() != Some("active") },
            )
            .await;
            wait_job(&srv, id, LONG, |j| j["shards"][0]["fence_pending"] == false).await;
            assert_eq!(
                shard_state_in(&urls[0], SHARD).await.as_deref(),
                Some("active")
            );
        }
        // A hung target that returns may let the move go on (it is retried).
        Some("switched") => {
            assert_eq!(f, Fault::Pause, "{point}: {job}");
            assert_eq!(owner, "db3");
            assert_eq!(
                shard_state_in(&urls[0], SHARD).await.as_deref(),
                Some("retired")
            );
        }
        _ => panic!("{point}: {job}"),
    }
    eprintln!("{f:?} at {point}: the move ended {}", job["state"]);

    // No acknowledged write is lost.
    let (acked, failed) = writer.finish().await;
    eprintln!(
        "{f:?} at {point}: {} writes acknowledged, {} failed {:?}",
        acked.len(),
        failed.len(),
        failed.first()
    );
    let cells = read_shard(&c, &srv, SHARD).await;
    for v in acked.iter().chain(std::iter::once(&probed)) {
        assert!(cells.contains(v), "{point}: acknowledged write lost: {v}");
    }
    // Exactly once: the seeds, the acknowledged writes and the probe (a 503 stores nothing).
    assert_eq!(cells.len(), 200 + acked.len() + 1, "{point}");
    drop(srv);
    target
}

async fn dedicated_target() -> PgServer {
    tokio::task::spawn_blocking(|| dedicated_pg(1).remove(0))
        .await
        .unwrap()
}

/// The target stopped at each step of the cutover.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_stopped_at_any_step_of_the_cutover_gives_the_shard_back_to_its_source() {
    let mut target = dedicated_target().await;
    for (point, seen) in STEPS {
        target = target_fails_at(target, point, seen, Fault::Stop).await;
    }
    tokio::task::spawn_blocking(move || drop(target))
        .await
        .unwrap();
}

/// The target SIGSTOPped (hung: connections accepted, never answered) at each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_paused_at_any_step_of_the_cutover_gives_the_shard_back_to_its_source() {
    let mut target = dedicated_target().await;
    for (point, seen) in STEPS {
        target = target_fails_at(target, point, seen, Fault::Pause).await;
    }
    tokio::task::spawn_blocking(move || drop(target))
        .await
        .unwrap();
}

/// `MOVE_MAX_PAUSE` of zero: no tail fits, so every freeze is given up (the source active
/// again at once) and catching up resumes, under writers hammering the shard; after the
/// allowed freezes (3) the move fails cleanly. Client writes never fail, none is lost, and
/// the target keeps no copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tail_too_long_for_the_pause_bound_gives_the_freeze_up_and_fails_cleanly() {
    let target_url = fresh_databases(1).await.remove(0);
    let mut cfg = default_config();
    cfg.move_max_pause = Duration::ZERO;
    let (srv, urls) = cluster(cfg, &target_url).await;
    let c = client();
    for i in 0..500 {
        let row = key_in_shard(SHARD, SHARDS);
        let (s, v) = post_json(&c, &srv.url("/v1/cells"), &cell(&row, "seed", i, json!(i))).await;
        assert_eq!(s, 201, "{v}");
    }
    let writer = Writer::start(srv.clone(), SHARD, 4);
    let id = start_move(&srv, json!({"shards": SHARD.to_string(), "to": "db3"})).await;
    let job = wait_job(&srv, id, LONG, |j| j["state"] != "running").await;
    let (acked, failed) = writer.finish().await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["shards"][0]["error"].as_str().unwrap_or("");
    assert!(
        error.contains("did not fit MOVE_MAX_PAUSE") && error.contains("in 3 freezes"),
        "{job}"
    );
    assert!(
        failed.is_empty(),
        "writes failed: {:?}",
        &failed[..failed.len().min(3)]
    );
    assert!(
        acked.len() > 100,
        "the writers hardly wrote: {}",
        acked.len()
    );
    eprintln!("{} writes acknowledged during the move", acked.len());
    assert_eq!(
        shard_state_in(&urls[0], SHARD).await.as_deref(),
        Some("active")
    );
    assert_eq!(catalog_owner(&urls[0], SHARD).await, "db1");
    eventually("the target's copy dropped", LONG, || async {
        shard_state_in(&target_url, SHARD).await.is_none()
    })
    .await;
    let cells = read_shard(&c, &srv, SHARD).await;
    assert_eq!(cells.len(), 500 + acked.len());
    for v in &acked {
        assert!(cells.contains(v), "acknowledged write lost: {v}");
    }
}
