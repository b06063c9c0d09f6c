//! Verifying a copy: checksums, the diff, the self-check.

use super::*;

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
