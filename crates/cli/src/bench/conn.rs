//! The load generator's HTTP client for the measured phases: each worker owns one kept-alive
//! HTTP/1.1 connection (hyper's connection API, TCP_NODELAY, TLS for an `https://` server), so that nothing is shared
//! between workers (no pool to check out from, no lock) and the client's own cost per request,
//! which runs on the same machine as the server it measures, stays small. The rest of the
//! bench (seeding, readiness, metrics) uses reqwest.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::http::Refused;

/// Bound on opening a connection (each request is bounded by the runner's `OP_TIMEOUT`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the server listens, from its `http://host:port` or `https://host:port` URL.
#[derive(Clone)]
pub struct Target {
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    /// The `Authorization` header, when the bench has a token.
    authorization: Option<hyper::header::HeaderValue>,
    /// For an `https://` server: the connector, and the name its certificate must carry.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .finish_non_exhaustive()
    }
}

impl Target {
    /// The target of `server`; `tls` for an `https://` one.
    pub fn parse(server: &str, tls: &rustls::ClientConfig) -> anyhow::Result<Target> {
        let uri: Uri = server
            .parse()
            .with_context(|| format!("--server {server:?} is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => bail!("--server {server:?}: give an http:// or https:// URL"),
        };
        if !matches!(uri.path(), "" | "/") {
            bail!("--server {server:?}: give the server's root URL, without a path");
        }
        let Some(authority) = uri.authority() else {
            bail!("--server {server:?} names no host");
        };
        let host = authority.host().trim_matches(['[', ']']).to_owned();
        let tls = match https {
            false => None,
            true => {
                let name =
                    rustls::pki_types::ServerName::try_from(host.clone()).with_context(|| {
                        format!("--server {server:?}: {host:?} is no TLS server name")
                    })?;
                let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls.clone()));
                Some((connector, name))
            }
        };
        Ok(Target {
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            host,
            authority: authority.as_str().to_owned(),
            authorization: None,
            tls,
        })
    }

    /// The same target, with `token` sent as a bearer token.
    pub fn with_token(mut self, token: Option<&str>) -> anyhow::Result<Target> {
        self.authorization =
            crate::token::bearer_headers(token)?.remove(hyper::header::AUTHORIZATION);
        Ok(self)
    }
}

/// One worker's connection, opened on first use and opened again after a failure.
pub struct Conn {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(target: Target) -> Conn {
        Conn {
            target,
            sender: None,
        }
    }

    /// Sends a request (a JSON body when `body` is given) and reads the whole answer; a
    /// status other than 2xx is a [`Refused`] error.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Bytes> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.target.authority);
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        if let Some(auth) = &self.target.authorization {
            req = req.header(hyper::header::AUTHORIZATION, auth.clone());
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let sender = self.ready().await?;
        let answer = async move {
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        };
        match answer.await {
            Ok((status, bytes)) => Refused::check(status.as_u16(), bytes),
            Err(e) => {
                // The connection is in an unknown state: the next request opens another.
                self.sender = None;
                Err(e)
            }
        }
    }

    /// The connection, ready for a request.
    async fn ready(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if let Some(s) = &mut self.sender {
            if s.ready().await.is_err() {
                self.sender = None;
            }
        }
        if self.sender.is_none() {
            self.sender = Some(self.open().await?);
        }
        self.sender
            .as_mut()
            .context("the connection to the server closed")
    }

    async fn open(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let t = &self.target;
        let connect = TcpStream::connect((t.host.as_str(), t.port));
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .with_context(|| {
                format!(
                    "no connection to {} within {CONNECT_TIMEOUT:?}",
                    t.authority
                )
            })?
            .with_context(|| format!("cannot connect to {}", t.authority))?;
        stream.set_nodelay(true)?;
        let Some((connector, name)) = &t.tls else {
            return start(stream).await;
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), stream))
            .await
            .with_context(|| {
                format!(
                    "no TLS handshake with {} within {CONNECT_TIMEOUT:?}",
                    t.authority
                )
            })?
            .with_context(|| format!("TLS with {} failed", t.authority))?;
        start(stream).await
    }
}

/// HTTP/1.1 on `io`, driven by a task of its own (which ends when the sender is dropped or
/// the server closes the connection).
async fn start<IO>(io: IO) -> anyhow::Result<SendRequest<Full<Bytes>>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> anyhow::Result<Target> {
        Target::parse(url, &crate::tls::default_config().unwrap())
    }

    #[test]
    fn a_server_url_names_host_port_and_host_header() {
        let t = parse("http://localhost:8080").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("localhost", 8080));
        assert_eq!(t.authority, "localhost:8080");
        assert!(t.tls.is_none());
        let t = parse("http://10.0.0.7/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.7", 80));
        let t = parse("http://[::1]:9").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        let t = parse("https://mezz.example").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("mezz.example", 443));
        assert!(t.tls.is_some());
        let t = parse("https://127.0.0.1:8443").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8443));
    }

    #[test]
    fn other_urls_are_refused_saying_why() {
        for (url, why) in [
            ("ftp://localhost:8080", "http:// or https://"),
            ("http://localhost:8080/v1", "without a path"),
            ("localhost 8080", "not a URL"),
        ] {
            let e = parse(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
