//! The storage steps of live shard moves (`mezzanine_storage::transfer`) against real
//! PostgreSQL servers: preparing a target, binary COPY between servers, checksums, diffs,
//! the freeze fence, sequences, dropping, and a target that goes away mid-copy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mezzanine_core::{CellKey, NewCell, Term};
use mezzanine_e2e::*;
use mezzanine_storage::transfer::{self, Difference, ShardState, Side};
use mezzanine_storage::{cells, schema, Backend, PoolSettings, StorageError};
use serde_json::json;
use uuid::Uuid;

const SHARDS: u32 = 8;
const SHARD: u32 = 3;
/// The term of the mover's leader these tests act as: the rows they use were never touched by
/// a leader (term 0) or only by this one, so any term above 0 does. Terms themselves are
/// tested in `terms.rs`.
const TERM: Term = Term(1);
const T: &str = "cells_0003";

fn backend(name: &str, url: &str) -> Arc<Backend> {
    Backend::new(name, url, PoolSettings::default()).unwrap()
}

fn db_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// A backend serving SHARD (active), as a server start would leave it.
async fn source(url: &str) -> Arc<Backend> {
    let b = backend("src", url);
    schema::prepare_backend(&b, SHARDS, &[SHARD], true)
        .await
        .unwrap();
    b
}

/// Ends an import as a cutover does: builds the table's deferred unique constraint and
/// indexes, then makes the shard `active` (with `epoch`, when given).
async fn activate_import(dst: &Backend, epoch: Option<i64>) {
    transfer::build_indexes(dst, SHARD).await.unwrap();
    let from = [ShardState::Importing];
    let changed = transfer::set_state(dst, SHARD, &from, ShardState::Active, epoch, TERM).await;
    assert!(changed.unwrap());
}

/// `n` generated rows with explicit created_at; ref_keys from `first`.
async fn fill(url: &str, first: i64, n: i64) {
    sql(
        url,
        &format!(
            "INSERT INTO {T} (row_key, column_name, ref_key, body, created_at) \
             SELECT gen_random_uuid(), 'col' || (g % 7), g, \
                    jsonb_build_object('n', g, 'pad', repeat('x', (g % 50)::int), 'f', g / 3.0), \
                    timestamptz '2024-01-01 00:00:00.000001+00' + g * interval '1.000001 second' \
             FROM generate_series({first}, {}) g",
            first + n - 1
        ),
    )
    .await;
}

/// Rows whose bodies and times are hard to carry exactly.
async fn fill_special(url: &str) {
    sql(
        url,
        &format!(
            r#"INSERT INTO {T} (row_key, column_name, ref_key, body, created_at) VALUES
            ('550e8400-e29b-41d4-a716-446655440000', 'profile', 1,
             '{{"name": "Zoë 🎉 日本語 \"quoted\" \\ back", "nested": {{"a": [1, 2, {{"b": null}}], "c": true, "d": {{}}}},
               "big": 123456789012345678901234567890.123456789012345678901234567890, "neg": -1e-30, "exp": 1E+400}}',
             '2001-02-03 04:05:06.789012+00'),
            ('550e8400-e29b-41d4-a716-446655440000', 'ünïcødé column', -9223372036854775808, '[]', '1970-01-01 00:00:00+00'),
            ('ffffffff-ffff-ffff-ffff-ffffffffffff', 'x', 9223372036854775807,
             '12345678901234567890123456789012345678901234567890', '1900-06-30 23:59:59.999999+00'),
            ('00000000-0000-0000-0000-000000000000', 'tabs', 7, '"tab\there\nnewline \u00e9"', '2262-04-11 23:47:16.854775+00'),
            ('00000000-0000-0000-0000-000000000001', 'inf', 8, 'null', 'infinity'),
            ('00000000-0000-0000-0000-000000000002', 'inf', 9, 'false', '-infinity')"#
        ),
    )
    .await;
}

type DumpRow = (i64, String, String, i64, String, String);

/// Every row, every column in an exact, session-independent form (timestamps as their binary).
async fn dump(url: &str) -> Vec<DumpRow> {
    let c = connect(url).await;
    c.query(
        &format!(
            "SELECT added_id, row_key::text, column_name, ref_key, body::text, \
                    encode(timestamptz_send(created_at), 'hex') FROM {T} ORDER BY added_id"
        ),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
    .collect()
}

/// The definitions of the shard table's indexes and constraints, sorted.
async fn indexes(url: &str) -> Vec<String> {
    let c = connect(url).await;
    let mut defs: Vec<String> = c
        .query(
            "SELECT indexname || ': ' || indexdef FROM pg_indexes WHERE tablename = $1 \
             UNION ALL SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = $1::text::regclass",
            &[&T],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    defs.sort();
    defs.dedup();
    defs
}

/// Copies everything in chunks of `limit`, resuming each time from the target's max.
async fn copy_all(src: &Backend, dst: &Backend, limit: i64) -> usize {
    let mut calls = 0;
    loop {
        let after = transfer::max_added_id(dst, SHARD).await.unwrap();
        let r = transfer::copy_rows(src, dst, SHARD, after, Some(limit), TERM)
            .await
            .unwrap();
        calls += 1;
        assert!(r.rows <= limit as u64);
        assert_eq!(
            r.max_added_id,
            transfer::max_added_id(dst, SHARD).await.unwrap()
        );
        if r.rows == 0 {
            assert_eq!(r.max_added_id, after);
            return calls;
        }
        assert!(r.bytes > 0);
    }
}

fn new_cell(column: &str, ref_key: i64) -> NewCell {
    NewCell {
        key: CellKey {
            row_key: Uuid::new_v4(),
            column_name: column.to_owned(),
            ref_key,
        },
        body: json!({"w": ref_key}),
    }
}

mod copy;
mod states;
mod verify;
