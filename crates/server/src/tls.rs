//! TLS on the HTTP listener (rustls, with *ring*; never the process's default provider).
//!
//! `TLS_CERT_FILE` (the certificate chain, leaf first, PEM) and `TLS_KEY_FILE` (its private
//! key, PEM: PKCS#8, PKCS#1 or SEC1) are given together or not at all; with them the port
//! speaks HTTPS only, offering HTTP/2 and HTTP/1.1 by ALPN. `TLS_CLIENT_CA_FILE` (PEM CA
//! certificates) makes every client present a certificate one of them signed (mutual TLS);
//! it gates the transport only: what a client may do is still its bearer token's scope.
//!
//! The files are read again when they change ([`crate::watched`], like the token file): a new
//! valid set is used for every new connection (connections open keep theirs); a set that
//! cannot be used (half written, a key of another certificate) keeps the last good one, and
//! the reason is logged as a warning once per change and shown by `status`.
//!
//! Handshakes run in each connection's task, bounded by `HTTP_READ_TIMEOUT`; a failure is
//! logged at debug with the client's address and counted in
//! `tls_handshake_failures_total{reason}` (reasons from [`REASONS`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::watched::{self as watch, ReadError, Reload, Watched};

/// The largest certificate, key or CA file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The files TLS is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Why TLS cannot be configured (the server does not start), or why changed files are not
/// used (the last good ones stay).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error(
        "TLS_CERT_FILE is set but TLS_KEY_FILE is not: give the certificate's private key too \
         (or neither, to serve plain HTTP)"
    )]
    MissingKey,
    #[error(
        "TLS_KEY_FILE is set but TLS_CERT_FILE is not: give the certificate (chain) too (or \
         neither, to serve plain HTTP)"
    )]
    MissingCert,
    #[error(
        "TLS_CLIENT_CA_FILE is set but TLS_CERT_FILE and TLS_KEY_FILE are not: client \
         certificates need the server to speak TLS; give them too"
    )]
    ClientCaWithoutTls,
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{what} {path} ({var}) cannot be used: {cause}")]
    File {
        what: &'static str,
        path: String,
        var: &'static str,
        cause: String,
    },
    #[error(
        "the private key {key} (TLS_KEY_FILE) does not belong to the certificate {cert} \
         (TLS_CERT_FILE): give the key the certificate was made for (the leaf certificate \
         comes first in the file)"
    )]
    Mismatch { cert: String, key: String },
    #[error("the TLS files could not be read: {0}")]
    Interrupted(String),
}

/// The files of `TLS_CERT_FILE`, `TLS_KEY_FILE` and `TLS_CLIENT_CA_FILE`: none (plain HTTP),
/// or the certificate and the key, with or without a client CA.
pub fn files(
    cert: Option<&Path>,
    key: Option<&Path>,
    client_ca: Option<&Path>,
) -> Result<Option<TlsFiles>, TlsError> {
    match (cert, key, client_ca) {
        (None, None, None) => Ok(None),
        (None, None, Some(_)) => Err(TlsError::ClientCaWithoutTls),
        (Some(_), None, _) => Err(TlsError::MissingKey),
        (None, Some(_), _) => Err(TlsError::MissingCert),
        (Some(cert), Some(key), ca) => Ok(Some(TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            client_ca: ca.map(Path::to_owned),
        })),
    }
}

impl TlsFiles {
    /// The watched files, in the order [`server_config`] takes their contents.
    fn watched(&self) -> Vec<watch::File> {
        let mut files = vec![
            watch::File::new(
                &self.cert,
                "the certificate file",
                "TLS_CERT_FILE",
                MAX_FILE_BYTES,
            ),
            watch::File::new(&self.key, "the key file", "TLS_KEY_FILE", MAX_FILE_BYTES),
        ];
        if let Some(ca) = &self.client_ca {
            files.push(watch::File::new(
                ca,
                "the client CA file",
                "TLS_CLIENT_CA_FILE",
                MAX_FILE_BYTES,
            ));
        }
        files
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (at least one).
fn certificates(
    file: &watch::File,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |cause: String| TlsError::File {
        what: file.what,
        path: file.path.display().to_string(),
        var: file.var,
        cause,
    };
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(invalid(
            "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    Ok(certs)
}

/// The server's configuration from the contents of [`TlsFiles::watched`] (no I/O).
pub fn server_config(files: &TlsFiles, contents: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
    let watched = files.watched();
    let (Some(cert_bytes), Some(key_bytes)) = (contents.first(), contents.get(1)) else {
        return Err(TlsError::MissingKey);
    };
    let (cert_file, key_file) = (&watched[0], &watched[1]);
    let invalid = |file: &watch::File, cause: String| TlsError::File {
        what: file.what,
        path: file.path.display().to_string(),
        var: file.var,
        cause,
    };
    let chain = certificates(cert_file, cert_bytes)?;
    let key = PrivateKeyDer::from_pem_slice(key_bytes).map_err(|e| {
        invalid(
            key_file,
            match e {
                rustls::pki_types::pem::Error::NoItemsFound => "no private key in it (expected \
                     PEM: -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
                    .to_owned(),
                e => format!("not a PEM private key ({e})"),
            },
        )
    })?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(cert_file, e.to_string()))?;
    let builder = match (&files.client_ca, contents.get(2)) {
        (Some(_), Some(ca_bytes)) => {
            let ca_file = &watched[2];
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates(ca_file, ca_bytes)? {
                roots
                    .add(ca)
                    .map_err(|e| invalid(ca_file, format!("not a CA certificate ({e})")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid(ca_file, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: cert_file.path.display().to_string(),
            key: key_file.path.display().to_string(),
        },
        rustls::Error::InvalidCertificate(e) => {
            invalid(cert_file, format!("its first certificate is invalid ({e})"))
        }
        e => invalid(key_file, e.to_string()),
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// TLS as configured now: the configuration new connections get, and the files it came from.
pub struct Tls {
    files: TlsFiles,
    config: ArcSwap<ServerConfig>,
    watched: Watched,
}

impl Tls {
    /// Reads the files and builds the configuration (blocking: at start, or off the
    /// runtime's workers).
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let watched = files.watched();
        let contents = watched
            .iter()
            .map(watch::File::read)
            .collect::<Result<Vec<_>, _>>()?;
        let config = server_config(&files, &contents)?;
        tracing::info!(
            cert = %files.cert.display(),
            client_ca = ?files.client_ca.as_ref().map(|p| p.display().to_string()),
            "serving HTTPS (HTTP/2 and HTTP/1.1)"
        );
        Ok(Tls {
            files,
            config: ArcSwap::from_pointee(config),
            watched: Watched::new(watched, contents),
        })
    }

    /// [`Tls::load`] on the blocking pool.
    pub async fn start(files: TlsFiles) -> Result<Tls, TlsError> {
        match tokio::task::spawn_blocking(move || Tls::load(files)).await {
            Ok(loaded) => loaded,
            Err(e) => Err(TlsError::Interrupted(e.to_string())),
        }
    }

    /// Reads the files again if they changed; a set that cannot be used keeps the last good
    /// configuration. Returns whether a new one was installed.
    pub fn reload(&self) -> bool {
        match self.watched.reload(|contents| {
            let config = server_config(&self.files, contents)?;
            self.config.store(Arc::new(config));
            Ok::<_, TlsError>(())
        }) {
            Reload::Unchanged => false,
            Reload::Installed { .. } => {
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate and key reloaded; new connections use them");
                true
            }
            Reload::Kept { error, news } => {
                if news {
                    tracing::warn!(error = %error, "the TLS files are not usable; new connections keep the last good certificate and key");
                }
                false
            }
        }
    }

    /// Looks at the files every [`watch::EVERY`], for ever.
    pub async fn watch(self: Arc<Self>) {
        watch::every(move || {
            self.reload();
        })
        .await
    }

    /// What `status` reports about TLS, and its warnings.
    pub fn status(&self) -> (serde_json::Value, Vec<String>) {
        let error = self.watched.error();
        let warnings = error
            .iter()
            .map(|e| format!("{e}; new connections use the last good TLS certificate and key"))
            .collect();
        let view = json!({
            "enabled": true,
            "cert_file": self.files.cert.display().to_string(),
            "key_file": self.files.key.display().to_string(),
            "client_ca_file": self.files.client_ca.as_ref().map(|p| p.display().to_string()),
            "client_certificates": if self.files.client_ca.is_some() { "required" } else { "not asked for" },
            "error": error,
        });
        (view, warnings)
    }

    /// The TLS side of a new connection, within `timeout`; `None` when the handshake failed
    /// (logged at debug with `peer`, and counted).
    pub async fn handshake(
        &self,
        stream: TcpStream,
        timeout: Duration,
        peer: std::net::SocketAddr,
    ) -> Option<TlsStream<TcpStream>> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.load_full());
        let (reason, error) = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => return Some(tls),
            Ok(Err(e)) => (failure_reason(&e), e.to_string()),
            Err(_) => ("timeout", format!("no handshake within {timeout:?}")),
        };
        tracing::debug!(peer = %peer, reason, error = %error, "TLS handshake failed");
        metrics::counter!("tls_handshake_failures_total", "reason" => reason).increment(1);
        None
    }
}

/// Every reason of `tls_handshake_failures_total`.
pub const REASONS: [&str; 8] = [
    "timeout",
    "not_tls",
    "no_client_certificate",
    "bad_client_certificate",
    "alert_received",
    "incompatible",
    "closed",
    "other",
];

/// The reason label of a failed handshake (one of [`REASONS`]).
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::Error;
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => "not_tls",
        Some(Error::NoCertificatesPresented) => "no_client_certificate",
        Some(Error::InvalidCertificate(_)) => "bad_client_certificate",
        Some(Error::AlertReceived(_)) => "alert_received",
        Some(Error::PeerIncompatible(_)) | Some(Error::NoApplicationProtocol) => "incompatible",
        Some(_) => "other",
        None => match e.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => "closed",
            _ => "other",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<&Path> {
        Some(Path::new(s))
    }

    #[test]
    fn certificate_and_key_come_together() {
        assert_eq!(files(None, None, None).unwrap(), None);
        let both = files(p("c.pem"), p("k.pem"), None).unwrap().unwrap();
        assert_eq!(both.cert, Path::new("c.pem"));
        assert_eq!(both.client_ca, None);
        let all = files(p("c"), p("k"), p("ca")).unwrap().unwrap();
        assert_eq!(all.client_ca.as_deref(), Some(Path::new("ca")));
        for (c, k, ca, says) in [
            (p("c"), None, None, "TLS_KEY_FILE is not"),
            (p("c"), None, p("ca"), "TLS_KEY_FILE is not"),
            (None, p("k"), None, "TLS_CERT_FILE is not"),
            (
                None,
                None,
                p("ca"),
                "TLS_CERT_FILE and TLS_KEY_FILE are not",
            ),
        ] {
            let e = files(c, k, ca).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    struct Pair {
        cert: String,
        key: String,
    }

    fn pair(ca: &rcgen::CertifiedKey) -> Pair {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        let cert = params.signed_by(&key, &ca.cert, &ca.key_pair).unwrap();
        Pair {
            cert: cert.pem() + &ca.cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn ca() -> rcgen::CertifiedKey {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        rcgen::CertifiedKey {
            cert,
            key_pair: key,
        }
    }

    fn tls_files(ca: bool) -> TlsFiles {
        files(
            p("/etc/c.pem"),
            p("/etc/k.pem"),
            ca.then_some(Path::new("/etc/ca.pem")),
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn a_chain_and_its_key_make_a_configuration_offering_h2_and_http1() {
        let ca = ca();
        let pair = pair(&ca);
        let c = server_config(
            &tls_files(false),
            &[pair.cert.clone().into(), pair.key.clone().into()],
        )
        .unwrap();
        assert_eq!(c.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        let with_ca = server_config(
            &tls_files(true),
            &[pair.cert.into(), pair.key.into(), ca.cert.pem().into()],
        );
        assert!(with_ca.is_ok());
    }

    #[test]
    fn unusable_files_are_named_with_the_cause() {
        let ca = ca();
        let (one, other) = (pair(&ca), pair(&ca));
        let cases: [(Vec<Vec<u8>>, &str); 5] = [
            (
                vec![one.cert.clone().into(), other.key.clone().into()],
                "does not belong to the certificate /etc/c.pem (TLS_CERT_FILE)",
            ),
            (
                vec![b"".to_vec(), one.key.clone().into()],
                "the certificate file /etc/c.pem (TLS_CERT_FILE) cannot be used: no certificate",
            ),
            (
                vec![
                    one.cert[..one.cert.len() / 2].into(),
                    one.key.clone().into(),
                ],
                "/etc/c.pem (TLS_CERT_FILE) cannot be used: not PEM certificates",
            ),
            (
                vec![one.cert.clone().into(), one.cert.clone().into()],
                "/etc/k.pem (TLS_KEY_FILE) cannot be used: no private key",
            ),
            (
                vec![
                    one.cert.clone().into(),
                    one.key.clone().into(),
                    b"junk".to_vec(),
                ],
                "/etc/ca.pem (TLS_CLIENT_CA_FILE) cannot be used: no certificate",
            ),
        ];
        for (contents, says) in cases {
            let files = tls_files(contents.len() == 3);
            let e = server_config(&files, &contents).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn reasons_come_from_the_fixed_set() {
        use std::io::{Error, ErrorKind};
        let tls = |e: rustls::Error| Error::new(ErrorKind::InvalidData, e);
        let cases = [
            (
                tls(rustls::Error::InvalidMessage(
                    rustls::InvalidMessage::InvalidContentType,
                )),
                "not_tls",
            ),
            (
                tls(rustls::Error::NoCertificatesPresented),
                "no_client_certificate",
            ),
            (
                tls(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                )),
                "bad_client_certificate",
            ),
            (Error::from(ErrorKind::UnexpectedEof), "closed"),
            (Error::other("anything"), "other"),
        ];
        for (e, reason) in cases {
            assert_eq!(failure_reason(&e), reason, "{e}");
            assert!(REASONS.contains(&reason));
        }
    }
}
