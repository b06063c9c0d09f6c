//! The HTTP side of the admin commands: one request, its answer, and the errors an operator
//! can act on (server unreachable, RFC 9457 problem, answer not understood).

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// Time allowed to open a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a whole request, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an admin request did not give an answer to use.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No connection could be made (or none answered in time).
    #[error(
        "cannot reach the mezzanine server at {server} ({cause}); is it running? \
         Point at it with --server URL or MEZZANINE_URL"
    )]
    Unreachable { server: String, cause: String },
    /// The TLS handshake failed (an untrusted certificate, a client certificate missing).
    #[error(
        "TLS with the mezzanine server at {server} failed: {cause}; for a server whose \
         certificate a private CA signed, trust that CA with --cacert FILE (MEZZANINE_CACERT); \
         a server that requires client certificates needs --client-cert and --client-key"
    )]
    Tls { server: String, cause: String },
    /// The connection was made but the request did not complete.
    #[error("{method} {url}: {cause}")]
    Transport {
        method: Method,
        url: String,
        cause: String,
    },
    /// The server answered with an error status; `message` is the problem's detail or title.
    #[error("{message}")]
    Problem { status: u16, message: String },
    /// A success status whose body is not what this command expects.
    #[error("unexpected answer to {method} {url}: {why}")]
    Unexpected {
        method: Method,
        url: String,
        why: String,
    },
}

impl ApiError {
    /// A failure that a later attempt may not meet (the server restarting, a network blip).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Transport { .. })
            || matches!(self, Self::Problem { status, .. } if *status == 502 || *status == 503 || *status == 504)
    }
}

/// An answer with a success status.
pub struct Answer {
    pub method: Method,
    pub url: String,
    pub body: Bytes,
}

impl Answer {
    /// Decodes the body into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| ApiError::Unexpected {
            method: self.method.clone(),
            url: self.url.clone(),
            why: e.to_string(),
        })
    }

    /// The body pretty-printed, for `--json`; empty for an empty body (204).
    pub fn pretty(&self) -> Result<String, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(String::new());
        }
        super::json::pretty(&self.body).ok_or_else(|| ApiError::Unexpected {
            method: self.method.clone(),
            url: self.url.clone(),
            why: format!("not JSON: {}", excerpt(&self.body)),
        })
    }
}

/// A client of one node's admin API.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    /// Query parameters of every request (`with_secrets=true`, `limit=100`).
    query: Vec<(&'static str, String)>,
}

impl Client {
    /// A client of the node of `conn`, sending its token ([`super::Conn::token`]) and
    /// speaking TLS as its options say ([`crate::tls`]).
    pub async fn for_conn(conn: &super::Conn) -> anyhow::Result<Self> {
        let tls = conn.tls.client_config().await?;
        Self::with_token(&conn.server, conn.token().as_deref(), tls)
    }

    /// A client of the node at `server` (`http://host:port`, possibly with a path prefix).
    #[cfg(test)]
    pub fn new(server: &str) -> anyhow::Result<Self> {
        Self::with_token(server, None, crate::tls::default_config()?)
    }

    /// A client of the node at `server` sending `token` (as `Authorization: Bearer`), with
    /// `tls` for an `https://` server.
    pub fn with_token(
        server: &str,
        token: Option<&str>,
        tls: rustls::ClientConfig,
    ) -> anyhow::Result<Self> {
        let base = Url::parse(server.trim()).map_err(|e| {
            anyhow::anyhow!(
                "invalid server URL {server:?} ({e}); expected for instance http://127.0.0.1:8080 \
                 (--server or MEZZANINE_URL)"
            )
        })?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            anyhow::bail!(
                "invalid server URL {server:?}: expected http://HOST:PORT or https://HOST:PORT (--server or MEZZANINE_URL)"
            );
        }
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .default_headers(crate::token::bearer_headers(token)?)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self {
            http,
            base,
            query: Vec::new(),
        })
    }

    /// The same client, adding `key=value` to the query of its requests.
    pub fn with_query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }

    /// The URL of `segments` under the admin API (`/admin/v1/...`), each segment encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["admin", "v1"]).extend(segments);
        }
        if !self.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&self.query);
        }
        url
    }

    /// `GET /admin/v1/<segments>`.
    pub async fn get(&self, segments: &[&str]) -> Result<Answer, ApiError> {
        self.call(Method::GET, segments, None, None).await
    }

    /// `POST /admin/v1/<segments>` with a JSON body (or none).
    pub async fn post(&self, segments: &[&str], body: Option<Value>) -> Result<Answer, ApiError> {
        self.call(Method::POST, segments, body, None).await
    }

    /// `DELETE /admin/v1/<segments>`.
    pub async fn delete(&self, segments: &[&str]) -> Result<Answer, ApiError> {
        self.call(Method::DELETE, segments, None, None).await
    }

    /// One request; `timeout` replaces [`REQUEST_TIMEOUT`] for the slow ones (verify).
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Value>,
        timeout: Option<Duration>,
    ) -> Result<Answer, ApiError> {
        let url = self.url(segments);
        let shown = url.to_string();
        let mut req = self
            .http
            .request(method.clone(), url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = &body {
            req = req.json(body);
        }
        if let Some(timeout) = timeout {
            req = req.timeout(timeout);
        }
        let transport = |e: reqwest::Error| self.transport_error(&method, &shown, e, timeout);
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(ApiError::Problem {
                status: status.as_u16(),
                message: problem_message(status.as_u16(), &body),
            });
        }
        Ok(Answer {
            method,
            url: shown,
            body,
        })
    }

    fn transport_error(
        &self,
        method: &Method,
        url: &str,
        e: reqwest::Error,
        timeout: Option<Duration>,
    ) -> ApiError {
        let cause = root_cause(&e);
        if let Some(tls) = tls_cause(&e) {
            ApiError::Tls {
                server: self.base.as_str().trim_end_matches('/').to_owned(),
                cause: tls,
            }
        } else if e.is_connect() {
            ApiError::Unreachable {
                server: self.base.as_str().trim_end_matches('/').to_owned(),
                cause,
            }
        } else if e.is_timeout() {
            let limit = timeout.unwrap_or(REQUEST_TIMEOUT).as_secs();
            ApiError::Transport {
                method: method.clone(),
                url: url.to_owned(),
                cause: format!("no answer within {limit} s"),
            }
        } else {
            ApiError::Transport {
                method: method.clone(),
                url: url.to_owned(),
                cause,
            }
        }
    }
}

/// The innermost cause of an error ("Connection refused (os error 111)"), which says more to
/// an operator than reqwest's outer "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// The TLS error among the causes of `e`, if any.
fn tls_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // An I/O error's `source` skips the error it wraps: go into that one.
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// What to tell the operator about an error answer: the problem's `detail`, else its `title`,
/// else a short plain-text body, else the status.
pub fn problem_message(status: u16, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Problem {
        title: Option<String>,
        detail: Option<String>,
    }
    let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    if let Ok(p) = serde_json::from_slice::<Problem>(body) {
        if let Some(text) = non_empty(p.detail).or(non_empty(p.title)) {
            return text;
        }
    }
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error");
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let looks_plain = !text.is_empty() && !text.starts_with(['{', '[', '<']);
    if looks_plain {
        format!("HTTP {status} {reason}: {}", excerpt(text.as_bytes()))
    } else {
        format!("HTTP {status} {reason}")
    }
}

/// At most 200 characters of a body, for messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detail_wins_then_the_title() {
        let both =
            br#"{"type":"about:blank","title":"Not Found","status":404,"detail":"no move 9"}"#;
        assert_eq!(problem_message(404, both), "no move 9");
        let title = br#"{"type":"about:blank","title":"Conflict","status":409}"#;
        assert_eq!(problem_message(409, title), "Conflict");
        let blank = br#"{"title":"Conflict","detail":"  "}"#;
        assert_eq!(problem_message(409, blank), "Conflict");
    }

    #[test]
    fn a_body_that_is_not_a_problem_falls_back_to_the_status() {
        assert_eq!(problem_message(502, b""), "HTTP 502 Bad Gateway");
        assert_eq!(
            problem_message(502, b"<html>bad gateway</html>"),
            "HTTP 502 Bad Gateway"
        );
        assert_eq!(
            problem_message(500, br#"{"x":1}"#),
            "HTTP 500 Internal Server Error"
        );
        assert_eq!(
            problem_message(503, b"upstream down\n"),
            "HTTP 503 Service Unavailable: upstream down"
        );
        assert_eq!(problem_message(599, b""), "HTTP 599 error");
    }

    #[test]
    fn urls_keep_a_path_prefix_and_encode_segments() {
        let c = Client::new("http://h:8080/mezz/").unwrap();
        assert_eq!(
            c.url(&["backends", "a b/c"]).as_str(),
            "http://h:8080/mezz/admin/v1/backends/a%20b%2Fc"
        );
        let c = Client::new("http://h:8080").unwrap();
        assert_eq!(c.url(&["shards"]).as_str(), "http://h:8080/admin/v1/shards");
    }

    #[test]
    fn bad_server_urls_are_refused() {
        assert!(Client::new("127.0.0.1:8080").is_err());
        assert!(Client::new("not a url").is_err());
        assert!(Client::new("mailto:x@y").is_err());
    }

    #[test]
    fn transient_errors() {
        let p = |status| ApiError::Problem {
            status,
            message: String::new(),
        };
        assert!(p(503).is_transient());
        assert!(!p(404).is_transient());
        let u = ApiError::Unreachable {
            server: "s".into(),
            cause: "c".into(),
        };
        assert!(u.is_transient());
    }
}
