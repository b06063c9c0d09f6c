//! One shard's move: the thin driver of [`mezzanine_core::moves::machine`]. The machine
//! decides every step, from the state the catalog records (so a leader that takes over
//! resumes wherever the last one died), when to retry, when a freeze is given up and how a
//! move is undone; this module carries the steps out against the backends and the catalog
//! and hands back what came of them.
//!
//! The cutover, in this order (the freeze is the only time client writes of the shard wait):
//!
//! 1. the source is set `frozen` (waits for in-flight writers, stops new ones; reads go on);
//! 2. the rows written since the last catch-up round are copied;
//! 3. the tail is verified (count and an order-independent checksum over every column; the
//!    prefix was verified before the freeze, cells being immutable) and the highest `added_id`
//!    must be equal on both sides;
//! 4. the target's sequence is advanced past the highest `added_id` (I4);
//! 5. the source is set `retired`: from here no read is served there either, so a node whose
//!    map is stale can never read a copy that is about to miss new writes (I2);
//! 6. the target is set `active` with the shard's next epoch, and read back (it must still
//!    answer, active with that epoch, before the map names it);
//! 7. the catalog map is switched (with the move's shard state, one statement) and every node
//!    is notified; requests held meanwhile complete at the target.
//!
//! DESIGN §5 lists "activate target, switch the map, retire the source"; retiring before
//! activating closes the window in which a stale node could read the frozen source while the
//! target already takes writes.
//!
//! Every backend step carries the leader's term, stamped on both copies by the task's first
//! step: a backend refuses the steps of a leader that a newer one superseded. Each step runs
//! within the bound the machine gives it, and is cancelled when the leader's catalog session
//! ends (the next leader resumes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mezzanine_catalog::{Catalog, LeaderSession, MoveShard};
use mezzanine_core::moves::machine::{
    Action, Command, Decision, End, Failure, Limits, Outcome, Owner, ShardMachine,
};
use mezzanine_core::moves::{
    chunk_rows, paced_rate, paces, transition, CatchUpRound, MoveEvent, ShardMoveState,
    CALIBRATION_ROWS, PACED_CHUNK_ROWS,
};
use mezzanine_storage::transfer::{self, ShardState};
use mezzanine_storage::{Backend, StorageError};

use crate::{MoveError, MoverConfig, Pools, RowLimit};

/// The work of one shard of one job.
pub struct ShardTask {
    pub config: MoverConfig,
    pub catalog: Arc<Catalog>,
    pub pools: Arc<Pools>,
    pub session: Arc<LeaderSession>,
    pub move_id: i64,
    pub shard: MoveShard,
    /// The move's (or its rebalance's) `max_rows_per_sec`, shared with its other copies.
    pub limit: Option<Arc<RowLimit>>,
    pub abort: Arc<AtomicBool>,
}

/// What the driver keeps between the commands of one task: resources and facts for its
/// messages, none of the protocol's state.
#[derive(Default)]
pub(crate) struct Steps<'a> {
    /// The epoch the target gets at its activation (read with the freeze's start).
    pub(crate) epoch: Option<i64>,
    /// Held from the freeze's start to its end: no bulk copy of this leader runs meanwhile
    /// (see [`Pools::quiet`]).
    pub(crate) quiet: Option<tokio::sync::RwLockWriteGuard<'a, ()>>,
    /// The last failure's message, recorded with `failed`.
    pub(crate) error: Option<String>,
    /// The freeze's steps and their times (ms), for the switch's log line.
    pub(crate) timings: Vec<(&'static str, f64)>,
}

/// How the driver classifies a step's error for the machine.
fn failure(e: &MoveError, session_alive: bool) -> Failure {
    match e {
        MoveError::Aborted => Failure::Aborted,
        MoveError::Superseded(_) => Failure::Superseded,
        MoveError::Catalog(_) if !session_alive => Failure::SessionLost,
        MoveError::Storage(StorageError::Unavailable { .. })
        | MoveError::Storage(StorageError::Database { .. }) => Failure::Transient,
        _ => Failure::Permanent,
    }
}

/// A command's name in logs and messages.
fn describe(command: Command) -> &'static str {
    match command {
        Command::Claim => "claim",
        Command::Prepare => "prepare",
        Command::Pause(p) => p.name(),
        Command::Record { .. } => "record",
        Command::CopyBulk => "bulk copy",
        Command::CatchUp { .. } => "catch-up",
        Command::BuildIndexes => "index build",
        Command::MarkFrozen => "freeze's start",
        Command::Freeze => "freeze",
        Command::CopyTail { .. } => "tail copy",
        Command::VerifyTail { .. } => "verify",
        Command::SequenceAndRetire { .. } => "sequence+retire",
        Command::Activate => "activate",
        Command::Confirm => "confirm",
        Command::Switch => "switch",
        Command::Thaw => "thaw",
        Command::ReadOwner => "owner",
        Command::AskTarget => "target's state",
        Command::DropTarget => "target's drop",
        Command::FenceTarget { .. } => "target's fence",
        Command::RecordFence => "fence record",
        Command::ReactivateSource => "source's reactivation",
    }
}

impl ShardTask {
    /// Drives the shard until it is switched, aborted or failed, or until this node no longer
    /// leads.
    pub async fn run(self) {
        let limits = Limits {
            policy: self.config.policy,
            freeze_bound: self.config.freeze_bound,
            attempts: self.config.attempts,
        };
        let mut machine = ShardMachine::new(
            self.shard.state,
            self.shard.verified,
            self.aborted(),
            limits,
        );
        let mut steps = Steps::default();
        loop {
            if self.aborted() {
                machine.abort();
            }
            let (command, within) = match machine.poll() {
                Action::Stop(end) => return self.ended(end, &machine, &steps),
                Action::Wait(d) => {
                    tokio::time::sleep(d).await;
                    continue;
                }
                Action::Run { command, within } => (command, within),
            };
            if !command.in_freeze() {
                steps.quiet = None;
            }
            let started = Instant::now();
            let outcome = self.bounded(command, within, &mut steps).await;
            let took = started.elapsed();
            if command.in_freeze() && !matches!(command, Command::Pause(_)) {
                steps
                    .timings
                    .push((describe(command), took.as_secs_f64() * 1000.0));
            }
            if let Some(d) = machine.handle(outcome, took) {
                self.decided(d, &machine, &mut steps);
            }
        }
    }

    /// Carries `command` out within `within` (when given), cancelled when the leader's
    /// catalog session ends.
    async fn bounded<'a>(
        &'a self,
        command: Command,
        within: Option<Duration>,
        steps: &mut Steps<'a>,
    ) -> Outcome {
        let mut timed_out = None;
        let outcome = {
            let step = self.execute(command, steps);
            let step = async {
                match within {
                    Some(w) => match tokio::time::timeout(w, step).await {
                        Ok(o) => o,
                        Err(_) => {
                            timed_out = Some(w);
                            Outcome::TimedOut
                        }
                    },
                    None => step.await,
                }
            };
            tokio::select! {
                o = step => o,
                _ = self.session.lost() => Outcome::Failed(Failure::SessionLost),
            }
        };
        if let Some(w) = timed_out {
            steps.error = Some(format!(
                "the {} did not finish within {w:?} (a backend down or not answering)",
                describe(command)
            ));
        }
        outcome
    }

    async fn execute<'a>(&'a self, command: Command, steps: &mut Steps<'a>) -> Outcome {
        match self.step(command, steps).await {
            Ok(o) => o,
            Err(e) => {
                let f = failure(&e, self.session.is_alive());
                if f != Failure::Aborted {
                    steps.error = Some(e.to_string());
                }
                Outcome::Failed(f)
            }
        }
    }

    async fn step<'a>(
        &'a self,
        command: Command,
        steps: &mut Steps<'a>,
    ) -> Result<Outcome, MoveError> {
        use Command as C;
        let shard = self.shard.shard;
        Ok(match command {
            C::Claim => {
                let term = self.session.term();
                let (src, tgt) = self.backends().await?;
                futures::future::try_join(
                    transfer::claim(&src, shard, term),
                    transfer::claim(&tgt, shard, term),
                )
                .await?;
                Outcome::Done
            }
            C::Prepare => {
                let tgt = self.target().await?;
                let term = self.session.term();
                transfer::prepare_import(&tgt, self.config.num_shards, shard, term).await?;
                Outcome::Done
            }
            C::Pause(p) => {
                self.config.failpoints.pause(p.name(), &self.abort).await;
                if self.aborted() {
                    return Err(MoveError::Aborted);
                }
                Outcome::Done
            }
            C::Record { from, event } => {
                let error = match event {
                    MoveEvent::Fail | MoveEvent::Abort => steps.error.clone(),
                    _ => None,
                };
                self.record(from, event, error.as_deref()).await?;
                Outcome::Done
            }
            C::CopyBulk => {
                let (src, tgt) = self.backends().await?;
                let (high_water, rows) = self.copy_bulk(&src, &tgt).await?;
                Outcome::Copied { high_water, rows }
            }
            C::CatchUp { bulk, verified } => {
                let (src, tgt) = self.backends().await?;
                let high_water = self.catch_up(&src, &tgt, bulk, verified).await?;
                Outcome::CaughtUp { high_water }
            }
            C::BuildIndexes => {
                let tgt = self.target().await?;
                self.build_indexes(&tgt).await?;
                Outcome::Done
            }
            C::MarkFrozen => {
                self.mark_frozen(steps).await?;
                Outcome::Done
            }
            C::Freeze => {
                let src = self.source().await?;
                Outcome::Froze {
                    retired_already: self.freeze(&src).await?,
                }
            }
            C::CopyTail { fresh } => {
                let (src, tgt) = self.backends().await?;
                Outcome::Tail {
                    max_added_id: self.tail(&src, &tgt, fresh).await?,
                }
            }
            C::VerifyTail { after, upto } => {
                let (src, tgt) = self.backends().await?;
                self.verify(&src, &tgt, after, upto).await?;
                Outcome::Done
            }
            C::SequenceAndRetire { upto } => {
                self.sequence_and_retire(upto).await?;
                Outcome::Done
            }
            C::Activate => {
                self.activate(steps).await?;
                Outcome::Done
            }
            C::Confirm => {
                self.confirm(steps).await?;
                Outcome::Done
            }
            C::Switch => {
                self.switch(steps).await?;
                Outcome::Done
            }
            C::Thaw => {
                self.thaw().await?;
                Outcome::Done
            }
            C::ReadOwner => {
                let owner = self.session.owner(shard).await?;
                if owner == self.shard.from {
                    Outcome::Owner(Owner::Source)
                } else if owner == self.shard.to {
                    self.left_alone(&owner, steps);
                    Outcome::Owner(Owner::Target)
                } else {
                    self.left_alone(&owner, steps);
                    Outcome::Owner(Owner::Other)
                }
            }
            C::AskTarget => Outcome::Target(self.see_target().await),
            C::DropTarget => {
                let tgt = self.target().await?;
                transfer::drop_shard(&tgt, shard, self.session.term()).await?;
                Outcome::Done
            }
            C::FenceTarget { demote } => {
                let tgt = self.target().await?;
                crate::cutover::fence_copy(&tgt, shard, demote, self.session.term()).await?;
                Outcome::Done
            }
            C::RecordFence => {
                self.session.set_fence(self.move_id, shard, true).await?;
                Outcome::Done
            }
            C::ReactivateSource => {
                let src = self.source().await?;
                self.change_state(
                    &src,
                    "source",
                    &[ShardState::Frozen, ShardState::Retired],
                    ShardState::Active,
                    None,
                )
                .await?;
                Outcome::Done
            }
        })
    }

    /// The message recorded with a shard left alone: the catalog's map names `owner`, not
    /// the move's source.
    fn left_alone(&self, owner: &str, steps: &mut Steps<'_>) {
        let shard = self.shard.shard;
        let why = format!(
            "the catalog gives shard {shard} to {owner:?}, not to the move's source {:?}: \
             nothing undone, the backends are left as they are (`mezzanine verify --shards {shard}`)",
            self.shard.from
        );
        steps.error = Some(match steps.error.take() {
            Some(e) => format!("{e}; {why}"),
            None => why,
        });
    }

    /// Logs what the machine decided.
    fn decided(&self, d: Decision, machine: &ShardMachine, steps: &mut Steps<'_>) {
        let (move_id, shard, state) = (self.move_id, self.shard.shard, machine.state());
        let error = steps.error.as_deref().unwrap_or("");
        match d {
            Decision::Retry { attempt } => {
                tracing::warn!(move_id, shard, %state, attempt, error, "move step failed; retrying")
            }
            Decision::Undo {
                end: ShardMoveState::Aborted,
            } => {
                tracing::info!(move_id, shard, %state, "move aborted; undoing")
            }
            Decision::Undo { .. } => {
                metrics::counter!("mezzanine_move_shards_failed_total").increment(1);
                tracing::error!(move_id, shard, %state, error, "shard move failed; undoing");
            }
            Decision::GiveFreezeUp { given_up } => {
                metrics::counter!("mezzanine_move_freezes_given_up_total").increment(1);
                tracing::warn!(move_id, shard, given_up, max_pause = ?self.config.policy.max_pause, "the tail did not fit MOVE_MAX_PAUSE: freeze given up, the source is active again; catching up resumes");
            }
            Decision::TailTooLong => {
                metrics::counter!("mezzanine_move_freezes_given_up_total").increment(1);
                metrics::counter!("mezzanine_move_shards_failed_total").increment(1);
                let why = format!(
                    "the tail to copy inside the freeze did not fit MOVE_MAX_PAUSE ({:?}) in {} freezes: \
                     writes to the shard outrun the copy (the source stayed active)",
                    self.config.policy.max_pause,
                    machine.freezes_given_up()
                );
                tracing::error!(move_id, shard, error = %why, "shard move failed; undoing");
                steps.error = Some(why);
            }
            Decision::TargetLeft => {
                tracing::warn!(move_id, shard, target = %self.shard.to, error, "target copy not cleaned now; it is fenced when the target answers (or left for an operator if it was refused)")
            }
        }
    }

    /// Logs how the task ended.
    fn ended(&self, end: End, machine: &ShardMachine, steps: &Steps<'_>) {
        let (move_id, shard) = (self.move_id, self.shard.shard);
        let error = steps.error.as_deref().unwrap_or("");
        match end {
            End::Switched | End::Nothing => {}
            End::Undone(state) => {
                tracing::info!(move_id, shard, %state, reach = ?machine.reach(), "shard's move stopped and undone: the source is authoritative")
            }
            End::LeftAlone => {
                tracing::error!(move_id, shard, error, "shard's move failed; nothing undone")
            }
            End::Lost(Failure::Superseded) => {
                metrics::counter!("mezzanine_move_shards_superseded_total").increment(1);
                tracing::warn!(
                    move_id,
                    shard,
                    error,
                    "a newer leader took the shard over; this leader stops its task"
                )
            }
            End::Lost(f) => {
                tracing::warn!(move_id, shard, why = ?f, "this node no longer leads the mover; the next leader resumes the shard")
            }
            End::UndoFailed => {
                tracing::error!(
                    move_id,
                    shard,
                    error,
                    "undo failed; will retry on the next pass"
                )
            }
        }
    }

    pub(crate) fn aborted(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }

    pub(crate) async fn source(&self) -> Result<Arc<Backend>, MoveError> {
        self.pools.get(&self.catalog, &self.shard.from).await
    }

    pub(crate) async fn target(&self) -> Result<Arc<Backend>, MoveError> {
        self.pools.get(&self.catalog, &self.shard.to).await
    }

    pub(crate) async fn backends(&self) -> Result<(Arc<Backend>, Arc<Backend>), MoveError> {
        Ok((self.source().await?, self.target().await?))
    }

    /// Records a transition in the catalog (only from the state the machine believes), with
    /// the error message of a failure. A catalog that does not hold the shard in `from` is a
    /// protocol error: nothing was recorded.
    async fn record(
        &self,
        from: ShardMoveState,
        event: MoveEvent,
        error: Option<&str>,
    ) -> Result<ShardMoveState, MoveError> {
        let to = transition(from, event).map_err(|e| MoveError::Protocol(e.to_string()))?;
        if !self
            .session
            .set_state(self.move_id, self.shard.shard, from, to, error)
            .await?
        {
            return Err(MoveError::Protocol(format!(
                "shard {} of move {}: expected {from} in the catalog, found another state; {to} not recorded",
                self.shard.shard, self.move_id
            )));
        }
        Ok(to)
    }

    /// Sets the shard's state on `backend` (the move's `role`: `source` or `target`) to `to`
    /// from one of `from` (with `epoch`, when given), under the leader's term. A change that
    /// changed nothing is a protocol error saying what was expected and what was found: the
    /// cutover's order of state changes is what keeps invariant I2, so none of them may be
    /// skipped silently.
    pub(crate) async fn change_state(
        &self,
        backend: &Backend,
        role: &str,
        from: &[ShardState],
        to: ShardState,
        epoch: Option<i64>,
    ) -> Result<(), MoveError> {
        let shard = self.shard.shard;
        let term = self.session.term();
        if transfer::set_state(backend, shard, from, to, epoch, term).await? {
            return Ok(());
        }
        let found = transfer::shard_state(backend, shard).await?;
        Err(MoveError::Protocol(unchanged(
            shard,
            &format!("{role} {}", backend.name()),
            from,
            to,
            epoch,
            found,
        )))
    }

    /// Copies every row the target lacks, in chunks (each its own transaction on the target),
    /// recording progress. An abort interrupts it between chunks. Returns the target's
    /// high-water mark and row count.
    async fn copy_bulk(&self, src: &Backend, tgt: &Backend) -> Result<(i64, i64), MoveError> {
        let shard = self.shard.shard;
        let total = transfer::count_rows(src, shard).await?;
        let mut hw = transfer::max_added_id(tgt, shard).await?;
        let mut copied = transfer::count_rows(tgt, shard).await?;
        self.session
            .progress(self.move_id, shard, hw, copied, total, None)
            .await?;
        // Unless the move sets its own rate, the copy is paced at the node's share of its
        // full speed, measured by the shard's first chunk (`CALIBRATION_ROWS` at full speed).
        let limit = self.limit.as_deref();
        let paced = limit.is_none() && paces(self.config.copy_share);
        let mut rate = None;
        let mut chunk = match (paced, limit) {
            (true, _) => CALIBRATION_ROWS,
            (false, Some(l)) => l.chunk(),
            (false, None) => chunk_rows(None),
        };
        loop {
            let (r, took) = self.copy_chunk(src, tgt, hw, chunk, rate, limit).await?;
            if r.rows == 0 {
                return Ok((hw, copied));
            }
            let calibrating = paced && rate.is_none();
            if calibrating {
                let pair = (src.name(), tgt.name());
                let full = self.pools.full_speed(pair, r.bytes, took);
                rate = paced_rate(full, self.config.copy_share);
                tracing::debug!(shard, bytes_per_sec = rate, "bulk copy paced");
            }
            hw = r.max_added_id;
            copied += r.rows as i64;
            self.session
                .progress(self.move_id, shard, hw, copied, total.max(copied), None)
                .await?;
            self.config.failpoints.pause("copying", &self.abort).await;
            if (r.rows as i64) < chunk {
                return Ok((hw, copied));
            }
            if calibrating {
                chunk = PACED_CHUNK_ROWS;
            }
        }
    }

    /// Copies one chunk of rows above `after` (bulk work: it holds [`Pools::quiet`] shared),
    /// once `limit` (the move's rows per second, shared by its copies) allows the chunk, and
    /// counts it. An abort stops before the chunk. Returns what was copied and how long the
    /// copy itself took (not the waits).
    async fn copy_chunk(
        &self,
        src: &Backend,
        tgt: &Backend,
        after: i64,
        chunk: i64,
        bytes_per_sec: Option<u64>,
        limit: Option<&RowLimit>,
    ) -> Result<(transfer::CopyReport, Duration), MoveError> {
        if let Some(l) = limit {
            l.take(chunk.max(0) as u64).await;
        }
        if self.aborted() {
            return Err(MoveError::Aborted);
        }
        let (r, took) = {
            let _bulk = self.pools.quiet.read().await;
            let (shard, started) = (self.shard.shard, Instant::now());
            let term = self.session.term();
            let r =
                transfer::copy_rows_paced(src, tgt, shard, after, Some(chunk), bytes_per_sec, term)
                    .await?;
            (r, started.elapsed())
        };
        metrics::counter!("mezzanine_move_rows_copied_total").increment(r.rows);
        metrics::counter!("mezzanine_move_bytes_copied_total").increment(r.bytes);
        Ok((r, took))
    }

    /// Copies what was written since, round after round, until the lag is small; then
    /// verifies the copied prefix. Returns the verified high-water mark. An abort interrupts
    /// it between chunks. `bulk`: the target's high-water mark and row count when the bulk
    /// copy just ended in this task (read from the target otherwise, after a resume).
    async fn catch_up(
        &self,
        src: &Backend,
        tgt: &Backend,
        bulk: Option<(i64, i64)>,
        verified: i64,
    ) -> Result<i64, MoveError> {
        let shard = self.shard.shard;
        self.build_indexes(tgt).await?;
        // Catching up is never limited: only the bulk copy is.
        let chunk = chunk_rows(None);
        let (mut hw, mut copied) = match bulk {
            Some(b) => b,
            None => (
                transfer::max_added_id(tgt, shard).await?,
                transfer::count_rows(tgt, shard).await?,
            ),
        };
        for round in 1u32.. {
            let mut lag = 0u64;
            let started = Instant::now();
            loop {
                let (r, _) = self.copy_chunk(src, tgt, hw, chunk, None, None).await?;
                hw = r.max_added_id; // `after` itself when nothing was copied
                lag += r.rows;
                if (r.rows as i64) < chunk {
                    break;
                }
            }
            let last = CatchUpRound {
                rows: lag,
                took: started.elapsed(),
            };
            copied += lag as i64;
            let total = copied.max(self.shard.rows_total);
            self.session
                .progress(self.move_id, shard, hw, copied, total, Some(lag as i64))
                .await?;
            self.config
                .failpoints
                .pause("catching_up", &self.abort)
                .await;
            if self.config.policy.ready(last, round) {
                break;
            }
        }
        // Cells are immutable: the prefix verified now stays verified (after a freeze given
        // up, only what was copied since is verified).
        {
            let _bulk = self.pools.quiet.read().await;
            self.verify(src, tgt, verified.min(hw), hw).await?;
        }
        self.session.set_verified(self.move_id, shard, hw).await?;
        Ok(hw)
    }

    /// Builds what the import deferred: the target table's unique constraint and secondary
    /// indexes (bulk work, like a copy chunk). Idempotent; a no-op after a resume that finds
    /// them built.
    pub(crate) async fn build_indexes(&self, tgt: &Backend) -> Result<(), MoveError> {
        let started = Instant::now();
        let built = {
            let _bulk = self.pools.quiet.read().await;
            transfer::build_indexes(tgt, self.shard.shard).await?
        };
        if built > 0 {
            tracing::info!(
                shard = self.shard.shard,
                target = tgt.name(),
                built,
                ms = started.elapsed().as_millis() as u64,
                "built the target's indexes"
            );
        }
        Ok(())
    }

    pub(crate) async fn verify(
        &self,
        src: &Backend,
        tgt: &Backend,
        after: i64,
        upto: i64,
    ) -> Result<(), MoveError> {
        let shard = self.shard.shard;
        let (a, b) = futures::future::try_join(
            transfer::checksum(src, shard, after, upto),
            transfer::checksum(tgt, shard, after, upto),
        )
        .await?;
        if a != b {
            return Err(MoveError::Verify(format!(
                "shard {shard}, added_id in ({after}, {upto}]: source has {} rows (checksum {}), target {} rows (checksum {}); `mezzanine verify --shards {shard}` lists the differences",
                a.rows, a.sum, b.rows, b.sum
            )));
        }
        Ok(())
    }
}

/// What a state change that changed nothing expected and found, in words.
fn unchanged(
    shard: u32,
    whom: &str,
    from: &[ShardState],
    to: ShardState,
    epoch: Option<i64>,
    found: Option<(ShardState, i64)>,
) -> String {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let to = match epoch {
        Some(e) => format!("{to} with epoch {e}"),
        None => to.to_string(),
    };
    let found = match found {
        None => "no state row".to_owned(),
        Some((s, e)) if from.contains(&s.as_str()) && to.starts_with("active") => format!(
            "{s} (epoch {e}) with a table that lacks the unique constraint on (row_key, column_name, ref_key)"
        ),
        Some((s, e)) => format!("{s} (epoch {e})"),
    };
    format!(
        "shard {shard}: expected the {whom} to go from {} to {to}, found {found}; nothing changed",
        from.join(" or ")
    )
}

/// Drops the retired source of a switched shard (after `complete` or the retention period)
/// and records it `cleaned`. The source is dropped only if it is still a retired copy: if the
/// shard came back to it (a revert) or is moving to it again, its copy is kept.
pub async fn clean(
    config: &MoverConfig,
    catalog: &Catalog,
    pools: &Pools,
    session: &LeaderSession,
    move_id: i64,
    s: &MoveShard,
) -> Result<(), MoveError> {
    config
        .failpoints
        .pause("cleanup", &AtomicBool::new(false))
        .await;
    let src = pools.get(catalog, &s.from).await?;
    let owner = session.owner(s.shard).await?;
    // Only a retired copy: the shard may have come back here since (a later move importing
    // into it, or serving from it), and that copy is not this move's source any more.
    if owner != s.from && transfer::drop_retired(&src, s.shard, session.term()).await? {
        tracing::info!(move_id, shard = s.shard, backend = %s.from, "retired source dropped");
    }
    if !session
        .set_state(
            move_id,
            s.shard,
            ShardMoveState::Switched,
            ShardMoveState::Cleaned,
            None,
        )
        .await?
    {
        return Err(MoveError::Protocol(format!(
            "shard {} of move {move_id}: expected switched in the catalog, found another state; cleaned not recorded",
            s.shard
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_that_changed_nothing_says_what_was_expected_and_found() {
        use ShardState as S;
        assert_eq!(
            unchanged(1, "source db1", &[S::Frozen], S::Retired, None, Some((S::Active, 2))),
            "shard 1: expected the source db1 to go from frozen to retired, found active (epoch 2); nothing changed"
        );
        assert_eq!(
            unchanged(1, "target db3", &[S::Importing], S::Active, Some(3), Some((S::Importing, 1))),
            "shard 1: expected the target db3 to go from importing to active with epoch 3, found importing (epoch 1) with a table that lacks the unique constraint on (row_key, column_name, ref_key); nothing changed"
        );
        assert_eq!(
            unchanged(1, "source db1", &[S::Frozen, S::Retired], S::Active, None, None),
            "shard 1: expected the source db1 to go from frozen or retired to active, found no state row; nothing changed"
        );
    }
}
