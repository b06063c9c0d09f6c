//! Secrets and the real binary: at `LOG_LEVEL=debug` the server's log holds no password of a
//! backend (tokio-postgres logs statements with their parameters at debug; those records are
//! withheld) nor a client cell's body; the admin commands print none, except
//! `shards export --with-secrets`; a masked export fed back as shards.json is refused saying
//! so; and a URL without a password takes it from the password file (PGPASSFILE).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mezzanine_e2e::{connect, create_database, free_port, shared_pg};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_mezzanine");

/// A `mezzanine serve` child writing JSON log lines to a file.
struct Serve {
    child: Child,
    log: PathBuf,
    base: String,
}

impl Serve {
    /// Starts `serve` over `shards_json` with `env`, and waits until it serves; `Err` holds
    /// its log when it ended before.
    fn start(dir: &Path, shards_json: &Path, env: &[(&str, &str)]) -> Result<Serve, String> {
        let port = free_port();
        let log = dir.join(format!("serve-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(BIN)
            .arg("serve")
            .env("SHARD_CONFIG_PATH", shards_json)
            .env("NUM_SHARDS", "4")
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("LOG_FORMAT", "json")
            .env("DB_QUERY_TIMEOUT", "3s")
            // The admin API needs a token: the harness's, which `admin` sends.
            .env("TOKENS", mezzanine_e2e::harness_tokens())
            .env("OPEN_DATA_API", "true")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("\"serving\"") {
                return Ok(Serve {
                    child,
                    log,
                    base: format!("http://127.0.0.1:{port}"),
                });
            }
            if let Ok(Some(_)) = child.try_wait() {
                return Err(std::fs::read_to_string(&log).unwrap_or_default());
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("serve did not serve within 60 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it with SIGTERM and returns its whole log.
    fn stop(mut self) -> String {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        let text = std::fs::read_to_string(&self.log).unwrap();
        assert!(status.success(), "serve did not stop cleanly:\n{text}");
        text
    }

    /// Runs an admin command against it.
    fn admin(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .args(["--server", &self.base])
            .env("MEZZANINE_TOKEN", mezzanine_e2e::ADMIN_TOKEN)
            .output()
            .unwrap()
    }
}

fn shards_json(dir: &Path, name: &str, url: &str) -> PathBuf {
    let path = dir.join(name);
    let file = json!({"backends": [{"name": "db1", "database_url": url, "shard_start": 0, "shard_end": 3}]});
    std::fs::write(&path, file.to_string()).unwrap();
    path
}

fn port_of(url: &str) -> u16 {
    let rest = url.rsplit('@').next().unwrap();
    let addr = rest.split('/').next().unwrap();
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn debug_logs_and_admin_commands_show_no_password() {
    let db = create_database(&shared_pg()[0]).await;
    let spare = create_database(&shared_pg()[0]).await;
    let port = port_of(&spare);
    let spare_db = spare.rsplit('/').next().unwrap().to_owned();
    // The first backend, which holds the catalog, has a password too (the test servers trust
    // local connections, so any password does): its URL is logged at start.
    let db = db.replacen("postgres@", "postgres:Catalog-Secret@", 1);
    let dir = tempfile::tempdir().unwrap();
    let path = shards_json(dir.path(), "shards.json", &db);
    let srv = Serve::start(dir.path(), &path, &[("LOG_LEVEL", "debug")])
        .unwrap_or_else(|log| panic!("serve failed:\n{log}"));
    let secrets = [
        "Catalog-Secret",
        "Cli-Secret",
        "Cli-Query-Secret",
        "Cell-Body-Secret",
    ];

    let ok = format!("postgres://postgres:Cli-Secret@127.0.0.1:{port}/{spare_db}");
    let out = srv.admin(&["backend", "add", "spare1", &ok]);
    assert!(out.status.success(), "{}", text(&out));
    let failing = format!(
        "postgres://postgres@127.0.0.1:{}/x?password=Cli-Query-Secret",
        free_port()
    );
    let out = srv.admin(&["backend", "add", "bad1", &failing]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("connection refused"), "{}", text(&out));
    // A client's cell, whose body is sent to PostgreSQL as a statement parameter.
    let cell = json!({"row_key": uuid::Uuid::new_v4().to_string(), "column_name": "c",
        "ref_key": 1, "body": {"token": "Cell-Body-Secret"}});
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/cells", srv.base))
        .json(&cell)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    let mut shown = String::new();
    for args in [
        &["backend", "list"][..],
        &["backend", "list", "--json"],
        &["shards", "export"],
    ] {
        let out = srv.admin(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        shown.push_str(&text(&out));
    }
    let masked = srv.admin(&["shards", "export"]);
    let with = srv.admin(&["shards", "export", "--with-secrets"]);
    assert!(with.status.success(), "{}", text(&with));
    assert!(text(&with).contains(&ok), "{}", text(&with));
    assert!(text(&with).contains(&db), "{}", text(&with));

    let log = srv.stop();
    for secret in secrets {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
        assert!(!log.contains(secret), "{secret} in the debug log:\n{log}");
    }
    // The log is at debug, tokio-postgres's included (what is withheld is only its
    // statements' parameters).
    assert!(log.contains("\"level\":\"DEBUG\""), "{log}");
    assert!(log.contains("tokio_postgres"), "{log}");

    // The masked export fed back is refused, saying why.
    let fed_back = dir.path().join("exported.json");
    std::fs::write(&fed_back, &masked.stdout).unwrap();
    match Serve::start(dir.path(), &fed_back, &[]) {
        Ok(s) => panic!("a masked export was served: {}", s.stop()),
        Err(log) => assert!(
            log.contains("the password in database_url is masked (***)")
                && log.contains("--with-secrets"),
            "{log}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_password_file_gives_a_url_its_password() {
    let server = &shared_pg()[0];
    let db = create_database(server).await;
    let port = server.port();
    let name = db.rsplit('/').next().unwrap().to_owned();
    // A role that must give its password (the test servers trust everyone else).
    let hba = server.data_dir().join("pg_hba.conf");
    let hba_text = std::fs::read_to_string(&hba).unwrap();
    if !hba_text.contains("mz_file") {
        std::fs::write(
            &hba,
            format!("host all mz_file 127.0.0.1/32 scram-sha-256\n{hba_text}"),
        )
        .unwrap();
    }
    connect(&db)
        .await
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE mz_file LOGIN SUPERUSER PASSWORD 'fr0m-the-file'; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$; SELECT pg_reload_conf()",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://mz_file@127.0.0.1:{port}/{name}");
    let path = shards_json(dir.path(), "shards.json", &url);
    let passfile = dir.path().join("pgpass");
    let home = dir.path().to_str().unwrap();
    let write = |mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(
            &passfile,
            format!("# ours\n127.0.0.1:{port}:{name}:mz_file:fr0m-the-file\n"),
        )
        .unwrap();
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let passfile_env = passfile.to_str().unwrap();

    // Without the file, the server asks for a password the URL does not have.
    let Err(log) = Serve::start(dir.path(), &path, &[("HOME", home), ("PGPASSFILE", "")]) else {
        panic!("served without a password")
    };
    assert!(log.contains("password"), "{log}");
    // A file others may read is ignored, as libpq ignores it, saying so.
    write(0o644);
    let Err(log) = Serve::start(
        dir.path(),
        &path,
        &[("HOME", home), ("PGPASSFILE", passfile_env)],
    ) else {
        panic!("served with a password file others can read")
    };
    assert!(log.contains("group or world access"), "{log}");
    // A private one gives the password; it appears nowhere.
    write(0o600);
    let srv = Serve::start(
        dir.path(),
        &path,
        &[("HOME", home), ("PGPASSFILE", passfile_env)],
    )
    .unwrap_or_else(|log| panic!("serve failed with the password file:\n{log}"));
    let out = srv.admin(&["shards", "export"]);
    assert!(text(&out).contains(&url), "{}", text(&out));
    let log = srv.stop();
    assert!(!log.contains("fr0m-the-file"), "{log}");
}
