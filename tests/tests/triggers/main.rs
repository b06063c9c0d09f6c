//! Durable plugin delivery end to end (issue 17 point 2; `crates/triggers`), against real
//! PostgreSQL and a JSON-RPC receiver in the test ([`Receiver`]): every acknowledged cell
//! delivered at least once and in `added_id` order per shard, with concurrent single and
//! batch writers, without calls for unsubscribed columns (`stream`); the receiver down or
//! answering 500 for a while, nothing lost (`outage`); a refused event parked while the rest
//! flow, then replayed (`parking`); a registration through one node delivered by another, the
//! delivering node killed mid-stream and delivery resumed by another, unregistering stopping
//! deliveries (`nodes`); the shard moved mid-stream, no gap and order kept (`moving`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use mezzanine_e2e::receiver::{Received, Receiver};
use mezzanine_e2e::*;
use mezzanine_server::ServeConfig;
use serde_json::{json, Value};
use uuid::Uuid;

mod moving;
mod nodes;
mod outage;
mod parking;
mod stream;

const SHARDS: u32 = 8;
/// Bound of every wait for deliveries (generous: a loaded 2-core machine).
const LONG: Duration = Duration::from_secs(90);

/// The harness's configuration with quick retries of refused events.
fn config() -> ServeConfig {
    let mut c = default_config();
    c.trigger_retry_max = 2;
    c.trigger_retry_backoff = Duration::from_millis(50);
    c.trigger_rpc_timeout = Duration::from_secs(2);
    c
}

/// Registers a plugin through `srv`; returns its id.
async fn register(srv: &TestServer, name: &str, endpoint: &str, columns: &[&str]) -> String {
    let (s, v) = post_json(
        &client(),
        &srv.url("/v1/plugins"),
        &json!({"name": name, "endpoint": endpoint, "subscribed_columns": columns}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// An acknowledged cell: (shard, added_id).
type Ack = (u32, i64);

fn ack_of(cell: &Value) -> Ack {
    let row: Uuid = cell["row_key"].as_str().unwrap().parse().unwrap();
    (
        mezzanine_core::shard_for_row_key(&row, SHARDS),
        cell["added_id"].as_i64().unwrap(),
    )
}

/// Writes one cell through `srv`; returns it acknowledged.
async fn write(c: &reqwest::Client, srv: &TestServer, row: &Uuid, col: &str, r: i64) -> Ack {
    ack_of(&write_one(c, srv, row, col, r).await)
}

/// Writes a batch of `n` cells in column `col` of fresh rows; returns those acknowledged.
async fn write_batch(c: &reqwest::Client, srv: &TestServer, col: &str, n: usize) -> Vec<Ack> {
    let cells: Vec<Value> = (0..n)
        .map(|i| cell(&Uuid::new_v4(), col, i as i64, json!({"i": i})))
        .collect();
    let (s, v) = post_json(c, &srv.url("/v1/cells/batch"), &json!({"cells": cells})).await;
    assert_eq!(s, 200, "{v}");
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == 201)
        .map(|r| ack_of(&r["cell"]))
        .collect()
}

/// The events received, first receipt of each, per shard in arrival order.
fn first_receipts(got: &[Received]) -> BTreeMap<u32, Vec<i64>> {
    let mut seen = BTreeSet::new();
    let mut per: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for r in got {
        if seen.insert((r.shard, r.added_id)) {
            per.entry(r.shard).or_default().push(r.added_id);
        }
    }
    per
}

/// Every shard's events were first received in `added_id` order.
fn assert_in_order(got: &[Received]) {
    for (shard, ids) in first_receipts(got) {
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted, "shard {shard}'s events arrived out of order");
    }
}

/// Waits until every acknowledged cell of `acks` was received.
async fn wait_all(rx: &Receiver, acks: &[Ack]) {
    let want: BTreeSet<Ack> = acks.iter().copied().collect();
    rx.wait_until(
        &format!("all {} acknowledged cells", want.len()),
        LONG,
        |got| {
            let have: BTreeSet<Ack> = got.iter().map(|r| (r.shard, r.added_id)).collect();
            want.is_subset(&have)
        },
    )
    .await;
}

/// Counts of receipts per event.
fn receipts(got: &[Received]) -> HashMap<Ack, usize> {
    let mut n = HashMap::new();
    for r in got {
        *n.entry((r.shard, r.added_id)).or_insert(0) += 1;
    }
    n
}

/// A catalog query's first column of every row, as text.
async fn catalog_texts(catalog_url: &str, sql: &str) -> Vec<String> {
    let c = connect(catalog_url).await;
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}
