//! The `/v1` cell API, compatible with go-mezzanine.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use mezzanine_core::cell::batch::{parse_batch, BatchError};
use mezzanine_core::cell::{check_column_name, parse_i64, parse_row_key};
use mezzanine_core::{shard_for_row_key, CellKey, FieldError, NewCell};
use mezzanine_storage::cells::{self, Cell, WriteOutcome};
use mezzanine_storage::StorageError;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::problem::Problem;
use crate::AppState;

mod partition;
pub use partition::{parse_partition_query, PartitionQuery};

pub use mezzanine_core::cell::batch::MAX_BATCH;

/// A stored cell (documentation shape of [`Cell`]).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CellResponse {
    /// Per-shard sequence number assigned at insert: the change-stream position.
    added_id: i64,
    /// Row key UUID.
    #[schema(format = "uuid")]
    row_key: String,
    /// Column name.
    column_name: String,
    /// Version; the latest cell of a column has the highest ref_key.
    ref_key: i64,
    /// The stored JSON payload.
    body: Value,
    /// Server time of the insert (RFC 3339).
    created_at: DateTime<Utc>,
}

/// A cell to write. Unknown properties are refused (422), as are bodies PostgreSQL's JSONB
/// cannot store: a NUL character (`\u0000`) in a string or key, a number outside
/// PostgreSQL's `numeric` range (at most 131072 digits before the decimal point and 16383
/// after, once written out: `1e131072` and `1e-16384` are refused), or a body longer than
/// `MAX_BODY_BYTES` once its numbers are written out in full.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct WriteCellBody {
    /// A URL to the JSON Schema for this object (ignored).
    #[serde(rename = "$schema")]
    #[schema(format = "uri", read_only, nullable = false)]
    schema: Option<String>,
    /// Row key UUID.
    #[schema(format = "uuid")]
    row_key: String,
    /// Column name: 1 to 255 bytes of UTF-8 (so fewer than 255 characters when they are not
    /// ASCII), without NUL.
    #[schema(min_length = 1, max_length = 255, pattern = "^[^\\u0000]+$")]
    column_name: String,
    /// Version: an integer written without a fraction or an exponent (`1`, not `1.0`).
    ref_key: i64,
    /// Any JSON value (see above for what PostgreSQL cannot store).
    body: Value,
}
/// The latest cell of each column of a row.
#[derive(Serialize, ToSchema)]
pub struct RowResponse {
    #[schema(format = "uuid")]
    pub row_key: String,
    #[schema(value_type = Vec<CellResponse>)]
    pub cells: Vec<Cell>,
}

/// 1 to 1000 cells to write. Unknown properties are refused (422).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BatchWriteBody {
    /// A URL to the JSON Schema for this object (ignored).
    #[serde(rename = "$schema")]
    #[schema(format = "uri", read_only, nullable = false)]
    schema: Option<String>,
    /// The cells; each is validated on its own and refused in its own result.
    #[schema(min_items = 1, max_items = 1000)]
    cells: Vec<WriteCellBody>,
}

/// One result per input cell, in input order.
#[derive(Serialize, ToSchema)]
pub struct BatchWriteResponse {
    pub results: Vec<BatchResult>,
}

/// The result of one cell of a batch: `status` 201 (stored), 200 (identical cell stored
/// before), or a problem (409, 422, 503).
#[derive(Serialize, ToSchema)]
pub struct BatchResult {
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<CellResponse>)]
    pub cell: Option<Cell>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

/// `{"num_shards": N}`.
#[derive(Serialize, ToSchema)]
pub struct ShardCountResponse {
    pub num_shards: u32,
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Problem> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        return Ok(());
    }
    let mut p = Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        if ct.is_empty() {
            "the request body must be sent with Content-Type: application/json".to_owned()
        } else {
            format!("unsupported Content-Type {ct:?}: send application/json")
        },
    );
    p.errors.push(FieldError::new(
        "header.Content-Type",
        "must be application/json",
        (!ct.is_empty()).then(|| Value::String(ct.to_owned())),
    ));
    Err(p)
}

pub(crate) fn read_json(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Value, Problem> {
    check_content_type(headers)?;
    let bytes = body.map_err(|r| {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return too_large(limit);
        }
        let mut p = Problem::new(status, r.body_text());
        p.errors
            .push(FieldError::new("body", "could not be read", None));
        p
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let mut p = Problem::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not valid JSON: {e}"),
        );
        p.errors.push(FieldError::new(
            "body",
            format!(
                "invalid JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
            None,
        ));
        p
    })
}

/// [`read_json`] for bodies whose strings reach PostgreSQL as text (the admin API's, the
/// plugins'): a NUL character (which PostgreSQL's text cannot hold) in any string or key, or
/// a number PostgreSQL cannot store, is a 422 naming its path, before anything is done.
pub(crate) fn read_text_json(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Value, Problem> {
    let v = read_json(headers, body, limit)?;
    mezzanine_core::cell::check_body(&v, "body").map_err(Problem::invalid)?;
    Ok(v)
}

/// 413 for a body over the limit, naming the body.
pub fn too_large(limit: usize) -> Problem {
    let mut p = Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than the limit of {limit} bytes (MAX_BODY_BYTES)"),
    );
    p.errors.push(FieldError::new(
        "body",
        format!("must be at most {limit} bytes"),
        None,
    ));
    p
}

/// The problem of a batch refused as a whole: 422 naming its shape's fault, or 413.
fn batch_problem(e: BatchError) -> Problem {
    match e {
        BatchError::Shape(f) => Problem::field(f),
        BatchError::TooLarge {
            stored_bytes,
            limit,
        } => {
            let mut p = Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the batch's bodies are {stored_bytes} bytes once stored (their numbers \
                     written out in full, as PostgreSQL stores them), above the limit of {limit} \
                     bytes (MAX_BODY_BYTES); send fewer cells per batch"
                ),
            );
            p.errors.push(FieldError::new(
                "body.cells",
                format!("must be at most {limit} bytes once stored (got {stored_bytes})"),
                None,
            ));
            p
        }
    }
}

/// Turns a path rejection (invalid percent-encoding or UTF-8) into a problem naming the segment.
pub(crate) fn path_problem(r: PathRejection) -> Problem {
    let location = match &r {
        PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
            ErrorKind::InvalidUtf8InPathParam { key } => Some(format!("path.{key}")),
            ErrorKind::ParseErrorAtKey { key, .. } | ErrorKind::DeserializeError { key, .. } => {
                Some(format!("path.{key}"))
            }
            _ => None,
        },
        _ => None,
    };
    let mut p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, r.body_text());
    p.errors.push(FieldError::new(
        location.unwrap_or_else(|| "path".into()),
        "must be valid percent-encoded UTF-8",
        None,
    ));
    p
}

fn cell_response(status: StatusCode, cell: Cell) -> Response {
    (status, Json(cell)).into_response()
}

fn conflict(stored: &Cell) -> Problem {
    let mut p = Problem::new(
        StatusCode::CONFLICT,
        format!(
            "cell ({}, {}, {}) exists with a different body; cells are immutable: write a new ref_key",
            stored.row_key, stored.column_name, stored.ref_key
        ),
    );
    p.errors.push(FieldError::new(
        "body.body",
        "differs from the stored body",
        Some(serde_json::to_value(&stored.body).unwrap_or(Value::Null)),
    ));
    p
}

/// Write one cell.
#[utoipa::path(post, path = "/v1/cells", tag = "cells", operation_id = "write-cell",
    request_body(content = WriteCellBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored", body = CellResponse),
        (status = 200, description = "The identical cell was stored before (idempotent retry)", body = CellResponse),
        (status = 409, description = "Another body is stored at these coordinates", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The request body is larger than MAX_BODY_BYTES", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid; each fault is named in `errors`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The shard's backend is unavailable, or the server's limits are reached: retry after Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = "default", description = "Error", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn write_cell(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    // What the request weighs while it is held (`MOVE_HOLD_MAX_BYTES`).
    let size = body.as_ref().map_or(0, |b| b.len());
    let limit = st.config.max_body_bytes;
    let v = read_json(&headers, body, limit)?;
    let cell = NewCell::from_json(v, "body", limit as u64)
        .map_err(Problem::invalid)?
        .cell;
    let shard = shard_for_row_key(&cell.key.row_key, st.num_shards());
    // A body PostgreSQL refuses as data comes back as the operation's value, not as an error
    // of the backend: it is the client's fault, not a reason to retry elsewhere.
    let outcome = st
        .on_shard_sized(shard, size, |b| {
            let cell = &cell;
            async move { data_refusal(cells::write_cells(&b, shard, &[cell]).await) }
        })
        .await?
        .map_err(|e| refused_data(&e, "body"))?
        .pop();
    metrics::counter!("mezzanine_shard_writes_total", "shard" => shard.to_string()).increment(1);
    // Plugin delivery reads the shards' heads at once (when this node delivers).
    st.stream_written.notify_one();
    match outcome {
        Some(WriteOutcome::Created(c)) => Ok(cell_response(StatusCode::CREATED, c)),
        Some(WriteOutcome::Existing(c)) => Ok(cell_response(StatusCode::OK, c)),
        Some(WriteOutcome::Conflict(c)) => Err(conflict(&c)),
        None => Err(Problem::internal("a single write got no result")),
    }
}

/// Whether PostgreSQL refused a write for its data (SQLSTATE class 22, data exception: a
/// value it cannot read or convert; class 54, program limit exceeded): the client's fault.
/// Validation ([`NewCell::from_json`]) refuses what is known to fail (numbers outside
/// `numeric`'s range, NUL characters); this catches the rest, such as a character the
/// database's encoding cannot hold.
fn is_data_error(e: &StorageError) -> bool {
    match e {
        StorageError::Database { code: Some(c), .. } => {
            c.code().starts_with("22") || c.code().starts_with("54")
        }
        _ => false,
    }
}

/// Moves a data refusal ([`is_data_error`]) from the error into the value.
fn data_refusal<T>(r: Result<T, StorageError>) -> Result<Result<T, StorageError>, StorageError> {
    match r {
        Err(e) if is_data_error(&e) => Ok(Err(e)),
        other => other.map(Ok),
    }
}

/// 422 for a cell (at `location`) whose data PostgreSQL refused, in PostgreSQL's words (they
/// are about the value, never about the backend); anything else as usual.
fn refused_data(e: &StorageError, location: &str) -> Problem {
    match e {
        StorageError::Database { message, .. } if is_data_error(e) => {
            Problem::field(FieldError::new(
                location,
                format!("cannot be stored by PostgreSQL: {message}"),
                None,
            ))
        }
        _ => Problem::from(e.clone()),
    }
}

/// Write up to 1000 cells: grouped by shard, one transaction per shard, one result per input
/// cell in input order.
#[utoipa::path(post, path = "/v1/cells/batch", tag = "cells", operation_id = "write-cells-batch",
    request_body(content = BatchWriteBody, content_type = "application/json"),
    responses(
        (status = 200, description = "One result per input cell", body = BatchWriteResponse),
        (status = 413, description = "The request body is larger than MAX_BODY_BYTES, or its cells' bodies are once stored", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The batch's shape is invalid (a cell's own faults are in its result)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The server's limits are reached: retry after Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = "default", description = "Error", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn write_batch(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    // What the request weighs while it is held (`MOVE_HOLD_MAX_BYTES`).
    let size = body.as_ref().map_or(0, |b| b.len());
    let limit = st.config.max_body_bytes as u64;
    let v = read_json(&headers, body, st.config.max_body_bytes)?;
    let mut results: Vec<Option<BatchResult>> = Vec::new();
    let mut parsed: Vec<(usize, NewCell)> = Vec::new();
    for (i, cell) in parse_batch(v, limit)
        .map_err(batch_problem)?
        .into_iter()
        .enumerate()
    {
        match cell {
            Ok(c) => {
                parsed.push((i, c));
                results.push(None);
            }
            Err(errors) => results.push(Some(BatchResult {
                status: 422,
                cell: None,
                error: Some(Problem::invalid(errors)),
            })),
        }
    }
    // By shard, then by backend: a backend's shard groups go out together on one connection,
    // in one transaction, in ascending shard order. Cells of shards that a backend says it
    // does not serve (moved, or in cutover) are held and retried at the new place.
    let mut pending: Vec<(usize, &NewCell)> = parsed.iter().map(|(i, c)| (*i, c)).collect();
    let mut hold: Option<crate::Hold> = None;
    while !pending.is_empty() {
        let topo = st.topology();
        let version = topo.version;
        let plan = topo
            .map
            .group_by_backend(pending.iter().map(|(i, c)| (c.key.row_key, (*i, *c))));
        let work = plan.into_iter().map(|(b, groups)| {
            let topo = &topo;
            async move {
                let outcomes = match topo.backend_at(b) {
                    Ok(backend) => write_backend(backend, &groups).await,
                    Err(p) => groups
                        .iter()
                        .map(|(_, g)| g.iter().map(|_| CellResult::Failed(p.clone())).collect())
                        .collect(),
                };
                (groups, outcomes)
            }
        });
        let mut moved: Vec<(usize, &NewCell)> = Vec::new();
        let mut last_moved: Option<String> = None;
        for (groups, outcomes) in futures::future::join_all(work).await {
            for ((shard, group), outcomes) in groups.into_iter().zip(outcomes) {
                let mut written = 0u64;
                for ((i, c), o) in group.into_iter().zip(outcomes) {
                    written += u64::from(matches!(o, CellResult::Done(_)));
                    let done = |status: u16, cell: Cell| BatchResult {
                        status,
                        cell: Some(cell),
                        error: None,
                    };
                    let failed = |p: Problem| BatchResult {
                        status: p.status,
                        cell: None,
                        error: Some(p),
                    };
                    results[i] = Some(match o {
                        CellResult::Done(WriteOutcome::Created(c)) => done(201, c),
                        CellResult::Done(WriteOutcome::Existing(c)) => done(200, c),
                        CellResult::Done(WriteOutcome::Conflict(c)) => failed(conflict(&c)),
                        CellResult::Refused(e) => {
                            failed(refused_data(&e, &format!("body.cells[{i}]")))
                        }
                        CellResult::Failed(p) => failed(p),
                        CellResult::Moved(why) => {
                            moved.push((i, c));
                            last_moved = Some(why);
                            continue;
                        }
                    });
                }
                metrics::counter!("mezzanine_shard_writes_total", "shard" => shard.to_string())
                    .increment(written);
            }
        }
        st.stream_written.notify_one();
        drop(topo);
        if let Some(e) = last_moved {
            if let Err(p) = st.wait_out_move(&mut hold, version, &e, size).await {
                for (i, _) in &moved {
                    results[*i] = Some(BatchResult {
                        status: p.status,
                        cell: None,
                        error: Some(p.clone()),
                    });
                }
                break;
            }
        }
        pending = moved;
    }
    let results = results
        .into_iter()
        .map(|r| {
            // Built (and logged) only for a cell that really got no result.
            r.unwrap_or_else(|| BatchResult {
                status: 500,
                cell: None,
                error: Some(Problem::internal("a cell of a batch got no result")),
            })
        })
        .collect();
    Ok(Json(BatchWriteResponse { results }).into_response())
}

/// What became of one cell of a batch.
enum CellResult {
    /// Written (or found written).
    Done(WriteOutcome),
    /// PostgreSQL refused its data ([`is_data_error`]): a 422 for this cell alone.
    Refused(StorageError),
    /// Its backend no longer serves its shard: held and retried at the new place (why, in a
    /// client's words).
    Moved(String),
    /// Anything else, reported in its slot.
    Failed(Problem),
}

/// Writes one backend's shard groups of a batch (one transaction, [`cells::write_shard_groups`])
/// and returns one result per cell, group by group. If PostgreSQL refused some cell's data,
/// the transaction wrote nothing; then every cell is written alone, so that the refused ones
/// get their own 422 and every other is stored whatever its neighbours.
async fn write_backend(
    backend: &mezzanine_storage::Backend,
    groups: &[(u32, Vec<(usize, &NewCell)>)],
) -> Vec<Vec<CellResult>> {
    let inputs: Vec<(u32, Vec<&NewCell>)> = groups
        .iter()
        .map(|(s, g)| (*s, g.iter().map(|(_, c)| *c).collect()))
        .collect();
    let results = cells::write_shard_groups(backend, &inputs).await;
    let cells_in = inputs.iter().map(|(_, g)| g.len()).sum::<usize>();
    let refused = results.iter().any(|r| r.as_ref().is_err_and(is_data_error));
    if refused && cells_in > 1 {
        let mut out = Vec::with_capacity(inputs.len());
        for (shard, group) in &inputs {
            let mut per_cell = Vec::with_capacity(group.len());
            for cell in group {
                let r = cells::write_cells(backend, *shard, &[*cell]).await;
                per_cell.push(match r.map(|mut o| o.pop()) {
                    Ok(Some(o)) => CellResult::Done(o),
                    Ok(None) => CellResult::Failed(Problem::internal("a write got no result")),
                    Err(e) => cell_error(e, *shard),
                });
            }
            out.push(per_cell);
        }
        return out;
    }
    results
        .into_iter()
        .zip(&inputs)
        .map(|(r, (shard, group))| match r {
            Ok(outcomes) => outcomes.into_iter().map(CellResult::Done).collect(),
            Err(e) => group
                .iter()
                .map(|_| cell_error(e.clone(), *shard))
                .collect(),
        })
        .collect()
}

fn cell_error(e: StorageError, shard: u32) -> CellResult {
    if is_data_error(&e) {
        return CellResult::Refused(e);
    }
    match crate::moved_away(&e, shard) {
        Some(why) => CellResult::Moved(why),
        None => CellResult::Failed(Problem::from(e)),
    }
}

fn path_key(row_key: &str, column_name: &str) -> Result<(uuid::Uuid, String), Problem> {
    let mut errors = Vec::new();
    let row = parse_row_key(row_key, "path.row_key")
        .map_err(|e| errors.push(e))
        .ok();
    if let Err(e) = check_column_name(column_name, "path.column_name") {
        errors.push(e);
    }
    match row {
        Some(r) if errors.is_empty() => Ok((r, column_name.to_owned())),
        _ => Err(Problem::invalid(errors)),
    }
}

/// Read one exact version of a cell.
#[utoipa::path(get, path = "/v1/cells/{row_key}/{column_name}/{ref_key}", tag = "cells", operation_id = "get-cell",
    params(("row_key" = String, Path, description = "Row key UUID", format = "uuid"),
           ("column_name" = String, Path, description = "Column name (1 to 255 bytes of UTF-8)", min_length = 1, max_length = 255),
           ("ref_key" = i64, Path, description = "Reference key version")),
    responses((status = 200, description = "The cell", body = CellResponse),
              (status = "default", description = "Error", body = Problem, content_type = "application/problem+json")))]
pub async fn get_cell(
    State(st): State<Arc<AppState>>,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Response, Problem> {
    let Path((row_key, column_name, ref_key)) = path.map_err(path_problem)?;
    let key = path_key(&row_key, &column_name);
    let ref_key = parse_i64(&ref_key, "path.ref_key");
    let ((row_key, column_name), ref_key) = match (key, ref_key) {
        (Ok(k), Ok(r)) => (k, r),
        (Err(mut p), Err(e)) => {
            p.errors.push(e);
            return Err(Problem::invalid(p.errors));
        }
        (Err(p), _) => return Err(p),
        (_, Err(e)) => return Err(Problem::field(e)),
    };
    let shard = shard_for_row_key(&row_key, st.num_shards());
    let key = CellKey {
        row_key,
        column_name,
        ref_key,
    };
    let found = st
        .on_shard(shard, |b| {
            let key = &key;
            async move { cells::get_cell(&b, shard, key).await }
        })
        .await?;
    match found {
        Some(c) => Ok(cell_response(StatusCode::OK, c)),
        None => Err(Problem::not_found(format!(
            "no cell ({}, {}, {})",
            key.row_key, key.column_name, key.ref_key
        ))),
    }
}

/// Read the latest version of a column.
#[utoipa::path(get, path = "/v1/cells/{row_key}/{column_name}", tag = "cells", operation_id = "get-cell-latest",
    params(("row_key" = String, Path, description = "Row key UUID", format = "uuid"),
           ("column_name" = String, Path, description = "Column name (1 to 255 bytes of UTF-8)", min_length = 1, max_length = 255)),
    responses((status = 200, description = "The cell with the highest ref_key", body = CellResponse),
              (status = "default", description = "Error", body = Problem, content_type = "application/problem+json")))]
pub async fn get_latest(
    State(st): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, Problem> {
    let Path((row_key, column_name)) = path.map_err(path_problem)?;
    let (row_key, column_name) = path_key(&row_key, &column_name)?;
    let shard = shard_for_row_key(&row_key, st.num_shards());
    let found = st
        .on_shard(shard, |b| {
            let (row_key, column_name) = (&row_key, &column_name);
            async move { cells::get_latest(&b, shard, row_key, column_name).await }
        })
        .await?;
    match found {
        Some(c) => Ok(cell_response(StatusCode::OK, c)),
        None => Err(Problem::not_found(format!(
            "no cell in column {column_name:?} of row {row_key}"
        ))),
    }
}

/// Read the latest cell of each column of a row.
#[utoipa::path(get, path = "/v1/cells/{row_key}", tag = "cells", operation_id = "get-row",
    params(("row_key" = String, Path, description = "Row key UUID", format = "uuid")),
    responses((status = 200, description = "The row", body = RowResponse),
              (status = "default", description = "Error", body = Problem, content_type = "application/problem+json")))]
pub async fn get_row(
    State(st): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let Path(row_key) = path.map_err(path_problem)?;
    let row = parse_row_key(&row_key, "path.row_key").map_err(Problem::field)?;
    let shard = shard_for_row_key(&row, st.num_shards());
    let cells = st
        .on_shard(shard, |b| {
            let row = &row;
            async move { cells::get_row(&b, shard, row).await }
        })
        .await?;
    Ok(Json(RowResponse {
        row_key: row.to_string(),
        cells,
    })
    .into_response())
}

/// Read a shard's cells in order: read_type 2 by added_id (greater than `added_id`), read_type
/// 1 by created_at (after `created_after`). `limit` ≤ 0 means 100; above 1000 means 1000.
#[utoipa::path(get, path = "/v1/cells/partitionRead", tag = "cells", operation_id = "partition-read",
    params(("partition_number" = i64, Query, description = "Partition (shard) number, from 0 to the number of shards less one", minimum = 0),
           ("read_type" = i64, Query, description = "1 = by created_at, 2 = by added_id", minimum = 1, maximum = 2),
           ("created_after" = Option<String>, Query, description = "Cells created after this RFC 3339 time", format = "date-time"),
           ("added_id" = Option<i64>, Query, description = "Cells with a greater added_id"),
           ("limit" = Option<i64>, Query, description = "Most cells to return (default 100, at most 1000)")),
    responses((status = 200, description = "Cells in order", body = Vec<CellResponse>),
              (status = "default", description = "Error", body = Problem, content_type = "application/problem+json")))]
pub async fn partition_read(
    State(st): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Problem> {
    let q = parse_partition_query(raw.as_deref(), st.num_shards())?;
    let max_bytes = st.config.max_page_bytes;
    let cells = st
        .on_shard(q.partition, |b| async move {
            cells::partition_read(&b, q.partition, q.from, q.limit, max_bytes).await
        })
        .await?;
    Ok(Json(cells).into_response())
}

/// The number of shards.
#[utoipa::path(get, path = "/v1/shards/count", tag = "shards", operation_id = "shard-count",
    responses((status = 200, description = "The number of shards", body = ShardCountResponse),
        (status = "default", description = "Error", body = Problem, content_type = "application/problem+json")))]
pub async fn shard_count(State(st): State<Arc<AppState>>) -> Json<ShardCountResponse> {
    Json(ShardCountResponse {
        num_shards: st.num_shards(),
    })
}
