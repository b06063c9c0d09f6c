//! The cell parser ([`NewCell::from_json`]) and the batch parser ([`parse_batch`]) fuzzed as
//! whole parsers: arbitrary bytes, arbitrary JSON values and mutated valid bodies give a typed
//! result or faults naming their field, never a panic; every valid cell round-trips; a batch's
//! results line up with its cells, and a bad cell never fails a valid neighbour.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::batch::{parse_batch, BatchError, MAX_BATCH};
use super::{stored_size, CellKey, FieldError, NewCell};

const LIMIT: u64 = 1 << 20;

/// Whether `location` is `prefix` or a field under it (`body.cells[1]` is not under
/// `body.cells[10]`).
fn under(location: &str, prefix: &str) -> bool {
    location == prefix
        || location
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// Every fault names a field under `prefix` and says what is wrong.
fn named_under(errors: &[FieldError], prefix: &str) -> Result<(), TestCaseError> {
    prop_assert!(!errors.is_empty(), "a refusal without a fault");
    for e in errors {
        prop_assert!(
            under(&e.location, prefix),
            "{:?} is not under {prefix}",
            e.location
        );
        prop_assert!(!e.message.is_empty());
    }
    Ok(())
}

/// Any JSON value, with the field names of a cell among the keys and the numbers and strings
/// the parser treats apart (floats, huge and out-of-range numbers, NUL, UUIDs).
fn any_json() -> impl Strategy<Value = Value> {
    let number = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            Just("1e131072"),
            Just("-1e-16384"),
            Just("123456789012345678901234567890"),
            Just("1.5"),
            Just("-0"),
            Just("9223372036854775808"),
            Just("1e3"),
        ]
        .prop_map(|t| serde_json::from_str::<Value>(t).unwrap()),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number,
        "\\PC{0,12}".prop_map(Value::String),
        "[a\u{0}é]{0,4}".prop_map(Value::String),
        any::<u128>().prop_map(|n| Value::String(Uuid::from_u128(n).to_string())),
    ];
    let key = prop_oneof![
        Just("row_key".to_owned()),
        Just("column_name".to_owned()),
        Just("ref_key".to_owned()),
        Just("body".to_owned()),
        Just("cells".to_owned()),
        Just("$schema".to_owned()),
        "\\PC{0,6}",
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body PostgreSQL can store: any JSON without NUL and with numbers in range.
fn body() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[^\u{0}]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("[^\u{0}]{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid cell: any row key, a column name of 1 to 255 bytes without NUL, any ref_key.
fn cell() -> impl Strategy<Value = NewCell> {
    let column = prop_oneof![
        "[^\u{0}]{1,40}",
        "[a-z]{255}",
        "é{1,127}",
        "[\u{1}-\u{1f} \"\\\\]{1,8}",
    ]
    .prop_filter("at most 255 bytes", |s| s.len() <= 255);
    (any::<u128>(), column, any::<i64>(), body()).prop_map(|(row, column_name, ref_key, body)| {
        NewCell {
            key: CellKey {
                row_key: Uuid::from_u128(row),
                column_name,
                ref_key,
            },
            body,
        }
    })
}

fn cell_json(c: &NewCell) -> Value {
    json!({
        "row_key": c.key.row_key.to_string(),
        "column_name": c.key.column_name,
        "ref_key": c.key.ref_key,
        "body": c.body,
    })
}

/// The ways a valid cell is spoiled, each naming the field it spoils (`None`: the cell itself).
#[derive(Debug, Clone)]
enum Spoil {
    Drop(&'static str),
    Set(&'static str, Value),
    Extra(String),
    NotAnObject(Value),
}

fn spoil() -> impl Strategy<Value = Spoil> {
    let field = prop_oneof![
        Just("row_key"),
        Just("column_name"),
        Just("ref_key"),
        Just("body")
    ];
    prop_oneof![
        field.prop_map(Spoil::Drop),
        prop_oneof![
            Just(json!(5)),
            Just(json!("not-a-uuid")),
            Just(json!(null)),
            Just(json!([])),
            Just(json!("550e8400-e29b-41d4-a716-44665544000")),
        ]
        .prop_map(|v| Spoil::Set("row_key", v)),
        prop_oneof![
            Just(json!("")),
            Just(json!("a\u{0}b")),
            Just(json!("x".repeat(256))),
            Just(json!("é".repeat(128))),
            Just(json!(format!("x{}", "é".repeat(130)))),
            Just(json!(1)),
            Just(json!({})),
        ]
        .prop_map(|v| Spoil::Set("column_name", v)),
        prop_oneof![
            Just(json!(1.5)),
            Just(json!("1")),
            Just(json!(u64::MAX)),
            Just(serde_json::from_str::<Value>("-9223372036854775809").unwrap()),
            Just(json!(true)),
        ]
        .prop_map(|v| Spoil::Set("ref_key", v)),
        prop_oneof![
            Just(json!({"a": ["x\u{0}"]})),
            Just(serde_json::from_str::<Value>("[1, 1e131072]").unwrap()),
            Just(json!({"k\u{0}": 1})),
        ]
        .prop_map(|v| Spoil::Set("body", v)),
        "[a-z]{1,8}"
            .prop_filter("not a field", |k| !matches!(
                k.as_str(),
                "row_key" | "column_name" | "ref_key" | "body"
            ))
            .prop_map(Spoil::Extra),
        prop_oneof![
            Just(json!(null)),
            Just(json!([1])),
            Just(json!("cell")),
            Just(json!(3))
        ]
        .prop_map(Spoil::NotAnObject),
        Just(Spoil::Set("$schema", json!(1))),
    ]
}

fn spoiled(c: &NewCell, how: &Spoil) -> Value {
    let mut v = cell_json(c);
    let obj: &mut Map<String, Value> = v.as_object_mut().unwrap();
    match how {
        Spoil::Drop(k) => {
            obj.remove(*k);
        }
        Spoil::Set(k, x) => {
            obj.insert((*k).to_owned(), x.clone());
        }
        Spoil::Extra(k) => {
            obj.insert(k.clone(), json!(1));
        }
        Spoil::NotAnObject(x) => return x.clone(),
    }
    v
}

/// Where the fault of a spoiled cell at `prefix` is reported.
fn spoiled_at(how: &Spoil, prefix: &str) -> String {
    match how {
        Spoil::Drop(k) | Spoil::Set(k, _) => format!("{prefix}.{k}"),
        Spoil::Extra(k) => format!("{prefix}.{k}"),
        Spoil::NotAnObject(_) => prefix.to_owned(),
    }
}

/// Changes a few bytes of `text`: replaced, inserted, removed.
fn mutate(text: &[u8], edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
    let mut out = text.to_vec();
    for (at, kind, byte) in edits {
        if out.is_empty() {
            out.push(*byte);
            continue;
        }
        let i = at.index(out.len());
        match kind % 3 {
            0 => out[i] = *byte,
            1 => out.insert(i, *byte),
            _ => {
                out.remove(i);
            }
        }
    }
    out
}

/// Bytes that look like JSON more often than random bytes do.
fn json_bytes() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        prop::sample::select(b"{}[]\",:0123456789.eE+-\\u tfnl\x00".to_vec()),
    ]
}

/// Parses `bytes` as the server does (`serde_json`, then the parser), checking the outcome's
/// shape; returns whether the batch parsed.
fn parse_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return Ok(());
    };
    if let Err(errors) = NewCell::from_json(v.clone(), "body", LIMIT) {
        named_under(&errors, "body")?;
    }
    check_batch(v, LIMIT)
}

/// The batch parser on any value: a shape fault naming a field under `body`, or one result per
/// input cell, each valid or refused under its own index.
fn check_batch(v: Value, limit: u64) -> Result<(), TestCaseError> {
    let inputs = v.get("cells").and_then(Value::as_array).cloned();
    match parse_batch(v, limit) {
        Err(BatchError::Shape(f)) => named_under(&[f], "body")?,
        Err(BatchError::TooLarge {
            stored_bytes,
            limit: l,
        }) => {
            prop_assert_eq!(l, limit);
            prop_assert!(stored_bytes > limit);
        }
        Ok(results) => {
            let inputs = inputs.expect("a parsed batch has cells");
            prop_assert_eq!(results.len(), inputs.len());
            for (i, (r, input)) in results.into_iter().zip(inputs).enumerate() {
                match r {
                    Ok(c) => prop_assert_eq!(
                        Some(c),
                        NewCell::from_json(input, "x", limit).ok().map(|c| c.cell)
                    ),
                    Err(errors) => named_under(&errors, &format!("body.cells[{i}]"))?,
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(json_bytes(), 0..256)) {
        parse_bytes(&bytes)?;
    }

    #[test]
    fn arbitrary_json_gets_a_result_or_named_faults(v in any_json()) {
        if let Err(errors) = NewCell::from_json(v.clone(), "body.cells[7]", LIMIT) {
            named_under(&errors, "body.cells[7]")?;
        }
        check_batch(v.clone(), LIMIT)?;
        check_batch(json!({"cells": [v.clone()]}), LIMIT)?;
        check_batch(json!({"cells": v}), LIMIT)?;
    }

    #[test]
    fn arbitrary_cells_in_a_batch_line_up(cells in proptest::collection::vec(any_json(), 1..12), small in any::<bool>()) {
        check_batch(json!({"cells": cells}), if small { 64 } else { LIMIT })?;
    }

    #[test]
    fn mutated_valid_bodies_never_panic(
        cells in proptest::collection::vec(cell(), 1..4),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), json_bytes()), 1..6),
    ) {
        let one = serde_json::to_vec(&cell_json(&cells[0])).unwrap();
        parse_bytes(&mutate(&one, &edits))?;
        let batch = json!({"cells": cells.iter().map(cell_json).collect::<Vec<_>>()});
        parse_bytes(&mutate(&serde_json::to_vec(&batch).unwrap(), &edits))?;
    }

    #[test]
    fn every_valid_cell_round_trips(c in cell(), upper in any::<bool>()) {
        let mut v = cell_json(&c);
        if upper {
            // A UUID is read in either case.
            v["row_key"] = json!(c.key.row_key.to_string().to_uppercase());
        }
        // Through its text, as the server reads it.
        let v: Value = serde_json::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap();
        let checked = NewCell::from_json(v, "body", LIMIT).unwrap();
        prop_assert_eq!(checked.stored_bytes, stored_size(&c.body));
        prop_assert_eq!(&checked.cell, &c);
        // And back: the cell written out reads as itself.
        let again = NewCell::from_json(cell_json(&checked.cell), "body", LIMIT).unwrap();
        prop_assert_eq!(again.cell, c);
    }

    #[test]
    fn a_bad_cell_never_fails_a_valid_neighbour(
        cells in proptest::collection::vec((cell(), proptest::option::weighted(0.4, spoil())), 1..16),
    ) {
        let inputs: Vec<Value> = cells
            .iter()
            .map(|(c, how)| match how {
                Some(how) => spoiled(c, how),
                None => cell_json(c),
            })
            .collect();
        let results = parse_batch(json!({"cells": inputs}), LIMIT).unwrap();
        prop_assert_eq!(results.len(), cells.len());
        for (i, ((c, how), r)) in cells.iter().zip(results).enumerate() {
            let prefix = format!("body.cells[{i}]");
            match (how, r) {
                (None, Ok(parsed)) => prop_assert_eq!(&parsed, c),
                (None, Err(e)) => prop_assert!(false, "valid cell {i} refused: {e:?}"),
                (Some(how), Ok(_)) => prop_assert!(false, "cell {i} spoiled by {how:?} accepted"),
                (Some(how), Err(errors)) => {
                    named_under(&errors, &prefix)?;
                    let at = spoiled_at(how, &prefix);
                    prop_assert!(
                        errors.iter().any(|e| e.location == at || under(&e.location, &at)),
                        "{how:?}: {at} not named in {errors:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_batch_stores_at_most_the_limit(
        cells in proptest::collection::vec(cell(), 1..8),
        limit in 0u64..2048,
    ) {
        let sizes: Vec<u64> = cells.iter().map(|c| stored_size(&c.body)).collect();
        let batch = json!({"cells": cells.iter().map(cell_json).collect::<Vec<_>>()});
        let total: u64 = sizes.iter().filter(|&&s| s <= limit).sum();
        match parse_batch(batch, limit) {
            Err(BatchError::TooLarge { stored_bytes, .. }) => {
                prop_assert_eq!(stored_bytes, total);
                prop_assert!(total > limit);
            }
            Ok(results) => {
                prop_assert!(total <= limit);
                for (r, size) in results.iter().zip(&sizes) {
                    // A cell over the limit on its own is refused in its own result.
                    prop_assert_eq!(r.is_ok(), *size <= limit);
                }
            }
            Err(e) => prop_assert!(false, "{e:?}"),
        }
    }
}

#[test]
fn a_batch_holds_1_to_max_batch_cells() {
    let one = json!({"row_key": "550e8400-e29b-41d4-a716-446655440000", "column_name": "c", "ref_key": 1, "body": 1});
    for n in [0, MAX_BATCH + 1] {
        let e = parse_batch(json!({ "cells": vec![one.clone(); n] }), LIMIT).unwrap_err();
        assert!(matches!(e, BatchError::Shape(f) if f.location == "body.cells"));
    }
    assert_eq!(
        parse_batch(json!({ "cells": vec![one; MAX_BATCH] }), LIMIT)
            .unwrap()
            .len(),
        MAX_BATCH
    );
    for (v, at) in [
        (json!([]), "body"),
        (json!({"cells": [], "x": 1}), "body.x"),
        (json!({"$schema": 1, "cells": [1]}), "body.$schema"),
        (json!({}), "body.cells"),
        (json!({"cells": {}}), "body.cells"),
    ] {
        let e = parse_batch(v, LIMIT).unwrap_err();
        assert!(
            matches!(&e, BatchError::Shape(f) if f.location == at),
            "{e:?}"
        );
    }
}
