//! Raw HTTP/1.1 over TCP, for what an HTTP client would refuse to send or would normalise:
//! malformed heads, duplicate headers, stalled bodies, many connections.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer read off a socket.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    pub status: u16,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawAnswer {
    /// The first value of header `name` (lower case), or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// Panics unless this is an RFC 9457 problem of `status` with an `X-Request-ID`.
    pub fn assert_problem(&self, status: u16, what: &str) -> serde_json::Value {
        assert_eq!(self.status, status, "{what}: {self:?}");
        assert!(
            self.header("content-type")
                .starts_with("application/problem+json"),
            "{what}: not a problem: {self:?}"
        );
        assert!(
            !self.header("x-request-id").is_empty(),
            "{what}: no X-Request-ID: {self:?}"
        );
        let p = self.json();
        assert_eq!(p["status"], status, "{what}: {self:?}");
        assert!(
            p["title"].as_str().is_some_and(|t| !t.is_empty())
                && p["detail"].as_str().is_some_and(|t| !t.is_empty()),
            "{what}: {p}"
        );
        p
    }
}

/// The `host:port` of a base URL such as `http://127.0.0.1:1234`.
pub fn addr_of(base: &str) -> &str {
    base.trim_start_matches("http://")
}

/// Opens a connection to `base`.
pub async fn connect(base: &str) -> TcpStream {
    match TcpStream::connect(addr_of(base)).await {
        Ok(s) => s,
        Err(e) => panic!("cannot connect to {base}: {e}"),
    }
}

/// Reads one answer (after any `1xx` interim answers) from `s`, within `within`; `None` if
/// the connection ended, failed or stayed silent first.
pub async fn read_answer(s: &mut TcpStream, within: Duration) -> Option<RawAnswer> {
    let mut buf: Vec<u8> = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(a) = parse_answer(&buf) {
            return Some(a);
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return parse_answer_at_end(&buf),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads the interim `100 Continue` (true), or a final answer instead (false, with it).
pub async fn read_continue(s: &mut TcpStream, within: Duration) -> Result<(), Option<RawAnswer>> {
    let mut buf: Vec<u8> = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if buf.starts_with(b"HTTP/1.1 100") {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                if end + 4 == buf.len() {
                    return Ok(());
                }
            }
        } else if let Some(a) = parse_answer(&buf) {
            return Err(Some(a));
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Err(parse_answer_at_end(&buf)),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends `bytes` on a new connection and reads the answer (the connection is closed after).
pub async fn exchange(base: &str, bytes: &[u8]) -> Option<RawAnswer> {
    let mut s = connect(base).await;
    // The server may answer before reading everything; a failed write is fine then.
    let _ = s.write_all(bytes).await;
    read_answer(&mut s, Duration::from_secs(20)).await
}

/// `METHOD TARGET HTTP/1.1` with `headers` (each `Name: value`), a Host header and
/// `Connection: close`, then `body`.
pub fn request(head: &str, headers: &[String], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{head}\r\nHost: mezzanine\r\nConnection: close\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A whole answer at the start of `buf` (interim answers skipped), if it has arrived.
fn parse_answer(buf: &[u8]) -> Option<RawAnswer> {
    let mut rest = buf;
    loop {
        let end = find(rest, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let body = &rest[end + 4..];
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        if (100..200).contains(&status) {
            rest = body;
            continue;
        }
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let body = if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            if body.len() < len {
                return None;
            }
            String::from_utf8_lossy(&body[..len]).into_owned()
        } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            dechunk(body)?
        } else {
            return None; // until the connection ends
        };
        return Some(RawAnswer {
            status,
            headers,
            body,
        });
    }
}

/// What `buf` holds once the connection ended: an answer whose body runs to the end.
fn parse_answer_at_end(buf: &[u8]) -> Option<RawAnswer> {
    if let Some(a) = parse_answer(buf) {
        return Some(a);
    }
    let end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(RawAnswer {
        status,
        headers,
        body: String::from_utf8_lossy(&buf[end + 4..]).into_owned(),
    })
}

fn dechunk(mut s: &[u8]) -> Option<String> {
    let mut out = Vec::new();
    loop {
        let line_end = find(s, b"\r\n")?;
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&s[..line_end]).trim(), 16).ok()?;
        s = &s[line_end + 2..];
        if size == 0 {
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        if s.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&s[..size]);
        s = &s[size + 2..];
    }
}
