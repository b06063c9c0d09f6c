//! One PostgreSQL backend: its connection pool and its health.
//!
//! Every use of a connection goes through a [`Lease`], which bounds the whole operation
//! (waiting for a connection, connecting, querying) by the query timeout. A lease whose query
//! timed out or broke is discarded rather than returned to the pool, and the backend is marked
//! down: later requests fail fast, without touching the network, until the backend's prober
//! reaches it again. Each backend has its own pool, so a hung backend holds only its own
//! connections.
//!
//! The pool is small by default (the number of cores, at least 4, like pgxpool): PostgreSQL
//! answers fastest with few statements in flight per core, so requests beyond that wait for
//! a connection (within the query timeout) rather than crowd the server. It hands out the
//! connection returned last, whose caches (plans, the catalog entries of the shard tables it
//! opened) are the warmest, and lets spare ones age out when idle.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, QueueMode, RecyclingMethod, Runtime,
};
use futures::{SinkExt, StreamExt};
use tokio::time::timeout_at;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use crate::tls::PgTls;

use crate::StorageError;

/// Pool and timeout settings of a backend (go-mezzanine's `DB_*` variables).
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_conns: usize,
    pub min_conns: usize,
    pub max_conn_lifetime: Option<Duration>,
    pub max_conn_idle_time: Option<Duration>,
    pub health_check_period: Duration,
    pub query_timeout: Duration,
}

/// The default size of a backend's pool: the number of cores, at least 4 (pgxpool's default,
/// which go-mezzanine uses).
pub fn default_max_conns() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(4)
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_conns: default_max_conns(),
            min_conns: 0,
            max_conn_lifetime: Some(Duration::from_secs(3600)),
            max_conn_idle_time: Some(Duration::from_secs(1800)),
            health_check_period: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
        }
    }
}

/// How often a backend that is down is probed.
const DOWN_PROBE_PERIOD: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
struct HealthState {
    up: bool,
    changed: Instant,
    last_error: Option<String>,
    latency: Option<Duration>,
}

/// A snapshot of a backend's health, for `/v1/readyz`, `/v1/health` and `/metrics`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendHealth {
    pub name: String,
    pub up: bool,
    /// Latency of the last successful probe, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Why it is down, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds since the backend last changed between up and down.
    pub since_secs: f64,
    pub pool_size: usize,
    pub pool_available: usize,
    pub pool_max: usize,
    pub pool_waiting: usize,
}

/// One PostgreSQL server holding shards.
pub struct Backend {
    name: String,
    /// How messages name it: `backend db1`, or `the catalog database`.
    label: String,
    /// Where it is, for messages: `host:port` (or a socket folder), the first if several.
    addr: String,
    masked_url: String,
    pool: Pool,
    /// The TLS connector of its URL's settings (the pool's, and its cancellations').
    tls: PgTls,
    settings: PoolSettings,
    health: Mutex<HealthState>,
    /// Reference point of `progress`.
    epoch: Instant,
    /// When (nanoseconds after `epoch`) a statement last completed on this backend: a backend
    /// that keeps completing statements is alive, however slow one statement is.
    progress: AtomicU64,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .field("url", &self.masked_url)
            .finish()
    }
}

/// `host:port` of a connection configuration's first host, as a user would write it.
fn first_addr(config: &tokio_postgres::Config) -> String {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) if h.contains(':') => format!("[{h}]:{port}"),
        Some(tokio_postgres::config::Host::Tcp(h)) => format!("{h}:{port}"),
        Some(tokio_postgres::config::Host::Unix(dir)) => {
            format!("{}/.s.PGSQL.{port}", dir.display())
        }
        None => format!("localhost:{port}"),
    }
}

impl Backend {
    /// Builds the pool of backend `name`. No connection is made here.
    pub fn new(
        name: &str,
        database_url: &str,
        settings: PoolSettings,
    ) -> Result<Arc<Backend>, StorageError> {
        Backend::with_label(name, &format!("backend {name}"), database_url, settings)
    }

    /// Builds a pool whose messages name it `label` (`the catalog database`).
    pub fn with_label(
        name: &str,
        label: &str,
        database_url: &str,
        settings: PoolSettings,
    ) -> Result<Arc<Backend>, StorageError> {
        let bad = |message: String| StorageError::BadUrl {
            backend: label.to_owned(),
            message,
        };
        let (mut config, tls) = crate::conninfo::config(database_url).map_err(bad)?;
        let connect_timeout =
            (settings.query_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(10));
        config.connect_timeout(connect_timeout);
        // A peer gone without a word is noticed within seconds, on both sides
        // (`crate::keepalive`).
        crate::keepalive::apply(&mut config);
        // A session that leaves a transaction open (its client gone) must not hold shard
        // locks for long.
        let idle_tx = (settings.query_timeout + Duration::from_secs(5)).as_millis();
        // Added to the URL's own `options` (a search_path, say), never replacing them.
        let idle = format!("-c idle_in_transaction_session_timeout={idle_tx}");
        let options = crate::keepalive::with_server_options(Some(&match config.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {idle}"),
            _ => idle,
        }));
        config.options(options);
        if config.get_application_name().is_none() {
            config.application_name("mezzanine");
        }
        let addr = first_addr(&config);
        let manager = Manager::from_config(
            config,
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.max_conns.max(1))
            .runtime(Runtime::Tokio1)
            .queue_mode(QueueMode::Lifo)
            .wait_timeout(None)
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(connect_timeout))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Arc::new(Backend {
            name: name.to_owned(),
            label: label.to_owned(),
            addr,
            masked_url: crate::conninfo::mask_url(database_url),
            pool,
            tls,
            settings,
            epoch: Instant::now(),
            progress: AtomicU64::new(0),
            health: Mutex::new(HealthState {
                up: true,
                changed: Instant::now(),
                last_error: None,
                latency: None,
            }),
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How messages name it: `backend db1`, or `the catalog database`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Where it is: `host:port` of its (first) host.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The URL with its password masked.
    pub fn masked_url(&self) -> &str {
        &self.masked_url
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    fn state(&self) -> MutexGuard<'_, HealthState> {
        // A poisoned lock only means a panic elsewhere while holding it; the state is plain data.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_nanos(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Whether the backend is believed reachable.
    pub fn is_up(&self) -> bool {
        self.state().up
    }

    fn retry_after(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn unavailable(&self, reason: impl Into<String>) -> StorageError {
        StorageError::Unavailable {
            backend: self.label.clone(),
            reason: reason.into(),
            retry_after: self.retry_after(),
        }
    }

    pub(crate) fn mark_down(&self, reason: &str) {
        let mut s = self.state();
        if s.up {
            tracing::warn!(server = %self.label, reason, "marked down");
            s.up = false;
            s.changed = Instant::now();
        }
        s.last_error = Some(reason.to_owned());
    }

    fn mark_up(&self, latency: Duration) {
        let mut s = self.state();
        if !s.up {
            tracing::info!(server = %self.label, "reachable again");
            s.up = true;
            s.changed = Instant::now();
        }
        s.last_error = None;
        s.latency = Some(latency);
    }

    /// A snapshot of the backend's health and pool.
    pub fn health(&self) -> BackendHealth {
        let s = self.state().clone();
        let status = self.pool.status();
        BackendHealth {
            name: self.name.clone(),
            up: s.up,
            latency_ms: s.latency.map(|d| d.as_secs_f64() * 1000.0),
            error: s.last_error,
            since_secs: s.changed.elapsed().as_secs_f64(),
            pool_size: status.size,
            pool_available: status.available,
            pool_max: status.max_size,
            pool_waiting: status.waiting,
        }
    }

    /// Takes a connection for one operation, failing fast when the backend is known down.
    /// The whole operation must finish within the query timeout from now.
    pub async fn lease(&self) -> Result<Lease<'_>, StorageError> {
        if !self.is_up() {
            let why = self
                .state()
                .last_error
                .clone()
                .unwrap_or_else(|| "down".to_owned());
            // The cause first, so the message reads the same as when the attempt was made
            // now; the health check retries it in the background.
            return Err(self.unavailable(format!("{why} (known down at the last health check)")));
        }
        self.lease_unchecked().await
    }

    async fn lease_unchecked(&self) -> Result<Lease<'_>, StorageError> {
        // Waiting for a free connection is bounded by the query timeout but never marks the
        // backend down (all connections busy means load, not sickness); a connection attempt
        // that fails or hangs (the pool's create timeout, shorter than the query timeout) does.
        let waited = tokio::time::Instant::now() + self.settings.query_timeout;
        let obj = match timeout_at(waited, self.pool.get()).await {
            Ok(Ok(obj)) => obj,
            Ok(Err(deadpool_postgres::PoolError::Timeout(
                deadpool_postgres::TimeoutType::Wait,
            )))
            | Err(_) => {
                return Err(self.unavailable("no free connection within the query timeout"));
            }
            Ok(Err(e)) => {
                let reason = format!("cannot connect to {}: {}", self.addr, self.pool_cause(&e));
                self.mark_down(&reason);
                return Err(self.unavailable(reason));
            }
        };
        // The statements' own time starts now.
        let deadline = tokio::time::Instant::now() + self.settings.query_timeout;
        Ok(Lease {
            backend: self,
            obj: Some(obj),
            deadline,
            in_flight: AtomicUsize::new(0),
        })
    }

    /// One health probe (`SELECT 1`), bypassing the fail-fast check. Marks the backend up or
    /// down by the result and returns the round-trip time.
    pub async fn probe(&self) -> Result<Duration, StorageError> {
        let started = Instant::now();
        let lease = self.lease_unchecked().await?;
        lease.query("SELECT 1", &[]).await?;
        let latency = started.elapsed();
        self.mark_up(latency);
        Ok(latency)
    }

    /// Keeps the pool within its lifetime and idle limits and tops it up to its minimum.
    fn maintain_pool(&self) {
        let (lifetime, idle) = (
            self.settings.max_conn_lifetime,
            self.settings.max_conn_idle_time,
        );
        if lifetime.is_some() || idle.is_some() {
            self.pool.retain(|_, m| {
                lifetime.is_none_or(|l| m.age() < l) && idle.is_none_or(|i| m.last_used() < i)
            });
        }
    }

    async fn top_up(&self) {
        let missing = self
            .settings
            .min_conns
            .saturating_sub(self.pool.status().size);
        let mut held = Vec::with_capacity(missing);
        for _ in 0..missing {
            match self.lease_unchecked().await {
                Ok(l) => held.push(l),
                Err(_) => break,
            }
        }
    }

    /// Probes the backend forever: every health-check period while it is up, and often while
    /// it is down so that service resumes quickly when it comes back.
    pub fn spawn_health_loop(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(backend) = weak.upgrade() else {
                    return;
                };
                backend.maintain_pool();
                // A failed probe has marked the backend down itself when the failure was about
                // reachability; a probe that only waited for a busy pool leaves it up, so that
                // load never turns into an outage.
                if backend.probe().await.is_ok() {
                    backend.top_up().await;
                }
                let period = if backend.is_up() {
                    backend
                        .settings
                        .health_check_period
                        .max(Duration::from_millis(100))
                } else {
                    DOWN_PROBE_PERIOD
                };
                drop(backend);
                tokio::time::sleep(period).await;
            }
        })
    }

    /// Classifies a driver error: connection trouble marks the backend down.
    pub(crate) fn classify(&self, e: tokio_postgres::Error) -> StorageError {
        use tokio_postgres::error::SqlState as S;
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            let message = format!("{} (SQLSTATE {})", db.message(), code.code());
            // Deadlock, serialization failure, lock or statement timeout: retryable, and no
            // sign of a sick backend.
            if [
                &S::T_R_DEADLOCK_DETECTED,
                &S::T_R_SERIALIZATION_FAILURE,
                &S::LOCK_NOT_AVAILABLE,
                &S::QUERY_CANCELED,
            ]
            .contains(&code)
            {
                return self.unavailable(message);
            }
            // Class 08: connection exception; 57P0x: the server is shutting down or starting;
            // 53300: too many connections.
            let class = &code.code()[..2.min(code.code().len())];
            if class == "08" || code.code().starts_with("57P") || code == &S::TOO_MANY_CONNECTIONS {
                self.mark_down(&message);
                return self.unavailable(message);
            }
            return StorageError::Database {
                backend: self.label.clone(),
                code: Some(code.clone()),
                message,
            };
        }
        let reason = format!(
            "connection to {} lost: {}",
            self.addr,
            crate::tls::cause(&e, &self.tls)
        );
        self.mark_down(&reason);
        self.unavailable(reason)
    }
}

impl Backend {
    /// Why the pool could not make a connection, in PostgreSQL's, the system's or TLS's
    /// words.
    fn pool_cause(&self, e: &deadpool_postgres::PoolError) -> String {
        match e {
            deadpool_postgres::PoolError::Backend(inner) => crate::tls::cause(inner, &self.tls),
            deadpool_postgres::PoolError::Timeout(_) => {
                "no answer within the connect timeout".into()
            }
            other => other.to_string(),
        }
    }
}

/// A connection taken from a backend's pool for one bounded operation.
///
/// Statements may run concurrently on one lease (`&self`): tokio-postgres pipelines them on
/// the connection, each still its own statement and, outside an explicit transaction, its
/// own transaction. All must finish within the query timeout from when the connection was
/// obtained. A lease with a statement that did not complete is discarded on drop.
pub struct Lease<'a> {
    backend: &'a Backend,
    obj: Option<Object>,
    deadline: tokio::time::Instant,
    in_flight: AtomicUsize,
}

impl<'a> Lease<'a> {
    fn client(&self) -> Result<&Object, StorageError> {
        self.obj
            .as_ref()
            .ok_or_else(|| self.backend.unavailable("connection discarded"))
    }

    /// Runs one statement with typed parameters in a single round trip.
    pub async fn query(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, StorageError> {
        self.in_flight.fetch_add(1, AtomicOrdering::AcqRel);
        let started = self.backend.now_nanos();
        let result = timeout_at(self.deadline, self.client()?.query_typed(sql, params)).await;
        self.finish(result, started)
    }

    /// Runs one statement with typed parameters and hands its rows to `each` one at a time,
    /// as they arrive, so that the caller holds only what it keeps. Rows after `each` first
    /// returns `false` are read and dropped (the connection stays usable).
    pub async fn query_each(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
        mut each: impl FnMut(Row) -> bool,
    ) -> Result<(), StorageError> {
        use futures::TryStreamExt;
        self.in_flight.fetch_add(1, AtomicOrdering::AcqRel);
        let started = self.backend.now_nanos();
        let client = self.client()?;
        let run = async {
            let rows = client
                .query_typed_raw(sql, params.iter().map(|(v, t)| (*v, t.clone())))
                .await?;
            futures::pin_mut!(rows);
            let mut wanted = true;
            while let Some(row) = rows.try_next().await? {
                if wanted {
                    wanted = each(row);
                }
            }
            Ok(())
        };
        let result = timeout_at(self.deadline, run).await;
        self.finish(result, started)
    }

    /// Runs statements given as one string (simple protocol, no parameters): DDL only.
    pub async fn batch_execute(&self, sql: &str) -> Result<(), StorageError> {
        self.in_flight.fetch_add(1, AtomicOrdering::AcqRel);
        let started = self.backend.now_nanos();
        let result = timeout_at(self.deadline, self.client()?.batch_execute(sql)).await;
        self.finish(result, started)
    }

    /// Whether every statement started on this lease has completed (one that is not idle is
    /// discarded when dropped, and must not be given more statements after a failure).
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(AtomicOrdering::Acquire) == 0
    }

    /// Extends this lease's deadline (for long maintenance work such as migrations).
    pub fn extend(&mut self, by: Duration) {
        self.deadline += by;
    }

    /// Starts `COPY ... TO STDOUT`. The statement counts as in flight until its stream has been
    /// read to the end, so a lease dropped mid-stream is discarded (and its statement cancelled).
    pub async fn copy_out(&self, sql: &str) -> Result<CopyOut<'_, 'a>, StorageError> {
        self.in_flight.fetch_add(1, AtomicOrdering::AcqRel);
        let started = self.backend.now_nanos();
        let result = timeout_at(self.deadline, self.client()?.copy_out(sql)).await;
        let stream = self.settle(result, started, false)?;
        Ok(CopyOut {
            lease: self,
            stream: Box::pin(stream),
            stall: None,
            done: false,
        })
    }

    /// Starts `COPY ... FROM STDIN`. The statement counts as in flight until
    /// [`CopyIn::finish`] succeeds; a `CopyIn` dropped before aborts the COPY and its lease is
    /// discarded.
    pub async fn copy_in(&self, sql: &str) -> Result<CopyIn<'_, 'a>, StorageError> {
        self.in_flight.fetch_add(1, AtomicOrdering::AcqRel);
        let started = self.backend.now_nanos();
        let result = timeout_at(self.deadline, self.client()?.copy_in(sql)).await;
        let sink = self.settle(result, started, false)?;
        Ok(CopyIn {
            lease: self,
            sink: Box::pin(sink),
            stall: None,
        })
    }

    /// The deadline of one step of a COPY: the lease's, or sooner with a stall timeout.
    fn step_deadline(&self, stall: Option<Duration>) -> tokio::time::Instant {
        match stall {
            Some(s) => self.deadline.min(tokio::time::Instant::now() + s),
            None => self.deadline,
        }
    }

    fn finish<T>(
        &self,
        result: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
        started: u64,
    ) -> Result<T, StorageError> {
        self.settle(result, started, true)
    }

    /// Accounts for one network step. `completes`: whether a success ends the statement (a
    /// COPY's intermediate steps succeed while the statement stays in flight).
    fn settle<T>(
        &self,
        result: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
        started: u64,
        completes: bool,
    ) -> Result<T, StorageError> {
        let backend = self.backend;
        match result {
            Ok(Ok(v)) => {
                if completes {
                    self.in_flight.fetch_sub(1, AtomicOrdering::AcqRel);
                }
                backend
                    .progress
                    .fetch_max(backend.now_nanos(), AtomicOrdering::AcqRel);
                Ok(v)
            }
            Ok(Err(e)) => {
                let err = backend.classify(e);
                if matches!(err, StorageError::Database { .. }) {
                    self.in_flight.fetch_sub(1, AtomicOrdering::AcqRel);
                    backend
                        .progress
                        .fetch_max(backend.now_nanos(), AtomicOrdering::AcqRel);
                }
                Err(err)
            }
            Err(_) => {
                let timeout = backend.settings.query_timeout;
                if backend.progress.load(AtomicOrdering::Acquire) < started {
                    // Nothing completed on this backend since the statement began: hung.
                    let reason = format!("no answer within the query timeout ({timeout:?})");
                    backend.mark_down(&reason);
                    Err(backend.unavailable(reason))
                } else {
                    // Others completed meanwhile: the backend is alive, this statement waited
                    // (on a lock, or behind load). Fail it alone.
                    Err(backend.unavailable(format!(
                        "the statement did not finish within the query timeout ({timeout:?}); the backend is answering others"
                    )))
                }
            }
        }
    }
}

/// The data of a `COPY ... TO STDOUT` running on a lease ([`Lease::copy_out`]).
pub struct CopyOut<'l, 'a> {
    lease: &'l Lease<'a>,
    stream: Pin<Box<tokio_postgres::CopyOutStream>>,
    stall: Option<Duration>,
    done: bool,
}

impl CopyOut<'_, '_> {
    /// Each later read must also complete within `stall` (besides the lease's deadline).
    pub fn stall_timeout(mut self, stall: Duration) -> Self {
        self.stall = Some(stall);
        self
    }

    /// The next piece of the COPY data as the server sent it, or `None` at its end (the
    /// statement is then complete).
    pub async fn next(&mut self) -> Result<Option<Bytes>, StorageError> {
        if self.done {
            return Ok(None);
        }
        let lease = self.lease;
        let started = lease.backend.now_nanos();
        let deadline = lease.step_deadline(self.stall);
        let result = timeout_at(deadline, self.stream.next()).await;
        let step = result.map(|r| r.transpose());
        match step {
            Ok(Ok(Some(data))) => {
                lease.settle(Ok(Ok(())), started, false)?;
                Ok(Some(data))
            }
            Ok(Ok(None)) => {
                self.done = true;
                lease.settle(Ok(Ok(None)), started, true)
            }
            other => {
                self.done = true;
                lease.settle(other, started, true)
            }
        }
    }
}

/// A `COPY ... FROM STDIN` running on a lease ([`Lease::copy_in`]).
pub struct CopyIn<'l, 'a> {
    lease: &'l Lease<'a>,
    sink: Pin<Box<tokio_postgres::CopyInSink<Bytes>>>,
    stall: Option<Duration>,
}

impl CopyIn<'_, '_> {
    /// Each later step must also complete within `stall` (besides the lease's deadline).
    pub fn stall_timeout(mut self, stall: Duration) -> Self {
        self.stall = Some(stall);
        self
    }

    /// Sends COPY data (any split of the stream: it need not follow row boundaries).
    pub async fn send(&mut self, data: Bytes) -> Result<(), StorageError> {
        let lease = self.lease;
        let started = lease.backend.now_nanos();
        let deadline = lease.step_deadline(self.stall);
        let result = timeout_at(deadline, self.sink.as_mut().send(data)).await;
        lease.settle(result, started, false)
    }

    /// Ends the COPY and returns the number of rows the server stored.
    pub async fn finish(mut self) -> Result<u64, StorageError> {
        let lease = self.lease;
        let started = lease.backend.now_nanos();
        let deadline = lease.step_deadline(self.stall);
        let result = timeout_at(deadline, self.sink.as_mut().finish()).await;
        lease.settle(result, started, true)
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        // A connection whose statement did not complete may still be busy or broken: never
        // give it back to the pool. Cancel what it runs, so that a transaction it left open
        // releases its shard locks now rather than when its queued statements drain.
        if *self.in_flight.get_mut() > 0 {
            if let Some(obj) = self.obj.take() {
                let cancel = obj.cancel_token();
                let bound = self.backend.settings.query_timeout;
                let tls = self.backend.tls.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = tokio::time::timeout(bound, cancel.cancel_query(tls)).await;
                    });
                }
                drop(Object::take(obj));
            }
        }
    }
}
