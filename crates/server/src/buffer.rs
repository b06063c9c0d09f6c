//! Request bodies, read in full before a handler runs, within two bounds: the bytes buffered
//! across all requests at once (`MAX_BUFFERED_BYTES`), and the time a body may take to arrive
//! (`HTTP_READ_TIMEOUT`). A client that announces or sends bodies and then stalls (slowloris)
//! holds at most its share of the first, for at most the second.
//!
//! A body with a `Content-Length` reserves its whole length before any of it is read (so a
//! request that cannot be held is answered 503 at once, before its body is sent); a chunked
//! body reserves its bytes as they arrive. The reservation is released when the request has
//! been answered. Handlers still see an ordinary body.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http_body_util::BodyExt;
use mezzanine_core::FieldError;
use tokio::sync::Semaphore;

use crate::problem::Problem;

/// The bytes of request bodies the server may hold at once.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    max: usize,
}

/// Bytes of a request's body held until it has been answered (given back when dropped).
pub struct Reservation {
    bytes: Arc<Semaphore>,
    n: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.bytes.add_permits(self.n);
    }
}

impl BodyBudget {
    /// A budget of `max` bytes (at most what a semaphore can count).
    pub fn new(max: usize) -> BodyBudget {
        let max = max.min(Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// The bytes of request bodies held now.
    pub fn held(&self) -> usize {
        self.max - self.bytes.available_permits()
    }

    /// Adds `n` bytes to `held` if the budget has them now.
    fn reserve(&self, held: &mut Reservation, n: usize) -> bool {
        let Ok(k) = u32::try_from(n) else {
            return false;
        };
        let Ok(permit) = self.bytes.try_acquire_many(k) else {
            return false;
        };
        permit.forget();
        held.n += n;
        true
    }

    /// The answer when the budget is spent: 503 with `Retry-After`.
    fn spent(&self) -> Response {
        Problem::unavailable(format!(
            "the server holds as many request bytes as it may (MAX_BUFFERED_BYTES={}); retry \
             shortly",
            self.max
        ))
        .into_response()
    }

    fn nothing(&self) -> Reservation {
        Reservation {
            bytes: self.bytes.clone(),
            n: 0,
        }
    }
}

/// Reads `req`'s body in full within `budget`, `limit` bytes (`MAX_BODY_BYTES`) and
/// `timeout` (`HTTP_READ_TIMEOUT`), and gives back the request with the body in memory and
/// the reservation to keep until it has been answered; or the answer: 413 over the limit,
/// 503 with `Retry-After` when the budget is spent, 408 when the body did not arrive in time
/// (the connection is then closed), 400 when it could not be read.
pub async fn take_body(
    req: Request,
    budget: &BodyBudget,
    limit: usize,
    timeout: Duration,
) -> Result<(Request, Option<Reservation>), Response> {
    use axum::body::HttpBody as _;
    if req.body().is_end_stream() {
        return Ok((req, None));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let mut held = budget.nothing();
    if let Some(n) = declared {
        if n > limit {
            return Err(crate::api::too_large(limit).into_response());
        }
        if !budget.reserve(&mut held, n) {
            return Err(budget.spent());
        }
    }
    let (parts, body) = req.into_parts();
    let read = async {
        let mut body = body;
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(0));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| unreadable(&e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            if buf.len() + data.len() > limit {
                return Err(crate::api::too_large(limit).into_response());
            }
            if declared.is_none() && !budget.reserve(&mut held, data.len()) {
                return Err(budget.spent());
            }
            buf.extend_from_slice(&data);
        }
        Ok::<Bytes, Response>(buf.freeze())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(bytes)) => Ok((Request::from_parts(parts, Body::from(bytes)), Some(held))),
        Ok(Err(resp)) => Err(resp),
        Err(_) => Err(too_slow(timeout)),
    }
}

fn unreadable(cause: &str) -> Response {
    let mut p = Problem::new(
        StatusCode::BAD_REQUEST,
        format!("the request body could not be read: {cause}"),
    );
    p.errors
        .push(FieldError::new("body", "could not be read", None));
    p.into_response()
}

/// 408 for a body that did not arrive within `HTTP_READ_TIMEOUT`; the connection is closed.
fn too_slow(timeout: Duration) -> Response {
    let mut p = Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request body did not arrive within HTTP_READ_TIMEOUT ({})",
            humantime(timeout)
        ),
    );
    p.errors
        .push(FieldError::new("body", "arrived too slowly", None));
    let mut resp = p.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// A duration as the configuration writes it (`15s`, `250ms`).
fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
