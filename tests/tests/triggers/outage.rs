//! A plugin that does not answer loses nothing: its port refusing connections, then answering
//! 500, while cells are written; the plugin's `delivery_state` says `backing_off` with the
//! error meanwhile, and `delivering` once it answers again; every acknowledged cell then
//! arrives, in order per shard.

use super::*;
use mezzanine_e2e::receiver::Mode;

async fn state_of(catalog: &str) -> (String, String) {
    let c = connect(catalog).await;
    let row = c
        .query_one(
            "SELECT delivery_state, coalesce(last_error, '') FROM mezzanine.plugins",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn wait_state(catalog: &str, want: &str) -> String {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let (state, error) = state_of(catalog).await;
        if state == want {
            return error;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the plugin never became {want} ({state}, {error})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plugin_down_for_a_while_loses_nothing() {
    let urls = fresh_databases(2).await;
    let srv = TestServer::start(config(), even_map(&urls, SHARDS)).await;
    let c = client();
    let rx = Receiver::start().await;
    register(&srv, "outage", &rx.url, &["a"]).await;
    let mut acks = Vec::new();
    for i in 0..20 {
        acks.push(write(&c, &srv, &Uuid::new_v4(), "a", i).await);
    }
    wait_all(&rx, &acks).await;

    // Down: connections refused.
    rx.go_down().await;
    for i in 0..40 {
        acks.push(write(&c, &srv, &Uuid::new_v4(), "a", i).await);
    }
    acks.extend(write_batch(&c, &srv, "a", 50).await);
    let error = wait_state(&urls[0], "backing_off").await;
    assert!(!error.is_empty(), "no last_error while backing off");

    // Back, but answering 500.
    rx.come_back().await;
    rx.set_mode(Mode::Error500);
    for i in 0..20 {
        acks.push(write(&c, &srv, &Uuid::new_v4(), "a", i).await);
    }
    let deadline = std::time::Instant::now() + LONG;
    while !rx.calls().iter().any(|(_, _, status)| *status == 500) {
        assert!(
            std::time::Instant::now() < deadline,
            "no call reached the receiver"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state_of(&urls[0]).await.0, "backing_off");

    rx.set_mode(Mode::Up);
    wait_all(&rx, &acks).await;
    wait_state(&urls[0], "delivering").await;
    assert_in_order(&rx.received());
}

/// A paused plugin (`paused`, as `mezzanine plugins pause` sets it) gets no call; once
/// resumed it gets what was written meanwhile, from its offset. Another plugin, not paused,
/// shows that the paused one would have been called by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_plugin_gets_nothing_until_resumed() {
    let urls = fresh_databases(1).await;
    let srv = TestServer::start(config(), even_map(&urls, SHARDS)).await;
    let c = client();
    let rx = Receiver::start().await;
    let sentinel = Receiver::start().await;
    register(&srv, "paused", &rx.url, &["a"]).await;
    register(&srv, "sentinel", &sentinel.url, &["a"]).await;
    let first = write(&c, &srv, &Uuid::new_v4(), "a", 1).await;
    wait_all(&rx, &[first]).await;
    let set_paused = |on: bool| {
        format!(
            "UPDATE mezzanine.plugins SET paused = {on} WHERE name = 'paused';
             UPDATE mezzanine.meta SET plugins_version = plugins_version + 1;
             SELECT pg_notify('mezzanine_catalog', 'plugins');"
        )
    };
    sql(&urls[0], &set_paused(true)).await;
    // The deliverer reacts to the notification; give it the poll's period at most.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut during = Vec::new();
    for i in 0..30 {
        during.push(write(&c, &srv, &Uuid::new_v4(), "a", i).await);
    }
    wait_all(&sentinel, &during).await;
    let called: Vec<_> = rx
        .calls()
        .into_iter()
        .filter(|(s, id, _)| during.contains(&(*s, *id)))
        .collect();
    assert!(called.is_empty(), "a paused plugin was called: {called:?}");
    sql(&urls[0], &set_paused(false)).await;
    wait_all(&rx, &during).await;
    assert_in_order(&rx.received());
}
