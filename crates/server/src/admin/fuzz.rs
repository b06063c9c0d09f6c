//! The admin API's request parsers fuzzed: any JSON value, query string or path segment gets
//! its typed value or a 422 naming the field at fault, never a panic.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::backends::with_secrets;
use super::rebalance::plan_request;
use super::{
    limit_param, object, optional_bool, parse_id, positive_field, required_string, shards_field,
    weight_field,
};
use crate::problem::Problem;

/// A 422 whose every fault is at one of `at`.
fn refused_at<T>(r: Result<T, Problem>, at: &[&str]) -> Result<Option<T>, TestCaseError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(p) => {
            prop_assert_eq!(p.status, 422);
            prop_assert!(!p.errors.is_empty());
            for e in &p.errors {
                prop_assert!(
                    at.contains(&e.location.as_str()),
                    "{:?} not among {at:?}",
                    e.location
                );
            }
            Ok(None)
        }
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(serde_json::from_str::<Value>("1e400").unwrap()),
        "\\PC{0,10}".prop_map(Value::String),
        prop_oneof![
            Just("0-3"),
            Just("8-15,20"),
            Just(" db2 "),
            Just("10s"),
            Just("rows"),
            Just("64")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object with some of the admin bodies' fields, each any value.
fn body() -> impl Strategy<Value = Value> {
    let field = prop::sample::select(vec![
        "name",
        "url",
        "weight",
        "draining",
        "shards",
        "to",
        "parallel",
        "max_rows_per_sec",
        "strategy",
        "window",
        "complete",
        "other",
    ]);
    prop_oneof![
        proptest::collection::btree_map(field, any_json(), 0..6)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        any_json(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn body_fields_get_a_value_or_a_named_fault(v in body(), n in 1u32..5000) {
        let allowed = ["name", "url", "weight"];
        if let Err(p) = object(v.clone(), &allowed) {
            prop_assert_eq!(p.status, 422);
            let at = &p.errors[0].location;
            prop_assert!(at == "body" || (at.starts_with("body.") && !allowed.contains(&&at[5..])), "{at}");
        }
        for name in ["name", "url", "to"] {
            if let Some(s) = refused_at(required_string(&v, name), &[&format!("body.{name}")])? {
                prop_assert!(!s.is_empty() && s.trim() == s);
            }
        }
        refused_at(optional_bool(&v, "draining"), &["body.draining"])?;
        for name in ["parallel", "max_rows_per_sec"] {
            if let Some(Some(i)) = refused_at(positive_field(&v, name), &[&format!("body.{name}")])? {
                prop_assert!(i >= 1);
            }
        }
        if let Some(Some(w)) = refused_at(weight_field(&v), &["body.weight"])? {
            prop_assert!(w.is_finite() && w > 0.0 && w <= 1e6);
        }
        if let Some((_, shards)) = refused_at(shards_field(&v, n), &["body.shards"])? {
            prop_assert!(!shards.is_empty() && shards.iter().all(|&s| s < n));
        }
        let max = Duration::from_secs(25);
        if let Some(req) = refused_at(plan_request(&v, None, max), &["body.strategy", "body.window", "body.parallel"])? {
            prop_assert!(req.window >= Duration::from_secs(1) && req.window <= max);
            prop_assert!((1..=64).contains(&req.parallel));
        }
    }

    #[test]
    fn a_required_string_is_trimmed_and_never_blank(s in "\\s{0,2}\\PC{0,8}\\s{0,2}") {
        let got = refused_at(required_string(&json!({ "name": s }), "name"), &["body.name"])?;
        prop_assert_eq!(got, (!s.trim().is_empty()).then(|| s.trim().to_owned()));
    }

    #[test]
    fn query_strings_get_a_value_or_a_named_fault(
        raw in "\\PC{0,40}",
        limit in prop_oneof![any::<i64>(), -2i64..3, 9_998i64..10_003],
        secrets in "\\PC{0,8}",
    ) {
        for q in [raw.clone(), format!("{raw}&limit={raw}")] {
            if let Some(l) = refused_at(limit_param(Some(&q), 100), &["query.limit"])? {
                prop_assert!((1..=10_000).contains(&l));
            }
        }
        let got = refused_at(limit_param(Some(&format!("limit={limit}")), 100), &["query.limit"])?;
        prop_assert_eq!(got, (1..=10_000).contains(&limit).then_some(limit));
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("with_secrets", &secrets)
            .finish();
        for q in [raw, q] {
            refused_at(with_secrets(Some(&q)), &["query.with_secrets"])?;
        }
    }

    #[test]
    fn path_ids_get_an_id_or_a_named_fault(id in prop_oneof!["\\PC{0,24}", any::<i64>().prop_map(|i| i.to_string())]) {
        if let Some(i) = refused_at(parse_id(id.clone(), "move"), &["path.id"])? {
            prop_assert!(i > 0);
            prop_assert_eq!(i.to_string(), id);
        }
    }
}

#[test]
fn each_parser_names_its_field() {
    let v = json!({"name": " ", "weight": 0, "draining": "yes", "parallel": 0, "shards": "x"});
    let at = |r: Problem| r.errors[0].location.clone();
    assert_eq!(at(required_string(&v, "name").unwrap_err()), "body.name");
    assert_eq!(at(weight_field(&v).unwrap_err()), "body.weight");
    assert_eq!(
        at(optional_bool(&v, "draining").unwrap_err()),
        "body.draining"
    );
    assert_eq!(
        at(positive_field(&v, "parallel").unwrap_err()),
        "body.parallel"
    );
    assert_eq!(at(shards_field(&v, 64).unwrap_err()), "body.shards");
    assert_eq!(at(object(json!([]), &[]).unwrap_err()), "body");
}
