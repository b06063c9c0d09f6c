//! Calling a plugin: one HTTP client per plugin (its own keep-alive pool, so one plugin's
//! connections never wait for another's), `TRIGGER_RPC_TIMEOUT` on every call, redirects
//! never followed, and every address a name resolves to checked against
//! `PLUGIN_HOSTS_ALLOWED` before a connection ([`CheckedResolver`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mezzanine_core::hosts::HostsAllowed;
use mezzanine_core::plugin::check_endpoint;
use mezzanine_core::trigger::{address_allowed, classify, Outcome, MAX_ANSWER_BYTES};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Resolves a plugin's host name and keeps only the addresses `PLUGIN_HOSTS_ALLOWED` allows
/// ([`address_allowed`]): a name that resolves to a forbidden address later than its
/// registration is refused at the call (the call is then *unavailable*, with why).
struct CheckedResolver {
    hosts: HostsAllowed,
    port: u16,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let hosts = self.hosts.clone();
        let port = self.port;
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
                .await?
                .collect();
            let mut why = None;
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match address_allowed(&hosts, &name, port, a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        why = Some(e);
                        false
                    }
                })
                .collect();
            if kept.is_empty() {
                let why = why.unwrap_or_else(|| format!("{name} resolves to no address"));
                return Err(why.into());
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// A plugin's caller.
pub struct Caller {
    client: reqwest::Client,
    endpoint: String,
    /// Why this node will not call the endpoint (its host is not allowed here, say).
    refused: Option<String>,
}

impl Caller {
    /// A caller of `endpoint`, with at most `pool` idle connections kept.
    pub fn new(endpoint: &str, hosts: &HostsAllowed, timeout: Duration, pool: usize) -> Caller {
        let (port, refused) = match check_endpoint(endpoint, "endpoint", hosts) {
            Ok(url) => (url.port_or_known_default().unwrap_or(80), None),
            Err(e) => (
                80,
                Some(format!(
                    "this node does not call {endpoint}: {} (PLUGIN_HOSTS_ALLOWED)",
                    e.message
                )),
            ),
        };
        let built = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(pool)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .dns_resolver(Arc::new(CheckedResolver {
                hosts: hosts.clone(),
                port,
            }))
            .build();
        let (client, refused) = match built {
            Ok(c) => (c, refused),
            Err(e) => (
                reqwest::Client::new(),
                Some(format!("no HTTP client for {endpoint}: {e}")),
            ),
        };
        Caller {
            client,
            endpoint: endpoint.to_owned(),
            refused,
        }
    }

    /// Sends one request body and judges the answer.
    pub async fn call(&self, body: Vec<u8>) -> Outcome {
        if let Some(why) = &self.refused {
            return Outcome::Unavailable(why.clone());
        }
        let sent = self
            .client
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => return Outcome::Unavailable(cause(&e)),
        };
        let status = resp.status().as_u16();
        let mut answer = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    let room = MAX_ANSWER_BYTES.saturating_sub(answer.len());
                    answer.extend_from_slice(&c[..c.len().min(room)]);
                    if answer.len() >= MAX_ANSWER_BYTES {
                        break;
                    }
                }
                Ok(None) => break,
                // A 2xx whose body breaks off is not known to be taken: send it again.
                Err(e) if (200..300).contains(&status) => {
                    return Outcome::Unavailable(cause(&e));
                }
                Err(_) => break,
            }
        }
        classify(status, &answer)
    }
}

/// A transport error with its causes, in one line (no secret: endpoints carry none).
fn cause(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        format!("no answer in time: {e}")
    } else {
        e.to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = c.source();
    }
    s
}
