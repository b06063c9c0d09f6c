//! `mezzanine bench rebalance` (issue: capacity changes): scale out under a steady load.
//!
//! Against a cluster whose extra backend is registered and empty (`mezzanine dev --spare 1`):
//! load every shard up to `--cells` cells in all (binary COPY, before any traffic); start the
//! load through every server; plan; apply the plan and follow it; stop the load; read back
//! every acknowledged write. Reports the duration, the data moved against the lower bound
//! (the sum of each backend's excess over its share), client errors and the worst cutover
//! pause.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::builder::RangedU64ValueParser;
use serde::Serialize;
use serde_json::{json, Value};

use super::http::{send, send_json};
use super::moves::{
    backend_urls, load, load_worker, nodes, owner_of, percentile, read_back, LoadLog,
};
use super::positive_duration;

/// Options of `mezzanine bench rebalance`.
#[derive(Debug, clap::Args)]
pub struct RebalanceArgs {
    /// The nodes to send the load through (comma-separated; the first one plans and applies).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080,http://127.0.0.1:8081"
    )]
    pub servers: Vec<String>,
    /// shards.json of the cluster (the backends' URLs, for loading).
    #[arg(long, env = "SHARD_CONFIG_PATH")]
    pub shard_config_path: std::path::PathBuf,
    /// Spare backends as `name=url,...` (what `mezzanine dev --spare N` writes in mezzanine.env).
    #[arg(long, env = "MEZZANINE_SPARE_BACKENDS", default_value = "")]
    pub spare_backends: String,
    /// Cells in all shards before the rebalance (loaded if fewer).
    #[arg(long, default_value_t = 1_000_000)]
    pub cells: u64,
    /// What the plan evens out.
    #[arg(long, default_value = "count", value_parser = ["count", "rows", "bytes"])]
    pub strategy: String,
    /// Shards copied at once over the whole rebalance.
    #[arg(long, default_value_t = 2, value_parser = RangedU64ValueParser::<u64>::new().range(1..=64))]
    pub parallel: u64,
    /// Concurrent clients of the steady load (spread over the servers).
    #[arg(long, default_value_t = 8, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub concurrency: usize,
    /// How long the load runs before the rebalance (the "before" latencies).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub before: Duration,
    /// Drop the moved shards' old copies at the end (`complete`), or keep them (`none`).
    #[arg(long, default_value = "complete", value_parser = ["complete", "none"])]
    pub cleanup: String,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    servers: Vec<String>,
    num_shards: u32,
    cells: i64,
    strategy: String,
    parallel: u64,
    load_concurrency: usize,
    rebalance_id: i64,
    state: String,
    duration_secs: f64,
    /// Planned moves, in the strategy's unit, and the lower bound in that unit.
    moved: f64,
    lower_bound: f64,
    moved_vs_lower_bound: Option<f64>,
    shards_moved: u64,
    rows_moved: i64,
    /// The least rows any plan must move: each backend's rows over its share, summed.
    rows_lower_bound: f64,
    rows_moved_vs_lower_bound: Option<f64>,
    /// Shards per backend after the rebalance.
    shards_after: Vec<(String, u64)>,
    client_ops: usize,
    client_errors: usize,
    client_error_examples: Vec<String>,
    acked_writes: usize,
    lost: usize,
    changed: usize,
    p99_before_ms: f64,
    p99_during_ms: f64,
    max_during_ms: f64,
    worst_cutover_pause_ms: Option<f64>,
    median_cutover_pause_ms: Option<f64>,
    cutovers: usize,
}

pub async fn run(args: RebalanceArgs) -> anyhow::Result<()> {
    let (servers, main, client) = nodes(&args.servers, args.concurrency, Duration::from_secs(60))?;
    let get = |path: &str| send_json(client.get(format!("{main}{path}")));

    // The cluster.
    let shards_view = get("/admin/v1/shards")
        .await
        .with_context(|| format!("cannot reach {main}"))?;
    let num_shards = shards_view["num_shards"]
        .as_u64()
        .context("the server's /admin/v1/shards has no num_shards")? as u32;
    let (urls, _) = backend_urls(&args.shard_config_path, &args.spare_backends, num_shards)?;
    let mut sources: Vec<(u32, String)> = Vec::with_capacity(num_shards as usize);
    for s in 0..num_shards {
        let owner = owner_of(&shards_view, s).with_context(|| format!("shard {s} has no owner"))?;
        let url = urls
            .get(&owner)
            .cloned()
            .with_context(|| format!("no URL known for backend {owner:?}"))?;
        sources.push((s, url));
    }

    // 1. Load every shard.
    let cells = load(&sources, num_shards, args.cells).await?;
    eprintln!("bench: {cells} cells in {num_shards} shards");

    // 2. The plan (changes nothing); the load goes half to the shards it moves.
    let plan_body = json!({"strategy": args.strategy, "parallel": args.parallel});
    let plan = send_json(
        client
            .post(format!("{main}/admin/v1/rebalance/plan"))
            .json(&plan_body),
    )
    .await?;
    let moving: Vec<u32> = plan_shards(&plan, num_shards)?;
    if moving.is_empty() {
        bail!("the plan moves nothing: add an empty backend first (mezzanine dev --spare 1)");
    }
    eprintln!(
        "bench: the plan moves {} shards ({} rows), estimated {:.0} s",
        moving.len(),
        plan["rows_to_move"],
        plan["estimated_seconds"].as_f64().unwrap_or_default()
    );

    // 3. The steady load.
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(LoadLog::default()));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            tokio::spawn(load_worker(
                w,
                client.clone(),
                servers.clone(),
                num_shards,
                moving.clone(),
                epoch,
                stop.clone(),
                log.clone(),
            ))
        })
        .collect();
    eprintln!(
        "bench: steady load for {:?} before the rebalance",
        args.before
    );
    tokio::time::sleep(args.before).await;
    let before_end = epoch.elapsed();

    // 4. Apply and follow.
    let applied = send_json(
        client
            .post(format!("{main}/admin/v1/rebalance/apply"))
            .json(&plan_body),
    )
    .await?;
    let id = applied["rebalance"]["id"]
        .as_i64()
        .with_context(|| format!("no rebalance started: {applied}"))?;
    let started = epoch.elapsed();
    eprintln!("bench: rebalance {id} started");
    let mut last_report = Instant::now();
    let done = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = match get(&format!("/admin/v1/rebalance/{id}")).await {
            Ok(r) => r,
            Err(_) => continue,
        };
        if r["state"] != "running" {
            break r;
        }
        if last_report.elapsed() >= Duration::from_secs(15) {
            last_report = Instant::now();
            eprintln!(
                "bench: {}/{} shards switched",
                r["progress"]["switched"], r["progress"]["shards"]
            );
        }
        if epoch.elapsed() > started + Duration::from_secs(4 * 3600) {
            bail!("the rebalance did not finish within four hours");
        }
    };
    let ended = epoch.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Release);
    for w in workers {
        let _ = w.await;
    }
    let log = std::mem::take(&mut *log.lock().unwrap_or_else(|e| e.into_inner()));

    // 5. Figures.
    let latencies = |from: Duration, to: Duration| -> Vec<f64> {
        log.samples
            .iter()
            .filter(|s| s.at >= from && s.at < to)
            .map(|s| s.latency.as_secs_f64() * 1000.0)
            .collect()
    };
    let p99_before = percentile(&mut latencies(Duration::ZERO, before_end), 0.99);
    let mut during = latencies(started, ended);
    let p99_during = percentile(&mut during, 0.99);
    let max_during = during.iter().copied().fold(0.0, f64::max);
    let mut pauses: Vec<f64> = done["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|j| j["shards"].as_array().into_iter().flatten())
        .filter_map(|s| s["pause_ms"].as_f64())
        .collect();
    let median_pause = (!pauses.is_empty()).then(|| percentile(&mut pauses, 0.5));
    eprintln!(
        "bench: reading back {} acknowledged writes",
        log.acked.len()
    );
    let (lost, changed) = read_back(&client, &main, &log.acked).await;
    let backends = get("/admin/v1/backends").await?;
    let shards_after: Vec<(String, u64)> = backends["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            (
                b["name"].as_str().unwrap_or_default().to_owned(),
                b["shards"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    if args.cleanup == "complete" && done["state"] == "switched" {
        let _ = send(client.post(format!("{main}/admin/v1/rebalance/{id}/complete"))).await;
    }
    let rows_lb = rows_lower_bound(&plan);
    let rows_moved = done["progress"]["rows_copied"].as_i64().unwrap_or_default();
    let (moved, lb) = (
        plan["moved"].as_f64().unwrap_or_default(),
        plan["lower_bound"].as_f64().unwrap_or_default(),
    );
    let report = Report {
        servers,
        num_shards,
        cells,
        strategy: args.strategy.clone(),
        parallel: args.parallel,
        load_concurrency: args.concurrency,
        rebalance_id: id,
        state: done["state"].as_str().unwrap_or_default().to_owned(),
        duration_secs: (ended - started).as_secs_f64(),
        moved,
        lower_bound: lb,
        moved_vs_lower_bound: super::report::ratio(moved, lb),
        shards_moved: done["progress"]["switched"].as_u64().unwrap_or_default(),
        rows_moved,
        rows_lower_bound: rows_lb,
        rows_moved_vs_lower_bound: super::report::ratio(rows_moved as f64, rows_lb),
        shards_after,
        client_ops: log.samples.len(),
        client_errors: log.errors.len(),
        client_error_examples: log.errors.iter().take(5).cloned().collect(),
        acked_writes: log.acked.len(),
        lost,
        changed,
        p99_before_ms: p99_before,
        p99_during_ms: p99_during,
        max_during_ms: max_during,
        worst_cutover_pause_ms: done["progress"]["worst_pause_ms"].as_f64(),
        median_cutover_pause_ms: median_pause,
        cutovers: pauses.len(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    Ok(())
}

/// Every shard the plan moves.
fn plan_shards(plan: &Value, num_shards: u32) -> anyhow::Result<Vec<u32>> {
    let mut out = Vec::new();
    for m in plan["moves"].as_array().into_iter().flatten() {
        let spec = m["shards"]
            .as_str()
            .context("a planned move has no shards")?;
        out.extend(mezzanine_core::parse_shard_set(spec, num_shards)?);
    }
    out.sort_unstable();
    Ok(out)
}

/// The least rows any plan must move: the sum over backends of their rows over their
/// weighted share (draining backends' share is 0).
fn rows_lower_bound(plan: &Value) -> f64 {
    let balance: Vec<&Value> = plan["balance"].as_array().into_iter().flatten().collect();
    let total: f64 = balance
        .iter()
        .map(|b| b["rows_before"].as_f64().unwrap_or_default())
        .sum();
    let weight = |b: &Value| {
        if b["draining"] == true {
            0.0
        } else {
            b["weight"].as_f64().unwrap_or(1.0)
        }
    };
    let weights: f64 = balance.iter().map(|b| weight(b)).sum();
    if weights <= 0.0 {
        return 0.0;
    }
    balance
        .iter()
        .map(|b| {
            (b["rows_before"].as_f64().unwrap_or_default() - total * weight(b) / weights).max(0.0)
        })
        .sum()
}

fn print(r: &Report) {
    println!(
        "rebalance {} by {} ({} shards, {} cells, parallel {}, {} clients): {} in {:.1} s",
        r.rebalance_id,
        r.strategy,
        r.num_shards,
        r.cells,
        r.parallel,
        r.load_concurrency,
        r.state,
        r.duration_secs
    );
    println!(
        "moved: {} shards, {} rows; plan moved {} against a lower bound of {:.1} ({}); rows moved / rows lower bound {}",
        r.shards_moved,
        r.rows_moved,
        r.moved,
        r.lower_bound,
        r.moved_vs_lower_bound.map_or("-".into(), |x| format!("{x:.3}")),
        r.rows_moved_vs_lower_bound.map_or("-".into(), |x| format!("{x:.3}")),
    );
    let after: Vec<String> = r
        .shards_after
        .iter()
        .map(|(n, c)| format!("{n}={c}"))
        .collect();
    println!("shards per backend after: {}", after.join(" "));
    println!(
        "clients: {} operations, {} errors, {} acknowledged writes: {} lost, {} changed",
        r.client_ops, r.client_errors, r.acked_writes, r.lost, r.changed
    );
    println!(
        "latency: p99 before {:.1} ms, p99 during {:.1} ms, max during {:.1} ms; cutover pause: median {}, worst {} over {} cutovers",
        r.p99_before_ms,
        r.p99_during_ms,
        r.max_during_ms,
        r.median_cutover_pause_ms.map_or("-".into(), |x| format!("{x:.1} ms")),
        r.worst_cutover_pause_ms.map_or("-".into(), |x| format!("{x:.1} ms")),
        r.cutovers
    );
    for e in &r.client_error_examples {
        println!("  error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rows_lower_bound_is_the_excess_over_the_weighted_shares() {
        let plan = json!({"balance": [
            {"rows_before": 600, "weight": 1},
            {"rows_before": 600, "weight": 1},
            {"rows_before": 0, "weight": 1},
        ]});
        assert!((rows_lower_bound(&plan) - 400.0).abs() < 1e-9);
        let drain = json!({"balance": [
            {"rows_before": 300, "weight": 1},
            {"rows_before": 300, "weight": 1},
            {"rows_before": 100, "weight": 1, "draining": true},
        ]});
        assert!((rows_lower_bound(&drain) - 100.0).abs() < 1e-9);
    }
}
