//! An event the plugin keeps refusing (a JSON-RPC error object; HTTP 400) is sent
//! `TRIGGER_RETRY_MAX` more times, then parked (`mezzanine.plugin_parked`) while the rest of
//! its shard flows; replayed on request (`replay_requested`, as the operator's command sets
//! it), delivered, its parked row gone.

use super::*;
use mezzanine_e2e::receiver::Refusal;

async fn parked(catalog: &str) -> Vec<(i32, i64, i32, String, bool)> {
    let c = connect(catalog).await;
    c.query(
        "SELECT shard, added_id, attempts, error, replay_requested FROM mezzanine.plugin_parked \
         ORDER BY shard, added_id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poisoned_event_is_parked_while_the_rest_flows_then_replayed() {
    let urls = fresh_databases(2).await;
    let srv = TestServer::start(config(), even_map(&urls, SHARDS)).await;
    let c = client();
    let rx = Receiver::start().await;
    register(&srv, "parking", &rx.url, &["a"]).await;

    // Two poisoned rows in shard 3 (one refused by a JSON-RPC error, one by HTTP 400),
    // between healthy cells of the same shard.
    let rpc_poison = key_in_shard(3, SHARDS);
    let http_poison = key_in_shard(3, SHARDS);
    rx.refuse_row(&rpc_poison.to_string(), Refusal::RpcError);
    rx.refuse_row(&http_poison.to_string(), Refusal::Http400);
    let mut healthy = Vec::new();
    for i in 0..5 {
        healthy.push(write(&c, &srv, &key_in_shard(3, SHARDS), "a", i).await);
    }
    let p1 = write(&c, &srv, &rpc_poison, "a", 1).await;
    for i in 0..5 {
        healthy.push(write(&c, &srv, &key_in_shard(3, SHARDS), "a", i).await);
    }
    let p2 = write(&c, &srv, &http_poison, "a", 1).await;
    for i in 0..5 {
        healthy.push(write(&c, &srv, &key_in_shard(3, SHARDS), "a", i).await);
        healthy.push(write(&c, &srv, &Uuid::new_v4(), "a", i).await);
    }
    wait_all(&rx, &healthy).await;
    assert_in_order(&rx.received());

    let rows = parked(&urls[0]).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0].0 as u32, rows[0].1), p1);
    assert_eq!((rows[1].0 as u32, rows[1].1), p2);
    // The first send and TRIGGER_RETRY_MAX=2 more.
    assert_eq!(rows[0].2, 3, "{rows:?}");
    assert!(rows[0].3.contains("-32000"), "{rows:?}");
    assert!(rows[1].3.contains("400"), "{rows:?}");
    let calls = rx.calls();
    assert_eq!(calls.iter().filter(|(s, id, _)| (*s, *id) == p1).count(), 3);
    assert!(!rx.received().iter().any(|r| (r.shard, r.added_id) == p1));

    // Replayed on request, once the plugin takes it.
    rx.accept_row(&rpc_poison.to_string());
    rx.accept_row(&http_poison.to_string());
    sql(
        &urls[0],
        "UPDATE mezzanine.plugin_parked SET replay_requested = true;
         UPDATE mezzanine.meta SET plugins_version = plugins_version + 1;
         SELECT pg_notify('mezzanine_catalog', 'plugins');",
    )
    .await;
    wait_all(&rx, &[p1, p2]).await;
    let deadline = std::time::Instant::now() + LONG;
    while !parked(&urls[0]).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "replayed events stay parked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_that_fails_stays_parked() {
    let urls = fresh_databases(1).await;
    let srv = TestServer::start(config(), even_map(&urls, SHARDS)).await;
    let c = client();
    let rx = Receiver::start().await;
    register(&srv, "replay-fails", &rx.url, &["a"]).await;
    let poison = Uuid::new_v4();
    rx.refuse_row(&poison.to_string(), Refusal::Http400);
    let p = write(&c, &srv, &poison, "a", 1).await;
    let after = write(&c, &srv, &key_in_shard(p.0, SHARDS), "a", 1).await;
    wait_all(&rx, &[after]).await;
    assert_eq!(parked(&urls[0]).await.len(), 1);
    sql(
        &urls[0],
        "UPDATE mezzanine.plugin_parked SET replay_requested = true;
         SELECT pg_notify('mezzanine_catalog', 'plugins');",
    )
    .await;
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let rows = parked(&urls[0]).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        if !rows[0].4 && rows[0].2 > 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the failed replay was not recorded: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
