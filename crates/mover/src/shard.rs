//! One shard's move, step by step. Each step is idempotent and starts from what the catalog
//! and the two backends say, so a leader that takes over resumes wherever the last one died.
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
//! The cutover, its bounds (`MOVE_MAX_PAUSE` on the tail, the freeze's hang bound on the rest)
//! and its undo are in [`crate::cutover`]: a cutover that fails before the switch gives the
//! shard back to its source at once, whatever state the target is in or whether it answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mezzanine_catalog::{Catalog, LeaderSession, MoveShard};
use mezzanine_core::moves::{
    after_too_long_tail, chunk_rows, paced_rate, paces, transition, undo_for, CatchUpRound,
    MoveEvent, ShardMoveState, TooLongTail, CALIBRATION_ROWS, PACED_CHUNK_ROWS,
};
use mezzanine_storage::transfer::{self, ShardState};
use mezzanine_storage::{Backend, StorageError};

use crate::cutover::CutoverEnd;
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
    /// Set once this task sent the target's activation: an undo must then reckon with an
    /// active target (`crate::cutover`).
    pub activation_sent: AtomicBool,
    /// Set while this task's cutover may hold the source frozen (from the freeze statement
    /// to a thaw): errors are then not retried but undone at once.
    pub freezing: AtomicBool,
}

fn retryable(e: &MoveError) -> bool {
    matches!(
        e,
        MoveError::Storage(StorageError::Unavailable { .. })
            | MoveError::Storage(StorageError::Database { .. })
    )
}

impl ShardTask {
    /// Drives the shard until it is switched, aborted or failed. Transient errors are retried
    /// a few times; then the shard's move fails and what it did is undone (I6).
    pub async fn run(self) {
        let mut state = self.shard.state;
        let mut verified = self.shard.verified;
        let mut attempt = 0u32;
        let mut freezes = 0u32;
        loop {
            match self.drive(&mut state, &mut verified, &mut freezes).await {
                Ok(()) => return,
                Err(MoveError::Aborted) => {
                    if let Err(u) = self.undo(state, ShardMoveState::Aborted, None).await {
                        tracing::error!(shard = self.shard.shard, error = %u, "abort's undo failed; will retry on the next pass");
                    }
                    return;
                }
                Err(MoveError::Catalog(e)) if !self.session.is_alive() => {
                    tracing::warn!(shard = self.shard.shard, error = %e, "mover session lost; the next leader resumes");
                    return;
                }
                // Like a lost session: the newer leader owns the shard; nothing to retry or undo.
                Err(MoveError::Superseded(e)) => {
                    metrics::counter!("mezzanine_move_shards_superseded_total").increment(1);
                    tracing::warn!(move_id = self.move_id, shard = self.shard.shard, state = %state, error = %e, "a newer leader took the shard over; this leader stops its task");
                    return;
                }
                // Not once a cutover froze the source (or resumed one that may have): a retry
                // would keep client writes waiting; the undo gives the shard back at once, and
                // the move can be retried.
                Err(e)
                    if retryable(&e)
                        && attempt + 1 < self.config.attempts
                        && !self.may_be_frozen(state) =>
                {
                    attempt += 1;
                    tracing::warn!(move_id = self.move_id, shard = self.shard.shard, state = %state, attempt, error = %e, "move step failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1 << attempt.min(4))).await;
                }
                Err(e) => {
                    tracing::error!(move_id = self.move_id, shard = self.shard.shard, state = %state, error = %e, "shard move failed; undoing");
                    metrics::counter!("mezzanine_move_shards_failed_total").increment(1);
                    // An operator's abort met meanwhile is what the shard ends as.
                    let end = if self.aborted() {
                        ShardMoveState::Aborted
                    } else {
                        ShardMoveState::Failed
                    };
                    if let Err(u) = self.undo(state, end, Some(&e.to_string())).await {
                        tracing::error!(shard = self.shard.shard, error = %u, "undo failed; will retry on the next pass");
                    }
                    return;
                }
            }
        }
    }

    async fn drive(
        &self,
        state: &mut ShardMoveState,
        verified: &mut i64,
        freezes: &mut u32,
    ) -> Result<(), MoveError> {
        let src = self.pools.get(&self.catalog, &self.shard.from).await?;
        let tgt = self.pools.get(&self.catalog, &self.shard.to).await?;
        let shard = self.shard.shard;
        // From here no older leader can change the shard on either side.
        let term = self.session.term();
        transfer::claim(&src, shard, term).await?;
        transfer::claim(&tgt, shard, term).await?;
        // Set when this very call caught up: the target is `importing` and holds exactly the
        // rows up to this high-water mark, so the cutover can skip re-reading them.
        let mut fresh: Option<i64> = None;
        // Set when this very call finished the bulk copy: the target's high-water mark and
        // row count, so that catching up need not scan the target again to learn them.
        let mut bulk: Option<(i64, i64)> = None;
        loop {
            if self.aborted() && state.in_flight() {
                return Err(MoveError::Aborted); // `run` undoes
            }
            *state = match *state {
                ShardMoveState::Pending => {
                    transfer::prepare_import(&tgt, self.config.num_shards, shard, term).await?;
                    self.config
                        .failpoints
                        .pause("after_prepare", &self.abort)
                        .await;
                    if self.aborted() {
                        return Err(MoveError::Aborted);
                    }
                    self.step(*state, MoveEvent::Start).await?
                }
                ShardMoveState::Copying => {
                    bulk = Some(self.copy_bulk(&src, &tgt).await?);
                    self.step(*state, MoveEvent::Copied).await?
                }
                ShardMoveState::CatchingUp => {
                    let hw = self.catch_up(&src, &tgt, bulk.take(), *verified).await?;
                    *verified = hw;
                    fresh = Some(hw);
                    self.step(*state, MoveEvent::CaughtUp).await?
                }
                ShardMoveState::Cutover => {
                    match self.cutover(&src, &tgt, *verified, fresh.take()).await? {
                        CutoverEnd::Switched => ShardMoveState::Switched,
                        CutoverEnd::Thawed => {
                            *freezes += 1;
                            let max = self.config.policy.max_freezes;
                            if after_too_long_tail(*freezes, max) == TooLongTail::Fail {
                                return Err(MoveError::TailTooLong(format!(
                                    "the tail to copy inside the freeze did not fit MOVE_MAX_PAUSE ({:?}) in {max} freezes: \
                                     writes to the shard outrun the copy (the source stayed active)",
                                    self.config.policy.max_pause
                                )));
                            }
                            self.step(*state, MoveEvent::Thaw).await?
                        }
                    }
                }
                _ => return Ok(()),
            };
        }
    }

    /// Whether the source may be frozen by this move in `state`: a cutover this task froze,
    /// or one it resumed.
    fn may_be_frozen(&self, state: ShardMoveState) -> bool {
        state == ShardMoveState::Cutover
            && (self.freezing.load(Ordering::Acquire)
                || self.shard.state == ShardMoveState::Cutover)
    }

    pub(crate) fn aborted(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }

    /// Records a transition in the catalog (only from the state this task believes).
    async fn step(
        &self,
        from: ShardMoveState,
        event: MoveEvent,
    ) -> Result<ShardMoveState, MoveError> {
        self.step_with(from, event, None).await
    }

    /// [`ShardTask::step`] with the error message of a failure. A catalog that does not hold
    /// the shard in `from` is a protocol error: nothing was recorded.
    pub(crate) async fn step_with(
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
    /// from one of `from` (with `epoch`, when given). A change that changed nothing is a
    /// protocol error saying what was expected and what was found: the cutover's order of
    /// state changes is what keeps invariant I2, so none of them may be skipped silently.
    pub(crate) async fn change_state(
        &self,
        backend: &Backend,
        role: &str,
        from: &[ShardState],
        to: ShardState,
        epoch: Option<i64>,
    ) -> Result<(), MoveError> {
        let shard = self.shard.shard;
        if transfer::set_state(backend, shard, from, to, epoch, self.session.term()).await? {
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
    /// copy just ended in this call (read from the target otherwise, after a resume).
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

    /// Undoes what a shard's move did before the switch and records `end` (`aborted` or
    /// `failed`). A cutover's undo is `crate::cutover`'s (the source made `active` again at
    /// once). Before the cutover the source was never frozen: the target's copy is dropped, or,
    /// when the target cannot be reached, recorded to be fenced (dropped) once it answers; it
    /// stays `importing` meanwhile, which no client reads. A shard that the catalog's map gives
    /// to another backend than the move's source (changed behind the mover's back) is
    /// recorded `failed` with nothing undone: the backends are left as they are for an
    /// operator.
    async fn undo(
        &self,
        state: ShardMoveState,
        end: ShardMoveState,
        error: Option<&str>,
    ) -> Result<(), MoveError> {
        let shard = self.shard.shard;
        if state == ShardMoveState::Cutover {
            return self.undo_cutover(end, error).await;
        }
        if undo_for(state).is_none() {
            return Ok(());
        }
        let owner = self.session.owner(shard).await?;
        if owner != self.shard.from {
            return self.leave_alone(state, &owner, error).await;
        }
        match self.clean_target(state).await {
            Ok(()) => {}
            // Unreachable: its copy (importing, never served) is dropped once it answers.
            Err(e) if retryable(&e) => {
                tracing::warn!(shard, target = %self.shard.to, error = %e, "target copy not cleaned; it stays importing (never served) and is dropped once the target answers");
                self.session.set_fence(self.move_id, shard, true).await?;
            }
            Err(e) => {
                tracing::warn!(shard, target = %self.shard.to, error = %e, "target copy not cleaned; left for an operator");
            }
        }
        let event = if end == ShardMoveState::Aborted {
            MoveEvent::Abort
        } else {
            MoveEvent::Fail
        };
        self.step_with(state, event, error).await?;
        Ok(())
    }

    /// Records the shard `failed` with nothing undone: the catalog's map gives it to `owner`,
    /// not to the move's source.
    pub(crate) async fn leave_alone(
        &self,
        state: ShardMoveState,
        owner: &str,
        error: Option<&str>,
    ) -> Result<(), MoveError> {
        let shard = self.shard.shard;
        let why = format!(
            "the catalog gives shard {shard} to {owner:?}, not to the move's source {:?}: \
             nothing undone, the backends are left as they are (`mezzanine verify --shards {shard}`)",
            self.shard.from
        );
        let error = error.map_or_else(|| why.clone(), |e| format!("{e}; {why}"));
        self.step_with(state, MoveEvent::Fail, Some(&error)).await?;
        Err(MoveError::Protocol(why))
    }

    /// Drops the target's copy of a shard whose move stopped in `state` (before the
    /// cutover): nothing to do when the target has no state row for it; an `importing` copy
    /// is dropped (a pending shard's too: its target may have been prepared before the move
    /// recorded `copying`); a `retired` one is dropped once this move prepared it (from
    /// `copying` on), but kept while the shard is `pending` (it is then another move's old
    /// source, kept for a revert: a prepare would have made it `importing`); a target found
    /// serving the shard is left alone (an error). The drop itself refuses, in its
    /// transaction, a copy that is `active` or `frozen` by then.
    async fn clean_target(&self, state: ShardMoveState) -> Result<(), MoveError> {
        let shard = self.shard.shard;
        let tgt = self.pools.get(&self.catalog, &self.shard.to).await?;
        match transfer::shard_state(&tgt, shard).await?.map(|(s, _)| s) {
            None => return Ok(()),
            Some(s @ (ShardState::Active | ShardState::Frozen)) => {
                return Err(MoveError::Protocol(format!(
                    "shard {shard}: the target {} is {s} although the move is {state}: its copy is not dropped",
                    self.shard.to
                )))
            }
            Some(ShardState::Retired) if state == ShardMoveState::Pending => return Ok(()),
            Some(ShardState::Importing | ShardState::Retired) => {}
        }
        transfer::drop_shard(&tgt, shard, self.session.term()).await?;
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
