//! The shard's state row on a backend and the fences on it: reading it, changing it in one
//! checked statement, preparing an import, dropping a copy, claiming it for a leader's term.
//!
//! Terms: the row holds the highest term of the mover's leadership that changed it
//! (`mezzanine_shard_state.term`, 0 before any). Every step of a move carries its leader's
//! [`Term`]; a state change writes it into the row, and every step is refused, nothing
//! changed, with [`StorageError::Superseded`] when the row holds a higher term: a newer
//! leader took the shard over. A shard without a row has no term to check (a target not
//! prepared yet, or a copy dropped).

use std::collections::BTreeSet;

use mezzanine_core::Term;
use tokio_postgres::types::Type;

use super::{
    bound_lock_waits, col, in_transaction, is_undefined_table, lock_wait_bound, long_lease,
    parse_state, refused, table_exists,
};
use crate::backend::Lease;
use crate::schema::{self, cells_table, MIGRATION_LOCK, SCHEMA_VERSION};
use crate::shard_state::ShardState;
use crate::{Backend, StorageError};

/// The shard's state row on `backend`: its state and epoch, `None` when it has none (or the
/// backend has no mezzanine metadata at all).
pub async fn shard_state(
    backend: &Backend,
    shard: u32,
) -> Result<Option<(ShardState, i64)>, StorageError> {
    let lease = backend.lease().await?;
    Ok(state_on(&lease, backend, shard, "")
        .await?
        .map(|r| (r.state, r.epoch)))
}

/// A shard's state row.
#[derive(Debug, Clone, Copy)]
pub(super) struct StateRow {
    pub state: ShardState,
    pub epoch: i64,
    /// The highest term of a leader that changed the row.
    pub term: Term,
}

/// Reads the state row on `lease`; `lock` is appended to the query (`FOR UPDATE`, …).
pub(super) async fn state_on(
    lease: &Lease<'_>,
    backend: &Backend,
    shard: u32,
    lock: &str,
) -> Result<Option<StateRow>, StorageError> {
    let shard_i = shard as i32;
    let rows = match lease
        .query(
            &format!(
                "SELECT state, epoch, term FROM mezzanine_shard_state WHERE shard = $1 {lock}"
            ),
            &[(&shard_i, Type::INT4)],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) if is_undefined_table(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    match rows.first() {
        Some(row) => {
            let state: String = col(backend, row, 0)?;
            Ok(Some(StateRow {
                state: parse_state(backend, &state)?,
                epoch: col(backend, row, 1)?,
                term: Term(col(backend, row, 2)?),
            }))
        }
        None => Ok(None),
    }
}

/// Refuses a step of the leader of `term` on a shard whose row holds the higher term `found`
/// ([`StorageError::Superseded`]).
pub(super) fn check_term(
    backend: &Backend,
    shard: u32,
    found: Term,
    term: Term,
) -> Result<(), StorageError> {
    if found > term {
        return Err(StorageError::Superseded {
            shard,
            backend: backend.label().to_owned(),
            term,
            newer: found,
        });
    }
    Ok(())
}

/// After a step refused by its statement's condition: [`StorageError::Superseded`] if the row
/// holds a higher term than `term` now (terms only grow), else `Ok` (the refusal is the
/// step's own, or there is no row).
async fn superseded_now(
    lease: &Lease<'_>,
    backend: &Backend,
    shard: u32,
    term: Term,
) -> Result<Option<StateRow>, StorageError> {
    let row = state_on(lease, backend, shard, "").await?;
    if let Some(r) = row {
        check_term(backend, shard, r.term, term)?;
    }
    Ok(row)
}

/// Claims the shard on `backend` for the leader of `term`: stamps `term` on its state row
/// unless the row holds a higher one, which is refused ([`StorageError::Superseded`],
/// nothing changed). A shard without a row here (or a backend without mezzanine's metadata)
/// has nothing to claim: `Ok`. A leader claims each shard on its source and target before it
/// drives its move, so that from then on no older leader can change it there.
///
/// The stamp waits for the row's lock (an `active` shard's writers hold it while they
/// write), bounded like [`set_state`]'s lock wait; a row that holds `term` already is not
/// written again.
pub async fn claim(backend: &Backend, shard: u32, term: Term) -> Result<(), StorageError> {
    let shard_i = shard as i32;
    let lock_ms = lock_wait_bound(backend);
    let lease = backend.lease().await?;
    let stamped = match lease
        .query(
            "UPDATE mezzanine_shard_state SET term = $2 \
             WHERE shard = $1 AND term < $2 \
               AND (SELECT set_config('lock_timeout', $3, true)) IS NOT NULL \
             RETURNING term",
            &[
                (&shard_i, Type::INT4),
                (&term.0, Type::INT8),
                (&lock_ms, Type::TEXT),
            ],
        )
        .await
    {
        Ok(rows) => !rows.is_empty(),
        Err(e) if is_undefined_table(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    if !stamped {
        superseded_now(&lease, backend, shard, term).await?;
    }
    Ok(())
}

/// Makes `backend` ready to receive `shard`: mezzanine's metadata tables and its schema row
/// (a never-used, empty database works), the shard's cells table with go-mezzanine's DDL when
/// missing, and the state row `importing` (inserted, or updated from `importing`/`retired`),
/// all in one transaction under the migration lock. A cells table that exists is kept with its
/// rows (an interrupted copy, or an older retired copy: cells are immutable, so they are a
/// prefix; the mover copies `added_id > max_added_id` and verifies).
///
/// The row takes the leader's `term`. Refused ([`StorageError::Refused`]) when the shard is
/// `active` or `frozen` here (this backend serves it), ([`StorageError::Superseded`]) when its
/// row holds a higher term, and ([`StorageError::Layout`]) when the backend was laid out for
/// another `num_shards`.
pub async fn prepare_import(
    backend: &Backend,
    num_shards: u32,
    shard: u32,
    term: Term,
) -> Result<(), StorageError> {
    if shard >= num_shards {
        return Err(StorageError::Layout {
            backend: backend.label().to_owned(),
            message: format!("shard {shard} does not exist with NUM_SHARDS={num_shards}"),
        });
    }
    // Long: it may wait for a start-up migration holding the lock.
    let lease = long_lease(backend).await?;
    in_transaction(
        &lease,
        "BEGIN",
        import_steps(&lease, backend, num_shards, shard, term),
    )
    .await
}

async fn import_steps(
    lease: &Lease<'_>,
    backend: &Backend,
    num_shards: u32,
    shard: u32,
    term: Term,
) -> Result<(), StorageError> {
    lease
        .query(
            "SELECT pg_advisory_xact_lock($1)",
            &[(&MIGRATION_LOCK, Type::INT8)],
        )
        .await?;
    schema::ensure_metadata(lease).await?;
    let rows = lease
        .query("SELECT version, num_shards FROM mezzanine_schema", &[])
        .await?;
    match rows.first() {
        Some(row) => schema::check_recorded(
            backend,
            col(backend, row, 0)?,
            col(backend, row, 1)?,
            num_shards,
        )?,
        None => {
            let n = num_shards as i32;
            lease
                .query(
                    "INSERT INTO mezzanine_schema (id, version, num_shards) VALUES (1, $1, $2)",
                    &[(&SCHEMA_VERSION, Type::INT4), (&n, Type::INT4)],
                )
                .await?;
        }
    }
    let shard_i = shard as i32;
    let changed = lease
        .query(
            "INSERT INTO mezzanine_shard_state (shard, state, term) VALUES ($1, 'importing', $2) \
             ON CONFLICT (shard) DO UPDATE SET state = 'importing', updated_at = now(), term = $2, \
                                               last_created_at = NULL \
             WHERE mezzanine_shard_state.state IN ('importing', 'retired') \
               AND mezzanine_shard_state.term <= $2 \
             RETURNING state",
            &[(&shard_i, Type::INT4), (&term.0, Type::INT8)],
        )
        .await?;
    if changed.is_empty() {
        let state = superseded_now(lease, backend, shard, term)
            .await?
            .map(|r| r.state.as_str())
            .unwrap_or("absent");
        return Err(refused(
            backend,
            shard,
            format!("the shard is {state} here (this backend serves it): refusing to import it"),
        ));
    }
    // The unique constraint and secondary indexes come after the bulk copy (build_indexes).
    schema::create_missing_tables(lease, &BTreeSet::from([shard]), false).await?;
    Ok(())
}

/// Sets the shard's state to `to` if it is one of `from`, in one statement (checked and changed
/// atomically); `epoch`, when given, is set with it, and the leader's `term` always. Returns
/// whether the row is now `to` (with that epoch, when one is given): a row that was `to`
/// already counts as success, so a resuming mover can repeat a step. `false` means the row is
/// absent or in another state (or `to` with another epoch), or, for `active`, that the table
/// lacks the cell key's unique constraint. A row that holds a higher term than `term` is left
/// as it is: [`StorageError::Superseded`].
///
/// An import activated here (`importing` → `active`) takes its latest `created_at`
/// (`last_created_at`) from its table, which holds the copied cells with their own values:
/// the next write's cells come after them (invariant I7 across moves). A copy active again
/// after a freeze or a retirement keeps its own (it took no cells meanwhile).
///
/// Freezing an `active` shard waits for its in-flight writers (they hold its row lock) and
/// stops new ones; the wait is bounded by three quarters of the query timeout (`lock_timeout`),
/// after which the statement fails with [`StorageError::Unavailable`] and nothing changed.
pub async fn set_state(
    backend: &Backend,
    shard: u32,
    from: &[ShardState],
    to: ShardState,
    epoch: Option<i64>,
    term: Term,
) -> Result<bool, StorageError> {
    // Only a switch from `importing` to `active` may activate an import (a thaw, `frozen` to
    // `active`, inside a cutover's pause, asks nothing more of the backend).
    let may_import = to == ShardState::Active && from.contains(&ShardState::Importing);
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let shard_i = shard as i32;
    let to_s = to.as_str();
    let lock_ms = lock_wait_bound(backend);
    // A shard is activated only where its table has the cell key's unique constraint (an
    // import builds it after the bulk copy): client writes rely on it for immutability.
    let table = cells_table(shard);
    let lease = backend.lease().await?;
    // An import being activated takes its table's latest `created_at` (the copied cells keep
    // theirs) in the same statement: an importing table takes no client writes, and its
    // stream index, built with the others, makes it one index lookup. PostgreSQL evaluates
    // the sub-select (an init plan) only where the CASE takes that branch, so a copy active
    // again (a thaw in a cutover's pause) keeps its own and never reads its table, which may
    // lack the stream index. One round trip: the activation is inside a cutover's pause.
    let latest = if may_import {
        format!("(SELECT max(created_at) FROM {table})")
    } else {
        "last_created_at".to_owned()
    };
    // One statement, so one round trip and its own transaction: the freeze is inside a
    // cutover's pause. The `lock_timeout` of that transaction is set by the uncorrelated
    // sub-select, which PostgreSQL runs once before it scans (an init plan), so before the
    // update can wait for a writer's row lock.
    // Written as an update of every candidate row (also one already `to`, unchanged) rather
    // than a read then an update: under READ COMMITTED the update re-checks its condition on
    // the row's latest version after waiting for the lock; a read would not.
    let updated = lease
        .query(
            &format!(
                "UPDATE mezzanine_shard_state SET \
                   epoch = CASE WHEN state = $3 THEN epoch ELSE coalesce($4, epoch) END, \
                   updated_at = CASE WHEN state = $3 THEN updated_at ELSE now() END, \
                   last_created_at = CASE WHEN state = 'importing' AND $3 = 'active' \
                                          THEN {latest} ELSE last_created_at END, \
                   state = $3, term = $7 \
                 WHERE shard = $1 AND (state = ANY($2) OR state = $3) AND term <= $7 \
                   AND (SELECT set_config('lock_timeout', $5, true)) IS NOT NULL \
                   AND ($3 <> 'active' OR EXISTS (SELECT 1 FROM pg_index \
                          WHERE indrelid = to_regclass($6) AND indisunique AND indnkeyatts = 3)) \
                 RETURNING epoch"
            ),
            &[
                (&shard_i, Type::INT4),
                (&from, Type::TEXT_ARRAY),
                (&to_s, Type::TEXT),
                (&epoch, Type::INT8),
                (&lock_ms, Type::TEXT),
                (&table, Type::TEXT),
                (&term.0, Type::INT8),
            ],
        )
        .await;
    // An import whose table is missing cannot be activated (the unique index's check would
    // refuse it too): nothing changed.
    let rows = match updated {
        Err(e) if may_import && is_undefined_table(&e) => Vec::new(),
        other => other?,
    };
    match rows.first() {
        None => {
            superseded_now(&lease, backend, shard, term).await?;
            Ok(false)
        }
        Some(row) => {
            let now: i64 = col(backend, row, 0)?;
            Ok(epoch.is_none_or(|e| e == now))
        }
    }
}

/// Drops the shard's cells table and deletes its state row, in one transaction: cleaning a
/// retired source after `move complete`, or a target after an abort. Refused when the shard is
/// `active` or `frozen` here, and when its table exists without a state row (mezzanine does not
/// know who serves it, e.g. a go-mezzanine table), and when its row holds a higher term than
/// `term` ([`StorageError::Superseded`]). Repeating it after success is a no-op. Lock waits
/// (for readers of the table) are bounded like [`set_state`]'s.
pub async fn drop_shard(backend: &Backend, shard: u32, term: Term) -> Result<(), StorageError> {
    drop_copy(backend, shard, false, term).await.map(|_| ())
}

/// Drops the shard's copy here only if it is `retired` (checked in the same transaction as
/// the drop): the cleanup of a switched move's source, which must leave alone a copy that a
/// later move is importing into, or serves from, again. Returns whether it dropped one.
/// Refused like [`drop_shard`] when the row holds a higher term than `term`.
pub async fn drop_retired(backend: &Backend, shard: u32, term: Term) -> Result<bool, StorageError> {
    drop_copy(backend, shard, true, term).await
}

async fn drop_copy(
    backend: &Backend,
    shard: u32,
    only_retired: bool,
    term: Term,
) -> Result<bool, StorageError> {
    let lease = backend.lease().await?;
    in_transaction(
        &lease,
        "BEGIN",
        drop_steps(&lease, backend, shard, only_retired, term),
    )
    .await
}

async fn drop_steps(
    lease: &Lease<'_>,
    backend: &Backend,
    shard: u32,
    only_retired: bool,
    term: Term,
) -> Result<bool, StorageError> {
    let t = cells_table(shard);
    bound_lock_waits(lease, backend).await?;
    // Before the state: without metadata, reading the state fails and aborts the transaction.
    let exists = table_exists(lease, backend, &t).await?;
    let row = state_on(lease, backend, shard, "FOR UPDATE").await?;
    if let Some(r) = row {
        check_term(backend, shard, r.term, term)?;
    }
    let state = row.map(|r| r.state);
    if only_retired && state != Some(ShardState::Retired) {
        return Ok(false);
    }
    match state {
        Some(s) if s.serves() => {
            return Err(refused(
                backend,
                shard,
                format!("the shard is {s} here (this backend serves it): refusing to drop it"),
            ))
        }
        Some(_) => {}
        None => {
            if exists {
                return Err(refused(
                    backend,
                    shard,
                    format!("{t} exists but has no state row: refusing to drop a table mezzanine does not manage"),
                ));
            }
            return Ok(false);
        }
    }
    lease
        .batch_execute(&format!("DROP TABLE IF EXISTS {t}"))
        .await?;
    let shard_i = shard as i32;
    lease
        .query(
            "DELETE FROM mezzanine_shard_state WHERE shard = $1",
            &[(&shard_i, Type::INT4)],
        )
        .await?;
    Ok(true)
}

/// Refuses a copy into a target whose state row (read in the copy's own transaction, under
/// its lock) is not `importing`.
pub(super) fn check_importing(
    target: &Backend,
    shard: u32,
    state: Option<ShardState>,
) -> Result<(), StorageError> {
    match state {
        Some(ShardState::Importing) => {}
        Some(state) => {
            return Err(refused(
                target,
                shard,
                format!("the shard is {state} here, not importing: refusing to copy into it"),
            ))
        }
        None => {
            return Err(refused(
                target,
                shard,
                "the shard has no state row here: prepare_import first",
            ))
        }
    }
    Ok(())
}
