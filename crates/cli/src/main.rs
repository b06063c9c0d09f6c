//! `mezzanine`: the one binary. `serve` runs a node, `dev` runs a local cluster with zero
//! configuration, `bench` measures, and the admin commands (`shards`, `backend`, `move`,
//! `verify`, `reload`, `status`) are clients of a node's admin API.

mod admin;
mod bench;
mod dev;
mod logging;

pub use logging::init_logging;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mezzanine_server::{http, ServeConfig, Server};

#[derive(Parser)]
#[command(
    name = "mezzanine",
    version,
    about = "Sharded, append-only cell store over PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the cell API over the backends of shards.json.
    Serve(Box<ServeConfig>),
    /// Start local PostgreSQL servers under a data folder and serve over them (zero configuration).
    Dev(dev::DevArgs),
    /// Measure a running server against direct PostgreSQL.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    #[command(flatten)]
    Admin(admin::AdminCommand),
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
    run_server_with_spares(config, Vec::new()).await
}

/// Runs a server; `spares` (name, URL) are registered as empty backends once the catalog
/// exists, unless they are registered already.
pub async fn run_server_with_spares(
    config: ServeConfig,
    spares: Vec<(String, String)>,
) -> anyhow::Result<()> {
    let addr = format!("{}:{}", config.host, config.port);
    let (read, idle, write) = (
        config.http_read_timeout,
        config.http_idle_timeout,
        config.http_write_timeout,
    );
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
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
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
        Command::Admin(cmd) => {
            if let Err(e) = admin::run(cmd).await {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::error!(error = format!("{e:#}"), "fatal");
        eprintln!("mezzanine: {e:#}");
        std::process::exit(1);
    }
}
