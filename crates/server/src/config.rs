//! Server configuration: go-mezzanine's environment variables, each also a command-line flag.

use std::path::PathBuf;
use std::time::Duration;

use mezzanine_core::duration::parse_duration;
use mezzanine_storage::PoolSettings;

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// Settings of `mezzanine serve` (and of the server `mezzanine dev` runs).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Path of shards.json (backends and their shard ranges).
    #[arg(long, env = "SHARD_CONFIG_PATH", default_value = "shards.json")]
    pub shard_config_path: PathBuf,
    /// Number of shards; must match the layout of the databases.
    #[arg(long, env = "NUM_SHARDS", default_value_t = 64)]
    pub num_shards: u32,
    /// TCP port to serve HTTP on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Log level or filter (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format: json (default) or text.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,
    /// Secondary index definitions (not served yet by this version; see README).
    #[arg(long, env = "INDEX_CONFIG_PATH")]
    pub index_config_path: Option<PathBuf>,
    /// Longest time to read a request's headers.
    #[arg(long, env = "HTTP_READ_TIMEOUT", default_value = "15s", value_parser = duration)]
    pub http_read_timeout: Duration,
    /// Longest time to handle a request and write its response.
    #[arg(long, env = "HTTP_WRITE_TIMEOUT", default_value = "15s", value_parser = duration)]
    pub http_write_timeout: Duration,
    /// How long an idle keep-alive connection is kept open.
    #[arg(long, env = "HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub http_idle_timeout: Duration,
    /// Largest request body accepted, in bytes (larger ones get 413).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Most connections per backend.
    #[arg(long, env = "DB_MAX_CONNS", default_value_t = 16)]
    pub db_max_conns: usize,
    /// Connections per backend kept open even when idle.
    #[arg(long, env = "DB_MIN_CONNS", default_value_t = 0)]
    pub db_min_conns: usize,
    /// A connection older than this is closed and replaced.
    #[arg(long, env = "DB_MAX_CONN_LIFETIME", default_value = "1h", value_parser = duration)]
    pub db_max_conn_lifetime: Duration,
    /// A connection idle longer than this is closed.
    #[arg(long, env = "DB_MAX_CONN_IDLE_TIME", default_value = "30m", value_parser = duration)]
    pub db_max_conn_idle_time: Duration,
    /// How often a healthy backend is probed (a down one is probed every 250 ms).
    #[arg(long, env = "DB_HEALTH_CHECK_PERIOD", default_value = "5s", value_parser = duration)]
    pub db_health_check_period: Duration,
    /// Bound on every database operation; a backend that does not answer in time is marked
    /// down and its shards answer 503 with Retry-After.
    #[arg(long, env = "DB_QUERY_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub db_query_timeout: Duration,
    /// Trigger delivery: attempts per event (used by trigger plugins, a later version).
    #[arg(long, env = "TRIGGER_RETRY_MAX", default_value_t = 3)]
    pub trigger_retry_max: u32,
    /// Trigger delivery: pause between attempts.
    #[arg(long, env = "TRIGGER_RETRY_BACKOFF", default_value = "1s", value_parser = duration)]
    pub trigger_retry_backoff: Duration,
    /// Trigger delivery: timeout of one JSON-RPC call.
    #[arg(long, env = "TRIGGER_RPC_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub trigger_rpc_timeout: Duration,
}

impl ServeConfig {
    /// The pool settings every backend gets.
    pub fn pool_settings(&self) -> PoolSettings {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        PoolSettings {
            max_conns: self.db_max_conns.max(1),
            min_conns: self.db_min_conns.min(self.db_max_conns.max(1)),
            max_conn_lifetime: nonzero(self.db_max_conn_lifetime),
            max_conn_idle_time: nonzero(self.db_max_conn_idle_time),
            health_check_period: self.db_health_check_period,
            query_timeout: if self.db_query_timeout.is_zero() {
                Duration::from_secs(5)
            } else {
                self.db_query_timeout
            },
        }
    }
}
