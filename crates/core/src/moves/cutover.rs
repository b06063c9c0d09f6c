//! The cutover's decisions, free of I/O: when to freeze, what to do when the tail does not
//! fit the pause bound, and how to undo a cutover whose target failed (DESIGN §5, I2-I6).
//!
//! The cutover runs, in this order: freeze the source, copy the tail, verify it, advance the
//! target's sequence, retire the source, activate the target, switch the map. Until the
//! switch, the catalog's map names the source, and every node routes the shard by its map:
//! a target copy that no map names receives no client traffic, whatever its state. So a
//! cutover that fails before the switch can always give the shard back to its source, at
//! once, without reading the target: the target's copy is fenced (demoted from `active`,
//! dropped) when it answers, first if it answers now, else by a later pass of the mover.

use std::time::Duration;

/// How far a cutover got, as the task that undoes it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CutoverReach {
    /// This task never sent the target's activation: the target is at most `importing`.
    NotActivated,
    /// The activation was sent (its answer may have been lost), or the task resumed a cutover
    /// that another leader started: the target may be `active`.
    MaybeActivated,
}

/// The target's copy of the shard, as seen by the undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetSeen {
    /// Not asked (nothing to learn: the target cannot be active).
    NotAsked,
    /// Asked, no answer within the bound (down, paused, unreachable).
    Unreachable,
    /// No state row: nothing there.
    Absent,
    Importing,
    Retired,
    Active,
    Frozen,
}

impl TargetSeen {
    pub const ALL: [TargetSeen; 7] = [
        TargetSeen::NotAsked,
        TargetSeen::Unreachable,
        TargetSeen::Absent,
        TargetSeen::Importing,
        TargetSeen::Retired,
        TargetSeen::Active,
        TargetSeen::Frozen,
    ];
}

/// Whether the undo of a cutover that reached `reach` asks the target for its state before
/// giving the shard back to the source (within a short bound): only when the target may be
/// `active`, so that it is demoted first when it answers. Otherwise the source is reactivated
/// without waiting for a target that may hang.
pub fn ask_target(reach: CutoverReach) -> bool {
    reach == CutoverReach::MaybeActivated
}

/// The undo of a cutover, in the order its steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutoverUndo {
    /// The catalog's map names another backend than the move's source: it was changed
    /// behind the mover's back. Record the shard `failed`, change no backend.
    LeaveAlone,
    /// Give the shard back to its source.
    Undo {
        /// First set the target's `active` copy `importing` again.
        demote_target: bool,
        /// Then drop the target's copy now (best effort: on failure it is fenced later).
        drop_target: bool,
        /// Record that the target's copy must be demoted and dropped once it answers (a later
        /// pass of the mover does it, whoever leads then).
        fence_later: bool,
        /// Always `true`: the source is set `active` again, from `frozen` or `retired`.
        reactivate_source: bool,
    },
}

/// What undoing a cutover that reached `reach` does, with the target `seen` so, when the
/// catalog's map names the move's source (`map_names_source`) or not.
///
/// Whenever the map names the source, the source is made `active` again: the target was not
/// switched to, so no node routes to it and no write was acknowledged there (I3); a target
/// that may be active and did not answer keeps a copy no map names, and is fenced before any
/// later move can make the map name it (a move's prepare refuses an `active` copy). A target
/// that answers `active` is demoted before the source is reactivated. A `frozen` target copy
/// is no cutover's doing: it is left for the fence, which refuses to drop it (an operator's
/// case) — the source is reactivated all the same.
pub fn undo_cutover(map_names_source: bool, reach: CutoverReach, seen: TargetSeen) -> CutoverUndo {
    use TargetSeen as T;
    if !map_names_source {
        return CutoverUndo::LeaveAlone;
    }
    let (demote_target, drop_target, fence_later) = match (reach, seen) {
        // Not asked, or no answer: nothing is waited for; a later pass fences the target.
        (_, T::NotAsked | T::Unreachable) => (false, false, true),
        (_, T::Absent) => (false, false, false),
        (_, T::Importing | T::Retired) => (false, true, false),
        (_, T::Active) => (true, true, false),
        (_, T::Frozen) => (false, false, true),
    };
    CutoverUndo::Undo {
        demote_target,
        drop_target,
        fence_later,
        reactivate_source: true,
    }
}

/// What one catch-up round did: the rows it copied (what was written during the previous
/// round, so about what the next tail will be) and how long copying them took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUpRound {
    pub rows: u64,
    pub took: Duration,
}

/// How long copying a tail of `rows` rows takes, at the speed of the last round (`round`):
/// its time per row. Zero rows take no time; a round that copied nothing tells no speed, and
/// is taken as one row in its time.
pub fn estimate_tail(rows: u64, round: CatchUpRound) -> Duration {
    if rows == 0 {
        return Duration::ZERO;
    }
    let per_row = round.took.as_secs_f64() / round.rows.max(1) as f64;
    Duration::from_secs_f64((per_row * rows as f64).min(1e9))
}

/// What follows a freeze given up because its tail did not fit `MOVE_MAX_PAUSE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooLongTail {
    /// Back to catching up (the source is `active` again), then freeze again.
    CatchUpAgain,
    /// The writes outrun the copy: the shard's move fails (source `active`, target dropped).
    Fail,
}

/// After the `given_up`-th freeze given up (from 1) under a policy allowing `max_freezes`.
pub fn after_too_long_tail(given_up: u32, max_freezes: u32) -> TooLongTail {
    if given_up >= max_freezes.max(1) {
        TooLongTail::Fail
    } else {
        TooLongTail::CatchUpAgain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use CutoverReach as R;
    use TargetSeen as T;

    fn undo(reach: R, seen: T) -> (bool, bool, bool) {
        match undo_cutover(true, reach, seen) {
            CutoverUndo::Undo {
                demote_target,
                drop_target,
                fence_later,
                reactivate_source,
            } => {
                assert!(reactivate_source);
                (demote_target, drop_target, fence_later)
            }
            CutoverUndo::LeaveAlone => panic!("left alone"),
        }
    }

    #[test]
    fn before_the_activation_the_target_is_not_waited_for() {
        assert!(!ask_target(R::NotActivated));
        assert_eq!(undo(R::NotActivated, T::NotAsked), (false, false, true));
    }

    #[test]
    fn a_target_that_may_be_active_is_asked_and_demoted_first_when_it_answers() {
        assert!(ask_target(R::MaybeActivated));
        assert_eq!(undo(R::MaybeActivated, T::Active), (true, true, false));
        assert_eq!(undo(R::MaybeActivated, T::Importing), (false, true, false));
        assert_eq!(undo(R::MaybeActivated, T::Absent), (false, false, false));
    }

    #[test]
    fn a_target_that_does_not_answer_is_fenced_later_and_the_source_comes_back_now() {
        assert_eq!(
            undo(R::MaybeActivated, T::Unreachable),
            (false, false, true)
        );
        assert_eq!(undo(R::NotActivated, T::Unreachable), (false, false, true));
    }

    #[test]
    fn a_map_changed_behind_the_movers_back_is_left_alone() {
        for r in [R::NotActivated, R::MaybeActivated] {
            for t in T::ALL {
                assert_eq!(undo_cutover(false, r, t), CutoverUndo::LeaveAlone);
            }
        }
    }

    #[test]
    fn tail_estimates() {
        let round = CatchUpRound {
            rows: 1000,
            took: Duration::from_millis(100),
        };
        assert_eq!(estimate_tail(0, round), Duration::ZERO);
        assert_eq!(estimate_tail(500, round), Duration::from_millis(50));
        let empty = CatchUpRound {
            rows: 0,
            took: Duration::from_millis(3),
        };
        assert_eq!(estimate_tail(2, empty), Duration::from_millis(6));
    }

    #[test]
    fn too_long_tails_fail_the_move_after_the_allowed_freezes() {
        assert_eq!(after_too_long_tail(1, 3), TooLongTail::CatchUpAgain);
        assert_eq!(after_too_long_tail(2, 3), TooLongTail::CatchUpAgain);
        assert_eq!(after_too_long_tail(3, 3), TooLongTail::Fail);
        assert_eq!(after_too_long_tail(1, 0), TooLongTail::Fail);
    }

    proptest! {
        /// Whatever the cutover reached and the target shows: when the map names the source,
        /// the source is made active again (I6); an `active` target copy is never dropped
        /// without being demoted first, and a target that may be active and was not seen
        /// otherwise is always fenced later (never two active copies left unattended); a
        /// target is asked only when it may be active.
        #[test]
        fn the_undo_always_gives_the_shard_back_and_never_forgets_the_target(
            maybe in any::<bool>(), t in 0usize..7,
        ) {
            let reach = if maybe { R::MaybeActivated } else { R::NotActivated };
            let seen = T::ALL[t];
            let (demote, drop, fence) = undo(reach, seen);
            if seen == T::Active {
                prop_assert!(demote && drop);
            }
            if demote {
                prop_assert!(seen == T::Active);
            }
            if matches!(seen, T::NotAsked | T::Unreachable | T::Frozen) {
                prop_assert!(fence && !drop && !demote);
            }
            if drop || demote {
                prop_assert!(!fence);
            }
            prop_assert_eq!(ask_target(reach), maybe);
        }

        /// The estimate grows with the tail and is the round's time for the round's rows.
        #[test]
        fn estimates_are_monotonic(rows in 0u64..1_000_000, more in 0u64..1000, n in 1u64..100_000, ms in 0u64..10_000) {
            let round = CatchUpRound { rows: n, took: Duration::from_millis(ms) };
            prop_assert!(estimate_tail(rows, round) <= estimate_tail(rows + more, round));
            let same = estimate_tail(n, round).as_secs_f64();
            prop_assert!((same - ms as f64 / 1000.0).abs() < 1e-6);
        }

        /// A shard fails after exactly `max` freezes given up, never before.
        #[test]
        fn freezes_are_bounded(max in 1u32..20) {
            let mut given_up = 0;
            loop {
                given_up += 1;
                if after_too_long_tail(given_up, max) == TooLongTail::Fail { break; }
                prop_assert!(given_up < max);
            }
            prop_assert_eq!(given_up, max);
        }
    }
}
