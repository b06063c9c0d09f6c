//! TLS to PostgreSQL end to end: servers that accept only TLS (`hostnossl … reject`), their
//! certificates made here with rcgen, and nodes whose shards.json URLs and CATALOG_URL say
//! `sslmode` and `sslrootcert`, as a user writes them.
//!
//! Server A's certificate names `localhost` and `127.0.0.1`; server B's only `other.example`.
//! Both are signed by the test's CA; a second CA signs nothing the servers hold.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use mezzanine_e2e::*;
use mezzanine_pgcluster::{start_temp_tls_server, PgInstall, PgServer, ServerTls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::json;

const SHARDS: u32 = 4;
const LONG: Duration = Duration::from_secs(60);

struct Fixture {
    a: PgServer,
    b: PgServer,
    /// The CA that signs both servers' certificates.
    ca: PathBuf,
    /// A CA that signs neither.
    wrong_ca: PathBuf,
}

/// A CA: its certificate (PEM) and what signs with it.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// A server's TLS (TLS only) with a certificate for `names`, signed by `ca`.
fn server_tls(ca: &Ca, names: &[&str]) -> ServerTls {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, "pg");
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    ServerTls {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        reject_plain: true,
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let install = PgInstall::locate().expect("the tests need PostgreSQL server binaries");
        let good = ca("mezzanine test CA");
        let wrong = ca("another CA");
        let a = start_temp_tls_server(&install, &server_tls(&good, &["localhost", "127.0.0.1"]))
            .expect("TLS server A");
        let b = start_temp_tls_server(&install, &server_tls(&good, &["other.example"]))
            .expect("TLS server B");
        // In A's temp folder: removed with it.
        let dir = a.data_dir().parent().unwrap().to_path_buf();
        let ca = dir.join("ca.pem");
        let wrong_ca = dir.join("wrong-ca.pem");
        std::fs::write(&ca, good.cert.pem()).unwrap();
        std::fs::write(&wrong_ca, wrong.cert.pem()).unwrap();
        Fixture { a, b, ca, wrong_ca }
    })
}

/// `url` with TLS parameters.
fn with(url: &str, mode: &str, root: Option<&Path>) -> String {
    match root {
        Some(r) => format!("{url}?sslmode={mode}&sslrootcert={}", r.display()),
        None => format!("{url}?sslmode={mode}"),
    }
}

/// Why a node over `map` (with `config`) does not start.
async fn start_error(
    config: mezzanine_server::ServeConfig,
    map: mezzanine_core::ShardMap,
) -> String {
    match TestServer::try_start(config, map).await {
        Ok(_) => panic!("the node started"),
        Err(e) => e.to_string(),
    }
}

fn says_once(text: &str, what: &str) {
    assert_eq!(text.matches(what).count(), 1, "{what:?} once in: {text}");
}

/// Writes cells to every shard and reads them back through the API.
async fn writes_and_reads(srv: &TestServer) {
    let c = client();
    for shard in 0..SHARDS {
        let row = key_in_shard(shard, SHARDS);
        let stored = write_one(&c, srv, &row, "c", shard as i64).await;
        let page = read_shard(&c, srv, shard).await;
        assert!(
            page.iter()
                .any(|cell| cell["added_id"] == stored["added_id"]),
            "shard {shard}: {page:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_works_over_verify_full_tls_to_backends_and_catalog() {
    let f = fixture();
    let urls = [
        create_database(&f.a).await,
        create_database(&f.a).await,
        create_database(&f.a).await,
    ];
    let full = |u: &str| with(u, "verify-full", Some(&f.ca));
    // A password (trust ignores it) that the export must mask, while keeping the TLS settings.
    let db1 = full(&urls[0]).replacen("postgres@", "postgres:hunter2@", 1);
    let mut config = default_config();
    config.catalog_url = Some(full(&urls[2]));
    let srv = TestServer::start(config, even_map(&[db1, full(&urls[1])], SHARDS)).await;
    writes_and_reads(&srv).await;

    // The mover's catalog session is over TLS too (the server accepts nothing else; this
    // says it was mezzanine's).
    let catalog_db = urls[2].rsplit('/').next().unwrap().to_owned();
    let admin = connect(&with(&f.a.url("postgres"), "verify-full", Some(&f.ca))).await;
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let rows = admin
            .query(
                "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.datname = $1 AND a.application_name = 'mezzanine-catalog'",
                &[&catalog_db],
            )
            .await
            .unwrap();
        if let Some(row) = rows.first() {
            assert!(row.get::<_, bool>(0), "the catalog session is not TLS");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no catalog session on {catalog_db}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // `shards export` keeps sslmode and sslrootcert (no secrets), masks the password.
    let (s, export) = get_json(&client(), &srv.url("/admin/v1/shards/export")).await;
    assert_eq!(s, 200, "{export}");
    let text = export.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("postgres:***@"), "{text}");
    let tls = format!("sslmode=verify-full&sslrootcert={}", f.ca.display());
    assert_eq!(text.matches(&tls).count(), 2, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let f = fixture();
    let db = create_database(&f.b).await;
    let port = f.b.port();
    let e = start_error(
        default_config(),
        even_map(&[with(&db, "verify-full", Some(&f.ca))], SHARDS),
    )
    .await;
    says_once(
        &e,
        &format!(
            "cannot connect to 127.0.0.1:{port}: the server's certificate is not valid for \
             host 127.0.0.1: it names other.example (sslmode=verify-full checks the host name; \
             NotValidForName)"
        ),
    );
    // The same certificate, its chain checked and not its name.
    let srv = TestServer::start(
        default_config(),
        even_map(&[with(&db, "verify-ca", Some(&f.ca))], SHARDS),
    )
    .await;
    writes_and_reads(&srv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_another_ca_or_an_unreadable_root_file_is_refused() {
    let f = fixture();
    let db = create_database(&f.a).await;
    let port = f.a.port();
    let e = start_error(
        default_config(),
        even_map(&[with(&db, "verify-ca", Some(&f.wrong_ca))], SHARDS),
    )
    .await;
    says_once(
        &e,
        &format!(
            "cannot connect to 127.0.0.1:{port}: the server's certificate is not signed by a \
             CA in sslrootcert {} (UnknownIssuer)",
            f.wrong_ca.display()
        ),
    );
    // The catalog, named as the user set it.
    let mut config = default_config();
    config.catalog_url = Some(with(&db, "verify-full", Some(&f.wrong_ca)));
    let e = start_error(
        config,
        even_map(&[with(&db, "verify-full", Some(&f.ca))], SHARDS),
    )
    .await;
    assert!(e.contains("the catalog database (CATALOG_URL)"), "{e}");
    says_once(&e, "is not signed by a CA in sslrootcert");
    // A root file that is not there.
    let missing = f.ca.with_file_name("no-such-ca.pem");
    let e = start_error(
        default_config(),
        even_map(&[with(&db, "verify-full", Some(&missing))], SHARDS),
    )
    .await;
    says_once(
        &e,
        &format!(
            "cannot read sslrootcert {}: no such file",
            missing.display()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_disable_meets_the_servers_refusal() {
    let f = fixture();
    let db = create_database(&f.a).await;
    let e = start_error(
        default_config(),
        even_map(&[with(&db, "disable", None)], SHARDS),
    )
    .await;
    // PostgreSQL's own reason.
    says_once(&e, "pg_hba.conf rejects connection for host \"127.0.0.1\"");
    assert!(e.contains("no encryption"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_encrypts_without_a_root_certificate() {
    let f = fixture();
    // B's certificate names another host and no CA is given: require checks neither.
    let db = create_database(&f.b).await;
    let srv = TestServer::start(
        default_config(),
        even_map(&[with(&db, "require", None)], SHARDS),
    )
    .await;
    writes_and_reads(&srv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_move_between_tls_only_backends_completes() {
    let f = fixture();
    let src = with(&create_database(&f.a).await, "verify-full", Some(&f.ca));
    let dst = with(&create_database(&f.b).await, "verify-ca", Some(&f.ca));
    let srv = TestServer::start(
        default_config(),
        even_map(std::slice::from_ref(&src), SHARDS),
    )
    .await;
    let (s, b) = post_json(
        &client(),
        &srv.url("/admin/v1/backends"),
        &json!({"name": "db2", "url": dst}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let c = client();
    let shard = 1;
    for i in 0..20 {
        write_one(&c, &srv, &key_in_shard(shard, SHARDS), "c", i).await;
    }
    let id = start_move(&srv, json!({"shards": "1", "to": "db2"})).await;
    let job = wait_job_state(&srv, id, "switched", LONG).await;
    assert_eq!(job["shards"][0]["from"], "db1", "{job}");
    assert_eq!(shard_state_in(&dst, shard).await.as_deref(), Some("active"));
    assert_eq!(cells_in(&dst, shard).await, 20);
    assert_eq!(read_shard(&c, &srv, shard).await.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_over_tls_binds_the_channel() {
    let f = fixture();
    let db = create_database(&f.a).await;
    // A role with a password that A asks for over TLS (the other rules trust).
    let hba = f.a.data_dir().parent().unwrap().join("tls_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    if !rules.contains("mz_scram") {
        std::fs::write(
            &hba,
            format!("hostssl all mz_scram all scram-sha-256\n{rules}"),
        )
        .unwrap();
    }
    let admin = connect(&f.a.url("postgres")).await;
    admin
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE mz_scram LOGIN SUPERUSER PASSWORD 'right'; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$; SELECT pg_reload_conf()",
        )
        .await
        .unwrap();
    let url = with(&db, "verify-full", Some(&f.ca)).replacen("postgres@", "mz_scram:right@", 1);
    let wrong = url.replacen(":right@", ":wrong@", 1);
    // The reload has taken effect once a wrong password is refused.
    let deadline = tokio::time::Instant::now() + LONG;
    while mezzanine_storage::conninfo::connect(&wrong, LONG)
        .await
        .is_ok()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pg_hba.conf not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = start_error(default_config(), even_map(&[wrong], SHARDS)).await;
    says_once(&e, "password authentication failed for user \"mz_scram\"");
    assert!(!e.contains("wrong"), "{e}");
    // channel_binding=require: SCRAM-SHA-256-PLUS over the server's certificate, or nothing.
    let bound = format!("{url}&channel_binding=require");
    let srv = TestServer::start(default_config(), even_map(&[bound], SHARDS)).await;
    writes_and_reads(&srv).await;
}
