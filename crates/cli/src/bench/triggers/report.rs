//! The figures of `bench triggers`, drawn from the [`Ledger`], their targets, and the table
//! (or, with `--json`, one object).

use std::time::Duration;

use serde::Serialize;

use super::ledger::{quantile, Ledger, Phase, Totals};
use super::WriterLog;
use crate::bench::report::{ratio, Target};

/// A phase's writes.
#[derive(Debug, Clone, Serialize)]
pub struct WriteLog {
    /// Acknowledged writes.
    pub writes: usize,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// From the writers' start until the last one stopped.
    pub secs: f64,
    pub writes_per_sec: f64,
}

impl WriteLog {
    pub fn new(writes: usize, log: &WriterLog) -> WriteLog {
        let secs = log.stopped_at.saturating_sub(log.started_at).as_secs_f64();
        WriteLog {
            writes,
            errors: log.errors,
            first_error: log.first_error.clone(),
            secs,
            writes_per_sec: ratio(writes as f64, secs).unwrap_or(0.0),
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Phase 1: writers at full speed.
#[derive(Debug, Serialize)]
pub struct Saturation {
    pub writes: WriteLog,
    /// The phase's events received by the end of its wait.
    pub delivered: usize,
    /// Whether each of them was.
    pub all_delivered: bool,
    /// From the first receipt of one of the phase's events to the last (or, when some did not
    /// come, to the end of the wait).
    pub delivery_secs: Option<f64>,
    /// `delivered` over `delivery_secs` (0 when nothing came).
    pub delivered_per_sec: Option<f64>,
    /// From the writers' stop until the last of the phase's events came (all did).
    pub drain_secs: Option<f64>,
    /// `delivered_per_sec` over the writes' rate.
    pub ratio: Option<f64>,
}

impl Saturation {
    /// `stopped`: when the writers stopped; `done`: whether every event came, `waited`:
    /// when the wait for them ended.
    pub fn measure(
        l: &Ledger,
        writes: WriteLog,
        stopped: Duration,
        done: bool,
        waited: Duration,
    ) -> Saturation {
        let (delivered, delivery_secs, delivered_per_sec, drain_secs) =
            match l.receipt_span(Phase::Saturation) {
                None => (0, None, Some(0.0), None),
                Some((first, last, n)) => {
                    let end = if done { last } else { waited.max(last) };
                    let span = secs(end.saturating_sub(first));
                    let drain = done.then(|| secs(last.saturating_sub(stopped)));
                    (n, Some(span), ratio(n as f64, span), drain)
                }
            };
        let ratio = delivered_per_sec.and_then(|d| ratio(d, writes.writes_per_sec));
        Saturation {
            writes,
            delivered,
            all_delivered: done,
            delivery_secs,
            delivered_per_sec,
            drain_secs,
            ratio,
        }
    }
}

/// Phase 2: writers at half of phase 1's rate.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// The rate asked for: half of phase 1's writes/s.
    pub asked_writes_per_sec: f64,
    pub writes: WriteLog,
    /// The phase's events received by the end of its wait.
    pub delivered: usize,
    /// From a write's acknowledgement to its event's first receipt; an event that never came
    /// counts as infinitely late (a quantile that falls on one is absent).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Latency {
    pub fn measure(l: &Ledger, asked: f64, writes: WriteLog) -> Latency {
        let (lat, n) = l.latencies_ms(Phase::Latency);
        let max = (lat.len() == n).then(|| lat.last().copied()).flatten();
        Latency {
            asked_writes_per_sec: asked,
            writes,
            delivered: lat.len(),
            p50_ms: quantile(&lat, n, 0.5),
            p99_ms: quantile(&lat, n, 0.99),
            max_ms: max,
        }
    }
}

/// Phase 3: the same load, the receiver down for a while.
#[derive(Debug, Serialize)]
pub struct Outage {
    pub writes: WriteLog,
    pub receiver_down_secs: f64,
    /// The phase's events acknowledged and not received when the receiver came back.
    pub backlog_at_return: usize,
    /// From the return until the last of them came (absent: some never did).
    pub drain_secs: Option<f64>,
    /// Events received meanwhile (the backlog and what was written since).
    pub drained_events: Option<usize>,
    pub drain_per_sec: Option<f64>,
    /// `drain_per_sec` over the phase's writes/s.
    pub ratio: Option<f64>,
}

impl Outage {
    pub fn measure(l: &Ledger, writes: WriteLog, down: Duration, back: Duration) -> Outage {
        let drained = l.drained_at(Phase::Outage, back);
        let drain_secs = drained.map(|d| secs(d - back));
        let drained_events = drained.map(|d| l.received_between(back, d));
        let drain_per_sec = drain_secs
            .zip(drained_events)
            .and_then(|(s, n)| ratio(n as f64, s));
        Outage {
            ratio: drain_per_sec.and_then(|d| ratio(d, writes.writes_per_sec)),
            writes,
            receiver_down_secs: secs(down),
            backlog_at_return: l.backlog_at(Phase::Outage, back),
            drain_secs,
            drained_events,
            drain_per_sec,
        }
    }
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct End {
    #[serde(flatten)]
    pub totals: Totals,
    /// Every acknowledged write's event received at least once.
    pub all_received: bool,
    /// Calls that were not a well-formed `cell.written` (answered with a JSON-RPC error).
    pub malformed_calls: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub server: String,
    pub num_shards: u32,
    pub connections: usize,
    pub duration_secs: f64,
    pub outage_secs: f64,
    pub drain_timeout_secs: f64,
    pub plugin: String,
    pub column: String,
    pub endpoint: String,
    pub saturation: Saturation,
    pub latency: Latency,
    pub outage: Outage,
    pub end: End,
    pub targets: Vec<Target>,
}

/// Whether `v` is at least `goal` at the two decimals the table shows: a delivery that keeps
/// up exactly measures 1.00 give or take the timer's noise.
fn at_least(v: f64, goal: f64) -> bool {
    (v * 100.0).round() >= (goal * 100.0).round()
}

impl Report {
    /// The targets: delivered/s over writes/s at saturation >= 1.0, p99 <= 100 ms at
    /// half that rate, the backlog after the outage drained at >= 5 times the write rate, no
    /// event lost. Duplicates and events out of order are counted, without a goal. A figure
    /// that could not be measured (nothing came) misses its target.
    pub fn check_targets(&mut self) {
        let target = |name, value: Option<f64>, goal, ok: fn(f64) -> bool| Target {
            name,
            value,
            goal,
            pass: Some(value.is_some_and(ok)),
            void: None,
        };
        let count = |name, value: u64| Target {
            name,
            value: Some(value as f64),
            goal: "count",
            pass: None,
            void: None,
        };
        let t = &self.end.totals;
        self.targets = vec![
            target(
                "saturation delivered/s ÷ writes/s",
                self.saturation.ratio,
                ">= 1.00",
                |v| at_least(v, 1.0),
            ),
            target("latency p99 (ms)", self.latency.p99_ms, "<= 100", |v| {
                v <= 100.0
            }),
            target(
                "outage drain/s ÷ writes/s",
                self.outage.ratio,
                ">= 5.00",
                |v| at_least(v, 5.0),
            ),
            target("events lost", Some(t.lost as f64), "0", |v| v == 0.0),
            count("duplicates", t.duplicates),
            count("out of order (per shard)", t.out_of_order),
        ];
    }

    pub fn print(&self) {
        println!(
            "mezzanine bench triggers: {}, {} shards; {} connections, {:.1} s per phase, {:.1} s \
             outage\nplugin {} (column {}) -> {}\n",
            self.server,
            self.num_shards,
            self.connections,
            self.duration_secs,
            self.outage_secs,
            self.plugin,
            self.column,
            self.endpoint
        );
        let (s, l, o, e) = (
            &self.saturation,
            &self.latency,
            &self.outage,
            &self.end.totals,
        );
        println!(
            "{:<11} {:>9} {:>10} {:>7}  delivery",
            "phase", "writes", "writes/s", "errors"
        );
        let row = |phase: &str, w: &WriteLog, delivery: String| {
            println!(
                "{phase:<11} {:>9} {:>10.1} {:>7}  {delivery}",
                w.writes, w.writes_per_sec, w.errors
            );
            if let Some(e) = &w.first_error {
                println!("{:<11} first error: {e}", "");
            }
        };
        row(
            "saturation",
            &s.writes,
            format!(
                "{} received, {} events/s, {}",
                s.delivered,
                fmt(s.delivered_per_sec, 1),
                s.drain_secs.map_or_else(
                    || "not all received".to_owned(),
                    |d| format!("the last {d:.2} s after the writers stopped")
                )
            ),
        );
        row(
            "latency",
            &l.writes,
            format!(
                "{} received; ms p50 {}, p99 {}, max {}",
                l.delivered,
                fmt(l.p50_ms, 1),
                fmt(l.p99_ms, 1),
                fmt(l.max_ms, 1)
            ),
        );
        row(
            "outage",
            &o.writes,
            format!(
                "receiver down {:.1} s; backlog {} at its return, {} ({} events/s)",
                o.receiver_down_secs,
                o.backlog_at_return,
                o.drain_secs.map_or_else(
                    || "not drained".to_owned(),
                    |d| format!("drained in {d:.2} s")
                ),
                fmt(o.drain_per_sec, 1)
            ),
        );
        println!(
            "\nin all: {} writes acknowledged, {} of their events received ({} calls; {} for no \
             acknowledged write, {} malformed): {} lost, {} duplicates, {} out of order\n",
            e.acknowledged,
            e.received - e.unacknowledged,
            e.receipts,
            e.unacknowledged,
            self.end.malformed_calls,
            e.lost,
            e.duplicates,
            e.out_of_order
        );
        println!("{:<35} {:>9} {:>8}", "target", "value", "goal");
        for t in &self.targets {
            let mark = match t.pass {
                Some(true) => "✓",
                Some(false) => "✗",
                None => "",
            };
            let decimals = if t.goal == "count" || t.goal == "0" {
                0
            } else {
                2
            };
            println!(
                "{:<35} {:>9} {:>8}  {mark}",
                t.name,
                fmt(t.value, decimals),
                t.goal
            );
        }
    }
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::super::ledger::{Ack, Receipt};
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn log(started: u64, stopped: u64) -> WriterLog {
        WriterLog {
            errors: 0,
            first_error: None,
            started_at: ms(started),
            stopped_at: ms(stopped),
        }
    }

    /// `n` writes of `phase` acknowledged every `step` ms from `from`, each received `lag` ms
    /// later (none when `lag` is None).
    fn traffic(
        l: &mut Ledger,
        phase: Phase,
        shard: u32,
        n: u64,
        from: u64,
        step: u64,
        lag: Option<u64>,
    ) {
        for i in 0..n {
            let at = from + i * step;
            l.ack(Ack {
                key: (shard, i as i64 + 1),
                at: ms(at),
                phase,
            });
            if let Some(lag) = lag {
                l.receive(Receipt {
                    key: (shard, i as i64 + 1),
                    at: ms(at + lag),
                });
            }
        }
    }

    #[test]
    fn a_delivery_that_keeps_up_measures_one_whatever_its_latency() {
        // 1000 writes over 10 s, each delivered 300 ms later.
        let mut l = Ledger::default();
        traffic(&mut l, Phase::Saturation, 0, 1000, 0, 10, Some(300));
        let w = WriteLog::new(1000, &log(0, 10_000));
        assert!((w.writes_per_sec - 100.0).abs() < 1e-9);
        let s = Saturation::measure(&l, w, ms(10_000), true, ms(10_400));
        assert_eq!(s.delivered, 1000);
        assert!(at_least(s.ratio.unwrap(), 1.0), "{s:?}");
        assert!((s.drain_secs.unwrap() - 0.29).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn a_delivery_at_half_the_write_rate_measures_half() {
        let mut l = Ledger::default();
        for i in 0..1000u64 {
            l.ack(Ack {
                key: (0, i as i64),
                at: ms(i * 10),
                phase: Phase::Saturation,
            });
            l.receive(Receipt {
                key: (0, i as i64),
                at: ms(i * 20),
            });
        }
        let s = Saturation::measure(
            &l,
            WriteLog::new(1000, &log(0, 10_000)),
            ms(10_000),
            true,
            ms(20_000),
        );
        assert!((s.ratio.unwrap() - 0.5).abs() < 0.01, "{s:?}");
        assert!(!at_least(s.ratio.unwrap(), 1.0));
    }

    #[test]
    fn nothing_delivered_is_a_rate_of_zero_and_misses_every_target() {
        let mut l = Ledger::default();
        traffic(&mut l, Phase::Saturation, 0, 100, 0, 10, None);
        traffic(&mut l, Phase::Latency, 1, 50, 2000, 20, None);
        traffic(&mut l, Phase::Outage, 2, 50, 4000, 20, None);
        let s = Saturation::measure(
            &l,
            WriteLog::new(100, &log(0, 1000)),
            ms(1000),
            false,
            ms(2000),
        );
        assert_eq!(
            (s.delivered, s.delivered_per_sec, s.ratio),
            (0, Some(0.0), Some(0.0))
        );
        assert_eq!(s.drain_secs, None);
        let lat = Latency::measure(&l, 50.0, WriteLog::new(50, &log(2000, 3000)));
        assert_eq!((lat.p50_ms, lat.p99_ms, lat.max_ms), (None, None, None));
        let o = Outage::measure(&l, WriteLog::new(50, &log(4000, 5000)), ms(300), ms(4500));
        assert_eq!(o.backlog_at_return, 26); // 4000..=4500 ms, every 20 ms
        assert_eq!((o.drain_secs, o.ratio), (None, None));
        let mut r = Report {
            server: "http://s".into(),
            num_shards: 4,
            connections: 1,
            duration_secs: 1.0,
            outage_secs: 0.3,
            drain_timeout_secs: 1.0,
            plugin: "p".into(),
            column: "c".into(),
            endpoint: "http://r/".into(),
            saturation: s,
            latency: lat,
            outage: o,
            end: End {
                totals: l.totals(),
                all_received: false,
                malformed_calls: 0,
            },
            targets: Vec::new(),
        };
        r.check_targets();
        let pass: Vec<Option<bool>> = r.targets.iter().map(|t| t.pass).collect();
        assert_eq!(
            pass,
            [
                Some(false),
                Some(false),
                Some(false),
                Some(false),
                None,
                None
            ]
        );
        assert_eq!(r.targets[3].value, Some(200.0));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["end"]["lost"], 200);
        assert_eq!(json["end"]["all_received"], false);
    }

    #[test]
    fn the_outage_backlog_drains_at_the_delivery_rate_since_the_return() {
        let mut l = Ledger::default();
        // 100 writes/s for 10 s from t=0; the receiver is down from 2 s to 5 s.
        for i in 0..1000u64 {
            let at = i * 10;
            l.ack(Ack {
                key: (0, i as i64),
                at: ms(at),
                phase: Phase::Outage,
            });
            let got = if at < 2000 {
                at + 5
            } else if at < 5000 {
                // The backlog (300 events) comes back 0.5 s after the return, 1000/s.
                5500 + (at - 2000) / 3
            } else {
                (at + 5).max(6500)
            };
            l.receive(Receipt {
                key: (0, i as i64),
                at: ms(got),
            });
        }
        let o = Outage::measure(&l, WriteLog::new(1000, &log(0, 10_000)), ms(3000), ms(5000));
        assert_eq!(o.backlog_at_return, 301); // acknowledged from 2.0 s to 5.0 s inclusive
        let drain = o.drain_secs.unwrap();
        assert!((drain - 1.5).abs() < 1e-9, "{o:?}"); // the write at 5.0 s comes at 6.5 s
                                                      // Received in (5.0, 6.5]: the 301 of the backlog and those written since (5.01..=6.49 s, held to 6.5 s).
        assert_eq!(o.drained_events, Some(301 + 149));
        assert!(
            (o.ratio.unwrap() - 450.0 / 1.5 / 100.0).abs() < 1e-9,
            "{o:?}"
        );
    }

    #[test]
    fn ratios_pass_at_the_two_decimals_shown() {
        assert!(at_least(0.996, 1.0));
        assert!(!at_least(0.994, 1.0));
        assert!(at_least(5.0, 5.0));
        assert!(!at_least(4.9, 5.0));
    }
}
