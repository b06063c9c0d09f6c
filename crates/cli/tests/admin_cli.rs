//! The admin commands as a user runs them: the real `mezzanine` binary against a small
//! in-test HTTP server that answers with the admin API's JSON shapes and records each request
//! (method, path, body). The real server is covered by the end-to-end suites.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mezzanine");

#[path = "admin_cli/actions.rs"]
mod actions;
#[path = "admin_cli/options.rs"]
mod options;
#[path = "admin_cli/plugins.rs"]
mod plugins;

/// A request as the fake server saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    content_type: Option<String>,
    body: String,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{self:?}: {e}"))
    }
}

#[derive(Clone)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

type Routes = HashMap<(String, String), VecDeque<Reply>>;

#[derive(Clone, Default)]
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    routes: Arc<Mutex<Routes>>,
}

impl Fake {
    /// Answers `method path` with `status` and `body`; several calls for one route queue
    /// answers, and the last one repeats.
    fn on(&self, method: &str, path: &str, status: u16, body: Value) -> &Self {
        self.reply(method, path, status, "application/json", body.to_string())
    }

    fn reply(
        &self,
        method: &str,
        path: &str,
        status: u16,
        content_type: &'static str,
        body: String,
    ) -> &Self {
        self.routes
            .lock()
            .unwrap()
            .entry((method.to_owned(), path.to_owned()))
            .or_default()
            .push_back(Reply {
                status,
                content_type,
                body,
            });
        self
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fake.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let reply = {
        let mut routes = fake.routes.lock().unwrap();
        match routes.get_mut(&(method.to_string(), uri.path().to_owned())) {
            Some(queue) if queue.len() > 1 => queue.pop_front(),
            Some(queue) => queue.front().cloned(),
            None => None,
        }
    };
    match reply {
        Some(r) => (
            StatusCode::from_u16(r.status).unwrap(),
            [(header::CONTENT_TYPE, r.content_type)],
            r.body,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/problem+json")],
            json!({"type": "about:blank", "title": "Not Found", "status": 404,
                   "detail": format!("fake: no route {method} {}", uri.path())})
            .to_string(),
        )
            .into_response(),
    }
}

/// Starts a fake server; returns it and its base URL.
async fn fake() -> (Fake, String) {
    let fake = Fake::default();
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, url)
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `mezzanine <args> --server <server>` (without a terminal).
async fn run(server: &str, args: &[&str]) -> Run {
    run_with(args, &[("--server", server)], &[]).await
}

async fn run_with(args: &[&str], extra: &[(&str, &str)], env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args).env_remove("MEZZANINE_URL");
    for (flag, value) in extra {
        cmd.args([flag, value]);
    }
    cmd.envs(env.iter().copied());
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .expect("mezzanine did not finish within 60 s")
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Run {
    #[track_caller]
    fn ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    fn failed(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(1),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "{needle:?} not in stdout:\n{}",
            self.stdout
        );
        self
    }

    fn stdout_json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", self.stdout))
    }
}

#[track_caller]
fn assert_one(seen: &[Seen], method: &str, path: &str) -> Seen {
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        (method, path)
    );
    seen[0].clone()
}

fn shard_map() -> Value {
    json!({"num_shards": 64, "version": 3, "ranges": [
        {"start": 0, "end": 31, "backend": "db1", "state": "active"},
        {"start": 32, "end": 39, "backend": "db2", "state": "copying"},
        {"start": 40, "end": 63, "backend": "db2", "state": "active"}]})
}

fn backend(name: &str, up: bool) -> Value {
    json!({"name": name, "url": format!("postgres://u:***@{name}:5432/db"), "shards": 32,
           "weight": 1.0, "draining": false, "up": up, "latency_ms": if up { json!(0.4) } else { Value::Null },
           "error": if up { Value::Null } else { json!("connection refused") }})
}

fn job(id: u64, state: &str, copied: u64) -> Value {
    json!({"id": id, "state": state, "to": "db3", "shards_spec": "8-9", "parallel": 4,
           "max_rows_per_sec": null, "created_at": "2026-01-01T00:00:00Z",
           "updated_at": "2026-01-01T00:01:00Z", "error": null, "reverts": null,
           "shards": [
             {"shard": 8, "from": "db1", "to": "db3", "state": "copying",
              "rows_copied": copied, "rows_total": 5000, "lag": 30, "pause_ms": null,
              "error": null},
             {"shard": 9, "from": "db1", "to": "db3", "state": "pending",
              "rows_copied": 0, "rows_total": 100, "lag": null, "pause_ms": null,
              "error": null}]})
}

fn problem(status: u16, title: &str, detail: &str) -> String {
    json!({"type": "about:blank", "title": title, "status": status, "detail": detail}).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn shards_prints_the_map_as_a_table() {
    let (fake, url) = fake().await;
    fake.on("GET", "/admin/v1/shards", 200, shard_map());
    run(&url, &["shards"])
        .await
        .ok()
        .stdout_has("num_shards 64, map version 3")
        .stdout_has("SHARDS  BACKEND  STATE")
        .stdout_has("0-31    db1      active")
        .stdout_has("32-39   db2      copying")
        .stdout_has("40-63   db2      active");
    let seen = assert_one(&fake.seen(), "GET", "/admin/v1/shards");
    assert_eq!(seen.body, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_prints_the_servers_answer_pretty_and_nothing_else() {
    let (fake, url) = fake().await;
    // Compact, in the server's key order (not alphabetical): printed re-indented, order kept.
    let body = r#"{"num_shards":64,"version":3,"ranges":[{"start":0,"end":63,"backend":"db1","state":"active"}],"x":1.50}"#;
    fake.reply(
        "GET",
        "/admin/v1/shards",
        200,
        "application/json",
        body.to_owned(),
    );
    let out = run(&url, &["shards", "--json"]).await;
    out.ok();
    assert_eq!(
        out.stdout,
        "{\n  \"num_shards\": 64,\n  \"version\": 3,\n  \"ranges\": [\n    {\n      \
         \"start\": 0,\n      \"end\": 63,\n      \"backend\": \"db1\",\n      \
         \"state\": \"active\"\n    }\n  ],\n  \"x\": 1.50\n}\n"
    );
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    // --json also goes before the subcommand's own arguments, and on any admin command.
    fake.on(
        "GET",
        "/admin/v1/backends",
        200,
        json!({"backends": [backend("db1", true)]}),
    );
    let out = run(&url, &["backend", "--json", "list"]).await;
    out.ok();
    assert_eq!(
        out.stdout_json(),
        json!({"backends": [backend("db1", true)]})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shards_export_prints_shards_json() {
    let (fake, url) = fake().await;
    let exported = json!({"num_shards": 64, "backends": [
        {"name": "db1", "url": "postgres://u:***@h/db", "shards": "0-31"}]});
    fake.on("GET", "/admin/v1/shards/export", 200, exported.clone());
    let out = run(&url, &["shards", "export"]).await;
    out.ok();
    assert_eq!(out.stdout_json(), exported);
    assert_one(&fake.seen(), "GET", "/admin/v1/shards/export");
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_list_add_remove() {
    let (fake, url) = fake().await;
    fake.on(
        "GET",
        "/admin/v1/backends",
        200,
        json!({"backends": [backend("db1", true), backend("db2", false)]}),
    );
    run(&url, &["backend", "list"])
        .await
        .ok()
        .stdout_has("NAME  URL")
        .stdout_has("db1   postgres://u:***@db1:5432/db  32      1       yes  0.40 ms")
        .stdout_has(
            "db2   postgres://u:***@db2:5432/db  32      1       no   -        connection refused",
        );
    assert_one(&fake.seen(), "GET", "/admin/v1/backends");

    let (fake, url) = self::fake().await;
    let mut added = backend("db3", true);
    added["shards"] = json!(0);
    fake.on("POST", "/admin/v1/backends", 201, added);
    let out = run(
        &url,
        &["backend", "add", "db3", "postgres://u:secret@db3:5432/db"],
    )
    .await;
    out.ok()
        .stdout_has("added backend db3 (postgres://u:***@db3:5432/db): 0 shards, up yes");
    assert!(!out.stdout.contains("secret"), "{}", out.stdout);
    let seen = assert_one(&fake.seen(), "POST", "/admin/v1/backends");
    assert_eq!(seen.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        seen.json(),
        json!({"name": "db3", "url": "postgres://u:secret@db3:5432/db"})
    );

    let (fake, url) = self::fake().await;
    fake.reply(
        "DELETE",
        "/admin/v1/backends/db%203",
        204,
        "",
        String::new(),
    );
    run(&url, &["backend", "remove", "db 3"])
        .await
        .ok()
        .stdout_has("removed backend db 3");
    let out = run(&url, &["backend", "remove", "db 3", "--json"]).await;
    out.ok();
    assert_eq!(out.stdout, "");
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    for s in seen {
        assert_eq!((s.method.as_str(), s.body.as_str()), ("DELETE", ""));
        assert_eq!(s.path, "/admin/v1/backends/db%203");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn move_start_sends_the_optional_fields_only_when_given() {
    let (fake, url) = fake().await;
    fake.on("POST", "/admin/v1/moves", 202, job(7, "running", 0));
    run(&url, &["move", "start", "--shards", "8-9", "--to", "db3"])
        .await
        .ok()
        .stdout_has("move 7: running, shards 8-9 from db1 to db3")
        .stdout_has("mezzanine move status 7 --wait");
    run(
        &url,
        &[
            "move",
            "start",
            "--shards",
            "8-9",
            "--to",
            "db3",
            "--parallel",
            "4",
            "--max-rows-per-sec",
            "5000",
        ],
    )
    .await
    .ok();
    let out = run(
        &url,
        &["move", "start", "--shards", "8-9", "--to", "db3", "--json"],
    )
    .await;
    out.ok();
    assert_eq!(out.stdout_json(), job(7, "running", 0));

    let seen = fake.seen();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    for s in &seen {
        assert_eq!(
            (s.method.as_str(), s.path.as_str()),
            ("POST", "/admin/v1/moves")
        );
        assert_eq!(s.content_type.as_deref(), Some("application/json"));
    }
    assert_eq!(seen[0].json(), json!({"shards": "8-9", "to": "db3"}));
    assert_eq!(
        seen[1].json(),
        json!({"shards": "8-9", "to": "db3", "parallel": 4, "max_rows_per_sec": 5000})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn move_list_and_status() {
    let (fake, url) = fake().await;
    fake.on(
        "GET",
        "/admin/v1/moves",
        200,
        json!({"moves": [job(7, "running", 1200), {"id": 3, "state": "completed"}]}),
    );
    fake.on("GET", "/admin/v1/moves/7", 200, job(7, "running", 1200));
    run(&url, &["move", "list"])
        .await
        .ok()
        .stdout_has("ID  STATE      SHARDS  FROM  TO   ROWS")
        .stdout_has("7   running    8-9     db1   db3  1200/5100 (23%)")
        .stdout_has("3   completed  -");
    run(&url, &["move", "status", "7"])
        .await
        .ok()
        .stdout_has("move 7: running, shards 8-9 from db1 to db3")
        .stdout_has("parallel 4, no rate limit")
        .stdout_has("8      db1   db3  copying  1200/5000 (24%)  30   -")
        .stdout_has("9      db1   db3  pending  0/100 (0%)       -    -");
    let seen = fake.seen();
    assert_eq!(
        seen.iter()
            .map(|s| (s.method.as_str(), s.path.as_str()))
            .collect::<Vec<_>>(),
        [("GET", "/admin/v1/moves"), ("GET", "/admin/v1/moves/7")]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn move_abort_complete_revert() {
    let (fake, url) = fake().await;
    fake.on("POST", "/admin/v1/moves/7/abort", 202, job(7, "aborted", 0));
    fake.on(
        "POST",
        "/admin/v1/moves/7/complete",
        202,
        job(7, "completed", 5000),
    );
    let mut reverse = job(8, "running", 0);
    reverse["reverts"] = json!(7);
    reverse["to"] = json!("db1");
    fake.on("POST", "/admin/v1/moves/7/revert", 202, reverse.clone());
    run(&url, &["move", "abort", "7"])
        .await
        .ok()
        .stdout_has("move 7: aborted");
    run(&url, &["move", "complete", "7"])
        .await
        .ok()
        .stdout_has("move 7: completed");
    run(&url, &["move", "revert", "7"])
        .await
        .ok()
        .stdout_has("move 8: running")
        .stdout_has("(reverts move 7)");
    let out = run(&url, &["move", "revert", "7", "--json"]).await;
    out.ok();
    assert_eq!(out.stdout_json(), reverse);
    let seen = fake.seen();
    let calls: Vec<_> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str(), s.body.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("POST", "/admin/v1/moves/7/abort", ""),
            ("POST", "/admin/v1/moves/7/complete", ""),
            ("POST", "/admin/v1/moves/7/revert", ""),
            ("POST", "/admin/v1/moves/7/revert", ""),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn move_start_wait_polls_until_the_job_is_switched() {
    let (fake, url) = fake().await;
    fake.on("POST", "/admin/v1/moves", 202, job(7, "running", 0));
    fake.on("GET", "/admin/v1/moves/7", 200, job(7, "running", 1000))
        .on("GET", "/admin/v1/moves/7", 200, job(7, "running", 3000))
        .on("GET", "/admin/v1/moves/7", 200, job(7, "switched", 5000));
    let out = run(
        &url,
        &["move", "start", "--shards", "8-9", "--to", "db3", "--wait"],
    )
    .await;
    out.ok();
    // Without a terminal: nothing until the end, then the final status only.
    assert!(
        out.stdout
            .starts_with("move 7: switched, shards 8-9 from db1 to db3\n"),
        "{}",
        out.stdout
    );
    assert_eq!(out.stdout.matches("move 7:").count(), 1, "{}", out.stdout);
    out.stdout_has("5000/5000 (100%)");
    let seen = fake.seen();
    let calls: Vec<_> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("POST", "/admin/v1/moves"),
            ("GET", "/admin/v1/moves/7"),
            ("GET", "/admin/v1/moves/7"),
            ("GET", "/admin/v1/moves/7"),
        ]
    );
    assert_eq!(seen[0].json(), json!({"shards": "8-9", "to": "db3"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_on_a_job_that_fails_exits_1() {
    let (fake, url) = fake().await;
    let mut failed = job(7, "failed", 1200);
    failed["error"] = json!("target db3 is full");
    fake.on("GET", "/admin/v1/moves/7", 200, job(7, "running", 1000))
        .on("GET", "/admin/v1/moves/7", 200, failed.clone());
    let out = run(&url, &["move", "status", "7", "--wait"]).await;
    out.failed()
        .stdout_has("move 7: failed")
        .stdout_has("error: target db3 is full");
    assert!(
        out.stderr
            .contains("error: move 7 failed: target db3 is full"),
        "{}",
        out.stderr
    );
    assert_eq!(fake.seen().len(), 2);

    // With --json: the final job only, and still exit code 1.
    let (fake, url) = self::fake().await;
    fake.on("GET", "/admin/v1/moves/7", 200, job(7, "running", 1000))
        .on("GET", "/admin/v1/moves/7", 200, failed.clone());
    let out = run(&url, &["move", "status", "7", "--wait", "--json"]).await;
    out.failed();
    assert_eq!(out.stdout_json(), failed);

    // An aborted job too; a job that is already over needs no polling.
    let (fake, url) = self::fake().await;
    fake.on("GET", "/admin/v1/moves/7", 200, job(7, "aborted", 0));
    run(&url, &["move", "status", "7", "--wait"])
        .await
        .failed()
        .stdout_has("move 7: aborted");
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_rides_out_a_node_that_is_briefly_unavailable() {
    let (fake, url) = fake().await;
    fake.on("GET", "/admin/v1/moves/7", 200, job(7, "running", 1000))
        .reply(
            "GET",
            "/admin/v1/moves/7",
            503,
            "application/problem+json",
            problem(503, "Service Unavailable", "catalog unreachable"),
        )
        .on("GET", "/admin/v1/moves/7", 200, job(7, "completed", 5000));
    run(&url, &["move", "status", "7", "--wait"])
        .await
        .ok()
        .stdout_has("move 7: completed");
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_prints_the_report_and_exits_1_when_copies_differ() {
    let report = json!({"ok": false, "shards": [
        {"shard": 8, "owner": "db3", "ok": false,
         "copies": [{"backend": "db1", "state": "retired", "rows": 10, "checksum": "aa"},
                    {"backend": "db3", "state": "active", "rows": 9, "checksum": "bb"}],
         "differences": [{"kind": "missing", "backend": "db3", "added_id": 42},
                         {"kind": "changed", "added_id": 43, "columns": ["body"]}],
         "more": false, "problems": []},
        {"shard": 9, "owner": "db3", "ok": true, "copies": [], "differences": [],
         "more": false, "problems": []}]});
    let (fake, url) = fake().await;
    fake.on("POST", "/admin/v1/verify", 200, report.clone());
    let out = run(&url, &["verify", "--shards", "8-9"]).await;
    out.failed()
        .stdout_has("8      db3    DIFFERS  db1 retired 10 rows; db3 active 9 rows")
        .stdout_has("missing on db3: added_id 42")
        .stdout_has("changed: added_id 43 (body)");
    assert!(
        out.stderr.contains("error: copies differ in shards 8"),
        "{}",
        out.stderr
    );
    let seen = assert_one(&fake.seen(), "POST", "/admin/v1/verify");
    assert_eq!(seen.json(), json!({"shards": "8-9"}));

    let (fake, url) = self::fake().await;
    let ok = json!({"ok": true, "shards": [{"shard": 9, "owner": "db3", "ok": true,
        "copies": [{"backend": "db3", "state": "active", "rows": 9, "checksum": "bb"}],
        "differences": [], "more": false, "problems": []}]});
    fake.on("POST", "/admin/v1/verify", 200, ok.clone());
    run(&url, &["verify", "--shards", "9"])
        .await
        .ok()
        .stdout_has("all copies match");
    let out = run(&url, &["verify", "--shards", "9", "--json"]).await;
    out.ok();
    assert_eq!(out.stdout_json(), ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_and_status() {
    let (fake, url) = fake().await;
    fake.on("POST", "/admin/v1/reload", 200, json!({"map_version": 4}));
    let status = json!({"node": {"id": "n1", "addr": "127.0.0.1:8080", "mover": false},
                        "leader": {"id": "n2", "addr": "127.0.0.1:8081"}, "map_version": 4});
    fake.on("GET", "/admin/v1/status", 200, status.clone());
    run(&url, &["reload"])
        .await
        .ok()
        .stdout_has("map reloaded, version 4");
    run(&url, &["status"])
        .await
        .ok()
        .stdout_has("node    n1 at 127.0.0.1:8080 (mover disabled)")
        .stdout_has("leader  n2 at 127.0.0.1:8081")
        .stdout_has("map     version 4");
    let out = run(&url, &["status", "--json"]).await;
    out.ok();
    assert_eq!(out.stdout_json(), status);
    let seen = fake.seen();
    assert_eq!(
        (
            seen[0].method.as_str(),
            seen[0].path.as_str(),
            seen[0].body.as_str()
        ),
        ("POST", "/admin/v1/reload", "")
    );
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("GET", "/admin/v1/status")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_problem_answer_prints_its_detail_and_exits_1() {
    let (fake, url) = fake().await;
    fake.reply(
        "GET",
        "/admin/v1/moves/9",
        404,
        "application/problem+json",
        problem(404, "Not Found", "no move with id 9"),
    );
    fake.reply(
        "POST",
        "/admin/v1/backends",
        409,
        "application/problem+json",
        json!({"type": "about:blank", "title": "backend already registered", "status": 409})
            .to_string(),
    );
    for json in [false, true] {
        let mut args = vec!["move", "status", "9"];
        if json {
            args.push("--json");
        }
        let out = run(&url, &args).await;
        out.failed();
        assert_eq!(out.stderr, "error: no move with id 9\n");
        assert_eq!(out.stdout, "");
    }
    let out = run(&url, &["backend", "add", "db1", "postgres://x@h/db"]).await;
    out.failed();
    assert_eq!(out.stderr, "error: backend already registered\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_named_with_a_hint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = run(&url, &["shards"]).await;
    out.failed();
    assert_eq!(out.stdout, "");
    for needle in [url.as_str(), "--server", "MEZZANINE_URL"] {
        assert!(
            out.stderr.contains(needle),
            "{needle:?} not in {}",
            out.stderr
        );
    }
    assert!(
        out.stderr.starts_with("error: cannot reach"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_comes_from_mezzanine_url() {
    let (fake, url) = fake().await;
    fake.on(
        "GET",
        "/admin/v1/status",
        200,
        json!({"node": null, "leader": null, "map_version": 1}),
    );
    run_with(&["status"], &[], &[("MEZZANINE_URL", &url)])
        .await
        .ok()
        .stdout_has("map     version 1");
    assert_one(&fake.seen(), "GET", "/admin/v1/status");
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_exit_2_without_a_request() {
    let (fake, url) = fake().await;
    for args in [
        &["move", "status", "seven"][..],
        &["move", "start", "--to", "db3"][..],
        &[
            "move",
            "start",
            "--shards",
            "8",
            "--to",
            "db3",
            "--parallel",
            "0",
        ][..],
        &["backend", "add", "db3"][..],
    ] {
        let out = run(&url, args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
    }
    assert!(fake.seen().is_empty());
}
