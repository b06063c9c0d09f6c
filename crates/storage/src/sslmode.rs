//! libpq's TLS settings of a connection string, taken out of it before tokio-postgres reads
//! the rest (tokio-postgres knows only `disable`, `prefer` and `require`, and no root
//! certificates). Pure: the environment is passed in.
//!
//! - `sslmode`: `disable`, `prefer` (libpq's default), `require`, `verify-ca`, `verify-full`;
//!   `PGSSLMODE` when the string has none.
//! - `sslrootcert=PATH`: a PEM file of the CA certificates that sign the server's certificate;
//!   `PGSSLROOTCERT` when the string has none.
//!
//! Both are read where tokio-postgres reads parameters: a URL's query
//! (`postgres://…/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem`, percent-encoded) and
//! `key=value` strings (`host=h sslmode=require`, quotes and backslash escapes as there). The
//! last occurrence wins, as in tokio-postgres. Text the grammar does not read is left as it
//! is, for tokio-postgres to refuse with its own words.

use std::path::PathBuf;

/// libpq's `sslmode`, the values mezzanine supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, nothing checked; plain text otherwise.
    Prefer,
    /// TLS or no connection; the certificate is checked only when a root certificate file
    /// is given (then as `verify-ca`, as libpq does).
    Require,
    /// TLS, the server's certificate signed by a CA of `sslrootcert`; its names not checked.
    VerifyCa,
    /// As `verify-ca`, and the certificate names the host connected to (name or IP address).
    VerifyFull,
}

impl SslMode {
    /// The values, as written.
    pub const VALUES: &'static str = "disable, prefer, require, verify-ca or verify-full";

    pub fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// What the client checks of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Nothing (the connection is encrypted, the server not authenticated).
    Nothing,
    /// That a CA of the root certificate file signed it.
    Chain,
    /// That, and that it names the host.
    ChainAndName,
}

/// Where a setting came from, for messages in the user's notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The connection string.
    String,
    /// The environment variable (`PGSSLMODE`, `PGSSLROOTCERT`).
    Env,
    /// Neither: libpq's default.
    Default,
}

/// The TLS settings of one connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub mode_source: Source,
    /// The CA certificates (PEM) that sign the server's certificate.
    pub root_cert: Option<PathBuf>,
    pub root_cert_source: Source,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            mode: SslMode::Prefer,
            mode_source: Source::Default,
            root_cert: None,
            root_cert_source: Source::Default,
        }
    }
}

impl TlsSettings {
    /// What is checked of the server's certificate.
    pub fn verify(&self) -> Verify {
        match (self.mode, &self.root_cert) {
            (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => Verify::Nothing,
            (SslMode::Require, Some(_)) | (SslMode::VerifyCa, _) => Verify::Chain,
            (SslMode::VerifyFull, _) => Verify::ChainAndName,
        }
    }

    /// The mode tokio-postgres negotiates with: whether TLS is off, optional or required.
    pub fn driver_mode(&self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as D;
        match self.mode {
            SslMode::Disable => D::Disable,
            SslMode::Prefer => D::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => D::Require,
        }
    }

    /// The mode as the user set it: `sslmode=verify-full`, `PGSSLMODE=require`, or
    /// `sslmode=prefer, the default`.
    pub fn mode_notation(&self) -> String {
        let mode = self.mode.as_str();
        match self.mode_source {
            Source::String => format!("sslmode={mode}"),
            Source::Env => format!("PGSSLMODE={mode}"),
            Source::Default => format!("sslmode={mode}, the default"),
        }
    }

    /// The root certificate file as the user named it: `sslrootcert /etc/ca.pem` or
    /// `PGSSLROOTCERT /etc/ca.pem`.
    pub fn root_cert_notation(&self) -> String {
        let path = self
            .root_cert
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        match self.root_cert_source {
            Source::Env => format!("PGSSLROOTCERT {path}"),
            Source::String | Source::Default => format!("sslrootcert {path}"),
        }
    }
}

/// A connection string without its TLS settings, and those settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The string for tokio-postgres: `sslmode` and `sslrootcert` taken out.
    pub rest: String,
    pub tls: TlsSettings,
}

/// Takes `sslmode` and `sslrootcert` out of connection string `s`, with `env` (`PGSSLMODE`,
/// `PGSSLROOTCERT`) for what the string does not set. The error is a sentence naming the
/// setting as the user wrote it; it never quotes the string (which may hold a password).
pub fn split(s: &str, env: impl Fn(&str) -> Option<String>) -> Result<Split, String> {
    let (rest, found) = match url_query(s) {
        Some(query) => take_from_url(s, query),
        None => take_from_kv(s),
    };
    let from_env = |name: &str| env(name).filter(|v| !v.is_empty());
    let (mode_text, mode_source) = match found.mode {
        Some(m) => (Some(m), Source::String),
        None => match from_env("PGSSLMODE") {
            Some(m) => (Some(m), Source::Env),
            None => (None, Source::Default),
        },
    };
    let name = match mode_source {
        Source::Env => "PGSSLMODE",
        Source::String | Source::Default => "sslmode",
    };
    let mode = match mode_text {
        None => SslMode::Prefer,
        Some(m) => match SslMode::parse(&m) {
            Some(mode) => mode,
            None if m == "allow" => {
                return Err(format!(
                    "{name}=allow is not supported: use prefer (TLS when the server offers \
                     it) or disable"
                ))
            }
            None => {
                return Err(format!(
                    "{name}={m:?} is not a TLS mode: use {}",
                    SslMode::VALUES
                ))
            }
        },
    };
    let (root_cert, root_cert_source) = match found.root.filter(|r| !r.is_empty()) {
        Some(r) => (Some(r), Source::String),
        None => match from_env("PGSSLROOTCERT") {
            Some(r) => (Some(r), Source::Env),
            None => (None, Source::Default),
        },
    };
    if root_cert.as_deref() == Some("system") {
        let name = match root_cert_source {
            Source::Env => "PGSSLROOTCERT",
            Source::String | Source::Default => "sslrootcert",
        };
        return Err(format!(
            "{name}=system (the system's CA store) is not supported: give the path of a PEM \
             file of the CA certificates"
        ));
    }
    let tls = TlsSettings {
        mode,
        mode_source,
        root_cert: root_cert.map(PathBuf::from),
        root_cert_source,
    };
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && tls.root_cert.is_none() {
        return Err(format!(
            "{} needs the CA certificates that sign the server's certificate: add \
             sslrootcert=PATH (a PEM file), or set PGSSLROOTCERT",
            tls.mode_notation()
        ));
    }
    Ok(Split { rest, tls })
}

/// The TLS parameters found in a string (the last of each).
#[derive(Debug, Default)]
struct Found {
    mode: Option<String>,
    root: Option<String>,
}

impl Found {
    /// Records `key`'s value if it is one of ours; whether it was.
    fn take(&mut self, key: &str, value: String) -> bool {
        match key {
            "sslmode" => self.mode = Some(value),
            "sslrootcert" => self.root = Some(value),
            _ => return false,
        }
        true
    }
}

/// Where a URL's query starts (after its `?`), read as tokio-postgres reads it: the user info
/// ends at the first `@` anywhere, the query starts at the first `?` after that. `None` when
/// `s` is not a `postgres://` or `postgresql://` URL; `Some(s.len())` when it has no query.
fn url_query(s: &str) -> Option<usize> {
    let after = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|p| s.strip_prefix(p).map(|_| p.len()))?;
    let creds_end = s[after..].find('@').map_or(after, |i| after + i + 1);
    Some(
        s[creds_end..]
            .find('?')
            .map_or(s.len(), |i| creds_end + i + 1),
    )
}

/// A URL's TLS parameters taken out of its query (`query`: where the query starts).
fn take_from_url(s: &str, query: usize) -> (String, Found) {
    let mut found = Found::default();
    if query >= s.len() {
        return (s.to_owned(), found);
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut removed = false;
    let mut at = query;
    while at < s.len() {
        // tokio-postgres: the key runs to the next `=`, the value to the next `&`.
        let Some(eq) = s[at..].find('=').map(|i| at + i) else {
            // Unterminated: tokio-postgres refuses it; leave it.
            kept.push(&s[at..]);
            break;
        };
        let end = s[eq + 1..].find('&').map_or(s.len(), |i| eq + 1 + i);
        let key = percent_encoding::percent_decode_str(&s[at..eq]).decode_utf8();
        let value = percent_encoding::percent_decode_str(&s[eq + 1..end]).decode_utf8();
        match (key, value) {
            (Ok(k), Ok(v)) if found.take(&k, v.to_string()) => removed = true,
            _ => kept.push(&s[at..end]),
        }
        at = end + 1;
    }
    if !removed {
        return (s.to_owned(), found);
    }
    let mut out = s[..query].to_owned();
    if kept.is_empty() {
        out.pop(); // the `?`
    } else {
        out.push_str(&kept.join("&"));
    }
    (out, found)
}

/// A `key=value` string's TLS parameters taken out, read with tokio-postgres's grammar
/// (white space around `=`, single quotes, backslash escapes). Where the grammar fails, the
/// string is left whole, for tokio-postgres to refuse.
fn take_from_kv(s: &str) -> (String, Found) {
    let mut found = Found::default();
    let mut spans = Vec::new();
    let mut at = 0;
    loop {
        let Some(param) = kv_param(s, at) else {
            return (s.to_owned(), Found::default());
        };
        let Some((start, key, value, end)) = param else {
            break;
        };
        if found.take(key, value) {
            spans.push(start..end);
        }
        at = end;
    }
    let mut out = String::with_capacity(s.len());
    let mut from = 0;
    for r in spans {
        out.push_str(&s[from..r.start]);
        out.push(' ');
        from = r.end;
    }
    out.push_str(&s[from..]);
    (out, found)
}

/// The parameter at or after `at`: `Some(None)` at the end, `None` where the grammar fails,
/// else its start, key, value (unescaped) and end.
#[allow(clippy::type_complexity)]
fn kv_param(s: &str, at: usize) -> Option<Option<(usize, &str, String, usize)>> {
    let skip_ws = |i: usize| {
        s[i..]
            .find(|c: char| !c.is_whitespace())
            .map_or(s.len(), |n| i + n)
    };
    let start = skip_ws(at);
    let key_end = s[start..]
        .find(|c: char| c.is_whitespace() || c == '=')
        .map_or(s.len(), |n| start + n);
    if key_end == start {
        // The end (or an `=` with no key, which ends tokio-postgres's reading too).
        return Some(None);
    }
    let eq = skip_ws(key_end);
    if !s[eq..].starts_with('=') {
        return None;
    }
    let value_start = skip_ws(eq + 1);
    let mut value = String::new();
    let mut chars = s[value_start..].char_indices();
    let quoted = s[value_start..].starts_with('\'');
    if quoted {
        chars.next();
    }
    let mut end = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, next)) = chars.next() {
                    value.push(next);
                }
            }
            '\'' if quoted => {
                end = Some(value_start + i + 1);
                break;
            }
            c if !quoted && c.is_whitespace() => {
                end = Some(value_start + i);
                break;
            }
            c => value.push(c),
        }
    }
    let end = match end {
        Some(e) => e,
        None if quoted => return None,
        None => s.len(),
    };
    if !quoted && value.is_empty() {
        return None;
    }
    Some(Some((start, &s[start..key_end], value, end)))
}

#[cfg(test)]
mod tests;
