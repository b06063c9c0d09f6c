//! The cutover's steps, their undo, and the fencing of target copies left behind (DESIGN §5,
//! I2-I6). What to do, in which order and within which bound is decided by
//! `mezzanine_core::moves::machine`; this module carries the steps out.

use mezzanine_catalog::{Catalog, CatalogError, LeaderSession};
use mezzanine_core::moves::machine::ASK_TARGET;
use mezzanine_core::moves::TargetSeen;
use mezzanine_core::Term;
use mezzanine_storage::transfer::{self, ShardState};
use mezzanine_storage::Backend;

use crate::shard::{ShardTask, Steps};
use crate::{MoveError, Pools};

impl ShardTask {
    /// The freeze's start: the target's epoch after the switch is read, this leader's bulk
    /// copies are made to wait (so the pause runs on a machine no copy of this leader competes
    /// for), and the catalog records when the freeze starts (kept if set already: a resumed
    /// cutover), so that the pause reported at the switch covers the whole freeze.
    pub(crate) async fn mark_frozen<'a>(&'a self, steps: &mut Steps<'a>) -> Result<(), MoveError> {
        let shard = self.shard.shard;
        steps.epoch = Some(self.session.next_epoch(shard).await?);
        if steps.quiet.is_none() {
            steps.quiet = Some(self.pools.quiet.write().await);
        }
        steps.timings.clear();
        self.session.mark_frozen(self.move_id, shard).await?;
        Ok(())
    }

    fn epoch(&self, steps: &Steps<'_>) -> Result<i64, MoveError> {
        steps.epoch.ok_or_else(|| {
            MoveError::Protocol(format!(
                "shard {}: the target's epoch was not read before its activation",
                self.shard.shard
            ))
        })
    }

    /// New writes on the target continue the sequence past `upto` (I4), and the source is
    /// retired: no client read or write is served there from now on. Both must precede the
    /// activation; they are independent, so they run together.
    pub(crate) async fn sequence_and_retire(&self, upto: i64) -> Result<(), MoveError> {
        let shard = self.shard.shard;
        let (src, tgt) = self.backends().await?;
        let term = self.session.term();
        futures::future::try_join(
            async { Ok(transfer::advance_sequence(&tgt, shard, upto, term).await?) },
            self.change_state(
                &src,
                "source",
                &[ShardState::Frozen],
                ShardState::Retired,
                None,
            ),
        )
        .await?;
        Ok(())
    }

    /// Activates the target with the shard's next epoch.
    pub(crate) async fn activate(&self, steps: &Steps<'_>) -> Result<(), MoveError> {
        let tgt = self.target().await?;
        let epoch = self.epoch(steps)?;
        self.change_state(
            &tgt,
            "target",
            &[ShardState::Importing],
            ShardState::Active,
            Some(epoch),
        )
        .await
    }

    /// The target still answers, and serves the shard: switching the map to a target that
    /// died since its activation would leave the shard unserved, and undoing instead gives it
    /// back to the source.
    pub(crate) async fn confirm(&self, steps: &Steps<'_>) -> Result<(), MoveError> {
        let shard = self.shard.shard;
        let tgt = self.target().await?;
        let epoch = self.epoch(steps)?;
        match transfer::shard_state(&tgt, shard).await? {
            Some((ShardState::Active, e)) if e == epoch => Ok(()),
            other => Err(MoveError::Protocol(format!(
                "shard {shard}: the target {} is {} after its activation; the map is not switched",
                self.shard.to,
                other.map_or_else(|| "absent".to_owned(), |(s, e)| format!("{s} (epoch {e})"))
            ))),
        }
    }

    /// Switches the map and notifies every node (refused, nothing changed, when the map names
    /// neither the source nor the target: it was changed behind the mover's back).
    pub(crate) async fn switch(&self, steps: &Steps<'_>) -> Result<(), MoveError> {
        let shard = self.shard.shard;
        let (version, pause_ms) = self
            .session
            .switch(self.move_id, shard, &self.shard.from, &self.shard.to)
            .await
            .map_err(|e| match e {
                CatalogError::Conflict(m) => MoveError::Protocol(m),
                e => MoveError::Catalog(e),
            })?;
        metrics::counter!("mezzanine_move_shards_switched_total").increment(1);
        if let Some(ms) = pause_ms {
            metrics::histogram!("mezzanine_move_cutover_pause_seconds").record(ms / 1000.0);
        }
        let timings: Vec<String> = steps
            .timings
            .iter()
            .map(|(n, ms)| format!("{n}={ms:.1}"))
            .collect();
        tracing::info!(move_id = self.move_id, shard, from = %self.shard.from, to = %self.shard.to, pause_ms, map_version = version, steps_ms = %timings.join(" "), "shard switched");
        Ok(())
    }

    /// Freezes the source; returns whether it was `retired` already (a resumed cutover).
    pub(crate) async fn freeze(&self, src: &Backend) -> Result<bool, MoveError> {
        let shard = self.shard.shard;
        let term = self.session.term();
        if transfer::set_state(
            src,
            shard,
            &[ShardState::Active],
            ShardState::Frozen,
            None,
            term,
        )
        .await?
        {
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
    pub(crate) async fn tail(
        &self,
        src: &Backend,
        tgt: &Backend,
        fresh: Option<i64>,
    ) -> Result<i64, MoveError> {
        let shard = self.shard.shard;
        let term = self.session.term();
        match fresh {
            // Straight from catching up: the target holds exactly up to `hw`; the copy of
            // everything above it ends at the source's highest added_id.
            Some(hw) => Ok(transfer::copy_tail(src, tgt, shard, hw, term)
                .await?
                .max_added_id),
            None => {
                // A target that is active already was activated by a leader that died before
                // the switch: nothing to copy.
                let target_state = transfer::shard_state(tgt, shard).await?.map(|(s, _)| s);
                if target_state != Some(ShardState::Active) {
                    let hw = transfer::max_added_id(tgt, shard).await?;
                    transfer::copy_tail(src, tgt, shard, hw, term).await?;
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
    pub(crate) async fn thaw(&self) -> Result<(), MoveError> {
        let shard = self.shard.shard;
        let src = self.source().await?;
        self.change_state(
            &src,
            "source",
            &[ShardState::Frozen],
            ShardState::Active,
            None,
        )
        .await?;
        self.session.thawed(self.move_id, shard).await?;
        Ok(())
    }

    /// The target's copy; any failure counts as unreachable (the machine bounds the asking
    /// by [`ASK_TARGET`]).
    pub(crate) async fn see_target(&self) -> TargetSeen {
        let shard = self.shard.shard;
        let ask = async {
            let tgt = self.pools.get(&self.catalog, &self.shard.to).await?;
            Ok::<_, MoveError>(transfer::shard_state(&tgt, shard).await?)
        };
        match ask.await {
            Ok(None) => TargetSeen::Absent,
            Ok(Some((s, _))) => match s {
                ShardState::Active => TargetSeen::Active,
                ShardState::Importing => TargetSeen::Importing,
                ShardState::Frozen => TargetSeen::Frozen,
                ShardState::Retired => TargetSeen::Retired,
            },
            Err(_) => TargetSeen::Unreachable,
        }
    }
}

/// Fences the shard's copy on `tgt`: an `active` copy is made `importing` (only when
/// `demote`: the map does not name it), then an `importing` or `retired` copy is dropped (the
/// drop refuses, in its transaction, a copy that serves). No copy: nothing to do.
pub(crate) async fn fence_copy(
    tgt: &Backend,
    shard: u32,
    demote: bool,
    term: Term,
) -> Result<(), MoveError> {
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
