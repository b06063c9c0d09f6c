//! The exact `created_at` stream (invariant I7): within a shard `created_at` strictly
//! increases in commit order (so with `added_id`), so a reader paging `partitionRead` with
//! `read_type=1` by the last `created_at` it got skips nothing and repeats nothing: for a
//! batch larger than a page, while 16 clients write, across a live move of the shard, and
//! after the shard's clock went back.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mezzanine_e2e::*;
use serde_json::{json, Value};

const SHARDS: u32 = 8;
const LONG: Duration = Duration::from_secs(90);

/// One `read_type=1` page of `shard` after `after` (from the start when `None`).
async fn page_after(
    c: &reqwest::Client,
    srv: &TestServer,
    shard: u32,
    after: Option<&str>,
    limit: u32,
) -> Vec<Value> {
    let mut path =
        format!("/v1/cells/partitionRead?partition_number={shard}&read_type=1&limit={limit}");
    if let Some(a) = after {
        path.push_str(&format!("&created_after={}", a.replace('+', "%2B")));
    }
    let (s, page) = get_json(c, &srv.url(&path)).await;
    assert_eq!(s, 200, "{page}");
    page.as_array().cloned().unwrap_or_default()
}

fn created(cell: &Value) -> DateTime<Utc> {
    let s = cell["created_at"].as_str().unwrap();
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn added_id(cell: &Value) -> i64 {
    cell["added_id"].as_i64().unwrap()
}

/// Reads `shard` by `created_at` pages of `limit` until an empty page; returns the cells and
/// the size of each page.
async fn read_all_by_time(
    c: &reqwest::Client,
    srv: &TestServer,
    shard: u32,
    limit: u32,
) -> (Vec<Value>, Vec<usize>) {
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = page_after(c, srv, shard, after.as_deref(), limit).await;
        let Some(last) = page.last() else {
            return (seen, sizes);
        };
        after = Some(last["created_at"].as_str().unwrap().to_owned());
        sizes.push(page.len());
        seen.extend(page);
        assert!(sizes.len() < 10_000, "paging did not end");
    }
}

/// Every cell of the shard (by `added_id`): `created_at` strictly increases with `added_id`.
async fn assert_created_at_follows_added_id(c: &reqwest::Client, srv: &TestServer, shard: u32) {
    let all = read_shard(c, srv, shard).await;
    for w in all.windows(2) {
        assert!(
            created(&w[0]) < created(&w[1]),
            "created_at does not increase with added_id: {} then {}",
            w[0],
            w[1]
        );
    }
}

/// Asserts that `seen` (a reader's cells, in the order read) holds every acknowledged cell
/// exactly once, nothing twice, in `added_id` order.
fn assert_exactly_once(seen: &[Value], acked: &BTreeSet<i64>) {
    let ids: Vec<i64> = seen.iter().map(added_id).collect();
    let unique: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "cells read twice: {ids:?}");
    let missed: Vec<i64> = acked.difference(&unique).copied().collect();
    assert!(
        missed.is_empty(),
        "{} of {} acknowledged cells never read by created_at: {missed:?}",
        missed.len(),
        acked.len()
    );
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "read out of added_id order: {ids:?}"
    );
}

/// Makes cell `id` of `shard` (its latest) look written by a clock an hour ahead: its
/// `created_at`, and the shard's latest `created_at` in its state row (a column older
/// versions lack: then only the cell changes).
async fn clock_ahead(url: &str, shard: u32, id: i64) {
    let db = connect(url).await;
    db.execute(
        &format!(
            "UPDATE cells_{shard:04} SET created_at = now() + interval '1 hour' WHERE added_id = $1"
        ),
        &[&id],
    )
    .await
    .unwrap();
    let _ = db
        .execute(
            "UPDATE mezzanine_shard_state SET last_created_at = now() + interval '1 hour' \
             WHERE shard = $1",
            &[&(shard as i32)],
        )
        .await;
}

#[tokio::test]
async fn a_batch_larger_than_a_page_is_read_whole_page_by_page() {
    let (srv, _urls) = TestServer::fresh(1, SHARDS).await;
    let c = client();
    let shard = 3;
    let row = key_in_shard(shard, SHARDS);
    let cells: Vec<Value> = (0..300)
        .map(|i| cell(&row, &format!("c{i:03}"), 1, json!({"i": i})))
        .collect();
    let (s, v) = post_json(&c, &srv.url("/v1/cells/batch"), &json!({ "cells": cells })).await;
    assert_eq!(s, 200, "{v}");
    let written: Vec<i64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["status"], 201, "{r}");
            added_id(&r["cell"])
        })
        .collect();
    assert_eq!(written.len(), 300);

    let (seen, sizes) = read_all_by_time(&c, &srv, shard, 100).await;
    assert!(
        sizes.iter().all(|&n| n <= 100),
        "a page past its limit: {sizes:?}"
    );
    let ids: Vec<i64> = seen.iter().map(added_id).collect();
    assert_eq!(ids, written, "pages {sizes:?}");
    assert_created_at_follows_added_id(&c, &srv, shard).await;
    srv.stop().await;
}

/// What writers acknowledged, by `added_id`.
#[derive(Default)]
struct Acked(Mutex<BTreeSet<i64>>);

impl Acked {
    fn add(&self, id: i64) {
        self.0.lock().unwrap().insert(id);
    }
    fn all(&self) -> BTreeSet<i64> {
        self.0.lock().unwrap().clone()
    }
}

/// `n` clients writing single cells and small batches into `shard` (the batches also touch
/// other shards) through `srv` until `stop`; acknowledged cells of `shard` go to `acked`.
fn writers(
    srv: Arc<TestServer>,
    shard: u32,
    n: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Acked>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|w| {
            let (srv, stop, acked) = (srv.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let c = client();
                let mut i = 0i64;
                while !stop.load(Ordering::Acquire) {
                    i += 1;
                    let row = key_in_shard(shard, SHARDS);
                    if i % 4 == 0 {
                        // A batch of 5 cells in `shard` and one in each of three other
                        // shards: one transaction that locks the shards in ascending order.
                        let mut batch: Vec<Value> = (0..5)
                            .map(|k| cell(&row, &format!("w{w}b{k}"), i, json!({"w": w, "i": i})))
                            .collect();
                        for other in (0..SHARDS).filter(|&o| o != shard).take(3) {
                            let k = key_in_shard(other, SHARDS);
                            batch.push(cell(&k, &format!("w{w}"), i, json!({"w": w, "i": i})));
                        }
                        let (s, v) =
                            post_json(&c, &srv.url("/v1/cells/batch"), &json!({"cells": batch}))
                                .await;
                        if s == 200 {
                            let results = v["results"].as_array().cloned().unwrap_or_default();
                            for r in results.iter().take(5) {
                                if r["status"] == 201 {
                                    acked.add(added_id(&r["cell"]));
                                }
                            }
                        }
                    } else {
                        let body = json!({"w": w, "i": i});
                        let (s, v) = post_json(
                            &c,
                            &srv.url("/v1/cells"),
                            &cell(&row, &format!("w{w}"), i, body),
                        )
                        .await;
                        if s == 201 {
                            acked.add(added_id(&v));
                        }
                    }
                }
            })
        })
        .collect()
}

/// A reader tailing `shard` by `created_at` (pages of 50) until `stop` is set and a page read
/// after that is empty. Returns every cell it read, in order.
fn tail(
    srv: Arc<TestServer>,
    shard: u32,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Value>> {
    tokio::spawn(async move {
        let c = client();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let stopped = stop.load(Ordering::Acquire);
            let page = page_after(&c, &srv, shard, after.as_deref(), 50).await;
            match page.last() {
                Some(last) => after = Some(last["created_at"].as_str().unwrap().to_owned()),
                None if stopped => return seen,
                None => tokio::time::sleep(Duration::from_millis(2)).await,
            }
            seen.extend(page);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_tailing_by_created_at_sees_every_cell_of_16_concurrent_writers_once() {
    let (srv, _urls) = TestServer::fresh(1, SHARDS).await;
    let srv = Arc::new(srv);
    let shard = 5;
    let acked = Arc::new(Acked::default());
    let stop_writers = Arc::new(AtomicBool::new(false));
    let stop_reader = Arc::new(AtomicBool::new(false));
    let reader = tail(srv.clone(), shard, stop_reader.clone());
    let ws = writers(srv.clone(), shard, 16, stop_writers.clone(), acked.clone());
    // Until enough cells were acknowledged (a count, not a time).
    while acked.all().len() < 1500 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_writers.store(true, Ordering::Release);
    for w in ws {
        w.await.unwrap();
    }
    stop_reader.store(true, Ordering::Release);
    let seen = reader.await.unwrap();
    assert_exactly_once(&seen, &acked.all());
    assert_created_at_follows_added_id(&client(), &srv, shard).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paging_by_created_at_across_a_live_move_skips_and_repeats_nothing() {
    let (srv, urls) = cluster_with_spare(default_config(), SHARDS).await;
    let srv = Arc::new(srv);
    let c = client();
    let shard = 1; // on db1; moves to db3
                   // The source's clock ran an hour ahead: its latest cell was created an hour from now. The
                   // target's own clock (this machine's) is behind it; the cells written there must still
                   // come after it.
    let row = key_in_shard(shard, SHARDS);
    let first = write_one(&c, &srv, &row, "ahead", 1).await;
    clock_ahead(&urls[0], shard, added_id(&first)).await;
    let seeded = read_shard(&c, &srv, shard).await.pop().unwrap();
    assert!(created(&seeded) > Utc::now() + chrono::Duration::minutes(59));

    let acked = Arc::new(Acked::default());
    acked.add(added_id(&seeded));
    let stop_writers = Arc::new(AtomicBool::new(false));
    let stop_reader = Arc::new(AtomicBool::new(false));
    let reader = tail(srv.clone(), shard, stop_reader.clone());
    let ws = writers(srv.clone(), shard, 16, stop_writers.clone(), acked.clone());
    while acked.all().len() < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = start_move(&srv, json!({"shards": shard.to_string(), "to": "db3"})).await;
    wait_job_state(&srv, id, "switched", LONG).await;
    assert_eq!(
        shard_state_in(&urls[2], shard).await.as_deref(),
        Some("active")
    );
    // The new owner serves reads by created_at from the stream index too.
    let defs: Vec<String> = connect(&urls[2])
        .await
        .query(
            "SELECT indexdef FROM pg_indexes WHERE indexname = $1",
            &[&format!("idx_cells_{shard:04}_created_added")],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(defs.len(), 1, "no stream index on the move's target");
    assert!(defs[0].ends_with("(created_at, added_id)"), "{defs:?}");
    // Writes on the new owner, then stop.
    let moved = acked.all().len();
    while acked.all().len() < moved + 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_writers.store(true, Ordering::Release);
    for w in ws {
        w.await.unwrap();
    }
    stop_reader.store(true, Ordering::Release);
    let seen = reader.await.unwrap();
    let acked = acked.all();
    assert_exactly_once(&seen, &acked);
    // The last cell (written on the new owner) was created after the moved ones.
    let last = seen.iter().max_by_key(|c| added_id(c)).unwrap();
    assert!(created(last) > created(&seeded), "{last}");
    assert_created_at_follows_added_id(&c, &srv, shard).await;
    // And paging the whole shard from the start, after the move, reads everything once.
    let (all, sizes) = read_all_by_time(&c, &srv, shard, 100).await;
    assert!(sizes.iter().all(|&n| n <= 100), "{sizes:?}");
    assert_exactly_once(&all, &acked);
}

#[tokio::test]
async fn cells_written_after_the_clock_went_back_still_come_after_the_shards_last() {
    let (srv, urls) = TestServer::fresh(1, SHARDS).await;
    let c = client();
    let shard = 2;
    let row = key_in_shard(shard, SHARDS);
    let first = write_one(&c, &srv, &row, "a", 1).await;
    // The shard's latest cell is an hour ahead of the clock: as after the clock stepped back.
    clock_ahead(&urls[0], shard, added_id(&first)).await;
    let (_, after_first) = read_all_by_time(&c, &srv, shard, 10).await;
    assert_eq!(after_first, [1]);
    let second = write_one(&c, &srv, &row, "b", 1).await;
    let (s, v) = post_json(
        &c,
        &srv.url("/v1/cells/batch"),
        &json!({"cells": [cell(&row, "c", 1, json!(1)), cell(&row, "d", 1, json!(2))]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(created(&second) > Utc::now() + chrono::Duration::minutes(59));
    // A reader that had read the first cell reads the later ones, once.
    let (seen, _) = read_all_by_time(&c, &srv, shard, 10).await;
    let cols: Vec<&str> = seen
        .iter()
        .map(|c| c["column_name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["a", "b", "c", "d"]);
    assert_created_at_follows_added_id(&c, &srv, shard).await;
    srv.stop().await;
}

/// `(seq_scan, idx_scan of the stream index)` of shard `shard`'s table, as the statistics
/// collector has them now.
async fn scans(url: &str, shard: u32) -> (i64, i64) {
    let db = connect(url).await;
    let row = db
        .query_one(
            "SELECT pg_stat_clear_snapshot()::text, \
                    (SELECT seq_scan FROM pg_stat_user_tables WHERE relname = $1), \
                    (SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = $2)",
            &[
                &format!("cells_{shard:04}"),
                &format!("idx_cells_{shard:04}_created_added"),
            ],
        )
        .await
        .unwrap();
    (
        row.get::<_, Option<i64>>(1).unwrap_or(0),
        row.get::<_, Option<i64>>(2).unwrap_or(0),
    )
}

#[tokio::test]
async fn reads_by_created_at_use_the_stream_index() {
    let (srv, urls) = TestServer::fresh(1, SHARDS).await;
    let c = client();
    let shard = 6;
    // The cells as the batch answers give them (reading them back might scan the table).
    let mut all = Vec::new();
    for b in 0..3 {
        let cells: Vec<Value> = (0..1000)
            .map(|i| cell(&key_in_shard(shard, SHARDS), "c", b * 1000 + i, json!(i)))
            .collect();
        let (s, v) = post_json(&c, &srv.url("/v1/cells/batch"), &json!({ "cells": cells })).await;
        assert_eq!(s, 200, "{v}");
        all.extend(
            v["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["cell"].clone()),
        );
    }
    sql(&urls[0], &format!("ANALYZE cells_{shard:04}")).await;
    let middle = all[1500]["created_at"].as_str().unwrap().to_owned();
    let (_, idx_before) = scans(&urls[0], shard).await;
    // Three pages by created_at: from the start, from the middle, past the end.
    let from_start = page_after(&c, &srv, shard, None, 100).await;
    assert_eq!(from_start.len(), 100);
    let from_middle = page_after(&c, &srv, shard, Some(&middle), 100).await;
    assert_eq!(added_id(&from_middle[0]), added_id(&all[1501]));
    let last = all.last().unwrap()["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(page_after(&c, &srv, shard, Some(&last), 100)
        .await
        .is_empty());
    // The stream index served all three (statistics arrive within seconds; nothing else
    // reads that index: a read that scanned the table instead would leave it at two).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, idx) = scans(&urls[0], shard).await;
        if idx >= idx_before + 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stream index served {} of the 3 reads",
            idx - idx_before
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    srv.stop().await;
}

#[tokio::test]
async fn an_adopted_go_mezzanine_shard_continues_after_its_latest_cell() {
    let urls = fresh_databases(1).await;
    let shard = 4;
    let t = format!("cells_{shard:04}");
    // go-mezzanine's table, whose cells (written by a clock an hour ahead, in one transaction:
    // one created_at) are the latest.
    sql(
        &urls[0],
        &format!(
            "CREATE TABLE {t} (added_id BIGSERIAL PRIMARY KEY, row_key UUID NOT NULL, \
               column_name TEXT NOT NULL, ref_key BIGINT NOT NULL, body JSONB NOT NULL, \
               created_at TIMESTAMPTZ NOT NULL DEFAULT now(), UNIQUE (row_key, column_name, ref_key)); \
             INSERT INTO {t} (row_key, column_name, ref_key, body, created_at) \
               SELECT gen_random_uuid(), 'legacy', g, '{{}}', now() + interval '1 hour' \
               FROM generate_series(1, 3) g;"
        ),
    )
    .await;
    let srv = TestServer::start(default_config(), even_map(&urls, SHARDS)).await;
    let c = client();
    let row = key_in_shard(shard, SHARDS);
    let new = write_one(&c, &srv, &row, "new", 1).await;
    assert!(
        created(&new) > Utc::now() + chrono::Duration::minutes(59),
        "{new}"
    );
    // Paging by created_at: the legacy group, then the new cell, each once.
    let (seen, _) = read_all_by_time(&c, &srv, shard, 3).await;
    let ids: Vec<i64> = seen.iter().map(added_id).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    srv.stop().await;
}
