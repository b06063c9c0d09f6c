//! The scenario: the leader SIGKILLed in each phase of a move under load; another node finishes it.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Copying,
    CatchingUp,
    AfterFreeze,
    AfterSwitch,
    Cleanup,
}

impl Phase {
    fn failpoint(self) -> &'static str {
        match self {
            Phase::Copying => "copying",
            Phase::CatchingUp => "catching_up",
            Phase::AfterFreeze => "after_freeze",
            Phase::AfterSwitch => "after_switch",
            Phase::Cleanup => "cleanup",
        }
    }

    /// The state the moving shards show while the leader pauses there.
    fn shard_state(self) -> &'static str {
        match self {
            Phase::Copying => "copying",
            Phase::CatchingUp => "catching_up",
            Phase::AfterFreeze => "cutover",
            Phase::AfterSwitch | Phase::Cleanup => "switched",
        }
    }

    /// How many times the leader reaches the failpoint before it is killed: once per shard
    /// (the shards move in parallel), but cleaning goes shard after shard.
    fn pauses(self) -> usize {
        match self {
            Phase::Cleanup => 1,
            _ => MOVING.len(),
        }
    }

    fn final_job_state(self) -> &'static str {
        match self {
            Phase::Cleanup => "completed",
            _ => "switched",
        }
    }

    fn final_shard_state(self) -> &'static str {
        match self {
            Phase::Cleanup => "cleaned",
            _ => "switched",
        }
    }
}

async fn leader_killed(phase: Phase) {
    let t0 = Instant::now();
    let fp = phase.failpoint();
    let servers = tokio::task::spawn_blocking(shared_pg).await.unwrap();
    let dir = std::env::temp_dir().join(format!("mz-crash-{}-{fp}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let urls = [
        create_database(&servers[0]).await,
        create_database(&servers[1]).await,
        create_database(&servers[0]).await,
    ];
    let shards_json = dir.join("shards.json");
    let half = NUM_SHARDS / 2;
    std::fs::write(
        &shards_json,
        json!({"backends": [
            {"name": "db1", "database_url": urls[0], "shard_start": 0, "shard_end": half - 1},
            {"name": "db2", "database_url": urls[1], "shard_start": half, "shard_end": NUM_SHARDS - 1},
        ]})
        .to_string(),
    )
    .unwrap();
    let c = client();

    // Node a first (it creates the catalog and leads the mover), then the spare, then b.
    let mut a = Node::start(
        &c,
        "a",
        &shards_json,
        &format!("{fp}={FAILPOINT_PAUSE}"),
        &dir,
    )
    .await;
    wait_leader(&c, &a, "a", Duration::from_secs(30)).await;
    let (s, v) = post_json(
        &c,
        &a.url("/admin/v1/backends"),
        &json!({"name": "db3", "url": urls[2]}),
    )
    .await;
    assert_eq!(s, 201, "spare not registered: {v}");
    let b = Node::start(&c, "b", &shards_json, "", &dir).await;
    wait_leader(&c, &b, "a", Duration::from_secs(10)).await;

    // Cells before the move, then the load through b.
    let ctx = Arc::new(Ctx {
        c: client(),
        base: b.base.clone(),
        rec: Arc::default(),
        t0,
    });
    for shard in MOVING.iter().copied().chain(OTHERS) {
        let per = if MOVING.contains(&shard) {
            SEED_PER_SHARD
        } else {
            20
        };
        let cells: Vec<Value> = (0..per)
            .map(|i| new_cell(shard, "seed", i as i64, i as u64))
            .collect();
        for chunk in cells.chunks(100) {
            let (s, v) = post_json(&c, &b.url("/v1/cells/batch"), &json!({ "cells": chunk })).await;
            assert_eq!(s, 200, "seed batch: {v}");
            for (sent, r) in chunk.iter().zip(v["results"].as_array().unwrap()) {
                assert_eq!(r["status"], 201, "seed cell: {r}");
                ctx.ack(sent, r["cell"].clone());
            }
        }
    }
    let load = Load::start(ctx.clone());
    load.wait_acks(30).await;

    // The move, through a; wait until a pauses in the phase.
    let shards_spec = MOVING.map(|s| s.to_string()).join(",");
    let (s, job) = post_json(
        &c,
        &a.url("/admin/v1/moves"),
        &json!({"shards": shards_spec, "to": "db3", "parallel": 2, "max_rows_per_sec": 1000}),
    )
    .await;
    assert_eq!(s, 202, "move not started: {job}");
    let id = job["id"].as_i64().unwrap();
    // Cutovers run one at a time (the others wait, before their freeze), so right after a
    // freeze one shard is in cutover; every other phase is reached by both shards.
    let in_phase = |j: &Value| {
        let states = shard_states(j);
        let here = |(_, st): &(u64, String)| st == phase.shard_state();
        states.len() == MOVING.len()
            && if phase == Phase::AfterFreeze {
                states.iter().any(here)
            } else {
                states.iter().all(here)
            }
    };
    wait_job(
        &c,
        &b,
        id,
        Duration::from_secs(60),
        phase.shard_state(),
        in_phase,
    )
    .await;
    if phase == Phase::Cleanup {
        let (s, v) = post_json(
            &c,
            &b.url(&format!("/admin/v1/moves/{id}/complete")),
            &json!({}),
        )
        .await;
        assert_eq!(s, 202, "complete: {v}");
    }
    a.wait_log(&format!("failpoint reached ({fp})"), phase.pauses(), |l| {
        l.contains("failpoint reached") && l.contains(fp)
    })
    .await;
    let (_, job) = get_json(&c, &b.url(&format!("/admin/v1/moves/{id}"))).await;
    assert!(in_phase(&job), "left the phase during the pause: {job}");
    if phase == Phase::Copying {
        // Killed mid-copy: the first chunk (a tenth of a second at the rate) is on the target.
        for s in job["shards"].as_array().unwrap() {
            let (copied, total) = (s["rows_copied"].as_i64(), s["rows_total"].as_i64());
            assert!(
                copied.is_some_and(|c| c > 0) && copied < total,
                "not mid-copy: {job}"
            );
        }
    }
    // Some load inside the phase. (After the freeze, the writers' requests to the moving
    // shards are held until the map changes: they are in flight when the leader dies.)
    if phase != Phase::AfterFreeze {
        load.wait_acks(10).await;
    }

    // kill -9 the leader.
    let killed = Instant::now();
    a.kill();
    let killed_at = killed.duration_since(t0);
    wait_leader(&c, &b, "b", Duration::from_secs(30)).await;
    let takeover = killed.elapsed();
    let job = wait_job(
        &c,
        &b,
        id,
        Duration::from_secs(60),
        phase.final_job_state(),
        // (For a complete, the request is cleared once the sources are dropped.)
        |j| j["state"] == phase.final_job_state() && j["requested"].is_null(),
    )
    .await;
    let finished = killed.elapsed();
    for (shard, st) in shard_states(&job) {
        assert_eq!(st, phase.final_shard_state(), "shard {shard}: {job}");
    }
    // The load goes on a little at the new place, then stops; consumers read to the end.
    load.wait_acks(60).await;
    let consumed = load.stop().await;
    let rec = std::mem::take(&mut *lock(&ctx.rec));

    // What the clients saw: no error, except 503s the hold bound explains.
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for f in &rec.failures {
        *by_status
            .entry(f.status.map_or("transport".into(), |s| s.to_string()))
            .or_default() += 1;
    }
    let unexplained: Vec<&Failure> = rec
        .failures
        .iter()
        .filter(|f| {
            !(f.status == Some(503)
                && f.detail.contains("MOVE_HOLD_TIMEOUT")
                && f.latency + Duration::from_millis(500) >= HOLD_TIMEOUT)
        })
        .collect();
    eprintln!(
        "[{fp}] killed at {killed_at:.1?}; b led after {takeover:.1?}, move {} after {finished:.1?}; \
         {} writes acknowledged, {} reads checked; failures by status {by_status:?}; \
         slowest moving-shard request {:.1?}; pause_ms {:?}",
        phase.final_job_state(),
        rec.acked.len(),
        rec.reads,
        rec.slowest,
        job["shards"]
            .as_array()
            .map(|a| a.iter().map(|s| s["pause_ms"].clone()).collect::<Vec<_>>()),
    );
    for f in &rec.failures {
        eprintln!(
            "[{fp}]   at {:.2?}: {} -> {:?} after {:.2?}: {}",
            f.at, f.what, f.status, f.latency, f.detail
        );
    }
    assert!(
        unexplained.is_empty(),
        "[{fp}] the clients saw errors: {unexplained:#?}"
    );
    assert!(
        rec.mismatches.is_empty(),
        "[{fp}] answers contradict acknowledged writes: {:#?}",
        rec.mismatches
    );

    // I3: every acknowledged write, once, identical.
    let mut stored: HashMap<(String, String, i64), Vec<Value>> = HashMap::new();
    let mut scans: BTreeMap<u32, Vec<Value>> = BTreeMap::new();
    for shard in 0..NUM_SHARDS {
        let cells = scan(&c, &b, shard).await;
        for cell in &cells {
            assert_eq!(shard_of(cell), shard, "a cell on the wrong shard: {cell}");
            stored.entry(cell_key(cell)).or_default().push(cell.clone());
        }
        scans.insert(shard, cells);
    }
    for want in &rec.acked {
        match stored.get(&cell_key(want)).map(Vec::as_slice) {
            Some([got]) => assert_eq!(got, want, "[{fp}] a cell changed"),
            Some(many) => panic!("[{fp}] stored {} times: {want}", many.len()),
            None => panic!("[{fp}] lost: {want}"),
        }
    }
    let gets = futures::stream::iter(rec.acked.iter().filter(|w| MOVING.contains(&shard_of(w))))
        .map(|want| {
            let c = &c;
            let b = &b;
            async move {
                let (row, col, rk) = cell_key(want);
                let (s, got) = get_json(c, &b.url(&format!("/v1/cells/{row}/{col}/{rk}"))).await;
                (s, got, want)
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for (s, got, want) in gets {
        assert_eq!(s, 200, "[{fp}] GET of an acknowledged cell: {got}");
        assert_eq!(&got, want, "[{fp}] a cell changed");
    }

    // I4: each consumer saw exactly the shard's cells, in order, with their added_ids.
    for (shard, seen) in &consumed {
        let all = &scans[shard];
        let ids = |v: &[Value]| v.iter().map(|c| c["added_id"].as_i64()).collect::<Vec<_>>();
        assert_eq!(
            ids(seen),
            ids(all),
            "[{fp}] the consumer of shard {shard} saw other added_ids than the shard holds"
        );
        assert_eq!(
            seen, all,
            "[{fp}] the consumer of shard {shard} saw other cells"
        );
    }

    // The moved shards: sound, and where the map says; new writes continue the sequence.
    let (s, v) = post_json(
        &c,
        &b.url("/admin/v1/verify"),
        &json!({"shards": shards_spec}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ok"], true, "[{fp}] verify: {v}");
    let (_, map) = get_json(&c, &b.url("/admin/v1/shards")).await;
    for (i, &shard) in MOVING.iter().enumerate() {
        assert!(
            map["ranges"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["start"].as_u64().unwrap() <= shard as u64
                    && shard as u64 <= r["end"].as_u64().unwrap()
                    && r["backend"] == "db3"),
            "[{fp}] shard {shard} is not on db3: {map}"
        );
        let source = &urls[i];
        assert_eq!(
            shard_state_in(&urls[2], shard).await.as_deref(),
            Some("active"),
            "[{fp}] target of shard {shard}"
        );
        assert_eq!(
            cells_in(&urls[2], shard).await,
            Some(scans[&shard].len() as i64),
            "[{fp}] rows of shard {shard} on the target"
        );
        if phase == Phase::Cleanup {
            assert_eq!(
                shard_state_in(source, shard).await,
                None,
                "[{fp}] source kept"
            );
            assert_eq!(cells_in(source, shard).await, None, "[{fp}] source kept");
        } else {
            assert_eq!(
                shard_state_in(source, shard).await.as_deref(),
                Some("retired"),
                "[{fp}] source of shard {shard}"
            );
        }
        let last = scans[&shard].last().unwrap()["added_id"].as_i64().unwrap();
        let (s, v) = post_json(&c, &b.url("/v1/cells"), &new_cell(shard, "after", 1, 0)).await;
        assert_eq!(s, 201, "{v}");
        assert!(
            v["added_id"].as_i64().unwrap() > last,
            "[{fp}] shard {shard}: added_id {} after {last}",
            v["added_id"]
        );
    }
    wait_leader(&c, &b, "b", Duration::from_secs(1)).await;
    assert!(
        b.log_text().contains("this node leads the mover"),
        "b never logged its leadership"
    );
    drop(b);
    drop(a);
    // Kept when a test fails: the nodes' logs are there.
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("[{fp}] done in {:.1?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_while_copying() {
    leader_killed(Phase::Copying).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_while_catching_up() {
    leader_killed(Phase::CatchingUp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_right_after_the_freeze() {
    leader_killed(Phase::AfterFreeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_right_after_the_switch() {
    leader_killed(Phase::AfterSwitch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_during_cleanup() {
    leader_killed(Phase::Cleanup).await;
}
