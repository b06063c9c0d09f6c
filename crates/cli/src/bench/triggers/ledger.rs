//! What `bench triggers` knows of the events, and the figures it draws from them. Pure: no
//! I/O and no clock; times are durations since the run's epoch.
//!
//! An event is named by `(shard_id, added_id)`, as a plugin must deduplicate them. The
//! writers record each acknowledged write ([`Ack`]); the receiver records each call it was
//! sent ([`Receipt`]), in the order it took them.

use std::collections::HashMap;
use std::time::Duration;

/// An event's name: `(shard_id, added_id)`.
pub type Key = (u32, i64);

/// The phase a write belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Saturation,
    Latency,
    Outage,
}

/// An acknowledged write: its event and when the answer came.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub key: Key,
    pub at: Duration,
    pub phase: Phase,
}

/// A call of the plugin: the event it carried and when the receiver took it.
#[derive(Debug, Clone, Copy)]
pub struct Receipt {
    pub key: Key,
    pub at: Duration,
}

/// Everything acknowledged and received so far.
#[derive(Debug, Default)]
pub struct Ledger {
    acks: HashMap<Key, Ack>,
    /// The first receipt of each event.
    first: HashMap<Key, Duration>,
    /// The highest `added_id` received so far in each shard.
    highest: HashMap<u32, i64>,
    receipts: u64,
    duplicates: u64,
    out_of_order: u64,
}

impl Ledger {
    /// Records an acknowledged write. The same event acknowledged twice (an idempotent
    /// retry answered 200) keeps its first acknowledgement.
    pub fn ack(&mut self, a: Ack) {
        self.acks.entry(a.key).or_insert(a);
    }

    /// Records a call, in the order the receiver took them. A second call for an event is a
    /// duplicate; an event whose `added_id` is below one already received from its shard is
    /// out of order (duplicates are not counted again as out of order).
    pub fn receive(&mut self, r: Receipt) {
        self.receipts += 1;
        if self.first.contains_key(&r.key) {
            self.duplicates += 1;
            return;
        }
        self.first.insert(r.key, r.at);
        let (shard, added_id) = r.key;
        let highest = self.highest.entry(shard).or_insert(added_id);
        if added_id < *highest {
            self.out_of_order += 1;
        }
        *highest = (*highest).max(added_id);
    }

    fn of(&self, phase: Phase) -> impl Iterator<Item = &Ack> {
        self.acks.values().filter(move |a| a.phase == phase)
    }

    /// The acknowledged writes of `phase`.
    pub fn acked(&self, phase: Phase) -> usize {
        self.of(phase).count()
    }

    /// The acknowledged writes of `phase` not received yet.
    pub fn pending(&self, phase: Phase) -> usize {
        self.of(phase)
            .filter(|a| !self.first.contains_key(&a.key))
            .count()
    }

    /// The acknowledged writes (of any phase) not received yet.
    pub fn pending_all(&self) -> usize {
        self.acks
            .keys()
            .filter(|k| !self.first.contains_key(k))
            .count()
    }

    /// The writes of `phase` acknowledged at or before `t` and not received yet.
    pub fn pending_acked_by(&self, phase: Phase, t: Duration) -> usize {
        self.of(phase)
            .filter(|a| a.at <= t && !self.first.contains_key(&a.key))
            .count()
    }

    /// The writes of `phase` acknowledged at or before `t` and not received by then.
    pub fn backlog_at(&self, phase: Phase, t: Duration) -> usize {
        self.of(phase)
            .filter(|a| a.at <= t && self.first.get(&a.key).is_none_or(|&r| r > t))
            .count()
    }

    /// When the last of the writes of `phase` acknowledged at or before `t` was received;
    /// `None` while one of them is not. `Some(t)` when none was outstanding at `t`.
    pub fn drained_at(&self, phase: Phase, t: Duration) -> Option<Duration> {
        self.of(phase)
            .filter(|a| a.at <= t)
            .try_fold(t, |end, a| self.first.get(&a.key).map(|&r| end.max(r)))
    }

    /// The distinct events first received in `(from, to]`, of any phase.
    pub fn received_between(&self, from: Duration, to: Duration) -> usize {
        self.first
            .values()
            .filter(|&&r| r > from && r <= to)
            .count()
    }

    /// The first and the last receipt of the events of `phase`, and how many were received.
    pub fn receipt_span(&self, phase: Phase) -> Option<(Duration, Duration, usize)> {
        self.of(phase)
            .filter_map(|a| self.first.get(&a.key))
            .fold(None, |span, &r| match span {
                None => Some((r, r, 1)),
                Some((lo, hi, n)) => Some((lo.min(r), hi.max(r), n + 1)),
            })
    }

    /// Each write of `phase`'s latency from its acknowledgement to its first receipt, in ms
    /// (0 when the call came before the answer did), sorted; and the number of its writes.
    pub fn latencies_ms(&self, phase: Phase) -> (Vec<f64>, usize) {
        let mut total = 0;
        let mut out: Vec<f64> = self
            .of(phase)
            .inspect(|_| total += 1)
            .filter_map(|a| {
                let r = self.first.get(&a.key)?;
                Some(r.saturating_sub(a.at).as_secs_f64() * 1000.0)
            })
            .collect();
        out.sort_by(f64::total_cmp);
        (out, total)
    }

    /// The run's totals.
    pub fn totals(&self) -> Totals {
        Totals {
            acknowledged: self.acks.len(),
            received: self.first.len(),
            receipts: self.receipts,
            lost: self.pending_all(),
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            unacknowledged: self
                .first
                .keys()
                .filter(|k| !self.acks.contains_key(k))
                .count(),
        }
    }
}

/// What the end of a run counts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Writes acknowledged (201 with an `added_id`).
    pub acknowledged: usize,
    /// Distinct events received.
    pub received: usize,
    /// Calls received in all (with duplicates).
    pub receipts: u64,
    /// Acknowledged writes whose event never came.
    pub lost: usize,
    /// Calls for an event received before.
    pub duplicates: u64,
    /// Events received after a higher `added_id` of their shard.
    pub out_of_order: u64,
    /// Events received for no acknowledged write (a write whose answer was lost).
    pub unacknowledged: usize,
}

/// The `q` quantile of `n` values of which `sorted` are known (ascending) and the rest are
/// infinite (never came): `None` when it falls on one of those.
pub fn quantile(sorted: &[f64], n: usize, q: f64) -> Option<f64> {
    if n == 0 {
        return None;
    }
    let i = ((n as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied()
}

/// Whether waiting for events still makes sense: done when nothing is pending, given up
/// when the number pending has not gone down for `stall`.
#[derive(Debug)]
pub struct Progress {
    stall: Duration,
    /// The fewest pending seen, and since when.
    best: Option<usize>,
    since: Duration,
}

/// What [`Progress::observe`] concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Done,
    Waiting,
    Stalled,
}

impl Progress {
    /// Starts waiting at `now`.
    pub fn new(stall: Duration, now: Duration) -> Progress {
        Progress {
            stall,
            best: None,
            since: now,
        }
    }

    /// Takes the number of events still pending at `now`.
    pub fn observe(&mut self, pending: usize, now: Duration) -> Verdict {
        if pending == 0 {
            return Verdict::Done;
        }
        match self.best {
            Some(best) if pending < best => {
                self.best = Some(pending);
                self.since = now;
            }
            Some(_) => {}
            None => self.best = Some(pending),
        }
        if now.saturating_sub(self.since) >= self.stall {
            Verdict::Stalled
        } else {
            Verdict::Waiting
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ack(l: &mut Ledger, shard: u32, id: i64, at: u64, phase: Phase) {
        l.ack(Ack {
            key: (shard, id),
            at: ms(at),
            phase,
        });
    }

    fn got(l: &mut Ledger, shard: u32, id: i64, at: u64) {
        l.receive(Receipt {
            key: (shard, id),
            at: ms(at),
        });
    }

    #[test]
    fn duplicates_out_of_order_lost_and_unacknowledged_are_counted() {
        let mut l = Ledger::default();
        for id in 1..=4 {
            ack(&mut l, 0, id, 10 * id as u64, Phase::Saturation);
        }
        ack(&mut l, 1, 7, 5, Phase::Saturation);
        got(&mut l, 0, 1, 11);
        got(&mut l, 0, 3, 31);
        got(&mut l, 0, 2, 32); // after 3 in shard 0: out of order
        got(&mut l, 0, 3, 33); // again: a duplicate, not out of order again
        got(&mut l, 1, 7, 40); // another shard: its own order
        got(&mut l, 1, 9, 41); // no write acknowledged it
        let t = l.totals();
        assert_eq!(
            t,
            Totals {
                acknowledged: 5,
                received: 5,
                receipts: 6,
                lost: 1, // (0, 4)
                duplicates: 1,
                out_of_order: 1,
                unacknowledged: 1,
            }
        );
        assert_eq!(l.pending(Phase::Saturation), 1);
        assert_eq!(l.pending(Phase::Latency), 0);
    }

    #[test]
    fn latencies_run_from_the_acknowledgement_to_the_first_receipt() {
        let mut l = Ledger::default();
        ack(&mut l, 0, 1, 100, Phase::Latency);
        ack(&mut l, 0, 2, 100, Phase::Latency);
        ack(&mut l, 0, 3, 100, Phase::Latency);
        ack(&mut l, 0, 4, 100, Phase::Saturation);
        got(&mut l, 0, 1, 130);
        got(&mut l, 0, 1, 900); // a duplicate does not count
        got(&mut l, 0, 2, 90); // before the answer reached the client: 0
        got(&mut l, 0, 4, 5000); // another phase
        let (lat, n) = l.latencies_ms(Phase::Latency);
        assert_eq!(n, 3);
        assert_eq!(lat.len(), 2);
        assert!((lat[0] - 0.0).abs() < 1e-9 && (lat[1] - 30.0).abs() < 1e-9);
        // (0, 3) never came: the highest quantiles are unknown, not the highest received.
        assert_eq!(quantile(&lat, n, 0.5), Some(30.0));
        assert_eq!(quantile(&lat, n, 0.99), None);
        assert_eq!(quantile(&lat, 2, 0.99), Some(30.0));
        assert_eq!(quantile(&[], 0, 0.5), None);
    }

    #[test]
    fn the_backlog_is_what_was_acknowledged_and_not_yet_received() {
        let mut l = Ledger::default();
        ack(&mut l, 0, 1, 1000, Phase::Outage);
        ack(&mut l, 0, 2, 2000, Phase::Outage);
        ack(&mut l, 1, 1, 2500, Phase::Outage);
        ack(&mut l, 0, 3, 4000, Phase::Outage); // after the return
        ack(&mut l, 2, 1, 100, Phase::Latency); // another phase
        got(&mut l, 0, 1, 1010); // before the outage
        let back = ms(3000);
        assert_eq!(l.backlog_at(Phase::Outage, back), 2);
        assert_eq!(l.drained_at(Phase::Outage, back), None);
        assert_eq!(l.pending_acked_by(Phase::Outage, back), 2);
        got(&mut l, 0, 2, 3500);
        assert_eq!(l.pending_acked_by(Phase::Outage, back), 1);
        assert_eq!(
            l.backlog_at(Phase::Outage, back),
            2,
            "the backlog at t stays"
        );
        assert_eq!(l.drained_at(Phase::Outage, back), None);
        got(&mut l, 1, 1, 3400);
        got(&mut l, 0, 3, 4100);
        assert_eq!(l.drained_at(Phase::Outage, back), Some(ms(3500)));
        // Received after the return: both backlog events and the new one.
        assert_eq!(l.received_between(back, ms(4100)), 3);
        assert_eq!(l.received_between(back, ms(3500)), 2);
        // Nothing outstanding at t: drained at t.
        assert_eq!(l.drained_at(Phase::Outage, ms(1500)), Some(ms(1500)));
        assert_eq!(l.backlog_at(Phase::Outage, ms(1500)), 0);
    }

    #[test]
    fn the_receipt_span_covers_the_phase_s_events_only() {
        let mut l = Ledger::default();
        assert_eq!(l.receipt_span(Phase::Saturation), None);
        ack(&mut l, 0, 1, 0, Phase::Saturation);
        ack(&mut l, 0, 2, 0, Phase::Saturation);
        ack(&mut l, 0, 3, 0, Phase::Latency);
        got(&mut l, 0, 2, 700);
        got(&mut l, 0, 1, 200);
        got(&mut l, 0, 3, 9000);
        assert_eq!(
            l.receipt_span(Phase::Saturation),
            Some((ms(200), ms(700), 2))
        );
    }

    #[test]
    fn waiting_stops_when_done_or_when_nothing_moves_for_the_stall() {
        let mut p = Progress::new(ms(1000), ms(0));
        assert_eq!(p.observe(10, ms(0)), Verdict::Waiting);
        assert_eq!(p.observe(10, ms(900)), Verdict::Waiting);
        assert_eq!(p.observe(8, ms(950)), Verdict::Waiting); // progress: the clock restarts
        assert_eq!(p.observe(8, ms(1900)), Verdict::Waiting);
        assert_eq!(p.observe(9, ms(1940)), Verdict::Waiting); // more pending is no progress
        assert_eq!(p.observe(8, ms(1950)), Verdict::Stalled);
        assert_eq!(p.observe(0, ms(5000)), Verdict::Done);
        let mut never = Progress::new(ms(1000), ms(0));
        assert_eq!(never.observe(3, ms(1000)), Verdict::Stalled);
    }
}
