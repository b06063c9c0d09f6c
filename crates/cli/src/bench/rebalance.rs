//! `mezzanine bench rebalance` (issue: capacity changes): scale out under a steady load.
//!
//! Against a cluster whose extra backend is registered and empty (`mezzanine dev --spare 1`):
//! load every shard up to `--cells` cells in all (binary COPY, before any traffic); start the
//! load through every server; plan; apply the plan and follow it; stop the load; read back
//! every acknowledged write. Reports the duration, the data moved against the lower bound
//! (the sum of each backend's excess over its share), client errors and the worst cutover
//! pause.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::builder::RangedU64ValueParser;
use serde::Serialize;
use serde_json::{json, Value};

use super::http::{send, send_json};
use super::moves::{load, percentile, read_back, Cluster, ClusterArgs, SteadyLoad};

/// Options of `mezzanine bench rebalance` (the first server plans and applies).
#[derive(Debug, clap::Args)]
pub struct RebalanceArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Cells in all shards before the rebalance (loaded if fewer).
    #[arg(long, default_value_t = 1_000_000)]
    pub cells: u64,
    /// What the plan evens out.
    #[arg(long, default_value = "count", value_parser = ["count", "rows", "bytes"])]
    pub strategy: String,
    /// Shards copied at once over the whole rebalance.
    #[arg(long, default_value_t = 2, value_parser = RangedU64ValueParser::<u64>::new().range(1..=64))]
    pub parallel: u64,
    /// Drop the moved shards' old copies at the end (`complete`), or keep them (`none`).
    #[arg(long, default_value = "complete", value_parser = ["complete", "none"])]
    pub cleanup: String,
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
    /// Planned moves, in the strategy's unit; the excess over the shares in that unit (a
    /// plan moves at most 1.2 times it), and the lower bound when the plan balances.
    moved: f64,
    excess: f64,
    moved_vs_excess: Option<f64>,
    lower_bound: Option<f64>,
    shards_moved: u64,
    rows_moved: i64,
    /// Each backend's rows over its share, summed.
    rows_excess: f64,
    rows_moved_vs_excess: Option<f64>,
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
    let cluster = Cluster::open(&args.cluster, Duration::from_secs(60)).await?;
    let (main, client, num_shards) = (&cluster.main, &cluster.client, cluster.num_shards);
    let get = |path: &str| send_json(client.get(format!("{main}{path}")));

    // The cluster.
    let mut sources: Vec<(u32, String)> = Vec::with_capacity(num_shards as usize);
    for s in 0..num_shards {
        sources.push((s, cluster.owner(s)?.1));
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
    let steady = SteadyLoad::start(&cluster, &args.cluster, moving.clone(), "the rebalance").await;
    let (epoch, before_end) = (steady.epoch, steady.before_end);

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
    let log = steady.finish().await;

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
    let (lost, changed) = read_back(client, main, &log.acked).await;
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
    let rows_excess = rows_excess(&plan);
    let rows_moved = done["progress"]["rows_copied"].as_i64().unwrap_or_default();
    let (moved, excess) = (
        plan["moved"].as_f64().unwrap_or_default(),
        plan["excess"].as_f64().unwrap_or_default(),
    );
    let report = Report {
        servers: cluster.servers.clone(),
        num_shards,
        cells,
        strategy: args.strategy.clone(),
        parallel: args.parallel,
        load_concurrency: args.cluster.concurrency,
        rebalance_id: id,
        state: done["state"].as_str().unwrap_or_default().to_owned(),
        duration_secs: (ended - started).as_secs_f64(),
        moved,
        excess,
        moved_vs_excess: super::report::ratio(moved, excess),
        lower_bound: plan["lower_bound"].as_f64(),
        shards_moved: done["progress"]["switched"].as_u64().unwrap_or_default(),
        rows_moved,
        rows_excess,
        rows_moved_vs_excess: super::report::ratio(rows_moved as f64, rows_excess),
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
    if args.cluster.json {
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

/// The rows above the shares: the sum over backends of their rows over their weighted share
/// (draining backends' share is 0).
fn rows_excess(plan: &Value) -> f64 {
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
        "moved: {} shards, {} rows; plan moved {} against an excess over the shares of {:.1} ({}; at most 1.2) and a lower bound of {}; rows moved / rows excess {}",
        r.shards_moved,
        r.rows_moved,
        r.moved,
        r.excess,
        r.moved_vs_excess.map_or("-".into(), |x| format!("{x:.3}")),
        r.lower_bound.map_or("- (the plan does not balance)".into(), |x| format!("{x:.0}")),
        r.rows_moved_vs_excess.map_or("-".into(), |x| format!("{x:.3}")),
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
    fn the_rows_excess_is_over_the_weighted_shares() {
        let plan = json!({"balance": [
            {"rows_before": 600, "weight": 1},
            {"rows_before": 600, "weight": 1},
            {"rows_before": 0, "weight": 1},
        ]});
        assert!((rows_excess(&plan) - 400.0).abs() < 1e-9);
        let drain = json!({"balance": [
            {"rows_before": 300, "weight": 1},
            {"rows_before": 300, "weight": 1},
            {"rows_before": 100, "weight": 1, "draining": true},
        ]});
        assert!((rows_excess(&drain) - 100.0).abs() < 1e-9);
    }
}
