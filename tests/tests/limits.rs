//! `--max-rows-per-sec` is the whole operation's limit: a move's parallel bulk copies share
//! it, as a rebalance's do. A limit is a bound in time, so this test asserts a lower bound
//! (a slower machine only makes it pass more easily), never an upper one.

use std::time::{Duration, Instant};

use mezzanine_e2e::*;
use serde_json::json;

const SHARDS: u32 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moves_limit_bounds_all_its_parallel_copies_together() {
    let (srv, urls) = cluster_with_spare(default_config(), SHARDS).await;
    // db1 holds shards 0-3: 3 000 rows each, 12 000 in all.
    const PER_SHARD: i64 = 3_000;
    const RATE: i64 = 1_000;
    for shard in 0..4 {
        sql(
            &urls[0],
            &format!(
                "INSERT INTO cells_{shard:04} (row_key, column_name, ref_key, body) \
                 SELECT gen_random_uuid(), 'c', g, jsonb_build_object('n', g) \
                 FROM generate_series(1, {PER_SHARD}) g"
            ),
        )
        .await;
    }
    let started = Instant::now();
    let id = start_move(
        &srv,
        json!({"shards": "0-3", "to": "db3", "parallel": 4, "max_rows_per_sec": RATE}),
    )
    .await;
    let job = wait_job(&srv, id, Duration::from_secs(120), |j| {
        j["state"] != "running"
    })
    .await;
    let took = started.elapsed();
    assert_eq!(job["state"], "switched", "{job}");
    for s in job["shards"].as_array().unwrap() {
        assert_eq!(s["rows_copied"], PER_SHARD, "{s}");
    }
    // Four copies at the limit each would take 3 s; sharing it, they take 12 s less one
    // chunk's burst (a tenth of a second of the rate).
    let floor = Duration::from_secs_f64((4 * PER_SHARD - RATE / 10) as f64 / RATE as f64);
    eprintln!(
        "moved {} rows at a limit of {RATE}/s in {took:?}",
        4 * PER_SHARD
    );
    assert!(
        took >= floor,
        "the move copied faster than its limit: {took:?} < {floor:?}"
    );
    srv.stop().await;
}
