//! The live-move state machine, free of I/O (DESIGN §5).
//!
//! A move job relocates a set of shards to one backend. Each shard goes through
//!
//! `pending → copying → catching_up → cutover → switched → cleaned`
//!
//! or ends `aborted` (by an operator, any time before the switch) or `failed` (the copy or
//! the target failed). The mover records each state in the catalog before doing the step's
//! work, and every step is idempotent, so a mover that is killed at any instant resumes from
//! the recorded state. [`transition`] is the only way a state changes.

use std::fmt;
use std::time::{Duration, Instant};

mod cutover;
pub mod machine;
pub use cutover::*;

/// Where one shard of a move stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShardMoveState {
    /// Waiting for a slot (`--parallel`).
    Pending,
    /// The target is prepared (`importing`) and the bulk of the rows is being copied.
    Copying,
    /// Copying the rows written since, until the remaining lag is small.
    CatchingUp,
    /// The source is frozen (or about to be): last rows, verification, switch.
    Cutover,
    /// The map names the target; the source is `retired` and kept until cleaned.
    Switched,
    /// The source copy was dropped (after `complete` or the retention period).
    Cleaned,
    /// Stopped by an operator before the switch; the source stayed authoritative.
    Aborted,
    /// Stopped by an error before the switch; the source stayed authoritative.
    Failed,
}

impl ShardMoveState {
    pub const ALL: [ShardMoveState; 8] = [
        ShardMoveState::Pending,
        ShardMoveState::Copying,
        ShardMoveState::CatchingUp,
        ShardMoveState::Cutover,
        ShardMoveState::Switched,
        ShardMoveState::Cleaned,
        ShardMoveState::Aborted,
        ShardMoveState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShardMoveState::Pending => "pending",
            ShardMoveState::Copying => "copying",
            ShardMoveState::CatchingUp => "catching_up",
            ShardMoveState::Cutover => "cutover",
            ShardMoveState::Switched => "switched",
            ShardMoveState::Cleaned => "cleaned",
            ShardMoveState::Aborted => "aborted",
            ShardMoveState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<ShardMoveState> {
        ShardMoveState::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Still moving: the source is authoritative and the mover has work to do.
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            ShardMoveState::Pending
                | ShardMoveState::Copying
                | ShardMoveState::CatchingUp
                | ShardMoveState::Cutover
        )
    }

    /// No further transition is possible.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ShardMoveState::Cleaned | ShardMoveState::Aborted | ShardMoveState::Failed
        )
    }
}

impl fmt::Display for ShardMoveState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveEvent {
    /// A slot is free: prepare the target and start copying.
    Start,
    /// The bulk copy reached the source's end as of its snapshot.
    Copied,
    /// The lag is small enough to freeze the source.
    CaughtUp,
    /// The catalog map names the target.
    Switched,
    /// The retired source was dropped.
    Cleaned,
    /// An operator asked to abort.
    Abort,
    /// A step failed for good.
    Fail,
    /// The cutover was given up with the source made `active` again (its tail would not fit
    /// the pause bound): back to catching up.
    Thaw,
}

/// A transition the protocol forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shard is {from}: {event:?} is not possible{hint}")]
pub struct IllegalTransition {
    pub from: ShardMoveState,
    pub event: MoveEvent,
    pub hint: &'static str,
}

/// The state after `event`, or why it cannot happen.
pub fn transition(
    from: ShardMoveState,
    event: MoveEvent,
) -> Result<ShardMoveState, IllegalTransition> {
    use MoveEvent as E;
    use ShardMoveState as S;
    let to = match (from, event) {
        (S::Pending, E::Start) => S::Copying,
        (S::Copying, E::Copied) => S::CatchingUp,
        (S::CatchingUp, E::CaughtUp) => S::Cutover,
        (S::Cutover, E::Switched) => S::Switched,
        (S::Cutover, E::Thaw) => S::CatchingUp,
        (S::Switched, E::Cleaned) => S::Cleaned,
        (s, E::Abort) if s.in_flight() => S::Aborted,
        (s, E::Fail) if s.in_flight() => S::Failed,
        _ => {
            let hint = match (from, event) {
                (S::Switched, E::Abort) => {
                    " (the map already names the target: use revert to move it back)"
                }
                (s, _) if s.is_final() => " (the shard's move has ended)",
                _ => "",
            };
            return Err(IllegalTransition { from, event, hint });
        }
    };
    Ok(to)
}

/// What an abort or a failure must undo, by the state the shard was in. The target is always
/// cleaned; the source is made `active` again when it may have been frozen or retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undo {
    /// The source may be `frozen` or `retired`: set it `active` again (after the target stops
    /// being `active`, so two copies are never active at once).
    pub reactivate_source: bool,
    /// The target may hold a copy (even a pending shard's: its target may have been
    /// prepared, `importing`, before the move recorded `copying`), or in a cutover be
    /// `active`: drop its copy.
    pub clean_target: bool,
}

/// The undo work for a shard stopped in `state` (only in-flight states can be undone).
pub fn undo_for(state: ShardMoveState) -> Option<Undo> {
    match state {
        ShardMoveState::Pending | ShardMoveState::Copying | ShardMoveState::CatchingUp => {
            Some(Undo {
                reactivate_source: false,
                clean_target: true,
            })
        }
        ShardMoveState::Cutover => Some(Undo {
            reactivate_source: true,
            clean_target: true,
        }),
        _ => None,
    }
}

/// A job's state, shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Switched,
    Completed,
    Aborted,
    Failed,
    Reverted,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Switched => "switched",
            JobState::Completed => "completed",
            JobState::Aborted => "aborted",
            JobState::Failed => "failed",
            JobState::Reverted => "reverted",
        }
    }
}

/// A job's state from its shards' states. `reverted` says a revert job moved its switched
/// shards back.
pub fn job_state(shards: &[ShardMoveState], reverted: bool) -> JobState {
    if shards.iter().any(|s| s.in_flight()) {
        JobState::Running
    } else if reverted {
        JobState::Reverted
    } else if shards.contains(&ShardMoveState::Failed) {
        JobState::Failed
    } else if shards.iter().all(|&s| s == ShardMoveState::Aborted) {
        JobState::Aborted
    } else if shards.contains(&ShardMoveState::Switched) {
        JobState::Switched
    } else {
        JobState::Completed
    }
}

/// When catching up stops and the cutover starts, and how long the cutover's pause may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUpPolicy {
    /// Freeze once at most this many rows remain to copy: they are copied inside the pause.
    pub max_lag_rows: u64,
    /// Freeze after this many rounds even if the tail is estimated not to fit the pause
    /// (the freeze's deadline then decides: the tail fits, or the freeze is given up).
    pub max_rounds: u32,
    /// `MOVE_MAX_PAUSE`: the tail copied inside the freeze must fit in it. Estimated before
    /// freezing ([`estimate_tail`]), enforced by a deadline on the tail copy.
    pub max_pause: Duration,
    /// Freezes given up because the tail did not fit, after which the shard's move fails
    /// ([`after_too_long_tail`]).
    pub max_freezes: u32,
}

impl Default for CatchUpPolicy {
    fn default() -> Self {
        CatchUpPolicy {
            max_lag_rows: 500,
            max_rounds: 50,
            max_pause: Duration::from_millis(500),
            max_freezes: 3,
        }
    }
}

impl CatchUpPolicy {
    /// After the `round`-th catch-up round (from 1), `last`: is it time to freeze? When the
    /// rows it copied (the next tail, about) are few and are estimated to copy within half
    /// the pause bound, or after `max_rounds` rounds.
    pub fn ready(&self, last: CatchUpRound, round: u32) -> bool {
        let fits = estimate_tail(last.rows, last) <= self.max_pause / 2;
        last.rows <= self.max_lag_rows && fits || round >= self.max_rounds
    }
}

/// How long to wait before copying more, so that `rows` copied in `elapsed` stay within
/// `max_rows_per_sec` (none: no wait).
pub fn throttle_delay(rows: u64, elapsed: Duration, max_rows_per_sec: Option<u64>) -> Duration {
    match max_rows_per_sec {
        Some(rate) if rate > 0 => {
            let due = Duration::from_secs_f64(rows as f64 / rate as f64);
            due.saturating_sub(elapsed)
        }
        _ => Duration::ZERO,
    }
}

/// Rows of a shard's first bulk chunk when the copy is paced by its share
/// ([`paced_rate`]): copied at full speed, it measures what the pipeline (source, mover,
/// target) can do under the current load.
pub const CALIBRATION_ROWS: i64 = 5_000;

/// Rows per chunk of a paced bulk copy after its calibration: about half a second of
/// copying, so a cutover waiting for the running chunk ([`CALIBRATION_ROWS`] at full speed,
/// then these) never waits long, and progress is recorded twice a second.
pub const PACED_CHUNK_ROWS: i64 = 20_000;

/// The rate (bytes per second) that keeps a bulk copy at `share` of its full speed
/// (`full_bytes_per_sec`, see [`FullSpeed`]). `None`: no pacing (a share of 1 or more, or no
/// speed measured). The copy's stream is paced at this rate byte by byte, so the backends do
/// the copy's work in small slices evenly spread over time and client statements queue
/// behind it for only a fraction of the time.
pub fn paced_rate(full_bytes_per_sec: f64, share: f64) -> Option<u64> {
    let pace = paces(share) && full_bytes_per_sec > 0.0;
    pace.then(|| (full_bytes_per_sec * share).max(1.0) as u64)
}

/// What bulk copies into one target achieve at full speed: the best of the measurements of
/// the last [`FullSpeed::MEMORY`]. A measurement slowed by a passing stall (a checkpoint, the
/// previous shard's index build) does not slow the shards after it, and a lasting change of
/// load is followed once the better measurements are older than that.
#[derive(Debug, Default, Clone, Copy)]
pub struct FullSpeed {
    best: Option<(f64, Instant)>,
}

impl FullSpeed {
    pub const MEMORY: Duration = Duration::from_secs(30);

    /// Records that `bytes` were copied in `elapsed` at full speed, at `now`; returns the
    /// speed to pace by (bytes per second).
    pub fn observe(&mut self, bytes: u64, elapsed: Duration, now: Instant) -> f64 {
        let speed = bytes as f64 / elapsed.as_secs_f64().max(1e-3);
        match self.best {
            Some((best, at))
                if best >= speed && now.saturating_duration_since(at) < Self::MEMORY =>
            {
                best
            }
            _ => {
                self.best = Some((speed, now));
                speed
            }
        }
    }
}

/// Whether a bulk copy at `share` of its full speed is paced (a share of 1: full speed).
pub fn paces(share: f64) -> bool {
    share > 0.0 && share < 1.0
}

/// Whether `share` is a valid share of a bulk copy's full speed: above 0, at most 1 (1: not
/// paced).
pub fn valid_copy_share(share: f64) -> bool {
    share > 0.0 && share <= 1.0
}

/// How many rows to copy per chunk: a chunk is one transaction on the target, and the
/// high-water mark is recorded after each. Throttled copies use chunks of about a tenth of
/// a second of their rate, so the limit is smooth.
pub fn chunk_rows(max_rows_per_sec: Option<u64>) -> i64 {
    match max_rows_per_sec {
        Some(rate) if rate > 0 => (rate / 10).clamp(1, 100_000) as i64,
        _ => 100_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use MoveEvent as E;
    use ShardMoveState as S;

    const EVENTS: [MoveEvent; 8] = [
        E::Start,
        E::Copied,
        E::CaughtUp,
        E::Switched,
        E::Cleaned,
        E::Abort,
        E::Fail,
        E::Thaw,
    ];

    #[test]
    fn the_happy_path() {
        let mut s = S::Pending;
        for (e, want) in [
            (E::Start, S::Copying),
            (E::Copied, S::CatchingUp),
            (E::CaughtUp, S::Cutover),
            (E::Switched, S::Switched),
            (E::Cleaned, S::Cleaned),
        ] {
            s = transition(s, e).unwrap();
            assert_eq!(s, want);
        }
    }

    #[test]
    fn every_transition_is_listed() {
        // The complete table: (from, event) -> Some(to) when legal.
        let legal = |from: S, e: E| -> Option<S> {
            match (from, e) {
                (S::Pending, E::Start) => Some(S::Copying),
                (S::Copying, E::Copied) => Some(S::CatchingUp),
                (S::CatchingUp, E::CaughtUp) => Some(S::Cutover),
                (S::Cutover, E::Switched) => Some(S::Switched),
                (S::Cutover, E::Thaw) => Some(S::CatchingUp),
                (S::Switched, E::Cleaned) => Some(S::Cleaned),
                (S::Pending | S::Copying | S::CatchingUp | S::Cutover, E::Abort) => {
                    Some(S::Aborted)
                }
                (S::Pending | S::Copying | S::CatchingUp | S::Cutover, E::Fail) => Some(S::Failed),
                _ => None,
            }
        };
        let mut illegal = 0;
        for from in S::ALL {
            for e in EVENTS {
                match (transition(from, e), legal(from, e)) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from} {e:?}"),
                    (Err(err), None) => {
                        illegal += 1;
                        assert_eq!(err.from, from);
                    }
                    (got, want) => panic!("{from} {e:?}: got {got:?}, want {want:?}"),
                }
            }
        }
        assert_eq!(illegal, 8 * 8 - 14);
    }

    #[test]
    fn a_switched_shard_cannot_be_aborted_only_reverted() {
        let e = transition(S::Switched, E::Abort).unwrap_err();
        assert!(e.to_string().contains("revert"), "{e}");
        assert!(transition(S::Switched, E::Fail).is_err());
    }

    #[test]
    fn final_states_are_final() {
        for s in [S::Cleaned, S::Aborted, S::Failed] {
            for e in EVENTS {
                assert!(transition(s, e).is_err());
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in S::ALL {
            assert_eq!(S::parse(s.as_str()), Some(s));
        }
        assert_eq!(S::parse("moving"), None);
    }

    #[test]
    fn undo_reactivates_the_source_only_from_cutover_and_always_cleans_the_target() {
        assert_eq!(
            undo_for(S::Copying).map(|u| u.reactivate_source),
            Some(false)
        );
        assert_eq!(
            undo_for(S::Cutover).map(|u| u.reactivate_source),
            Some(true)
        );
        assert_eq!(undo_for(S::Pending).map(|u| u.clean_target), Some(true));
        assert_eq!(undo_for(S::Switched), None);
        assert_eq!(undo_for(S::Aborted), None);
    }

    #[test]
    fn job_states() {
        assert_eq!(
            job_state(&[S::Switched, S::Copying], false),
            JobState::Running
        );
        assert_eq!(
            job_state(&[S::Switched, S::Switched], false),
            JobState::Switched
        );
        assert_eq!(
            job_state(&[S::Cleaned, S::Cleaned], false),
            JobState::Completed
        );
        assert_eq!(
            job_state(&[S::Aborted, S::Aborted], false),
            JobState::Aborted
        );
        assert_eq!(job_state(&[S::Aborted, S::Failed], false), JobState::Failed);
        assert_eq!(
            job_state(&[S::Switched, S::Aborted], false),
            JobState::Switched
        );
        assert_eq!(job_state(&[S::Switched], true), JobState::Reverted);
    }

    #[test]
    fn catch_up_policy() {
        let p = CatchUpPolicy::default();
        let round = |rows, ms| CatchUpRound {
            rows,
            took: Duration::from_millis(ms),
        };
        assert!(!p.ready(round(10_000, 100), 1));
        assert!(p.ready(round(100, 10), 1));
        // Few rows, but copied slowly: the tail would not fit half the pause.
        assert!(!p.ready(round(100, 400), 1));
        assert!(p.ready(round(10_000, 100), 50));
        assert!(p.ready(round(0, 0), 1));
    }

    #[test]
    fn throttling() {
        assert_eq!(throttle_delay(1000, Duration::ZERO, None), Duration::ZERO);
        assert_eq!(
            throttle_delay(1000, Duration::from_millis(200), Some(1000)),
            Duration::from_millis(800)
        );
        assert_eq!(
            throttle_delay(1000, Duration::from_secs(2), Some(1000)),
            Duration::ZERO
        );
        assert_eq!(chunk_rows(Some(1000)), 100);
        assert_eq!(chunk_rows(Some(3)), 1);
        assert_eq!(chunk_rows(None), 100_000);
    }

    #[test]
    fn a_paced_copy_runs_at_its_share_of_the_best_recent_speed() {
        let t0 = Instant::now();
        let mut full = FullSpeed::default();
        // 10 MB in 100 ms is 100 MB/s; 60% of it.
        let s = full.observe(10_000_000, Duration::from_millis(100), t0);
        assert_eq!(s, 100_000_000.0);
        assert_eq!(paced_rate(s, 0.6), Some(60_000_000));
        // A slow measurement soon after (a stall) keeps the best; a faster one replaces it.
        let slow = full.observe(
            1_000_000,
            Duration::from_millis(100),
            t0 + Duration::from_secs(5),
        );
        assert_eq!(slow, 100_000_000.0);
        let fast = full.observe(
            20_000_000,
            Duration::from_millis(100),
            t0 + Duration::from_secs(6),
        );
        assert_eq!(fast, 200_000_000.0);
        // Once the best is older than the memory, the new measurement counts.
        let later = t0 + Duration::from_secs(6) + FullSpeed::MEMORY;
        assert_eq!(
            full.observe(1_000_000, Duration::from_millis(100), later),
            10_000_000.0
        );
        // A copy measured in no time is taken as 1 ms.
        assert_eq!(
            FullSpeed::default().observe(1000, Duration::ZERO, t0),
            1_000_000.0
        );
        // Not paced: a share of 1, no speed, or a share out of range; the rate is never 0.
        assert_eq!(paced_rate(1e8, 1.0), None);
        assert_eq!(paced_rate(0.0, 0.5), None);
        assert_eq!(paced_rate(1e8, 0.0), None);
        assert_eq!(paced_rate(1e8, f64::NAN), None);
        assert_eq!(paced_rate(f64::NAN, 0.5), None);
        assert_eq!(paced_rate(0.1, 0.1), Some(1));
        assert!(valid_copy_share(1.0) && valid_copy_share(0.01));
        assert!(!valid_copy_share(0.0) && !valid_copy_share(1.5) && !valid_copy_share(f64::NAN));
    }

    proptest! {
        /// A paced copy never runs faster than the best recent speed, and keeps its share of
        /// it (to a byte per second); copying at the paced rate never takes less time than at
        /// that speed.
        #[test]
        fn paced_rate_is_the_share_of_the_measured_speed(
            bytes in 1u64..1_000_000_000, ms in 1u64..100_000, share in 0.01f64..0.99,
            earlier in proptest::option::of((1u64..1_000_000_000, 1u64..100_000, 0u64..60)),
        ) {
            let now = Instant::now() + Duration::from_secs(60);
            let mut full = FullSpeed::default();
            if let Some((b, m, ago)) = earlier {
                full.observe(b, Duration::from_millis(m), now - Duration::from_secs(ago));
            }
            let elapsed = Duration::from_millis(ms);
            let measured = bytes as f64 / elapsed.as_secs_f64();
            let speed = full.observe(bytes, elapsed, now);
            prop_assert!(speed >= measured);
            let rate = paced_rate(speed, share).unwrap() as f64;
            prop_assert!(rate <= speed);
            prop_assert!(rate >= (speed * share - 1.0).max(1.0));
            let delay = throttle_delay(bytes, Duration::ZERO, Some(rate as u64));
            prop_assert!(delay.as_secs_f64() + 1e-6 >= bytes as f64 / speed);
        }
    }

    proptest! {
        /// Whatever events arrive, a shard never leaves a final state, never reaches
        /// `switched` without passing `cutover`, and is never aborted after the switch.
        #[test]
        fn random_event_sequences_keep_the_protocol(events in proptest::collection::vec(0usize..8, 0..40)) {
            let mut s = S::Pending;
            let mut saw_cutover = false;
            for i in events {
                let before = s;
                if let Ok(next) = transition(s, EVENTS[i]) {
                    prop_assert!(!before.is_final());
                    if next == S::Switched { prop_assert!(saw_cutover); }
                    if next == S::Aborted { prop_assert!(before.in_flight()); }
                    s = next;
                    saw_cutover |= s == S::Cutover;
                }
            }
        }
    }
}
