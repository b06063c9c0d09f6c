//! `mezzanine token create` as an operator runs it: the token and its line on stdout, the
//! line appended to a token file with `--append`, and a real server reading that file and
//! accepting the token from the admin commands (`--token`, `MEZZANINE_TOKEN`).

use std::process::{Command, Output};

use mezzanine_e2e::{default_config, even_map, fresh_databases, TestServer};
use mezzanine_server::auth::tokens::hash_token;

const BIN: &str = env!("CARGO_BIN_EXE_mezzanine");

fn mezzanine(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("MEZZANINE_TOKEN")
        .env_remove("MEZZANINE_URL")
        .envs(envs.iter().copied())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn create_prints_the_token_and_the_line_of_its_hash() {
    let out = mezzanine(
        &["token", "create", "--name", "ops", "--scopes", "admin"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let token = lines[0]
        .strip_prefix("MEZZANINE_TOKEN=")
        .expect("the token line");
    assert!(token.starts_with("mzt_") && token.len() == 68, "{token}");
    let words: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(words[..2], ["ops", "admin"], "{stdout}");
    assert_eq!(words[2], format!("sha256:{}", hex(&hash_token(token))));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("shown only now") && stderr.contains("TOKEN_FILE"),
        "{stderr}"
    );

    // Another run, another token; --json says the same.
    let out = mezzanine(
        &[
            "token",
            "create",
            "--name",
            "ci",
            "--scopes",
            "read,write",
            "--json",
        ],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "ci");
    assert_eq!(v["scopes"], "write");
    assert_ne!(v["token"].as_str(), Some(token));
    assert!(
        v["line"].as_str().unwrap().starts_with("ci write sha256:"),
        "{v}"
    );

    // Bad names and scopes say why.
    let out = mezzanine(
        &["token", "create", "--name", "a b", "--scopes", "admin"],
        &[],
    );
    assert!(!out.status.success() && text(&out.stderr).contains("--name \"a b\""));
    let out = mezzanine(&["token", "create", "--name", "x", "--scopes", "root"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("unknown scope \"root\""));
}

#[test]
fn create_writes_the_tokens_own_rate_on_its_line() {
    let out = mezzanine(
        &[
            "token",
            "create",
            "--name",
            "ingest",
            "--scopes",
            "write",
            "--rate",
            "200/s,burst=400",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let line = stdout.lines().nth(1).unwrap_or_default();
    assert!(line.starts_with("ingest write sha256:"), "{stdout}");
    assert!(line.ends_with(" rate=200/s,burst=400"), "{stdout}");
    // The server reads the line as written.
    let entries = mezzanine_server::auth::tokens::parse_lines(line).unwrap();
    assert_eq!(
        entries[0].rate.map(|r| r.to_string()).as_deref(),
        Some("200/s,burst=400")
    );
    // A bad rate says why, before any token is made.
    let out = mezzanine(
        &[
            "token", "create", "--name", "x", "--scopes", "read", "--rate", "fast",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is not a rate limit"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_token_opens_the_admin_api_of_a_server_reading_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let out = mezzanine(
        &[
            "token", "create", "--name", "ops", "--scopes", "admin", "--append",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "--append needs a file");
    let create = |name: &str, scopes: &str| {
        let out = mezzanine(
            &[
                "token",
                "create",
                "--name",
                name,
                "--scopes",
                scopes,
                "--append",
                file.to_str().unwrap(),
            ],
            &[],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("MEZZANINE_TOKEN="))
            .unwrap()
            .to_owned()
    };
    let admin = create("ops", "admin");
    let reader = create("viewer", "read");
    // A name once only.
    let out = mezzanine(
        &[
            "token",
            "create",
            "--name",
            "ops",
            "--scopes",
            "read",
            "--append",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        !out.status.success() && text(&out.stderr).contains("given twice"),
        "{}",
        text(&out.stderr)
    );

    let urls = fresh_databases(2).await;
    let mut config = default_config();
    config.tokens = None;
    config.token_file = Some(file.clone());
    let srv = TestServer::start(config, even_map(&urls, 8)).await;
    let status = |envs: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["status", "--server", srv.base.as_str()];
        args.extend_from_slice(extra);
        mezzanine(&args, envs)
    };
    let out = status(&[("MEZZANINE_TOKEN", admin.as_str())], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ops, viewer"),
        "{}",
        text(&out.stdout)
    );
    let out = status(&[], &["--token", admin.as_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = status(&[], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("needs a bearer token with scope admin"),
        "{}",
        text(&out.stderr)
    );
    let out = status(&[("MEZZANINE_TOKEN", reader.as_str())], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("token \"viewer\" has scope read; the admin API needs scope admin"),
        "{}",
        text(&out.stderr)
    );
    srv.stop().await;
}
