//! Two leaders acting at once (DESIGN §5: one node leads the mover at a time, by an advisory
//! lock on the catalog; I2, I3, I5), end to end against real PostgreSQL.
//!
//! Node A leads and pauses inside a cutover (a failpoint); its catalog connections go through
//! a proxy ([`PgProxy`]), which then cuts them silently: PostgreSQL ends A's sessions at once
//! and releases the lock, while A's side sees silence (no answer, no close). Node B, connected
//! to the catalog directly, takes the leadership and carries on the move; A's process keeps
//! running, and when its pause ends it goes on with its stale cutover against the backends.
//! A writer through each node keeps writing to the moving shard, and a monitor reads every
//! backend's `mezzanine_shard_state` row of the shard all along.
//!
//! What an operator relies on ((a) to (d) and the stale steps checked by every scenario, (e)
//! and the heal by tests of their own):
//!
//! - (a) writes to the shard succeed again within `MOVE_HOLD_TIMEOUT` + 5 s of the cut;
//! - (b) every acknowledged write (through A or B) is readable afterwards through B, once;
//! - (c) at no observation, and not at the end, are two backends `active` for the shard, and
//!   the catalog's map names the one that is;
//! - (d) B finishes the move (`switched`): the catalog says `cutover`, the source is frozen or
//!   retired and the copied prefix verified, and resuming is what a new leader does (I5); it
//!   is also the shortest way out of the write pause. Or, when an operator aborts the move
//!   through B, it ends `aborted` with the source `active` and no copy left on the target;
//! - A's stale steps after its pause change nothing of that;
//! - (e) A stops acting as leader within `DEAD_PEER_BOUND` + 5 s of the cut (its mover says it
//!   lost the leadership; no step of its paused cutover runs after the pause);
//! - once the partition heals, A follows B and serves with the current map.
//!
//! Three of these failed before the fixes they led to: (e) held only once the leader checks that
//! the catalog answers on its session (a connection to a silent peer that still acknowledges,
//! this proxy or a hung pooler, never fails at the TCP level); a stale activation met a new
//! move of the shard and made a second active copy for good, until backends refused an older
//! leader's term (and the leader stopped in time); and after the heal A never served again
//! until the catalog's pool got a health loop.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mezzanine_e2e::logs::{self, Logged, OwnNode};
use mezzanine_e2e::proxy::PgProxy;
use mezzanine_e2e::*;
use mezzanine_server::ServeConfig;
use mezzanine_storage::keepalive::DEAD_PEER_BOUND;
use serde_json::{json, Value};

const SHARDS: u32 = 8;
/// The moving shard: on db1 (shards 0-3), moved to db3 (the spare).
const SHARD: u32 = 1;
const SEEDS: usize = 200;
/// Bound of every wait for a move or a node (generous: a loaded 2-core machine).
const LONG: Duration = Duration::from_secs(120);
/// A's pause at its failpoint: longer than the time (e) allows A to notice it lost the
/// leadership (`DEAD_PEER_BOUND` + 5 s after the cut, which comes right after A reaches the
/// point), so a mover that stops leading in time never runs the rest of that cutover; and
/// long enough for B to finish (or undo) the move before A's pause ends.
const A_PAUSE: Duration = Duration::from_secs(25);
/// Margin of (e) over `DEAD_PEER_BOUND`.
const STOP_MARGIN: Duration = Duration::from_secs(5);
const NAMES: [&str; 3] = ["db1", "db2", "db3"];

// ---------------------------------------------------------------------------------------------
// The cluster: A (through the proxy) and B (direct)
// ---------------------------------------------------------------------------------------------

struct Nodes {
    a: OwnNode,
    b: OwnNode,
    proxy: PgProxy,
    /// db1, db2 (the shards) and db3 (the spare, the target).
    urls: Vec<String>,
}

impl Nodes {
    /// A starts first, its catalog URL through the proxy, with failpoints `a_points`, and
    /// leads; then B, with the catalog's URL itself and failpoints `b_points`, its
    /// configuration changed by `b_config`.
    async fn start(
        tag: &str,
        a_points: &str,
        b_points: &str,
        b_config: fn(&mut ServeConfig),
    ) -> Nodes {
        logs::capture();
        // Labels unique in the process (two runs of one scenario may run at once).
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let tag = format!("{tag}#{}", RUNS.fetch_add(1, Ordering::Relaxed));
        let urls = fresh_databases(3).await;
        let proxy = PgProxy::in_front_of(&urls[0]).await;
        let mut ca = default_config();
        ca.catalog_url = Some(proxy.url(&urls[0]));
        ca.node_id = Some(format!("A-{tag}"));
        ca.failpoints = a_points.to_owned();
        let a = OwnNode::start(&format!("A-{tag}"), ca, even_map(&urls[..2], SHARDS)).await;
        let (s, v) = post_json(
            &client(),
            &a.url("/admin/v1/backends"),
            &json!({"name": "db3", "url": urls[2]}),
        )
        .await;
        assert_eq!(s, 201, "spare db3 not registered: {v}");
        wait_leader(&a, &a.label).await;
        let mut cb = default_config();
        cb.catalog_url = Some(urls[0].clone());
        cb.node_id = Some(format!("B-{tag}"));
        cb.failpoints = b_points.to_owned();
        b_config(&mut cb);
        let b = OwnNode::start(&format!("B-{tag}"), cb, even_map(&urls[..2], SHARDS)).await;
        let (s, st) = get_json(&client(), &b.url("/admin/v1/status")).await;
        assert_eq!((s, &st["leader"]["id"]), (200, &json!(a.label)), "{st}");
        Nodes { a, b, proxy, urls }
    }

    /// What A and B logged, as a timeline relative to `origin`.
    fn timeline(&self, origin: Instant) -> String {
        logs::timeline(origin, &[(&self.a.label, "A"), (&self.b.label, "B")])
    }
}

/// Waits until `node`'s status names `leader` as the mover's leader.
async fn wait_leader(node: &TestServer, leader: &str) {
    wait_admin(
        node,
        "/admin/v1/status",
        LONG,
        Duration::from_millis(50),
        |s| s["leader"]["id"] == leader,
    )
    .await;
}

/// `SEEDS` cells in the shard, written through `node` in one batch.
async fn seed(node: &TestServer) {
    let cells: Vec<Value> = (0..SEEDS)
        .map(|i| {
            let row = key_in_shard(SHARD, SHARDS);
            cell(&row, "seed", i as i64, json!({"seed": i}))
        })
        .collect();
    let (s, v) = post_json(
        &client(),
        &node.url("/v1/cells/batch"),
        &json!({ "cells": cells }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let stored = v["results"]
        .as_array()
        .map_or(0, |r| r.iter().filter(|r| r["status"] == 201).count());
    assert_eq!(stored, SEEDS, "{v}");
}

// ---------------------------------------------------------------------------------------------
// Writers and the monitor of the backends' shard states
// ---------------------------------------------------------------------------------------------

/// Writes to the shard through one node, one write after another, until stopped: the cells
/// acknowledged, and the failures' statuses.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Value>>>,
    failed: Arc<Mutex<Vec<u16>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(base: &str, who: &'static str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let (url, st, ack, fail) = (
            format!("{base}/v1/cells"),
            stop.clone(),
            acked.clone(),
            failed.clone(),
        );
        let task = tokio::spawn(async move {
            let c = client();
            let mut i = 0i64;
            while !st.load(Ordering::Acquire) {
                i += 1;
                let row = key_in_shard(SHARD, SHARDS);
                let body = cell(&row, who, i, json!({"writer": who, "i": i}));
                let (s, v) = post_json(&c, &url, &body).await;
                if s == 201 {
                    ack.lock().unwrap().push(v);
                } else {
                    fail.lock().unwrap().push(s);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Writer {
            stop,
            acked,
            failed,
            task,
        }
    }

    /// Stops; returns the acknowledged cells and the failures' statuses.
    async fn finish(self) -> (Vec<Value>, Vec<u16>) {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap();
        let acked = self.acked.lock().unwrap().clone();
        let failed = self.failed.lock().unwrap().clone();
        (acked, failed)
    }
}

/// One backend's state row of the shard: `(state, epoch)`, or `None` without a row.
type Row = Option<(String, i64)>;

#[derive(Default)]
struct Watched {
    passes: usize,
    /// Observations of two backends active at once (see [`Monitor`]).
    violations: Vec<String>,
    /// Each change of the states seen, with when.
    changes: Vec<(Instant, Vec<Row>)>,
}

/// Reads the shard's state row on every backend, over and over. One pass reads db1, db2,
/// db3, then db1, db2, db3 again; two backends were active at once when one reads `active`
/// both times and another reads `active` in between (the reads of one pass are not one
/// snapshot: a cutover retiring the source and activating the target between two reads of
/// a single round would look like two active copies, which this sandwich rules out).
struct Monitor {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Watched>>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    async fn start(urls: &[String]) -> Monitor {
        let mut clients = Vec::new();
        for u in urls {
            clients.push(connect(u).await);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Watched::default()));
        let (st, sn) = (stop.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let n = clients.len();
            while !st.load(Ordering::Acquire) {
                let mut reads: Vec<Row> = Vec::with_capacity(2 * n);
                for _ in 0..2 {
                    for c in &clients {
                        reads.push(state_row(c).await);
                    }
                }
                let active = |r: &Row| r.as_ref().is_some_and(|(s, _)| s == "active");
                {
                    let mut w = sn.lock().unwrap();
                    w.passes += 1;
                    for x in 0..n {
                        if active(&reads[x]) && active(&reads[x + n]) {
                            for k in x + 1..x + n {
                                if active(&reads[k]) {
                                    w.violations.push(format!(
                                        "{} and {} active at once: {}",
                                        NAMES[x],
                                        NAMES[k % n],
                                        show(&reads[..n])
                                    ));
                                }
                            }
                        }
                    }
                    let now = reads[n..].to_vec();
                    if w.changes.last().is_none_or(|(_, last)| *last != now) {
                        w.changes.push((Instant::now(), now));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Monitor { stop, seen, task }
    }

    async fn finish(self) -> Watched {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

async fn state_row(c: &tokio_postgres::Client) -> Row {
    let rows = c
        .query(
            "SELECT state, epoch FROM mezzanine_shard_state WHERE shard = $1",
            &[&(SHARD as i32)],
        )
        .await
        .unwrap_or_else(|e| panic!("cannot read a shard state: {e}"));
    rows.first().map(|r| (r.get(0), r.get(1)))
}

fn show(rows: &[Row]) -> String {
    rows.iter()
        .zip(NAMES)
        .map(|(r, n)| match r {
            Some((s, e)) => format!("{n}={s}/{e}"),
            None => format!("{n}=-"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The highest `added_id` of the shard in a backend's table (0 when empty or absent).
async fn max_added_id(url: &str) -> i64 {
    let c = connect(url).await;
    let sql = format!("SELECT coalesce(max(added_id), 0) FROM cells_{SHARD:04}");
    match c.query(&sql, &[]).await {
        Ok(rows) => rows.first().map_or(0, |r| r.get(0)),
        Err(_) => 0,
    }
}

/// Every backend's state row of the shard now.
async fn states_now(urls: &[String]) -> Vec<Row> {
    let mut out = Vec::new();
    for u in urls {
        out.push(state_row(&connect(u).await).await);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------------

/// The failpoint event of the node labelled `label` at `point`.
fn reached(label: &str, point: &str) -> impl Fn(&Logged) -> bool {
    let (label, point) = (label.to_owned(), point.to_owned());
    move |e| e.from(&label) && e.message == "failpoint reached" && e.field("point") == Some(&point)
}

/// The mover of the node labelled `label` saying it lost the leadership.
fn leadership_lost(label: &str) -> impl Fn(&Logged) -> bool {
    let label = label.to_owned();
    move |e| {
        e.from(&label) && e.target == "mezzanine_mover" && e.message.contains("leadership lost")
    }
}

/// A step of the shard tasks of the node labelled `label` (a failure, an undo, a switch)
/// after `after`.
fn task_step(label: &str, after: Instant) -> impl Fn(&Logged) -> bool {
    let label = label.to_owned();
    move |e| {
        e.from(&label)
            && e.at > after
            && matches!(
                e.target.as_str(),
                "mezzanine_mover::shard" | "mezzanine_mover::cutover"
            )
    }
}

/// `t - origin` in seconds, negative before it.
fn signed(t: Instant, origin: Instant) -> f64 {
    if t >= origin {
        (t - origin).as_secs_f64()
    } else {
        -(origin - t).as_secs_f64()
    }
}

/// A run: A leads a move of the shard to db3 and pauses at a failpoint inside its cutover,
/// where its catalog connections are cut silently; writers through A and B and the monitor
/// run from before the move to the end.
struct Scene {
    tag: String,
    nodes: Nodes,
    monitor: Monitor,
    writers: [Writer; 2],
    /// The move A started.
    id: i64,
    /// When A's pause at its failpoint ends.
    a_pause_end: Instant,
    cut: Instant,
}

impl Scene {
    async fn start(
        tag: &str,
        a_point: &str,
        b_points: &str,
        b_config: fn(&mut ServeConfig),
    ) -> Scene {
        // A also pauses a second after each catch-up round, so that the writes of that second
        // are the tail its freeze leaves to copy (without, a tail is often empty).
        let a_points = format!("catching_up=1s,{a_point}={}s", A_PAUSE.as_secs());
        let nodes = Nodes::start(tag, &a_points, b_points, b_config).await;
        let (a, b, urls) = (&nodes.a, &nodes.b, &nodes.urls);
        seed(a).await;
        let monitor = Monitor::start(urls).await;
        let writers = [
            Writer::start(&a.base, "via-a"),
            Writer::start(&b.base, "via-b"),
        ];
        let id = start_move(a, json!({"shards": SHARD.to_string(), "to": "db3"})).await;
        let a_paused =
            logs::wait_event("A reaches its failpoint", LONG, reached(&a.label, a_point))
                .await
                .at;
        let (src, tgt) = (max_added_id(&urls[0]).await, max_added_id(&urls[2]).await);
        eprintln!(
            "[{tag}] A paused at {a_point}: {}; highest added_id: db1 {src}, db3 {tgt}",
            show(&states_now(urls).await)
        );
        // The partition.
        nodes.proxy.cut_silently();
        let cut = Instant::now();
        Scene {
            tag: tag.to_owned(),
            nodes,
            monitor,
            writers,
            id,
            a_pause_end: a_paused + A_PAUSE,
            cut,
        }
    }

    /// Waits until B's resumed cutover pauses at its own `after_freeze`, then aborts move
    /// `id` through B (which ends that pause at once).
    async fn abort_through_b_in_its_pause(&self, id: i64) {
        let b = &self.nodes.b;
        logs::wait_event(
            "B's resumed cutover pauses",
            LONG,
            reached(&b.label, "after_freeze"),
        )
        .await;
        self.abort_through_b(id).await;
    }

    async fn abort_through_b(&self, id: i64) {
        let b = &self.nodes.b;
        let (s, v) = post_json(
            &client(),
            &b.url(&format!("/admin/v1/moves/{id}/abort")),
            &json!({}),
        )
        .await;
        assert_eq!(s, 202, "abort through B: {v}");
        eprintln!(
            "[{}] move {id} aborted through B at +{:.3}s",
            self.tag,
            self.cut.elapsed().as_secs_f64()
        );
    }

    /// (a) A write through B succeeds within `MOVE_HOLD_TIMEOUT` + 5 s of the cut, while
    /// `operator` runs. Returns the cell written.
    async fn write_through_b_within_the_bound(
        &self,
        operator: impl std::future::Future<Output = ()>,
    ) -> Value {
        let (tag, b, cut) = (&self.tag, &self.nodes.b, self.cut);
        let bound = default_config().move_hold_timeout + Duration::from_secs(5);
        let probe = async {
            let c = client();
            let mut n = 0;
            loop {
                n += 1;
                let row = key_in_shard(SHARD, SHARDS);
                let body = cell(&row, "probe", n, json!({"probe": n}));
                let (s, v) = post_json(&c, &b.url("/v1/cells"), &body).await;
                if s == 201 {
                    return v;
                }
                eprintln!(
                    "[{tag}] a write through B answered {s} at +{:?}",
                    cut.elapsed()
                );
            }
        };
        let bounded = async {
            match tokio::time::timeout_at((cut + bound).into(), probe).await {
                Ok(v) => v,
                Err(_) => {
                    panic!("[{tag}] no write succeeded through B within {bound:?} of the cut")
                }
            }
        };
        let ((), probed) = tokio::join!(operator, bounded);
        eprintln!(
            "[{tag}] a write through B succeeded at +{:.3}s",
            cut.elapsed().as_secs_f64()
        );
        probed
    }

    /// Waits until A's pause ended and its stale cutover went on until it needed the catalog
    /// (its steps on the backends come first), or until A's mover stopped (a mover that
    /// noticed its lost leadership never runs the rest). Returns when A's mover said it lost
    /// the leadership, if it did, and whether a step of A's cutover ran after the pause.
    async fn a_stale_steps(&self) -> (Option<Instant>, bool) {
        let a = &self.nodes.a;
        let lost = logs::first(leadership_lost(&a.label)).map(|e| e.at);
        if lost.is_none_or(|t| t > self.a_pause_end) {
            logs::wait_event("A's stale cutover ends", LONG, |e| {
                task_step(&a.label, self.a_pause_end)(e) || leadership_lost(&a.label)(e)
            })
            .await;
        }
        let lost = logs::first(leadership_lost(&a.label)).map(|e| e.at);
        let stepped = logs::first(task_step(&a.label, self.a_pause_end)).is_some();
        eprintln!(
            "[{}] A's pause ended at {:+.3}s; A's mover said it lost the leadership at {}; a step of A's cutover after its pause: {stepped}",
            self.tag,
            signed(self.a_pause_end, self.cut),
            lost.map_or("no time".to_owned(), |t| format!("{:+.3}s", signed(t, self.cut)))
        );
        (lost, stepped)
    }

    /// The checks at the end: (c) no two active copies at any observation, exactly one now,
    /// the one the catalog's map names, which must be `owner`; (b) every acknowledged write
    /// (and `extra`) readable through B, once. Returns the backends' state rows of the shard.
    async fn finish(self, owner: &str, extra: &[Value]) -> (Vec<Row>, Nodes) {
        let Scene {
            tag,
            nodes,
            monitor,
            writers,
            cut,
            ..
        } = self;
        let (b, urls) = (&nodes.b, &nodes.urls);
        let [wa, wb] = writers;
        let (acked_a, failed_a) = wa.finish().await;
        let (acked_b, failed_b) = wb.finish().await;
        let watched = monitor.finish().await;
        let after = states_now(urls).await;
        eprintln!("[{tag}] the backends' states ({} passes):", watched.passes);
        for (t, rows) in &watched.changes {
            eprintln!("    {:+9.3}s {}", signed(*t, cut), show(rows));
        }
        eprintln!(
            "[{tag}] through A: {} acknowledged, {} failed {:?}; through B: {} acknowledged, {} failed {:?}",
            acked_a.len(),
            failed_a.len(),
            &failed_a[..failed_a.len().min(5)],
            acked_b.len(),
            failed_b.len(),
            &failed_b[..failed_b.len().min(5)],
        );
        let ps = &nodes.proxy.stats;
        eprintln!(
            "[{tag}] proxy: {} forwarded, {} upstreams closed by the cut, {} accepted while cut, {} bytes discarded",
            ps.forwarded.load(Ordering::Relaxed),
            ps.upstreams_closed.load(Ordering::Relaxed),
            ps.accepted_while_cut.load(Ordering::Relaxed),
            ps.discarded_bytes.load(Ordering::Relaxed)
        );
        eprintln!("[{tag}] timeline (from the cut):\n{}", nodes.timeline(cut));

        // (c)
        assert!(
            watched.violations.is_empty(),
            "[{tag}] two active copies seen ({} times), first: {:?}",
            watched.violations.len(),
            &watched.violations[..watched.violations.len().min(3)]
        );
        let active: Vec<&str> = after
            .iter()
            .zip(NAMES)
            .filter(|(r, _)| r.as_ref().is_some_and(|(s, _)| s == "active"))
            .map(|(_, n)| n)
            .collect();
        assert_eq!(
            active,
            vec![owner],
            "[{tag}] active copies at the end: {}",
            show(&after)
        );
        assert_eq!(
            catalog_owner(&urls[0], SHARD).await,
            owner,
            "[{tag}] the map"
        );

        // (b)
        let cells = read_shard(&client(), b, SHARD).await;
        let acked: Vec<&Value> = acked_a.iter().chain(&acked_b).chain(extra).collect();
        for v in &acked {
            assert!(cells.contains(v), "[{tag}] acknowledged write lost: {v}");
        }
        assert_eq!(
            cells.len(),
            SEEDS + acked.len(),
            "[{tag}] cells of the shard"
        );
        (after, nodes)
    }
}

/// What B does with the move A left in its cutover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// B resumes the cutover and switches the map.
    Finishes,
    /// An operator aborts the move through B while B's resumed cutover is paused (B runs with
    /// `after_freeze` as a failpoint of its own, so that the abort meets the cutover for sure;
    /// an abort ends that pause at once): B gives the shard back to its source.
    IsAborted,
}

/// What a run saw, for the checks particular to a test.
struct Run {
    tag: String,
    cut: Instant,
    a_pause_end: Instant,
    /// When A's mover said it lost the leadership, if it did.
    a_lost: Option<Instant>,
    /// Whether a step of A's paused cutover ran after the pause.
    a_stepped_after_pause: bool,
    /// The backends' state rows of the shard at the end.
    states: Vec<Row>,
    nodes: Nodes,
}

/// A pauses at `point` inside its cutover and is cut off there; B takes over and the move
/// ends as `then` says, while A's pause ends and its stale cutover goes on. Checks (a) to (d)
/// and that A's stale steps change nothing.
async fn cut_in_cutover(point: &str, then: Then) -> Run {
    let tag = format!("{point}-{then:?}");
    let b_points = match then {
        Then::Finishes => "",
        Then::IsAborted => "after_freeze=120s",
    };
    let scene = Scene::start(&tag, point, b_points, |_| {}).await;
    let (a, b, cut, id) = (&scene.nodes.a, &scene.nodes.b, scene.cut, scene.id);
    let probed = scene
        .write_through_b_within_the_bound(async {
            if then == Then::IsAborted {
                scene.abort_through_b_in_its_pause(id).await;
            }
        })
        .await;

    // B leads, and the move ends as it should (d).
    wait_leader(b, &b.label).await;
    eprintln!(
        "[{tag}] B's status names B the leader at +{:.3}s",
        cut.elapsed().as_secs_f64()
    );
    let end = match then {
        Then::Finishes => "switched",
        Then::IsAborted => "aborted",
    };
    let job = wait_job(b, id, LONG, |j| j["state"] != "running").await;
    eprintln!(
        "[{tag}] the move ended {} at +{:.3}s",
        job["state"],
        cut.elapsed().as_secs_f64()
    );
    assert_eq!(job["state"], end, "[{tag}] {job}");
    assert_eq!(job["shards"][0]["state"], end, "[{tag}] {job}");

    // A's status does not claim the leadership it lost (it cannot read the catalog: an error
    // is not a claim).
    let (s, st) = get_json(&client(), &a.url("/admin/v1/status")).await;
    assert!(
        !(s == 200 && st["leader"]["id"] == a.label),
        "[{tag}] A's status names A the leader after the cut: {st}"
    );

    let (a_lost, a_stepped_after_pause) = scene.a_stale_steps().await;
    let a_pause_end = scene.a_pause_end;
    let owner = match then {
        Then::Finishes => "db3",
        Then::IsAborted => "db1",
    };
    let (states, nodes) = scene.finish(owner, &[probed]).await;
    // (d) What the move left on the backends.
    let state = |i: usize| states[i].as_ref().map(|(s, _)| s.as_str());
    match then {
        Then::Finishes => assert_eq!(state(0), Some("retired"), "[{tag}] {}", show(&states)),
        Then::IsAborted => assert_eq!(
            state(2),
            None,
            "[{tag}] the target kept a copy: {}",
            show(&states)
        ),
    }
    Run {
        tag,
        cut,
        a_pause_end,
        a_lost,
        a_stepped_after_pause,
        states,
        nodes,
    }
}

/// The partition heals: A follows B (its status names B the leader) and serves the shard
/// with the current map; nothing changes on the backends.
async fn heal(run: Run) {
    let (tag, nodes) = (&run.tag, &run.nodes);
    let (a, b, urls) = (&nodes.a, &nodes.b, &nodes.urls);
    let c = client();
    nodes.proxy.heal();
    let healed = Instant::now();
    wait_leader(a, &b.label).await;
    let row = key_in_shard(SHARD, SHARDS);
    let deadline = Instant::now() + LONG;
    loop {
        let body = cell(&row, "healed", 1, json!("after the partition"));
        let (s, v) = post_json(&c, &a.url("/v1/cells"), &body).await;
        if s == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "[{tag}] A never serves again: {s} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "[{tag}] A serves again {:?} after the heal",
        healed.elapsed()
    );
    let (s, v) = get_json(&c, &b.url(&format!("/v1/cells/{row}/healed"))).await;
    assert_eq!(s, 200, "[{tag}] {v}");
    assert_eq!(
        states_now(urls).await,
        run.states,
        "[{tag}] the states changed after the heal"
    );
}

// ---------------------------------------------------------------------------------------------
// B finishes the move; A's pause ends after the switch
// ---------------------------------------------------------------------------------------------

mod cutover;
mod found;
