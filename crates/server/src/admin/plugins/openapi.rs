//! The plugin operations' part of the admin API's OpenAPI document ([`super::super::openapi`]
//! merges it in): their operations and the schemas of their answers.

use serde_json::{json, Map, Value};

use crate::admin::openapi::{ok, path_param, problem, schema, Op};

fn name_param() -> Value {
    path_param(
        "name",
        json!({"type": "string", "minLength": 1}),
        "The plugin's name (as registered through /v1/plugins)",
    )
}

/// The body of replay and drop: all of the plugin's parked events, or one.
fn target_body() -> Value {
    json!({
        "type": "object", "additionalProperties": false,
        "properties": {
            "all": {"type": "boolean", "const": true},
            "shard": {"type": "integer", "minimum": 0, "maximum": u32::MAX,
                "description": "The event's shard (below NUM_SHARDS)"},
            "added_id": {"type": "integer", "minimum": 0, "maximum": i64::MAX},
        },
        "oneOf": [
            {"required": ["all"], "not": {"anyOf": [{"required": ["shard"]}, {"required": ["added_id"]}]}},
            {"required": ["shard", "added_id"], "not": {"required": ["all"]}},
        ],
        "description": "{\"all\": true}, or one event: {\"shard\": N, \"added_id\": M}",
    })
}

/// The operations under `/admin/v1/plugins`.
pub(crate) fn operations() -> Vec<(&'static str, &'static str, Op)> {
    let not_found = || ("404", problem("No plugin of that name"));
    vec![
        ("/admin/v1/plugins", "get", Op {
            id: "admin-plugins-list",
            summary: "Every plugin with its delivery state, last error, parked events and lag",
            answers: vec![("200", ok("The plugins, in registration order", json!({
                "type": "object", "required": ["plugins"],
                "properties": {"plugins": {"type": "array", "items": schema("PluginStatus")}},
            })))],
            ..Op::default()
        }),
        ("/admin/v1/plugins/{name}", "get", Op {
            id: "admin-plugins-get",
            summary: "One plugin with its offset and lag in every shard",
            params: vec![name_param()],
            answers: vec![("200", ok("The plugin", schema("PluginDetail"))), not_found()],
            ..Op::default()
        }),
        ("/admin/v1/plugins/{name}/pause", "post", Op {
            id: "admin-plugins-pause",
            summary: "Pauses a plugin's delivery (its offsets stay; nothing is lost)",
            params: vec![name_param()],
            answers: vec![("200", ok("The plugin now", schema("PluginDetail"))), not_found()],
            ..Op::default()
        }),
        ("/admin/v1/plugins/{name}/resume", "post", Op {
            id: "admin-plugins-resume",
            summary: "Resumes a paused plugin's delivery where it stopped",
            params: vec![name_param()],
            answers: vec![("200", ok("The plugin now", schema("PluginDetail"))), not_found()],
            ..Op::default()
        }),
        ("/admin/v1/plugins/{name}/parked", "get", Op {
            id: "admin-plugins-parked",
            summary: "A page of the plugin's parked events (dead letters), in (shard, added_id) order",
            params: vec![
                name_param(),
                json!({
                    "name": "limit", "in": "query", "required": false,
                    "description": "How many at most",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
                }),
                json!({
                    "name": "after", "in": "query", "required": false,
                    "description": "SHARD:ADDED_ID: the events after this one (the previous page's next)",
                    "schema": {"type": "string", "pattern": "^\\s*[0-9]+:[0-9]+\\s*$"},
                }),
            ],
            answers: vec![
                ("200", ok("The page", schema("ParkedPage"))),
                not_found(),
                ("422", problem("query.limit is not an integer from 1 to 10000, or query.after is not SHARD:ADDED_ID")),
            ],
            ..Op::default()
        }),
        ("/admin/v1/plugins/{name}/parked", "delete", Op {
            id: "admin-plugins-drop-parked",
            summary: "Removes parked events for good: all of the plugin's, or one",
            params: vec![name_param()],
            body: Some((target_body(), false)),
            answers: vec![
                ("200", ok("How many were removed", json!({
                    "type": "object", "required": ["plugin", "dropped"],
                    "properties": {"plugin": {"type": "string"}, "dropped": {"type": "integer", "minimum": 0}},
                }))),
                ("404", problem("No plugin of that name, or no such parked event")),
            ],
            ..Op::default()
        }),
        ("/admin/v1/plugins/{name}/replay", "post", Op {
            id: "admin-plugins-replay",
            summary: "Marks parked events for the deliverer to send again: all of the plugin's, or one",
            params: vec![name_param()],
            body: Some((target_body(), false)),
            answers: vec![
                ("202", ok("How many are marked (the deliverer sends them shortly)", json!({
                    "type": "object", "required": ["plugin", "marked"],
                    "properties": {"plugin": {"type": "string"}, "marked": {"type": "integer", "minimum": 0}},
                }))),
                ("404", problem("No plugin of that name, or no such parked event")),
            ],
            ..Op::default()
        }),
    ]
}

/// The schemas of the plugin operations' answers.
pub(crate) fn schemas() -> Map<String, Value> {
    let int = json!({"type": "integer"});
    let string = json!({"type": "string"});
    let time = json!({"type": "string", "format": "date-time"});
    let time_or_null = json!({"type": ["string", "null"], "format": "date-time"});
    let seconds = json!({"type": ["number", "null"], "minimum": 0,
        "description": "Age of the oldest undelivered event (null: none)"});
    let status_props = json!({
        "id": {"type": "string", "format": "uuid"}, "name": string, "endpoint": string,
        "subscribed_columns": {"type": "array", "items": string},
        "status": {"type": "string", "enum": ["active", "inactive"]},
        "created_at": time, "deliver_from": time,
        "state": {"type": "string", "enum": ["paused", "backing_off", "delivering"]},
        "last_error": {"type": ["string", "null"]}, "last_error_at": time_or_null,
        "parked": {"type": "integer", "minimum": 0},
        "lag": schema("PluginLag"),
    });
    let required = json!([
        "id",
        "name",
        "endpoint",
        "subscribed_columns",
        "status",
        "created_at",
        "deliver_from",
        "state",
        "last_error",
        "last_error_at",
        "parked",
        "lag"
    ]);
    let mut detail_props = status_props.clone();
    detail_props["offsets"] = json!({"type": "array", "items": {
        "type": "object",
        "required": ["shard", "delivered_upto", "updated_at", "events_behind",
            "oldest_undelivered_age_seconds", "error"],
        "properties": {
            "shard": int, "delivered_upto": {"type": ["integer", "null"],
                "description": "Every event up to this added_id is delivered, skipped or parked (null: no offset yet, delivery starts at deliver_from)"},
            "updated_at": time_or_null,
            "events_behind": {"type": ["integer", "null"], "minimum": 0},
            "oldest_undelivered_age_seconds": seconds,
            "error": {"type": ["string", "null"], "description": "Why the shard's owner could not be asked"},
        },
    }});
    let mut detail_required = required.clone();
    if let Some(a) = detail_required.as_array_mut() {
        a.push(json!("offsets"));
    }
    let schemas = json!({
        "PluginLag": {
            "type": "object",
            "required": ["events_behind", "oldest_undelivered_age_seconds", "shards_unknown"],
            "properties": {
                "events_behind": {"type": "integer", "minimum": 0,
                    "description": "Events of the change stream after the offsets, over every shard (an upper bound: added_ids a failed write took count too)"},
                "oldest_undelivered_age_seconds": seconds,
                "shards_unknown": {"type": "integer", "minimum": 0,
                    "description": "Shards whose owner could not be asked (left out of the figures)"},
            },
        },
        "PluginStatus": {"type": "object", "required": required, "properties": status_props},
        "PluginDetail": {"type": "object", "required": detail_required, "properties": detail_props},
        "ParkedPage": {
            "type": "object", "required": ["plugin", "parked", "next"],
            "properties": {
                "plugin": string,
                "parked": {"type": "array", "items": {
                    "type": "object",
                    "required": ["id", "shard", "added_id", "row_key", "column_name", "attempts",
                        "error", "parked_at", "replay_requested"],
                    "properties": {
                        "id": {"type": "string", "description": "SHARD:ADDED_ID"},
                        "shard": int, "added_id": int,
                        "row_key": {"type": "string", "format": "uuid"}, "column_name": string,
                        "attempts": int, "error": string, "parked_at": time,
                        "replay_requested": {"type": "boolean"},
                    },
                }},
                "next": {"type": ["string", "null"],
                    "description": "The after of the next page (null: this is the last)"},
            },
        },
    });
    match schemas {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
