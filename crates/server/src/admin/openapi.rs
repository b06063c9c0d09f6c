//! The admin API's OpenAPI document (3.1), served at [`DOCUMENT_PATH`] without a token (a
//! description only).
//!
//! The admin handlers read their bodies as JSON values and check each field themselves, so
//! the document is written here, next to the routes' table ([`super::table`]), with the
//! bounds the handlers enforce; a test holds the two to each other: every route is
//! documented and every documented operation is routed. Every operation but the document's
//! own needs `bearerAuth` (a token with scope `admin`), and every one may answer 401, 403,
//! 413, 414, 429, 500 and 503 (the server's own answers, problem+json with `X-Request-ID`).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::sync::Arc;

use crate::AppState;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/admin/v1/openapi.json";

/// `GET /admin/v1/openapi.json`.
pub async fn serve(State(st): State<Arc<AppState>>) -> Response {
    let doc = document(st.config.max_body_bytes);
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&doc).unwrap_or_default(),
    )
        .into_response()
}

const PROBLEM: &str = "#/components/schemas/Problem";

pub(crate) fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
        "content": {"application/problem+json": {"schema": {"$ref": PROBLEM}}},
    })
}

fn retry(description: &str) -> Value {
    let mut r = problem(description);
    r["headers"]["Retry-After"] = json!({"$ref": "#/components/headers/Retry-After"});
    r
}

pub(crate) fn ok(description: &str, schema: Value) -> Value {
    json!({
        "description": description,
        "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
        "content": {"application/json": {"schema": schema}},
    })
}

pub(crate) fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn nullable(name: &str) -> Value {
    json!({"oneOf": [schema(name), {"type": "null"}]})
}

/// What a request of one operation may carry.
#[derive(Default)]
pub(crate) struct Op {
    pub id: &'static str,
    pub summary: &'static str,
    pub params: Vec<Value>,
    /// The body's schema, and whether it may be left out.
    pub body: Option<(Value, bool)>,
    /// The answers of this operation besides the common ones.
    pub answers: Vec<(&'static str, Value)>,
    pub open: bool,
}

impl Op {
    fn build(self, max_body_bytes: usize) -> Value {
        let mut responses = Map::new();
        for (status, answer) in self.answers {
            responses.insert(status.to_owned(), answer);
        }
        let common = [
            (
                "401",
                problem("No token, a malformed Authorization header, or a token this server does not know (with WWW-Authenticate: Bearer)"),
            ),
            ("403", problem("The token has no scope admin")),
            (
                "413",
                problem(&format!("The request body is larger than MAX_BODY_BYTES ({max_body_bytes} bytes)")),
            ),
            ("414", problem("The request target is too long")),
            (
                "429",
                retry("The token is over its rate limit (its rate= in the token file, else ADMIN_RATE_LIMIT): retry after Retry-After seconds"),
            ),
            ("500", problem("A fault of the server or of its databases (the detail says which)")),
            (
                "503",
                retry("The catalog or a backend is unavailable, the server is busy, or the request took longer than the HTTP timeouts allow"),
            ),
        ];
        for (status, answer) in common {
            if self.open && matches!(status, "401" | "403" | "429") {
                continue;
            }
            responses.entry(status).or_insert(answer);
        }
        if self.params.iter().any(|p| p["in"] == "path") {
            responses.entry("422").or_insert(problem(
                "A path parameter is invalid (not percent-encoded UTF-8, or not an id)",
            ));
        }
        if self.body.is_some() {
            responses
                .entry("400")
                .or_insert(problem("The body is not valid JSON"));
            responses.entry("415").or_insert(problem(
                "The body is not sent as application/json (or application/*+json)",
            ));
            responses.entry("422").or_insert(problem(
                "A field of the body is missing, unexpected or invalid (errors name it)",
            ));
        }
        let mut op = json!({
            "operationId": self.id,
            "summary": self.summary,
            "tags": ["admin"],
            "responses": responses,
        });
        if !self.params.is_empty() {
            op["parameters"] = Value::Array(self.params);
        }
        if let Some((schema, optional)) = self.body {
            op["requestBody"] = json!({
                "required": !optional,
                "description": format!("At most {max_body_bytes} bytes (MAX_BODY_BYTES)"),
                "content": {"application/json": {"schema": schema}},
            });
        }
        op["security"] = if self.open {
            json!([])
        } else {
            json!([{"bearerAuth": []}])
        };
        op
    }
}

pub(crate) fn path_param(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": schema})
}

fn limit_param(default: i64) -> Value {
    json!({
        "name": "limit", "in": "query", "required": false,
        "description": "How many, newest first",
        "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": default},
    })
}

fn id_param(what: &str) -> Value {
    path_param(
        "id",
        json!({"type": "integer", "minimum": 1, "maximum": i64::MAX}),
        &format!("The {what}'s id (not a positive integer: 422)"),
    )
}

fn backend_param() -> Value {
    path_param("name", json!({"type": "string"}), "The backend's name")
}

/// A positive integer field (null: its default).
fn positive() -> Value {
    json!({"type": ["integer", "null"], "minimum": 1, "maximum": i64::MAX})
}

/// The fields of a plan (and of apply and drain, with `extra`).
fn plan_body(extra: bool) -> Value {
    let mut props = json!({
        "strategy": {
            "type": ["string", "null"], "enum": ["count", "rows", "bytes", "writes", null],
            "description": "What to balance (default count)",
        },
        "window": {
            "type": ["string", "null"],
            "description": "How long the write rate is sampled for strategy writes: a duration such as \"10s\", from 1s to HTTP_READ_TIMEOUT + HTTP_WRITE_TIMEOUT less 5s (default 10s)",
        },
        "parallel": {
            "type": ["integer", "null"], "minimum": 1, "maximum": i64::MAX,
            "description": "Bulk copies at once (default 2; above 64 counts as 64)",
        },
    });
    if extra {
        props["max_rows_per_sec"] = json!({
            "type": ["integer", "null"], "minimum": 1, "maximum": i64::MAX,
            "description": "Rows per second over the whole rebalance",
        });
        props["complete"] = json!({
            "type": ["boolean", "null"],
            "description": "Drop the sources as each job switches (default: for a drain only)",
        });
    }
    json!({"type": "object", "additionalProperties": false, "properties": props,
        "description": "An empty body is {}"})
}

/// Every admin operation, by path and method.
fn operations() -> Vec<(&'static str, &'static str, Op)> {
    let name = json!({
        "type": "string", "pattern": "^\\s*[A-Za-z0-9_.-]{1,63}\\s*$",
        "description": "1 to 63 letters, digits, '_', '-' or '.'",
    });
    let weight = json!({
        "type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000,
        "description": "The backend's share in a rebalance (default 1)",
    });
    let weight_or_null =
        json!({"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1_000_000});
    let text = json!({"type": "string", "minLength": 1, "pattern": "\\S"});
    let shards = json!({
        "type": "string", "minLength": 1, "pattern": "\\S",
        "description": "A shard set: numbers and ranges separated by commas (\"8-15\", \"0,3,9-11\"), each below NUM_SHARDS",
    });
    let json_only =
        |status: &'static str, description: &str, s: Value| (status, ok(description, s));
    let mut ops = vec![
        ("/admin/v1/shards", "get", Op {
            id: "admin-shards",
            summary: "The catalog's shard map, as ranges with their owner and state",
            answers: vec![json_only("200", "The map", schema("ShardRanges"))],
            ..Op::default()
        }),
        ("/admin/v1/shards/export", "get", Op {
            id: "admin-shards-export",
            summary: "The map in shards.json form (passwords masked unless with_secrets=true, which is audited)",
            params: vec![json!({
                "name": "with_secrets", "in": "query", "required": false,
                "schema": {"type": "string", "enum": ["true", "false"], "default": "false"},
            })],
            answers: vec![
                json_only("200", "shards.json", schema("ShardsFile")),
                ("422", problem("query.with_secrets is neither true nor false")),
            ],
            ..Op::default()
        }),
        ("/admin/v1/backends", "get", Op {
            id: "admin-backends-list",
            summary: "The backends, with their health",
            answers: vec![json_only("200", "The backends", json!({
                "type": "object", "required": ["backends"],
                "properties": {"backends": {"type": "array", "items": schema("Backend")}},
            }))],
            ..Op::default()
        }),
        ("/admin/v1/backends", "post", Op {
            id: "admin-backends-add",
            summary: "Checks a database, prepares it and registers it as a backend with no shards",
            body: Some((json!({
                "type": "object", "additionalProperties": false, "required": ["name", "url"],
                "properties": {
                    "name": name,
                    "url": {"type": "string", "minLength": 1, "pattern": "\\S",
                        "description": "A PostgreSQL URL whose hosts BACKEND_HOSTS_ALLOWED allows"},
                    "weight": weight_or_null,
                },
            }), false)),
            answers: vec![
                json_only("201", "Registered", nullable("Backend")),
                ("409", problem("A backend of that name exists, or the database belongs to another cluster")),
            ],
            ..Op::default()
        }),
        ("/admin/v1/backends/{name}", "patch", Op {
            id: "admin-backends-update",
            summary: "Changes a backend's weight, or takes a draining backend back (draining: false)",
            params: vec![backend_param()],
            body: Some((json!({
                "type": "object", "additionalProperties": false,
                "properties": {"weight": weight_or_null, "draining": {"type": ["boolean", "null"]}},
                "anyOf": [
                    {"required": ["weight"], "properties": {"weight": weight}},
                    {"required": ["draining"], "properties": {"draining": {"type": "boolean"}}},
                ],
                "description": "Give weight, draining or both",
            }), false)),
            answers: vec![
                json_only("200", "The backend now", nullable("Backend")),
                ("404", problem("No such backend")),
                ("409", problem("The change is refused (the catalog's home cannot be drained)")),
            ],
            ..Op::default()
        }),
        ("/admin/v1/backends/{name}", "delete", Op {
            id: "admin-backends-remove",
            summary: "Removes a backend that owns nothing",
            params: vec![backend_param()],
            answers: vec![
                ("204", json!({"description": "Removed",
                    "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}})),
                ("404", problem("No such backend")),
                ("409", problem("The backend still owns shards, or is the catalog's home")),
            ],
            ..Op::default()
        }),
        ("/admin/v1/backends/{name}/drain", "post", Op {
            id: "admin-backends-drain",
            summary: "Marks a backend draining and moves every shard it owns to the others",
            params: vec![backend_param()],
            body: Some((plan_body(true), true)),
            answers: vec![
                json_only("200", "It owns nothing: rebalance is null", schema("DrainResult")),
                json_only("202", "The rebalance started", schema("DrainResult")),
                ("404", problem("No such backend")),
                ("409", problem("No plan can be made, or the catalog's home cannot be drained")),
            ],
            ..Op::default()
        }),
        ("/admin/v1/rebalance", "get", Op {
            id: "admin-rebalance-list",
            summary: "The most recent rebalances, newest first",
            params: vec![limit_param(20)],
            answers: vec![
                json_only("200", "The rebalances", json!({
                    "type": "object", "required": ["rebalances"],
                    "properties": {"rebalances": {"type": "array", "items": schema("Rebalance")}},
                })),
                ("422", problem("query.limit is not an integer from 1 to 10000")),
            ],
            ..Op::default()
        }),
        ("/admin/v1/rebalance/plan", "post", Op {
            id: "admin-rebalance-plan",
            summary: "The plan that would balance the backends (changes nothing)",
            body: Some((plan_body(false), true)),
            answers: vec![
                json_only("200", "The plan", schema("Plan")),
                ("409", problem("No plan can be made")),
            ],
            ..Op::default()
        }),
        ("/admin/v1/rebalance/apply", "post", Op {
            id: "admin-rebalance-apply",
            summary: "Makes the plan and starts it as move jobs",
            body: Some((plan_body(true), true)),
            answers: vec![
                json_only("200", "Balanced already: rebalance is null", schema("ApplyResult")),
                json_only("202", "The rebalance started", schema("ApplyResult")),
                ("409", problem("No plan can be made, or a move is in the way")),
            ],
            ..Op::default()
        }),
        ("/admin/v1/rebalance/{id}", "get", Op {
            id: "admin-rebalance-get",
            summary: "One rebalance, its jobs and their combined progress",
            params: vec![id_param("rebalance")],
            answers: vec![
                json_only("200", "The rebalance", schema("Rebalance")),
                ("404", problem("No such rebalance")),
                ("422", problem("path.id is not a positive integer")),
            ],
            ..Op::default()
        }),
        ("/admin/v1/rebalance/{id}/{action}", "post", Op {
            id: "admin-rebalance-action",
            summary: "Asks the mover to abort or complete a rebalance",
            params: vec![
                id_param("rebalance"),
                path_param("action", json!({"type": "string", "enum": ["abort", "complete"]}),
                    "abort: stop the moves not yet switched; complete: drop the sources of the switched shards (another action: 404)"),
            ],
            answers: vec![
                json_only("202", "The request is recorded", schema("Rebalance")),
                ("404", problem("No such rebalance, or no such action")),
                ("409", problem("The rebalance is over")),
                ("422", problem("path.id is not a positive integer")),
            ],
            ..Op::default()
        }),
        ("/admin/v1/moves", "get", Op {
            id: "admin-moves-list",
            summary: "The most recent move jobs, newest first",
            params: vec![limit_param(100)],
            answers: vec![
                json_only("200", "The jobs", json!({
                    "type": "object", "required": ["moves"],
                    "properties": {"moves": {"type": "array", "items": schema("MoveJob")}},
                })),
                ("422", problem("query.limit is not an integer from 1 to 10000")),
            ],
            ..Op::default()
        }),
        ("/admin/v1/moves", "post", Op {
            id: "admin-moves-start",
            summary: "Starts moving shards to a backend",
            body: Some((json!({
                "type": "object", "additionalProperties": false, "required": ["shards", "to"],
                "properties": {
                    "shards": shards,
                    "to": text,
                    "parallel": {"type": ["integer", "null"], "minimum": 1, "maximum": i64::MAX,
                        "description": "Shards copied at once (default 4; above 64 counts as 64)"},
                    "max_rows_per_sec": positive(),
                },
            }), false)),
            answers: vec![
                json_only("202", "The job", schema("MoveJob")),
                ("404", problem("No such backend")),
                ("409", problem("A shard is in another move, or the target owns it already")),
            ],
            ..Op::default()
        }),
        ("/admin/v1/moves/{id}", "get", Op {
            id: "admin-moves-get",
            summary: "One move job",
            params: vec![id_param("move")],
            answers: vec![
                json_only("200", "The job", schema("MoveJob")),
                ("404", problem("No such move")),
                ("422", problem("path.id is not a positive integer")),
            ],
            ..Op::default()
        }),
        ("/admin/v1/moves/{id}/{action}", "post", Op {
            id: "admin-moves-action",
            summary: "Aborts, completes or reverts a move job",
            params: vec![
                id_param("move"),
                path_param("action", json!({"type": "string", "enum": ["abort", "complete", "revert"]}),
                    "abort, complete, or revert (a new job moving the switched shards back); another action: 404"),
            ],
            answers: vec![
                json_only("202", "The job as recorded (for revert, the new job)", schema("MoveJob")),
                ("404", problem("No such move, or no such action")),
                ("409", problem("The job's state does not allow it")),
                ("422", problem("path.id is not a positive integer")),
            ],
            ..Op::default()
        }),
        ("/admin/v1/verify", "post", Op {
            id: "admin-verify",
            summary: "Compares every copy of each shard with its owner's, row by row",
            body: Some((json!({
                "type": "object", "additionalProperties": false, "required": ["shards"],
                "properties": {"shards": shards},
            }), false)),
            answers: vec![json_only("200", "The report", json!({
                "type": "object", "required": ["ok", "shards"],
                "properties": {
                    "ok": {"type": "boolean"},
                    "shards": {"type": "array", "items": {"type": "object",
                        "required": ["shard", "owner", "ok", "copies", "differences", "more", "problems"],
                        "properties": {
                            "shard": {"type": "integer"}, "owner": {"type": "string"},
                            "ok": {"type": "boolean"}, "copies": {"type": "array"},
                            "differences": {"type": "array"}, "more": {"type": "boolean"},
                            "problems": {"type": "array", "items": {"type": "string"}},
                        }}},
                },
            }))],
            ..Op::default()
        }),
        ("/admin/v1/reload", "post", Op {
            id: "admin-reload",
            summary: "Re-reads the catalog's map now",
            answers: vec![json_only("200", "The map version in use", json!({
                "type": "object", "required": ["map_version"],
                "properties": {"map_version": {"type": "integer"}},
            }))],
            ..Op::default()
        }),
        ("/admin/v1/status", "get", Op {
            id: "admin-status",
            summary: "This node, the mover's leader, the map version, authentication and warnings",
            answers: vec![json_only("200", "The status", json!({
                "type": "object",
                "required": ["node", "leader", "map_version", "cluster_id", "auth", "warnings"],
                "properties": {
                    "node": {"type": "object", "required": ["id", "addr", "mover"], "properties": {
                        "id": {"type": "string"}, "addr": {"type": ["string", "null"]},
                        "mover": {"type": "boolean"}}},
                    "leader": {"oneOf": [{"type": "null"}, {"type": "object",
                        "required": ["id", "addr", "term"], "properties": {
                            "id": {"type": "string"}, "addr": {"type": "string"},
                            "term": {"type": "integer"}}}]},
                    "map_version": {"type": "integer"},
                    "cluster_id": {},
                    "auth": {"type": "object"},
                    "warnings": {"type": "array", "items": {"type": "string"}},
                },
            }))],
            ..Op::default()
        }),
        ("/admin/v1/audit", "get", Op {
            id: "admin-audit",
            summary: "The most recent entries of the audit log, newest first",
            params: vec![limit_param(100)],
            answers: vec![
                json_only("200", "The entries", json!({
                    "type": "object", "required": ["entries"],
                    "properties": {"entries": {"type": "array", "items": {"type": "object",
                        "required": ["id", "at", "node", "kind", "detail"],
                        "properties": {
                            "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
                            "node": {"type": "string"}, "kind": {"type": "string"}, "detail": {},
                        }}}},
                })),
                ("422", problem("query.limit is not an integer from 1 to 10000")),
            ],
            ..Op::default()
        }),
        (DOCUMENT_PATH, "get", Op {
            id: "admin-openapi",
            summary: "This document (no token needed)",
            answers: vec![json_only("200", "The admin API's OpenAPI document", json!({"type": "object"}))],
            open: true,
            ..Op::default()
        }),
    ];
    ops.extend(super::plugins::openapi::operations());
    ops
}

fn schemas() -> Value {
    let int = json!({"type": "integer"});
    let int_or_null = json!({"type": ["integer", "null"]});
    let string = json!({"type": "string"});
    let string_or_null = json!({"type": ["string", "null"]});
    let number = json!({"type": "number"});
    let time = json!({"type": "string", "format": "date-time"});
    let requested = json!({"type": ["string", "null"], "enum": ["abort", "complete", null]});
    let mut all = json!({
        "Problem": {
            "type": "object", "required": ["type", "title", "status", "detail"],
            "description": "An RFC 9457 problem",
            "properties": {
                "type": {"type": "string"}, "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object",
                    "required": ["location", "message"],
                    "properties": {"location": {"type": "string"}, "message": {"type": "string"}, "value": {}}}},
            },
        },
        "ShardRanges": {
            "type": "object", "required": ["num_shards", "version", "ranges"],
            "properties": {
                "num_shards": int, "version": int,
                "ranges": {"type": "array", "items": {"type": "object",
                    "required": ["start", "end", "backend", "state"],
                    "properties": {"start": int, "end": int, "backend": string, "state": string}}},
            },
        },
        "ShardsFile": {
            "type": "object", "required": ["backends"],
            "properties": {
                "backends": {"type": "array", "items": {"type": "object",
                    "required": ["name", "database_url", "shard_start", "shard_end"],
                    "properties": {"name": string, "database_url": string, "shard_start": int, "shard_end": int}}},
                "spare_backends": {"type": "array", "items": {"type": "object",
                    "required": ["name", "database_url"],
                    "properties": {"name": string, "database_url": string}}},
            },
        },
        "Backend": {
            "type": "object",
            "required": ["name", "url", "weight", "draining", "shards", "up", "latency_ms", "error"],
            "properties": {
                "name": string, "url": {"type": "string", "description": "Its password masked"},
                "weight": number, "draining": {"type": "boolean"}, "shards": int,
                "up": {"type": ["boolean", "null"]}, "latency_ms": {"type": ["number", "null"]},
                "error": string_or_null,
            },
        },
        "MoveShard": {
            "type": "object",
            "required": ["shard", "from", "to", "state", "rows_copied", "rows_total"],
            "properties": {
                "shard": int, "from": string, "to": string, "state": string,
                "high_water": int, "rows_copied": int, "rows_total": int, "lag": int_or_null,
                "pause_ms": {"type": ["number", "null"]}, "verified": int, "error": string_or_null,
                "switched_at": {"type": ["string", "null"], "format": "date-time"},
                "fence_pending": {"type": "boolean"},
            },
        },
        "MoveJob": {
            "type": "object", "required": ["id", "state", "to", "shards_spec", "shards"],
            "properties": {
                "id": int, "state": string, "to": string, "shards_spec": string,
                "parallel": int, "max_rows_per_sec": int_or_null, "requested": requested,
                "reverts": int_or_null, "reverted_by": int_or_null, "error": string_or_null,
                "rebalance": int_or_null, "auto_complete": {"type": "boolean"},
                "created_at": time, "updated_at": time,
                "shards": {"type": "array", "items": schema("MoveShard")},
            },
        },
        "Rebalance": {
            "type": "object", "required": ["id", "state", "strategy", "progress", "jobs"],
            "properties": {
                "id": int, "state": string, "strategy": string, "drain": string_or_null,
                "parallel": int, "max_rows_per_sec": int_or_null,
                "auto_complete": {"type": "boolean"}, "requested": requested,
                "created_at": time, "progress": {"type": "object"}, "plan": {},
                "jobs": {"type": "array", "items": schema("MoveJob")},
            },
        },
        "Plan": {
            "type": "object",
            "required": ["strategy", "unit", "moves", "shards_to_move", "balanced", "balance"],
            "properties": {
                "strategy": string, "unit": string, "drain": string_or_null,
                "moves": {"type": "array", "items": {"type": "object",
                    "required": ["shards", "count", "from", "to"],
                    "properties": {"shards": string, "count": int, "from": string, "to": string,
                        "rows": int, "bytes": int, "load": int}}},
                "shards_to_move": int, "rows_to_move": int, "bytes_to_move": int, "moved": int,
                "excess": number, "balanced": {"type": "boolean"},
                "lower_bound": {"type": ["number", "null"]}, "estimated_seconds": number,
                "estimate_basis": string, "pinned": int,
                "balance": {"type": "array", "items": {"type": "object", "required": ["backend"],
                    "properties": {"backend": string, "weight": number, "draining": {"type": "boolean"}}}},
            },
        },
        "ApplyResult": {
            "type": "object", "required": ["rebalance", "plan"],
            "properties": {"rebalance": nullable("Rebalance"), "plan": schema("Plan")},
        },
        "DrainResult": {
            "type": "object", "required": ["backend", "rebalance", "plan"],
            "properties": {
                "backend": {"type": "object", "required": ["name", "weight", "draining"],
                    "properties": {"name": string, "weight": number, "draining": {"type": "boolean"}}},
                "rebalance": nullable("Rebalance"), "plan": schema("Plan"),
            },
        },
    });
    if let Value::Object(m) = &mut all {
        m.extend(super::plugins::openapi::schemas());
    }
    all
}

/// The document, with the body limit this node enforces (`MAX_BODY_BYTES`).
pub fn document(max_body_bytes: usize) -> Value {
    let mut paths = Map::new();
    for (path, method, op) in operations() {
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[method] = op.build(max_body_bytes);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "mezzanine admin API",
            "version": "1.0.0",
            "description": "The cluster's control plane: the shard map, backends, moves, rebalancing, verification, status and the audit log. Every operation needs a bearer token with scope admin (see the README's Security section). Each token is rate limited (ADMIN_RATE_LIMIT, or its own rate= in the token file): over it, 429 with Retry-After.",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": "admin"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "A token of the token file (TOKEN_FILE or TOKENS) with scope admin",
            }},
            "headers": {
                "X-Request-ID": {"description": "The request's id (the client's own, or one the server made)",
                    "schema": {"type": "string"}},
                "Retry-After": {"description": "Whole seconds to wait before trying again (at least 1)",
                    "schema": {"type": "integer", "minimum": 1}},
            },
            "schemas": schemas(),
        },
        "security": [{"bearerAuth": []}],
    })
}

/// Every (path, method) the document describes, the method in capitals.
pub fn documented() -> Vec<(String, String)> {
    operations()
        .into_iter()
        .map(|(p, m, _)| (p.to_owned(), m.to_ascii_uppercase()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_and_every_operation_needs_the_token() {
        let doc = document(1 << 20);
        let parsed = oas3::from_json(doc.to_string()).expect("an OpenAPI 3.1 document");
        assert_eq!(parsed.paths.map(|p| p.len()), Some(24));
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearerAuth"],
            json!({"type": "http", "scheme": "bearer",
                "description": "A token of the token file (TOKEN_FILE or TOKENS) with scope admin"})
        );
        let mut ids = std::collections::HashSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let at = format!("{method} {path}");
                assert!(ids.insert(op["operationId"].clone()), "{at}: id twice");
                let responses = op["responses"].as_object().unwrap();
                if path == DOCUMENT_PATH {
                    assert_eq!(op["security"], json!([]), "{at}");
                    continue;
                }
                assert_eq!(op["security"], json!([{"bearerAuth": []}]), "{at}");
                for status in ["401", "403", "429", "500", "503"] {
                    let r = &responses[status];
                    assert_eq!(
                        r["content"]["application/problem+json"]["schema"]["$ref"], PROBLEM,
                        "{at} {status}"
                    );
                    assert!(r["headers"]["X-Request-ID"].is_object(), "{at} {status}");
                }
                assert!(responses["429"]["headers"]["Retry-After"].is_object());
                // Every path parameter of the template is described, and nothing else.
                let mut named: Vec<String> = op["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p["in"] == "path")
                            .map(|p| p["name"].as_str().unwrap().to_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                let mut templated: Vec<String> = path
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}').map(str::to_owned))
                    .collect();
                named.sort();
                templated.sort();
                assert_eq!(named, templated, "{at}");
                if let Some(body) = op.get("requestBody") {
                    let s = &body["content"]["application/json"]["schema"];
                    assert_eq!(s["additionalProperties"], json!(false), "{at}");
                    for status in ["400", "415", "422"] {
                        assert!(responses.contains_key(status), "{at} {status}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_body_limit_is_the_nodes() {
        let doc = document(12345);
        let body = &doc["paths"]["/admin/v1/moves"]["post"]["requestBody"];
        assert!(
            body["description"].as_str().unwrap().contains("12345"),
            "{body}"
        );
    }
}
