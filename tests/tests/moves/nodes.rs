//! Several nodes (map propagation, one mover leader) and the catalog.

use super::*;

// ---------------------------------------------------------------------------------------------
// 9. Several nodes: map propagation and one mover leader
// ---------------------------------------------------------------------------------------------

async fn status(c: &reqwest::Client, srv: &TestServer) -> Value {
    let (s, v) = get_json(c, &srv.url("/admin/v1/status")).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// When the change recorded by the newest audit entry of `kind` matching `detail` was made.
async fn audited_at(
    c: &reqwest::Client,
    srv: &TestServer,
    kind: &str,
    detail: impl Fn(&Value) -> bool,
) -> chrono::DateTime<chrono::Utc> {
    let (_, audit) = get_json(c, &srv.url("/admin/v1/audit?limit=50")).await;
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == kind && detail(&e["detail"]))
        .unwrap_or_else(|| panic!("no {kind} in the audit log: {audit}"))
        .clone();
    chrono::DateTime::parse_from_rfc3339(entry["at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// Runs `change` (through node A) and returns when node B's status first showed a map
/// version above `before`.
async fn seen_by(
    b: &TestServer,
    before: i64,
    change: impl Future<Output = ()>,
) -> chrono::DateTime<chrono::Utc> {
    let url = b.url("/admin/v1/status");
    let poller = tokio::spawn(async move {
        let c = client();
        // A bound against a hang, not a performance figure: the fallback re-read is an hour
        // away, so only a NOTIFY can bring the change.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, v) = get_json(&c, &url).await;
            if v["map_version"].as_i64().unwrap_or(0) > before {
                return chrono::Utc::now();
            }
            assert!(Instant::now() < deadline, "node B never saw the change");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    change.await;
    poller.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn map_changes_reach_every_node_and_one_mover_node_leads() {
    // The --no-mover node starts first: it would win the leadership if it ran for it. Its
    // fallback re-read is an hour away, so every change below reaches it by NOTIFY alone.
    let mut b_config = no_mover();
    b_config.catalog_poll_interval = Duration::from_secs(3600);
    let (b, urls) = cluster_with(b_config).await;
    let a = node(default_config(), &urls).await;
    let c = client();
    eventually("a leader", LONG, || async {
        !status(&c, &b).await["leader"].is_null()
    })
    .await;
    let s = status(&c, &b).await;
    assert_eq!(s["leader"]["id"], a.state.node_id, "{s}");
    let mut lags: Vec<Duration> = Vec::new();
    let mut record =
        |what: &str, seen: chrono::DateTime<chrono::Utc>, at: chrono::DateTime<chrono::Utc>| {
            let lag = (seen - at).to_std().unwrap_or_default();
            eprintln!("propagation of {what}: {lag:?}");
            lags.push(lag);
        };

    // A move: its start and its switch, made by node A (the leader), seen by node B.
    fill(&a, 1, 10).await;
    let v = status(&c, &b).await["map_version"].as_i64().unwrap();
    let mut id = 0;
    let seen = seen_by(&b, v, async {
        id = start_move(&a, json!({"shards": "1", "to": "db3"})).await;
    })
    .await;
    record(
        "move start",
        seen,
        audited_at(&c, &a, "move_start", |d| d["shards"] == "1").await,
    );
    let v = status(&c, &b).await["map_version"].as_i64().unwrap();
    let seen = seen_by(&b, v, async {
        wait_job_state(&a, id, "switched", LONG).await;
    })
    .await;
    record(
        "switch",
        seen,
        audited_at(&c, &a, "switch", |d| d["move"] == id).await,
    );

    // Backends added and removed through node A.
    let spare = fresh_databases(1).await.remove(0);
    for round in 0..4 {
        let v = status(&c, &b).await["map_version"].as_i64().unwrap();
        let seen = seen_by(&b, v, async {
            let (s, r) = post_json(
                &c,
                &a.url("/admin/v1/backends"),
                &json!({"name": "db4", "url": spare}),
            )
            .await;
            assert_eq!(s, 201, "{r}");
        })
        .await;
        record(
            &format!("backend add #{round}"),
            seen,
            audited_at(&c, &a, "backend_add", |d| d["name"] == "db4").await,
        );
        let v = status(&c, &b).await["map_version"].as_i64().unwrap();
        let seen = seen_by(&b, v, async {
            let (s, _) = text_of(c.delete(a.url("/admin/v1/backends/db4"))).await;
            assert_eq!(s, 204);
        })
        .await;
        record(
            &format!("backend remove #{round}"),
            seen,
            audited_at(&c, &a, "backend_remove", |d| d["name"] == "db4").await,
        );
    }
    lags.sort();
    let (median, max) = (lags[lags.len() / 2], lags[lags.len() - 1]);
    eprintln!(
        "map propagation node A -> node B over {} changes: median {median:?}, max {max:?}",
        lags.len()
    );
    assert_eq!(
        status(&c, &a).await["map_version"],
        status(&c, &b).await["map_version"]
    );

    // One leader, never the --no-mover node; a third node may lead, and takes over.
    let third = node(default_config(), &urls).await;
    let ids = [
        a.state.node_id.clone(),
        b.state.node_id.clone(),
        third.state.node_id.clone(),
    ];
    let sa = status(&c, &a).await;
    assert_eq!(sa["leader"]["id"], ids[0], "{sa}");
    assert_eq!(sa["node"]["mover"], true);
    for srv in [&b, &third] {
        let s = status(&c, srv).await;
        assert_eq!(s["leader"], sa["leader"], "{s}");
    }
    assert_eq!(status(&c, &b).await["node"]["mover"], false);
    a.stop().await;
    let mut leaders = Vec::new();
    let deadline = Instant::now() + LONG;
    loop {
        let s = status(&c, &b).await;
        leaders.push(s["leader"].clone());
        if s["leader"]["id"] == ids[2] {
            break;
        }
        assert!(Instant::now() < deadline, "no new leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Until PostgreSQL has seen the old leader's session end, it may still be named.
    assert!(
        leaders
            .iter()
            .all(|l| l.is_null() || l["id"] == ids[0] || l["id"] == ids[2]),
        "{leaders:?}"
    );
    let s = status(&c, &third).await;
    assert_eq!(
        s["leader"]["addr"],
        third.base.trim_start_matches("http://")
    );
}

// ---------------------------------------------------------------------------------------------
// 10. The catalog
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_catalog_keeps_num_shards_exports_the_map_and_audits_changes() {
    let (srv, urls) = cluster().await;
    let c = client();

    // Another NUM_SHARDS over the same databases: refused, saying why.
    match TestServer::try_start(default_config(), even_map(&urls[..2], SHARDS * 2)).await {
        Ok(_) => panic!("a node with another NUM_SHARDS started"),
        Err(e) => {
            let m = e.to_string();
            assert!(
                m.contains(&format!("NUM_SHARDS={SHARDS}"))
                    && m.contains(&format!("NUM_SHARDS={}", SHARDS * 2)),
                "{m}"
            );
        }
    }

    fill(&srv, 5, 10).await;
    let id = start_move(&srv, json!({"shards": "5", "to": "db3"})).await;
    wait_job_state(&srv, id, "switched", LONG).await;

    // The export is a valid shards.json naming the new owner.
    let (s, file) = get_json(&c, &srv.url("/admin/v1/shards/export")).await;
    assert_eq!(s, 200, "{file}");
    let map = mezzanine_core::ShardMap::parse(&file.to_string(), SHARDS)
        .unwrap_or_else(|e| panic!("export is not a valid shards.json: {e}\n{file}"));
    for s in 0..SHARDS {
        let want = match s {
            5 => "db3",
            0..=3 => "db1",
            _ => "db2",
        };
        assert_eq!(map.owner_name(s), Some(want), "shard {s}: {file}");
    }
    let db3 = map.backends().iter().find(|b| b.name == "db3").unwrap();
    assert_eq!(db3.database_url, urls[2]);
    // A node started from the export serves the moved shard from its new place.
    let other = TestServer::start(no_mover(), map).await;
    let row = key_in_shard(5, SHARDS);
    write_one(&c, &other, &row, "via_export", 1).await;
    assert!(holds_row(&urls[2], 5, &row).await);

    // The audit log has the backend's registration and the move's switch.
    let (s, audit) = get_json(&c, &srv.url("/admin/v1/audit")).await;
    assert_eq!(s, 200, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "backend_add" && e["detail"]["name"] == "db3"),
        "{audit}"
    );
    assert!(
        entries.iter().any(|e| e["kind"] == "switch"
            && e["detail"]["move"] == id
            && e["detail"]["shard"] == 5
            && e["detail"]["from"] == "db2"
            && e["detail"]["to"] == "db3"),
        "{audit}"
    );
    assert!(
        entries
            .iter()
            .all(|e| e["node"].is_string() && e["at"].is_string()),
        "{audit}"
    );
}
