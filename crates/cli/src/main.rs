//! `mezzanine`: the one binary. `serve` runs a node, `dev` runs a local cluster with zero
//! configuration, `bench` measures, and the admin commands (`shards`, `backend`, `move`,
//! `verify`, `reload`, `status`) are clients of a node's admin API, sending a bearer token
//! (`token`: where they find it, and `token create`, which makes one); `completions` and
//! `man` print shell completions and man pages generated from the command line (`cli`).

mod admin;
mod bench;
mod cli;
mod dev;
mod docs;
mod logging;
mod tls;
mod token;

pub use logging::init_logging;

use std::ffi::OsString;

use anyhow::Context;
use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches};
use cli::{Cli, Command};
use mezzanine_server::{http, ServeConfig, Server};

/// Parses a command line (usage errors are clap's, exit code 2). `--server` and `--json`
/// before the command go to the admin commands only.
fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    let usage = |message: String| Cli::command().error(ErrorKind::ArgumentConflict, message);
    cli.command = match cli.command {
        Command::Admin(cmd) => Command::Admin(cmd.with_before(&cli.before, &matches).map_err(usage)?),
        _ if cli.before.given() => {
            return Err(usage(
                "--server and --json before the command are for the admin commands (shards, backend, move, verify, rebalance, reload, status); serve, dev, bench and token take their own options after the command".into(),
            ))
        }
        other => other,
    };
    Ok(cli)
}

/// Completes on SIGINT or SIGTERM.
/// The handlers are installed when this is called, not when the future is first polled, so a
/// signal sent as soon as the node says it serves is never missed.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(int.take()) => tracing::info!("SIGINT received"),
            _ = wait(term.take()) => tracing::info!("SIGTERM received"),
        }
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
    tracing::info!(
        addr = %addr,
        shards = %config.shard_config_path.display(),
        num_shards = config.num_shards,
        "starting"
    );
    let limits = mezzanine_server::conn::Limits::of(&config);
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
    // SIGINT and SIGTERM are caught from here on (the default action would kill the node
    // before it says it serves; a signal sent right after must stop it gracefully).
    let stop = shutdown_signal();
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
    let tls = server.tls();
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %addr, scheme, startup_ms = server.startup.as_millis() as u64, "serving");
    http::serve(listener, server.router(), limits, tls, stop).await?;
    server.state.stop_background();
    tracing::info!("stopped");
    Ok(())
}

/// An admin command whose reader stops early (`mezzanine move list --json | head`) ends
/// quietly, as command-line tools do, instead of panicking in `println!`: SIGPIPE gets its
/// default action back (Rust ignores it). Only for the commands that print and exit; a server
/// keeps ignoring it.
fn quiet_on_closed_pipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: restores the default disposition, which runs no handler code of ours.
    if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        tracing::debug!(error = %e, "SIGPIPE keeps being ignored");
    }
}

#[tokio::main]
async fn main() {
    let cli = parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit());
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
        Command::Token(cmd) => {
            quiet_on_closed_pipe();
            token::run(cmd)
        }
        Command::Admin(cmd) => {
            quiet_on_closed_pipe();
            if let Err(e) = admin::run(cmd).await {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
    };
    if let Err(e) = result {
        if logging::json() {
            tracing::error!(error = format!("{e:#}"), "fatal");
        }
        eprintln!("mezzanine: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(args: &[&str]) -> Result<admin::Conn, clap::Error> {
        match parse_from(std::iter::once("mezzanine").chain(args.iter().copied()))?.command {
            Command::Admin(mut cmd) => Ok(cmd.conn()),
            _ => panic!("{args:?} is not an admin command"),
        }
    }

    #[test]
    fn server_and_json_go_before_or_after_the_command() {
        for (args, json) in [
            (&["--server", "http://h:1", "move", "list"][..], false),
            (&["move", "--server", "http://h:1", "list"][..], false),
            (&["move", "list", "--server", "http://h:1"][..], false),
            (&["--json", "--server", "http://h:1", "status"][..], true),
            (&["--server", "http://h:1", "status", "--json"][..], true),
            (
                &["--json", "backend", "list", "--server", "http://h:1"][..],
                true,
            ),
            (
                &[
                    "--server",
                    "http://h:1",
                    "move",
                    "list",
                    "--server",
                    "http://h:1",
                ][..],
                false,
            ),
            (&["--server", "http://h:1", "shards", "export"][..], false),
            (
                &[
                    "--server",
                    "http://h:1",
                    "rebalance",
                    "status",
                    "3",
                    "--wait",
                ][..],
                false,
            ),
        ] {
            let conn = admin(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(conn.server, "http://h:1", "{args:?}");
            assert_eq!(conn.json, json, "{args:?}");
        }
    }

    #[test]
    fn two_different_servers_or_one_before_a_command_that_is_not_admin_are_usage_errors() {
        let e = admin(&[
            "--server",
            "http://a:1",
            "move",
            "list",
            "--server",
            "http://b:1",
        ])
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
        assert!(e.to_string().contains("--server is given twice"), "{e}");
        for args in [
            &["mezzanine", "--server", "http://h:1", "serve"][..],
            &["mezzanine", "--json", "dev"][..],
            &["mezzanine", "--server", "http://h:1", "bench", "http"][..],
        ] {
            let e = parse_from(args.iter().copied()).err().unwrap_or_else(|| {
                panic!("{args:?} accepted");
            });
            assert_eq!(e.kind(), ErrorKind::ArgumentConflict, "{args:?}");
            assert!(e.to_string().contains("for the admin commands"), "{e}");
        }
    }

    /// Every `--shards` of every command says that lists are accepted.
    #[test]
    fn every_shards_option_shows_the_list_syntax() {
        fn walk(cmd: &clap::Command, path: &str, found: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if arg.get_long() == Some("shards") {
                    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                    assert!(help.contains("1,3,5-7"), "{path} --shards: {help:?}");
                    found.push(path.to_owned());
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), found);
            }
        }
        let mut found = Vec::new();
        walk(&Cli::command(), "mezzanine", &mut found);
        assert_eq!(
            found,
            [
                "mezzanine bench move",
                "mezzanine move start",
                "mezzanine verify"
            ]
        );
    }
}
