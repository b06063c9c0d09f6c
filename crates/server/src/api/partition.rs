//! partitionRead's query string: `partition_number`, `read_type`, `created_after`, `added_id`,
//! `limit`, each fault named.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use mezzanine_core::cell::parse_i64;
use mezzanine_core::FieldError;
use mezzanine_storage::cells::PartitionRead;
use serde_json::Value;

use crate::problem::Problem;

/// The query of a partition read, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartitionQuery {
    pub partition: u32,
    pub from: PartitionRead,
    pub limit: i64,
}

/// Validates partitionRead's query string, naming every faulty parameter.
pub fn parse_partition_query(
    raw: Option<&str>,
    num_shards: u32,
) -> Result<PartitionQuery, Problem> {
    let params: HashMap<String, String> = url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let mut errors = Vec::new();
    let mut int = |name: &str, required: bool| -> Option<i64> {
        match params.get(name) {
            None if required => {
                errors.push(FieldError::new(
                    format!("query.{name}"),
                    "is required",
                    None,
                ));
                None
            }
            None => None,
            Some(v) => parse_i64(v, &format!("query.{name}"))
                .map_err(|e| errors.push(e))
                .ok(),
        }
    };
    let partition = int("partition_number", true);
    let read_type = int("read_type", true);
    let added_id = int("added_id", false);
    let limit = int("limit", false);
    let partition = partition.and_then(|p| {
        if p >= 0 && p < i64::from(num_shards) {
            Some(p as u32)
        } else {
            errors.push(FieldError::new(
                "query.partition_number",
                format!("must be a shard number from 0 to {}", num_shards - 1),
                Some(Value::from(p)),
            ));
            None
        }
    });
    let created_after = match params.get("created_after") {
        None => None,
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                errors.push(FieldError::new(
                    "query.created_after",
                    "must be an RFC 3339 time such as 2024-01-31T12:00:00Z",
                    Some(Value::String(s.clone())),
                ));
                None
            }
        },
    };
    let from = match read_type {
        Some(2) => Some(PartitionRead::AfterAddedId(added_id.unwrap_or(0))),
        Some(1) => Some(PartitionRead::AfterCreatedAt(created_after)),
        Some(other) => {
            errors.push(FieldError::new(
                "query.read_type",
                "must be 1 (by created_at) or 2 (by added_id)",
                Some(Value::from(other)),
            ));
            None
        }
        None => None,
    };
    let limit = match limit {
        None => 100,
        Some(l) if l <= 0 => 100,
        Some(l) => l.min(1000),
    };
    match (partition, from) {
        (Some(partition), Some(from)) if errors.is_empty() => Ok(PartitionQuery {
            partition,
            from,
            limit,
        }),
        _ => Err(Problem::invalid(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locs(r: Result<PartitionQuery, Problem>) -> Vec<String> {
        r.unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.location)
            .collect()
    }

    #[test]
    fn partition_query_defaults_and_clamps() {
        let q = parse_partition_query(Some("partition_number=3&read_type=2"), 64).unwrap();
        assert_eq!(
            q,
            PartitionQuery {
                partition: 3,
                from: PartitionRead::AfterAddedId(0),
                limit: 100
            }
        );
        assert_eq!(
            parse_partition_query(Some("partition_number=3&read_type=2&limit=0"), 64)
                .unwrap()
                .limit,
            100
        );
        assert_eq!(
            parse_partition_query(Some("partition_number=3&read_type=2&limit=-5"), 64)
                .unwrap()
                .limit,
            100
        );
        assert_eq!(
            parse_partition_query(Some("partition_number=3&read_type=2&limit=5000"), 64)
                .unwrap()
                .limit,
            1000
        );
        assert_eq!(
            parse_partition_query(
                Some("partition_number=3&read_type=2&limit=7&added_id=9"),
                64
            )
            .unwrap()
            .from,
            PartitionRead::AfterAddedId(9)
        );
    }

    #[test]
    fn partition_query_names_each_bad_parameter() {
        assert_eq!(
            locs(parse_partition_query(None, 64)),
            ["query.partition_number", "query.read_type"]
        );
        assert_eq!(
            locs(parse_partition_query(
                Some("partition_number=64&read_type=3"),
                64
            )),
            ["query.partition_number", "query.read_type"]
        );
        assert_eq!(
            locs(parse_partition_query(
                Some("partition_number=x&read_type=2&limit=y&added_id=1e3"),
                64
            )),
            ["query.partition_number", "query.added_id", "query.limit"]
        );
        assert_eq!(
            locs(parse_partition_query(
                Some("partition_number=1&read_type=1&created_after=yesterday"),
                64
            )),
            ["query.created_after"]
        );
        assert_eq!(
            locs(parse_partition_query(
                Some("partition_number=-1&read_type=2&added_id=99999999999999999999"),
                64
            )),
            ["query.added_id", "query.partition_number"]
        );
    }
}

/// The parser fuzzed as a whole: any query string gets a query or a 422 naming only
/// parameters it reads; a valid query reads as written; each fault is named, and only those.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 5] = [
        "partition_number",
        "read_type",
        "created_after",
        "added_id",
        "limit",
    ];

    fn query(pairs: &[(&str, String)]) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
            .finish()
    }

    fn named_only_parameters(r: Result<PartitionQuery, Problem>) -> Result<(), TestCaseError> {
        if let Err(p) = r {
            prop_assert_eq!(p.status, 422);
            prop_assert!(!p.errors.is_empty());
            for e in &p.errors {
                let name = e.location.strip_prefix("query.");
                prop_assert!(
                    name.is_some_and(|n| NAMES.contains(&n)),
                    "{:?} names no parameter",
                    e.location
                );
            }
        }
        Ok(())
    }

    /// A parameter's value: valid for it, or not (`None`: left out).
    #[derive(Debug, Clone)]
    enum Param {
        Absent,
        Good(String),
        Bad(String),
    }

    fn bad_integer() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("1.5".to_owned()),
            Just("9223372036854775808".to_owned()),
            Just("1e3".to_owned()),
            "[a-z]{1,5}",
            "\\PC{1,6}".prop_filter("not an integer", |s| s.trim().parse::<i64>().is_err()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn any_query_string_gets_a_query_or_named_faults(raw in "\\PC{0,80}", n in 1u32..5000) {
            named_only_parameters(parse_partition_query(Some(&raw), n))?;
        }

        #[test]
        fn any_values_get_a_query_or_named_faults(
            pairs in proptest::collection::vec((prop::sample::select(NAMES.to_vec()), "\\PC{0,24}"), 0..8),
            n in 1u32..5000,
        ) {
            named_only_parameters(parse_partition_query(Some(&query(&pairs)), n))?;
        }

        #[test]
        fn a_valid_query_reads_as_written(
            n in 1u32..5000,
            pick in any::<prop::sample::Index>(),
            by_id in any::<bool>(),
            added_id in proptest::option::of(any::<i64>()),
            after in proptest::option::of(0i64..4_000_000_000),
            limit in proptest::option::of(any::<i64>()),
        ) {
            let partition = pick.index(n as usize) as u32;
            let mut pairs = vec![
                ("partition_number", partition.to_string()),
                ("read_type", if by_id { "2" } else { "1" }.to_owned()),
            ];
            let after = after.map(|s| DateTime::from_timestamp(s, 0).unwrap());
            if let Some(t) = after {
                pairs.push(("created_after", t.to_rfc3339()));
            }
            if let Some(a) = added_id {
                pairs.push(("added_id", a.to_string()));
            }
            if let Some(l) = limit {
                pairs.push(("limit", l.to_string()));
            }
            let q = parse_partition_query(Some(&query(&pairs)), n).unwrap();
            prop_assert_eq!(q.partition, partition);
            prop_assert_eq!(q.from, if by_id {
                PartitionRead::AfterAddedId(added_id.unwrap_or(0))
            } else {
                PartitionRead::AfterCreatedAt(after)
            });
            prop_assert_eq!(q.limit, match limit {
                Some(l) if l > 0 => l.min(1000),
                _ => 100,
            });
        }

        #[test]
        fn each_bad_parameter_is_named_and_only_those(
            n in 1u32..5000,
            partition in prop_oneof![
                (0u32..5000).prop_map(|p| Param::Good(p.to_string())),
                Just(Param::Absent),
                bad_integer().prop_map(Param::Bad),
                prop_oneof![Just(-1i64), 5000i64..i64::MAX].prop_map(|p| Param::Bad(p.to_string())),
            ],
            read_type in prop_oneof![
                prop_oneof![Just("1"), Just("2")].prop_map(|t| Param::Good(t.to_owned())),
                Just(Param::Absent),
                bad_integer().prop_map(Param::Bad),
                any::<i64>().prop_filter("not 1 or 2", |t| !(1..=2).contains(t)).prop_map(|t| Param::Bad(t.to_string())),
            ],
            created_after in prop_oneof![
                Just(Param::Absent),
                Just(Param::Good("2024-01-31T12:00:00+01:00".to_owned())),
                prop_oneof![Just("yesterday"), Just("2024-01-31"), Just("2024-13-01T00:00:00Z"), Just("")]
                    .prop_map(|s| Param::Bad(s.to_owned())),
            ],
            added_id in prop_oneof![
                Just(Param::Absent),
                any::<i64>().prop_map(|a| Param::Good(a.to_string())),
                bad_integer().prop_map(Param::Bad),
            ],
            limit in prop_oneof![
                Just(Param::Absent),
                any::<i64>().prop_map(|l| Param::Good(l.to_string())),
                bad_integer().prop_map(Param::Bad),
            ],
            near in proptest::option::of(-2i64..2),
        ) {
            // Or a partition number next to the bound.
            let partition = match near {
                Some(d) => Param::Good((i64::from(n) + d).to_string()),
                None => partition,
            };
            // A partition number is good only from 0 to n - 1.
            let partition = match partition {
                Param::Good(p) if !(0..i64::from(n)).contains(&p.parse::<i64>().unwrap()) => {
                    Param::Bad(p)
                }
                other => other,
            };
            let params = [
                ("partition_number", partition),
                ("read_type", read_type),
                ("created_after", created_after),
                ("added_id", added_id),
                ("limit", limit),
            ];
            let pairs: Vec<(&str, String)> = params
                .iter()
                .filter_map(|(k, p)| match p {
                    Param::Absent => None,
                    Param::Good(v) | Param::Bad(v) => Some((*k, v.clone())),
                })
                .collect();
            let mut expected: Vec<String> = params
                .iter()
                .filter(|(k, p)| match p {
                    Param::Bad(_) => true,
                    Param::Absent => matches!(*k, "partition_number" | "read_type"),
                    Param::Good(_) => false,
                })
                .map(|(k, _)| format!("query.{k}"))
                .collect();
            expected.sort();
            match parse_partition_query(Some(&query(&pairs)), n) {
                Ok(_) => prop_assert!(expected.is_empty(), "accepted with {expected:?} bad"),
                Err(p) => {
                    let mut got: Vec<String> = p.errors.into_iter().map(|e| e.location).collect();
                    got.sort();
                    prop_assert_eq!(got, expected);
                }
            }
        }
    }
}
