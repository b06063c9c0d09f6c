//! `mezzanine plugins list | show NAME | pause NAME | resume NAME | parked NAME | replay NAME
//! [--all|ID] | drop-parked NAME [--all|ID]`: the clients of `/admin/v1/plugins…`, their
//! tables, and the answers as this command reads them (tolerant decoding, like [`super::types`]).

use anyhow::bail;
use clap::builder::RangedU64ValueParser;
use mezzanine_core::plugin_ops::EventId;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::client::Client;
use super::table::{eta, or_dash, table};
use super::{print_json, show, Conn};

/// `mezzanine plugins ...`.
#[derive(clap::Args)]
pub struct PluginsArgs {
    #[command(subcommand)]
    command: PluginsCommand,
    #[command(flatten)]
    pub(super) conn: Conn,
}

#[derive(clap::Subcommand)]
enum PluginsCommand {
    /// List the plugins: state, events behind, oldest undelivered event, parked events, last
    /// error.
    List,
    /// Show a plugin: its delivery, last error, and each shard's offset and lag.
    Show {
        /// The plugin's name.
        name: String,
    },
    /// Pause a plugin's delivery (nothing is lost: it resumes where it stopped).
    Pause {
        /// The plugin's name.
        name: String,
    },
    /// Resume a paused plugin's delivery.
    Resume {
        /// The plugin's name.
        name: String,
    },
    /// List a plugin's parked events (those it kept refusing), a page at a time.
    Parked {
        /// The plugin's name.
        name: String,
        /// Events per page.
        #[arg(long, default_value_t = 100, value_parser = RangedU64ValueParser::<u64>::new().range(1..=10_000))]
        limit: u64,
        /// Start after this event (SHARD:ADDED_ID, as the previous page says).
        #[arg(long, value_name = "SHARD:ADDED_ID", value_parser = event_id)]
        after: Option<EventId>,
    },
    /// Have the deliverer send parked events again: one (SHARD:ADDED_ID) or all (--all).
    Replay {
        /// The plugin's name.
        name: String,
        #[command(flatten)]
        which: Which,
    },
    /// Remove parked events for good: one (SHARD:ADDED_ID) or all (--all).
    DropParked {
        /// The plugin's name.
        name: String,
        #[command(flatten)]
        which: Which,
    },
}

/// One parked event or all of them.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct Which {
    /// Every parked event of the plugin.
    #[arg(long)]
    all: bool,
    /// The event: SHARD:ADDED_ID (as `mezzanine plugins parked` lists it).
    #[arg(value_name = "SHARD:ADDED_ID", value_parser = event_id)]
    id: Option<EventId>,
}

impl Which {
    /// The body of replay and drop.
    fn body(&self) -> Value {
        match self.id {
            Some(e) if !self.all => json!({"shard": e.shard, "added_id": e.added_id}),
            _ => json!({"all": true}),
        }
    }
}

fn event_id(s: &str) -> Result<EventId, String> {
    s.parse::<EventId>().map_err(|e| e.to_string())
}

/// A plugin as `GET /admin/v1/plugins` and `…/{name}` answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Plugin {
    id: String,
    name: String,
    endpoint: String,
    subscribed_columns: Vec<String>,
    status: String,
    created_at: Option<String>,
    deliver_from: Option<String>,
    state: String,
    last_error: Option<String>,
    last_error_at: Option<String>,
    parked: u64,
    lag: PluginLag,
    offsets: Vec<ShardOffset>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct PluginLag {
    events_behind: u64,
    oldest_undelivered_age_seconds: Option<f64>,
    shards_unknown: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct ShardOffset {
    shard: u64,
    delivered_upto: Option<i64>,
    updated_at: Option<String>,
    events_behind: Option<u64>,
    oldest_undelivered_age_seconds: Option<f64>,
    error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct PluginList {
    plugins: Vec<Plugin>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct ParkedPage {
    plugin: String,
    parked: Vec<Parked>,
    next: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Parked {
    id: String,
    row_key: String,
    column_name: String,
    attempts: Option<i64>,
    error: String,
    parked_at: Option<String>,
    replay_requested: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Counted {
    marked: Option<u64>,
    dropped: Option<u64>,
}

/// An age in seconds: `45s`, `3m20s`, `2h05m`; `-` for none.
fn age(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) if s.is_finite() && s >= 0.0 => eta(std::time::Duration::from_secs_f64(s)),
        _ => "-".to_owned(),
    }
}

/// Events behind, with the shards the figure leaves out.
fn behind(lag: &PluginLag) -> String {
    match lag.shards_unknown {
        0 => lag.events_behind.to_string(),
        1 => format!("{}+ (1 shard unknown)", lag.events_behind),
        n => format!("{}+ ({n} shards unknown)", lag.events_behind),
    }
}

fn last_error(p: &Plugin) -> String {
    match (&p.last_error, &p.last_error_at) {
        (Some(e), Some(at)) => format!("{e} ({at})"),
        (Some(e), None) => e.clone(),
        (None, _) => "-".to_owned(),
    }
}

fn list(l: &PluginList) -> String {
    if l.plugins.is_empty() {
        return "no plugins\n".to_owned();
    }
    let rows: Vec<Vec<String>> = l
        .plugins
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.state.clone(),
                behind(&p.lag),
                age(p.lag.oldest_undelivered_age_seconds),
                p.parked.to_string(),
                last_error(p),
            ]
        })
        .collect();
    table(
        &["NAME", "STATE", "BEHIND", "OLDEST", "PARKED", "LAST ERROR"],
        &rows,
    )
}

fn detail(p: &Plugin) -> String {
    let mut out = format!("plugin {} ({}): {}\n", p.name, p.id, p.state);
    out.push_str(&format!(
        "  endpoint {}, columns {}\n",
        p.endpoint,
        p.subscribed_columns.join(", ")
    ));
    out.push_str(&format!(
        "  status {}, registered {}, delivers cells created from {}\n",
        or_dash(Some(p.status.as_str()).filter(|s| !s.is_empty())),
        or_dash(p.created_at.as_deref()),
        or_dash(p.deliver_from.as_deref())
    ));
    out.push_str(&format!(
        "  behind {}, oldest undelivered {}\n",
        behind(&p.lag),
        age(p.lag.oldest_undelivered_age_seconds)
    ));
    out.push_str(&format!("  last error: {}\n", last_error(p)));
    if p.parked > 0 {
        out.push_str(&format!(
            "  parked {} (list them: mezzanine plugins parked {})\n",
            p.parked, p.name
        ));
    } else {
        out.push_str("  parked 0\n");
    }
    // The shards worth a look: behind, or not answering; the others in one line.
    let rows: Vec<Vec<String>> = p
        .offsets
        .iter()
        .filter(|o| o.events_behind != Some(0) || o.error.is_some())
        .map(|o| {
            vec![
                o.shard.to_string(),
                or_dash(o.delivered_upto),
                or_dash(o.updated_at.as_deref()),
                or_dash(o.events_behind),
                age(o.oldest_undelivered_age_seconds),
                or_dash(o.error.as_deref()),
            ]
        })
        .collect();
    let quiet = p.offsets.len() - rows.len();
    if !rows.is_empty() {
        out.push_str(&table(
            &[
                "SHARD",
                "DELIVERED UPTO",
                "UPDATED",
                "BEHIND",
                "OLDEST",
                "ERROR",
            ],
            &rows,
        ));
    }
    if quiet > 0 {
        out.push_str(&format!("{quiet} shards have nothing to deliver\n"));
    }
    out
}

fn parked(page: &ParkedPage) -> String {
    if page.parked.is_empty() {
        return format!("no parked events for plugin {}\n", page.plugin);
    }
    let rows: Vec<Vec<String>> = page
        .parked
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                e.column_name.clone(),
                e.row_key.clone(),
                or_dash(e.attempts),
                or_dash(e.parked_at.as_deref()),
                if e.replay_requested { "requested" } else { "-" }.to_owned(),
                e.error.clone(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID",
            "COLUMN",
            "ROW KEY",
            "ATTEMPTS",
            "PARKED AT",
            "REPLAY",
            "ERROR",
        ],
        &rows,
    );
    if let Some(next) = &page.next {
        out.push_str(&format!(
            "more: mezzanine plugins parked {} --after {next}\n",
            page.plugin
        ));
    }
    out
}

fn events(n: u64) -> String {
    if n == 1 {
        "1 parked event".to_owned()
    } else {
        format!("{n} parked events")
    }
}

/// Runs `mezzanine plugins …`.
pub async fn run(args: PluginsArgs) -> anyhow::Result<()> {
    let c = Client::for_conn(&args.conn).await?;
    let json = args.conn.json;
    match args.command {
        PluginsCommand::List => {
            let answer = c.get(&["plugins"]).await?;
            show::<PluginList>(json, &answer, list)
        }
        PluginsCommand::Show { name } => {
            let answer = c.get(&["plugins", &name]).await?;
            show::<Plugin>(json, &answer, detail)
        }
        PluginsCommand::Pause { name } => {
            let answer = c.post(&["plugins", &name, "pause"], None).await?;
            show::<Plugin>(json, &answer, |p| {
                format!(
                    "paused plugin {}: nothing is sent to it until `mezzanine plugins resume {}`\n",
                    p.name, p.name
                )
            })
        }
        PluginsCommand::Resume { name } => {
            let answer = c.post(&["plugins", &name, "resume"], None).await?;
            show::<Plugin>(json, &answer, |p| {
                format!("resumed plugin {}: {}\n", p.name, p.state)
            })
        }
        PluginsCommand::Parked { name, limit, after } => {
            let mut c = c.with_query("limit", limit.to_string());
            if let Some(a) = after {
                c = c.with_query("after", a.to_string());
            }
            let answer = c.get(&["plugins", &name, "parked"]).await?;
            show::<ParkedPage>(json, &answer, parked)
        }
        PluginsCommand::Replay { name, which } => {
            let answer = c
                .post(&["plugins", &name, "replay"], Some(which.body()))
                .await?;
            show::<Counted>(json, &answer, |n| {
                format!(
                    "marked {} of plugin {name} for replay: the deliverer sends them shortly\n",
                    events(n.marked.unwrap_or(0))
                )
            })
        }
        PluginsCommand::DropParked { name, which } => {
            let answer = c
                .call(
                    Method::DELETE,
                    &["plugins", &name, "parked"],
                    Some(which.body()),
                    None,
                )
                .await?;
            if json {
                return print_json(&answer);
            }
            let n = answer.decode::<Counted>()?;
            let Some(dropped) = n.dropped else {
                bail!("the server did not say how many it dropped");
            };
            println!("dropped {} of plugin {name}", events(dropped));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: super::super::AdminCommand,
    }

    fn parse(args: &[&str]) -> Result<PluginsCommand, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("mezzanine").chain(args.iter().copied()))?;
        match cli.cmd {
            super::super::AdminCommand::Plugins(p) => Ok(p.command),
            _ => panic!("not plugins"),
        }
    }

    #[test]
    fn replay_and_drop_take_one_id_or_all() {
        let Ok(PluginsCommand::Replay { which, .. }) = parse(&["plugins", "replay", "b", "7:42"])
        else {
            panic!("not replay");
        };
        assert_eq!(which.body(), json!({"shard": 7, "added_id": 42}));
        let Ok(PluginsCommand::DropParked { which, .. }) =
            parse(&["plugins", "drop-parked", "b", "--all"])
        else {
            panic!("not drop-parked");
        };
        assert_eq!(which.body(), json!({"all": true}));
        for bad in [
            &["plugins", "replay", "b"][..],
            &["plugins", "replay", "b", "--all", "7:42"],
            &["plugins", "replay", "b", "7-42"],
            &["plugins", "drop-parked", "b"],
            &["plugins", "parked", "b", "--limit", "0"],
            &["plugins", "parked", "b", "--after", "x"],
            &["plugins", "show"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_list_says_what_an_operator_needs() {
        let l: PluginList = serde_json::from_value(json!({"plugins": [
            {"name": "billing", "state": "backing_off", "parked": 2,
             "last_error": "connection refused", "last_error_at": "2026-01-01T00:00:00Z",
             "lag": {"events_behind": 1200, "oldest_undelivered_age_seconds": 200.5, "shards_unknown": 0}},
            {"name": "audit", "state": "delivering", "parked": 0, "last_error": null,
             "lag": {"events_behind": 3, "oldest_undelivered_age_seconds": null, "shards_unknown": 2}},
        ]}))
        .unwrap();
        let out = list(&l);
        assert!(out.starts_with("NAME     STATE        BEHIND"), "{out}");
        assert!(out.contains("billing  backing_off  1200"), "{out}");
        assert!(out.contains("3m20s"), "{out}");
        assert!(
            out.contains("connection refused (2026-01-01T00:00:00Z)"),
            "{out}"
        );
        assert!(out.contains("3+ (2 shards unknown)"), "{out}");
        assert_eq!(list(&PluginList::default()), "no plugins\n");
    }
}
