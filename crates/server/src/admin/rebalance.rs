//! Rebalancing (DESIGN §6): `POST /admin/v1/rebalance/plan|apply`, the rebalances' progress,
//! abort and complete, and `POST /admin/v1/backends/{name}/drain`.
//!
//! The plan is made by the pure planner of [`mezzanine_core::rebalance`]; this module only
//! gathers its inputs (the catalog's map, weights and moves in flight, and PostgreSQL's
//! statistics of every shard table) and turns its output into move jobs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mezzanine_catalog::{NewMove, NewRebalance, Request};
use mezzanine_core::copytime::CopyModel;
use mezzanine_core::rebalance::{plan, PlanBackend, PlanShard, Strategy};
use mezzanine_core::{format_shard_set, FieldError};
use mezzanine_storage::transfer::shard_stats;
use mezzanine_storage::ShardStats;
use serde::Serialize;
use serde_json::{json, Value};

use super::{limit_param, object, optional_bool, parse_id, positive_field};
use crate::api::{path_problem, read_text_json};
use crate::problem::Problem;
use crate::AppState;

/// Bulk copies at once in a rebalance, unless the request says otherwise.
pub const DEFAULT_PARALLEL: i64 = 2;

/// How long the write rate is sampled for the `writes` strategy, unless told.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// What the operator asked to plan.
pub(super) struct PlanRequest {
    strategy: Strategy,
    pub(super) window: Duration,
    pub(super) parallel: i64,
    /// Plan only the shards of this backend (a drain): every other shard stays.
    drain: Option<String>,
}

/// One move of a plan, as shown.
#[derive(Debug, Clone, Serialize)]
pub struct MoveView {
    pub shards: String,
    pub count: usize,
    pub from: String,
    pub to: String,
    pub rows: u64,
    pub bytes: u64,
    /// In the strategy's unit.
    pub load: u64,
    #[serde(skip)]
    pub shard_list: Vec<u32>,
}

/// One backend's balance before and after the plan.
#[derive(Debug, Clone, Serialize)]
pub struct BalanceView {
    pub backend: String,
    pub weight: f64,
    pub draining: bool,
    /// Fair share, in the strategy's unit.
    pub target: f64,
    pub before: u64,
    pub after: u64,
    pub shards_before: usize,
    pub shards_after: usize,
    pub rows_before: u64,
    pub rows_after: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// A plan as `rebalance plan` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub strategy: String,
    /// What `target`, `before`, `after`, `moved`, `excess` and `lower_bound` count.
    pub unit: &'static str,
    pub drain: Option<String>,
    pub moves: Vec<MoveView>,
    pub shards_to_move: usize,
    pub rows_to_move: u64,
    pub bytes_to_move: u64,
    /// Moved, in the strategy's unit.
    pub moved: u64,
    /// The sum of each backend's excess over its share: what would move to bring every backend
    /// exactly to its share (a plan moves at most 1.2 times this).
    pub excess: f64,
    /// Every backend ends within the tolerance of its share.
    pub balanced: bool,
    /// When the plan balances every backend: the least any plan that does must move
    /// (`moved` is never below it); `null` otherwise.
    pub lower_bound: Option<f64>,
    pub estimated_seconds: f64,
    /// What the estimate rests on.
    pub estimate_basis: String,
    /// Shards in a move already: they stay where that move takes them.
    pub pinned: usize,
    pub balance: Vec<BalanceView>,
}

fn unit(s: Strategy) -> &'static str {
    match s {
        Strategy::Count => "shards",
        Strategy::Rows => "rows",
        Strategy::Bytes => "bytes",
        Strategy::Writes => "writes in the sampling window",
    }
}

/// Each backend's shard statistics, by name; `inserts` sampled over `window` when asked.
async fn gather_stats(
    st: &AppState,
    names: &[String],
    window: Option<Duration>,
) -> Result<HashMap<String, HashMap<u32, ShardStats>>, Problem> {
    let topo = st.topology();
    let backends: Vec<_> = names
        .iter()
        .map(|n| {
            topo.backends
                .iter()
                .find(|s| s.backend.name() == n)
                .map(|s| s.backend.clone())
                .ok_or_else(|| {
                    Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("backend {n:?} is not loaded on this node yet: retry in a moment"),
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    drop(topo);
    let sample = || async {
        let all = futures::future::join_all(backends.iter().map(|b| shard_stats(b))).await;
        let mut out = HashMap::new();
        for (b, r) in backends.iter().zip(all) {
            let stats = r.map_err(|e| {
                let mut p = Problem::from(e);
                p.detail = format!(
                    "the statistics of backend {:?} cannot be read: {}",
                    b.name(),
                    p.detail
                );
                p
            })?;
            out.insert(
                b.name().to_owned(),
                stats
                    .into_iter()
                    .map(|s| (s.shard, s))
                    .collect::<HashMap<_, _>>(),
            );
        }
        Ok::<_, Problem>(out)
    };
    let Some(window) = window else {
        return sample().await;
    };
    let first = sample().await?;
    tokio::time::sleep(window).await;
    let mut second = sample().await?;
    for (name, shards) in second.iter_mut() {
        for (shard, s) in shards.iter_mut() {
            let before = first
                .get(name)
                .and_then(|m| m.get(shard))
                .map_or(s.inserts, |f| f.inserts);
            s.inserts = (s.inserts - before).max(0);
        }
    }
    Ok(second)
}

/// Makes the plan (changes nothing).
async fn make_plan(st: &AppState, req: &PlanRequest) -> Result<PlanReport, Problem> {
    let snap = st.catalog.load().await?;
    let records = &snap.backends;
    let (in_flight, history) =
        tokio::try_join!(st.catalog.shards_in_flight(), st.catalog.copy_history())?;
    let in_flight: HashMap<u32, String> = in_flight.into_iter().collect();
    if let Some(d) = &req.drain {
        if !records.iter().any(|b| &b.name == d) {
            return Err(Problem::not_found(format!("no backend {d:?}")));
        }
    }
    let names: Vec<String> = records.iter().map(|b| b.name.clone()).collect();
    let window = (req.strategy == Strategy::Writes).then_some(req.window);
    let stats = gather_stats(st, &names, window).await?;
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let backends: Vec<PlanBackend> = records
        .iter()
        .map(|b| PlanBackend {
            name: b.name.clone(),
            weight: b.weight,
            draining: b.draining,
        })
        .collect();
    let mut shards = Vec::with_capacity(snap.map.num_shards() as usize);
    // (rows, bytes) of each shard, from its owner's statistics.
    let mut sizes: Vec<(u64, u64)> = Vec::with_capacity(shards.capacity());
    for s in 0..snap.map.num_shards() {
        let owner_name = snap.map.owner_name(s).unwrap_or_default();
        let stat = stats.get(owner_name).and_then(|m| m.get(&s)).copied();
        let (rows, bytes, writes) = stat.map_or((0, 0, 0), |x| {
            (
                x.rows.max(0) as u64,
                x.bytes.max(0) as u64,
                x.inserts.max(0) as u64,
            )
        });
        sizes.push((rows, bytes));
        let (owner, movable) = match in_flight.get(&s) {
            Some(target) => (index.get(target.as_str()), false),
            None => (
                index.get(owner_name),
                req.drain.as_deref().is_none_or(|d| d == owner_name),
            ),
        };
        let owner = *owner.ok_or_else(|| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("shard {s} belongs to a backend that is not registered: retry in a moment"),
            )
        })?;
        shards.push(PlanShard {
            shard: s,
            owner,
            size: match req.strategy {
                Strategy::Count => 1,
                Strategy::Rows => rows,
                Strategy::Bytes => bytes,
                Strategy::Writes => writes,
            },
            movable,
        });
    }
    let p = plan(&backends, &shards, req.strategy)
        .map_err(|e| Problem::new(StatusCode::CONFLICT, format!("no plan can be made: {e}")))?;
    let moves: Vec<MoveView> = p
        .moves
        .iter()
        .map(|m| {
            let (rows, bytes) = m.shards.iter().fold((0u64, 0u64), |(r, b), &s| {
                let (sr, sb) = sizes.get(s as usize).copied().unwrap_or_default();
                (r + sr, b + sb)
            });
            MoveView {
                shards: format_shard_set(&m.shards),
                count: m.shards.len(),
                from: names.get(m.from).cloned().unwrap_or_default(),
                to: names.get(m.to).cloned().unwrap_or_default(),
                rows,
                bytes,
                load: m.load,
                shard_list: m.shards.clone(),
            }
        })
        .collect();
    // Shards, rows and bytes of each backend before and after, in one pass over the shards.
    let mut owner_after: Vec<usize> = shards.iter().map(|s| s.owner).collect();
    for m in &p.moves {
        for &s in &m.shards {
            if let Some(o) = owner_after.get_mut(s as usize) {
                *o = m.to;
            }
        }
    }
    let mut before = vec![(0usize, 0u64, 0u64); names.len()];
    let mut after = before.clone();
    let add = |t: &mut Vec<(usize, u64, u64)>, b: usize, (r, by): (u64, u64)| {
        if let Some(x) = t.get_mut(b) {
            *x = (x.0 + 1, x.1 + r, x.2 + by);
        }
    };
    for ((sh, &to), &size) in shards.iter().zip(&owner_after).zip(&sizes) {
        add(&mut before, sh.owner, size);
        add(&mut after, to, size);
    }
    let balance = p
        .balance
        .iter()
        .map(|b| {
            let (nb, rb, bb) = before.get(b.backend).copied().unwrap_or_default();
            let (na, ra, ba) = after.get(b.backend).copied().unwrap_or_default();
            let rec = records.get(b.backend);
            BalanceView {
                backend: names.get(b.backend).cloned().unwrap_or_default(),
                weight: rec.map_or(1.0, |r| r.weight),
                draining: rec.is_some_and(|r| r.draining),
                target: b.target,
                before: b.before,
                after: b.after,
                shards_before: nb,
                shards_after: na,
                rows_before: rb,
                rows_after: ra,
                bytes_before: bb,
                bytes_after: ba,
            }
        })
        .collect();
    let moved_rows: Vec<u64> = moves
        .iter()
        .flat_map(|m| m.shard_list.iter())
        .map(|&s| sizes.get(s as usize).map_or(0, |x| x.0))
        .collect();
    let model = CopyModel::fit(&history);
    let estimated_seconds = model.estimate(&moved_rows, req.parallel.max(1) as u32);
    let estimate_basis = if model.samples == 0 {
        format!(
            "assumed {:.1} s per shard and {:.0} rows/s (no shard move measured yet), {} copies at once",
            model.fixed_secs, model.rows_per_sec, req.parallel
        )
    } else {
        format!(
            "fitted on the last {} shard moves: {:.2} s per shard and {} rows/s, {:.1} moves in flight at once (with {} copies allowed)",
            model.samples,
            model.fixed_secs,
            if model.rows_per_sec.is_finite() {
                format!("{:.0}", model.rows_per_sec)
            } else {
                "no measurable cost per row".into()
            },
            model.overlap.max(req.parallel as f64),
            req.parallel
        )
    };
    Ok(PlanReport {
        strategy: req.strategy.to_string(),
        unit: unit(req.strategy),
        drain: req.drain.clone(),
        shards_to_move: moved_rows.len(),
        rows_to_move: moves.iter().map(|m| m.rows).sum(),
        bytes_to_move: moves.iter().map(|m| m.bytes).sum(),
        moves,
        moved: p.moved,
        excess: p.excess,
        balanced: p.balanced,
        lower_bound: p.lower_bound,
        estimated_seconds,
        estimate_basis,
        pinned: in_flight.len(),
        balance,
    })
}

/// The fields a plan, apply or drain request may have.
const PLAN_FIELDS: &[&str] = &[
    "strategy",
    "window",
    "parallel",
    "max_rows_per_sec",
    "complete",
];

/// Reads an optional JSON body (an empty body is `{}`).
fn optional_body(
    st: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    allowed: &[&str],
) -> Result<Value, Problem> {
    match &body {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(json!({})),
        _ => object(
            read_text_json(headers, body, st.config.max_body_bytes)?,
            allowed,
        ),
    }
}

/// The longest `writes` sampling window: the plan must answer within the request timeout
/// (`HTTP_READ_TIMEOUT` + `HTTP_WRITE_TIMEOUT`), with 5 s to spare.
fn max_window(st: &AppState) -> Duration {
    (st.config.http_read_timeout + st.config.http_write_timeout)
        .saturating_sub(Duration::from_secs(5))
        .max(Duration::from_secs(1))
}

pub(super) fn plan_request(
    v: &Value,
    drain: Option<String>,
    max_window: Duration,
) -> Result<PlanRequest, Problem> {
    let strategy = match v.get("strategy") {
        None | Some(Value::Null) => Strategy::Count,
        Some(Value::String(s)) => s.parse::<Strategy>().map_err(|e| {
            Problem::field(FieldError::new(
                "body.strategy",
                e.to_string(),
                Some(Value::String(s.clone())),
            ))
        })?,
        Some(other) => {
            return Err(Problem::field(FieldError::new(
                "body.strategy",
                "must be one of count, rows, bytes, writes",
                Some(other.clone()),
            )))
        }
    };
    let window = match v.get("window") {
        None | Some(Value::Null) => DEFAULT_WINDOW.min(max_window),
        Some(Value::String(s)) => mezzanine_core::duration::parse_duration(s)
            .ok()
            .filter(|d| (Duration::from_secs(1)..=max_window).contains(d))
            .ok_or_else(|| {
                Problem::field(FieldError::new(
                    "body.window",
                    format!(
                        "must be a duration from 1s to {}s, such as \"10s\" (the plan answers within HTTP_READ_TIMEOUT + HTTP_WRITE_TIMEOUT)",
                        max_window.as_secs()
                    ),
                    Some(Value::String(s.clone())),
                ))
            })?,
        Some(other) => {
            return Err(Problem::field(FieldError::new(
                "body.window",
                "must be a duration such as \"10s\"",
                Some(other.clone()),
            )))
        }
    };
    let parallel = positive_field(v, "parallel")?
        .unwrap_or(DEFAULT_PARALLEL)
        .min(64);
    Ok(PlanRequest {
        strategy,
        window,
        parallel,
        drain,
    })
}

/// `POST /admin/v1/rebalance/plan` `{strategy?, window?, parallel?}`: the plan, changing
/// nothing.
pub async fn plan_endpoint(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let v = optional_body(&st, &headers, body, &["strategy", "window", "parallel"])?;
    let report = make_plan(&st, &plan_request(&v, None, max_window(&st))?).await?;
    Ok(Json(report).into_response())
}

/// What apply and drain were asked: the plan's request and how to run it.
struct StartRequest {
    plan: PlanRequest,
    /// Rows per second over the whole rebalance.
    rate: Option<i64>,
    /// Drop the sources as each job switches (by default for a drain only).
    complete: bool,
}

fn start_request(
    v: &Value,
    drain: Option<String>,
    max_window: Duration,
) -> Result<StartRequest, Problem> {
    let plan = plan_request(v, drain, max_window)?;
    Ok(StartRequest {
        rate: positive_field(v, "max_rows_per_sec")?,
        complete: optional_bool(v, "complete")?.unwrap_or(plan.drain.is_some()),
        plan,
    })
}

/// Makes the plan and starts it as move jobs (one per target). `None` when there is nothing
/// to move.
async fn start(
    st: &AppState,
    start: &StartRequest,
) -> Result<(PlanReport, Option<mezzanine_catalog::Rebalance>), Problem> {
    let StartRequest {
        plan: req,
        rate,
        complete,
    } = start;
    let (rate, complete) = (*rate, *complete);
    let report = make_plan(st, req).await?;
    if report.moves.is_empty() {
        return Ok((report, None));
    }
    let mut by_target: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for m in &report.moves {
        by_target
            .entry(m.to.as_str())
            .or_default()
            .extend(m.shard_list.iter().copied());
    }
    let parallel = req.parallel as i32;
    let moves = by_target
        .into_iter()
        .map(|(to, mut shards)| {
            shards.sort_unstable();
            NewMove {
                shards_spec: format_shard_set(&shards),
                shards: shards.iter().map(|&s| (s, to.to_owned())).collect(),
                parallel,
                // The rebalance's limit: the mover shares it among all its jobs' copies.
                max_rows_per_sec: rate,
                reverts: None,
                auto_complete: complete,
            }
        })
        .collect();
    let plan_json = serde_json::to_value(&report).unwrap_or(Value::Null);
    let rebalance = st
        .catalog
        .create_rebalance(&NewRebalance {
            strategy: req.strategy.to_string(),
            drain: req.drain.clone(),
            parallel,
            max_rows_per_sec: rate,
            auto_complete: complete,
            plan: plan_json,
            moves,
        })
        .await?;
    Ok((report, Some(rebalance)))
}

/// `POST /admin/v1/rebalance/apply` `{strategy?, window?, parallel?, max_rows_per_sec?,
/// complete?}` → 202 with the rebalance, or 200 with `rebalance: null` when the backends
/// are balanced already.
pub async fn apply_endpoint(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let v = optional_body(&st, &headers, body, PLAN_FIELDS)?;
    let (plan, rebalance) = start(&st, &start_request(&v, None, max_window(&st))?).await?;
    let status = if rebalance.is_some() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({"rebalance": rebalance, "plan": plan}))).into_response())
}

/// `POST /admin/v1/backends/{name}/drain` `{strategy?, parallel?, max_rows_per_sec?}`: marks
/// the backend draining (it receives nothing from now on) and moves every shard it owns to
/// the others, by the planner; the sources are dropped as each job switches, so that
/// `backend remove` succeeds afterwards. 202 with the rebalance, or 200 with `rebalance: null`
/// when it owns nothing.
pub async fn drain_endpoint(
    State(st): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let name = super::backend_in_path(path)?;
    let v = optional_body(&st, &headers, body, PLAN_FIELDS)?;
    // Bad input is refused before the mark.
    let req = start_request(&v, Some(name.clone()), max_window(&st))?;
    st.refuse_catalog_home(&name, "drain").await?;
    let backend = st.catalog.update_backend(&name, None, Some(true)).await?;
    let (plan, rebalance) = start(&st, &req).await?;
    let status = if rebalance.is_some() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let backend =
        json!({"name": backend.name, "weight": backend.weight, "draining": backend.draining});
    Ok((
        status,
        Json(json!({"backend": backend, "rebalance": rebalance, "plan": plan})),
    )
        .into_response())
}

/// `GET /admin/v1/rebalance`: the most recent rebalances, newest first.
pub async fn list(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Problem> {
    let limit = limit_param(q.as_deref(), 20)?;
    let all = st.catalog.list_rebalances(limit).await?;
    Ok(Json(json!({ "rebalances": all })).into_response())
}

/// `GET /admin/v1/rebalance/{id}`: one rebalance, its jobs and their combined progress.
pub async fn get_one(
    State(st): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let Path(id) = path.map_err(path_problem)?;
    Ok(Json(st.catalog.get_rebalance(parse_id(id, "rebalance")?).await?).into_response())
}

/// `POST /admin/v1/rebalance/{id}/abort|complete` → 202 with the rebalance as it is once the
/// request is recorded: `requested` names it until the mover has carried it out on every job
/// (the state changes then). `abort` stops the moves not yet switched (the switched ones
/// stay); `complete` drops the sources of the switched shards.
pub async fn action(
    State(st): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, Problem> {
    let Path((id, action)) = path.map_err(path_problem)?;
    let request = match action.as_str() {
        "abort" => Request::Abort,
        "complete" => Request::Complete,
        _ => return Err(Problem::not_found("no such endpoint")),
    };
    let r = st
        .catalog
        .request_rebalance(parse_id(id, "rebalance")?, request)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(r)).into_response())
}
