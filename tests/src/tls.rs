//! TLS for the tests: certificate authorities made in the test (rcgen), the leaves they sign,
//! and HTTPS clients trusting them (rustls with *ring*, like the server; never the process's
//! default provider).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A certificate authority made for one test.
pub struct Ca {
    key: KeyPair,
    cert: rcgen::Certificate,
    /// Its certificate (PEM), what clients and servers trust.
    pub pem: String,
}

/// A certificate a [`Ca`] signed, with its private key.
pub struct Leaf {
    /// The certificate, then its CA's (a chain, as servers are given them).
    pub chain_pem: String,
    pub key_pem: String,
    /// The certificate alone (DER), to recognise it.
    pub der: Vec<u8>,
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = ok(KeyPair::generate(), "CA key");
        let mut params = ok(CertificateParams::new(Vec::<String>::new()), "CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = ok(params.self_signed(&key), "CA certificate");
        Ca {
            pem: cert.pem(),
            key,
            cert,
        }
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let key = ok(KeyPair::generate(), "leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = ok(CertificateParams::new(names), "leaf params");
        params.extended_key_usages = vec![usage];
        let cert = ok(
            params.signed_by(&key, &self.cert, &self.key),
            "leaf certificate",
        );
        Leaf {
            chain_pem: cert.pem() + &self.pem,
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server(&self) -> Leaf {
        self.leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> Leaf {
        self.leaf(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    ok(std::fs::write(&path, text), "writing a test file");
    path
}

/// A client configuration trusting `cas`, offering `alpn` (`h2`, `http/1.1`), presenting
/// `identity` when given.
pub fn client_config(cas: &[&Ca], alpn: &[&str], identity: Option<&Leaf>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for c in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
            ok(roots.add(ok(c, "CA PEM")), "CA certificate");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ok(
        rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions(),
        "protocol versions",
    )
    .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(leaf) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(leaf.chain_pem.as_bytes())
                    .map(|c| ok(c, "client chain"))
                    .collect();
            let key = ok(
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()),
                "client key",
            );
            ok(
                builder.with_client_auth_cert(chain, key),
                "client certificate",
            )
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config
}

/// An HTTPS client with `config`, sending the harness's admin token
/// ([`crate::ADMIN_TOKEN`]).
pub fn https_client(config: rustls::ClientConfig) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {}", crate::ADMIN_TOKEN);
    headers.insert(
        reqwest::header::AUTHORIZATION,
        ok(reqwest::header::HeaderValue::from_str(&bearer), "header"),
    );
    ok(
        reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .default_headers(headers)
            .timeout(Duration::from_secs(20))
            .build(),
        "HTTPS client",
    )
}

/// The certificate (DER) the server at `addr` (`host:port`) presents to a client trusting
/// `cas`, or why the handshake failed.
pub async fn served_certificate(addr: &str, cas: &[&Ca]) -> Result<Vec<u8>, String> {
    let config = client_config(cas, &["http/1.1"], None);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, stream))
        .await
        .map_err(|_| "no handshake within 10 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| "no certificate".to_owned())
}
