//! The shard states on a backend: freeze, prepare an import, advance the sequence, drop.

use super::*;

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
