//! `mezzanine`: the one binary. `serve` runs a node, `dev` runs a local cluster with zero
//! configuration, `bench` measures, and the admin commands (`shards`, `backend`, `move`,
//! `verify`, `reload`, `status`) are clients of a node's admin API; `completions` and `man`
//! print shell completions and man pages generated from the command line (`cli`).

mod admin;
mod bench;
mod cli;
mod dev;
mod docs;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command};
use mezzanine_server::{http, ServeConfig, Server};

/// Whether the logs are JSON lines (set by [`init_logging`]): a fatal error is then logged as
/// one too, for log collectors, besides the plain line for people.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets up structured logging: JSON by default, human-readable with `text`.
pub fn init_logging(level: &str, format: &str) {
    JSON_LOGS.store(
        !format.eq_ignore_ascii_case("text"),
        std::sync::atomic::Ordering::Relaxed,
    );
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format.eq_ignore_ascii_case("text") {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}

/// Starts a server with `config` and serves until SIGINT or SIGTERM.
pub async fn run_server(config: ServeConfig) -> anyhow::Result<()> {
    run_server_with_spares(config, Vec::new(), None).await
}

/// Runs a server; `spares` (name, URL) are registered as empty backends once the catalog
/// exists, unless they are registered already. `listener`: the HTTP socket, bound already
/// (else `HOST:PORT` is bound first, before any backend is touched).
pub async fn run_server_with_spares(
    config: ServeConfig,
    spares: Vec<(String, String)>,
    listener: Option<std::net::TcpListener>,
) -> anyhow::Result<()> {
    let addr = format!("{}:{}", config.host, config.port);
    let (read, idle, write) = (
        config.http_read_timeout,
        config.http_idle_timeout,
        config.http_write_timeout,
    );
    // The port first: a port in use is reported before any backend is touched.
    let listener = match listener {
        Some(l) => {
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)?
        }
        None => tokio::net::TcpListener::bind(&addr).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr}: {e}; is another server running? Stop it, or set PORT (--port)")
        })?,
    };
    let server = Server::start(config).await?;
    let known = server.state.topology().map.backends().to_vec();
    for (name, url) in spares {
        if known.iter().any(|b| b.name == name) {
            continue;
        }
        match server.state.add_backend(&name, &url, 1.0).await {
            Ok(()) => {
                tracing::info!(backend = %name, "spare server registered as an empty backend")
            }
            Err(p) => {
                tracing::warn!(backend = %name, error = %p.detail, "spare server not registered")
            }
        }
    }
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| addr.clone());
    server.serving_on(&local);
    tracing::info!(addr = %addr, startup_ms = server.startup.as_millis() as u64, "serving");
    http::serve(
        listener,
        server.router(),
        read,
        idle,
        write,
        shutdown_signal(),
    )
    .await?;
    server.state.stop_background();
    tracing::info!("stopped");
    Ok(())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(config) => {
            init_logging(&config.log_level, &config.log_format);
            run_server(*config).await
        }
        Command::Dev(args) => dev::run(args).await,
        Command::Bench(cmd) => bench::run(cmd).await,
        Command::Completions { shell } => docs::print(&docs::completion_script(shell))
            .context("cannot write the completion script"),
        Command::Man { out: None } => docs::man_page()
            .and_then(|page| docs::print(&page))
            .context("cannot write the man page"),
        Command::Man { out: Some(dir) } => docs::write_man_pages(&dir)
            .with_context(|| format!("cannot write man pages into {}", dir.display()))
            .and_then(|paths| {
                let list: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
                docs::print(list.as_bytes()).context("cannot write to stdout")
            }),
        Command::Admin(cmd) => {
            if let Err(e) = admin::run(cmd).await {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
    };
    if let Err(e) = result {
        if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::error!(error = format!("{e:#}"), "fatal");
        }
        eprintln!("mezzanine: {e:#}");
        std::process::exit(1);
    }
}
