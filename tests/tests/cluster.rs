//! One cluster (DESIGN §4): a cluster id made with the catalog and recorded in every backend;
//! a node finds the catalog from its backends whatever the order of shards.json (an exported
//! map fed back works), never seeds or uses a catalog of another cluster, and the backend that
//! holds the catalog cannot be removed or drained.

use std::time::Duration;

use mezzanine_core::ShardMap;
use mezzanine_e2e::*;
use serde_json::{json, Value};

const N: u32 = 8;

/// A map over `backends` (name, url), shards split evenly in this order.
fn named_map(backends: &[(&str, &str)]) -> ShardMap {
    let named: Vec<(String, String)> = backends
        .iter()
        .map(|(n, u)| (n.to_string(), u.to_string()))
        .collect();
    ShardMap::even_split(&named, N).unwrap()
}

async fn status(srv: &TestServer) -> Value {
    wait_admin(
        srv,
        "/admin/v1/status",
        Duration::from_secs(20),
        Duration::from_millis(50),
        |s| !s["leader"].is_null(),
    )
    .await
}

/// The cluster id a backend's database records (`mezzanine_schema`), and its catalog URL.
async fn recorded(url: &str) -> (Option<String>, Option<String>) {
    let c = connect(url).await;
    let r = c
        .query_one(
            "SELECT cluster_id::text, catalog_url FROM mezzanine_schema",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// Whether a database holds a catalog (the schema `mezzanine`).
async fn holds_catalog(url: &str) -> bool {
    let c = connect(url).await;
    let r = c
        .query_one("SELECT to_regclass('mezzanine.meta') IS NOT NULL", &[])
        .await
        .unwrap();
    r.get(0)
}

/// The scenario: db1's shards moved to spare1, so `shards export` lists spare1 first;
/// a node started from that file without CATALOG_URL uses the same catalog (same cluster, map
/// version and leader) and never seeds a second one in spare1's database.
#[tokio::test]
async fn an_exported_map_fed_back_finds_the_same_catalog() {
    let urls = fresh_databases(3).await;
    let a = TestServer::start(
        default_config(),
        named_map(&[("db1", &urls[0]), ("db2", &urls[1])]),
    )
    .await;
    let c = client();
    let (s, p) = post_json(
        &c,
        &a.url("/admin/v1/backends"),
        &json!({"name": "spare1", "url": urls[2]}),
    )
    .await;
    assert_eq!(s, 201, "{p}");
    let id = start_move(&a, json!({"shards": "0-3", "to": "spare1"})).await;
    wait_job_state(&a, id, "switched", Duration::from_secs(60)).await;

    // What `mezzanine shards export > shards.json` writes.
    let (s, exported) = get_json(&c, &a.url("/admin/v1/shards/export")).await;
    assert_eq!(s, 200, "{exported}");
    assert_eq!(exported["backends"][0]["name"], "spare1", "{exported}");
    let dir = std::env::temp_dir().join(format!("mezz-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shards.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&exported).unwrap()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let map = ShardMap::parse(&text, N).unwrap();

    let before = status(&a).await;
    let b = TestServer::start(default_config(), map).await; // no CATALOG_URL
    let after = status(&b).await;
    assert!(before["cluster_id"].is_string(), "{before}");
    assert_eq!(after["cluster_id"], before["cluster_id"], "{after}");
    assert_eq!(after["map_version"], before["map_version"], "{after}");
    assert_eq!(after["leader"]["id"], before["leader"]["id"], "{after}");
    assert!(
        !holds_catalog(&urls[2]).await,
        "a second catalog was seeded in spare1's database"
    );
    // Every backend records the cluster and where its catalog is (db1's database).
    for url in &urls {
        let (id, at) = recorded(url).await;
        assert_eq!(id.as_deref(), before["cluster_id"].as_str(), "{url}");
        assert_eq!(at.as_deref(), Some(urls[0].as_str()), "{url}");
    }
    // Both nodes serve the moved shards.
    let row = key_in_shard(1, N);
    let (s, p) = post_json(
        &c,
        &b.url("/v1/cells"),
        &json!({"row_key": row, "column_name": "c", "ref_key": 1, "body": {"x": 1}}),
    )
    .await;
    assert!(s == 200 || s == 201, "{p}");
    let (s, p) = get_json(&c, &a.url(&format!("/v1/cells/{row}/c/1"))).await;
    assert_eq!(s, 200, "{p}");
    b.stop().await;
    a.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A node whose shards.json names backends of two clusters refuses to start, naming both
/// ids; `backend add` of another cluster's backend is refused, naming both ids.
#[tokio::test]
async fn backends_of_two_clusters_are_refused() {
    let urls = fresh_databases(2).await;
    let one = TestServer::start(default_config(), named_map(&[("a1", &urls[0])])).await;
    let two = TestServer::start(default_config(), named_map(&[("b1", &urls[1])])).await;
    let id1 = status(&one).await["cluster_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id2 = status(&two).await["cluster_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(id1, id2);

    for order in [
        [("a1", &urls[0]), ("b1", &urls[1])],
        [("b1", &urls[1]), ("a1", &urls[0])],
    ] {
        let map = named_map(&[(order[0].0, order[0].1), (order[1].0, order[1].1)]);
        let err = match TestServer::try_start(default_config(), map).await {
            Ok(_) => panic!("a node over two clusters' backends started"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&id1) && err.contains(&id2), "{err}");
    }

    let (s, p) = post_json(
        &client(),
        &one.url("/admin/v1/backends"),
        &json!({"name": "b1", "url": urls[1]}),
    )
    .await;
    assert!(s == 409 || s == 422, "{s} {p}");
    let text = p.to_string();
    assert!(text.contains(&id1) && text.contains(&id2), "{p}");
    let (_, list) = get_json(&client(), &one.url("/admin/v1/backends")).await;
    assert_eq!(list["backends"].as_array().unwrap().len(), 1, "{list}");
    one.stop().await;
    two.stop().await;
}

/// CATALOG_URL of another cluster's catalog is refused, naming both ids; so is a CATALOG_URL
/// where no catalog is yet, while the backends belong to a cluster (it would seed a second).
#[tokio::test]
async fn a_catalog_of_another_cluster_is_refused() {
    let urls = fresh_databases(3).await;
    let one = TestServer::start(default_config(), named_map(&[("a1", &urls[0])])).await;
    let two = TestServer::start(default_config(), named_map(&[("b1", &urls[1])])).await;
    let id1 = status(&one).await["cluster_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id2 = status(&two).await["cluster_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut config = default_config();
    config.catalog_url = Some(urls[1].clone());
    let err = match TestServer::try_start(config, named_map(&[("a1", &urls[0])])).await {
        Ok(_) => panic!("a node used another cluster's catalog"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&id1) && err.contains(&id2), "{err}");

    let mut config = default_config();
    config.catalog_url = Some(urls[2].clone());
    let err = match TestServer::try_start(config, named_map(&[("a1", &urls[0])])).await {
        Ok(_) => panic!("a node seeded a second catalog for cluster {id1}"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&id1), "{err}");
    assert!(
        !holds_catalog(&urls[2]).await,
        "a second catalog was seeded"
    );
    one.stop().await;
    two.stop().await;
}

/// The backend whose database holds the catalog cannot be removed or drained (409, saying
/// how to move the catalog); with the catalog elsewhere (CATALOG_URL), it can be drained.
#[tokio::test]
async fn the_catalogs_home_is_neither_removed_nor_drained() {
    let urls = fresh_databases(2).await;
    let a = TestServer::start(
        default_config(),
        named_map(&[("db1", &urls[0]), ("db2", &urls[1])]),
    )
    .await;
    let c = client();
    // db1 owns shards, but the catalog is checked first.
    let resp = c
        .delete(a.url("/admin/v1/backends/db1"))
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    let p: Value = resp.json().await.unwrap();
    assert_eq!(s, 409, "{p}");
    assert!(p.to_string().contains("CATALOG_URL"), "{p}");
    let (s, p) = post_json(&c, &a.url("/admin/v1/backends/db1/drain"), &json!({})).await;
    assert_eq!(s, 409, "{p}");
    assert!(p.to_string().contains("holds the catalog"), "{p}");
    let resp = c
        .patch(a.url("/admin/v1/backends/db1"))
        .json(&json!({"draining": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    let (_, list) = get_json(&c, &a.url("/admin/v1/backends")).await;
    assert!(
        list["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["draining"] == false),
        "{list}"
    );
    // Emptied of its shards, db1 still holds the catalog: its removal is refused.
    let id = start_move(&a, json!({"shards": "0-3", "to": "db2"})).await;
    wait_job_state(&a, id, "switched", Duration::from_secs(60)).await;
    let (s, p) = post_json(
        &c,
        &a.url(&format!("/admin/v1/moves/{id}/complete")),
        &json!(null),
    )
    .await;
    assert_eq!(s, 202, "{p}");
    wait_job_state(&a, id, "completed", Duration::from_secs(60)).await;
    let resp = c
        .delete(a.url("/admin/v1/backends/db1"))
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    let p: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(s, 409, "{p}");
    assert!(p.to_string().contains("holds the catalog"), "{p}");
    let (_, list) = get_json(&c, &a.url("/admin/v1/backends")).await;
    assert_eq!(list["backends"].as_array().unwrap().len(), 2, "{list}");
    a.stop().await;

    // With the catalog in a database of its own (CATALOG_URL), db1 can be drained.
    let urls = fresh_databases(3).await;
    let mut config = default_config();
    config.catalog_url = Some(urls[2].clone());
    let b = TestServer::start(config, named_map(&[("db1", &urls[0]), ("db2", &urls[1])])).await;
    let (s, p) = post_json(&c, &b.url("/admin/v1/backends/db1/drain"), &json!({})).await;
    assert!(s == 200 || s == 202, "{p}");
    b.stop().await;
}

/// go-mezzanine's databases (cells tables only) are adopted and a catalog seeded in the first
/// backend as before; every backend records the new cluster; a node given the backends in
/// the other order finds that catalog rather than seeding one in its first backend.
#[tokio::test]
async fn go_mezzanine_databases_are_adopted_and_seeded() {
    let urls = fresh_databases(2).await;
    let map = named_map(&[("db1", &urls[0]), ("db2", &urls[1])]);
    for (b, url) in urls.iter().enumerate() {
        let ddl: String = map
            .shards_of(b)
            .map(|s| {
                format!(
                    "CREATE TABLE cells_{s:04} (added_id BIGSERIAL PRIMARY KEY, row_key UUID NOT NULL, \
                     column_name TEXT NOT NULL, ref_key BIGINT NOT NULL, body JSONB NOT NULL, \
                     created_at TIMESTAMPTZ NOT NULL DEFAULT now(), UNIQUE (row_key, column_name, ref_key));"
                )
            })
            .collect();
        sql(url, &ddl).await;
    }
    let a = TestServer::start(default_config(), map).await;
    let st = status(&a).await;
    let id = st["cluster_id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{st}");
    assert!(holds_catalog(&urls[0]).await);
    for url in &urls {
        assert_eq!(
            recorded(url).await,
            (Some(id.clone()), Some(urls[0].clone()))
        );
    }
    let reversed = named_map(&[("db2", &urls[1]), ("db1", &urls[0])]);
    let b = TestServer::start(default_config(), reversed).await;
    let st_b = status(&b).await;
    assert_eq!(st_b["cluster_id"], st["cluster_id"], "{st_b}");
    assert_eq!(st_b["leader"]["id"], st["leader"]["id"], "{st_b}");
    assert!(!holds_catalog(&urls[1]).await, "a second catalog in db2");
    b.stop().await;
    a.stop().await;
}

/// Upgrading a cluster made before cluster ids, whose catalog is not in the first backend of
/// the shards.json a node is given (an export after a move): the node finds the catalog in
/// the backend that holds it, gives it a cluster id and records it in every backend, and
/// seeds nothing.
#[tokio::test]
async fn a_catalog_made_before_cluster_ids_is_found_and_upgraded() {
    let urls = fresh_databases(2).await;
    let a = TestServer::start(
        default_config(),
        named_map(&[("db2", &urls[1]), ("db1", &urls[0])]),
    )
    .await;
    let version = status(&a).await["map_version"].clone();
    a.stop().await;
    // As the previous version left them: no cluster id anywhere.
    sql(
        &urls[1],
        "ALTER TABLE mezzanine.meta DROP COLUMN cluster_id; \
         UPDATE mezzanine.meta SET schema_version = 2;",
    )
    .await;
    for url in &urls {
        sql(
            url,
            "ALTER TABLE mezzanine_schema DROP COLUMN cluster_id, DROP COLUMN catalog_url; \
             UPDATE mezzanine_schema SET version = 1;",
        )
        .await;
    }
    let b = TestServer::start(
        default_config(),
        named_map(&[("db1", &urls[0]), ("db2", &urls[1])]),
    )
    .await;
    let st = status(&b).await;
    assert_eq!(st["map_version"], version, "{st}");
    let id = st["cluster_id"].as_str().unwrap().to_owned();
    assert!(!holds_catalog(&urls[0]).await, "a second catalog in db1");
    for url in &urls {
        assert_eq!(
            recorded(url).await,
            (Some(id.clone()), Some(urls[1].clone()))
        );
    }
    b.stop().await;
}

/// The supported way to move the catalog out of a backend (what the 409 of a remove or drain
/// says): stop the nodes, copy the schema `mezzanine` with pg_dump into a database of its own,
/// drop it from the backend, start with CATALOG_URL. The cluster stays the same, every
/// backend records the new location (a node without CATALOG_URL finds it), and the old home
/// can then be drained.
#[tokio::test]
async fn the_catalog_moves_to_a_database_of_its_own() {
    let urls = fresh_databases(3).await;
    let map = named_map(&[("db1", &urls[0]), ("db2", &urls[1])]);
    let a = TestServer::start(default_config(), map.clone()).await;
    let before = status(&a).await;
    a.stop().await;

    let (from, to) = (urls[0].clone(), urls[2].clone());
    let copied = tokio::task::spawn_blocking(move || {
        let install = mezzanine_pgcluster::PgInstall::locate().unwrap();
        let dump = std::process::Command::new(install.bin("pg_dump"))
            .args(["--schema=mezzanine", "--no-owner", &from])
            .output()
            .unwrap();
        assert!(
            dump.status.success(),
            "{}",
            String::from_utf8_lossy(&dump.stderr)
        );
        let mut psql = std::process::Command::new(install.bin("psql"))
            .args(["-q", "-v", "ON_ERROR_STOP=1", &to])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        psql.stdin.take().unwrap().write_all(&dump.stdout).unwrap();
        psql.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(copied.success());
    sql(&urls[0], "DROP SCHEMA mezzanine CASCADE").await;

    let mut config = default_config();
    config.catalog_url = Some(urls[2].clone());
    let b = TestServer::start(config, map.clone()).await;
    let after = status(&b).await;
    assert_eq!(after["cluster_id"], before["cluster_id"], "{after}");
    assert_eq!(after["map_version"], before["map_version"], "{after}");
    for url in &urls[..2] {
        let (id, at) = recorded(url).await;
        assert_eq!(id.as_deref(), before["cluster_id"].as_str());
        assert_eq!(at.as_deref(), Some(urls[2].as_str()));
    }
    // A node without CATALOG_URL finds it there.
    let c2 = TestServer::start(default_config(), map).await;
    assert_eq!(status(&c2).await["cluster_id"], before["cluster_id"]);
    assert!(!holds_catalog(&urls[0]).await);
    let (s, p) = post_json(
        &client(),
        &b.url("/admin/v1/backends/db1/drain"),
        &json!({}),
    )
    .await;
    assert!(s == 200 || s == 202, "{p}");
    c2.stop().await;
    b.stop().await;
}
