//! `shards.json` and the shard map: which backend owns which shard.
//!
//! The file format is go-mezzanine's:
//! `{"backends": [{"name", "database_url", "shard_start", "shard_end"}]}`, ranges inclusive,
//! together covering `0..num_shards` exactly once. A backend may be listed once per range it
//! owns. mezzanine adds an optional `"spare_backends": [{"name", "database_url"}]`: backends
//! that own no shard (a spare, or one drained), which a range cannot express (go-mezzanine's
//! loader ignores the key, as it ignores any key it does not know).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::hash::shard_for_row_key;

/// One backend entry of `shards.json`, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendSpec {
    pub name: String,
    pub database_url: String,
    pub shard_start: i64,
    pub shard_end: i64,
}

/// The contents of `shards.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardsFile {
    pub backends: Vec<BackendSpec>,
    /// Backends that own no shard (absent when there is none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spare_backends: Vec<MapBackend>,
}

/// What is wrong with a shard map; each message names the backend and shard at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("shards.json is not valid JSON of the form {{\"backends\": [{{\"name\", \"database_url\", \"shard_start\", \"shard_end\"}}]}}: {0}")]
    Syntax(String),
    #[error("shards.json lists no backends")]
    NoBackends,
    #[error("num_shards must be between 1 and {max}, got {got}")]
    BadShardCount { got: i64, max: u32 },
    #[error("backend #{index} (counting backends, then spare_backends): name {name:?} is invalid: use 1 to 63 characters of letters, digits, '_', '-' or '.'")]
    BadName { index: usize, name: String },
    #[error("backend {name:?} appears twice in shards.json with different database_url values")]
    DuplicateName { name: String },
    #[error("backend {name:?}: database_url is empty")]
    EmptyUrl { name: String },
    /// A URL as `mezzanine shards export` prints it without `--with-secrets`.
    #[error("backend {name:?}: the password in database_url is masked (***), as `mezzanine shards export` prints it: put the password back (`shards export --with-secrets` shows it), or leave it out of the URL and give it in a password file (PGPASSFILE, ~/.pgpass)")]
    MaskedPassword { name: String },
    #[error("backend {name:?}: shard_start {start} is greater than shard_end {end}")]
    Inverted { name: String, start: i64, end: i64 },
    #[error("backend {name:?}: shard {shard} does not exist: the shards are 0-{max} (NUM_SHARDS is {num_shards})")]
    OutOfRange {
        name: String,
        shard: i64,
        max: i64,
        num_shards: u32,
    },
    /// The file is a whole map, for another number of shards.
    #[error(
        "shards.json covers shards 0-{last} ({covers} shards), but NUM_SHARDS is {num_shards}: \
         set NUM_SHARDS={covers} (the number the data was written with), or give shards.json \
         ranges for shards 0-{max}",
        last = covers - 1, max = num_shards - 1
    )]
    ShardCount { covers: u32, num_shards: u32 },
    #[error("shard {shard} is claimed by both backend {first:?} and backend {second:?}")]
    Overlap {
        shard: u32,
        first: String,
        second: String,
    },
    #[error("{} {} not owned by any backend", crate::shardset::shard_range_text(*start, *end), if start == end { "is" } else { "are" })]
    Gap { start: u32, end: u32 },
    #[error("shard {shard} is owned by {name:?}, which is not a known backend")]
    UnknownOwner { shard: u32, name: String },
}

/// One backend's part of a grouping: its shards in ascending order, each with its items.
pub type ShardGroups<T> = Vec<(u32, Vec<T>)>;

/// Largest supported number of shards (table names carry four digits).
pub const MAX_SHARDS: u32 = 10_000;

/// Checks a backend name.
pub fn valid_backend_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A backend known to a shard map (it may own no shard: a spare, or one being drained).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapBackend {
    pub name: String,
    pub database_url: String,
}

/// The validated map from shard to backend. Backends are referred to by their index in
/// [`ShardMap::backends`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    num_shards: u32,
    backends: Vec<MapBackend>,
    owner: Vec<u16>,
}

impl ShardMap {
    /// Parses and validates `shards.json` text.
    pub fn parse(json: &str, num_shards: u32) -> Result<ShardMap, MapError> {
        let file: ShardsFile =
            serde_json::from_str(json).map_err(|e| MapError::Syntax(e.to_string()))?;
        ShardMap::new(file, num_shards)
    }

    /// Validates a shard file against `num_shards`.
    pub fn new(file: ShardsFile, num_shards: u32) -> Result<ShardMap, MapError> {
        if num_shards == 0 || num_shards > MAX_SHARDS {
            return Err(MapError::BadShardCount {
                got: i64::from(num_shards),
                max: MAX_SHARDS,
            });
        }
        if file.backends.is_empty() {
            return Err(MapError::NoBackends);
        }
        // A file that is a whole map for another count says so, rather than a gap or a shard
        // out of range.
        let covers = file.backends.iter().map(|b| b.shard_end).max().unwrap_or(0) + 1;
        if covers != i64::from(num_shards) && (1..=i64::from(MAX_SHARDS)).contains(&covers) {
            let covers = covers as u32;
            if ShardMap::new(file.clone(), covers).is_ok() {
                return Err(MapError::ShardCount { covers, num_shards });
            }
        }
        let mut owner: Vec<Option<u16>> = vec![None; num_shards as usize];
        let mut backends: Vec<MapBackend> = Vec::new();
        for (i, b) in file.backends.iter().enumerate() {
            if !valid_backend_name(&b.name) {
                return Err(MapError::BadName {
                    index: i,
                    name: b.name.clone(),
                });
            }
            if b.database_url.trim().is_empty() {
                return Err(MapError::EmptyUrl {
                    name: b.name.clone(),
                });
            }
            if crate::conninfo::has_masked_password(&b.database_url) {
                return Err(MapError::MaskedPassword {
                    name: b.name.clone(),
                });
            }
            // A backend may be listed once per range it owns (the export of a map whose
            // shards moved), always with the same URL.
            let index = match backends.iter().position(|o| o.name == b.name) {
                Some(j) if backends[j].database_url == b.database_url => j,
                Some(_) => {
                    return Err(MapError::DuplicateName {
                        name: b.name.clone(),
                    })
                }
                None => {
                    backends.push(MapBackend {
                        name: b.name.clone(),
                        database_url: b.database_url.clone(),
                    });
                    backends.len() - 1
                }
            };
            let max = i64::from(num_shards) - 1;
            for s in [b.shard_start, b.shard_end] {
                if !(0..=max).contains(&s) {
                    return Err(MapError::OutOfRange {
                        name: b.name.clone(),
                        shard: s,
                        max,
                        num_shards,
                    });
                }
            }
            if b.shard_start > b.shard_end {
                return Err(MapError::Inverted {
                    name: b.name.clone(),
                    start: b.shard_start,
                    end: b.shard_end,
                });
            }
            for s in b.shard_start..=b.shard_end {
                let slot = &mut owner[s as usize];
                if let Some(prev) = *slot {
                    return Err(MapError::Overlap {
                        shard: s as u32,
                        first: backends[prev as usize].name.clone(),
                        second: b.name.clone(),
                    });
                }
                *slot = Some(index as u16);
            }
        }
        for (i, b) in file.spare_backends.iter().enumerate() {
            if !valid_backend_name(&b.name) {
                return Err(MapError::BadName {
                    index: file.backends.len() + i,
                    name: b.name.clone(),
                });
            }
            if b.database_url.trim().is_empty() {
                return Err(MapError::EmptyUrl {
                    name: b.name.clone(),
                });
            }
            if crate::conninfo::has_masked_password(&b.database_url) {
                return Err(MapError::MaskedPassword {
                    name: b.name.clone(),
                });
            }
            match backends.iter().find(|o| o.name == b.name) {
                Some(o) if o.database_url == b.database_url => {}
                Some(_) => {
                    return Err(MapError::DuplicateName {
                        name: b.name.clone(),
                    })
                }
                None => backends.push(b.clone()),
            }
        }
        if let Some(start) = owner.iter().position(Option::is_none) {
            let end = owner[start..]
                .iter()
                .position(Option::is_some)
                .map_or(num_shards - 1, |n| (start + n - 1) as u32);
            return Err(MapError::Gap {
                start: start as u32,
                end,
            });
        }
        let owner = owner.into_iter().map(|o| o.unwrap_or_default()).collect();
        Ok(ShardMap {
            num_shards,
            backends,
            owner,
        })
    }

    /// A map given shard by shard (as the catalog stores it): `owners[s]` is the name of the
    /// backend owning shard `s`. Backends may own nothing, and a backend's shards need not be
    /// contiguous.
    pub fn from_owners(backends: Vec<MapBackend>, owners: &[&str]) -> Result<ShardMap, MapError> {
        let num_shards = owners.len() as u32;
        if num_shards == 0 || num_shards > MAX_SHARDS {
            return Err(MapError::BadShardCount {
                got: i64::from(num_shards),
                max: MAX_SHARDS,
            });
        }
        if backends.is_empty() {
            return Err(MapError::NoBackends);
        }
        for (i, b) in backends.iter().enumerate() {
            if !valid_backend_name(&b.name) {
                return Err(MapError::BadName {
                    index: i,
                    name: b.name.clone(),
                });
            }
            if backends[..i].iter().any(|o| o.name == b.name) {
                return Err(MapError::DuplicateName {
                    name: b.name.clone(),
                });
            }
        }
        let owner = owners
            .iter()
            .enumerate()
            .map(|(s, name)| {
                backends
                    .iter()
                    .position(|b| b.name == *name)
                    .map(|i| i as u16)
                    .ok_or_else(|| MapError::UnknownOwner {
                        shard: s as u32,
                        name: (*name).to_owned(),
                    })
            })
            .collect::<Result<Vec<u16>, MapError>>()?;
        Ok(ShardMap {
            num_shards,
            backends,
            owner,
        })
    }

    /// Splits `num_shards` evenly into contiguous ranges, one per backend, in order.
    pub fn even_split(
        backends: &[(String, String)],
        num_shards: u32,
    ) -> Result<ShardMap, MapError> {
        let n = backends.len() as u32;
        if n == 0 {
            return Err(MapError::NoBackends);
        }
        let mut start = 0u32;
        let specs = backends
            .iter()
            .enumerate()
            .map(|(i, (name, url))| {
                let size = num_shards / n + u32::from((i as u32) < num_shards % n);
                let spec = BackendSpec {
                    name: name.clone(),
                    database_url: url.clone(),
                    shard_start: i64::from(start),
                    shard_end: i64::from(start + size) - 1,
                };
                start += size;
                spec
            })
            .collect();
        ShardMap::new(
            ShardsFile {
                backends: specs,
                spare_backends: Vec::new(),
            },
            num_shards,
        )
    }

    pub fn num_shards(&self) -> u32 {
        self.num_shards
    }

    pub fn backends(&self) -> &[MapBackend] {
        &self.backends
    }

    /// The name of the backend owning `shard`.
    pub fn owner_name(&self, shard: u32) -> Option<&str> {
        self.owner(shard)
            .and_then(|i| self.backends.get(i))
            .map(|b| b.name.as_str())
    }

    /// Index (into [`ShardMap::backends`]) of the backend owning `shard`.
    pub fn owner(&self, shard: u32) -> Option<usize> {
        self.owner.get(shard as usize).map(|&i| usize::from(i))
    }

    /// The shards owned by backend `index`, in order.
    pub fn shards_of(&self, index: usize) -> impl Iterator<Item = u32> + '_ {
        self.owner
            .iter()
            .enumerate()
            .filter(move |(_, &o)| usize::from(o) == index)
            .map(|(s, _)| s as u32)
    }

    /// Groups items by the shard of their row key, then by the backend owning each shard: one
    /// entry per backend that receives anything (its index in [`ShardMap::backends`]), with its
    /// shards in ascending order and each shard's items in input order. Batch writes use this
    /// order so that concurrent batches take shard locks in one order.
    pub fn group_by_backend<T>(
        &self,
        items: impl IntoIterator<Item = (Uuid, T)>,
    ) -> Vec<(usize, ShardGroups<T>)> {
        let mut by_shard: BTreeMap<u32, Vec<T>> = BTreeMap::new();
        for (row_key, item) in items {
            by_shard
                .entry(shard_for_row_key(&row_key, self.num_shards))
                .or_default()
                .push(item);
        }
        let mut per_backend: Vec<ShardGroups<T>> =
            self.backends.iter().map(|_| Vec::new()).collect();
        for (shard, group) in by_shard {
            // The shard comes from this map's own count, so it always has an owner.
            per_backend[usize::from(self.owner[shard as usize])].push((shard, group));
        }
        per_backend
            .into_iter()
            .enumerate()
            .filter(|(_, groups)| !groups.is_empty())
            .collect()
    }

    /// The map in `shards.json` form, one entry per contiguous range, and the backends that own
    /// nothing in `spare_backends`; [`ShardMap::new`] reads it back to the same map.
    pub fn to_file(&self) -> ShardsFile {
        let mut out: Vec<BackendSpec> = Vec::new();
        for (s, &o) in self.owner.iter().enumerate() {
            let b = &self.backends[usize::from(o)];
            match out.last_mut() {
                Some(last) if last.name == b.name && last.shard_end + 1 == s as i64 => {
                    last.shard_end = s as i64
                }
                _ => out.push(BackendSpec {
                    name: b.name.clone(),
                    database_url: b.database_url.clone(),
                    shard_start: s as i64,
                    shard_end: s as i64,
                }),
            }
        }
        let spare_backends = self
            .backends
            .iter()
            .filter(|b| !out.iter().any(|o| o.name == b.name))
            .cloned()
            .collect();
        ShardsFile {
            backends: out,
            spare_backends,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(name: &str, start: i64, end: i64) -> BackendSpec {
        BackendSpec {
            name: name.into(),
            database_url: format!("postgres://h/{name}"),
            shard_start: start,
            shard_end: end,
        }
    }

    fn map(specs: Vec<BackendSpec>, n: u32) -> Result<ShardMap, MapError> {
        ShardMap::new(
            ShardsFile {
                backends: specs,
                spare_backends: Vec::new(),
            },
            n,
        )
    }

    #[test]
    fn a_valid_map_routes_every_shard() {
        let m = map(vec![spec("db1", 0, 31), spec("db2", 32, 63)], 64).unwrap();
        assert_eq!(m.owner(0), Some(0));
        assert_eq!(m.owner(31), Some(0));
        assert_eq!(m.owner(32), Some(1));
        assert_eq!(m.owner(64), None);
        assert_eq!(m.shards_of(1).count(), 32);
    }

    #[test]
    fn errors_name_the_backend_and_shard() {
        let e = map(vec![spec("db1", 0, 40), spec("db2", 32, 63)], 64).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shard 32 is claimed by both backend \"db1\" and backend \"db2\""
        );
        let e = map(vec![spec("db1", 0, 10), spec("db2", 32, 63)], 64).unwrap_err();
        assert_eq!(e.to_string(), "shards 11-31 are not owned by any backend");
        let e = map(vec![spec("db1", 0, 30), spec("db2", 32, 63)], 64).unwrap_err();
        assert_eq!(e.to_string(), "shard 31 is not owned by any backend");
        // Out of range in a file that is no whole map for another count.
        let e = map(vec![spec("db1", 0, 31), spec("db2", 40, 70)], 64).unwrap_err();
        assert_eq!(
            e.to_string(),
            "backend \"db2\": shard 70 does not exist: the shards are 0-63 (NUM_SHARDS is 64)"
        );
        // A whole map for another NUM_SHARDS says so, whichever way it differs.
        let e = map(vec![spec("db1", 0, 64)], 64).unwrap_err();
        assert_eq!(
            e,
            MapError::ShardCount {
                covers: 65,
                num_shards: 64
            }
        );
        let e = map(vec![spec("db1", 0, 31), spec("db2", 32, 63)], 128).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "shards.json covers shards 0-63 (64 shards), but NUM_SHARDS is 128: set NUM_SHARDS=64"
            ),
            "{e}"
        );
        let e = map(vec![spec("db1", 5, 2)], 64).unwrap_err();
        assert!(matches!(e, MapError::Inverted { .. }));
        let mut other_url = spec("db1", 32, 63);
        other_url.database_url = "postgres://elsewhere/db1".into();
        let e = map(vec![spec("db1", 0, 31), other_url], 64).unwrap_err();
        assert!(matches!(e, MapError::DuplicateName { .. }));
        // The same backend listed once per range it owns is one backend.
        let m = map(
            vec![spec("db1", 0, 9), spec("db2", 10, 63), spec("db1", 32, 32)],
            64,
        );
        assert!(matches!(m, Err(MapError::Overlap { shard: 32, .. })));
        let m = map(
            vec![spec("db1", 0, 9), spec("db2", 10, 31), spec("db1", 32, 63)],
            64,
        )
        .unwrap();
        assert_eq!(m.backends().len(), 2);
        assert_eq!(m.shards_of(0).count(), 42);
        let e = map(vec![spec("db 1", 0, 63)], 64).unwrap_err();
        assert!(matches!(e, MapError::BadName { .. }));
        let mut s = spec("db1", 0, 63);
        s.database_url = " ".into();
        assert!(matches!(
            map(vec![s], 64).unwrap_err(),
            MapError::EmptyUrl { .. }
        ));
        // A masked export fed back says so, rather than failing to connect with `***`.
        for masked in ["postgres://u:***@h/db1", "host=h password=*** dbname=db1"] {
            let mut s = spec("db1", 0, 63);
            s.database_url = masked.into();
            let e = map(vec![s], 64).unwrap_err();
            assert!(matches!(e, MapError::MaskedPassword { .. }), "{masked}");
            assert!(e.to_string().contains("--with-secrets"), "{e}");
        }
        assert!(matches!(map(vec![], 64).unwrap_err(), MapError::NoBackends));
        assert!(matches!(
            map(vec![spec("db1", -1, 63)], 64).unwrap_err(),
            MapError::OutOfRange { .. }
        ));
        assert!(matches!(
            map(vec![spec("db1", 0, 63)], 0).unwrap_err(),
            MapError::BadShardCount { .. }
        ));
        assert!(matches!(
            ShardMap::parse("{\"backends\": 3}", 64).unwrap_err(),
            MapError::Syntax(_)
        ));
    }

    #[test]
    fn spare_backends_are_exported_and_read_back() {
        let backends = vec![
            MapBackend {
                name: "db1".into(),
                database_url: "postgres://h/db1".into(),
            },
            MapBackend {
                name: "spare1".into(),
                database_url: "postgres://h/spare1".into(),
            },
        ];
        let m = ShardMap::from_owners(backends, &["db1"; 4]).unwrap();
        let text = serde_json::to_string(&m.to_file()).unwrap();
        assert_eq!(
            text,
            r#"{"backends":[{"name":"db1","database_url":"postgres://h/db1","shard_start":0,"shard_end":3}],"spare_backends":[{"name":"spare1","database_url":"postgres://h/spare1"}]}"#
        );
        let again = ShardMap::parse(&text, 4).unwrap();
        assert_eq!(again, m);
        // A map without spare backends exports go-mezzanine's form exactly (no new key).
        let plain = map(vec![spec("db1", 0, 3)], 4).unwrap();
        assert!(!serde_json::to_string(&plain.to_file())
            .unwrap()
            .contains("spare_backends"));
        // A spare that owns shards too is one backend, if its URL is the same.
        let text = r#"{"backends": [{"name": "db1", "database_url": "postgres://h/db1",
            "shard_start": 0, "shard_end": 3}], "spare_backends": [{"name": "db1",
            "database_url": "postgres://h/db1"}]}"#;
        assert_eq!(ShardMap::parse(text, 4).unwrap().backends().len(), 1);
        let text = text.replacen("h/db1\"}]", "elsewhere\"}]", 1);
        assert!(matches!(
            ShardMap::parse(&text, 4),
            Err(MapError::DuplicateName { .. })
        ));
        let bad = r#"{"backends": [{"name": "db1", "database_url": "u", "shard_start": 0,
            "shard_end": 3}], "spare_backends": [{"name": "s 1", "database_url": "u2"}]}"#;
        assert!(matches!(
            ShardMap::parse(bad, 4),
            Err(MapError::BadName { index: 1, .. })
        ));
        let empty = r#"{"backends": [{"name": "db1", "database_url": "u", "shard_start": 0,
            "shard_end": 3}], "spare_backends": [{"name": "s1", "database_url": " "}]}"#;
        assert!(matches!(
            ShardMap::parse(empty, 4),
            Err(MapError::EmptyUrl { .. })
        ));
    }

    #[test]
    fn gap_at_the_end() {
        // A whole map for 60 shards: the message says both remedies.
        let e = map(vec![spec("db1", 0, 59)], 64).unwrap_err();
        assert_eq!(
            e,
            MapError::ShardCount {
                covers: 60,
                num_shards: 64
            }
        );
        assert!(e
            .to_string()
            .ends_with("or give shards.json ranges for shards 0-63"));
        // Holes anywhere else are gaps.
        let e = map(vec![spec("db1", 0, 31), spec("db2", 40, 59)], 64).unwrap_err();
        assert_eq!(e, MapError::Gap { start: 32, end: 39 });
    }

    proptest! {
        #[test]
        fn grouping_keeps_every_item_once_in_lock_order(keys in proptest::collection::vec(any::<[u8; 16]>(), 0..300), k in 1usize..5) {
            let names: Vec<(String, String)> = (0..k).map(|i| (format!("db{i}"), format!("postgres://h/{i}"))).collect();
            let m = ShardMap::even_split(&names, 64).unwrap();
            let items: Vec<(Uuid, usize)> = keys.iter().enumerate().map(|(i, b)| (Uuid::from_bytes(*b), i)).collect();
            let plan = m.group_by_backend(items.clone());
            let mut seen: Vec<usize> = Vec::new();
            for (b, groups) in &plan {
                prop_assert!(groups.windows(2).all(|w| w[0].0 < w[1].0), "shards ascending");
                for (shard, group) in groups {
                    prop_assert_eq!(m.owner(*shard), Some(*b));
                    prop_assert!(group.windows(2).all(|w| w[0] < w[1]), "input order kept");
                    for &i in group {
                        prop_assert_eq!(shard_for_row_key(&items[i].0, 64), *shard);
                        seen.push(i);
                    }
                }
            }
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..items.len()).collect::<Vec<_>>());
        }

        /// Fuzzing `shards.json`: any text, and JSON of its shape with arbitrary names, URLs
        /// and ranges (negative, huge, inverted, overlapping, gapped), is read or refused with
        /// an error; never a panic. A map that is read owns every shard exactly once, by a
        /// backend it lists (random ranges rarely partition the shards: which ones are
        /// accepted is `random_range_sets_validate_iff_they_partition`'s subject).
        #[test]
        fn any_shards_json_is_read_or_refused(
            text in "\\PC{0,64}",
            specs in proptest::collection::vec(("[a-z0-9._-]{0,8}|\\PC{0,4}", "\\PC{0,12}", any::<i64>(), any::<i64>(), 0i64..80, 0i64..80), 0..6),
            n in 1u32..80,
        ) {
            let _ = ShardMap::parse(&text, n);
            let backends: Vec<serde_json::Value> = specs
                .iter()
                .map(|(name, url, a, b, small_a, small_b)| {
                    // Mostly small ranges (that may partition the shards), sometimes anything.
                    let (start, end) = if a % 4 == 0 { (*a, *b) } else { (*small_a, *small_b) };
                    serde_json::json!({"name": name, "database_url": url, "shard_start": start, "shard_end": end})
                })
                .collect();
            let json = serde_json::json!({"backends": backends}).to_string();
            if let Ok(m) = ShardMap::parse(&json, n) {
                prop_assert_eq!(m.num_shards(), n);
                for shard in 0..n {
                    let owner = m.owner(shard);
                    prop_assert!(owner.is_some_and(|o| o < m.backends().len()), "shard {shard} of {json}");
                }
                let owned: usize = (0..m.backends().len()).map(|i| m.shards_of(i).count()).sum();
                prop_assert_eq!(owned, n as usize);
            }
        }

        #[test]
        fn any_owner_assignment_round_trips_through_shards_json(owners in proptest::collection::vec(0usize..4, 1..300)) {
            let backends: Vec<MapBackend> = (0..5).map(|i| MapBackend { name: format!("db{i}"), database_url: format!("postgres://h/{i}") }).collect();
            let names: Vec<&str> = owners.iter().map(|&i| backends[i].name.as_str()).collect();
            let m = ShardMap::from_owners(backends.clone(), &names).unwrap();
            for (s, &o) in owners.iter().enumerate() {
                prop_assert_eq!(m.owner_name(s as u32), Some(backends[o].name.as_str()));
            }
            // db4 (and any other backend that owns nothing) is in spare_backends; the file,
            // written as JSON and read back, describes the same map with the same backends.
            let file = m.to_file();
            let spare: Vec<&str> = file.spare_backends.iter().map(|b| b.name.as_str()).collect();
            prop_assert!(spare.contains(&"db4"));
            for b in &backends {
                prop_assert_eq!(m.shards_of(backends.iter().position(|x| x == b).unwrap()).next().is_none(), spare.contains(&b.name.as_str()));
            }
            let text = serde_json::to_string(&file).unwrap();
            let again = ShardMap::parse(&text, m.num_shards()).unwrap();
            for s in 0..m.num_shards() {
                prop_assert_eq!(again.owner_name(s), m.owner_name(s));
            }
            let mut have: Vec<MapBackend> = again.backends().to_vec();
            have.sort_by(|a, b| a.name.cmp(&b.name));
            prop_assert_eq!(have, backends);
        }

        #[test]
        fn even_split_covers_everything_evenly(n in 1u32..5000, k in 1usize..9) {
            let names: Vec<(String, String)> = (0..k).map(|i| (format!("db{i}"), format!("postgres://h/{i}"))).collect();
            prop_assume!(n as usize >= k);
            let m = ShardMap::even_split(&names, n).unwrap();
            let counts: Vec<usize> = (0..k).map(|i| m.shards_of(i).count()).collect();
            prop_assert_eq!(counts.iter().sum::<usize>(), n as usize);
            prop_assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
            // The exported file validates and describes the same map.
            let again = ShardMap::new(m.to_file(), n).unwrap();
            prop_assert_eq!(again, m);
        }

        #[test]
        fn random_range_sets_validate_iff_they_partition(cuts in proptest::collection::btree_set(1u32..200, 0..6), n in 200u32..210) {
            let mut bounds: Vec<u32> = vec![0];
            bounds.extend(cuts.iter().copied());
            bounds.push(n);
            let specs: Vec<BackendSpec> = bounds.windows(2).enumerate().map(|(i, w)| spec(&format!("b{i}"), i64::from(w[0]), i64::from(w[1]) - 1)).collect();
            let m = map(specs, n).unwrap();
            for s in 0..n {
                let o = m.owner(s).unwrap();
                let i = bounds.windows(2).position(|w| s >= w[0] && s < w[1]).unwrap();
                prop_assert_eq!(o, i);
            }
        }
    }
}
