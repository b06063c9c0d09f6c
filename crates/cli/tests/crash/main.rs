//! I5 — crash safety of live moves (DESIGN §5), with the real `mezzanine` binary.
//!
//! For each phase of a move (`copying`, `catching_up`, right after the freeze, right after
//! the map switch, and during the cleanup that `complete` starts), the mover's leader — node
//! `a`, started with `MEZZANINE_FAILPOINTS=<phase>=30s` so that it pauses exactly there — is
//! killed with SIGKILL. Node `b` must take the leadership over and finish the move, while a
//! client load through `b` (single and batch writes, reads, and a partitionRead consumer per
//! moving shard) keeps running and sees no error. Afterwards:
//!
//! - I3: every acknowledged write is readable, once, identical to its acknowledgement;
//! - I4: each consumer, paging by `added_id` across the move, saw every cell once, in order,
//!   with the `added_id` it has now;
//! - `POST /admin/v1/verify` reports the moved shards sound, and the backends' shard states
//!   say where each copy stands.
//!
//! Each test gets fresh databases (db1 and db2 own the shards; db3 is a spare registered
//! through the admin API) on two throwaway PostgreSQL servers shared by this binary. Every
//! child process is killed when its guard drops, also when a test fails.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mezzanine_e2e::{
    client, connect, create_database, free_port, get_json, key_in_shard, post_json, shard_state_in,
    shared_pg,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_mezzanine");
const NUM_SHARDS: u32 = 8;
/// The moving shards: 1 from db1 (on the same PostgreSQL server as db3, and holding the
/// catalog), 5 from db2 (on the other server).
const MOVING: [u32; 2] = [1, 5];
const OTHERS: [u32; 6] = [0, 2, 3, 4, 6, 7];
/// Cells written to each moving shard before the move starts.
const SEED_PER_SHARD: usize = 300;
/// `MOVE_HOLD_TIMEOUT` of the nodes (the default, set explicitly).
const HOLD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the leader pauses at its failpoint: far longer than the test needs to kill it.
const FAILPOINT_PAUSE: &str = "30s";

// ---------------------------------------------------------------------------------------
// PostgreSQL: the shared harness (`shared_pg`, `create_database`, `connect`,
// `shard_state_in`) of `tests/src/lib.rs`.

/// The number of cells of `shard` in a backend database; `None` without the table.
async fn cells_in(url: &str, shard: u32) -> Option<i64> {
    let c = connect(url).await;
    c.query(&format!("SELECT count(*) FROM cells_{shard:04}"), &[])
        .await
        .ok()
        .and_then(|rows| rows.first().map(|r| r.get::<_, i64>(0)))
}

// ---------------------------------------------------------------------------------------
// mezzanine nodes

/// A `mezzanine serve` process; SIGKILLed when dropped (and its log tail printed if the
/// test is failing).
struct Node {
    id: &'static str,
    base: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts a node and waits until it is ready. The port is picked free just before; if
    /// it got taken meanwhile, the start is retried on another.
    async fn start(
        c: &reqwest::Client,
        id: &'static str,
        shards_json: &Path,
        failpoints: &str,
        dir: &Path,
    ) -> Node {
        for attempt in 1.. {
            let mut node = Node::spawn(id, shards_json, failpoints, dir);
            match node.wait_ready(c).await {
                Ok(()) => return node,
                Err(log) if attempt < 3 && log.contains("cannot listen on") => {
                    eprintln!("node {id}: port taken, retrying:\n{log}");
                }
                Err(log) => panic!("node {id} exited early:\n{log}"),
            }
        }
        unreachable!()
    }

    fn spawn(id: &'static str, shards_json: &Path, failpoints: &str, dir: &Path) -> Node {
        let port = free_port();
        let log = dir.join(format!("node-{id}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .env_clear()
            .env("SHARD_CONFIG_PATH", shards_json)
            .env("NUM_SHARDS", NUM_SHARDS.to_string())
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("LOG_FORMAT", "text")
            .env("LOG_LEVEL", "info")
            .env("NO_COLOR", "1")
            .env("NODE_ID", id)
            .env("MEZZANINE_FAILPOINTS", failpoints)
            .env("TOKENS", mezzanine_e2e::harness_tokens())
            .env("DB_QUERY_TIMEOUT", "2s")
            .env("MOVE_HOLD_TIMEOUT", format!("{}s", HOLD_TIMEOUT.as_secs()))
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        Node {
            id,
            base: format!("http://127.0.0.1:{port}"),
            log,
            child: Some(child),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until `/v1/readyz` answers 200; `Err(log tail)` if the process exited.
    async fn wait_ready(&mut self, c: &reqwest::Client) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = c.get(self.url("/v1/readyz")).send().await {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("({status})\n{}", self.tail(60)));
            }
            assert!(
                Instant::now() < deadline,
                "node {} not ready:\n{}",
                self.id,
                self.tail(60)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the log holds at least `count` lines that satisfy `matches`.
    async fn wait_log(&self, what: &str, count: usize, matches: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.log_text().lines().filter(|l| matches(l)).count() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {}: {count} × {what:?} not logged within 60 s:\n{}",
                self.id,
                self.tail(60)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL (`Child::kill` is SIGKILL on Unix) and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            let status = child.wait().unwrap();
            assert!(
                !status.success(),
                "node {} was not killed: {status}",
                self.id
            );
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- node {} log ({}), last lines -----\n{}",
                self.id,
                self.log.display(),
                self.tail(120)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP helpers

/// Waits until `GET /admin/v1/status` on `node` names `leader` as the mover's leader.
async fn wait_leader(c: &reqwest::Client, node: &Node, leader: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (s, v) = get_json(c, &node.url("/admin/v1/status")).await;
        if s == 200 && v["leader"]["id"] == leader {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{leader} does not lead within {within:?}; status on {}: {s} {v}",
            node.id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `GET /admin/v1/moves/{id}` on `node` until `done(job)`; returns the job.
async fn wait_job(
    c: &reqwest::Client,
    node: &Node,
    id: i64,
    within: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (s, job) = get_json(c, &node.url(&format!("/admin/v1/moves/{id}"))).await;
        if s == 200 && done(&job) {
            return job;
        }
        assert!(
            !(s == 200 && matches!(job["state"].as_str(), Some("failed" | "aborted"))),
            "move {id} ended badly while waiting for {what}: {job}"
        );
        assert!(
            Instant::now() < deadline,
            "move {id}: not {what} within {within:?}: {s} {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn shard_states(job: &Value) -> Vec<(u64, String)> {
    job["shards"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["shard"].as_u64().unwrap_or(u64::MAX),
                        s["state"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A cell body with what JSONB could plausibly alter: non-ASCII text, escapes, a decimal
/// with a trailing zero, a number beyond i64, nesting.
fn body(n: u64) -> Value {
    serde_json::from_str(&format!(
        r#"{{"n": {n}, "text": "naïve ☃ \"quoted\" \\ tab\t{n}", "price": 1.50, "big": 123456789012345678901234567890, "list": [1, 2.0, null, true, {{"deep": "x"}}]}}"#
    ))
    .unwrap()
}

fn new_cell(shard: u32, column: &str, ref_key: i64, n: u64) -> Value {
    json!({
        "row_key": key_in_shard(shard, NUM_SHARDS).to_string(),
        "column_name": column,
        "ref_key": ref_key,
        "body": body(n),
    })
}

fn cell_key(cell: &Value) -> (String, String, i64) {
    (
        cell["row_key"].as_str().unwrap_or_default().to_owned(),
        cell["column_name"].as_str().unwrap_or_default().to_owned(),
        cell["ref_key"].as_i64().unwrap_or(i64::MIN),
    )
}

fn shard_of(cell: &Value) -> u32 {
    let k: Uuid = cell["row_key"].as_str().unwrap().parse().unwrap();
    mezzanine_core::shard_for_row_key(&k, NUM_SHARDS)
}

/// Every cell of `shard`, paging partitionRead by `added_id`.
async fn scan(c: &reqwest::Client, node: &Node, shard: u32) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut last = 0i64;
    loop {
        let (s, page) = get_json(
            c,
            &node.url(&format!(
                "/v1/cells/partitionRead?partition_number={shard}&read_type=2&added_id={last}&limit=1000"
            )),
        )
        .await;
        assert_eq!(s, 200, "partitionRead of shard {shard}: {page}");
        let cells = page.as_array().cloned().unwrap_or_default();
        if cells.is_empty() {
            return out;
        }
        for cell in cells {
            let id = cell["added_id"].as_i64().unwrap();
            assert!(id > last, "shard {shard}: added_id {id} after {last}");
            last = id;
            out.push(cell);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The client load

/// A request that did not succeed.
#[derive(Debug)]
struct Failure {
    /// Since the test started.
    at: Duration,
    what: String,
    /// `None` for a transport error.
    status: Option<u16>,
    latency: Duration,
    detail: String,
}

/// What the clients saw.
#[derive(Default)]
struct Record {
    /// Stored cells as acknowledged by a write (201).
    acked: Vec<Value>,
    failures: Vec<Failure>,
    /// Answers that contradict an acknowledgement, or a consumer going backwards.
    mismatches: Vec<String>,
    reads: usize,
    /// Slowest successful request of the moving shards (held during a cutover).
    slowest: Duration,
}

type Shared = Arc<Mutex<Record>>;

fn lock(rec: &Shared) -> std::sync::MutexGuard<'_, Record> {
    rec.lock().unwrap_or_else(|e| e.into_inner())
}

struct Ctx {
    c: reqwest::Client,
    base: String,
    rec: Shared,
    t0: Instant,
}

impl Ctx {
    fn fail(&self, what: String, status: Option<u16>, started: Instant, detail: String) {
        lock(&self.rec).failures.push(Failure {
            at: started.duration_since(self.t0),
            what,
            status,
            latency: started.elapsed(),
            detail,
        });
    }

    fn ok(&self, started: Instant, moving: bool) {
        let mut r = lock(&self.rec);
        if moving {
            r.slowest = r.slowest.max(started.elapsed());
        }
    }

    /// Sends a request; `Some((status, json))` or `None` after recording a transport error.
    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Option<(u16, Value)> {
        let started = Instant::now();
        match req.send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                let v = r.json().await.unwrap_or(Value::Null);
                if !(200..300).contains(&s) {
                    self.fail(
                        what.to_owned(),
                        Some(s),
                        started,
                        v["detail"].as_str().unwrap_or(&v.to_string()).to_owned(),
                    );
                }
                Some((s, v))
            }
            Err(e) => {
                self.fail(what.to_owned(), None, started, e.to_string());
                None
            }
        }
    }

    /// Checks an acknowledged cell against what was sent and records it.
    fn ack(&self, sent: &Value, got: Value) {
        let mut r = lock(&self.rec);
        if cell_key(sent) != cell_key(&got) || sent["body"] != got["body"] {
            r.mismatches
                .push(format!("acknowledged {got} for the write of {sent}"));
        }
        r.acked.push(got);
    }
}

/// Writes single cells: every other one to a moving shard.
async fn single_writer(ctx: Arc<Ctx>, stop: Arc<AtomicBool>) {
    let mut rng = StdRng::from_entropy();
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        let shard = match n % 4 {
            0 => MOVING[0],
            1 => MOVING[1],
            _ => OTHERS[rng.gen_range(0..OTHERS.len())],
        };
        let cell = new_cell(shard, "single", n as i64, n);
        let started = Instant::now();
        let req = ctx.c.post(format!("{}/v1/cells", ctx.base)).json(&cell);
        if let Some((s, v)) = ctx
            .send(&format!("POST /v1/cells (shard {shard})"), req)
            .await
        {
            if s == 201 {
                ctx.ok(started, MOVING.contains(&shard));
                ctx.ack(&cell, v);
            } else if (200..300).contains(&s) {
                lock(&ctx.rec)
                    .mismatches
                    .push(format!("a new cell answered {s}: {v}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Writes batches of six cells: two per moving shard, two elsewhere.
async fn batch_writer(ctx: Arc<Ctx>, stop: Arc<AtomicBool>) {
    let mut rng = StdRng::from_entropy();
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        let cells: Vec<Value> = [MOVING[0], MOVING[0], MOVING[1], MOVING[1], 0, 0]
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let s = if i >= 4 {
                    OTHERS[rng.gen_range(0..OTHERS.len())]
                } else {
                    s
                };
                new_cell(s, "batch", n as i64, n * 10 + i as u64)
            })
            .collect();
        let started = Instant::now();
        let req = ctx
            .c
            .post(format!("{}/v1/cells/batch", ctx.base))
            .json(&json!({ "cells": cells }));
        if let Some((200, v)) = ctx.send("POST /v1/cells/batch", req).await {
            let results = v["results"].as_array().cloned().unwrap_or_default();
            if results.len() != cells.len() {
                lock(&ctx.rec)
                    .mismatches
                    .push(format!("batch of {} answered {v}", cells.len()));
            }
            let mut all_ok = true;
            for (sent, r) in cells.iter().zip(results) {
                match r["status"].as_u64() {
                    Some(201) => ctx.ack(sent, r["cell"].clone()),
                    other => {
                        all_ok = false;
                        ctx.fail(
                            format!("POST /v1/cells/batch, cell of shard {}", shard_of(sent)),
                            other.map(|s| s as u16),
                            started,
                            r["error"]["detail"].to_string(),
                        );
                    }
                }
            }
            if all_ok {
                ctx.ok(started, true);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads acknowledged cells back (exact version, latest of the column, whole row), mostly
/// from the moving shards, and compares them with their acknowledgement.
async fn reader(ctx: Arc<Ctx>, stop: Arc<AtomicBool>) {
    let mut rng = StdRng::from_entropy();
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        let pick = {
            let r = lock(&ctx.rec);
            let len = r.acked.len();
            (len > 0).then(|| r.acked[rng.gen_range(0..len)].clone())
        };
        let Some(want) = pick else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let (row, col, rk) = cell_key(&want);
        let shard = shard_of(&want);
        let (path, kind) = match n % 3 {
            0 => (format!("/v1/cells/{row}/{col}/{rk}"), 0),
            1 => (format!("/v1/cells/{row}/{col}"), 1),
            _ => (format!("/v1/cells/{row}"), 2),
        };
        let started = Instant::now();
        let req = ctx.c.get(format!("{}{path}", ctx.base));
        if let Some((s, v)) = ctx.send(&format!("GET (shard {shard})"), req).await {
            if s == 200 {
                ctx.ok(started, MOVING.contains(&shard));
                // Every row key is used once, so the latest version is the acknowledged one.
                let got = if kind == 2 {
                    match v["cells"].as_array().map(Vec::as_slice) {
                        Some([one]) if v["row_key"] == want["row_key"] => one.clone(),
                        _ => v.clone(),
                    }
                } else {
                    v.clone()
                };
                let mut r = lock(&ctx.rec);
                r.reads += 1;
                if got != want {
                    r.mismatches
                        .push(format!("GET {path} answered {v}, acknowledged {want}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A partitionRead consumer of `shard` paging by `added_id` (pages of 50) until `stop` and
/// the end of the shard; returns every cell it saw, in order.
async fn consumer(ctx: Arc<Ctx>, shard: u32, stop: Arc<AtomicBool>) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut last = 0i64;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let url = format!(
            "{}/v1/cells/partitionRead?partition_number={shard}&read_type=2&added_id={last}&limit=50",
            ctx.base
        );
        let started = Instant::now();
        let page = ctx
            .send(
                &format!("GET partitionRead (shard {shard})"),
                ctx.c.get(url),
            )
            .await;
        match page {
            Some((200, Value::Array(cells))) => {
                ctx.ok(started, true);
                if cells.is_empty() {
                    if stopping {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                for cell in cells {
                    let id = cell["added_id"].as_i64().unwrap_or(i64::MIN);
                    if id <= last {
                        lock(&ctx.rec).mismatches.push(format!(
                            "consumer of shard {shard}: added_id {id} after {last}"
                        ));
                    }
                    last = last.max(id);
                    seen.push(cell);
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The running load.
struct Load {
    ctx: Arc<Ctx>,
    stop_writers: Arc<AtomicBool>,
    stop_consumers: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    consumers: Vec<(u32, tokio::task::JoinHandle<Vec<Value>>)>,
}

impl Load {
    fn start(ctx: Arc<Ctx>) -> Load {
        let stop_writers = Arc::new(AtomicBool::new(false));
        let stop_consumers = Arc::new(AtomicBool::new(false));
        let workers = vec![
            tokio::spawn(single_writer(ctx.clone(), stop_writers.clone())),
            tokio::spawn(batch_writer(ctx.clone(), stop_writers.clone())),
            tokio::spawn(reader(ctx.clone(), stop_writers.clone())),
        ];
        let consumers = MOVING
            .iter()
            .map(|&s| {
                (
                    s,
                    tokio::spawn(consumer(ctx.clone(), s, stop_consumers.clone())),
                )
            })
            .collect();
        Load {
            ctx,
            stop_writers,
            stop_consumers,
            workers,
            consumers,
        }
    }

    fn acked(&self) -> usize {
        lock(&self.ctx.rec).acked.len()
    }

    /// Waits until `more` further writes are acknowledged.
    async fn wait_acks(&self, more: usize) {
        let want = self.acked() + more;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.acked() < want {
            assert!(
                Instant::now() < deadline,
                "the load made no progress: {} of {want} writes acknowledged; failures: {:?}",
                self.acked(),
                lock(&self.ctx.rec).failures
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the writers and readers, lets each consumer read to the end; returns what each
    /// consumer saw.
    async fn stop(mut self) -> BTreeMap<u32, Vec<Value>> {
        self.stop_writers.store(true, Ordering::Release);
        for w in std::mem::take(&mut self.workers) {
            w.await.unwrap();
        }
        self.stop_consumers.store(true, Ordering::Release);
        let mut out = BTreeMap::new();
        for (s, h) in std::mem::take(&mut self.consumers) {
            out.insert(s, h.await.unwrap());
        }
        out
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop_writers.store(true, Ordering::Release);
        self.stop_consumers.store(true, Ordering::Release);
        for w in &self.workers {
            w.abort();
        }
        for (_, h) in &self.consumers {
            h.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The scenario

mod scenario;
