//! `mezzanine bench`: a running server measured against the same statements sent directly to
//! PostgreSQL, at the same concurrency, in the same run (DESIGN.md §10).
//!
//! - [`runner`]: the timed phases (tokio workers, HDR latency histograms).
//! - [`direct`]: the baselines, the storage functions the server calls and binary COPY.
//! - [`report`]: the table and the `--json` report, with the targets.
//! - [`triggers`]: `bench triggers`, plugin delivery with a receiver in the bench.

mod conn;
mod direct;
mod http;
mod moves;
mod rebalance;
mod report;
mod runner;
mod triggers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::builder::RangedU64ValueParser;
use mezzanine_core::duration::parse_duration;
use mezzanine_core::{CellKey, NewCell};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use direct::Direct;
use report::{ratio, CopyReport, OpReport, Report};
use runner::{measure, Tally, OP_TIMEOUT};

/// Benchmarks.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Measure each operation through HTTP and through the same statements sent directly to
    /// PostgreSQL (same concurrency, same run), batch writes against binary COPY, and the
    /// server's memory; print the ratios next to their targets.
    Http(HttpArgs),
    /// Move shards under a steady mixed load through two nodes: client errors, lost or changed
    /// cells, each shard's cutover pause, the worst write latency during cutovers, copy
    /// throughput against a `psql \copy` binary pipe of the same tables, and foreground p99
    /// during the copy against before.
    Move(moves::MoveArgs),
    /// Scale out under a steady load: plan and apply a rebalance onto an empty backend;
    /// duration, data moved against the lower bound, client errors and the worst cutover
    /// pause.
    Rebalance(rebalance::RebalanceArgs),
    /// Plugin delivery end to end, with a JSON-RPC receiver in the bench: delivered events/s
    /// at saturation against the write rate, latency from a write's acknowledgement to its
    /// event's receipt at half that rate, the backlog's drain after a receiver outage, and
    /// events lost, duplicated or out of order.
    Triggers(triggers::TriggersArgs),
}

/// The token and TLS options every bench shares.
#[derive(Debug, clap::Args)]
pub struct TokenArg {
    /// Bearer token for the servers (default: $MEZZANINE_TOKEN, else the dev cluster's in
    /// .mezzanine/mezzanine.env when it names the server). Needs scope admin for `bench move`
    /// and `bench rebalance`; write for `bench http` once /v1 needs a token.
    #[arg(
        long,
        env = "MEZZANINE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

/// Options of `mezzanine bench http`.
#[derive(Debug, clap::Args)]
pub struct HttpArgs {
    /// Base URL of the running server.
    #[arg(long, env = "MEZZANINE_URL", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// shards.json of the server: with CATALOG_URL, it finds the catalog, whose map the direct
    /// side routes by (shards.json only seeded it: shards may have moved since).
    #[arg(long, env = "SHARD_CONFIG_PATH")]
    pub shard_config_path: Option<PathBuf>,
    /// The server's catalog database (default: found as the server finds it, where the
    /// backends of shards.json record it).
    #[arg(long, env = "CATALOG_URL")]
    pub catalog_url: Option<String>,
    /// Number of shards (default: asked from the server); must match the server's.
    #[arg(long, env = "NUM_SHARDS")]
    pub num_shards: Option<u32>,
    /// Operations to measure.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "write,latest,row,partition,batch"
    )]
    pub ops: Vec<Op>,
    /// Concurrent workers on each side.
    #[arg(long, env = "BENCH_CONCURRENCY", default_value_t = 16, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub concurrency: usize,
    /// Length of each phase (5s, 1m, ...).
    #[arg(long, env = "BENCH_DURATION", default_value = "10s", value_parser = positive_duration)]
    pub duration: Duration,
    /// Cells per batch write (1 to 1000).
    #[arg(long, default_value_t = 1000, value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_BATCH as u64))]
    pub batch_size: usize,
    /// Rows written before the phases (3 columns x 2 versions each), read by latest and row.
    #[arg(long, default_value_t = 2000)]
    pub seed_rows: usize,
    /// Print one JSON object on stdout instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Measure HTTP only (no shards.json needed).
    #[arg(long)]
    pub no_direct: bool,
    #[command(flatten)]
    pub auth: TokenArg,
}

/// An operation measured on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    Write,
    Batch,
    Latest,
    Row,
    Partition,
}

impl Op {
    fn name(self) -> String {
        format!("{self:?}").to_lowercase()
    }
}

pub(crate) fn positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be more than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

const COLUMNS: [&str; 3] = ["profile", "billing", "settings"];
const MAX_BATCH: usize = 1000;

/// What the workers share: the HTTP client, the seeded rows and the shape of the inputs.
pub struct Workload {
    client: reqwest::Client,
    server: String,
    /// The server, for the measured HTTP phases' own connections.
    target: conn::Target,
    num_shards: u32,
    seeded: Vec<Uuid>,
    batch_size: usize,
}

impl Workload {
    fn fresh_cell(&self) -> NewCell {
        fresh_cells(1).remove(0)
    }

    /// A seeded row and one of its columns.
    fn pick(&self) -> Option<(Uuid, &'static str)> {
        let mut rng = rand::thread_rng();
        let row = *self.seeded.choose(&mut rng)?;
        Some((row, COLUMNS[rng.gen_range(0..COLUMNS.len())]))
    }

    fn random_shard(&self) -> u32 {
        rand::thread_rng().gen_range(0..self.num_shards)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }
}

/// `n` cells with fresh random row keys.
fn fresh_cells(n: usize) -> Vec<NewCell> {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| {
            let column = COLUMNS[rng.gen_range(0..COLUMNS.len())];
            new_cell(Uuid::new_v4(), column, 1, &mut rng)
        })
        .collect()
}

/// A cell with a body of about 100 bytes of JSON.
fn new_cell(row_key: Uuid, column: &str, ref_key: i64, rng: &mut impl Rng) -> NewCell {
    let body = json!({
        "name": format!("user-{:08x}", rng.gen::<u32>()),
        "score": rng.gen_range(0..1_000_000),
        "active": rng.gen::<bool>(),
        "tags": ["bench", "mezzanine"],
        "note": "lorem ipsum dolor sit amet",
    });
    let column_name = column.to_owned();
    NewCell {
        key: CellKey {
            row_key,
            column_name,
            ref_key,
        },
        body,
    }
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Http(args) => bench_http(args).await,
        BenchCommand::Move(args) => moves::run(args).await,
        BenchCommand::Rebalance(args) => rebalance::run(args).await,
        BenchCommand::Triggers(args) => triggers::run(args).await,
    }
}

/// Where a slice of a `bench http` phase sends its operations.
#[derive(Clone, Copy)]
enum Side {
    Http,
    Direct,
    Copy,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Http => "over HTTP",
            Side::Direct => "direct to PostgreSQL",
            Side::Copy => "as binary COPY",
        }
    }
}

async fn bench_http(args: HttpArgs) -> anyhow::Result<()> {
    if args.seed_rows == 0 && args.ops.iter().any(|o| matches!(o, Op::Latest | Op::Row)) {
        bail!("--seed-rows must be at least 1 to measure latest and row reads");
    }
    let server = args.server.trim_end_matches('/').to_owned();
    let token = crate::token::resolve(args.auth.token.as_deref(), &server);
    let tls = args.auth.tls.client_config().await?;
    let target = conn::Target::parse(&server, &tls)?.with_token(token.as_deref())?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .default_headers(crate::token::bearer_headers(token.as_deref())?)
        .pool_max_idle_per_host(args.concurrency * 2)
        .timeout(OP_TIMEOUT)
        .build()?;

    #[derive(Deserialize)]
    struct ShardCount {
        num_shards: u32,
    }
    let count = http::send(client.get(format!("{server}/v1/shards/count")))
        .await
        .with_context(|| format!("cannot reach the server at {server}"))?;
    let num_shards = serde_json::from_slice::<ShardCount>(&count)
        .with_context(|| format!("{server}/v1/shards/count did not answer {{\"num_shards\": N}}"))?
        .num_shards;
    if let Some(n) = args.num_shards.filter(|&n| n != num_shards) {
        bail!("--num-shards {n} does not match the server's {num_shards}");
    }
    let direct = match (&args.shard_config_path, args.no_direct) {
        (_, true) => None,
        (Some(path), false) => Some(Arc::new(
            Direct::open(
                path,
                args.catalog_url.as_deref(),
                num_shards,
                args.concurrency,
            )
            .await?,
        )),
        (None, false) => bail!(
            "the direct side needs shards.json: give --shard-config-path or SHARD_CONFIG_PATH \
             (with `mezzanine dev`: set -a; . .mezzanine/mezzanine.env), or pass --no-direct"
        ),
    };
    let rss_before = http::scrape_rss(&client, &server).await.map(|b| b / 1e6);

    let mut work = Workload {
        client,
        target,
        server: server.clone(),
        num_shards,
        seeded: Vec::new(),
        batch_size: args.batch_size,
    };
    eprintln!(
        "bench: seeding {} rows x 3 columns x 2 versions",
        args.seed_rows
    );
    work.seeded = http::seed(&work, args.seed_rows).await?;
    let work = Arc::new(work);
    let (c, dur) = (args.concurrency, args.duration);

    let mut reports = Vec::new();
    let mut batch_vs_copy = None;
    for &op in &args.ops {
        // A phase starts with every backend up: one that overloaded the backends (batches
        // on thousands of shards can keep a backend from answering anything for the query
        // timeout, which the server takes for a hung backend) must not fail the next.
        http::wait_ready(&work).await;
        // With a direct side, each side runs in two halves in the order A B B A (HTTP,
        // direct, direct, HTTP; COPY beside direct for batches): what the machine does in
        // the background (autovacuum after the write phases, checkpoints) weighs on both
        // sides alike instead of on whichever ran first.
        let rounds: &[&[Side]] = match (&direct, op) {
            (None, _) => &[&[Side::Http]],
            (Some(_), Op::Batch) => &[
                &[Side::Http, Side::Direct, Side::Copy],
                &[Side::Copy, Side::Direct, Side::Http],
            ],
            (Some(_), _) => &[&[Side::Http, Side::Direct], &[Side::Direct, Side::Http]],
        };
        let slice = dur / rounds.len() as u32;
        let (mut http, mut direct_t, mut copy_t) = (Tally::new()?, None, None);
        let mut rss: Option<f64> = None;
        for &side in rounds.iter().flat_map(|r| r.iter()) {
            eprintln!("bench: {} {} for {slice:?}", op.name(), side.label());
            match (side, &direct) {
                (Side::Http, _) => {
                    let workers = (0..c).map(|_| http::op(&work, op)).collect();
                    let (t, r) = http::watching_rss(&work, measure(workers, slice)).await;
                    http.merge(t?)?;
                    rss = rss.into_iter().chain(r).reduce(f64::max);
                }
                (Side::Direct, Some(d)) => {
                    d.warm(c).await;
                    let t = measure(vec![direct::op(&work, d, op); c], slice).await?;
                    direct_t.get_or_insert(Tally::new()?).merge(t)?;
                }
                (Side::Copy, Some(d)) => {
                    let t = measure(direct::copy_workers(d, &work, c).await?, slice).await?;
                    copy_t.get_or_insert(Tally::new()?).merge(t)?;
                }
                (_, None) => {}
            }
        }
        let http = http.stats();
        let direct_stats = direct_t.map(|t| t.stats());
        if let Some(copy) = copy_t.map(|t| t.stats()) {
            batch_vs_copy = Some(CopyReport {
                http_cells_per_sec: http.cells_per_sec,
                ratio: ratio(http.cells_per_sec, copy.cells_per_sec),
                copy,
            });
        }
        reports.push(OpReport {
            op: op.name(),
            ratio: direct_stats
                .as_ref()
                .and_then(|d| ratio(http.ops_per_sec, d.ops_per_sec)),
            http,
            direct: direct_stats,
            server_rss_max_mb: rss,
        });
    }
    if let Some(d) = &direct {
        d.close();
    }

    let rss_max = reports
        .iter()
        .filter_map(|r| r.server_rss_max_mb)
        .reduce(f64::max);
    let mut report = Report {
        server,
        num_shards,
        backends: direct.as_ref().map(|d| d.backend_count()),
        concurrency: c,
        duration_secs: dur.as_secs_f64(),
        batch_size: args.batch_size,
        seed_rows: args.seed_rows,
        ops: reports,
        batch_vs_copy,
        server_rss_before_mb: rss_before,
        server_rss_max_mb: rss_max,
        targets: Vec::new(),
    };
    report.check_targets();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print();
    }
    if let Some(broken) = report.broken_baseline() {
        bail!(
            "the baseline failed ({broken}): a ratio against it means nothing, so no target \
             passed. Fix the cause and run again"
        );
    }
    Ok(())
}
