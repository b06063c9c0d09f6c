//! Start and control local PostgreSQL servers from the installed server binaries.
//!
//! Used by `mezzanine dev` (a cluster kept in a data folder across runs) and by the
//! integration tests (throwaway servers, plus servers that get stopped, killed or paused).
//!
//! Everything here is synchronous; async callers should use `spawn_blocking`.
//!
//! # Cleanup
//! Every started postmaster runs in its own process group and gets a tiny watchdog
//! (`/bin/sh`, in yet another process group, ignoring INT/TERM/HUP/QUIT) whose stdin is a
//! pipe held only by this process. When this process exits for any reason (including
//! `std::process::exit`, a panic, or SIGKILL) the pipe closes, the watchdog reads EOF and
//! shuts the server down (SIGCONT to it and its children, SIGINT, then SIGKILL after 5 s)
//! and, for temp servers, deletes the temp folder. Orderly stop/kill end the watchdog first, so it never
//! acts on a server we already control.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub mod tls;

pub use tls::{start_temp_tls_server, ServerTls};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, geteuid, Gid, Pid, Uid, User};

/// How long a startup may take before it is declared failed.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before the group is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(6);
/// How long to wait for a SIGKILLed process group to disappear.
const KILL_WAIT: Duration = Duration::from_secs(3);
/// Attempts when the port is picked automatically and gets taken meanwhile.
const PORT_ATTEMPTS: u32 = 5;

/// Watchdog script. First stdin line: the postmaster pid. Then it blocks until EOF (our
/// process ended, or dropped the pipe) and ends the server: postgres children call setsid(),
/// so they are found through /proc (PPid) rather than by process group.
const WATCHDOG: &str = r#"trap '' INT TERM HUP QUIT PIPE
read -r PG || exit 0
case "$PG" in ''|*[!0-9]*) exit 0;; esac
while read -r _; do :; done
kids() {
  for f in $(grep -l "^PPid:[[:space:]]*$PG\$" /proc/[0-9]*/status 2>/dev/null); do
    f=${f#/proc/}; echo "${f%/status}"
  done
}
alive() {
  kill -0 "$PG" 2>/dev/null || return 1
  case "$(cat /proc/$PG/stat 2>/dev/null)" in *") Z "*) return 1;; esac
  return 0
}
kill -CONT $(kids) "$PG" 2>/dev/null
kill -INT "$PG" 2>/dev/null
i=0
while alive && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
if alive; then kill -STOP "$PG" 2>/dev/null; sleep 0.1; kill -KILL $(kids) "$PG" 2>/dev/null; fi
if [ -n "$RMDIR" ]; then sleep 0.2; rm -rf "$RMDIR"; fi
"#;

/// Errors from locating, starting or controlling PostgreSQL servers.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No usable `initdb` + `postgres` binaries were found.
    #[error("PostgreSQL server binaries (initdb, postgres) not found. Install them (Debian/Ubuntu: `apt-get install postgresql`; Fedora: `dnf install postgresql-server`; macOS: `brew install postgresql@15`) or set PG_BIN_DIR to the folder holding initdb.")]
    NotInstalled,
    /// Running as root but there is no `postgres` OS user to run the server as.
    #[error("running as root, but there is no `postgres` OS user to run PostgreSQL as (PostgreSQL refuses to run as root): create one (e.g. `useradd --system postgres`) or run as a regular user")]
    NoPostgresUser,
    /// Running as root and the `postgres` user cannot traverse a directory on the path.
    #[error("PostgreSQL must run as the `postgres` OS user (we are root), but that user cannot reach {path}: directory {blocker} is not traversable by it. Use a --data-dir under /tmp, or run `chmod o+x {blocker}`")]
    DirNotAccessible {
        /// The directory that must be reachable.
        path: PathBuf,
        /// The first directory on the way that the `postgres` user cannot enter.
        blocker: PathBuf,
    },
    /// An I/O operation (file, directory or process spawn) failed.
    #[error("{what}: {cause}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error (in the message, so not also a `source`: said once).
        cause: io::Error,
    },
    /// A system call (signal, chown, user lookup) failed.
    #[error("{what}: {cause}")]
    Sys {
        /// What was being done.
        what: String,
        /// The underlying error (in the message, so not also a `source`: said once).
        cause: Errno,
    },
    /// `initdb` failed; `output` holds what it printed.
    #[error("initdb failed for {data_dir}:\n{output}")]
    Initdb {
        /// The data directory being initialised.
        data_dir: PathBuf,
        /// The tail of initdb's stdout and stderr.
        output: String,
    },
    /// The server did not come up.
    #[error("PostgreSQL for {data_dir} on port {port} failed to start: {reason}\n--- last lines of {log} ---\n{log_tail}")]
    StartFailed {
        /// The data directory.
        data_dir: PathBuf,
        /// The port it was started on.
        port: u16,
        /// Short reason (exited, timed out, ...).
        reason: String,
        /// The server log file.
        log: PathBuf,
        /// The last lines the server wrote during this start attempt.
        log_tail: String,
    },
    /// A server process did not go away after SIGKILL.
    #[error("PostgreSQL for {0} (process {1}) is still alive after SIGKILL")]
    StillRunning(PathBuf, u32),
    /// The operation needs a running server.
    #[error("the PostgreSQL server for {0} is not running")]
    NotRunning(PathBuf),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> PgError {
    let what = what.into();
    move |cause| PgError::Io { what, cause }
}

fn sys_err(what: impl Into<String>) -> impl FnOnce(Errno) -> PgError {
    let what = what.into();
    move |cause| PgError::Sys { what, cause }
}

/// An installation of the PostgreSQL server binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgInstall {
    /// Folder holding `initdb`, `postgres` (and usually `psql`, `pg_isready`).
    pub bin_dir: PathBuf,
}

fn has_server(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

impl PgInstall {
    /// Find the server binaries: `PG_BIN_DIR` if set; else `pg_config --bindir` if it holds
    /// initdb and postgres; else the highest-versioned folder among `/usr/lib/postgresql/*/bin`,
    /// `/usr/pgsql-*/bin`, `/opt/homebrew/opt/postgresql*/bin`, `/usr/local/opt/postgresql*/bin`
    /// and `/usr/local/pgsql/bin`.
    pub fn locate() -> Result<PgInstall, PgError> {
        let explicit = std::env::var_os("PG_BIN_DIR").filter(|v| !v.is_empty());
        Self::locate_in(explicit.map(PathBuf::from))
    }

    /// Like [`PgInstall::locate`], with the value of `PG_BIN_DIR` passed in. An explicit
    /// folder must hold the binaries; there is no fallback to the search.
    pub fn locate_in(pg_bin_dir: Option<PathBuf>) -> Result<PgInstall, PgError> {
        if let Some(bin_dir) = pg_bin_dir {
            return if has_server(&bin_dir) {
                Ok(PgInstall { bin_dir })
            } else {
                Err(PgError::NotInstalled)
            };
        }
        let from_pg_config = Command::new("pg_config")
            .arg("--bindir")
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        if let Some(bin_dir) = from_pg_config.filter(|d| has_server(d)) {
            return Ok(PgInstall { bin_dir });
        }
        let mut best: Option<(Vec<u32>, PathBuf)> = None;
        let mut consider = |version: Vec<u32>, dir: PathBuf| {
            if has_server(&dir) && best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, dir));
            }
        };
        let families = [
            ("/usr/lib/postgresql", ""),
            ("/usr", "pgsql-"),
            ("/opt/homebrew/opt", "postgresql"),
            ("/usr/local/opt", "postgresql"),
        ];
        for (parent, prefix) in families {
            for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(rest) = name.strip_prefix(prefix) {
                    let version = rest
                        .split(|c: char| !c.is_ascii_digit())
                        .filter_map(|s| s.parse().ok())
                        .collect();
                    consider(version, entry.path().join("bin"));
                }
            }
        }
        consider(Vec::new(), PathBuf::from("/usr/local/pgsql/bin"));
        best.map(|(_, bin_dir)| PgInstall { bin_dir })
            .ok_or(PgError::NotInstalled)
    }

    /// Path of a binary in the install's bin folder (e.g. `bin("psql")`).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Output of `postgres --version`, e.g. `postgres (PostgreSQL) 15.8`.
    pub fn version(&self) -> Result<String, PgError> {
        let postgres = self.bin("postgres");
        let out = Command::new(&postgres)
            .arg("--version")
            .output()
            .map_err(io_err(format!("could not run {}", postgres.display())))?;
        if !out.status.success() {
            return Err(PgError::Io {
                what: format!("{} --version failed ({})", postgres.display(), out.status),
                cause: io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// What to start: a data directory, a port and extra settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Created with initdb if it holds no `PG_VERSION`; reused (data kept) otherwise.
    pub data_dir: PathBuf,
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Extra `-c name=value` settings passed to postgres (applied after the defaults).
    pub settings: Vec<(String, String)>,
    /// Where the server's output goes; default `<data_dir>.log` next to the data directory.
    pub log_file: Option<PathBuf>,
}

impl ServerSpec {
    /// A spec for `data_dir` with an automatically picked port and no extra settings.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerSpec {
            data_dir: data_dir.into(),
            port: 0,
            settings: Vec::new(),
            log_file: None,
        }
    }

    /// Use this TCP port (0 = pick a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Add a `-c name=value` server setting.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Write the server's output to this file (appended).
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// Trade durability for speed (fsync, synchronous_commit, full_page_writes off): tests only.
    pub fn fast_unsafe(self) -> Self {
        self.setting("fsync", "off")
            .setting("synchronous_commit", "off")
            .setting("full_page_writes", "off")
    }
}

/// A live postmaster plus its watchdog.
struct Running {
    child: Child,
    watchdog: Child,
}

impl Running {
    fn pm(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// SIGSTOP the postmaster (so it cannot fork any more), wait until it is stopped, and
    /// return its children followed by itself.
    fn freeze(&self) -> Result<Vec<Pid>, Errno> {
        let pm = self.pm();
        kill(pm, Signal::SIGSTOP)?;
        let deadline = Instant::now() + Duration::from_secs(1);
        while proc_stat(pm).is_some_and(|(state, _)| !matches!(state, 'T' | 't' | 'Z'))
            && Instant::now() < deadline
        {
            sleep(Duration::from_millis(5));
        }
        let mut pids = children(pm);
        pids.push(pm);
        Ok(pids)
    }

    /// Send `signal` to the postmaster's children, then to the postmaster.
    fn signal_all(&self, signal: Signal) -> Result<(), Errno> {
        for pid in children(self.pm()) {
            let _ = kill(pid, signal);
        }
        kill(self.pm(), signal)
    }

    /// End the server: fast shutdown with `grace`, or SIGKILL at once when `grace` is None.
    /// Then wait for all its processes to vanish and end the watchdog.
    fn terminate(&mut self, grace: Option<Duration>, data_dir: &Path) -> Result<(), PgError> {
        let clean = match grace {
            Some(grace) => {
                let _ = self.signal_all(Signal::SIGCONT);
                let _ = kill(self.pm(), Signal::SIGINT);
                wait_child(&mut self.child, grace)
            }
            None => false,
        };
        let mut victims = Vec::new();
        if !clean {
            if grace.is_some() {
                tracing::warn!(data_dir = %data_dir.display(), "PostgreSQL did not shut down in time; killing it");
            }
            victims = self.freeze().unwrap_or_default();
            for &pid in victims.iter().chain([&self.pm()]) {
                let _ = kill(pid, Signal::SIGKILL);
            }
            let _ = self.child.wait();
        }
        let deadline = Instant::now() + KILL_WAIT;
        while victims.iter().any(|&p| alive(p)) && Instant::now() < deadline {
            sleep(Duration::from_millis(20));
        }
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        match victims.iter().find(|&&p| alive(p)) {
            Some(pid) => Err(PgError::StillRunning(
                data_dir.to_path_buf(),
                pid.as_raw() as u32,
            )),
            None => Ok(()),
        }
    }
}

/// Wait up to `timeout` for the child to exit; true if it did.
fn wait_child(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => sleep(Duration::from_millis(20)),
        }
    }
}

/// State letter and parent pid of a process, from /proc (Linux).
fn proc_stat(pid: Pid) -> Option<(char, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// Whether a process exists and is not a zombie (nobody may reap orphans in a container).
fn alive(pid: Pid) -> bool {
    if Path::new("/proc/self/stat").exists() {
        proc_stat(pid).is_some_and(|(state, _)| state != 'Z')
    } else {
        kill(pid, None).is_ok()
    }
}

/// Live direct children of `parent`. PostgreSQL's child processes call setsid(), so they
/// are not in the postmaster's process group; they are all direct children of it.
fn children(parent: Pid) -> Vec<Pid> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = Pid::from_raw(e.file_name().to_str()?.parse().ok()?);
            let (state, ppid) = proc_stat(pid)?;
            (ppid == parent.as_raw() && state != 'Z').then_some(pid)
        })
        .collect()
}

/// The uid/gid to run PostgreSQL as: `Some(postgres)` when we are root, `None` otherwise.
fn postgres_user() -> Result<Option<(Uid, Gid)>, PgError> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    match User::from_name("postgres") {
        Ok(Some(u)) => Ok(Some((u.uid, u.gid))),
        Ok(None) => Err(PgError::NoPostgresUser),
        Err(e) => Err(sys_err("could not look up the `postgres` OS user")(e)),
    }
}

fn run_as(cmd: &mut Command, user: Option<(Uid, Gid)>) -> &mut Command {
    if let Some((uid, gid)) = user {
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
    }
    cmd
}

/// Check that, when running as root, the `postgres` OS user can reach `path` (every existing
/// directory from `/` down to `path` must be enterable by it). Always Ok when not root.
pub fn check_dir_access(path: &Path) -> Result<(), PgError> {
    let Some(user) = postgres_user()? else {
        return Ok(());
    };
    let path =
        std::path::absolute(path).map_err(io_err(format!("invalid path {}", path.display())))?;
    let mut dirs: Vec<&Path> = path.ancestors().filter(|d| d.is_dir()).collect();
    dirs.reverse();
    let script = r#"for d; do cd "$d" 2>/dev/null || { printf '%s' "$d"; exit 1; }; done"#;
    let out = run_as(
        Command::new("/bin/sh")
            .args(["-c", script, "sh"])
            .args(&dirs),
        Some(user),
    )
    .current_dir("/")
    .stdin(Stdio::null())
    .output()
    .map_err(io_err(
        "could not run /bin/sh as the `postgres` user to check directory access",
    ))?;
    if out.status.success() {
        return Ok(());
    }
    let blocker = match String::from_utf8_lossy(&out.stdout) {
        b if b.is_empty() => path.clone(),
        b => PathBuf::from(b.as_ref()),
    };
    Err(PgError::DirNotAccessible { path, blocker })
}

/// Create (if needed) and initialise (if it holds no PG_VERSION) the data directory.
fn prepare_data_dir(
    install: &PgInstall,
    data_dir: &Path,
    user: Option<(Uid, Gid)>,
) -> Result<(), PgError> {
    let shown = data_dir.display();
    fs::create_dir_all(data_dir)
        .map_err(io_err(format!("could not create data directory {shown}")))?;
    if let Some(parent) = data_dir.parent() {
        check_dir_access(parent)?;
    }
    if data_dir.join("PG_VERSION").exists() {
        return Ok(());
    }
    if let Some((uid, gid)) = user {
        let meta = fs::metadata(data_dir).map_err(io_err(format!("could not inspect {shown}")))?;
        if meta.uid() != uid.as_raw() {
            chown(data_dir, Some(uid), Some(gid))
                .map_err(sys_err(format!("could not chown {shown} to postgres")))?;
        }
    }
    fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("could not set permissions of {shown}")))?;
    let initdb = install.bin("initdb");
    let out = run_as(&mut Command::new(&initdb), user)
        .arg("-D")
        .arg(data_dir)
        .args("-A trust -U postgres --no-sync -E UTF8 --locale=C".split(' '))
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("could not run {}", initdb.display())))?;
    if !out.status.success() {
        let output = tail(
            &String::from_utf8_lossy(&[out.stdout, out.stderr].concat()),
            30,
        );
        return Err(PgError::Initdb {
            data_dir: data_dir.to_path_buf(),
            output,
        });
    }
    tracing::info!(data_dir = %shown, "initialised PostgreSQL data directory");
    Ok(())
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn log_tail(path: &Path, from: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f
            .seek(SeekFrom::Start(from))
            .and_then(|_| f.read_to_end(&mut buf));
    }
    tail(&String::from_utf8_lossy(&buf), 25)
}

fn free_port() -> Result<u16, PgError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io_err("could not find a free TCP port on 127.0.0.1"))
}

/// A PostgreSQL server started by this process. Stopped on drop.
pub struct PgServer {
    install: PgInstall,
    spec: ServerSpec,
    log: PathBuf,
    user: Option<(Uid, Gid)>,
    temp_root: Option<PathBuf>,
    running: Mutex<Option<Running>>,
    paused: AtomicBool,
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("data_dir", &self.spec.data_dir)
            .field("port", &self.spec.port)
            .field("pid", &self.pid())
            .finish()
    }
}

impl PgServer {
    /// Initialise the data directory if needed (initdb as the `postgres` user when root), start
    /// postgres (own process group, watchdog attached) and wait up to 30 s until it accepts
    /// connections on 127.0.0.1. With port 0, a free port is picked (and re-picked a few times
    /// if it gets taken during startup).
    pub fn start(install: &PgInstall, spec: ServerSpec) -> Result<PgServer, PgError> {
        Self::start_inner(install, spec, None)
    }

    fn start_inner(
        install: &PgInstall,
        spec: ServerSpec,
        temp_root: Option<PathBuf>,
    ) -> Result<PgServer, PgError> {
        let user = postgres_user()?;
        let data_dir = std::path::absolute(&spec.data_dir).map_err(io_err(format!(
            "invalid data directory {}",
            spec.data_dir.display()
        )))?;
        prepare_data_dir(install, &data_dir, user)?;
        let log = match &spec.log_file {
            Some(log) => log.clone(),
            None => match (data_dir.parent(), data_dir.file_name()) {
                (Some(parent), Some(name)) => {
                    parent.join(format!("{}.log", name.to_string_lossy()))
                }
                _ => data_dir.join("server.log"),
            },
        };
        let auto_port = spec.port == 0;
        let mut server = PgServer {
            install: install.clone(),
            spec: ServerSpec { data_dir, ..spec },
            log,
            user,
            temp_root,
            running: Mutex::new(None),
            paused: AtomicBool::new(false),
        };
        let mut attempt = 1;
        loop {
            if auto_port {
                server.spec.port = free_port()?;
            }
            match server.launch() {
                Err(PgError::StartFailed { log_tail, .. })
                    if auto_port
                        && attempt < PORT_ATTEMPTS
                        && log_tail.contains("could not bind") =>
                {
                    tracing::warn!(
                        port = server.spec.port,
                        "port got taken during startup; retrying on another"
                    );
                    attempt += 1;
                }
                result => return result.map(|()| server),
            }
        }
    }

    /// Spawn watchdog + postmaster on `self.spec.port` and wait for readiness.
    fn launch(&self) -> Result<(), PgError> {
        let (data_dir, port) = (&self.spec.data_dir, self.spec.port);
        let log_what = format!("could not open server log {}", self.log.display());
        let offset = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io_err(&log_what))?;
        let log2 = log.try_clone().map_err(io_err(&log_what))?;

        let mut watchdog = Command::new("/bin/sh");
        watchdog.args(["-c", WATCHDOG, "mezzanine-pg-watchdog"]);
        if let Some(root) = &self.temp_root {
            watchdog.env("RMDIR", root);
        }
        let mut watchdog = watchdog
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/")
            .process_group(0)
            .spawn()
            .map_err(io_err("could not start the watchdog (/bin/sh)"))?;

        let postgres = self.install.bin("postgres");
        let mut cmd = Command::new(&postgres);
        cmd.arg("-D").arg(data_dir).arg("-p").arg(port.to_string());
        let defaults = [
            ("listen_addresses", "127.0.0.1"),
            ("unix_socket_directories", ""),
            ("max_connections", "400"),
        ];
        for (name, value) in defaults {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        for (name, value) in &self.spec.settings {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        let spawned = run_as(&mut cmd, self.user)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .current_dir("/")
            .process_group(0)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = watchdog.kill();
                let _ = watchdog.wait();
                return Err(io_err(format!("could not start {}", postgres.display()))(e));
            }
        };
        let mut run = Running { child, watchdog };
        let pid = run.child.id();
        let armed = match run.watchdog.stdin.as_mut() {
            Some(pipe) => writeln!(pipe, "{pid}")
                .and_then(|()| pipe.flush())
                .map_err(|e| e.to_string()),
            None => Err("no pipe".to_string()),
        };
        let ready = armed
            .map_err(|e| format!("could not arm the watchdog: {e}"))
            .and_then(|()| self.wait_ready(&mut run));
        match ready {
            Ok(()) => {
                tracing::info!(data_dir = %data_dir.display(), port, pid, "PostgreSQL started");
                self.paused.store(false, Ordering::SeqCst);
                *self.lock() = Some(run);
                Ok(())
            }
            Err(reason) => {
                let _ = run.terminate(None, data_dir);
                Err(PgError::StartFailed {
                    data_dir: data_dir.clone(),
                    port,
                    reason,
                    log: self.log.clone(),
                    log_tail: log_tail(&self.log, offset),
                })
            }
        }
    }

    /// Ready = our postmaster wrote status "ready" to postmaster.pid and the port accepts TCP.
    fn wait_ready(&self, run: &mut Running) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let pid = run.child.id().to_string();
        let pid_file = self.spec.data_dir.join("postmaster.pid");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.spec.port));
        loop {
            match run.child.try_wait() {
                Ok(Some(status)) => {
                    return Err(format!("postgres exited during startup ({status})"))
                }
                Ok(None) => {}
                Err(e) => return Err(format!("could not check the postgres process: {e}")),
            }
            let ready = fs::read_to_string(&pid_file).is_ok_and(|text| {
                let lines: Vec<&str> = text.lines().map(str::trim).collect();
                lines.first() == Some(&pid.as_str()) && lines.get(7) == Some(&"ready")
            });
            if ready && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not accepting connections after {} s",
                    START_TIMEOUT.as_secs()
                ));
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The TCP port on 127.0.0.1 (kept across restarts).
    pub fn port(&self) -> u16 {
        self.spec.port
    }

    /// The (absolute) data directory.
    pub fn data_dir(&self) -> &Path {
        &self.spec.data_dir
    }

    /// The server log file.
    pub fn log_file(&self) -> &Path {
        &self.log
    }

    /// Connection URL for database `db`: `postgres://postgres@127.0.0.1:{port}/{db}`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.spec.port)
    }

    /// The postmaster's pid while it is running.
    pub fn pid(&self) -> Option<u32> {
        let mut guard = self.lock();
        let run = guard.as_mut()?;
        matches!(run.child.try_wait(), Ok(None)).then(|| run.child.id())
    }

    /// Whether the postmaster process is alive (a paused server counts as running).
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    fn take_running(&mut self) -> Option<Running> {
        self.paused.store(false, Ordering::SeqCst);
        self.running
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Fast shutdown (SIGCONT, then SIGINT to the postmaster); after a bounded wait (6 s) the
    /// postmaster and all its processes are SIGKILLed. A no-op when not running.
    pub fn stop(&mut self) -> Result<(), PgError> {
        match self.take_running() {
            Some(mut run) => run.terminate(Some(STOP_GRACE), &self.spec.data_dir),
            None => Ok(()),
        }
    }

    /// SIGKILL the postmaster and all its processes (simulated crash) and wait until they are gone.
    pub fn kill(&mut self) -> Result<(), PgError> {
        match self.take_running() {
            Some(mut run) => run.terminate(None, &self.spec.data_dir),
            None => Err(PgError::NotRunning(self.spec.data_dir.clone())),
        }
    }

    fn with_running<T>(
        &self,
        f: impl FnOnce(&Running) -> Result<T, Errno>,
        what: &str,
    ) -> Result<T, PgError> {
        let guard = self.lock();
        let run = guard
            .as_ref()
            .ok_or_else(|| PgError::NotRunning(self.spec.data_dir.clone()))?;
        f(run).map_err(sys_err(format!(
            "could not {what} PostgreSQL for {}",
            self.spec.data_dir.display()
        )))
    }

    /// SIGSTOP the postmaster and all its processes (a hung server: connections are accepted
    /// by the kernel but never answered, open sessions stall too). The watchdog is not affected.
    pub fn pause(&self) -> Result<(), PgError> {
        self.with_running(
            |run| {
                for pid in run.freeze()? {
                    let _ = kill(pid, Signal::SIGSTOP);
                }
                Ok(())
            },
            "pause",
        )?;
        self.paused.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// SIGCONT the postmaster and all its processes (undo [`PgServer::pause`]).
    pub fn resume(&self) -> Result<(), PgError> {
        self.with_running(|run| run.signal_all(Signal::SIGCONT), "resume")?;
        self.paused.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Whether [`PgServer::pause`] is in effect.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Start again on the same data directory and the same port (stops it first if running).
    /// A stale postmaster.pid left by [`PgServer::kill`] is handled by postgres itself.
    pub fn restart(&mut self) -> Result<(), PgError> {
        self.stop()?;
        self.launch()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "stopping PostgreSQL on drop");
        }
        if let Some(root) = &self.temp_root {
            let _ = fs::remove_dir_all(root);
        }
    }
}

static TEMP_SEQ: AtomicUsize = AtomicUsize::new(0);

fn start_temp_server(install: &PgInstall) -> Result<PgServer, PgError> {
    start_temp_server_with(install, |_, spec| Ok(spec))
}

/// A throwaway server as [`start_temp_servers`] starts them, its spec first given to `shape`
/// with the temp folder (owned by `postgres` when root), for files the server reads.
fn start_temp_server_with(
    install: &PgInstall,
    shape: impl FnOnce(&Path, ServerSpec) -> Result<ServerSpec, PgError>,
) -> Result<PgServer, PgError> {
    let name = format!(
        "mezzanine-test-{}-{}",
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::SeqCst)
    );
    let root = std::env::temp_dir().join(name);
    let _ = fs::remove_dir_all(&root);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&root)
        .map_err(io_err(format!(
            "could not create temp folder {}",
            root.display()
        )))?;
    let result = (|| {
        if let Some((uid, gid)) = postgres_user()? {
            chown(&root, Some(uid), Some(gid)).map_err(sys_err(format!(
                "could not chown {} to postgres",
                root.display()
            )))?;
        }
        let spec = ServerSpec::new(root.join("data"))
            .log_file(root.join("server.log"))
            .fast_unsafe();
        let spec = shape(&root, spec)?;
        PgServer::start_inner(install, spec, Some(root.clone()))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&root);
    }
    result
}

/// Start `n` throwaway servers in parallel (fast_unsafe settings, free ports). Each lives in
/// `<temp_dir>/mezzanine-test-<pid>-<seq>` (mode 0700, owned by `postgres` when root), which
/// is deleted on drop and by the watchdog if this process exits without dropping it.
pub fn start_temp_servers(install: &PgInstall, n: usize) -> Result<Vec<PgServer>, PgError> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|_| scope.spawn(|| start_temp_server(install)))
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        results.into_iter().collect()
    })
}
