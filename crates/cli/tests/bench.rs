//! `mezzanine bench http` as a user runs it, after the cluster changed under it: its direct
//! side (the baseline) routes by the catalog's map, and a run whose baseline failed says so
//! and exits non-zero instead of reporting a pass.

use std::path::Path;

use std::time::Duration;

use mezzanine_e2e::{even_map, sql, start_move, wait_job_state, TestServer};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mezzanine");

/// Runs `bench http` briefly against `srv` with `shards.json` at `path`.
async fn bench(srv: &TestServer, path: &Path, ops: &str) -> (bool, Value, String) {
    let out = tokio::process::Command::new(BIN)
        .args(["bench", "http", "--duration", "1s", "--concurrency", "2"])
        .args(["--batch-size", "10", "--seed-rows", "10", "--json"])
        .args(["--ops", ops, "--server", &srv.base])
        .env("SHARD_CONFIG_PATH", path)
        .env_remove("CATALOG_URL")
        .output()
        .await
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), report, stderr)
}

/// A server over two fresh databases with 8 shards, and its shards.json written out.
async fn cluster(dir: &Path) -> (TestServer, Vec<String>, std::path::PathBuf) {
    let urls = mezzanine_e2e::fresh_databases(2).await;
    let map = even_map(&urls, 8);
    let path = dir.join("shards.json");
    std::fs::write(&path, serde_json::to_vec(&map.to_file()).unwrap()).unwrap();
    let srv = TestServer::start(mezzanine_e2e::default_config(), map).await;
    (srv, urls, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_follows_the_catalog_after_a_move() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, _, path) = cluster(dir.path()).await;
    // Shards 0-3 leave db1: shards.json (which still names db1) is stale from now on.
    let id = start_move(&srv, json!({"shards": "0-3", "to": "db2"})).await;
    wait_job_state(&srv, id, "switched", Duration::from_secs(60)).await;

    let (ok, report, stderr) = bench(&srv, &path, "write,latest,partition").await;
    assert!(ok, "bench http failed:\n{stderr}");
    for op in report["ops"].as_array().unwrap() {
        assert!(op["direct"]["ops"].as_u64().unwrap() > 0, "{op}");
        assert_eq!(op["direct"]["errors"], 0, "{op}");
        assert_eq!(op["http"]["errors"], 0, "{op}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_baseline_failed_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, urls, path) = cluster(dir.path()).await;
    // Every write of the baseline's sessions fails on db1; the server's succeed.
    for url in &urls[..1] {
        sql(
            url,
            "CREATE FUNCTION no_bench() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF current_setting('application_name') = 'mezzanine-bench' THEN \
                 RAISE EXCEPTION 'the baseline is refused here'; END IF; RETURN NEW; END $$; \
             DO $$ DECLARE t text; BEGIN \
               FOR t IN SELECT tablename FROM pg_tables WHERE tablename LIKE 'cells\\_%' LOOP \
                 EXECUTE format('CREATE TRIGGER no_bench BEFORE INSERT ON %I \
                   FOR EACH ROW EXECUTE FUNCTION no_bench()', t); \
               END LOOP; END $$;",
        )
        .await;
    }
    let (ok, report, stderr) = bench(&srv, &path, "write").await;
    assert!(!ok, "a broken baseline must fail the run:\n{stderr}");
    assert!(
        stderr.contains("the baseline failed (write direct:")
            && stderr.contains("the baseline is refused here"),
        "{stderr}"
    );
    let write = &report["targets"][0];
    assert_eq!(write["name"], "write http/direct ops/s", "{report}");
    assert!(write["pass"].is_null(), "a void ratio passed: {write}");
    assert!(write["void"].is_string(), "{write}");
    srv.stop().await;
}
