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

#[tokio::test]
async fn copy_in_chunks_preserves_every_column() {
    let urls = fresh_databases(2).await;
    let src = source(&urls[0]).await;
    fill_special(&urls[0]).await;
    fill(&urls[0], 1, 1000).await;
    // A gap in added_id, as rolled-back writes leave.
    sql(
        &urls[0],
        &format!("SELECT setval(pg_get_serial_sequence('{T}', 'added_id'), 5000)"),
    )
    .await;
    fill(&urls[0], 2001, 50).await;

    // The target is a brand-new, empty database.
    let dst = backend("dst", &urls[1]);
    transfer::prepare_import(&dst, SHARDS, SHARD, TERM)
        .await
        .unwrap();
    // The import's table has its primary key only: the rest is built after the bulk copy.
    let bare = indexes(&urls[1]).await;
    assert!(
        bare.iter().all(|d| d.starts_with("cells_0003_pkey")),
        "{bare:?}"
    );
    let calls = copy_all(&src, &dst, 137).await;
    assert!(calls > 5, "{calls} calls");
    assert_eq!(transfer::build_indexes(&dst, SHARD).await.unwrap(), 5);
    assert_eq!(transfer::build_indexes(&dst, SHARD).await.unwrap(), 0);
    // Then the table has the shape of one created by a server start (go-mezzanine's, and the
    // stream index on (created_at, added_id)).
    assert_eq!(indexes(&urls[1]).await, indexes(&urls[0]).await);
    assert_eq!(indexes(&urls[1]).await.len(), 8, "6 indexes, 2 constraints");

    let (a, b) = (dump(&urls[0]).await, dump(&urls[1]).await);
    assert_eq!(a.len(), 1056);
    assert_eq!(a, b);
    let max = transfer::max_added_id(&src, SHARD).await.unwrap();
    assert_eq!(max, transfer::max_added_id(&dst, SHARD).await.unwrap());
    assert_eq!(transfer::count_rows(&dst, SHARD).await.unwrap(), 1056);
    assert_eq!(
        transfer::checksum(&src, SHARD, 0, max).await.unwrap(),
        transfer::checksum(&dst, SHARD, 0, max).await.unwrap()
    );
    let d = transfer::diff(&src, &dst, SHARD, 0, max, 10).await.unwrap();
    assert!(d.is_equal(), "{d:?}");
    assert_eq!((d.rows_a, d.rows_b), (1056, 1056));

    // The estimate is there once the table was analyzed.
    sql(&urls[1], &format!("ANALYZE {T}")).await;
    assert_eq!(
        transfer::estimate_rows(&dst, SHARD).await.unwrap(),
        Some(1056)
    );
}

#[tokio::test]
async fn copy_resumes_from_the_targets_max_and_refuses_to_overlap() {
    let urls = fresh_databases(2).await;
    let src = source(&urls[0]).await;
    fill(&urls[0], 1, 300).await;
    let dst = backend("dst", &urls[1]);
    transfer::prepare_import(&dst, SHARDS, SHARD, TERM)
        .await
        .unwrap();

    let first = transfer::copy_rows(&src, &dst, SHARD, 0, Some(120), TERM)
        .await
        .unwrap();
    assert_eq!(first.rows, 120);
    assert_eq!(first.max_added_id, 120);

    // Copying again from below the target's max would double rows: refused, nothing changed.
    let e = transfer::copy_rows(&src, &dst, SHARD, 100, None, TERM).await;
    assert!(matches!(e, Err(StorageError::Refused { .. })), "{e:?}");
    assert_eq!(transfer::count_rows(&dst, SHARD).await.unwrap(), 120);

    // The source keeps taking writes meanwhile (catching up).
    let cells: Vec<NewCell> = (0..5).map(|i| new_cell("late", i)).collect();
    let refs: Vec<&NewCell> = cells.iter().collect();
    cells::write_cells(&src, SHARD, &refs).await.unwrap();

    let after = transfer::max_added_id(&dst, SHARD).await.unwrap();
    let rest = transfer::copy_rows(&src, &dst, SHARD, after, None, TERM)
        .await
        .unwrap();
    assert_eq!(rest.rows, 185);
    assert_eq!(rest.max_added_id, 305);
    assert_eq!(dump(&urls[0]).await, dump(&urls[1]).await);

    // A target that is not importing takes no copy (its clients may be writing).
    activate_import(&dst, None).await;
    let e = transfer::copy_rows(&src, &dst, SHARD, 305, None, TERM).await;
    assert!(matches!(e, Err(StorageError::Refused { .. })), "{e:?}");
    // Nor does a backend that was never prepared.
    let urls2 = fresh_databases(1).await;
    let bare = backend("bare", &urls2[0]);
    let e = transfer::copy_rows(&src, &bare, SHARD, 0, None, TERM).await;
    assert!(e.is_err(), "{e:?}");
}

/// A paced copy (a move's bulk copy below full speed) holds its stream to the rate it is
/// given and still carries every row exactly.
#[tokio::test]
async fn a_paced_copy_keeps_to_its_rate_and_copies_everything() {
    let urls = fresh_databases(2).await;
    let src = source(&urls[0]).await;
    fill(&urls[0], 1, 400).await;
    fill_special(&urls[0]).await;
    let dst = backend("dst", &urls[1]);
    transfer::prepare_import(&dst, SHARDS, SHARD, TERM)
        .await
        .unwrap();

    // What the stream carries, measured by an unpaced copy of the same rows elsewhere.
    let other = fresh_databases(1).await;
    let probe = backend("probe", &other[0]);
    transfer::prepare_import(&probe, SHARDS, SHARD, TERM)
        .await
        .unwrap();
    let full = transfer::copy_rows(&src, &probe, SHARD, 0, None, TERM)
        .await
        .unwrap();
    assert!(full.bytes > 10_000, "{full:?}");

    // At a rate of a third of the stream per second, the copy takes at least 3 s.
    let rate = full.bytes / 3;
    let started = Instant::now();
    let paced = transfer::copy_rows_paced(&src, &dst, SHARD, 0, None, Some(rate), TERM)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!((paced.rows, paced.bytes), (full.rows, full.bytes));
    assert!(took >= Duration::from_millis(2900), "took {took:?}");
    assert_eq!(dump(&urls[0]).await, dump(&urls[1]).await);
}

#[tokio::test]
async fn checksums_match_across_servers_and_time_zones_and_catch_changes() {
    let urls = fresh_databases(2).await;
    // Different session settings on the two databases (new sessions pick them up).
    sql(
        &urls[0],
        &format!(
            "ALTER DATABASE {} SET timezone TO 'Pacific/Chatham'; ALTER DATABASE {} SET datestyle TO 'SQL, DMY'",
            db_name(&urls[0]),
            db_name(&urls[0])
        ),
    )
    .await;
    sql(
        &urls[1],
        &format!(
            "ALTER DATABASE {} SET timezone TO 'America/St_Johns'",
            db_name(&urls[1])
        ),
    )
    .await;
    let src = source(&urls[0]).await;
    fill_special(&urls[0]).await;
    fill(&urls[0], 1, 200).await;
    let dst = backend("dst", &urls[1]);
    transfer::prepare_import(&dst, SHARDS, SHARD, TERM)
        .await
        .unwrap();
    copy_all(&src, &dst, 1000).await;
    let max = transfer::max_added_id(&src, SHARD).await.unwrap();

    let a = transfer::checksum(&src, SHARD, 0, max).await.unwrap();
    let b = transfer::checksum(&dst, SHARD, 0, max).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(a.rows, 206);
    assert_ne!(a.sum, 0);
    // Sub-ranges add up (the sum is order- and split-independent).
    let lo = transfer::checksum(&src, SHARD, 0, 100).await.unwrap();
    let hi = transfer::checksum(&dst, SHARD, 100, max).await.unwrap();
    assert_eq!(lo.rows + hi.rows, a.rows);
    assert_eq!(lo.sum + hi.sum, a.sum);

    // One body differs (same JSON type, one character).
    let c = connect(&urls[1]).await;
    c.batch_execute(&format!(
        "UPDATE {T} SET body = jsonb_set(body, '{{pad}}', '\"y\"') WHERE added_id = 50"
    ))
    .await
    .unwrap();
    let changed = transfer::checksum(&dst, SHARD, 0, max).await.unwrap();
    assert_eq!(changed.rows, a.rows);
    assert_ne!(changed.sum, a.sum);
    // Outside the range it does not count.
    assert_eq!(
        transfer::checksum(&dst, SHARD, 50, max).await.unwrap(),
        transfer::checksum(&src, SHARD, 50, max).await.unwrap()
    );
    // Restored (from the source's text): equal again; then created_at moved by 1 µs.
    let src_body: String = connect(&urls[0])
        .await
        .query_one(
            &format!("SELECT body::text FROM {T} WHERE added_id = 50"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    c.execute(
        &format!("UPDATE {T} SET body = $1::text::jsonb WHERE added_id = 50"),
        &[&src_body],
    )
    .await
    .unwrap();
    assert_eq!(transfer::checksum(&dst, SHARD, 0, max).await.unwrap(), a);
    c.batch_execute(&format!(
        "UPDATE {T} SET created_at = created_at + interval '1 microsecond' WHERE added_id = 7"
    ))
    .await
    .unwrap();
    assert_ne!(transfer::checksum(&dst, SHARD, 0, max).await.unwrap(), a);
}

#[tokio::test]
async fn diff_reports_each_difference_precisely() {
    let urls = fresh_databases(2).await;
    let src = source(&urls[0]).await;
    // More rows than one diff chunk, so that differences sit in several chunks.
    fill(&urls[0], 1, 25_000).await;
    let dst = backend("dst", &urls[1]);
    transfer::prepare_import(&dst, SHARDS, SHARD, TERM)
        .await
        .unwrap();
    copy_all(&src, &dst, 30_000).await;
    let max = 25_000;
    assert!(transfer::diff(&src, &dst, SHARD, 0, max, 10)
        .await
        .unwrap()
        .is_equal());

    // Missing on B: 10 000 (a chunk boundary) and 17; on A: an extra row at 12 345 on B
    // after removing it from A; changed: body of 20 000, column_name and created_at of 20 001.
    sql(
        &urls[1],
        &format!(
            "DELETE FROM {T} WHERE added_id IN (17, 10000); \
             UPDATE {T} SET body = body || '{{\"x\": 1}}' WHERE added_id = 20000; \
             UPDATE {T} SET column_name = 'other', created_at = created_at - interval '1 day' WHERE added_id = 20001"
        ),
    )
    .await;
    sql(&urls[0], &format!("DELETE FROM {T} WHERE added_id = 12345")).await;
    let d = transfer::diff(&src, &dst, SHARD, 0, max, 100)
        .await
        .unwrap();
    assert!(!d.more);
    assert_eq!(
        d.differences,
        vec![
            Difference::MissingOn {
                side: Side::B,
                added_id: 17
            },
            Difference::MissingOn {
                side: Side::B,
                added_id: 10000
            },
            Difference::MissingOn {
                side: Side::A,
                added_id: 12345
            },
            Difference::Changed {
                added_id: 20000,
                columns: vec!["body"]
            },
            Difference::Changed {
                added_id: 20001,
                columns: vec!["column_name", "created_at"]
            },
        ]
    );
    assert_eq!((d.rows_a, d.rows_b), (24_999, 24_998));
    // Swapped sides report the other way round.
    let d = transfer::diff(&dst, &src, SHARD, 0, 12_345, 100)
        .await
        .unwrap();
    assert_eq!(
        d.differences,
        vec![
            Difference::MissingOn {
                side: Side::A,
                added_id: 17
            },
            Difference::MissingOn {
                side: Side::A,
                added_id: 10000
            },
            Difference::MissingOn {
                side: Side::B,
                added_id: 12345
            },
        ]
    );
    // Capped: the first two, and a flag that more exist.
    let d = transfer::diff(&src, &dst, SHARD, 0, max, 2).await.unwrap();
    assert_eq!(d.differences.len(), 2);
    assert!(d.more);
    // A range without differences.
    assert!(transfer::diff(&src, &dst, SHARD, 20_001, max, 10)
        .await
        .unwrap()
        .is_equal());
}

#[tokio::test]
async fn freezing_waits_for_writers_then_refuses_writes() {
    let urls = fresh_databases(1).await;
    let src = source(&urls[0]).await;
    assert_eq!(
        transfer::shard_state(&src, SHARD).await.unwrap(),
        Some((ShardState::Active, 1))
    );

    // A writer in flight: it holds the shard's row lock, as cells::write_group does.
    let writer = connect(&urls[0]).await;
    writer
        .batch_execute(&format!(
            "BEGIN; SELECT state FROM mezzanine_shard_state WHERE shard = {SHARD} FOR NO KEY UPDATE; \
             INSERT INTO {T} (row_key, column_name, ref_key, body) VALUES (gen_random_uuid(), 'w', 1, '1')"
        ))
        .await
        .unwrap();
    let s2 = src.clone();
    let freeze = tokio::spawn(async move {
        transfer::set_state(
            &s2,
            SHARD,
            &[ShardState::Active],
            ShardState::Frozen,
            None,
            TERM,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !freeze.is_finished(),
        "the freeze did not wait for the writer"
    );
    writer.batch_execute("COMMIT").await.unwrap();
    let frozen = tokio::time::timeout(Duration::from_secs(5), freeze)
        .await
        .unwrap()
        .unwrap();
    assert!(frozen.unwrap());
    assert_eq!(transfer::max_added_id(&src, SHARD).await.unwrap(), 1);

    // New client writes are refused.
    let c = new_cell("after", 1);
    match cells::write_cells(&src, SHARD, &[&c]).await {
        Err(StorageError::NotServed { shard, state, .. }) => {
            assert_eq!((shard, state.as_str()), (SHARD, "frozen"))
        }
        other => panic!("expected NotServed, got {other:?}"),
    }
    // Idempotent: already frozen is success; a step from another state is not.
    assert!(transfer::set_state(
        &src,
        SHARD,
        &[ShardState::Active],
        ShardState::Frozen,
        None,
        TERM
    )
    .await
    .unwrap());
    assert!(!transfer::set_state(
        &src,
        SHARD,
        &[ShardState::Importing],
        ShardState::Active,
        Some(2),
        TERM
    )
    .await
    .unwrap());
    // Retire with a new epoch; absent rows change nothing.
    assert!(transfer::set_state(
        &src,
        SHARD,
        &[ShardState::Frozen],
        ShardState::Retired,
        Some(5),
        TERM
    )
    .await
    .unwrap());
    assert_eq!(
        transfer::shard_state(&src, SHARD).await.unwrap(),
        Some((ShardState::Retired, 5))
    );
    assert!(
        transfer::set_state(
            &src,
            SHARD,
            &[ShardState::Frozen],
            ShardState::Retired,
            Some(6),
            TERM
        )
        .await
        .is_ok_and(|changed| !changed),
        "already retired, but with another epoch"
    );
    assert!(!transfer::set_state(
        &src,
        5,
        &[ShardState::Active],
        ShardState::Frozen,
        None,
        TERM
    )
    .await
    .unwrap());
}

#[tokio::test]
async fn a_freeze_blocked_too_long_fails_within_the_query_timeout() {
    let urls = fresh_databases(1).await;
    schema::prepare_backend(&backend("x", &urls[0]), SHARDS, &[SHARD], true)
        .await
        .unwrap();
    let settings = PoolSettings {
        query_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let src = Backend::new("src", &urls[0], settings).unwrap();
    let writer = connect(&urls[0]).await;
    writer
        .batch_execute(&format!(
            "BEGIN; SELECT state FROM mezzanine_shard_state WHERE shard = {SHARD} FOR NO KEY UPDATE"
        ))
        .await
        .unwrap();
    // The writer holds the lock until after this returns: only the query timeout can end it.
    let r = transfer::set_state(
        &src,
        SHARD,
        &[ShardState::Active],
        ShardState::Frozen,
        None,
        TERM,
    )
    .await;
    assert!(matches!(r, Err(StorageError::Unavailable { .. })), "{r:?}");
    assert!(src.is_up(), "a lock wait is not an outage");
    writer.batch_execute("COMMIT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        transfer::shard_state(&src, SHARD).await.unwrap(),
        Some((ShardState::Active, 1))
    );
}

#[tokio::test]
async fn prepare_import_refuses_a_served_shard_and_sets_up_an_empty_database() {
    let urls = fresh_databases(2).await;
    let src = source(&urls[0]).await;
    fill(&urls[0], 1, 10).await;

    // Active, then frozen: this backend serves the shard.
    for state in [ShardState::Active, ShardState::Frozen] {
        transfer::set_state(&src, SHARD, &[ShardState::Active], state, None, TERM)
            .await
            .unwrap();
        let e = transfer::prepare_import(&src, SHARDS, SHARD, TERM).await;
        assert!(matches!(e, Err(StorageError::Refused { .. })), "{e:?}");
        assert_eq!(
            transfer::shard_state(&src, SHARD)
                .await
                .unwrap()
                .map(|s| s.0),
            Some(state)
        );
    }

    // A database that has never been used.
    let dst = backend("dst", &urls[1]);
    assert_eq!(transfer::shard_state(&dst, SHARD).await.unwrap(), None);
    transfer::prepare_import(&dst, SHARDS, SHARD, TERM)
        .await
        .unwrap();
    assert_eq!(
        transfer::shard_state(&dst, SHARD).await.unwrap(),
        Some((ShardState::Importing, 1))
    );
    let c = connect(&urls[1]).await;
    let row = c
        .query_one("SELECT version, num_shards FROM mezzanine_schema", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, i32>(1)),
        (schema::SCHEMA_VERSION, 8)
    );
    // The go-mezzanine shape: the same columns and indexes as a start-up migration makes.
    let shape = |url: String| async move {
        connect(&url)
            .await
            .query(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'cells_0003' ORDER BY indexname",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    // The import's table has its primary key only until the bulk copy is in.
    assert_eq!(
        shape(urls[1].clone()).await,
        ["CREATE UNIQUE INDEX cells_0003_pkey ON public.cells_0003 USING btree (added_id)"]
    );
    transfer::build_indexes(&dst, SHARD).await.unwrap();
    assert_eq!(shape(urls[0].clone()).await, shape(urls[1].clone()).await);
    assert_eq!(transfer::max_added_id(&dst, SHARD).await.unwrap(), 0);
    // Client writes are refused while importing.
    let cell = new_cell("c", 1);
    assert!(matches!(
        cells::write_cells(&dst, SHARD, &[&cell]).await,
        Err(StorageError::NotServed { .. })
    ));
    // Again: idempotent. Another NUM_SHARDS: refused.
    transfer::prepare_import(&dst, SHARDS, SHARD, TERM)
        .await
        .unwrap();
    let e = transfer::prepare_import(&dst, 16, SHARD, TERM).await;
    assert!(matches!(e, Err(StorageError::Layout { .. })), "{e:?}");
    let e = transfer::prepare_import(&dst, SHARDS, SHARDS, TERM).await;
    assert!(matches!(e, Err(StorageError::Layout { .. })), "{e:?}");
    // A start-up migration of the same backend for other shards still works.
    let report = schema::prepare_backend(&dst, SHARDS, &[4, 5], true)
        .await
        .unwrap();
    assert_eq!(report.created_tables, 2);
    assert_eq!(
        transfer::shard_state(&dst, SHARD)
            .await
            .unwrap()
            .map(|s| s.0),
        Some(ShardState::Importing)
    );

    // A retired copy is imported again with its rows kept (moving back).
    transfer::set_state(
        &src,
        SHARD,
        &[ShardState::Frozen],
        ShardState::Retired,
        None,
        TERM,
    )
    .await
    .unwrap();
    transfer::prepare_import(&src, SHARDS, SHARD, TERM)
        .await
        .unwrap();
    assert_eq!(
        transfer::shard_state(&src, SHARD)
            .await
            .unwrap()
            .map(|s| s.0),
        Some(ShardState::Importing)
    );
    assert_eq!(transfer::count_rows(&src, SHARD).await.unwrap(), 10);
}

#[tokio::test]
async fn advance_sequence_puts_the_next_write_above_the_copied_rows() {
    let urls = fresh_databases(2).await;
    let src = source(&urls[0]).await;
    fill(&urls[0], 1, 40).await;
    sql(
        &urls[0],
        &format!("SELECT setval(pg_get_serial_sequence('{T}', 'added_id'), 900)"),
    )
    .await;
    fill(&urls[0], 41, 2).await; // 901, 902
    let dst = backend("dst", &urls[1]);
    transfer::prepare_import(&dst, SHARDS, SHARD, TERM)
        .await
        .unwrap();
    copy_all(&src, &dst, 1000).await;

    // Before: the target's sequence was never used, a write would take added_id 1.
    let check = transfer::self_check(&dst, SHARD).await.unwrap();
    assert_eq!((check.rows, check.max_added_id), (42, 902));
    assert_eq!(check.next_added_id, Some(1));
    assert_eq!(check.violations.len(), 1, "{check:?}");

    assert_eq!(
        transfer::advance_sequence(&dst, SHARD, 902, TERM)
            .await
            .unwrap(),
        903
    );
    // Past a mark above the max (the source's high-water mark), and never backwards.
    assert_eq!(
        transfer::advance_sequence(&dst, SHARD, 950, TERM)
            .await
            .unwrap(),
        951
    );
    assert_eq!(
        transfer::advance_sequence(&dst, SHARD, 10, TERM)
            .await
            .unwrap(),
        951
    );
    let check = transfer::self_check(&dst, SHARD).await.unwrap();
    assert!(check.is_sound(), "{check:?}");
    assert_eq!(check.state, Some((ShardState::Importing, 1)));

    // Not activated before the cell key's unique constraint is built (writes rely on it).
    let activate = || {
        transfer::set_state(
            &dst,
            SHARD,
            &[ShardState::Importing],
            ShardState::Active,
            Some(2),
            TERM,
        )
    };
    assert!(!activate().await.unwrap());
    assert_eq!(
        transfer::shard_state(&dst, SHARD).await.unwrap(),
        Some((ShardState::Importing, 1))
    );
    transfer::build_indexes(&dst, SHARD).await.unwrap();
    assert!(activate().await.unwrap());
    let c = new_cell("new", 1);
    match cells::write_cells(&dst, SHARD, &[&c]).await.unwrap().pop() {
        Some(cells::WriteOutcome::Created(cell)) => assert_eq!(cell.added_id, 951),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn drop_shard_refuses_a_served_shard_and_cleans_others() {
    let urls = fresh_databases(2).await;
    let src = source(&urls[0]).await;
    fill(&urls[0], 1, 10).await;
    for state in [ShardState::Active, ShardState::Frozen] {
        transfer::set_state(&src, SHARD, &[ShardState::Active], state, None, TERM)
            .await
            .unwrap();
        let e = transfer::drop_shard(&src, SHARD, TERM).await;
        assert!(matches!(e, Err(StorageError::Refused { .. })), "{e:?}");
        assert_eq!(transfer::count_rows(&src, SHARD).await.unwrap(), 10);
    }
    transfer::set_state(
        &src,
        SHARD,
        &[ShardState::Frozen],
        ShardState::Retired,
        None,
        TERM,
    )
    .await
    .unwrap();
    transfer::drop_shard(&src, SHARD, TERM).await.unwrap();
    assert_eq!(transfer::shard_state(&src, SHARD).await.unwrap(), None);
    let check = transfer::self_check(&src, SHARD).await.unwrap();
    assert!(!check.table_exists && check.is_sound(), "{check:?}");
    // Again: nothing left, a no-op.
    transfer::drop_shard(&src, SHARD, TERM).await.unwrap();

    // An aborted import is cleaned the same way.
    let dst = backend("dst", &urls[1]);
    transfer::prepare_import(&dst, SHARDS, SHARD, TERM)
        .await
        .unwrap();
    transfer::drop_shard(&dst, SHARD, TERM).await.unwrap();
    assert_eq!(transfer::shard_state(&dst, SHARD).await.unwrap(), None);

    // A table without a state row (a go-mezzanine table) is not mezzanine's to drop.
    sql(&urls[1], &schema::cells_table_ddl(6)).await;
    let e = transfer::drop_shard(&dst, 6, TERM).await;
    assert!(matches!(e, Err(StorageError::Refused { .. })), "{e:?}");
    // Also on a database without mezzanine's metadata; with nothing at all it is a no-op.
    let bare = fresh_databases(1).await;
    sql(&bare[0], &schema::cells_table_ddl(6)).await;
    let b = backend("bare", &bare[0]);
    let e = transfer::drop_shard(&b, 6, TERM).await;
    assert!(matches!(e, Err(StorageError::Refused { .. })), "{e:?}");
    transfer::drop_shard(&b, 7, TERM).await.unwrap();
    assert_eq!(
        connect(&bare[0])
            .await
            .query_one("SELECT count(*) FROM cells_0006", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        0
    );
}

#[tokio::test]
async fn self_check_reports_a_missing_unique_constraint() {
    let urls = fresh_databases(1).await;
    let src = source(&urls[0]).await;
    fill(&urls[0], 1, 20).await;
    let check = transfer::self_check(&src, SHARD).await.unwrap();
    assert!(check.is_sound(), "{check:?}");
    assert_eq!(check.state, Some((ShardState::Active, 1)));
    assert_eq!((check.rows, check.max_added_id), (20, 20));
    assert_eq!(check.next_added_id, Some(21));

    sql(
        &urls[0],
        &format!(
            "ALTER TABLE {T} DROP CONSTRAINT {T}_cell_key; \
             INSERT INTO {T} (row_key, column_name, ref_key, body) SELECT row_key, column_name, ref_key, body FROM {T} WHERE added_id = 3"
        ),
    )
    .await;
    let check = transfer::self_check(&src, SHARD).await.unwrap();
    assert_eq!(check.violations.len(), 1, "{check:?}");
    assert!(
        check.violations[0].contains("(row_key, column_name, ref_key); 1 duplicated"),
        "{check:?}"
    );
}

/// A target whose copy session is killed mid-copy: a clean error, no partial rows, the copy can
/// be retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_whose_target_session_is_terminated_fails_cleanly() {
    let urls = fresh_databases(2).await;
    let src = source(&urls[0]).await;
    fill(&urls[0], 1, 20_000).await;
    let dst = backend("dst", &urls[1]);
    transfer::prepare_import(&dst, SHARDS, SHARD, TERM)
        .await
        .unwrap();
    slow_down_inserts(&urls[1]).await;

    let (s2, d2) = (src.clone(), dst.clone());
    let copy =
        tokio::spawn(async move { transfer::copy_rows(&s2, &d2, SHARD, 0, None, TERM).await });
    let admin = connect(&urls[1]).await;
    let pid = copy_backend_pid(&admin).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), copy)
        .await
        .expect("the copy hung")
        .unwrap();
    assert!(matches!(r, Err(StorageError::Unavailable { .. })), "{r:?}");
    // Nothing landed; the source is unaffected.
    assert_eq!(transfer::count_rows(&src, SHARD).await.unwrap(), 20_000);
    dst.probe().await.unwrap();
    assert_eq!(transfer::count_rows(&dst, SHARD).await.unwrap(), 0);

    // Retried (without the slowness) it completes.
    sql(&urls[1], &format!("DROP TRIGGER slow ON {T}")).await;
    let r = transfer::copy_rows(&src, &dst, SHARD, 0, None, TERM)
        .await
        .unwrap();
    assert_eq!(r.rows, 20_000);
    assert_eq!(dump(&urls[0]).await, dump(&urls[1]).await);
}

/// A target server that stops mid-copy: a clean error, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_whose_target_server_stops_fails_cleanly() {
    let urls = fresh_databases(1).await;
    let src = source(&urls[0]).await;
    fill(&urls[0], 1, 20_000).await;
    let mut servers = tokio::task::spawn_blocking(|| dedicated_pg(1))
        .await
        .unwrap();
    let target_url = create_database(&servers[0]).await;
    let dst = backend("dst", &target_url);
    transfer::prepare_import(&dst, SHARDS, SHARD, TERM)
        .await
        .unwrap();
    slow_down_inserts(&target_url).await;

    let (s2, d2) = (src.clone(), dst.clone());
    let copy =
        tokio::spawn(async move { transfer::copy_rows(&s2, &d2, SHARD, 0, None, TERM).await });
    let admin = connect(&target_url).await;
    copy_backend_pid(&admin).await;
    drop(admin);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut server = servers.remove(0);
    let server = tokio::task::spawn_blocking(move || {
        server.stop().unwrap();
        server
    })
    .await
    .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(30), copy)
        .await
        .expect("the copy hung")
        .unwrap();
    assert!(matches!(r, Err(StorageError::Unavailable { .. })), "{r:?}");
    // The source keeps serving; the target fails fast while down.
    assert_eq!(transfer::max_added_id(&src, SHARD).await.unwrap(), 20_000);
    assert!(!dst.is_up(), "the stopped target is not known down");
    let again = transfer::copy_rows(&src, &dst, SHARD, 0, None, TERM).await;
    match &again {
        Err(StorageError::Unavailable { reason, .. }) => {
            assert!(reason.contains("known down"), "not failed fast: {reason}")
        }
        other => panic!("{other:?}"),
    }
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
}

/// Makes every insert into the target's table take a little time, so that a copy lasts long
/// enough to be interrupted.
async fn slow_down_inserts(url: &str) {
    sql(
        url,
        &format!(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_sleep(0.001); RETURN NEW; END $$; \
             CREATE TRIGGER slow BEFORE INSERT ON {T} FOR EACH ROW EXECUTE FUNCTION slow()"
        ),
    )
    .await;
}

/// Waits until a COPY into the table runs on this database and returns its backend's pid.
async fn copy_backend_pid(admin: &tokio_postgres::Client) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
                 AND query LIKE 'COPY cells_0003 %FROM STDIN%' AND state = 'active'",
                &[],
            )
            .await
            .unwrap();
        if let Some(r) = rows.first() {
            return r.get(0);
        }
        assert!(Instant::now() < deadline, "no COPY seen on the target");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_given_in_the_url_are_kept_beside_mezzanines_own() {
    let url = fresh_databases(1).await.remove(0);
    let sep = if url.contains('?') { '&' } else { '?' };
    let with = format!("{url}{sep}options=-c%20statement_timeout%3D4321");
    let b = backend("opts", &with);
    let lease = b.lease().await.unwrap();
    let rows = lease
        .query(
            "SELECT current_setting('statement_timeout'), \
                    current_setting('idle_in_transaction_session_timeout')",
            &[],
        )
        .await
        .unwrap();
    let given: String = rows[0].get(0);
    let ours: String = rows[0].get(1);
    assert_eq!(given, "4321ms");
    assert_ne!(
        ours, "0",
        "mezzanine's idle-in-transaction timeout is missing"
    );
}

#[tokio::test]
async fn a_cutover_tail_copies_every_column_and_checks_the_target() {
    let urls = fresh_databases(2).await;
    let src = source(&urls[0]).await;
    let dst = backend("dst", &urls[1]);
    transfer::prepare_import(&dst, SHARDS, SHARD, TERM)
        .await
        .unwrap();
    // Infinite times cannot travel as plain values: this tail goes through COPY.
    fill_special(&urls[0]).await;
    fill(&urls[0], 1, 100).await;
    let first = transfer::copy_tail(&src, &dst, SHARD, 0, TERM)
        .await
        .unwrap();
    assert_eq!(first.rows, 106);
    // A small tail of hard values goes as plain statements.
    sql(
        &urls[0],
        &format!(
            r#"INSERT INTO {T} (row_key, column_name, ref_key, body, created_at) VALUES
            ('550e8400-e29b-41d4-a716-446655440009', 'ünïcødé 🎉', -9223372036854775808,
             '{{"big": 123456789012345678901234567890.123456789012345678901234567890, "neg": -1e-30,
               "s": "tab\there \"q\" \\ 日本語", "n": [null, true, {{}}]}}', '1900-06-30 23:59:59.999999+00'),
            ('ffffffff-ffff-ffff-ffff-fffffffffff9', 'x', 9223372036854775807, '"\u00e9"',
             '2262-04-11 23:47:16.854775+00')"#
        ),
    )
    .await;
    fill(&urls[0], 101, 30).await;
    let second = transfer::copy_tail(&src, &dst, SHARD, first.max_added_id, TERM)
        .await
        .unwrap();
    assert_eq!(second.rows, 32);
    let max = transfer::max_added_id(&src, SHARD).await.unwrap();
    assert_eq!(second.max_added_id, max);
    assert_eq!(dump(&urls[0]).await, dump(&urls[1]).await);
    assert_eq!(
        transfer::checksum(&src, SHARD, 0, max).await.unwrap(),
        transfer::checksum(&dst, SHARD, 0, max).await.unwrap()
    );
    // Nothing new: nothing copied, the high-water mark stays.
    let none = transfer::copy_tail(&src, &dst, SHARD, max, TERM)
        .await
        .unwrap();
    assert_eq!((none.rows, none.max_added_id), (0, max));

    // A tail that overlaps what the target holds is refused, and nothing is stored.
    fill(&urls[0], 200, 5).await;
    let r = transfer::copy_tail(&src, &dst, SHARD, max - 10, TERM).await;
    assert!(matches!(r, Err(StorageError::Refused { .. })), "{r:?}");
    assert_eq!(transfer::max_added_id(&dst, SHARD).await.unwrap(), max);

    // A tail longer than SMALL_TAIL goes through COPY, in one call.
    fill(&urls[0], 1000, transfer::SMALL_TAIL + 100).await;
    let long = transfer::copy_tail(&src, &dst, SHARD, max, TERM)
        .await
        .unwrap();
    assert_eq!(long.rows as i64, 5 + transfer::SMALL_TAIL + 100);
    assert_eq!(dump(&urls[0]).await, dump(&urls[1]).await);

    // A target that serves the shard is never written to.
    activate_import(&dst, Some(2)).await;
    fill(&urls[0], 5000, 3).await;
    let after = transfer::max_added_id(&dst, SHARD).await.unwrap();
    let r = transfer::copy_tail(&src, &dst, SHARD, after, TERM).await;
    assert!(matches!(r, Err(StorageError::Refused { .. })), "{r:?}");
    assert_eq!(transfer::max_added_id(&dst, SHARD).await.unwrap(), after);
}
