//! Creating, seeding and migrating the catalog at start-up ([`Catalog::ensure`]).

use std::time::Duration;

use mezzanine_core::moves::ShardMoveState;
use mezzanine_core::ShardMap;
use mezzanine_storage::backend::Lease;
use mezzanine_storage::SqlState;
use tokio_postgres::types::Type;

use crate::{
    audit, check_num_shards, cluster, differences, no_meta, Catalog, CatalogError, EnsureReport,
    MapSnapshot,
};

/// Key of the advisory lock that serialises catalog set-up.
const SETUP_LOCK: i64 = 0x6d65_7a7a_0002;

const DDL: &str = "\
CREATE SCHEMA IF NOT EXISTS mezzanine;
CREATE TABLE IF NOT EXISTS mezzanine.meta (
    id INT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    num_shards INT NOT NULL,
    map_version BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS mezzanine.backends (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    added_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS mezzanine.shards (
    shard INT PRIMARY KEY,
    backend TEXT NOT NULL REFERENCES mezzanine.backends (name),
    epoch BIGINT NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS mezzanine.moves (
    id BIGSERIAL PRIMARY KEY,
    to_backend TEXT NOT NULL,
    shards_spec TEXT NOT NULL,
    parallel INT NOT NULL,
    max_rows_per_sec BIGINT,
    requested TEXT CHECK (requested IN ('abort', 'complete')),
    reverts BIGINT REFERENCES mezzanine.moves (id),
    reverted_by BIGINT REFERENCES mezzanine.moves (id),
    error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS mezzanine.move_shards (
    move_id BIGINT NOT NULL REFERENCES mezzanine.moves (id),
    shard INT NOT NULL,
    from_backend TEXT NOT NULL,
    to_backend TEXT NOT NULL,
    state TEXT NOT NULL,
    high_water BIGINT NOT NULL DEFAULT 0,
    rows_copied BIGINT NOT NULL DEFAULT 0,
    rows_total BIGINT NOT NULL DEFAULT 0,
    lag BIGINT,
    pause_ms DOUBLE PRECISION,
    verified BIGINT NOT NULL DEFAULT 0,
    frozen_at TIMESTAMPTZ,
    error TEXT,
    switched_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (move_id, shard));
CREATE UNIQUE INDEX IF NOT EXISTS move_shards_one_in_flight ON mezzanine.move_shards (shard)
    WHERE state IN ('pending', 'copying', 'catching_up', 'cutover');
CREATE TABLE IF NOT EXISTS mezzanine.audit (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    node TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail JSONB NOT NULL);
CREATE TABLE IF NOT EXISTS mezzanine.leader (
    id INT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    node_id TEXT NOT NULL,
    addr TEXT NOT NULL,
    pid INT NOT NULL,
    since TIMESTAMPTZ NOT NULL DEFAULT now());
ALTER TABLE mezzanine.meta ADD COLUMN IF NOT EXISTS schema_version INT NOT NULL DEFAULT 1;
ALTER TABLE mezzanine.backends ADD COLUMN IF NOT EXISTS weight DOUBLE PRECISION NOT NULL DEFAULT 1
    CHECK (weight > 0 AND weight < 'Infinity');
ALTER TABLE mezzanine.backends ADD COLUMN IF NOT EXISTS draining BOOLEAN NOT NULL DEFAULT false;
CREATE TABLE IF NOT EXISTS mezzanine.rebalances (
    id BIGSERIAL PRIMARY KEY,
    strategy TEXT NOT NULL,
    drain TEXT,
    parallel INT NOT NULL,
    max_rows_per_sec BIGINT,
    auto_complete BOOLEAN NOT NULL,
    plan JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now());
ALTER TABLE mezzanine.moves ADD COLUMN IF NOT EXISTS rebalance_id BIGINT REFERENCES mezzanine.rebalances (id);
ALTER TABLE mezzanine.moves ADD COLUMN IF NOT EXISTS auto_complete BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE mezzanine.move_shards ADD COLUMN IF NOT EXISTS started_at TIMESTAMPTZ;
ALTER TABLE mezzanine.move_shards ADD COLUMN IF NOT EXISTS fence_target BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS move_shards_fence ON mezzanine.move_shards (shard) WHERE fence_target;
ALTER TABLE mezzanine.meta ADD COLUMN IF NOT EXISTS cluster_id UUID;
ALTER TABLE mezzanine.leader ADD COLUMN IF NOT EXISTS term BIGINT NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS mezzanine.plugins (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    subscribed_columns TEXT[] NOT NULL,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now());
ALTER TABLE mezzanine.meta ADD COLUMN IF NOT EXISTS plugins_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE mezzanine.meta ADD COLUMN IF NOT EXISTS go_plugins_imported_at TIMESTAMPTZ;
ALTER TABLE mezzanine.plugins ADD COLUMN IF NOT EXISTS deliver_from TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE mezzanine.plugins ADD COLUMN IF NOT EXISTS paused BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE mezzanine.plugins ADD COLUMN IF NOT EXISTS delivery_state TEXT NOT NULL DEFAULT 'delivering'
    CHECK (delivery_state IN ('delivering', 'backing_off'));
ALTER TABLE mezzanine.plugins ADD COLUMN IF NOT EXISTS last_error TEXT;
ALTER TABLE mezzanine.plugins ADD COLUMN IF NOT EXISTS last_error_at TIMESTAMPTZ;
CREATE TABLE IF NOT EXISTS mezzanine.plugin_offsets (
    plugin_id UUID NOT NULL REFERENCES mezzanine.plugins (id) ON DELETE CASCADE,
    shard INT NOT NULL CHECK (shard >= 0),
    delivered_upto BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (plugin_id, shard));
CREATE TABLE IF NOT EXISTS mezzanine.plugin_parked (
    plugin_id UUID NOT NULL REFERENCES mezzanine.plugins (id) ON DELETE CASCADE,
    shard INT NOT NULL CHECK (shard >= 0),
    added_id BIGINT NOT NULL,
    row_key UUID NOT NULL,
    column_name TEXT NOT NULL,
    attempts INT NOT NULL,
    error TEXT NOT NULL,
    parked_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    replay_requested BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (plugin_id, shard, added_id));";

/// The name of the CHECK constraint on `mezzanine.move_shards.state` (layout 4).
pub(crate) const MOVE_STATE_CHECK: &str = "move_shards_state_known";

/// The catalog's DDL: [`DDL`], then what needs values from the code: the CHECK constraint of
/// the move states ([`ShardMoveState::ALL`]; added only if missing: `ADD CONSTRAINT` has no
/// `IF NOT EXISTS`), and the layout's version. Idempotent, like every line of it.
///
/// A change of [`ShardMoveState::ALL`] needs a new layout version that replaces the
/// constraint (an existing one is kept as it is).
fn ddl() -> String {
    let states: Vec<String> = ShardMoveState::ALL
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!(
        "{DDL}
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = '{MOVE_STATE_CHECK}'
                   AND conrelid = 'mezzanine.move_shards'::regclass) THEN
        ALTER TABLE mezzanine.move_shards ADD CONSTRAINT {MOVE_STATE_CHECK}
            CHECK (state IN ({states}));
    END IF;
END $$;
UPDATE mezzanine.meta SET schema_version = {SCHEMA_VERSION}
    WHERE schema_version < {SCHEMA_VERSION} AND cluster_id IS NOT NULL;",
        states = states.join(", ")
    )
}

/// The version of the catalog's layout; an older catalog is migrated at start-up. 4: the
/// leader's term (`leader.term`), the CHECK of the move states. 5: plugins
/// (`mezzanine.plugins`, `meta.plugins_version`, `meta.go_plugins_imported_at`). 6: plugin
/// delivery (`plugins.deliver_from`, `paused`, `delivery_state`, `last_error[_at]`; the
/// offsets `mezzanine.plugin_offsets` and the dead letters `mezzanine.plugin_parked`).
pub const SCHEMA_VERSION: i32 = 6;

impl Catalog {
    /// Creates the catalog if it does not exist and seeds it from `seed` (`shards.json`); if
    /// it exists, checks `num_shards` and reports where `seed` disagrees with it. Returns the
    /// map too. When the catalog exists this is one statement (no lock, no DDL).
    pub async fn ensure(
        &self,
        num_shards: u32,
        seed: &ShardMap,
    ) -> Result<(EnsureReport, MapSnapshot), CatalogError> {
        self.ensure_member(num_shards, seed, &cluster::Membership::default())
            .await
    }

    /// [`Catalog::ensure`] for a node whose backends say `members` (which cluster they
    /// belong to): a catalog is seeded only when none belongs to one and every one answered,
    /// and the catalog's cluster id must be theirs ([`CatalogError::Cluster`] otherwise).
    pub async fn ensure_member(
        &self,
        num_shards: u32,
        seed: &ShardMap,
        members: &cluster::Membership,
    ) -> Result<(EnsureReport, MapSnapshot), CatalogError> {
        let (report, snap) = self.ensure_inner(num_shards, seed, members).await?;
        members.check_catalog(&report.cluster_id, self)?;
        let _ = self.cluster_id.set(report.cluster_id.clone());
        Ok((report, snap))
    }

    async fn ensure_inner(
        &self,
        num_shards: u32,
        seed: &ShardMap,
        members: &cluster::Membership,
    ) -> Result<(EnsureReport, MapSnapshot), CatalogError> {
        let mut lease = self.lease().await?;
        match self.load_on(&lease).await {
            Ok(Some((snap, schema, Some(cluster_id)))) if schema >= SCHEMA_VERSION => {
                check_num_shards(&snap.map, num_shards)?;
                let report = EnsureReport {
                    seeded: false,
                    differences: differences(seed, &snap.map),
                    cluster_id,
                };
                return Ok((report, snap));
            }
            Ok(Some(_)) => {} // of an older layout
            // Set up and never seeded, or none yet (no table, no schema): refused before any
            // DDL when it may not be seeded here.
            Ok(None) => members.may_seed(self)?,
            Err(CatalogError::Storage(e))
                if e.is(&SqlState::UNDEFINED_TABLE) || e.is(&SqlState::INVALID_SCHEMA_NAME) =>
            {
                members.may_seed(self)?
            }
            // An older layout (a missing column).
            Err(CatalogError::Storage(e)) if e.is(&SqlState::UNDEFINED_COLUMN) => {}
            Err(e) => return Err(e),
        }
        lease.extend(Duration::from_secs(60));
        lease
            .query("SELECT pg_advisory_lock($1)", &[(&SETUP_LOCK, Type::INT8)])
            .await?;
        let result = self.ensure_locked(&lease, num_shards, seed, members).await;
        let unlock = lease
            .query(
                "SELECT pg_advisory_unlock($1)",
                &[(&SETUP_LOCK, Type::INT8)],
            )
            .await;
        let mut report = result?;
        unlock?;
        let (snap, _, cluster_id) = self.load_on(&lease).await?.ok_or_else(no_meta)?;
        report.cluster_id =
            cluster_id.ok_or_else(|| CatalogError::Corrupt("no cluster id".into()))?;
        Ok((report, snap))
    }

    async fn ensure_locked(
        &self,
        lease: &Lease<'_>,
        num_shards: u32,
        seed: &ShardMap,
        members: &cluster::Membership,
    ) -> Result<EnsureReport, CatalogError> {
        lease.batch_execute(&ddl()).await?;
        // A catalog laid out before cluster ids gets one now.
        let new_id = uuid::Uuid::new_v4().to_string();
        lease
            .query(
                "UPDATE mezzanine.meta SET cluster_id = $1::text::uuid, schema_version = $2 \
                 WHERE cluster_id IS NULL",
                &[(&new_id, Type::TEXT), (&SCHEMA_VERSION, Type::INT4)],
            )
            .await?;
        // Another node may have seeded it while this one waited for the lock.
        if let Some((current, _, _)) = self.load_on(lease).await? {
            check_num_shards(&current.map, num_shards)?;
            return Ok(EnsureReport {
                seeded: false,
                differences: differences(seed, &current.map),
                cluster_id: String::new(),
            });
        }
        members.may_seed(self)?;
        let names: Vec<&str> = seed.backends().iter().map(|b| b.name.as_str()).collect();
        let urls: Vec<&str> = seed
            .backends()
            .iter()
            .map(|b| b.database_url.as_str())
            .collect();
        let shards: Vec<i32> = (0..num_shards as i32).collect();
        let owners: Vec<&str> = (0..num_shards)
            .map(|s| seed.owner_name(s).unwrap_or_default())
            .collect();
        let n = num_shards as i32;
        let detail = serde_json::json!({"from": "shards.json", "num_shards": num_shards, "backends": names, "cluster_id": new_id});
        lease.batch_execute("BEGIN").await?;
        let seeded = async {
            lease
                .query(
                    "INSERT INTO mezzanine.backends (name, url) SELECT * FROM unnest($1::text[], $2::text[])",
                    &[(&names, Type::TEXT_ARRAY), (&urls, Type::TEXT_ARRAY)],
                )
                .await?;
            lease
                .query(
                    "INSERT INTO mezzanine.shards (shard, backend) SELECT * FROM unnest($1::int4[], $2::text[])",
                    &[(&shards, Type::INT4_ARRAY), (&owners, Type::TEXT_ARRAY)],
                )
                .await?;
            lease
                .query(
                    "INSERT INTO mezzanine.meta (num_shards, map_version, schema_version, cluster_id) \
                     VALUES ($1, 1, $2, $3::text::uuid)",
                    &[(&n, Type::INT4), (&SCHEMA_VERSION, Type::INT4), (&new_id, Type::TEXT)],
                )
                .await?;
            audit(lease, &self.node, "seed", &detail).await?;
            Ok::<(), CatalogError>(())
        }
        .await;
        crate::commit_if_ok(lease, seeded, || async { Ok(()) }).await?;
        Ok(EnsureReport {
            seeded: true,
            differences: Vec::new(),
            cluster_id: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Request;

    #[test]
    fn the_checks_name_every_value_the_code_writes() {
        let ddl = ddl();
        for s in ShardMoveState::ALL {
            assert!(ddl.contains(&format!("'{}'", s.as_str())), "{s}");
        }
        assert!(ddl.contains(MOVE_STATE_CHECK));
        let requested = format!(
            "requested TEXT CHECK (requested IN ('{}', '{}'))",
            Request::Abort.as_str(),
            Request::Complete.as_str()
        );
        assert!(ddl.contains(&requested), "{requested}");
        assert_eq!(Request::ALL.len(), 2);
        assert!(ddl.contains(&format!("SET schema_version = {SCHEMA_VERSION}")));
    }
}
