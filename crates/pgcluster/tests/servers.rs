//! Tests against the real installed PostgreSQL binaries.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use mezzanine_pgcluster::{
    check_dir_access, start_temp_servers, PgError, PgInstall, PgServer, ServerSpec,
};

const CHILD_ENV: &str = "MEZZANINE_PGCLUSTER_TEST_CHILD";

fn install() -> PgInstall {
    PgInstall::locate().expect("PostgreSQL server binaries must be installed for these tests")
}

fn one_server(install: &PgInstall) -> PgServer {
    start_temp_servers(install, 1).unwrap().pop().unwrap()
}

fn psql_cmd(install: &PgInstall, server: &PgServer, sql: &str) -> Command {
    let mut cmd = Command::new(install.bin("psql"));
    cmd.args([
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-XAtq",
        "-v",
        "ON_ERROR_STOP=1",
    ])
    .arg("-p")
    .arg(server.port().to_string())
    .arg("-c")
    .arg(sql)
    .env("PGCONNECT_TIMEOUT", "10");
    cmd
}

fn psql(install: &PgInstall, server: &PgServer, sql: &str) -> String {
    let out = psql_cmd(install, server, sql).output().unwrap();
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Alive = exists and is not a zombie (nobody may reap orphans in a container).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let rest = &stat[stat.rfind(')').unwrap() + 1..];
            rest.split_whitespace().next() != Some("Z")
        }
        Err(_) => false,
    }
}

fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while process_alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        sleep(Duration::from_millis(50));
    }
    true
}

#[test]
fn start_query_stop_restart_keeps_data() {
    let install = install();
    assert!(install.version().unwrap().contains("PostgreSQL"));
    let mut server = one_server(&install);
    let port = server.port();
    assert_eq!(
        server.url("app"),
        format!("postgres://postgres@127.0.0.1:{port}/app")
    );
    assert!(server.is_running());
    assert_eq!(psql(&install, &server, "SELECT 1"), "1");
    assert_eq!(psql(&install, &server, "SHOW fsync"), "off");
    assert_eq!(psql(&install, &server, "SHOW max_connections"), "400");
    psql(
        &install,
        &server,
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2), (3)",
    );

    let pid = server.pid().unwrap();
    server.stop().unwrap();
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    assert!(!process_alive(pid));
    assert!(server.data_dir().join("PG_VERSION").exists());

    server.restart().unwrap();
    assert_eq!(server.port(), port);
    assert_eq!(psql(&install, &server, "SELECT count(*) FROM t"), "3");

    let dir = server.data_dir().parent().unwrap().to_path_buf();
    drop(server);
    assert!(
        !dir.exists(),
        "temp folder {} must be deleted on drop",
        dir.display()
    );
}

#[test]
fn explicit_data_dir_is_reused_by_a_new_server() {
    let install = install();
    let tmp = tempfile::Builder::new()
        .prefix("mezzanine-pgc-")
        .tempdir()
        .unwrap();
    let data = tmp.path().join("shard0");
    let running_as_root = nix::unistd::geteuid().is_root();
    if running_as_root {
        use std::os::unix::fs::PermissionsExt;
        // A 0700 root folder: the postgres user cannot enter it.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = PgServer::start(&install, ServerSpec::new(&data)).unwrap_err();
        assert!(matches!(err, PgError::DirNotAccessible { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("chmod o+x") && msg.contains("/tmp"), "{msg}");
        assert!(check_dir_access(&data).is_err());
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    check_dir_access(&data).unwrap();
    let mut first = PgServer::start(&install, ServerSpec::new(&data).fast_unsafe()).unwrap();
    assert!(
        tmp.path().join("shard0.log").exists(),
        "default log next to the data dir"
    );
    psql(
        &install,
        &first,
        "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('hello')",
    );
    first.stop().unwrap();
    drop(first);
    assert!(
        data.join("PG_VERSION").exists(),
        "a non-temp data dir survives drop"
    );

    let second = PgServer::start(&install, ServerSpec::new(&data).fast_unsafe()).unwrap();
    assert_eq!(psql(&install, &second, "SELECT v FROM kept"), "hello");
}

#[test]
fn pause_hangs_queries_and_resume_recovers() {
    let install = install();
    let server = one_server(&install);
    assert_eq!(psql(&install, &server, "SELECT 1"), "1");

    // An open session (like a pooled connection) must stall too, not only new connections.
    let mut session = psql_cmd(&install, &server, "SELECT 1");
    let mut session = session
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = session.stdin.take().unwrap();
    let output = session.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(output).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    use std::io::Write;
    let wait = Duration::from_secs(10);
    assert_eq!(rx.recv_timeout(wait).unwrap(), "1");

    server.pause().unwrap();
    assert!(server.is_paused());
    writeln!(input, "SELECT 41;").unwrap();
    assert!(
        rx.recv_timeout(Duration::from_secs(1)).is_err(),
        "an open session must hang while paused"
    );
    assert!(server.is_running());
    let mut hung = psql_cmd(&install, &server, "SELECT 1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    sleep(Duration::from_secs(1));
    assert!(
        hung.try_wait().unwrap().is_none(),
        "a query against a paused server must hang"
    );
    hung.kill().unwrap();
    hung.wait().unwrap();

    server.resume().unwrap();
    assert!(!server.is_paused());
    assert_eq!(rx.recv_timeout(wait).unwrap(), "41");
    drop(input);
    session.wait().unwrap();
    assert_eq!(psql(&install, &server, "SELECT 2"), "2");

    // Dropping a paused server must not hang.
    server.pause().unwrap();
    let started = Instant::now();
    drop(server);
    // A bound against a hang (dropping sends SIGKILL), not a performance figure.
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn kill_then_restart_on_same_port() {
    let install = install();
    let mut server = one_server(&install);
    // synchronous_commit is off: make the commit durable before crashing.
    psql(
        &install,
        &server,
        "CREATE TABLE k (x int); INSERT INTO k VALUES (7)",
    );
    psql(&install, &server, "CHECKPOINT");
    let (port, pid) = (server.port(), server.pid().unwrap());

    server.kill().unwrap();
    assert!(!server.is_running());
    assert!(!process_alive(pid));
    assert!(matches!(server.kill(), Err(PgError::NotRunning(_))));
    assert!(matches!(server.pause(), Err(PgError::NotRunning(_))));

    server.restart().unwrap();
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), Some(pid));
    assert_eq!(psql(&install, &server, "SELECT x FROM k"), "7");

    // A second crash/restart cycle keeps working (new watchdog each time).
    server.kill().unwrap();
    server.restart().unwrap();
    assert_eq!(psql(&install, &server, "SELECT count(*) FROM k"), "1");
}

#[test]
fn parallel_temp_servers_are_independent() {
    let install = install();
    let servers = start_temp_servers(&install, 3).unwrap();
    let mut ports: Vec<u16> = servers.iter().map(|s| s.port()).collect();
    ports.dedup();
    assert_eq!(ports.len(), 3);
    for s in &servers {
        assert_eq!(psql(&install, s, "SELECT 1"), "1");
    }
    let pids: Vec<u32> = servers.iter().map(|s| s.pid().unwrap()).collect();
    drop(servers);
    for pid in pids {
        assert!(!process_alive(pid));
    }
}

/// Acts as the child of `exiting_process_leaves_no_server_behind` when CHILD_ENV is set.
#[test]
fn child_helper_process() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let servers = start_temp_servers(&install(), 1).unwrap();
    let server = &servers[0];
    // Pause it too: the watchdog must still bring it down.
    server.pause().unwrap();
    println!(
        "CHILD pid={} dir={}",
        server.pid().unwrap(),
        server.data_dir().display()
    );
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::process::exit(0);
}

#[test]
fn exiting_process_leaves_no_server_behind() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "child_helper_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("CHILD "))
        .map(|(_, rest)| rest);
    let line = line.unwrap_or_else(|| panic!("no CHILD line in {stdout}"));
    let pid: u32 = line
        .split("pid=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let data_dir = Path::new(line.split("dir=").nth(1).unwrap()).to_path_buf();
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "postmaster {pid} still running after its owner exited"
    );
    let root = data_dir.parent().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while root.exists() && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    assert!(
        !root.exists(),
        "temp folder {} not removed by the watchdog",
        root.display()
    );
}

#[test]
fn locate_in_empty_dir_is_not_installed_with_hint() {
    let empty = tempfile::tempdir().unwrap();
    let err = PgInstall::locate_in(Some(empty.path().to_path_buf())).unwrap_err();
    assert!(matches!(err, PgError::NotInstalled));
    let msg = err.to_string();
    assert!(msg.contains("apt-get install postgresql"), "{msg}");
    assert!(msg.contains("PG_BIN_DIR"), "{msg}");
    // Without PG_BIN_DIR the search finds this machine's install.
    let found = PgInstall::locate_in(None).unwrap();
    assert!(found.bin("initdb").is_file());
}

#[test]
fn busy_fixed_port_fails_with_log_tail() {
    let install = install();
    let other = one_server(&install);
    let tmp = tempfile::Builder::new()
        .prefix("mezzanine-pgc-")
        .tempdir()
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let spec = ServerSpec::new(tmp.path().join("d"))
        .port(other.port())
        .fast_unsafe();
    let err = PgServer::start(&install, spec).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PgError::StartFailed { .. }), "{msg}");
    assert!(
        msg.contains("could not bind") || msg.contains("already in use"),
        "{msg}"
    );
}
