//! Several nodes: a registration through one node delivered by the node that delivers; the
//! delivering node killed mid-stream (its runtime dropped: its connections close as a killed
//! process's do, PostgreSQL releases its lock) and delivery resumed by the other node, nothing
//! lost, order kept; unregistering stops deliveries.

use super::*;
use mezzanine_e2e::logs::{self, OwnNode};

const DELIVERS: &str = "this node delivers plugin events";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registration_through_one_node_is_delivered_by_another() {
    let urls = fresh_databases(2).await;
    let a = TestServer::start(config(), even_map(&urls, SHARDS)).await;
    let mut quiet = config();
    quiet.delivery_enabled = false;
    let b = TestServer::start(quiet, even_map(&urls, SHARDS)).await;
    let c = client();
    let rx = Receiver::start().await;
    register(&b, "via-b", &rx.url, &["a"]).await;
    let mut acks = Vec::new();
    for i in 0..30 {
        acks.push(write(&c, &b, &Uuid::new_v4(), "a", i).await);
    }
    acks.extend(write_batch(&c, &b, "a", 40).await);
    wait_all(&rx, &acks).await;
    assert_in_order(&rx.received());
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_delivering_node_killed_mid_stream_another_resumes() {
    logs::capture();
    let urls = fresh_databases(2).await;
    let a = OwnNode::start("deliver-a", config(), even_map(&urls, SHARDS)).await;
    logs::wait_event("node a delivers", LONG, |e| {
        e.from("deliver-a") && e.message == DELIVERS
    })
    .await;
    let b = OwnNode::start("deliver-b", config(), even_map(&urls, SHARDS)).await;
    let c = client();
    let rx = Receiver::start().await;
    register(&b, "failover", &rx.url, &["a"]).await;

    // A writer through B all along.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let writer = {
        let (c, base) = (c.clone(), b.base.clone());
        tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut i = 0;
            while !*stop_rx.borrow_and_update() {
                let row = Uuid::new_v4();
                let (s, v) = post_json(
                    &c,
                    &format!("{base}/v1/cells"),
                    &cell(&row, "a", i, json!({"i": i})),
                )
                .await;
                assert_eq!(s, 201, "{v}");
                acks.push(ack_of(&v));
                i += 1;
            }
            acks
        })
    };
    rx.wait_until("a's first deliveries", LONG, |got| got.len() >= 50)
        .await;
    drop(a);
    logs::wait_event("node b delivers", LONG, |e| {
        e.from("deliver-b") && e.message == DELIVERS
    })
    .await;
    let before = rx.received().len();
    rx.wait_until("b's deliveries", LONG, |got| got.len() >= before + 50)
        .await;
    stop_tx.send_replace(true);
    let acks = writer.await.unwrap();
    wait_all(&rx, &acks).await;
    assert_in_order(&rx.received());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unregistering_stops_deliveries() {
    logs::capture();
    let urls = fresh_databases(1).await;
    let srv = TestServer::start(config(), even_map(&urls, SHARDS)).await;
    let c = client();
    let gone = Receiver::start().await;
    let sentinel = Receiver::start().await;
    let id = register(&srv, "gone", &gone.url, &["a"]).await;
    register(&srv, "sentinel", &sentinel.url, &["a"]).await;
    let first = write(&c, &srv, &Uuid::new_v4(), "a", 1).await;
    wait_all(&gone, &[first]).await;
    let resp = c
        .delete(srv.url(&format!("/v1/plugins/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    // The deliverer learns of the deletion by the catalog's notification, moments later
    // (nothing on the request path waits for it): from then on, nothing more.
    logs::wait_event("the deliverer stopping the plugin", LONG, |e| {
        e.message == "delivery to the plugin stops" && e.field("plugin") == Some("gone")
    })
    .await;
    let mut later = Vec::new();
    for i in 0..30 {
        later.push(write(&c, &srv, &Uuid::new_v4(), "a", i).await);
    }
    wait_all(&sentinel, &later).await;
    let leaked: Vec<Ack> = gone
        .received()
        .iter()
        .map(|r| (r.shard, r.added_id))
        .filter(|a| later.contains(a))
        .collect();
    assert!(
        leaked.is_empty(),
        "delivered after the deletion: {leaked:?}"
    );
    // Its offsets went with it.
    let left = catalog_texts(
        &urls[0],
        &format!("SELECT shard::text FROM mezzanine.plugin_offsets WHERE plugin_id = '{id}'"),
    )
    .await;
    assert!(left.is_empty(), "{left:?}");
}

/// The delivering node checks an endpoint against its own `PLUGIN_HOSTS_ALLOWED` before any
/// connection (the registration was checked by another node's list): no call, the plugin
/// backed off with why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_delivering_node_calls_only_hosts_its_own_list_allows() {
    use mezzanine_core::hosts::HostsAllowed;
    use mezzanine_core::plugin::PLUGIN_HOSTS_ALLOWED;
    let urls = fresh_databases(1).await;
    let mut strict = config();
    strict.plugin_hosts_allowed =
        Some(HostsAllowed::parse_for("10.0.0.0/8", PLUGIN_HOSTS_ALLOWED).unwrap());
    let a = TestServer::start(strict, even_map(&urls, SHARDS)).await;
    let mut quiet = config();
    quiet.delivery_enabled = false;
    let b = TestServer::start(quiet, even_map(&urls, SHARDS)).await;
    let rx = Receiver::start().await;
    register(&b, "elsewhere", &rx.url, &["a"]).await;
    write(&client(), &b, &Uuid::new_v4(), "a", 1).await;
    let deadline = std::time::Instant::now() + LONG;
    let error = loop {
        let found = catalog_texts(
            &urls[0],
            "SELECT delivery_state || ' ' || coalesce(last_error, '') FROM mezzanine.plugins",
        )
        .await;
        if let Some(e) = found.first().and_then(|s| s.strip_prefix("backing_off ")) {
            break e.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never backed off: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(error.contains("PLUGIN_HOSTS_ALLOWED"), "{error}");
    assert!(rx.calls().is_empty(), "{:?}", rx.calls());
    drop(a);
}
