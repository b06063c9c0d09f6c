//! One timed phase: a tokio task per worker, each repeating its operation until the deadline,
//! with latencies in an HDR histogram (microseconds).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

/// One execution of an operation; `Ok(n)`: `n` cells written (1 for reads).
pub type OpFuture = Pin<Box<dyn Future<Output = anyhow::Result<u64>> + Send>>;
/// Makes one execution, with fresh random inputs each time.
pub type OpFn = Arc<dyn Fn() -> OpFuture + Send + Sync>;

/// Bound on one execution, so that every phase ends by itself.
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// What a phase measured; errors are failed executions (non-2xx, transport, database).
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub ops: u64,
    pub cells: u64,
    pub errors: u64,
    pub elapsed_secs: f64,
    pub ops_per_sec: f64,
    pub cells_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// What one or more slices of a phase measured, mergeable (a phase measured in slices
/// interleaved with the other side's is the sum of its slices).
pub struct Tally {
    hist: Histogram<u64>,
    ops: u64,
    cells: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed_secs: f64,
}

impl Tally {
    pub fn new() -> anyhow::Result<Tally> {
        let hist = Histogram::new_with_bounds(1, 2 * OP_TIMEOUT.as_micros() as u64, 3)?;
        Ok(Tally {
            hist,
            ops: 0,
            cells: 0,
            errors: 0,
            first_error: None,
            elapsed_secs: 0.0,
        })
    }

    /// Adds what another slice measured.
    pub fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.hist.add(&other.hist)?;
        self.ops += other.ops;
        self.cells += other.cells;
        self.errors += other.errors;
        self.elapsed_secs += other.elapsed_secs;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }

    /// Rates over the measured time, and latency percentiles.
    pub fn stats(&self) -> Stats {
        let secs = self.elapsed_secs;
        let ms = |us: u64| {
            if self.ops == 0 {
                0.0
            } else {
                us as f64 / 1000.0
            }
        };
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        Stats {
            ops: self.ops,
            cells: self.cells,
            errors: self.errors,
            elapsed_secs: secs,
            ops_per_sec: per_sec(self.ops),
            cells_per_sec: per_sec(self.cells),
            p50_ms: ms(self.hist.value_at_quantile(0.5)),
            p99_ms: ms(self.hist.value_at_quantile(0.99)),
            max_ms: ms(self.hist.max()),
            first_error: self.first_error.clone(),
        }
    }
}

/// Runs one task per entry of `workers` for `duration`; merges what they measured.
pub async fn measure(workers: Vec<OpFn>, duration: Duration) -> anyhow::Result<Tally> {
    let start = Instant::now();
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|op| tokio::spawn(worker(op, start + duration)))
        .collect();
    let mut t = Tally::new()?;
    for task in tasks {
        let mut w = task.await.context("a bench worker panicked")??;
        w.elapsed_secs = 0.0;
        t.merge(w)?;
    }
    t.elapsed_secs = start.elapsed().as_secs_f64();
    Ok(t)
}

async fn worker(op: OpFn, deadline: Instant) -> anyhow::Result<Tally> {
    let mut t = Tally::new()?;
    while Instant::now() < deadline {
        let began = Instant::now();
        let error = match tokio::time::timeout(OP_TIMEOUT, op()).await {
            Ok(Ok(cells)) => {
                t.hist
                    .saturating_record(began.elapsed().as_micros().max(1) as u64);
                (t.ops, t.cells) = (t.ops + 1, t.cells + cells);
                continue;
            }
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => format!("no answer within {OP_TIMEOUT:?}"),
        };
        t.errors += 1;
        t.first_error.get_or_insert(error);
        // Do not spin when every attempt fails at once (connections refused).
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(t)
}
