//! RFC 9457 problem details (`application/problem+json`).

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

impl Problem {
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
        let retry_after = e.retry_after();
        let status = match &e {
            StorageError::Unavailable { .. } | StorageError::NotServed { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            StorageError::Database { .. }
            | StorageError::Layout { .. }
            | StorageError::Refused { .. }
            | StorageError::BadUrl { .. } => {
                tracing::error!(error = %e, "storage error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Problem {
            retry_after,
            ..Problem::new(status, e.to_string())
        }
    }
}

impl From<mezzanine_catalog::CatalogError> for Problem {
    fn from(e: mezzanine_catalog::CatalogError) -> Problem {
        use mezzanine_catalog::CatalogError as E;
        let status = match &e {
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Conflict(_) => StatusCode::CONFLICT,
            E::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::Storage(s) => return Problem::from(s.clone()),
            E::Session(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::NumShards { .. } | E::Corrupt(_) => {
                tracing::error!(error = %e, "catalog error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return Problem::unavailable(e.to_string());
        }
        Problem::new(status, e.to_string())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry = self.retry_after.map(|d| d.as_secs().max(1));
        let body = serde_json::to_vec(&self).unwrap_or_default();
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
