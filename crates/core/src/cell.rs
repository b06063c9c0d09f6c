//! The cell model and the validation of client input, field by field.
//!
//! Validation works on parsed JSON (`serde_json::Value`) rather than through a derived
//! deserializer so that every problem can be reported with the exact field at fault
//! (`body.cells[3].ref_key`), all at once, as RFC 9457 `errors` entries.

use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

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
    let value = || Some(Value::String(s.to_owned()));
    if s.is_empty() {
        return Err(FieldError::new(location, "must not be empty", value()));
    }
    if s.len() > MAX_COLUMN_NAME_BYTES {
        return Err(FieldError::new(
            location,
            format!(
                "must be at most {MAX_COLUMN_NAME_BYTES} bytes of UTF-8 (got {})",
                s.len()
            ),
            Some(Value::String(format!("{}…", truncate(s, 32)))),
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

/// Parses a decimal i64 (path or query parameters).
pub fn parse_i64(s: &str, location: &str) -> Result<i64, FieldError> {
    s.trim().parse::<i64>().map_err(|_| {
        let why = if s.trim().parse::<f64>().is_ok() || s.trim().parse::<i128>().is_ok() {
            "must be an integer between -9223372036854775808 and 9223372036854775807"
        } else {
            "must be an integer"
        };
        FieldError::new(location, why, Some(Value::String(s.to_owned())))
    })
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Finds a NUL character anywhere in a JSON value (PostgreSQL's JSONB cannot store one).
fn find_nul(v: &Value, path: &mut String) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = find_nul(item, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        Value::Object(map) => map.iter().any(|(k, item)| {
            let len = path.len();
            path.push('.');
            path.push_str(k);
            let found = k.contains('\0') || find_nul(item, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        _ => false,
    }
}

impl NewCell {
    /// Validates one cell object (`{"row_key", "column_name", "ref_key", "body"}`), reporting
    /// every problem with its location under `prefix` (such as `body` or `body.cells[3]`).
    /// Takes the value so that the body moves into the cell instead of being copied (a batch
    /// of 1000 cells then never holds its bodies twice).
    pub fn from_json(v: Value, prefix: &str) -> Result<NewCell, Vec<FieldError>> {
        match v {
            Value::Object(obj) => Self::from_object(obj, prefix),
            other => Err(vec![FieldError::new(
                prefix,
                "must be a JSON object with row_key, column_name, ref_key and body",
                Some(other),
            )]),
        }
    }

    fn from_object(mut obj: Map<String, Value>, prefix: &str) -> Result<NewCell, Vec<FieldError>> {
        let mut errors = Vec::new();
        let loc = |f: &str| format!("{prefix}.{f}");

        for k in obj.keys() {
            if !matches!(
                k.as_str(),
                "row_key" | "column_name" | "ref_key" | "body" | "$schema"
            ) {
                errors.push(FieldError::new(
                    loc(k),
                    "unexpected property",
                    obj.get(k).cloned(),
                ));
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
                    let why = if n.is_f64() && n.as_f64().is_some_and(|f| f.fract() != 0.0) {
                        "must be an integer"
                    } else {
                        "must be an integer between -9223372036854775808 and 9223372036854775807"
                    };
                    errors.push(FieldError::new(
                        loc("ref_key"),
                        why,
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
            Some(b) => {
                let mut path = loc("body");
                if find_nul(&b, &mut path) {
                    errors.push(FieldError::new(
                        path,
                        "must not contain the NUL character (\\u0000)",
                        None,
                    ));
                    None
                } else {
                    Some(b)
                }
            }
        };

        match (row_key, column_name, ref_key, body) {
            (Some(row_key), Some(column_name), Some(ref_key), Some(body)) if errors.is_empty() => {
                Ok(NewCell {
                    key: CellKey {
                        row_key,
                        column_name,
                        ref_key,
                    },
                    body,
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

    fn locations(r: Result<NewCell, Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.location).collect()
    }

    #[test]
    fn a_valid_cell_parses() {
        let v = json!({"row_key": "550e8400-e29b-41d4-a716-446655440000", "column_name": "profile", "ref_key": 3, "body": {"a": 1}});
        let c = NewCell::from_json(v, "body").unwrap();
        assert_eq!(c.key.ref_key, 3);
        assert_eq!(c.key.column_name, "profile");
        assert_eq!(c.body, json!({"a": 1}));
    }

    #[test]
    fn every_missing_field_is_named() {
        assert_eq!(
            locations(NewCell::from_json(json!({}), "body")),
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
            locations(NewCell::from_json(v, "body.cells[2]")),
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
            locations(NewCell::from_json(v, "body")),
            ["body.row_key", "body.column_name", "body.ref_key"]
        );
        let v = json!({"row_key": "550e8400-e29b-41d4-a716-446655440000", "column_name": "", "ref_key": 18446744073709551615u64, "body": 1});
        assert_eq!(
            locations(NewCell::from_json(v, "body")),
            ["body.column_name", "body.ref_key"]
        );
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
        assert_eq!(locations(NewCell::from_json(v, "body")), ["body.body.a[1]"]);
    }

    #[test]
    fn unknown_properties_are_refused_but_schema_is_allowed() {
        let v = json!({"$schema": "x", "row_key": "550e8400-e29b-41d4-a716-446655440000", "column_name": "c", "ref_key": 1, "body": 1, "extra": true});
        assert_eq!(locations(NewCell::from_json(v, "body")), ["body.extra"]);
    }

    #[test]
    fn not_an_object() {
        assert_eq!(locations(NewCell::from_json(json!([1]), "body")), ["body"]);
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
}
