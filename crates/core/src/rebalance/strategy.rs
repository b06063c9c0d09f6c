//! What the planner balances: a [`Strategy`] (shards, rows, bytes or writes) and its
//! tolerance.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::RELATIVE_TOLERANCE;

/// What "balance" is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Number of shards (each shard's size counts as 1).
    #[default]
    Count,
    /// Rows of the shards.
    Rows,
    /// Bytes on disk of the shards.
    Bytes,
    /// Writes to the shards over a sampling window.
    Writes,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::Count,
        Strategy::Rows,
        Strategy::Bytes,
        Strategy::Writes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Count => "count",
            Strategy::Rows => "rows",
            Strategy::Bytes => "bytes",
            Strategy::Writes => "writes",
        }
    }

    /// How far from its target a (non-draining) backend may be and still be balanced.
    pub fn tolerance(self, target: f64) -> f64 {
        match self {
            Strategy::Count => 1.0,
            _ => RELATIVE_TOLERANCE * target,
        }
    }

    /// Whether a backend that is not draining, with this load and target, is balanced.
    pub fn is_balanced(self, load: u64, target: f64) -> bool {
        (load as f64 - target).abs() <= self.tolerance(target) + slack(target)
    }

    /// The least load a backend that is not draining must give away (`surplus`) and receive
    /// (`deficit`) to end balanced, each in whole units: `(surplus, deficit)`.
    pub(super) fn least_change(self, load: u64, target: f64) -> (f64, f64) {
        // Beyond the tolerance and twice the slack of `is_balanced`, so that rounding errors
        // in these sums never make a balanced end look short of the bound.
        let reach = self.tolerance(target) + 2.0 * slack(target);
        let load = load as f64;
        (
            (load - target - reach).ceil().max(0.0),
            (target - reach - load).ceil().max(0.0),
        )
    }

    /// A shard's load in this strategy's unit.
    pub(super) fn unit_size(self, size: u64) -> u64 {
        match self {
            Strategy::Count => 1,
            _ => size,
        }
    }
}

/// The margin `is_balanced` allows for the rounding of the targets.
fn slack(target: f64) -> f64 {
    1e-9 * target.abs().max(1.0)
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A strategy name that is none of `count`, `rows`, `bytes`, `writes`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy {0:?}: must be one of count, rows, bytes, writes")]
pub struct ParseStrategyError(pub String);

impl FromStr for Strategy {
    type Err = ParseStrategyError;

    fn from_str(s: &str) -> Result<Strategy, ParseStrategyError> {
        Strategy::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| ParseStrategyError(s.to_owned()))
    }
}
