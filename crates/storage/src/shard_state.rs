//! The state of a shard on one backend (`mezzanine_shard_state.state`): what the fence of
//! invariant I2 checks on every client read and write (`crate::cells`), and what the steps of
//! a move change (`crate::transfer`).

use std::fmt;
use std::str::FromStr;

/// The state of a shard on one backend (`mezzanine_shard_state.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShardState {
    /// Serves client reads and writes.
    Active,
    /// Receives a copy: client traffic refused, the mover's COPY allowed.
    Importing,
    /// Serves reads; writes refused (the cut-over of a move).
    Frozen,
    /// An old copy, kept read-only for the mover until it is dropped.
    Retired,
}

impl ShardState {
    pub const ALL: [ShardState; 4] = [
        ShardState::Active,
        ShardState::Importing,
        ShardState::Frozen,
        ShardState::Retired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShardState::Active => "active",
            ShardState::Importing => "importing",
            ShardState::Frozen => "frozen",
            ShardState::Retired => "retired",
        }
    }

    /// Whether this backend serves the shard to clients in this state (and so must keep it).
    pub fn serves(self) -> bool {
        matches!(self, ShardState::Active | ShardState::Frozen)
    }
}

impl fmt::Display for ShardState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`ShardState`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown shard state {0:?}")]
pub struct UnknownShardState(pub String);

impl FromStr for ShardState {
    type Err = UnknownShardState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ShardState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownShardState(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn states_round_trip() {
        for s in ShardState::ALL {
            assert_eq!(s.as_str().parse::<ShardState>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert!("Active".parse::<ShardState>().is_err());
        assert!("".parse::<ShardState>().is_err());
        assert!(ShardState::Active.serves() && ShardState::Frozen.serves());
        assert!(!ShardState::Importing.serves() && !ShardState::Retired.serves());
    }
}
