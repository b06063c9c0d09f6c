//! What `serve` and `dev` write on stderr when it is not a terminal (a pipe, a file, a log
//! collector): no ANSI colour codes, and no PostgreSQL notices at the default level, while
//! `LOG_LEVEL=debug` still shows them, without tokio-postgres's source paths. The real
//! `mezzanine` binary, with real PostgreSQL servers where a database is needed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mezzanine_e2e::{create_database, free_port, shared_pg, sql};

const BIN: &str = env!("CARGO_BIN_EXE_mezzanine");
const NUM_SHARDS: u32 = 4;

/// Runs the binary with `args` and `env` (no `NO_COLOR`: colours are up to the terminal test)
/// and returns its exit code and stderr, read through a pipe.
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("LOG_LEVEL")
        .env_remove("LOG_FORMAT")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn no_colour_codes_in_logs_written_to_a_pipe() {
    // serve in text format, failing at once (no shards.json): its log lines are in the pipe.
    let (code, stderr) = run(
        &["serve"],
        &[
            ("LOG_FORMAT", "text"),
            ("SHARD_CONFIG_PATH", "/nonexistent/shards.json"),
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(" INFO "), "no log line: {stderr}");
    assert!(!stderr.contains("\x1b["), "ANSI codes in: {stderr:?}");
    // dev logs in text format by default; it fails before starting any server here.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cluster");
    let (code, stderr) = run(
        &[
            "dev",
            "--backends",
            "0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(" INFO "), "no log line: {stderr}");
    assert!(!stderr.contains("\x1b["), "ANSI codes in: {stderr:?}");
}

/// Runs `mezzanine serve` over `shards_json` at `level` until it serves, stops it with
/// SIGTERM, and returns everything it wrote on stderr (JSON lines, to a file).
fn serve_once(dir: &Path, shards_json: &Path, level: &str) -> String {
    let log = dir.join(format!("serve-{level}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .env_remove("NO_COLOR")
        .env("SHARD_CONFIG_PATH", shards_json)
        .env("NUM_SHARDS", NUM_SHARDS.to_string())
        .env("HOST", "127.0.0.1")
        .env("PORT", free_port().to_string())
        .env("LOG_LEVEL", level)
        .env("LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("\"serving\"") {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("serve ended ({status}) before serving:\n{text}");
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("serve did not serve within 60 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        status.success(),
        "serve did not stop cleanly ({status}):\n{text}"
    );
    text
}

/// A catalog of an older layout is migrated at start-up by DDL whose `IF NOT EXISTS` makes
/// PostgreSQL send a notice per existing object. At the default level none of them is
/// logged; at debug they are, as debug lines of target `postgres`, without source paths.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_notices_are_debug_lines() {
    let db = create_database(&shared_pg()[0]).await;
    let dir = tempfile::tempdir().unwrap();
    let shards_json = dir.path().join("shards.json");
    std::fs::write(
        &shards_json,
        serde_json::json!({"backends": [{"name": "db1", "database_url": db,
            "shard_start": 0, "shard_end": NUM_SHARDS - 1}]})
        .to_string(),
    )
    .unwrap();
    let older_layout = "UPDATE mezzanine.meta SET schema_version = 1";

    let first = serve_once(dir.path(), &shards_json, "info");
    assert!(!first.contains("NOTICE"), "{first}");

    sql(&db, older_layout).await;
    let info = serve_once(dir.path(), &shards_json, "info");
    assert!(info.contains("\"serving\""), "{info}");
    assert!(
        !info.contains("NOTICE"),
        "a PostgreSQL notice at the default level:\n{info}"
    );

    sql(&db, older_layout).await;
    let debug = serve_once(dir.path(), &shards_json, "debug");
    let notices: Vec<serde_json::Value> = debug
        .lines()
        .filter(|l| l.contains("NOTICE"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        notices
            .iter()
            .any(|n| n["message"] == "NOTICE: relation \"meta\" already exists, skipping"),
        "no notice at debug:\n{debug}"
    );
    for n in &notices {
        assert_eq!(n["level"], "DEBUG", "{n}");
        assert_eq!(n["target"], "postgres", "{n}");
        assert!(!n.to_string().contains("connection.rs"), "{n}");
    }
}
