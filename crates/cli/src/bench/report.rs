//! The report: tables for people, the same as one JSON object with `--json`.

use serde::Serialize;

use super::runner::Stats;

#[derive(Debug, Serialize)]
pub struct Report {
    pub server: String,
    pub num_shards: u32,
    /// Backends of shards.json (absent with `--no-direct`).
    pub backends: Option<usize>,
    pub concurrency: usize,
    pub duration_secs: f64,
    pub batch_size: usize,
    pub seed_rows: usize,
    pub ops: Vec<OpReport>,
    pub batch_vs_copy: Option<CopyReport>,
    pub server_rss_before_mb: Option<f64>,
    /// The most server RSS seen during the HTTP phases.
    pub server_rss_max_mb: Option<f64>,
    pub targets: Vec<Target>,
}

#[derive(Debug, Serialize)]
pub struct OpReport {
    pub op: String,
    pub http: Stats,
    pub direct: Option<Stats>,
    /// HTTP ops/s over direct ops/s.
    pub ratio: Option<f64>,
    /// The most server RSS seen during this op's HTTP phase.
    pub server_rss_max_mb: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct CopyReport {
    pub http_cells_per_sec: f64,
    pub copy: Stats,
    /// HTTP batch cells/s over COPY cells/s.
    pub ratio: Option<f64>,
}

/// A figure with its goal; `pass` is absent when the figure was not measured, or when its
/// baseline had errors (`void` then says so).
#[derive(Debug, Serialize)]
pub struct Target {
    pub name: &'static str,
    pub value: Option<f64>,
    pub goal: &'static str,
    pub pass: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub void: Option<String>,
}

pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// Why a baseline is no baseline: its errors, and the first of them.
fn baseline_failure(side: &str, s: &Stats) -> Option<String> {
    (s.errors > 0).then(|| {
        format!(
            "{side}: {} errors, the first: {}",
            s.errors,
            s.first_error.as_deref().unwrap_or("?")
        )
    })
}

impl Report {
    /// Sets `targets`: write and latest at >= 0.8 of direct, batch at >= 0.5 of COPY, RSS <=
    /// 150 MB. A ratio whose baseline had errors neither passes nor misses: it is void.
    pub fn check_targets(&mut self) {
        let op = |name: &str| self.ops.iter().find(|o| o.op == name);
        let op_ratio = |name: &str| op(name).and_then(|o| o.ratio);
        let op_void = |name: &str| {
            op(name)
                .and_then(|o| o.direct.as_ref())
                .and_then(|d| baseline_failure(&format!("{name} direct"), d))
        };
        let target =
            |name, value: Option<f64>, goal, ok: fn(f64) -> bool, void: Option<String>| Target {
                name,
                value,
                goal,
                pass: value.filter(|_| void.is_none()).map(ok),
                void,
            };
        let copy = self.batch_vs_copy.as_ref().and_then(|c| c.ratio);
        let copy_void = self
            .batch_vs_copy
            .as_ref()
            .and_then(|c| baseline_failure("batch COPY", &c.copy));
        self.targets = vec![
            target(
                "write http/direct ops/s",
                op_ratio("write"),
                ">= 0.80",
                |v| v >= 0.8,
                op_void("write"),
            ),
            target(
                "latest http/direct ops/s",
                op_ratio("latest"),
                ">= 0.80",
                |v| v >= 0.8,
                op_void("latest"),
            ),
            target(
                "batch http/COPY cells/s",
                copy,
                ">= 0.50",
                |v| v >= 0.5,
                copy_void,
            ),
            target(
                "server RSS max (MB)",
                self.server_rss_max_mb,
                "<= 150",
                |v| v <= 150.0,
                None,
            ),
        ];
    }

    /// What failed on the baseline side (direct or COPY) of any operation, if anything did.
    pub fn broken_baseline(&self) -> Option<String> {
        let failures: Vec<String> = self
            .ops
            .iter()
            .filter_map(|o| {
                o.direct
                    .as_ref()
                    .and_then(|d| baseline_failure(&format!("{} direct", o.op), d))
            })
            .chain(
                self.batch_vs_copy
                    .as_ref()
                    .and_then(|c| baseline_failure("batch COPY", &c.copy)),
            )
            .collect();
        (!failures.is_empty()).then(|| failures.join("; "))
    }

    pub fn print(&self) {
        let backends = self
            .backends
            .map(|b| format!(" on {b} backends"))
            .unwrap_or_default();
        println!(
            "mezzanine bench http: {}, {} shards{backends}; concurrency {}, {:.1} s per phase, \
             batch {} cells, {} seeded rows\n",
            self.server,
            self.num_shards,
            self.concurrency,
            self.duration_secs,
            self.batch_size,
            self.seed_rows
        );
        println!(
            "{:<10} {:<7} {:>10} {:>11} {:>8} {:>8} {:>8} {:>7} {:>10}",
            "op", "side", "ops/s", "cells/s", "p50 ms", "p99 ms", "max ms", "errors", "server MB"
        );
        for op in &self.ops {
            row(&op.op, "http", &op.http, op.server_rss_max_mb);
            if let Some(direct) = &op.direct {
                row("", "direct", direct, None);
            }
            if let (Some(copy), "batch") = (&self.batch_vs_copy, op.op.as_str()) {
                row("", "COPY", &copy.copy, None);
            }
            if let Some(r) = op.ratio {
                println!("{:<10} http/direct ops/s: {r:.2}", "");
            }
        }
        if let Some(c) = &self.batch_vs_copy {
            let (http, copy) = (c.http_cells_per_sec, c.copy.cells_per_sec);
            let r = fmt(c.ratio, 2);
            println!("\nbatch vs COPY: HTTP {http:.0} cells/s, COPY {copy:.0} cells/s, ratio {r}");
        }
        println!(
            "server RSS: max {} MB during the HTTP phases ({} MB before)\n",
            fmt(self.server_rss_max_mb, 1),
            fmt(self.server_rss_before_mb, 1)
        );
        println!("{:<26} {:>8} {:>8}  result", "target", "value", "goal");
        for t in &self.targets {
            let result = match (t.pass, &t.void) {
                (_, Some(why)) => format!("VOID: the baseline failed ({why})"),
                (Some(true), _) => "pass".to_owned(),
                (Some(false), _) => "MISS".to_owned(),
                (None, None) => "not measured".to_owned(),
            };
            println!(
                "{:<26} {:>8} {:>8}  {result}",
                t.name,
                fmt(t.value, 2),
                t.goal
            );
        }
    }
}

fn row(op: &str, side: &str, s: &Stats, rss_mb: Option<f64>) {
    println!(
        "{op:<10} {side:<7} {:>10.1} {:>11.1} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>10}",
        s.ops_per_sec,
        s.cells_per_sec,
        s.p50_ms,
        s.p99_ms,
        s.max_ms,
        s.errors,
        rss_mb.map(|m| format!("{m:.1}")).unwrap_or_default()
    );
    if let Some(e) = &s.first_error {
        println!("{:<18} first error: {e}", "");
    }
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"))
}
