//! mezzanine's HTTP server.
//!
//! [`Server::start`] reads the shard map, opens one pool per backend, prepares every backend's
//! schema (one round trip each when it is current) and returns a server whose axum [`Router`]
//! serves the `/v1` cell API. The shard map lives behind an [`ArcSwap`]: every request loads
//! the current [`Topology`] once, and a new map can replace it atomically while serving.

pub mod api;
pub mod config;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod problem;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use mezzanine_core::ShardMap;
use mezzanine_storage::schema::prepare_backend;
use mezzanine_storage::{Backend, StorageError};

pub use config::ServeConfig;
pub use problem::Problem;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read the shard map {path}: {source}")]
    ReadMap {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid shard map {path}: {source}")]
    Map {
        path: String,
        source: mezzanine_core::MapError,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A backend as the router sees it: its pool, and whether its schema is ready for traffic.
pub struct BackendSlot {
    pub backend: Arc<Backend>,
    ready: AtomicBool,
}

impl BackendSlot {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The shard map and the backends it names, swapped as one value.
pub struct Topology {
    pub map: ShardMap,
    pub backends: Vec<Arc<BackendSlot>>,
}

impl Topology {
    /// The backend serving `shard`, or a 503 problem if it cannot take traffic yet.
    pub fn backend_for(&self, shard: u32) -> Result<&Arc<Backend>, Problem> {
        let index = self.map.owner(shard).ok_or_else(|| {
            Problem::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("shard {shard} has no backend"),
            )
        })?;
        self.backend_at(index)
    }

    /// The backend at `index` of the map, or a 503 problem if it cannot take traffic yet.
    pub fn backend_at(&self, index: usize) -> Result<&Arc<Backend>, Problem> {
        let slot = self.backends.get(index).ok_or_else(|| {
            Problem::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("no backend #{index}"),
            )
        })?;
        if !slot.is_ready() {
            let mut p = Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "backend {} is not prepared yet (unreachable since start)",
                    slot.backend.name()
                ),
            );
            p.retry_after = Some(Duration::from_secs(1));
            return Err(p);
        }
        Ok(&slot.backend)
    }
}

/// Shared state of every request.
pub struct AppState {
    topology: ArcSwap<Topology>,
    pub config: ServeConfig,
}

impl AppState {
    /// The current topology (one atomic load).
    pub fn topology(&self) -> arc_swap::Guard<Arc<Topology>> {
        self.topology.load()
    }

    /// Replaces the topology atomically; requests in flight finish on the one they loaded.
    pub fn replace_topology(&self, t: Topology) {
        self.topology.store(Arc::new(t));
    }

    pub fn num_shards(&self) -> u32 {
        self.topology.load().map.num_shards()
    }
}

/// A started server: backends opened and prepared, ready to serve.
pub struct Server {
    pub state: Arc<AppState>,
    /// How long start-up took.
    pub startup: Duration,
}

impl Server {
    /// Reads the shard map named by `config` and starts.
    pub async fn start(config: ServeConfig) -> Result<Server, StartError> {
        let path = config.shard_config_path.display().to_string();
        let text = tokio::fs::read_to_string(&config.shard_config_path)
            .await
            .map_err(|source| StartError::ReadMap {
                path: path.clone(),
                source,
            })?;
        let map = ShardMap::parse(&text, config.num_shards)
            .map_err(|source| StartError::Map { path, source })?;
        Server::start_with_map(config, map).await
    }

    /// Starts with a given shard map. A backend that cannot be reached now is prepared in the
    /// background, its shards answering 503 until then; a backend whose layout contradicts the
    /// configuration (another `NUM_SHARDS`) stops the start.
    pub async fn start_with_map(config: ServeConfig, map: ShardMap) -> Result<Server, StartError> {
        let started = Instant::now();
        metrics::init();
        let settings = config.pool_settings();
        let mut slots = Vec::new();
        for spec in map.backends() {
            let backend = Backend::new(&spec.name, &spec.database_url, settings.clone())?;
            slots.push(Arc::new(BackendSlot {
                backend,
                ready: AtomicBool::new(false),
            }));
        }
        let num_shards = map.num_shards();
        let preparations = slots.iter().enumerate().map(|(i, slot)| {
            let shards: Vec<u32> = map.shards_of(i).collect();
            async move {
                (
                    slot,
                    prepare_backend(&slot.backend, num_shards, &shards).await,
                    shards,
                )
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
                    spawn_prepare_retry(slot.clone(), num_shards, shards);
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
        let state = Arc::new(AppState {
            topology: ArcSwap::from_pointee(Topology {
                map,
                backends: slots,
            }),
            config,
        });
        let startup = started.elapsed();
        tracing::info!(
            startup_ms = startup.as_millis() as u64,
            num_shards,
            "mezzanine ready"
        );
        Ok(Server { state, startup })
    }

    /// The HTTP application.
    pub fn router(&self) -> Router {
        http::router(self.state.clone())
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
            shards = ?r.foreign_active,
            "this backend marks shards active that the shard map gives to another backend; they are not served from here"
        );
    }
}

fn spawn_prepare_retry(slot: Arc<BackendSlot>, num_shards: u32, shards: Vec<u32>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match prepare_backend(&slot.backend, num_shards, &shards).await {
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
