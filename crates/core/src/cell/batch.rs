//! The body of a batch write, `{"cells": [...]}`: its shape is checked as a whole (a fault there
//! refuses the batch), each cell on its own (a fault there is that cell's result alone).

use serde_json::Value;

use super::{check_schema_url, Checked, FieldError, NewCell};

/// Most cells in one batch write.
pub const MAX_BATCH: usize = 1000;

/// Why a batch is refused as a whole.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// Its shape: not an object, an unexpected property, `cells` missing, not an array, empty
    /// or longer than [`MAX_BATCH`]. The field at fault is named.
    #[error("{}: {}", .0.location, .0.message)]
    Shape(FieldError),
    /// Its valid cells' bodies together are longer than the limit once stored.
    #[error("the batch's bodies are {stored_bytes} bytes once stored, above the limit of {limit}")]
    TooLarge { stored_bytes: u64, limit: u64 },
}

/// Parses a batch: one result per input cell, in input order, each a valid cell or its faults
/// (located under `body.cells[i]`). Every cell's body is at most `max_stored_bytes` once
/// stored, and so are all the valid cells' bodies together.
pub fn parse_batch(
    v: Value,
    max_stored_bytes: u64,
) -> Result<Vec<Result<NewCell, Vec<FieldError>>>, BatchError> {
    let shape = |location: String, message: String, value: Option<Value>| {
        BatchError::Shape(FieldError::new(location, message, value))
    };
    let Value::Object(mut obj) = v else {
        return Err(shape(
            "body".into(),
            "must be an object {\"cells\": [...]}".into(),
            None,
        ));
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "cells" | "$schema"))
    {
        return Err(shape(
            format!("body.{k}"),
            "unexpected property".into(),
            None,
        ));
    }
    if let Some(v) = obj.get("$schema") {
        check_schema_url(v, "body.$schema").map_err(BatchError::Shape)?;
    }
    let items = match obj.remove("cells") {
        None => return Err(shape("body.cells".into(), "is required".into(), None)),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(shape(
                "body.cells".into(),
                "must be an array of cells".into(),
                Some(other),
            ))
        }
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(shape(
            "body.cells".into(),
            format!("must hold 1 to {MAX_BATCH} cells (got {})", items.len()),
            None,
        ));
    }
    let mut stored_bytes: u64 = 0;
    // Each cell's JSON is consumed as it is parsed: its body moves into the cell.
    let cells = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            NewCell::from_json(item, &format!("body.cells[{i}]"), max_stored_bytes).map(
                |Checked {
                     cell,
                     stored_bytes: n,
                 }| {
                    stored_bytes = stored_bytes.saturating_add(n);
                    cell
                },
            )
        })
        .collect();
    // What the batch stores is bounded like what it sends: a few bytes of exponents must not
    // become hundreds of megabytes of digits.
    if stored_bytes > max_stored_bytes {
        return Err(BatchError::TooLarge {
            stored_bytes,
            limit: max_stored_bytes,
        });
    }
    Ok(cells)
}
