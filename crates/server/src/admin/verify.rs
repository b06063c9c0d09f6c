//! `POST /admin/v1/verify` `{shards: "8-15"}`: compares every copy of each shard with its
//! owner's, row by row (like Vitess VDiff), and checks each copy's own invariants.
//!
//! The owner's copy (active, or frozen during a cutover) must be sound on its own. Another
//! copy (a retired source kept until `move complete`, or a target being filled) is compared
//! with the owner over the `added_id` range both should hold: up to the smaller of their
//! highest `added_id`s (a retired source stops at its switch; a target fills up). Every row
//! missing on one side or different in any column is listed, up to a cap.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mezzanine_storage::transfer::{self, Difference, ShardState, Side};
use mezzanine_storage::Backend;
use serde::Serialize;

use super::{object, shards_field};
use crate::api::read_text_json;
use crate::problem::Problem;
use crate::AppState;

/// Differences reported per shard at most.
const MAX_DIFFERENCES: usize = 100;

#[derive(Serialize)]
struct Copy {
    backend: String,
    state: Option<&'static str>,
    epoch: Option<i64>,
    rows: i64,
    max_added_id: i64,
    checksum: String,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Diff {
    Missing {
        backend: String,
        added_id: i64,
    },
    Changed {
        backend: String,
        added_id: i64,
        columns: Vec<&'static str>,
    },
}

#[derive(Serialize)]
struct ShardReport {
    shard: u32,
    owner: String,
    ok: bool,
    copies: Vec<Copy>,
    differences: Vec<Diff>,
    more: bool,
    problems: Vec<String>,
}

/// The handler.
pub async fn verify(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let v = object(
        read_text_json(&headers, body, st.config.max_body_bytes)?,
        &["shards"],
    )?;
    let (_, shards) = shards_field(&v, st.num_shards())?;
    // The topology of this moment (an Arc: no guard is held across the awaits below).
    let topo = Arc::clone(&st.topology());
    let backends: Vec<Arc<Backend>> = topo.backends.iter().map(|s| s.backend.clone()).collect();
    let mut reports = Vec::with_capacity(shards.len());
    for shard in shards {
        let owner = topo.map.owner_name(shard).unwrap_or_default().to_owned();
        reports.push(verify_shard(shard, &owner, &backends).await);
    }
    let ok = reports.iter().all(|r| r.ok);
    Ok(Json(serde_json::json!({ "ok": ok, "shards": reports })).into_response())
}

async fn verify_shard(shard: u32, owner: &str, backends: &[Arc<Backend>]) -> ShardReport {
    let mut report = ShardReport {
        shard,
        owner: owner.to_owned(),
        ok: false,
        copies: Vec::new(),
        differences: Vec::new(),
        more: false,
        problems: Vec::new(),
    };
    // Each backend's copy, if it has one.
    let mut holders: Vec<(&Arc<Backend>, i64)> = Vec::new();
    let mut owner_copy: Option<(&Arc<Backend>, i64)> = None;
    for b in backends {
        let check = match transfer::self_check(b, shard).await {
            Ok(c) => c,
            Err(e) => {
                report
                    .problems
                    .push(format!("backend {}: cannot check: {e}", b.name()));
                continue;
            }
        };
        if check.state.is_none() && !check.table_exists {
            if b.name() == owner {
                report
                    .problems
                    .push(format!("the owner {owner} holds no copy of shard {shard}"));
            }
            continue;
        }
        let sum = match transfer::checksum(b, shard, 0, i64::MAX).await {
            Ok(c) => c.sum.to_string(),
            Err(e) => {
                report
                    .problems
                    .push(format!("backend {}: checksum failed: {e}", b.name()));
                String::new()
            }
        };
        for v in &check.violations {
            report.problems.push(format!("backend {}: {v}", b.name()));
        }
        let state = check.state.map(|(s, _)| s);
        if b.name() == owner {
            if !matches!(state, Some(ShardState::Active) | Some(ShardState::Frozen)) {
                report.problems.push(format!(
                    "the owner {owner} marks shard {shard} {} instead of active",
                    state.map_or("absent", |s| s.as_str())
                ));
            }
            owner_copy = Some((b, check.max_added_id));
        } else {
            if state == Some(ShardState::Active) {
                report.problems.push(format!(
                    "backend {} also marks shard {shard} active, but the map gives it to {owner}",
                    b.name()
                ));
            }
            holders.push((b, check.max_added_id));
        }
        report.copies.push(Copy {
            backend: b.name().to_owned(),
            state: state.map(|s| s.as_str()),
            epoch: check.state.map(|(_, e)| e),
            rows: check.rows,
            max_added_id: check.max_added_id,
            checksum: sum,
        });
    }
    if let Some((o, o_max)) = owner_copy {
        for (b, b_max) in holders {
            let upto = o_max.min(b_max);
            match transfer::diff(
                o,
                b,
                shard,
                0,
                upto,
                MAX_DIFFERENCES
                    .saturating_sub(report.differences.len())
                    .max(1),
            )
            .await
            {
                Ok(d) => {
                    report.more |= d.more;
                    for x in d.differences {
                        report.differences.push(match x {
                            Difference::MissingOn { side, added_id } => Diff::Missing {
                                backend: match side {
                                    Side::A => o.name().to_owned(),
                                    Side::B => b.name().to_owned(),
                                },
                                added_id,
                            },
                            Difference::Changed { added_id, columns } => Diff::Changed {
                                backend: b.name().to_owned(),
                                added_id,
                                columns,
                            },
                        });
                    }
                }
                Err(e) => report.problems.push(format!(
                    "cannot compare {} with {}: {e}",
                    b.name(),
                    o.name()
                )),
            }
        }
    }
    report.ok = report.problems.is_empty() && report.differences.is_empty() && !report.more;
    report
}
