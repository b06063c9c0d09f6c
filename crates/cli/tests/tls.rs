//! The binary and TLS: the admin commands and `bench http` against an HTTPS server (a private
//! CA trusted by --cacert or MEZZANINE_CACERT; client certificates by --client-cert and
//! --client-key), refused saying why without them; `serve` refusing to start with half of a
//! certificate and key. The certificates are made in the test.

use std::path::Path;
use std::process::Output;

use mezzanine_e2e::tls::{write, Ca};
use mezzanine_e2e::{default_config, even_map, fresh_databases, TestServer, ADMIN_TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_mezzanine");

async fn mezzanine(args: &[&str], env: &[(&str, &str)]) -> Output {
    let cmd = tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("MEZZANINE_URL")
        .env_remove("MEZZANINE_CACERT")
        .env("MEZZANINE_TOKEN", ADMIN_TOKEN)
        .envs(env.iter().copied())
        .output();
    tokio::time::timeout(std::time::Duration::from_secs(120), cmd)
        .await
        .expect("mezzanine did not finish within 120 s")
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A server over a fresh database serving HTTPS with a certificate of `ca` (files in `dir`),
/// requiring client certificates of `clients` when given.
async fn https_server(dir: &Path, ca: &Ca, clients: Option<&Ca>) -> TestServer {
    let leaf = ca.server();
    let mut config = default_config();
    config.tls_cert_file = Some(write(dir, "cert.pem", &leaf.chain_pem));
    config.tls_key_file = Some(write(dir, "key.pem", &leaf.key_pem));
    config.tls_client_ca_file = clients.map(|c| write(dir, "clients.pem", &c.pem));
    let urls = fresh_databases(1).await;
    let srv = TestServer::start(config, even_map(&urls, 4)).await;
    assert!(srv.base.starts_with("https://"));
    srv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_and_bench_trust_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("private CA");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let ca_file = ca_file.to_str().unwrap();
    let srv = https_server(dir.path(), &ca, None).await;

    let out = mezzanine(&["status", "--server", &srv.base, "--cacert", ca_file], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("HTTPS"),
        "{}",
        text(&out)
    );
    let out = mezzanine(
        &["status", "--json", "--server", &srv.base],
        &[("MEZZANINE_CACERT", ca_file)],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status["tls"]["client_certificates"], "not asked for",
        "{status}"
    );

    // Without the CA: refused, saying what to do.
    let out = mezzanine(&["status", "--server", &srv.base], &[]).await;
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("TLS with the mezzanine server") && said.contains("--cacert"),
        "{said}"
    );

    let out = mezzanine(
        &[
            "bench",
            "http",
            "--duration",
            "1s",
            "--concurrency",
            "2",
            "--batch-size",
            "10",
            "--seed-rows",
            "10",
            "--json",
            "--ops",
            "write,latest",
            "--no-direct",
            "--server",
            &srv.base,
            "--cacert",
            ca_file,
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for op in report["ops"].as_array().unwrap() {
        assert!(op["http"]["ops"].as_u64().unwrap() > 0, "{op}");
        assert_eq!(op["http"]["errors"], 0, "{op}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_present_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, clients) = (Ca::new("server CA"), Ca::new("client CA"));
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let ops = clients.client("ops");
    let cert = write(dir.path(), "ops.pem", &ops.chain_pem);
    let key = write(dir.path(), "ops-key.pem", &ops.key_pem);
    let srv = https_server(dir.path(), &ca, Some(&clients)).await;
    let base = [
        "status",
        "--server",
        &srv.base,
        "--cacert",
        ca_file.to_str().unwrap(),
    ];

    let out = mezzanine(&base, &[]).await;
    assert!(!out.status.success(), "served without a client certificate");
    assert!(text(&out).contains("--client-cert"), "{}", text(&out));
    let out = mezzanine(
        &[&base[..], &["--client-cert", cert.to_str().unwrap()]].concat(),
        &[("MEZZANINE_CLIENT_KEY", key.to_str().unwrap())],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("HTTPS, client certificates required"),
        "{shown}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn serve_refuses_half_a_pair_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let cert = write(dir.path(), "cert.pem", &ca.server().chain_pem);
    let out = mezzanine(
        &["serve"],
        &[
            ("SHARD_CONFIG_PATH", "/nonexistent/shards.json"),
            ("TLS_CERT_FILE", cert.to_str().unwrap()),
            ("PORT", "0"),
            ("HOST", "127.0.0.1"),
            ("LOG_FORMAT", "text"),
        ],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("mezzanine: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        line.contains("TLS_CERT_FILE is set but TLS_KEY_FILE is not"),
        "{stderr}"
    );
}
