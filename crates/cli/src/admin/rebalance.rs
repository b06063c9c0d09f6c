//! `mezzanine rebalance plan|apply|list|status|abort|complete` and `backend drain`: the
//! answers of `/admin/v1/rebalance...` as this client reads them, and their rendering.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::table::{amount, bytes, count, eta, millis, or_dash, table, weight_label};
use super::types::Job;

/// `--strategy`, `--window`, `--parallel`, `--max-rows-per-sec`, `--complete`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanOptions {
    /// What to even out: shard count, rows, bytes on disk, or recent writes.
    #[arg(long, value_parser = ["count", "rows", "bytes", "writes"])]
    pub strategy: Option<String>,
    /// How long recent writes are sampled (strategy writes; default 10s).
    #[arg(long)]
    pub window: Option<String>,
    /// Shards copied at the same time over the whole rebalance (default 2).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..=64))]
    pub parallel: Option<u64>,
}

/// The options of a rebalance that runs.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    #[command(flatten)]
    pub plan: PlanOptions,
    /// Copy speed limit in rows per second over the whole rebalance (default: none).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..))]
    pub max_rows_per_sec: Option<u64>,
    /// Follow it until no shard is in flight (progress bar on a terminal).
    #[arg(long)]
    pub wait: bool,
}

impl PlanOptions {
    pub fn body(&self) -> Map<String, Value> {
        let mut body = Map::new();
        if let Some(s) = &self.strategy {
            body.insert("strategy".into(), Value::from(s.clone()));
        }
        if let Some(w) = &self.window {
            body.insert("window".into(), Value::from(w.clone()));
        }
        if let Some(p) = self.parallel {
            body.insert("parallel".into(), Value::from(p));
        }
        body
    }
}

impl RunOptions {
    pub fn body(&self) -> Map<String, Value> {
        let mut body = self.plan.body();
        if let Some(r) = self.max_rows_per_sec {
            body.insert("max_rows_per_sec".into(), Value::from(r));
        }
        body
    }
}

/// `POST /admin/v1/rebalance/plan`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Plan {
    pub strategy: String,
    pub unit: String,
    pub drain: Option<String>,
    pub moves: Vec<PlanMove>,
    pub shards_to_move: u64,
    pub rows_to_move: u64,
    pub bytes_to_move: u64,
    pub moved: u64,
    pub excess: f64,
    /// Whether every backend ends within the tolerance of its share (absent: assumed).
    pub balanced: Option<bool>,
    /// Given only when the plan balances every backend.
    pub lower_bound: Option<f64>,
    pub estimated_seconds: f64,
    pub estimate_basis: String,
    pub pinned: u64,
    pub balance: Vec<Balance>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PlanMove {
    pub shards: String,
    pub count: u64,
    pub from: String,
    pub to: String,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Balance {
    pub backend: String,
    pub weight: f64,
    pub draining: bool,
    pub target: f64,
    pub before: u64,
    pub after: u64,
    pub shards_before: u64,
    pub shards_after: u64,
    pub rows_before: u64,
    pub rows_after: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// `POST /admin/v1/rebalance/apply` and `.../backends/{name}/drain`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Applied {
    pub rebalance: Option<Rebalance>,
    pub plan: Plan,
}

/// `GET /admin/v1/rebalance`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RebalanceList {
    pub rebalances: Vec<Rebalance>,
}

/// A rebalance with its jobs.
#[derive(Debug, Clone, Deserialize)]
pub struct Rebalance {
    pub id: u64,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub strategy: String,
    #[serde(default)]
    pub drain: Option<String>,
    /// Its sources are dropped as each job switches: `switched` means cleaning is due.
    #[serde(default)]
    pub auto_complete: bool,
    /// An operator's request the mover has not carried out on every job yet.
    #[serde(default)]
    pub requested: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub progress: Progress,
    #[serde(default)]
    pub jobs: Vec<Job>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Progress {
    pub shards: u64,
    pub switched: u64,
    pub aborted: u64,
    pub failed: u64,
    pub rows_copied: u64,
    pub rows_total: u64,
    pub worst_pause_ms: Option<f64>,
}

impl Rebalance {
    /// The rebalance as one job over all its shards (for `--wait`). One that drops its
    /// sources as it goes is still running while `switched`: the drops are due (and `backend
    /// remove` after a drain waits for them).
    pub fn as_job(&self) -> Job {
        let state = if self.auto_complete && self.state == "switched" {
            "running".to_owned()
        } else {
            self.state.clone()
        };
        Job {
            id: self.id,
            state,
            to: None,
            shards_spec: None,
            parallel: None,
            max_rows_per_sec: None,
            created_at: self.created_at.clone(),
            updated_at: None,
            error: self.jobs.iter().find_map(|j| j.error.clone()).or_else(|| {
                self.jobs
                    .iter()
                    .flat_map(|j| &j.shards)
                    .find_map(|s| s.error.clone())
            }),
            requested: self
                .requested
                .clone()
                .or_else(|| self.jobs.iter().find_map(|j| j.requested.clone())),
            reverts: None,
            shards: self.jobs.iter().flat_map(|j| j.shards.clone()).collect(),
        }
    }
}

/// `mezzanine rebalance plan`.
pub fn plan(p: &Plan) -> String {
    let mut out = String::new();
    let what = match &p.drain {
        Some(d) => format!("drain of {d}"),
        None => "rebalance".to_owned(),
    };
    let balanced = p.balanced.unwrap_or(true);
    if p.moves.is_empty() {
        out.push_str(&format!(
            "{what} by {}: {}\n",
            p.strategy,
            if balanced {
                "balanced, nothing to move"
            } else {
                "nothing to move: no move brings the backends closer to their shares (shards too coarse, or in a move already)"
            }
        ));
    } else {
        out.push_str(&format!(
            "{what} by {}: {} moves, {} shards, {} rows, {} to move; moved {} {}{}\n",
            p.strategy,
            p.moves.len(),
            p.shards_to_move,
            p.rows_to_move,
            bytes(p.bytes_to_move),
            p.moved,
            p.unit,
            against_the_bound(p),
        ));
        out.push_str(&format!(
            "estimated duration {} ({})\n",
            eta(std::time::Duration::from_secs_f64(
                p.estimated_seconds.clamp(0.0, 1e9)
            )),
            p.estimate_basis
        ));
        let rows: Vec<Vec<String>> = p
            .moves
            .iter()
            .map(|m| {
                vec![
                    m.shards.clone(),
                    m.count.to_string(),
                    m.from.clone(),
                    m.to.clone(),
                    m.rows.to_string(),
                    bytes(m.bytes),
                ]
            })
            .collect();
        out.push_str(&table(
            &["SHARDS", "COUNT", "FROM", "TO", "ROWS", "BYTES"],
            &rows,
        ));
    }
    if p.pinned > 0 {
        out.push_str(&format!(
            "{} shards in a move already are counted where that move takes them\n",
            p.pinned
        ));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = p
        .balance
        .iter()
        .map(|b| {
            vec![
                b.backend.clone(),
                weight_label(b.weight, Some(b.draining)),
                amount(b.target),
                format!("{} -> {}", b.before, b.after),
                format!("{} -> {}", b.shards_before, b.shards_after),
                format!("{} -> {}", b.rows_before, b.rows_after),
                format!("{} -> {}", bytes(b.bytes_before), bytes(b.bytes_after)),
            ]
        })
        .collect();
    let unit = format!("{} BEFORE -> AFTER", p.unit.to_uppercase());
    out.push_str(&table(
        &[
            "BACKEND", "WEIGHT", "SHARE", &unit, "SHARDS", "ROWS", "BYTES",
        ],
        &rows,
    ));
    out
}

/// What a plan moves compared with the least any plan must move: ` (1.00 x the lower bound
/// 21)`, or why there is no such bound.
fn against_the_bound(p: &Plan) -> String {
    match p.lower_bound {
        Some(lb) if lb > 0.0 => format!(
            " ({:.2} x the lower bound {})",
            p.moved as f64 / lb,
            amount(lb)
        ),
        Some(_) => String::new(),
        None if p.balanced == Some(false) => format!(
            "; not every backend ends within the tolerance of its share (shards too coarse, in a move already, or more than 1.2 x the excess {} would move)",
            amount(p.excess)
        ),
        None => String::new(),
    }
}

/// One line for a rebalance: id, state, progress.
pub fn line(r: &Rebalance) -> String {
    let what = match &r.drain {
        Some(d) => format!("drain of {d}"),
        None => format!("by {}", r.strategy),
    };
    format!(
        "rebalance {} ({what}): {}, {}/{} shards switched, {} rows copied, worst pause {}\n",
        r.id,
        super::render::state(&r.state, r.requested.as_deref()),
        r.progress.switched,
        r.progress.shards,
        count(r.progress.rows_copied as f64),
        r.progress
            .worst_pause_ms
            .map_or_else(|| "-".to_owned(), millis)
    )
}

/// `mezzanine rebalance status`: the line and its jobs.
pub fn status(r: &Rebalance) -> String {
    let mut out = line(r);
    let rows: Vec<Vec<String>> = r
        .jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.state.clone(),
                or_dash(j.shards_spec.clone()),
                or_dash(j.to.clone()),
                j.shards.len().to_string(),
            ]
        })
        .collect();
    out.push_str(&table(&["MOVE", "STATE", "SHARDS", "TO", "COUNT"], &rows));
    out
}

/// `mezzanine rebalance list`.
pub fn list(l: &RebalanceList) -> String {
    if l.rebalances.is_empty() {
        return "no rebalance yet\n".to_owned();
    }
    l.rebalances.iter().map(line).collect()
}

/// What apply and drain print when they start (or find nothing to do).
pub fn applied(a: &Applied) -> String {
    let mut out = plan(&a.plan);
    match &a.rebalance {
        Some(r) => {
            out.push('\n');
            out.push_str(&line(r));
            out.push_str(&format!(
                "follow it with: mezzanine rebalance status {} --wait\n",
                r.id
            ));
        }
        None => out.push_str("nothing started\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_renders_a_plan() {
        let p: Plan = serde_json::from_str(
            r#"{"strategy": "count", "unit": "shards", "moves": [{"shards": "21-31", "count": 11,
                "from": "db1", "to": "db3", "rows": 1100, "bytes": 90000, "load": 11}],
                "shards_to_move": 11, "rows_to_move": 1100, "bytes_to_move": 90000, "moved": 11,
                "excess": 10.67, "balanced": true, "lower_bound": 10,
                "estimated_seconds": 75, "estimate_basis": "assumed",
                "pinned": 0, "balance": [{"backend": "db1", "weight": 1, "draining": false,
                "target": 21.33, "before": 32, "after": 21, "shards_before": 32,
                "shards_after": 21, "rows_before": 3200, "rows_after": 2100,
                "bytes_before": 1, "bytes_after": 1}], "future": 1}"#,
        )
        .unwrap();
        let text = plan(&p);
        assert!(text.contains("1 moves, 11 shards, 1100 rows"), "{text}");
        assert!(
            text.contains("moved 11 shards (1.10 x the lower bound 10)"),
            "{text}"
        );
        assert!(text.contains("21-31"), "{text}");
        assert!(text.contains("32 -> 21"), "{text}");
        assert!(text.contains("1m15s"), "{text}");
    }

    #[test]
    fn a_plan_that_cannot_balance_says_so_instead_of_a_bound() {
        let p: Plan = serde_json::from_str(
            r#"{"strategy": "rows", "unit": "rows", "moves": [{"shards": "7", "count": 1,
                "from": "db1", "to": "db2", "rows": 100, "bytes": 1, "load": 100}],
                "moved": 100, "excess": 150, "balanced": false, "lower_bound": null}"#,
        )
        .unwrap();
        let text = plan(&p);
        assert!(
            text.contains("moved 100 rows; not every backend ends within the tolerance"),
            "{text}"
        );
        assert!(!text.contains("lower bound"), "{text}");
        let p: Plan = serde_json::from_str(
            r#"{"strategy": "rows", "unit": "rows", "moves": [], "moved": 0, "excess": 100,
                "balanced": false, "lower_bound": null}"#,
        )
        .unwrap();
        assert!(plan(&p).starts_with("rebalance by rows: nothing to move: no move brings"));
        let p: Plan = serde_json::from_str(
            r#"{"strategy": "count", "unit": "shards", "moves": [], "moved": 0, "excess": 0.5,
                "balanced": true, "lower_bound": 0}"#,
        )
        .unwrap();
        assert!(plan(&p).starts_with("rebalance by count: balanced, nothing to move"));
    }

    #[test]
    fn a_rebalance_reads_as_one_job() {
        let r: Rebalance = serde_json::from_str(
            r#"{"id": 3, "state": "running", "jobs": [
                {"id": 7, "state": "running", "shards": [{"shard": 1, "state": "copying"}]},
                {"id": 8, "state": "running", "shards": [{"shard": 2, "state": "switched", "error": "x"}]}]}"#,
        )
        .unwrap();
        let j = r.as_job();
        assert_eq!(j.id, 3);
        assert!(j.is_running());
        assert_eq!(j.shards.len(), 2);
        assert_eq!(j.error.as_deref(), Some("x"));
        let drain: Rebalance =
            serde_json::from_str(r#"{"id": 4, "state": "switched", "auto_complete": true}"#)
                .unwrap();
        assert!(drain.as_job().is_running());
        let done: Rebalance =
            serde_json::from_str(r#"{"id": 4, "state": "completed", "auto_complete": true}"#)
                .unwrap();
        assert!(!done.as_job().is_running());
    }
}
