//! Operating plugins (`mezzanine plugins …`, `/admin/v1/plugins…`): the pure parts. A parked
//! event's id as operators write it (`SHARD:ADDED_ID`), the state shown for a plugin, and its
//! lag summed from one probe per shard.

use std::fmt;
use std::str::FromStr;

/// A parked event of a plugin: `(shard, added_id)`, written `SHARD:ADDED_ID` (`7:1042`); also
/// the cursor of the parked list's pages (the last event of a page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    pub shard: u32,
    pub added_id: i64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.shard, self.added_id)
    }
}

/// Why a `SHARD:ADDED_ID` does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an event id: write SHARD:ADDED_ID (a shard number and an added_id, both non-negative integers, such as 7:1042)")]
pub struct EventIdError(pub String);

impl FromStr for EventId {
    type Err = EventIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || EventIdError(s.to_owned());
        let (shard, added_id) = s.trim().split_once(':').ok_or_else(bad)?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(shard) || !digits(added_id) {
            return Err(bad());
        }
        Ok(EventId {
            shard: shard.parse().map_err(|_| bad())?,
            added_id: added_id.parse().map_err(|_| bad())?,
        })
    }
}

/// What a plugin's delivery is doing, as operators see it: the operator's pause wins over
/// the deliverer's own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginState {
    Paused,
    BackingOff,
    Delivering,
}

impl PluginState {
    /// From the catalog's `paused` flag and `delivery_state` (`delivering` | `backing_off`;
    /// anything else reads as delivering).
    pub fn of(paused: bool, delivery_state: &str) -> PluginState {
        match (paused, delivery_state) {
            (true, _) => PluginState::Paused,
            (false, "backing_off") => PluginState::BackingOff,
            _ => PluginState::Delivering,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PluginState::Paused => "paused",
            PluginState::BackingOff => "backing_off",
            PluginState::Delivering => "delivering",
        }
    }
}

/// What one shard's probe found for one plugin: the shard's highest `added_id` (`None`: no
/// cell) and the first cell the plugin has yet to get (`None`: none), with its age.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShardProbe {
    pub max_added_id: Option<i64>,
    /// `(added_id, age in seconds)` of the first cell after the plugin's offset (or, with no
    /// offset, the first created at or after its `deliver_from`).
    pub first_undelivered: Option<(i64, f64)>,
}

impl ShardProbe {
    /// Events of the shard's stream not yet delivered, skipped or parked: the `added_id`s from
    /// the first undelivered cell to the last one. An upper bound: `added_id`s a failed write
    /// consumed count too, and so do cells of columns the plugin does not subscribe to (the
    /// deliverer passes them without a call).
    pub fn events_behind(&self) -> i64 {
        match (self.first_undelivered, self.max_added_id) {
            (Some((first, _)), Some(max)) if max >= first => max.saturating_sub(first) + 1,
            (Some(_), _) => 1,
            (None, _) => 0,
        }
    }

    /// Seconds since the first undelivered cell was created (never negative).
    pub fn oldest_age_seconds(&self) -> Option<f64> {
        self.first_undelivered.map(|(_, age)| age.max(0.0))
    }
}

/// A plugin's lag over the shards probed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Lag {
    pub events_behind: i64,
    /// The oldest undelivered event's age over all shards (`None`: nothing undelivered).
    pub oldest_undelivered_age_seconds: Option<f64>,
    /// Shards whose probe failed (their backend down, say): the figures leave them out.
    pub shards_unknown: u32,
}

impl Lag {
    /// Adds one shard's probe (`None`: it failed).
    pub fn add(&mut self, probe: Option<&ShardProbe>) {
        let Some(p) = probe else {
            self.shards_unknown += 1;
            return;
        };
        self.events_behind = self.events_behind.saturating_add(p.events_behind());
        if let Some(age) = p.oldest_age_seconds() {
            self.oldest_undelivered_age_seconds = Some(
                self.oldest_undelivered_age_seconds
                    .map_or(age, |a| a.max(age)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn event_ids_read_and_write_as_shard_colon_added_id() {
        let id: EventId = "7:1042".parse().unwrap();
        assert_eq!(
            id,
            EventId {
                shard: 7,
                added_id: 1042
            }
        );
        assert_eq!(id.to_string(), "7:1042");
        assert_eq!(" 0:0 ".parse::<EventId>().unwrap().to_string(), "0:0");
        for bad in [
            "",
            "7",
            "7:",
            ":1",
            "a:1",
            "7:b",
            "-1:3",
            "7:-3",
            "7:1:2",
            "+7:1",
            "7 :1",
            "99999999999:1",
            "1:99999999999999999999",
        ] {
            let e = bad.parse::<EventId>().unwrap_err();
            assert!(e.to_string().contains("SHARD:ADDED_ID"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_pause_wins_over_the_deliverers_state() {
        assert_eq!(PluginState::of(true, "backing_off"), PluginState::Paused);
        assert_eq!(PluginState::of(true, "delivering"), PluginState::Paused);
        assert_eq!(
            PluginState::of(false, "backing_off").as_str(),
            "backing_off"
        );
        assert_eq!(PluginState::of(false, "delivering").as_str(), "delivering");
    }

    #[test]
    fn lag_sums_events_and_keeps_the_oldest_age() {
        let mut lag = Lag::default();
        lag.add(Some(&ShardProbe {
            max_added_id: Some(10),
            first_undelivered: Some((8, 2.5)),
        }));
        lag.add(Some(&ShardProbe {
            max_added_id: Some(40),
            first_undelivered: None,
        }));
        lag.add(None);
        lag.add(Some(&ShardProbe {
            max_added_id: Some(100),
            first_undelivered: Some((1, 7.0)),
        }));
        assert_eq!(lag.events_behind, 3 + 100);
        assert_eq!(lag.oldest_undelivered_age_seconds, Some(7.0));
        assert_eq!(lag.shards_unknown, 1);
        assert_eq!(Lag::default().oldest_undelivered_age_seconds, None);
        // A clock behind a cell's created_at gives no negative age.
        let p = ShardProbe {
            max_added_id: Some(5),
            first_undelivered: Some((5, -0.001)),
        };
        assert_eq!((p.events_behind(), p.oldest_age_seconds()), (1, Some(0.0)));
    }

    proptest! {
        #[test]
        fn event_ids_round_trip(shard in any::<u32>(), added_id in 0..i64::MAX) {
            let id = EventId { shard, added_id };
            prop_assert_eq!(id.to_string().parse::<EventId>(), Ok(id));
        }

        #[test]
        fn behind_counts_the_ids_from_the_first_undelivered_to_the_last(
            first in 1..1_000_000i64, extra in 0..1_000_000i64,
        ) {
            let p = ShardProbe { max_added_id: Some(first + extra), first_undelivered: Some((first, 1.0)) };
            prop_assert_eq!(p.events_behind(), extra + 1);
            let none = ShardProbe { max_added_id: Some(first + extra), first_undelivered: None };
            prop_assert_eq!(none.events_behind(), 0);
        }
    }
}
