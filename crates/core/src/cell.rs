//! The cell model and the validation of client input, field by field.
//!
//! Validation works on parsed JSON (`serde_json::Value`) rather than through a derived
//! deserializer so that every problem can be reported with the exact field at fault
//! (`body.cells[3].ref_key`), all at once, as RFC 9457 `errors` entries.

use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

pub mod batch;
#[cfg(test)]
mod fuzz;
pub mod number;

/// Longest column name accepted, in UTF-8 bytes.
pub const MAX_COLUMN_NAME_BYTES: usize = 255;

/// One problem with one input field, in the shape of an RFC 9457 `errors` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    /// Where: `body.row_key`, `path.ref_key`, `query.limit`.
    pub location: String,
    /// What is wrong, for a person.
    pub message: String,
    /// The offending value, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

impl FieldError {
    pub fn new(
        location: impl Into<String>,
        message: impl Into<String>,
        value: Option<Value>,
    ) -> Self {
        FieldError {
            location: location.into(),
            message: message.into(),
            value,
        }
    }
}

/// The coordinates of a cell.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CellKey {
    pub row_key: Uuid,
    pub column_name: String,
    pub ref_key: i64,
}

/// A validated cell to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCell {
    pub key: CellKey,
    pub body: Value,
}

/// Parses a row key written as a UUID string.
pub fn parse_row_key(s: &str, location: &str) -> Result<Uuid, FieldError> {
    Uuid::parse_str(s).map_err(|_| {
        FieldError::new(
            location,
            "must be a UUID such as 550e8400-e29b-41d4-a716-446655440000",
            Some(Value::String(s.to_owned())),
        )
    })
}

/// Checks a column name: 1..=255 bytes of UTF-8 without NUL.
pub fn check_column_name(s: &str, location: &str) -> Result<(), FieldError> {
    check_name_text(s, location, MAX_COLUMN_NAME_BYTES, true)
}

/// Checks a name: 1 to `max` bytes of UTF-8 without NUL. A name too long is shown cut short
/// when `show_long`, not at all otherwise.
pub fn check_name_text(
    s: &str,
    location: &str,
    max: usize,
    show_long: bool,
) -> Result<(), FieldError> {
    let value = || Some(Value::String(s.to_owned()));
    if s.is_empty() {
        return Err(FieldError::new(location, "must not be empty", value()));
    }
    if s.len() > max {
        return Err(FieldError::new(
            location,
            format!("must be at most {max} bytes of UTF-8 (got {})", s.len()),
            show_long.then(|| Value::String(format!("{}…", truncate(s, 32)))),
        ));
    }
    if s.contains('\0') {
        return Err(FieldError::new(
            location,
            "must not contain the NUL character",
            value(),
        ));
    }
    Ok(())
}

/// Checks a `$schema` property (which go-mezzanine's clients may send and which is otherwise
/// ignored): a string.
pub fn check_schema_url(v: &Value, location: &str) -> Result<(), FieldError> {
    match v {
        Value::String(_) => Ok(()),
        other => Err(FieldError::new(
            location,
            "must be a string (a URL to the JSON Schema for this object)",
            Some(other.clone()),
        )),
    }
}

/// Parses a decimal i64 (path or query parameters).
pub fn parse_i64(s: &str, location: &str) -> Result<i64, FieldError> {
    s.trim().parse::<i64>().map_err(|_| {
        FieldError::new(
            location,
            not_an_i64(s.trim()),
            Some(Value::String(s.to_owned())),
        )
    })
}

/// Why a number's text (`1.5`, `1.0`, `1e3`, `9223372036854775808`) is not an i64.
fn not_an_i64(text: &str) -> &'static str {
    const RANGE: &str = "must be an integer between -9223372036854775808 and 9223372036854775807";
    if text.parse::<i128>().is_ok() {
        return RANGE;
    }
    match text.parse::<f64>() {
        // 2^63, the first double past i64's range (and beyond a double's: infinity).
        Ok(f) if f.abs() >= 9_223_372_036_854_775_808.0 => RANGE,
        Ok(f) if f.fract() != 0.0 => "must be an integer",
        Ok(_) => {
            "must be written as an integer, without a fraction or an exponent (1, not 1.0 or 1e0)"
        }
        Err(_) => "must be an integer",
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// At most this many faults are reported for one body (a body of a million bad numbers gets
/// ten entries, not a million).
pub const MAX_BODY_FAULTS: usize = 10;

/// Checks a cell's body for what PostgreSQL's JSONB cannot store (a NUL character in a string
/// or key; a number outside `numeric`'s range), naming each fault's path under `path` (at most
/// [`MAX_BODY_FAULTS`]), and measures it as stored ([`stored_size`]).
pub fn check_body(v: &Value, path: &str) -> Result<u64, Vec<FieldError>> {
    let mut walk = BodyWalk {
        path: path.to_owned(),
        faults: Vec::new(),
        size: 0,
    };
    walk.value(v);
    if walk.faults.is_empty() {
        Ok(walk.size)
    } else {
        Err(walk.faults)
    }
}

/// The size of a body as it is stored: compact JSON, strings escaped as JSON requires, every
/// number written out in full as PostgreSQL stores and returns it (`1e3` as `1000`). For a
/// body without numbers in exponent form it is at most the length of its text; PostgreSQL's
/// own rendering adds a space after each `,` and `:` (at most 1.5 times this). A number
/// PostgreSQL cannot store counts as its text.
pub fn stored_size(v: &Value) -> u64 {
    let mut walk = BodyWalk {
        path: String::new(),
        faults: Vec::new(),
        size: 0,
    };
    walk.value(v);
    walk.size
}

struct BodyWalk {
    path: String,
    faults: Vec<FieldError>,
    size: u64,
}

impl BodyWalk {
    fn fault(&mut self, message: String, value: Option<Value>) {
        if self.faults.len() < MAX_BODY_FAULTS {
            self.faults
                .push(FieldError::new(self.path.clone(), message, value));
        }
    }

    fn string(&mut self, s: &str) {
        self.size += 2 + s
            .bytes()
            .map(|b| match b {
                b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
                0..=0x1f => 6,
                _ => 1,
            })
            .sum::<u64>();
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Null | Value::Bool(true) => self.size += 4,
            Value::Bool(false) => self.size += 5,
            Value::Number(n) => {
                let text = n.to_string();
                match number::numeric(&text) {
                    Ok(num) => self.size += num.stored_len(),
                    Err(e) => {
                        self.size += text.len() as u64;
                        let shown = if text.len() <= 40 {
                            Value::Number(n.clone())
                        } else {
                            Value::String(format!(
                                "{}… ({} characters)",
                                truncate(&text, 24),
                                text.len()
                            ))
                        };
                        self.fault(e.to_string(), Some(shown));
                    }
                }
            }
            Value::String(s) => {
                self.string(s);
                if s.contains('\0') {
                    self.fault(
                        "must not contain the NUL character (\\u0000)".to_owned(),
                        None,
                    );
                }
            }
            Value::Array(items) => {
                self.size += 2 + items.len().saturating_sub(1) as u64;
                for (i, item) in items.iter().enumerate() {
                    let len = self.path.len();
                    self.path.push_str(&format!("[{i}]"));
                    self.value(item);
                    self.path.truncate(len);
                }
            }
            Value::Object(map) => {
                self.size += 2 + map.len().saturating_sub(1) as u64;
                for (k, item) in map {
                    let len = self.path.len();
                    self.path.push('.');
                    self.path.push_str(k);
                    self.string(k);
                    self.size += 1; // the colon
                    if k.contains('\0') {
                        self.fault(
                            "must not contain the NUL character (\\u0000)".to_owned(),
                            None,
                        );
                    } else {
                        self.value(item);
                    }
                    self.path.truncate(len);
                }
            }
        }
    }
}

/// A cell that passed validation, and the size of its body as stored ([`stored_size`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub cell: NewCell,
    pub stored_bytes: u64,
}

impl NewCell {
    /// Validates one cell object (`{"row_key", "column_name", "ref_key", "body"}`), reporting
    /// every problem with its location under `prefix` (such as `body` or `body.cells[3]`).
    /// The body must be storable by PostgreSQL ([`check_body`]) and, as stored, at most
    /// `max_stored_bytes` long ([`stored_size`]).
    /// Takes the value so that the body moves into the cell instead of being copied (a batch
    /// of 1000 cells then never holds its bodies twice).
    pub fn from_json(
        v: Value,
        prefix: &str,
        max_stored_bytes: u64,
    ) -> Result<Checked, Vec<FieldError>> {
        match v {
            Value::Object(obj) => Self::from_object(obj, prefix, max_stored_bytes),
            other => Err(vec![FieldError::new(
                prefix,
                "must be a JSON object with row_key, column_name, ref_key and body",
                Some(other),
            )]),
        }
    }

    fn from_object(
        mut obj: Map<String, Value>,
        prefix: &str,
        max_stored_bytes: u64,
    ) -> Result<Checked, Vec<FieldError>> {
        let mut errors = Vec::new();
        let loc = |f: &str| format!("{prefix}.{f}");

        for (k, v) in &obj {
            match k.as_str() {
                "row_key" | "column_name" | "ref_key" | "body" => {}
                "$schema" => {
                    if let Err(e) = check_schema_url(v, &loc(k)) {
                        errors.push(e);
                    }
                }
                _ => errors.push(FieldError::new(
                    loc(k),
                    "unexpected property",
                    Some(v.clone()),
                )),
            }
        }

        let row_key = match obj.get("row_key") {
            None => {
                errors.push(FieldError::new(loc("row_key"), "is required", None));
                None
            }
            Some(Value::String(s)) => parse_row_key(s, &loc("row_key"))
                .map_err(|e| errors.push(e))
                .ok(),
            Some(other) => {
                errors.push(FieldError::new(
                    loc("row_key"),
                    "must be a string holding a UUID",
                    Some(other.clone()),
                ));
                None
            }
        };

        let column_name = match obj.get("column_name") {
            None => {
                errors.push(FieldError::new(loc("column_name"), "is required", None));
                None
            }
            Some(Value::String(s)) => match check_column_name(s, &loc("column_name")) {
                Ok(()) => Some(s.clone()),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            Some(other) => {
                errors.push(FieldError::new(
                    loc("column_name"),
                    "must be a string",
                    Some(other.clone()),
                ));
                None
            }
        };

        let ref_key = match obj.get("ref_key") {
            None => {
                errors.push(FieldError::new(loc("ref_key"), "is required", None));
                None
            }
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Some(i),
                None => {
                    errors.push(FieldError::new(
                        loc("ref_key"),
                        not_an_i64(&n.to_string()),
                        Some(Value::Number(n.clone())),
                    ));
                    None
                }
            },
            Some(other) => {
                errors.push(FieldError::new(
                    loc("ref_key"),
                    "must be an integer",
                    Some(other.clone()),
                ));
                None
            }
        };

        let body = match obj.remove("body") {
            None => {
                errors.push(FieldError::new(
                    loc("body"),
                    "is required (any JSON value)",
                    None,
                ));
                None
            }
            Some(b) => match check_body(&b, &loc("body")) {
                Ok(size) if size > max_stored_bytes => {
                    errors.push(FieldError::new(
                        loc("body"),
                        format!(
                            "is {size} bytes once stored (its numbers written out in full, \
                             as PostgreSQL stores them), above the limit of {max_stored_bytes} \
                             (MAX_BODY_BYTES)"
                        ),
                        None,
                    ));
                    None
                }
                Ok(size) => Some((b, size)),
                Err(faults) => {
                    errors.extend(faults);
                    None
                }
            },
        };

        match (row_key, column_name, ref_key, body) {
            (Some(row_key), Some(column_name), Some(ref_key), Some((body, stored_bytes)))
                if errors.is_empty() =>
            {
                Ok(Checked {
                    cell: NewCell {
                        key: CellKey {
                            row_key,
                            column_name,
                            ref_key,
                        },
                        body,
                    },
                    stored_bytes,
                })
            }
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from_json(v: Value, prefix: &str) -> Result<NewCell, Vec<FieldError>> {
        NewCell::from_json(v, prefix, 1 << 20).map(|c| c.cell)
    }

    fn locations(r: Result<NewCell, Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.location).collect()
    }

    #[test]
    fn a_valid_cell_parses() {
        let v = json!({"row_key": "550e8400-e29b-41d4-a716-446655440000", "column_name": "profile", "ref_key": 3, "body": {"a": 1}});
        let c = from_json(v, "body").unwrap();
        assert_eq!(c.key.ref_key, 3);
        assert_eq!(c.key.column_name, "profile");
        assert_eq!(c.body, json!({"a": 1}));
    }

    #[test]
    fn every_missing_field_is_named() {
        assert_eq!(
            locations(from_json(json!({}), "body")),
            [
                "body.row_key",
                "body.column_name",
                "body.ref_key",
                "body.body"
            ]
        );
    }

    #[test]
    fn wrong_types_are_named() {
        let v = json!({"row_key": 5, "column_name": [], "ref_key": "x", "body": 1});
        assert_eq!(
            locations(from_json(v, "body.cells[2]")),
            [
                "body.cells[2].row_key",
                "body.cells[2].column_name",
                "body.cells[2].ref_key"
            ]
        );
    }

    #[test]
    fn bad_values_are_named() {
        let long = "x".repeat(256);
        let v = json!({"row_key": "nope", "column_name": long, "ref_key": 1.5, "body": null});
        assert_eq!(
            locations(from_json(v, "body")),
            ["body.row_key", "body.column_name", "body.ref_key"]
        );
        let v = json!({"row_key": "550e8400-e29b-41d4-a716-446655440000", "column_name": "", "ref_key": 18446744073709551615u64, "body": 1});
        assert_eq!(
            locations(from_json(v, "body")),
            ["body.column_name", "body.ref_key"]
        );
    }

    #[test]
    fn an_integral_number_with_a_fraction_or_exponent_is_named_for_its_form() {
        // Found by schemathesis: -378303674310.0 was said to be out of i64's range.
        for text in ["-378303674310.0", "1e3", "-0.0", "1E0"] {
            let v = cell_text(text);
            let mut v = v;
            v["ref_key"] = v["body"].take();
            v["body"] = Value::Null;
            let e = from_json(v, "body").unwrap_err();
            assert_eq!(e[0].location, "body.ref_key");
            assert!(
                e[0].message.contains("without a fraction"),
                "{text}: {}",
                e[0].message
            );
            assert!(parse_i64(text, "path.ref_key")
                .unwrap_err()
                .message
                .contains("without a fraction"));
        }
        for (text, why) in [
            ("1.5", "must be an integer"),
            ("9223372036854775808", "between"),
            ("9.3e18", "between"),
            ("-1e19", "between"),
            ("1e400", "between"),
        ] {
            let mut v = cell_text(text);
            v["ref_key"] = v["body"].take();
            v["body"] = Value::Null;
            assert!(
                from_json(v, "body").unwrap_err()[0].message.contains(why),
                "{text}"
            );
        }
    }

    #[test]
    fn column_names_count_bytes_not_chars() {
        assert!(check_column_name(&"é".repeat(127), "c").is_ok()); // 254 bytes
        assert!(check_column_name(&"é".repeat(128), "c").is_err()); // 256 bytes
        assert!(check_column_name(&"x".repeat(255), "c").is_ok());
    }

    #[test]
    fn nul_in_body_is_refused_with_its_path() {
        let v = json!({"row_key": "550e8400-e29b-41d4-a716-446655440000", "column_name": "c", "ref_key": 1, "body": {"a": [1, "x\u{0}"]}});
        assert_eq!(locations(from_json(v, "body")), ["body.body.a[1]"]);
    }

    #[test]
    fn unknown_properties_are_refused_but_schema_is_allowed() {
        let v = json!({"$schema": "x", "row_key": "550e8400-e29b-41d4-a716-446655440000", "column_name": "c", "ref_key": 1, "body": 1, "extra": true});
        assert_eq!(locations(from_json(v, "body")), ["body.extra"]);
    }

    #[test]
    fn a_schema_url_is_a_string() {
        let v = json!({"$schema": 1, "row_key": "550e8400-e29b-41d4-a716-446655440000", "column_name": "c", "ref_key": 1, "body": 1});
        assert_eq!(locations(from_json(v, "body")), ["body.$schema"]);
    }

    #[test]
    fn not_an_object() {
        assert_eq!(locations(from_json(json!([1]), "body")), ["body"]);
    }

    #[test]
    fn integers_in_text() {
        assert_eq!(parse_i64(" 42", "q").unwrap(), 42);
        assert!(parse_i64("9223372036854775808", "q")
            .unwrap_err()
            .message
            .contains("between"));
        assert_eq!(
            parse_i64("abc", "q").unwrap_err().message,
            "must be an integer"
        );
    }

    fn cell_text(body: &str) -> Value {
        let text = format!(
            r#"{{"row_key": "550e8400-e29b-41d4-a716-446655440000", "column_name": "c", "ref_key": 1, "body": {body}}}"#
        );
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn numbers_postgresql_cannot_store_are_named_by_path() {
        let v = cell_text(
            r#"{"a": [1, 1e131072], "b": {"c": -1e131072}, "d": 1e-16384, "ok": [1e131071, 1e-16383]}"#,
        );
        let errors = from_json(v, "body.cells[4]").unwrap_err();
        let locs: Vec<&str> = errors.iter().map(|e| e.location.as_str()).collect();
        assert_eq!(
            locs,
            [
                "body.cells[4].body.a[1]",
                "body.cells[4].body.b.c",
                "body.cells[4].body.d"
            ]
        );
        assert!(errors[0]
            .message
            .contains("131073 digits before the decimal point"));
        assert!(errors[2]
            .message
            .contains("16384 digits after the decimal point"));
        assert_eq!(
            errors[0].value,
            Some(serde_json::from_str("1e131072").unwrap())
        );
        // A top-level number is the body itself.
        assert_eq!(
            locations(from_json(cell_text("1e131072"), "body")),
            ["body.body"]
        );
        // A long number is shown shortened.
        let long = format!("{}e131000", "9".repeat(100));
        let e = from_json(cell_text(&long), "body").unwrap_err();
        assert!(e[0]
            .value
            .as_ref()
            .unwrap()
            .as_str()
            .unwrap()
            .ends_with("(108 characters)"));
    }

    #[test]
    fn at_most_ten_faults_per_body() {
        let many = vec!["1e200000"; 50].join(",");
        let errors = from_json(cell_text(&format!("[{many}]")), "body").unwrap_err();
        assert_eq!(errors.len(), MAX_BODY_FAULTS);
        assert_eq!(errors[9].location, "body.body[9]");
    }

    #[test]
    fn the_stored_size_is_bounded() {
        // 1000 numbers of 131072 digits each, sent as 9 KB.
        let many = vec!["1e131071"; 1000].join(",");
        let v = cell_text(&format!("[{many}]"));
        assert_eq!(stored_size(&v["body"]), 2 + 999 + 1000 * 131_072);
        let errors = from_json(v, "body").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].location, "body.body");
        assert!(
            errors[0].message.contains("131073001 bytes once stored"),
            "{}",
            errors[0].message
        );
        assert!(errors[0].message.contains("MAX_BODY_BYTES"));
        // At the limit, accepted, and the size is reported.
        let v = cell_text("[1e9, \"é\\n\", {\"k\": null}]");
        // [1000000000,"é\n",{"k":null}]
        let c = NewCell::from_json(v.clone(), "body", 30).unwrap();
        assert_eq!(c.stored_bytes, 30);
        assert!(NewCell::from_json(v, "body", 29).is_err());
    }

    #[test]
    fn bodies_keep_their_text() {
        let body = r#"{"big":123456789012345678901234567890,"e":1E+5,"f":1.50,"g":-0,"h":5e-324}"#;
        let c = from_json(cell_text(body), "body").unwrap();
        // Every digit as sent (serde_json writes the exponent's E in lower case).
        assert_eq!(
            serde_json::to_string(&c.body).unwrap(),
            body.replace("1E+5", "1e+5")
        );
    }

    fn json_tree() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            "[ -~\u{1}-\u{1f}é😀]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,3}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Every place in `v`: its path as `check_body` names it, and the steps to it.
    fn places(v: &Value, path: String, steps: Vec<String>, out: &mut Vec<(String, Vec<String>)>) {
        out.push((path.clone(), steps.clone()));
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let mut s = steps.clone();
                    s.push(i.to_string());
                    places(item, format!("{path}[{i}]"), s, out);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let mut s = steps.clone();
                    s.push(k.clone());
                    places(item, format!("{path}.{k}"), s, out);
                }
            }
            _ => {}
        }
    }

    fn at<'a>(v: &'a mut Value, steps: &[String]) -> &'a mut Value {
        match steps.split_first() {
            None => v,
            Some((step, rest)) => match v {
                Value::Array(items) => at(&mut items[step.parse::<usize>().unwrap()], rest),
                Value::Object(map) => at(map.get_mut(step).unwrap(), rest),
                _ => unreachable!(),
            },
        }
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn without_exponents_the_stored_size_is_the_compact_text(v in json_tree()) {
            prop_assert_eq!(stored_size(&v), serde_json::to_string(&v).unwrap().len() as u64);
            prop_assert_eq!(check_body(&v, "body"), Ok(serde_json::to_string(&v).unwrap().len() as u64));
        }

        #[test]
        fn a_number_out_of_range_is_named_wherever_it_is(
            v in json_tree(),
            pick in any::<prop::sample::Index>(),
            bad in prop_oneof![Just("1e131072"), Just("-1e131072"), Just("1e-16384"), Just("0e-20000"), Just("12345e200000")],
        ) {
            let mut v = v;
            let mut all = Vec::new();
            places(&v, "body.body".to_owned(), Vec::new(), &mut all);
            let (path, steps) = all[pick.index(all.len())].clone();
            *at(&mut v, &steps) = serde_json::from_str(bad).unwrap();
            let cell = json!({"row_key": "550e8400-e29b-41d4-a716-446655440000", "column_name": "c", "ref_key": 1, "body": v});
            let errors = from_json(cell, "body").unwrap_err();
            prop_assert_eq!(errors.len(), 1);
            prop_assert_eq!(&errors[0].location, &path);
        }
    }
}
