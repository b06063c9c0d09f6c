//! go-mezzanine's plugins API (`crates/server/src/plugins.rs`, `crates/catalog/src/plugins.rs`):
//! the answers field by field against a fixture of go-mezzanine's shapes, 409 on a duplicate
//! name, 404s, 422s for a non-UUID id, bad bodies and bad endpoints (`PLUGIN_HOSTS_ALLOWED`),
//! a registration and a deletion through one node seen by another at once (its answers and
//! its copy in memory), go-mezzanine's `plugins` table imported on adoption (same ids, once,
//! audited, no duplicate name), the scope registration needs once tokens are set, and the
//! four operations in /openapi.json.

use std::time::Duration;

use mezzanine_core::hosts::HostsAllowed;
use mezzanine_core::plugin::PLUGIN_HOSTS_ALLOWED;
use mezzanine_e2e::{
    bare_client, client, connect, default_config, even_map, fresh_databases, get_json,
    operation_parameters, sql, TestServer,
};
use mezzanine_server::auth::tokens::{new_token, token_line};
use mezzanine_server::auth::Scope;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

fn fixture() -> Value {
    serde_json::from_str(include_str!("../fixtures/go-mezzanine-plugins.json")).unwrap()
}

fn registration(name: &str) -> Value {
    json!({"name": name, "endpoint": "http://localhost:9000/rpc", "subscribed_columns": ["profile", "settings"]})
}

struct Answer {
    status: u16,
    content_type: String,
    text: String,
    body: Value,
}

async fn call(
    c: &reqwest::Client,
    method: Method,
    url: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Answer {
    let mut req = c.request(method.clone(), url);
    if let Some(b) = body {
        req = req.json(b);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        content_type,
        text,
        body,
    }
}

/// The keys of a JSON object, in the order they are written.
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
        use serde::de::{MapAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, _)) = m.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(k);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V)
    }
}

fn keys_in_order(text: &str) -> Vec<String> {
    serde_json::from_str::<Keys>(text).unwrap().0
}

/// Checks one plugin answer against go-mezzanine's shape: exactly its fields, in its order,
/// each of its type.
#[track_caller]
fn go_shaped(p: &Value, keys: &[String]) {
    let fields: Vec<String> = serde_json::from_value(fixture()["response_fields"].clone()).unwrap();
    assert_eq!(keys, fields, "{p}");
    assert!(Uuid::parse_str(p["id"].as_str().unwrap()).is_ok(), "{p}");
    assert_eq!(
        p["id"].as_str().unwrap(),
        Uuid::parse_str(p["id"].as_str().unwrap())
            .unwrap()
            .hyphenated()
            .to_string(),
        "lower-case hyphenated, as Go's uuid prints it"
    );
    assert!(p["name"].is_string() && p["endpoint"].is_string(), "{p}");
    assert!(p["subscribed_columns"].is_array(), "{p}");
    assert!(p["status"].is_string(), "{p}");
    chrono::DateTime::parse_from_rfc3339(p["created_at"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("created_at: {e}: {p}"));
}

#[track_caller]
fn problem_at(a: &Answer, status: u16, location: &str) {
    assert_eq!(a.status, status, "{}", a.text);
    assert_eq!(a.content_type, "application/problem+json", "{}", a.text);
    let locations: Vec<&str> = a.body["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["location"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        locations.contains(&location),
        "{location} not named: {}",
        a.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_as_go_mezzanine_does() {
    let (srv, _) = TestServer::fresh(1, 4).await;
    let c = bare_client();
    let plugins = srv.url("/v1/plugins");

    // Registration: 201 with exactly go-mezzanine's fields.
    let a = call(
        &c,
        Method::POST,
        &plugins,
        Some(&registration("billing")),
        None,
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.content_type, "application/json");
    go_shaped(&a.body, &keys_in_order(&a.text));
    let created = a.body.clone();
    assert_eq!(created["name"], "billing");
    assert_eq!(created["endpoint"], "http://localhost:9000/rpc");
    assert_eq!(
        created["subscribed_columns"],
        json!(["profile", "settings"])
    );
    assert_eq!(
        created["status"],
        fixture()["response_status_of_a_registration"]
    );
    let id = created["id"].as_str().unwrap().to_owned();

    // A duplicate name: 409, nothing stored.
    let mut again = registration("billing");
    again["endpoint"] = json!("http://elsewhere:1/rpc");
    let a = call(&c, Method::POST, &plugins, Some(&again), None).await;
    problem_at(&a, 409, "body.name");

    // The list and the plugin: the same answer.
    let second = call(
        &c,
        Method::POST,
        &plugins,
        Some(&registration("audit")),
        None,
    )
    .await;
    assert_eq!(second.status, 201, "{}", second.text);
    let a = call(&c, Method::GET, &plugins, None, None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.content_type, "application/json");
    let list = a.body.as_array().unwrap();
    assert_eq!(list.len(), 2, "{}", a.text);
    assert_eq!(list[0], created, "registration order");
    assert_eq!(list[1], second.body);
    for (item, keys) in list
        .iter()
        .zip(serde_json::from_str::<Vec<Keys>>(&a.text).unwrap())
    {
        go_shaped(item, &keys.0);
    }
    let one = srv.url(&format!("/v1/plugins/{id}"));
    let a = call(&c, Method::GET, &one, None, None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    go_shaped(&a.body, &keys_in_order(&a.text));
    assert_eq!(a.body, created);
    // Upper case is the same UUID.
    let a = call(
        &c,
        Method::GET,
        &srv.url(&format!("/v1/plugins/{}", id.to_uppercase())),
        None,
        None,
    )
    .await;
    assert_eq!(a.body, created);

    // 404s, and 422 for an id that is not a UUID.
    let unknown = srv.url(&format!("/v1/plugins/{}", Uuid::new_v4()));
    for m in [Method::GET, Method::DELETE] {
        let a = call(&c, m.clone(), &unknown, None, None).await;
        assert_eq!(a.status, 404, "{m} {}", a.text);
        assert_eq!(a.content_type, "application/problem+json");
        let a = call(
            &c,
            m.clone(),
            &srv.url("/v1/plugins/not-a-uuid"),
            None,
            None,
        )
        .await;
        problem_at(&a, 422, "path.plugin_id");
    }

    // Deletion: 204 without a body, then 404; no update route.
    let a = call(&c, Method::PUT, &one, Some(&registration("x")), None).await;
    assert_eq!(a.status, 405, "{}", a.text);
    let a = call(&c, Method::DELETE, &one, None, None).await;
    assert_eq!((a.status, a.text.as_str()), (204, ""));
    let a = call(&c, Method::GET, &one, None, None).await;
    assert_eq!(a.status, 404, "{}", a.text);
    let a = call(&c, Method::DELETE, &one, None, None).await;
    assert_eq!(a.status, 404, "{}", a.text);
    // The name is free again.
    let a = call(
        &c,
        Method::POST,
        &plugins,
        Some(&registration("billing")),
        None,
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_ne!(a.body["id"], created["id"]);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_and_endpoints_are_422_naming_the_field() {
    let urls = fresh_databases(1).await;
    let mut config = default_config();
    config.plugin_hosts_allowed =
        Some(HostsAllowed::parse_for("*.hooks.internal, 127.0.0.1", PLUGIN_HOSTS_ALLOWED).unwrap());
    let srv = TestServer::start(config, even_map(&urls, 4)).await;
    let c = bare_client();
    let plugins = srv.url("/v1/plugins");
    let with = |field: &str, v: Value| {
        let mut b = registration("p");
        b[field] = v;
        b
    };
    let without = |field: &str| {
        let mut b = registration("p");
        b.as_object_mut().unwrap().remove(field);
        b
    };
    let cases = [
        (without("name"), "body.name"),
        (without("endpoint"), "body.endpoint"),
        (without("subscribed_columns"), "body.subscribed_columns"),
        (with("name", json!("")), "body.name"),
        (with("name", json!(7)), "body.name"),
        (with("name", json!("a\u{0}b")), "body.name"),
        (
            with("subscribed_columns", json!([])),
            "body.subscribed_columns",
        ),
        (
            with("subscribed_columns", json!(null)),
            "body.subscribed_columns",
        ),
        (
            with("subscribed_columns", json!(["ok", ""])),
            "body.subscribed_columns[1]",
        ),
        (with("extra", json!(1)), "body.extra"),
        (json!(["not", "an", "object"]), "body"),
        // Endpoints: http or https, with a host, and one PLUGIN_HOSTS_ALLOWED allows.
        (with("endpoint", json!("")), "body.endpoint"),
        (
            with("endpoint", json!("127.0.0.1:9000/rpc")),
            "body.endpoint",
        ),
        (
            with("endpoint", json!("ftp://a.hooks.internal/rpc")),
            "body.endpoint",
        ),
        (
            with("endpoint", json!("file:///etc/passwd")),
            "body.endpoint",
        ),
        (with("endpoint", json!("not a url")), "body.endpoint"),
        (with("endpoint", json!("http://")), "body.endpoint"),
        (
            with("endpoint", json!("http://u:secret@a.hooks.internal/rpc")),
            "body.endpoint",
        ),
        (
            with("endpoint", json!("http://localhost:9000/rpc")),
            "body.endpoint",
        ),
        (
            with("endpoint", json!("http://169.254.169.254/latest")),
            "body.endpoint",
        ),
        (
            with("endpoint", json!(["http://127.0.0.1/"])),
            "body.endpoint",
        ),
    ];
    for (body, location) in &cases {
        let a = call(&c, Method::POST, &plugins, Some(body), None).await;
        problem_at(&a, 422, location);
        assert!(
            !a.text.contains("secret"),
            "the password is not echoed: {}",
            a.text
        );
    }
    let a = call(
        &c,
        Method::POST,
        &plugins,
        Some(&with("endpoint", json!("http://localhost:9000/rpc"))),
        None,
    )
    .await;
    let detail = a.body["errors"][0]["message"].as_str().unwrap();
    assert!(detail.contains("PLUGIN_HOSTS_ALLOWED"), "{}", a.text);
    // Not JSON: 400; the wrong content type: 415 (as the cell API).
    let resp = c
        .post(&plugins)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = c.post(&plugins).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 415);
    // Nothing was stored.
    let (s, list) = get_json(&c, &plugins).await;
    assert_eq!((s, list), (200, json!([])));
    // What the list allows is accepted.
    for ok in [
        "https://billing.hooks.internal/rpc",
        "http://127.0.0.1:9000/rpc",
    ] {
        let mut b = registration(ok);
        b["endpoint"] = json!(ok);
        let a = call(&c, Method::POST, &plugins, Some(&b), None).await;
        assert_eq!(a.status, 201, "{ok}: {}", a.text);
        assert_eq!(a.body["endpoint"], ok);
    }
    srv.stop().await;
}

/// Waits until `srv`'s copy of the plugins in memory satisfies `want`.
async fn until_in_memory(srv: &TestServer, what: &str, want: impl Fn(&[String]) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ids: Vec<String> = srv
            .state
            .plugins
            .current()
            .plugins
            .iter()
            .map(|p| p.id.to_string())
            .collect();
        if want(&ids) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the node's copy holds {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_through_one_node_is_seen_through_another_at_once() {
    let urls = fresh_databases(2).await;
    let map = even_map(&urls, 8);
    // Node B never polls: only the catalog's notification can update its copy.
    let mut slow = default_config();
    slow.catalog_poll_interval = Duration::from_secs(3600);
    let a = TestServer::start(default_config(), map.clone()).await;
    let b = TestServer::start(slow, map).await;
    let c = bare_client();

    let r = call(
        &c,
        Method::POST,
        &a.url("/v1/plugins"),
        Some(&registration("billing")),
        None,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    // Right after the answer, B answers with it.
    let (s, one) = get_json(&c, &b.url(&format!("/v1/plugins/{id}"))).await;
    assert_eq!((s, &one), (200, &r.body));
    let (s, list) = get_json(&c, &b.url("/v1/plugins")).await;
    assert_eq!((s, list), (200, json!([r.body])));
    // go-mezzanine's nodes accept the same name on another node until they restart; here it
    // is one registry.
    let dup = call(
        &c,
        Method::POST,
        &b.url("/v1/plugins"),
        Some(&registration("billing")),
        None,
    )
    .await;
    assert_eq!(dup.status, 409, "{}", dup.text);
    // Both nodes' copies in memory (what delivery will act on) have it.
    until_in_memory(&a, "registered on A", |ids| ids == [id.clone()]).await;
    until_in_memory(&b, "registered on A, seen by B", |ids| ids == [id.clone()]).await;

    // A deletion through B: A answers 404 at once, and both copies drop it.
    let d = call(
        &c,
        Method::DELETE,
        &b.url(&format!("/v1/plugins/{id}")),
        None,
        None,
    )
    .await;
    assert_eq!(d.status, 204, "{}", d.text);
    let (s, _) = get_json(&c, &a.url(&format!("/v1/plugins/{id}"))).await;
    assert_eq!(s, 404);
    let (s, list) = get_json(&c, &a.url("/v1/plugins")).await;
    assert_eq!((s, list), (200, json!([])));
    until_in_memory(&b, "deleted on B", |ids| ids.is_empty()).await;
    until_in_memory(&a, "deleted on B, seen by A", |ids| ids.is_empty()).await;
    a.stop().await;
    b.stop().await;
}

const GO_A: &str = "6f1c1d5e-4a43-4b8e-9a57-0f7f3c1b2a01";
const GO_B: &str = "0b9d7c42-1e0a-4d6f-8c3b-5a2e9f4d6c02";

/// The audit log's entries of `kind`, newest first.
async fn audit_of(srv: &TestServer, kind: &str) -> Vec<Value> {
    let (s, v) = get_json(&client(), &srv.url("/admin/v1/audit?limit=1000")).await;
    assert_eq!(s, 200, "{v}");
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_mezzanines_plugins_are_imported_on_adoption_once() {
    let urls = fresh_databases(2).await;
    let map = even_map(&urls, 8);
    // go-mezzanine's table on its first backend, as it lays it out, with two plugins.
    let table = fixture()["table"].as_str().unwrap().to_owned();
    sql(
        &urls[0],
        &format!(
            "{table};
             INSERT INTO plugins (id, name, endpoint, subscribed_columns, status, created_at) VALUES
               ('{GO_A}', 'billing', 'http://localhost:9100/rpc', '{{profile}}', 'active',
                '2026-03-01 10:00:00.123456+00'),
               ('{GO_B}', 'search', 'http://127.0.0.1:9200/rpc', '{{profile,settings}}', 'inactive',
                '2026-03-02 11:00:00+00');"
        ),
    )
    .await;
    let srv = TestServer::start(default_config(), map.clone()).await;
    let c = bare_client();
    let (s, list) = get_json(&c, &srv.url("/v1/plugins")).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(
        list,
        json!([
            {"id": GO_A, "name": "billing", "endpoint": "http://localhost:9100/rpc",
             "subscribed_columns": ["profile"], "status": "active",
             "created_at": "2026-03-01T10:00:00.123456Z"},
            {"id": GO_B, "name": "search", "endpoint": "http://127.0.0.1:9200/rpc",
             "subscribed_columns": ["profile", "settings"], "status": "inactive",
             "created_at": "2026-03-02T11:00:00Z"},
        ])
    );
    let (s, _) = get_json(&c, &srv.url(&format!("/v1/plugins/{GO_A}"))).await;
    assert_eq!(s, 200);
    let imports = audit_of(&srv, "plugins_import").await;
    assert_eq!(imports.len(), 1, "{imports:#?}");
    let detail = &imports[0]["detail"];
    assert_eq!(
        detail["imported"],
        json!([{"id": GO_A, "name": "billing"}, {"id": GO_B, "name": "search"}]),
        "{detail}"
    );
    assert!(detail["from"].as_str().unwrap().contains("db1"), "{detail}");
    // go-mezzanine's table is left as it was.
    let go = connect(&urls[0]).await;
    let n: i64 = go
        .query_one("SELECT count(*) FROM plugins", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    // Once: a plugin deleted after the import stays deleted across restarts.
    let d = call(
        &c,
        Method::DELETE,
        &srv.url(&format!("/v1/plugins/{GO_B}")),
        None,
        None,
    )
    .await;
    assert_eq!(d.status, 204, "{}", d.text);
    srv.stop().await;
    let srv = TestServer::start(default_config(), map.clone()).await;
    let (_, list) = get_json(&c, &srv.url("/v1/plugins")).await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [GO_A]);
    assert_eq!(audit_of(&srv, "plugins_import").await.len(), 1);

    // A name the catalog holds is not duplicated: a catalog that has not imported yet (as an
    // older layout had not) and a registration of the same name as go-mezzanine's.
    let r = call(
        &c,
        Method::POST,
        &srv.url("/v1/plugins"),
        Some(&registration("fresh")),
        None,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    srv.stop().await;
    let go_fresh = Uuid::new_v4();
    sql(
        &urls[0],
        &format!(
            "INSERT INTO plugins (id, name, endpoint, subscribed_columns) \
             VALUES ('{go_fresh}', 'fresh', 'http://localhost:9300/rpc', '{{x}}');
             UPDATE mezzanine.meta SET go_plugins_imported_at = NULL;"
        ),
    )
    .await;
    let srv = TestServer::start(default_config(), map.clone()).await;
    let (_, list) = get_json(&c, &srv.url("/v1/plugins")).await;
    let named: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["id"].as_str().unwrap()))
        .collect();
    let fresh_id = r.body["id"].as_str().unwrap();
    assert!(named.contains(&("fresh", fresh_id)), "{named:?}");
    assert_eq!(
        named.iter().filter(|(n, _)| *n == "fresh").count(),
        1,
        "{named:?}"
    );
    let imports = audit_of(&srv, "plugins_import").await;
    assert_eq!(imports.len(), 2, "{imports:#?}");
    let skipped = &imports[0]["detail"]["skipped"];
    assert!(
        skipped
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "fresh"),
        "{skipped}"
    );
    srv.stop().await;

    // A catalog of an earlier layout (4: no plugins) gets the tables and imports at start.
    sql(
        &urls[0],
        "DROP TABLE mezzanine.plugin_parked, mezzanine.plugin_offsets, mezzanine.plugins;
         ALTER TABLE mezzanine.meta DROP COLUMN plugins_version, DROP COLUMN go_plugins_imported_at;
         UPDATE mezzanine.meta SET schema_version = 4;",
    )
    .await;
    let srv = TestServer::start(default_config(), map).await;
    let (_, list) = get_json(&c, &srv.url("/v1/plugins")).await;
    let mut ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let go_fresh = go_fresh.to_string();
    let mut want = vec![GO_A, GO_B, go_fresh.as_str()];
    want.sort();
    assert_eq!(ids, want);
    let version: i32 = go
        .query_one("SELECT schema_version FROM mezzanine.meta", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, mezzanine_catalog::SCHEMA_VERSION);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_needs_scope_admin_once_v1_needs_tokens() {
    let (admin, write, read) = (new_token(), new_token(), new_token());
    let urls = fresh_databases(1).await;
    let mut config = default_config();
    config.tokens = Some(
        [
            token_line("ops", Scope::Admin, &admin),
            token_line("ingest", Scope::Write, &write),
            token_line("viewer", Scope::Read, &read),
        ]
        .join("\n"),
    );
    config.open_data_api = false;
    let srv = TestServer::start(config, even_map(&urls, 4)).await;
    let c = bare_client();
    let plugins = srv.url("/v1/plugins");
    let body = registration("billing");
    let a = call(&c, Method::POST, &plugins, Some(&body), None).await;
    assert_eq!(a.status, 401, "{}", a.text);
    for t in [&read, &write] {
        let a = call(&c, Method::POST, &plugins, Some(&body), Some(t)).await;
        assert_eq!(a.status, 403, "{}", a.text);
        assert!(a.text.contains("scope admin"), "{}", a.text);
    }
    let a = call(&c, Method::POST, &plugins, Some(&body), Some(&admin)).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let id = a.body["id"].as_str().unwrap().to_owned();
    let one = srv.url(&format!("/v1/plugins/{id}"));
    // Reading needs read.
    let a = call(&c, Method::GET, &plugins, None, None).await;
    assert_eq!(a.status, 401);
    for url in [&plugins, &one] {
        let a = call(&c, Method::GET, url, None, Some(&read)).await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
    let a = call(&c, Method::DELETE, &one, None, Some(&write)).await;
    assert_eq!(a.status, 403, "{}", a.text);
    let a = call(&c, Method::DELETE, &one, None, Some(&admin)).await;
    assert_eq!(a.status, 204, "{}", a.text);
    // Who did it is in the audit log (the token's name and the address, never the token).
    let a = call(
        &c,
        Method::GET,
        &srv.url("/admin/v1/audit?limit=100"),
        None,
        Some(&admin),
    )
    .await;
    assert_eq!(a.status, 200);
    let v = a.body;
    for kind in ["plugin_register", "plugin_delete"] {
        let e = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} entry: {v:#}"));
        assert_eq!(e["detail"]["by"]["token"], "ops", "{e}");
        assert_eq!(e["detail"]["by"]["client"], "127.0.0.1", "{e}");
        assert_eq!(e["detail"]["id"], id.as_str(), "{e}");
    }
    assert!(!v.to_string().contains(&admin));
    srv.stop().await;

    // Without any token configured, go-mezzanine's clients register as they always did.
    let urls = fresh_databases(1).await;
    let mut config = default_config();
    config.tokens = None;
    config.open_data_api = false;
    let srv = TestServer::start(config, even_map(&urls, 4)).await;
    let a = call(&c, Method::POST, &srv.url("/v1/plugins"), Some(&body), None).await;
    assert_eq!(a.status, 201, "{}", a.text);
    srv.stop().await;
}

#[tokio::test]
async fn openapi_has_go_mezzanines_four_operations() {
    let (srv, _) = TestServer::fresh(1, 4).await;
    let (s, doc) = get_json(&client(), &srv.url("/openapi.json")).await;
    assert_eq!(s, 200);
    let f = fixture();
    for (op_id, want) in f["operations"].as_object().unwrap() {
        let path = want["path"].as_str().unwrap();
        let method = want["method"].as_str().unwrap();
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing from /openapi.json");
        assert_eq!(op["operationId"], op_id.as_str(), "{method} {path}");
        assert_eq!(op["tags"], json!([want["tag"]]), "{method} {path}");
        let params = operation_parameters(op);
        let theirs: Vec<String> = serde_json::from_value(want["parameters"].clone()).unwrap();
        assert_eq!(params, theirs, "{method} {path}");
        let status = want["status"].as_str().unwrap();
        assert!(
            op["responses"][status].is_object(),
            "{method} {path}: {status}"
        );
        assert!(
            op["responses"]["default"].is_object(),
            "{method} {path}: default"
        );
    }
    // The answer's schema: go-mezzanine's fields, all required by its client.
    let schema = &doc["components"]["schemas"]["PluginResponse"];
    let mut props: Vec<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    props.sort();
    let mut fields: Vec<&str> = f["response_fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    fields.sort();
    assert_eq!(props, fields);
    let body = &doc["components"]["schemas"]["RegisterPluginBody"];
    assert_eq!(body["additionalProperties"], json!(false), "{body}");
    let mut required: Vec<&str> = body["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort();
    let mut theirs: Vec<&str> = f["request_required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    theirs.sort();
    assert_eq!(required, theirs);
    srv.stop().await;
}
