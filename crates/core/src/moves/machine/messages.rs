//! What passes between the machine and its driver: the commands it hands out, the outcomes
//! handed back, what the driver does next, how a task ends, and the decisions worth a log
//! line.

use std::time::Duration;

use crate::moves::{MoveEvent, ShardMoveState, TargetSeen};

/// A named pause point for crash tests (the driver pauses there when configured to; an abort
/// met there stops the move).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    AfterPrepare,
    AfterFreeze,
    AfterTail,
    AfterVerify,
    AfterRetire,
    AfterActivate,
    AfterSwitch,
}

impl Point {
    pub fn name(self) -> &'static str {
        match self {
            Point::AfterPrepare => "after_prepare",
            Point::AfterFreeze => "after_freeze",
            Point::AfterTail => "after_tail",
            Point::AfterVerify => "after_verify",
            Point::AfterRetire => "after_retire",
            Point::AfterActivate => "after_activate",
            Point::AfterSwitch => "after_switch",
        }
    }
}

/// A step for the driver to carry out. Backend steps carry the leader's term (the driver
/// knows it); each is idempotent, so a step repeated after a crash changes nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Stamp the leader's term on the shard's state row on the source and the target (a row
    /// that is absent is left so); refused when a newer leader stamped its own.
    Claim,
    /// Prepare the target: its copy `importing`, the table without its deferred indexes.
    Prepare,
    /// Pause at a crash-test point (nothing in production).
    Pause(Point),
    /// Record `transition(from, event)` in the catalog (only if the catalog holds `from`),
    /// with the failure's message for `Fail`.
    Record {
        from: ShardMoveState,
        event: MoveEvent,
    },
    /// Copy the rows the target lacks, chunk by chunk, recording progress. Answers
    /// [`Outcome::Copied`].
    CopyBulk,
    /// Build the target's deferred indexes, copy what was written since round after round
    /// until the lag is small, verify the prefix above `verified`. `bulk`: the target's
    /// high-water mark and row count when the bulk copy just ended. Answers
    /// [`Outcome::CaughtUp`].
    CatchUp {
        bulk: Option<(i64, i64)>,
        verified: i64,
    },
    /// Build the target's deferred indexes if a resume skipped catching up (idempotent).
    BuildIndexes,
    /// Read the shard's next epoch and record when the freeze starts (catalog). From here to
    /// the switch, the thaw or the undo, no bulk copy of this leader runs.
    MarkFrozen,
    /// Source `active` → `frozen` (waits for in-flight writers). Answers [`Outcome::Froze`].
    Freeze,
    /// Copy the tail (nothing is written to the source any more); `fresh`: the target holds
    /// exactly the rows up to it (straight from catching up). Answers [`Outcome::Tail`].
    CopyTail { fresh: Option<i64> },
    /// Verify the rows in `(after, upto]` on both sides (count and checksum).
    VerifyTail { after: i64, upto: i64 },
    /// Advance the target's sequence past `upto` (I4) and retire the source (`frozen` →
    /// `retired`), together.
    SequenceAndRetire { upto: i64 },
    /// Target `importing` → `active` with the epoch read at [`Command::MarkFrozen`].
    Activate,
    /// Read the target back: it must be `active` with that epoch.
    Confirm,
    /// Switch the catalog's map to the target (refused unless the map names the source or
    /// the target and the move's shard is `cutover`).
    Switch,
    /// Give a freeze up: source `frozen` → `active`; the catalog forgets the freeze's start.
    Thaw,
    /// Which copy the catalog's map names. Answers [`Outcome::Owner`].
    ReadOwner,
    /// The target's state row. Answers [`Outcome::Target`] (`Unreachable` on any failure).
    AskTarget,
    /// Drop the target's copy if it is `importing` or `retired` (the drop refuses one that
    /// serves).
    DropTarget,
    /// Fence the target's copy: demote it from `active` (when `demote`) and drop it.
    FenceTarget { demote: bool },
    /// Record in the catalog that the target's copy must be fenced once the target answers.
    RecordFence,
    /// Source `frozen` or `retired` → `active`.
    ReactivateSource,
}

impl Command {
    /// Whether the command belongs to a freeze, from [`Command::MarkFrozen`] to the switch:
    /// the driver keeps its bulk copies quiet meanwhile.
    pub fn in_freeze(self) -> bool {
        matches!(
            self,
            Command::MarkFrozen
                | Command::Freeze
                | Command::CopyTail { .. }
                | Command::VerifyTail { .. }
                | Command::SequenceAndRetire { .. }
                | Command::Activate
                | Command::Confirm
                | Command::Switch
                | Command::Pause(
                    Point::AfterFreeze
                        | Point::AfterTail
                        | Point::AfterVerify
                        | Point::AfterRetire
                        | Point::AfterActivate
                )
        )
    }
}

/// Which copy the catalog's map names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    Source,
    Target,
    /// Neither: the map was changed behind the mover's back.
    Other,
}

/// Why a step failed, as far as the protocol cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// A backend or the catalog did not answer, or answered an error that may pass.
    Transient,
    /// Anything else (a refused change, a verification that failed, a bug).
    Permanent,
    /// An operator's abort interrupted the step.
    Aborted,
    /// The leader's catalog session is gone: another node leads (or will).
    SessionLost,
    /// A backend holds a newer leader's term: another node leads.
    Superseded,
}

/// What came of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it says.
    Done,
    /// [`Command::CopyBulk`]: the target's high-water mark and row count.
    Copied {
        high_water: i64,
        rows: i64,
    },
    /// [`Command::CatchUp`]: the verified high-water mark.
    CaughtUp {
        high_water: i64,
    },
    /// [`Command::Freeze`]: whether the source was `retired` already (a resumed cutover).
    Froze {
        retired_already: bool,
    },
    /// [`Command::CopyTail`]: the highest `added_id`, the same on both sides.
    Tail {
        max_added_id: i64,
    },
    Owner(Owner),
    Target(TargetSeen),
    /// The command did not finish within its bound (it was cancelled).
    TimedOut,
    Failed(Failure),
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Carry out `command`, within `within` when given (else the ordinary statement bounds):
    /// a command still running then is cancelled and answers [`Outcome::TimedOut`].
    Run {
        command: Command,
        within: Option<Duration>,
    },
    /// Wait, then poll again (a retry's back-off).
    Wait(Duration),
    /// The task is over.
    Stop(End),
}

/// How a shard's task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The map names the target.
    Switched,
    /// Stopped before the switch, what it did undone, recorded `aborted` or `failed`.
    Undone(ShardMoveState),
    /// The map names neither copy: recorded `failed`, no backend changed.
    LeftAlone,
    /// This node no longer leads: nothing more is done; the next leader resumes.
    Lost(Failure),
    /// The undo could not finish (the catalog or the source did not answer): the shard stays
    /// in flight and the next pass starts a new task, which resumes or undoes again.
    UndoFailed,
    /// The shard's recorded state needs nothing of a task.
    Nothing,
}

/// What [`ShardMachine::handle`](super::ShardMachine::handle) decided, for the driver's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The step will be retried from the recorded state after a back-off.
    Retry { attempt: u32 },
    /// The move stops and what it did is undone, ending `end`.
    Undo { end: ShardMoveState },
    /// The tail did not fit `MOVE_MAX_PAUSE`: the freeze is given up.
    GiveFreezeUp { given_up: u32 },
    /// The tail did not fit `MOVE_MAX_PAUSE` in the allowed freezes: the move fails.
    TailTooLong,
    /// A step on the target failed during the undo: its copy is left to the fence (or, when
    /// it was refused, to an operator).
    TargetLeft,
}
