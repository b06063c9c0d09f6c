//! The machine against a model of the world it acts on: a catalog (the map, the move's
//! recorded state, the fence flag), a source and a target backend (each copy's state row
//! with its leader term, its rows), clients writing through the map, leaders that crash or
//! are cut off from the catalog while they keep acting, and a target that stops answering.
//! Backends refuse a step from a lower term than the one stamped on the copy (as the storage
//! layer does), and a leader cut off from the catalog cannot change it.
//!
//! Whatever the interleaving, these hold at every instant:
//! - at most one copy that a map has ever named is `active` (no two copies take writes);
//!   a target copy no map named that is `active` (an activation whose answer was lost) is
//!   either still handled by a task or recorded to be fenced;
//! - the copy the map names holds every acknowledged write (none lost);
//! - no copy the map names is dropped;
//! - the shard is unwritable (its named copy not `active`) for at most a bound per leader
//!   that handled its freeze, whether the target answers or not;
//!
//! and at the end, with the target answering again and the fences done, exactly one copy is
//! `active`, the one the map names, holding every acknowledged write.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::moves::{MoveEvent, ShardMoveState as S, TargetSeen};

mod model;
use model::*;

#[test]
fn a_move_without_trouble_switches() {
    let w = run(&[Event::Step; 40]);
    assert_eq!(w.recorded, S::Switched);
    assert_settled(&w);
}

#[test]
fn an_abort_before_the_switch_leaves_the_source_active_and_no_target_copy() {
    let mut events = vec![Event::Step; 8];
    events.push(Event::Abort);
    let w = run(&events);
    assert_eq!(w.recorded, S::Aborted);
    assert_settled(&w);
    assert_eq!(w.tgt.state, None);
}

#[test]
fn a_target_that_dies_inside_the_freeze_gives_the_shard_back_to_the_source() {
    // Claim, prepare, pause, record, copy, record, catch up, record, indexes, mark, freeze:
    // the target dies right after the freeze.
    let mut events = vec![Event::Step; 11];
    events.push(Event::TargetDown);
    events.extend([Event::Step; 12]);
    let w = run(&events);
    assert_eq!(w.recorded, S::Failed);
    assert_settled(&w);
}

#[test]
fn tails_that_never_fit_fail_the_move_after_the_allowed_freezes() {
    let mut events = vec![Event::SlowTail];
    events.extend([Event::Step; 60]);
    let w = run(&events);
    assert_eq!(w.recorded, S::Failed);
    assert_eq!(w.src.state, Some(St::Active));
}

#[test]
fn a_failed_step_is_retried_but_never_while_the_source_is_frozen() {
    let mut m = ShardMachine::new(S::Copying, 0, false, LIMITS);
    assert_eq!(
        m.poll(),
        Action::Run {
            command: Command::Claim,
            within: Some(ASK_TARGET)
        }
    );
    m.handle(Outcome::Done, Duration::ZERO);
    assert!(matches!(
        m.poll(),
        Action::Run {
            command: Command::CopyBulk,
            ..
        }
    ));
    assert_eq!(
        m.handle(Outcome::Failed(Failure::Transient), Duration::ZERO),
        Some(Decision::Retry { attempt: 1 })
    );
    assert!(matches!(m.poll(), Action::Wait(_)));
    // A resumed cutover: the source may be frozen; a transient failure is undone at once.
    let mut m = ShardMachine::new(S::Cutover, 0, false, LIMITS);
    m.poll();
    assert_eq!(
        m.handle(Outcome::Failed(Failure::Transient), Duration::ZERO),
        Some(Decision::Undo { end: S::Failed })
    );
    assert_eq!(
        m.poll(),
        Action::Run {
            command: Command::ReadOwner,
            within: None
        }
    );
}

#[test]
fn a_superseded_leader_stops_without_undoing() {
    let mut m = ShardMachine::new(S::Cutover, 0, false, LIMITS);
    m.poll();
    m.handle(Outcome::Failed(Failure::Superseded), Duration::ZERO);
    assert_eq!(m.poll(), Action::Stop(End::Lost(Failure::Superseded)));
}

#[test]
fn the_undo_before_the_cutover_drops_only_what_the_move_made() {
    use CleanTarget as C;
    use TargetSeen as T;
    assert_eq!(clean_before_cutover(S::Copying, T::Importing), C::Drop);
    assert_eq!(clean_before_cutover(S::Pending, T::Importing), C::Drop);
    assert_eq!(clean_before_cutover(S::Copying, T::Retired), C::Drop);
    assert_eq!(clean_before_cutover(S::Pending, T::Retired), C::Nothing);
    assert_eq!(
        clean_before_cutover(S::CatchingUp, T::Active),
        C::LeaveForOperator
    );
    assert_eq!(
        clean_before_cutover(S::CatchingUp, T::Unreachable),
        C::FenceLater
    );
    assert_eq!(clean_before_cutover(S::CatchingUp, T::Absent), C::Nothing);
}

#[test]
fn a_map_changed_behind_the_movers_back_is_left_alone() {
    let mut m = ShardMachine::new(S::Cutover, 0, true, LIMITS);
    m.poll();
    m.handle(Outcome::Done, Duration::ZERO); // claim
    assert!(matches!(
        m.poll(),
        Action::Run {
            command: Command::ReadOwner,
            ..
        }
    ));
    m.handle(Outcome::Owner(Owner::Other), Duration::ZERO);
    assert_eq!(
        m.poll(),
        Action::Run {
            command: Command::Record {
                from: S::Cutover,
                event: MoveEvent::Fail
            },
            within: None
        }
    );
    m.handle(Outcome::Done, Duration::ZERO);
    assert_eq!(m.poll(), Action::Stop(End::LeftAlone));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    /// Any interleaving of steps, client writes, crashes, leaders cut off from the catalog
    /// acting on stale observations, a target that stops answering and aborts keeps the
    /// invariants at every instant (see the module's doc), and settles.
    #[test]
    fn every_interleaving_keeps_the_invariants(events in proptest::collection::vec(event(), 0..160)) {
        let w = run(&events);
        assert_settled(&w);
    }
}
