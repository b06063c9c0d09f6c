//! The retention guard of a move's cleanup: `transfer::drop_retired` drops a moved shard's old
//! copy only while it is still `retired`, checked in the drop's own transaction. A revert may
//! have started to bring the shard back there (its copy is `importing` again, keeping the
//! rows it had); a late cleanup of the first move must then leave it alone.

use std::sync::Arc;

use mezzanine_core::Term;
use mezzanine_e2e::*;
use mezzanine_storage::transfer::{self, ShardState};
use mezzanine_storage::{schema, Backend, PoolSettings};

const SHARDS: u32 = 8;
const SHARD: u32 = 5;
/// The term of the mover's leader these tests act as (the rows were never touched by another).
const TERM: Term = Term(1);

async fn serving(url: &str) -> Arc<Backend> {
    let b = Backend::new("db1", url, PoolSettings::default()).unwrap();
    schema::prepare_backend(&b, SHARDS, &[SHARD], true)
        .await
        .unwrap();
    sql(
        url,
        &format!(
            "INSERT INTO cells_{SHARD:04} (row_key, column_name, ref_key, body) \
             SELECT gen_random_uuid(), 'c', g, jsonb_build_object('n', g) \
             FROM generate_series(1, 50) g"
        ),
    )
    .await;
    b
}

async fn retire(b: &Backend) {
    let changed = transfer::set_state(
        b,
        SHARD,
        &[ShardState::Active],
        ShardState::Retired,
        None,
        TERM,
    )
    .await
    .unwrap();
    assert!(changed);
}

#[tokio::test]
async fn a_retired_copy_is_dropped() {
    let url = fresh_databases(1).await.remove(0);
    let b = serving(&url).await;
    retire(&b).await;
    assert!(transfer::drop_retired(&b, SHARD, TERM).await.unwrap());
    assert_eq!(
        cells_in_table(&url).await,
        None,
        "the retired copy is still there"
    );
}

#[tokio::test]
async fn a_copy_a_revert_is_importing_again_is_kept() {
    let url = fresh_databases(1).await.remove(0);
    let b = serving(&url).await;
    retire(&b).await;
    // A revert starts: the retired copy becomes the target of the move back.
    transfer::prepare_import(&b, SHARDS, SHARD, TERM)
        .await
        .unwrap();
    assert_eq!(
        transfer::shard_state(&b, SHARD).await.unwrap().map(|s| s.0),
        Some(ShardState::Importing)
    );
    // The first move's cleanup comes late: it must not drop the revert's copy.
    assert!(!transfer::drop_retired(&b, SHARD, TERM).await.unwrap());
    assert_eq!(cells_in_table(&url).await, Some(50));
    assert_eq!(
        transfer::shard_state(&b, SHARD).await.unwrap().map(|s| s.0),
        Some(ShardState::Importing)
    );
}

#[tokio::test]
async fn an_active_copy_is_never_dropped_by_a_cleanup() {
    let url = fresh_databases(1).await.remove(0);
    let b = serving(&url).await;
    assert!(!transfer::drop_retired(&b, SHARD, TERM).await.unwrap());
    assert_eq!(cells_in_table(&url).await, Some(50));
}

/// Rows in the shard's table, or `None` when the table is gone.
async fn cells_in_table(url: &str) -> Option<i64> {
    let c = connect(url).await;
    let exists: bool = c
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("cells_{SHARD:04}")],
        )
        .await
        .unwrap()
        .get(0);
    if !exists {
        return None;
    }
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM cells_{SHARD:04}"), &[])
        .await
        .unwrap()
        .get(0);
    Some(n)
}
