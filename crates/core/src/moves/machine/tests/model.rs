//! The model the machine is tested against (see the tests' module documentation).

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;

use super::super::*;
use crate::moves::{CatchUpPolicy, ShardMoveState as S, TargetSeen};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum St {
    Active,
    Importing,
    Frozen,
    Retired,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Copy {
    pub(super) state: Option<St>,
    term: u64,
    epoch: i64,
    indexed: bool,
    rows: BTreeSet<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Named {
    Source,
    Target,
}

pub(super) struct Leader {
    term: u64,
    /// Its catalog session: a leader cut off keeps running, but every catalog change fails.
    alive: bool,
    machine: Option<ShardMachine>,
}

pub(super) struct World {
    // The catalog.
    pub(super) recorded: ShardMoveState,
    verified: i64,
    named: Named,
    ever_named_target: bool,
    epoch: i64,
    fence: bool,
    abort_requested: bool,
    // The backends.
    pub(super) src: Copy,
    pub(super) tgt: Copy,
    src_seq: u64,
    tgt_seq: u64,
    target_down: bool,
    // Clients.
    acked: BTreeSet<u64>,
    // Time (ms) and the bound check.
    now: u64,
    unwritable_since: Option<u64>,
    freezes_handled: u32,
    /// Set when the tail copies are too slow for the pause (writes outrun the copy).
    slow_tail: bool,
    epoch_at_mark: i64,
}

pub(super) const LIMITS: Limits = Limits {
    policy: CatchUpPolicy {
        max_lag_rows: 500,
        max_rounds: 50,
        max_pause: Duration::from_millis(500),
        max_freezes: 3,
    },
    freeze_bound: Duration::from_secs(5),
    attempts: 3,
};

/// A statement on a backend that does not answer and has no bound of its own ends with the
/// pool's query timeout.
pub(super) const QUERY_TIMEOUT: u64 = 10_000;

impl World {
    pub(super) fn new() -> World {
        let src = Copy {
            state: Some(St::Active),
            epoch: 1,
            indexed: true,
            rows: (1..=20).collect(),
            ..Copy::default()
        };
        World {
            recorded: S::Pending,
            verified: 0,
            named: Named::Source,
            ever_named_target: false,
            epoch: 1,
            fence: false,
            abort_requested: false,
            src,
            tgt: Copy::default(),
            src_seq: 20,
            tgt_seq: 0,
            target_down: false,
            acked: (1..=20).collect(),
            now: 0,
            unwritable_since: None,
            freezes_handled: 0,
            slow_tail: false,
            epoch_at_mark: 0,
        }
    }

    fn named_copy(&self) -> &Copy {
        match self.named {
            Named::Source => &self.src,
            Named::Target => &self.tgt,
        }
    }

    /// A client write through the map: acknowledged only by an `active` named copy.
    fn client_write(&mut self) {
        match self.named {
            Named::Source if self.src.state == Some(St::Active) => {
                self.src_seq += 1;
                self.src.rows.insert(self.src_seq);
                self.acked.insert(self.src_seq);
            }
            Named::Target if self.tgt.state == Some(St::Active) => {
                self.tgt_seq += 1;
                assert!(
                    self.tgt.rows.insert(self.tgt_seq),
                    "I4: added_id {} reused on the target",
                    self.tgt_seq
                );
                self.acked.insert(self.tgt_seq);
            }
            _ => {} // held, then 503: not acknowledged
        }
    }

    /// A backend step from a leader of `term` on `copy`: refused when a newer term stamped it.
    fn fenced(copy: &Copy, term: u64) -> Option<Outcome> {
        (copy.term > term).then_some(Outcome::Failed(Failure::Superseded))
    }

    fn target_silent(&self, within: Option<Duration>) -> (Outcome, u64) {
        match within {
            Some(w) => (Outcome::TimedOut, w.as_millis() as u64),
            None => (Outcome::Failed(Failure::Transient), QUERY_TIMEOUT),
        }
    }

    /// Carries out `command` for a leader, as the backends and the catalog would. Returns the
    /// outcome and the time it took (ms).
    fn apply(
        &mut self,
        leader: &Leader,
        command: Command,
        within: Option<Duration>,
    ) -> (Outcome, u64) {
        use Command as C;
        let t = leader.term;
        let catalog = |w: &World| -> Option<Outcome> {
            let _ = w;
            (!leader.alive).then_some(Outcome::Failed(Failure::SessionLost))
        };
        let touches_target = matches!(
            command,
            C::Claim
                | C::Prepare
                | C::CopyBulk
                | C::CatchUp { .. }
                | C::BuildIndexes
                | C::CopyTail { .. }
                | C::VerifyTail { .. }
                | C::SequenceAndRetire { .. }
                | C::Activate
                | C::Confirm
                | C::AskTarget
                | C::DropTarget
                | C::FenceTarget { .. }
        );
        if touches_target && self.target_down {
            return self.target_silent(within);
        }
        let quick = 5;
        let out = match command {
            C::Claim => {
                if let Some(o) = Self::fenced(&self.src, t).or(Self::fenced(&self.tgt, t)) {
                    return (o, quick);
                }
                self.src.term = t;
                if self.tgt.state.is_some() {
                    self.tgt.term = t;
                }
                Outcome::Done
            }
            C::Prepare => {
                if let Some(o) = Self::fenced(&self.tgt, t) {
                    return (o, quick);
                }
                match self.tgt.state {
                    Some(St::Active | St::Frozen) => Outcome::Failed(Failure::Permanent),
                    Some(St::Importing) => {
                        self.tgt.term = t;
                        Outcome::Done
                    }
                    None | Some(St::Retired) => {
                        self.tgt = Copy {
                            state: Some(St::Importing),
                            term: t,
                            ..Copy::default()
                        };
                        Outcome::Done
                    }
                }
            }
            C::CopyBulk => match self.copy_into_target(t) {
                Ok(()) => Outcome::Copied {
                    high_water: self.tgt.rows.last().copied().unwrap_or(0) as i64,
                    rows: self.tgt.rows.len() as i64,
                },
                Err(o) => o,
            },
            C::CatchUp { .. } => {
                if let Err(o) = self.copy_into_target(t) {
                    return (o, quick);
                }
                self.tgt.indexed = true;
                if let Some(o) = catalog(self) {
                    return (o, quick);
                }
                let hw = self.tgt.rows.last().copied().unwrap_or(0) as i64;
                self.verified = hw;
                Outcome::CaughtUp { high_water: hw }
            }
            C::BuildIndexes => {
                if let Some(o) = Self::fenced(&self.tgt, t) {
                    return (o, quick);
                }
                if self.tgt.state.is_none() {
                    Outcome::Failed(Failure::Permanent)
                } else {
                    self.tgt.indexed = true;
                    Outcome::Done
                }
            }
            C::MarkFrozen => {
                if let Some(o) = catalog(self) {
                    return (o, quick);
                }
                self.epoch_at_mark = self.epoch + 1;
                Outcome::Done
            }
            C::Freeze => {
                if let Some(o) = Self::fenced(&self.src, t) {
                    return (o, quick);
                }
                match self.src.state {
                    Some(St::Active | St::Frozen) => {
                        self.src.state = Some(St::Frozen);
                        self.src.term = t;
                        Outcome::Froze {
                            retired_already: false,
                        }
                    }
                    Some(St::Retired) => Outcome::Froze {
                        retired_already: true,
                    },
                    _ => Outcome::Failed(Failure::Permanent),
                }
            }
            C::CopyTail { .. } => {
                if self.slow_tail {
                    let w = within.map_or(QUERY_TIMEOUT, |w| w.as_millis() as u64);
                    return (Outcome::TimedOut, w);
                }
                if self.tgt.state != Some(St::Active) {
                    if let Err(o) = self.copy_into_target(t) {
                        return (o, quick);
                    }
                }
                let max_s = self.src.rows.last().copied().unwrap_or(0);
                let max_t = self.tgt.rows.last().copied().unwrap_or(0);
                if max_s != max_t {
                    Outcome::Failed(Failure::Permanent)
                } else {
                    Outcome::Tail {
                        max_added_id: max_s as i64,
                    }
                }
            }
            C::VerifyTail { after, upto } => {
                let range = |c: &Copy| -> BTreeSet<u64> {
                    c.rows
                        .iter()
                        .copied()
                        .filter(|&r| r as i64 > after && r as i64 <= upto)
                        .collect()
                };
                if range(&self.src) == range(&self.tgt) {
                    Outcome::Done
                } else {
                    Outcome::Failed(Failure::Permanent)
                }
            }
            C::SequenceAndRetire { upto } => {
                if let Some(o) = Self::fenced(&self.tgt, t).or(Self::fenced(&self.src, t)) {
                    return (o, quick);
                }
                self.tgt_seq = self.tgt_seq.max(upto as u64);
                match self.src.state {
                    Some(St::Frozen | St::Retired) => {
                        self.src.state = Some(St::Retired);
                        self.src.term = t;
                        Outcome::Done
                    }
                    _ => Outcome::Failed(Failure::Permanent),
                }
            }
            C::Activate => {
                if let Some(o) = Self::fenced(&self.tgt, t) {
                    return (o, quick);
                }
                let epoch = self.epoch_at_mark;
                match self.tgt.state {
                    Some(St::Importing) if self.tgt.indexed => {
                        self.tgt.state = Some(St::Active);
                        self.tgt.epoch = epoch;
                        self.tgt.term = t;
                        Outcome::Done
                    }
                    Some(St::Active) if self.tgt.epoch == epoch => Outcome::Done,
                    _ => Outcome::Failed(Failure::Permanent),
                }
            }
            C::Confirm => {
                if self.tgt.state == Some(St::Active) && self.tgt.epoch == self.epoch_at_mark {
                    Outcome::Done
                } else {
                    Outcome::Failed(Failure::Permanent)
                }
            }
            C::Switch => {
                if let Some(o) = catalog(self) {
                    return (o, quick);
                }
                if self.recorded == S::Cutover {
                    self.named = Named::Target;
                    self.ever_named_target = true;
                    self.epoch += 1;
                    self.recorded = S::Switched;
                    Outcome::Done
                } else if self.recorded == S::Switched && self.named == Named::Target {
                    Outcome::Done
                } else {
                    Outcome::Failed(Failure::Permanent)
                }
            }
            C::Thaw => {
                if let Some(o) = Self::fenced(&self.src, t) {
                    return (o, quick);
                }
                match self.src.state {
                    Some(St::Frozen | St::Active) => {
                        self.src.state = Some(St::Active);
                        self.src.term = t;
                        match catalog(self) {
                            Some(o) => o,
                            None => Outcome::Done,
                        }
                    }
                    _ => Outcome::Failed(Failure::Permanent),
                }
            }
            C::ReadOwner => match catalog(self) {
                Some(o) => o,
                None => Outcome::Owner(match self.named {
                    Named::Source => Owner::Source,
                    Named::Target => Owner::Target,
                }),
            },
            C::AskTarget => Outcome::Target(match self.tgt.state {
                None => TargetSeen::Absent,
                Some(St::Active) => TargetSeen::Active,
                Some(St::Importing) => TargetSeen::Importing,
                Some(St::Frozen) => TargetSeen::Frozen,
                Some(St::Retired) => TargetSeen::Retired,
            }),
            C::DropTarget | C::FenceTarget { .. } => {
                let demote = matches!(command, C::FenceTarget { demote: true });
                self.drop_target(t, demote)
            }
            C::RecordFence => match catalog(self) {
                Some(o) => o,
                None => {
                    self.fence = true;
                    Outcome::Done
                }
            },
            C::ReactivateSource => {
                if let Some(o) = Self::fenced(&self.src, t) {
                    return (o, quick);
                }
                match self.src.state {
                    Some(St::Frozen | St::Retired | St::Active) => {
                        assert!(
                            self.named == Named::Source,
                            "reactivating a source the map does not name"
                        );
                        self.src.state = Some(St::Active);
                        self.src.term = t;
                        Outcome::Done
                    }
                    _ => Outcome::Failed(Failure::Permanent),
                }
            }
            C::Record { from, event } => match catalog(self) {
                Some(o) => o,
                None if self.recorded == from => match crate::moves::transition(from, event) {
                    Ok(to) => {
                        self.recorded = to;
                        Outcome::Done
                    }
                    Err(_) => Outcome::Failed(Failure::Permanent),
                },
                None => Outcome::Failed(Failure::Permanent),
            },
            C::Pause(_) => Outcome::Done,
        };
        (out, quick)
    }

    fn copy_into_target(&mut self, t: u64) -> Result<(), Outcome> {
        if let Some(o) = Self::fenced(&self.tgt, t) {
            return Err(o);
        }
        if self.tgt.state != Some(St::Importing) {
            return Err(Outcome::Failed(Failure::Permanent));
        }
        let rows = self.src.rows.clone();
        self.tgt.rows.extend(rows);
        Ok(())
    }

    /// Drops the target's copy (demoting an `active` one first when `demote`); the drop
    /// refuses a copy that serves.
    fn drop_target(&mut self, t: u64, demote: bool) -> Outcome {
        if let Some(o) = Self::fenced(&self.tgt, t) {
            return o;
        }
        match self.tgt.state {
            None => return Outcome::Done,
            Some(St::Active) if demote => {}
            Some(St::Active | St::Frozen) => return Outcome::Failed(Failure::Permanent),
            Some(St::Importing | St::Retired) => {}
        }
        assert!(
            self.named != Named::Target,
            "dropping the target copy that the map names"
        );
        self.tgt = Copy::default();
        Outcome::Done
    }

    /// The leader's pass: fences a target copy left by an undone cutover once the target
    /// answers (nothing in flight).
    fn fence_pass(&mut self, term: u64) {
        if self.fence && !self.recorded.in_flight() && !self.target_down {
            // Nothing to do when the map names the target now (another move brought the
            // shard there); else its copy is demoted and dropped.
            if self.named == Named::Target || self.drop_target(term, true) == Outcome::Done {
                self.fence = false;
            }
        }
    }

    fn check(&mut self, tasks_alive: bool) {
        let active = |c: &Copy| c.state == Some(St::Active);
        // No two copies that a map named take writes.
        let named_active =
            active(&self.src) as u32 + (active(&self.tgt) && self.ever_named_target) as u32;
        assert!(named_active <= 1, "two active copies a map named");
        if active(&self.tgt) && !self.ever_named_target {
            assert!(
                self.fence || self.recorded.in_flight() || tasks_alive,
                "an active target copy no map names is neither handled nor fenced"
            );
        }
        // Nothing acknowledged is lost.
        let named = self.named_copy();
        assert!(
            self.acked.is_subset(&named.rows),
            "acknowledged writes missing from the copy the map names"
        );
        // The shard is writable again within the bound.
        if active(named) {
            self.unwritable_since = None;
        } else {
            let since = *self.unwritable_since.get_or_insert(self.now);
            let per_freeze =
                LIMITS.freeze_bound.as_millis() as u64 + 3 * ASK_TARGET.as_millis() as u64 + 1_000;
            let bound = per_freeze * u64::from(self.freezes_handled.max(1));
            assert!(
                self.now - since <= bound,
                "the shard was unwritable for {} ms (bound {bound} ms)",
                self.now - since
            );
        }
    }
}

/// What happens between two steps.
#[derive(Debug, Clone, Copy)]
pub(super) enum Event {
    /// The current leader's task takes a step.
    Step,
    /// A stale leader (cut off from the catalog) takes a step.
    StaleStep(usize),
    Write,
    TargetDown,
    TargetUp,
    /// The current leader dies (its process: nothing of it acts any more).
    Crash,
    /// The current leader's catalog session is cut while its process runs on.
    Cut,
    Abort,
    SlowTail,
    FastTail,
}

pub(super) fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        12 => Just(Event::Step),
        4 => (0usize..3).prop_map(Event::StaleStep),
        4 => Just(Event::Write),
        1 => Just(Event::TargetDown),
        2 => Just(Event::TargetUp),
        1 => Just(Event::Crash),
        1 => Just(Event::Cut),
        1 => Just(Event::Abort),
        1 => Just(Event::SlowTail),
        2 => Just(Event::FastTail),
    ]
}

/// Runs one step of `leader`'s task (a new task from the catalog when it has none and the
/// shard is in flight). Returns whether it did something.
pub(super) fn step(w: &mut World, leader: &mut Leader, is_current: bool) -> bool {
    if leader.machine.is_none() {
        if !is_current {
            return false;
        }
        w.fence_pass(leader.term);
        if !w.recorded.in_flight() {
            return false;
        }
        if w.recorded == S::Cutover {
            w.freezes_handled += 1; // a resumed cutover: the source may be frozen
        }
        leader.machine = Some(ShardMachine::new(
            w.recorded,
            w.verified,
            w.abort_requested,
            LIMITS,
        ));
    }
    let Some(m) = leader.machine.as_mut() else {
        return false;
    };
    if is_current && w.abort_requested {
        m.abort();
    }
    let was_frozen_by_it = m.may_hold_freeze();
    match m.poll() {
        Action::Stop(_) => {
            leader.machine = None;
            true
        }
        // A stale leader runs concurrently with the current one: its time is its own.
        Action::Wait(d) => {
            if is_current {
                w.now += d.as_millis() as u64;
            }
            true
        }
        Action::Run { command, within } => {
            if command == Command::Freeze && !was_frozen_by_it {
                w.freezes_handled += 1;
            }
            let snapshot = Leader {
                term: leader.term,
                alive: leader.alive,
                machine: None,
            };
            let (outcome, took) = w.apply(&snapshot, command, within);
            if is_current {
                w.now += took;
            }
            if let Some(m) = leader.machine.as_mut() {
                m.handle(outcome, Duration::from_millis(took));
            }
            true
        }
    }
}

pub(super) fn run(events: &[Event]) -> World {
    let mut w = World::new();
    let mut term = 1;
    let mut current = Leader {
        term,
        alive: true,
        machine: None,
    };
    let mut stale: Vec<Leader> = Vec::new();
    let tasks_alive = |cur: &Leader, stale: &[Leader]| {
        cur.machine.is_some() || stale.iter().any(|l| l.machine.is_some())
    };
    for e in events {
        match *e {
            Event::Step => {
                step(&mut w, &mut current, true);
            }
            Event::StaleStep(i) => {
                if let Some(l) = stale.get_mut(i) {
                    step(&mut w, l, false);
                }
            }
            Event::Write => w.client_write(),
            Event::TargetDown => w.target_down = true,
            Event::TargetUp => w.target_down = false,
            Event::Crash | Event::Cut => {
                term += 1;
                let mut old = std::mem::replace(
                    &mut current,
                    Leader {
                        term,
                        alive: true,
                        machine: None,
                    },
                );
                old.alive = false;
                if matches!(e, Event::Cut) && stale.len() < 3 {
                    stale.push(old);
                }
            }
            Event::Abort => {
                if w.recorded.in_flight() {
                    w.abort_requested = true;
                }
            }
            Event::SlowTail => w.slow_tail = true,
            Event::FastTail => w.slow_tail = false,
        }
        let alive = tasks_alive(&current, &stale);
        w.check(alive);
    }
    // The end: the target answers, the tails fit, stale leaders run out, the current one
    // finishes; then a last pass fences what is left.
    w.target_down = false;
    w.slow_tail = false;
    for l in stale.iter_mut() {
        let mut n = 0;
        while l.machine.is_some() && n < 200 {
            step(&mut w, l, false);
            let alive = tasks_alive(&current, &[]);
            w.check(alive);
            n += 1;
        }
    }
    let mut n = 0;
    while (current.machine.is_some() || w.recorded.in_flight()) && n < 500 {
        step(&mut w, &mut current, true);
        w.client_write();
        w.check(true);
        n += 1;
    }
    w.fence_pass(current.term);
    w
}

pub(super) fn assert_settled(w: &World) {
    assert!(!w.recorded.in_flight(), "still {}", w.recorded);
    let active = |c: &Copy| c.state == Some(St::Active);
    assert_eq!(active(&w.src) as u32 + active(&w.tgt) as u32, 1);
    match w.named {
        Named::Source => {
            assert!(active(&w.src));
            assert!(
                matches!(w.recorded, S::Aborted | S::Failed),
                "{}",
                w.recorded
            );
        }
        Named::Target => {
            assert!(active(&w.tgt));
            assert!(matches!(w.recorded, S::Switched), "{}", w.recorded);
        }
    }
    assert!(w.acked.is_subset(&w.named_copy().rows));
    assert!(!w.fence, "a fence left undone");
}
