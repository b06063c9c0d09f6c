//! The terms of the mover's leadership: the fence that keeps a leader that lost its place off
//! the backends.

use std::fmt;

/// A term of the mover's leadership. The catalog gives each acquisition of the leadership the
/// next term (`mezzanine.leader.term`), so a later leader always holds a higher one. Every
/// change the mover makes on a backend carries its leader's term; the backend records the
/// term in the shard's state row and refuses a change from a lower term than the one it
/// holds: a leader whose catalog session was cut without it noticing cannot change a shard
/// that a newer leader has touched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Term(pub i64);

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Term;

    #[test]
    fn terms_order_by_their_number_and_show_it() {
        assert!(Term(8) > Term(7));
        assert_eq!(Term::default(), Term(0));
        assert_eq!(Term(42).to_string(), "42");
        assert_eq!(serde_json::to_string(&Term(7)).ok().as_deref(), Some("7"));
    }
}
