//! The test harness: real PostgreSQL servers and real mezzanine servers, no mocks.
//!
//! - [`shared_pg`]: two throwaway PostgreSQL servers started once per test binary (from the
//!   installed binaries, as the `postgres` user when root; see `mezzanine-pgcluster`), torn
//!   down by their watchdogs when the binary exits, however it exits.
//! - [`fresh_databases`]: new, empty databases for one test, spread over the shared servers,
//!   so tests running in parallel never see each other's data.
//! - [`TestServer`]: a mezzanine server on an ephemeral port inside the test process.
//! - Fault tests that stop, kill or pause a server use [`dedicated_pg`] servers of their own.
//! - [`proxy::PgProxy`]: a TCP proxy that cuts a node off from a PostgreSQL server silently.
//! - [`logs`]: nodes on runtimes of their own, and what each of them logs.
//! - [`tls`]: certificates made in the test (a CA and the leaves it signs) and TLS clients.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mezzanine_core::ShardMap;
use mezzanine_pgcluster::{start_temp_servers, PgInstall, PgServer};
use mezzanine_server::{http, AppState, ServeConfig, Server, StartError};

pub mod logs;
pub mod proxy;
pub mod raw;
pub mod receiver;
pub mod tls;

static SHARED: OnceLock<Vec<PgServer>> = OnceLock::new();
static DB_SEQ: AtomicUsize = AtomicUsize::new(0);

fn install() -> PgInstall {
    match PgInstall::locate() {
        Ok(i) => i,
        Err(e) => panic!("the tests need PostgreSQL server binaries: {e}"),
    }
}

/// The PostgreSQL servers shared by the tests of this binary (started on first use).
pub fn shared_pg() -> &'static [PgServer] {
    SHARED.get_or_init(|| match start_temp_servers(&install(), 2) {
        Ok(s) => s,
        Err(e) => panic!("cannot start the test PostgreSQL servers: {e}"),
    })
}

/// Throwaway PostgreSQL servers owned by one test (for stopping, killing or pausing them).
pub fn dedicated_pg(n: usize) -> Vec<PgServer> {
    match start_temp_servers(&install(), n) {
        Ok(s) => s,
        Err(e) => panic!("cannot start dedicated PostgreSQL servers: {e}"),
    }
}

/// Runs SQL against a database URL (for set-up and inspection by tests).
pub async fn sql(url: &str, statements: &str) {
    let client = connect(url).await;
    if let Err(e) = client.batch_execute(statements).await {
        panic!("SQL failed on {url}: {e}\n{statements}");
    }
}

/// A plain connection to a database (its driver task runs in the background).
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) =
        match mezzanine_storage::conninfo::connect(url, Duration::from_secs(30)).await {
            Ok(c) => c,
            Err(e) => panic!("cannot connect to {url}: {e}"),
        };
    tokio::spawn(conn);
    client
}

/// Creates a new empty database on `server` and returns its URL.
pub async fn create_database(server: &PgServer) -> String {
    let name = format!(
        "t{}_{}",
        std::process::id(),
        DB_SEQ.fetch_add(1, Ordering::SeqCst)
    );
    let admin = connect(&server.url("postgres")).await;
    let mut attempt = 0;
    loop {
        match admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
        {
            Ok(()) => break,
            Err(e) if attempt < 5 => {
                attempt += 1;
                eprintln!("CREATE DATABASE {name} failed ({e}), retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot create database {name}: {e}"),
        }
    }
    server.url(&name)
}

/// `n` new databases on the shared servers, alternating between them.
pub async fn fresh_databases(n: usize) -> Vec<String> {
    let servers = shared_pg();
    let mut urls = Vec::with_capacity(n);
    for i in 0..n {
        urls.push(create_database(&servers[i % servers.len()]).await);
    }
    urls
}

/// The admin token of every test server the harness configures ([`default_config`]) and
/// that [`client`] sends. A test constant, not a secret: it opens only the test's servers.
pub const ADMIN_TOKEN: &str =
    "mzt_0000000000000000000000000000000000000000000000000000000000harness";

/// The token line (`TOKENS`) that makes a server accept [`ADMIN_TOKEN`], named `harness`, with
/// scope admin and no rate limit (`rate=off`: the suites poll and load faster than any
/// client; the limits are `tests/rate_limit.rs`'s business): for servers started as processes
/// (`mezzanine serve`) too.
pub fn harness_tokens() -> String {
    mezzanine_server::auth::tokens::token_line_with_rate(
        "harness",
        mezzanine_server::auth::Scope::Admin,
        ADMIN_TOKEN,
        Some(mezzanine_server::auth::limits::Limit::Off),
    )
}

/// The server configuration with every default, listening on an ephemeral local port, with
/// one token ([`ADMIN_TOKEN`], scope admin, which [`client`] sends) and `/v1` open to clients
/// without a token (`OPEN_DATA_API`, as `mezzanine dev` runs): the suites' raw requests to
/// `/v1` work as before, and the admin API needs the token, as it always does. The
/// authentication suite (`tests/auth.rs`) configures its own tokens.
pub fn default_config() -> ServeConfig {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        config: ServeConfig,
    }
    let mut c = match <Defaults as clap::Parser>::try_parse_from(["mezzanine"]) {
        Ok(d) => d.config,
        Err(e) => panic!("default configuration does not parse: {e}"),
    };
    c.host = "127.0.0.1".into();
    c.port = 0;
    c.tokens = Some(harness_tokens());
    c.open_data_api = true;
    c
}

/// An even shard map over the given database URLs (backends named db1, db2, …).
pub fn even_map(urls: &[String], num_shards: u32) -> ShardMap {
    let named: Vec<(String, String)> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| (format!("db{}", i + 1), u.clone()))
        .collect();
    match ShardMap::even_split(&named, num_shards) {
        Ok(m) => m,
        Err(e) => panic!("bad test map: {e}"),
    }
}

/// A mezzanine server running inside the test process (`base` is `https://…` when its
/// configuration has TLS files).
pub struct TestServer {
    pub base: String,
    pub state: Arc<AppState>,
    pub startup: Duration,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server over `map` with `config`.
    pub async fn try_start(
        mut config: ServeConfig,
        map: ShardMap,
    ) -> Result<TestServer, StartError> {
        config.num_shards = map.num_shards();
        // On the configured interface (the loopback by default; 0.0.0.0 for tests of what a
        // node listening everywhere reports), an ephemeral port.
        let host = config.host.clone();
        let limits = mezzanine_server::conn::Limits::of(&config);
        let server = Server::start_with_map(config, map).await?;
        let listener = match tokio::net::TcpListener::bind((host.as_str(), 0)).await {
            Ok(l) => l,
            Err(e) => panic!("cannot bind {host}: {e}"),
        };
        let local = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("no local address: {e}"),
        };
        server.serving_on(&local.to_string());
        // Tests reach a node listening everywhere through the loopback.
        let addr = if local.ip().is_unspecified() {
            format!("127.0.0.1:{}", local.port())
        } else {
            local.to_string()
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = server.router();
        let tls = server.tls();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = tokio::spawn(async move {
            let _ = http::serve(listener, app, limits, tls, async {
                let _ = rx.await;
            })
            .await;
        });
        Ok(TestServer {
            base: format!("{scheme}://{addr}"),
            state: server.state,
            startup: server.startup,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Starts a server over `map` with `config`, panicking if it cannot.
    pub async fn start(config: ServeConfig, map: ShardMap) -> TestServer {
        match TestServer::try_start(config, map).await {
            Ok(s) => s,
            Err(e) => panic!("server did not start: {e}"),
        }
    }

    /// A server over `backends` fresh databases with `num_shards` shards and default settings.
    pub async fn fresh(backends: usize, num_shards: u32) -> (TestServer, Vec<String>) {
        let urls = fresh_databases(backends).await;
        let server = TestServer::start(default_config(), even_map(&urls, num_shards)).await;
        (server, urls)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops accepting, lets requests in flight finish, and waits for the server to end.
    pub async fn stop(mut self) {
        self.state.stop_background();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.state.stop_background();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An HTTP client that sends no token unless told to (for the authentication suites).
pub fn bare_client() -> reqwest::Client {
    match reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => panic!("no HTTP client: {e}"),
    }
}

/// The parameters of an OpenAPI operation as sorted `in:name` strings (for comparing a
/// document's operations with a fixture's).
pub fn operation_parameters(op: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = op["parameters"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    format!(
                        "{}:{}",
                        p["in"].as_str().unwrap_or_default(),
                        p["name"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// An HTTP client for tests: it sends [`ADMIN_TOKEN`] with every request.
pub fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    match reqwest::header::HeaderValue::from_str(&format!("Bearer {ADMIN_TOKEN}")) {
        Ok(v) => headers.insert(reqwest::header::AUTHORIZATION, v),
        Err(e) => panic!("the harness token is no header value: {e}"),
    };
    match reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => panic!("no HTTP client: {e}"),
    }
}

/// A cell body for `POST /v1/cells`.
pub fn cell(
    row_key: &uuid::Uuid,
    column: &str,
    ref_key: i64,
    body: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({"row_key": row_key.to_string(), "column_name": column, "ref_key": ref_key, "body": body})
}

/// Posts JSON and returns the status and the parsed answer.
pub async fn post_json(
    c: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = match c.post(url).json(body).send().await {
        Ok(r) => r,
        Err(e) => panic!("POST {url}: {e}"),
    };
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// Gets a URL and returns the status and the parsed answer.
pub async fn get_json(c: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let resp = match c.get(url).send().await {
        Ok(r) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// Starts a move through the admin API of `srv` and returns the job's id.
pub async fn start_move(srv: &TestServer, body: serde_json::Value) -> i64 {
    let (s, job) = post_json(&client(), &srv.url("/admin/v1/moves"), &body).await;
    assert_eq!(s, 202, "move not started: {job}");
    match job["id"].as_i64() {
        Some(id) => id,
        None => panic!("no job id in {job}"),
    }
}

/// Polls `GET path` (an admin resource) every `every` until `done(answer)` holds, or panics
/// after `within`; returns the answer.
pub async fn wait_admin(
    srv: &TestServer,
    path: &str,
    within: Duration,
    every: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let c = client();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (s, v) = get_json(&c, &srv.url(path)).await;
        if s == 200 && done(&v) {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{path} did not reach the expected state within {within:?}: {v}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Polls a move job until `done(job)` holds (or panics after `within`); returns the job.
pub async fn wait_job(
    srv: &TestServer,
    id: i64,
    within: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let path = format!("/admin/v1/moves/{id}");
    wait_admin(srv, &path, within, Duration::from_millis(50), done).await
}

/// Waits until the job's state is `state`.
pub async fn wait_job_state(
    srv: &TestServer,
    id: i64,
    state: &str,
    within: Duration,
) -> serde_json::Value {
    wait_job(srv, id, within, |j| j["state"] == state).await
}

/// Waits until a shard of the job is in `state`.
pub async fn wait_shard_state(
    srv: &TestServer,
    id: i64,
    shard: u32,
    state: &str,
    within: Duration,
) -> serde_json::Value {
    wait_job(srv, id, within, |j| {
        j["shards"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["shard"] == shard && s["state"] == state))
    })
    .await
}

/// A row key that hashes to `shard` (of `num_shards`).
pub fn key_in_shard(shard: u32, num_shards: u32) -> uuid::Uuid {
    loop {
        let k = uuid::Uuid::new_v4();
        if mezzanine_core::shard_for_row_key(&k, num_shards) == shard {
            return k;
        }
    }
}

/// The state row of `shard` in a backend database, if any.
pub async fn shard_state_in(url: &str, shard: u32) -> Option<String> {
    let c = connect(url).await;
    let rows = c
        .query(
            "SELECT state FROM mezzanine_shard_state WHERE shard = $1",
            &[&(shard as i32)],
        )
        .await
        .unwrap_or_default();
    rows.first().map(|r| r.get::<_, String>(0))
}

/// The number of cells of `shard` in a backend database (0 without the table).
pub async fn cells_in(url: &str, shard: u32) -> i64 {
    let c = connect(url).await;
    match c
        .query(&format!("SELECT count(*) FROM cells_{shard:04}"), &[])
        .await
    {
        Ok(rows) => rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Sends a request; returns its status, `Retry-After`, parsed body and how long it took.
pub async fn timed(
    req: reqwest::RequestBuilder,
) -> (u16, Option<String>, serde_json::Value, Duration) {
    let t = std::time::Instant::now();
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, retry, body, t.elapsed())
}

/// A port nothing listens on now (for a server a test starts, or one that must refuse).
pub fn free_port() -> u16 {
    match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => panic!("no free port on 127.0.0.1: {e}"),
    }
}

/// A cluster of three fresh databases: db1 and db2 hold `num_shards` shards evenly, db3 is
/// registered as an empty backend (a move's target); the node runs with `config`. Returns the
/// node and the databases' URLs.
pub async fn cluster_with_spare(config: ServeConfig, num_shards: u32) -> (TestServer, Vec<String>) {
    let urls = fresh_databases(3).await;
    let srv = TestServer::start(config, even_map(&urls[..2], num_shards)).await;
    let (s, b) = post_json(
        &client(),
        &srv.url("/admin/v1/backends"),
        &serde_json::json!({"name": "db3", "url": urls[2]}),
    )
    .await;
    assert_eq!(s, 201, "spare db3 not registered: {b}");
    (srv, urls)
}

/// Writes one cell (`{"col", "ref"}` as its body) and returns it as stored (asserting 201).
pub async fn write_one(
    c: &reqwest::Client,
    srv: &TestServer,
    row: &uuid::Uuid,
    col: &str,
    r: i64,
) -> serde_json::Value {
    let body = serde_json::json!({"col": col, "ref": r});
    let (s, v) = post_json(c, &srv.url("/v1/cells"), &cell(row, col, r, body)).await;
    assert_eq!(s, 201, "{v}");
    v
}

/// Every cell of a shard through the API, in `added_id` order (pages of 1000).
pub async fn read_shard(
    c: &reqwest::Client,
    srv: &TestServer,
    shard: u32,
) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    let mut after = 0i64;
    loop {
        let path = format!(
            "/v1/cells/partitionRead?partition_number={shard}&read_type=2&added_id={after}&limit=1000"
        );
        let (s, page) = get_json(c, &srv.url(&path)).await;
        assert_eq!(s, 200, "{page}");
        let page = page.as_array().cloned().unwrap_or_default();
        let Some(last) = page.last() else {
            return all;
        };
        after = last["added_id"].as_i64().unwrap_or(after);
        all.extend(page);
    }
}

/// The owner of `shard` in the catalog's own table, read from the catalog's database.
pub async fn catalog_owner(catalog_url: &str, shard: u32) -> String {
    let c = connect(catalog_url).await;
    match c
        .query_one(
            "SELECT backend FROM mezzanine.shards WHERE shard = $1",
            &[&(shard as i32)],
        )
        .await
    {
        Ok(row) => row.get(0),
        Err(e) => panic!("no owner of shard {shard} in the catalog: {e}"),
    }
}

/// Shards per backend, from the admin API (`GET /admin/v1/backends`).
pub async fn shard_counts(srv: &TestServer) -> std::collections::HashMap<String, u64> {
    let (s, list) = get_json(&client(), &srv.url("/admin/v1/backends")).await;
    assert_eq!(s, 200, "{list}");
    list["backends"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| Some((b["name"].as_str()?.to_owned(), b["shards"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}
