//! Comparing and checking copies of a shard: an order-independent checksum of a range, a
//! precise row-by-row diff, and one copy's own invariants.

use std::cmp::Ordering;
use std::collections::VecDeque;

use tokio_postgres::types::Type;
use uuid::Uuid;

use super::state::state_on;
use super::{col, long_lease, table_exists};
use crate::schema::cells_table;
use crate::shard_state::ShardState;
use crate::{Backend, StorageError};

/// Rows per statement of [`diff`], on each side.
pub const DIFF_CHUNK: i64 = 10_000;

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
    let state = state_on(&lease, backend, shard, "")
        .await?
        .map(|r| (r.state, r.epoch));
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
