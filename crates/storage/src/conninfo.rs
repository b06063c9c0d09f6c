//! Connection strings on their way to PostgreSQL.
//!
//! - [`config`]: every connection's configuration (backend pools, the catalog's sessions, the
//!   CLI's [`connect`]): its TLS settings ([`crate::sslmode`]) and connector
//!   ([`crate::tls`]), tokio-postgres's reading of the rest, and, when it carries no
//!   password, the password from the password file, as libpq finds it (`PGPASSFILE`, else
//!   `~/.pgpass`). URLs can so leave their secret out: `shards export` then holds nothing to
//!   hide and works fed back (`sslmode` and `sslrootcert` are no secrets and stay in it).
//! - [`backend_targets`]: the checks `backend add` makes before any connection: a PostgreSQL
//!   URL that tokio-postgres reads, naming a host and a database; it returns where the node
//!   would connect, for `BACKEND_HOSTS_ALLOWED` ([`mezzanine_core::hosts`]).
//! - [`mask_url`]: every password of every form masked ([`mezzanine_core::conninfo`]).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use mezzanine_core::hosts::Target;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, Connection, Socket};

pub use mezzanine_core::conninfo::{has_masked_password, mask_url};

use crate::error::pg_cause;
use crate::tls::{PgTls, PgTlsStream};

/// The configuration of a connection to `url` and its TLS connector: the TLS settings
/// (`sslmode`, `sslrootcert`, with `PGSSLMODE` and `PGSSLROOTCERT` as defaults; see
/// [`crate::sslmode`]) taken out and given to the connector, and, when the URL carries no
/// password, the password file's. The error says why in words, never with the password.
pub fn config(url: &str) -> Result<(Config, PgTls), String> {
    let (mut config, tls) = parse(url)?;
    config.ssl_mode(tls.driver_mode());
    // PostgreSQL has no TLS over Unix-domain sockets; libpq ignores sslmode there.
    let hosts = config.get_hosts();
    if !hosts.is_empty()
        && config.get_hostaddrs().is_empty()
        && hosts.iter().all(|h| !matches!(h, Host::Tcp(_)))
    {
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    }
    if config.get_password().is_none() {
        if let Some(path) = passfile_path() {
            if let Some(pw) = passfile_password(&path, &config) {
                config.password(pw);
            }
        }
    }
    Ok((config, PgTls::new(tls)))
}

/// A connection of its own to PostgreSQL (the CLI's, the tests'), as [`config`] reads `url`,
/// within `timeout`. The error says why, once, never with the password.
pub async fn connect(
    url: &str,
    timeout: std::time::Duration,
) -> Result<(Client, PgConnection), String> {
    let (mut config, tls) = config(url)?;
    config.connect_timeout(timeout);
    match tokio::time::timeout(timeout, config.connect(tls.clone())).await {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(e)) => Err(crate::tls::cause(&e, &tls)),
        Err(_) => Err(format!("no connection within {timeout:?}")),
    }
}

/// The driver half of a connection from [`connect`]: spawn it.
pub type PgConnection = Connection<Socket, PgTlsStream<Socket>>;

/// tokio-postgres's reading of `url` without its TLS settings, and those settings (with the
/// environment's defaults). The error says why in words.
fn parse(url: &str) -> Result<(Config, crate::sslmode::TlsSettings), String> {
    let split = crate::sslmode::split(url, |name| std::env::var(name).ok())?;
    let config = Config::from_str(&split.rest).map_err(|e| pg_cause(&e))?;
    Ok((config, split.tls))
}

/// Where libpq looks for passwords: `PGPASSFILE`, else `~/.pgpass`.
fn passfile_path() -> Option<PathBuf> {
    match std::env::var_os("PGPASSFILE") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => std::env::var_os("HOME").map(|h| Path::new(&h).join(".pgpass")),
    }
}

/// The password file's password for `config`'s first host, port, database and user, if the
/// file exists, is private to its owner (as libpq requires: no group or world access), and has
/// a matching line.
fn passfile_password(path: &Path, config: &Config) -> Option<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the password file");
            return None;
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    "the password file has group or world access and is ignored; make it u=rw (0600) or less"
                );
                return None;
            }
        }
    }
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or(user);
    let hosts: Vec<String> = match (config.get_hosts().first(), config.get_hostaddrs().first()) {
        (Some(Host::Tcp(h)), _) => vec![h.clone()],
        (Some(Host::Unix(dir)), _) => vec!["localhost".to_owned(), dir.display().to_string()],
        (None, Some(addr)) => vec![addr.to_string()],
        (None, None) => vec!["localhost".to_owned()],
    };
    lookup(&text, &hosts, &port, dbname, user)
}

/// libpq's password file: lines `host:port:database:user:password`, `*` matching anything in
/// the first four fields, `\` escaping `:` and `\`, `#` starting a comment line. The first
/// line that matches gives the password.
fn lookup(text: &str, hosts: &[String], port: &str, dbname: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((host, rest)) = field(line) else {
            continue;
        };
        let Some((p, rest)) = field(rest) else {
            continue;
        };
        let Some((d, rest)) = field(rest) else {
            continue;
        };
        let Some((u, password)) = field(rest) else {
            continue;
        };
        let host_ok = host.matches_any(hosts);
        if host_ok && p.matches(port) && d.matches(dbname) && u.matches(user) {
            let mut out = String::with_capacity(password.len());
            let mut chars = password.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            return Some(out);
        }
    }
    None
}

/// One field of a password-file line: `*`, or text with `\` escapes.
enum Field {
    Any,
    Is(String),
}

impl Field {
    fn matches(&self, want: &str) -> bool {
        match self {
            Field::Any => true,
            Field::Is(s) => s == want,
        }
    }

    fn matches_any(&self, wants: &[String]) -> bool {
        wants.iter().any(|w| self.matches(w))
    }
}

/// The first field of `s` (up to an unescaped `:`) and what follows that `:`.
fn field(s: &str) -> Option<(Field, &str)> {
    if let Some(rest) = s.strip_prefix("*:") {
        return Some((Field::Any, rest));
    }
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.extend(chars.next().map(|(_, c)| c)),
            ':' => return Some((Field::Is(out), &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// Where a connection configuration makes a node connect: each host with its port, and each
/// `hostaddr` (which tokio-postgres connects to instead of the host's name).
pub fn targets(config: &Config) -> Vec<Target> {
    let ports = config.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut out: Vec<Target> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| match h {
            Host::Tcp(name) => Target::Tcp {
                host: name.clone(),
                port: port(i),
            },
            Host::Unix(dir) => Target::Socket {
                dir: dir.display().to_string(),
                port: port(i),
            },
        })
        .collect();
    out.extend(
        config
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, a)| Target::Tcp {
                host: a.to_string(),
                port: port(i),
            }),
    );
    out
}

/// The form `backend add` asks for.
pub const URL_FORM: &str = "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE";

/// Checks a backend's URL before any connection is attempted: a `postgres://` or
/// `postgresql://` URL that tokio-postgres reads, that means the same to every reader (no `@`
/// after the host), names a host and a database and carries no masked password (`***`).
/// Returns where it would make a node connect. The error is a sentence that completes
/// "body.url …" and never holds the password.
pub fn backend_targets(url: &str) -> Result<Vec<Target>, String> {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return Err(format!(
            "must be a PostgreSQL URL, {URL_FORM} (key=value strings and other schemes are not \
             accepted here)"
        ));
    };
    // tokio-postgres ends the user info at the first `@` wherever it is, other readers at the
    // end of the host: they must agree.
    if let (Some(at), Some(sep)) = (rest.find('@'), rest.find(['/', '?'])) {
        if at > sep {
            return Err(
                "has an '@' after the host: write it %40 in the database name and the parameters"
                    .to_owned(),
            );
        }
    }
    let (config, _) = parse(url).map_err(|e| format!("cannot be read: {e}"))?;
    let targets = targets(&config);
    if targets.is_empty() {
        return Err(format!("names no host: {URL_FORM}"));
    }
    if targets
        .iter()
        .any(|t| matches!(t, Target::Tcp { host, .. } if host.contains('@')))
    {
        return Err("has an '@' in its user name or password: write it %40".to_owned());
    }
    if config.get_dbname().is_none_or(str::is_empty) {
        return Err(format!("names no database: {URL_FORM}"));
    }
    if has_masked_password(url) {
        return Err(
            "has a masked password (***), as mezzanine shows URLs: give the real one, or none \
             and put it in the password file (PGPASSFILE, ~/.pgpass)"
                .to_owned(),
        );
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls_are_checked_before_connecting() {
        let ok = backend_targets("postgres://u:pw@db1.internal:6543/mydb");
        assert_eq!(
            ok,
            Ok(vec![Target::Tcp {
                host: "db1.internal".into(),
                port: 6543
            }])
        );
        let both = backend_targets("postgresql://u@a,b:5433/d?hostaddr=10.0.0.1,10.0.0.2");
        assert_eq!(both.map(|t| t.len()), Ok(4));
        let tls = backend_targets("postgres://u@h/d?sslmode=verify-full&sslrootcert=%2Fca.pem");
        assert_eq!(tls.map(|t| t.len()), Ok(1));
        let socket = backend_targets("postgres://u@%2Frun%2Fpg/d");
        assert!(
            matches!(socket.as_deref(), Ok([Target::Socket { dir, port: 5432 }]) if dir == "/run/pg"),
            "{socket:?}"
        );
        for (bad, why) in [
            (
                "host=h dbname=d password=secret",
                "must be a PostgreSQL URL",
            ),
            ("mysql://u:secret@h/d", "must be a PostgreSQL URL"),
            ("http://h/d", "must be a PostgreSQL URL"),
            ("postgres://u:secret@/d", "names no host"),
            ("postgres:///d", "names no host"),
            ("postgres://u:secret@h", "names no database"),
            ("postgres://u:secret@h/", "names no database"),
            ("postgres://u:secret@h:notaport/d", "cannot be read"),
            ("postgres://u:secret@h/d?nosuch=1", "cannot be read"),
            ("postgres://h/d?application_name=a@b", "'@' after the host"),
            ("postgres://u:p@ss@h/d", "'@' in its user name or password"),
            ("postgres://u:***@h/d", "masked password"),
            ("postgres://u@h/d?password=***", "masked password"),
            (
                "postgres://u:secret@h/d?sslmode=allow",
                "cannot be read: sslmode=allow",
            ),
            (
                "postgres://u:secret@h/d?sslmode=verify-ca",
                "cannot be read: sslmode=verify-ca needs the CA certificates",
            ),
        ] {
            match backend_targets(bad) {
                Ok(t) => panic!("{bad} accepted: {t:?}"),
                Err(e) => {
                    assert!(e.contains(why), "{bad}: {e}");
                    assert!(!e.contains("secret"), "{bad}: {e}");
                }
            }
        }
    }

    #[test]
    fn the_password_file_is_read_as_libpq_reads_it() {
        let text = "# comment\n\
                    other:5432:*:*:nope\n\
                    db1.internal:5432:mydb:alice:first\n\
                    *:*:*:alice:a\\:b\\\\c:d\n\
                    *:*:*:*:fallback\n";
        let hosts = |h: &str| vec![h.to_owned()];
        let find =
            |h: &str, port: &str, db: &str, user: &str| lookup(text, &hosts(h), port, db, user);
        assert_eq!(
            find("db1.internal", "5432", "mydb", "alice").as_deref(),
            Some("first")
        );
        assert_eq!(
            find("db1.internal", "5433", "mydb", "alice").as_deref(),
            Some("a:b\\c:d")
        );
        assert_eq!(find("db2", "5432", "x", "bob").as_deref(), Some("fallback"));
        assert_eq!(lookup("h:5432:d:u\n", &hosts("h"), "5432", "d", "u"), None);
        assert_eq!(
            lookup("h\\:x:1:d:u:pw\n", &hosts("h:x"), "1", "d", "u").as_deref(),
            Some("pw")
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_url_without_password_takes_the_password_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mz-pgpass-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("pgpass");
        let write = |mode: u32| {
            std::fs::write(&path, "127.0.0.1:5432:db:u:from-file\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let url = |s: &str| Config::from_str(s).unwrap();
        write(0o600);
        let c = url("postgres://u@127.0.0.1/db");
        assert_eq!(passfile_password(&path, &c).as_deref(), Some("from-file"));
        let c = url("postgres://u@127.0.0.1/other");
        assert_eq!(passfile_password(&path, &c), None);
        // Readable by others: ignored, as libpq ignores it.
        write(0o644);
        let c = url("postgres://u@127.0.0.1/db");
        assert_eq!(passfile_password(&path, &c), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
