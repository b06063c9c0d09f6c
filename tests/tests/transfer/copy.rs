//! Copying a shard: in chunks, resumed, paced, the cutover tail, and copies whose target fails.

use super::*;

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
