//! What a user reads when something is wrong, from the real `mezzanine` binary: PostgreSQL's
//! own cause (a wrong password, a missing database, a refused port) with the address, said
//! once, in the user's notation, naming nothing the user never configured.

use std::path::Path;
use std::process::{Command, Output};

use mezzanine_e2e::{connect, create_database, free_port, shared_pg, TestServer};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_mezzanine");

/// Runs `mezzanine serve` over a one-backend shards.json naming `url`, to its end.
fn serve_over(dir: &Path, url: &str, num_shards: u32, extra: &[(&str, &str)]) -> Output {
    let path = dir.join("shards.json");
    let file = json!({"backends": [{"name": "db1", "database_url": url, "shard_start": 0, "shard_end": 63}]});
    std::fs::write(&path, file.to_string()).unwrap();
    Command::new(BIN)
        .arg("serve")
        .env("SHARD_CONFIG_PATH", &path)
        .env("NUM_SHARDS", num_shards.to_string())
        .env("PORT", free_port().to_string())
        .env("HOST", "127.0.0.1")
        .env("LOG_FORMAT", "text")
        .env("DB_QUERY_TIMEOUT", "3s")
        .envs(extra.iter().copied())
        .output()
        .unwrap()
}

/// The one line the binary ends with on a fatal error.
fn fatal_line(out: &Output) -> String {
    assert!(!out.status.success(), "must refuse to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let fatal: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("mezzanine: "))
        .collect();
    assert_eq!(fatal.len(), 1, "one fatal line:\n{stderr}");
    fatal[0].to_owned()
}

/// `line` says `cause` exactly once, and nothing of the driver's or Rust's own notation.
fn says_once(line: &str, cause: &str) {
    assert_eq!(line.matches(cause).count(), 1, "{cause:?} once in: {line}");
    for never in ["db error", "backend catalog", "..=", "os error"] {
        assert!(!line.contains(never), "{never:?} in: {line}");
    }
}

#[tokio::test]
async fn serve_says_why_it_cannot_use_a_database() {
    let server = &shared_pg()[0];
    let url = create_database(server).await;
    let port = server.port();
    // A role that must give its password (the test servers trust everyone else).
    let hba = server.data_dir().join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    if !text.contains("mz_pw") {
        std::fs::write(
            &hba,
            format!("host all mz_pw 127.0.0.1/32 scram-sha-256\n{text}"),
        )
        .unwrap();
    }
    let admin = connect(&url).await;
    admin
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE mz_pw LOGIN PASSWORD 'right'; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$; SELECT pg_reload_conf()",
        )
        .await
        .unwrap();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let closed = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            format!("postgres://mz_pw:wrong@127.0.0.1:{port}/{db}"),
            format!("cannot connect to 127.0.0.1:{port}: password authentication failed for user \"mz_pw\""),
        ),
        (
            format!("postgres://postgres@127.0.0.1:{port}/no_such_db"),
            format!("cannot connect to 127.0.0.1:{port}: database \"no_such_db\" does not exist"),
        ),
        (
            format!("postgres://postgres@127.0.0.1:{closed}/{db}"),
            format!("cannot connect to 127.0.0.1:{closed}: connection refused"),
        ),
        (
            format!("postgres://postgres@127.0.0.1:{port}/{db}?sslmode=require"),
            format!("cannot connect to 127.0.0.1:{port}: the server does not support TLS (sslmode=require)"),
        ),
    ];
    for (url, cause) in cases {
        let out = serve_over(dir.path(), &url, 64, &[]);
        let line = fatal_line(&out);
        says_once(&line, &cause);
        // The catalog is named as the user knows it: where it is and how to move it.
        assert!(
            line.contains("the catalog database (backend db1's, the first of shards.json"),
            "{line}"
        );
        assert!(!line.contains("wrong"), "a password in: {line}");
    }
    // With CATALOG_URL, that is what the message names.
    let out = serve_over(
        dir.path(),
        &url,
        64,
        &[(
            "CATALOG_URL",
            &format!("postgres://postgres@127.0.0.1:{closed}/x"),
        )],
    );
    let line = fatal_line(&out);
    says_once(&line, &format!("the catalog database (CATALOG_URL) is unavailable: cannot connect to 127.0.0.1:{closed}: connection refused"));
}

#[tokio::test]
async fn serve_says_when_shards_json_is_for_another_num_shards() {
    let url = create_database(&shared_pg()[0]).await;
    let dir = tempfile::tempdir().unwrap();
    // The file covers 0-63: NUM_SHARDS=128 is a count mismatch, not a gap.
    let line = fatal_line(&serve_over(dir.path(), &url, 128, &[]));
    says_once(
        &line,
        "shards.json covers shards 0-63 (64 shards), but NUM_SHARDS is 128: set NUM_SHARDS=64",
    );
    assert!(!line.contains("not owned"), "{line}");
    // A real gap is said in the user's notation, once.
    let path = dir.path().join("gap.json");
    let file = json!({"backends": [
        {"name": "db1", "database_url": url, "shard_start": 0, "shard_end": 30},
        {"name": "db2", "database_url": url, "shard_start": 32, "shard_end": 63}]});
    std::fs::write(&path, file.to_string()).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--num-shards", "64", "--port", "0"])
        .arg("--shard-config-path")
        .arg(&path)
        .env("LOG_FORMAT", "text")
        .output()
        .unwrap();
    says_once(&fatal_line(&out), "shard 31 is not owned by any backend");
    // A missing file is said in plain words, with where the path comes from.
    let absent = dir.path().join("absent.json");
    let out = Command::new(BIN)
        .args(["serve", "--num-shards", "64", "--port", "0"])
        .arg("--shard-config-path")
        .arg(&absent)
        .env("LOG_FORMAT", "text")
        .output()
        .unwrap();
    says_once(
        &fatal_line(&out),
        &format!(
            "cannot read the shard map {}: no such file (set SHARD_CONFIG_PATH or --shard-config-path)",
            absent.display()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_say_why_the_server_refused() {
    let (srv, _) = TestServer::fresh(2, 64).await;
    let admin = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .args(["--server", &srv.base])
            .env("MEZZANINE_TOKEN", mezzanine_e2e::ADMIN_TOKEN)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} must fail");
        String::from_utf8_lossy(&out.stderr).trim().to_owned()
    };
    let text = admin(&["move", "start", "--shards", "70", "--to", "db2"]);
    says_once(
        &text,
        "body.shards: shard 70 does not exist: the shards are 0-63 (NUM_SHARDS is 64)",
    );
    assert!(!text.contains("body.shards shards"), "{text}");
    let closed = free_port();
    let text = admin(&[
        "backend",
        "add",
        "db9",
        &format!("postgres://u:secret@127.0.0.1:{closed}/x"),
    ]);
    says_once(
        &text,
        &format!("cannot connect to 127.0.0.1:{closed}: connection refused"),
    );
    assert!(!text.contains("secret"), "a password in: {text}");
    srv.stop().await;
}
