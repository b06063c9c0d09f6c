//! One plugin's delivery: a task per shard (strict order: one event in flight per (plugin,
//! shard)), calls bounded per plugin (`TRIGGER_PARALLELISM`), the plugin-wide back-off of a
//! plugin that does not answer, refused events retried then parked, offsets committed per
//! batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use mezzanine_catalog::delivery::DeliveryPlugin;
use mezzanine_catalog::Catalog;
use mezzanine_core::trigger::{
    after_refusal, request_body, subscribed, unavailable_delay, AfterRefusal, CellWritten, Outcome,
    Progress,
};
use mezzanine_storage::Cell;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::rpc::Caller;
use crate::{DeliverConfig, Source};

/// The shortest time between two commits of a shard's offset (the events delivered since the
/// last commit are sent again after a crash or a change of deliverer).
const COMMIT_EVERY: Duration = Duration::from_millis(250);
/// A pause after a failed read or catalog write before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Whether the plugin answers, shared by its shards.
#[derive(Default)]
struct Health {
    /// Unavailable answers in a row (calls in flight together count once).
    failures: u32,
    /// Bumped by every counted failure: a call started before it is not counted again.
    epoch: u64,
    until: Option<Instant>,
    backing_off: bool,
}

/// A plugin being delivered to.
pub struct PluginRun {
    pub plugin: DeliveryPlugin,
    caller: Caller,
    calls: Semaphore,
    health: Mutex<Health>,
    next_id: AtomicU64,
    /// Per shard: where the stream stands (-1 before its offset is known).
    position: Vec<AtomicI64>,
    /// Per shard: the `created_at` (ms) of the event being delivered, 0 when none waits.
    oldest: Vec<AtomicI64>,
    catalog: Arc<Catalog>,
    source: Arc<dyn Source>,
    config: Arc<DeliverConfig>,
}

impl PluginRun {
    pub fn new(
        plugin: DeliveryPlugin,
        catalog: Arc<Catalog>,
        source: Arc<dyn Source>,
        config: Arc<DeliverConfig>,
    ) -> Arc<PluginRun> {
        let n = source.num_shards() as usize;
        let caller = Caller::new(
            &plugin.endpoint,
            &config.hosts,
            config.rpc_timeout,
            config.parallelism,
        );
        Arc::new(PluginRun {
            caller,
            calls: Semaphore::new(config.parallelism),
            health: Mutex::new(Health::default()),
            next_id: AtomicU64::new(1),
            position: (0..n).map(|_| AtomicI64::new(-1)).collect(),
            oldest: (0..n).map(|_| AtomicI64::new(0)).collect(),
            plugin,
            catalog,
            source,
            config,
        })
    }

    fn name(&self) -> String {
        self.plugin.name.clone()
    }

    /// Runs every shard's stream until aborted.
    pub async fn run(self: Arc<Self>, heads: Arc<Vec<watch::Sender<u64>>>) {
        let offsets: HashMap<u32, i64> = loop {
            match self.catalog.delivery_offsets(self.plugin.id).await {
                Ok(o) => break o.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(plugin = %self.plugin.name, error = %e, "cannot read the plugin's offsets; trying again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        for shard in 0..self.source.num_shards() {
            let Some(tx) = heads.get(shard as usize) else {
                continue;
            };
            let rx = tx.subscribe();
            let me = self.clone();
            let known = offsets.get(&shard).copied();
            tasks.spawn(async move { me.shard(shard, known, rx).await });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// The offset of `shard` in the catalog, recorded first if it has none. `None`: the
    /// plugin is gone.
    async fn offset(&self, shard: u32) -> Option<i64> {
        loop {
            let first = match self
                .source
                .start_offset(shard, self.plugin.deliver_from)
                .await
            {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(plugin = %self.plugin.name, shard, error = %e, "cannot find where the stream starts; trying again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            match self
                .catalog
                .start_offset(self.plugin.id, shard, first)
                .await
            {
                Ok(o) => return o,
                Err(e) => {
                    tracing::warn!(plugin = %self.plugin.name, shard, error = %e, "cannot record the stream's offset; trying again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    async fn shard(
        self: Arc<Self>,
        shard: u32,
        known: Option<i64>,
        mut news: watch::Receiver<u64>,
    ) {
        let offset = match known {
            Some(o) => o,
            None => match self.offset(shard).await {
                Some(o) => o,
                None => return,
            },
        };
        let mut progress = Progress::new(offset);
        self.position[shard as usize].store(offset, Ordering::Relaxed);
        let batch = self.config.batch;
        let mut last_commit = Instant::now();
        loop {
            // Changes from here on wake the wait below, even those made during the reads.
            news.borrow_and_update();
            loop {
                let cells = match self
                    .source
                    .read(
                        shard,
                        progress.position(),
                        batch,
                        &self.plugin.subscribed_columns,
                    )
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(plugin = %self.plugin.name, shard, error = %e, "cannot read the shard's stream; trying again");
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    }
                };
                let full = cells.len() as i64 >= batch;
                for cell in &cells {
                    if subscribed(&self.plugin.subscribed_columns, &cell.column_name) {
                        self.oldest[shard as usize]
                            .store(cell.created_at.timestamp_millis().max(1), Ordering::Relaxed);
                        self.deliver(shard, cell, &mut progress).await;
                    }
                    progress.handled(cell.added_id);
                    self.position[shard as usize].store(progress.position(), Ordering::Relaxed);
                }
                self.oldest[shard as usize].store(0, Ordering::Relaxed);
                // After a batch, but at most every COMMIT_EVERY: under a steady load batches
                // are small, and the catalog is not written per event.
                if last_commit.elapsed() >= COMMIT_EVERY {
                    self.commit(shard, &mut progress).await;
                    last_commit = Instant::now();
                }
                if !full {
                    break;
                }
            }
            // Progress not committed yet is committed once COMMIT_EVERY has passed, news or not.
            let wait = if progress.to_commit().is_some() {
                COMMIT_EVERY.saturating_sub(last_commit.elapsed())
            } else {
                self.config.full_pass
            };
            let woken = tokio::time::timeout(wait, news.changed()).await.is_ok();
            if !woken && progress.to_commit().is_some() {
                self.commit(shard, &mut progress).await;
                last_commit = Instant::now();
            }
        }
    }

    /// Writes the shard's offset when it moved (a failure is retried at the next commit).
    async fn commit(&self, shard: u32, progress: &mut Progress) {
        let Some(upto) = progress.to_commit() else {
            return;
        };
        match self
            .catalog
            .advance_offset(self.plugin.id, shard, upto)
            .await
        {
            Ok(()) => progress.committed(upto),
            Err(e) => {
                tracing::warn!(plugin = %self.plugin.name, shard, error = %e, "cannot record the delivered offset; it will be recorded with the next batch")
            }
        }
    }

    /// Delivers one event: until the plugin takes it, or it is parked. A plugin that does
    /// not answer is backed off and the same event sent again (the progress so far is
    /// committed first); a refused event is sent again `TRIGGER_RETRY_MAX` times, then
    /// parked.
    async fn deliver(&self, shard: u32, cell: &Cell, progress: &mut Progress) {
        let mut refusals: u32 = 0;
        loop {
            let epoch = self.wait_healthy().await;
            let outcome = self.call(shard, cell).await;
            metrics::counter!("mezzanine_plugin_deliveries_total", "plugin" => self.name(), "outcome" => outcome.label()).increment(1);
            match outcome {
                Outcome::Delivered => {
                    self.answered().await;
                    return;
                }
                Outcome::Unavailable(why) => {
                    self.commit(shard, progress).await;
                    self.unavailable(epoch, &why).await;
                }
                Outcome::Refused(why) => {
                    self.answered().await;
                    refusals += 1;
                    match after_refusal(refusals, self.config.retry_max) {
                        AfterRefusal::Retry => tokio::time::sleep(self.config.retry_backoff).await,
                        AfterRefusal::Park => {
                            self.park(shard, cell, refusals, &why).await;
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Records a parked event (until the catalog takes it: the stream must not move past an
    /// event that is neither delivered nor parked).
    async fn park(&self, shard: u32, cell: &Cell, attempts: u32, why: &str) {
        let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
        let error = format!("event {shard}/{}: {why}", cell.added_id);
        loop {
            match self
                .catalog
                .park_event(
                    self.plugin.id,
                    shard,
                    cell.added_id,
                    cell.row_key,
                    &cell.column_name,
                    attempts,
                    why,
                )
                .await
            {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(plugin = %self.plugin.name, shard, added_id = cell.added_id, error = %e, "cannot park the refused event; trying again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        metrics::counter!("mezzanine_plugin_deliveries_total", "plugin" => self.name(), "outcome" => "parked").increment(1);
        tracing::warn!(plugin = %self.plugin.name, shard, added_id = cell.added_id, attempts, error = %why, "event parked: the plugin refused it");
        if let Err(e) = self
            .catalog
            .set_delivery_state(self.plugin.id, false, Some(&error))
            .await
        {
            tracing::debug!(plugin = %self.plugin.name, error = %e, "cannot record the plugin's last error");
        }
    }

    /// One call with `cell` (its latency recorded).
    pub async fn call(&self, shard: u32, cell: &Cell) -> Outcome {
        let created_at = cell.created_at.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let params = CellWritten {
            added_id: cell.added_id,
            row_key: cell.row_key.hyphenated().to_string(),
            column_name: &cell.column_name,
            ref_key: cell.ref_key,
            body: &cell.body,
            created_at: &created_at,
            shard_id: shard,
        };
        let body = request_body(&params, self.next_id.fetch_add(1, Ordering::Relaxed));
        let Ok(_permit) = self.calls.acquire().await else {
            return Outcome::Unavailable("the deliverer is stopping".into());
        };
        let started = Instant::now();
        let outcome = self.caller.call(body).await;
        metrics::histogram!("mezzanine_plugin_delivery_seconds", "plugin" => self.name())
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    /// Waits out the plugin's back-off; returns the failure epoch the call starts in.
    async fn wait_healthy(&self) -> u64 {
        loop {
            let (until, epoch) = {
                let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
                (h.until, h.epoch)
            };
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return epoch,
            }
        }
    }

    /// The plugin answered: its back-off ends (recorded when it was backing off).
    pub async fn answered(&self) {
        let was = {
            let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
            let was = h.backing_off;
            h.failures = 0;
            h.until = None;
            h.backing_off = false;
            was
        };
        if was {
            tracing::info!(plugin = %self.plugin.name, "the plugin answers again");
            if let Err(e) = self
                .catalog
                .set_delivery_state(self.plugin.id, false, None)
                .await
            {
                tracing::debug!(plugin = %self.plugin.name, error = %e, "cannot record the plugin's state");
            }
        }
    }

    /// The plugin did not answer a call started in `epoch`: it is backed off (once per
    /// failure, whatever the calls in flight together).
    async fn unavailable(&self, epoch: u64, why: &str) {
        let first = {
            let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
            if h.epoch == epoch {
                h.epoch += 1;
                h.failures = h.failures.saturating_add(1);
                let delay = unavailable_delay(h.failures);
                h.until = Some(Instant::now() + delay);
            }
            let first = !h.backing_off;
            h.backing_off = true;
            first
        };
        if first {
            tracing::warn!(plugin = %self.plugin.name, error = %why, "the plugin does not answer: backing off");
            if let Err(e) = self
                .catalog
                .set_delivery_state(self.plugin.id, true, Some(why))
                .await
            {
                tracing::debug!(plugin = %self.plugin.name, error = %e, "cannot record the plugin's state");
            }
        }
    }

    /// Events behind (against each shard's highest `added_id`) and the age of the oldest
    /// event waiting, for the lag metrics.
    pub fn lag(&self, tails: &HashMap<u32, i64>) -> (i64, f64) {
        let mut events = 0i64;
        for (shard, pos) in self.position.iter().enumerate() {
            let pos = pos.load(Ordering::Relaxed);
            if pos < 0 {
                continue;
            }
            if let Some(tail) = tails.get(&(shard as u32)) {
                events += (tail - pos).max(0);
            }
        }
        let now = Utc::now().timestamp_millis();
        let oldest = self
            .oldest
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .filter(|o| *o > 0)
            .min();
        let age = oldest.map_or(0.0, |o| ((now - o).max(0) as f64) / 1000.0);
        (events, age)
    }
}
