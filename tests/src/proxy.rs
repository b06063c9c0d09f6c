//! A TCP proxy in front of a PostgreSQL server, for partition tests: a node whose catalog
//! URL goes through it can be cut off from the catalog *silently*.
//!
//! - Until the cut, every connection is forwarded byte for byte to the server.
//! - [`PgProxy::cut_silently`] closes every upstream (server-side) connection at once, so
//!   PostgreSQL ends those sessions and releases their session-level advisory locks (the
//!   mover's leadership) right away, while the client-side sockets stay open: the proxy keeps
//!   reading what the node sends and discards it, never answers and never closes. The node
//!   sees a peer that takes its bytes and never says a word, the way a partition (or a hung
//!   middlebox: a pooler, a sidecar, a load balancer) looks from its side.
//! - Connections made after the cut are accepted and black-holed the same way (not refused):
//!   a partition answers nothing, neither a SYN-ACK nor a reset, so a node trying to reconnect
//!   learns nothing and runs into its own connect timeout, as it would against an unanswered
//!   SYN. A refusal (RST) would tell the node at once that the path is broken, which no
//!   partition ever does.
//! - [`PgProxy::heal`] forwards new connections again and resets the black-holed ones, as the
//!   server's kernel does when a partition heals: it answers a connection it no longer knows
//!   with a reset.
//!
//! Not modelled: at the TCP level the proxy's kernel still acknowledges what the node sends
//! (and answers keepalive probes), which a partition that drops packets does not. So the
//! node's TCP keepalives and `TCP_USER_TIMEOUT` never fire on a cut connection: only the
//! node's own statement and connect timeouts tell it anything.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Cut,
}

/// What the proxy did so far.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections forwarded to the server.
    pub forwarded: AtomicUsize,
    /// Upstream connections closed by a cut.
    pub upstreams_closed: AtomicUsize,
    /// Connections accepted while cut (black-holed from the start).
    pub accepted_while_cut: AtomicUsize,
    /// Bytes received from clients while cut, and discarded.
    pub discarded_bytes: AtomicUsize,
}

/// A proxy listening on a free local port, forwarding to one PostgreSQL server.
pub struct PgProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    pub stats: Arc<ProxyStats>,
    accept: tokio::task::JoinHandle<()>,
}

impl PgProxy {
    /// Starts a proxy to `upstream` (`host:port`) on the current runtime.
    pub async fn start(upstream: &str) -> PgProxy {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("the proxy cannot listen: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("the proxy has no address: {e}"),
        };
        let (mode, _) = watch::channel(Mode::Forward);
        let stats = Arc::new(ProxyStats::default());
        let upstream = upstream.to_owned();
        let (tx, st) = (mode.clone(), stats.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                let rx = tx.subscribe();
                tokio::spawn(connection(client, upstream.clone(), rx, st.clone()));
            }
        });
        PgProxy {
            addr,
            mode,
            stats,
            accept,
        }
    }

    /// A proxy in front of the server of a database URL (`postgres://user@host:port/db`).
    pub async fn in_front_of(url: &str) -> PgProxy {
        PgProxy::start(authority(url)).await
    }

    /// Where the proxy listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` (a database URL of the proxied server) with the proxy's address instead.
    pub fn url(&self, url: &str) -> String {
        url.replacen(authority(url), &self.addr.to_string(), 1)
    }

    /// Closes every upstream connection (the server ends those sessions and releases their
    /// locks) and black-holes the client side of every connection, present and future.
    pub fn cut_silently(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Forwards new connections again; the black-holed ones are reset.
    pub fn heal(&self) {
        self.mode.send_replace(Mode::Forward);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        // The connections' tasks end when the sender goes (their sockets are closed).
        self.accept.abort();
    }
}

/// The `host:port` of a database URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let auth = rest.split('/').next().unwrap_or(rest);
    auth.rsplit_once('@').map_or(auth, |(_, a)| a)
}

/// Waits until the mode is `want`; false when the proxy is gone.
async fn until(mode: &mut watch::Receiver<Mode>, want: Mode) -> bool {
    mode.wait_for(|m| *m == want).await.is_ok()
}

async fn connection(
    mut client: TcpStream,
    upstream: String,
    mut mode: watch::Receiver<Mode>,
    stats: Arc<ProxyStats>,
) {
    if *mode.borrow_and_update() == Mode::Forward {
        let Ok(mut up) = TcpStream::connect(&upstream).await else {
            return; // the server refuses: so does the proxy (the client's socket is closed)
        };
        let _ = up.set_nodelay(true);
        stats.forwarded.fetch_add(1, Ordering::Relaxed);
        let cut = tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut up) => false,
            reached = until(&mut mode, Mode::Cut) => reached,
        };
        if !cut {
            return; // one side closed (or the proxy is gone): both are closed
        }
        // The server sees its client go: it ends the session, releasing its locks.
        drop(up);
        stats.upstreams_closed.fetch_add(1, Ordering::Relaxed);
    } else {
        stats.accepted_while_cut.fetch_add(1, Ordering::Relaxed);
    }
    black_hole(client, mode, &stats).await;
}

/// Reads and discards what the client sends, never answering, until the client closes, the
/// proxy heals (then the connection is reset) or the proxy is gone.
async fn black_hole(mut client: TcpStream, mut mode: watch::Receiver<Mode>, stats: &ProxyStats) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = client.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    stats.discarded_bytes.fetch_add(n, Ordering::Relaxed);
                }
            },
            healed = until(&mut mode, Mode::Forward) => {
                if healed {
                    // Closed with a reset, not a FIN: the server forgot the connection.
                    let _ = client.set_zero_linger();
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::authority;

    #[test]
    fn the_authority_of_a_database_url() {
        assert_eq!(
            authority("postgres://postgres@127.0.0.1:5433/t1_2"),
            "127.0.0.1:5433"
        );
        assert_eq!(authority("postgres://u:p@h:1/db?x=y"), "h:1");
        assert_eq!(authority("postgres://h:1/db"), "h:1");
    }
}
