//! Invariant I1: within a shard, cells become visible in `added_id` order, so a reader paging
//! partitionRead by `added_id` never skips a cell that commits later with a smaller id.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mezzanine_e2e::*;
use serde_json::json;
use uuid::Uuid;

const SHARD: u32 = 2;
const SHARDS: u32 = 4;
const WRITERS: usize = 16;
const WRITES_EACH: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_paging_by_added_id_sees_every_committed_cell_once_in_order() {
    let urls = fresh_databases(1).await;
    let mut cfg = default_config();
    cfg.db_max_conns = 32;
    let srv = Arc::new(TestServer::start(cfg, even_map(&urls, SHARDS)).await);
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let (srv, done) = (srv.clone(), done.clone());
        tokio::spawn(async move {
            let c = client();
            let mut seen: Vec<i64> = Vec::new();
            let mut after = 0i64;
            loop {
                let finished = done.load(Ordering::Acquire);
                let url = srv.url(&format!("/v1/cells/partitionRead?partition_number={SHARD}&read_type=2&added_id={after}&limit=25"));
                let (s, page) = get_json(&c, &url).await;
                assert_eq!(s, 200, "{page}");
                let page = page.as_array().cloned().unwrap_or_default();
                for cell in &page {
                    let id = cell["added_id"].as_i64().unwrap();
                    assert!(id > after, "out of order: {id} after {after}");
                    seen.push(id);
                    after = id;
                }
                if finished && page.is_empty() {
                    return seen;
                }
            }
        })
    };

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let srv = srv.clone();
            tokio::spawn(async move {
                let c = client();
                let mut acked = Vec::new();
                let keys = std::iter::repeat_with(Uuid::new_v4)
                    .filter(|u| mezzanine_core::shard_for_row_key(u, SHARDS) == SHARD);
                for (i, key) in keys.take(WRITES_EACH).enumerate() {
                    let (s, v) = post_json(
                        &c,
                        &srv.url("/v1/cells"),
                        &cell(&key, "c", i as i64, json!({"w": w, "i": i})),
                    )
                    .await;
                    assert_eq!(s, 201, "{v}");
                    acked.push(v["added_id"].as_i64().unwrap());
                }
                acked
            })
        })
        .collect();
    let mut acknowledged = BTreeSet::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    done.store(true, Ordering::Release);
    let seen = reader.await.unwrap();

    assert_eq!(acknowledged.len(), WRITERS * WRITES_EACH);
    let seen_set: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(seen_set.len(), seen.len(), "the reader saw a cell twice");
    let missed: Vec<_> = acknowledged.difference(&seen_set).collect();
    assert!(
        missed.is_empty(),
        "the reader skipped {} committed cells, e.g. {:?}",
        missed.len(),
        &missed[..missed.len().min(5)]
    );
    assert_eq!(seen_set, acknowledged, "the reader saw cells nobody wrote");
}
