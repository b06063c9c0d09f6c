//! Per-token rate limits (`crates/server/src/auth/limits.rs`): a token over its own rate
//! (`rate=` on its line of the token file) gets 429 problems with `Retry-After` and
//! `X-Request-ID` while another token is served; a removed token is 401, not 429; a raised
//! rate applies once the file is read again; the admin API has its own limit
//! (`ADMIN_RATE_LIMIT`), and the documents are never limited. No assertion depends on how
//! fast requests go: a burst of 1 makes some of 20 rapid requests 429 however fast they are,
//! and a burst of 1000 lets all of them through.

use std::path::Path;
use std::time::Duration;

use mezzanine_e2e::{
    bare_client, default_config, even_map, fresh_databases, TestServer, ADMIN_TOKEN,
};
use mezzanine_server::auth::limits::Limit;
use mezzanine_server::auth::tokens::{new_token, token_line, token_line_with_rate};
use mezzanine_server::auth::Scope;
use serde_json::Value;

const RAPID: usize = 20;

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn get(srv: &TestServer, path: &str, token: Option<&str>) -> Answer {
    let mut req = bare_client().get(srv.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.json().await.unwrap_or(Value::Null),
    }
}

/// `RAPID` requests one after another: their statuses.
async fn burst(srv: &TestServer, path: &str, token: &str) -> Vec<Answer> {
    let mut out = Vec::new();
    for _ in 0..RAPID {
        out.push(get(srv, path, Some(token)).await);
    }
    out
}

fn limit(s: &str) -> Option<Limit> {
    Some(s.parse().unwrap())
}

/// Waits (polling) until `token` gets `want` on `path`: the token file was read again.
async fn until(srv: &TestServer, path: &str, token: &str, want: u16, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a = get(srv, path, Some(token)).await;
        if a.status == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still {} {}",
            a.status,
            a.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn write(file: &Path, lines: &[String]) {
    std::fs::write(file, lines.join("\n") + "\n").unwrap();
}

#[tokio::test]
async fn a_token_over_its_rate_gets_429_and_the_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let (slow, fast, ops) = (new_token(), new_token(), new_token());
    let slow_line = |rate: &str| token_line_with_rate("slow", Scope::Write, &slow, limit(rate));
    let fast_line = token_line("fast", Scope::Read, &fast);
    // An admin token without a rate of its own: ADMIN_RATE_LIMIT applies to it.
    let ops_line = token_line("ops", Scope::Admin, &ops);
    write(
        &file,
        &[slow_line("1/m"), fast_line.clone(), ops_line.clone()],
    );
    let urls = fresh_databases(1).await;
    let mut config = default_config();
    config.token_file = Some(file.clone());
    config.open_data_api = false;
    config.admin_rate_limit = "1/m".parse().unwrap();
    // Tight for callers without a (known) token too: a removed token must not be counted as
    // one of them (it is refused, 401, before any limit).
    config.anon_rate_limit = "1/m".parse().unwrap();
    // The harness's token reads the audit log: no limit for it.
    config.tokens = Some(token_line_with_rate(
        "harness",
        Scope::Admin,
        ADMIN_TOKEN,
        limit("off"),
    ));
    let srv = TestServer::start(config, even_map(&urls, 4)).await;
    let path = "/v1/shards/count";

    // A burst of 1: among rapid requests, some are refused, each as a problem that names the
    // token and its limit, with Retry-After and the request's id.
    let answers = burst(&srv, path, &slow).await;
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert!(!refused.is_empty(), "no 429 among {RAPID} requests");
    assert!(
        answers.iter().all(|a| matches!(a.status, 200 | 429)),
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    for a in &refused {
        let header = |name: &str| a.headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header("content-type"), Some("application/problem+json"));
        let retry: u64 = header("retry-after").unwrap().parse().unwrap();
        assert!(retry >= 1, "{retry}");
        assert!(header("x-request-id").is_some_and(|id| !id.is_empty()));
        let b = &a.body;
        assert_eq!(b["status"], 429, "{b}");
        assert_eq!(b["title"], "Too Many Requests", "{b}");
        assert!(b["type"].is_string(), "{b}");
        assert_eq!(b["instance"], path, "{b}");
        let detail = b["detail"].as_str().unwrap();
        assert!(
            detail.contains("\"slow\"") && detail.contains("1/m"),
            "{detail}"
        );
    }

    // Another token is not affected.
    let answers = burst(&srv, path, &fast).await;
    assert!(answers.iter().all(|a| a.status == 200), "fast was limited");

    // The admin API has a limit of its own; the documents have none.
    let admin = burst(&srv, "/admin/v1/status", &ops).await;
    assert!(
        admin.iter().any(|a| a.status == 429),
        "no 429 on the admin API"
    );
    let a = admin.iter().find(|a| a.status == 429).unwrap();
    let detail = a.body["detail"].as_str().unwrap();
    assert!(detail.contains("ADMIN_RATE_LIMIT"), "{detail}");
    for doc in ["/admin/v1/openapi.json", "/openapi.json", "/v1/livez"] {
        for _ in 0..RAPID {
            assert_eq!(get(&srv, doc, None).await.status, 200, "{doc}");
        }
    }

    // Counted by API and scope, never by token name.
    let metrics = bare_client()
        .get(srv.url("/metrics"))
        .bearer_auth(&fast)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted = |api: &str, scope: &str| {
        metrics.lines().any(|l| {
            l.starts_with("mezzanine_rate_limited_total")
                && l.contains(&format!("api=\"{api}\""))
                && l.contains(&format!("scope=\"{scope}\""))
        })
    };
    assert!(
        counted("data", "write") && counted("admin", "admin"),
        "{metrics}"
    );
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("mezzanine_rate_limited_total") && l.contains("slow")),
        "{metrics}"
    );

    // Audited, but not every 429: one row for the token in the window (the others are
    // summed up when the window ends).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let a = get(&srv, "/admin/v1/audit?limit=1000", Some(ADMIN_TOKEN)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let rows: Vec<Value> = a.body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["kind"] == "auth_refused"
                    && e["detail"]["reason"] == "rate limited"
                    && e["detail"]["by"]["token"] == "slow"
            })
            .cloned()
            .collect();
        if !rows.is_empty() || tokio::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // (Two when the writer's window happened to end during the burst.)
    assert!(
        !rows.is_empty() && rows.len() <= 2 && rows.len() < refused.len(),
        "{} rows for {} refusals: {rows:?}",
        rows.len(),
        refused.len()
    );
    assert_eq!(rows[0]["detail"]["status"], 429);

    // A removed token is unknown (401), not limited.
    write(&file, &[fast_line.clone(), ops_line.clone()]);
    until(&srv, path, &slow, 401, "the removed token").await;
    for _ in 0..RAPID {
        let a = get(&srv, path, Some(&slow)).await;
        assert_eq!(a.status, 401, "{}", a.body);
        assert!(a.headers.get("www-authenticate").is_some());
    }

    // Back with a higher rate: the new rate applies (a burst of 1000 lets every one of the
    // rapid requests through).
    write(
        &file,
        &[slow_line("1000/s,burst=1000"), fast_line, ops_line],
    );
    until(&srv, path, &slow, 200, "the token back").await;
    let answers = burst(&srv, path, &slow).await;
    assert!(
        answers.iter().all(|a| a.status == 200),
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_raised_rate_in_the_file_lifts_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let slow = new_token();
    write(
        &file,
        &[token_line_with_rate(
            "slow",
            Scope::Read,
            &slow,
            limit("1/h"),
        )],
    );
    let urls = fresh_databases(1).await;
    let mut config = default_config();
    config.token_file = Some(file.clone());
    config.open_data_api = false;
    let srv = TestServer::start(config, even_map(&urls, 4)).await;
    let path = "/v1/shards/count";
    let answers = burst(&srv, path, &slow).await;
    assert!(answers.iter().any(|a| a.status == 429));
    // 1/h: nothing but a reload lets it through within the test.
    write(
        &file,
        &[token_line_with_rate(
            "slow",
            Scope::Read,
            &slow,
            limit("1000/s,burst=1000"),
        )],
    );
    until(&srv, path, &slow, 200, "the raised rate").await;
    let answers = burst(&srv, path, &slow).await;
    assert!(answers.iter().all(|a| a.status == 200));
}
