//! One cluster (DESIGN §4): a cluster id is made with the catalog (`mezzanine.meta`) and
//! recorded in every backend with the catalog's location (`mezzanine_schema`:
//! `mezzanine_storage::schema::prepare_member`).
//!
//! A node finds its catalog from its backends, not from the order of `shards.json`: it asks
//! every backend of `shards.json` which cluster it belongs to ([`survey`], one round trip
//! each, in parallel); `CATALOG_URL` wins, else the catalog is where the backends say, and
//! only when no backend belongs to a cluster (a new cluster, or go-mezzanine's databases being
//! adopted) and every one answered is a catalog seeded, in the first backend. A node never uses
//! a catalog of another cluster than its backends', nor backends of two clusters.

use std::sync::Arc;

use mezzanine_core::ShardMap;
use mezzanine_storage::schema::{recorded_cluster, ClusterTag};
use mezzanine_storage::{mask_url, Backend, PoolSettings, SqlState};

use crate::{Catalog, CatalogError, CatalogLocation};

/// What the backends of `shards.json` say about the cluster they belong to.
#[derive(Default)]
pub struct Membership {
    /// Each backend that answered, with the cluster it records (if any), in shards.json order.
    pub recorded: Vec<(String, Option<ClusterTag>)>,
    /// The backends that could not be asked (down, refusing this node, a bad URL), with why.
    pub unreachable: Vec<(String, String)>,
    /// The pools opened to ask them, with the URL each was opened with (a server reuses them).
    pub opened: Vec<(String, Arc<Backend>)>,
    /// When no backend records a cluster: the backends whose database holds a catalog made
    /// before cluster ids (name, URL), the one to upgrade rather than seeding another.
    pub holders: Vec<(String, String)>,
}

/// Asks every backend of `seed` (in parallel, each bounded by `settings`' timeouts) which
/// cluster it belongs to. A backend that cannot be asked is noted, not an error: what is
/// wrong with it is said by whatever needs it next (the catalog, or its preparation).
pub async fn survey(seed: &ShardMap, settings: PoolSettings) -> Membership {
    let mut members = Membership::default();
    for b in seed.backends() {
        match Backend::new(&b.name, &b.database_url, settings.clone()) {
            Ok(pool) => members.opened.push((b.database_url.clone(), pool)),
            Err(e) => members.unreachable.push((b.name.clone(), e.to_string())),
        }
    }
    let answers =
        futures::future::join_all(members.opened.iter().map(|(_, b)| recorded_cluster(b))).await;
    for ((_, b), answer) in members.opened.iter().zip(answers) {
        let name = b.name().to_owned();
        match answer {
            Ok(tag) => members.recorded.push((name, tag)),
            Err(e) => members.unreachable.push((name, e.to_string())),
        }
    }
    if members.recorded.iter().all(|(_, tag)| tag.is_none()) {
        // No cluster recorded (new, go-mezzanine's, or a catalog made before cluster ids):
        // where is a catalog already? One more round trip, on this path only.
        let asked = members.opened.iter().map(|(url, b)| async move {
            let lease = b.lease().await.ok()?;
            let rows = lease
                .query("SELECT to_regclass('mezzanine.meta') IS NOT NULL", &[])
                .await
                .ok()?;
            let holds: bool = rows.first()?.try_get(0).ok()?;
            holds.then(|| (b.name().to_owned(), url.clone()))
        });
        members.holders = futures::future::join_all(asked)
            .await
            .into_iter()
            .flatten()
            .collect();
    }
    members
}

impl Membership {
    /// The cluster the backends belong to (the first backend recording one, and its tag), or
    /// `None`; an error when they record two clusters.
    pub fn cluster(&self) -> Result<Option<(&str, &ClusterTag)>, CatalogError> {
        let mut tagged = self
            .recorded
            .iter()
            .filter_map(|(name, tag)| tag.as_ref().map(|t| (name.as_str(), t)));
        let Some(first) = tagged.next() else {
            return Ok(None);
        };
        if let Some((name, other)) = tagged.find(|(_, t)| t.cluster_id != first.1.cluster_id) {
            return Err(CatalogError::Cluster(format!(
                "shards.json names backends of two clusters: backend {} belongs to cluster {} \
                 (catalog at {}), backend {name} to cluster {} (catalog at {}); a node serves \
                 one cluster: remove the other cluster's backends from shards.json (or use \
                 `mezzanine shards export` of the cluster you mean)",
                first.0,
                first.1.cluster_id,
                mask_url(&first.1.catalog_url),
                other.cluster_id,
                mask_url(&other.catalog_url)
            )));
        }
        Ok(Some(first))
    }

    /// Where the catalog is: `catalog_url` (`CATALOG_URL`) if given; else where the backends
    /// record it; else (no backend belongs to a cluster yet) the backend whose database holds
    /// a catalog made before cluster ids; else the first backend of `seed` (a new catalog).
    pub fn locate(
        &self,
        catalog_url: Option<&str>,
        seed: &ShardMap,
    ) -> Result<CatalogLocation, CatalogError> {
        let recorded = self.cluster()?;
        match (catalog_url, recorded) {
            (None, Some((name, tag))) if !tag.catalog_url.is_empty() => Ok(CatalogLocation {
                url: tag.catalog_url.clone(),
                label: format!(
                    "the catalog database (cluster {}'s, as backend {name} records it; \
                     CATALOG_URL overrides)",
                    tag.cluster_id
                ),
            }),
            (None, None) => match self.holders.as_slice() {
                [] => Ok(crate::locate(None, seed)),
                [(_, url)] if seed.backends().first().map(|b| &b.database_url) == Some(url) => {
                    Ok(crate::locate(None, seed))
                }
                [(name, url)] => Ok(CatalogLocation {
                    url: url.clone(),
                    label: format!(
                        "the catalog database (backend {name}'s, where the catalog is; \
                         CATALOG_URL overrides)"
                    ),
                }),
                [(a, _), (b, _), ..] => Err(CatalogError::Cluster(format!(
                    "the databases of backends {a} and {b} both hold a catalog (schema \
                     mezzanine) and no backend records which cluster it belongs to; start with \
                     CATALOG_URL set to the catalog to keep (the backends then record it)"
                ))),
            },
            _ => Ok(crate::locate(catalog_url, seed)),
        }
    }

    /// Whether a new catalog may be seeded in `catalog`'s database: only when no backend
    /// belongs to a cluster and every one answered.
    pub(crate) fn may_seed(&self, catalog: &Catalog) -> Result<(), CatalogError> {
        let at = mask_url(catalog.url());
        if let Some((name, tag)) = self.cluster()? {
            return Err(CatalogError::Cluster(format!(
                "there is no catalog at {at}, but backend {name} belongs to cluster {} whose \
                 catalog is at {}; mezzanine refuses to create a second catalog (two clusters \
                 over the same data): start with CATALOG_URL set to that catalog's database, \
                 or without CATALOG_URL (the backends say where it is)",
                tag.cluster_id,
                mask_url(&tag.catalog_url)
            )));
        }
        if let Some((name, why)) = self.unreachable.first() {
            return Err(CatalogError::Cluster(format!(
                "there is no catalog at {at} and backend {name} cannot be asked whether it \
                 belongs to a cluster already ({why}); a new catalog is created only when every \
                 backend of shards.json answers: start again when it does"
            )));
        }
        Ok(())
    }

    /// Refuses a catalog of cluster `id` when a backend records another cluster.
    pub(crate) fn check_catalog(&self, id: &str, catalog: &Catalog) -> Result<(), CatalogError> {
        for (name, tag) in &self.recorded {
            let Some(tag) = tag.as_ref().filter(|t| t.cluster_id != id) else {
                continue;
            };
            return Err(CatalogError::Cluster(format!(
                "the catalog at {} belongs to cluster {id}, but backend {name} of shards.json \
                 belongs to cluster {} (its catalog is at {}); mezzanine refuses to mix two \
                 clusters: point CATALOG_URL at cluster {}'s catalog (or unset it: the backends \
                 say where it is), or remove backend {name} from shards.json",
                mask_url(catalog.url()),
                tag.cluster_id,
                mask_url(&tag.catalog_url),
                tag.cluster_id
            )));
        }
        Ok(())
    }
}

impl Catalog {
    /// This catalog's cluster as backends record it (after [`Catalog::ensure`]).
    pub fn tag(&self) -> Option<ClusterTag> {
        self.cluster_id().map(|id| ClusterTag {
            cluster_id: id.to_owned(),
            catalog_url: self.url().to_owned(),
        })
    }

    /// Whether the database of `backend` (reached at `url`) holds this catalog: the same URL,
    /// or a `mezzanine` schema there with this cluster's id. A backend that cannot be asked is
    /// judged by its URL only.
    pub async fn is_home(&self, backend: &Backend, url: &str) -> bool {
        if url == self.url() {
            return true;
        }
        let Some(id) = self.cluster_id() else {
            return false;
        };
        let asked = async {
            backend
                .lease()
                .await?
                .query(
                    "SELECT to_jsonb(m)->>'cluster_id' FROM mezzanine.meta m",
                    &[],
                )
                .await
        };
        match asked.await {
            Ok(rows) => rows
                .first()
                .and_then(|r| r.try_get::<_, Option<String>>(0).ok().flatten())
                .is_some_and(|found| found == id),
            Err(e) if e.is(&SqlState::UNDEFINED_TABLE) || e.is(&SqlState::INVALID_SCHEMA_NAME) => {
                false
            }
            Err(e) => {
                tracing::warn!(backend = %backend.name(), error = %e, "cannot ask whether this backend holds the catalog; judged by its URL");
                false
            }
        }
    }
}

/// Why the catalog's home may not be removed or drained (`verb`: `remove`, `drain`), and how
/// to move the catalog.
pub fn home_refusal(name: &str, verb: &str) -> String {
    format!(
        "backend {name} holds the catalog (the schema mezzanine of its database), so it cannot \
         be {verb}ed. Move the catalog first: stop every node; copy the schema to a database of \
         its own (pg_dump --schema=mezzanine BACKEND_URL | psql CATALOG_DB_URL); drop it from \
         backend {name}'s database (DROP SCHEMA mezzanine CASCADE); start the nodes with \
         CATALOG_URL=CATALOG_DB_URL (every backend then records the new location); then \
         {verb} backend {name}"
    )
}
