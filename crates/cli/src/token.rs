//! Bearer tokens on the command line: `mezzanine token create`, and where the clients (the
//! admin commands, `bench`) find theirs.
//!
//! A client's token is, in order: `--token`, `$MEZZANINE_TOKEN`, else the `MEZZANINE_TOKEN`
//! of `.mezzanine/mezzanine.env` in the current folder (what `mezzanine dev` writes there)
//! when that file's `MEZZANINE_URL` names the server being asked, so that the commands work
//! against a dev cluster as they are written in the README, and a dev token is never sent to
//! another server.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use mezzanine_server::auth::limits::Limit;
use mezzanine_server::auth::tokens::{self, Scope};

/// The folder `mezzanine dev` uses by default, and its environment file.
pub const DEV_ENV: &str = ".mezzanine/mezzanine.env";

/// `mezzanine token ...`.
#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Make a new random token: print it (shown only now) and the line that lets a server
    /// accept it (for the token file, TOKEN_FILE, or TOKENS).
    Create(CreateArgs),
}

/// `mezzanine token create`.
#[derive(clap::Args)]
pub struct CreateArgs {
    /// The token's name, shown in the audit log and the status (1 to 63 letters, digits,
    /// '_', '-' or '.'; unique among a server's tokens).
    #[arg(long)]
    name: String,
    /// What it may do: read, write or admin (admin includes write, which includes read).
    #[arg(long, value_parser = parse_scope)]
    scopes: Scope,
    /// The token's own rate limit, written on its line (`rate=...`): `N/s`, `N/m` or `N/h`,
    /// optionally `,burst=B` (e.g. 200/s,burst=400), or `off`. Without it, the server's
    /// default applies (RATE_LIMIT for /v1, ADMIN_RATE_LIMIT for the admin API).
    #[arg(long, value_name = "LIMIT", value_parser = parse_rate)]
    rate: Option<Limit>,
    /// Also append the line to this token file (created, readable by its owner only, when
    /// missing).
    #[arg(long, value_name = "FILE")]
    append: Option<PathBuf>,
    /// Print {"name", "scopes", "token", "line"} as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse_list(s)
}

fn parse_rate(s: &str) -> Result<Limit, String> {
    s.parse()
}

pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create(args) => create(args),
    }
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    if !tokens::valid_name(&args.name) {
        bail!(
            "--name {:?}: use 1 to 63 letters, digits, '_', '-' or '.'",
            args.name
        );
    }
    let token = tokens::new_token();
    let line = tokens::token_line_with_rate(&args.name, args.scopes, &token, args.rate);
    if let Some(file) = &args.append {
        append_line(file, &args.name, &line)?;
    }
    if args.json {
        let v = serde_json::json!({
            "name": args.name,
            "scopes": args.scopes.as_str(),
            "rate": args.rate.map(|r| r.to_string()),
            "token": token,
            "line": line,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("MEZZANINE_TOKEN={token}");
        println!("{line}");
    }
    let added = match &args.append {
        Some(f) => format!("The line was added to {}; ", f.display()),
        None => "Add the second line to the token file (TOKEN_FILE) of every node, or to TOKENS; "
            .to_owned(),
    };
    eprintln!(
        "The first line is the token, shown only now: give it to the client (MEZZANINE_TOKEN, \
         or --token). {added}nodes read the token file again within seconds."
    );
    Ok(())
}

/// Appends `line` to the token file `file`, which must not name `name` already.
fn append_line(file: &Path, name: &str, line: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let existing = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let mut entries = tokens::parse_lines(&existing)
        .map_err(|e| anyhow::anyhow!("{} is not a valid token file: {e}", file.display()))?;
    let entry = tokens::parse_lines(line)
        .map_err(anyhow::Error::msg)?
        .pop()
        .context("no token line")?;
    tokens::add(&mut entries, entry).map_err(|e| {
        anyhow::anyhow!("{}: {e}", file.display()).context(format!("token {name:?} not added"))
    })?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot open {}", file.display()))?;
    let sep = if existing.is_empty() || existing.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    f.write_all(format!("{sep}{line}\n").as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(())
}

/// The value of `key` in an environment file of `KEY=VALUE` lines (as `mezzanine dev` writes).
pub fn env_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The token a client of `server` sends: `given` (`--token` or `$MEZZANINE_TOKEN`), else the
/// dev cluster's of [`DEV_ENV`] when it names `server`.
pub fn resolve(given: Option<&str>, server: &str) -> Option<String> {
    if let Some(t) = given.map(str::trim).filter(|t| !t.is_empty()) {
        return Some(t.to_owned());
    }
    let text = std::fs::read_to_string(DEV_ENV).ok()?;
    from_dev_env(&text, server)
}

/// The dev cluster's token in `text` (a [`DEV_ENV`]) if its `MEZZANINE_URL` is `server`.
pub fn from_dev_env(text: &str, server: &str) -> Option<String> {
    let url = env_value(text, "MEZZANINE_URL")?;
    let same = |a: &str, b: &str| a.trim().trim_end_matches('/') == b.trim().trim_end_matches('/');
    if !same(&url, server) {
        return None;
    }
    env_value(text, "MEZZANINE_TOKEN")
}

/// Headers that carry `token` (none without one).
pub fn bearer_headers(token: Option<&str>) -> anyhow::Result<reqwest::header::HeaderMap> {
    let mut h = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| anyhow::anyhow!("the token holds characters a header cannot carry"))?;
        v.set_sensitive(true);
        h.insert(reqwest::header::AUTHORIZATION, v);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_token_goes_only_to_the_dev_server() {
        let env = "# Written by `mezzanine dev`\nMEZZANINE_URL=http://127.0.0.1:8080\nMEZZANINE_TOKEN=mzt_abc\n";
        assert_eq!(
            from_dev_env(env, "http://127.0.0.1:8080/").as_deref(),
            Some("mzt_abc")
        );
        assert_eq!(from_dev_env(env, "http://db.example:8080"), None);
        assert_eq!(
            from_dev_env("MEZZANINE_TOKEN=mzt_abc\n", "http://127.0.0.1:8080"),
            None
        );
        assert_eq!(
            resolve(Some(" mzt_given "), "http://x:1").as_deref(),
            Some("mzt_given")
        );
    }

    #[test]
    fn appending_refuses_a_name_twice() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        let line = tokens::token_line("ops", Scope::Admin, &tokens::new_token());
        append_line(&file, "ops", &line).unwrap();
        let again = tokens::token_line("ops", Scope::Read, &tokens::new_token());
        let e = append_line(&file, "ops", &again).unwrap_err();
        assert!(format!("{e:#}").contains("given twice"), "{e:#}");
        let other = tokens::token_line("ci", Scope::Write, &tokens::new_token());
        append_line(&file, "ci", &other).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text, format!("{line}\n{other}\n"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
