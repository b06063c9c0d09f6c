//! `mezzanine dev` as a user runs it: zero configuration, data kept across restarts, a second
//! node joining through mezzanine.env, and nothing left running after SIGINT or SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mezzanine_e2e::free_port;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mezzanine");

/// A running `mezzanine` process, stopped with SIGTERM (which makes `dev` stop its
/// PostgreSQL servers) if the test ends without stopping it, e.g. by a failed assertion.
struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str], envs: &[(String, String)], log: &Path) -> Running {
    let out = std::fs::File::create(log).unwrap();
    Running(
        Command::new(BIN)
            .args(args)
            .envs(envs.iter().cloned())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    )
}

async fn wait_ready(base: &str, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/v1/readyz")).await {
            if r.status() == 200 {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "exited early ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "not ready:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The postmaster pids of the servers under `dir` (from their postmaster.pid files).
fn postmasters(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if let Ok(text) = std::fs::read_to_string(entry.path().join("postmaster.pid")) {
            if let Some(pid) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                pids.push(pid);
            }
        }
    }
    pids
}

fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

fn stop(child: &mut Child, signal: Signal, pids: &[i32], log: &Path) {
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "dev did not stop on {signal}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let left: Vec<_> = pids.iter().filter(|&&p| running(p)).collect();
    assert!(
        left.is_empty(),
        "PostgreSQL left running after {signal}: {left:?}\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn env_file(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join("mezzanine.env"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// A folder for one test's dev cluster and logs, removed when the test ends (passed or not);
/// open to the `postgres` user, who runs the servers when the tests run as root.
fn scratch() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::Builder::new()
        .prefix("mz-dev-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    tmp
}

/// A port from which `n` consecutive ports are free.
fn free_run(n: u16) -> u16 {
    for _ in 0..200 {
        let base = 20_000 + rand_port_offset();
        if (base..base + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

fn rand_port_offset() -> u16 {
    (uuid::Uuid::new_v4().as_u128() % 20_000) as u16
}

fn ports_of(shards: &Value) -> Vec<u16> {
    shards["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let url = url::Url::parse(b["database_url"].as_str().unwrap()).unwrap();
            url.port().unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_keeps_data_lets_a_node_join_and_cleans_up() {
    let tmp = scratch();
    let dir: PathBuf = tmp.path().join("data");
    let log = tmp.path().join("dev.log");
    let port = free_port();
    let pg_base = free_run(3);
    let base = format!("http://127.0.0.1:{port}");
    let args = [
        "dev",
        "--data-dir",
        dir.to_str().unwrap(),
        "--port",
        &port.to_string(),
        "--num-shards",
        "16",
        "--spare",
        "1",
        "--pg-port-base",
        &pg_base.to_string(),
    ];
    let c = reqwest::Client::new();

    let mut dev = spawn(&args, &[], &log);
    wait_ready(&base, &mut dev, &log).await;
    let env = env_file(&dir);
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("NUM_SHARDS"), "16");
    assert!(
        get("MEZZANINE_SPARE_BACKENDS").starts_with("spare1=postgres://"),
        "{env:?}"
    );
    let shards: Value =
        serde_json::from_str(&std::fs::read_to_string(get("SHARD_CONFIG_PATH")).unwrap()).unwrap();
    assert_eq!(shards["backends"].as_array().unwrap().len(), 2);
    // --pg-port-base: the servers take consecutive ports, backends first, then the spare.
    assert_eq!(ports_of(&shards), [pg_base, pg_base + 1]);
    assert!(
        get("MEZZANINE_SPARE_BACKENDS").contains(&format!(":{}/", pg_base + 2)),
        "{env:?}"
    );
    // mezzanine.env holds the admin token: readable by its owner only.
    use std::os::unix::fs::PermissionsExt;
    for f in ["mezzanine.env", "tokens"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{f} is readable by others: {mode:o}");
    }
    let token = get("MEZZANINE_TOKEN");
    assert!(token.starts_with("mzt_"), "{env:?}");
    assert_eq!(get("TOKEN_FILE"), dir.join("tokens").display().to_string());

    // The admin commands need the token, and find it as the README runs them: from
    // .mezzanine/mezzanine.env in the current folder (here a link to the data folder), or
    // from MEZZANINE_TOKEN (`set -a; . .mezzanine/mezzanine.env`).
    let admin = |cwd: &Path, server: &str, token: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .args(["--server", server])
            .current_dir(cwd)
            .env_remove("MEZZANINE_TOKEN")
            .env_remove("MEZZANINE_URL");
        if let Some(t) = token {
            cmd.env("MEZZANINE_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let (ok, _, err) = admin(&elsewhere, &base, None, &["status"]);
    assert!(
        !ok && err.contains("needs a bearer token with scope admin"),
        "{err}"
    );
    let (ok, out, err) = admin(&elsewhere, &base, Some(token.as_str()), &["status"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("open (OPEN_DATA_API)") && out.contains("tokens"),
        "{out}"
    );
    let readme = tmp.path().join("readme");
    std::fs::create_dir(&readme).unwrap();
    std::os::unix::fs::symlink(&dir, readme.join(".mezzanine")).unwrap();
    let (ok, out, err) = admin(
        &readme,
        &base,
        None,
        &["move", "start", "--shards", "0", "--to", "spare1", "--wait"],
    );
    assert!(
        ok,
        "move start with the dev token of .mezzanine/mezzanine.env:\n{out}\n{err}"
    );

    let row = uuid::Uuid::new_v4();
    let cell = json!({"row_key": row.to_string(), "column_name": "c", "ref_key": 1, "body": {"kept": true}});
    let r = c
        .post(format!("{base}/v1/cells"))
        .json(&cell)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // A second node joins with mezzanine.env and serves the same cells.
    let port2 = free_port();
    let mut envs = env.clone();
    envs.push(("PORT".into(), port2.to_string()));
    envs.push(("HOST".into(), "127.0.0.1".into()));
    let log2 = log.with_extension("node2.log");
    let mut node2 = spawn(&["serve"], &envs, &log2);
    let base2 = format!("http://127.0.0.1:{port2}");
    wait_ready(&base2, &mut node2, &log2).await;
    let r = c
        .get(format!("{base2}/v1/cells/{row}/c/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // It reads the same token file.
    let (ok, _, err) = admin(&elsewhere, &base2, Some(token.as_str()), &["status"]);
    assert!(ok, "the second node refused the dev token: {err}");
    let logged = std::fs::read_to_string(&log2).unwrap();
    assert!(
        logged
            .lines()
            .any(|l| serde_json::from_str::<Value>(l).is_ok()),
        "serve logs JSON lines:\n{logged}"
    );
    stop(&mut node2, Signal::SIGTERM, &[], &log2);

    // `bench http` with mezzanine.env, briefly: every operation answers over HTTP and
    // directly, without an error, and the report has each ratio.
    let out = tokio::process::Command::new(BIN)
        .args(["bench", "http", "--duration", "1s", "--concurrency", "2"])
        .args(["--batch-size", "10", "--seed-rows", "10", "--json"])
        .envs(env.iter().cloned())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench http failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ops = report["ops"].as_array().unwrap();
    let names: Vec<&str> = ops.iter().filter_map(|o| o["op"].as_str()).collect();
    assert_eq!(names, ["write", "latest", "row", "partition", "batch"]);
    for op in ops {
        for side in ["http", "direct"] {
            assert!(op[side]["ops"].as_u64().unwrap() > 0, "{op}");
            assert_eq!(op[side]["errors"], 0, "{op}");
        }
        assert!(op["ratio"].as_f64().unwrap() > 0.0, "{op}");
    }
    assert!(report["batch_vs_copy"]["ratio"].as_f64().unwrap() > 0.0);

    let pids = postmasters(&dir);
    assert_eq!(pids.len(), 3, "two backends and one spare");
    stop(&mut dev, Signal::SIGINT, &pids, &log);

    // Again on the same folder: the data is there; SIGTERM stops everything too.
    let mut dev = spawn(&args, &[], &log);
    wait_ready(&base, &mut dev, &log).await;
    let got: Value = c
        .get(format!("{base}/v1/cells/{row}/c/1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["body"], json!({"kept": true}));
    // The token is kept across starts (shells that read mezzanine.env keep working), once.
    assert_eq!(
        env_file(&dir)
            .into_iter()
            .find(|(k, _)| k == "MEZZANINE_TOKEN"),
        Some(("MEZZANINE_TOKEN".to_owned(), token.clone()))
    );
    let lines = std::fs::read_to_string(dir.join("tokens")).unwrap();
    assert_eq!(
        lines.lines().filter(|l| l.starts_with("dev ")).count(),
        1,
        "{lines}"
    );
    let (ok, _, err) = admin(&elsewhere, &base, Some(token.as_str()), &["status"]);
    assert!(ok, "{err}");
    let pids = postmasters(&dir);
    stop(&mut dev, Signal::SIGTERM, &pids, &log);
}

/// What can fail cheaply is said before any PostgreSQL server is initialised or started: the
/// HTTP port, then the servers' ports.
#[test]
fn dev_reports_a_port_in_use_before_starting_postgresql() {
    let tmp = scratch();
    let dir = tmp.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let run = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["dev", "--data-dir", dir.to_str().unwrap()])
            .args(extra)
            .env("LOG_FORMAT", "text")
            .output()
            .unwrap();
        assert!(!out.status.success(), "must refuse");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let text = run(&["--port", &busy.to_string()]);
    assert!(
        text.contains(&format!("cannot listen on 127.0.0.1:{busy}"))
            && text.contains("choose another --port"),
        "{text}"
    );
    assert!(
        !dir.exists(),
        "the folder was touched before the port check"
    );
    assert!(!text.contains("initialised PostgreSQL"), "{text}");

    let text = run(&[
        "--port",
        &free_port().to_string(),
        "--pg-port-base",
        &busy.to_string(),
    ]);
    assert!(
        text.contains(&format!("port {busy} for PostgreSQL server db1 is in use"))
            && text.contains("choose another --pg-port-base"),
        "{text}"
    );
    assert!(
        !dir.join("db1").exists(),
        "a server was initialised: {text}"
    );
    assert!(
        !dir.join("cluster.json").exists(),
        "ports were recorded: {text}"
    );
    drop(taken);
}

#[test]
fn without_postgresql_dev_says_what_to_install() {
    let tmp = scratch();
    let dir = tmp.path().join("data");
    let out = Command::new(BIN)
        .args(["dev", "--port", "0", "--data-dir", dir.to_str().unwrap()])
        .env("PG_BIN_DIR", "/nonexistent/pg/bin")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("apt-get install postgresql"), "{text}");
}
