//! Operating plugins (`/admin/v1/plugins…`, issue 17 point 4): each plugin's delivery as the
//! deliverer records it in the catalog, its lag computed on demand, and the operator's
//! changes (pause, resume, replay or drop parked events), by plugin name. Any node answers:
//! the state is the catalog's ([`mezzanine_catalog::plugin_ops`]), the lag each shard's owner's
//! ([`mezzanine_storage::stream_lag`]). None of it ever shows in `/v1/plugins`' answers (the
//! Go client refuses unknown fields).
//!
//! The lag of a plugin: for every shard, the first cell after its offset (or, in a shard it
//! has no offset for yet, the first created at or after its `deliver_from`) and the shard's
//! highest `added_id`, one statement per shard for all the plugins asked about, at most
//! [`PROBES_AT_ONCE`] shards at a time. A shard whose owner does not answer is counted in
//! `shards_unknown` and left out of the figures rather than failing the answer.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use mezzanine_catalog::{ParkedEvent, PluginDelivery};
use mezzanine_core::plugin::MAX_PLUGIN_NAME_BYTES;
use mezzanine_core::plugin_ops::{EventId, Lag, PluginState, ShardProbe};
use mezzanine_core::FieldError;
use mezzanine_storage::stream_lag::{probe, StreamStart};
use serde_json::{json, Value};

use super::{limit_param, object};
use crate::api::{path_problem, read_text_json};
use crate::problem::Problem;
use crate::AppState;

pub mod openapi;

/// Shards probed at the same time for one answer (each probe holds one connection of its
/// shard's backend for one statement).
pub const PROBES_AT_ONCE: usize = 16;

/// The parked list's page size when `limit` is not given.
const PARKED_PAGE: i64 = 100;

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// One shard's probe for every plugin asked about (same order), or why it failed.
type ShardResult = Result<Vec<ShardProbe>, String>;

/// Where each plugin's undelivered events of `shard` begin.
fn starts(
    plugins: &[PluginDelivery],
    offsets: &[HashMap<u32, i64>],
    shard: u32,
) -> Vec<StreamStart> {
    plugins
        .iter()
        .zip(offsets)
        .map(|(p, o)| match o.get(&shard) {
            Some(&upto) => StreamStart::After(upto),
            None => StreamStart::Since(p.deliver_from),
        })
        .collect()
}

/// Probes every shard for `plugins` (bounded concurrency); in shard order.
async fn probe_all(st: &AppState, plugins: &[PluginDelivery]) -> Vec<ShardResult> {
    if plugins.is_empty() {
        return Vec::new();
    }
    let offsets: Vec<HashMap<u32, i64>> = plugins
        .iter()
        .map(|p| {
            p.offsets
                .iter()
                .map(|o| (o.shard, o.delivered_upto))
                .collect()
        })
        .collect();
    let offsets = &offsets;
    let mut results: Vec<(u32, ShardResult)> = futures::stream::iter(0..st.num_shards())
        .map(|shard| async move {
            let starts = starts(plugins, offsets, shard);
            let r = st
                .on_shard(shard, |b| {
                    let starts = starts.clone();
                    async move { probe(&b, shard, &starts).await }
                })
                .await
                .map_err(|p| p.detail);
            (shard, r)
        })
        .buffer_unordered(PROBES_AT_ONCE)
        .collect()
        .await;
    results.sort_by_key(|(s, _)| *s);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Plugin `i`'s probe of each shard.
fn shard_probes(
    probes: &[ShardResult],
    i: usize,
) -> impl Iterator<Item = Result<&ShardProbe, &str>> {
    probes.iter().map(move |r| match r {
        Ok(v) => v.get(i).ok_or("no probe"),
        Err(e) => Err(e.as_str()),
    })
}

fn lag_of(probes: &[ShardResult], i: usize) -> Lag {
    let mut lag = Lag::default();
    for p in shard_probes(probes, i) {
        lag.add(p.ok());
    }
    lag
}

fn lag_view(lag: &Lag) -> Value {
    json!({
        "events_behind": lag.events_behind,
        "oldest_undelivered_age_seconds": lag.oldest_undelivered_age_seconds,
        "shards_unknown": lag.shards_unknown,
    })
}

/// A plugin as the list shows it.
fn plugin_view(p: &PluginDelivery, lag: &Lag) -> Value {
    json!({
        "id": p.plugin.id,
        "name": p.plugin.name,
        "endpoint": p.plugin.endpoint,
        "subscribed_columns": p.plugin.subscribed_columns,
        "status": p.plugin.status,
        "created_at": time(&p.plugin.created_at),
        "deliver_from": time(&p.deliver_from),
        "state": PluginState::of(p.paused, &p.delivery_state).as_str(),
        "last_error": p.last_error,
        "last_error_at": p.last_error_at.as_ref().map(time),
        "parked": p.parked,
        "lag": lag_view(lag),
    })
}

/// A plugin with each shard's offset and lag.
fn plugin_detail(st: &AppState, p: &PluginDelivery, probes: &[ShardResult]) -> Value {
    let mut v = plugin_view(p, &lag_of(probes, 0));
    let offsets: HashMap<u32, &mezzanine_catalog::Offset> =
        p.offsets.iter().map(|o| (o.shard, o)).collect();
    let shards: Vec<Value> = (0..st.num_shards())
        .zip(shard_probes(probes, 0))
        .map(|(shard, probe)| {
            let o = offsets.get(&shard);
            let (behind, age, error) = match probe {
                Ok(p) => (Some(p.events_behind()), p.oldest_age_seconds(), None),
                Err(e) => (None, None, Some(e)),
            };
            json!({
                "shard": shard,
                "delivered_upto": o.map(|o| o.delivered_upto),
                "updated_at": o.map(|o| time(&o.updated_at)),
                "events_behind": behind,
                "oldest_undelivered_age_seconds": age,
                "error": error,
            })
        })
        .collect();
    v["offsets"] = Value::Array(shards);
    v
}

/// The `{name}` of a plugin's path. A name no plugin can have (a NUL character, more than
/// 255 bytes) names no plugin: 404.
fn plugin_in_path(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    let Path(name) = path.map_err(path_problem)?;
    if name.is_empty() || name.contains('\0') || name.len() > MAX_PLUGIN_NAME_BYTES {
        return Err(Problem::not_found(format!(
            "no plugin named {name:?}: a plugin's name is 1 to 255 bytes without NUL"
        )));
    }
    Ok(name)
}

/// `GET /admin/v1/plugins`: every plugin with its state, last error, parked count and lag.
pub async fn list(State(st): State<Arc<AppState>>) -> Result<Response, Problem> {
    let plugins = st.catalog.plugin_deliveries().await?;
    let probes = probe_all(&st, &plugins).await;
    let views: Vec<Value> = plugins
        .iter()
        .enumerate()
        .map(|(i, p)| plugin_view(p, &lag_of(&probes, i)))
        .collect();
    Ok(Json(json!({ "plugins": views })).into_response())
}

async fn detail(st: &AppState, name: &str) -> Result<Value, Problem> {
    let p = st.catalog.plugin_delivery(name).await?;
    let one = std::slice::from_ref(&p);
    let probes = probe_all(st, one).await;
    Ok(plugin_detail(st, &p, &probes))
}

/// `GET /admin/v1/plugins/{name}`: the same as the list's, with each shard's offset and lag.
pub async fn get_one(
    State(st): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let name = plugin_in_path(path)?;
    Ok(Json(detail(&st, &name).await?).into_response())
}

/// `POST /admin/v1/plugins/{name}/pause`: the deliverer stops calling it (until resumed).
pub async fn pause(
    State(st): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    set_paused(st, path, true).await
}

/// `POST /admin/v1/plugins/{name}/resume`.
pub async fn resume(
    State(st): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    set_paused(st, path, false).await
}

async fn set_paused(
    st: Arc<AppState>,
    path: Result<Path<String>, PathRejection>,
    paused: bool,
) -> Result<Response, Problem> {
    let name = plugin_in_path(path)?;
    st.catalog.set_plugin_paused(&name, paused).await?;
    Ok(Json(detail(&st, &name).await?).into_response())
}

/// The `after` query parameter: `SHARD:ADDED_ID`.
fn after_param(q: Option<&str>) -> Result<Option<EventId>, Problem> {
    let found = url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "after")
        .map(|(_, v)| v.into_owned());
    let Some(v) = found else { return Ok(None) };
    v.parse::<EventId>().map(Some).map_err(|e| {
        Problem::field(FieldError::new(
            "query.after",
            e.to_string(),
            Some(Value::String(v)),
        ))
    })
}

fn parked_view(e: &ParkedEvent) -> Value {
    json!({
        "id": EventId { shard: e.shard, added_id: e.added_id }.to_string(),
        "shard": e.shard,
        "added_id": e.added_id,
        "row_key": e.row_key,
        "column_name": e.column_name,
        "attempts": e.attempts,
        "error": e.error,
        "parked_at": time(&e.parked_at),
        "replay_requested": e.replay_requested,
    })
}

/// `GET /admin/v1/plugins/{name}/parked?limit=&after=SHARD:ADDED_ID`: a page of parked
/// events in `(shard, added_id)` order; `next` is the `after` of the next page (null on the
/// last).
pub async fn parked(
    State(st): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Response, Problem> {
    let name = plugin_in_path(path)?;
    let limit = limit_param(q.as_deref(), PARKED_PAGE)?;
    let after = after_param(q.as_deref())?;
    let events = st.catalog.parked_events(&name, limit, after).await?;
    let full = i64::try_from(events.len()).unwrap_or(i64::MAX) >= limit;
    let next = events.last().filter(|_| full).map(|e| {
        EventId {
            shard: e.shard,
            added_id: e.added_id,
        }
        .to_string()
    });
    let views: Vec<Value> = events.iter().map(parked_view).collect();
    Ok(Json(json!({"plugin": name, "parked": views, "next": next})).into_response())
}

/// Which parked events a replay or a drop is about: `{"all": true}` (`None`) or
/// `{"shard": N, "added_id": M}`.
fn target(v: Value, num_shards: u32) -> Result<Option<EventId>, Problem> {
    let v = object(v, &["all", "shard", "added_id"])?;
    let field = |name: &str, message: String, value: Option<&Value>| {
        Problem::field(FieldError::new(
            format!("body.{name}"),
            message,
            value.cloned(),
        ))
    };
    let forms = "give {\"all\": true} or {\"shard\": N, \"added_id\": M}";
    let (all, shard, added_id) = (v.get("all"), v.get("shard"), v.get("added_id"));
    if let Some(a) = all {
        if a != &Value::Bool(true) {
            return Err(field(
                "all",
                "must be true (to name one event, give shard and added_id instead)".into(),
                Some(a),
            ));
        }
        if shard.is_some() || added_id.is_some() {
            return Err(Problem::field(FieldError::new(
                "body",
                format!("{forms}, not both"),
                None,
            )));
        }
        return Ok(None);
    }
    let (Some(s), Some(a)) = (shard, added_id) else {
        let missing = if shard.is_none() && added_id.is_some() {
            "body.shard"
        } else if added_id.is_none() && shard.is_some() {
            "body.added_id"
        } else {
            "body"
        };
        return Err(Problem::field(FieldError::new(
            missing,
            format!("is required: {forms}"),
            None,
        )));
    };
    let shard = s
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n < num_shards)
        .ok_or_else(|| {
            field(
                "shard",
                format!(
                    "must be a shard number from 0 to {}",
                    num_shards.saturating_sub(1)
                ),
                Some(s),
            )
        })?;
    let added_id = a
        .as_i64()
        .filter(|&n| n >= 0)
        .ok_or_else(|| field("added_id", "must be a non-negative integer".into(), Some(a)))?;
    Ok(Some(EventId { shard, added_id }))
}

/// The plugin named in the path and the parked events a replay or a drop is about (`None`:
/// all of them), from its body `{"all": true}` or `{"shard", "added_id"}`.
fn name_and_target(
    st: &AppState,
    path: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, Option<EventId>), Problem> {
    let name = plugin_in_path(path)?;
    let event = target(
        read_text_json(headers, body, st.config.max_body_bytes)?,
        st.num_shards(),
    )?;
    Ok((name, event))
}

/// `POST /admin/v1/plugins/{name}/replay` `{"all": true}` or `{"shard", "added_id"}` → 202
/// with how many parked events are marked for the deliverer to send again.
pub async fn replay(
    State(st): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (name, event) = name_and_target(&st, path, &headers, body)?;
    let n = st.catalog.request_replay(&name, event).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"plugin": name, "marked": n})),
    )
        .into_response())
}

/// `DELETE /admin/v1/plugins/{name}/parked` `{"all": true}` or `{"shard", "added_id"}` → 200
/// with how many parked events were removed.
pub async fn drop_parked(
    State(st): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (name, event) = name_and_target(&st, path, &headers, body)?;
    let n = st.catalog.drop_parked(&name, event).await?;
    Ok(Json(json!({"plugin": name, "dropped": n})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn refused_at(r: Result<Option<EventId>, Problem>, at: &str) {
        let p = r.unwrap_err();
        assert_eq!(p.status, 422, "{p:?}");
        assert_eq!(p.errors[0].location, at, "{p:?}");
    }

    #[test]
    fn targets_are_all_or_one_event() {
        assert_eq!(target(json!({"all": true}), 8).unwrap(), None);
        assert_eq!(
            target(json!({"shard": 7, "added_id": 42}), 8).unwrap(),
            Some(EventId {
                shard: 7,
                added_id: 42
            })
        );
        refused_at(target(json!({"all": false}), 8), "body.all");
        refused_at(target(json!({"all": "yes"}), 8), "body.all");
        refused_at(target(json!({"all": true, "shard": 1}), 8), "body");
        refused_at(target(json!({}), 8), "body");
        refused_at(target(json!({"shard": 1}), 8), "body.added_id");
        refused_at(target(json!({"added_id": 1}), 8), "body.shard");
        refused_at(target(json!({"shard": 8, "added_id": 1}), 8), "body.shard");
        refused_at(target(json!({"shard": -1, "added_id": 1}), 8), "body.shard");
        refused_at(
            target(json!({"shard": 1, "added_id": -1}), 8),
            "body.added_id",
        );
        refused_at(
            target(json!({"shard": 1, "added_id": 1.5}), 8),
            "body.added_id",
        );
        refused_at(
            target(json!({"shard": 1, "added_id": 1, "x": 1}), 8),
            "body.x",
        );
        refused_at(target(json!([1]), 8), "body");
    }

    #[test]
    fn after_reads_shard_colon_added_id() {
        assert_eq!(after_param(None).unwrap(), None);
        assert_eq!(after_param(Some("limit=5")).unwrap(), None);
        assert_eq!(
            after_param(Some("limit=5&after=3%3A17")).unwrap(),
            Some(EventId {
                shard: 3,
                added_id: 17
            })
        );
        let p = after_param(Some("after=3-17")).unwrap_err();
        assert_eq!(
            (p.status, p.errors[0].location.as_str()),
            (422, "query.after")
        );
    }

    #[test]
    fn names_no_plugin_can_have_are_not_found() {
        let p = plugin_in_path(Ok(Path("a\0b".to_owned()))).unwrap_err();
        assert_eq!(p.status, 404);
        let p = plugin_in_path(Ok(Path("x".repeat(256)))).unwrap_err();
        assert_eq!(p.status, 404);
        assert_eq!(
            plugin_in_path(Ok(Path("billing".into()))).unwrap(),
            "billing"
        );
    }

    proptest! {
        #[test]
        fn any_body_is_a_target_or_a_422_naming_a_field(
            all in proptest::option::of(any::<bool>()),
            shard in proptest::option::of(any::<i64>()),
            added_id in proptest::option::of(any::<i64>()),
            extra in any::<bool>(),
        ) {
            let mut v = json!({});
            if let Some(a) = all { v["all"] = a.into(); }
            if let Some(s) = shard { v["shard"] = s.into(); }
            if let Some(a) = added_id { v["added_id"] = a.into(); }
            if extra { v["other"] = 1.into(); }
            match target(v, 64) {
                Ok(None) => prop_assert!(all == Some(true) && shard.is_none() && added_id.is_none() && !extra),
                Ok(Some(e)) => {
                    prop_assert!(all.is_none() && !extra);
                    prop_assert_eq!(Some(i64::from(e.shard)), shard);
                    prop_assert_eq!(Some(e.added_id), added_id);
                    prop_assert!(e.shard < 64 && e.added_id >= 0);
                }
                Err(p) => {
                    prop_assert_eq!(p.status, 422);
                    prop_assert!(p.errors[0].location.starts_with("body"));
                }
            }
        }
    }
}
