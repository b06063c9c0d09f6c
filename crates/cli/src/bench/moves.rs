//! `mezzanine bench move` (DESIGN §10): shards move under a steady mixed load through two
//! nodes, and the bench reports what clients saw and how fast the copy went against a
//! `psql \copy` binary pipe of the same tables, run in the same session.
//!
//! Phases: load the moving shards up to `--cells` cells (binary COPY, before any traffic);
//! start the load (writes and reads through every server); measure the latency before the
//! move; run the `psql` pipe baseline (under the same load); move the shards and watch the
//! job; stop the load; read back every acknowledged write and verify the moved shards.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::builder::RangedU64ValueParser;
use mezzanine_core::{parse_shard_set, shard_for_row_key, ShardMap};
use mezzanine_storage::schema::cells_table;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::http::{send, send_json};
use super::{new_cell, positive_duration};

/// What `bench move` and `bench rebalance` share: the nodes, the cluster's backends and the
/// steady load.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// The nodes to send the load through (comma-separated; the first one is asked for the map
    /// and starts the work). Start a second node with `set -a; . .mezzanine/mezzanine.env;
    /// PORT=8081 mezzanine serve`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080,http://127.0.0.1:8081"
    )]
    pub servers: Vec<String>,
    /// shards.json of the cluster (the backends' URLs, for loading and baselines).
    #[arg(long, env = "SHARD_CONFIG_PATH")]
    pub shard_config_path: PathBuf,
    /// Spare backends as `name=url,...` (what `mezzanine dev --spare N` writes in mezzanine.env).
    #[arg(long, env = "MEZZANINE_SPARE_BACKENDS", default_value = "")]
    pub spare_backends: String,
    /// Concurrent clients of the steady load (spread over the servers).
    #[arg(long, default_value_t = 8, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub concurrency: usize,
    /// How long the load runs before the work starts (the "before" latencies).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub before: Duration,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub auth: super::TokenArg,
}

/// Options of `mezzanine bench move`.
#[derive(Debug, clap::Args)]
pub struct MoveArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The shards to move: a shard, a range or a list of both: `8`, `8-15`, `1,3,5-7`.
    #[arg(long, default_value = "0-15")]
    pub shards: String,
    /// Where to move them (default: the first spare backend).
    #[arg(long)]
    pub to: Option<String>,
    /// Cells in the moving shards before the move (loaded if fewer).
    #[arg(long, default_value_t = 1_000_000)]
    pub cells: u64,
    /// Shards copied at once (the move's and the baseline's parallelism). On 2 cores, 1
    /// keeps foreground p99 at about 2.5x during the copy; 2 copy no faster and double it.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<i64>::new().range(1..=64))]
    pub parallel: i64,
    /// Rate limit of the move (rows per second); without it the server paces the bulk copy
    /// at its `MOVE_COPY_SHARE` of full speed.
    #[arg(long)]
    pub max_rows_per_sec: Option<i64>,
    /// What to do with the retired sources at the end: complete (drop them), none.
    #[arg(long, default_value = "complete")]
    pub cleanup: String,
}

/// The cluster as its first node and shards.json describe it.
pub(super) struct Cluster {
    /// Every node, and the first one (which the bench asks).
    pub servers: Vec<String>,
    pub main: String,
    pub client: reqwest::Client,
    /// `GET /admin/v1/shards` of the first node.
    pub shards_view: Value,
    pub num_shards: u32,
    /// The backends' URLs by name (shards.json and the spares), and the spares' names.
    pub urls: HashMap<String, String>,
    pub spares: Vec<String>,
}

impl Cluster {
    /// Asks the first node for the map and reads shards.json and the spares.
    pub async fn open(args: &ClusterArgs, timeout: Duration) -> anyhow::Result<Cluster> {
        let (servers, main, client) = nodes(
            &args.servers,
            args.concurrency,
            timeout,
            args.auth.token.as_deref(),
        )?;
        let shards_view = send_json(client.get(format!("{main}/admin/v1/shards")))
            .await
            .with_context(|| format!("cannot reach {main}"))?;
        let num_shards = shards_view["num_shards"]
            .as_u64()
            .context("the server's /admin/v1/shards has no num_shards")?
            as u32;
        let (urls, spares) =
            backend_urls(&args.shard_config_path, &args.spare_backends, num_shards)?;
        Ok(Cluster {
            servers,
            main,
            client,
            shards_view,
            num_shards,
            urls,
            spares,
        })
    }

    /// The URL of a backend by name.
    pub fn url(&self, backend: &str) -> anyhow::Result<String> {
        self.urls
            .get(backend)
            .cloned()
            .with_context(|| format!("no URL known for backend {backend:?}"))
    }

    /// The backend that owns shard `s`, and its URL.
    pub fn owner(&self, s: u32) -> anyhow::Result<(String, String)> {
        let owner =
            owner_of(&self.shards_view, s).with_context(|| format!("shard {s} has no owner"))?;
        let url = self.url(&owner)?;
        Ok((owner, url))
    }
}

/// The steady load: `concurrency` clients writing and reading through every node until
/// [`SteadyLoad::finish`].
pub(super) struct SteadyLoad {
    /// The bench's clock: every sample's `at` counts from here.
    pub epoch: Instant,
    /// When the `--before` period ended, on that clock.
    pub before_end: Duration,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<LoadLog>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

/// What every client of the load shares.
struct LoadShared {
    client: reqwest::Client,
    servers: Vec<String>,
    num_shards: u32,
    moving: Vec<u32>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<LoadLog>>,
}

impl SteadyLoad {
    /// Starts the clients (half of the writes go to `moving`) and lets them run for the
    /// `--before` period, whose end is [`SteadyLoad::before_end`]; `work`: what comes next.
    pub async fn start(
        cluster: &Cluster,
        args: &ClusterArgs,
        moving: Vec<u32>,
        work: &str,
    ) -> SteadyLoad {
        let shared = Arc::new(LoadShared {
            client: cluster.client.clone(),
            servers: cluster.servers.clone(),
            num_shards: cluster.num_shards,
            moving,
            epoch: Instant::now(),
            stop: Arc::new(AtomicBool::new(false)),
            log: Arc::new(Mutex::new(LoadLog::default())),
        });
        let workers = (0..args.concurrency)
            .map(|w| tokio::spawn(load_worker(w, shared.clone())))
            .collect();
        eprintln!("bench: steady load for {:?} before {work}", args.before);
        tokio::time::sleep(args.before).await;
        SteadyLoad {
            epoch: shared.epoch,
            before_end: shared.epoch.elapsed(),
            stop: shared.stop.clone(),
            log: shared.log.clone(),
            workers,
        }
    }

    /// Stops the clients and returns what they saw.
    pub async fn finish(self) -> LoadLog {
        self.stop.store(true, Ordering::Release);
        for w in self.workers {
            let _ = w.await;
        }
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One operation of the load, as the client saw it.
#[derive(Clone, Copy)]
pub(super) struct Sample {
    /// Start, since the bench's epoch.
    pub at: Duration,
    pub latency: Duration,
    pub write: bool,
}

/// An acknowledged write.
pub(super) struct Acked {
    row_key: Uuid,
    column: String,
    ref_key: i64,
    body: Value,
    shard: u32,
}

#[derive(Default)]
pub(super) struct LoadLog {
    pub samples: Vec<Sample>,
    pub acked: Vec<Acked>,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ShardPause {
    shard: u32,
    pause_ms: Option<f64>,
    rows_copied: i64,
}

#[derive(Debug, Serialize)]
struct MoveReport {
    servers: Vec<String>,
    shards: String,
    to: String,
    cells_in_moving_shards: i64,
    parallel: i64,
    load_concurrency: usize,
    move_id: i64,
    move_state: String,
    move_secs: f64,
    copy_rows: i64,
    /// Rows over the bulk copy's span (move start until no shard is pending or copying).
    copy_rows_per_sec: f64,
    /// Rows over the whole move (copy, catch-up, verification, cutovers).
    move_rows_per_sec: f64,
    psql_pipe_rows: i64,
    psql_pipe_rows_per_sec: f64,
    copy_vs_psql: Option<f64>,
    client_ops: usize,
    client_errors: usize,
    client_error_examples: Vec<String>,
    acked_writes: usize,
    lost: usize,
    changed: usize,
    duplicated_or_extra: i64,
    verify_ok: Option<bool>,
    p99_before_ms: f64,
    p99_during_copy_ms: f64,
    p99_copy_vs_before: Option<f64>,
    worst_write_in_cutover_ms: f64,
    worst_cutover_minus_p99_before_ms: f64,
    cutovers: Vec<ShardPause>,
    targets: Vec<super::report::Target>,
}

/// Runs the bench.
pub async fn run(args: MoveArgs) -> anyhow::Result<()> {
    // The cluster: the current map from the server, the URLs from shards.json and the spares.
    let cluster = Cluster::open(&args.cluster, Duration::from_secs(30)).await?;
    let (main, client, num_shards) = (&cluster.main, &cluster.client, cluster.num_shards);
    let to = match args.to.clone().or_else(|| cluster.spares.first().cloned()) {
        Some(t) => t,
        None => bail!("--to: no target backend given and no spare backend known (run `mezzanine dev --spare 1` and load mezzanine.env)"),
    };
    let to_url = cluster.url(&to).context("--to")?;
    let moving = parse_shard_set(&args.shards, num_shards)?;
    let mut sources: Vec<(u32, String)> = Vec::new();
    for &s in &moving {
        let (owner, url) = cluster.owner(s)?;
        if owner == to {
            bail!("shard {s} is on {to} already: pick other shards or another --to");
        }
        sources.push((s, url));
    }

    // 1. Load.
    let present = load(&sources, num_shards, args.cells).await?;
    eprintln!("bench: {present} cells in shards {}", args.shards);

    // 2. The load through every server.
    let wall_epoch = SystemTime::now();
    let steady = SteadyLoad::start(&cluster, &args.cluster, moving.clone(), "the move").await;
    let (epoch, before_end) = (steady.epoch, steady.before_end);

    // 3. The baseline: psql \copy binary pipes of the same tables, under the same load.
    eprintln!("bench: psql \\copy binary pipe of the same tables (baseline)");
    let (pipe_rows, pipe_secs) = psql_baseline(&sources, &to_url, args.parallel as usize).await?;

    // 4. The move.
    eprintln!("bench: moving shards {} to {to}", args.shards);
    let mut body = json!({"shards": args.shards, "to": to, "parallel": args.parallel});
    if let Some(r) = args.max_rows_per_sec {
        body["max_rows_per_sec"] = json!(r);
    }
    let job = send_json(client.post(format!("{main}/admin/v1/moves")).json(&body)).await?;
    let id = job["id"].as_i64().context("no move id")?;
    let move_start = epoch.elapsed();
    let mut copy_end = None;
    let mut bulk_rows = 0i64;
    let job = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(j) = send_json(client.get(format!("{main}/admin/v1/moves/{id}"))).await else {
            continue;
        };
        let states: Vec<&str> = j["shards"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["state"].as_str()).collect())
            .unwrap_or_default();
        // The bulk copy ends when no shard is waiting or copying any more (catching up, the
        // prefix verification and the cutover come after: the move's total time covers them).
        if copy_end.is_none() && states.iter().all(|s| !matches!(*s, "pending" | "copying")) {
            copy_end = Some(epoch.elapsed());
            bulk_rows = j["shards"]
                .as_array()
                .map(|a| a.iter().filter_map(|s| s["rows_copied"].as_i64()).sum())
                .unwrap_or_default();
        }
        if j["state"] != "running" {
            break j;
        }
        if epoch.elapsed() > move_start + Duration::from_secs(3600) {
            bail!("the move did not finish within an hour: {j}");
        }
    };
    let move_end = epoch.elapsed();
    let copy_end = copy_end.unwrap_or(move_end);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = steady.finish().await;

    // 5. Figures.
    let shard_rows: Vec<ShardPause> = job["shards"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| ShardPause {
                    shard: s["shard"].as_u64().unwrap_or_default() as u32,
                    pause_ms: s["pause_ms"].as_f64(),
                    rows_copied: s["rows_copied"].as_i64().unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    let copy_rows: i64 = shard_rows.iter().map(|s| s.rows_copied).sum();
    let move_rows_per_sec = copy_rows as f64 / (move_end - move_start).as_secs_f64().max(1e-3);
    let copy_secs = (copy_end - move_start).as_secs_f64().max(1e-3);
    // Cutover windows, from each shard's switch time and pause, in the bench's clock.
    let windows: Vec<(Duration, Duration)> = job["shards"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    let at: DateTime<Utc> = s["switched_at"].as_str()?.parse().ok()?;
                    let pause = Duration::from_secs_f64(s["pause_ms"].as_f64()? / 1000.0);
                    let end = SystemTime::from(at).duration_since(wall_epoch).ok()?;
                    Some((end.saturating_sub(pause), end))
                })
                .collect()
        })
        .unwrap_or_default();
    let p99 = |f: &dyn Fn(&Sample) -> bool| -> f64 {
        let mut v: Vec<f64> = log
            .samples
            .iter()
            .filter(|s| f(s))
            .map(|s| s.latency.as_secs_f64() * 1000.0)
            .collect();
        percentile(&mut v, 0.99)
    };
    let p99_before = p99(&|s| s.at < before_end);
    let p99_copy = p99(&|s| s.at >= move_start && s.at < copy_end);
    let worst_cutover = log
        .samples
        .iter()
        .filter(|s| {
            s.write
                && windows
                    .iter()
                    .any(|(a, b)| s.at <= *b + Duration::from_millis(20) && s.at + s.latency >= *a)
        })
        .map(|s| s.latency.as_secs_f64() * 1000.0)
        .fold(0.0, f64::max);

    // 6. Read back every acknowledged write; count the moved shards' rows.
    eprintln!(
        "bench: reading back {} acknowledged writes",
        log.acked.len()
    );
    let (lost, changed) = read_back(client, main, &log.acked).await;
    let mut extra = 0i64;
    if log.errors.is_empty() && job["state"] == "switched" {
        let expected: i64 = present
            + log
                .acked
                .iter()
                .filter(|a| moving.contains(&a.shard))
                .count() as i64;
        let on_target = count_cells(&to_url, &moving).await?;
        extra = on_target - expected;
    }
    eprintln!("bench: verifying the moved shards");
    let verify_ok = match send(
        client
            .post(format!("{main}/admin/v1/verify"))
            .timeout(Duration::from_secs(1800))
            .json(&json!({"shards": args.shards})),
    )
    .await
    {
        Ok(b) => serde_json::from_slice::<Value>(&b)
            .ok()
            .and_then(|v| v["ok"].as_bool()),
        Err(e) => {
            eprintln!("bench: verify failed: {e}");
            None
        }
    };
    if args.cleanup == "complete" && job["state"] == "switched" {
        let _ = send(client.post(format!("{main}/admin/v1/moves/{id}/complete"))).await;
    }

    let copy_rate = bulk_rows as f64 / copy_secs;
    let pipe_rate = pipe_rows as f64 / pipe_secs.max(1e-3);
    let mut report = MoveReport {
        servers: cluster.servers.clone(),
        shards: args.shards.clone(),
        to,
        cells_in_moving_shards: present,
        parallel: args.parallel,
        load_concurrency: args.cluster.concurrency,
        move_id: id,
        move_state: job["state"].as_str().unwrap_or_default().to_owned(),
        move_secs: (move_end - move_start).as_secs_f64(),
        copy_rows,
        copy_rows_per_sec: copy_rate,
        move_rows_per_sec,
        psql_pipe_rows: pipe_rows,
        psql_pipe_rows_per_sec: pipe_rate,
        copy_vs_psql: super::report::ratio(copy_rate, pipe_rate),
        client_ops: log.samples.len(),
        client_errors: log.errors.len(),
        client_error_examples: log.errors.iter().take(5).cloned().collect(),
        acked_writes: log.acked.len(),
        lost,
        changed,
        duplicated_or_extra: extra,
        verify_ok,
        p99_before_ms: p99_before,
        p99_during_copy_ms: p99_copy,
        p99_copy_vs_before: super::report::ratio(p99_copy, p99_before),
        worst_write_in_cutover_ms: worst_cutover,
        worst_cutover_minus_p99_before_ms: worst_cutover - p99_before,
        cutovers: shard_rows,
        targets: Vec::new(),
    };
    report.targets = targets(&report, args.max_rows_per_sec.is_none());
    if args.cluster.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    Ok(())
}

fn targets(r: &MoveReport, unthrottled: bool) -> Vec<super::report::Target> {
    use super::report::Target;
    let target = |name, value: Option<f64>, goal, pass: Option<bool>| Target {
        name,
        value,
        goal,
        pass,
        void: None,
    };
    let bad = (r.lost + r.changed) as f64 + r.duplicated_or_extra.max(0) as f64;
    vec![
        target(
            "client errors",
            Some(r.client_errors as f64),
            "= 0",
            Some(r.client_errors == 0),
        ),
        target(
            "lost + changed + extra cells",
            Some(bad),
            "= 0",
            Some(bad == 0.0 && r.verify_ok != Some(false)),
        ),
        target(
            "worst write in cutover - p99 before (ms)",
            Some(r.worst_cutover_minus_p99_before_ms),
            "<= 50",
            Some(r.worst_cutover_minus_p99_before_ms <= 50.0),
        ),
        target(
            "copy / psql pipe rows/s",
            r.copy_vs_psql,
            ">= 0.90",
            r.copy_vs_psql.map(|c| c >= 0.9),
        ),
        target(
            "p99 during copy / before",
            r.p99_copy_vs_before,
            "<= 2 (unthrottled)",
            r.p99_copy_vs_before
                .filter(|_| unthrottled)
                .map(|x| x <= 2.0),
        ),
    ]
}

fn print(r: &MoveReport) {
    println!(
        "move {} of shards {} to {}: {} in {:.1} s ({} cells, parallel {}, {} clients)",
        r.move_id,
        r.shards,
        r.to,
        r.move_state,
        r.move_secs,
        r.cells_in_moving_shards,
        r.parallel,
        r.load_concurrency
    );
    println!(
        "copy: {} rows at {:.0} rows/s (whole move: {:.0} rows/s); psql \\copy binary pipe: {} rows at {:.0} rows/s",
        r.copy_rows, r.copy_rows_per_sec, r.move_rows_per_sec, r.psql_pipe_rows, r.psql_pipe_rows_per_sec
    );
    println!(
        "clients: {} operations, {} errors, {} acknowledged writes: {} lost, {} changed, {} extra; verify ok: {:?}",
        r.client_ops, r.client_errors, r.acked_writes, r.lost, r.changed, r.duplicated_or_extra, r.verify_ok
    );
    println!(
        "latency: p99 before {:.1} ms, p99 during copy {:.1} ms, worst write in a cutover {:.1} ms",
        r.p99_before_ms, r.p99_during_copy_ms, r.worst_write_in_cutover_ms
    );
    let pauses: Vec<String> = r
        .cutovers
        .iter()
        .map(|c| format!("{}:{:.1}", c.shard, c.pause_ms.unwrap_or(f64::NAN)))
        .collect();
    println!("cutover pause per shard (ms): {}", pauses.join(" "));
    for e in &r.client_error_examples {
        println!("  error: {e}");
    }
    println!();
    println!("{:<44} {:>20} {:>12}", "target", "goal", "measured");
    for t in &r.targets {
        println!(
            "{:<44} {:>20} {:>12}  {}",
            t.name,
            t.goal,
            t.value.map_or("-".into(), |v| format!("{v:.3}")),
            match t.pass {
                Some(true) => "ok",
                Some(false) => "MISSED",
                None => "not measured",
            }
        );
    }
}

/// The server URLs of `--servers` (trimmed), the first one (which the bench asks), and an
/// HTTP client for `concurrency` clients.
fn nodes(
    servers: &[String],
    concurrency: usize,
    timeout: Duration,
    token: Option<&str>,
) -> anyhow::Result<(Vec<String>, String, reqwest::Client)> {
    let servers: Vec<String> = servers
        .iter()
        .map(|s| s.trim().trim_end_matches('/').to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let Some(main) = servers.first().cloned() else {
        bail!("--servers: give at least one server URL");
    };
    let token = crate::token::resolve(token, &main);
    let client = reqwest::Client::builder()
        .default_headers(crate::token::bearer_headers(token.as_deref())?)
        .pool_max_idle_per_host(concurrency * 2)
        .timeout(timeout)
        .build()?;
    Ok((servers, main, client))
}

/// The backends' URLs by name: from shards.json and the spares (`name=url,...`, as `mezzanine
/// dev --spare N` writes them in mezzanine.env); and the spares' names.
fn backend_urls(
    shard_config_path: &std::path::Path,
    spare_backends: &str,
    num_shards: u32,
) -> anyhow::Result<(HashMap<String, String>, Vec<String>)> {
    let text = std::fs::read_to_string(shard_config_path)
        .with_context(|| format!("cannot read {}", shard_config_path.display()))?;
    let seed = ShardMap::parse(&text, num_shards)?;
    let mut urls: HashMap<String, String> = seed
        .backends()
        .iter()
        .map(|b| (b.name.clone(), b.database_url.clone()))
        .collect();
    let mut spares = Vec::new();
    for part in spare_backends.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, url) = part
            .split_once('=')
            .with_context(|| format!("--spare-backends: {part:?} is not name=url"))?;
        urls.insert(name.trim().to_owned(), url.trim().to_owned());
        spares.push(name.trim().to_owned());
    }
    Ok((urls, spares))
}

/// The owner of shard `s` in a `GET /admin/v1/shards` answer.
fn owner_of(shards_view: &Value, s: u32) -> Option<String> {
    shards_view["ranges"].as_array()?.iter().find_map(|r| {
        let (a, b) = (r["start"].as_u64()? as u32, r["end"].as_u64()? as u32);
        (a <= s && s <= b).then(|| r["backend"].as_str().unwrap_or_default().to_owned())
    })
}

pub(super) fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

pub(super) async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = mezzanine_storage::conninfo::connect(url, Duration::from_secs(10))
        .await
        .map_err(anyhow::Error::msg)?;
    tokio::spawn(conn);
    Ok(client)
}

/// Fills the given shards up to `cells` cells in all (spread evenly), by binary COPY into
/// their tables on their current owners. Returns the number of cells they hold.
pub(super) async fn load(
    sources: &[(u32, String)],
    num_shards: u32,
    cells: u64,
) -> anyhow::Result<i64> {
    use futures::{StreamExt, TryStreamExt};
    let per_shard = (cells / sources.len().max(1) as u64) as i64;
    // 1. What each shard holds (a few shards at a time: each takes a connection).
    let have: Vec<i64> = futures::stream::iter(sources.iter().map(|(shard, url)| async move {
        let c = connect(url).await?;
        let n: i64 = c
            .query_one(
                &format!("SELECT count(*) FROM {}", cells_table(*shard)),
                &[],
            )
            .await?
            .get(0);
        anyhow::Ok(n)
    }))
    .buffered(8)
    .try_collect()
    .await?;
    // 2. Row keys for what is missing: random keys, each kept by the shard it hashes to
    //    while that shard needs more (one pass, whatever the number of shards).
    let index: HashMap<u32, usize> = sources
        .iter()
        .enumerate()
        .map(|(i, (s, _))| (*s, i))
        .collect();
    let mut keys: Vec<Vec<Uuid>> = have
        .iter()
        .map(|&h| Vec::with_capacity((per_shard - h).max(0) as usize))
        .collect();
    let mut missing: i64 = have.iter().map(|&h| (per_shard - h).max(0)).sum();
    let mut rng = rand::rngs::StdRng::from_entropy();
    while missing > 0 {
        let key = Uuid::from_u128(rng.gen::<u128>() & !(0xF << 76) | (0x4 << 76));
        if let Some(&i) = index.get(&shard_for_row_key(&key, num_shards)) {
            if (keys[i].len() as i64) < per_shard - have[i] {
                keys[i].push(key);
                missing -= 1;
            }
        }
    }
    // 3. COPY them in.
    let jobs = sources
        .iter()
        .zip(keys)
        .map(|((shard, url), keys)| async move {
            if keys.is_empty() {
                return anyhow::Ok(());
            }
            let c = connect(url).await?;
            let sink = c
                .copy_in(&format!(
                    "COPY {} (row_key, column_name, ref_key, body) FROM STDIN (FORMAT binary)",
                    cells_table(*shard)
                ))
                .await?;
            let writer =
                BinaryCopyInWriter::new(sink, &[Type::UUID, Type::TEXT, Type::INT8, Type::JSONB]);
            futures::pin_mut!(writer);
            let mut rng = rand::rngs::StdRng::from_entropy();
            for key in keys {
                let cell = new_cell(key, "profile", 1, &mut rng);
                let row: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
                    &cell.key.row_key,
                    &cell.key.column_name,
                    &cell.key.ref_key,
                    &cell.body,
                ];
                writer.as_mut().write(&row).await?;
            }
            writer.finish().await?;
            anyhow::Ok(())
        });
    futures::stream::iter(jobs)
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(have.iter().map(|&h| h.max(per_shard)).sum())
}

/// The psql pipe baseline: `psql -c "\copy (...) TO STDOUT (FORMAT binary)" | psql -c
/// "\copy ... FROM STDIN (FORMAT binary)"` for each shard into a scratch table with the same
/// columns and indexes on the target, `parallel` at a time. Returns rows and seconds.
async fn psql_baseline(
    sources: &[(u32, String)],
    to_url: &str,
    parallel: usize,
) -> anyhow::Result<(i64, f64)> {
    let target = connect(to_url).await?;
    for (shard, _) in sources {
        let t = format!("bench_copy_{shard:04}");
        target
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {t}; \
                 CREATE TABLE {t} (added_id BIGINT PRIMARY KEY, row_key UUID NOT NULL, column_name TEXT NOT NULL, \
                   ref_key BIGINT NOT NULL, body JSONB NOT NULL, created_at TIMESTAMPTZ NOT NULL, \
                   UNIQUE (row_key, column_name, ref_key)); \
                 CREATE INDEX ON {t} (row_key, column_name, ref_key DESC); \
                 CREATE INDEX ON {t} (column_name, added_id); \
                 CREATE INDEX ON {t} (column_name, created_at);"
            ))
            .await?;
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let started = Instant::now();
    let pipes = sources.iter().map(|(shard, url)| {
        let sem = sem.clone();
        let (url, to_url) = (url.clone(), to_url.to_owned());
        let shard = *shard;
        async move {
            let _permit = sem.acquire().await?;
            let out = format!(
                "\\copy (SELECT added_id, row_key, column_name, ref_key, body, created_at FROM {} ORDER BY added_id) TO STDOUT (FORMAT binary)",
                cells_table(shard)
            );
            let inp = format!("\\copy bench_copy_{shard:04} FROM STDIN (FORMAT binary)");
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg("psql -X -q -v ON_ERROR_STOP=1 \"$1\" -c \"$2\" | psql -X -q -v ON_ERROR_STOP=1 \"$3\" -c \"$4\"")
                .arg("sh")
                .arg(&url)
                .arg(&out)
                .arg(&to_url)
                .arg(&inp)
                .stdout(Stdio::null())
                .status()
                .await
                .context("cannot run psql (install the PostgreSQL client)")?;
            if !status.success() {
                bail!("the psql pipe of shard {shard} failed ({status})");
            }
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(pipes).await?;
    let secs = started.elapsed().as_secs_f64();
    let mut rows = 0i64;
    for (shard, _) in sources {
        let t = format!("bench_copy_{shard:04}");
        rows += target
            .query_one(&format!("SELECT count(*) FROM {t}"), &[])
            .await?
            .get::<_, i64>(0);
        target.batch_execute(&format!("DROP TABLE {t}")).await?;
    }
    Ok((rows, secs))
}

/// One client of the steady load: writes a cell through one server (half of them into the
/// moving shards), then reads it back through another.
async fn load_worker(w: usize, shared: Arc<LoadShared>) {
    let LoadShared {
        client,
        servers,
        num_shards,
        moving,
        epoch,
        stop,
        log,
    } = &*shared;
    let (num_shards, epoch) = (*num_shards, *epoch);
    let mut i = 0usize;
    while !stop.load(Ordering::Acquire) {
        let (key, shard) = {
            let mut rng = rand::thread_rng();
            let want_moving = rng.gen_bool(0.5);
            loop {
                let k = Uuid::new_v4();
                let s = shard_for_row_key(&k, num_shards);
                if moving.contains(&s) == want_moving {
                    break (k, s);
                }
            }
        };
        let body = json!({"worker": w, "i": i, "note": "bench move load"});
        let server = &servers[(w + i) % servers.len()];
        let other = &servers[(w + i + 1) % servers.len()];
        i += 1;
        let started = Instant::now();
        let at = epoch.elapsed();
        let res = send(client.post(format!("{server}/v1/cells")).json(
            &json!({"row_key": key.to_string(), "column_name": "load", "ref_key": 1, "body": body}),
        ))
        .await;
        let latency = started.elapsed();
        let ok = res.is_ok();
        {
            let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
            l.samples.push(Sample {
                at,
                latency,
                write: true,
            });
            match res {
                Ok(_) => l.acked.push(Acked {
                    row_key: key,
                    column: "load".into(),
                    ref_key: 1,
                    body: body.clone(),
                    shard,
                }),
                Err(e) => l.errors.push(format!("write via {server}: {e}")),
            }
        }
        if !ok {
            continue;
        }
        let started = Instant::now();
        let at = epoch.elapsed();
        let res = send(client.get(format!("{other}/v1/cells/{key}/load"))).await;
        let latency = started.elapsed();
        let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
        l.samples.push(Sample {
            at,
            latency,
            write: false,
        });
        if let Err(e) = res {
            l.errors.push(format!("read via {other}: {e}"));
        }
    }
}

/// Reads back every acknowledged write: (lost, changed).
pub(super) async fn read_back(
    client: &reqwest::Client,
    server: &str,
    acked: &[Acked],
) -> (usize, usize) {
    use futures::StreamExt;
    let results: Vec<(bool, bool)> = futures::stream::iter(acked)
        .map(|a| async move {
            let url = format!("{server}/v1/cells/{}/{}/{}", a.row_key, a.column, a.ref_key);
            match send(client.get(url)).await {
                Ok(b) => match serde_json::from_slice::<Value>(&b) {
                    Ok(v) => (false, v["body"] != a.body),
                    Err(_) => (false, true),
                },
                Err(_) => (true, false),
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    (
        results.iter().filter(|r| r.0).count(),
        results.iter().filter(|r| r.1).count(),
    )
}

async fn count_cells(url: &str, shards: &[u32]) -> anyhow::Result<i64> {
    let c = connect(url).await?;
    let mut n = 0;
    for &s in shards {
        n += c
            .query_one(&format!("SELECT count(*) FROM {}", cells_table(s)), &[])
            .await?
            .get::<_, i64>(0);
    }
    Ok(n)
}
