//! TLS on the HTTP listener: cells over HTTPS (HTTP/2 and HTTP/1.1), no HTTP answer to plain
//! HTTP, untrusted certificates refused, certificate and key reloaded without a restart (a
//! broken pair keeps the last good one), client certificates (mutual TLS), handshakes that
//! never come bounded and off the accept loop, the start refused for unusable files. Every
//! certificate is made in the test.

use std::path::Path;
use std::time::Duration;

use mezzanine_e2e::tls::{client_config, https_client, served_certificate, write, Ca, Leaf};
use mezzanine_e2e::{cell, default_config, even_map, fresh_databases, TestServer};
use mezzanine_server::ServeConfig;
use reqwest::Version;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// Starts a server over a fresh database serving HTTPS with `leaf` (files in `dir`), requiring
/// client certificates of `client_ca` when given; `tweak` changes the rest.
async fn tls_server(
    dir: &Path,
    leaf: &Leaf,
    client_ca: Option<&Ca>,
    tweak: impl FnOnce(&mut ServeConfig),
) -> TestServer {
    let mut config = default_config();
    config.tls_cert_file = Some(write(dir, "cert.pem", &leaf.chain_pem));
    config.tls_key_file = Some(write(dir, "key.pem", &leaf.key_pem));
    config.tls_client_ca_file = client_ca.map(|ca| write(dir, "clients.pem", &ca.pem));
    tweak(&mut config);
    let urls = fresh_databases(1).await;
    let srv = TestServer::start(config, even_map(&urls, 4)).await;
    assert!(srv.base.starts_with("https://"), "{}", srv.base);
    srv
}

fn addr(srv: &TestServer) -> String {
    srv.base.trim_start_matches("https://").to_owned()
}

/// `GET path` with `c`: the status and the JSON answer.
async fn get(c: &reqwest::Client, srv: &TestServer, path: &str) -> Result<(u16, Value), String> {
    let resp = c
        .get(srv.url(path))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// Polls until `done` holds, for at most `within`; panics saying `what` otherwise.
async fn until<F, Fut>(within: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The warnings of `/admin/v1/status`.
async fn warnings(c: &reqwest::Client, srv: &TestServer) -> String {
    match get(c, srv, "/admin/v1/status").await {
        Ok((200, v)) => v["warnings"].to_string(),
        other => panic!("status: {other:?}"),
    }
}

/// Whether `/metrics` counts a failed handshake for `reason`.
async fn counted(c: &reqwest::Client, srv: &TestServer, reason: &str) -> bool {
    let text = match c.get(srv.url("/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return false,
    };
    text.contains(&format!(
        "tls_handshake_failures_total{{reason=\"{reason}\"}}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_over_https_with_h2_and_http1_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("mezzanine test CA");
    let srv = tls_server(dir.path(), &ca.server(), None, |_| {}).await;
    let row = Uuid::new_v4();
    for (alpn, version, ref_key) in [
        ("h2", Version::HTTP_2, 1),
        ("http/1.1", Version::HTTP_11, 2),
    ] {
        let c = https_client(client_config(&[&ca], &[alpn], None));
        let body = cell(&row, "profile", ref_key, json!({"via": alpn}));
        let resp = c
            .post(srv.url("/v1/cells"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), version, "{alpn}");
        assert_eq!(resp.status(), 201, "{alpn}");
        let path = format!("/v1/cells/{row}/profile/{ref_key}");
        let resp = c.get(srv.url(&path)).send().await.unwrap();
        assert_eq!(resp.version(), version, "{alpn}");
        let stored: Value = resp.json().await.unwrap();
        assert_eq!(stored["body"], json!({"via": alpn}));
    }

    // Plain HTTP on the port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(addr(&srv)).await.unwrap();
    plain
        .write_all(b"GET /v1/livez HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), plain.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered: {}",
        String::from_utf8_lossy(&answer)
    );

    // A client that does not trust the server's CA gets nowhere.
    let stranger = Ca::new("another CA");
    let untrusting = https_client(client_config(&[&stranger], &["http/1.1"], None));
    let refused = get(&untrusting, &srv, "/v1/livez").await;
    assert!(refused.is_err(), "{refused:?}");
    let e = refused.unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");

    // Both failures are counted, by reason.
    let c = https_client(client_config(&[&ca], &["http/1.1"], None));
    until(
        Duration::from_secs(30),
        "handshake failures counted",
        || async {
            counted(&c, &srv, "not_tls").await && counted(&c, &srv, "alert_received").await
        },
    )
    .await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pair_is_used_without_restart_and_a_broken_one_keeps_the_last_good() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (Ca::new("first CA"), Ca::new("second CA"));
    let (one, two) = (first.server(), second.server());
    let srv = tls_server(dir.path(), &one, None, |_| {}).await;
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let both = [&first, &second];
    let on_first = https_client(client_config(&[&first], &["http/1.1"], None));
    assert_eq!(
        served_certificate(&addr(&srv), &both).await.unwrap(),
        one.der
    );

    // A key of another certificate: refused, said in the status; the first pair serves on.
    std::fs::write(&cert, &two.chain_pem).unwrap();
    std::fs::write(&key, second.server().key_pem).unwrap();
    until(Duration::from_secs(60), "the mismatch reported", || async {
        warnings(&on_first, &srv)
            .await
            .contains("does not belong to the certificate")
    })
    .await;
    assert_eq!(
        served_certificate(&addr(&srv), &both).await.unwrap(),
        one.der
    );
    assert_eq!(get(&on_first, &srv, "/v1/livez").await.unwrap().0, 200);
    // A half-written certificate, likewise.
    std::fs::write(&key, &two.key_pem).unwrap();
    std::fs::write(&cert, &two.chain_pem[..two.chain_pem.len() / 3]).unwrap();
    until(
        Duration::from_secs(60),
        "the damaged file reported",
        || async {
            warnings(&on_first, &srv)
                .await
                .contains("(TLS_CERT_FILE) cannot be used")
        },
    )
    .await;
    assert_eq!(
        served_certificate(&addr(&srv), &both).await.unwrap(),
        one.der
    );

    // The whole second pair: new connections get it, without a restart.
    std::fs::write(&cert, &two.chain_pem).unwrap();
    until(
        Duration::from_secs(60),
        "the new certificate served",
        || async { served_certificate(&addr(&srv), &both).await.ok() == Some(two.der.clone()) },
    )
    .await;
    let on_second = https_client(client_config(&[&second], &["h2"], None));
    until(Duration::from_secs(60), "the warning cleared", || async {
        !warnings(&on_second, &srv).await.contains("TLS")
    })
    .await;
    let fresh = https_client(client_config(&[&first], &["http/1.1"], None));
    assert!(get(&fresh, &srv, "/v1/livez").await.is_err());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_of_the_ca_are_required() {
    let dir = tempfile::tempdir().unwrap();
    let (servers, clients, stranger) = (
        Ca::new("server CA"),
        Ca::new("client CA"),
        Ca::new("stranger"),
    );
    let srv = tls_server(dir.path(), &servers.server(), Some(&clients), |_| {}).await;
    for (name, identity) in [
        ("none", None),
        ("another CA's", Some(stranger.client("eve"))),
    ] {
        let c = https_client(client_config(&[&servers], &["http/1.1"], identity.as_ref()));
        let refused = get(&c, &srv, "/v1/livez").await;
        assert!(
            refused.is_err(),
            "a client with {name} certificate: {refused:?}"
        );
    }
    let alice = clients.client("alice");
    for alpn in ["h2", "http/1.1"] {
        let c = https_client(client_config(&[&servers], &[alpn], Some(&alice)));
        assert_eq!(get(&c, &srv, "/v1/livez").await.unwrap().0, 200);
        let row = Uuid::new_v4();
        let resp = c
            .post(srv.url("/v1/cells"))
            .json(&cell(&row, "profile", 1, json!({"mtls": alpn})))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        // The token still decides: the admin API needs it over mTLS too.
        let anonymous = reqwest::Client::builder()
            .use_preconfigured_tls(client_config(&[&servers], &[alpn], Some(&alice)))
            .build()
            .unwrap();
        let (s, _) = get(&anonymous, &srv, "/admin/v1/status").await.unwrap();
        assert_eq!(s, 401);
    }
    let c = https_client(client_config(&[&servers], &["http/1.1"], Some(&alice)));
    until(
        Duration::from_secs(30),
        "refused client certificates counted",
        || async {
            counted(&c, &srv, "no_client_certificate").await
                && counted(&c, &srv, "bad_client_certificate").await
        },
    )
    .await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_neither_block_others_nor_stay_for_ever() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("mezzanine test CA");
    // Handshakes may take 60 s: one waited for on the accept loop would hold every client
    // longer than their 15 s.
    let srv = tls_server(dir.path(), &ca.server(), None, |c| {
        c.http_read_timeout = Duration::from_secs(60)
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(addr(&srv)).await.unwrap());
    }
    let mut config = client_config(&[&ca], &["http/1.1"], None);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let c = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    assert_eq!(get(&c, &srv, "/v1/livez").await.unwrap().0, 200);
    drop(silent);
    srv.stop().await;

    // Connections in their handshake count against MAX_CONNECTIONS, and a handshake that
    // never comes ends within HTTP_READ_TIMEOUT.
    let dir = tempfile::tempdir().unwrap();
    let srv = tls_server(dir.path(), &ca.server(), None, |c| {
        c.http_read_timeout = Duration::from_secs(3);
        c.max_connections = 2;
    })
    .await;
    let mut refused = None;
    for _ in 0..5 {
        let silent = [
            tokio::net::TcpStream::connect(addr(&srv)).await.unwrap(),
            tokio::net::TcpStream::connect(addr(&srv)).await.unwrap(),
        ];
        let c = https_client(client_config(&[&ca], &["http/1.1"], None));
        let answer = get(&c, &srv, "/v1/livez").await.unwrap();
        if answer.0 == 503 {
            refused = Some((answer, silent));
            break;
        }
    }
    let Some(((_, problem), silent)) = refused else {
        panic!("a connection beyond MAX_CONNECTIONS was never refused");
    };
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("MAX_CONNECTIONS=2"),
        "{problem}"
    );
    for mut s in silent {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a silent connection was kept open");
    }
    let c = https_client(client_config(&[&ca], &["http/1.1"], None));
    assert_eq!(get(&c, &srv, "/v1/livez").await.unwrap().0, 200);
    until(Duration::from_secs(30), "the timeout counted", || async {
        counted(&c, &srv, "timeout").await
    })
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn the_start_is_refused_naming_the_file_and_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("mezzanine test CA");
    let (one, two) = (ca.server(), ca.server());
    let cert = write(dir.path(), "cert.pem", &one.chain_pem);
    let other_key = write(dir.path(), "other-key.pem", &two.key_pem);
    let missing = dir.path().join("missing.pem");
    // Refused before any backend is touched: this one does not exist.
    let map = even_map(&["postgres://mezzanine@127.0.0.1:1/none".to_owned()], 4);
    let cases: [(Option<&Path>, Option<&Path>, &str); 4] = [
        (
            Some(&cert),
            None,
            "TLS_CERT_FILE is set but TLS_KEY_FILE is not",
        ),
        (
            None,
            Some(&other_key),
            "TLS_KEY_FILE is set but TLS_CERT_FILE is not",
        ),
        (
            Some(&cert),
            Some(&other_key),
            "other-key.pem (TLS_KEY_FILE) does not belong to the certificate",
        ),
        (
            Some(&missing),
            Some(&other_key),
            "cannot read the certificate file",
        ),
    ];
    for (c, k, says) in cases {
        let mut config = default_config();
        config.tls_cert_file = c.map(Path::to_owned);
        config.tls_key_file = k.map(Path::to_owned);
        let e = TestServer::try_start(config, map.clone())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(says), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
