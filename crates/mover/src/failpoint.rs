//! Named pause points in the mover, for crash tests (I5): with
//! `MEZZANINE_FAILPOINTS=after_freeze=30s,copying=10s` the mover pauses that long each time
//! it reaches one of those points, so that a test can `kill -9` the leader exactly there.
//! Empty in production. A pause ends early when the shard's move is aborted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mezzanine_core::duration::parse_duration;

/// The points: `after_prepare` (the target prepared, the shard still `pending`), `copying`
/// (after each bulk chunk), `catching_up` (after each round), `after_freeze` (source frozen,
/// nothing else done), `after_tail` (the tail copied), `after_verify` (the tail verified),
/// `after_retire` (the target's sequence advanced, the source retired), `after_activate` (the
/// target active, the map not switched yet), `after_switch` (map switched, the task not yet
/// finished), `cleanup` (before a retired source is dropped).
pub const POINTS: [&str; 10] = [
    "after_prepare",
    "copying",
    "catching_up",
    "after_freeze",
    "after_tail",
    "after_verify",
    "after_retire",
    "after_activate",
    "after_switch",
    "cleanup",
];

/// The configured pauses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failpoints(HashMap<String, Duration>);

impl Failpoints {
    /// Reads `name=duration,...`; unknown names and bad durations are an error.
    pub fn parse(spec: &str) -> Result<Failpoints, String> {
        let mut out = HashMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, d) = part
                .split_once('=')
                .ok_or_else(|| format!("failpoint {part:?}: write name=duration"))?;
            let name = name.trim();
            if !POINTS.contains(&name) {
                return Err(format!(
                    "unknown failpoint {name:?} (known: {})",
                    POINTS.join(", ")
                ));
            }
            let d = parse_duration(d.trim()).map_err(|e| format!("failpoint {name}: {e}"))?;
            out.insert(name.to_owned(), d);
        }
        Ok(Failpoints(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Pauses at `name` if a pause is configured for it, until it ends or `abort` is set.
    pub async fn pause(&self, name: &str, abort: &AtomicBool) {
        let Some(d) = self.0.get(name) else {
            return;
        };
        tracing::warn!(point = name, pause = ?d, "failpoint reached");
        let until = tokio::time::Instant::now() + *d;
        while tokio::time::Instant::now() < until && !abort.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points() {
        let p = Failpoints::parse("after_freeze=30s, copying=100ms").unwrap();
        assert_eq!(p.0.get("after_freeze"), Some(&Duration::from_secs(30)));
        assert_eq!(p.0.get("copying"), Some(&Duration::from_millis(100)));
        assert!(Failpoints::parse("bogus=1s").is_err());
        assert!(Failpoints::parse("cleanup=x").is_err());
        assert!(Failpoints::parse("").unwrap().is_empty());
    }
}
