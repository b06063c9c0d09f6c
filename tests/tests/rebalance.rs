//! Rebalancing end to end against real PostgreSQL servers (DESIGN §6): scale out under load
//! (two backends with data, a third added, `rebalance apply` while clients write and read
//! through two nodes), scale in (`backend drain`, then `backend remove`), plans that change
//! nothing, weights, and the refusals an operator meets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mezzanine_e2e::*;
use mezzanine_server::ServeConfig;
use serde_json::{json, Value};

const SHARDS: u32 = 24;
/// Bound of every wait for a rebalance (generous: a loaded 2-core machine).
const LONG: Duration = Duration::from_secs(180);

/// db1 and db2 hold the shards; db3 is registered empty. Node A runs the mover.
async fn cluster() -> (TestServer, Vec<String>) {
    cluster_with_spare(default_config(), SHARDS).await
}

fn no_mover() -> ServeConfig {
    let mut c = default_config();
    c.no_mover = true;
    c
}

/// Writes `per_shard` cells into every shard (batches) and returns them as stored.
async fn seed(srv: &TestServer, per_shard: usize) -> Vec<Value> {
    let c = client();
    let cells: Vec<Value> = (0..SHARDS)
        .flat_map(|shard| {
            (0..per_shard).map(move |i| {
                cell(
                    &key_in_shard(shard, SHARDS),
                    "seed",
                    i as i64,
                    json!({"shard": shard, "i": i}),
                )
            })
        })
        .collect();
    let mut stored = Vec::new();
    for chunk in cells.chunks(500) {
        let (s, v) = post_json(&c, &srv.url("/v1/cells/batch"), &json!({ "cells": chunk })).await;
        assert_eq!(s, 200, "{v}");
        for r in v["results"].as_array().unwrap() {
            assert_eq!(r["status"], 201, "{r}");
            stored.push(r["cell"].clone());
        }
    }
    stored
}

async fn wait_rebalance(srv: &TestServer, id: i64, done: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/admin/v1/rebalance/{id}");
    wait_admin(srv, &path, LONG, Duration::from_millis(100), done).await
}

/// What clients were told: every acknowledged cell, and every error they saw.
#[derive(Default)]
struct Ledger {
    acked: Vec<Value>,
    errors: Vec<String>,
}

/// Writers (single cells, through both nodes, every shard) and a reader of acknowledged
/// cells, until `stop`.
fn load(
    nodes: [Arc<TestServer>; 2],
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for w in 0..3usize {
        let (nodes, ledger, stop) = (nodes.clone(), ledger.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut i = 0i64;
            while !stop.load(Ordering::Acquire) {
                i += 1;
                let shard = ((i as u32) * 7 + w as u32) % SHARDS;
                let input = cell(
                    &key_in_shard(shard, SHARDS),
                    &format!("w{w}"),
                    i,
                    json!({"w": w, "i": i}),
                );
                let srv = &nodes[(i as usize + w) % 2];
                let (s, v) = post_json(&c, &srv.url("/v1/cells"), &input).await;
                let mut l = ledger.lock().unwrap();
                if s == 201 && v["body"] == input["body"] {
                    l.acked.push(v);
                } else {
                    l.errors.push(format!("write: {s} {v}"));
                }
            }
        }));
    }
    let (ledger2, stop2) = (ledger.clone(), stop.clone());
    tasks.push(tokio::spawn(async move {
        let c = client();
        let mut n = 0usize;
        while !stop2.load(Ordering::Acquire) {
            let pick = {
                let l = ledger2.lock().unwrap();
                (!l.acked.is_empty()).then(|| l.acked[(n * 7919) % l.acked.len()].clone())
            };
            n += 1;
            let Some(want) = pick else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let path = format!(
                "/v1/cells/{}/{}/{}",
                want["row_key"].as_str().unwrap(),
                want["column_name"].as_str().unwrap(),
                want["ref_key"]
            );
            let (s, v) = get_json(&c, &nodes[n % 2].url(&path)).await;
            if s != 200 || v["body"] != want["body"] || v["added_id"] != want["added_id"] {
                ledger2
                    .lock()
                    .unwrap()
                    .errors
                    .push(format!("read {path}: {s} {v}, want {want}"));
            }
        }
    }));
    tasks
}

/// Every cell is served as acknowledged, and each shard's owner holds exactly the cells
/// acknowledged in it (nothing lost, nothing doubled).
async fn assert_all_served(srv: &TestServer, urls: &HashMap<String, String>, acked: &[Value]) {
    let c = client();
    let mut per_shard: HashMap<u32, i64> = HashMap::new();
    for want in acked {
        let row: uuid::Uuid = want["row_key"].as_str().unwrap().parse().unwrap();
        *per_shard
            .entry(mezzanine_core::shard_for_row_key(&row, SHARDS))
            .or_default() += 1;
        let path = format!(
            "/v1/cells/{}/{}/{}",
            row,
            want["column_name"].as_str().unwrap(),
            want["ref_key"]
        );
        let (s, v) = get_json(&c, &srv.url(&path)).await;
        assert_eq!(s, 200, "{path}: {v}");
        assert_eq!(v["body"], want["body"], "{path}");
        assert_eq!(v["added_id"], want["added_id"], "{path}");
    }
    let (_, map) = get_json(&c, &srv.url("/admin/v1/shards")).await;
    for r in map["ranges"].as_array().unwrap() {
        let owner = &urls[r["backend"].as_str().unwrap()];
        for shard in r["start"].as_u64().unwrap()..=r["end"].as_u64().unwrap() {
            let shard = shard as u32;
            assert_eq!(
                cells_in(owner, shard).await,
                per_shard.get(&shard).copied().unwrap_or(0),
                "shard {shard} on its owner {}",
                r["backend"]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_out_under_load_then_drain_and_remove() {
    let (a, urls) = cluster().await;
    let b = TestServer::start(no_mover(), even_map(&urls[..2], SHARDS)).await;
    let names: HashMap<String, String> = ["db1", "db2", "db3"]
        .iter()
        .map(|n| n.to_string())
        .zip(urls.iter().cloned())
        .collect();
    let c = client();
    let seeded = seed(&a, 40).await;

    // The plan: the third backend gets its third, in two contiguous ranges, and nothing
    // changes while planning.
    let (_, before) = get_json(&c, &a.url("/admin/v1/status")).await;
    let (s, plan) = post_json(&c, &a.url("/admin/v1/rebalance/plan"), &json!({})).await;
    assert_eq!(s, 200, "{plan}");
    let moves = plan["moves"].as_array().unwrap();
    assert_eq!(moves.len(), 2, "{plan}");
    for m in moves {
        assert_eq!(m["to"], "db3", "{plan}");
        assert_eq!(m["count"], 4, "{plan}");
        assert!(!m["shards"].as_str().unwrap().contains(','), "{plan}");
        assert!(m["rows"].as_u64().unwrap() > 0, "{plan}");
    }
    assert_eq!(plan["shards_to_move"], 8, "{plan}");
    // 8 shards above the shares (12 and 12 for 8 each); within one shard of its share is
    // balanced, so at least 7 must move; the plan moves 8, never fewer than the bound.
    assert_eq!(plan["excess"], 8.0, "{plan}");
    assert_eq!(plan["balanced"], true, "{plan}");
    assert_eq!(plan["lower_bound"], 7.0, "{plan}");
    assert!(plan["moved"].as_f64().unwrap() >= 7.0, "{plan}");
    assert!(plan["estimated_seconds"].as_f64().unwrap() > 0.0, "{plan}");
    let (_, after) = get_json(&c, &a.url("/admin/v1/status")).await;
    assert_eq!(before["map_version"], after["map_version"]);
    for strategy in ["rows", "bytes"] {
        let (s, p) = post_json(
            &c,
            &a.url("/admin/v1/rebalance/plan"),
            &json!({ "strategy": strategy }),
        )
        .await;
        assert_eq!(s, 200, "{p}");
        assert!(p["moves"].as_array().is_some_and(|m| !m.is_empty()), "{p}");
        for bal in p["balance"].as_array().unwrap() {
            let (t, after) = (
                bal["target"].as_f64().unwrap(),
                bal["after"].as_f64().unwrap(),
            );
            assert!((after - t).abs() <= t * 0.2, "{strategy}: {p}");
        }
    }

    // Apply under load through both nodes.
    let (a, b) = (Arc::new(a), Arc::new(b));
    let ledger = Arc::new(Mutex::new(Ledger {
        acked: seeded,
        errors: Vec::new(),
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load([a.clone(), b.clone()], ledger.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, applied) = post_json(
        &c,
        &a.url("/admin/v1/rebalance/apply"),
        &json!({"parallel": 2}),
    )
    .await;
    assert_eq!(s, 202, "{applied}");
    let id = applied["rebalance"]["id"].as_i64().unwrap();
    assert_eq!(applied["rebalance"]["progress"]["shards"], 8, "{applied}");
    // A second rebalance while this one runs is refused.
    let (s, p) = post_json(&c, &a.url("/admin/v1/rebalance/apply"), &json!({})).await;
    // (The shards in flight count where they go, so the plan is balanced already.)
    assert!(s == 409 || s == 200 && p["rebalance"].is_null(), "{s} {p}");
    let done = wait_rebalance(&a, id, |r| r["state"] != "running").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(done["state"], "switched", "{done}");
    assert_eq!(done["progress"]["switched"], 8, "{done}");
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    assert!(
        ledger.errors.is_empty(),
        "clients saw errors: {:?}",
        &ledger.errors[..ledger.errors.len().min(5)]
    );
    let counts = shard_counts(&a).await;
    assert_eq!(
        counts,
        HashMap::from([("db1".into(), 8), ("db2".into(), 8), ("db3".into(), 8)])
    );
    assert_all_served(&a, &names, &ledger.acked).await;
    let (s, v) = post_json(&c, &a.url("/admin/v1/verify"), &json!({"shards": "0-23"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    // Balanced now: the plan is empty, and apply starts nothing.
    let (s, p) = post_json(&c, &a.url("/admin/v1/rebalance/apply"), &json!({})).await;
    assert_eq!(s, 200, "{p}");
    assert!(p["rebalance"].is_null(), "{p}");
    assert!(p["plan"]["moves"].as_array().unwrap().is_empty(), "{p}");

    // Scale in: drain db3 (it stops receiving at once), then remove it.
    let (s, d) = post_json(&c, &a.url("/admin/v1/backends/db3/drain"), &json!({})).await;
    assert_eq!(s, 202, "{d}");
    assert_eq!(d["backend"]["draining"], true, "{d}");
    for m in d["plan"]["moves"].as_array().unwrap() {
        assert_eq!(m["from"], "db3", "{d}");
    }
    let (s, p) = post_json(
        &c,
        &a.url("/admin/v1/moves"),
        &json!({"shards": "0", "to": "db3"}),
    )
    .await;
    assert_eq!(s, 409, "a draining backend received a move: {p}");
    let id = d["rebalance"]["id"].as_i64().unwrap();
    let done = wait_rebalance(&a, id, |r| r["state"] == "completed").await;
    assert_eq!(done["progress"]["switched"], 8, "{done}");
    let counts = shard_counts(&a).await;
    assert_eq!(counts["db3"], 0, "{counts:?}");
    assert!(counts["db1"].abs_diff(counts["db2"]) <= 1, "{counts:?}");
    let resp = c
        .delete(a.url("/admin/v1/backends/db3"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        204,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    assert_all_served(&a, &names, &ledger.acked).await;
    // The drained copies were dropped.
    for shard in 0..SHARDS {
        assert_eq!(
            cells_in(&urls[2], shard).await,
            0,
            "shard {shard} left on db3"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weights_abort_and_bad_input() {
    let (a, _urls) = cluster().await;
    let c = client();
    seed(&a, 5).await;

    // Weight 2 for db3: it should get half of the shards.
    let resp = c
        .patch(a.url("/admin/v1/backends/db3"))
        .json(&json!({"weight": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["weight"], 2.0, "{v}");
    let (s, p) = post_json(&c, &a.url("/admin/v1/rebalance/plan"), &json!({})).await;
    assert_eq!(s, 200, "{p}");
    let db3 = p["balance"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backend"] == "db3")
        .unwrap()
        .clone();
    assert_eq!(db3["target"], 12.0, "{p}");
    assert_eq!(db3["after"], 12, "{p}");

    // Abort: the shards not switched stop, the switched ones stay.
    let (s, applied) = post_json(
        &c,
        &a.url("/admin/v1/rebalance/apply"),
        &json!({"parallel": 1, "max_rows_per_sec": 1}),
    )
    .await;
    assert_eq!(s, 202, "{applied}");
    let id = applied["rebalance"]["id"].as_i64().unwrap();
    let (s, r) = post_json(
        &c,
        &a.url(&format!("/admin/v1/rebalance/{id}/abort")),
        &json!({}),
    )
    .await;
    assert_eq!(s, 202, "{r}");
    // The answer shows the request taken: named in `requested` until the mover has carried it
    // out (then the state has changed and `requested` is cleared).
    assert!(
        r["requested"] == "abort" || r["state"] != "running",
        "the answer does not show the abort: {r}"
    );
    let r = wait_rebalance(&a, id, |r| {
        r["state"] != "running" && r["requested"].is_null()
    })
    .await;
    assert_eq!(r["state"], "aborted", "{r}");
    let switched = r["progress"]["switched"].as_u64().unwrap();
    assert_eq!(shard_counts(&a).await["db3"], switched, "{r}");
    let (s, p) = post_json(
        &c,
        &a.url(&format!("/admin/v1/rebalance/{id}/abort")),
        &json!({}),
    )
    .await;
    assert_eq!(s, 409, "{p}");

    // Bad input: a problem naming the field.
    for (path, body, field) in [
        (
            "/admin/v1/rebalance/plan",
            json!({"strategy": "size"}),
            "body.strategy",
        ),
        (
            "/admin/v1/rebalance/plan",
            json!({"strategy": 3}),
            "body.strategy",
        ),
        (
            "/admin/v1/rebalance/plan",
            json!({"window": "0s", "strategy": "writes"}),
            "body.window",
        ),
        (
            "/admin/v1/rebalance/plan",
            json!({"bogus": 1}),
            "body.bogus",
        ),
        (
            "/admin/v1/rebalance/apply",
            json!({"parallel": 0}),
            "body.parallel",
        ),
        (
            "/admin/v1/rebalance/apply",
            json!({"max_rows_per_sec": -5}),
            "body.max_rows_per_sec",
        ),
        (
            "/admin/v1/rebalance/apply",
            json!({"complete": "yes"}),
            "body.complete",
        ),
        (
            "/admin/v1/backends",
            json!({"name": "db9", "url": "postgres://x@127.0.0.1:1/x", "weight": 0}),
            "body.weight",
        ),
        (
            "/admin/v1/backends/db1/drain",
            json!({"strategy": "nope"}),
            "body.strategy",
        ),
        (
            "/admin/v1/backends/db1/drain",
            json!({"complete": "yes"}),
            "body.complete",
        ),
        (
            "/admin/v1/backends/db1/drain",
            json!({"max_rows_per_sec": 0}),
            "body.max_rows_per_sec",
        ),
        // Longer than a plan may take to answer (the request timeout is 30 s by default).
        (
            "/admin/v1/rebalance/plan",
            json!({"strategy": "writes", "window": "60s"}),
            "body.window",
        ),
    ] {
        let (s, p) = post_json(&c, &a.url(path), &body).await;
        assert!(s == 400 || s == 422, "{path} {body}: {p}");
        assert!(
            p["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["location"] == field)),
            "{path} {body}: {p}"
        );
    }
    // Refused drains marked nothing.
    let (_, list) = get_json(&c, &a.url("/admin/v1/backends")).await;
    let db1 = list["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "db1")
        .cloned()
        .unwrap();
    assert_eq!(db1["draining"], false, "{list}");
    for w in [json!(-1), json!("2"), json!(0)] {
        let resp = c
            .patch(a.url("/admin/v1/backends/db2"))
            .json(&json!({ "weight": w }))
            .send()
            .await
            .unwrap();
        assert!([400, 422].contains(&resp.status().as_u16()), "weight {w}");
    }
    let (s, p) = post_json(&c, &a.url("/admin/v1/backends/nope/drain"), &json!({})).await;
    assert_eq!(s, 404, "{p}");
    let (s, p) = get_json(&c, &a.url("/admin/v1/rebalance/999")).await;
    assert_eq!(s, 404, "{p}");
    let (s, p) = get_json(&c, &a.url("/admin/v1/rebalance/x")).await;
    assert!(s == 400 || s == 422, "{p}");
    // Writes: the sampled plan works too (a short window).
    let (s, p) = post_json(
        &c,
        &a.url("/admin/v1/rebalance/plan"),
        &json!({"strategy": "writes", "window": "1s"}),
    )
    .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["unit"], "writes in the sampling window", "{p}");
}
