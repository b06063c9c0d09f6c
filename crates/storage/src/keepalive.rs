//! Noticing a peer that vanished without a word (a silent network partition, a machine that
//! lost power): no FIN or RST ever arrives, so without these a connection waits for the
//! operating system's defaults (two hours of keepalive idle, some fifteen minutes of
//! retransmissions) before it fails.
//!
//! Every connection mezzanine makes to PostgreSQL (the backends' pools, the catalog's, the
//! mover's, and the catalog sessions that hold the mover's leadership and listen for changes)
//! gets, on its own side:
//!
//! - TCP keepalives after [`IDLE`] of silence, every [`INTERVAL`], [`RETRIES`] unanswered
//!   probes ending the connection: an idle connection is declared dead within
//!   `IDLE + RETRIES × INTERVAL` (11 s);
//! - `TCP_USER_TIMEOUT` of [`USER_TIMEOUT`] (Linux): data sent and not acknowledged for that
//!   long ends the connection, so a statement sent into a partition fails within 12 s.
//!
//! So a partition is noticed within [`DEAD_PEER_BOUND`] (12 s) by the side that is connected.
//! The server's side matters too: PostgreSQL keeps a session, with its session-level advisory
//! lock (the mover's leadership), until *it* notices the client is gone; [`SERVER_OPTIONS`]
//! asks it for the same keepalives, and [`SERVER_USER_TIMEOUT`] for the same user timeout
//! (PostgreSQL 12 and later), so another node can take the leadership within about the same
//! bound.

use std::time::Duration;

/// Silence before the first keepalive probe.
pub const IDLE: Duration = Duration::from_secs(5);
/// Time between unanswered probes.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Unanswered probes that end the connection.
pub const RETRIES: u32 = 3;
/// How long sent data may stay unacknowledged before the connection ends.
pub const USER_TIMEOUT: Duration = Duration::from_secs(12);

/// Within this, a connection whose peer vanished fails, idle or busy.
pub const DEAD_PEER_BOUND: Duration = USER_TIMEOUT;

/// Applies the keepalives and the user timeout to a connection configuration.
pub fn apply(config: &mut tokio_postgres::Config) {
    config.keepalives(true);
    config.keepalives_idle(IDLE);
    config.keepalives_interval(INTERVAL);
    config.keepalives_retries(RETRIES);
    config.tcp_user_timeout(USER_TIMEOUT);
}

/// The server side's keepalives, as `options` of a connection (`-c name=value`): settings
/// every supported PostgreSQL version knows (ignored on a Unix socket).
pub const SERVER_OPTIONS: &str =
    "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3";

/// The server side's user timeout, as a statement for a session that cares (PostgreSQL 12
/// and later know it; an older server refuses it, which the caller may ignore).
pub const SERVER_USER_TIMEOUT: &str = "SET tcp_user_timeout = 12000";

/// `options` with [`SERVER_OPTIONS`] added (never replacing the URL's own).
pub fn with_server_options(given: Option<&str>) -> String {
    match given {
        Some(g) if !g.trim().is_empty() => format!("{g} {SERVER_OPTIONS}"),
        _ => SERVER_OPTIONS.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn a_vanished_peer_is_noticed_within_the_bound() {
        let mut c = tokio_postgres::Config::from_str("postgres://u@h/db").unwrap();
        apply(&mut c);
        assert!(c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), IDLE);
        assert_eq!(c.get_keepalives_interval(), Some(INTERVAL));
        assert_eq!(c.get_keepalives_retries(), Some(RETRIES));
        assert_eq!(c.get_tcp_user_timeout(), Some(&USER_TIMEOUT));
        let idle_bound = IDLE + INTERVAL * RETRIES;
        assert!(idle_bound <= DEAD_PEER_BOUND, "{idle_bound:?}");
        assert!(DEAD_PEER_BOUND <= Duration::from_secs(15));
        // The server is asked for the same.
        assert!(SERVER_OPTIONS.contains(&format!("tcp_keepalives_idle={}", IDLE.as_secs())));
        assert!(SERVER_OPTIONS.contains(&format!("tcp_keepalives_interval={}", INTERVAL.as_secs())));
        assert!(SERVER_OPTIONS.contains(&format!("tcp_keepalives_count={RETRIES}")));
        assert!(SERVER_USER_TIMEOUT.ends_with(&USER_TIMEOUT.as_millis().to_string()));
    }

    #[test]
    fn server_options_keep_the_urls_own() {
        assert_eq!(with_server_options(None), SERVER_OPTIONS);
        assert_eq!(with_server_options(Some("  ")), SERVER_OPTIONS);
        assert_eq!(
            with_server_options(Some("-c search_path=x")),
            format!("-c search_path=x {SERVER_OPTIONS}")
        );
    }
}
