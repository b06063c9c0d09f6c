//! What `--wait` shows of a running move: rows copied of rows total over the job's shards, the
//! lag, the copy rate measured between polls, and the time left at that rate; and one line per
//! running shard ([`Tracker`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::table::{count, eta};
use super::types::{Job, ShardMove};

/// A job's progress summed over its shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobProgress {
    pub copied: u64,
    pub total: u64,
    pub lag: u64,
    /// Rows still to copy: per shard the larger of `total - copied` and its lag.
    pub remaining: u64,
    /// Shards past the copy (switched or cleaned).
    pub done: usize,
    pub shards: usize,
}

/// A shard's rows to copy as the job says now: its total, at least what it copied already
/// (unknown: what it copied).
fn shard_total(s: &ShardMove) -> u64 {
    let copied = s.rows_copied.unwrap_or(0);
    s.rows_total.unwrap_or(copied).max(copied)
}

impl JobProgress {
    pub fn of(job: &Job) -> Self {
        Self::with_totals(job, shard_total)
    }

    /// The progress with each shard's total given by `total` (at least its copied rows).
    fn with_totals(job: &Job, total: impl Fn(&ShardMove) -> u64) -> Self {
        let mut p = Self {
            shards: job.shards.len(),
            ..Self::default()
        };
        for s in &job.shards {
            let copied = s.rows_copied.unwrap_or(0);
            let total = total(s).max(copied);
            let lag = s.lag.unwrap_or(0);
            p.copied = p.copied.saturating_add(copied);
            p.total = p.total.saturating_add(total);
            p.lag = p.lag.saturating_add(lag);
            let finished = matches!(s.state.as_str(), "switched" | "cleaned");
            if finished {
                p.done += 1;
            } else {
                p.remaining = p.remaining.saturating_add((total - copied).max(lag));
            }
        }
        p
    }
}

/// A running shard's line under `--wait`: rows copied of its total, its state and lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLine {
    pub shard: u64,
    pub copied: u64,
    /// Never below an earlier poll's (see [`Tracker`]).
    pub total: u64,
    /// `copying, lag 30`.
    pub message: String,
}

/// What `--wait` shows, poll after poll. A shard's total may be unknown at first (0 or
/// absent: the copied count stands in), then known, and an estimate may shrink; the tracker
/// keeps each shard's largest total so far, so that no bar's length, nor the job's, ever goes
/// backwards.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// Each shard's largest total so far.
    totals: BTreeMap<u64, u64>,
}

/// One poll's view: the job's total line and a line per running shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub job: JobProgress,
    pub running: Vec<ShardLine>,
}

impl Tracker {
    pub fn view(&mut self, job: &Job) -> View {
        for s in &job.shards {
            let seen = self.totals.entry(s.shard).or_insert(0);
            *seen = (*seen).max(shard_total(s));
        }
        let totals = &self.totals;
        let total_of = |s: &ShardMove| totals.get(&s.shard).copied().unwrap_or(0);
        let mut p = JobProgress::with_totals(job, total_of);
        // Shards of an earlier poll that this one lacks still count (a job's shards do not
        // change; this keeps the sum monotone whatever the answers say).
        p.total = p
            .total
            .max(totals.values().fold(0u64, |a, &t| a.saturating_add(t)));
        let running = job
            .shards
            .iter()
            .filter(|s| matches!(s.state.as_str(), "copying" | "catching_up" | "cutover"))
            .map(|s| {
                let copied = s.rows_copied.unwrap_or(0);
                ShardLine {
                    shard: s.shard,
                    copied,
                    total: total_of(s).max(copied),
                    message: match s.lag {
                        Some(lag) if s.state != "copying" => {
                            format!("{}, lag {}", s.state, count(lag as f64))
                        }
                        _ => s.state.clone(),
                    },
                }
            })
            .collect();
        View { job: p, running }
    }
}

/// The copy rate over a sliding window of polls.
#[derive(Debug, Clone)]
pub struct RateWindow {
    window: Duration,
    samples: VecDeque<(Duration, u64)>,
}

impl RateWindow {
    /// A window of `window` (the rate follows changes of speed within about that time).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            samples: VecDeque::new(),
        }
    }

    /// Records `copied` rows at `at` (time since the wait began). A count that goes down (a
    /// shard restarted its copy) starts the window over.
    pub fn push(&mut self, at: Duration, copied: u64) {
        if self.samples.back().is_some_and(|&(_, c)| copied < c) {
            self.samples.clear();
        }
        self.samples.push_back((at, copied));
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|&(t, _)| at.saturating_sub(t) >= self.window)
        {
            self.samples.pop_front();
        }
    }

    /// Rows per second, once the window spans at least a second.
    pub fn rate(&self) -> Option<f64> {
        let (&(t0, c0), &(t1, c1)) = (self.samples.front()?, self.samples.back()?);
        let secs = t1.saturating_sub(t0).as_secs_f64();
        (secs >= 1.0).then(|| (c1 - c0) as f64 / secs)
    }
}

/// The time to copy `remaining` rows at `rate` rows per second, if the rate says anything.
pub fn time_left(remaining: u64, rate: Option<f64>) -> Option<Duration> {
    if remaining == 0 {
        return Some(Duration::ZERO);
    }
    let rate = rate.filter(|r| r.is_finite() && *r > 0.0)?;
    let secs = remaining as f64 / rate;
    (secs < 1e9).then(|| Duration::from_secs_f64(secs))
}

/// The progress bar's message, short enough for an 80-column terminal next to the bar:
/// `lag 30  12.3k rows/s  ETA 1m20s  3/8 switched`.
pub fn message(p: &JobProgress, rate: Option<f64>) -> String {
    let left = time_left(p.remaining, rate).map_or_else(|| "-".to_owned(), eta);
    let rate = rate.map_or_else(|| "-".to_owned(), count);
    format!(
        "lag {}  {rate} rows/s  ETA {left}  {}/{} switched",
        count(p.lag as f64),
        p.done,
        p.shards
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::types::ShardMove;

    fn shard(state: &str, copied: u64, total: Option<u64>, lag: u64) -> ShardMove {
        ShardMove {
            state: state.into(),
            rows_copied: Some(copied),
            rows_total: total,
            lag: Some(lag),
            ..ShardMove::default()
        }
    }

    fn job(shards: Vec<ShardMove>) -> Job {
        let mut job: Job = serde_json::from_str(r#"{"id": 1, "state": "running"}"#).unwrap();
        job.shards = shards;
        job
    }

    #[test]
    fn sums_over_shards() {
        let p = JobProgress::of(&job(vec![
            shard("copying", 1200, Some(5000), 0),
            shard("catching_up", 3000, Some(3000), 30),
            shard("switched", 100, Some(100), 0),
            shard("pending", 0, None, 0),
        ]));
        assert_eq!(
            p,
            JobProgress {
                copied: 4300,
                total: 8100,
                lag: 30,
                remaining: 3800 + 30,
                done: 1,
                shards: 4,
            }
        );
    }

    #[test]
    fn a_total_below_the_copied_count_is_raised() {
        let p = JobProgress::of(&job(vec![shard("copying", 10, Some(5), 0)]));
        assert_eq!((p.copied, p.total, p.remaining), (10, 10, 0));
    }

    #[test]
    fn one_line_per_running_shard() {
        let mut t = Tracker::default();
        let v = t.view(&job(vec![
            ShardMove {
                shard: 8,
                ..shard("copying", 1200, Some(5000), 0)
            },
            ShardMove {
                shard: 9,
                ..shard("catching_up", 3000, Some(3000), 1234)
            },
            ShardMove {
                shard: 10,
                ..shard("cutover", 70, Some(70), 3)
            },
            ShardMove {
                shard: 11,
                ..shard("pending", 0, None, 0)
            },
            ShardMove {
                shard: 12,
                ..shard("switched", 100, Some(100), 0)
            },
        ]));
        let lines: Vec<(u64, u64, u64, &str)> = v
            .running
            .iter()
            .map(|l| (l.shard, l.copied, l.total, l.message.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                (8, 1200, 5000, "copying"),
                (9, 3000, 3000, "catching_up, lag 1.2k"),
                (10, 70, 70, "cutover, lag 3"),
            ]
        );
        assert_eq!((v.job.copied, v.job.total, v.job.done), (4370, 8170, 1));
    }

    #[test]
    fn the_totals_never_go_backwards() {
        let mut t = Tracker::default();
        let poll = |t: &mut Tracker, copied: u64, total: Option<u64>| {
            t.view(&job(vec![
                ShardMove {
                    shard: 1,
                    ..shard("copying", copied, total, 0)
                },
                ShardMove {
                    shard: 2,
                    ..shard("copying", 10, Some(100), 0)
                },
            ]))
        };
        // Unknown, then known, then a smaller estimate, then unknown again.
        let mut last = (0, 0);
        for (copied, total) in [
            (0, None),
            (50, Some(0)),
            (100, Some(1000)),
            (400, Some(600)),
            (500, None),
            (900, Some(800)),
        ] {
            let v = poll(&mut t, copied, total);
            let shard_total = v.running[0].total;
            assert!(
                v.job.total >= last.0,
                "{copied}: {} < {}",
                v.job.total,
                last.0
            );
            assert!(
                shard_total >= last.1,
                "{copied}: {shard_total} < {}",
                last.1
            );
            assert!(shard_total >= copied && v.job.total >= v.job.copied);
            last = (v.job.total, shard_total);
        }
        // Shard 1's largest total (1000) and shard 2's (100).
        assert_eq!(last, (1100, 1000));
        // A later answer without shard 2 still counts it.
        let v = t.view(&job(vec![ShardMove {
            shard: 1,
            ..shard("copying", 900, Some(10), 0)
        }]));
        assert_eq!(v.job.total, 1100);
        // What is left is measured against the largest total.
        assert_eq!(v.job.remaining, 100);
    }

    #[test]
    fn rate_over_the_window() {
        let mut w = RateWindow::new(Duration::from_secs(10));
        w.push(Duration::ZERO, 0);
        assert_eq!(w.rate(), None);
        w.push(Duration::from_millis(500), 500);
        assert_eq!(w.rate(), None);
        w.push(Duration::from_secs(2), 2000);
        assert_eq!(w.rate(), Some(1000.0));
        for s in 3..=30 {
            w.push(Duration::from_secs(s), 2000 + (s - 2) * 100);
        }
        let r = w.rate().unwrap();
        assert!((r - 100.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn a_count_going_down_restarts_the_window() {
        let mut w = RateWindow::new(Duration::from_secs(10));
        w.push(Duration::ZERO, 1000);
        w.push(Duration::from_secs(2), 3000);
        w.push(Duration::from_secs(3), 0);
        assert_eq!(w.rate(), None);
        w.push(Duration::from_secs(5), 400);
        assert_eq!(w.rate(), Some(200.0));
    }

    #[test]
    fn eta_needs_a_rate_unless_nothing_is_left() {
        assert_eq!(time_left(0, None), Some(Duration::ZERO));
        assert_eq!(time_left(10, None), None);
        assert_eq!(time_left(10, Some(0.0)), None);
        assert_eq!(time_left(1000, Some(10.0)), Some(Duration::from_secs(100)));
    }

    #[test]
    fn the_message() {
        let p = JobProgress {
            copied: 1,
            total: 2,
            lag: 30,
            remaining: 8000,
            done: 3,
            shards: 8,
        };
        assert_eq!(
            message(&p, Some(100.0)),
            "lag 30  100 rows/s  ETA 1m20s  3/8 switched"
        );
        assert_eq!(message(&p, None), "lag 30  - rows/s  ETA -  3/8 switched");
    }
}
