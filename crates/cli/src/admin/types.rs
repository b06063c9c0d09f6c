//! The admin API's answers as this client reads them. Decoding is tolerant: unknown fields are
//! ignored and every field but a job's `id` may be absent. Plain structs only (no untagged or
//! internally tagged enums, which buffer numbers and break under serde_json's
//! `arbitrary_precision`).

use serde::Deserialize;

/// `GET /admin/v1/shards`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ShardMap {
    pub num_shards: Option<u64>,
    pub version: Option<u64>,
    pub ranges: Vec<ShardRange>,
}

/// A run of consecutive shards with the same backend and state.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ShardRange {
    pub start: u64,
    pub end: u64,
    pub backend: String,
    pub state: String,
}

/// `GET /admin/v1/backends`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BackendList {
    pub backends: Vec<Backend>,
}

/// A backend; `url` comes masked from the server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Backend {
    pub name: String,
    pub url: String,
    pub weight: Option<f64>,
    pub draining: Option<bool>,
    pub shards: Option<u64>,
    pub up: Option<bool>,
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
}

/// `GET /admin/v1/moves`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MoveList {
    pub moves: Vec<Job>,
}

/// A move job.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    pub id: u64,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub shards_spec: Option<String>,
    #[serde(default)]
    pub parallel: Option<u64>,
    #[serde(default)]
    pub max_rows_per_sec: Option<u64>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// An operator's request the mover has not carried out yet: `abort` or `complete`.
    #[serde(default)]
    pub requested: Option<String>,
    #[serde(default)]
    pub reverts: Option<u64>,
    #[serde(default)]
    pub shards: Vec<ShardMove>,
}

impl Job {
    /// Still copying or catching up: `--wait` keeps polling.
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }

    /// Ended in a way `--wait` reports as a failure.
    pub fn is_failure(&self) -> bool {
        matches!(self.state.as_str(), "failed" | "aborted")
    }

    /// Shards switched (the target serves them) and not cleaned yet.
    pub fn switched_shards(&self) -> usize {
        self.shards.iter().filter(|s| s.state == "switched").count()
    }
}

/// One shard of a move job.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ShardMove {
    pub shard: u64,
    pub from: Option<String>,
    pub to: Option<String>,
    pub state: String,
    pub rows_copied: Option<u64>,
    pub rows_total: Option<u64>,
    pub lag: Option<u64>,
    pub pause_ms: Option<f64>,
    pub error: Option<String>,
    /// The target's copy is still to be fenced once the target answers.
    pub fence_pending: bool,
}

/// `POST /admin/v1/verify`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct VerifyReport {
    pub ok: bool,
    pub shards: Vec<ShardVerify>,
}

/// The comparison of one shard's copies.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ShardVerify {
    pub shard: u64,
    pub owner: Option<String>,
    pub ok: bool,
    pub copies: Vec<Copy>,
    pub differences: Vec<Difference>,
    pub more: bool,
    pub problems: Vec<String>,
}

/// One backend's copy of a shard.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Copy {
    pub backend: String,
    pub state: Option<String>,
    pub rows: Option<u64>,
    pub checksum: Option<String>,
}

/// A cell that differs between copies: `missing` (on `backend`) or `changed` (in `columns`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Difference {
    pub kind: String,
    pub backend: Option<String>,
    pub added_id: Option<u64>,
    pub columns: Vec<String>,
}

/// `GET /admin/v1/status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Status {
    pub node: Option<Node>,
    pub leader: Option<Node>,
    pub map_version: Option<u64>,
    /// The cluster's id (made with the catalog, recorded in every backend).
    pub cluster_id: Option<String>,
    /// Who may use the APIs (`admin_api`, `data_api`: sentences; `tokens`: names).
    pub auth: Option<AuthStatus>,
    /// Whether the node speaks HTTPS (absent from older nodes).
    pub tls: Option<TlsStatus>,
    /// What the operator should know (an admin API open to anyone, a bad token file).
    pub warnings: Vec<String>,
}

/// The `auth` of the status.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthStatus {
    pub tokens: Vec<String>,
    pub admin_api: Option<String>,
    pub data_api: Option<String>,
}

/// The `tls` of the status.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TlsStatus {
    pub enabled: bool,
    /// `required` or `not asked for`.
    pub client_certificates: Option<String>,
}

/// A server node; `mover` is only in `node`, `term` (the leadership's) only in `leader`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Node {
    pub id: String,
    pub addr: String,
    pub mover: Option<bool>,
    pub term: Option<i64>,
}

/// `POST /admin/v1/reload`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Reloaded {
    pub map_version: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_documented_job_and_ignores_unknown_fields() {
        let job: Job = serde_json::from_str(
            r#"{"id": 7, "state": "running", "to": "db3", "shards_spec": "8-15", "parallel": 4,
                "max_rows_per_sec": null, "created_at": "t0", "updated_at": "t1", "error": null,
                "reverts": null, "future": {"x": 1},
                "shards": [{"shard": 8, "from": "db1", "to": "db3", "state": "copying",
                            "rows_copied": 1200, "rows_total": 5000, "lag": 30,
                            "pause_ms": 12.5, "error": null}]}"#,
        )
        .unwrap();
        assert_eq!(job.id, 7);
        assert!(job.is_running());
        assert_eq!(job.shards[0].rows_total, Some(5000));
        assert_eq!(job.shards[0].pause_ms, Some(12.5));
    }

    #[test]
    fn a_minimal_job_decodes() {
        let job: Job = serde_json::from_str(r#"{"id": 1}"#).unwrap();
        assert!(job.shards.is_empty());
        assert!(!job.is_running() && !job.is_failure());
        assert!(serde_json::from_str::<Job>(r#"{"state": "running"}"#).is_err());
    }

    #[test]
    fn decodes_both_kinds_of_difference() {
        let v: VerifyReport = serde_json::from_str(
            r#"{"ok": false, "shards": [{"shard": 8, "owner": "db3", "ok": false,
                "copies": [{"backend": "db1", "state": "retired", "rows": 10, "checksum": "ab"}],
                "differences": [{"kind": "missing", "backend": "db3", "added_id": 42},
                                {"kind": "changed", "added_id": 43, "columns": ["body"]}],
                "more": false, "problems": ["p"]}]}"#,
        )
        .unwrap();
        let d = &v.shards[0].differences;
        assert_eq!(d[0].backend.as_deref(), Some("db3"));
        assert_eq!(d[1].columns, ["body"]);
    }

    #[test]
    fn a_null_leader_decodes() {
        let s: Status =
            serde_json::from_str(r#"{"node": {"id": "a", "addr": "h:1", "mover": true}, "leader": null, "map_version": 3}"#)
                .unwrap();
        assert!(s.leader.is_none());
        assert_eq!(s.node.map(|n| n.addr), Some("h:1".to_owned()));
    }
}
