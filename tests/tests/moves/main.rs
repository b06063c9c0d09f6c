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

mod aborts;
mod admin;
mod basics;
mod failures;
mod load;
mod nodes;
