//! Server configuration: go-mezzanine's environment variables, each also a command-line flag.

use std::path::PathBuf;
use std::time::Duration;

use mezzanine_core::duration::parse_duration;
use mezzanine_core::hosts::HostsAllowed;
use mezzanine_storage::PoolSettings;

fn copy_share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if mezzanine_core::moves::valid_copy_share(v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a share above 0 and at most 1 (e.g. 0.35)"
        )),
    }
}

/// A `host:port` others can reach (a host name or address, and a port).
fn host_port(s: &str) -> Result<String, String> {
    let bad =
        || format!("{s:?} is not host:port (e.g. mezz-1.internal:8080 or [2001:db8::1]:8080)");
    let (host, port) = s.trim().rsplit_once(':').ok_or_else(bad)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    if bare.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad());
    }
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        if ip.is_unspecified() {
            return Err(format!(
                "{s:?}: an unspecified address cannot be reached; give this node's host name or address"
            ));
        }
    }
    Ok(s.trim().to_owned())
}

fn rate_limit(s: &str) -> Result<crate::auth::limits::Limit, String> {
    s.parse()
}

fn hosts_allowed(s: &str) -> Result<HostsAllowed, String> {
    s.parse()
        .map_err(|e: mezzanine_core::hosts::HostsError| e.to_string())
}

fn plugin_hosts_allowed(s: &str) -> Result<HostsAllowed, String> {
    HostsAllowed::parse_for(s, mezzanine_core::plugin::PLUGIN_HOSTS_ALLOWED)
        .map_err(|e| e.to_string())
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// The cutover's pause bound: no tail copies in no time, so 0 would give every freeze up.
fn pause_bound(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d < Duration::from_millis(10) {
        return Err(format!(
            "{s:?} is too short for a cutover's pause: every freeze would be given up and no move \
             could switch; give at least 10ms (default 500ms)"
        ));
    }
    Ok(d)
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
    /// The `host:port` at which other nodes and operators reach this node: reported by
    /// `status` as this node's address (and the leader's, when it leads). Default: the
    /// address it listens on or, when that is unspecified (0.0.0.0, ::), this machine's host
    /// name with the port.
    #[arg(long, env = "ADVERTISE_ADDR", value_parser = host_port)]
    pub advertise_addr: Option<String>,
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
    /// Largest request body accepted, in bytes (larger ones get 413); also the most a
    /// request's cell bodies may take once stored (their numbers written out in full).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Most bytes of cells in one partition-read page (past its first cell, which is always
    /// given): a page ends earlier than its `limit` rather than exceed it, at a point where a
    /// reader paging by `created_at` skips nothing.
    #[arg(long, env = "MAX_PAGE_BYTES", default_value_t = 16 << 20)]
    pub max_page_bytes: usize,
    /// Most connections served at once; a connection beyond gets a 503 (with Retry-After)
    /// and is closed.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
    /// Most request-body bytes buffered across all requests at once; a request beyond gets a
    /// 503 (with Retry-After) before its body is read.
    #[arg(long, env = "MAX_BUFFERED_BYTES", default_value_t = 128 << 20)]
    pub max_buffered_bytes: usize,
    /// Most connections per backend (default: the number of cores, at least 4, like
    /// pgxpool). Requests beyond it wait for a connection, within the query timeout. The
    /// mover has connections of its own.
    #[arg(long, env = "DB_MAX_CONNS", default_value_t = mezzanine_storage::default_max_conns())]
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
    /// The catalog database (shard map, backends, moves, audit log). Default: where the
    /// backends of shards.json record it (every backend records its cluster's catalog); for a
    /// new cluster, the schema `mezzanine` in the first backend of shards.json.
    #[arg(long, env = "CATALOG_URL")]
    pub catalog_url: Option<String>,
    /// The hosts `backend add` may make nodes connect to, separated by commas: host names
    /// (`db1.internal`, `*.db.internal`; never resolved), addresses and networks (`10.0.0.7`,
    /// `10.0.0.0/8`, `fd00::/8`), `*` (any host), socket directories (`/run/postgresql`),
    /// each with an optional `:PORT` (`[fd00::/8]:5432`). Default: any host but link-local
    /// and cloud metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254), which only an
    /// entry of their own allows.
    #[arg(long, env = "BACKEND_HOSTS_ALLOWED", value_parser = hosts_allowed)]
    pub backend_hosts_allowed: Option<HostsAllowed>,
    /// The hosts a plugin's endpoint may name (`POST /v1/plugins`), in the form of
    /// BACKEND_HOSTS_ALLOWED (`hooks.internal:9000`, `*.hooks.internal`, `10.0.0.0/8`, `*`).
    /// Default: any host but link-local and cloud metadata addresses (169.254.0.0/16,
    /// fe80::/10, fd00:ec2::254, metadata.google.internal), which only an entry of their own
    /// allows.
    #[arg(long, env = "PLUGIN_HOSTS_ALLOWED", value_parser = plugin_hosts_allowed)]
    pub plugin_hosts_allowed: Option<HostsAllowed>,
    /// Whether this node may lead the mover (`--no-mover` or MOVER_ENABLED=false: it serves
    /// traffic but never runs moves).
    #[arg(long, env = "MOVER_ENABLED", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub mover_enabled: bool,
    /// Keep this node out of the mover's leader election (same as MOVER_ENABLED=false).
    #[arg(long = "no-mover", default_value_t = false)]
    pub no_mover: bool,
    /// This node's id in the status and the audit log (default: random at start).
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// Longest time a request that meets a shard in cutover is held before a 503.
    #[arg(long, env = "MOVE_HOLD_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub move_hold_timeout: Duration,
    /// Most requests held at once (beyond, 503 at once).
    #[arg(long, env = "MOVE_HOLD_MAX", default_value_t = 10_000)]
    pub move_hold_max: usize,
    /// Most request bytes held at once: the bodies of the writes and batches held while their
    /// shard is in cutover (beyond, 503 at once).
    #[arg(long, env = "MOVE_HOLD_MAX_BYTES", default_value_t = 64 << 20)]
    pub move_hold_max_bytes: usize,
    /// Longest the cutover may take to copy the tail (the rows written since the last
    /// catch-up round) while the source is frozen: estimated before freezing, enforced by a
    /// deadline. A tail that does not fit gives the freeze up (the source is active again) and
    /// catching up resumes; after 3 such freezes the shard's move fails.
    #[arg(long, env = "MOVE_MAX_PAUSE", default_value = "500ms", value_parser = pause_bound)]
    pub move_max_pause: Duration,
    /// Retired sources of switched shards are dropped this long after the switch, unless
    /// `move complete` dropped them before.
    #[arg(long, env = "MOVE_RETENTION", default_value = "168h", value_parser = duration)]
    pub move_retention: Duration,
    /// The share of its full speed a move's bulk copy runs at, unless the move sets
    /// `max_rows_per_sec` (above 0, at most 1; 1: full speed). Measured per shard, so it
    /// follows the load; the rest is left to client traffic.
    #[arg(long, env = "MOVE_COPY_SHARE", default_value_t = 0.35, value_parser = copy_share)]
    pub move_copy_share: f64,
    /// Fallback re-read of the catalog map version (changes normally arrive by LISTEN/NOTIFY).
    #[arg(long, env = "CATALOG_POLL_INTERVAL", default_value = "1s", value_parser = duration)]
    pub catalog_poll_interval: Duration,
    /// The token file: one token per line, `NAME SCOPES sha256:HEX` (`mezzanine token create`
    /// prints the line). Read again when it changes (looked at every 2 s); a file that
    /// cannot be used keeps the last good tokens. With it (or TOKENS), /v1 needs a token too.
    #[arg(long, env = "TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Tokens as token-file lines, separated by newlines or `;` (hashes, never tokens).
    /// Fixed for the life of the process; together with TOKEN_FILE's.
    #[arg(long, env = "TOKENS", value_name = "LINES")]
    pub tokens: Option<String>,
    /// UNSAFE: serve the admin API to anyone who reaches the port, without a token. Anyone
    /// can then add a backend, move every shard there and drop the originals. Logged as a
    /// warning at start and shown by `mezzanine status`.
    #[arg(long, env = "UNSAFE_OPEN_ADMIN", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub unsafe_open_admin: bool,
    /// Serve /v1 (and /metrics) without a token even when tokens are configured (only the
    /// admin API needs one then), as `mezzanine dev` does.
    #[arg(long, env = "OPEN_DATA_API", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub open_data_api: bool,
    /// Serve HTTPS: the certificate chain (PEM, the server's certificate first, then its
    /// intermediates). Given with TLS_KEY_FILE, or neither (plain HTTP). Read again when it
    /// changes (looked at every 2 s): new connections get the new pair; a pair that cannot be
    /// used keeps the last good one.
    #[arg(long, env = "TLS_CERT_FILE", value_name = "PATH")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of TLS_CERT_FILE's certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TLS_KEY_FILE", value_name = "PATH")]
    pub tls_key_file: Option<PathBuf>,
    /// Require a client certificate signed by one of these CA certificates (PEM) from every
    /// client (mutual TLS; needs TLS_CERT_FILE). Transport only: tokens still decide what a
    /// client may do. Read again when it changes.
    #[arg(long, env = "TLS_CLIENT_CA_FILE", value_name = "PATH")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Rate limit of each token's requests to /v1 and /metrics, unless its line in the token
    /// file gives its own (`rate=`): `N/s`, `N/m` or `N/h`, optionally `,burst=B`, or `off`.
    /// Each node counts its own requests. Over it: 429 with Retry-After.
    #[arg(long, env = "RATE_LIMIT", value_name = "LIMIT", default_value = crate::auth::limits::DEFAULT_RATE, value_parser = rate_limit)]
    pub rate_limit: crate::auth::limits::Limit,
    /// Rate limit of each token's requests to the admin API, unless its line gives its own
    /// (and of everyone's together under UNSAFE_OPEN_ADMIN).
    #[arg(long, env = "ADMIN_RATE_LIMIT", value_name = "LIMIT", default_value = crate::auth::limits::DEFAULT_ADMIN_RATE, value_parser = rate_limit)]
    pub admin_rate_limit: crate::auth::limits::Limit,
    /// Rate limit of requests without a token to an open /v1 (no token configured, or
    /// OPEN_DATA_API), per client address (addresses share 1024 buckets). Off by default: an
    /// address is no identity behind a proxy.
    #[arg(long, env = "ANON_RATE_LIMIT", value_name = "LIMIT", default_value = crate::auth::limits::DEFAULT_ANON_RATE, value_parser = rate_limit)]
    pub anon_rate_limit: crate::auth::limits::Limit,
    /// Test only: pauses in the mover (`after_freeze=30s,...`) so crash tests can kill a
    /// leader in a given phase.
    #[arg(long, env = "MEZZANINE_FAILPOINTS", hide = true, default_value = "")]
    pub failpoints: String,
    /// Trigger delivery: how many times an event a plugin refuses (a 4xx other than 429, a
    /// JSON-RPC error) is sent again before it is parked.
    #[arg(long, env = "TRIGGER_RETRY_MAX", default_value_t = 3)]
    pub trigger_retry_max: u32,
    /// Trigger delivery: pause between the attempts of a refused event.
    #[arg(long, env = "TRIGGER_RETRY_BACKOFF", default_value = "1s", value_parser = duration)]
    pub trigger_retry_backoff: Duration,
    /// Trigger delivery: timeout of one JSON-RPC call.
    #[arg(long, env = "TRIGGER_RPC_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub trigger_rpc_timeout: Duration,
    /// Trigger delivery: calls in flight at once per plugin (each shard's events go one at a
    /// time, in order; different shards in parallel up to this).
    #[arg(long, env = "TRIGGER_PARALLELISM", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub trigger_parallelism: u32,
    /// Whether this node may deliver plugin events (`DELIVERY_ENABLED=false`: it never takes
    /// the deliverer's lock; one node of those that may delivers at a time).
    #[arg(long, env = "DELIVERY_ENABLED", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub delivery_enabled: bool,
    /// Most plugins the cluster registers (each one's name labels metrics): a registration
    /// beyond is refused (409).
    #[arg(long, env = "PLUGINS_MAX", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub plugins_max: u32,
}

impl ServeConfig {
    /// The TLS files, when the port speaks HTTPS; an error when they are not given together.
    pub fn tls_files(&self) -> Result<Option<crate::tls::TlsFiles>, crate::tls::TlsError> {
        crate::tls::files(
            self.tls_cert_file.as_deref(),
            self.tls_key_file.as_deref(),
            self.tls_client_ca_file.as_deref(),
        )
    }

    /// The server-wide rate limits.
    pub fn rate_limits(&self) -> crate::auth::limits::Defaults {
        crate::auth::limits::Defaults {
            data: self.rate_limit,
            admin: self.admin_rate_limit,
            anonymous: self.anon_rate_limit,
        }
    }

    /// Whether this node takes part in the mover's leader election.
    pub fn mover(&self) -> bool {
        self.mover_enabled && !self.no_mover
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: ServeConfig,
    }

    #[test]
    fn every_go_mezzanine_variable_has_a_flag() {
        let args = [
            "mezzanine",
            "--shard-config-path=/etc/m/shards.json",
            "--num-shards=4096",
            "--port=9000",
            "--log-level=debug",
            "--index-config-path=/etc/m/indexes.json",
            "--http-read-timeout=2s",
            "--http-write-timeout=3s",
            "--http-idle-timeout=1m",
            "--db-max-conns=7",
            "--db-min-conns=2",
            "--db-max-conn-lifetime=10m",
            "--db-max-conn-idle-time=90s",
            "--db-health-check-period=250ms",
            "--db-query-timeout=1500ms",
            "--trigger-retry-max=9",
            "--trigger-retry-backoff=2s",
            "--trigger-rpc-timeout=4s",
        ];
        let c = Cli::try_parse_from(args).unwrap().config;
        assert_eq!(c.num_shards, 4096);
        assert_eq!(c.port, 9000);
        assert_eq!(c.http_idle_timeout, Duration::from_secs(60));
        assert_eq!(c.db_query_timeout, Duration::from_millis(1500));
        let p = c.pool_settings();
        assert_eq!((p.max_conns, p.min_conns), (7, 2));
        assert_eq!(p.max_conn_idle_time, Some(Duration::from_secs(90)));
        assert_eq!(c.trigger_retry_max, 9);
    }

    #[test]
    fn the_copy_share_is_a_share() {
        let parse = |v: &str| Cli::try_parse_from(["mezzanine", &format!("--move-copy-share={v}")]);
        assert_eq!(parse("0.25").unwrap().config.move_copy_share, 0.25);
        assert_eq!(parse("1").unwrap().config.move_copy_share, 1.0);
        for bad in ["0", "-0.5", "1.5", "NaN", "half"] {
            let e = parse(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("share above 0 and at most 1"), "{bad}: {e}");
        }
        let default = Cli::try_parse_from(["mezzanine"]).unwrap().config;
        assert_eq!(default.move_copy_share, 0.35);
    }

    #[test]
    fn every_flag_is_bound_to_its_environment_variable() {
        let cmd = <Cli as clap::CommandFactory>::command();
        let envs: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        for var in [
            "SHARD_CONFIG_PATH",
            "NUM_SHARDS",
            "PORT",
            "LOG_LEVEL",
            "INDEX_CONFIG_PATH",
            "HTTP_READ_TIMEOUT",
            "HTTP_WRITE_TIMEOUT",
            "HTTP_IDLE_TIMEOUT",
            "DB_MAX_CONNS",
            "DB_MIN_CONNS",
            "DB_MAX_CONN_LIFETIME",
            "DB_MAX_CONN_IDLE_TIME",
            "DB_HEALTH_CHECK_PERIOD",
            "DB_QUERY_TIMEOUT",
            "TRIGGER_RETRY_MAX",
            "TRIGGER_RETRY_BACKOFF",
            "TRIGGER_RPC_TIMEOUT",
        ] {
            assert!(envs.iter().any(|e| e == var), "{var} has no flag");
        }
    }

    #[test]
    fn the_mover_can_be_switched_off_by_flag_or_variable() {
        let c = Cli::try_parse_from(["mezzanine"]).unwrap().config;
        assert!(c.mover());
        let c = Cli::try_parse_from(["mezzanine", "--no-mover"])
            .unwrap()
            .config;
        assert!(!c.mover());
        let c = Cli::try_parse_from(["mezzanine", "--mover-enabled=false"])
            .unwrap()
            .config;
        assert!(!c.mover());
    }

    #[test]
    fn held_bytes_are_bounded_by_flag_or_variable() {
        let c = Cli::try_parse_from(["mezzanine"]).unwrap().config;
        assert_eq!(c.move_hold_max_bytes, 64 << 20);
        let c = Cli::try_parse_from(["mezzanine", "--move-hold-max-bytes=1000"])
            .unwrap()
            .config;
        assert_eq!(c.move_hold_max_bytes, 1000);
    }

    #[test]
    fn the_cutover_pause_is_bounded_by_flag() {
        let c = Cli::try_parse_from(["mezzanine"]).unwrap().config;
        assert_eq!(c.move_max_pause, Duration::from_millis(500));
        let c = Cli::try_parse_from(["mezzanine", "--move-max-pause=2s"])
            .unwrap()
            .config;
        assert_eq!(c.move_max_pause, Duration::from_secs(2));
        for bad in ["0", "0s", "5ms"] {
            let err = Cli::try_parse_from(["mezzanine", &format!("--move-max-pause={bad}")])
                .err()
                .unwrap();
            assert!(err.to_string().contains("too short"), "{err}");
        }
    }

    #[test]
    fn the_advertised_address_is_a_reachable_host_and_port() {
        let parse = |v: &str| Cli::try_parse_from(["mezzanine", &format!("--advertise-addr={v}")]);
        for good in ["mezz-1.internal:8080", "10.0.0.7:80", "[2001:db8::1]:8080"] {
            assert_eq!(
                parse(good).unwrap().config.advertise_addr.as_deref(),
                Some(good)
            );
        }
        for bad in [
            "mezz-1",
            ":8080",
            "host:0",
            "host:99999",
            "2001:db8::1:80",
            "0.0.0.0:8080",
            "[::]:80",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            Cli::try_parse_from(["mezzanine"])
                .unwrap()
                .config
                .advertise_addr,
            None
        );
    }

    #[test]
    fn the_unsafe_and_open_flags_take_a_value_or_none() {
        let c = Cli::try_parse_from(["mezzanine"]).unwrap().config;
        assert!(!c.unsafe_open_admin && !c.open_data_api);
        assert_eq!((c.token_file, c.tokens), (None, None));
        let c = Cli::try_parse_from(["mezzanine", "--unsafe-open-admin", "--open-data-api"])
            .unwrap()
            .config;
        assert!(c.unsafe_open_admin && c.open_data_api);
        let c = Cli::try_parse_from(["mezzanine", "--unsafe-open-admin=false"])
            .unwrap()
            .config;
        assert!(!c.unsafe_open_admin);
        assert!(Cli::try_parse_from(["mezzanine", "--unsafe-open-admin=maybe"]).is_err());
    }

    #[test]
    fn tls_takes_a_certificate_and_its_key_together() {
        let c = Cli::try_parse_from(["mezzanine"]).unwrap().config;
        assert_eq!(c.tls_files().unwrap(), None);
        let c = Cli::try_parse_from([
            "mezzanine",
            "--tls-cert-file=/etc/m/cert.pem",
            "--tls-key-file=/etc/m/key.pem",
            "--tls-client-ca-file=/etc/m/ca.pem",
        ])
        .unwrap()
        .config;
        let files = c.tls_files().unwrap().unwrap();
        assert_eq!(files.cert, PathBuf::from("/etc/m/cert.pem"));
        assert_eq!(files.key, PathBuf::from("/etc/m/key.pem"));
        assert_eq!(files.client_ca, Some(PathBuf::from("/etc/m/ca.pem")));
        let one = Cli::try_parse_from(["mezzanine", "--tls-cert-file=/etc/m/cert.pem"])
            .unwrap()
            .config;
        let e = one.tls_files().unwrap_err().to_string();
        assert!(e.contains("TLS_KEY_FILE is not"), "{e}");
        let one = Cli::try_parse_from(["mezzanine", "--tls-key-file=/etc/m/key.pem"])
            .unwrap()
            .config;
        let e = one.tls_files().unwrap_err().to_string();
        assert!(e.contains("TLS_CERT_FILE is not"), "{e}");
        let cmd = <Cli as clap::CommandFactory>::command();
        for var in ["TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE"] {
            assert!(
                cmd.get_arguments()
                    .any(|a| a.get_env() == Some(std::ffi::OsStr::new(var))),
                "{var} has no flag"
            );
        }
    }

    #[test]
    fn rate_limits_have_defaults_and_refuse_bad_values() {
        let c = Cli::try_parse_from(["mezzanine"]).unwrap().config;
        assert_eq!(c.rate_limits(), crate::auth::limits::Defaults::default());
        let c = Cli::try_parse_from([
            "mezzanine",
            "--rate-limit=5/s,burst=10",
            "--admin-rate-limit=off",
            "--anon-rate-limit=60/m",
        ])
        .unwrap()
        .config;
        assert_eq!(c.rate_limit.to_string(), "5/s,burst=10");
        assert_eq!(c.admin_rate_limit.to_string(), "off");
        assert_eq!(c.anon_rate_limit.to_string(), "60/m");
        let err = Cli::try_parse_from(["mezzanine", "--rate-limit=fast"])
            .err()
            .unwrap();
        assert!(err.to_string().contains("is not a rate limit"), "{err}");
    }

    #[test]
    fn bad_durations_are_refused_with_a_message() {
        let err = Cli::try_parse_from(["mezzanine", "--db-query-timeout=soon"])
            .err()
            .unwrap();
        assert!(err.to_string().contains("invalid duration"), "{err}");
    }
}
