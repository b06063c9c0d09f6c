//! go-mezzanine compatibility: adopting databases laid out by go-mezzanine, shards.json
//! validation at start, the NUM_SHARDS guard, warm starts.

use mezzanine_core::shard_for_row_key;
use mezzanine_e2e::*;
use mezzanine_server::Server;
use serde_json::json;
use uuid::Uuid;

/// go-mezzanine's table, with index names of its own (mezzanine changes none; it adds only its
/// stream index).
fn go_ddl(shard: u32) -> String {
    let t = format!("cells_{shard:04}");
    format!(
        "CREATE TABLE {t} (added_id BIGSERIAL PRIMARY KEY, row_key UUID NOT NULL, column_name TEXT NOT NULL, \
         ref_key BIGINT NOT NULL, body JSONB NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now(), \
         UNIQUE (row_key, column_name, ref_key));
         CREATE INDEX idx_{t}_lookup ON {t} (row_key, column_name, ref_key DESC);
         CREATE INDEX idx_{t}_col_added ON {t} (column_name, added_id);
         CREATE INDEX idx_{t}_col_created ON {t} (column_name, created_at);"
    )
}

async fn table_shapes(url: &str) -> String {
    let c = connect(url).await;
    let cols = c
        .query(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, coalesce(column_default, '') \
             FROM information_schema.columns WHERE table_name LIKE 'cells\\_%' ORDER BY 1, ordinal_position",
            &[],
        )
        .await
        .unwrap();
    let idx = c.query("SELECT indexname::text, indexdef FROM pg_indexes WHERE tablename LIKE 'cells\\_%' ORDER BY 1", &[]).await.unwrap();
    let cons = c
        .query("SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid::regclass::text LIKE 'cells\\_%' ORDER BY 1", &[])
        .await
        .unwrap();
    let mut out = String::new();
    for r in cols {
        out += &format!(
            "{}.{} {} {} {}\n",
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2),
            r.get::<_, String>(3),
            r.get::<_, String>(4)
        );
    }
    for r in idx.iter().chain(&cons) {
        out += &format!("{} {}\n", r.get::<_, String>(0), r.get::<_, String>(1));
    }
    out
}

#[tokio::test]
async fn serves_databases_laid_out_by_go_mezzanine_and_leaves_their_shape() {
    const N: u32 = 8;
    let urls = fresh_databases(2).await;
    let map = even_map(&urls, N); // db1: 0-3, db2: 4-7
    for (b, url) in urls.iter().enumerate() {
        let ddl: String = map.shards_of(b).map(go_ddl).collect();
        sql(url, &ddl).await;
    }
    // Existing cells, inserted with plain SQL as go-mezzanine would have.
    let mut existing = Vec::new();
    for i in 0..40 {
        let row = Uuid::new_v4();
        let shard = shard_for_row_key(&row, N);
        let url = &urls[map.owner(shard).unwrap()];
        let c = connect(url).await;
        let body = json!({"i": i, "nested": {"list": [1, 2, 3]}, "s": "héllo"});
        let r = c
            .query_one(
                &format!("INSERT INTO cells_{shard:04} (row_key, column_name, ref_key, body, created_at) VALUES ($1, 'legacy', $2, $3, '2023-05-01T10:00:00Z'::timestamptz + make_interval(secs => $4)) RETURNING added_id"),
                &[&row, &(i as i64), &body, &(i as f64)],
            )
            .await
            .unwrap();
        existing.push((row, i as i64, body, r.get::<_, i64>(0)));
    }
    let before: Vec<String> = futures::future::join_all(urls.iter().map(|u| table_shapes(u))).await;

    let srv = TestServer::start(default_config(), map.clone()).await;
    let c = client();
    for (row, ref_key, body, added_id) in &existing {
        let (s, v) = get_json(&c, &srv.url(&format!("/v1/cells/{row}/legacy/{ref_key}"))).await;
        assert_eq!(s, 200, "{row}");
        assert_eq!(&v["body"], body);
        assert_eq!(v["added_id"].as_i64(), Some(*added_id));
        assert!(
            v["created_at"]
                .as_str()
                .unwrap()
                .starts_with("2023-05-01T10:00:"),
            "{v}"
        );
        let (s, latest) = get_json(&c, &srv.url(&format!("/v1/cells/{row}/legacy"))).await;
        assert_eq!((s, latest), (200, v));
    }
    // New writes continue each shard's sequence.
    let (row, _, _, _) = &existing[0];
    let (s, v) = post_json(
        &c,
        &srv.url("/v1/cells"),
        &cell(row, "legacy", 1000, json!("new")),
    )
    .await;
    assert_eq!(s, 201);
    let shard = shard_for_row_key(row, N);
    let max_before = existing
        .iter()
        .filter(|e| shard_for_row_key(&e.0, N) == shard)
        .map(|e| e.3)
        .max()
        .unwrap();
    assert!(v["added_id"].as_i64().unwrap() > max_before);

    // The one addition: the stream index on (created_at, added_id), built online in the
    // background, one per table, under a name go-mezzanine does not use.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    for (b, url) in urls.iter().enumerate() {
        let db = connect(url).await;
        loop {
            let built: i64 = db
                .query_one(
                    "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                     WHERE c.relname ~ '^idx_cells_[0-9]{4}_created_added$' AND i.indisvalid \
                       AND pg_get_indexdef(i.indexrelid) LIKE '%USING btree (created_at, added_id)'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if built == map.shards_of(b).count() as i64 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "stream indexes not built on {url}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let after: Vec<String> = futures::future::join_all(urls.iter().map(|u| table_shapes(u))).await;
    let without_stream_index = |shapes: &String| -> String {
        shapes
            .lines()
            .filter(|l| !(l.starts_with("idx_cells_") && l.contains("_created_added ")))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    assert_eq!(
        before,
        after.iter().map(without_stream_index).collect::<Vec<_>>(),
        "the cells tables' shape must not change but for the stream index"
    );
}

#[tokio::test]
async fn created_tables_have_the_described_shape() {
    let (_srv, urls) = TestServer::fresh(1, 2).await;
    let shapes = table_shapes(&urls[0]).await;
    for expected in [
        "cells_0000.added_id bigint NO nextval('cells_0000_added_id_seq'::regclass)",
        "cells_0000.row_key uuid NO",
        "cells_0000.column_name text NO",
        "cells_0000.ref_key bigint NO",
        "cells_0000.body jsonb NO",
        "cells_0000.created_at timestamp with time zone NO now()",
        "ON public.cells_0000 USING btree (row_key, column_name, ref_key DESC)",
        "ON public.cells_0000 USING btree (column_name, added_id)",
        "ON public.cells_0000 USING btree (column_name, created_at)",
        "idx_cells_0000_created_added CREATE INDEX idx_cells_0000_created_added ON public.cells_0000 USING btree (created_at, added_id)",
        "UNIQUE (row_key, column_name, ref_key)",
        "PRIMARY KEY (added_id)",
    ] {
        assert!(
            shapes.contains(expected),
            "missing {expected:?} in\n{shapes}"
        );
    }
    assert!(shapes.contains("cells_0001."), "{shapes}");
}

#[tokio::test]
async fn invalid_shards_json_is_refused_naming_backend_and_shard() {
    let urls = fresh_databases(2).await;
    let dir = std::env::temp_dir().join(format!("mz-shards-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shards.json");
    let cases = [
        (
            json!({"backends": [{"name": "db1", "database_url": urls[0], "shard_start": 0, "shard_end": 40}, {"name": "db2", "database_url": urls[1], "shard_start": 32, "shard_end": 63}]}),
            "shard 32 is claimed by both backend \"db1\" and backend \"db2\"",
        ),
        (
            json!({"backends": [{"name": "db1", "database_url": urls[0], "shard_start": 0, "shard_end": 30}, {"name": "db2", "database_url": urls[1], "shard_start": 32, "shard_end": 63}]}),
            "shard 31 is not owned by any backend",
        ),
        (
            json!({"backends": [{"name": "db1", "database_url": urls[0], "shard_start": 0, "shard_end": 64}]}),
            "shards.json covers shards 0-64 (65 shards), but NUM_SHARDS is 64: set NUM_SHARDS=65",
        ),
        (
            json!({"backends": [{"name": "db1", "database_url": urls[0], "shard_start": 0}]}),
            "missing field `shard_end`",
        ),
    ];
    for (file, message) in cases {
        std::fs::write(&path, file.to_string()).unwrap();
        let mut cfg = default_config();
        cfg.shard_config_path = path.clone();
        cfg.num_shards = 64;
        let err = Server::start(cfg).await.err().expect("must refuse");
        assert!(
            err.to_string().contains(message),
            "{err} should say {message}"
        );
    }
    let mut cfg = default_config();
    cfg.shard_config_path = dir.join("absent.json");
    let err = Server::start(cfg).await.err().expect("must refuse");
    assert!(err.to_string().contains("absent.json"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn another_num_shards_is_refused_saying_why() {
    let urls = fresh_databases(1).await;
    let srv = TestServer::start(default_config(), even_map(&urls, 8)).await;
    srv.stop().await;
    let err = TestServer::try_start(default_config(), even_map(&urls, 16))
        .await
        .err()
        .expect("must refuse");
    let msg = err.to_string();
    assert!(
        msg.contains("NUM_SHARDS=8") && msg.contains("NUM_SHARDS=16"),
        "{msg}"
    );
    // The original count still starts, warm.
    let srv = TestServer::start(default_config(), even_map(&urls, 8)).await;
    srv.stop().await;
}

#[tokio::test]
async fn second_start_is_warm_and_keeps_data() {
    let urls = fresh_databases(2).await;
    let map = even_map(&urls, 32);
    let backend = mezzanine_storage::Backend::new("db1", &urls[0], Default::default()).unwrap();
    let shards: Vec<u32> = map.shards_of(0).collect();
    let cold = mezzanine_storage::schema::prepare_backend(&backend, 32, &shards, true)
        .await
        .unwrap();
    assert!(!cold.warm);
    assert_eq!(cold.created_tables, shards.len());
    let warm = mezzanine_storage::schema::prepare_backend(&backend, 32, &shards, true)
        .await
        .unwrap();
    assert!(warm.warm, "{warm:?}");
    assert_eq!(warm.created_tables, 0);

    let srv = TestServer::start(default_config(), map.clone()).await;
    let row = Uuid::new_v4();
    let (s, _) = post_json(
        &client(),
        &srv.url("/v1/cells"),
        &cell(&row, "c", 1, json!(1)),
    )
    .await;
    assert_eq!(s, 201);
    srv.stop().await;
    let srv = TestServer::start(default_config(), map).await;
    let (s, v) = get_json(&client(), &srv.url(&format!("/v1/cells/{row}/c/1"))).await;
    assert_eq!((s, v["body"].clone()), (200, json!(1)));
}
