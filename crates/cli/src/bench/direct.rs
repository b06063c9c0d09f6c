//! The baselines: the storage functions the server calls, sent straight to the backends that
//! own each shard now (the catalog's map, not shards.json, which only seeded it), and binary
//! COPY into the shard tables.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use mezzanine_catalog::Catalog;
use mezzanine_core::{shard_for_row_key, NewCell, ShardMap};
use mezzanine_storage::cells::{self, PartitionRead, WriteOutcome};
use mezzanine_storage::schema::cells_table;
use mezzanine_storage::{Backend, PoolSettings};
use tokio::sync::Mutex;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use super::runner::{OpFn, OpFuture, OP_TIMEOUT};

/// Bound on one baseline statement: as long as the bench waits for any operation.
const BASELINE_TIMEOUT: std::time::Duration = OP_TIMEOUT;
use super::{fresh_cells, Op, Workload};

/// The catalog's backends, one pool each, routed as the server routes.
pub struct Direct {
    map: ShardMap,
    backends: Vec<Arc<Backend>>,
    health_loops: Vec<tokio::task::JoinHandle<()>>,
}

/// The URL with `application_name=mezzanine-bench` unless it names one: the baseline's
/// sessions are told apart from the server's (`pg_stat_activity`).
fn bench_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.query_pairs().any(|(k, _)| k == "application_name") => {
            u.query_pairs_mut()
                .append_pair("application_name", "mezzanine-bench");
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

impl Direct {
    /// Reads the current map from the catalog (found as the server finds it: `catalog_url`,
    /// else where the backends of shards.json record it, else the first of them) and checks that every backend answers.
    pub async fn open(
        path: &Path,
        catalog_url: Option<&str>,
        num_shards: u32,
        max_conns: usize,
    ) -> anyhow::Result<Direct> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the shard config {}", path.display()))?;
        let seed = ShardMap::parse(&text, num_shards)
            .with_context(|| format!("{} is not a valid shard map", path.display()))?;
        let members = mezzanine_catalog::cluster::survey(&seed, PoolSettings::default()).await;
        let at = members.locate(catalog_url, &seed)?;
        drop(members);
        let catalog = Catalog::open(&at.url, &at.label, PoolSettings::default(), "bench")?;
        let map = catalog
            .load()
            .await
            .context("the direct side routes by the catalog's map")?
            .map;
        if map.num_shards() != num_shards {
            bail!(
                "the catalog records {} shards, the server {num_shards}",
                map.num_shards()
            );
        }
        // A client driving PostgreSQL directly waits for its locks rather than giving up at
        // the server's query timeout: the baseline must not fail where it only waits.
        let settings = PoolSettings {
            max_conns,
            query_timeout: BASELINE_TIMEOUT,
            ..Default::default()
        };
        let backends = map
            .backends()
            .iter()
            .map(|b| Backend::new(&b.name, &bench_url(&b.database_url), settings.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        for b in &backends {
            let what = || format!("cannot reach backend {} ({})", b.name(), b.masked_url());
            b.probe().await.with_context(what)?;
        }
        let health_loops = backends.iter().map(|b| b.spawn_health_loop()).collect();
        Ok(Direct {
            map,
            backends,
            health_loops,
        })
    }

    pub fn backend_count(&self) -> usize {
        self.backends.len()
    }

    /// Opens `conns` connections in every pool, so that no phase pays for connecting.
    pub async fn warm(&self, conns: usize) {
        let probes = self
            .backends
            .iter()
            .flat_map(|b| (0..conns).map(move |_| b.probe()));
        futures::future::join_all(probes).await;
    }

    /// Stops the pools' health loops.
    pub fn close(&self) {
        self.health_loops.iter().for_each(|h| h.abort());
    }

    fn owner(&self, shard: u32) -> anyhow::Result<usize> {
        self.map
            .owner(shard)
            .filter(|&i| i < self.backends.len())
            .with_context(|| format!("shard {shard} has no backend in the catalog's map"))
    }

    fn backend(&self, shard: u32) -> anyhow::Result<&Backend> {
        Ok(&self.backends[self.owner(shard)?])
    }

    fn shard_of(&self, cell: &NewCell) -> u32 {
        shard_for_row_key(&cell.key.row_key, self.map.num_shards())
    }

    /// Cells grouped by shard, then by backend, each backend's groups pipelined on one
    /// connection (`write_shard_groups`): what the server's batch handler does.
    async fn write_batch(&self, cells: &[NewCell]) -> anyhow::Result<u64> {
        let plan = self
            .map
            .group_by_backend(cells.iter().map(|c| (c.key.row_key, c)));
        let work = plan.iter().map(|(b, groups)| async move {
            let outcomes = cells::write_shard_groups(&self.backends[*b], groups).await;
            let mut stored = 0;
            for outcome in outcomes {
                stored += outcome?
                    .iter()
                    .filter(|o| !matches!(o, WriteOutcome::Conflict(_)))
                    .count();
            }
            anyhow::Ok(stored)
        });
        // Like the server: wait for every group, even when one fails.
        let (mut stored, mut failure) = (0, None);
        for result in futures::future::join_all(work).await {
            match result {
                Ok(n) => stored += n,
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        let failed = cells.len() - stored;
        match failure {
            Some(e) => Err(e.context(format!("{failed} of {} cells failed", cells.len()))),
            None if failed > 0 => bail!("{failed} of {} cells conflicted", cells.len()),
            None => Ok(stored as u64),
        }
    }
}

/// The direct counterpart of an HTTP operation.
pub fn op(work: &Arc<Workload>, direct: &Arc<Direct>, op: Op) -> OpFn {
    let (work, d) = (work.clone(), direct.clone());
    Arc::new(move || -> OpFuture {
        let d = d.clone();
        match op {
            Op::Write => {
                let cell = work.fresh_cell();
                Box::pin(async move {
                    let shard = d.shard_of(&cell);
                    cells::write_cells(d.backend(shard)?, shard, &[&cell]).await?;
                    Ok(1)
                })
            }
            Op::Batch => {
                let batch = fresh_cells(work.batch_size);
                Box::pin(async move { d.write_batch(&batch).await })
            }
            Op::Latest | Op::Row => {
                let picked = work.pick();
                Box::pin(async move {
                    let (row, column) = picked.context("no seeded rows")?;
                    let shard = shard_for_row_key(&row, d.map.num_shards());
                    let b = d.backend(shard)?;
                    let found = match op {
                        Op::Latest => cells::get_latest(b, shard, &row, column).await?.is_some(),
                        _ => !cells::get_row(b, shard, &row).await?.is_empty(),
                    };
                    if !found {
                        bail!("seeded row {row} not found");
                    }
                    Ok(1)
                })
            }
            Op::Partition => {
                let shard = work.random_shard();
                Box::pin(async move {
                    let from = PartitionRead::AfterAddedId(0);
                    cells::partition_read(d.backend(shard)?, shard, from, 100, usize::MAX).await?;
                    Ok(1)
                })
            }
        }
    })
}

/// A COPY worker's connection to one backend, with its prepared COPY statements by shard.
struct CopyConn {
    client: Client,
    statements: HashMap<u32, Statement>,
}

/// `concurrency` COPY workers, each with its own connection to every backend, opened now.
pub async fn copy_workers(
    direct: &Arc<Direct>,
    work: &Arc<Workload>,
    concurrency: usize,
) -> anyhow::Result<Vec<OpFn>> {
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut conns = Vec::with_capacity(direct.backends.len());
        for spec in direct.map.backends() {
            let (client, conn) =
                mezzanine_storage::conninfo::connect(&spec.database_url, Duration::from_secs(10))
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("cannot connect to backend {} for COPY: {e}", spec.name)
                    })?;
            tokio::spawn(conn);
            conns.push(CopyConn {
                client,
                statements: HashMap::new(),
            });
        }
        // Each worker runs one operation at a time: the lock is never contended.
        let conns = Arc::new(Mutex::new(conns));
        let (d, work) = (direct.clone(), work.clone());
        workers.push(Arc::new(move || -> OpFuture {
            let (d, conns, batch) = (d.clone(), conns.clone(), fresh_cells(work.batch_size));
            Box::pin(async move { copy_batch(&d, &mut conns.lock().await, &batch).await })
        }) as OpFn);
    }
    Ok(workers)
}

/// Groups the cells by shard and COPYs each group: backends in parallel, the groups of one
/// backend one after the other on the worker's connection to it.
async fn copy_batch(d: &Direct, conns: &mut [CopyConn], cells: &[NewCell]) -> anyhow::Result<u64> {
    let mut per_backend: Vec<HashMap<u32, Vec<&NewCell>>> = vec![HashMap::new(); conns.len()];
    for c in cells {
        let shard = d.shard_of(c);
        per_backend[d.owner(shard)?]
            .entry(shard)
            .or_default()
            .push(c);
    }
    let work = conns
        .iter_mut()
        .zip(per_backend)
        .map(|(conn, groups)| async move {
            for (shard, group) in groups {
                conn.copy(shard, &group).await?;
            }
            anyhow::Ok(())
        });
    futures::future::try_join_all(work).await?;
    Ok(cells.len() as u64)
}

impl CopyConn {
    async fn copy(&mut self, shard: u32, group: &[&NewCell]) -> anyhow::Result<()> {
        let statement = match self.statements.get(&shard) {
            Some(s) => s.clone(),
            None => {
                let t = cells_table(shard);
                let sql = format!(
                    "COPY {t} (row_key, column_name, ref_key, body) FROM STDIN (FORMAT binary)"
                );
                let s = self.client.prepare(&sql).await?;
                self.statements.insert(shard, s.clone());
                s
            }
        };
        let sink = self.client.copy_in(&statement).await?;
        let types = [Type::UUID, Type::TEXT, Type::INT8, Type::JSONB];
        let writer = BinaryCopyInWriter::new(sink, &types);
        futures::pin_mut!(writer);
        for c in group {
            let k = &c.key;
            let row: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&k.row_key, &k.column_name, &k.ref_key, &c.body];
            writer.as_mut().write(&row).await?;
        }
        writer.finish().await?;
        Ok(())
    }
}
