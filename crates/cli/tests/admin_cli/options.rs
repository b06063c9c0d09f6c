//! Where `--server` and `--json` go, and what the help says of shard sets.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn server_and_json_are_accepted_before_the_command_too() {
    let (fake, url) = fake().await;
    let status = json!({"node": null, "leader": null, "map_version": 7});
    fake.on("GET", "/admin/v1/status", 200, status.clone());
    fake.on("GET", "/admin/v1/moves", 200, json!({"moves": []}));
    // The very top, as after the command.
    run_with(&["--server", &url, "status"], &[], &[])
        .await
        .ok()
        .stdout_has("map     version 7");
    run_with(&["--server", &url, "move", "list"], &[], &[])
        .await
        .ok()
        .stdout_has("no moves");
    let out = run_with(&["--json", "--server", &url, "status"], &[], &[]).await;
    out.ok();
    assert_eq!(out.stdout_json(), status);
    // Before the command, it wins over MEZZANINE_URL (here a server that is not there).
    let nobody = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    run_with(
        &["--server", &url, "status"],
        &[],
        &[("MEZZANINE_URL", &nobody)],
    )
    .await
    .ok()
    .stdout_has("map     version 7");
    let seen = fake.seen();
    assert_eq!(seen.len(), 4, "{seen:#?}");

    // Two different servers, or one before a command that is not an admin command: usage
    // errors, no request.
    let (fake, url) = self::fake().await;
    let out = run_with(&["--server", &nobody, "status", "--server", &url], &[], &[]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("--server is given twice"),
        "{}",
        out.stderr
    );
    let out = run_with(&["--server", &url, "serve"], &[], &[]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("for the admin commands"),
        "{}",
        out.stderr
    );
    assert!(fake.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_help_of_shards_shows_lists() {
    for command in [&["move", "start", "--help"][..], &["verify", "--help"][..]] {
        let out = run_with(command, &[], &[]).await;
        out.ok().stdout_has("1,3,5-7");
    }
}

/// A reader that stops early (`mezzanine move list --json | head -c 1`) ends the command
/// quietly: no panic on the closed pipe.
#[tokio::test(flavor = "multi_thread")]
async fn a_reader_that_stops_early_ends_the_command_quietly() {
    let (fake, url) = fake().await;
    // An answer far larger than a pipe's buffer, so that printing meets the closed pipe.
    let moves: Vec<Value> = (0..3000)
        .map(|i| {
            json!({"id": i + 1, "state": "completed", "to": "db2", "shards": "1-7",
            "parallel": 1, "max_rows_per_sec": null, "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z", "error": null, "shards_detail": []})
        })
        .collect();
    fake.on("GET", "/admin/v1/moves", 200, json!({ "moves": moves }));
    let mut child = tokio::process::Command::new(BIN)
        .args(["move", "list", "--json", "--server", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut stdout, &mut first)
        .await
        .unwrap();
    drop(stdout);
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}
