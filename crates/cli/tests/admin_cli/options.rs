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
