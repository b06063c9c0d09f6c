//! Authentication and authorisation (`crates/server/src/auth.rs`): the scope matrix of every
//! admin and data route, /v1 open while no token is configured, the admin API closed then
//! unless UNSAFE_OPEN_ADMIN, the token file reloaded while serving, and the audit log of
//! admin requests and (bounded) refusals.

use std::time::Duration;

use mezzanine_e2e::{bare_client, default_config, even_map, fresh_databases, TestServer};
use mezzanine_server::auth::tokens::{new_token, token_line};
use mezzanine_server::auth::Scope;
use reqwest::Method;
use serde_json::{json, Value};

const ROW: &str = "550e8400-e29b-41d4-a716-446655440000";

/// The tokens of a test: admin `ops`, write `ingest`, read `viewer`.
struct Tokens {
    admin: String,
    write: String,
    read: String,
}

impl Tokens {
    fn new() -> Tokens {
        Tokens {
            admin: new_token(),
            write: new_token(),
            read: new_token(),
        }
    }

    fn lines(&self) -> String {
        [
            token_line("ops", Scope::Admin, &self.admin),
            token_line("ingest", Scope::Write, &self.write),
            token_line("viewer", Scope::Read, &self.read),
        ]
        .join("\n")
    }

    fn all(&self) -> [&str; 3] {
        [&self.admin, &self.write, &self.read]
    }
}

/// A server over two fresh databases (8 shards) with `tokens` and /v1 needing them.
async fn server_with(tokens: Option<String>, open_admin: bool) -> TestServer {
    let urls = fresh_databases(2).await;
    let mut config = default_config();
    config.tokens = tokens;
    config.open_data_api = false;
    config.unsafe_open_admin = open_admin;
    TestServer::start(config, even_map(&urls, 8)).await
}

struct Answer {
    status: u16,
    challenge: Option<String>,
    content_type: String,
    request_id: bool,
    body: Value,
}

async fn call(
    srv: &TestServer,
    method: &Method,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Answer {
    let mut req = bare_client().request(method.clone(), srv.url(path));
    if let Some(b) = body {
        req = req.json(b);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Answer {
        status: resp.status().as_u16(),
        challenge: header("www-authenticate"),
        content_type: header("content-type").unwrap_or_default(),
        request_id: header("x-request-id").is_some(),
        body: resp.json().await.unwrap_or(Value::Null),
    }
}

/// Every admin route (method, path as routed, a request of it that changes nothing).
fn admin_routes() -> Vec<(Method, &'static str, String, Option<Value>)> {
    let bogus = Some(json!({"bogus": 1}));
    let m = |method: Method, template: &'static str, path: &str, body: &Option<Value>| {
        (method, template, path.to_owned(), body.clone())
    };
    vec![
        m(Method::GET, "/admin/v1/shards", "/admin/v1/shards", &None),
        m(
            Method::GET,
            "/admin/v1/shards/export",
            "/admin/v1/shards/export",
            &None,
        ),
        m(
            Method::GET,
            "/admin/v1/backends",
            "/admin/v1/backends",
            &None,
        ),
        m(
            Method::POST,
            "/admin/v1/backends",
            "/admin/v1/backends",
            &bogus,
        ),
        m(
            Method::PATCH,
            "/admin/v1/backends/{name}",
            "/admin/v1/backends/nosuch",
            &bogus,
        ),
        m(
            Method::DELETE,
            "/admin/v1/backends/{name}",
            "/admin/v1/backends/nosuch",
            &None,
        ),
        m(
            Method::POST,
            "/admin/v1/backends/{name}/drain",
            "/admin/v1/backends/nosuch/drain",
            &bogus,
        ),
        m(
            Method::GET,
            "/admin/v1/rebalance",
            "/admin/v1/rebalance",
            &None,
        ),
        m(
            Method::POST,
            "/admin/v1/rebalance/plan",
            "/admin/v1/rebalance/plan",
            &bogus,
        ),
        m(
            Method::POST,
            "/admin/v1/rebalance/apply",
            "/admin/v1/rebalance/apply",
            &bogus,
        ),
        m(
            Method::GET,
            "/admin/v1/rebalance/{id}",
            "/admin/v1/rebalance/999",
            &None,
        ),
        m(
            Method::POST,
            "/admin/v1/rebalance/{id}/{action}",
            "/admin/v1/rebalance/999/abort",
            &None,
        ),
        m(Method::GET, "/admin/v1/moves", "/admin/v1/moves", &None),
        m(Method::POST, "/admin/v1/moves", "/admin/v1/moves", &bogus),
        m(
            Method::GET,
            "/admin/v1/moves/{id}",
            "/admin/v1/moves/999",
            &None,
        ),
        m(
            Method::POST,
            "/admin/v1/moves/{id}/{action}",
            "/admin/v1/moves/999/abort",
            &None,
        ),
        m(Method::POST, "/admin/v1/verify", "/admin/v1/verify", &bogus),
        m(Method::POST, "/admin/v1/reload", "/admin/v1/reload", &None),
        m(Method::GET, "/admin/v1/status", "/admin/v1/status", &None),
        m(Method::GET, "/admin/v1/audit", "/admin/v1/audit", &None),
        m(Method::GET, "/admin/v1/plugins", "/admin/v1/plugins", &None),
        m(
            Method::GET,
            "/admin/v1/plugins/{name}",
            "/admin/v1/plugins/nosuch",
            &None,
        ),
        m(
            Method::POST,
            "/admin/v1/plugins/{name}/pause",
            "/admin/v1/plugins/nosuch/pause",
            &None,
        ),
        m(
            Method::POST,
            "/admin/v1/plugins/{name}/resume",
            "/admin/v1/plugins/nosuch/resume",
            &None,
        ),
        m(
            Method::GET,
            "/admin/v1/plugins/{name}/parked",
            "/admin/v1/plugins/nosuch/parked",
            &None,
        ),
        m(
            Method::DELETE,
            "/admin/v1/plugins/{name}/parked",
            "/admin/v1/plugins/nosuch/parked",
            &bogus,
        ),
        m(
            Method::POST,
            "/admin/v1/plugins/{name}/replay",
            "/admin/v1/plugins/nosuch/replay",
            &bogus,
        ),
    ]
}

/// Every data route (method, path as routed, a request of it, the scope it needs).
fn data_routes() -> Vec<(Method, &'static str, String, Option<Value>, Scope)> {
    let d = |method: Method, template: &'static str, path: String, body: Option<Value>, scope| {
        (method, template, path, body, scope)
    };
    vec![
        d(
            Method::POST,
            "/v1/cells",
            "/v1/cells".into(),
            Some(json!({})),
            Scope::Write,
        ),
        d(
            Method::POST,
            "/v1/cells/batch",
            "/v1/cells/batch".into(),
            Some(json!({})),
            Scope::Write,
        ),
        d(
            Method::GET,
            "/v1/cells/partitionRead",
            "/v1/cells/partitionRead?partition_number=0&read_type=2&added_id=0".into(),
            None,
            Scope::Read,
        ),
        d(
            Method::GET,
            "/v1/cells/{row_key}",
            format!("/v1/cells/{ROW}"),
            None,
            Scope::Read,
        ),
        d(
            Method::GET,
            "/v1/cells/{row_key}/{column_name}",
            format!("/v1/cells/{ROW}/c"),
            None,
            Scope::Read,
        ),
        d(
            Method::GET,
            "/v1/cells/{row_key}/{column_name}/{ref_key}",
            format!("/v1/cells/{ROW}/c/1"),
            None,
            Scope::Read,
        ),
        d(
            Method::GET,
            "/v1/shards/count",
            "/v1/shards/count".into(),
            None,
            Scope::Read,
        ),
        d(
            Method::GET,
            "/metrics",
            "/metrics".into(),
            None,
            Scope::Read,
        ),
        // Plugins: registering and deleting make nodes send data to an endpoint (admin).
        d(
            Method::POST,
            "/v1/plugins",
            "/v1/plugins".into(),
            Some(json!({})),
            Scope::Admin,
        ),
        d(
            Method::GET,
            "/v1/plugins",
            "/v1/plugins".into(),
            None,
            Scope::Read,
        ),
        d(
            Method::GET,
            "/v1/plugins/{plugin_id}",
            format!("/v1/plugins/{ROW}"),
            None,
            Scope::Read,
        ),
        d(
            Method::DELETE,
            "/v1/plugins/{plugin_id}",
            format!("/v1/plugins/{ROW}"),
            None,
            Scope::Admin,
        ),
    ]
}

/// The endpoints that need no token (probes and the APIs' descriptions).
const OPEN: [&str; 5] = [
    "/v1/livez",
    "/v1/readyz",
    "/v1/health",
    "/openapi.json",
    "/admin/v1/openapi.json",
];

/// The route templates of `source` (a file of `.route("…"` calls, or of the admin table's
/// `route("…"`).
fn routes_in(source: &str) -> Vec<String> {
    source
        .split("route(")
        .skip(1)
        .filter_map(|s| s.trim_start().strip_prefix('"')?.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_matrix_names_every_route_of_the_server() {
    let mut listed: Vec<&str> = admin_routes().iter().map(|r| r.1).collect();
    listed.extend(data_routes().iter().map(|r| r.1));
    listed.extend(OPEN);
    let admin = routes_in(include_str!("../../crates/server/src/admin.rs"));
    let http = routes_in(include_str!("../../crates/server/src/http.rs"));
    assert!(admin.len() >= 15 && http.len() >= 10, "{admin:?} {http:?}");
    for r in admin.iter().chain(&http) {
        assert!(
            listed.contains(&r.as_str()),
            "route {r} is not in the scope matrix"
        );
    }
}

#[track_caller]
fn refused(a: &Answer, status: u16, challenge: &str, what: &str) {
    assert_eq!(a.status, status, "{what}: {}", a.body);
    let c = a.challenge.as_deref().unwrap_or("");
    assert!(
        c.starts_with("Bearer realm=\"mezzanine\""),
        "{what}: WWW-Authenticate {c:?}"
    );
    assert!(c.contains(challenge), "{what}: WWW-Authenticate {c:?}");
    assert!(
        a.content_type.starts_with("application/problem+json"),
        "{what}: {}",
        a.content_type
    );
    assert_eq!(a.body["status"], status, "{what}: {}", a.body);
    assert!(
        a.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{what}: {}",
        a.body
    );
    assert!(a.request_id, "{what}: no X-Request-ID");
}

#[track_caller]
fn allowed(a: &Answer, what: &str) {
    assert!(
        a.status != 401 && a.status != 403 && a.status < 500,
        "{what}: {} {}",
        a.status,
        a.body
    );
    assert!(a.challenge.is_none(), "{what}: {:?}", a.challenge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_by_the_tokens_scope() {
    let tokens = Tokens::new();
    let srv = server_with(Some(tokens.lines()), false).await;
    let unknown = new_token();

    for (method, _, path, body) in admin_routes() {
        let what = format!("{method} {path}");
        let b = body.as_ref();
        refused(&call(&srv, &method, &path, b, None).await, 401, "", &what);
        let a = call(&srv, &method, &path, b, Some(unknown.as_str())).await;
        refused(&a, 401, "error=\"invalid_token\"", &what);
        for (t, name) in [(&tokens.read, "viewer"), (&tokens.write, "ingest")] {
            let a = call(&srv, &method, &path, b, Some(t.as_str())).await;
            refused(
                &a,
                403,
                "error=\"insufficient_scope\", scope=\"admin\"",
                &what,
            );
            assert!(
                a.body["detail"].as_str().unwrap().contains(name),
                "{what}: {}",
                a.body
            );
        }
        allowed(
            &call(&srv, &method, &path, b, Some(tokens.admin.as_str())).await,
            &what,
        );
    }

    for (method, _, path, body, needs) in data_routes() {
        let what = format!("{method} {path}");
        let b = body.as_ref();
        refused(&call(&srv, &method, &path, b, None).await, 401, "", &what);
        let a = call(&srv, &method, &path, b, Some(unknown.as_str())).await;
        refused(&a, 401, "error=\"invalid_token\"", &what);
        for (t, scope) in [
            (&tokens.read, Scope::Read),
            (&tokens.write, Scope::Write),
            (&tokens.admin, Scope::Admin),
        ] {
            let a = call(&srv, &method, &path, b, Some(t.as_str())).await;
            if scope.includes(needs) {
                allowed(&a, &format!("{what} with {scope}"));
            } else {
                refused(
                    &a,
                    403,
                    &format!("scope=\"{needs}\""),
                    &format!("{what} with {scope}"),
                );
            }
        }
    }
    // A write with the right scope is stored.
    let cell = json!({"row_key": ROW, "column_name": "c", "ref_key": 1, "body": {"n": 1}});
    let a = call(
        &srv,
        &Method::POST,
        "/v1/cells",
        Some(&cell),
        Some(tokens.write.as_str()),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let a = call(
        &srv,
        &Method::GET,
        &format!("/v1/cells/{ROW}/c/1"),
        None,
        Some(tokens.read.as_str()),
    )
    .await;
    assert_eq!((a.status, &a.body["body"]), (200, &json!({"n": 1})));

    // Probes need no token; readyz shows the backends only to a caller that may read.
    for path in OPEN {
        let a = call(&srv, &Method::GET, path, None, None).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        let a = call(&srv, &Method::GET, path, None, Some(unknown.as_str())).await;
        assert_eq!(a.status, 200, "{path} with an unknown token: {}", a.body);
    }
    let a = call(&srv, &Method::GET, "/v1/readyz", None, None).await;
    assert_eq!(a.body["backends"], json!([]), "{}", a.body);
    let a = call(
        &srv,
        &Method::GET,
        "/v1/readyz",
        None,
        Some(tokens.read.as_str()),
    )
    .await;
    assert_eq!(
        a.body["backends"].as_array().map(Vec::len),
        Some(2),
        "{}",
        a.body
    );

    // A header that is not one bearer token is refused as such.
    let resp = bare_client()
        .get(srv.url("/admin/v1/status"))
        .header("authorization", format!("Basic {}", tokens.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_v1_is_open_and_the_admin_api_closed() {
    let srv = server_with(None, false).await;
    let stranger = new_token();
    for (method, _, path, body, _) in data_routes() {
        for t in [None, Some(stranger.as_str())] {
            let a = call(&srv, &method, &path, body.as_ref(), t).await;
            allowed(&a, &format!("{method} {path}"));
        }
    }
    let cell = json!({"row_key": ROW, "column_name": "c", "ref_key": 1, "body": {}});
    let a = call(&srv, &Method::POST, "/v1/cells", Some(&cell), None).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let a = call(&srv, &Method::GET, "/v1/readyz", None, None).await;
    assert_eq!(
        a.body["backends"].as_array().map(Vec::len),
        Some(2),
        "{}",
        a.body
    );

    for (method, _, path, body) in admin_routes() {
        let what = format!("{method} {path}");
        let a = call(&srv, &method, &path, body.as_ref(), None).await;
        refused(&a, 401, "", &what);
        assert!(
            a.body["detail"]
                .as_str()
                .unwrap()
                .contains("none configured"),
            "{what}: {}",
            a.body
        );
        let a = call(&srv, &method, &path, body.as_ref(), Some(stranger.as_str())).await;
        refused(&a, 401, "invalid_token", &what);
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unsafe_flag_opens_the_admin_api_and_says_so() {
    let srv = server_with(None, true).await;
    for (method, _, path, body) in admin_routes() {
        let a = call(&srv, &method, &path, body.as_ref(), None).await;
        allowed(&a, &format!("{method} {path}"));
    }
    let a = call(&srv, &Method::GET, "/admin/v1/status", None, None).await;
    let warnings = a.body["warnings"].to_string();
    assert!(warnings.contains("UNSAFE_OPEN_ADMIN"), "{}", a.body);
    assert!(
        a.body["auth"]["admin_api"]
            .as_str()
            .unwrap()
            .contains("open"),
        "{}",
        a.body
    );
    srv.stop().await;
}

/// Polls `GET /admin/v1/status` with `token` until its status is `want`.
async fn until_status(srv: &TestServer, token: &str, want: u16, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a = call(srv, &Method::GET, "/admin/v1/status", None, Some(token)).await;
        if a.status == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still {} {}",
            a.status,
            a.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_file_is_read_again_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let (first, second) = (new_token(), new_token());
    std::fs::write(&file, token_line("first", Scope::Admin, &first)).unwrap();
    let urls = fresh_databases(2).await;
    let mut config = default_config();
    config.tokens = None;
    config.token_file = Some(file.clone());
    let srv = TestServer::start(config, even_map(&urls, 8)).await;
    until_status(&srv, &first, 200, "the file's token").await;
    assert_eq!(
        call(
            &srv,
            &Method::GET,
            "/admin/v1/status",
            None,
            Some(second.as_str())
        )
        .await
        .status,
        401
    );

    // A token added to the file works without a restart.
    let both = format!(
        "{}\n{}\n",
        token_line("first", Scope::Admin, &first),
        token_line("second", Scope::Admin, &second)
    );
    std::fs::write(&file, both).unwrap();
    until_status(&srv, &second, 200, "an added token").await;
    // A removed one stops working.
    std::fs::write(&file, token_line("second", Scope::Admin, &second)).unwrap();
    until_status(&srv, &first, 401, "a removed token").await;

    // A damaged file keeps the last good tokens; the status says why.
    std::fs::write(&file, "second admin sha256:0123").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a = call(
            &srv,
            &Method::GET,
            "/admin/v1/status",
            None,
            Some(second.as_str()),
        )
        .await;
        assert_eq!(a.status, 200, "the last good token was dropped: {}", a.body);
        if let Some(e) = a.body["auth"]["token_file_error"].as_str() {
            assert!(e.contains("line 1"), "{e}");
            assert!(
                a.body["warnings"].to_string().contains("last good set"),
                "{}",
                a.body
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no error reported: {}",
            a.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    srv.stop().await;
}

/// The audit log's entries (newest first).
async fn audit(srv: &TestServer, admin: &str) -> Vec<Value> {
    let a = call(
        srv,
        &Method::GET,
        "/admin/v1/audit?limit=1000",
        None,
        Some(admin),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["entries"].as_array().cloned().unwrap_or_default()
}

/// Waits until the audit log has an entry that `want` accepts; returns it.
async fn audited(
    srv: &TestServer,
    admin: &str,
    what: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let entries = audit(srv, admin).await;
        if let Some(e) = entries.iter().find(|e| want(e)) {
            return e.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no audit entry for {what}: {entries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_and_refusals_are_audited_with_the_tokens_name_only() {
    let tokens = Tokens::new();
    let urls = fresh_databases(3).await;
    let mut config = default_config();
    config.tokens = Some(tokens.lines());
    config.open_data_api = false;
    let srv = TestServer::start(config, even_map(&urls[..2], 8)).await;

    // An admin action: the request's entry, and the catalog's own entry of the change, both
    // with who asked.
    let body = json!({"name": "db3", "url": urls[2]});
    let a = call(
        &srv,
        &Method::POST,
        "/admin/v1/backends",
        Some(&body),
        Some(tokens.admin.as_str()),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let by_ops = json!({"token": "ops", "client": "127.0.0.1"});
    let e = audited(&srv, &tokens.admin, "the admin request", |e| {
        e["kind"] == "admin" && e["detail"]["path"] == "/admin/v1/backends"
    })
    .await;
    assert_eq!(e["detail"]["method"], "POST");
    assert_eq!(e["detail"]["status"], 201);
    assert_eq!(e["detail"]["by"], by_ops, "{e}");
    let e = audited(&srv, &tokens.admin, "the change", |e| {
        e["kind"] == "backend_add"
    })
    .await;
    assert_eq!(e["detail"]["by"], by_ops, "{e}");
    // Reading is not auditing: a status is not an entry.
    let before = audit(&srv, &tokens.admin).await.len();
    call(
        &srv,
        &Method::GET,
        "/admin/v1/status",
        None,
        Some(tokens.admin.as_str()),
    )
    .await;
    assert_eq!(audit(&srv, &tokens.admin).await.len(), before);

    // Refused: a known token without the scope, an unknown token, no token.
    let a = call(
        &srv,
        &Method::POST,
        "/admin/v1/moves",
        Some(&json!({"shards": "0", "to": "db3"})),
        Some(tokens.read.as_str()),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.body);
    let stranger = new_token();
    let a = call(
        &srv,
        &Method::DELETE,
        "/admin/v1/backends/db3",
        None,
        Some(stranger.as_str()),
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = call(&srv, &Method::POST, "/v1/cells", Some(&json!({})), None).await;
    assert_eq!(a.status, 401, "{}", a.body);
    let e = audited(&srv, &tokens.admin, "the wrong scope", |e| {
        e["kind"] == "auth_refused" && e["detail"]["reason"] == "insufficient scope"
    })
    .await;
    assert_eq!(
        e["detail"]["by"],
        json!({"token": "viewer", "client": "127.0.0.1"}),
        "{e}"
    );
    assert_eq!(
        (&e["detail"]["api"], &e["detail"]["path"]),
        (&json!("admin"), &json!("/admin/v1/moves"))
    );
    assert_eq!(e["detail"]["status"], 403);
    let e = audited(&srv, &tokens.admin, "the unknown token", |e| {
        e["kind"] == "auth_refused" && e["detail"]["reason"] == "unknown token"
    })
    .await;
    assert_eq!(
        e["detail"]["by"],
        json!({"token": null, "client": "127.0.0.1"}),
        "{e}"
    );
    assert_eq!(
        (&e["detail"]["method"], &e["detail"]["status"]),
        (&json!("DELETE"), &json!(401))
    );
    let e = audited(&srv, &tokens.admin, "no token on /v1", |e| {
        e["kind"] == "auth_refused" && e["detail"]["api"] == "data"
    })
    .await;
    assert_eq!(e["detail"]["reason"], "no token", "{e}");
    // The backend was not removed.
    let a = call(
        &srv,
        &Method::GET,
        "/admin/v1/backends",
        None,
        Some(tokens.admin.as_str()),
    )
    .await;
    assert_eq!(
        a.body["backends"].as_array().map(Vec::len),
        Some(3),
        "{}",
        a.body
    );

    // No token's text anywhere in the log, not even in part.
    let log = serde_json::to_string(&audit(&srv, &tokens.admin).await).unwrap();
    for t in tokens.all().into_iter().chain([stranger.as_str()]) {
        assert!(!log.contains(&t[4..20]), "a token in the audit log: {log}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refusals_writes_a_bounded_number_of_rows() {
    let tokens = Tokens::new();
    let srv = server_with(Some(tokens.lines()), false).await;
    let stranger = new_token();
    for _ in 0..40 {
        let a = call(
            &srv,
            &Method::GET,
            "/v1/shards/count",
            None,
            Some(stranger.as_str()),
        )
        .await;
        assert_eq!(a.status, 401);
    }
    // A refusal of another kind, after them: once it is in the log, the writer (one task, in
    // order) has dealt with every refusal before it.
    let a = call(
        &srv,
        &Method::POST,
        "/admin/v1/reload",
        None,
        Some(tokens.write.as_str()),
    )
    .await;
    assert_eq!(a.status, 403);
    audited(&srv, &tokens.admin, "the last refusal", |e| {
        e["kind"] == "auth_refused" && e["detail"]["path"] == "/admin/v1/reload"
    })
    .await;
    let rows = audit(&srv, &tokens.admin)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "auth_refused" && e["detail"]["reason"] == "unknown token")
        .count();
    // One row for the first of the window (two if a window ended among the 40 requests); the
    // rest are counted in the window's summary.
    assert!(
        (1..=2).contains(&rows),
        "{rows} rows for 40 refusals of one client"
    );
    srv.stop().await;
}
