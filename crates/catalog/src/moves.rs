//! Move jobs in the catalog: creating them, reading them, and operators' requests (abort,
//! complete, revert). The mover's own updates go through the leader's session
//! ([`crate::LeaderSession`]), so that only the leader changes a running move.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use mezzanine_core::moves::{job_state, JobState, ShardMoveState};
use serde::Serialize;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use mezzanine_storage::backend::Lease;

use crate::{audit, corrupt, notify, query, scalar, Catalog, CatalogError};

/// A move job with its shards.
#[derive(Debug, Clone, Serialize)]
pub struct MoveJob {
    pub id: i64,
    /// `running`, `switched`, `completed`, `aborted`, `failed` or `reverted`.
    #[serde(serialize_with = "job_state_name")]
    pub state: JobState,
    /// The target backend (several, comma-separated, for a revert of shards from several).
    pub to: String,
    pub shards_spec: String,
    pub parallel: i32,
    pub max_rows_per_sec: Option<i64>,
    /// An operator's pending request: `abort` or `complete`.
    pub requested: Option<Request>,
    /// The job this one moves back.
    pub reverts: Option<i64>,
    /// The job that moved this one's shards back.
    pub reverted_by: Option<i64>,
    pub error: Option<String>,
    /// The rebalance this job is part of.
    pub rebalance: Option<i64>,
    /// Drop the sources as soon as every shard is switched (a drain's moves).
    pub auto_complete: bool,
    pub created_at: DateTime<Utc>,
    /// The job's last change: a shard's change of state (its switch, an abort, ...), an
    /// operator's request, or a revert; not copy progress.
    pub updated_at: DateTime<Utc>,
    pub shards: Vec<MoveShard>,
}

pub(crate) fn job_state_name<S: serde::Serializer>(
    s: &JobState,
    ser: S,
) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// One shard of a move job.
#[derive(Debug, Clone, Serialize)]
pub struct MoveShard {
    pub shard: u32,
    pub from: String,
    pub to: String,
    #[serde(serialize_with = "state_name")]
    pub state: ShardMoveState,
    /// Highest `added_id` copied to the target.
    pub high_water: i64,
    pub rows_copied: i64,
    /// The source's row count (an estimate while copying).
    pub rows_total: i64,
    /// Rows still to copy after the last catch-up round.
    pub lag: Option<i64>,
    /// How long client writes of this shard were paused by the cutover (from the freeze to
    /// the map switch, by the catalog's clock, across a change of leader).
    pub pause_ms: Option<f64>,
    /// The copied prefix (`added_id` up to this) was verified before the freeze.
    pub verified: i64,
    pub error: Option<String>,
    pub switched_at: Option<DateTime<Utc>>,
    /// The target's copy is still to be fenced (demoted from `active` and dropped) once the
    /// target answers: an undone cutover could not reach it. No map names that copy, so no
    /// client reaches it meanwhile.
    pub fence_pending: bool,
}

fn state_name<S: serde::Serializer>(s: &ShardMoveState, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// A move to create.
#[derive(Debug, Clone)]
pub struct NewMove {
    /// The shards, each with its target.
    pub shards: Vec<(u32, String)>,
    pub shards_spec: String,
    pub parallel: i32,
    pub max_rows_per_sec: Option<i64>,
    pub reverts: Option<i64>,
    /// Drop the sources as soon as every shard is switched.
    pub auto_complete: bool,
}

/// What an operator asks of a job (`mezzanine.moves.requested`, checked there): the mover's
/// leader carries it out and clears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Request {
    /// Stop the shards not switched yet, undoing what they did.
    Abort,
    /// Drop the old source copies of the switched shards.
    Complete,
}

impl Request {
    pub const ALL: [Request; 2] = [Request::Abort, Request::Complete];

    /// The name the catalog stores (and the admin API shows).
    pub fn as_str(self) -> &'static str {
        match self {
            Request::Abort => "abort",
            Request::Complete => "complete",
        }
    }

    /// The request a stored name stands for.
    pub fn parse(s: &str) -> Option<Request> {
        Request::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The `requested` column of a job's row: a name [`Request::parse`] knows, or none.
fn request_from(r: &Row, i: usize) -> Result<Option<Request>, CatalogError> {
    let name: Option<String> = r.try_get(i).map_err(corrupt)?;
    name.map(|n| {
        Request::parse(&n).ok_or_else(|| CatalogError::Corrupt(format!("unknown request {n:?}")))
    })
    .transpose()
}

const JOB_COLUMNS: &str = "m.id, m.to_backend, m.shards_spec, m.parallel, m.max_rows_per_sec, \
    m.requested, m.reverts, m.reverted_by, m.error, m.created_at, m.updated_at, \
    coalesce((SELECT bool_and(r.state IN ('switched', 'cleaned')) FROM mezzanine.move_shards r \
              WHERE r.move_id = m.reverted_by), false), m.rebalance_id, m.auto_complete";

const SHARD_COLUMNS: &str = "move_id, shard, from_backend, to_backend, state, high_water, \
    rows_copied, rows_total, lag, pause_ms, error, switched_at, verified, fence_target";

fn shard_from(r: &Row) -> Result<(i64, MoveShard), CatalogError> {
    let state: String = r.try_get(4).map_err(corrupt)?;
    let shard: i32 = r.try_get(1).map_err(corrupt)?;
    Ok((
        r.try_get(0).map_err(corrupt)?,
        MoveShard {
            shard: shard as u32,
            from: r.try_get(2).map_err(corrupt)?,
            to: r.try_get(3).map_err(corrupt)?,
            state: ShardMoveState::parse(&state)
                .ok_or_else(|| CatalogError::Corrupt(format!("unknown move state {state:?}")))?,
            high_water: r.try_get(5).map_err(corrupt)?,
            rows_copied: r.try_get(6).map_err(corrupt)?,
            rows_total: r.try_get(7).map_err(corrupt)?,
            lag: r.try_get(8).map_err(corrupt)?,
            pause_ms: r.try_get(9).map_err(corrupt)?,
            error: r.try_get(10).map_err(corrupt)?,
            switched_at: r.try_get(11).map_err(corrupt)?,
            verified: r.try_get(12).map_err(corrupt)?,
            fence_pending: r.try_get(13).map_err(corrupt)?,
        },
    ))
}

fn job_from(r: &Row, shards: Vec<MoveShard>) -> Result<MoveJob, CatalogError> {
    let reverted: bool = r.try_get(11).map_err(corrupt)?;
    let states: Vec<ShardMoveState> = shards.iter().map(|s| s.state).collect();
    Ok(MoveJob {
        id: r.try_get(0).map_err(corrupt)?,
        state: job_state(&states, reverted),
        to: r.try_get(1).map_err(corrupt)?,
        shards_spec: r.try_get(2).map_err(corrupt)?,
        parallel: r.try_get(3).map_err(corrupt)?,
        max_rows_per_sec: r.try_get(4).map_err(corrupt)?,
        requested: request_from(r, 5)?,
        reverts: r.try_get(6).map_err(corrupt)?,
        reverted_by: r.try_get(7).map_err(corrupt)?,
        error: r.try_get(8).map_err(corrupt)?,
        rebalance: r.try_get(12).map_err(corrupt)?,
        auto_complete: r.try_get(13).map_err(corrupt)?,
        created_at: r.try_get(9).map_err(corrupt)?,
        updated_at: r.try_get(10).map_err(corrupt)?,
        shards,
    })
}

impl Catalog {
    /// The jobs `filter` selects (a `WHERE`/`ORDER BY`/`LIMIT` tail on `mezzanine.moves m`),
    /// with their shards: two statements.
    pub(crate) async fn jobs(
        &self,
        filter: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<MoveJob>, CatalogError> {
        let rows = query(
            self,
            &format!("SELECT {JOB_COLUMNS} FROM mezzanine.moves m {filter}"),
            params,
        )
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| r.try_get(0).map_err(corrupt))
            .collect::<Result<_, _>>()?;
        let shard_rows = query(
            self,
            &format!("SELECT {SHARD_COLUMNS} FROM mezzanine.move_shards WHERE move_id = ANY($1) ORDER BY move_id, shard"),
            &[(&ids, Type::INT8_ARRAY)],
        )
        .await?;
        let mut shards: HashMap<i64, Vec<MoveShard>> = HashMap::new();
        for r in &shard_rows {
            let (id, shard) = shard_from(r)?;
            shards.entry(id).or_default().push(shard);
        }
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get(0).map_err(corrupt)?;
                job_from(r, shards.remove(&id).unwrap_or_default())
            })
            .collect()
    }

    /// The most recent jobs, newest first.
    pub async fn list_moves(&self, limit: i64) -> Result<Vec<MoveJob>, CatalogError> {
        self.jobs("ORDER BY m.id DESC LIMIT $1", &[(&limit, Type::INT8)])
            .await
    }

    /// One job.
    pub async fn get_move(&self, id: i64) -> Result<MoveJob, CatalogError> {
        self.jobs("WHERE m.id = $1", &[(&id, Type::INT8)])
            .await?
            .pop()
            .ok_or_else(|| CatalogError::NotFound(format!("no move job {id}")))
    }

    /// Jobs the mover has work for: a shard in flight or switched (cleaned once completed or
    /// past the retention period), or an operator's request not cleared yet (a job whose
    /// every shard an abort stopped has none of those left, and its request is cleared only
    /// then), newest first.
    pub async fn open_moves(&self) -> Result<Vec<MoveJob>, CatalogError> {
        self.jobs(
            "WHERE m.requested IS NOT NULL \
                OR EXISTS (SELECT 1 FROM mezzanine.move_shards s WHERE s.move_id = m.id \
               AND s.state IN ('pending', 'copying', 'catching_up', 'cutover', 'switched')) \
             ORDER BY m.id DESC",
            &[],
        )
        .await
    }

    /// Creates a move job (state `pending` for every shard). Refused when a target is unknown
    /// or draining, a shard is on its target already, or a shard is in another unfinished
    /// move.
    pub async fn create_move(&self, new: &NewMove) -> Result<MoveJob, CatalogError> {
        let lease = self.begin_change().await?;
        let body = create_move_on(&lease, new, None).await;
        let detail = serde_json::json!({
            "shards": new.shards_spec,
            "to": new.shards.first().map(|(_, t)| t.clone()),
            "reverts": new.reverts,
        });
        let (id, _) = self.end_change(lease, body, "move_start", &detail).await?;
        self.get_move(id).await
    }

    /// Records an operator's request; the mover's leader carries it out.
    pub async fn request_move(&self, id: i64, what: Request) -> Result<MoveJob, CatalogError> {
        let job = self.get_move(id).await?;
        let state = job.state;
        match what {
            Request::Abort => {
                if state != JobState::Running {
                    return Err(CatalogError::Conflict(format!(
                        "move {id} is {}: only a running move can be aborted{}",
                        state.as_str(),
                        if state == JobState::Switched {
                            " (its shards are switched: use revert to move them back)"
                        } else {
                            ""
                        }
                    )));
                }
            }
            Request::Complete => {
                if !job
                    .shards
                    .iter()
                    .any(|s| s.state == ShardMoveState::Switched)
                    || state == JobState::Running
                {
                    return Err(CatalogError::Conflict(format!(
                        "move {id} is {}: complete drops the sources of switched shards, once every shard is switched",
                        state.as_str()
                    )));
                }
            }
        }
        self.set_requested(
            &[id],
            what,
            &format!("move_{}", what.as_str()),
            serde_json::json!({"id": id}),
        )
        .await?;
        self.get_move(id).await
    }

    /// Records an operator's request on jobs, with its audit entry, and wakes the mover.
    pub(crate) async fn set_requested(
        &self,
        ids: &[i64],
        what: Request,
        kind: &str,
        detail: serde_json::Value,
    ) -> Result<(), CatalogError> {
        let ids = ids.to_vec();
        let name = what.as_str();
        let lease = self.lease().await?;
        lease
            .query(
                "UPDATE mezzanine.moves SET requested = $2, updated_at = now() WHERE id = ANY($1)",
                &[(&ids, Type::INT8_ARRAY), (&name, Type::TEXT)],
            )
            .await?;
        audit(&lease, &self.node, kind, &detail).await?;
        notify(&lease, "moves").await
    }

    /// Creates the job that moves the switched shards of job `id` back to where they came
    /// from.
    pub async fn revert_move(&self, id: i64) -> Result<MoveJob, CatalogError> {
        let job = self.get_move(id).await?;
        if job.reverted_by.is_some() {
            return Err(CatalogError::Conflict(format!(
                "move {id} was reverted already (by move {})",
                job.reverted_by.unwrap_or_default()
            )));
        }
        let back: Vec<(u32, String)> = job
            .shards
            .iter()
            .filter(|s| matches!(s.state, ShardMoveState::Switched | ShardMoveState::Cleaned))
            .map(|s| (s.shard, s.from.clone()))
            .collect();
        if back.is_empty() || job.state == JobState::Running {
            return Err(CatalogError::Conflict(format!(
                "move {id} is {}: only a move whose shards are switched can be reverted",
                job.state.as_str()
            )));
        }
        let shards: Vec<u32> = back.iter().map(|(s, _)| *s).collect();
        self.create_move(&NewMove {
            shards: back,
            shards_spec: mezzanine_core::format_shard_set(&shards),
            parallel: job.parallel,
            max_rows_per_sec: job.max_rows_per_sec,
            reverts: Some(id),
            auto_complete: false,
        })
        .await
    }
}

/// Creates a move job inside the caller's catalog change (see [`Catalog::create_move`]).
pub(crate) async fn create_move_on(
    lease: &Lease<'_>,
    new: &NewMove,
    rebalance: Option<i64>,
) -> Result<i64, CatalogError> {
    if new.shards.is_empty() {
        return Err(CatalogError::Invalid("shards: no shard to move".into()));
    }
    let shard_ids: Vec<i32> = new.shards.iter().map(|(s, _)| *s as i32).collect();
    let targets: Vec<&str> = new.shards.iter().map(|(_, t)| t.as_str()).collect();
    let rows = lease
        .query(
            "SELECT u.s, u.t, s.backend, b.name IS NOT NULL, coalesce(b.draining, false) \
                 FROM unnest($1::int4[], $2::text[]) AS u(s, t) \
                 LEFT JOIN mezzanine.shards s ON s.shard = u.s \
                 LEFT JOIN mezzanine.backends b ON b.name = u.t ORDER BY u.s",
            &[(&shard_ids, Type::INT4_ARRAY), (&targets, Type::TEXT_ARRAY)],
        )
        .await?;
    // In shard order, as the rows come.
    let mut s_sorted: Vec<i32> = Vec::with_capacity(rows.len());
    let mut t_sorted: Vec<String> = Vec::with_capacity(rows.len());
    let mut from: Vec<String> = Vec::with_capacity(rows.len());
    for r in &rows {
        let s: i32 = r.try_get(0).map_err(corrupt)?;
        let t: String = r.try_get(1).map_err(corrupt)?;
        let owner: Option<String> = r.try_get(2).map_err(corrupt)?;
        let known: bool = r.try_get(3).map_err(corrupt)?;
        let draining: bool = r.try_get(4).map_err(corrupt)?;
        if !known {
            return Err(CatalogError::NotFound(format!(
                "to: no backend {t:?} (register it with `mezzanine backend add`)"
            )));
        }
        if draining {
            return Err(CatalogError::Conflict(format!(
                    "to: backend {t:?} is draining and receives no shard (`mezzanine backend set {t} --draining false` to take it back)"
                )));
        }
        let owner = owner
            .ok_or_else(|| CatalogError::Invalid(format!("shards: shard {s} does not exist")))?;
        if owner == t {
            return Err(CatalogError::Conflict(format!(
                "shards: shard {s} is on backend {t:?} already"
            )));
        }
        from.push(owner);
        s_sorted.push(s);
        t_sorted.push(t);
    }
    let to_all = {
        let mut v: Vec<&str> = targets.clone();
        v.sort_unstable();
        v.dedup();
        v.join(",")
    };
    let id: i64 = scalar(
        lease,
        "INSERT INTO mezzanine.moves (to_backend, shards_spec, parallel, max_rows_per_sec, reverts, rebalance_id, auto_complete) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    (&to_all, Type::TEXT),
                    (&new.shards_spec, Type::TEXT),
                    (&new.parallel, Type::INT4),
                    (&new.max_rows_per_sec, Type::INT8),
                    (&new.reverts, Type::INT8),
                    (&rebalance, Type::INT8),
                    (&new.auto_complete, Type::BOOL),
                ],
    )
    .await?;
    let inserted = lease
            .query(
                "INSERT INTO mezzanine.move_shards (move_id, shard, from_backend, to_backend, state) \
                 SELECT $1, u.s, u.f, u.t, 'pending' FROM unnest($2::int4[], $3::text[], $4::text[]) AS u(s, f, t)",
                &[
                    (&id, Type::INT8),
                    (&s_sorted, Type::INT4_ARRAY),
                    (&from, Type::TEXT_ARRAY),
                    (&t_sorted, Type::TEXT_ARRAY),
                ],
            )
            .await;
    match inserted {
            Ok(_) => {}
            Err(mezzanine_storage::StorageError::Database {
                code: Some(code), ..
            }) if code == mezzanine_storage::SqlState::UNIQUE_VIOLATION => {
                return Err(CatalogError::Conflict(
                    "shards: some of these shards are in another unfinished move (see `mezzanine move list`)".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    if let Some(r) = new.reverts {
        lease
            .query(
                "UPDATE mezzanine.moves SET reverted_by = $2, updated_at = now() WHERE id = $1",
                &[(&r, Type::INT8), (&id, Type::INT8)],
            )
            .await?;
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::Request;

    #[test]
    fn requests_round_trip_by_their_stored_names() {
        for r in Request::ALL {
            assert_eq!(Request::parse(r.as_str()), Some(r));
            let json = serde_json::to_value(r).ok();
            assert_eq!(json, Some(serde_json::json!(r.as_str())));
        }
        assert_eq!(Request::parse("Abort"), None);
        assert_eq!(Request::parse("revert"), None);
    }
}
