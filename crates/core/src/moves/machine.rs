//! One shard's move as a pure state machine, quinn-proto style (DESIGN §5, I1-I6).
//!
//! The driver (`mezzanine_mover::shard`) asks [`ShardMachine::poll`] for the next
//! [`Action`], carries it out (a backend or catalog step, a wait) and hands back what came
//! of it ([`ShardMachine::handle`]): observations in, commands out. Every decision lives
//! here: the order of the steps, what to resume from after a leader died, when to retry,
//! when a freeze is given up, the bounds of the steps inside a freeze, and how to undo a move
//! stopped before its switch. The driver holds no state of the protocol.
//!
//! The machine starts from the state the catalog records for the shard (a task that starts
//! in `cutover` resumes a cutover another leader may have got anywhere into: it must reckon
//! with a frozen or retired source and an active target). Its first step stamps the leader's
//! term on both copies ([`Command::Claim`]), so that a stale leader's later steps are refused
//! by the backends.

use std::time::Duration;

use super::{
    after_too_long_tail, ask_target, transition, undo_cutover, CatchUpPolicy, CutoverReach,
    CutoverUndo, MoveEvent, ShardMoveState, TargetSeen, TooLongTail,
};

mod messages;
pub use messages::*;

/// The longest an undo waits for the target's answer (its state, the drop of its copy), and
/// a claim for either copy's: beyond, the target counts as unreachable and its copy is fenced
/// by a later pass.
pub const ASK_TARGET: Duration = Duration::from_secs(2);

/// The undo's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Undoing {
    /// `aborted` or `failed`.
    end: ShardMoveState,
    /// Ask the target how it is, first.
    seen: TargetSeen,
    demote: bool,
    drop: bool,
    fence: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Claim,
    /// Start (or resume) the work of the recorded state.
    Work,
    Record(MoveEvent),
    MarkFrozen,
    Froze,
    Tail,
    Verify,
    SeqRetire,
    Activate,
    Confirm,
    Switch,
    Point(Point),
    Thaw,
    Backoff(Duration),
    UndoOwner(ShardMoveState),
    UndoAsk(Undoing),
    UndoTarget(Undoing),
    UndoFence(Undoing),
    UndoSource(Undoing),
    UndoRecord(Undoing),
    LeaveAlone,
    Done(End),
}

/// Settings of a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Freezing, its pause bound and the freezes given up before the move fails.
    pub policy: CatchUpPolicy,
    /// The bound of the steps inside a freeze together (against a backend that hangs).
    pub freeze_bound: Duration,
    /// Attempts of a step that fails transiently before the move fails.
    pub attempts: u32,
}

/// One shard's move.
#[derive(Debug, Clone)]
pub struct ShardMachine {
    limits: Limits,
    /// The state the catalog records (as this task last wrote or found it).
    state: ShardMoveState,
    /// The recorded state when the task started.
    resumed: ShardMoveState,
    phase: Phase,
    /// The last command handed out, awaiting its outcome.
    running: Option<Command>,
    aborted: bool,
    attempt: u32,
    freezes: u32,
    verified: i64,
    /// The target holds exactly the rows up to this mark (caught up in this task).
    fresh: Option<i64>,
    /// The bulk copy just ended in this task: the target's high-water mark and row count.
    bulk: Option<(i64, i64)>,
    /// The freeze was sent (the source may be frozen by this task).
    freezing: bool,
    /// The source was retired before this task's freeze (a resumed cutover).
    retired: bool,
    /// The target's activation was sent.
    activation_sent: bool,
    /// The tail's highest `added_id`.
    max_added_id: i64,
    /// What is left of the freeze's bound.
    left: Duration,
    /// The freeze's clock runs already: the task resumed a cutover (the source may have been
    /// frozen by the last leader), so every step from the first counts against the bound.
    clock_running: bool,
    /// The bound the running command was given.
    within: Option<Duration>,
}

impl ShardMachine {
    /// A task for a shard recorded in `state`, whose prefix up to `verified` was verified
    /// (a resumed cutover verifies only the tail), possibly aborted already.
    pub fn new(state: ShardMoveState, verified: i64, aborted: bool, limits: Limits) -> Self {
        ShardMachine {
            limits,
            state,
            resumed: state,
            phase: if state.in_flight() {
                Phase::Claim
            } else {
                Phase::Done(End::Nothing)
            },
            running: None,
            aborted,
            attempt: 0,
            freezes: 0,
            verified,
            fresh: None,
            bulk: None,
            freezing: false,
            retired: false,
            activation_sent: false,
            max_added_id: 0,
            left: limits.freeze_bound,
            within: None,
            clock_running: state == ShardMoveState::Cutover,
        }
    }

    /// The state the catalog records, as far as this task knows.
    pub fn state(&self) -> ShardMoveState {
        self.state
    }

    /// An operator asked to abort: the move stops at the next step boundary before the
    /// switch.
    pub fn abort(&mut self) {
        self.aborted = true;
    }

    pub fn aborted(&self) -> bool {
        self.aborted
    }

    /// How far a cutover may have got: the target may be `active` once this task sent its
    /// activation, or when it resumed a cutover another leader started.
    pub fn reach(&self) -> CutoverReach {
        if self.resumed == ShardMoveState::Cutover || self.activation_sent {
            CutoverReach::MaybeActivated
        } else {
            CutoverReach::NotActivated
        }
    }

    /// Whether the source may be frozen by this move now: a cutover this task froze, or one
    /// it resumed. Failures are then undone at once, never retried (a retry would keep client
    /// writes waiting).
    pub fn may_hold_freeze(&self) -> bool {
        self.state == ShardMoveState::Cutover
            && (self.freezing || self.resumed == ShardMoveState::Cutover)
    }

    /// The freezes given up so far in this task.
    pub fn freezes_given_up(&self) -> u32 {
        self.freezes
    }

    /// The next thing to do. Between two commands only: the driver must
    /// [`ShardMachine::handle`] the outcome of a `Run` before polling again.
    pub fn poll(&mut self) -> Action {
        if self.aborted && self.forward() && self.state.in_flight() {
            self.phase = Phase::UndoOwner(ShardMoveState::Aborted);
        }
        let (command, within) = match self.phase {
            Phase::Done(end) => return Action::Stop(end),
            Phase::Backoff(d) => {
                self.phase = Phase::Claim;
                return Action::Wait(d);
            }
            Phase::Claim => (Command::Claim, Some(self.bounded(ASK_TARGET))),
            Phase::Work => match self.state {
                ShardMoveState::Pending => (Command::Prepare, None),
                ShardMoveState::Copying => (Command::CopyBulk, None),
                ShardMoveState::CatchingUp => (
                    Command::CatchUp {
                        bulk: self.bulk.take(),
                        verified: self.verified,
                    },
                    None,
                ),
                ShardMoveState::Cutover => (Command::BuildIndexes, self.freeze_left()),
                _ => return Action::Stop(End::Nothing),
            },
            Phase::Record(event) => (
                Command::Record {
                    from: self.state,
                    event,
                },
                None,
            ),
            Phase::MarkFrozen => (Command::MarkFrozen, self.freeze_left()),
            Phase::Froze => {
                self.freezing = true;
                if !self.clock_running {
                    self.clock_running = true;
                    self.left = self.limits.freeze_bound;
                }
                (Command::Freeze, Some(self.left))
            }
            Phase::Tail => {
                let within = self.limits.policy.max_pause.min(self.left);
                (
                    Command::CopyTail {
                        fresh: self.fresh.take(),
                    },
                    Some(within),
                )
            }
            Phase::Verify => (
                Command::VerifyTail {
                    after: self.verified.min(self.max_added_id),
                    upto: self.max_added_id,
                },
                Some(self.left),
            ),
            Phase::SeqRetire => (
                Command::SequenceAndRetire {
                    upto: self.max_added_id,
                },
                Some(self.left),
            ),
            Phase::Activate => {
                self.activation_sent = true;
                (Command::Activate, Some(self.left))
            }
            Phase::Confirm => (Command::Confirm, Some(self.left)),
            Phase::Switch => (Command::Switch, None),
            Phase::Point(p) => (Command::Pause(p), None),
            Phase::Thaw => (Command::Thaw, None),
            Phase::UndoOwner(_) => (Command::ReadOwner, None),
            Phase::UndoAsk(_) => (Command::AskTarget, Some(ASK_TARGET)),
            Phase::UndoTarget(u) => {
                if self.state == ShardMoveState::Cutover {
                    (Command::FenceTarget { demote: u.demote }, Some(ASK_TARGET))
                } else {
                    (Command::DropTarget, Some(ASK_TARGET))
                }
            }
            Phase::UndoFence(_) => (Command::RecordFence, None),
            Phase::UndoSource(_) => (Command::ReactivateSource, None),
            Phase::UndoRecord(u) => (
                Command::Record {
                    from: self.state,
                    event: end_event(u.end),
                },
                None,
            ),
            Phase::LeaveAlone => (
                Command::Record {
                    from: self.state,
                    event: MoveEvent::Fail,
                },
                None,
            ),
        };
        self.running = Some(command);
        self.within = within;
        Action::Run { command, within }
    }

    /// What is left of the freeze's bound, while the source may be frozen by this move.
    fn freeze_left(&self) -> Option<Duration> {
        self.clock_running.then_some(self.left)
    }

    /// `bound`, or less when the freeze's bound has less left.
    fn bounded(&self, bound: Duration) -> Duration {
        self.freeze_left().map_or(bound, |left| left.min(bound))
    }

    /// Whether the machine is on the way to the switch (not undoing, thawing or done): an
    /// abort is taken at the next poll.
    fn forward(&self) -> bool {
        matches!(
            self.phase,
            Phase::Work
                | Phase::Record(MoveEvent::Start | MoveEvent::Copied | MoveEvent::CaughtUp)
                | Phase::MarkFrozen
                | Phase::Froze
                | Phase::Tail
                | Phase::Verify
                | Phase::SeqRetire
                | Phase::Activate
                | Phase::Confirm
                | Phase::Point(
                    Point::AfterPrepare
                        | Point::AfterFreeze
                        | Point::AfterTail
                        | Point::AfterVerify
                        | Point::AfterRetire
                        | Point::AfterActivate
                )
        )
    }

    /// What came of the command handed out last, and how long it took (the steps inside a
    /// freeze share its bound). Returns a decision worth logging, if any.
    pub fn handle(&mut self, outcome: Outcome, took: Duration) -> Option<Decision> {
        let command = self.running.take()?;
        if self.clock_running && !matches!(command, Command::Pause(_) | Command::Switch) {
            self.left = self.left.saturating_sub(took);
        }
        match (self.phase, outcome) {
            // Undo steps: their own rules.
            (Phase::UndoOwner(end), o) => self.undo_owner(end, o),
            (Phase::UndoAsk(u), o) => {
                let seen = match o {
                    Outcome::Target(seen) => seen,
                    _ => TargetSeen::Unreachable,
                };
                self.plan_undo(Undoing { seen, ..u });
                None
            }
            (Phase::UndoTarget(u), o) => self.undo_target(u, o),
            (Phase::UndoFence(u), Outcome::Done) => {
                self.phase = self.after_fence(u);
                None
            }
            (Phase::UndoSource(u), Outcome::Done) => {
                self.phase = Phase::UndoRecord(u);
                None
            }
            (Phase::UndoRecord(u), Outcome::Done) => {
                self.state = u.end;
                self.phase = Phase::Done(End::Undone(u.end));
                None
            }
            (Phase::LeaveAlone, Outcome::Done) => {
                self.state = ShardMoveState::Failed;
                self.phase = Phase::Done(End::LeftAlone);
                None
            }
            (
                Phase::UndoFence(_)
                | Phase::UndoSource(_)
                | Phase::UndoRecord(_)
                | Phase::LeaveAlone,
                o,
            ) => {
                self.phase = Phase::Done(match failure(o) {
                    f @ (Failure::SessionLost | Failure::Superseded) => End::Lost(f),
                    _ => End::UndoFailed,
                });
                None
            }
            // The way to the switch.
            (Phase::Claim, Outcome::Done) => {
                self.phase = Phase::Work;
                None
            }
            (Phase::Work, o) => self.work_done(o),
            (Phase::MarkFrozen, Outcome::Done) => {
                self.phase = Phase::Froze;
                None
            }
            (Phase::Record(event), Outcome::Done) => {
                self.recorded(event);
                None
            }
            (Phase::Froze, Outcome::Froze { retired_already }) => {
                self.retired = retired_already;
                self.phase = Phase::Point(Point::AfterFreeze);
                None
            }
            (Phase::Tail, Outcome::Tail { max_added_id })
                if took <= self.limits.policy.max_pause =>
            {
                self.max_added_id = max_added_id;
                self.phase = Phase::Point(Point::AfterTail);
                None
            }
            // Longer than the pause bound (the deadline cancels a copy still running then;
            // a copy that finished but took longer is over the bound all the same).
            (Phase::Tail, Outcome::Tail { .. }) => self.tail_too_long(),
            (Phase::Tail, Outcome::TimedOut)
                if self
                    .within
                    .is_some_and(|w| w >= self.limits.policy.max_pause) =>
            {
                self.tail_too_long()
            }
            (Phase::Verify, Outcome::Done) => {
                self.phase = Phase::Point(Point::AfterVerify);
                None
            }
            (Phase::SeqRetire, Outcome::Done) => {
                self.phase = Phase::Point(Point::AfterRetire);
                None
            }
            (Phase::Activate, Outcome::Done) => {
                self.phase = Phase::Point(Point::AfterActivate);
                None
            }
            (Phase::Confirm, Outcome::Done) => {
                self.phase = Phase::Switch;
                None
            }
            (Phase::Switch, Outcome::Done) => {
                self.state = ShardMoveState::Switched;
                self.freezing = false;
                self.clock_running = false;
                self.phase = Phase::Point(Point::AfterSwitch);
                None
            }
            (Phase::Point(Point::AfterSwitch), _) => {
                self.phase = Phase::Done(End::Switched);
                None
            }
            (Phase::Point(p), Outcome::Done) => {
                self.phase = after_point(p);
                None
            }
            (Phase::Thaw, Outcome::Done) => {
                self.freezing = false;
                self.clock_running = false;
                self.freezes += 1;
                if after_too_long_tail(self.freezes, self.limits.policy.max_freezes)
                    == TooLongTail::Fail
                {
                    self.phase = Phase::UndoOwner(ShardMoveState::Failed);
                    return Some(Decision::TailTooLong);
                }
                self.phase = Phase::Record(MoveEvent::Thaw);
                Some(Decision::GiveFreezeUp {
                    given_up: self.freezes,
                })
            }
            (_, o) => self.fail(failure(o)),
        }
    }

    fn work_done(&mut self, o: Outcome) -> Option<Decision> {
        match (self.state, o) {
            (ShardMoveState::Pending, Outcome::Done) => {
                self.phase = Phase::Point(Point::AfterPrepare)
            }
            (ShardMoveState::Copying, Outcome::Copied { high_water, rows }) => {
                self.bulk = Some((high_water, rows));
                self.phase = Phase::Record(MoveEvent::Copied);
            }
            (ShardMoveState::CatchingUp, Outcome::CaughtUp { high_water }) => {
                self.verified = high_water;
                self.fresh = Some(high_water);
                self.phase = Phase::Record(MoveEvent::CaughtUp);
            }
            (ShardMoveState::Cutover, Outcome::Done) => self.phase = Phase::MarkFrozen,
            (_, o) => return self.fail(failure(o)),
        }
        None
    }

    /// The catalog recorded `event`: on to the next state's work.
    fn recorded(&mut self, event: MoveEvent) {
        match transition(self.state, event) {
            Ok(to) => {
                self.state = to;
                self.phase = Phase::Work;
            }
            // Not reachable: the machine records only legal transitions.
            Err(_) => self.phase = Phase::Done(End::UndoFailed),
        }
    }

    /// The tail did not fit the pause bound: give the freeze up, unless the source was
    /// retired already (a resumed cutover that may have activated the target: undone).
    fn tail_too_long(&mut self) -> Option<Decision> {
        if self.retired {
            return self.fail(Failure::Permanent);
        }
        self.phase = Phase::Thaw;
        None
    }

    /// A step of the way to the switch failed: retry, stop, or undo.
    fn fail(&mut self, f: Failure) -> Option<Decision> {
        match f {
            Failure::SessionLost | Failure::Superseded => {
                self.phase = Phase::Done(End::Lost(f));
                None
            }
            Failure::Transient
                if self.attempt + 1 < self.limits.attempts && !self.may_hold_freeze() =>
            {
                self.attempt += 1;
                self.fresh = None;
                self.bulk = None;
                self.phase = Phase::Backoff(Duration::from_secs(1 << self.attempt.min(4)));
                Some(Decision::Retry {
                    attempt: self.attempt,
                })
            }
            _ => {
                let end = if f == Failure::Aborted || self.aborted {
                    ShardMoveState::Aborted
                } else {
                    ShardMoveState::Failed
                };
                self.phase = Phase::UndoOwner(end);
                Some(Decision::Undo { end })
            }
        }
    }

    fn undo_owner(&mut self, end: ShardMoveState, o: Outcome) -> Option<Decision> {
        match o {
            Outcome::Owner(Owner::Source) => {
                let u = Undoing {
                    end,
                    seen: TargetSeen::NotAsked,
                    demote: false,
                    drop: false,
                    fence: false,
                };
                let cutover = self.state == ShardMoveState::Cutover;
                if !cutover || ask_target(self.reach()) {
                    self.phase = Phase::UndoAsk(u);
                } else {
                    self.plan_undo(u);
                }
                None
            }
            Outcome::Owner(_) => {
                self.phase = Phase::LeaveAlone;
                None
            }
            o => {
                self.phase = Phase::Done(match failure(o) {
                    f @ (Failure::SessionLost | Failure::Superseded) => End::Lost(f),
                    _ => End::UndoFailed,
                });
                None
            }
        }
    }

    /// Decides the undo from what the target showed ([`undo_cutover`] for a cutover,
    /// [`clean_before_cutover`] before).
    fn plan_undo(&mut self, u: Undoing) {
        let u = if self.state == ShardMoveState::Cutover {
            match undo_cutover(true, self.reach(), u.seen) {
                CutoverUndo::Undo {
                    demote_target,
                    drop_target,
                    fence_later,
                    ..
                } => Undoing {
                    demote: demote_target,
                    drop: drop_target,
                    fence: fence_later,
                    ..u
                },
                CutoverUndo::LeaveAlone => {
                    self.phase = Phase::LeaveAlone;
                    return;
                }
            }
        } else {
            match clean_before_cutover(self.state, u.seen) {
                CleanTarget::Nothing | CleanTarget::LeaveForOperator => u,
                CleanTarget::Drop => Undoing { drop: true, ..u },
                CleanTarget::FenceLater => Undoing { fence: true, ..u },
            }
        };
        self.phase = if u.demote || u.drop {
            Phase::UndoTarget(u)
        } else {
            self.after_target(u)
        };
    }

    fn undo_target(&mut self, u: Undoing, o: Outcome) -> Option<Decision> {
        match o {
            Outcome::Done => {
                self.phase = self.after_target(u);
                None
            }
            o => {
                // A copy that cannot be dropped now: fenced once the target answers (a
                // cutover's, or one the target did not answer for); one refused outright is
                // left for an operator (it stays `importing`, never served).
                let fence = self.state == ShardMoveState::Cutover
                    || matches!(failure(o), Failure::Transient);
                self.phase = self.after_target(Undoing { fence, ..u });
                Some(Decision::TargetLeft)
            }
        }
    }

    fn after_target(&self, u: Undoing) -> Phase {
        if u.fence {
            Phase::UndoFence(u)
        } else {
            self.after_fence(u)
        }
    }

    /// The source comes back after the target's steps: only a cutover may have frozen or
    /// retired it (before, it stayed `active`). The fence is recorded first, so whoever
    /// leads later fences a target copy that may be active.
    fn after_fence(&self, u: Undoing) -> Phase {
        if self.state == ShardMoveState::Cutover {
            Phase::UndoSource(u)
        } else {
            Phase::UndoRecord(u)
        }
    }
}

fn after_point(p: Point) -> Phase {
    match p {
        Point::AfterPrepare => Phase::Record(MoveEvent::Start),
        Point::AfterFreeze => Phase::Tail,
        Point::AfterTail => Phase::Verify,
        Point::AfterVerify => Phase::SeqRetire,
        Point::AfterRetire => Phase::Activate,
        Point::AfterActivate => Phase::Confirm,
        Point::AfterSwitch => Phase::Done(End::Switched),
    }
}

fn end_event(end: ShardMoveState) -> MoveEvent {
    if end == ShardMoveState::Aborted {
        MoveEvent::Abort
    } else {
        MoveEvent::Fail
    }
}

/// The failure an outcome stands for: a bound exceeded is permanent (the step hangs), an
/// answer of the wrong kind is a protocol error.
fn failure(o: Outcome) -> Failure {
    match o {
        Outcome::Failed(f) => f,
        _ => Failure::Permanent,
    }
}

/// What the undo of a move stopped before its cutover does with the target's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanTarget {
    /// No copy there.
    Nothing,
    /// Drop it (`importing`: this move's; `retired`: this move's once it prepared it).
    Drop,
    /// The target did not answer: drop it once it does (it stays `importing`, never served).
    FenceLater,
    /// The target serves the shard although the move is before its cutover: not this move's
    /// doing, left alone for an operator.
    LeaveForOperator,
}

/// The target's copy of a shard whose move stopped in `state` (before the cutover), as the
/// target `seen` shows it: an `importing` copy is dropped (a pending shard's too: its target
/// may have been prepared before the move recorded `copying`); a `retired` one is dropped
/// once this move prepared it (from `copying` on), but kept while the shard is `pending` (it
/// is then another move's old source, kept for a revert: a prepare would have made it
/// `importing`); a copy that serves is left alone.
pub fn clean_before_cutover(state: ShardMoveState, seen: TargetSeen) -> CleanTarget {
    use TargetSeen as T;
    match seen {
        T::Absent => CleanTarget::Nothing,
        T::NotAsked | T::Unreachable => CleanTarget::FenceLater,
        T::Active | T::Frozen => CleanTarget::LeaveForOperator,
        T::Retired if state == ShardMoveState::Pending => CleanTarget::Nothing,
        T::Importing | T::Retired => CleanTarget::Drop,
    }
}

#[cfg(test)]
mod tests;
