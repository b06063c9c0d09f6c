//! `mezzanine bench triggers` (issue 17, point 6): plugin delivery measured end to end.
//!
//! The bench runs the plugin itself ([`receiver`]), registers it for a column of its own
//! through `POST /v1/plugins`, writes single cells through `POST /v1/cells` and matches each
//! acknowledged write (its `added_id` from the 201 answer, its shard from its row key) with
//! the calls the receiver gets ([`ledger`]). Three phases, each on fresh cells:
//!
//! 1. saturation: `--connections` writers at full speed for `--duration`; delivered events/s
//!    against the writes/s (the delivery's span, from its first to its last receipt of the
//!    phase's events, against the writers' span);
//! 2. latency: writers at half of phase 1's write rate for `--duration`; the time from each
//!    write's acknowledgement to the receipt of its event;
//! 3. outage: the same load; the receiver down for `--outage`, then back: the backlog at its
//!    return, the time to drain it, and the delivery rate meanwhile against the write rate.
//!
//! Then the totals: events lost, duplicates, out of order per shard. The plugin is deleted at
//! the end, also after an error or Ctrl-C.

mod ledger;
mod receiver;
mod report;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::builder::RangedU64ValueParser;
use hyper::Method;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::conn::{Conn, Target};
use super::http::{send, send_json};
use super::runner::OP_TIMEOUT;
use super::{new_cell, positive_duration, TokenArg};
use ledger::{Ack, Ledger, Phase, Progress, Verdict};
use receiver::Receiver;
use report::{End, Latency, Outage, Report, Saturation, WriteLog};

/// Options of `mezzanine bench triggers`.
#[derive(Debug, clap::Args)]
pub struct TriggersArgs {
    /// Base URL of the running server.
    #[arg(long, env = "MEZZANINE_URL", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Writers, each on a kept-alive connection of its own.
    #[arg(long, default_value_t = 16, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub connections: usize,
    /// Length of the saturation phase and of the latency phase (5s, 1m, ...).
    #[arg(long, env = "BENCH_DURATION", default_value = "10s", value_parser = positive_duration)]
    pub duration: Duration,
    /// How long the receiver is down in the outage phase.
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    pub outage: Duration,
    /// Where the bench's JSON-RPC receiver listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub receiver_addr: SocketAddr,
    /// The endpoint registered for the receiver (default: http://RECEIVER_ADDR/): for a
    /// server that reaches the bench by another address.
    #[arg(long)]
    pub receiver_url: Option<String>,
    /// Stop waiting for a phase's events once the number still missing has not gone down for
    /// this long (keep it above the delivery's longest back-off).
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    pub drain_timeout: Duration,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub auth: TokenArg,
}

/// How long the outage phase writes before the receiver goes down (at most `--duration`).
const OUTAGE_LEAD: Duration = Duration::from_secs(5);
/// How often a wait for events looks at what came.
const POLL: Duration = Duration::from_millis(50);
/// Bound on registering and deleting the plugin.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(args: TriggersArgs) -> anyhow::Result<()> {
    let server = args.server.trim_end_matches('/').to_owned();
    let token = crate::token::resolve(args.auth.token.as_deref(), &server);
    let tls = args.auth.tls.client_config().await?;
    let target = Target::parse(&server, &tls)?.with_token(token.as_deref())?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .default_headers(crate::token::bearer_headers(token.as_deref())?)
        .timeout(ADMIN_TIMEOUT)
        .build()?;

    #[derive(Deserialize)]
    struct ShardCount {
        num_shards: u32,
    }
    let count = send(client.get(format!("{server}/v1/shards/count")))
        .await
        .with_context(|| format!("cannot reach the server at {server}"))?;
    let num_shards = serde_json::from_slice::<ShardCount>(&count)
        .with_context(|| format!("{server}/v1/shards/count did not answer {{\"num_shards\": N}}"))?
        .num_shards;

    let epoch = Instant::now();
    let receiver = Receiver::start(args.receiver_addr, epoch).await?;
    let endpoint = endpoint(args.receiver_url.as_deref(), receiver.addr())?;
    let tag = format!("{:08x}", rand::random::<u32>());
    let (name, column) = (
        format!("bench-triggers-{tag}"),
        format!("bench_triggers_{tag}"),
    );
    let registered = send_json(client.post(format!("{server}/v1/plugins")).json(&json!({
        "name": name, "endpoint": endpoint, "subscribed_columns": [column],
    })))
    .await
    .with_context(|| {
        format!(
            "cannot register the bench's plugin ({endpoint}) through POST {server}/v1/plugins \
             (with tokens, it needs scope admin; the server's PLUGIN_HOSTS_ALLOWED must allow \
             the receiver's host)"
        )
    })?;
    let plugin_id = registered["id"]
        .as_str()
        .with_context(|| format!("POST /v1/plugins answered without an id: {registered}"))?
        .to_owned();
    eprintln!("bench: registered plugin {name} ({plugin_id}) for column {column} -> {endpoint}");

    let mut bench = Bench {
        epoch,
        target,
        num_shards,
        column: column.clone(),
        connections: args.connections,
        receiver,
        ledger: Ledger::default(),
        acks: Arc::new(Mutex::new(Vec::new())),
        drain_timeout: args.drain_timeout,
    };
    let outcome = tokio::select! {
        r = bench.phases(args.duration, args.outage) => r,
        _ = crate::shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    let deleted = send(client.delete(format!("{server}/v1/plugins/{plugin_id}"))).await;
    if let Err(e) = &deleted {
        eprintln!(
            "bench: could not delete the bench's plugin {name} ({e:#}); delete it with \
             DELETE {server}/v1/plugins/{plugin_id}"
        );
    }
    let (saturation, latency, outage) = outcome?;
    let mut report = Report {
        server,
        num_shards,
        connections: args.connections,
        duration_secs: args.duration.as_secs_f64(),
        outage_secs: args.outage.as_secs_f64(),
        drain_timeout_secs: args.drain_timeout.as_secs_f64(),
        plugin: name,
        column,
        endpoint,
        saturation,
        latency,
        outage,
        end: End {
            totals: bench.ledger.totals(),
            all_received: bench.ledger.pending_all() == 0,
            malformed_calls: bench.receiver.malformed(),
        },
        targets: Vec::new(),
    };
    report.check_targets();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print();
    }
    Ok(())
}

/// The URL the server is told to call.
fn endpoint(url: Option<&str>, addr: SocketAddr) -> anyhow::Result<String> {
    match url {
        Some(url) => Ok(url.to_owned()),
        None if addr.ip().is_unspecified() => bail!(
            "--receiver-addr {addr} names no address the server could call: give \
             --receiver-url http://HOST:{}/ as the server reaches this machine",
            addr.port()
        ),
        None => Ok(format!("http://{addr}/")),
    }
}

/// A run in progress: what the phases share.
struct Bench {
    epoch: Instant,
    target: Target,
    num_shards: u32,
    column: String,
    connections: usize,
    receiver: Receiver,
    ledger: Ledger,
    /// What the writers acknowledged since the last [`Bench::pump`].
    acks: Arc<Mutex<Vec<Ack>>>,
    drain_timeout: Duration,
}

impl Bench {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Moves what the writers and the receiver recorded into the ledger.
    fn pump(&mut self) {
        let acks = std::mem::take(&mut *self.acks.lock().unwrap_or_else(PoisonError::into_inner));
        for a in acks {
            self.ledger.ack(a);
        }
        for r in self.receiver.take() {
            self.ledger.receive(r);
        }
    }

    /// Waits until `pending` is 0 or has not gone down for `--drain-timeout`; returns
    /// whether it reached 0, and when the wait ended.
    async fn wait(&mut self, what: &str, pending: impl Fn(&Ledger) -> usize) -> (bool, Duration) {
        let mut progress = Progress::new(self.drain_timeout, self.now());
        loop {
            self.pump();
            let left = pending(&self.ledger);
            match progress.observe(left, self.now()) {
                Verdict::Done => return (true, self.now()),
                Verdict::Stalled => {
                    eprintln!(
                        "bench: {left} of {what} still missing after {:?} without progress; \
                         going on",
                        self.drain_timeout
                    );
                    return (false, self.now());
                }
                Verdict::Waiting => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Starts `--connections` writers of `phase`, at `rate` writes/s in all if given.
    fn writers(&self, phase: Phase, rate: Option<f64>) -> Writers {
        let pacer = rate.map(|r| Arc::new(Pacer::new(r)));
        let (stop, stopped) = watch::channel(false);
        let tasks = (0..self.connections)
            .map(|_| {
                let w = Writer {
                    conn: Conn::new(self.target.clone()),
                    target: self.target.clone(),
                    num_shards: self.num_shards,
                    column: self.column.clone(),
                    phase,
                    epoch: self.epoch,
                    acks: self.acks.clone(),
                    pacer: pacer.clone(),
                };
                tokio::spawn(w.run(stopped.clone()))
            })
            .collect();
        Writers {
            stop,
            tasks,
            started: self.now(),
        }
    }

    /// The three phases.
    async fn phases(
        &mut self,
        duration: Duration,
        outage: Duration,
    ) -> anyhow::Result<(Saturation, Latency, Outage)> {
        let c = self.connections;

        eprintln!("bench: 1/3 saturation: {c} writers at full speed for {duration:?}");
        let writers = self.writers(Phase::Saturation, None);
        tokio::time::sleep(duration).await;
        let log = writers.stop().await?;
        self.pump();
        let writes = self.ledger.acked(Phase::Saturation);
        if writes == 0 {
            bail!(
                "no write was acknowledged in {duration:?} ({} errors; the first: {})",
                log.errors,
                log.first_error.as_deref().unwrap_or("none")
            );
        }
        let write_log = WriteLog::new(writes, &log);
        let (done, waited) = self
            .wait("the saturation phase's events", |l| {
                l.pending(Phase::Saturation)
            })
            .await;
        let saturation = Saturation::measure(&self.ledger, write_log, log.stopped_at, done, waited);

        let rate = saturation.writes.writes_per_sec / 2.0;
        eprintln!("bench: 2/3 latency: {c} writers at {rate:.0} writes/s for {duration:?}");
        let writers = self.writers(Phase::Latency, Some(rate));
        tokio::time::sleep(duration).await;
        let log = writers.stop().await?;
        self.pump();
        let writes = self.ledger.acked(Phase::Latency);
        let write_log = WriteLog::new(writes, &log);
        self.wait("the latency phase's events", |l| l.pending(Phase::Latency))
            .await;
        let latency = Latency::measure(&self.ledger, rate, write_log);

        let lead = OUTAGE_LEAD.min(duration);
        eprintln!(
            "bench: 3/3 outage: {c} writers at {rate:.0} writes/s; the receiver goes down after \
             {lead:?} for {outage:?}"
        );
        let writers = self.writers(Phase::Outage, Some(rate));
        tokio::time::sleep(lead).await;
        self.receiver.down().await;
        let down_at = self.now();
        tokio::time::sleep(outage).await;
        self.receiver.up().await?;
        let back = self.now();
        self.pump();
        eprintln!(
            "bench: the receiver is back after {:.1} s; {} of the outage phase's events \
             acknowledged and not received",
            (back - down_at).as_secs_f64(),
            self.ledger.pending(Phase::Outage)
        );
        self.wait("the events acknowledged before the return", |l| {
            l.pending_acked_by(Phase::Outage, back)
        })
        .await;
        let log = writers.stop().await?;
        self.pump();
        let writes = self.ledger.acked(Phase::Outage);
        let write_log = WriteLog::new(writes, &log);
        let outage = Outage::measure(&self.ledger, write_log, back - down_at, back);

        eprintln!("bench: waiting for every acknowledged write's event");
        self.wait("the acknowledged writes' events", Ledger::pending_all)
            .await;
        Ok((saturation, latency, outage))
    }
}

/// The writers of a phase; they stop when told, or are aborted when dropped.
struct Writers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<WriterLog>>,
    started: Duration,
}

impl Writers {
    /// Stops them; returns what they did, from their start until the last one stopped.
    async fn stop(mut self) -> anyhow::Result<WriterLog> {
        let _ = self.stop.send(true);
        let mut all = WriterLog {
            started_at: self.started,
            stopped_at: self.started,
            ..WriterLog::default()
        };
        for task in std::mem::take(&mut self.tasks) {
            let log = task.await.context("a bench writer panicked")?;
            all.errors += log.errors;
            if all.first_error.is_none() {
                all.first_error = log.first_error;
            }
            all.stopped_at = all.stopped_at.max(log.stopped_at);
        }
        Ok(all)
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The writers' schedule at a fixed rate: the k-th write (in the order the writers ask) is due
/// at start + k / rate. Open loop: a writer that fell behind sends at once, so the rate holds
/// on average (governor's `until_ready` with a burst of 1 drops the slots a late wake-up
/// misses: about 8 % below the asked rate for 8 writers).
struct Pacer {
    start: tokio::time::Instant,
    period: f64,
    next: AtomicU64,
}

impl Pacer {
    fn new(rate: f64) -> Pacer {
        Pacer {
            start: tokio::time::Instant::now(),
            period: 1.0 / rate.max(1e-3),
            next: AtomicU64::new(0),
        }
    }

    /// When the `k`-th write is due, after the start.
    fn due(&self, k: u64) -> Duration {
        Duration::try_from_secs_f64(k as f64 * self.period).unwrap_or(Duration::MAX)
    }

    /// Waits until the next write is due.
    async fn wait(&self) {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        match self.start.checked_add(self.due(k)) {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

/// What a writer did besides its acknowledged writes.
#[derive(Debug, Clone, Default)]
pub struct WriterLog {
    pub errors: u64,
    pub first_error: Option<String>,
    pub started_at: Duration,
    pub stopped_at: Duration,
}

/// The part of a 201 answer the bench reads.
#[derive(Deserialize)]
struct Written {
    added_id: i64,
}

/// One writer: single cells through `POST /v1/cells` on a connection of its own.
struct Writer {
    conn: Conn,
    target: Target,
    num_shards: u32,
    column: String,
    phase: Phase,
    epoch: Instant,
    acks: Arc<Mutex<Vec<Ack>>>,
    pacer: Option<Arc<Pacer>>,
}

impl Writer {
    async fn run(mut self, mut stop: watch::Receiver<bool>) -> WriterLog {
        let mut log = WriterLog::default();
        while !*stop.borrow() {
            if let Some(pacer) = &self.pacer {
                tokio::select! {
                    _ = pacer.wait() => {}
                    _ = stop.changed() => break,
                }
            }
            if let Err(e) = self.write_one().await {
                log.errors += 1;
                log.first_error.get_or_insert(format!("{e:#}"));
                // Do not spin when every attempt fails at once (connections refused).
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        log.stopped_at = self.epoch.elapsed();
        log
    }

    async fn write_one(&mut self) -> anyhow::Result<()> {
        let row_key = Uuid::new_v4();
        let cell = new_cell(row_key, &self.column, 1, &mut rand::thread_rng());
        let body = serde_json::to_vec(&json!({
            "row_key": row_key, "column_name": self.column, "ref_key": 1, "body": cell.body,
        }))?;
        let answer = match tokio::time::timeout(
            OP_TIMEOUT,
            self.conn.send(Method::POST, "/v1/cells", Some(body)),
        )
        .await
        {
            Ok(answer) => answer?,
            Err(_) => {
                // The connection is in an unknown state: start another.
                self.conn = Conn::new(self.target.clone());
                bail!("no answer within {OP_TIMEOUT:?}");
            }
        };
        let at = self.epoch.elapsed();
        let written: Written = serde_json::from_slice(&answer)
            .context("POST /v1/cells answered without an added_id")?;
        let shard = mezzanine_core::shard_for_row_key(&row_key, self.num_shards);
        self.acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Ack {
                key: (shard, written.added_id),
                at,
                phase: self.phase,
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_spaces_writes_evenly_from_its_start() {
        let p = Pacer::new(200.0);
        assert_eq!(p.due(0), Duration::ZERO);
        assert_eq!(p.due(1), Duration::from_millis(5));
        assert_eq!(p.due(1000), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn paced_writers_hold_the_rate_even_when_some_fall_behind() {
        let p = Arc::new(Pacer::new(100.0));
        let start = tokio::time::Instant::now();
        let sent = Arc::new(AtomicU64::new(0));
        let writers: Vec<_> = (0..4)
            .map(|i| {
                let (p, sent) = (p.clone(), sent.clone());
                tokio::spawn(async move {
                    while start.elapsed() < Duration::from_secs(10) {
                        p.wait().await;
                        sent.fetch_add(1, Ordering::Relaxed);
                        // Answers of 10 to 40 ms: each writer alone is slower than the rate.
                        tokio::time::sleep(Duration::from_millis(10 * (i + 1))).await;
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let n = sent.load(Ordering::Relaxed);
        assert!((999..=1004).contains(&n), "{n} writes in 10 s at 100/s");
    }

    #[test]
    fn the_endpoint_is_the_receiver_s_address_unless_given() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(endpoint(None, addr).unwrap(), "http://127.0.0.1:4000/");
        let any: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        let e = endpoint(None, any).unwrap_err().to_string();
        assert!(e.contains("--receiver-url"), "{e}");
        assert_eq!(
            endpoint(Some("http://bench.internal:4000/rpc"), any).unwrap(),
            "http://bench.internal:4000/rpc"
        );
    }
}
