//! Plugin delivery's decisions (issue 17), free of I/O: the JSON-RPC request a plugin gets
//! (go-mezzanine's `cell.written`, byte for byte), what a plugin's answer means
//! ([`classify`]), how long a plugin that does not answer is left alone ([`unavailable_delay`]),
//! what happens to an event a plugin refuses ([`after_refusal`]), which resolved addresses a
//! call may connect to ([`address_allowed`]), and where a shard's stream stands after a batch
//! ([`Progress`]).
//!
//! The guarantees these serve (the deliverer, `mezzanine-triggers`, applies them): at least
//! once, in `added_id` order per shard; an offset only moves past an event that was
//! delivered, skipped (a column the plugin does not subscribe to) or parked.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::hosts::{HostsAllowed, Target};

/// The JSON-RPC method go-mezzanine calls.
pub const METHOD: &str = "cell.written";
/// First pause of a plugin that does not answer.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest pause of a plugin that does not answer.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest answer body read from a plugin (the rest is not needed to judge it).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// One event of a shard's stream, as a plugin receives it (`params` of `cell.written`),
/// rendered as `/v1` renders a cell (`created_at` as the cells API writes it), with the
/// shard. Field order is go-mezzanine's.
#[derive(Debug, Clone, Serialize)]
pub struct CellWritten<'a> {
    pub added_id: i64,
    pub row_key: String,
    pub column_name: &'a str,
    pub ref_key: i64,
    pub body: &'a RawValue,
    pub created_at: &'a str,
    pub shard_id: u32,
}

#[derive(Serialize)]
struct Request<'a> {
    jsonrpc: &'static str,
    method: &'static str,
    params: &'a CellWritten<'a>,
    id: u64,
}

/// The request body: `{"jsonrpc":"2.0","method":"cell.written","params":{…},"id":N}`.
pub fn request_body(params: &CellWritten<'_>, id: u64) -> Vec<u8> {
    let r = Request {
        jsonrpc: "2.0",
        method: METHOD,
        params,
        id,
    };
    // Serialising plain strings, numbers and an already valid raw value cannot fail; an
    // empty body would be refused by the plugin, never taken for a delivery.
    serde_json::to_vec(&r).unwrap_or_default()
}

/// What one call's result means for the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The plugin took it: the stream moves on.
    Delivered,
    /// The plugin did not answer usefully (transport error, timeout, 5xx, 429): it is backed
    /// off and the same event is sent again; nothing is lost.
    Unavailable(String),
    /// The plugin answered that it will not take this event (another 4xx, a 3xx since
    /// redirects are not followed, a JSON-RPC error object): retried a few times, then parked.
    Refused(String),
}

impl Outcome {
    /// The label of `mezzanine_plugin_deliveries_total{outcome}`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Unavailable(_) => "unavailable",
            Outcome::Refused(_) => "refused",
        }
    }
}

/// Judges an HTTP answer: a 2xx without a JSON-RPC `error` object is a delivery (a body that
/// is not JSON too, as go-mezzanine takes any 200 its client can read); 5xx and 429 mean
/// unavailable; anything else is a refusal. `body` is the start of the answer's body.
pub fn classify(status: u16, body: &[u8]) -> Outcome {
    // On one line (an HTML error page has many), as it is shown in `plugins list`.
    let text = || {
        let end = body.len().min(200);
        let start = String::from_utf8_lossy(&body[..end]);
        start.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    match status {
        200..=299 => match rpc_error(body) {
            Some(e) => Outcome::Refused(format!("JSON-RPC error {e}")),
            None => Outcome::Delivered,
        },
        429 | 500..=599 => Outcome::Unavailable(format!("HTTP {status} {}", text())),
        300..=399 => Outcome::Refused(format!(
            "HTTP {status} (redirects are not followed: register the final URL)"
        )),
        _ => Outcome::Refused(format!("HTTP {status} {}", text())),
    }
}

/// The JSON-RPC `error` object of an answer, if it has a non-null one.
fn rpc_error(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    if e.is_null() {
        return None;
    }
    let s = e.to_string();
    Some(s.chars().take(200).collect())
}

/// The pause before calling a plugin again after `failures` consecutive unavailable
/// answers (1 or more): 100 ms, doubling, at most 30 s.
pub fn unavailable_delay(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(20);
    BACKOFF_FIRST.saturating_mul(1u32 << shift).min(BACKOFF_MAX)
}

/// What to do with an event the plugin refused `attempts` times (1 or more) in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRefusal {
    /// Send it again after `TRIGGER_RETRY_BACKOFF`.
    Retry,
    /// Park it (dead letter) and move the stream on.
    Park,
}

/// An event is retried up to `retry_max` times (`TRIGGER_RETRY_MAX`) after its first
/// refusal, then parked.
pub fn after_refusal(attempts: u32, retry_max: u32) -> AfterRefusal {
    if attempts > retry_max {
        AfterRefusal::Park
    } else {
        AfterRefusal::Retry
    }
}

/// Whether a call to `name:port` (a plugin endpoint's host name) may connect to `ip`, one of
/// the addresses the name resolves to now: when the address itself is allowed, or when the
/// name is allowed and the address is no link-local or metadata address (a name that
/// `PLUGIN_HOSTS_ALLOWED` lists stands for whatever it resolves to, but never opens those).
/// So a name that later resolves to a forbidden address is refused at delivery.
pub fn address_allowed(
    hosts: &HostsAllowed,
    name: &str,
    port: u16,
    ip: IpAddr,
) -> Result<(), String> {
    let addr = Target::Tcp {
        host: ip.to_string(),
        port,
    };
    let by_address = hosts.check(&addr);
    if by_address.is_ok() {
        return Ok(());
    }
    let unrestricted = HostsAllowed::default_for(crate::plugin::PLUGIN_HOSTS_ALLOWED);
    let special = unrestricted.check(&addr).is_err();
    let by_name = hosts.check(&Target::Tcp {
        host: name.to_owned(),
        port,
    });
    match (special, by_name) {
        (false, Ok(())) => Ok(()),
        _ => Err(format!(
            "{name} resolves to {ip}, which {}",
            by_address
                .err()
                .map(|r| r.0)
                .unwrap_or_else(|| "is refused".to_owned())
        )),
    }
}

/// Where a shard's stream stands for one plugin: the offset committed in the catalog, and
/// the events handled since (delivered, skipped or parked), all in `added_id` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    committed: i64,
    handled: i64,
}

impl Progress {
    /// A stream whose catalog offset is `offset`.
    pub fn new(offset: i64) -> Progress {
        Progress {
            committed: offset,
            handled: offset,
        }
    }

    /// Every event up to `added_id` was handled. Offsets never go back.
    pub fn handled(&mut self, added_id: i64) {
        self.handled = self.handled.max(added_id);
    }

    /// Where to read next: past the last handled event.
    pub fn position(&self) -> i64 {
        self.handled
    }

    /// The offset to write to the catalog, if it moved since the last commit.
    pub fn to_commit(&self) -> Option<i64> {
        (self.handled > self.committed).then_some(self.handled)
    }

    /// The catalog holds `upto` now.
    pub fn committed(&mut self, upto: i64) {
        self.committed = self.committed.max(upto);
    }
}

/// Whether a plugin subscribed to `columns` gets events of `column`.
pub fn subscribed(columns: &[String], column: &str) -> bool {
    columns.iter().any(|c| c == column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_answers_text_is_kept_on_one_line() {
        let page = b"<!DOCTYPE HTML>\n<html>\n  <p>Error code: 501</p>\r\n</html>\n";
        match classify(501, page) {
            Outcome::Unavailable(why) => assert_eq!(
                why,
                "HTTP 501 <!DOCTYPE HTML> <html> <p>Error code: 501</p> </html>"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_request_is_go_mezzanines() {
        let body = RawValue::from_string(r#"{"a": 1}"#.to_owned()).unwrap();
        let p = CellWritten {
            added_id: 7,
            row_key: "550e8400-e29b-41d4-a716-446655440000".into(),
            column_name: "profile",
            ref_key: 3,
            body: &body,
            created_at: "2026-01-02T03:04:05.123456Z",
            shard_id: 12,
        };
        assert_eq!(
            String::from_utf8(request_body(&p, 9)).unwrap(),
            r#"{"jsonrpc":"2.0","method":"cell.written","params":{"added_id":7,"row_key":"550e8400-e29b-41d4-a716-446655440000","column_name":"profile","ref_key":3,"body":{"a": 1},"created_at":"2026-01-02T03:04:05.123456Z","shard_id":12},"id":9}"#
        );
    }

    #[test]
    fn answers_are_judged() {
        assert_eq!(
            classify(200, br#"{"jsonrpc":"2.0","result":"ok","id":1}"#),
            Outcome::Delivered
        );
        assert_eq!(classify(200, b"not json"), Outcome::Delivered);
        assert_eq!(classify(204, b""), Outcome::Delivered);
        assert_eq!(
            classify(200, br#"{"jsonrpc":"2.0","result":1,"error":null,"id":1}"#),
            Outcome::Delivered
        );
        assert!(matches!(
            classify(200, br#"{"jsonrpc":"2.0","error":{"code":-32000,"message":"no"},"id":1}"#),
            Outcome::Refused(m) if m.contains("-32000")
        ));
        assert!(
            matches!(classify(500, b"boom"), Outcome::Unavailable(m) if m.contains("500 boom"))
        );
        assert!(matches!(classify(503, b""), Outcome::Unavailable(_)));
        assert!(matches!(classify(429, b""), Outcome::Unavailable(_)));
        assert!(matches!(classify(400, b"bad"), Outcome::Refused(m) if m.contains("400")));
        assert!(matches!(classify(404, b""), Outcome::Refused(_)));
        assert!(matches!(classify(302, b""), Outcome::Refused(m) if m.contains("redirect")));
    }

    #[test]
    fn a_silent_plugin_is_backed_off_up_to_30s() {
        assert_eq!(unavailable_delay(1), Duration::from_millis(100));
        assert_eq!(unavailable_delay(2), Duration::from_millis(200));
        assert_eq!(unavailable_delay(4), Duration::from_millis(800));
        assert_eq!(unavailable_delay(9), Duration::from_millis(25_600));
        assert_eq!(unavailable_delay(10), BACKOFF_MAX);
        assert_eq!(unavailable_delay(u32::MAX), BACKOFF_MAX);
        assert_eq!(unavailable_delay(0), BACKOFF_FIRST);
    }

    #[test]
    fn a_refused_event_is_retried_then_parked() {
        assert_eq!(after_refusal(1, 3), AfterRefusal::Retry);
        assert_eq!(after_refusal(3, 3), AfterRefusal::Retry);
        assert_eq!(after_refusal(4, 3), AfterRefusal::Park);
        assert_eq!(after_refusal(1, 0), AfterRefusal::Park);
    }

    #[test]
    fn resolved_addresses_are_checked() {
        let open = HostsAllowed::default_for(crate::plugin::PLUGIN_HOSTS_ALLOWED);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(address_allowed(&open, "hooks", 80, ip("10.0.0.1")).is_ok());
        let e = address_allowed(&open, "hooks", 80, ip("169.254.169.254")).unwrap_err();
        assert!(e.contains("hooks resolves to 169.254.169.254"), "{e}");
        let named =
            HostsAllowed::parse_for("*.hooks.internal", crate::plugin::PLUGIN_HOSTS_ALLOWED)
                .unwrap();
        assert!(address_allowed(&named, "a.hooks.internal", 80, ip("10.0.0.1")).is_ok());
        assert!(address_allowed(&named, "a.hooks.internal", 80, ip("169.254.1.1")).is_err());
        assert!(address_allowed(&named, "evil.example", 80, ip("10.0.0.1")).is_err());
        let nets =
            HostsAllowed::parse_for("10.0.0.0/8", crate::plugin::PLUGIN_HOSTS_ALLOWED).unwrap();
        assert!(address_allowed(&nets, "anything", 80, ip("10.2.3.4")).is_ok());
        let e = address_allowed(&nets, "anything", 80, ip("192.168.1.1")).unwrap_err();
        assert!(e.contains("PLUGIN_HOSTS_ALLOWED"), "{e}");
    }

    #[test]
    fn progress_moves_forward_only() {
        let mut p = Progress::new(10);
        assert_eq!(p.to_commit(), None);
        p.handled(12);
        p.handled(11);
        assert_eq!(p.position(), 12);
        assert_eq!(p.to_commit(), Some(12));
        p.committed(12);
        assert_eq!(p.to_commit(), None);
        p.committed(5);
        p.handled(13);
        assert_eq!(p.to_commit(), Some(13));
    }

    proptest! {
        /// Every answer gets one of the three outcomes, and the HTTP classes map as the
        /// contract says whatever the body.
        #[test]
        fn any_answer_is_judged(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let o = classify(status, &body);
            match status {
                429 | 500..=599 => prop_assert!(matches!(o, Outcome::Unavailable(_))),
                200..=299 => prop_assert!(!matches!(o, Outcome::Unavailable(_))),
                _ => prop_assert!(matches!(o, Outcome::Refused(_))),
            }
        }

        /// The pause never shrinks as failures go on, and stays within its bounds.
        #[test]
        fn backoff_grows_within_bounds(n in 1u32..1000) {
            let a = unavailable_delay(n);
            prop_assert!(a >= BACKOFF_FIRST && a <= BACKOFF_MAX);
            prop_assert!(unavailable_delay(n + 1) >= a);
        }

        /// Whatever order events are handled and commits land in, the offset to commit never
        /// goes below one committed before.
        #[test]
        fn offsets_never_go_back(steps in proptest::collection::vec((any::<bool>(), 0i64..100), 0..50)) {
            let mut p = Progress::new(0);
            let mut high = 0;
            for (commit, id) in steps {
                if commit {
                    if let Some(c) = p.to_commit() { p.committed(c); high = high.max(c); }
                } else {
                    p.handled(id);
                }
                if let Some(c) = p.to_commit() { prop_assert!(c > high); }
                prop_assert!(p.position() >= high);
            }
        }
    }
}
