//! The storage-level steps of a live shard move (DESIGN §5): the per-backend shard state (the
//! fence of invariant I2), preparing a target, copying rows with binary `COPY`, verifying
//! (checksum, precise diff, one copy's own invariants), advancing the target's sequence and
//! dropping a copy. The mover drives them; each step is safe to repeat after a crash.
//!
//! Correctness of the incremental copy rests on invariant I1: within a shard, cells commit in
//! `added_id` order and are immutable, so any snapshot of a shard holds a prefix of its
//! `added_id`s, and copying `added_id > high-water mark` again and again misses nothing.
//!
//! Timeouts: short steps run within the backend's query timeout. Long steps (`prepare_import`,
//! `copy_rows`, `count_rows`, `checksum`, `self_check`, `shard_stats`) run within
//! [`long_step_deadline`]: the
//! larger of [`LONG_STEP`] (10 minutes) and the query timeout, per call. A COPY is moreover
//! bounded by a stall timeout ([`COPY_STALL`], or the query timeout if larger): every read from
//! the source and every write to the target must make progress within it, so a target that
//! dies or hangs mid-copy fails the copy promptly instead of after the whole deadline. The
//! mover bounds each call's size with `limit` so that a chunk fits the deadline.
//!
//! Leader terms: every step that changes a backend (`set_state`, `prepare_import`,
//! `drop_shard`, `drop_retired`, `advance_sequence`, the copies, [`claim`]) takes the
//! [`Term`](mezzanine_core::Term) of the mover's leader that asks for it, checks it against
//! the shard's state row inside its own statement or transaction, and refuses, nothing
//! changed, when the row holds a higher one ([`StorageError::Superseded`]): a leader that lost
//! its catalog session without noticing cannot change a shard a newer leader has touched.
//!
//! The files, by what each owns (every public item is re-exported here):
//!
//! - `state.rs`: the shard's state row and the fences on it: reading it, [`set_state`],
//!   [`prepare_import`], [`drop_shard`], [`drop_retired`], [`claim`], the check that a copy's
//!   target is `importing` and the check of the leader's term ([`ShardState`] itself is
//!   [`crate::shard_state`]'s, shared with [`crate::cells`]);
//! - `copy.rs`: moving rows: [`copy_rows`], [`copy_rows_paced`], [`copy_tail`] and the COPY
//!   pipe, with what a target needs after them: [`build_indexes`] (after the bulk copy) and
//!   [`advance_sequence`] (before the activation);
//! - `verify.rs`: comparing and checking copies: [`checksum`], [`diff`], [`self_check`];
//! - `stats.rs`: counts and estimates: [`max_added_id`], [`count_rows`], [`estimate_rows`],
//!   [`shard_stats`] (for the rebalance planner);
//! - this file: the bounds of a step and the helpers the others share.

mod copy;
mod state;
mod stats;
mod verify;

pub use crate::shard_state::{ShardState, UnknownShardState};
pub use copy::{
    advance_sequence, build_indexes, copy_rows, copy_rows_paced, copy_tail, CopyReport, SMALL_TAIL,
};
pub use state::{claim, drop_retired, drop_shard, prepare_import, set_state, shard_state};
pub use stats::{
    count_rows, estimate_rows, max_added_id, shard_stats, ShardStats, EXACT_COUNT_BELOW,
};
pub use verify::{
    checksum, diff, self_check, Checksum, DiffReport, Difference, SelfCheck, Side, DIFF_CHUNK,
};

use std::time::Duration;

use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::Row;

use crate::backend::Lease;
use crate::error::SqlState;
use crate::{Backend, StorageError};

/// The least deadline of one long step (see the module documentation).
pub const LONG_STEP: Duration = Duration::from_secs(600);

/// The least stall timeout of a COPY: each piece of data must move within it.
pub const COPY_STALL: Duration = Duration::from_secs(30);

/// The deadline of one long step on `backend`: the larger of [`LONG_STEP`] and its query
/// timeout.
pub fn long_step_deadline(backend: &Backend) -> Duration {
    LONG_STEP.max(backend.settings().query_timeout)
}

fn col<'r, T: FromSql<'r>>(backend: &Backend, row: &'r Row, i: usize) -> Result<T, StorageError> {
    row.try_get(i).map_err(|e| StorageError::shape(backend, e))
}

fn refused(backend: &Backend, shard: u32, message: impl Into<String>) -> StorageError {
    StorageError::Refused {
        shard,
        backend: backend.label().to_owned(),
        message: message.into(),
    }
}

fn parse_state(backend: &Backend, s: &str) -> Result<ShardState, StorageError> {
    s.parse().map_err(|e| StorageError::shape(backend, e))
}

fn is_undefined_table(e: &StorageError) -> bool {
    e.is(&SqlState::UNDEFINED_TABLE)
}

/// A lease whose deadline is [`long_step_deadline`] from now.
async fn long_lease(backend: &Backend) -> Result<Lease<'_>, StorageError> {
    let mut lease = backend.lease().await?;
    lease.extend(long_step_deadline(backend).saturating_sub(backend.settings().query_timeout));
    Ok(lease)
}

/// Runs `steps` in a transaction opened on `lease` with `begin` (`BEGIN`, `BEGIN READ ONLY`):
/// commits on success, rolls back on failure. A lease with a statement still in flight is not
/// touched: it is discarded when dropped, which ends its transaction.
async fn in_transaction<T>(
    lease: &Lease<'_>,
    begin: &str,
    steps: impl std::future::Future<Output = Result<T, StorageError>>,
) -> Result<T, StorageError> {
    lease.batch_execute(begin).await?;
    match steps.await {
        Ok(v) => {
            lease.batch_execute("COMMIT").await?;
            Ok(v)
        }
        Err(e) => {
            if lease.is_idle() {
                let _ = lease.batch_execute("ROLLBACK").await;
            }
            Err(e)
        }
    }
}

/// Bounds the lock waits of the rest of the transaction on `lease` (a freeze waiting for a
/// shard's writers, a drop waiting for its readers) to three quarters of the query timeout, so
/// that PostgreSQL itself gives up (`lock_timeout`: a retryable `Unavailable` for this call
/// only) before the lease's deadline would cancel the statement and discard the connection.
async fn bound_lock_waits(lease: &Lease<'_>, backend: &Backend) -> Result<(), StorageError> {
    let ms = lock_wait_bound(backend);
    lease
        .query(
            "SELECT set_config('lock_timeout', $1, true)",
            &[(&ms, Type::TEXT)],
        )
        .await?;
    Ok(())
}

/// Three quarters of the query timeout, in milliseconds, as `lock_timeout` takes it.
fn lock_wait_bound(backend: &Backend) -> String {
    (backend.settings().query_timeout * 3 / 4)
        .as_millis()
        .max(1)
        .to_string()
}

async fn table_exists(
    lease: &Lease<'_>,
    backend: &Backend,
    table: &str,
) -> Result<bool, StorageError> {
    let rows = lease
        .query(
            "SELECT to_regclass($1) IS NOT NULL",
            &[(&table, Type::TEXT)],
        )
        .await?;
    rows.first()
        .map(|r| col(backend, r, 0))
        .unwrap_or(Ok(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn long_steps_are_at_least_ten_minutes() {
        let settings = |secs| crate::PoolSettings {
            query_timeout: Duration::from_secs(secs),
            ..Default::default()
        };
        let b = Backend::new("x", "postgres://u@localhost/db", settings(5)).unwrap();
        assert_eq!(long_step_deadline(&b), LONG_STEP);
        let b = Backend::new("x", "postgres://u@localhost/db", settings(900)).unwrap();
        assert_eq!(long_step_deadline(&b), Duration::from_secs(900));
    }
}
