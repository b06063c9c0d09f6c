//! Backends without forgery, and secrets (issue 16 B and C), through the admin API:
//!
//! - a password, in every form a connection string carries it, never appears in the answer of
//!   `backend add` (succeeding or failing), in `GET /admin/v1/backends`, in the audit log, or in
//!   `shards export` without `with_secrets=true`, which shows them (and is audited);
//! - not even when the server it is sent to quotes it back in its error;
//! - URLs that are not PostgreSQL URLs, or whose host `BACKEND_HOSTS_ALLOWED` does not allow,
//!   are refused (422 naming `body.url`) before any connection: a listener on their port sees
//!   none (and sees one for an allowed URL, the control);
//! - every attempt is audited, failed or not, with the URL masked.

use std::io::ErrorKind;
use std::time::Duration;

use mezzanine_e2e::{
    client, connect, default_config, even_map, free_port, fresh_databases, get_json, shared_pg,
    TestServer,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn text_of(req: reqwest::RequestBuilder) -> (u16, String) {
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// `postgres://postgres@127.0.0.1:PORT/DB` → (port, db).
fn port_and_db(url: &str) -> (u16, String) {
    let rest = url.rsplit('@').next().unwrap();
    let (addr, db) = rest.split_once('/').unwrap();
    (
        addr.rsplit(':').next().unwrap().parse().unwrap(),
        db.to_owned(),
    )
}

/// The audit entries of `kind`.
async fn audited(srv: &TestServer, kind: &str) -> Vec<Value> {
    let (s, a) = get_json(&client(), &srv.url("/admin/v1/audit?limit=10000")).await;
    assert_eq!(s, 200, "{a}");
    a["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

/// Makes role `mz_pw` (password `right`) give its password over TCP on the shared servers,
/// which trust everyone else.
async fn password_role() {
    for server in shared_pg() {
        let hba = server.data_dir().join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba).unwrap();
        if !text.contains("mz_pw") {
            std::fs::write(
                &hba,
                format!("host all mz_pw 127.0.0.1/32 scram-sha-256\n{text}"),
            )
            .unwrap();
        }
        connect(&server.url("postgres"))
            .await
            .batch_execute(
                "DO $$ BEGIN CREATE ROLE mz_pw LOGIN PASSWORD 'right'; \
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$; SELECT pg_reload_conf()",
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passwords_never_shown_in_any_form() {
    password_role().await;
    let urls = fresh_databases(6).await;
    let srv = TestServer::start(default_config(), even_map(&urls[..2], 8)).await;
    let c = client();
    let add = srv.url("/admin/v1/backends");
    let spare: Vec<(u16, String)> = urls[2..].iter().map(|u| port_and_db(u)).collect();
    let odd = "p@ss w:rd/?&%#'\\x";
    let odd_enc = "p%40ss%20w%3Ard%2F%3F%26%25%23%27%5Cx";
    // (name, url, the password as it must never be seen). The test servers trust postgres,
    // so these succeed whatever the password.
    let good = [
        ("pw1", format!("postgres://postgres:Us3rInfo-Secret@127.0.0.1:{}/{}", spare[0].0, spare[0].1), vec!["Us3rInfo-Secret"]),
        ("pw2", format!("postgresql://postgres:{odd_enc}@127.0.0.1:{}/{}", spare[1].0, spare[1].1), vec![odd, odd_enc, "p@ss"]),
        ("pw3", format!("postgres://postgres@127.0.0.1:{}/{}?sslmode=disable&password=Qu3ry-Secret&application_name=x", spare[2].0, spare[2].1), vec!["Qu3ry-Secret"]),
        ("pw4", format!("postgres://postgres@127.0.0.1:{}/{}?pass%77ord=Enc0ded-Key-Secret", spare[3].0, spare[3].1), vec!["Enc0ded-Key-Secret"]),
    ];
    let (port, db) = port_and_db(&urls[0]);
    let closed = free_port();
    // Failing: a wrong password (user info, query), a closed port, key=value strings.
    let bad = [
        (
            "bad1",
            format!("postgres://mz_pw:Wr0ng-Secret@127.0.0.1:{port}/{db}"),
            "password authentication failed",
            "Wr0ng-Secret",
        ),
        (
            "bad2",
            format!("postgres://mz_pw@127.0.0.1:{port}/{db}?password=Wr0ng-Query-Secret"),
            "password authentication failed",
            "Wr0ng-Query-Secret",
        ),
        (
            "bad3",
            format!("postgres://postgres:Cl0sed-Secret@127.0.0.1:{closed}/{db}"),
            "connection refused",
            "Cl0sed-Secret",
        ),
        (
            "bad4",
            format!(
                "host=127.0.0.1 port={port} user=postgres password='Kv Qu0ted-Secret' dbname={db}"
            ),
            "must be a PostgreSQL URL",
            "Qu0ted-Secret",
        ),
        (
            "bad5",
            format!("host=127.0.0.1 port={port} password = Kv-Spaced-Secret dbname={db}"),
            "must be a PostgreSQL URL",
            "Kv-Spaced-Secret",
        ),
        (
            "bad 6",
            format!("postgres://postgres:Bad-Name-Secret@127.0.0.1:{port}/{db}"),
            "body.name",
            "Bad-Name-Secret",
        ),
    ];
    let mut never: Vec<&str> = Vec::new();
    for (name, url, secrets) in &good {
        let (s, text) = text_of(c.post(&add).json(&json!({"name": name, "url": url}))).await;
        assert_eq!(s, 201, "{name}: {text}");
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{name}: {secret:?} in the answer: {text}"
            );
        }
        assert!(text.contains("***"), "{name}: not masked: {text}");
        never.extend(secrets.iter().copied());
    }
    for (name, url, why, secret) in &bad {
        let (s, text) = text_of(c.post(&add).json(&json!({"name": name, "url": url}))).await;
        assert_eq!(s, 422, "{name}: {text}");
        assert!(text.contains(why), "{name}: {text}");
        assert!(
            !text.contains(secret),
            "{name}: {secret:?} in the answer: {text}"
        );
        never.push(*secret);
    }
    let (s, list) = text_of(c.get(&add)).await;
    assert_eq!(s, 200, "{list}");
    let (s, audit) = text_of(c.get(srv.url("/admin/v1/audit?limit=10000"))).await;
    assert_eq!(s, 200, "{audit}");
    let (s, export) = text_of(c.get(srv.url("/admin/v1/shards/export"))).await;
    assert_eq!(s, 200, "{export}");
    for secret in &never {
        for (what, text) in [("backends", &list), ("audit", &audit), ("export", &export)] {
            assert!(!text.contains(secret), "{secret:?} in {what}: {text}");
        }
    }
    // Every attempt is audited: the successes by backend_add, each failure with its URL masked
    // and its error.
    let added = audited(&srv, "backend_add").await;
    assert_eq!(added.len(), good.len(), "{added:?}");
    let failed = audited(&srv, "backend_add_failed").await;
    assert_eq!(failed.len(), bad.len(), "{failed:?}");
    for f in &failed {
        let d = &f["detail"];
        assert!(d["url"].as_str().unwrap().contains("***"), "{f}");
        assert_eq!(d["status"], 422, "{f}");
        assert!(!d["error"].as_str().unwrap().is_empty(), "{f}");
    }
    // Asked for, the export shows the passwords as they were given, and that is audited.
    let (s, with) = text_of(c.get(srv.url("/admin/v1/shards/export?with_secrets=true"))).await;
    assert_eq!(s, 200, "{with}");
    let file: Value = serde_json::from_str(&with).unwrap();
    for (name, url, _) in &good {
        let spare = file["spare_backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == *name)
            .unwrap_or_else(|| panic!("{name} not in {file}"));
        assert_eq!(spare["database_url"], *url, "{file}");
    }
    assert_eq!(audited(&srv, "shards_export_with_secrets").await.len(), 1);
    let (s, text) = text_of(c.get(srv.url("/admin/v1/shards/export?with_secrets=yes"))).await;
    assert_eq!(s, 422, "{text}");
    assert!(text.contains("query.with_secrets"), "{text}");
    srv.stop().await;
}

/// A server that asks for the password in clear text and answers with an error quoting it.
async fn echoing_server() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = echo(&mut s).await;
            });
        }
    });
    port
}

async fn echo(s: &mut tokio::net::TcpStream) -> std::io::Result<()> {
    loop {
        let len = s.read_i32().await? as usize;
        let mut body = vec![0; len.saturating_sub(4)];
        s.read_exact(&mut body).await?;
        if body.starts_with(&80877103i32.to_be_bytes()) {
            s.write_all(b"N").await?; // no TLS
            continue;
        }
        break;
    }
    s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await?; // AuthenticationCleartextPassword
    let _tag = s.read_u8().await?;
    let len = s.read_i32().await? as usize;
    let mut pw = vec![0; len.saturating_sub(4)];
    s.read_exact(&mut pw).await?;
    let pw = String::from_utf8_lossy(&pw)
        .trim_end_matches('\0')
        .to_owned();
    let message = format!("password {pw} is wrong, did you mean {pw}?");
    let mut fields = Vec::new();
    for (code, text) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "28P01"),
        (b'M', message.as_str()),
    ] {
        fields.push(code);
        fields.extend(text.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut msg = vec![b'E'];
    msg.extend(((fields.len() + 4) as i32).to_be_bytes());
    msg.extend(fields);
    s.write_all(&msg).await?;
    s.flush().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_quoted_back_by_the_server_is_not_shown() {
    let (srv, _) = TestServer::fresh(1, 8).await;
    let port = echoing_server().await;
    let c = client();
    for (name, url, secret) in [
        (
            "e1",
            format!("postgres://u:Ech0ed-Secret@127.0.0.1:{port}/db"),
            "Ech0ed-Secret",
        ),
        (
            "e2",
            format!("postgres://u@127.0.0.1:{port}/db?password=Ech0ed%20Query"),
            "Ech0ed Query",
        ),
    ] {
        let (s, text) = text_of(
            c.post(srv.url("/admin/v1/backends"))
                .json(&json!({"name": name, "url": url})),
        )
        .await;
        assert_eq!(s, 422, "{text}");
        // The server's own words, the password in them masked.
        assert!(
            text.contains("password *** is wrong, did you mean ***?"),
            "{text}"
        );
        assert!(!text.contains(secret), "{secret:?} in {text}");
        let (_, audit) = text_of(c.get(srv.url("/admin/v1/audit"))).await;
        assert!(audit.contains("is wrong"), "{audit}");
        assert!(!audit.contains(secret), "{secret:?} in {audit}");
    }
    srv.stop().await;
}

/// Whether anything connected to `l` since it was last asked (the kernel queues a completed
/// connection whether or not it was accepted, so no waiting is involved).
fn connected(l: &std::net::TcpListener) -> bool {
    match l.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_urls_connect_to_nothing_and_are_audited() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let urls = fresh_databases(2).await;
    let mut config = default_config();
    config.backend_hosts_allowed = Some("10.0.0.0/8, db.internal:5432".parse().unwrap());
    config.db_query_timeout = Duration::from_secs(1);
    let strict = TestServer::start(config, even_map(&urls[..1], 8)).await;
    let mut config = default_config();
    config.db_query_timeout = Duration::from_secs(1);
    let open = TestServer::start(config, even_map(&urls[1..], 8)).await;
    let c = client();
    let cases: Vec<(&TestServer, String, &str)> = vec![
        (
            &open,
            format!("mysql://u:pw@127.0.0.1:{port}/db"),
            "must be a PostgreSQL URL",
        ),
        (
            &open,
            format!("host=127.0.0.1 port={port} dbname=db"),
            "must be a PostgreSQL URL",
        ),
        (
            &open,
            format!("postgres://u@127.0.0.1:{port}"),
            "names no database",
        ),
        (
            &open,
            format!("postgres://127.0.0.1:{port}/db?application_name=a@b"),
            "'@' after the host",
        ),
        (
            &open,
            format!("postgres://u@127.0.0.1:{port}/db?sslmode=nonsense"),
            "cannot be read",
        ),
        (
            &open,
            format!("postgres://u:***@127.0.0.1:{port}/db"),
            "masked password",
        ),
        (
            &open,
            "postgres://u@169.254.169.254/db".to_owned(),
            "link-local or cloud metadata",
        ),
        (
            &open,
            "postgres://u@2852039166/db".to_owned(),
            "link-local or cloud metadata",
        ),
        (
            &strict,
            format!("postgres://u:pw@127.0.0.1:{port}/db"),
            "127.0.0.1:",
        ),
        (
            &strict,
            format!("postgres://u:pw@localhost:{port}/db"),
            "not allowed by BACKEND_HOSTS_ALLOWED (10.0.0.0/8,db.internal:5432)",
        ),
        (
            &strict,
            format!("postgres://u@db.internal:{port}/db"),
            "not allowed by BACKEND_HOSTS_ALLOWED",
        ),
        // Allowed by name, but connecting to the address given: that is what is checked too.
        (
            &strict,
            format!("postgres://u@10.1.2.3:{port}/db?hostaddr=127.0.0.1"),
            "127.0.0.1",
        ),
    ];
    let mut attempts = std::collections::HashMap::<String, usize>::new();
    for (i, (srv, url, why)) in cases.iter().enumerate() {
        let (s, text) = text_of(
            c.post(srv.url("/admin/v1/backends"))
                .json(&json!({"name": format!("r{i}"), "url": url})),
        )
        .await;
        assert_eq!(s, 422, "{url}: {text}");
        let p: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(p["errors"][0]["location"], "body.url", "{url}: {p}");
        assert!(text.contains(why), "{url}: {text}");
        assert!(!connected(&listener), "{url}: a connection was attempted");
        *attempts.entry(srv.base.clone()).or_default() += 1;
    }
    // The control: an allowed URL is connected to (the listener never answers, so it fails).
    let (s, text) = text_of(
        c.post(open.url("/admin/v1/backends"))
            .json(&json!({"name": "allowed", "url": format!("postgres://u@127.0.0.1:{port}/db")})),
    )
    .await;
    assert_eq!(s, 422, "{text}");
    assert!(
        connected(&listener),
        "the control made no connection: {text}"
    );
    *attempts.entry(open.base.clone()).or_default() += 1;
    for srv in [&strict, &open] {
        let failed = audited(srv, "backend_add_failed").await;
        assert_eq!(failed.len(), attempts[&srv.base], "{failed:?}");
        assert!(
            failed.iter().all(|f| !f.to_string().contains(":pw@")),
            "{failed:?}"
        );
    }
    strict.stop().await;
    open.stop().await;
}
