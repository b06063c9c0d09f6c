//! Rebalances in the catalog (DESIGN §6): a plan carried out as move jobs, one per target
//! backend, created in one change, with one progress view, one abort and one complete.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use mezzanine_core::moves::{job_state, JobState, ShardMoveState};
use serde::Serialize;
use tokio_postgres::types::Type;

use crate::moves::{create_move_on, job_state_name, MoveJob, NewMove};
use crate::{corrupt, query, scalar, Catalog, CatalogError, Request};

/// A rebalance to create.
#[derive(Debug, Clone)]
pub struct NewRebalance {
    pub strategy: String,
    /// The backend being drained, for `backend drain`.
    pub drain: Option<String>,
    /// Bulk copies running at once, over all the rebalance's jobs.
    pub parallel: i32,
    /// Rows per second over all the rebalance's copies.
    pub max_rows_per_sec: Option<i64>,
    /// Drop the sources as soon as every shard of a job is switched.
    pub auto_complete: bool,
    /// The plan as shown to the operator (kept for the record).
    pub plan: serde_json::Value,
    /// One job per target backend.
    pub moves: Vec<NewMove>,
}

/// A rebalance with its jobs and their combined progress.
#[derive(Debug, Clone, Serialize)]
pub struct Rebalance {
    pub id: i64,
    /// `running`, `switched`, `completed`, `aborted` or `failed`, over all its shards.
    #[serde(serialize_with = "job_state_name")]
    pub state: JobState,
    pub strategy: String,
    pub drain: Option<String>,
    pub parallel: i32,
    pub max_rows_per_sec: Option<i64>,
    pub auto_complete: bool,
    /// An operator's request (`abort` or `complete`) that the mover has not carried out on
    /// every job yet.
    pub requested: Option<Request>,
    pub created_at: DateTime<Utc>,
    pub progress: Progress,
    pub plan: serde_json::Value,
    pub jobs: Vec<MoveJob>,
}

/// The combined progress of a rebalance's shards.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    pub shards: usize,
    /// Shards now served by their target (switched, or switched and cleaned).
    pub switched: usize,
    pub aborted: usize,
    pub failed: usize,
    pub rows_copied: i64,
    pub rows_total: i64,
    /// The longest write pause of its cutovers.
    pub worst_pause_ms: Option<f64>,
}

impl Progress {
    fn of(jobs: &[MoveJob]) -> Progress {
        let mut p = Progress::default();
        for s in jobs.iter().flat_map(|j| &j.shards) {
            p.shards += 1;
            match s.state {
                ShardMoveState::Switched | ShardMoveState::Cleaned => p.switched += 1,
                ShardMoveState::Aborted => p.aborted += 1,
                ShardMoveState::Failed => p.failed += 1,
                _ => {}
            }
            p.rows_copied += s.rows_copied;
            p.rows_total += s.rows_total.max(s.rows_copied);
            if let Some(ms) = s.pause_ms {
                p.worst_pause_ms = Some(p.worst_pause_ms.map_or(ms, |w: f64| w.max(ms)));
            }
        }
        p
    }
}

const REBALANCE_COLUMNS: &str =
    "id, strategy, drain, parallel, max_rows_per_sec, auto_complete, plan, created_at";

impl Catalog {
    /// Creates a rebalance and its move jobs in one change. Refused while another rebalance
    /// has shards in flight.
    pub async fn create_rebalance(&self, new: &NewRebalance) -> Result<Rebalance, CatalogError> {
        if new.moves.is_empty() {
            return Err(CatalogError::Invalid(
                "the plan has no move: the backends are balanced".into(),
            ));
        }
        let lease = self.begin_change().await?;
        let body = async {
            let busy: Vec<i64> = lease
                .query(
                    "SELECT DISTINCT m.rebalance_id FROM mezzanine.moves m \
                     JOIN mezzanine.move_shards s ON s.move_id = m.id \
                     WHERE m.rebalance_id IS NOT NULL \
                       AND s.state IN ('pending', 'copying', 'catching_up', 'cutover')",
                    &[],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0).map_err(corrupt))
                .collect::<Result<_, _>>()?;
            if let Some(other) = busy.first() {
                return Err(CatalogError::Conflict(format!(
                    "rebalance {other} is still running: wait for it (`mezzanine rebalance status {other} --wait`) or abort it"
                )));
            }
            let id: i64 = scalar(
                &lease,
                    "INSERT INTO mezzanine.rebalances (strategy, drain, parallel, max_rows_per_sec, auto_complete, plan) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[
                        (&new.strategy, Type::TEXT),
                        (&new.drain, Type::TEXT),
                        (&new.parallel, Type::INT4),
                        (&new.max_rows_per_sec, Type::INT8),
                        (&new.auto_complete, Type::BOOL),
                        (&new.plan, Type::JSONB),
                    ],
            )
            .await?;
            for m in &new.moves {
                create_move_on(&lease, m, Some(id)).await?;
            }
            Ok(id)
        }
        .await;
        let detail = serde_json::json!({
            "strategy": new.strategy,
            "drain": new.drain,
            "moves": new.moves.iter().map(|m| serde_json::json!({
                "shards": m.shards_spec,
                "to": m.shards.first().map(|(_, t)| t.clone()),
            })).collect::<Vec<_>>(),
        });
        let (id, _) = self
            .end_change(lease, body, "rebalance_start", &detail)
            .await?;
        self.get_rebalance(id).await
    }

    /// One rebalance.
    pub async fn get_rebalance(&self, id: i64) -> Result<Rebalance, CatalogError> {
        self.rebalances(Some(id), 1)
            .await?
            .pop()
            .ok_or_else(|| CatalogError::NotFound(format!("no rebalance {id}")))
    }

    /// The most recent rebalances, newest first.
    pub async fn list_rebalances(&self, limit: i64) -> Result<Vec<Rebalance>, CatalogError> {
        self.rebalances(None, limit).await
    }

    async fn rebalances(
        &self,
        id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Rebalance>, CatalogError> {
        let rows = query(
            self,
            &format!(
                "SELECT {REBALANCE_COLUMNS} FROM mezzanine.rebalances \
                 WHERE $1::int8 IS NULL OR id = $1 ORDER BY id DESC LIMIT $2"
            ),
            &[(&id, Type::INT8), (&limit, Type::INT8)],
        )
        .await?;
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| r.try_get(0).map_err(corrupt))
            .collect::<Result<_, _>>()?;
        let mut by_rebalance: HashMap<i64, Vec<MoveJob>> = HashMap::new();
        for job in self
            .jobs(
                "WHERE m.rebalance_id = ANY($1) ORDER BY m.id",
                &[(&ids, Type::INT8_ARRAY)],
            )
            .await?
        {
            by_rebalance
                .entry(job.rebalance.unwrap_or_default())
                .or_default()
                .push(job);
        }
        let mut out = Vec::with_capacity(rows.len());
        for (r, id) in rows.iter().zip(ids) {
            let jobs = by_rebalance.remove(&id).unwrap_or_default();
            let states: Vec<ShardMoveState> = jobs
                .iter()
                .flat_map(|j| j.shards.iter().map(|s| s.state))
                .collect();
            out.push(Rebalance {
                id,
                state: job_state(&states, false),
                strategy: r.try_get(1).map_err(corrupt)?,
                drain: r.try_get(2).map_err(corrupt)?,
                parallel: r.try_get(3).map_err(corrupt)?,
                max_rows_per_sec: r.try_get(4).map_err(corrupt)?,
                auto_complete: r.try_get(5).map_err(corrupt)?,
                requested: jobs.iter().find_map(|j| j.requested),
                plan: r.try_get(6).map_err(corrupt)?,
                created_at: r.try_get(7).map_err(corrupt)?,
                progress: Progress::of(&jobs),
                jobs,
            });
        }
        Ok(out)
    }

    /// An operator's request for a whole rebalance: `abort` stops the shards not switched
    /// yet (the switched ones stay where they are); `complete` drops the sources of the
    /// switched shards once none is in flight.
    pub async fn request_rebalance(
        &self,
        id: i64,
        what: Request,
    ) -> Result<Rebalance, CatalogError> {
        let rebalance = self.get_rebalance(id).await?;
        let targets: Vec<i64> = match what {
            Request::Abort => {
                if rebalance.state != JobState::Running {
                    return Err(CatalogError::Conflict(format!(
                        "rebalance {id} is {}: only a running rebalance can be aborted",
                        rebalance.state.as_str()
                    )));
                }
                let running = rebalance
                    .jobs
                    .iter()
                    .filter(|j| j.state == JobState::Running)
                    .map(|j| j.id)
                    .collect();
                running
            }
            Request::Complete => {
                if rebalance.state == JobState::Running || rebalance.progress.switched == 0 {
                    return Err(CatalogError::Conflict(format!(
                        "rebalance {id} is {}: complete drops the sources of switched shards, once no shard is in flight",
                        rebalance.state.as_str()
                    )));
                }
                let switched = rebalance
                    .jobs
                    .iter()
                    .filter(|j| j.shards.iter().any(|s| s.state == ShardMoveState::Switched))
                    .map(|j| j.id)
                    .collect();
                switched
            }
        };
        self.set_requested(
            &targets,
            what,
            &format!("rebalance_{}", what.as_str()),
            serde_json::json!({"id": id, "moves": targets}),
        )
        .await?;
        self.get_rebalance(id).await
    }

    /// Shards in an unfinished move (pending to cutover), with their target.
    pub async fn shards_in_flight(&self) -> Result<Vec<(u32, String)>, CatalogError> {
        query(
            self,
            "SELECT shard, to_backend FROM mezzanine.move_shards \
             WHERE state IN ('pending', 'copying', 'catching_up', 'cutover')",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            let s: i32 = r.try_get(0).map_err(corrupt)?;
            Ok((s as u32, r.try_get(1).map_err(corrupt)?))
        })
        .collect()
    }

    /// The last (up to 500) shard moves that reached their switch: rows copied, and when the
    /// copy started and the shard switched (seconds since the epoch).
    pub async fn copy_history(&self) -> Result<Vec<(u64, f64, f64)>, CatalogError> {
        query(
            self,
            "SELECT rows_copied, extract(epoch FROM started_at)::float8, \
                    extract(epoch FROM switched_at)::float8 \
             FROM mezzanine.move_shards \
             WHERE started_at IS NOT NULL AND switched_at IS NOT NULL \
             ORDER BY switched_at DESC LIMIT 500",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            let rows: i64 = r.try_get(0).map_err(corrupt)?;
            Ok((
                rows.max(0) as u64,
                r.try_get(1).map_err(corrupt)?,
                r.try_get(2).map_err(corrupt)?,
            ))
        })
        .collect()
    }
}
