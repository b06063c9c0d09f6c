//! The fenced cutover of one shard, its undo, and the fencing of target copies left behind
//! (DESIGN §5, I2-I6). What to do is decided by `mezzanine_core::moves::cutover`; this module
//! carries it out.
//!
//! Bounds: the tail copy inside the freeze must finish within `MOVE_MAX_PAUSE` (else the
//! freeze is given up: the source is `active` again and catching up resumes; after
//! `CatchUpPolicy::max_freezes` such freezes the shard's move fails); the other steps inside
//! the freeze share the freeze's hang bound ([`crate::MoverConfig::freeze_bound`]). A cutover
//! that fails before the switch gives the shard back to its source at once: the target is
//! asked for its state only when it may be `active`, within [`ASK_TARGET`], and a target that
//! does not answer is fenced by a later pass ([`fence_targets`]).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mezzanine_catalog::{Catalog, CatalogError, LeaderSession};
use mezzanine_core::moves::{
    ask_target, undo_cutover, CutoverReach, CutoverUndo, MoveEvent, ShardMoveState, TargetSeen,
};
use mezzanine_core::Term;
use mezzanine_storage::transfer::{self, ShardState};
use mezzanine_storage::Backend;

use crate::shard::ShardTask;
use crate::{MoveError, Pools};

/// The longest an undo (or a fence) waits for the target: beyond, the target counts as
/// unreachable and its copy is fenced later.
pub const ASK_TARGET: Duration = Duration::from_secs(2);

/// How a cutover ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutoverEnd {
    /// The map names the target.
    Switched,
    /// The tail did not fit `MOVE_MAX_PAUSE`: the source is `active` again.
    Thawed,
}

/// What is left of the freeze's hang bound: each step inside the freeze runs within it (the
/// failpoints' pauses, between steps, do not count).
struct FreezeClock {
    bound: Duration,
    left: Duration,
}

impl FreezeClock {
    fn new(bound: Duration) -> FreezeClock {
        FreezeClock { bound, left: bound }
    }

    async fn run<T>(
        &mut self,
        step: &str,
        fut: impl Future<Output = Result<T, MoveError>>,
    ) -> Result<T, MoveError> {
        let started = Instant::now();
        let r = tokio::time::timeout(self.left, fut).await;
        self.left = self.left.saturating_sub(started.elapsed());
        r.unwrap_or_else(|_| Err(self.stalled(step)))
    }

    fn stalled(&self, step: &str) -> MoveError {
        MoveError::Stalled(format!(
            "the cutover's {step} did not finish within the freeze's bound of {:?} (a backend down or not answering)",
            self.bound
        ))
    }
}

impl ShardTask {
    /// How far the cutover may have got: the target may be `active` once this task sent its
    /// activation, or when this task resumed a cutover another leader started.
    pub(crate) fn reach(&self) -> CutoverReach {
        if self.shard.state == ShardMoveState::Cutover
            || self.activation_sent.load(Ordering::Acquire)
        {
            CutoverReach::MaybeActivated
        } else {
            CutoverReach::NotActivated
        }
    }

    /// Pauses at failpoint `name`; an abort met there stops the cutover (and `run` undoes).
    async fn point(&self, name: &str) -> Result<(), MoveError> {
        self.config.failpoints.pause(name, &self.abort).await;
        if self.aborted() {
            return Err(MoveError::Aborted);
        }
        Ok(())
    }

    /// The fenced cutover (see [`crate::shard`] for the order and why).
    pub(crate) async fn cutover(
        &self,
        src: &Backend,
        tgt: &Backend,
        verified: i64,
        fresh: Option<i64>,
    ) -> Result<CutoverEnd, MoveError> {
        let shard = self.shard.shard;
        // Read before the freeze: nothing in the pause that need not be there. The target
        // must have its unique constraint before it is activated (catching up built it; this
        // checks, and builds it after a resume that skipped catching up).
        self.build_indexes(tgt).await?;
        let epoch = self.session.next_epoch(shard).await?;
        // No bulk copy of this leader runs during the pause (see `Pools::quiet`).
        let _quiet = self.pools.quiet.write().await;
        self.session.mark_frozen(self.move_id, shard).await?;
        let mut clock = FreezeClock::new(self.config.freeze_bound);
        let mut steps: Vec<(&'static str, f64)> = Vec::with_capacity(8);
        let mut lap = Instant::now();
        let mut mark = |name: &'static str| {
            steps.push((name, lap.elapsed().as_secs_f64() * 1000.0));
            lap = Instant::now();
        };
        // 1. Freeze (one statement; a source found neither active nor frozen is read again to
        // tell a resumed cutover, retired at step 5 already, from a protocol error).
        self.freezing.store(true, Ordering::Release);
        let retired = clock.run("freeze", self.freeze(src)).await?;
        mark("freeze");
        self.point("after_freeze").await?;
        // 2. The tail, within `MOVE_MAX_PAUSE`: nothing is written to the source any more.
        let max_pause = self.config.policy.max_pause;
        // The deadline cancels a copy still running at `max_pause`; a copy that finished but
        // took longer (the timer's granularity) is over the bound all the same.
        let tail = clock.run("tail copy", async {
            let started = Instant::now();
            match tokio::time::timeout(max_pause, self.tail(src, tgt, fresh)).await {
                Ok(r) => r.map(|m| (started.elapsed() <= max_pause).then_some(m)),
                Err(_) => Ok(None),
            }
        });
        let max_s = match tail.await? {
            Some(m) => m,
            // Too long: give the freeze up, unless the source was retired already (a resumed
            // cutover that may have activated the target: that one is undone instead).
            None if !retired => {
                self.thaw(src, max_pause).await?;
                return Ok(CutoverEnd::Thawed);
            }
            None => return Err(clock.stalled("tail copy")),
        };
        mark("tail");
        self.point("after_tail").await?;
        // 3. Verify the tail (count and checksum over every column on both sides).
        clock
            .run(
                "verification",
                self.verify(src, tgt, verified.min(max_s), max_s),
            )
            .await?;
        mark("verify");
        self.point("after_verify").await?;
        // 4. New writes on the target continue the sequence (I4), and 5. the source is
        // retired: no client read or write is served there from now on. Both must precede
        // the activation; they are independent, so they run together.
        let seq_retire = futures::future::try_join(
            async {
                let term = self.session.term();
                Ok(transfer::advance_sequence(tgt, shard, max_s, term).await?)
            },
            self.change_state(
                src,
                "source",
                &[ShardState::Frozen],
                ShardState::Retired,
                None,
            ),
        );
        clock.run("sequence and retirement", seq_retire).await?;
        mark("sequence+retire");
        self.point("after_retire").await?;
        // 6. Activate the target with the shard's next epoch. From the moment it is sent, an
        // undo must reckon with an active target.
        self.activation_sent.store(true, Ordering::Release);
        let activate = self.change_state(
            tgt,
            "target",
            &[ShardState::Importing],
            ShardState::Active,
            Some(epoch),
        );
        clock.run("activation", activate).await?;
        mark("activate");
        self.point("after_activate").await?;
        // The target still answers, and serves the shard: switching the map to a target that
        // died since its activation would leave the shard unserved, and undoing instead gives
        // it back to the source.
        let confirm = async {
            match transfer::shard_state(tgt, shard).await? {
                Some((ShardState::Active, e)) if e == epoch => Ok(()),
                other => Err(MoveError::Protocol(format!(
                    "shard {shard}: the target {} is {} after its activation; the map is not switched",
                    self.shard.to,
                    other.map_or_else(|| "absent".to_owned(), |(s, e)| format!("{s} (epoch {e})"))
                ))),
            }
        };
        clock.run("confirmation of the activation", confirm).await?;
        mark("confirm");
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
        Ok(CutoverEnd::Switched)
    }

    /// Freezes the source; returns whether it was `retired` already (a resumed cutover).
    async fn freeze(&self, src: &Backend) -> Result<bool, MoveError> {
        let shard = self.shard.shard;
        let (from, term) = ([ShardState::Active], self.session.term());
        if transfer::set_state(src, shard, &from, ShardState::Frozen, None, term).await? {
            return Ok(false);
        }
        match transfer::shard_state(src, shard).await?.map(|(s, _)| s) {
            Some(ShardState::Retired) => Ok(true),
            other => Err(MoveError::Protocol(format!(
                "shard {shard}: the source {:?} is {} instead of active",
                self.shard.from,
                other.map_or("absent", |s| s.as_str())
            ))),
        }
    }

    /// Copies the tail and returns the highest `added_id` (the same on both sides).
    async fn tail(
        &self,
        src: &Backend,
        tgt: &Backend,
        fresh: Option<i64>,
    ) -> Result<i64, MoveError> {
        let shard = self.shard.shard;
        match fresh {
            // Straight from catching up: the target holds exactly up to `hw`; the copy of
            // everything above it ends at the source's highest added_id.
            Some(hw) => Ok(
                transfer::copy_tail(src, tgt, shard, hw, self.session.term())
                    .await?
                    .max_added_id,
            ),
            None => {
                // A target that is active already was activated by a leader that died before
                // the switch: nothing to copy.
                let target_state = transfer::shard_state(tgt, shard).await?.map(|(s, _)| s);
                if target_state != Some(ShardState::Active) {
                    let hw = transfer::max_added_id(tgt, shard).await?;
                    transfer::copy_tail(src, tgt, shard, hw, self.session.term()).await?;
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
                Ok(max_s)
            }
        }
    }

    /// Gives a freeze up: the source is `active` again (only from `frozen`: the target was
    /// not activated).
    async fn thaw(&self, src: &Backend, max_pause: Duration) -> Result<(), MoveError> {
        let shard = self.shard.shard;
        self.change_state(
            src,
            "source",
            &[ShardState::Frozen],
            ShardState::Active,
            None,
        )
        .await?;
        self.freezing.store(false, Ordering::Release);
        self.session.thawed(self.move_id, shard).await?;
        metrics::counter!("mezzanine_move_freezes_given_up_total").increment(1);
        tracing::warn!(move_id = self.move_id, shard, ?max_pause, "the tail did not fit MOVE_MAX_PAUSE: freeze given up, the source is active again; catching up resumes");
        Ok(())
    }

    /// Undoes a cutover that stopped before the switch and records `end` (`aborted` or
    /// `failed`), as `undo_cutover` decides: the source is made `active` again without
    /// waiting for a target that cannot be active, or does not answer within [`ASK_TARGET`];
    /// such a target's copy is fenced by a later pass. Any step on the target that fails
    /// leaves its copy to that fence too.
    pub(crate) async fn undo_cutover(
        &self,
        end: ShardMoveState,
        error: Option<&str>,
    ) -> Result<(), MoveError> {
        let shard = self.shard.shard;
        let owner = self.session.owner(shard).await?;
        let names_source = owner == self.shard.from;
        let reach = self.reach();
        let seen = if names_source && ask_target(reach) {
            self.see_target().await
        } else {
            TargetSeen::NotAsked
        };
        let (demote, drop, mut fence) = match undo_cutover(names_source, reach, seen) {
            CutoverUndo::LeaveAlone => {
                return self
                    .leave_alone(ShardMoveState::Cutover, &owner, error)
                    .await
            }
            CutoverUndo::Undo {
                demote_target,
                drop_target,
                fence_later,
                ..
            } => (demote_target, drop_target, fence_later),
        };
        if demote || drop {
            let tgt = self.pools.get(&self.catalog, &self.shard.to).await?;
            let fenced = fence_copy(&tgt, shard, demote, self.session.term());
            let cleaned = tokio::time::timeout(ASK_TARGET, fenced).await;
            if let Err(e) = cleaned.unwrap_or_else(|_| Err(target_silent(&tgt))) {
                tracing::warn!(shard, target = %self.shard.to, error = %e, "target copy not cleaned now; it is fenced when the target answers");
                fence = true;
            }
        }
        if fence {
            // Recorded before the source is active again: whoever leads later fences it.
            self.session.set_fence(self.move_id, shard, true).await?;
        }
        let src = self.pools.get(&self.catalog, &self.shard.from).await?;
        self.change_state(
            &src,
            "source",
            &[ShardState::Frozen, ShardState::Retired],
            ShardState::Active,
            None,
        )
        .await?;
        let event = if end == ShardMoveState::Aborted {
            MoveEvent::Abort
        } else {
            MoveEvent::Fail
        };
        self.step_with(ShardMoveState::Cutover, event, error)
            .await?;
        tracing::info!(
            move_id = self.move_id,
            shard,
            ?reach,
            ?seen,
            fence_later = fence,
            "cutover undone: the source is active again"
        );
        Ok(())
    }

    /// The target's copy, asked within [`ASK_TARGET`].
    async fn see_target(&self) -> TargetSeen {
        let shard = self.shard.shard;
        let ask = async {
            let tgt = self.pools.get(&self.catalog, &self.shard.to).await?;
            Ok::<_, MoveError>(transfer::shard_state(&tgt, shard).await?)
        };
        match tokio::time::timeout(ASK_TARGET, ask).await {
            Ok(Ok(None)) => TargetSeen::Absent,
            Ok(Ok(Some((s, _)))) => match s {
                ShardState::Active => TargetSeen::Active,
                ShardState::Importing => TargetSeen::Importing,
                ShardState::Frozen => TargetSeen::Frozen,
                ShardState::Retired => TargetSeen::Retired,
            },
            Ok(Err(_)) | Err(_) => TargetSeen::Unreachable,
        }
    }
}

fn target_silent(tgt: &Backend) -> MoveError {
    MoveError::Stalled(format!(
        "the target {} did not answer within {ASK_TARGET:?}",
        tgt.name()
    ))
}

/// Fences the shard's copy on `tgt`: an `active` copy is made `importing` (only when
/// `demote`: the map does not name it), then an `importing` or `retired` copy is dropped (the
/// drop refuses, in its transaction, a copy that serves). No copy: nothing to do. Both carry
/// the leader's `term`.
async fn fence_copy(tgt: &Backend, shard: u32, demote: bool, term: Term) -> Result<(), MoveError> {
    match transfer::shard_state(tgt, shard).await?.map(|(s, _)| s) {
        None => return Ok(()),
        Some(ShardState::Active) if demote => {
            if !transfer::set_state(
                tgt,
                shard,
                &[ShardState::Active],
                ShardState::Importing,
                None,
                term,
            )
            .await?
            {
                return Err(MoveError::Protocol(format!(
                    "shard {shard}: the target {}'s active copy could not be made importing",
                    tgt.name()
                )));
            }
        }
        Some(s @ (ShardState::Active | ShardState::Frozen)) => {
            return Err(MoveError::Protocol(format!(
                "shard {shard}: the target {} is {s}: its copy is left for an operator",
                tgt.name()
            )))
        }
        Some(ShardState::Importing | ShardState::Retired) => {}
    }
    transfer::drop_shard(tgt, shard, term).await?;
    Ok(())
}

/// Fences the target copies that undone cutovers left behind (their move ended `failed` or
/// `aborted`, no move of the shard is in flight, the target did not answer then): each is
/// demoted from `active` and dropped once its target answers, unless the map names that
/// target now. Runs in the leader's pass, before new shard tasks start, so no prepare of a
/// later move races it; bounded by [`ASK_TARGET`] in all, skipping targets known down.
pub async fn fence_targets(
    catalog: &Catalog,
    pools: &Pools,
    session: &LeaderSession,
) -> Result<(), MoveError> {
    let fences = session.pending_fences().await?;
    if fences.is_empty() {
        return Ok(());
    }
    let pass = async {
        for f in fences {
            if f.owned_by_target {
                session.set_fence(f.move_id, f.shard, false).await?;
                continue;
            }
            let tgt = match pools.get(catalog, &f.target).await {
                Ok(t) => t,
                // Removed from the catalog (only an empty backend can be): nothing to fence.
                Err(MoveError::UnknownBackend(_)) => {
                    session.set_fence(f.move_id, f.shard, false).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !tgt.is_up() {
                continue;
            }
            match fence_copy(&tgt, f.shard, true, session.term()).await {
                Ok(()) => {
                    session.set_fence(f.move_id, f.shard, false).await?;
                    tracing::info!(move_id = f.move_id, shard = f.shard, target = %f.target, "the undone cutover's target copy is fenced (demoted and dropped)");
                }
                Err(e) => {
                    tracing::warn!(move_id = f.move_id, shard = f.shard, target = %f.target, error = %e, "cannot fence the target copy yet; will retry")
                }
            }
        }
        Ok::<(), MoveError>(())
    };
    match tokio::time::timeout(ASK_TARGET, pass).await {
        Ok(r) => r,
        Err(_) => Ok(()), // the rest on the next pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_steps_inside_a_freeze_share_one_bound() {
        let mut clock = FreezeClock::new(Duration::from_secs(1));
        let quick = clock
            .run("tail copy", async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(1)
            })
            .await;
        assert!(matches!(quick, Ok(1)));
        // The next step has what is left, not the whole bound again: it stalls.
        let slow = clock
            .run("verification", async {
                tokio::time::sleep(Duration::from_millis(900)).await;
                Ok(2)
            })
            .await;
        match slow {
            Err(MoveError::Stalled(m)) => {
                assert!(m.contains("verification") && m.contains("1s"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        // A step that hangs ends with the bound.
        let hung = clock
            .run(
                "activation",
                std::future::pending::<Result<(), MoveError>>(),
            )
            .await;
        assert!(matches!(hung, Err(MoveError::Stalled(_))));
    }
}
