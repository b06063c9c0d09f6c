//! Refused requests in the audit log, bounded whatever a client sends.
//!
//! Each refusal (401 or 403, on the admin API or on `/v1`, and 429 of the rate limits) is handed to one writer task
//! through a bounded queue (a full queue drops it and counts it). The writer groups refusals
//! by *who* and *why*: the client's IP address, the API (`admin` or `data`), the reason and
//! the token's name (for a wrong scope). The first refusal of a group in a window of
//! [`WINDOW`] is written at once (`auth_refused`, with its method and path); the others of
//! that window are counted, and written as one `auth_refused_summary` row per group when the
//! window ends. At most [`MAX_GROUPS`] groups are followed per window; refusals of further
//! groups (many addresses) are counted together in one more summary. So a client hammering
//! the port costs the catalog at most `2 × MAX_GROUPS + 1` rows per window, written by one
//! task (one catalog connection), never a row per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mezzanine_catalog::Catalog;
use serde_json::json;
use tokio::sync::mpsc;

/// The length of a window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Groups followed per window.
pub const MAX_GROUPS: usize = 256;
/// Refusals waiting for the writer.
pub const QUEUE: usize = 1024;
/// The longest path recorded (a path is the client's choice).
const MAX_PATH: usize = 200;

/// One refused request.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The client's IP address (or `unknown`).
    pub client: String,
    /// `admin` or `data`.
    pub api: &'static str,
    /// `no token`, `unknown token`, `malformed header`, `insufficient scope`, `rate limited`.
    pub reason: &'static str,
    /// The token's name, when a known token lacked the scope or was over its rate limit.
    pub token: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
}

impl Refusal {
    fn group(&self) -> Group {
        Group {
            client: self.client.clone(),
            api: self.api,
            reason: self.reason,
            token: self.token.clone(),
        }
    }

    fn detail(&self) -> serde_json::Value {
        let mut path = self.path.clone();
        if path.len() > MAX_PATH {
            let mut cut = MAX_PATH;
            while !path.is_char_boundary(cut) {
                cut -= 1;
            }
            path.truncate(cut);
            path.push('…');
        }
        json!({
            "api": self.api,
            "reason": self.reason,
            "status": self.status,
            "method": self.method,
            "path": path,
            "by": {"token": self.token, "client": self.client},
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Group {
    client: String,
    api: &'static str,
    reason: &'static str,
    token: Option<String>,
}

/// The sending side: cheap, never waits.
#[derive(Clone)]
pub struct Refusals {
    tx: mpsc::Sender<Refusal>,
    dropped: Arc<AtomicU64>,
}

impl Refusals {
    /// A sender and its writer (to be spawned with the catalog).
    pub fn new() -> (Refusals, Writer) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        (
            Refusals {
                tx,
                dropped: dropped.clone(),
            },
            Writer { rx, dropped },
        )
    }

    /// Hands a refusal to the writer; counts it as dropped when the queue is full.
    pub fn note(&self, r: Refusal) {
        if self.tx.try_send(r).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the writer decides for each refusal and at each window's end: the rows to write.
#[derive(Debug, Default)]
pub struct Window {
    started: Option<DateTime<Utc>>,
    groups: HashMap<Group, u64>,
    /// Refusals of groups beyond [`MAX_GROUPS`].
    overflow: u64,
}

/// An audit row to write: its kind and detail.
pub type Row = (&'static str, serde_json::Value);

impl Window {
    /// A refusal: a row to write now for the first of its group in this window, else none.
    pub fn refused(&mut self, r: &Refusal, now: DateTime<Utc>) -> Option<Row> {
        self.started.get_or_insert(now);
        let group = r.group();
        if let Some(n) = self.groups.get_mut(&group) {
            *n += 1;
            return None;
        }
        if self.groups.len() >= MAX_GROUPS {
            self.overflow += 1;
            return None;
        }
        self.groups.insert(group, 0);
        Some(("auth_refused", r.detail()))
    }

    /// The window ends: one summary row per group with refusals not written, one for the
    /// groups beyond the bound and the ones the full queue dropped; a new window begins.
    pub fn close(&mut self, dropped: u64, now: DateTime<Utc>) -> Vec<Row> {
        let since = self.started.take();
        let mut rows: Vec<Row> = self
            .groups
            .drain()
            .filter(|(_, n)| *n > 0)
            .map(|(g, n)| {
                (
                    "auth_refused_summary",
                    json!({
                        "api": g.api,
                        "reason": g.reason,
                        "count": n,
                        "since": since,
                        "until": now,
                        "by": {"token": g.token, "client": g.client},
                    }),
                )
            })
            .collect();
        if self.overflow > 0 || dropped > 0 {
            rows.push((
                "auth_refused_summary",
                json!({
                    "count": self.overflow + dropped,
                    "since": since,
                    "until": now,
                    "note": format!(
                        "refusals from more than {MAX_GROUPS} clients or reasons in one window, \
                         or more than the writer could keep up with; not written one by one"
                    ),
                    "by": {"token": null, "client": "many"},
                }),
            ));
        }
        self.overflow = 0;
        rows
    }
}

/// The writer: owns the [`Window`] and writes its rows to the catalog, one at a time.
pub struct Writer {
    rx: mpsc::Receiver<Refusal>,
    dropped: Arc<AtomicU64>,
}

impl Writer {
    /// Runs until every sender is gone.
    pub async fn run(mut self, catalog: Arc<Catalog>) {
        let mut window = Window::default();
        let mut tick = tokio::time::interval(WINDOW);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let rows = tokio::select! {
                r = self.rx.recv() => match r {
                    Some(r) => window.refused(&r, Utc::now()).into_iter().collect(),
                    None => return,
                },
                _ = tick.tick() => {
                    let dropped = self.dropped.swap(0, Ordering::Relaxed);
                    window.close(dropped, Utc::now())
                }
            };
            for (kind, detail) in rows {
                tracing::warn!(kind, detail = %detail, "refused request");
                if let Err(e) = catalog.record(kind, &detail).await {
                    tracing::warn!(error = %e, "a refused request could not be audited");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(client: &str, reason: &'static str) -> Refusal {
        Refusal {
            client: client.into(),
            api: "data",
            reason,
            token: None,
            method: "GET".into(),
            path: "/v1/shards/count".into(),
            status: 401,
        }
    }

    #[test]
    fn a_flood_is_one_row_then_one_summary() {
        let mut w = Window::default();
        let now = Utc::now();
        let first = w.refused(&refusal("10.0.0.1", "unknown token"), now);
        assert!(matches!(first, Some(("auth_refused", _))));
        for _ in 0..10_000 {
            assert!(w
                .refused(&refusal("10.0.0.1", "unknown token"), now)
                .is_none());
        }
        // Another reason, or another client, is another group.
        assert!(w.refused(&refusal("10.0.0.1", "no token"), now).is_some());
        assert!(w
            .refused(&refusal("10.0.0.2", "unknown token"), now)
            .is_some());
        let rows = w.close(0, now);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].1["count"], 10_000);
        assert_eq!(rows[0].1["by"]["client"], "10.0.0.1");
        // A new window writes the first again.
        assert!(w
            .refused(&refusal("10.0.0.1", "unknown token"), now)
            .is_some());
    }

    #[test]
    fn many_clients_cost_a_bounded_number_of_rows() {
        let mut w = Window::default();
        let now = Utc::now();
        let mut written = 0;
        for i in 0..10_000u32 {
            let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            if w.refused(&refusal(&ip, "no token"), now).is_some() {
                written += 1;
            }
        }
        assert_eq!(written, MAX_GROUPS);
        let rows = w.close(5, now);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].1["count"], 10_000 - MAX_GROUPS as u64 + 5);
    }

    #[test]
    fn a_long_path_is_cut() {
        let mut r = refusal("10.0.0.1", "no token");
        r.path = format!("/v1/{}", "é".repeat(1000));
        let d = r.detail();
        assert!(d["path"].as_str().unwrap().len() <= MAX_PATH + '…'.len_utf8());
    }
}
