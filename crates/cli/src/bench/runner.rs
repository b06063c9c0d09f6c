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

struct Tally {
    hist: Histogram<u64>,
    ops: u64,
    cells: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> anyhow::Result<Tally> {
        let hist = Histogram::new_with_bounds(1, 2 * OP_TIMEOUT.as_micros() as u64, 3)?;
        Ok(Tally {
            hist,
            ops: 0,
            cells: 0,
            errors: 0,
            first_error: None,
        })
    }
}

/// Runs one task per entry of `workers` for `duration`; merges what they measured.
pub async fn measure(workers: Vec<OpFn>, duration: Duration) -> anyhow::Result<Stats> {
    let start = Instant::now();
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|op| tokio::spawn(worker(op, start + duration)))
        .collect();
    let mut t = Tally::new()?;
    for task in tasks {
        let w = task.await.context("a bench worker panicked")??;
        t.hist.add(&w.hist)?;
        (t.ops, t.cells, t.errors) = (t.ops + w.ops, t.cells + w.cells, t.errors + w.errors);
        t.first_error = t.first_error.or(w.first_error);
    }
    let secs = start.elapsed().as_secs_f64();
    let ms = |us: u64| if t.ops == 0 { 0.0 } else { us as f64 / 1000.0 };
    Ok(Stats {
        ops: t.ops,
        cells: t.cells,
        errors: t.errors,
        elapsed_secs: secs,
        ops_per_sec: t.ops as f64 / secs,
        cells_per_sec: t.cells as f64 / secs,
        p50_ms: ms(t.hist.value_at_quantile(0.5)),
        p99_ms: ms(t.hist.value_at_quantile(0.99)),
        max_ms: ms(t.hist.max()),
        first_error: t.first_error,
    })
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
