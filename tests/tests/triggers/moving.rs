//! The shard moved mid-stream (to a backend the deliverer's map did not know it on): the
//! stream continues on the new owner from the same offset (I4), with no gap and in order.

use super::*;

const SHARD: u32 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shard_moved_mid_stream_keeps_its_stream() {
    let (srv, _urls) = cluster_with_spare(config(), SHARDS).await;
    let c = client();
    let rx = Receiver::start().await;
    register(&srv, "moving", &rx.url, &["a"]).await;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let writer = {
        let (c, base) = (c.clone(), srv.base.clone());
        tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut i = 0;
            while !*stop_rx.borrow_and_update() {
                let row = key_in_shard(SHARD, SHARDS);
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
    rx.wait_until("deliveries before the move", LONG, |got| got.len() >= 30)
        .await;
    let id = start_move(&srv, json!({"shards": SHARD.to_string(), "to": "db3"})).await;
    wait_job_state(&srv, id, "switched", LONG).await;
    let before = rx.received().len();
    rx.wait_until("deliveries after the move", LONG, |got| {
        got.len() >= before + 30
    })
    .await;
    stop_tx.send_replace(true);
    let acks = writer.await.unwrap();
    wait_all(&rx, &acks).await;
    let got = rx.received();
    assert_in_order(&got);
    // No gap: the delivered added_ids are exactly the acknowledged ones.
    let have: BTreeSet<i64> = got.iter().map(|r| r.added_id).collect();
    let want: BTreeSet<i64> = acks.iter().map(|a| a.1).collect();
    assert_eq!(have, want);
}
