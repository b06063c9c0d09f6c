//! Named pause points in the mover, for crash tests (I5): with
//! `MEZZANINE_FAILPOINTS=after_freeze=30s,copying=10s` the mover sleeps that long when it
//! reaches each point the first time, so that a test can `kill -9` the leader exactly there.
//! Unset in production; each point costs one lookup in a map read once.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use mezzanine_core::duration::parse_duration;

/// The points: `copying` (after the first chunk), `catching_up` (after the first round),
/// `after_freeze` (source frozen, nothing else done), `after_switch` (map switched, source
/// not yet marked), `cleanup` (before a retired source is dropped).
pub const POINTS: [&str; 5] = [
    "copying",
    "catching_up",
    "after_freeze",
    "after_switch",
    "cleanup",
];

fn parse(spec: &str) -> HashMap<String, Duration> {
    spec.split(',')
        .filter_map(|part| {
            let (name, d) = part.split_once('=')?;
            let name = name.trim();
            if !POINTS.contains(&name) {
                tracing::warn!(point = name, "unknown failpoint ignored");
                return None;
            }
            Some((name.to_owned(), parse_duration(d.trim()).ok()?))
        })
        .collect()
}

fn points() -> &'static HashMap<String, Duration> {
    static POINTS_SET: OnceLock<HashMap<String, Duration>> = OnceLock::new();
    POINTS_SET.get_or_init(|| {
        std::env::var("MEZZANINE_FAILPOINTS")
            .map(|s| parse(&s))
            .unwrap_or_default()
    })
}

/// Pauses at `name` if a pause is configured for it.
pub async fn pause(name: &str) {
    if let Some(d) = points().get(name) {
        tracing::warn!(point = name, pause = ?d, "failpoint reached");
        tokio::time::sleep(*d).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points() {
        let p = parse("after_freeze=30s, copying=100ms,bogus=1s,cleanup=x");
        assert_eq!(p.get("after_freeze"), Some(&Duration::from_secs(30)));
        assert_eq!(p.get("copying"), Some(&Duration::from_millis(100)));
        assert_eq!(p.len(), 2);
    }
}
