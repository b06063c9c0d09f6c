//! Moving rows between backends: binary `COPY` piped through unchanged (bulk copy and
//! catching up), a cutover's small tail as typed values, the target's deferred indexes and
//! its sequence.

use std::time::{Duration, Instant};

use mezzanine_core::moves::throttle_delay;
use mezzanine_core::Term;
use tokio_postgres::types::Type;

use super::state::{check_importing, check_term, state_on};
use super::{col, in_transaction, long_lease, parse_state, refused, COPY_STALL};
use crate::backend::{CopyIn, Lease};
use crate::cells::CELL_COLUMNS;
use crate::schema::{self, cells_table};
use crate::{Backend, StorageError};

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
/// `after` (so the copy extends a prefix; pass the target's
/// [`max_added_id`](super::max_added_id)); otherwise [`StorageError::Refused`]; and that the
/// row holds no higher term than the leader's `term` (else [`StorageError::Superseded`]). The
/// source side is one read-only statement (a snapshot: by I1, a prefix of the shard).
///
/// Bounded by [`long_step_deadline`](super::long_step_deadline) per call and by the COPY
/// stall timeout (see the module documentation); a source or target that fails or goes away
/// gives a `StorageError` (`Unavailable` for connection trouble) and leaves the target
/// unchanged.
pub async fn copy_rows(
    source: &Backend,
    target: &Backend,
    shard: u32,
    after: i64,
    limit: Option<i64>,
    term: Term,
) -> Result<CopyReport, StorageError> {
    copy_rows_paced(source, target, shard, after, limit, None, term).await
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
    term: Term,
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
        let row = state_on(tl, target, shard, "FOR SHARE").await?;
        if let Some(r) = row {
            check_term(target, shard, r.term, term)?;
        }
        check_importing(target, shard, row.map(|r| r.state))?;
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
/// and one statement on the target that checks the target (importing, nothing above `after`,
/// no higher term than the leader's `term` in its row) and inserts the rows: two round trips
/// instead of COPY's two transactions. The values
/// keep their types (`body` as JSONB's own text, which parses back to the same JSONB); the
/// cutover verifies every column afterwards. Longer tails, and values the driver cannot
/// carry (an infinite `created_at`), go through [`copy_rows`].
pub async fn copy_tail(
    source: &Backend,
    target: &Backend,
    shard: u32,
    after: i64,
    term: Term,
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
        return copy_rows(source, target, shard, after, None, term).await;
    };
    let shard_i = shard as i32;
    let tl = target.lease().await?;
    let row = tl
        .query(
            &format!(
                "WITH st AS (SELECT state, term FROM mezzanine_shard_state WHERE shard = $1 FOR SHARE), \
                 have AS (SELECT coalesce(max(added_id), 0) AS m FROM {t}), \
                 ins AS (INSERT INTO {t} (added_id, row_key, column_name, ref_key, body, created_at) \
                         SELECT a, r, c, k, b::jsonb, ts \
                         FROM unnest($2::int8[], $3::uuid[], $4::text[], $5::int8[], $6::text[], \
                                     $7::timestamptz[]) AS u(a, r, c, k, b, ts) \
                         WHERE (SELECT state FROM st) = 'importing' AND (SELECT m FROM have) <= $8 \
                           AND (SELECT term FROM st) <= $9 \
                         RETURNING 1) \
                 SELECT (SELECT state FROM st), (SELECT m FROM have), (SELECT count(*) FROM ins), \
                        (SELECT term FROM st)"
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
                (&term.0, Type::INT8),
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
    let found: Option<i64> = col(target, row, 3)?;
    if let Some(found) = found {
        check_term(target, shard, Term(found), term)?;
    }
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

/// Sets the shard's `added_id` sequence so that its next value is greater than `past` and than
/// the table's highest `added_id`; never moves it backwards. Returns the next value. Meant for a
/// target that takes no client writes yet (`importing`). Refused, the sequence left as it is,
/// when the shard's row holds a higher term than the leader's `term`
/// ([`StorageError::Superseded`]; the row is read `FOR SHARE` in the same statement, so no
/// newer leader's claim comes between the check and the change).
pub async fn advance_sequence(
    backend: &Backend,
    shard: u32,
    past: i64,
    term: Term,
) -> Result<i64, StorageError> {
    let t = cells_table(shard);
    let shard_i = shard as i32;
    let lease = backend.lease().await?;
    let sql = format!(
        "WITH st AS (SELECT term FROM mezzanine_shard_state WHERE shard = $3 FOR SHARE), \
         s AS (SELECT pg_get_serial_sequence($1, 'added_id')::regclass AS seq), \
         cur AS (SELECT s.seq, coalesce(pg_sequence_last_value(s.seq) + p.seqincrement, p.seqstart) AS next \
                 FROM s JOIN pg_sequence p ON p.seqrelid = s.seq), \
         want AS (SELECT greatest($2::int8, (SELECT coalesce(max(added_id), 0) FROM {t})) + 1 AS next) \
         SELECT CASE WHEN (SELECT term FROM st) > $4 THEN NULL \
                     WHEN want.next > cur.next THEN setval(cur.seq, want.next - 1, true) + 1 \
                     ELSE cur.next END, \
                (SELECT term FROM st) \
         FROM cur, want"
    );
    let rows = lease
        .query(
            &sql,
            &[
                (&t, Type::TEXT),
                (&past, Type::INT8),
                (&shard_i, Type::INT4),
                (&term.0, Type::INT8),
            ],
        )
        .await?;
    let Some(r) = rows.first() else {
        return Err(refused(
            backend,
            shard,
            format!("{t}.added_id has no sequence"),
        ));
    };
    let found: Option<i64> = col(backend, r, 1)?;
    if let Some(found) = found {
        check_term(backend, shard, Term(found), term)?;
    }
    let next: Option<i64> = col(backend, r, 0)?;
    next.ok_or_else(|| StorageError::shape(backend, "no next value of the sequence"))
}
