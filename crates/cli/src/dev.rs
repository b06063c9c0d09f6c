//! `mezzanine dev`: a local cluster with zero configuration.
//!
//! Starts `--backends` PostgreSQL servers (and `--spare` empty ones) from the installed
//! binaries, each with its own data directory and port under `--data-dir`, splits the shards
//! evenly, writes `shards.json`, a token file with an admin token (`tokens`) and
//! `mezzanine.env` (which gives the token to the CLI), and serves. The ports are chosen once and
//! kept in `cluster.json`, so a second start on the same folder finds the same data at the
//! same addresses. SIGINT or SIGTERM stops the HTTP server, then every PostgreSQL server.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use mezzanine_core::ShardMap;
use mezzanine_pgcluster::{check_dir_access, PgInstall, PgServer, ServerSpec};
use mezzanine_server::ServeConfig;
use serde::{Deserialize, Serialize};

/// Options of `mezzanine dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// PostgreSQL servers that hold shards.
    #[arg(long, default_value_t = 2)]
    pub backends: usize,
    /// Further empty PostgreSQL servers, owning no shards (listed in mezzanine.env).
    #[arg(long, default_value_t = 0)]
    pub spare: usize,
    /// Number of shards, split evenly into contiguous ranges.
    #[arg(long, default_value_t = 64)]
    pub num_shards: u32,
    /// HTTP port.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Port of the first PostgreSQL server; the others take the next ports, in order (db1,
    /// db2, …, then spare1, …). Default: free ports chosen by the system. The ports are kept in
    /// <data-dir>/cluster.json (the catalog records the servers' URLs), so they are chosen
    /// once, when the folder is created.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub pg_port_base: Option<u16>,
    /// Folder for the servers' data, shards.json and mezzanine.env.
    #[arg(long, default_value = ".mezzanine")]
    pub data_dir: PathBuf,
    /// Log level.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format: text (default for dev) or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// What `cluster.json` records: the servers of the folder and their ports.
#[derive(Debug, Serialize, Deserialize)]
struct ClusterFile {
    num_shards: u32,
    backends: Vec<Node>,
    spare: Vec<Node>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Node {
    name: String,
    port: u16,
}

const DATABASE: &str = "mezzanine";

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether nothing listens on `port` of the loopback interface (a bind test).
fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The port of the `i`th server (0-based, backends then spares) of a new folder.
fn new_port(args: &DevArgs, i: usize) -> anyhow::Result<u16> {
    match args.pg_port_base {
        None => free_port(),
        Some(base) => u16::try_from(usize::from(base) + i)
            .ok()
            .filter(|&p| p > 0)
            .with_context(|| {
                format!(
                    "--pg-port-base {base} leaves no port for server #{} (ports end at 65535)",
                    i + 1
                )
            }),
    }
}

/// The servers of the folder, reading `cluster.json` if it exists, else laying out a new
/// one. Nothing is written: [`save`] does that once every port is known to be free.
fn load_or_create(dir: &Path, args: &DevArgs) -> anyhow::Result<ClusterFile> {
    let path = dir.join("cluster.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut c: ClusterFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is damaged", path.display()))?;
        if c.num_shards != args.num_shards {
            bail!(
                "{} was created with --num-shards {}; the shard of every row depends on it. \
                 Use --num-shards {} or another --data-dir.",
                dir.display(),
                c.num_shards,
                c.num_shards
            );
        }
        if c.backends.len() != args.backends {
            bail!(
                "{} was created with --backends {}; use that, or another --data-dir",
                dir.display(),
                c.backends.len()
            );
        }
        if let (Some(base), Some(first)) = (args.pg_port_base, c.backends.first()) {
            if base != first.port {
                bail!(
                    "{} was created with its PostgreSQL servers on ports from {} (the catalog \
                     records their URLs); drop --pg-port-base, or use another --data-dir",
                    dir.display(),
                    first.port
                );
            }
        }
        // Spare servers may be added later.
        while c.spare.len() < args.spare {
            let taken: Vec<u16> = c.backends.iter().chain(&c.spare).map(|n| n.port).collect();
            let next = match args.pg_port_base {
                Some(_) => taken.iter().max().copied().unwrap_or(0).checked_add(1),
                None => Some(free_port()?),
            };
            c.spare.push(Node {
                name: format!("spare{}", c.spare.len() + 1),
                port: next.context("no port left above the folder's servers for a spare")?,
            });
        }
        return Ok(c);
    }
    if args.backends == 0 {
        bail!("--backends must be at least 1");
    }
    if args.num_shards == 0
        || args.num_shards as usize > mezzanine_core::shardmap::MAX_SHARDS as usize
    {
        bail!(
            "--num-shards must be between 1 and {}",
            mezzanine_core::shardmap::MAX_SHARDS
        );
    }
    if (args.num_shards as usize) < args.backends {
        bail!(
            "--num-shards ({}) must be at least --backends ({})",
            args.num_shards,
            args.backends
        );
    }
    let mut c = ClusterFile {
        num_shards: args.num_shards,
        backends: Vec::new(),
        spare: Vec::new(),
    };
    for i in 0..args.backends + args.spare {
        let (list, prefix, n) = match i < args.backends {
            true => (&mut c.backends, "db", i + 1),
            false => (&mut c.spare, "spare", i + 1 - args.backends),
        };
        list.push(Node {
            name: format!("{prefix}{n}"),
            port: new_port(args, i)?,
        });
    }
    Ok(c)
}

/// Refuses to go on when a server's port is taken (before any server is initialised or
/// started), saying which server, where its port comes from, and what to do.
fn check_ports(dir: &Path, c: &ClusterFile, args: &DevArgs, existed: bool) -> anyhow::Result<()> {
    for n in c.backends.iter().chain(&c.spare) {
        if n.port == args.port {
            bail!(
                "PostgreSQL server {} would use port {}, the HTTP port (--port); choose \
                 another --port",
                n.name,
                n.port
            );
        }
        if port_free(n.port) {
            continue;
        }
        match (existed, args.pg_port_base) {
            (true, _) => bail!(
                "port {} of PostgreSQL server {} (recorded in {}) is in use: is another \
                 `mezzanine dev` running on this folder? Stop it, or free the port",
                n.port,
                n.name,
                dir.join("cluster.json").display()
            ),
            (false, Some(base)) => bail!(
                "port {} for PostgreSQL server {} is in use (servers take the ports from \
                 --pg-port-base {base} on); choose another --pg-port-base",
                n.port,
                n.name
            ),
            (false, None) => bail!(
                "port {} for PostgreSQL server {} was free a moment ago and is now in use; \
                 start again",
                n.port,
                n.name
            ),
        }
    }
    Ok(())
}

fn save(dir: &Path, c: &ClusterFile) -> anyhow::Result<()> {
    let path = dir.join("cluster.json");
    std::fs::write(&path, serde_json::to_vec_pretty(c)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

async fn ensure_database(server_url: &str) -> anyhow::Result<()> {
    let (client, conn) =
        mezzanine_storage::conninfo::connect(server_url, std::time::Duration::from_secs(10))
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to a dev server: {e}"))?;
    let task = tokio::spawn(conn);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&DATABASE])
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
            .await?;
    }
    drop(client);
    let _ = task.await;
    Ok(())
}

/// The dev cluster's admin token: the one its mezzanine.env holds (so that a restart keeps
/// it), else a new one. The token file gets its line (named `dev`), replacing an older `dev`
/// line and keeping the operator's others.
fn dev_token(env_path: &Path, token_path: &Path) -> anyhow::Result<String> {
    use mezzanine_server::auth::tokens::{self, Scope};
    let kept = std::fs::read_to_string(env_path)
        .ok()
        .and_then(|t| crate::token::env_value(&t, "MEZZANINE_TOKEN"))
        .filter(|t| t.starts_with(tokens::TOKEN_PREFIX));
    let token = kept.unwrap_or_else(tokens::new_token);
    let existing = match std::fs::read_to_string(token_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", token_path.display())),
    };
    let mut text: String = existing
        .lines()
        .filter(|l| l.split_whitespace().next() != Some("dev"))
        .map(|l| format!("{l}\n"))
        .collect();
    if text.is_empty() {
        text.push_str("# Tokens of this dev cluster: NAME SCOPES sha256:HEX (`mezzanine token create` prints lines).\n");
    }
    text.push_str(&tokens::token_line("dev", Scope::Admin, &token));
    text.push('\n');
    tokens::parse_lines(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a valid token file: {e}", token_path.display()))?;
    write_private(token_path, &text)?;
    Ok(token)
}

/// Writes `text` to `path`, readable and writable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    std::io::Write::write_all(&mut f, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Runs the dev cluster until SIGINT or SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    crate::init_logging(&args.log_level, &args.log_format);
    tracing::info!(
        dir = %args.data_dir.display(),
        port = args.port,
        "mezzanine dev: checking the ports, the PostgreSQL binaries and the folder"
    );
    // What can fail cheaply comes first, before any PostgreSQL server is touched: the HTTP
    // port (held from now on, so nothing takes it while the servers start), the install, the
    // folder, the servers' ports.
    let listener = std::net::TcpListener::bind(("127.0.0.1", args.port)).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on 127.0.0.1:{}: {e}; is another mezzanine running? Stop it, or \
             choose another --port",
            args.port
        )
    })?;
    let install = PgInstall::locate()?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let dir = std::fs::canonicalize(&args.data_dir)?;
    check_dir_access(&dir)?;
    let existed = dir.join("cluster.json").exists();
    let cluster = load_or_create(&dir, &args)?;
    check_ports(&dir, &cluster, &args, existed)?;
    save(&dir, &cluster)?;

    let nodes: Vec<Node> = cluster
        .backends
        .iter()
        .chain(&cluster.spare)
        .cloned()
        .collect();
    tracing::info!(servers = nodes.len(), dir = %dir.display(), "starting PostgreSQL servers");
    let specs: Vec<ServerSpec> = nodes
        .iter()
        .map(|n| {
            ServerSpec::new(dir.join(&n.name))
                .port(n.port)
                .log_file(dir.join(format!("{}.log", n.name)))
        })
        .collect();
    let servers: Vec<PgServer> = tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            let handles: Vec<_> = specs
                .into_iter()
                .map(|spec| s.spawn(|| PgServer::start(&install, spec)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("a server start panicked"))?
                        .map_err(anyhow::Error::from)
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })
    })
    .await??;
    for s in &servers {
        ensure_database(&s.url("postgres")).await?;
    }

    let backend_urls: Vec<(String, String)> = cluster
        .backends
        .iter()
        .zip(&servers)
        .map(|(n, s)| (n.name.clone(), s.url(DATABASE)))
        .collect();
    let spare_urls: Vec<(String, String)> = cluster
        .spare
        .iter()
        .zip(servers.iter().skip(cluster.backends.len()))
        .map(|(n, s)| (n.name.clone(), s.url(DATABASE)))
        .collect();
    let map = ShardMap::even_split(&backend_urls, cluster.num_shards)?;
    let shards_path = dir.join("shards.json");
    std::fs::write(&shards_path, serde_json::to_vec_pretty(&map.to_file())?)?;
    let env_path = dir.join("mezzanine.env");
    // The admin API needs a token: the cluster has one named `dev` (kept across starts, so
    // shells that read mezzanine.env keep working), in a token file of its own, and
    // mezzanine.env gives it to the CLI. /v1 stays open (OPEN_DATA_API), as the README's
    // examples use it.
    let token_path = dir.join("tokens");
    let token = dev_token(&env_path, &token_path)?;
    let spare_line = spare_urls
        .iter()
        .map(|(n, u)| format!("{n}={u}"))
        .collect::<Vec<_>>()
        .join(",");
    write_private(
        &env_path,
        &format!(
            "# Written by `mezzanine dev`. Join another node: set -a; . {env}; PORT=8081 mezzanine serve\n\
             # MEZZANINE_TOKEN is the admin token `dev` (a secret: this file is readable by its owner only).\n\
             SHARD_CONFIG_PATH={shards}\nNUM_SHARDS={n}\nPORT={port}\nMEZZANINE_URL=http://127.0.0.1:{port}\n\
             MEZZANINE_SPARE_BACKENDS={spare_line}\nTOKEN_FILE={tokens}\nOPEN_DATA_API=true\n\
             MEZZANINE_TOKEN={token}\n",
            env = env_path.display(),
            shards = shards_path.display(),
            tokens = token_path.display(),
            n = cluster.num_shards,
            port = args.port,
        ),
    )?;

    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        config: ServeConfig,
    }
    let mut config = <Defaults as clap::Parser>::try_parse_from(["mezzanine"])?.config;
    config.shard_config_path = shards_path;
    config.num_shards = cluster.num_shards;
    config.port = args.port;
    config.host = "127.0.0.1".into();
    config.token_file = Some(token_path);
    config.open_data_api = true;
    for (name, url) in &backend_urls {
        tracing::info!(backend = %name, url = %mezzanine_storage::mask_url(url), "backend");
    }
    for (name, url) in &spare_urls {
        tracing::info!(spare = %name, url = %mezzanine_storage::mask_url(url), "spare server (registered as a backend that owns no shards)");
    }
    tracing::info!(env = %env_path.display(), "a second node can join with: set -a; . {}; PORT=8081 mezzanine serve", env_path.display());
    let result = crate::run_server_with_spares(config, spare_urls, Some(listener)).await;
    tracing::info!("stopping PostgreSQL servers");
    tokio::task::spawn_blocking(move || {
        for mut s in servers {
            if let Err(e) = s.stop() {
                tracing::warn!(error = %e, "a PostgreSQL server did not stop cleanly");
            }
        }
    })
    .await?;
    result
}
