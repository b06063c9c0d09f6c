//! Plugin delivery on this node ([`mezzanine_triggers`]): started on every node unless
//! `DELIVERY_ENABLED=false`; the node holding the deliverer's catalog lock delivers. It reads
//! the shards' streams through this node's map and pools ([`StateSource`]): a shard that
//! moved is retried at its new owner as client reads are ([`AppState::on_shard`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use mezzanine_storage::{stream, Cell};
use mezzanine_triggers::{DeliverConfig, Source};

use crate::AppState;

/// How often the backends' shard heads are read for news.
const HEADS_EVERY: Duration = Duration::from_millis(25);
/// How often every stream is read without a sign of news.
const FULL_PASS: Duration = Duration::from_secs(5);
/// Events read per batch.
const BATCH: i64 = 500;

/// Enters the deliverer's election (unless this node may not deliver).
pub fn start(st: &Arc<AppState>) {
    if !st.config.delivery_enabled {
        tracing::info!("plugin delivery disabled on this node (DELIVERY_ENABLED=false)");
        return;
    }
    let config = DeliverConfig {
        node: st.node_id.clone(),
        rpc_timeout: st.config.trigger_rpc_timeout,
        retry_max: st.config.trigger_retry_max,
        retry_backoff: st.config.trigger_retry_backoff,
        parallelism: st.config.trigger_parallelism.max(1) as usize,
        batch: BATCH,
        heads_every: HEADS_EVERY,
        full_pass: FULL_PASS,
        poll: Duration::from_secs(1),
        session_timeout: st.config.pool_settings().query_timeout,
        hosts: crate::plugins::plugin_hosts(st),
        wake: st.stream_written.clone(),
    };
    let source: Arc<dyn Source> = Arc::new(StateSource(st.clone()));
    st.spawn(tokio::spawn(mezzanine_triggers::run(
        config,
        st.catalog.clone(),
        source,
        std::future::pending(),
    )));
}

/// The shards' streams as this node sees the cluster.
pub struct StateSource(pub Arc<AppState>);

impl Source for StateSource {
    fn num_shards(&self) -> u32 {
        self.0.num_shards()
    }

    fn read(
        &self,
        shard: u32,
        after: i64,
        limit: i64,
        columns: &[String],
    ) -> BoxFuture<'_, Result<Vec<Cell>, String>> {
        let columns = columns.to_vec();
        async move {
            self.0
                .on_shard(shard, |b| {
                    let columns = &columns;
                    async move { stream::read_stream(&b, shard, after, limit, columns).await }
                })
                .await
                .map_err(|p| p.detail)
        }
        .boxed()
    }

    fn read_event(&self, shard: u32, added_id: i64) -> BoxFuture<'_, Result<Option<Cell>, String>> {
        async move {
            self.0
                .on_shard(shard, |b| async move {
                    stream::read_event(&b, shard, added_id).await
                })
                .await
                .map_err(|p| p.detail)
        }
        .boxed()
    }

    fn start_offset(
        &self,
        shard: u32,
        before: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<i64, String>> {
        async move {
            self.0
                .on_shard(shard, |b| async move {
                    stream::start_offset(&b, shard, before).await
                })
                .await
                .map_err(|p| p.detail)
        }
        .boxed()
    }

    fn heads(&self) -> BoxFuture<'_, HashMap<u32, Option<DateTime<Utc>>>> {
        async move {
            let topo = self.0.topology.load_full();
            let reads = topo
                .backends
                .iter()
                .filter(|s| s.is_ready() && s.backend.is_up())
                .map(|s| stream::heads(&s.backend));
            let mut all: HashMap<u32, Option<DateTime<Utc>>> = HashMap::new();
            for found in futures::future::join_all(reads).await {
                match found {
                    Ok(heads) => {
                        for (shard, at) in heads {
                            let e = all.entry(shard).or_insert(at);
                            *e = (*e).max(at);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot read a backend's shard heads"),
                }
            }
            all
        }
        .boxed()
    }

    fn tails(&self) -> BoxFuture<'_, HashMap<u32, i64>> {
        async move {
            let topo = self.0.topology.load_full();
            let reads = topo.backends.iter().enumerate().map(|(i, s)| {
                let shards: Vec<u32> = topo.map.shards_of(i).collect();
                async move {
                    if !(s.is_ready() && s.backend.is_up()) {
                        return Ok(Vec::new());
                    }
                    stream::tails(&s.backend, &shards).await
                }
            });
            let mut all = HashMap::new();
            for found in futures::future::join_all(reads).await {
                match found {
                    Ok(t) => all.extend(t),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot read a backend's latest added_ids")
                    }
                }
            }
            all
        }
        .boxed()
    }
}
