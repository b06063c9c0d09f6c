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

use std::cmp::Ordering;
use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use mezzanine_core::moves::throttle_delay;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::backend::{CopyIn, Lease};
use crate::cells::CELL_COLUMNS;
use crate::error::SqlState;
use crate::schema::{self, cells_table, MIGRATION_LOCK, SCHEMA_VERSION};
use crate::{Backend, StorageError};

/// The least deadline of one long step (see the module documentation).
pub const LONG_STEP: Duration = Duration::from_secs(600);

/// The least stall timeout of a COPY: each piece of data must move within it.
pub const COPY_STALL: Duration = Duration::from_secs(30);

/// Rows per statement of [`diff`], on each side.
pub const DIFF_CHUNK: i64 = 10_000;

/// The deadline of one long step on `backend`: the larger of [`LONG_STEP`] and its query
/// timeout.
pub fn long_step_deadline(backend: &Backend) -> Duration {
    LONG_STEP.max(backend.settings().query_timeout)
}

/// The state of a shard on one backend (`mezzanine_shard_state.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShardState {
    /// Serves client reads and writes.
    Active,
    /// Receives a copy: client traffic refused, the mover's COPY allowed.
    Importing,
    /// Serves reads; writes refused (the cut-over of a move).
    Frozen,
    /// An old copy, kept read-only for the mover until it is dropped.
    Retired,
}

impl ShardState {
    pub const ALL: [ShardState; 4] = [
        ShardState::Active,
        ShardState::Importing,
        ShardState::Frozen,
        ShardState::Retired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShardState::Active => "active",
            ShardState::Importing => "importing",
            ShardState::Frozen => "frozen",
            ShardState::Retired => "retired",
        }
    }

    /// Whether this backend serves the shard to clients in this state (and so must keep it).
    pub fn serves(self) -> bool {
        matches!(self, ShardState::Active | ShardState::Frozen)
    }
}

impl fmt::Display for ShardState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`ShardState`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown shard state {0:?}")]
pub struct UnknownShardState(pub String);

impl FromStr for ShardState {
    type Err = UnknownShardState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ShardState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownShardState(s.to_owned()))
    }
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

/// The shard's state row on `backend`: its state and epoch, `None` when it has none (or the
/// backend has no mezzanine metadata at all).
pub async fn shard_state(
    backend: &Backend,
    shard: u32,
) -> Result<Option<(ShardState, i64)>, StorageError> {
    let lease = backend.lease().await?;
    state_on(&lease, backend, shard, "").await
}

/// Reads the state row on `lease`; `lock` is appended to the query (`FOR UPDATE`, …).
async fn state_on(
    lease: &Lease<'_>,
    backend: &Backend,
    shard: u32,
    lock: &str,
) -> Result<Option<(ShardState, i64)>, StorageError> {
    let shard_i = shard as i32;
    let rows = match lease
        .query(
            &format!("SELECT state, epoch FROM mezzanine_shard_state WHERE shard = $1 {lock}"),
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
            Ok(Some((parse_state(backend, &state)?, col(backend, row, 1)?)))
        }
        None => Ok(None),
    }
}

/// Makes `backend` ready to receive `shard`: mezzanine's metadata tables and its schema row
/// (a never-used, empty database works), the shard's cells table with go-mezzanine's DDL when
/// missing, and the state row `importing` (inserted, or updated from `importing`/`retired`),
/// all in one transaction under the migration lock. A cells table that exists is kept with its
/// rows (an interrupted copy, or an older retired copy: cells are immutable, so they are a
/// prefix; the mover copies `added_id > max_added_id` and verifies).
///
/// Refused ([`StorageError::Refused`]) when the shard is `active` or `frozen` here (this
/// backend serves it), and ([`StorageError::Layout`]) when the backend was laid out for
/// another `num_shards`.
pub async fn prepare_import(
    backend: &Backend,
    num_shards: u32,
    shard: u32,
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
        import_steps(&lease, backend, num_shards, shard),
    )
    .await
}

async fn import_steps(
    lease: &Lease<'_>,
    backend: &Backend,
    num_shards: u32,
    shard: u32,
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
            "INSERT INTO mezzanine_shard_state (shard, state) VALUES ($1, 'importing') \
             ON CONFLICT (shard) DO UPDATE SET state = 'importing', updated_at = now() \
             WHERE mezzanine_shard_state.state IN ('importing', 'retired') \
             RETURNING state",
            &[(&shard_i, Type::INT4)],
        )
        .await?;
    if changed.is_empty() {
        let state = state_on(lease, backend, shard, "")
            .await?
            .map(|(s, _)| s.as_str())
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

/// Builds the unique constraint and the secondary indexes of an imported shard's table that
/// it lacks (an import creates the table with its primary key only, so that the bulk copy
/// does not maintain four more indexes row by row; one sorted build each afterwards costs a
/// fraction of that). Idempotent: a table that has them all costs one query. Returns how
/// many were built. Must complete before the shard is activated here: client writes rely on
/// the unique constraint.
pub async fn build_indexes(backend: &Backend, shard: u32) -> Result<usize, StorageError> {
    let lease = long_lease(backend).await?;
    let t = cells_table(shard);
    let rows = lease
        .query(
            "SELECT i.indisunique, substring(pg_get_indexdef(i.indexrelid) from ' USING btree (.*)$') \
             FROM pg_index i WHERE i.indrelid = to_regclass($1)",
            &[(&t, Type::TEXT)],
        )
        .await?;
    let mut existing = Vec::with_capacity(rows.len());
    for row in &rows {
        let unique: bool = col(backend, row, 0)?;
        let key: Option<String> = col(backend, row, 1)?;
        existing.push((unique, key));
    }
    let mut built = 0;
    for index in schema::cells_index_ddl(shard) {
        let same = |(unique, key): &(bool, Option<String>)| {
            *unique == index.unique && key.as_deref() == Some(index.key)
        };
        if !existing.iter().any(same) {
            // One process per build (no parallel workers): a build takes one core, not all
            // of them, from the clients of the target's other shards.
            let ddl = format!(
                "SELECT set_config('max_parallel_maintenance_workers', '0', true); {}",
                index.ddl
            );
            lease.batch_execute(&ddl).await?;
            built += 1;
        }
    }
    Ok(built)
}

/// Sets the shard's state to `to` if it is one of `from`, in one statement (checked and changed
/// atomically); `epoch`, when given, is set with it. Returns whether the row is now `to` (with that epoch, when one is
/// given): a row that was `to` already counts as success, so a resuming mover can repeat a
/// step. `false` means the row is absent or in another state (or `to` with another epoch),
/// or, for `active`, that the table lacks the cell key's unique constraint.
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
) -> Result<bool, StorageError> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let shard_i = shard as i32;
    let to_s = to.as_str();
    let lock_ms = lock_wait_bound(backend);
    // A shard is activated only where its table has the cell key's unique constraint (an
    // import builds it after the bulk copy): client writes rely on it for immutability.
    let table = cells_table(shard);
    let lease = backend.lease().await?;
    // One statement, so one round trip and its own transaction: the freeze is inside a
    // cutover's pause. The `lock_timeout` of that transaction is set by the uncorrelated
    // sub-select, which PostgreSQL runs once before it scans (an init plan), so before the
    // update can wait for a writer's row lock.
    // Written as an update of every candidate row (also one already `to`, unchanged) rather
    // than a read then an update: under READ COMMITTED the update re-checks its condition on
    // the row's latest version after waiting for the lock; a read would not.
    let rows = lease
        .query(
            "UPDATE mezzanine_shard_state SET \
               epoch = CASE WHEN state = $3 THEN epoch ELSE coalesce($4, epoch) END, \
               updated_at = CASE WHEN state = $3 THEN updated_at ELSE now() END, \
               state = $3 \
             WHERE shard = $1 AND (state = ANY($2) OR state = $3) \
               AND (SELECT set_config('lock_timeout', $5, true)) IS NOT NULL \
               AND ($3 <> 'active' OR EXISTS (SELECT 1 FROM pg_index \
                      WHERE indrelid = to_regclass($6) AND indisunique AND indnkeyatts = 3)) \
             RETURNING epoch",
            &[
                (&shard_i, Type::INT4),
                (&from, Type::TEXT_ARRAY),
                (&to_s, Type::TEXT),
                (&epoch, Type::INT8),
                (&lock_ms, Type::TEXT),
                (&table, Type::TEXT),
            ],
        )
        .await?;
    match rows.first() {
        None => Ok(false),
        Some(row) => {
            let now: i64 = col(backend, row, 0)?;
            Ok(epoch.is_none_or(|e| e == now))
        }
    }
}

/// The highest `added_id` of the shard's table on `backend`, 0 when it is empty.
pub async fn max_added_id(backend: &Backend, shard: u32) -> Result<i64, StorageError> {
    let lease = backend.lease().await?;
    let rows = lease
        .query(
            &format!(
                "SELECT coalesce(max(added_id), 0) FROM {}",
                cells_table(shard)
            ),
            &[],
        )
        .await?;
    rows.first().map(|r| col(backend, r, 0)).unwrap_or(Ok(0))
}

/// The exact number of rows of the shard's table (a full scan: a long step).
pub async fn count_rows(backend: &Backend, shard: u32) -> Result<i64, StorageError> {
    let lease = long_lease(backend).await?;
    let rows = lease
        .query(&format!("SELECT count(*) FROM {}", cells_table(shard)), &[])
        .await?;
    rows.first().map(|r| col(backend, r, 0)).unwrap_or(Ok(0))
}

/// PostgreSQL's estimate of the shard's row count (`pg_class.reltuples`, as of the last
/// vacuum or analyze): cheap, for progress. `None` when the table is missing or was never
/// analyzed.
pub async fn estimate_rows(backend: &Backend, shard: u32) -> Result<Option<i64>, StorageError> {
    let lease = backend.lease().await?;
    let table = cells_table(shard);
    let rows = lease
        .query(
            "SELECT reltuples::int8 FROM pg_class WHERE oid = to_regclass($1)",
            &[(&table, Type::TEXT)],
        )
        .await?;
    match rows.first() {
        Some(r) => {
            let n: i64 = col(backend, r, 0)?;
            Ok((n >= 0).then_some(n))
        }
        None => Ok(None),
    }
}

/// What one [`copy_rows`] call moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyReport {
    /// Rows stored on the target.
    pub rows: u64,
    /// The highest `added_id` copied; the `after` given when nothing was copied. The mover's
    /// next high-water mark.
    pub max_added_id: i64,
    /// Bytes of COPY data moved (binary format, headers included).
    pub bytes: u64,
}

/// Copies the shard's rows with `added_id > after`, in `added_id` order and at most `limit` of
/// them, from `source` to `target`, with binary `COPY` piped through unchanged: `added_id`,
/// `created_at` and the bodies arrive exactly as stored.
///
/// The target side is one transaction: all the rows land, or none. It first checks, holding
/// the target's state row (`FOR SHARE`), that the shard is `importing` there (client writes
/// are refused then; COPY does not consult the state) and that the target holds nothing above
/// `after` (so the copy extends a prefix; pass the target's [`max_added_id`]); otherwise
/// [`StorageError::Refused`]. The source side is one read-only statement (a snapshot: by I1,
/// a prefix of the shard).
///
/// Bounded by [`long_step_deadline`] per call and by the COPY stall timeout (see the module
/// documentation); a source or target that fails or goes away gives a `StorageError`
/// (`Unavailable` for connection trouble) and leaves the target unchanged.
pub async fn copy_rows(
    source: &Backend,
    target: &Backend,
    shard: u32,
    after: i64,
    limit: Option<i64>,
) -> Result<CopyReport, StorageError> {
    copy_rows_paced(source, target, shard, after, limit, None).await
}

/// [`copy_rows`], with the stream held to `bytes_per_sec` (none: full speed): the relay waits
/// whenever it is ahead of that rate, so the source and the target do the copy's work in
/// small slices spread evenly over time (a bulk copy that leaves the backends to client
/// traffic for part of every millisecond, not for whole seconds between chunks).
pub async fn copy_rows_paced(
    source: &Backend,
    target: &Backend,
    shard: u32,
    after: i64,
    limit: Option<i64>,
    bytes_per_sec: Option<u64>,
) -> Result<CopyReport, StorageError> {
    if limit.is_some_and(|l| l < 0) {
        return Err(refused(
            target,
            shard,
            "a copy's limit must not be negative",
        ));
    }
    let tl = &long_lease(target).await?;
    in_transaction(tl, "BEGIN", async {
        let t = cells_table(shard);
        let state = state_on(tl, target, shard, "FOR SHARE")
            .await?
            .map(|(s, _)| s);
        check_importing(target, shard, state)?;
        let rows = tl
            .query(&format!("SELECT coalesce(max(added_id), 0) FROM {t}"), &[])
            .await?;
        let have: i64 = rows.first().map(|r| col(target, r, 0)).unwrap_or(Ok(0))?;
        check_no_overlap(target, shard, have, after)?;

        let stall = COPY_STALL
            .max(source.settings().query_timeout)
            .max(target.settings().query_timeout);
        let sl = long_lease(source).await?;
        let (rows, bytes) = pipe(tl, &sl, &t, (after, limit), stall, bytes_per_sec).await?;

        // Nothing copied (a catch-up round often copies nothing): the high-water mark stays.
        let max_added_id: i64 = if rows == 0 {
            after
        } else {
            let rows_max = tl
                .query(
                    &format!("SELECT coalesce(max(added_id), $1) FROM {t} WHERE added_id > $1"),
                    &[(&after, Type::INT8)],
                )
                .await?;
            rows_max
                .first()
                .map(|r| col(target, r, 0))
                .unwrap_or(Ok(after))?
        };
        tracing::debug!(
            shard,
            source = source.name(),
            target = target.name(),
            after,
            rows,
            bytes,
            max_added_id,
            "copied rows"
        );
        Ok(CopyReport {
            rows,
            max_added_id,
            bytes,
        })
    })
    .await
}

/// Refuses a copy into a target whose state row (read in the copy's own transaction, under
/// its lock) is not `importing`.
fn check_importing(
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

/// Refuses a copy of the rows above `after` into a target that holds rows above it already
/// (`have`, its highest `added_id`): the copy would overlap them.
fn check_no_overlap(
    target: &Backend,
    shard: u32,
    have: i64,
    after: i64,
) -> Result<(), StorageError> {
    if have > after {
        return Err(refused(
            target,
            shard,
            format!(
                "the target holds rows up to added_id {have}, above {after}: copy from its max_added_id"
            ),
        ));
    }
    Ok(())
}

/// The most rows [`copy_tail`] sends as plain statements; a longer tail goes through COPY.
pub const SMALL_TAIL: i64 = 2000;

/// Copies the rows above `after` like [`copy_rows`] (no limit), for a cutover's tail: the
/// rows written since the last catch-up round, copied while the source is frozen, so inside
/// the write pause. A tail of at most [`SMALL_TAIL`] rows goes as one `SELECT` on the source
/// and one statement on the target that checks the target (importing, nothing above `after`)
/// and inserts the rows: two round trips instead of COPY's two transactions. The values
/// keep their types (`body` as JSONB's own text, which parses back to the same JSONB); the
/// cutover verifies every column afterwards. Longer tails, and values the driver cannot
/// carry (an infinite `created_at`), go through [`copy_rows`].
pub async fn copy_tail(
    source: &Backend,
    target: &Backend,
    shard: u32,
    after: i64,
) -> Result<CopyReport, StorageError> {
    let t = cells_table(shard);
    let rows = {
        let sl = source.lease().await?;
        sl.query(
            &format!(
                "SELECT {CELL_COLUMNS} FROM {t} WHERE added_id > $1 ORDER BY added_id LIMIT $2"
            ),
            &[(&after, Type::INT8), (&(SMALL_TAIL + 1), Type::INT8)],
        )
        .await?
    };
    let Some(tail) = TailColumns::of(&rows).filter(|c| c.added_ids.len() as i64 <= SMALL_TAIL)
    else {
        return copy_rows(source, target, shard, after, None).await;
    };
    let shard_i = shard as i32;
    let tl = target.lease().await?;
    let row = tl
        .query(
            &format!(
                "WITH st AS (SELECT state FROM mezzanine_shard_state WHERE shard = $1 FOR SHARE), \
                 have AS (SELECT coalesce(max(added_id), 0) AS m FROM {t}), \
                 ins AS (INSERT INTO {t} (added_id, row_key, column_name, ref_key, body, created_at) \
                         SELECT a, r, c, k, b::jsonb, ts \
                         FROM unnest($2::int8[], $3::uuid[], $4::text[], $5::int8[], $6::text[], \
                                     $7::timestamptz[]) AS u(a, r, c, k, b, ts) \
                         WHERE (SELECT state FROM st) = 'importing' AND (SELECT m FROM have) <= $8 \
                         RETURNING 1) \
                 SELECT (SELECT state FROM st), (SELECT m FROM have), (SELECT count(*) FROM ins)"
            ),
            &[
                (&shard_i, Type::INT4),
                (&tail.added_ids, Type::INT8_ARRAY),
                (&tail.row_keys, Type::UUID_ARRAY),
                (&tail.columns, Type::TEXT_ARRAY),
                (&tail.ref_keys, Type::INT8_ARRAY),
                (&tail.bodies, Type::TEXT_ARRAY),
                (&tail.created, Type::TIMESTAMPTZ_ARRAY),
                (&after, Type::INT8),
            ],
        )
        .await?;
    let Some(row) = row.first() else {
        return Err(refused(target, shard, "the tail copy returned no row"));
    };
    let state: Option<String> = col(target, row, 0)?;
    let state = state.map(|s| parse_state(target, &s)).transpose()?;
    let have: i64 = col(target, row, 1)?;
    let inserted: i64 = col(target, row, 2)?;
    check_importing(target, shard, state)?;
    check_no_overlap(target, shard, have, after)?;
    if inserted as usize != tail.added_ids.len() {
        return Err(refused(
            target,
            shard,
            format!(
                "the tail copy stored {inserted} of {} rows",
                tail.added_ids.len()
            ),
        ));
    }
    Ok(CopyReport {
        rows: inserted as u64,
        max_added_id: tail.added_ids.last().copied().unwrap_or(after),
        bytes: tail.bytes,
    })
}

/// A tail's rows as column arrays; `None` when a value cannot be carried (an infinite
/// timestamp, say).
struct TailColumns {
    added_ids: Vec<i64>,
    row_keys: Vec<uuid::Uuid>,
    columns: Vec<String>,
    ref_keys: Vec<i64>,
    bodies: Vec<String>,
    created: Vec<chrono::DateTime<chrono::Utc>>,
    /// The size of the values sent.
    bytes: u64,
}

impl TailColumns {
    fn of(rows: &[tokio_postgres::Row]) -> Option<TailColumns> {
        let mut c = TailColumns {
            added_ids: Vec::with_capacity(rows.len()),
            row_keys: Vec::with_capacity(rows.len()),
            columns: Vec::with_capacity(rows.len()),
            ref_keys: Vec::with_capacity(rows.len()),
            bodies: Vec::with_capacity(rows.len()),
            created: Vec::with_capacity(rows.len()),
            bytes: 0,
        };
        for r in rows {
            let column: String = r.try_get(2).ok()?;
            let body: String = r.try_get(4).ok()?;
            c.bytes += (8 + 16 + column.len() + 8 + body.len() + 8) as u64;
            c.added_ids.push(r.try_get(0).ok()?);
            c.row_keys.push(r.try_get(1).ok()?);
            c.columns.push(column);
            c.ref_keys.push(r.try_get(3).ok()?);
            c.bodies.push(body);
            c.created.push(r.try_get(5).ok()?);
        }
        Some(c)
    }
}

/// Streams the COPY data from the source lease into the target lease (in a transaction).
/// Returns (rows, bytes).
async fn pipe(
    tl: &Lease<'_>,
    sl: &Lease<'_>,
    table: &str,
    (after, limit): (i64, Option<i64>),
    stall: Duration,
    bytes_per_sec: Option<u64>,
) -> Result<(u64, u64), StorageError> {
    let mut inp = tl
        .copy_in(&format!(
            "COPY {table} (added_id, row_key, column_name, ref_key, body, created_at) \
             FROM STDIN (FORMAT binary)"
        ))
        .await?
        .stall_timeout(stall);
    // The source's transaction ends as soon as its data is read, before the target finishes:
    // an idle transaction would be ended by the server after the query timeout.
    let bytes = in_transaction(
        sl,
        "BEGIN READ ONLY",
        stream_out(sl, &mut inp, table, (after, limit), stall, bytes_per_sec),
    )
    .await?;
    let rows = inp.finish().await?;
    Ok((rows, bytes))
}

/// Sends the source's rows (in a transaction on `sl`) into `inp`, no faster than
/// `bytes_per_sec`; returns the bytes sent.
async fn stream_out(
    sl: &Lease<'_>,
    inp: &mut CopyIn<'_, '_>,
    table: &str,
    (after, limit): (i64, Option<i64>),
    stall: Duration,
    bytes_per_sec: Option<u64>,
) -> Result<u64, StorageError> {
    // COPY takes no bind parameters: the values travel in transaction-local settings (gone at
    // the end of the transaction, so a pooled connection keeps nothing). With a LIMIT that is
    // not a constant the planner might prefer a full sort; `enable_sort = off` keeps it on the
    // primary key's order, which streams from the first row.
    let after_s = after.to_string();
    let limit_s = limit.map(|l| l.to_string()).unwrap_or_default();
    sl.query(
        "SELECT set_config('mezzanine.after', $1, true), set_config('mezzanine.limit', $2, true), \
                set_config('enable_sort', 'off', true)",
        &[(&after_s, Type::TEXT), (&limit_s, Type::TEXT)],
    )
    .await?;
    let mut out = sl
        .copy_out(&format!(
            "COPY (SELECT added_id, row_key, column_name, ref_key, body, created_at FROM {table} \
                   WHERE added_id > current_setting('mezzanine.after')::int8 \
                   ORDER BY added_id \
                   LIMIT nullif(current_setting('mezzanine.limit'), '')::int8) \
             TO STDOUT (FORMAT binary)"
        ))
        .await?
        .stall_timeout(stall);
    let started = Instant::now();
    let mut bytes = 0u64;
    while let Some(data) = out.next().await? {
        bytes += data.len() as u64;
        inp.send(data).await?;
        if bytes_per_sec.is_none() {
            continue;
        }
        // Waits of less than a millisecond are left to accumulate (the timer's resolution).
        let ahead = throttle_delay(bytes, started.elapsed(), bytes_per_sec);
        if ahead >= Duration::from_millis(1) {
            tokio::time::sleep(ahead).await;
        }
    }
    Ok(bytes)
}

/// `created_at` as text that does not depend on the session (TimeZone, DateStyle): microseconds
/// since the Unix epoch, or `infinity`/`-infinity`.
const CREATED_AT_EXACT: &str = "CASE WHEN isfinite(created_at) \
     THEN ((extract(epoch FROM created_at) * 1000000)::int8)::text ELSE created_at::text END";

/// A row count and an order-independent checksum of a range of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksum {
    pub rows: i64,
    /// The sum of a 64-bit hash of every row (all columns).
    pub sum: i128,
}

/// Counts the rows with `after < added_id <= upto` and sums a 64-bit hash of each row over
/// every column (the first 64 bits of the MD5 of the row's text, with `body` as JSONB's
/// canonical text and `created_at` in microseconds since the epoch). The sum does not depend on
/// row order, on the server or on session settings such as TimeZone: equal data on two
/// servers gives equal checksums. A full scan of the range: a long step.
pub async fn checksum(
    backend: &Backend,
    shard: u32,
    after: i64,
    upto: i64,
) -> Result<Checksum, StorageError> {
    let lease = long_lease(backend).await?;
    let sql = format!(
        "SELECT count(*), coalesce(sum(('x' || left(md5(ROW(added_id, row_key, column_name, ref_key, \
                body::text, {CREATED_AT_EXACT})::text), 16))::bit(64)::int8::numeric), 0)::text \
         FROM {t} WHERE added_id > $1 AND added_id <= $2",
        t = cells_table(shard)
    );
    let rows = lease
        .query(&sql, &[(&after, Type::INT8), (&upto, Type::INT8)])
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| StorageError::shape(backend, "no row from an aggregate"))?;
    let sum: String = col(backend, row, 1)?;
    Ok(Checksum {
        rows: col(backend, row, 0)?,
        sum: sum.parse().map_err(|e| StorageError::shape(backend, e))?,
    })
}

/// Sets the shard's `added_id` sequence so that its next value is greater than `past` and than
/// the table's highest `added_id`; never moves it backwards. Returns the next value. Meant for a
/// target that takes no client writes yet (`importing`).
pub async fn advance_sequence(
    backend: &Backend,
    shard: u32,
    past: i64,
) -> Result<i64, StorageError> {
    let t = cells_table(shard);
    let lease = backend.lease().await?;
    let sql = format!(
        "WITH s AS (SELECT pg_get_serial_sequence($1, 'added_id')::regclass AS seq), \
         cur AS (SELECT s.seq, coalesce(pg_sequence_last_value(s.seq) + p.seqincrement, p.seqstart) AS next \
                 FROM s JOIN pg_sequence p ON p.seqrelid = s.seq), \
         want AS (SELECT greatest($2::int8, (SELECT coalesce(max(added_id), 0) FROM {t})) + 1 AS next) \
         SELECT CASE WHEN want.next > cur.next THEN setval(cur.seq, want.next - 1, true) + 1 \
                     ELSE cur.next END \
         FROM cur, want"
    );
    let rows = lease
        .query(&sql, &[(&t, Type::TEXT), (&past, Type::INT8)])
        .await?;
    match rows.first() {
        Some(r) => col(backend, r, 0),
        None => Err(refused(
            backend,
            shard,
            format!("{t}.added_id has no sequence"),
        )),
    }
}

/// Drops the shard's cells table and deletes its state row, in one transaction: cleaning a
/// retired source after `move complete`, or a target after an abort. Refused when the shard is
/// `active` or `frozen` here, and when its table exists without a state row (mezzanine does not
/// know who serves it, e.g. a go-mezzanine table). Repeating it after success is a no-op.
/// Lock waits (for readers of the table) are bounded like [`set_state`]'s.
pub async fn drop_shard(backend: &Backend, shard: u32) -> Result<(), StorageError> {
    drop_copy(backend, shard, false).await.map(|_| ())
}

/// Drops the shard's copy here only if it is `retired` (checked in the same transaction as
/// the drop): the cleanup of a switched move's source, which must leave alone a copy that a
/// later move is importing into, or serves from, again. Returns whether it dropped one.
pub async fn drop_retired(backend: &Backend, shard: u32) -> Result<bool, StorageError> {
    drop_copy(backend, shard, true).await
}

async fn drop_copy(
    backend: &Backend,
    shard: u32,
    only_retired: bool,
) -> Result<bool, StorageError> {
    let lease = backend.lease().await?;
    in_transaction(
        &lease,
        "BEGIN",
        drop_steps(&lease, backend, shard, only_retired),
    )
    .await
}

async fn drop_steps(
    lease: &Lease<'_>,
    backend: &Backend,
    shard: u32,
    only_retired: bool,
) -> Result<bool, StorageError> {
    let t = cells_table(shard);
    bound_lock_waits(lease, backend).await?;
    // Before the state: without metadata, reading the state fails and aborts the transaction.
    let exists = table_exists(lease, backend, &t).await?;
    let state = state_on(lease, backend, shard, "FOR UPDATE").await?;
    if only_retired && !matches!(state, Some((ShardState::Retired, _))) {
        return Ok(false);
    }
    match state {
        Some((s, _)) if s.serves() => {
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

/// One of the two copies compared by [`diff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    A,
    B,
}

/// A difference between two copies of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The row with this `added_id` is on the other side but not on `side`.
    MissingOn { side: Side, added_id: i64 },
    /// Both sides hold this `added_id` with different values in `columns`.
    Changed {
        added_id: i64,
        columns: Vec<&'static str>,
    },
}

/// The result of [`diff`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffReport {
    /// The differences in `added_id` order, at most the `max_differences` asked for.
    pub differences: Vec<Difference>,
    /// More differences exist than reported (the comparison stopped at the cap).
    pub more: bool,
    /// Rows compared on each side (the whole range unless `more`).
    pub rows_a: u64,
    pub rows_b: u64,
}

impl DiffReport {
    /// Whether the copies are equal over the range.
    pub fn is_equal(&self) -> bool {
        self.differences.is_empty() && !self.more
    }
}

/// One row as the diff compares it (the body by its MD5, to keep chunks small).
#[derive(Debug, PartialEq, Eq)]
struct DiffRow {
    added_id: i64,
    row_key: Uuid,
    column_name: String,
    ref_key: i64,
    body_md5: String,
    created_at: String,
}

impl DiffRow {
    fn changed_columns(&self, other: &DiffRow) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.row_key != other.row_key {
            c.push("row_key");
        }
        if self.column_name != other.column_name {
            c.push("column_name");
        }
        if self.ref_key != other.ref_key {
            c.push("ref_key");
        }
        if self.body_md5 != other.body_md5 {
            c.push("body");
        }
        if self.created_at != other.created_at {
            c.push("created_at");
        }
        c
    }
}

/// Reads one copy of a range in `added_id` order, [`DIFF_CHUNK`] rows per statement.
struct DiffCursor<'b> {
    backend: &'b Backend,
    sql: String,
    last: i64,
    upto: i64,
    buffer: VecDeque<DiffRow>,
    exhausted: bool,
    rows: u64,
}

impl<'b> DiffCursor<'b> {
    fn new(backend: &'b Backend, shard: u32, after: i64, upto: i64) -> Self {
        DiffCursor {
            backend,
            sql: format!(
                "SELECT added_id, row_key, column_name, ref_key, md5(body::text), {CREATED_AT_EXACT} \
                 FROM {t} WHERE added_id > $1 AND added_id <= $2 ORDER BY added_id LIMIT $3",
                t = cells_table(shard)
            ),
            last: after,
            upto,
            buffer: VecDeque::new(),
            exhausted: false,
            rows: 0,
        }
    }

    async fn peek(&mut self) -> Result<Option<&DiffRow>, StorageError> {
        if self.buffer.is_empty() && !self.exhausted {
            let b = self.backend;
            let lease = b.lease().await?;
            let rows = lease
                .query(
                    &self.sql,
                    &[
                        (&self.last, Type::INT8),
                        (&self.upto, Type::INT8),
                        (&DIFF_CHUNK, Type::INT8),
                    ],
                )
                .await?;
            self.exhausted = (rows.len() as i64) < DIFF_CHUNK;
            for r in &rows {
                self.buffer.push_back(DiffRow {
                    added_id: col(b, r, 0)?,
                    row_key: col(b, r, 1)?,
                    column_name: col(b, r, 2)?,
                    ref_key: col(b, r, 3)?,
                    body_md5: col(b, r, 4)?,
                    created_at: col(b, r, 5)?,
                });
            }
            if let Some(last) = self.buffer.back() {
                self.last = last.added_id;
            }
        }
        Ok(self.buffer.front())
    }

    fn pop(&mut self) -> Option<DiffRow> {
        let r = self.buffer.pop_front();
        if r.is_some() {
            self.rows += 1;
        }
        r
    }
}

/// Compares two copies of a shard over `after < added_id <= upto`, row by row in `added_id`
/// order (like Vitess VDiff), reporting every difference up to `max_differences` (then `more`
/// is set and the comparison stops). Both sides are read in chunks of [`DIFF_CHUNK`] rows, each
/// chunk its own statement within the query timeout, so memory stays bounded whatever the
/// range. Bodies are compared by the MD5 of their canonical JSONB text, `created_at` to the
/// microsecond.
pub async fn diff(
    a: &Backend,
    b: &Backend,
    shard: u32,
    after: i64,
    upto: i64,
    max_differences: usize,
) -> Result<DiffReport, StorageError> {
    let mut ca = DiffCursor::new(a, shard, after, upto);
    let mut cb = DiffCursor::new(b, shard, after, upto);
    let mut report = DiffReport::default();
    loop {
        let ida = ca.peek().await?.map(|r| r.added_id);
        let idb = cb.peek().await?.map(|r| r.added_id);
        let order = match (ida, idb) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => x.cmp(&y),
        };
        let found = match order {
            Ordering::Less => ca.pop().map(|r| Difference::MissingOn {
                side: Side::B,
                added_id: r.added_id,
            }),
            Ordering::Greater => cb.pop().map(|r| Difference::MissingOn {
                side: Side::A,
                added_id: r.added_id,
            }),
            Ordering::Equal => match (ca.pop(), cb.pop()) {
                (Some(ra), Some(rb)) if ra != rb => Some(Difference::Changed {
                    added_id: ra.added_id,
                    columns: ra.changed_columns(&rb),
                }),
                _ => None,
            },
        };
        if let Some(d) = found {
            if report.differences.len() >= max_differences {
                report.more = true;
                break;
            }
            report.differences.push(d);
        }
    }
    report.rows_a = ca.rows;
    report.rows_b = cb.rows;
    Ok(report)
}

/// One copy's own invariants, from [`self_check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfCheck {
    /// The state row: state and epoch.
    pub state: Option<(ShardState, i64)>,
    pub table_exists: bool,
    pub rows: i64,
    pub max_added_id: i64,
    /// The value the `added_id` sequence gives next (`None` without a sequence).
    pub next_added_id: Option<i64>,
    /// What is wrong, in words; empty when the copy is sound.
    pub violations: Vec<String>,
}

impl SelfCheck {
    pub fn is_sound(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Checks one copy of a shard on its own: its state row and epoch, its row count and highest
/// `added_id`, that the sequence's next value is above that highest `added_id` (else the next
/// client write would collide), and that the cell key `(row_key, column_name, ref_key)` and
/// `added_id` are unique (by their constraints; when one is missing, the table was altered:
/// reported, with the duplicates actually present). A full scan: a long step.
pub async fn self_check(backend: &Backend, shard: u32) -> Result<SelfCheck, StorageError> {
    let t = cells_table(shard);
    let lease = long_lease(backend).await?;
    let state = state_on(&lease, backend, shard, "").await?;
    let mut check = SelfCheck {
        state,
        table_exists: table_exists(&lease, backend, &t).await?,
        rows: 0,
        max_added_id: 0,
        next_added_id: None,
        violations: Vec::new(),
    };
    if !check.table_exists {
        if let Some((s, _)) = state {
            if s != ShardState::Retired {
                check
                    .violations
                    .push(format!("the shard is {s} here but {t} does not exist"));
            }
        }
        return Ok(check);
    }
    if state.is_none() {
        check
            .violations
            .push(format!("{t} exists but the shard has no state row"));
    }
    let rows = lease
        .query(
            &format!("SELECT count(*), coalesce(max(added_id), 0) FROM {t}"),
            &[],
        )
        .await?;
    if let Some(r) = rows.first() {
        check.rows = col(backend, r, 0)?;
        check.max_added_id = col(backend, r, 1)?;
    }
    let rows = lease
        .query(
            "SELECT coalesce(pg_sequence_last_value(s.seq) + p.seqincrement, p.seqstart) \
             FROM (SELECT pg_get_serial_sequence($1, 'added_id')::regclass AS seq) s \
             JOIN pg_sequence p ON p.seqrelid = s.seq",
            &[(&t, Type::TEXT)],
        )
        .await?;
    check.next_added_id = rows.first().map(|r| col(backend, r, 0)).transpose()?;
    match check.next_added_id {
        None => check
            .violations
            .push(format!("{t}.added_id has no sequence")),
        Some(next) if next <= check.max_added_id => check.violations.push(format!(
            "the added_id sequence gives {next} next, not above the highest added_id {}: the next write would collide",
            check.max_added_id
        )),
        Some(_) => {}
    }
    // A valid, total, plain unique index whose key columns are exactly these.
    let unique_on = "SELECT EXISTS (SELECT 1 FROM pg_index i \
         WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indisvalid \
           AND i.indpred IS NULL AND i.indexprs IS NULL \
           AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a \
                WHERE a.attrelid = i.indrelid \
                  AND a.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1])) = $2::text[])";
    for (columns, what) in [
        (
            vec!["column_name", "ref_key", "row_key"],
            "row_key, column_name, ref_key",
        ),
        (vec!["added_id"], "added_id"),
    ] {
        let rows = lease
            .query(unique_on, &[(&t, Type::TEXT), (&columns, Type::TEXT_ARRAY)])
            .await?;
        let unique: bool = rows
            .first()
            .map(|r| col(backend, r, 0))
            .unwrap_or(Ok(false))?;
        if unique {
            continue;
        }
        let rows = lease
            .query(
                &format!(
                    "SELECT count(*) FROM (SELECT 1 FROM {t} GROUP BY {what} HAVING count(*) > 1) d"
                ),
                &[],
            )
            .await?;
        let dups: i64 = rows.first().map(|r| col(backend, r, 0)).unwrap_or(Ok(0))?;
        // An import builds the cell key's constraint after its bulk copy, before it is
        // activated: only duplicates are wrong then.
        let importing = matches!(check.state, Some((ShardState::Importing, _)));
        if importing && columns.len() == 3 && dups == 0 {
            continue;
        }
        check.violations.push(format!(
            "{t} has no unique constraint on ({what}); {dups} duplicated keys found"
        ));
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in ShardState::ALL {
            assert_eq!(s.as_str().parse::<ShardState>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert!("Active".parse::<ShardState>().is_err());
        assert!("".parse::<ShardState>().is_err());
        assert!(ShardState::Active.serves() && ShardState::Frozen.serves());
        assert!(!ShardState::Importing.serves() && !ShardState::Retired.serves());
    }

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

/// What PostgreSQL's statistics say of one shard's table: for the rebalance planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardStats {
    pub shard: u32,
    /// Rows: `n_live_tup` (or `reltuples` when the statistics were reset); counted exactly
    /// for a small table the statistics know no row of yet.
    pub rows: i64,
    /// On disk, with indexes and TOAST (`pg_total_relation_size`).
    pub bytes: i64,
    /// Rows inserted since the statistics were last reset (`n_tup_ins`): sampled twice, the
    /// difference is the recent write rate.
    pub inserts: i64,
}

/// Tables of which PostgreSQL's statistics know no row yet are counted exactly by
/// [`shard_stats`] if their heap is at most this many bytes.
pub const EXACT_COUNT_BELOW: i64 = 1 << 20;

/// The statistics of every `cells_NNNN` table of the backend, in one statement. Row counts
/// are PostgreSQL's (`n_live_tup`, or `reltuples`), which lag behind recent writes by seconds;
/// a young table they know nothing of yet is counted exactly when small. A long step (it
/// reads the catalog of thousands of tables, and counts some).
pub async fn shard_stats(backend: &Backend) -> Result<Vec<ShardStats>, StorageError> {
    let lease = long_lease(backend).await?;
    let rows = lease
        .query(
            "SELECT substr(c.relname, 7)::int4, \
                    CASE WHEN coalesce(s.n_live_tup, 0) = 0 AND c.reltuples <= 0 \
                              AND pg_relation_size(c.oid) <= $1 THEN \
                      (xpath('/row/n/text()', query_to_xml( \
                         format('SELECT count(*) AS n FROM %I', c.relname), false, true, '')))[1]::text::int8 \
                    ELSE greatest(coalesce(s.n_live_tup, 0), c.reltuples::int8, 0) END, \
                    pg_total_relation_size(c.oid), coalesce(s.n_tup_ins, 0) \
             FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid \
             WHERE c.relkind = 'r' \
               AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) \
               AND c.relname ~ '^cells_[0-9]{4,}$'",
            &[(&EXACT_COUNT_BELOW, Type::INT8)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let shard: i32 = col(backend, r, 0)?;
            Ok(ShardStats {
                shard: shard as u32,
                rows: col(backend, r, 1)?,
                bytes: col(backend, r, 2)?,
                inserts: col(backend, r, 3)?,
            })
        })
        .collect()
}
