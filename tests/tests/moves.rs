//! Live shard moves end to end, against real PostgreSQL servers: invariants I2, I3, I4 and
//! I6, requests held during the cutover, abort in every phase, revert and complete, the
//! backends and verify admin API, several nodes (map propagation, one mover leader) and the
//! catalog, through the HTTP APIs a user has.
//!
//! The clusters: db1 holds shards 0-3, db2 shards 4-7, db3 is a registered empty backend.
//! Node A leads the mover; a second node B (`--no-mover`) shares the catalog.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

async fn cluster() -> (TestServer, Vec<String>) {
    cluster_with(default_config()).await
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

/// Writes cells through the batch API (each must be stored: 201) and returns the stored cells.
async fn write_batch(c: &reqwest::Client, srv: &TestServer, cells: Vec<Value>) -> Vec<Value> {
    let mut stored = Vec::with_capacity(cells.len());
    for chunk in cells.chunks(1000) {
        let (s, v) = post_json(c, &srv.url("/v1/cells/batch"), &json!({ "cells": chunk })).await;
        assert_eq!(s, 200, "{v}");
        for (input, r) in chunk.iter().zip(v["results"].as_array().unwrap()) {
            assert_eq!(r["status"], 201, "{r}");
            assert_eq!(r["cell"]["body"], input["body"], "{r}");
            stored.push(r["cell"].clone());
        }
    }
    stored
}

/// Writes `n` cells to `shard` and returns them as stored.
async fn fill(srv: &TestServer, shard: u32, n: usize) -> Vec<Value> {
    let cells = (0..n)
        .map(|i| {
            cell(
                &key_in_shard(shard, SHARDS),
                "fill",
                i as i64,
                json!({"shard": shard, "i": i, "pad": "é✓".repeat(i % 7)}),
            )
        })
        .collect();
    write_batch(&client(), srv, cells).await
}

fn added_ids(cells: &[Value]) -> Vec<i64> {
    cells
        .iter()
        .map(|c| c["added_id"].as_i64().unwrap())
        .collect()
}

/// Polls `check` until it holds, panicking with `what` after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
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

/// A POST answered with its status, Retry-After, body and duration.
async fn timed_post(
    c: &reqwest::Client,
    url: &str,
    body: &Value,
) -> (u16, Option<String>, Value, Duration) {
    timed(c.post(url).json(body)).await
}

/// Status and raw text of a request (to look for secrets in the whole answer).
async fn text_of(req: reqwest::RequestBuilder) -> (u16, String) {
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The owner the admin API gives `shard`.
async fn owner_of(c: &reqwest::Client, srv: &TestServer, shard: u32) -> String {
    let (s, map) = get_json(c, &srv.url("/admin/v1/shards")).await;
    assert_eq!(s, 200, "{map}");
    map["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["start"].as_u64().unwrap() <= shard as u64
                && shard as u64 <= r["end"].as_u64().unwrap()
        })
        .map(|r| r["backend"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn admin_post(c: &reqwest::Client, srv: &TestServer, path: &str) -> (u16, Value) {
    post_json(c, &srv.url(path), &json!({})).await
}

/// A small deterministic generator (xorshift), seeded at random.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        Rng(Uuid::new_v4().as_u64_pair().0 | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

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

// ---------------------------------------------------------------------------------------------
// 2. I3 and I4 under load
// ---------------------------------------------------------------------------------------------

/// What a client was told was stored.
#[derive(Clone, Debug)]
struct Acked {
    shard: u32,
    body: Value,
    added_id: i64,
    created_at: Value,
}

type Coords = (String, String, i64);

fn coords(c: &Value) -> Coords {
    (
        c["row_key"].as_str().unwrap().to_owned(),
        c["column_name"].as_str().unwrap().to_owned(),
        c["ref_key"].as_i64().unwrap(),
    )
}

/// A body that is easy to change by accident: big and fractional numbers, escapes, Unicode,
/// nesting.
fn tricky_body(w: usize, i: i64) -> Value {
    serde_json::from_str(&format!(
        r#"{{"w":{w},"i":{i},"big":123456789012345678901234567890{i},"f":0.{i}5,"neg":-{i}.25,"s":"Zoë ✓ 日本 \"q\" \\ \n {i}","nested":{{"a":[1,{{"b":null}},[]],"t":true,"o":{{}}}}}}"#
    ))
    .unwrap()
}

#[derive(Default)]
struct Ledger {
    acked: HashMap<Coords, Acked>,
    order: Vec<Coords>,
    errors: Vec<String>,
}

impl Ledger {
    fn ack(&mut self, input: &Value, stored: &Value, shard: u32) {
        if stored["body"] != input["body"] {
            self.errors
                .push(format!("stored body differs: sent {input}, got {stored}"));
        }
        let k = coords(input);
        let prev = self.acked.insert(
            k.clone(),
            Acked {
                shard,
                body: input["body"].clone(),
                added_id: stored["added_id"].as_i64().unwrap_or(-1),
                created_at: stored["created_at"].clone(),
            },
        );
        if prev.is_some() {
            self.errors.push(format!("{k:?} acknowledged twice"));
        }
        self.order.push(k);
    }
}

const MOVING: [u32; 4] = [2, 3, 4, 5];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_load_a_move_loses_doubles_and_changes_nothing() {
    let (a, urls) = cluster().await;
    let b = node(no_mover(), &urls).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let nodes = [a.clone(), b.clone()];
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let c = client();

    // Cells before the move, in every shard (more in the moving ones, so the copy takes a while).
    for shard in 0..SHARDS {
        let n = if MOVING.contains(&shard) { 150 } else { 10 };
        let inputs: Vec<Value> = (0..n)
            .map(|i| cell(&key_in_shard(shard, SHARDS), "seed", i, tricky_body(99, i)))
            .collect();
        let stored = write_batch(&c, &a, inputs.clone()).await;
        let mut l = ledger.lock().unwrap();
        for (input, s) in inputs.iter().zip(&stored) {
            l.ack(input, s, shard);
        }
    }

    let stop_writers = Arc::new(AtomicBool::new(false));
    let stop_readers = Arc::new(AtomicBool::new(false));

    // Writers through both nodes: single cells and batches over moving and other shards.
    let writers: Vec<_> = (0..4usize)
        .map(|w| {
            let (srv, ledger, stop) = (nodes[w % 2].clone(), ledger.clone(), stop_writers.clone());
            tokio::spawn(async move {
                let c = client();
                let mut rng = Rng::new();
                let mut i = 0i64;
                let shard_of = |rng: &mut Rng| {
                    if rng.below(10) < 6 {
                        MOVING[rng.below(MOVING.len() as u64) as usize]
                    } else {
                        rng.below(SHARDS as u64) as u32
                    }
                };
                while !stop.load(Ordering::Acquire) {
                    let n = if rng.below(3) == 0 {
                        2 + rng.below(15) as usize
                    } else {
                        1
                    };
                    let mut inputs = Vec::with_capacity(n);
                    let mut shards = Vec::with_capacity(n);
                    for _ in 0..n {
                        let shard = shard_of(&mut rng);
                        i += 1;
                        shards.push(shard);
                        inputs.push(cell(
                            &key_in_shard(shard, SHARDS),
                            &format!("w{w}"),
                            i,
                            tricky_body(w, i),
                        ));
                    }
                    if n == 1 {
                        let (s, v) = post_json(&c, &srv.url("/v1/cells"), &inputs[0]).await;
                        let mut l = ledger.lock().unwrap();
                        match s {
                            201 => l.ack(&inputs[0], &v, shards[0]),
                            _ => l.errors.push(format!("write: {s} {v}")),
                        }
                    } else {
                        let (s, v) =
                            post_json(&c, &srv.url("/v1/cells/batch"), &json!({"cells": inputs}))
                                .await;
                        let mut l = ledger.lock().unwrap();
                        if s != 200 {
                            l.errors.push(format!("batch: {s} {v}"));
                            continue;
                        }
                        let results = v["results"].as_array().cloned().unwrap_or_default();
                        if results.len() != n {
                            l.errors.push(format!("batch: {n} cells, answer {v}"));
                            continue;
                        }
                        for ((input, r), shard) in inputs.iter().zip(&results).zip(&shards) {
                            match r["status"].as_u64() {
                                Some(201) => l.ack(input, &r["cell"], *shard),
                                _ => l.errors.push(format!("batch cell: {r}")),
                            }
                        }
                    }
                }
            })
        })
        .collect();

    // A reader of acknowledged cells through both nodes.
    let reader = {
        let (nodes, ledger, stop) = (nodes.clone(), ledger.clone(), stop_readers.clone());
        tokio::spawn(async move {
            let c = client();
            let mut rng = Rng::new();
            let mut reads = 0u64;
            while !stop.load(Ordering::Acquire) {
                let pick = {
                    let l = ledger.lock().unwrap();
                    let k = l.order[rng.below(l.order.len() as u64) as usize].clone();
                    let a = l.acked[&k].clone();
                    (k, a)
                };
                let ((row, col, r), want) = pick;
                let srv = &nodes[(reads % 2) as usize];
                reads += 1;
                let (s, v) = get_json(&c, &srv.url(&format!("/v1/cells/{row}/{col}/{r}"))).await;
                if s != 200 || v["body"] != want.body || v["added_id"] != want.added_id {
                    ledger
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("read {row}/{col}/{r}: {s} {v}, want {want:?}"));
                }
            }
            reads
        })
    };

    // A change-stream consumer per moving shard, paging by added_id through both nodes.
    let consumers: Vec<_> = MOVING
        .iter()
        .map(|&shard| {
            let (nodes, ledger, stop) = (nodes.clone(), ledger.clone(), stop_readers.clone());
            tokio::spawn(async move {
                let c = client();
                let mut seen: Vec<Value> = Vec::new();
                let mut after = 0i64;
                let mut pages = 0usize;
                loop {
                    let finished = stop.load(Ordering::Acquire);
                    let srv = &nodes[pages % 2];
                    pages += 1;
                    let (s, page) = get_json(
                        &c,
                        &srv.url(&format!(
                            "/v1/cells/partitionRead?partition_number={shard}&read_type=2&added_id={after}&limit=37"
                        )),
                    )
                    .await;
                    if s != 200 {
                        ledger
                            .lock()
                            .unwrap()
                            .errors
                            .push(format!("partitionRead {shard}: {s} {page}"));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    let page = page.as_array().cloned().unwrap_or_default();
                    for cell in &page {
                        let id = cell["added_id"].as_i64().unwrap();
                        assert!(id > after, "shard {shard}: {id} after {after}");
                        after = id;
                    }
                    let empty = page.is_empty();
                    seen.extend(page);
                    if finished && empty {
                        return (shard, seen);
                    }
                }
            })
        })
        .collect();

    let acked_now = || ledger.lock().unwrap().acked.len();
    let start = acked_now();
    eventually("writes under way", LONG, || async {
        acked_now() >= start + 100
    })
    .await;
    let id = start_move(
        &b,
        json!({"shards": "2-5", "to": "db3", "parallel": 2, "max_rows_per_sec": 1000}),
    )
    .await;
    let during = acked_now();
    let job = wait_job(&a, id, LONG, |j| j["state"] != "running").await;
    assert_eq!(job["state"], "switched", "{job}");
    let at_switch = acked_now();
    eprintln!(
        "load: {} cells acknowledged while the move ran; pauses (ms): {:?}",
        at_switch - during,
        job["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["pause_ms"].as_f64().unwrap_or(-1.0).round())
            .collect::<Vec<_>>()
    );
    eventually("writes after the move", LONG, || async {
        acked_now() >= at_switch + 100
    })
    .await;
    stop_writers.store(true, Ordering::Release);
    for w in writers {
        w.await.unwrap();
    }
    stop_readers.store(true, Ordering::Release);
    let reads = reader.await.unwrap();
    let mut streams = Vec::new();
    for h in consumers {
        streams.push(h.await.unwrap());
    }

    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    assert!(
        ledger.errors.is_empty(),
        "{} client errors, e.g. {:#?}",
        ledger.errors.len(),
        &ledger.errors[..ledger.errors.len().min(5)]
    );
    eprintln!(
        "load: {} cells acknowledged ({} after the switch), {reads} reads",
        ledger.acked.len(),
        ledger.acked.len() - at_switch
    );

    // I3: every acknowledged cell reads back once, identical; nothing else is there.
    let mut final_shards: HashMap<u32, Vec<Value>> = HashMap::new();
    for shard in 0..SHARDS {
        let cells = read_shard(&c, &a, shard).await;
        let mut found: HashMap<Coords, &Value> = HashMap::new();
        for cl in &cells {
            assert!(
                found.insert(coords(cl), cl).is_none(),
                "shard {shard}: {cl} twice"
            );
        }
        let mine: Vec<(&Coords, &Acked)> = ledger
            .acked
            .iter()
            .filter(|(_, a)| a.shard == shard)
            .collect();
        assert_eq!(
            cells.len(),
            mine.len(),
            "shard {shard}: {} cells stored, {} acknowledged",
            cells.len(),
            mine.len()
        );
        for (k, want) in mine {
            let got = found
                .get(k)
                .unwrap_or_else(|| panic!("shard {shard}: acknowledged {k:?} is lost"));
            assert_eq!(got["body"], want.body, "{k:?} changed");
            assert_eq!(got["added_id"], want.added_id, "{k:?} changed its added_id");
            assert_eq!(
                got["created_at"], want.created_at,
                "{k:?} changed created_at"
            );
        }
        final_shards.insert(shard, cells);
    }
    for shard in MOVING {
        assert_eq!(
            shard_state_in(&urls[2], shard).await.as_deref(),
            Some("active")
        );
        let src = if shard < 4 { &urls[0] } else { &urls[1] };
        assert_eq!(shard_state_in(src, shard).await.as_deref(), Some("retired"));
        assert_eq!(
            cells_in(&urls[2], shard).await,
            final_shards[&shard].len() as i64
        );
    }

    // The retired sources hold exactly the target's cells up to the switch (nothing written
    // there since, nothing different).
    let (s, report) = post_json(&c, &a.url("/admin/v1/verify"), &json!({"shards": "2-5"})).await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["ok"], true, "{report}");

    // I4: each consumer saw every cell of its shard once, in order, with the same added_id.
    for (shard, seen) in streams {
        let want = &final_shards[&shard];
        assert_eq!(
            added_ids(&seen),
            added_ids(want),
            "shard {shard}: the change stream differs"
        );
        assert_eq!(&seen, want, "shard {shard}: the change stream differs");
    }
}

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

// ---------------------------------------------------------------------------------------------
// 7. Backends
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backends_are_checked_masked_and_removed_only_when_empty() {
    let (srv, urls) = cluster().await;
    let c = client();
    let secret = "s3cr3t-Pw";
    let url = srv.url("/admin/v1/backends");
    let port = urls[0]
        .split(['@', '/'])
        .find_map(|p| p.strip_prefix("127.0.0.1:"))
        .unwrap()
        .to_owned();

    // Bad URLs and unreachable servers: a 4xx problem naming body.url, no password in it.
    let bad = [
        format!("postgres://postgres:{secret}@127.0.0.1:notaport/db"),
        format!("postgres://postgres:{secret}@127.0.0.1:{port}/x?sslmode=bogus"),
        format!("host=127.0.0.1 user=postgres password={secret} dbname"),
        format!("postgres://postgres:{secret}@127.0.0.1:1/nodb"),
        format!("postgres://postgres:{secret}@127.0.0.1:{port}/no_such_database"),
    ];
    for (i, u) in bad.iter().enumerate() {
        let (s, text) = text_of(
            c.post(&url)
                .json(&json!({"name": format!("bad{i}"), "url": u})),
        )
        .await;
        assert!((400..500).contains(&s), "{u}: {s} {text}");
        assert!(!text.contains(secret), "{u}: the password leaked: {text}");
        let p: Value = serde_json::from_str(&text).unwrap();
        assert!(
            p["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["location"] == "body.url")),
            "{u}: {p}"
        );
    }

    // A duplicate name.
    let spare = fresh_databases(1).await.remove(0);
    let (s, p) = post_json(&c, &url, &json!({"name": "db1", "url": spare})).await;
    assert_eq!(s, 409, "{p}");

    // A backend whose URL has a password (the test servers trust local connections).
    let with_pw = spare.replacen("postgres@", &format!("postgres:{secret}@"), 1);
    assert!(with_pw.contains(secret));
    let (s, text) = text_of(c.post(&url).json(&json!({"name": "db4", "url": with_pw}))).await;
    assert_eq!(s, 201, "{text}");
    assert!(!text.contains(secret), "the password leaked: {text}");
    let (s, text) = text_of(c.get(&url)).await;
    assert_eq!(s, 200, "{text}");
    assert!(!text.contains(secret), "the password leaked: {text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = list["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db1", "db2", "db3", "db4"]);
    let db4 = &list["backends"][3];
    assert!(db4["url"].as_str().unwrap().contains("***"), "{db4}");
    assert_eq!(db4["shards"], 0);
    let (_, text) = text_of(c.get(srv.url("/admin/v1/audit"))).await;
    assert!(!text.contains(secret), "the password leaked: {text}");

    // Removal: refused while the backend owns shards, done when it owns none.
    let (s, text) = text_of(c.delete(srv.url("/admin/v1/backends/db1"))).await;
    assert_eq!(s, 409, "{text}");
    let (s, text) = text_of(c.delete(srv.url("/admin/v1/backends/db4"))).await;
    assert_eq!(s, 204, "{text}");
    let (s, text) = text_of(c.delete(srv.url("/admin/v1/backends/db4"))).await;
    assert_eq!(s, 404, "{text}");
    let (_, list) = get_json(&c, &url).await;
    assert_eq!(list["backends"].as_array().unwrap().len(), 3, "{list}");
}

// ---------------------------------------------------------------------------------------------
// 8. verify
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_reports_exactly_the_rows_that_differ() {
    let (srv, urls) = cluster().await;
    let c = client();
    let one = fill(&srv, 1, 20).await;
    fill(&srv, 2, 20).await;
    let id = start_move(&srv, json!({"shards": "1-2", "to": "db3"})).await;
    wait_job_state(&srv, id, "switched", LONG).await;
    let verify = |shards: &'static str| {
        let c = c.clone();
        let url = srv.url("/admin/v1/verify");
        async move { post_json(&c, &url, &json!({ "shards": shards })).await }
    };
    let (s, r) = verify("1-2").await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["ok"], true, "{r}");

    // Tamper with the retired source of shard 1: one body changed, one row deleted.
    let ids = added_ids(&one);
    let (changed, deleted) = (ids[4], ids[11]);
    sql(
        &urls[0],
        &format!(
            "UPDATE cells_0001 SET body = '{{\"tampered\": true}}' WHERE added_id = {changed}; \
             DELETE FROM cells_0001 WHERE added_id = {deleted};"
        ),
    )
    .await;
    let (s, r) = verify("1").await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["ok"], false, "{r}");
    let report = &r["shards"][0];
    assert_eq!(report["shard"], 1);
    assert_eq!(report["owner"], "db3");
    assert_eq!(
        report["differences"],
        json!([
            {"kind": "changed", "backend": "db1", "added_id": changed, "columns": ["body"]},
            {"kind": "missing", "backend": "db1", "added_id": deleted},
        ]),
        "{r}"
    );
    assert_eq!(report["more"], false, "{r}");
    assert_eq!(report["problems"], json!([]), "{r}");
    // The untampered shard still verifies.
    let (s, r) = verify("2").await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["shards"][0]["differences"], json!([]), "{r}");
    let (_, r) = verify("1-2").await;
    assert_eq!(r["ok"], false, "{r}");
}

// ---------------------------------------------------------------------------------------------
// 9. Several nodes: map propagation and one mover leader
// ---------------------------------------------------------------------------------------------

async fn status(c: &reqwest::Client, srv: &TestServer) -> Value {
    let (s, v) = get_json(c, &srv.url("/admin/v1/status")).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// When the change recorded by the newest audit entry of `kind` matching `detail` was made.
async fn audited_at(
    c: &reqwest::Client,
    srv: &TestServer,
    kind: &str,
    detail: impl Fn(&Value) -> bool,
) -> chrono::DateTime<chrono::Utc> {
    let (_, audit) = get_json(c, &srv.url("/admin/v1/audit?limit=50")).await;
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == kind && detail(&e["detail"]))
        .unwrap_or_else(|| panic!("no {kind} in the audit log: {audit}"))
        .clone();
    chrono::DateTime::parse_from_rfc3339(entry["at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// Runs `change` (through node A) and returns when node B's status first showed a map
/// version above `before`.
async fn seen_by(
    b: &TestServer,
    before: i64,
    change: impl Future<Output = ()>,
) -> chrono::DateTime<chrono::Utc> {
    let url = b.url("/admin/v1/status");
    let poller = tokio::spawn(async move {
        let c = client();
        // A bound against a hang, not a performance figure: the fallback re-read is an hour
        // away, so only a NOTIFY can bring the change.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, v) = get_json(&c, &url).await;
            if v["map_version"].as_i64().unwrap_or(0) > before {
                return chrono::Utc::now();
            }
            assert!(Instant::now() < deadline, "node B never saw the change");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    change.await;
    poller.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn map_changes_reach_every_node_and_one_mover_node_leads() {
    // The --no-mover node starts first: it would win the leadership if it ran for it. Its
    // fallback re-read is an hour away, so every change below reaches it by NOTIFY alone.
    let mut b_config = no_mover();
    b_config.catalog_poll_interval = Duration::from_secs(3600);
    let (b, urls) = cluster_with(b_config).await;
    let a = node(default_config(), &urls).await;
    let c = client();
    eventually("a leader", LONG, || async {
        !status(&c, &b).await["leader"].is_null()
    })
    .await;
    let s = status(&c, &b).await;
    assert_eq!(s["leader"]["id"], a.state.node_id, "{s}");
    let mut lags: Vec<Duration> = Vec::new();
    let mut record =
        |what: &str, seen: chrono::DateTime<chrono::Utc>, at: chrono::DateTime<chrono::Utc>| {
            let lag = (seen - at).to_std().unwrap_or_default();
            eprintln!("propagation of {what}: {lag:?}");
            lags.push(lag);
        };

    // A move: its start and its switch, made by node A (the leader), seen by node B.
    fill(&a, 1, 10).await;
    let v = status(&c, &b).await["map_version"].as_i64().unwrap();
    let mut id = 0;
    let seen = seen_by(&b, v, async {
        id = start_move(&a, json!({"shards": "1", "to": "db3"})).await;
    })
    .await;
    record(
        "move start",
        seen,
        audited_at(&c, &a, "move_start", |d| d["shards"] == "1").await,
    );
    let v = status(&c, &b).await["map_version"].as_i64().unwrap();
    let seen = seen_by(&b, v, async {
        wait_job_state(&a, id, "switched", LONG).await;
    })
    .await;
    record(
        "switch",
        seen,
        audited_at(&c, &a, "switch", |d| d["move"] == id).await,
    );

    // Backends added and removed through node A.
    let spare = fresh_databases(1).await.remove(0);
    for round in 0..4 {
        let v = status(&c, &b).await["map_version"].as_i64().unwrap();
        let seen = seen_by(&b, v, async {
            let (s, r) = post_json(
                &c,
                &a.url("/admin/v1/backends"),
                &json!({"name": "db4", "url": spare}),
            )
            .await;
            assert_eq!(s, 201, "{r}");
        })
        .await;
        record(
            &format!("backend add #{round}"),
            seen,
            audited_at(&c, &a, "backend_add", |d| d["name"] == "db4").await,
        );
        let v = status(&c, &b).await["map_version"].as_i64().unwrap();
        let seen = seen_by(&b, v, async {
            let (s, _) = text_of(c.delete(a.url("/admin/v1/backends/db4"))).await;
            assert_eq!(s, 204);
        })
        .await;
        record(
            &format!("backend remove #{round}"),
            seen,
            audited_at(&c, &a, "backend_remove", |d| d["name"] == "db4").await,
        );
    }
    lags.sort();
    let (median, max) = (lags[lags.len() / 2], lags[lags.len() - 1]);
    eprintln!(
        "map propagation node A -> node B over {} changes: median {median:?}, max {max:?}",
        lags.len()
    );
    assert_eq!(
        status(&c, &a).await["map_version"],
        status(&c, &b).await["map_version"]
    );

    // One leader, never the --no-mover node; a third node may lead, and takes over.
    let third = node(default_config(), &urls).await;
    let ids = [
        a.state.node_id.clone(),
        b.state.node_id.clone(),
        third.state.node_id.clone(),
    ];
    let sa = status(&c, &a).await;
    assert_eq!(sa["leader"]["id"], ids[0], "{sa}");
    assert_eq!(sa["node"]["mover"], true);
    for srv in [&b, &third] {
        let s = status(&c, srv).await;
        assert_eq!(s["leader"], sa["leader"], "{s}");
    }
    assert_eq!(status(&c, &b).await["node"]["mover"], false);
    a.stop().await;
    let mut leaders = Vec::new();
    let deadline = Instant::now() + LONG;
    loop {
        let s = status(&c, &b).await;
        leaders.push(s["leader"].clone());
        if s["leader"]["id"] == ids[2] {
            break;
        }
        assert!(Instant::now() < deadline, "no new leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Until PostgreSQL has seen the old leader's session end, it may still be named.
    assert!(
        leaders
            .iter()
            .all(|l| l.is_null() || l["id"] == ids[0] || l["id"] == ids[2]),
        "{leaders:?}"
    );
    let s = status(&c, &third).await;
    assert_eq!(
        s["leader"]["addr"],
        third.base.trim_start_matches("http://")
    );
}

// ---------------------------------------------------------------------------------------------
// 10. The catalog
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_catalog_keeps_num_shards_exports_the_map_and_audits_changes() {
    let (srv, urls) = cluster().await;
    let c = client();

    // Another NUM_SHARDS over the same databases: refused, saying why.
    match TestServer::try_start(default_config(), even_map(&urls[..2], SHARDS * 2)).await {
        Ok(_) => panic!("a node with another NUM_SHARDS started"),
        Err(e) => {
            let m = e.to_string();
            assert!(
                m.contains(&format!("NUM_SHARDS={SHARDS}"))
                    && m.contains(&format!("NUM_SHARDS={}", SHARDS * 2)),
                "{m}"
            );
        }
    }

    fill(&srv, 5, 10).await;
    let id = start_move(&srv, json!({"shards": "5", "to": "db3"})).await;
    wait_job_state(&srv, id, "switched", LONG).await;

    // The export is a valid shards.json naming the new owner.
    let (s, file) = get_json(&c, &srv.url("/admin/v1/shards/export")).await;
    assert_eq!(s, 200, "{file}");
    let map = mezzanine_core::ShardMap::parse(&file.to_string(), SHARDS)
        .unwrap_or_else(|e| panic!("export is not a valid shards.json: {e}\n{file}"));
    for s in 0..SHARDS {
        let want = match s {
            5 => "db3",
            0..=3 => "db1",
            _ => "db2",
        };
        assert_eq!(map.owner_name(s), Some(want), "shard {s}: {file}");
    }
    let db3 = map.backends().iter().find(|b| b.name == "db3").unwrap();
    assert_eq!(db3.database_url, urls[2]);
    // A node started from the export serves the moved shard from its new place.
    let other = TestServer::start(no_mover(), map).await;
    let row = key_in_shard(5, SHARDS);
    write_one(&c, &other, &row, "via_export", 1).await;
    assert!(holds_row(&urls[2], 5, &row).await);

    // The audit log has the backend's registration and the move's switch.
    let (s, audit) = get_json(&c, &srv.url("/admin/v1/audit")).await;
    assert_eq!(s, 200, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "backend_add" && e["detail"]["name"] == "db3"),
        "{audit}"
    );
    assert!(
        entries.iter().any(|e| e["kind"] == "switch"
            && e["detail"]["move"] == id
            && e["detail"]["shard"] == 5
            && e["detail"]["from"] == "db2"
            && e["detail"]["to"] == "db3"),
        "{audit}"
    );
    assert!(
        entries
            .iter()
            .all(|e| e["node"].is_string() && e["at"].is_string()),
        "{audit}"
    );
}
