//! RFC 9457 problem details (`application/problem+json`).
//!
//! A fault of the server or of its databases is a 500 whose cause is logged once with the
//! request's id ([`Problem::internal`]); a `/v1` client is told only that and the id to
//! quote, never PostgreSQL's words (which may quote SQL) nor another internal message.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mezzanine_core::FieldError;
use mezzanine_storage::StorageError;
use serde::Serialize;

/// A problem answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong in this occurrence.
    pub detail: String,
    /// The individual faults, each naming its field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<ErrorDetail>)]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

/// One fault of a problem.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Where: `body.row_key`, `path.ref_key`, `query.limit`.
    pub location: String,
    /// What is wrong.
    pub message: String,
    /// The value at fault.
    pub value: Option<serde_json::Value>,
}

tokio::task_local! {
    /// The request being answered (set by the HTTP edge for the whole handler).
    static REQUEST: RequestContext;
}

/// What a problem needs to know about the request it answers.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Its `X-Request-ID`.
    pub id: String,
    /// Whether it is a client's (everything but `/admin/`): its 5xx problems carry no
    /// internal message.
    pub public: bool,
}

/// Runs `f` (a request's handling) with `ctx` as the request that problems answer.
pub async fn in_request<F: Future>(ctx: RequestContext, f: F) -> F::Output {
    REQUEST.scope(ctx, f).await
}

impl Problem {
    /// 500 for a fault of the server or of a database: `cause` is logged with the request id;
    /// a client of `/v1` gets a generic detail with that id, an operator (`/admin/v1`, or a
    /// caller outside any request) the cause itself.
    pub fn internal(cause: impl Display) -> Problem {
        let ctx = REQUEST.try_with(|c| c.clone()).ok();
        let id = ctx.as_ref().map_or("", |c| c.id.as_str());
        tracing::error!(request_id = id, error = %cause, "internal error");
        let detail = match &ctx {
            Some(c) if c.public => format!(
                "internal error; its cause is in the server's log under request id {:?}",
                c.id
            ),
            _ => cause.to_string(),
        };
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }

    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            type_: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 422 with the faults of individual fields.
    pub fn invalid(errors: Vec<FieldError>) -> Problem {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.location, one.message),
            _ => format!("{} fields are invalid", errors.len()),
        };
        Problem {
            errors,
            ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
        }
    }

    /// 422 for one field.
    pub fn field(e: FieldError) -> Problem {
        Problem::invalid(vec![e])
    }

    /// 503 with `Retry-After: 1`: try again shortly.
    pub fn unavailable(detail: impl Into<String>) -> Problem {
        Problem {
            retry_after: Some(Duration::from_secs(1)),
            ..Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail)
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<StorageError> for Problem {
    fn from(e: StorageError) -> Problem {
        match &e {
            StorageError::Unavailable { .. } | StorageError::NotServed { .. } => Problem {
                retry_after: e.retry_after(),
                ..Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            },
            StorageError::Database { .. }
            | StorageError::Layout { .. }
            | StorageError::Refused { .. }
            | StorageError::Superseded { .. }
            | StorageError::BadUrl { .. } => Problem::internal(e),
        }
    }
}

impl From<mezzanine_catalog::CatalogError> for Problem {
    fn from(e: mezzanine_catalog::CatalogError) -> Problem {
        use mezzanine_catalog::CatalogError as E;
        let status = match &e {
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Conflict(_) | E::PluginNameTaken(_) | E::Cluster(_) => StatusCode::CONFLICT,
            E::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::Storage(s) => return Problem::from(s.clone()),
            E::Session(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::NumShards { .. } | E::Corrupt(_) => return Problem::internal(e),
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return Problem::unavailable(e.to_string());
        }
        Problem::new(status, e.to_string())
    }
}

impl Problem {
    /// The answer, with `instance` (RFC 9457: the occurrence; here the request's path).
    pub fn into_response_at(self, instance: &str) -> Response {
        let mut body = serde_json::to_value(&self).unwrap_or_default();
        body["instance"] = instance.into();
        self.answer(serde_json::to_vec(&body).unwrap_or_default())
    }

    fn answer(&self, body: Vec<u8>) -> Response {
        let status = self.status_code();
        let retry = self.retry_after.map(|d| d.as_secs().max(1));
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        self.answer(body)
    }
}
