//! Getting the binary: the shell completions and man pages it prints, the LICENSE, and the
//! example deployment files under contrib/, checked against the real binary and the project's
//! own shards.json parser. No PostgreSQL needed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_mezzanine");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout_of(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "mezzanine {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a `--help` lists under "Commands:" (clap's `help` left out).
fn listed_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every command path of the binary, from its own `--help` output: `["serve"]`,
/// `["move", "start"]`, ...
fn command_paths() -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        for name in listed_commands(&stdout_of(&args)) {
            let mut sub = path.clone();
            sub.push(name);
            paths.push(sub.clone());
            todo.push(sub);
        }
    }
    paths
}

/// What bash completes for `words` (the last one being completed), using the script
/// `mezzanine completions bash` prints, as bash-completion would call it.
fn bash_complete(words: &[&str]) -> BTreeSet<String> {
    let script = stdout_of(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mezzanine.bash");
    std::fs::write(&path, script).unwrap();
    let cword = words.len() - 1;
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let driver = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={cword}\n_mezzanine mezzanine '{}' '{prev}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        path.display(),
        quoted.join(" "),
        words[cword],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &driver])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn bash_completion_completes_the_commands_and_their_flags() {
    let script = stdout_of(&["completions", "bash"]);
    assert!(
        script.contains("_mezzanine()"),
        "not a bash script:\n{script}"
    );
    for name in listed_commands(&stdout_of(&["--help"])) {
        assert!(
            script.contains(&format!("mezzanine,{name})")),
            "the bash script does not know `{name}`"
        );
    }
    // As bash runs it: the script completes subcommands and flags.
    assert_eq!(
        bash_complete(&["mezzanine", "re"]),
        set(&["rebalance", "reload"])
    );
    assert_eq!(
        bash_complete(&["mezzanine", "move", "st"]),
        set(&["start", "status"])
    );
    let flags = bash_complete(&["mezzanine", "move", "start", "--"]);
    for flag in ["--shards", "--to", "--parallel", "--wait", "--server"] {
        assert!(flags.contains(flag), "{flag} not completed: {flags:?}");
    }
}

#[test]
fn every_shell_gets_a_script_and_an_unknown_one_is_refused() {
    for (shell, marker) in [
        ("bash", "complete -F _mezzanine"),
        ("zsh", "#compdef mezzanine"),
        ("fish", "complete -c mezzanine"),
        ("elvish", "edit:completion:arg-completer[mezzanine]"),
        (
            "powershell",
            "Register-ArgumentCompleter -Native -CommandName 'mezzanine'",
        ),
    ] {
        let script = stdout_of(&["completions", shell]);
        assert!(
            script.contains(marker),
            "not a {shell} script: no {marker:?}"
        );
        for name in ["move", "rebalance", "serve", "max-rows-per-sec"] {
            assert!(script.contains(name), "{shell}: no `{name}` in the script");
        }
    }
    let out = run(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell must be a usage error"
    );
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    // stdout is a pipe whose read end is already closed: every write fails with EPIPE.
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(["completions", "zsh"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn man_prints_the_top_level_page_in_roff() {
    let page = stdout_of(&["man"]);
    assert!(page.contains(".TH mezzanine 1"), "no .TH header:\n{page}");
    assert!(page.contains(".SH NAME"), "{page}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for name in listed_commands(&stdout_of(&["--help"])) {
        let reference = format!("mezzanine\\-{}(1)", name.replace('-', "\\-"));
        assert!(page.contains(&reference), "no {reference} in the page");
    }
    assert!(
        !page.contains("mezzanine\\-help(1)"),
        "the page names a help page that is never written"
    );
}

#[test]
fn man_out_writes_one_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("share/man/man1"); // created by the command
    let listing = stdout_of(&["man", "--out", out.to_str().unwrap()]);

    let written: BTreeSet<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut expected = set(&["mezzanine.1"]);
    for path in command_paths() {
        expected.insert(format!("mezzanine-{}.1", path.join("-")));
    }
    assert_eq!(written, expected, "one page per command of `--help`");
    assert!(expected.contains("mezzanine-move-start.1"));
    assert!(expected.contains("mezzanine-rebalance-apply.1"));

    // It says what it wrote: one path per line.
    let listed: BTreeSet<String> = listing
        .lines()
        .map(|l| {
            let p = Path::new(l);
            assert_eq!(p.parent(), Some(out.as_path()), "{l}");
            p.file_name().unwrap().to_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(listed, written);

    let start = std::fs::read_to_string(out.join("mezzanine-move-start.1")).unwrap();
    assert!(start.contains(".TH mezzanine-move-start 1"), "{start}");
    assert!(start.contains("\\-\\-shards"), "{start}");
    let serve = std::fs::read_to_string(out.join("mezzanine-serve.1")).unwrap();
    for var in ["SHARD_CONFIG_PATH", "DB_QUERY_TIMEOUT"] {
        let says = format!("May also be specified with the \\fB{var}\\fR environment variable");
        assert!(
            serve.contains(&says),
            "the serve page must name {var}:\n{serve}"
        );
    }
}

const FNV_OF_THE_LICENSE: u64 = 0x2eb9_294a_0308_d938;

#[test]
fn license_is_the_apache_license_2_0_of_cargo_toml() {
    let cargo = read("Cargo.toml");
    assert!(cargo.contains("license = \"Apache-2.0\""), "{cargo}");
    let license = read("LICENSE");
    let head: Vec<&str> = license
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(3)
        .collect();
    assert_eq!(
        head,
        [
            "Apache License",
            "Version 2.0, January 2004",
            "http://www.apache.org/licenses/"
        ]
    );
    // The complete text: every section, the end of the terms and the appendix.
    for heading in [
        "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
        "1. Definitions.",
        "2. Grant of Copyright License.",
        "3. Grant of Patent License.",
        "4. Redistribution.",
        "5. Submission of Contributions.",
        "6. Trademarks.",
        "7. Disclaimer of Warranty.",
        "8. Limitation of Liability.",
        "9. Accepting Warranty or Additional Liability.",
        "END OF TERMS AND CONDITIONS",
        "APPENDIX: How to apply the Apache License to your work.",
    ] {
        assert!(license.contains(heading), "LICENSE lacks {heading:?}");
    }
    // Word for word: the standard text (apache.org's LICENSE-2.0.txt, 11358 bytes) has this
    // FNV-1a 64-bit hash.
    assert_eq!(license.len(), 11358, "the standard text is 11358 bytes");
    let fnv = license.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    assert_eq!(
        fnv, FNV_OF_THE_LICENSE,
        "LICENSE differs from the standard text"
    );
}

/// The lines of a YAML block: from `header` to the next line indented as much or less.
fn yaml_block(text: &str, header: &str) -> String {
    let indent = header.len() - header.trim_start().len();
    let mut lines = text.lines().skip_while(|l| *l != header);
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no {header:?} in the compose file"));
    let rest = lines.take_while(|l| {
        l.trim().is_empty() || l.starts_with('#') || l.len() - l.trim_start().len() > indent
    });
    std::iter::once(first)
        .chain(rest)
        .map(|l| format!("{l}\n"))
        .collect()
}

fn top_level_section(compose: &str, key: &str) -> String {
    yaml_block(compose, &format!("{key}:"))
}

fn service_section(compose: &str, service: &str) -> String {
    yaml_block(
        &top_level_section(compose, "services"),
        &format!("  {service}:"),
    )
}

/// `KEY: value` lines of the `environment:` block of the compose service `service`.
fn compose_environment(compose: &str, service: &str) -> Vec<(String, String)> {
    let section = service_section(compose, service);
    let block: Vec<&str> = section
        .lines()
        .skip_while(|l| l.trim() != "environment:")
        .skip(1)
        .take_while(|l| l.starts_with("      "))
        .collect();
    assert!(!block.is_empty(), "no environment for {service}");
    block
        .iter()
        .map(|l| {
            let (k, v) = l.trim().split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().trim_matches('"').to_owned())
        })
        .collect()
}

#[test]
fn compose_shards_json_covers_the_compose_num_shards() {
    let compose = read("contrib/docker-compose.yml");
    let env = compose_environment(&compose, "mezzanine");
    let get = |key: &str| {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{key} not set for mezzanine in the compose file"))
    };
    let num_shards: u32 = get("NUM_SHARDS").parse().unwrap();

    // The project's own parser, as `mezzanine serve` calls it at start: the ranges cover
    // 0..NUM_SHARDS-1 exactly once.
    let map = mezzanine_core::ShardMap::parse(&read("contrib/shards.json"), num_shards)
        .unwrap_or_else(|e| panic!("contrib/shards.json with NUM_SHARDS={num_shards}: {e}"));
    assert_eq!(map.num_shards(), num_shards);
    assert!((0..num_shards).all(|s| map.owner(s).is_some()));

    // The file the node reads is this one, and each backend is a service of the compose file
    // that the node waits for.
    let services = top_level_section(&compose, "services");
    let node = service_section(&compose, "mezzanine");
    let mount = format!("./shards.json:{}", get("SHARD_CONFIG_PATH"));
    assert!(
        compose.contains(&mount),
        "shards.json is not mounted at SHARD_CONFIG_PATH"
    );
    for b in map.backends() {
        // postgres://user:pass@HOST:port/db
        let host = b.database_url.rsplit_once('@').unwrap().1;
        let host = host.split([':', '/']).next().unwrap();
        assert!(
            services.contains(&format!("\n  {host}:\n")),
            "backend {}: no compose service {host}",
            b.name
        );
        let healthy = format!("\n      {host}:\n        condition: service_healthy\n");
        assert!(
            node.contains(&healthy),
            "mezzanine does not wait for {host} to be healthy"
        );
    }
}

/// The variables `mezzanine serve` reads, from its own help (`[env: NAME=...]`).
fn serve_variables() -> BTreeSet<String> {
    stdout_of(&["serve", "--help"])
        .split("[env: ")
        .skip(1)
        .filter_map(|s| s.split_once('=').map(|(name, _)| name.to_owned()))
        .collect()
}

#[test]
fn contrib_sets_only_variables_mezzanine_reads() {
    let known = serve_variables();
    assert!(known.contains("SHARD_CONFIG_PATH") && known.contains("DB_MAX_CONNS"));

    let compose = read("contrib/docker-compose.yml");
    for (key, _) in compose_environment(&compose, "mezzanine") {
        assert!(
            known.contains(&key),
            "compose sets {key}, which mezzanine does not read"
        );
    }
    // The systemd env file, commented-out examples included.
    let env = read("contrib/systemd/mezzanine.env");
    let mut keys = 0;
    for line in env.lines() {
        let line = line.strip_prefix('#').unwrap_or(line);
        if let Some((key, _)) = line.split_once('=') {
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                assert!(
                    known.contains(key),
                    "mezzanine.env sets {key}, which mezzanine does not read"
                );
                keys += 1;
            }
        }
    }
    assert!(keys >= 6, "mezzanine.env sets {keys} variables");
}

#[test]
fn systemd_unit_starts_a_command_that_exists() {
    let unit = read("contrib/systemd/mezzanine.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("no ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/mezzanine"));
    let args: Vec<&str> = words.collect();
    assert!(!args.is_empty(), "ExecStart names no command");
    // The binary accepts that command line (`--help` added: it parses, then prints usage).
    let mut with_help = args.clone();
    with_help.push("--help");
    let help = stdout_of(&with_help);
    assert!(
        help.contains(&format!("Usage: mezzanine {}", args.join(" "))),
        "{help}"
    );
    for line in [
        "User=mezzanine",
        "EnvironmentFile=/etc/mezzanine/mezzanine.env",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
}
