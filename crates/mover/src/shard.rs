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
//! 6. the target is set `active` with the shard's next epoch;
//! 7. the catalog map is switched (with the move's shard state, one statement) and every node
//!    is notified; requests held meanwhile complete at the target.
//!
//! DESIGN §5 lists "activate target, switch the map, retire the source"; retiring before
//! activating closes the window in which a stale node could read the frozen source while the
//! target already takes writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mezzanine_catalog::{Catalog, CatalogError, LeaderSession, MoveShard};
use mezzanine_core::moves::{
    chunk_rows, paced_rate, paces, transition, undo_for, MoveEvent, ShardMoveState,
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
        loop {
            match self.drive(&mut state, &mut verified).await {
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
                Err(e) if retryable(&e) && attempt + 1 < self.config.attempts => {
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

    async fn drive(&self, state: &mut ShardMoveState, verified: &mut i64) -> Result<(), MoveError> {
        let src = self.pools.get(&self.catalog, &self.shard.from).await?;
        let tgt = self.pools.get(&self.catalog, &self.shard.to).await?;
        let shard = self.shard.shard;
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
                    transfer::prepare_import(&tgt, self.config.num_shards, shard).await?;
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
                    let hw = self.catch_up(&src, &tgt, bulk.take()).await?;
                    *verified = hw;
                    fresh = Some(hw);
                    self.step(*state, MoveEvent::CaughtUp).await?
                }
                ShardMoveState::Cutover => {
                    self.cutover(&src, &tgt, *verified, fresh.take()).await?;
                    ShardMoveState::Switched
                }
                _ => return Ok(()),
            };
        }
    }

    fn aborted(&self) -> bool {
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
    async fn step_with(
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
    async fn change_state(
        &self,
        backend: &Backend,
        role: &str,
        from: &[ShardState],
        to: ShardState,
        epoch: Option<i64>,
    ) -> Result<(), MoveError> {
        let shard = self.shard.shard;
        if transfer::set_state(backend, shard, from, to, epoch).await? {
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
            let r = transfer::copy_rows_paced(src, tgt, shard, after, Some(chunk), bytes_per_sec)
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
            loop {
                let (r, _) = self.copy_chunk(src, tgt, hw, chunk, None, None).await?;
                hw = r.max_added_id; // `after` itself when nothing was copied
                lag += r.rows;
                if (r.rows as i64) < chunk {
                    break;
                }
            }
            copied += lag as i64;
            let total = copied.max(self.shard.rows_total);
            self.session
                .progress(self.move_id, shard, hw, copied, total, Some(lag as i64))
                .await?;
            self.config
                .failpoints
                .pause("catching_up", &self.abort)
                .await;
            if self.config.policy.ready(lag, round) {
                break;
            }
        }
        // Cells are immutable: the prefix verified now stays verified.
        {
            let _bulk = self.pools.quiet.read().await;
            self.verify(src, tgt, 0, hw).await?;
        }
        self.session.set_verified(self.move_id, shard, hw).await?;
        Ok(hw)
    }

    /// Builds what the import deferred: the target table's unique constraint and secondary
    /// indexes (bulk work, like a copy chunk). Idempotent; a no-op after a resume that finds
    /// them built.
    async fn build_indexes(&self, tgt: &Backend) -> Result<(), MoveError> {
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

    async fn verify(
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

    /// The fenced cutover (see the module documentation for the order and why).
    async fn cutover(
        &self,
        src: &Backend,
        tgt: &Backend,
        verified: i64,
        fresh: Option<i64>,
    ) -> Result<(), MoveError> {
        let shard = self.shard.shard;
        // Read before the freeze: nothing in the pause that need not be there. The target
        // must have its unique constraint before it is activated (catching up built it; this
        // checks, and builds it after a resume that skipped catching up).
        self.build_indexes(tgt).await?;
        let epoch = self.session.next_epoch(shard).await?;
        // No bulk copy of this leader runs during the pause (see `Pools::quiet`).
        let _quiet = self.pools.quiet.write().await;
        self.session.mark_frozen(self.move_id, shard).await?;
        let mut steps: Vec<(&'static str, f64)> = Vec::with_capacity(8);
        let mut lap = Instant::now();
        let mut mark = |name: &'static str| {
            steps.push((name, lap.elapsed().as_secs_f64() * 1000.0));
            lap = Instant::now();
        };
        // 1. Freeze (one statement; a source found neither active nor frozen is read again to
        // tell a resumed cutover, retired at step 5 already, from a protocol error).
        if !transfer::set_state(src, shard, &[ShardState::Active], ShardState::Frozen, None).await?
        {
            match transfer::shard_state(src, shard).await?.map(|(s, _)| s) {
                Some(ShardState::Retired) => {}
                other => {
                    return Err(MoveError::Protocol(format!(
                        "shard {shard}: the source {:?} is {} instead of active",
                        self.shard.from,
                        other.map_or("absent", |s| s.as_str())
                    )))
                }
            }
        }
        mark("freeze");
        self.config
            .failpoints
            .pause("after_freeze", &self.abort)
            .await;
        if self.aborted() {
            return Err(MoveError::Aborted);
        }
        // 2. The tail: nothing is written to the source any more. (A target that is active
        // already was activated by a leader that died before the switch: nothing to copy.)
        let max_s = match fresh {
            // Straight from catching up: the target holds exactly up to `hw`; the copy of
            // everything above it ends at the source's highest added_id.
            Some(hw) => transfer::copy_tail(src, tgt, shard, hw).await?.max_added_id,
            None => {
                let target_state = transfer::shard_state(tgt, shard).await?.map(|(s, _)| s);
                if target_state != Some(ShardState::Active) {
                    let hw = transfer::max_added_id(tgt, shard).await?;
                    transfer::copy_tail(src, tgt, shard, hw).await?;
                }
                // 3. The highest added_id must be the same on both sides.
                let (max_s, max_t) = futures::future::try_join(
                    transfer::max_added_id(src, shard),
                    transfer::max_added_id(tgt, shard),
                )
                .await?;
                if max_s != max_t {
                    return Err(MoveError::Verify(format!(
                        "shard {shard}: highest added_id is {max_s} on the source but {max_t} on the target"
                    )));
                }
                max_s
            }
        };
        mark("tail");
        // 3. Verify the tail (count and checksum over every column on both sides).
        self.verify(src, tgt, verified.min(max_s), max_s).await?;
        mark("verify");
        // 4. New writes on the target continue the sequence (I4), and 5. the source is
        // retired: no client read or write is served there from now on. Both must precede
        // the activation; they are independent, so they run together.
        futures::future::try_join(
            async { Ok(transfer::advance_sequence(tgt, shard, max_s).await?) },
            self.change_state(
                src,
                "source",
                &[ShardState::Frozen],
                ShardState::Retired,
                None,
            ),
        )
        .await?;
        mark("sequence+retire");
        // 6. Activate the target with the shard's next epoch.
        self.change_state(
            tgt,
            "target",
            &[ShardState::Importing],
            ShardState::Active,
            Some(epoch),
        )
        .await?;
        mark("activate");
        // 7. Switch the map and notify every node (refused, nothing changed, when the map
        // names neither the source nor the target: it was changed behind the mover's back).
        let (version, pause_ms) = self
            .session
            .switch(self.move_id, shard, &self.shard.from, &self.shard.to)
            .await
            .map_err(|e| match e {
                CatalogError::Conflict(m) => MoveError::Protocol(m),
                e => MoveError::Catalog(e),
            })?;
        mark("switch");
        metrics::counter!("mezzanine_move_shards_switched_total").increment(1);
        if let Some(ms) = pause_ms {
            metrics::histogram!("mezzanine_move_cutover_pause_seconds").record(ms / 1000.0);
        }
        let steps: Vec<String> = steps.iter().map(|(n, ms)| format!("{n}={ms:.1}")).collect();
        tracing::info!(move_id = self.move_id, shard, from = %self.shard.from, to = %self.shard.to, pause_ms, map_version = version, steps_ms = %steps.join(" "), "shard switched");
        self.config
            .failpoints
            .pause("after_switch", &self.abort)
            .await;
        Ok(())
    }

    /// Undoes what a shard's move did before the switch and records `end` (`aborted` or
    /// `failed`): the target stops being active and its copy is dropped (best effort: a target
    /// that is down keeps an `importing` copy, which no client reads and a retry reuses), then
    /// the source is made active again. A shard that the catalog's map gives to another
    /// backend than the move's source (changed behind the mover's back) is recorded `failed`
    /// with nothing undone: the backends are left as they are for an operator.
    async fn undo(
        &self,
        state: ShardMoveState,
        end: ShardMoveState,
        error: Option<&str>,
    ) -> Result<(), MoveError> {
        let shard = self.shard.shard;
        let Some(u) = undo_for(state) else {
            return Ok(());
        };
        let owner = self.session.owner(shard).await?;
        if owner != self.shard.from {
            let why = format!(
                "the catalog gives shard {shard} to {owner:?}, not to the move's source {:?}: \
                 nothing undone, the backends are left as they are (`mezzanine verify --shards {shard}`)",
                self.shard.from
            );
            let error = error.map_or_else(|| why.clone(), |e| format!("{e}; {why}"));
            self.step_with(state, MoveEvent::Fail, Some(&error)).await?;
            return Err(MoveError::Protocol(why));
        }
        if u.clean_target {
            if let Err(e) = self.clean_target(state).await {
                if u.reactivate_source && !self.target_unserved().await {
                    // The target might still be active: never make the source active too.
                    return Err(e);
                }
                tracing::warn!(shard, target = %self.shard.to, error = %e, "target copy not cleaned; it stays importing (never served) and a retry reuses it");
            }
        }
        if u.reactivate_source {
            let src = self.pools.get(&self.catalog, &self.shard.from).await?;
            self.change_state(
                &src,
                "source",
                &[ShardState::Frozen, ShardState::Retired],
                ShardState::Active,
                None,
            )
            .await?;
        }
        let event = if end == ShardMoveState::Aborted {
            MoveEvent::Abort
        } else {
            MoveEvent::Fail
        };
        self.step_with(state, event, error).await?;
        Ok(())
    }

    /// Drops the target's copy of a shard whose move stopped in `state`, whatever the phase:
    /// nothing to do when the target has no state row for it; an `importing` copy is dropped
    /// (a pending shard's too: its target may have been prepared before the move recorded
    /// `copying`); a `retired` one is dropped once this move prepared it (from `copying` on),
    /// but kept while the shard is `pending` (it is then another move's old source, kept for a
    /// revert: a prepare would have made it `importing`); an `active` target is first made
    /// `importing` again only if the cutover may have activated it (the map still names the
    /// source, so no client is served there); a target found serving the shard otherwise is
    /// left alone (an error). The drop itself refuses, in its transaction, a copy that is
    /// `active` or `frozen` by then.
    async fn clean_target(&self, state: ShardMoveState) -> Result<(), MoveError> {
        let shard = self.shard.shard;
        let tgt = self.pools.get(&self.catalog, &self.shard.to).await?;
        match transfer::shard_state(&tgt, shard).await?.map(|(s, _)| s) {
            None => return Ok(()),
            Some(ShardState::Active) if state == ShardMoveState::Cutover => {
                self.change_state(
                    &tgt,
                    "target",
                    &[ShardState::Active],
                    ShardState::Importing,
                    None,
                )
                .await?;
            }
            Some(s @ (ShardState::Active | ShardState::Frozen)) => {
                return Err(MoveError::Protocol(format!(
                    "shard {shard}: the target {} is {s} although the move is {state}: its copy is not dropped",
                    self.shard.to
                )))
            }
            Some(ShardState::Retired) if state == ShardMoveState::Pending => return Ok(()),
            Some(ShardState::Importing | ShardState::Retired) => {}
        }
        transfer::drop_shard(&tgt, shard).await?;
        Ok(())
    }

    /// Whether the target is known not to serve the shard (no state row, or `importing` or
    /// `retired`); `false` when it cannot be asked.
    async fn target_unserved(&self) -> bool {
        let Ok(tgt) = self.pools.get(&self.catalog, &self.shard.to).await else {
            return false;
        };
        matches!(
            transfer::shard_state(&tgt, self.shard.shard).await,
            Ok(None | Some((ShardState::Importing | ShardState::Retired, _)))
        )
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
    if owner != s.from && transfer::drop_retired(&src, s.shard).await? {
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
