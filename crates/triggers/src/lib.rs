//! Durable plugin delivery (issue 17): go-mezzanine's trigger plugins called from each
//! shard's change stream, at least once, in `added_id` order per shard, across restarts,
//! plugin outages, node crashes and shard moves.
//!
//! - One deliverer in the cluster: the node holding the catalog advisory lock
//!   `DELIVERY_LOCK` ([`run`]) on a session of its own with a heartbeat, so a node cut off
//!   from the catalog stops within a bound, and a killed node's lock is released by
//!   PostgreSQL so another node takes over. Two deliverers at once for a moment only deliver
//!   twice: offsets move forward only.
//! - Offsets per (plugin, shard) in the catalog (`mezzanine_catalog::delivery`), committed
//!   after each batch read; a stream starts at the last cell created before the plugin's
//!   `deliver_from`.
//! - Reading: from each shard's owner per the node's current map ([`Source`]; a moved shard
//!   is retried at its new owner, I4), woken by a cheap poll of every backend's shard heads
//!   (`last_created_at`, changed by every write, I7), by this node's own writes, and by a
//!   slower full pass.
//! - Calling: [`plugin`] (order, parallelism, back-off, parking) and [`rpc`] (HTTP, allowed
//!   addresses); the decisions are pure (`mezzanine_core::trigger`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mezzanine_catalog::delivery::{DeliveryPlugin, ReplayRequest};
use mezzanine_catalog::leader::{try_delivery_lock, HEARTBEAT};
use mezzanine_catalog::{Catalog, Dedicated};
use mezzanine_core::hosts::HostsAllowed;
use mezzanine_core::trigger::Outcome;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub mod plugin;
pub mod rpc;
mod source;

pub use source::Source;

use plugin::PluginRun;

/// The deliverer's settings.
#[derive(Debug, Clone)]
pub struct DeliverConfig {
    /// This node's id (logs).
    pub node: String,
    /// `TRIGGER_RPC_TIMEOUT`.
    pub rpc_timeout: Duration,
    /// `TRIGGER_RETRY_MAX`: sends of a refused event after its first, before it is parked.
    pub retry_max: u32,
    /// `TRIGGER_RETRY_BACKOFF`.
    pub retry_backoff: Duration,
    /// `TRIGGER_PARALLELISM`: calls in flight per plugin.
    pub parallelism: usize,
    /// Events read per batch (an offset is committed after each).
    pub batch: i64,
    /// How often the backends' shard heads are read.
    pub heads_every: Duration,
    /// How often every stream is read even without a sign of news.
    pub full_pass: Duration,
    /// How often a node that does not deliver tries to take the lock, and the deliverer
    /// re-reads the plugins and the replay requests without a notification.
    pub poll: Duration,
    /// Bound of the lock session's statements.
    pub session_timeout: Duration,
    /// `PLUGIN_HOSTS_ALLOWED`, checked on every address a call connects to.
    pub hosts: HostsAllowed,
    /// Notified by this node's writes: the heads are read at once.
    pub wake: Arc<Notify>,
}

/// The shortest pause between two reads of the heads (woken by writes or not).
const HEADS_MIN_GAP: Duration = Duration::from_millis(5);
/// How often the lag metrics are updated.
const LAG_EVERY: Duration = Duration::from_secs(2);

/// Aborts a task when dropped.
struct Abort(JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Takes part in the deliverer's election until `shutdown`: whichever node holds the lock
/// delivers; the others wait and try again every `poll`.
pub async fn run(
    config: DeliverConfig,
    catalog: Arc<Catalog>,
    source: Arc<dyn Source>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let config = Arc::new(config);
    let work = async {
        let mut candidate: Option<Dedicated> = None;
        loop {
            let session = match candidate.take() {
                Some(s) if s.is_alive() => Ok(s),
                _ => Dedicated::connect(catalog.url(), config.session_timeout).await,
            };
            match session {
                Ok(mut s) => match try_delivery_lock(&s).await {
                    Ok(true) => {
                        s.keep_alive(HEARTBEAT);
                        if let Err(e) = s.listen().await {
                            tracing::warn!(error = %e, "the deliverer cannot listen for catalog changes; it re-reads them periodically");
                        }
                        tracing::info!(node = %config.node, "this node delivers plugin events");
                        deliver(&config, &catalog, &source, &mut s).await;
                        tracing::warn!(node = %config.node, "this node stopped delivering plugin events (its catalog session was lost)");
                    }
                    Ok(false) => candidate = Some(s),
                    Err(e) => tracing::debug!(error = %e, "cannot try the deliverer's lock"),
                },
                Err(e) => {
                    tracing::debug!(error = %e, "cannot connect to the catalog for the deliverer's lock")
                }
            }
            tokio::time::sleep(config.poll).await;
        }
    };
    tokio::select! {
        () = work => {}
        () = shutdown => {}
    }
}

/// Delivers while `session` (holding the lock) lives.
async fn deliver(
    config: &Arc<DeliverConfig>,
    catalog: &Arc<Catalog>,
    source: &Arc<dyn Source>,
    session: &mut Dedicated,
) {
    let heads: Arc<Vec<watch::Sender<u64>>> = Arc::new(
        (0..source.num_shards())
            .map(|_| watch::channel(0u64).0)
            .collect(),
    );
    // Read only while some plugin is delivered to.
    let mut poller: Option<Abort> = None;
    let mut runs: HashMap<Uuid, (Arc<PluginRun>, Abort)> = HashMap::new();
    let mut replaying: Option<JoinHandle<()>> = None;
    let mut lag_tick = tokio::time::interval(LAG_EVERY);
    let mut reread = true;
    loop {
        // A session found lost (its connection ended, or its heartbeat went unanswered) is
        // seen here within `poll`: the lock may be another node's by now.
        if !session.is_alive() {
            break;
        }
        if reread {
            reread = false;
            match catalog.delivery_plugins().await {
                Ok(plugins) => {
                    reconcile(config, catalog, source, &heads, &mut runs, plugins);
                    if runs.is_empty() {
                        poller = None;
                    } else if poller.is_none() {
                        poller = Some(Abort(tokio::spawn(poll_heads(
                            config.clone(),
                            source.clone(),
                            heads.clone(),
                        ))));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the plugins to deliver to; trying again");
                }
            }
            if replaying.as_ref().is_none_or(|t| t.is_finished()) {
                let targets: HashMap<Uuid, Arc<PluginRun>> =
                    runs.iter().map(|(id, (r, _))| (*id, r.clone())).collect();
                replaying = Some(tokio::spawn(replay(
                    catalog.clone(),
                    source.clone(),
                    targets,
                )));
            }
        }
        tokio::select! {
            n = session.next_notification() => match n {
                Some(kind) if kind == mezzanine_catalog::plugins::NOTIFY_KIND => reread = true,
                Some(_) => {}
                None => break,
            },
            _ = tokio::time::sleep(config.poll) => reread = true,
            _ = lag_tick.tick(), if !runs.is_empty() => {
                let tails = source.tails().await;
                for (run, _) in runs.values() {
                    let (events, age) = run.lag(&tails);
                    let name = run.plugin.name.clone();
                    metrics::gauge!("mezzanine_plugin_lag_events", "plugin" => name.clone()).set(events as f64);
                    metrics::gauge!("mezzanine_plugin_lag_seconds", "plugin" => name).set(age);
                }
            }
        }
    }
    if let Some(t) = replaying {
        t.abort();
    }
    for (run, _) in runs.values() {
        zero_lag(&run.plugin.name);
    }
}

fn zero_lag(name: &str) {
    metrics::gauge!("mezzanine_plugin_lag_events", "plugin" => name.to_owned()).set(0.0);
    metrics::gauge!("mezzanine_plugin_lag_seconds", "plugin" => name.to_owned()).set(0.0);
}

/// Starts the plugins to deliver to, stops the others (deleted, paused, or changed: those
/// restart from their offsets).
fn reconcile(
    config: &Arc<DeliverConfig>,
    catalog: &Arc<Catalog>,
    source: &Arc<dyn Source>,
    heads: &Arc<Vec<watch::Sender<u64>>>,
    runs: &mut HashMap<Uuid, (Arc<PluginRun>, Abort)>,
    plugins: Vec<DeliveryPlugin>,
) {
    let wanted: HashMap<Uuid, DeliveryPlugin> = plugins
        .into_iter()
        .filter(|p| !p.paused)
        .map(|p| (p.id, p))
        .collect();
    runs.retain(|id, (run, _)| {
        let keep = wanted.get(id) == Some(&run.plugin);
        if !keep {
            tracing::info!(plugin = %run.plugin.name, "delivery to the plugin stops");
            zero_lag(&run.plugin.name);
        }
        keep
    });
    for (id, p) in wanted {
        if runs.contains_key(&id) {
            continue;
        }
        tracing::info!(plugin = %p.name, endpoint = %p.endpoint, "delivery to the plugin starts");
        let run = PluginRun::new(p, catalog.clone(), source.clone(), config.clone());
        let task = Abort(tokio::spawn(run.clone().run(heads.clone())));
        runs.insert(id, (run, task));
    }
}

/// Reads every backend's shard heads every `heads_every` (at once when this node wrote), and
/// wakes the streams of the shards that changed.
async fn poll_heads(
    config: Arc<DeliverConfig>,
    source: Arc<dyn Source>,
    heads: Arc<Vec<watch::Sender<u64>>>,
) {
    let mut seen = HashMap::new();
    loop {
        let now = source.heads().await;
        for (shard, at) in &now {
            if seen.get(shard) != Some(at) {
                if let Some(tx) = heads.get(*shard as usize) {
                    tx.send_modify(|v| *v = v.wrapping_add(1));
                }
            }
        }
        seen = now;
        tokio::time::sleep(HEADS_MIN_GAP).await;
        let _ = tokio::time::timeout(
            config.heads_every.saturating_sub(HEADS_MIN_GAP),
            config.wake.notified(),
        )
        .await;
    }
}

/// Sends again the parked events an operator asked to replay (of the plugins delivered to
/// now): a delivered one leaves the parked list; a failure is recorded on its row (attempts,
/// error, time) and its request cleared.
async fn replay(
    catalog: Arc<Catalog>,
    source: Arc<dyn Source>,
    runs: HashMap<Uuid, Arc<PluginRun>>,
) {
    let requests = match catalog.replay_requests().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the replay requests");
            return;
        }
    };
    for ReplayRequest {
        plugin_id,
        shard,
        added_id,
    } in requests
    {
        let Some(run) = runs.get(&plugin_id) else {
            continue;
        };
        let cell = match source.read_event(shard, added_id).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                tracing::warn!(plugin = %run.plugin.name, shard, added_id, "a parked event to replay is no longer stored; its parked row is dropped");
                let _ = catalog.replayed(plugin_id, shard, added_id).await;
                continue;
            }
            Err(e) => {
                tracing::debug!(plugin = %run.plugin.name, shard, added_id, error = %e, "cannot read a parked event to replay; trying later");
                continue;
            }
        };
        let outcome = run.call(shard, &cell).await;
        metrics::counter!("mezzanine_plugin_deliveries_total", "plugin" => run.plugin.name.clone(), "outcome" => outcome.label()).increment(1);
        let done = match &outcome {
            Outcome::Delivered => {
                run.answered().await;
                catalog.replayed(plugin_id, shard, added_id).await
            }
            Outcome::Unavailable(why) | Outcome::Refused(why) => {
                tracing::warn!(plugin = %run.plugin.name, shard, added_id, error = %why, "a replayed event was not delivered; it stays parked");
                catalog
                    .park_event(
                        plugin_id,
                        shard,
                        added_id,
                        cell.row_key,
                        &cell.column_name,
                        1,
                        why,
                    )
                    .await
            }
        };
        if let Err(e) = done {
            tracing::warn!(plugin = %run.plugin.name, shard, added_id, error = %e, "cannot record a replay's outcome");
        }
    }
}
