//! The admin commands: clients of a node's admin API (`/admin/v1`, DESIGN.md §8).
//!
//! - [`client`]: the requests, with their timeouts, and the errors an operator can act on.
//! - [`types`]: the answers as this client reads them (tolerant decoding).
//! - [`render`], [`table`]: the human output; [`json`]: `--json`'s pretty printing.
//! - [`progress`]: what `--wait` shows of a running move; [`wait`]: following it.
//! - [`plugins`]: `mezzanine plugins …`, the plugins' delivery.

mod client;
mod conn;
mod json;
mod plugins;
mod progress;
mod rebalance;
mod render;
mod table;
mod types;
mod wait;

use std::time::Duration;

use crate::bench::positive_duration;
use anyhow::bail;
use clap::builder::RangedU64ValueParser;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use client::{Answer, Client};
pub use conn::{Before, Conn};
use types::{Backend, BackendList, Job, MoveList, Reloaded, ShardMap, Status, VerifyReport};
use wait::{follow, Action, Followed, Until};

/// The admin commands, flattened into the binary's commands.
#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Show the shard map: ranges, their backend and state (`export`: as shards.json).
    Shards(ShardsArgs),
    /// List, add, change, drain or remove backends.
    Backend(BackendArgs),
    /// Move shards to another backend, follow, abort, complete or revert moves.
    Move(MoveArgs),
    /// Compare the copies of shards (row counts, checksums, differing cells).
    Verify(VerifyArgs),
    /// Plan and run the moves that even out the backends.
    Rebalance(RebalanceArgs),
    /// See plugins' delivery (state, lag, parked events), pause or resume them, replay or
    /// drop parked events.
    Plugins(plugins::PluginsArgs),
    /// Make the node re-read the catalog now.
    Reload(Conn),
    /// Show the node, the mover's leader and the map version.
    Status(Conn),
}

impl AdminCommand {
    /// The command's `--server` and `--json`.
    fn conn_mut(&mut self) -> &mut Conn {
        match self {
            AdminCommand::Shards(a) => &mut a.conn,
            AdminCommand::Backend(a) => &mut a.conn,
            AdminCommand::Move(a) => &mut a.conn,
            AdminCommand::Verify(a) => &mut a.conn,
            AdminCommand::Rebalance(a) => &mut a.conn,
            AdminCommand::Plugins(a) => &mut a.conn,
            AdminCommand::Reload(c) | AdminCommand::Status(c) => c,
        }
    }

    /// The command's `--server` and `--json`, as they apply.
    #[cfg(test)]
    pub fn conn(&mut self) -> Conn {
        self.conn_mut().clone()
    }

    /// Takes `--server` and `--json` given before the command into account (`matches`: the
    /// whole command line's). A `--server` after the command and another before it must agree.
    pub fn with_before(
        mut self,
        before: &Before,
        matches: &clap::ArgMatches,
    ) -> Result<AdminCommand, String> {
        let given_after = matches
            .subcommand()
            .and_then(|(_, m)| m.value_source("server"))
            == Some(clap::parser::ValueSource::CommandLine);
        conn::merge(self.conn_mut(), before, given_after)?;
        Ok(self)
    }
}

/// `mezzanine shards [export]`.
#[derive(clap::Args)]
pub struct ShardsArgs {
    #[command(subcommand)]
    command: Option<ShardsCommand>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Subcommand)]
enum ShardsCommand {
    /// Print the current map in shards.json form (always JSON), passwords masked (`***`).
    Export {
        /// Show the passwords of the database URLs (audited). A masked export cannot be used
        /// as shards.json: a node refuses it, saying so.
        #[arg(long)]
        with_secrets: bool,
    },
}

/// `mezzanine backend ...`.
#[derive(clap::Args)]
pub struct BackendArgs {
    #[command(subcommand)]
    command: BackendCommand,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Subcommand)]
enum BackendCommand {
    /// List the backends with their shard count and health.
    List,
    /// Register an empty backend (the server checks the connection).
    Add {
        /// Name of the backend (as in the shard map).
        name: String,
        /// PostgreSQL URL (postgres://user:password@host:port/db).
        url: String,
        /// Its share of the data relative to the others' (default 1).
        #[arg(long, value_parser = positive_weight)]
        weight: Option<f64>,
    },
    /// Change a backend's weight, or take a draining backend back (`--draining false`).
    Set {
        /// Name of the backend.
        name: String,
        /// Its share of the data relative to the others'.
        #[arg(long, value_parser = positive_weight)]
        weight: Option<f64>,
        /// Mark it draining (it receives nothing) or not.
        #[arg(long)]
        draining: Option<bool>,
    },
    /// Move every shard of a backend to the others (by the planner) and mark it draining, so
    /// that nothing new lands there; then `backend remove` succeeds.
    Drain {
        /// Name of the backend.
        name: String,
        #[command(flatten)]
        run: rebalance::RunOptions,
        /// Keep the drained copies until `rebalance complete` or the retention period (by
        /// default they are dropped as each move switches).
        #[arg(long)]
        keep_sources: bool,
    },
    /// Remove a backend that owns no shards.
    Remove {
        /// Name of the backend.
        name: String,
    },
}

fn positive_weight(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(w) if w.is_finite() && w > 0.0 && w <= 1e6 => Ok(w),
        _ => Err("must be a positive number of at most 1000000".to_owned()),
    }
}

/// `mezzanine rebalance ...`.
#[derive(clap::Args)]
pub struct RebalanceArgs {
    #[command(subcommand)]
    command: RebalanceCommand,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Subcommand)]
enum RebalanceCommand {
    /// Show the moves that would even out the backends, changing nothing.
    Plan(rebalance::PlanOptions),
    /// Make the plan and run it as move jobs.
    Apply {
        #[command(flatten)]
        run: rebalance::RunOptions,
        /// Drop the source copies as each move switches (by default they are kept for
        /// `move revert` until `rebalance complete` or the retention period).
        #[arg(long)]
        complete: bool,
    },
    /// List the rebalances.
    List,
    /// Show a rebalance, its moves and progress.
    Status {
        /// Rebalance id.
        id: u64,
        /// Follow it until no shard is in flight and no request is pending (progress bars on
        /// a terminal).
        #[arg(long)]
        wait: bool,
    },
    /// Stop the moves not switched yet (the switched ones stay).
    Abort {
        /// Rebalance id.
        id: u64,
        /// Follow it until the mover has stopped them (progress bar on a terminal).
        #[arg(long)]
        wait: bool,
    },
    /// Drop the source copies of the switched shards now.
    Complete {
        /// Rebalance id.
        id: u64,
        /// Follow it until the mover has dropped them.
        #[arg(long)]
        wait: bool,
    },
}

/// `mezzanine move ...`.
#[derive(clap::Args)]
pub struct MoveArgs {
    #[command(subcommand)]
    command: MoveCommand,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Subcommand)]
enum MoveCommand {
    /// Start moving shards to a backend.
    Start(StartArgs),
    /// List the move jobs.
    List,
    /// Show a move job and its shards.
    Status {
        /// Job id.
        id: u64,
        /// Follow the job until no shard is in flight and no request is pending (progress
        /// bars on a terminal).
        #[arg(long)]
        wait: bool,
    },
    /// Abort a move (the source stays authoritative).
    Abort {
        /// Job id.
        id: u64,
        /// Follow the job until the mover has stopped its shards (progress bars on a
        /// terminal).
        #[arg(long)]
        wait: bool,
    },
    /// Drop the retired source copies of a switched move now.
    Complete {
        /// Job id.
        id: u64,
        /// Follow the job until the mover has dropped them.
        #[arg(long)]
        wait: bool,
    },
    /// Move the shards of a switched move back (a new job).
    Revert {
        /// Job id.
        id: u64,
    },
}

/// `mezzanine move start`.
#[derive(clap::Args)]
struct StartArgs {
    /// Shards to move: a shard, a range or a list of both: `8`, `8-15`, `1,3,5-7`.
    #[arg(long)]
    shards: String,
    /// Backend to move them to.
    #[arg(long)]
    to: String,
    /// Shards copied at the same time (default: the server's).
    #[arg(long, value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    parallel: Option<u64>,
    /// Copy speed limit in rows per second for the whole move, all its parallel copies
    /// together (default: none; catching up and the cutover are never limited).
    #[arg(long, value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    max_rows_per_sec: Option<u64>,
    /// Follow the job until it is no longer running (progress bars on a terminal).
    #[arg(long)]
    wait: bool,
}

/// `mezzanine verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Shards to compare: a shard, a range or a list of both: `8`, `8-15`, `1,3,5-7`.
    #[arg(long)]
    shards: String,
    /// How long the server may take to compare them.
    #[arg(long, default_value = "5m", value_parser = positive_duration)]
    timeout: Duration,
    #[command(flatten)]
    conn: Conn,
}

/// Runs an admin command. An error means exit code 1 (the message is for stderr).
pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Shards(args) => shards(args).await,
        AdminCommand::Backend(args) => backend(args).await,
        AdminCommand::Move(args) => moves(args).await,
        AdminCommand::Verify(args) => verify(args).await,
        AdminCommand::Rebalance(args) => rebalance_cmd(args).await,
        AdminCommand::Plugins(args) => plugins::run(args).await,
        AdminCommand::Reload(conn) => {
            let c = Client::for_conn(&conn).await?;
            let answer = c.post(&["reload"], None).await?;
            show::<Reloaded>(conn.json, &answer, render::reloaded)
        }
        AdminCommand::Status(conn) => {
            let c = Client::for_conn(&conn).await?;
            let answer = c.get(&["status"]).await?;
            show::<Status>(conn.json, &answer, render::status)
        }
    }
}

/// Prints `answer`: as it came with `--json`, else decoded and rendered.
fn show<T: DeserializeOwned>(
    json: bool,
    answer: &Answer,
    render: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        print_json(answer)
    } else {
        print!("{}", render(&answer.decode::<T>()?));
        Ok(())
    }
}

fn print_json(answer: &Answer) -> anyhow::Result<()> {
    let text = answer.pretty()?;
    if !text.is_empty() {
        println!("{text}");
    }
    Ok(())
}

async fn shards(args: ShardsArgs) -> anyhow::Result<()> {
    let c = Client::for_conn(&args.conn).await?;
    match args.command {
        None => {
            let answer = c.get(&["shards"]).await?;
            show::<ShardMap>(args.conn.json, &answer, render::shard_map)
        }
        Some(ShardsCommand::Export { with_secrets }) => {
            let c = if with_secrets {
                c.with_query("with_secrets", "true")
            } else {
                c
            };
            print_json(&c.get(&["shards", "export"]).await?)
        }
    }
}

async fn backend(args: BackendArgs) -> anyhow::Result<()> {
    let c = Client::for_conn(&args.conn).await?;
    let json = args.conn.json;
    match args.command {
        BackendCommand::List => {
            let answer = c.get(&["backends"]).await?;
            show::<BackendList>(json, &answer, render::backends)
        }
        BackendCommand::Add { name, url, weight } => {
            let mut body = json!({"name": name, "url": url});
            if let Some(w) = weight {
                body["weight"] = Value::from(w);
            }
            let answer = c.post(&["backends"], Some(body)).await?;
            show::<Backend>(json, &answer, render::backend_added)
        }
        BackendCommand::Set {
            name,
            weight,
            draining,
        } => {
            let mut body = Map::new();
            if let Some(w) = weight {
                body.insert("weight".into(), Value::from(w));
            }
            if let Some(d) = draining {
                body.insert("draining".into(), Value::from(d));
            }
            if body.is_empty() {
                bail!("give --weight, --draining or both");
            }
            let answer = c
                .call(
                    Method::PATCH,
                    &["backends", &name],
                    Some(Value::Object(body)),
                    None,
                )
                .await?;
            show::<Backend>(json, &answer, render::backend_line)
        }
        BackendCommand::Drain {
            name,
            run,
            keep_sources,
        } => {
            let mut body = run.body();
            body.insert("complete".into(), Value::from(!keep_sources));
            let answer = c
                .post(&["backends", &name, "drain"], Some(Value::Object(body)))
                .await?;
            started(&c, json, answer, run.wait).await
        }
        BackendCommand::Remove { name } => {
            let answer = c.delete(&["backends", &name]).await?;
            if json {
                print_json(&answer)
            } else {
                println!("removed backend {name}");
                Ok(())
            }
        }
    }
}

async fn rebalance_cmd(args: RebalanceArgs) -> anyhow::Result<()> {
    let c = Client::for_conn(&args.conn).await?;
    let json = args.conn.json;
    match args.command {
        RebalanceCommand::Plan(opts) => {
            let answer = c
                .post(&["rebalance", "plan"], Some(Value::Object(opts.body())))
                .await?;
            show::<rebalance::Plan>(json, &answer, rebalance::plan)
        }
        RebalanceCommand::Apply { run, complete } => {
            let mut body = run.body();
            if complete {
                body.insert("complete".into(), Value::from(true));
            }
            let answer = c
                .post(&["rebalance", "apply"], Some(Value::Object(body)))
                .await?;
            started(&c, json, answer, run.wait).await
        }
        RebalanceCommand::List => {
            let answer = c.get(&["rebalance"]).await?;
            show::<rebalance::RebalanceList>(json, &answer, rebalance::list)
        }
        RebalanceCommand::Status { id, wait } => {
            let answer = c.get(&["rebalance", &id.to_string()]).await?;
            if wait {
                let r = answer.decode::<rebalance::Rebalance>()?;
                follow(
                    &c,
                    json,
                    Followed::Rebalance,
                    r.as_job(),
                    answer,
                    Until::Settled,
                )
                .await
            } else {
                show::<rebalance::Rebalance>(json, &answer, rebalance::status)
            }
        }
        RebalanceCommand::Abort { id, wait } => {
            request(&c, json, Followed::Rebalance, id, Action::Abort, wait).await
        }
        RebalanceCommand::Complete { id, wait } => {
            request(&c, json, Followed::Rebalance, id, Action::Complete, wait).await
        }
    }
}

/// What apply and drain answer: the plan and the rebalance started (if any), followed with
/// `--wait`.
async fn started(c: &Client, json: bool, answer: Answer, wait: bool) -> anyhow::Result<()> {
    let applied = answer.decode::<rebalance::Applied>()?;
    match (&applied.rebalance, wait) {
        (Some(r), true) => {
            if !json {
                print!("{}", rebalance::plan(&applied.plan));
            }
            let again = c.get(&["rebalance", &r.id.to_string()]).await?;
            follow(
                c,
                json,
                Followed::Rebalance,
                r.as_job(),
                again,
                Until::Settled,
            )
            .await
        }
        _ => show::<rebalance::Applied>(json, &answer, rebalance::applied),
    }
}

/// The body of `POST /admin/v1/moves`; the optional fields only when given.
fn start_body(args: &StartArgs) -> Value {
    let mut body = Map::new();
    body.insert("shards".into(), Value::from(args.shards.clone()));
    body.insert("to".into(), Value::from(args.to.clone()));
    if let Some(n) = args.parallel {
        body.insert("parallel".into(), Value::from(n));
    }
    if let Some(n) = args.max_rows_per_sec {
        body.insert("max_rows_per_sec".into(), Value::from(n));
    }
    Value::Object(body)
}

async fn moves(args: MoveArgs) -> anyhow::Result<()> {
    let c = Client::for_conn(&args.conn).await?;
    let json = args.conn.json;
    match args.command {
        MoveCommand::Start(start) => {
            let answer = c.post(&["moves"], Some(start_body(&start))).await?;
            if start.wait {
                let job = answer.decode::<Job>()?;
                follow(&c, json, Followed::Move, job, answer, Until::Settled).await
            } else {
                show::<Job>(json, &answer, |job| {
                    format!(
                        "{}follow it with: mezzanine move status {} --wait\n",
                        render::job_line(job),
                        job.id
                    )
                })
            }
        }
        MoveCommand::List => {
            let answer = c.get(&["moves"]).await?;
            show::<MoveList>(json, &answer, render::moves)
        }
        MoveCommand::Status { id, wait } => {
            let answer = c.get(&["moves", &id.to_string()]).await?;
            if wait {
                let job = answer.decode::<Job>()?;
                follow(&c, json, Followed::Move, job, answer, Until::Settled).await
            } else {
                show::<Job>(json, &answer, render::job)
            }
        }
        MoveCommand::Abort { id, wait } => {
            request(&c, json, Followed::Move, id, Action::Abort, wait).await
        }
        MoveCommand::Complete { id, wait } => {
            request(&c, json, Followed::Move, id, Action::Complete, wait).await
        }
        MoveCommand::Revert { id } => {
            let answer = c.post(&["moves", &id.to_string(), "revert"], None).await?;
            show::<Job>(json, &answer, |job| {
                format!(
                    "{}follow it with: mezzanine move status {} --wait\n",
                    render::job_line(job),
                    job.id
                )
            })
        }
    }
}

/// `move|rebalance abort|complete ID [--wait]`: asks for it, then prints the answer: the
/// request as recorded (the mover carries it out a moment later), or with `--wait` the end
/// it led to.
async fn request(
    c: &Client,
    json: bool,
    what: Followed,
    id: u64,
    action: Action,
    wait: bool,
) -> anyhow::Result<()> {
    let answer = c
        .post(&[what.path(), &id.to_string(), action.name()], None)
        .await?;
    let job = what.decode(&answer)?;
    if wait {
        return follow(c, json, what, job, answer, Until::Done(action)).await;
    }
    if json {
        return print_json(&answer);
    }
    print!("{}", what.requested(&job, &answer, action)?);
    Ok(())
}

async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let c = Client::for_conn(&args.conn).await?;
    let body = json!({"shards": args.shards});
    let answer = c
        .call(Method::POST, &["verify"], Some(body), Some(args.timeout))
        .await?;
    if args.conn.json {
        print_json(&answer)?;
    }
    let report = answer.decode::<VerifyReport>()?;
    if !args.conn.json {
        print!("{}", render::verify(&report));
    }
    if !report.ok {
        let shards = render::differing_shards(&report);
        if shards.is_empty() {
            bail!("verify found problems");
        }
        bail!("copies differ in shards {shards}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: AdminCommand,
    }

    fn parse(args: &[&str]) -> Result<AdminCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("mezzanine").chain(args.iter().copied())).map(|c| c.cmd)
    }

    #[test]
    fn start_body_has_the_optional_fields_only_when_given() {
        let AdminCommand::Move(MoveArgs {
            command: MoveCommand::Start(start),
            ..
        }) = parse(&["move", "start", "--shards", "8-15", "--to", "db3"]).unwrap()
        else {
            panic!("not move start");
        };
        assert_eq!(start_body(&start), json!({"shards": "8-15", "to": "db3"}));
        let AdminCommand::Move(MoveArgs {
            command: MoveCommand::Start(start),
            ..
        }) = parse(&[
            "move",
            "start",
            "--shards",
            "8",
            "--to",
            "db3",
            "--parallel",
            "4",
            "--max-rows-per-sec",
            "1000",
        ])
        .unwrap()
        else {
            panic!("not move start");
        };
        assert_eq!(
            start_body(&start),
            json!({"shards": "8", "to": "db3", "parallel": 4, "max_rows_per_sec": 1000})
        );
    }

    #[test]
    fn server_and_json_are_accepted_before_or_after_the_subcommand() {
        for args in [
            &["backend", "--json", "--server", "http://h:1", "list"][..],
            &["backend", "list", "--json", "--server", "http://h:1"][..],
        ] {
            let AdminCommand::Backend(b) = parse(args).unwrap() else {
                panic!("not backend");
            };
            assert!(b.conn.json);
            assert_eq!(b.conn.server, "http://h:1");
        }
    }

    #[test]
    fn rebalance_and_drain_options_become_their_bodies() {
        let AdminCommand::Rebalance(RebalanceArgs {
            command: RebalanceCommand::Apply { run, complete },
            ..
        }) = parse(&[
            "rebalance",
            "apply",
            "--strategy",
            "rows",
            "--parallel",
            "3",
            "--max-rows-per-sec",
            "900",
            "--complete",
        ])
        .unwrap()
        else {
            panic!("not rebalance apply");
        };
        assert!(complete && !run.wait);
        assert_eq!(
            Value::Object(run.body()),
            json!({"strategy": "rows", "parallel": 3, "max_rows_per_sec": 900})
        );
        let AdminCommand::Backend(BackendArgs {
            command:
                BackendCommand::Drain {
                    name,
                    run,
                    keep_sources,
                },
            ..
        }) = parse(&["backend", "drain", "db3", "--wait"]).unwrap()
        else {
            panic!("not backend drain");
        };
        assert_eq!(name, "db3");
        assert!(run.wait && !keep_sources);
        assert_eq!(Value::Object(run.body()), json!({}));
        assert!(parse(&["rebalance", "plan", "--strategy", "size"]).is_err());
        assert!(parse(&["rebalance", "apply", "--parallel", "0"]).is_err());
        assert!(parse(&["backend", "add", "db3", "postgres://x", "--weight", "0"]).is_err());
        assert!(parse(&["backend", "set", "db3", "--weight", "-1"]).is_err());
        assert!(parse(&["backend", "set", "db3", "--draining", "maybe"]).is_err());
    }

    #[test]
    fn usage_errors() {
        assert!(parse(&["move", "status", "seven"]).is_err());
        assert!(parse(&["move", "start", "--shards", "8"]).is_err());
        assert!(parse(&[
            "move",
            "start",
            "--shards",
            "8",
            "--to",
            "d",
            "--parallel",
            "0"
        ])
        .is_err());
        assert!(parse(&["verify"]).is_err());
        assert!(parse(&["verify", "--shards", "8", "--timeout", "0"]).is_err());
        assert!(parse(&["backend", "add", "db3"]).is_err());
    }
}
