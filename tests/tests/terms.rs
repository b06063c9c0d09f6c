//! Leader terms: the fence that keeps a mover leader that lost its place off the backends.
//!
//! The catalog gives each acquisition of the leadership the next term; every change the mover
//! makes on a backend carries its term, the shard's state row records it, and a change from
//! an older term is refused there (`StorageError::Superseded`), nothing changed. These tests
//! act as two leaders on real backends (terms 6, 7 and 8), check the catalog's terms and its
//! migration from layout 3, and that a mover task meeting a newer leader stops without undoing
//! anything.

use std::sync::Arc;
use std::time::Duration;

use mezzanine_catalog::{Leader, LeaderInfo};
use mezzanine_core::Term;
use mezzanine_e2e::*;
use mezzanine_storage::transfer::{self, ShardState};
use mezzanine_storage::{schema, Backend, PoolSettings, StorageError};
use serde_json::{json, Value};

const SHARDS: u32 = 8;
const SHARD: u32 = 3;
const T: &str = "cells_0003";
const LONG: Duration = Duration::from_secs(60);

/// The leader that took over, and the one it superseded.
const NEWER: Term = Term(7);
const OLDER: Term = Term(6);

fn backend(name: &str, url: &str) -> Arc<Backend> {
    Backend::new(name, url, PoolSettings::default()).unwrap()
}

/// A source serving SHARD with `rows` cells, and a target prepared and filled with the first
/// `copied` of them by the leader of term NEWER (which claimed the source first).
async fn moving(rows: i64, copied: i64) -> (Arc<Backend>, Arc<Backend>, Vec<String>) {
    let urls = fresh_databases(2).await;
    let src = backend("db1", &urls[0]);
    schema::prepare_backend(&src, SHARDS, &[SHARD], true)
        .await
        .unwrap();
    sql(
        &urls[0],
        &format!(
            "INSERT INTO {T} (row_key, column_name, ref_key, body) \
             SELECT gen_random_uuid(), 'c', g, jsonb_build_object('n', g) \
             FROM generate_series(1, {rows}) g"
        ),
    )
    .await;
    let dst = backend("db2", &urls[1]);
    transfer::claim(&src, SHARD, NEWER).await.unwrap();
    transfer::claim(&dst, SHARD, NEWER).await.unwrap(); // no row yet: nothing to claim
    transfer::prepare_import(&dst, SHARDS, SHARD, NEWER)
        .await
        .unwrap();
    if copied > 0 {
        transfer::copy_rows(&src, &dst, SHARD, 0, Some(copied), NEWER)
            .await
            .unwrap();
    }
    (src, dst, urls)
}

/// Everything a step could change on a backend, as text: the state row (with its term and
/// time of change), the table, its rows and its sequence.
async fn snapshot(url: &str) -> String {
    let c = connect(url).await;
    let row = c
        .query(
            "SELECT state, epoch, term, updated_at::text FROM mezzanine_shard_state WHERE shard = $1",
            &[&(SHARD as i32)],
        )
        .await
        .unwrap()
        .first()
        .map(|r| {
            let (s, e, t, u): (String, i64, i64, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
            format!("{s} epoch {e} term {t} at {u}")
        });
    let table = c
        .query(
            &format!(
                "SELECT count(*), coalesce(max(added_id), 0), coalesce(sum(hashtext(body::text)), 0), \
                        (SELECT last_value FROM {T}_added_id_seq) FROM {T}"
            ),
            &[],
        )
        .await
        .ok()
        .and_then(|rows| rows.first().map(|r| {
            let (n, max, sum, seq): (i64, i64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
            format!("{n} rows, max {max}, sum {sum}, sequence at {seq}")
        }));
    format!("{row:?} / {table:?}")
}

/// The term in SHARD's state row.
async fn term_in(url: &str) -> Option<i64> {
    term_of(url, SHARD).await
}

/// The term in shard `shard`'s state row in a backend database.
async fn term_of(url: &str, shard: u32) -> Option<i64> {
    let c = connect(url).await;
    c.query(
        "SELECT term FROM mezzanine_shard_state WHERE shard = $1",
        &[&(shard as i32)],
    )
    .await
    .unwrap()
    .first()
    .map(|r| r.get(0))
}

/// Asserts a refusal from the older leader, naming the backend, the shard and both terms.
#[track_caller]
fn superseded<T: std::fmt::Debug>(r: Result<T, StorageError>, backend: &str) {
    let e = match r {
        Err(e) => e,
        Ok(v) => panic!("expected Superseded from {backend}, got Ok({v:?})"),
    };
    let StorageError::Superseded {
        shard,
        backend: b,
        term,
        newer,
    } = &e
    else {
        panic!("expected Superseded from {backend}, got {e:?}");
    };
    assert_eq!(
        (*shard, b.as_str(), *term, *newer),
        (SHARD, backend, OLDER, NEWER)
    );
    let m = e.to_string();
    for part in [backend, "shard 3", "newer leader", "term 7", "term is 6"] {
        assert!(m.contains(part), "{m:?} lacks {part:?}");
    }
    assert!(!m.contains("SELECT") && !m.contains("UPDATE"), "{m}");
}

/// State changes (and a claim) from the older leader are refused on both sides and change
/// nothing; a state change writes its term into the row, so a later one from term 7 is refused
/// once term 8 changed the shard.
#[tokio::test]
async fn a_state_change_from_an_older_leader_is_refused_and_changes_nothing() {
    let (src, dst, urls) = moving(20, 20).await;
    let before = (snapshot(&urls[0]).await, snapshot(&urls[1]).await);
    let (active, frozen) = (&[ShardState::Active], ShardState::Frozen);
    superseded(
        transfer::set_state(&src, SHARD, active, frozen, None, OLDER).await,
        "backend db1",
    );
    let importing = &[ShardState::Importing];
    superseded(
        transfer::set_state(&dst, SHARD, importing, ShardState::Retired, None, OLDER).await,
        "backend db2",
    );
    // Even a change to the state the row has already.
    superseded(
        transfer::set_state(&dst, SHARD, importing, ShardState::Importing, None, OLDER).await,
        "backend db2",
    );
    superseded(transfer::claim(&src, SHARD, OLDER).await, "backend db1");
    assert_eq!((snapshot(&urls[0]).await, snapshot(&urls[1]).await), before);

    // The leader of term 7 still changes it; term 8 takes it over by a state change.
    assert!(
        transfer::set_state(&src, SHARD, active, frozen, None, NEWER)
            .await
            .unwrap()
    );
    assert_eq!(term_in(&urls[0]).await, Some(7));
    assert!(transfer::set_state(
        &src,
        SHARD,
        &[ShardState::Frozen],
        ShardState::Active,
        None,
        Term(8)
    )
    .await
    .unwrap());
    assert_eq!(term_in(&urls[0]).await, Some(8));
    let e = transfer::set_state(&src, SHARD, active, frozen, None, NEWER).await;
    assert!(
        matches!(
            e,
            Err(StorageError::Superseded {
                term: NEWER,
                newer: Term(8),
                ..
            })
        ),
        "{e:?}"
    );
    assert_eq!(
        transfer::shard_state(&src, SHARD)
            .await
            .unwrap()
            .map(|s| s.0),
        Some(ShardState::Active)
    );
}

/// Copies from the older leader (bulk, paced, a cutover's tail, short or long) are refused
/// inside their own transaction or statement: the target keeps exactly its rows.
#[tokio::test]
async fn a_copy_from_an_older_leader_is_refused_and_copies_nothing() {
    let (src, dst, urls) = moving(transfer::SMALL_TAIL + 500, 100).await;
    let before = snapshot(&urls[1]).await;
    let after = transfer::max_added_id(&dst, SHARD).await.unwrap();
    superseded(
        transfer::copy_rows(&src, &dst, SHARD, after, None, OLDER).await,
        "backend db2",
    );
    superseded(
        transfer::copy_rows_paced(&src, &dst, SHARD, after, Some(10), Some(1 << 20), OLDER).await,
        "backend db2",
    );
    // A long tail goes through COPY, a short one as one checked statement.
    superseded(
        transfer::copy_tail(&src, &dst, SHARD, after, OLDER).await,
        "backend db2",
    );
    let near_end = transfer::max_added_id(&src, SHARD).await.unwrap() - 5;
    superseded(
        transfer::copy_tail(&src, &dst, SHARD, near_end, OLDER).await,
        "backend db2",
    );
    assert_eq!(snapshot(&urls[1]).await, before);

    // The leader of term 7 copies on, and so does term 8, after which 7 is refused.
    let r = transfer::copy_rows(&src, &dst, SHARD, after, Some(50), NEWER)
        .await
        .unwrap();
    assert_eq!(r.rows, 50);
    transfer::claim(&dst, SHARD, Term(8)).await.unwrap();
    assert_eq!(term_in(&urls[1]).await, Some(8));
    let r = transfer::copy_tail(&src, &dst, SHARD, r.max_added_id, Term(8))
        .await
        .unwrap();
    assert_eq!(
        transfer::count_rows(&dst, SHARD).await.unwrap(),
        transfer::count_rows(&src, SHARD).await.unwrap()
    );
    let e = transfer::copy_tail(&src, &dst, SHARD, r.max_added_id, NEWER).await;
    assert!(matches!(e, Err(StorageError::Superseded { .. })), "{e:?}");
}

/// Preparing, dropping (also only a retired copy) and advancing the sequence from the older
/// leader are refused: the row, the table and the sequence stay as they were.
#[tokio::test]
async fn prepare_drop_and_sequence_from_an_older_leader_are_refused() {
    let (src, dst, urls) = moving(30, 30).await;
    let before = (snapshot(&urls[0]).await, snapshot(&urls[1]).await);
    superseded(
        transfer::prepare_import(&dst, SHARDS, SHARD, OLDER).await,
        "backend db2",
    );
    superseded(
        transfer::advance_sequence(&dst, SHARD, 1000, OLDER).await,
        "backend db2",
    );
    superseded(
        transfer::drop_shard(&dst, SHARD, OLDER).await,
        "backend db2",
    );
    // A retired source (retired by term 7).
    let (active, frozen) = (&[ShardState::Active], ShardState::Frozen);
    assert!(
        transfer::set_state(&src, SHARD, active, frozen, None, NEWER)
            .await
            .unwrap()
    );
    let frozen_only = &[ShardState::Frozen];
    assert!(
        transfer::set_state(&src, SHARD, frozen_only, ShardState::Retired, None, NEWER)
            .await
            .unwrap()
    );
    let retired = snapshot(&urls[0]).await;
    assert_ne!(retired, before.0);
    superseded(
        transfer::drop_retired(&src, SHARD, OLDER).await,
        "backend db1",
    );
    superseded(
        transfer::drop_shard(&src, SHARD, OLDER).await,
        "backend db1",
    );
    assert_eq!(snapshot(&urls[0]).await, retired);
    assert_eq!(snapshot(&urls[1]).await, before.1);

    // Terms 7 and 8 still do all of it.
    transfer::prepare_import(&dst, SHARDS, SHARD, NEWER)
        .await
        .unwrap();
    assert_eq!(
        transfer::advance_sequence(&dst, SHARD, 1000, Term(8))
            .await
            .unwrap(),
        1001
    );
    assert_eq!(term_in(&urls[1]).await, Some(7)); // a sequence is not a state change
    assert!(transfer::drop_retired(&src, SHARD, NEWER).await.unwrap());
    transfer::drop_shard(&dst, SHARD, Term(8)).await.unwrap();
    assert_eq!(transfer::shard_state(&dst, SHARD).await.unwrap(), None);
    assert_eq!(transfer::shard_state(&src, SHARD).await.unwrap(), None);
}

/// A claim stamps the term on the row unless a higher one is there; a shard without a row, or
/// a database without mezzanine's tables, has nothing to claim.
#[tokio::test]
async fn a_claim_stamps_its_term_unless_a_newer_one_holds_the_shard() {
    let urls = fresh_databases(2).await;
    let bare = backend("bare", &urls[1]);
    transfer::claim(&bare, SHARD, OLDER).await.unwrap();
    let b = backend("db1", &urls[0]);
    schema::prepare_backend(&b, SHARDS, &[SHARD], true)
        .await
        .unwrap();
    transfer::claim(&b, 5, NEWER).await.unwrap(); // no row for shard 5 here
    assert_eq!(term_in(&urls[0]).await, Some(0));
    transfer::claim(&b, SHARD, OLDER).await.unwrap();
    assert_eq!(term_in(&urls[0]).await, Some(6));
    transfer::claim(&b, SHARD, NEWER).await.unwrap();
    transfer::claim(&b, SHARD, NEWER).await.unwrap();
    assert_eq!(term_in(&urls[0]).await, Some(7));
    superseded(transfer::claim(&b, SHARD, OLDER).await, "backend db1");
    assert_eq!(term_in(&urls[0]).await, Some(7));
    // A claim changes only the term: the shard is served as before.
    assert_eq!(
        transfer::shard_state(&b, SHARD).await.unwrap().map(|s| s.0),
        Some(ShardState::Active)
    );
}

// ---------------------------------------------------------------------------------------------
// The catalog: terms, layout 4
// ---------------------------------------------------------------------------------------------

fn no_mover() -> mezzanine_server::ServeConfig {
    let mut c = default_config();
    c.no_mover = true;
    c
}

async fn status(srv: &TestServer) -> Value {
    let (s, v) = get_json(&client(), &srv.url("/admin/v1/status")).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Takes the leadership, waiting while a dropped session's lock is still held (PostgreSQL
/// releases it when it sees the session end).
async fn acquire(leader: &mut Leader) -> mezzanine_catalog::LeaderSession {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        if let Some(s) = leader.try_acquire().await.unwrap() {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "no leadership");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each acquisition of the leadership takes the next term, and the status shows it.
#[tokio::test]
async fn each_acquisition_of_the_leadership_takes_the_next_term() {
    let urls = fresh_databases(1).await;
    let srv = TestServer::start(no_mover(), even_map(&urls, SHARDS)).await;
    let info = LeaderInfo {
        id: "test-leader".into(),
        addr: "127.0.0.1:1".into(),
    };
    let mut leader = Leader::new(srv.state.catalog.url(), Duration::from_secs(5), info);
    let first = acquire(&mut leader).await;
    assert!(first.term() >= Term(1), "{:?}", first.term());
    let st = status(&srv).await;
    assert_eq!(st["leader"]["id"], "test-leader", "{st}");
    assert_eq!(st["leader"]["term"], json!(first.term().0), "{st}");
    let t = first.term();
    drop(first);
    let second = acquire(&mut leader).await;
    assert_eq!(second.term(), Term(t.0 + 1));
    drop(second);
    let third = acquire(&mut leader).await;
    assert_eq!(third.term(), Term(t.0 + 2));
    assert_eq!(status(&srv).await["leader"]["term"], json!(t.0 + 2));
    drop(third);
    srv.stop().await;
}

/// A cluster laid out before terms (catalog layout 3, backends layout 2) is migrated at
/// start-up: the leader's term, the CHECK of the move states (a bogus state is refused), the
/// backends' term column; the existing moves are kept.
#[tokio::test]
async fn a_layout_3_catalog_is_migrated_and_checks_the_move_states() {
    let urls = fresh_databases(3).await;
    let map = even_map(&urls[..2], SHARDS);
    let a = TestServer::start(default_config(), map.clone()).await;
    let (s, v) = post_json(
        &client(),
        &a.url("/admin/v1/backends"),
        &json!({"name": "db3", "url": urls[2]}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = start_move(&a, json!({"shards": "1", "to": "db3"})).await;
    wait_job_state(&a, id, "switched", LONG).await;
    a.stop().await;
    // As the previous version left them.
    sql(
        &urls[0],
        "ALTER TABLE mezzanine.leader DROP COLUMN IF EXISTS term; \
         ALTER TABLE mezzanine.move_shards DROP CONSTRAINT IF EXISTS move_shards_state_known; \
         UPDATE mezzanine.meta SET schema_version = 3;",
    )
    .await;
    for url in &urls {
        sql(
            url,
            "ALTER TABLE mezzanine_shard_state DROP COLUMN IF EXISTS term; \
             UPDATE mezzanine_schema SET version = 2;",
        )
        .await;
    }
    // A bogus state is accepted by the old layout.
    let catalog = connect(&urls[0]).await;
    let bogus = format!(
        "UPDATE mezzanine.move_shards SET state = 'bogus' WHERE move_id = {id} AND shard = 1"
    );
    catalog
        .batch_execute(&format!("BEGIN; {bogus}; ROLLBACK"))
        .await
        .unwrap();

    let b = TestServer::start(default_config(), map).await;
    let st = wait_admin(
        &b,
        "/admin/v1/status",
        LONG,
        Duration::from_millis(50),
        |s| s["leader"]["term"].is_i64(),
    )
    .await;
    assert!(st["leader"]["term"].as_i64() >= Some(1), "{st}");
    let version: i32 = catalog
        .query_one("SELECT schema_version FROM mezzanine.meta", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 6, "migrated to the current layout");
    let e = catalog.batch_execute(&bogus).await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
        "{e}"
    );
    let constraint = e.as_db_error().and_then(|d| d.constraint());
    assert_eq!(constraint, Some("move_shards_state_known"), "{e}");
    let (_, job) = get_json(&client(), &b.url(&format!("/admin/v1/moves/{id}"))).await;
    assert_eq!(job["shards"][0]["state"], "switched", "{job}");
    for url in &urls {
        let c = connect(url).await;
        let v: i32 = c
            .query_one("SELECT version FROM mezzanine_schema", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, schema::SCHEMA_VERSION);
        let terms: i64 = c
            .query_one("SELECT count(term) FROM mezzanine_shard_state", &[])
            .await
            .unwrap()
            .get(0);
        assert!(terms > 0, "{url}");
    }
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The mover meeting a newer leader
// ---------------------------------------------------------------------------------------------

/// The value of a counter in the node's metrics (0 when absent).
async fn counter(srv: &TestServer, name: &str) -> u64 {
    let text = client()
        .get(srv.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A shard task whose target was taken over by a newer leader (its row holds a higher term
/// than this leader's) stops without retrying or undoing: the shard stays `pending` with no
/// error, the newer leader's copy stays on the target; each later pass meets the same refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_meeting_a_newer_leader_stops_without_undoing() {
    let (a, urls) = cluster_with_spare(default_config(), SHARDS).await;
    let st = wait_admin(
        &a,
        "/admin/v1/status",
        LONG,
        Duration::from_millis(50),
        |s| s["leader"]["term"].is_i64(),
    )
    .await;
    let newer = Term(st["leader"]["term"].as_i64().unwrap() + 1);
    let c = client();
    let row = key_in_shard(1, SHARDS);
    write_one(&c, &a, &row, "c", 1).await;
    // The newer leader prepared the target.
    let db3 = backend("db3", &urls[2]);
    transfer::prepare_import(&db3, SHARDS, 1, newer)
        .await
        .unwrap();
    let metric = "mezzanine_move_shards_superseded_total";
    let before = counter(&a, metric).await;
    let id = start_move(&a, json!({"shards": "1", "to": "db3"})).await;
    // Until two tasks met the newer leader (each stopped, the next pass started another), or
    // the shard's move ended (what a retry or an undo would do).
    let deadline = tokio::time::Instant::now() + LONG;
    let job = loop {
        let (_, job) = get_json(&c, &a.url(&format!("/admin/v1/moves/{id}"))).await;
        if job["shards"][0]["state"] != "pending" || counter(&a, metric).await >= before + 2 {
            break job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no task met the newer leader twice"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job["shards"][0]["state"], "pending", "{job}");
    assert!(job["shards"][0]["error"].is_null(), "{job}");
    assert_eq!(
        shard_state_in(&urls[2], 1).await.as_deref(),
        Some("importing")
    );
    let c3 = connect(&urls[2]).await;
    let term: i64 = c3
        .query_one(
            "SELECT term FROM mezzanine_shard_state WHERE shard = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(Term(term), newer);
    // The source serves the shard as before.
    let (s, v) = get_json(&c, &a.url(&format!("/v1/cells/{row}/c"))).await;
    assert_eq!(s, 200, "{v}");
    a.stop().await;
}

/// The leader's catalog session is cut while a shard is copying; the node leads again with
/// the next term and, before it does anything else with the shard, claims it on the source
/// and the target: from then on the old term is refused on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_claims_the_shard_on_both_sides_before_it_resumes() {
    let mut cfg = default_config();
    cfg.failpoints = "copying=30s,catching_up=30s".into();
    let (a, urls) = cluster_with_spare(cfg, SHARDS).await;
    let c = client();
    for r in 0..5 {
        write_one(&c, &a, &key_in_shard(1, SHARDS), "c", r).await;
    }
    let id = start_move(&a, json!({"shards": "1", "to": "db3"})).await;
    wait_job(&a, id, LONG, |j| {
        j["shards"][0]["state"] == "copying" && j["shards"][0]["rows_copied"].as_i64() >= Some(5)
    })
    .await;
    let first = status(&a).await["leader"]["term"].as_i64().unwrap();
    assert_eq!(term_of(&urls[0], 1).await, Some(first));
    assert_eq!(term_of(&urls[2], 1).await, Some(first));

    // The leader's catalog session is cut (the catalog is in db1's database).
    sql(
        &urls[0],
        "SELECT pg_terminate_backend(pid) FROM mezzanine.leader",
    )
    .await;
    wait_admin(
        &a,
        "/admin/v1/status",
        LONG,
        Duration::from_millis(50),
        |s| s["leader"]["term"].as_i64() > Some(first),
    )
    .await;
    // Resumed up to the pause after its first catch-up round: no state change on a backend
    // yet, only the claims.
    wait_shard_state(&a, id, 1, "catching_up", LONG).await;
    let second = status(&a).await["leader"]["term"].as_i64().unwrap();
    assert_eq!(second, first + 1);
    assert_eq!(term_of(&urls[0], 1).await, Some(second));
    assert_eq!(term_of(&urls[2], 1).await, Some(second));
    let (db1, db3) = (backend("db1", &urls[0]), backend("db3", &urls[2]));
    let old = Term(first);
    let e = transfer::set_state(
        &db1,
        1,
        &[ShardState::Active],
        ShardState::Frozen,
        None,
        old,
    );
    assert!(matches!(e.await, Err(StorageError::Superseded { .. })));
    let e = transfer::drop_shard(&db3, 1, old).await;
    assert!(matches!(e, Err(StorageError::Superseded { .. })), "{e:?}");
    a.stop().await;
}
