//! mezzanine's HTTP server.
//!
//! [`Server::start`] reads `shards.json`, opens the catalog (seeding it from that file the
//! first time; afterwards the catalog is the source of truth), opens one pool per backend,
//! prepares every backend's schema (one round trip each when it is current) and returns a
//! server whose axum [`Router`] serves the `/v1` cell API and the `/admin/v1` API.
//!
//! The shard map lives behind an [`ArcSwap`]: every request loads the current [`Topology`]
//! once, and the refresher ([`refresh`]) swaps in a new one when the catalog's map version
//! changes (LISTEN/NOTIFY, a periodic re-read as a fallback, or on demand when a backend
//! answers that it does not serve a shard). Requests that meet a shard in cutover are held
//! ([`AppState::on_shard`]) and completed at the new place.

pub mod admin;
pub mod api;
pub mod auth;
pub mod buffer;
pub mod config;
pub mod conn;
pub mod delivery;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod plugins;
pub mod problem;
pub mod refresh;
pub mod tls;
pub mod watched;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use mezzanine_catalog::{Catalog, CatalogError, MapSnapshot};
use mezzanine_core::ShardMap;
use mezzanine_storage::schema::{prepare_member, ClusterTag};
use mezzanine_storage::{Backend, PoolSettings, SqlState, StorageError};
use tokio::sync::{watch, Notify, Semaphore};

pub use config::ServeConfig;
pub use problem::Problem;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `cause` in plain words (`no such file`), without the OS error number.
    #[error("cannot read the shard map {path}: {cause}")]
    ReadMap { path: String, cause: String },
    #[error("invalid shard map {path}: {cause}")]
    Map {
        path: String,
        cause: mezzanine_core::MapError,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// A backend as the router sees it: its pool, and whether its schema is ready for traffic.
pub struct BackendSlot {
    pub backend: Arc<Backend>,
    /// The URL it was opened with (a changed URL gets a new pool).
    url: String,
    ready: AtomicBool,
}

impl BackendSlot {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The shard map and the backends it names, swapped as one value.
pub struct Topology {
    /// The catalog's map version this topology was built from.
    pub version: i64,
    pub map: ShardMap,
    pub backends: Vec<Arc<BackendSlot>>,
}

impl Topology {
    /// The backend serving `shard`, or a 503 problem if it cannot take traffic yet.
    pub fn backend_for(&self, shard: u32) -> Result<&Arc<Backend>, Problem> {
        let index = self
            .map
            .owner(shard)
            .ok_or_else(|| Problem::internal(format!("shard {shard} has no backend")))?;
        self.backend_at(index)
    }

    /// The backend at `index` of the map, or a 503 problem if it cannot take traffic yet.
    pub fn backend_at(&self, index: usize) -> Result<&Arc<Backend>, Problem> {
        let slot = self
            .backends
            .get(index)
            .ok_or_else(|| Problem::internal(format!("no backend #{index} in the map")))?;
        if !slot.is_ready() {
            return Err(Problem::unavailable(format!(
                "backend {} is not prepared yet (unreachable since start)",
                slot.backend.name()
            )));
        }
        Ok(&slot.backend)
    }
}

/// Shared state of every request.
pub struct AppState {
    topology: ArcSwap<Topology>,
    num_shards: u32,
    pub config: ServeConfig,
    pub catalog: Arc<Catalog>,
    /// The tokens and who may do what ([`auth`]).
    pub auth: Arc<auth::Auth>,
    /// TLS on the listener, when configured ([`tls`]).
    pub tls: Option<Arc<tls::Tls>>,
    /// This node's id (audit log, status, mover leadership).
    pub node_id: String,
    addr: OnceLock<String>,
    version_tx: watch::Sender<i64>,
    reload_requested: Notify,
    /// When set, catalog notifications and the periodic re-read are ignored (tests use it to
    /// make a node's map stale on purpose); on-demand reloads still happen.
    pub hold_refresh: AtomicBool,
    held: Arc<Semaphore>,
    /// The request bytes that may still be held (`MOVE_HOLD_MAX_BYTES` when none is).
    held_bytes: Arc<Semaphore>,
    /// Request bodies buffered now, within `MAX_BUFFERED_BYTES`.
    pub bodies: buffer::BodyBudget,
    /// This node's copy of the registered plugins ([`plugins`]).
    pub plugins: plugins::Registry,
    /// Notified after every write: plugin delivery, when this node delivers, looks for new
    /// cells at once ([`delivery`]).
    pub stream_written: Arc<Notify>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl AppState {
    /// The current topology (one atomic load).
    pub fn topology(&self) -> arc_swap::Guard<Arc<Topology>> {
        self.topology.load()
    }

    /// Fixed for the life of the data (the catalog refuses another value).
    pub fn num_shards(&self) -> u32 {
        self.num_shards
    }

    /// The address this node serves on (`host:port`), once known.
    pub fn addr(&self) -> &str {
        self.addr.get().map(String::as_str).unwrap_or("")
    }

    /// The map version of the current topology.
    pub fn map_version(&self) -> i64 {
        self.topology.load().version
    }

    /// Asks the refresher to re-read the catalog now.
    pub fn request_reload(&self) {
        self.reload_requested.notify_one();
    }

    /// Re-reads the catalog and installs its map if it is newer; returns the map version now
    /// in use.
    pub async fn reload(&self) -> Result<i64, CatalogError> {
        let snap = self.catalog.load().await?;
        self.install(snap).await;
        Ok(self.map_version())
    }

    /// Installs a catalog snapshot if it is newer than the current topology. Backends that
    /// stay keep their pools; new ones get a pool (their schema was prepared when they were
    /// added, or by the mover).
    pub async fn install(&self, snap: MapSnapshot) {
        let current = self.topology.load_full();
        if snap.version <= current.version {
            return;
        }
        let existing: HashMap<(&str, &str), &Arc<BackendSlot>> = current
            .backends
            .iter()
            .map(|s| ((s.backend.name(), s.url.as_str()), s))
            .collect();
        let mut slots = Vec::with_capacity(snap.map.backends().len());
        for spec in snap.map.backends() {
            if let Some(slot) = existing.get(&(spec.name.as_str(), spec.database_url.as_str())) {
                slots.push((*slot).clone());
                continue;
            }
            match Backend::new(&spec.name, &spec.database_url, self.config.pool_settings()) {
                Ok(backend) => {
                    backend.spawn_health_loop();
                    slots.push(Arc::new(BackendSlot {
                        backend,
                        url: spec.database_url.clone(),
                        ready: AtomicBool::new(true),
                    }));
                }
                Err(e) => {
                    tracing::error!(backend = %spec.name, error = %e, "cannot open a backend of the new map; keeping the current map");
                    return;
                }
            }
        }
        // A backend this node believes down, which the new map gives shards (the target of a
        // move that came back, say): probe it now rather than at the prober's next turn.
        for (i, slot) in slots.iter().enumerate() {
            if !slot.backend.is_up() && snap.map.shards_of(i).next().is_some() {
                let backend = slot.backend.clone();
                tokio::spawn(async move {
                    let _ = backend.probe().await;
                });
            }
        }
        let version = snap.version;
        self.topology.store(Arc::new(Topology {
            version,
            map: snap.map,
            backends: slots,
        }));
        self.version_tx.send_replace(version);
        ::metrics::gauge!("mezzanine_map_version").set(version as f64);
        tracing::info!(map_version = version, "shard map reloaded");
    }

    /// Registers an empty backend: checks its URL and host before any connection
    /// (`BACKEND_HOSTS_ALLOWED`), then that it can be reached and used (mezzanine's metadata
    /// is prepared there, and a backend laid out for another `NUM_SHARDS` is refused), then
    /// records it in the catalog and reloads the map. A failed attempt is audited
    /// (`admin::backends`).
    pub async fn add_backend(&self, name: &str, url: &str, weight: f64) -> Result<(), Problem> {
        admin::backends::add(self, name, url, weight).await
    }

    /// Refuses (409) to `what` (`remove`, `drain`) backend `name` when its database holds the
    /// catalog, saying how to move the catalog first.
    pub async fn refuse_catalog_home(&self, name: &str, what: &str) -> Result<(), Problem> {
        let topo = self.topology.load_full();
        let Some(slot) = topo.backends.iter().find(|s| s.backend.name() == name) else {
            return Ok(());
        };
        if self.catalog.is_home(&slot.backend, &slot.url).await {
            return Err(Problem::new(
                axum::http::StatusCode::CONFLICT,
                mezzanine_catalog::cluster::home_refusal(name, what),
            ));
        }
        Ok(())
    }

    /// Runs `op` against the backend that owns `shard`. If that backend answers that it does
    /// not serve the shard (it moved, or is in cutover), or has no table for it any more (a
    /// move's cleanup dropped it while this node's map was stale: [`moved_away`]), the request
    /// is held: the map is re-read and the operation retried at the owner, until the hold
    /// bound (`MOVE_HOLD_TIMEOUT`, and at most `MOVE_HOLD_MAX` held requests); only then is
    /// the answer a 503 with `Retry-After`. For requests without a body (reads); writes use
    /// [`AppState::on_shard_sized`].
    pub async fn on_shard<T, F, Fut>(&self, shard: u32, op: F) -> Result<T, Problem>
    where
        F: Fn(Arc<Backend>) -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        self.on_shard_sized(shard, 0, op).await
    }

    /// [`AppState::on_shard`] for a request of `bytes` bytes, which count against
    /// `MOVE_HOLD_MAX_BYTES` while it is held.
    pub async fn on_shard_sized<T, F, Fut>(
        &self,
        shard: u32,
        bytes: usize,
        op: F,
    ) -> Result<T, Problem>
    where
        F: Fn(Arc<Backend>) -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let mut hold: Option<Hold> = None;
        loop {
            let (backend, version) = {
                let topo = self.topology();
                (topo.backend_for(shard)?.clone(), topo.version)
            };
            match op(backend).await {
                Err(e) => match moved_away(&e, shard) {
                    Some(why) => self.wait_out_move(&mut hold, version, &why, bytes).await?,
                    None => return Err(Problem::from(e)),
                },
                Ok(v) => return Ok(v),
            }
        }
    }

    /// A request of `bytes` bytes met a shard its backend no longer serves (moved, or in
    /// cutover) under map `version`: holds it (counted once per request, bounded by
    /// `MOVE_HOLD_MAX` and `MOVE_HOLD_MAX_BYTES`) until the map is newer or a short while
    /// passed, so that the caller retries at the new place. A 503 once the hold's deadline
    /// passed; `why` says what was met.
    pub async fn wait_out_move(
        &self,
        hold: &mut Option<Hold>,
        version: i64,
        why: &str,
        bytes: usize,
    ) -> Result<(), Problem> {
        if hold.is_none() {
            ::metrics::counter!("mezzanine_held_requests_total").increment(1);
        }
        let h = match hold {
            Some(h) => h,
            None => hold.insert(self.hold(bytes)?),
        };
        if self.wait_for_map(version, h.deadline).await {
            Ok(())
        } else {
            Err(held_too_long(why, self.config.move_hold_timeout))
        }
    }

    /// Starts holding a request of `bytes` bytes (a 503 at once when too many requests, or
    /// too many bytes, are held, or when this request alone exceeds `MOVE_HOLD_MAX_BYTES`).
    pub fn hold(&self, bytes: usize) -> Result<Hold, Problem> {
        let permit = self.held.clone().try_acquire_owned().map_err(|_| {
            Problem::unavailable(format!(
                "too many requests are waiting for shards in cutover (MOVE_HOLD_MAX={})",
                self.config.move_hold_max
            ))
        })?;
        let max = self.config.move_hold_max_bytes;
        let bytes_permit = match u32::try_from(bytes) {
            Ok(0) => None,
            Ok(n) if bytes <= max => Some(
                self.held_bytes
                    .clone()
                    .try_acquire_many_owned(n)
                    .map_err(|_| {
                        Problem::unavailable(format!(
                            "too many request bytes are waiting for shards in cutover \
                             (MOVE_HOLD_MAX_BYTES={max}; this request has {bytes})"
                        ))
                    })?,
            ),
            _ => {
                return Err(Problem::unavailable(format!(
                    "this request's {bytes} bytes exceed MOVE_HOLD_MAX_BYTES={max}: it cannot \
                     wait for its shard's cutover"
                )))
            }
        };
        Ok(Hold {
            deadline: tokio::time::Instant::now() + self.config.move_hold_timeout,
            _permit: permit,
            _bytes: bytes_permit,
        })
    }

    /// The requests held now, and their bytes.
    pub fn held_now(&self) -> (usize, usize) {
        let count = self.config.move_hold_max.max(1) - self.held.available_permits();
        let bytes = held_bytes_bound(&self.config) - self.held_bytes.available_permits();
        (count, bytes)
    }

    /// Waits until the map is newer than `version`, or a short while (a cutover in progress
    /// is then retried), asking for a reload. Returns `false` once `deadline` has passed.
    pub async fn wait_for_map(&self, version: i64, deadline: tokio::time::Instant) -> bool {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return false;
        }
        self.request_reload();
        let mut rx = self.version_tx.subscribe();
        let until = deadline.min(now + HOLD_RETRY);
        let _ = tokio::time::timeout_at(until, rx.wait_for(|v| *v > version)).await;
        true
    }

    fn spawn(&self, task: tokio::task::JoinHandle<()>) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    /// Stops the background tasks (map refresher, mover).
    pub fn stop_background(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// Whether a request that failed with `e` on `shard` must be held and retried at the shard's
/// owner, and if so why, in words fit for a client: the backend does not serve the shard
/// (its state row: moved, or in cutover), or it has no table for it (a source that a move's
/// cleanup dropped, met by a node whose map is stale: drains drop their sources at once).
/// `None` for any other error.
pub fn moved_away(e: &StorageError, shard: u32) -> Option<String> {
    match e {
        StorageError::NotServed { .. } => Some(e.to_string()),
        StorageError::Database { backend, .. } if e.is(&SqlState::UNDEFINED_TABLE) => Some(
            format!("shard {shard} is not served by {backend} (its table was dropped there)"),
        ),
        _ => None,
    }
}

/// How often a held request retries while its shard is in cutover.
const HOLD_RETRY: Duration = Duration::from_millis(100);

/// A held request: its deadline, its place among the held ones, and its bytes.
pub struct Hold {
    pub deadline: tokio::time::Instant,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _bytes: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// `MOVE_HOLD_MAX_BYTES` as a semaphore's permits (at most it holds).
fn held_bytes_bound(config: &ServeConfig) -> usize {
    config.move_hold_max_bytes.min(Semaphore::MAX_PERMITS)
}

fn held_too_long(why: &str, bound: Duration) -> Problem {
    Problem::unavailable(format!(
        "{why}; the shard did not become available within MOVE_HOLD_TIMEOUT ({bound:?})"
    ))
}

/// A started server: catalog read, backends opened and prepared, ready to serve.
pub struct Server {
    pub state: Arc<AppState>,
    /// How long start-up took.
    pub startup: Duration,
}

impl Server {
    /// Reads `shards.json` (the catalog's seed) and starts.
    pub async fn start(config: ServeConfig) -> Result<Server, StartError> {
        // TLS's variables come together or not at all: said before anything else is read.
        config.tls_files()?;
        let path = config.shard_config_path.display().to_string();
        let text = tokio::fs::read_to_string(&config.shard_config_path)
            .await
            .map_err(|e| StartError::ReadMap {
                path: path.clone(),
                cause: match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        "no such file (set SHARD_CONFIG_PATH or --shard-config-path)".to_owned()
                    }
                    std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                    _ => e.to_string(),
                },
            })?;
        let map = ShardMap::parse(&text, config.num_shards)
            .map_err(|cause| StartError::Map { path, cause })?;
        Server::start_with_map(config, map).await
    }

    /// Starts with `seed` as the map the catalog is seeded from if it does not exist yet.
    /// A backend that cannot be reached now is prepared in the background, its shards
    /// answering 503 until then; a backend whose layout contradicts the configuration
    /// (another `NUM_SHARDS`) stops the start, and so does a catalog that records another
    /// `NUM_SHARDS`.
    pub async fn start_with_map(config: ServeConfig, seed: ShardMap) -> Result<Server, StartError> {
        let started = Instant::now();
        // The tokens first: a bad token file stops the start before any backend is touched.
        let auth = Arc::new(
            auth::Auth::new(
                config.token_file.clone(),
                config.tokens.as_deref(),
                config.unsafe_open_admin,
                config.open_data_api,
            )?
            .with_rate_limits(config.rate_limits()),
        );
        auth.log_start();
        // TLS's files next: a missing or bad file stops the start here too.
        let tls = match config.tls_files()? {
            Some(files) => Some(Arc::new(tls::Tls::start(files).await?)),
            None => None,
        };
        metrics::init();
        let settings = config.pool_settings();
        let node_id = config.node_id.clone().unwrap_or_else(|| {
            let id = uuid::Uuid::new_v4().simple().to_string();
            format!("node-{}", &id[..8])
        });
        let num_shards = seed.num_shards();
        let seed_first = seed.backends().first().map(|b| b.name.clone());
        // Which cluster the backends of shards.json belong to says where the catalog is.
        let members = mezzanine_catalog::cluster::survey(&seed, settings.clone()).await;
        let at = members.locate(config.catalog_url.as_deref(), &seed)?;
        let catalog = Arc::new(Catalog::open(
            &at.url,
            &at.label,
            catalog_settings(&settings),
            &node_id,
        )?);
        catalog.spawn_health_loop();
        let (ensured, snap) = catalog.ensure_member(num_shards, &seed, &members).await?;
        let cluster = catalog.tag();
        tracing::info!(cluster = %ensured.cluster_id, catalog = %mezzanine_storage::mask_url(catalog.url()), "cluster");
        if ensured.seeded {
            tracing::info!(
                "catalog created from shards.json; from now on the catalog is the source of truth"
            );
        }
        for d in &ensured.differences {
            tracing::warn!(difference = %d, "shards.json disagrees with the catalog; the catalog wins");
        }
        let mut asked: HashMap<(&str, &str), Arc<Backend>> = members
            .opened
            .iter()
            .map(|(url, pool)| ((pool.name(), url.as_str()), pool.clone()))
            .collect();
        let mut slots = Vec::new();
        for spec in snap.map.backends() {
            let backend = match asked.remove(&(spec.name.as_str(), spec.database_url.as_str())) {
                Some(pool) => pool,
                None => Backend::new(&spec.name, &spec.database_url, settings.clone())?,
            };
            slots.push(Arc::new(BackendSlot {
                backend,
                url: spec.database_url.clone(),
                ready: AtomicBool::new(false),
            }));
        }
        let create_missing = ensured.seeded;
        drop(asked);
        let preparations = slots.iter().enumerate().map(|(i, slot)| {
            let shards: Vec<u32> = snap.map.shards_of(i).collect();
            let cluster = cluster.as_ref();
            async move {
                let prepared =
                    prepare_member(&slot.backend, num_shards, &shards, create_missing, cluster)
                        .await;
                (slot, prepared, shards)
            }
        });
        for (slot, result, shards) in futures::future::join_all(preparations).await {
            let name = slot.backend.name().to_owned();
            match result {
                Ok(report) => {
                    log_report(&name, &report);
                    slot.ready.store(true, Ordering::Release);
                }
                Err(e @ StorageError::Unavailable { .. }) => {
                    tracing::error!(backend = %name, error = %e, "backend unreachable at start; its shards answer 503 until it is prepared");
                    spawn_prepare_retry(
                        slot.clone(),
                        num_shards,
                        shards,
                        create_missing,
                        cluster.clone(),
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        for slot in &slots {
            slot.backend.spawn_health_loop();
        }
        if let Some(p) = &config.index_config_path {
            tracing::warn!(path = %p.display(), "INDEX_CONFIG_PATH is set, but secondary indexes are not served by this version");
        }
        let (version_tx, _) = watch::channel(snap.version);
        let held = Arc::new(Semaphore::new(config.move_hold_max.max(1)));
        let held_bytes = Arc::new(Semaphore::new(held_bytes_bound(&config)));
        let bodies = buffer::BodyBudget::new(config.max_buffered_bytes);
        let first = seed_first.and_then(|name| {
            slots
                .iter()
                .find(|s| s.backend.name() == name)
                .map(|s| s.backend.clone())
        });
        let state = Arc::new(AppState {
            topology: ArcSwap::from_pointee(Topology {
                version: snap.version,
                map: snap.map,
                backends: slots,
            }),
            num_shards,
            config,
            catalog,
            auth,
            tls,
            node_id,
            addr: OnceLock::new(),
            version_tx,
            reload_requested: Notify::new(),
            hold_refresh: AtomicBool::new(false),
            held,
            held_bytes,
            bodies,
            plugins: plugins::Registry::default(),
            stream_written: Arc::new(Notify::new()),
            tasks: Mutex::new(Vec::new()),
        });
        // go-mezzanine's plugins (its table on the first backend of shards.json), once per
        // cluster; then this node's copy of the set.
        plugins::adopt(&state, first).await;
        plugins::reload(&state).await;
        state.spawn(tokio::spawn(refresh::run(state.clone())));
        state.spawn(tokio::spawn(metrics::upkeep()));
        auth::spawn_background(&state);
        if let Some(tls) = &state.tls {
            state.spawn(tokio::spawn(tls.clone().watch()));
        }
        state.spawn(tokio::spawn(stream_indexes(state.clone())));
        let startup = started.elapsed();
        tracing::info!(
            startup_ms = startup.as_millis() as u64,
            num_shards,
            node = %state.node_id,
            map_version = state.map_version(),
            "mezzanine ready"
        );
        Ok(Server { state, startup })
    }

    /// Records the address this node serves on (`listening`; what it reports is
    /// [`advertised_addr`]) and, unless `--no-mover`, enters the mover's leader election.
    /// Call once listening.
    pub fn serving_on(&self, listening: &str) {
        let st = &self.state;
        let addr = advertised_addr(
            listening,
            st.config.advertise_addr.as_deref(),
            host_name().as_deref(),
        );
        if addr != listening {
            tracing::info!(listening, advertised = %addr, "this node's address for others");
        }
        let addr = addr.as_str();
        let _ = st.addr.set(addr.to_owned());
        delivery::start(st);
        if !st.config.mover() {
            tracing::info!("mover disabled on this node (--no-mover)");
            return;
        }
        let config = mezzanine_mover::MoverConfig {
            node: mezzanine_catalog::LeaderInfo {
                id: st.node_id.clone(),
                addr: addr.to_owned(),
            },
            num_shards: st.num_shards(),
            pool: mover_settings(&st.config.pool_settings()),
            poll: Duration::from_millis(500),
            retention: st.config.move_retention,
            policy: mezzanine_core::moves::CatchUpPolicy {
                max_pause: st.config.move_max_pause,
                ..Default::default()
            },
            freeze_bound: freeze_bound(&st.config),
            copy_share: st.config.move_copy_share,
            attempts: 3,
            failpoints: match mezzanine_mover::failpoint::Failpoints::parse(&st.config.failpoints) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, "MEZZANINE_FAILPOINTS ignored");
                    Default::default()
                }
            },
        };
        let catalog = st.catalog.clone();
        st.spawn(tokio::spawn(mezzanine_mover::run(
            config,
            catalog,
            std::future::pending(),
        )));
    }

    /// TLS on the listener, when configured: give it to [`http::serve`].
    pub fn tls(&self) -> Option<Arc<tls::Tls>> {
        self.state.tls.clone()
    }

    /// The HTTP application.
    pub fn router(&self) -> Router {
        http::router(self.state.clone())
    }
}

/// The address a node listening on `listening` reports (in `status`, and as the mover's
/// leader): `advertise` (`ADVERTISE_ADDR`) when given; else `listening`, unless that is an
/// unspecified address (`0.0.0.0`, `::`), which nobody can reach: then `host` (this machine's
/// host name) with the port, when known.
pub fn advertised_addr(listening: &str, advertise: Option<&str>, host: Option<&str>) -> String {
    if let Some(a) = advertise {
        return a.to_owned();
    }
    match (listening.parse::<std::net::SocketAddr>(), host) {
        (Ok(sa), Some(h)) if sa.ip().is_unspecified() && !h.is_empty() => {
            format!("{h}:{}", sa.port())
        }
        _ => listening.to_owned(),
    }
}

/// This machine's host name (Linux's, else `$HOSTNAME`).
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// The catalog's pool: small.
fn catalog_settings(s: &PoolSettings) -> PoolSettings {
    PoolSettings {
        max_conns: 4,
        min_conns: 0,
        ..s.clone()
    }
}

/// The bound of a cutover's steps inside the freeze together: half the hold bound (requests
/// held meanwhile then complete, at the target or at the source made active again), and at
/// least `MOVE_MAX_PAUSE`.
fn freeze_bound(config: &ServeConfig) -> Duration {
    (config.move_hold_timeout / 2).max(config.move_max_pause)
}

/// The mover's own pools: separate from client traffic.
fn mover_settings(s: &PoolSettings) -> PoolSettings {
    PoolSettings {
        max_conns: 8,
        min_conns: 0,
        ..s.clone()
    }
}

fn log_report(backend: &str, r: &mezzanine_storage::schema::MigrationReport) {
    if r.warm {
        tracing::info!(backend, "schema current");
    } else {
        tracing::info!(
            backend,
            created = r.created_tables,
            adopted = r.adopted_tables,
            "schema prepared"
        );
    }
    if !r.foreign_active.is_empty() {
        tracing::warn!(
            backend,
            shards = %mezzanine_core::format_shard_set(&r.foreign_active),
            "this backend marks shards active that the catalog gives to another backend; they are not served from here"
        );
    }
    if !r.not_active.is_empty() {
        tracing::warn!(
            backend,
            shards = %mezzanine_core::format_shard_set(&r.not_active),
            "the catalog gives these shards to this backend but it does not mark them active (a cutover in progress, or a damaged backend: `mezzanine verify`); requests for them are held, then answered 503"
        );
    }
}

/// Builds the stream index (partition reads by `created_at`) online on every cells table of
/// the node's backends that lacks it: tables adopted from go-mezzanine or laid out by an
/// earlier mezzanine (`mezzanine_storage::stream_index`). In the background, one backend after
/// another; a backend that fails is retried at the next start (reads by `created_at` work
/// without it, as a scan).
async fn stream_indexes(state: Arc<AppState>) {
    let backends: Vec<Arc<Backend>> = state
        .topology
        .load()
        .backends
        .iter()
        .map(|s| s.backend.clone())
        .collect();
    for b in backends {
        match mezzanine_storage::stream_index::build_stream_indexes(&b).await {
            Ok(r) if r.busy => {
                tracing::info!(backend = %b.name(), missing = r.missing, "stream indexes: another node builds them")
            }
            Ok(r) if r.missing > 0 => {
                tracing::info!(backend = %b.name(), built = r.built, "stream indexes built")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(backend = %b.name(), error = %e, "stream indexes not built; reads by created_at scan those tables until the next start")
            }
        }
    }
}

fn spawn_prepare_retry(
    slot: Arc<BackendSlot>,
    num_shards: u32,
    shards: Vec<u32>,
    create_missing: bool,
    cluster: Option<ClusterTag>,
) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match prepare_member(
                &slot.backend,
                num_shards,
                &shards,
                create_missing,
                cluster.as_ref(),
            )
            .await
            {
                Ok(report) => {
                    log_report(slot.backend.name(), &report);
                    slot.ready.store(true, Ordering::Release);
                    return;
                }
                Err(StorageError::Unavailable { .. }) => {}
                Err(e) => {
                    tracing::error!(backend = %slot.backend.name(), error = %e, "backend cannot be prepared; its shards stay unavailable");
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::advertised_addr;

    #[test]
    fn a_node_reports_an_address_others_can_reach() {
        let host = Some("mezz-7");
        assert_eq!(advertised_addr("0.0.0.0:8080", None, host), "mezz-7:8080");
        assert_eq!(advertised_addr("[::]:8080", None, host), "mezz-7:8080");
        assert_eq!(
            advertised_addr("10.1.2.3:8080", None, host),
            "10.1.2.3:8080"
        );
        assert_eq!(advertised_addr("0.0.0.0:8080", None, None), "0.0.0.0:8080");
        assert_eq!(
            advertised_addr("0.0.0.0:8080", Some("lb.example:80"), host),
            "lb.example:80"
        );
    }
}
