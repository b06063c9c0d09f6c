//! The mover: carries out the move jobs recorded in the catalog (DESIGN §5).
//!
//! It runs inside server nodes. One node at a time leads it (the holder of an advisory lock
//! on the catalog, [`mezzanine_catalog::Leader`]); the others wait and take over when the
//! leader's session ends. The leader reads the open jobs from the catalog and drives each
//! shard through the state machine of [`mezzanine_core::moves`]; each state is recorded in
//! the catalog before its work starts, and every step is idempotent, so a leader killed at
//! any instant leaves a state the next one resumes from (invariant I5).
//!
//! The per-shard work is in [`shard`]; this module elects, schedules and carries out
//! operators' requests (abort, complete) and the retention period.

pub mod cutover;
pub mod failpoint;
pub mod shard;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mezzanine_catalog::{
    Catalog, CatalogError, Dedicated, Leader, LeaderInfo, LeaderSession, MoveJob, Request,
};
use mezzanine_core::moves::{chunk_rows, CatchUpPolicy, FullSpeed, ShardMoveState};
use mezzanine_storage::{Backend, PoolSettings, StorageError};
use tokio::task::JoinHandle;

/// Why a step of a move failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MoveError {
    #[error(transparent)]
    Storage(StorageError),
    /// A backend refused a step: a newer leader took the shard over
    /// ([`StorageError::Superseded`]). This leader lost its place; it stops the shard's task
    /// without retrying or undoing anything (the newer leader owns the shard).
    #[error(transparent)]
    Superseded(StorageError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("backend {0:?} is not registered")]
    UnknownBackend(String),
    #[error("verification failed: {0}")]
    Verify(String),
    #[error("{0}")]
    Protocol(String),
    #[error("aborted by an operator")]
    Aborted,
}

impl From<StorageError> for MoveError {
    fn from(e: StorageError) -> MoveError {
        match e {
            e @ StorageError::Superseded { .. } => MoveError::Superseded(e),
            e => MoveError::Storage(e),
        }
    }
}

/// Settings of the mover.
#[derive(Debug, Clone)]
pub struct MoverConfig {
    pub node: LeaderInfo,
    pub num_shards: u32,
    /// Pool settings of the mover's own connections to the backends.
    pub pool: PoolSettings,
    /// How often a waiting node tries to take the leadership, and the leader re-reads jobs.
    pub poll: Duration,
    /// Retired sources are dropped this long after their switch, if not completed before.
    pub retention: Duration,
    /// When to freeze, and the cutover's pause bound (`MOVE_MAX_PAUSE`, the tail copy's
    /// deadline) with the freezes given up before a shard's move fails.
    pub policy: CatchUpPolicy,
    /// The bound of the steps inside a freeze together (tail, verification, sequence,
    /// retirement, activation), against a backend that hangs: beyond, the cutover is undone
    /// and the source is `active` again. Below `MOVE_HOLD_TIMEOUT`, so that held client
    /// requests complete.
    pub freeze_bound: Duration,
    /// The share of its full speed a bulk copy runs at when its move sets no
    /// `max_rows_per_sec` (1: full speed; see `mezzanine_core::moves::paced_rate`). A move's
    /// `max_rows_per_sec` is the limit of all its bulk copies together (of all a rebalance's
    /// copies, for the jobs of a rebalance: [`RowLimit`]).
    pub copy_share: f64,
    /// Attempts of a failing step before the shard's move fails.
    pub attempts: u32,
    /// Pauses for crash tests (empty in production).
    pub failpoints: failpoint::Failpoints,
}

/// The mover's connections to the backends, by name (its own pools: long copies never take
/// connections from client traffic).
pub struct Pools {
    settings: PoolSettings,
    by_name: Mutex<HashMap<String, Arc<Backend>>>,
    /// Bulk work (copy chunks, prefix checksums) holds it shared; a cutover holds it
    /// exclusively, from before its freeze to its switch, so that the pause runs on a machine
    /// no copy of this leader competes for (waiting for running chunks happens before the
    /// freeze, where clients do not wait).
    pub quiet: tokio::sync::RwLock<()>,
    /// What bulk copies from a source into a target (by their names) achieve at full speed,
    /// which paced copies take their share of.
    full_speed: Mutex<HashMap<(String, String), FullSpeed>>,
    /// The `--max-rows-per-sec` limits of the open moves and rebalances, each shared by all
    /// the bulk copies of its group, with the rate it was made for.
    limits: Mutex<HashMap<Group, (u64, Arc<RowLimit>)>>,
}

/// A limit in rows per second shared by every bulk copy of a move (or of a rebalance): the
/// whole operation's limit, however many of its copies run at once.
pub struct RowLimit {
    limiter: governor::DefaultDirectRateLimiter,
    /// The most rows taken at once (the limiter's burst): a chunk of the copies.
    chunk: u32,
}

impl RowLimit {
    fn new(rows_per_sec: u64) -> RowLimit {
        let rate = u32::try_from(rows_per_sec.max(1)).unwrap_or(u32::MAX);
        let chunk = u32::try_from(chunk_rows(Some(u64::from(rate))).max(1)).unwrap_or(u32::MAX);
        let nz = |n: u32| std::num::NonZeroU32::new(n.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        let quota = governor::Quota::per_second(nz(rate)).allow_burst(nz(chunk));
        RowLimit {
            limiter: governor::RateLimiter::direct(quota),
            chunk,
        }
    }

    /// Rows per chunk of a copy under this limit.
    pub fn chunk(&self) -> i64 {
        i64::from(self.chunk)
    }

    /// Waits until `rows` more rows may be copied.
    pub async fn take(&self, rows: u64) {
        let mut left = rows;
        while left > 0 {
            let n = u32::try_from(left).unwrap_or(u32::MAX).min(self.chunk);
            let want = std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN);
            // `n` is at most the burst, so the limiter can always grant it.
            let _ = self.limiter.until_n_ready(want).await;
            left -= u64::from(n);
        }
    }
}

impl Pools {
    pub fn new(settings: PoolSettings) -> Pools {
        Pools {
            settings,
            by_name: Mutex::new(HashMap::new()),
            quiet: tokio::sync::RwLock::new(()),
            full_speed: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
        }
    }

    /// The limit shared by the bulk copies of `job`'s group (its rebalance, or itself), if
    /// it sets `max_rows_per_sec`.
    fn limit(&self, job: &MoveJob) -> Option<Arc<RowLimit>> {
        let rate = job.max_rows_per_sec.map(|r| r.max(1) as u64)?;
        let mut limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        let entry = limits
            .entry(group(job))
            .or_insert_with(|| (rate, Arc::new(RowLimit::new(rate))));
        if entry.0 != rate {
            *entry = (rate, Arc::new(RowLimit::new(rate)));
        }
        Some(entry.1.clone())
    }

    /// Forgets the limits of groups that have no open job any more.
    fn keep_limits(&self, jobs: &[MoveJob]) {
        let open: std::collections::HashSet<Group> = jobs.iter().map(group).collect();
        let mut limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        limits.retain(|g, _| open.contains(g));
    }

    /// Records a copy from `source` into `target` measured at full speed (`bytes` in
    /// `elapsed`); returns the speed to pace their copies by: the best of the recent
    /// measurements ([`FullSpeed`]).
    pub fn full_speed(&self, (source, target): (&str, &str), bytes: u64, elapsed: Duration) -> f64 {
        let mut speeds = self.full_speed.lock().unwrap_or_else(|e| e.into_inner());
        let key = (source.to_owned(), target.to_owned());
        let entry = speeds.entry(key).or_default();
        entry.observe(bytes, elapsed, std::time::Instant::now())
    }

    /// The pool of backend `name`, opened on first use from the catalog's URL.
    pub async fn get(&self, catalog: &Catalog, name: &str) -> Result<Arc<Backend>, MoveError> {
        if let Some(b) = self.lock().get(name) {
            return Ok(b.clone());
        }
        let rec = catalog
            .backends()
            .await?
            .into_iter()
            .find(|b| b.name == name)
            .ok_or_else(|| MoveError::UnknownBackend(name.to_owned()))?;
        let b = Backend::new(name, &rec.url, self.settings.clone())?;
        let mut pools = self.lock();
        if let Some(other) = pools.get(name) {
            return Ok(other.clone());
        }
        // A backend that fails is marked down and then fails fast until its prober reaches it
        // again: without one, a target that was down once would stay "known down" for every
        // later move (a retry after a failed move could never succeed).
        b.spawn_health_loop();
        pools.insert(name.to_owned(), b.clone());
        Ok(b)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Backend>>> {
        self.by_name.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs the mover until `shutdown` resolves: waits for the leadership, then leads.
pub async fn run(
    config: MoverConfig,
    catalog: Arc<Catalog>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut leader = Leader::new(
        catalog.url(),
        config.pool.query_timeout,
        config.node.clone(),
    );
    let pools = Arc::new(Pools::new(config.pool.clone()));
    let work = async {
        loop {
            match leader.try_acquire().await {
                Ok(Some(session)) => {
                    tracing::info!(node = %config.node.id, "this node leads the mover");
                    let session = Arc::new(session);
                    lead(&config, &catalog, &pools, session).await;
                    tracing::warn!(node = %config.node.id, "mover leadership lost");
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "cannot try the mover leadership"),
            }
            tokio::time::sleep(config.poll).await;
        }
    };
    tokio::select! {
        _ = work => {}
        _ = shutdown => {}
    }
}

/// A running shard task and its abort flag.
struct Running {
    handle: JoinHandle<()>,
    abort: Arc<AtomicBool>,
}

/// Leads until the session is lost: schedules shard tasks, carries out requests.
async fn lead(
    config: &MoverConfig,
    catalog: &Arc<Catalog>,
    pools: &Arc<Pools>,
    session: Arc<LeaderSession>,
) {
    let mut running: HashMap<(i64, u32), Running> = HashMap::new();
    // Notifications only hasten the next pass; without them the leader polls.
    let mut listener = match Dedicated::connect(catalog.url(), config.pool.query_timeout).await {
        Ok(l) if l.listen().await.is_ok() => Some(l),
        _ => None,
    };
    loop {
        if !session.is_alive() {
            break;
        }
        running.retain(|_, r| !r.handle.is_finished());
        metrics::gauge!("mezzanine_move_shards_running").set(running.len() as f64);
        // Before any new task starts: no prepare of a later move races a fence.
        if let Err(e) = cutover::fence_targets(catalog, pools, &session).await {
            tracing::warn!(error = %e, "cannot fence target copies of undone cutovers; will retry");
        }
        match catalog.open_moves().await {
            Ok(jobs) => {
                pools.keep_limits(&jobs);
                let mut active = bulk_copies(&jobs, &running);
                for job in jobs {
                    if let Err(e) = schedule(
                        config,
                        catalog,
                        pools,
                        &session,
                        &job,
                        &mut running,
                        &mut active,
                    )
                    .await
                    {
                        tracing::warn!(job = job.id, error = %e, "move job step failed; will retry");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read move jobs"),
        }
        let wait = tokio::time::sleep(config.poll);
        tokio::select! {
            _ = wait => {}
            _ = session.lost() => break,
            Some(_) = async {
                match listener.as_mut() {
                    Some(l) => l.next_notification().await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        // The next pass re-reads every open job: notifications received meanwhile are
        // covered by it (a rebalance sends thousands; one pass each would trail behind).
        if let Some(l) = listener.as_mut() {
            l.discard_pending();
        }
    }
    // Lost the lock: stop at once, the next leader resumes from the catalog.
    for (_, r) in running {
        r.handle.abort();
    }
}

/// What a job's `parallel` bounds: the job's own bulk copies, or those of every job of its
/// rebalance together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Group {
    Job(i64),
    Rebalance(i64),
}

fn group(job: &MoveJob) -> Group {
    job.rebalance.map_or(Group::Job(job.id), Group::Rebalance)
}

/// The bulk copies running now, by group. `parallel` bounds the bulk copies: a shard that
/// is catching up, verifying or cutting over no longer takes a slot, so the next shard's
/// copy overlaps its tail.
fn bulk_copies(jobs: &[MoveJob], running: &HashMap<(i64, u32), Running>) -> HashMap<Group, usize> {
    let mut active = HashMap::new();
    for job in jobs {
        let n = job
            .shards
            .iter()
            .filter(|s| {
                matches!(s.state, ShardMoveState::Pending | ShardMoveState::Copying)
                    && running.contains_key(&(job.id, s.shard))
            })
            .count();
        *active.entry(group(job)).or_insert(0) += n;
    }
    active
}

/// One pass over a job: start shard tasks up to its parallelism, pass on aborts, clean
/// switched shards that are completed (by request, or at once for an auto-completing job
/// with nothing in flight) or past retention.
async fn schedule(
    config: &MoverConfig,
    catalog: &Arc<Catalog>,
    pools: &Arc<Pools>,
    session: &Arc<LeaderSession>,
    job: &MoveJob,
    running: &mut HashMap<(i64, u32), Running>,
    active: &mut HashMap<Group, usize>,
) -> Result<(), MoveError> {
    let abort = job.requested == Some(Request::Abort);
    let requested_complete = job.requested == Some(Request::Complete);
    let complete = requested_complete
        || job.auto_complete && !abort && !job.shards.iter().any(|s| s.state.in_flight());
    let active = active.entry(group(job)).or_insert(0);
    for s in &job.shards {
        let key = (job.id, s.shard);
        if let Some(r) = running.get(&key) {
            if abort {
                r.abort.store(true, Ordering::Release);
            }
            continue;
        }
        match s.state {
            // An aborted shard gets a task too, even a pending one: its undo drops what a
            // leader may have prepared on the target before it died.
            state if state.in_flight() => {
                if !abort
                    && state == ShardMoveState::Pending
                    && *active >= job.parallel.max(1) as usize
                {
                    continue;
                }
                let flag = Arc::new(AtomicBool::new(abort));
                let task = shard::ShardTask {
                    config: config.clone(),
                    catalog: catalog.clone(),
                    pools: pools.clone(),
                    session: session.clone(),
                    move_id: job.id,
                    shard: s.clone(),
                    limit: pools.limit(job),
                    abort: flag.clone(),
                };
                *active += 1;
                running.insert(
                    key,
                    Running {
                        handle: tokio::spawn(task.run()),
                        abort: flag,
                    },
                );
            }
            ShardMoveState::Switched => {
                let expired = s.switched_at.is_some_and(|t| {
                    chrono::Utc::now()
                        .signed_duration_since(t)
                        .to_std()
                        .is_ok_and(|age| age >= config.retention)
                });
                if complete || expired {
                    shard::clean(config, catalog, pools, session, job.id, s).await?;
                }
            }
            _ => {}
        }
    }
    // A request is done once nothing it concerns is left: no shard in flight for an abort
    // (each stopped one is `aborted`), no switched shard for a complete (each is `cleaned`).
    if abort && !job.shards.iter().any(|s| s.state.in_flight()) || requested_complete {
        session.clear_request(job.id).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_that_names_a_newer_leader_is_a_superseded_move() {
        let newer = StorageError::Superseded {
            shard: 3,
            backend: "backend db2".into(),
            term: mezzanine_core::Term(6),
            newer: mezzanine_core::Term(7),
        };
        assert!(matches!(MoveError::from(newer), MoveError::Superseded(_)));
        let other = StorageError::Refused {
            shard: 3,
            backend: "backend db2".into(),
            message: "no".into(),
        };
        assert!(matches!(MoveError::from(other), MoveError::Storage(_)));
    }
}
