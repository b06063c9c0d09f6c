//! `mezzanine plugins …`: the requests each command sends (method, path, query, body), its
//! tables and messages, `--json`, and the server's problems said as the other commands say
//! them.

use super::*;

fn plugin(name: &str, state: &str) -> Value {
    json!({"id": "0b0e7a0e-8f6e-4a43-9a4e-4c1d1c7e2f01", "name": name,
           "endpoint": "http://billing:9000/rpc", "subscribed_columns": ["profile", "settings"],
           "status": "active", "created_at": "2026-01-01T00:00:00Z",
           "deliver_from": "2026-01-01T00:00:00Z", "state": state,
           "last_error": "HTTP 503 from the plugin", "last_error_at": "2026-01-01T00:05:00Z",
           "parked": 2,
           "lag": {"events_behind": 1200, "oldest_undelivered_age_seconds": 200.4, "shards_unknown": 0}})
}

fn with_offsets(mut p: Value) -> Value {
    p["offsets"] = json!([
        {"shard": 0, "delivered_upto": 50, "updated_at": "2026-01-01T00:04:00Z",
         "events_behind": 0, "oldest_undelivered_age_seconds": null, "error": null},
        {"shard": 1, "delivered_upto": 70, "updated_at": "2026-01-01T00:04:30Z",
         "events_behind": 1200, "oldest_undelivered_age_seconds": 200.4, "error": null},
        {"shard": 2, "delivered_upto": null, "updated_at": null,
         "events_behind": null, "oldest_undelivered_age_seconds": null,
         "error": "backend db2 is unavailable"},
        {"shard": 3, "delivered_upto": null, "updated_at": null,
         "events_behind": 0, "oldest_undelivered_age_seconds": null, "error": null}]);
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn list_and_show_print_state_lag_parked_and_last_error() {
    let (fake, url) = fake().await;
    let mut idle = plugin("audit", "paused");
    idle["last_error"] = Value::Null;
    idle["last_error_at"] = Value::Null;
    idle["parked"] = json!(0);
    idle["lag"] =
        json!({"events_behind": 0, "oldest_undelivered_age_seconds": null, "shards_unknown": 1});
    fake.on(
        "GET",
        "/admin/v1/plugins",
        200,
        json!({"plugins": [plugin("billing", "backing_off"), idle]}),
    );
    run(&url, &["plugins", "list"])
        .await
        .ok()
        .stdout_has("NAME     STATE        BEHIND                OLDEST  PARKED  LAST ERROR")
        .stdout_has(
            "billing  backing_off  1200                  3m20s   2       HTTP 503 from the plugin (2026-01-01T00:05:00Z)",
        )
        .stdout_has("audit    paused       0+ (1 shard unknown)  -       0       -");
    assert_one(&fake.seen(), "GET", "/admin/v1/plugins");

    let (fake, url) = self::fake().await;
    fake.on(
        "GET",
        "/admin/v1/plugins/my%20plugin",
        200,
        with_offsets(plugin("my plugin", "delivering")),
    );
    let out = run(&url, &["plugins", "show", "my plugin"]).await;
    out.ok()
        .stdout_has("plugin my plugin (0b0e7a0e-8f6e-4a43-9a4e-4c1d1c7e2f01): delivering")
        .stdout_has("endpoint http://billing:9000/rpc, columns profile, settings")
        .stdout_has("behind 1200, oldest undelivered 3m20s")
        .stdout_has("last error: HTTP 503 from the plugin (2026-01-01T00:05:00Z)")
        .stdout_has("parked 2 (list them: mezzanine plugins parked my plugin)")
        .stdout_has("SHARD  DELIVERED UPTO  UPDATED               BEHIND  OLDEST  ERROR")
        .stdout_has("1      70              2026-01-01T00:04:30Z  1200    3m20s   -")
        .stdout_has("2      -               -                     -       -       backend db2 is unavailable")
        .stdout_has("2 shards have nothing to deliver");
    assert!(!out.stdout.contains("\n0      50"), "{}", out.stdout);
    assert_one(&fake.seen(), "GET", "/admin/v1/plugins/my%20plugin");

    // --json: the server's answer, nothing else.
    let out = run(&url, &["plugins", "show", "my plugin", "--json"]).await;
    out.ok();
    assert_eq!(
        out.stdout_json(),
        with_offsets(plugin("my plugin", "delivering"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_and_resume_post_and_say_the_state() {
    let (fake, url) = fake().await;
    fake.on(
        "POST",
        "/admin/v1/plugins/billing/pause",
        200,
        with_offsets(plugin("billing", "paused")),
    );
    fake.on(
        "POST",
        "/admin/v1/plugins/billing/resume",
        200,
        with_offsets(plugin("billing", "delivering")),
    );
    run(&url, &["plugins", "pause", "billing"])
        .await
        .ok()
        .stdout_has(
            "paused plugin billing: nothing is sent to it until `mezzanine plugins resume billing`",
        );
    run(&url, &["plugins", "resume", "billing"])
        .await
        .ok()
        .stdout_has("resumed plugin billing: delivering");
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(
        (
            seen[0].method.as_str(),
            seen[0].path.as_str(),
            seen[0].body.as_str()
        ),
        ("POST", "/admin/v1/plugins/billing/pause", "")
    );
    assert_eq!(seen[1].path, "/admin/v1/plugins/billing/resume");
}

#[tokio::test(flavor = "multi_thread")]
async fn parked_pages_with_limit_and_after() {
    let (fake, url) = fake().await;
    fake.on("GET", "/admin/v1/plugins/billing/parked", 200, json!({
        "plugin": "billing", "next": "3:20",
        "parked": [
            {"id": "3:10", "shard": 3, "added_id": 10, "row_key": "5b2c0a8e-1d7f-4c3a-9b1e-2f4d6a8c0e13",
             "column_name": "profile", "attempts": 5, "error": "HTTP 400: bad body",
             "parked_at": "2026-01-01T00:01:00Z", "replay_requested": false},
            {"id": "3:20", "shard": 3, "added_id": 20, "row_key": "5b2c0a8e-1d7f-4c3a-9b1e-2f4d6a8c0e14",
             "column_name": "profile", "attempts": 5, "error": "JSON-RPC error -32602",
             "parked_at": "2026-01-01T00:02:00Z", "replay_requested": true}]}));
    run(&url, &["plugins", "parked", "billing", "--limit", "2", "--after", "1:99"])
        .await
        .ok()
        .stdout_has("ID    COLUMN   ROW KEY                               ATTEMPTS  PARKED AT             REPLAY     ERROR")
        .stdout_has("3:10  profile  5b2c0a8e-1d7f-4c3a-9b1e-2f4d6a8c0e13  5         2026-01-01T00:01:00Z  -          HTTP 400: bad body")
        .stdout_has("3:20  profile  5b2c0a8e-1d7f-4c3a-9b1e-2f4d6a8c0e14  5         2026-01-01T00:02:00Z  requested  JSON-RPC error -32602")
        .stdout_has("more: mezzanine plugins parked billing --after 3:20");
    run(&url, &["plugins", "parked", "billing"]).await.ok();
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0].path, "/admin/v1/plugins/billing/parked");
    assert_eq!(seen[0].query.as_deref(), Some("limit=2&after=1%3A99"));
    assert_eq!(seen[1].query.as_deref(), Some("limit=100"));

    let (fake, url) = self::fake().await;
    fake.on(
        "GET",
        "/admin/v1/plugins/billing/parked",
        200,
        json!({"plugin": "billing", "parked": [], "next": null}),
    );
    run(&url, &["plugins", "parked", "billing"])
        .await
        .ok()
        .stdout_has("no parked events for plugin billing");
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_and_drop_send_one_id_or_all() {
    let (fake, url) = fake().await;
    fake.on(
        "POST",
        "/admin/v1/plugins/billing/replay",
        202,
        json!({"plugin": "billing", "marked": 1}),
    );
    fake.on(
        "DELETE",
        "/admin/v1/plugins/billing/parked",
        200,
        json!({"plugin": "billing", "dropped": 4}),
    );
    run(&url, &["plugins", "replay", "billing", "7:1042"])
        .await
        .ok()
        .stdout_has(
            "marked 1 parked event of plugin billing for replay: the deliverer sends them shortly",
        );
    run(&url, &["plugins", "replay", "billing", "--all"])
        .await
        .ok();
    run(&url, &["plugins", "drop-parked", "billing", "--all"])
        .await
        .ok()
        .stdout_has("dropped 4 parked events of plugin billing");
    run(&url, &["plugins", "drop-parked", "billing", "7:1042"])
        .await
        .ok();
    let seen = fake.seen();
    let sent: Vec<(&str, Value)> = seen.iter().map(|s| (s.method.as_str(), s.json())).collect();
    assert_eq!(
        sent,
        [
            ("POST", json!({"shard": 7, "added_id": 1042})),
            ("POST", json!({"all": true})),
            ("DELETE", json!({"all": true})),
            ("DELETE", json!({"shard": 7, "added_id": 1042})),
        ]
    );
    for s in &seen {
        assert_eq!(s.content_type.as_deref(), Some("application/json"));
    }
    // Neither or both, or an id that does not read: a usage error, nothing sent.
    for args in [
        &["plugins", "replay", "billing"][..],
        &["plugins", "drop-parked", "billing", "--all", "7:1"],
        &["plugins", "replay", "billing", "7-1042"],
    ] {
        let out = run(&url, args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
    }
    assert_eq!(fake.seen().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_servers_problems_are_said_as_for_every_command() {
    let (fake, url) = fake().await;
    fake.reply(
        "POST",
        "/admin/v1/plugins/nobody/pause",
        404,
        "application/problem+json",
        problem(
            404,
            "Not Found",
            "no plugin named \"nobody\" (mezzanine plugins list shows them)",
        ),
    );
    let out = run(&url, &["plugins", "pause", "nobody"]).await;
    out.failed();
    assert_eq!(
        out.stderr.trim(),
        "error: no plugin named \"nobody\" (mezzanine plugins list shows them)"
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}
