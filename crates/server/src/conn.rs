//! Connections: how many may be open (`MAX_CONNECTIONS`), what the server answers beyond
//! that, and the answers hyper writes by itself.
//!
//! **Beyond `MAX_CONNECTIONS`** a new connection is still accepted, but only to be answered:
//! its first request gets a 503 problem with `Retry-After` and `X-Request-ID`, and the
//! connection is closed. At most [`MAX_REFUSING`] such connections are being answered at
//! once, each for at most `HTTP_READ_TIMEOUT` (the wait for its request's head); beyond
//! those, a new connection is closed at once without an answer. With TLS
//! ([`crate::tls`]) a connection counts from its acceptance, its handshake included, and one
//! beyond the limit is answered after its handshake (both within `HTTP_READ_TIMEOUT`).
//!
//! **Answers hyper writes itself.** When the head of an HTTP/1 request cannot be parsed
//! (a malformed request line, a bad header, `Content-Length` headers that disagree, too many
//! or too large headers, an over-long target), hyper answers 400, 431 or 414 itself, with an
//! empty body, and closes the connection; it offers no hook for that answer. [`Answering`]
//! sits between hyper and the socket and replaces such an answer, recognised as a 4xx/5xx
//! head without a body and without the `X-Request-ID` every answer of the application
//! carries, with a problem document of the same status and a new request id, so those
//! errors too are RFC 9457 problems. What cannot be answered: a connection whose head does
//! not arrive within `HTTP_READ_TIMEOUT` is closed without an answer (there is no request to
//! answer), and HTTP/2 protocol errors are frames (`RST_STREAM`, `GOAWAY`), not answers.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::http::StatusCode;
use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::problem::Problem;

/// What bounds the connections of [`crate::http::serve`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `HTTP_READ_TIMEOUT`: the wait for a request's head (and, in the application, for its
    /// body).
    pub read_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT`: the wait for the next request on a kept-alive connection.
    pub idle_timeout: Duration,
    /// How long requests in flight may finish after the shutdown began.
    pub drain_timeout: Duration,
    /// `MAX_CONNECTIONS`.
    pub max_connections: usize,
}

impl Limits {
    /// The limits `config` sets (the drain timeout is `HTTP_WRITE_TIMEOUT`).
    pub fn of(config: &crate::ServeConfig) -> Limits {
        Limits {
            read_timeout: config.http_read_timeout,
            idle_timeout: config.http_idle_timeout,
            drain_timeout: config.http_write_timeout,
            max_connections: config.max_connections,
        }
    }
}

/// Most connections beyond `MAX_CONNECTIONS` being answered 503 at once.
pub const MAX_REFUSING: usize = 64;

/// Most bytes of an HTTP/1 request's head (request line and headers): hyper's read buffer
/// per connection. A larger head is answered 431 (as a problem, by [`Answering`]).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Longest request target accepted (path and query); a longer one is answered 414.
pub const MAX_URI_BYTES: usize = 16 * 1024;

/// A connection's socket, with hyper's own error answers replaced by problems.
pub struct Answering<S> {
    inner: S,
    /// The replacement still to be written.
    replacement: Option<Bytes>,
    /// Once an answer was replaced, what hyper writes after it is dropped (it closes the
    /// connection anyway).
    replaced: bool,
    peer: String,
}

impl<S> Answering<S> {
    pub fn new(inner: S, peer: String) -> Self {
        Answering {
            inner,
            replacement: None,
            replaced: false,
            peer,
        }
    }
}

impl<S: AsyncWrite + Unpin> Answering<S> {
    /// Writes out what is left of the replacement.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(buf) = self.replacement.as_mut() {
            if buf.is_empty() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            buf.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Whether `buf` (what hyper writes now) is an answer of hyper's own; if so, takes it
    /// over.
    fn take_over(&mut self, buf: &[u8]) -> bool {
        if self.replaced {
            return true;
        }
        let Some(status) = automatic_answer(buf) else {
            return false;
        };
        let id = uuid::Uuid::new_v4().to_string();
        tracing::info!(request_id = %id, status = status.as_u16(), peer = %self.peer, "a request whose head could not be read answered");
        crate::metrics::count_unread(status);
        self.replacement = Some(problem_answer(status, &id));
        self.replaced = true;
        true
    }
}

/// The status of `buf` if it is an answer hyper wrote by itself: a whole 4xx or 5xx head
/// with `content-length: 0`, no body and no `x-request-id` (which every answer of the
/// application carries).
pub fn automatic_answer(buf: &[u8]) -> Option<StatusCode> {
    if !(buf.starts_with(b"HTTP/1.1 ") || buf.starts_with(b"HTTP/1.0 ")) {
        return None;
    }
    let status = buf
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())?;
    if !(status.is_client_error() || status.is_server_error()) || !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head = String::from_utf8_lossy(buf).to_ascii_lowercase();
    if head.matches("\r\n\r\n").count() != 1
        || head.contains("\r\nx-request-id:")
        || !head.contains("\r\ncontent-length: 0\r\n")
    {
        return None;
    }
    Some(status)
}

/// A whole HTTP/1.1 answer: a problem of `status`, with `id` as its `X-Request-ID`; the
/// connection is closed after it.
pub fn problem_answer(status: StatusCode, id: &str) -> Bytes {
    let detail = match status {
        StatusCode::BAD_REQUEST => "the request could not be read as HTTP/1.1: its request line \
             (method, target, version) or a header is malformed (a bad header name or value, or \
             Content-Length headers that disagree or are not numbers)"
            .to_owned(),
        StatusCode::URI_TOO_LONG => "the request target is too long".to_owned(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => format!(
            "the request's head is too large: at most {MAX_HEAD_BYTES} bytes of request line and \
             headers, and at most 100 headers"
        ),
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    let p = Problem::new(status, detail);
    let body = serde_json::to_vec(&p).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n\
         x-request-id: {id}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    Bytes::from(out)
}

impl<S: AsyncRead + Unpin> AsyncRead for Answering<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Answering<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        if this.take_over(buf) {
            ready!(this.poll_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        // hyper's own answers are a head alone: one slice.
        let first = bufs.iter().find(|b| !b.is_empty());
        let whole = bufs.iter().filter(|b| !b.is_empty()).count() == 1;
        if this.replaced || (whole && first.is_some_and(|b| this.take_over(b))) {
            this.replaced = true;
            ready!(this.poll_replacement(cx))?;
            return Poll::Ready(Ok(total));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The answer to every request of a connection beyond `MAX_CONNECTIONS`: 503 with
/// `Retry-After`, the client's `X-Request-ID` or a new one, and the connection closed.
pub fn over_capacity(req: &axum::http::request::Parts, max: usize) -> axum::response::Response {
    use axum::http::{header, HeaderValue};
    use axum::response::IntoResponse;
    let id = req.headers.get("x-request-id").cloned().unwrap_or_else(|| {
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .unwrap_or(HeaderValue::from_static("-"))
    });
    crate::metrics::count_unread(StatusCode::SERVICE_UNAVAILABLE);
    let mut resp = Problem::unavailable(format!(
        "the server has as many connections open as it may (MAX_CONNECTIONS={max}); retry shortly"
    ))
    .into_response();
    resp.headers_mut().insert("x-request-id", id);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_own_answers_are_recognised() {
        let own = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n";
        assert_eq!(automatic_answer(own), Some(StatusCode::BAD_REQUEST));
        let own = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            automatic_answer(own),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        // The application's answers carry a request id, or a body, or are not errors.
        for theirs in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-request-id: 1\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"{\"HTTP/1.1 400\"}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
        ] {
            assert_eq!(automatic_answer(theirs), None, "{}", String::from_utf8_lossy(theirs));
        }
    }

    #[test]
    fn the_replacement_is_a_problem_with_an_id() {
        let a = problem_answer(StatusCode::BAD_REQUEST, "abc");
        let text = String::from_utf8_lossy(&a);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(head.contains("\r\nx-request-id: abc"));
        assert!(head.contains("\r\ncontent-type: application/problem+json"));
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())));
        let p: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(p["status"], 400);
        assert!(p["detail"].as_str().unwrap().contains("Content-Length"));
    }
}
