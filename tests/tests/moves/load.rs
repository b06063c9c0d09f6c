//! Invariants I3 and I4 under load.

use super::*;

// ---------------------------------------------------------------------------------------------
// 2. I3 and I4 under load
// ---------------------------------------------------------------------------------------------

/// What a client was told was stored.
#[derive(Clone, Debug)]
struct Acked {
    shard: u32,
    body: Value,
    added_id: i64,
    created_at: Value,
}

type Coords = (String, String, i64);

fn coords(c: &Value) -> Coords {
    (
        c["row_key"].as_str().unwrap().to_owned(),
        c["column_name"].as_str().unwrap().to_owned(),
        c["ref_key"].as_i64().unwrap(),
    )
}

/// A body that is easy to change by accident: big and fractional numbers, escapes, Unicode,
/// nesting.
fn tricky_body(w: usize, i: i64) -> Value {
    serde_json::from_str(&format!(
        r#"{{"w":{w},"i":{i},"big":123456789012345678901234567890{i},"f":0.{i}5,"neg":-{i}.25,"s":"Zoë ✓ 日本 \"q\" \\ \n {i}","nested":{{"a":[1,{{"b":null}},[]],"t":true,"o":{{}}}}}}"#
    ))
    .unwrap()
}

#[derive(Default)]
struct Ledger {
    acked: HashMap<Coords, Acked>,
    order: Vec<Coords>,
    errors: Vec<String>,
}

impl Ledger {
    fn ack(&mut self, input: &Value, stored: &Value, shard: u32) {
        if stored["body"] != input["body"] {
            self.errors
                .push(format!("stored body differs: sent {input}, got {stored}"));
        }
        let k = coords(input);
        let prev = self.acked.insert(
            k.clone(),
            Acked {
                shard,
                body: input["body"].clone(),
                added_id: stored["added_id"].as_i64().unwrap_or(-1),
                created_at: stored["created_at"].clone(),
            },
        );
        if prev.is_some() {
            self.errors.push(format!("{k:?} acknowledged twice"));
        }
        self.order.push(k);
    }
}

const MOVING: [u32; 4] = [2, 3, 4, 5];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_load_a_move_loses_doubles_and_changes_nothing() {
    let (a, urls) = cluster().await;
    let b = node(no_mover(), &urls).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let nodes = [a.clone(), b.clone()];
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let c = client();

    // Cells before the move, in every shard (more in the moving ones, so the copy takes a while).
    for shard in 0..SHARDS {
        let n = if MOVING.contains(&shard) { 150 } else { 10 };
        let inputs: Vec<Value> = (0..n)
            .map(|i| cell(&key_in_shard(shard, SHARDS), "seed", i, tricky_body(99, i)))
            .collect();
        let stored = write_batch(&c, &a, inputs.clone()).await;
        let mut l = ledger.lock().unwrap();
        for (input, s) in inputs.iter().zip(&stored) {
            l.ack(input, s, shard);
        }
    }

    let stop_writers = Arc::new(AtomicBool::new(false));
    let stop_readers = Arc::new(AtomicBool::new(false));

    // Writers through both nodes: single cells and batches over moving and other shards.
    let writers: Vec<_> = (0..4usize)
        .map(|w| {
            let (srv, ledger, stop) = (nodes[w % 2].clone(), ledger.clone(), stop_writers.clone());
            tokio::spawn(async move {
                let c = client();
                let mut rng = Rng::new();
                let mut i = 0i64;
                let shard_of = |rng: &mut Rng| {
                    if rng.below(10) < 6 {
                        MOVING[rng.below(MOVING.len() as u64) as usize]
                    } else {
                        rng.below(SHARDS as u64) as u32
                    }
                };
                while !stop.load(Ordering::Acquire) {
                    let n = if rng.below(3) == 0 {
                        2 + rng.below(15) as usize
                    } else {
                        1
                    };
                    let mut inputs = Vec::with_capacity(n);
                    let mut shards = Vec::with_capacity(n);
                    for _ in 0..n {
                        let shard = shard_of(&mut rng);
                        i += 1;
                        shards.push(shard);
                        inputs.push(cell(
                            &key_in_shard(shard, SHARDS),
                            &format!("w{w}"),
                            i,
                            tricky_body(w, i),
                        ));
                    }
                    if n == 1 {
                        let (s, v) = post_json(&c, &srv.url("/v1/cells"), &inputs[0]).await;
                        let mut l = ledger.lock().unwrap();
                        match s {
                            201 => l.ack(&inputs[0], &v, shards[0]),
                            _ => l.errors.push(format!("write: {s} {v}")),
                        }
                    } else {
                        let (s, v) =
                            post_json(&c, &srv.url("/v1/cells/batch"), &json!({"cells": inputs}))
                                .await;
                        let mut l = ledger.lock().unwrap();
                        if s != 200 {
                            l.errors.push(format!("batch: {s} {v}"));
                            continue;
                        }
                        let results = v["results"].as_array().cloned().unwrap_or_default();
                        if results.len() != n {
                            l.errors.push(format!("batch: {n} cells, answer {v}"));
                            continue;
                        }
                        for ((input, r), shard) in inputs.iter().zip(&results).zip(&shards) {
                            match r["status"].as_u64() {
                                Some(201) => l.ack(input, &r["cell"], *shard),
                                _ => l.errors.push(format!("batch cell: {r}")),
                            }
                        }
                    }
                }
            })
        })
        .collect();

    // A reader of acknowledged cells through both nodes.
    let reader = {
        let (nodes, ledger, stop) = (nodes.clone(), ledger.clone(), stop_readers.clone());
        tokio::spawn(async move {
            let c = client();
            let mut rng = Rng::new();
            let mut reads = 0u64;
            while !stop.load(Ordering::Acquire) {
                let pick = {
                    let l = ledger.lock().unwrap();
                    let k = l.order[rng.below(l.order.len() as u64) as usize].clone();
                    let a = l.acked[&k].clone();
                    (k, a)
                };
                let ((row, col, r), want) = pick;
                let srv = &nodes[(reads % 2) as usize];
                reads += 1;
                let (s, v) = get_json(&c, &srv.url(&format!("/v1/cells/{row}/{col}/{r}"))).await;
                if s != 200 || v["body"] != want.body || v["added_id"] != want.added_id {
                    ledger
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("read {row}/{col}/{r}: {s} {v}, want {want:?}"));
                }
            }
            reads
        })
    };

    // A change-stream consumer per moving shard, paging by added_id through both nodes.
    let consumers: Vec<_> = MOVING
        .iter()
        .map(|&shard| {
            let (nodes, ledger, stop) = (nodes.clone(), ledger.clone(), stop_readers.clone());
            tokio::spawn(async move {
                let c = client();
                let mut seen: Vec<Value> = Vec::new();
                let mut after = 0i64;
                let mut pages = 0usize;
                loop {
                    let finished = stop.load(Ordering::Acquire);
                    let srv = &nodes[pages % 2];
                    pages += 1;
                    let (s, page) = get_json(
                        &c,
                        &srv.url(&format!(
                            "/v1/cells/partitionRead?partition_number={shard}&read_type=2&added_id={after}&limit=37"
                        )),
                    )
                    .await;
                    if s != 200 {
                        ledger
                            .lock()
                            .unwrap()
                            .errors
                            .push(format!("partitionRead {shard}: {s} {page}"));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    let page = page.as_array().cloned().unwrap_or_default();
                    for cell in &page {
                        let id = cell["added_id"].as_i64().unwrap();
                        assert!(id > after, "shard {shard}: {id} after {after}");
                        after = id;
                    }
                    let empty = page.is_empty();
                    seen.extend(page);
                    if finished && empty {
                        return (shard, seen);
                    }
                }
            })
        })
        .collect();

    let acked_now = || ledger.lock().unwrap().acked.len();
    let start = acked_now();
    eventually("writes under way", LONG, || async {
        acked_now() >= start + 100
    })
    .await;
    let id = start_move(
        &b,
        json!({"shards": "2-5", "to": "db3", "parallel": 2, "max_rows_per_sec": 1000}),
    )
    .await;
    let during = acked_now();
    let job = wait_job(&a, id, LONG, |j| j["state"] != "running").await;
    assert_eq!(job["state"], "switched", "{job}");
    let at_switch = acked_now();
    eprintln!(
        "load: {} cells acknowledged while the move ran; pauses (ms): {:?}",
        at_switch - during,
        job["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["pause_ms"].as_f64().unwrap_or(-1.0).round())
            .collect::<Vec<_>>()
    );
    eventually("writes after the move", LONG, || async {
        acked_now() >= at_switch + 100
    })
    .await;
    stop_writers.store(true, Ordering::Release);
    for w in writers {
        w.await.unwrap();
    }
    stop_readers.store(true, Ordering::Release);
    let reads = reader.await.unwrap();
    let mut streams = Vec::new();
    for h in consumers {
        streams.push(h.await.unwrap());
    }

    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    assert!(
        ledger.errors.is_empty(),
        "{} client errors, e.g. {:#?}",
        ledger.errors.len(),
        &ledger.errors[..ledger.errors.len().min(5)]
    );
    eprintln!(
        "load: {} cells acknowledged ({} after the switch), {reads} reads",
        ledger.acked.len(),
        ledger.acked.len() - at_switch
    );

    // I3: every acknowledged cell reads back once, identical; nothing else is there.
    let mut final_shards: HashMap<u32, Vec<Value>> = HashMap::new();
    for shard in 0..SHARDS {
        let cells = read_shard(&c, &a, shard).await;
        let mut found: HashMap<Coords, &Value> = HashMap::new();
        for cl in &cells {
            assert!(
                found.insert(coords(cl), cl).is_none(),
                "shard {shard}: {cl} twice"
            );
        }
        let mine: Vec<(&Coords, &Acked)> = ledger
            .acked
            .iter()
            .filter(|(_, a)| a.shard == shard)
            .collect();
        assert_eq!(
            cells.len(),
            mine.len(),
            "shard {shard}: {} cells stored, {} acknowledged",
            cells.len(),
            mine.len()
        );
        for (k, want) in mine {
            let got = found
                .get(k)
                .unwrap_or_else(|| panic!("shard {shard}: acknowledged {k:?} is lost"));
            assert_eq!(got["body"], want.body, "{k:?} changed");
            assert_eq!(got["added_id"], want.added_id, "{k:?} changed its added_id");
            assert_eq!(
                got["created_at"], want.created_at,
                "{k:?} changed created_at"
            );
        }
        final_shards.insert(shard, cells);
    }
    for shard in MOVING {
        assert_eq!(
            shard_state_in(&urls[2], shard).await.as_deref(),
            Some("active")
        );
        let src = if shard < 4 { &urls[0] } else { &urls[1] };
        assert_eq!(shard_state_in(src, shard).await.as_deref(), Some("retired"));
        assert_eq!(
            cells_in(&urls[2], shard).await,
            final_shards[&shard].len() as i64
        );
    }

    // The retired sources hold exactly the target's cells up to the switch (nothing written
    // there since, nothing different).
    let (s, report) = post_json(&c, &a.url("/admin/v1/verify"), &json!({"shards": "2-5"})).await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["ok"], true, "{report}");

    // I4: each consumer saw every cell of its shard once, in order, with the same added_id.
    for (shard, seen) in streams {
        let want = &final_shards[&shard];
        assert_eq!(
            added_ids(&seen),
            added_ids(want),
            "shard {shard}: the change stream differs"
        );
        assert_eq!(&seen, want, "shard {shard}: the change stream differs");
    }
}
