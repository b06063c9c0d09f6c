//! TLS to PostgreSQL: the one connector every connection uses (backend pools, their query
//! cancellations, the catalog's sessions, the CLI's connections), after libpq's `sslmode`
//! and `sslrootcert` ([`crate::sslmode`]).
//!
//! rustls (the *ring* provider, never a process-wide default) through `tokio-postgres-rustls`.
//! The root certificate file is read at each new connection (asynchronously), so a renewed
//! CA file is used without a restart; the configuration built from it is kept while the file
//! reads the same. What is checked of the server's certificate:
//!
//! - nothing (`prefer`, `require` without `sslrootcert`): the connection is encrypted, the
//!   server not authenticated; the handshake's signatures are still checked;
//! - the chain (`verify-ca`, `require` with `sslrootcert`): signed by a CA of the file, within
//!   its validity; its names are not checked;
//! - the chain and the name (`verify-full`): it also names the host connected to (the host
//!   name of the URL, or its IP address).
//!
//! Failures say why in the user's notation ([`TlsFailure`], [`cause`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::sslmode::{TlsSettings, Verify};

/// Why a TLS connection could not be made, in words (never with a password: it holds only
/// file names, host names and TLS errors).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TlsFailure(String);

/// The connector for one connection string's TLS settings (cheap to clone).
#[derive(Debug, Clone)]
pub struct PgTls {
    settings: Arc<TlsSettings>,
    built: Arc<Built>,
}

/// The client configuration last built, with the root certificate file's contents it was
/// built from: a connection whose file reads the same reuses it (parsing the certificates and
/// building the verifier once per file, not once per connection).
#[derive(Debug, Default)]
struct Built(std::sync::Mutex<Option<(Option<Vec<u8>>, ClientConfig)>>);

impl Built {
    fn get(&self, pem: &Option<Vec<u8>>) -> Option<ClientConfig> {
        let held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        held.as_ref()
            .filter(|(from, _)| from == pem)
            .map(|(_, config)| config.clone())
    }

    fn put(&self, pem: Option<Vec<u8>>, config: &ClientConfig) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((pem, config.clone()));
    }
}

impl PgTls {
    pub fn new(settings: TlsSettings) -> PgTls {
        PgTls {
            settings: Arc::new(settings),
            built: Arc::default(),
        }
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }
}

/// The connector of one connection: the settings and the host name to check.
pub struct PgTlsConnect {
    settings: Arc<TlsSettings>,
    built: Arc<Built>,
    host: String,
}

/// The stream of a TLS connection.
pub type PgTlsStream<S> = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;

impl<S> MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type TlsConnect = PgTlsConnect;
    type Error = TlsFailure;

    fn make_tls_connect(&mut self, host: &str) -> Result<PgTlsConnect, TlsFailure> {
        Ok(PgTlsConnect {
            settings: self.settings.clone(),
            built: self.built.clone(),
            host: host.to_owned(),
        })
    }
}

impl<S> TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = TlsFailure;
    type Future = Pin<Box<dyn Future<Output = Result<PgTlsStream<S>, TlsFailure>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let settings = &self.settings;
            let verify = settings.verify();
            let pem = match (&settings.root_cert, verify) {
                (Some(path), Verify::Chain | Verify::ChainAndName) => {
                    Some(tokio::fs::read(path).await.map_err(|e| {
                        TlsFailure(format!(
                            "cannot read {}: {}",
                            settings.root_cert_notation(),
                            io_words(&e)
                        ))
                    })?)
                }
                _ => None,
            };
            let config = match self.built.get(&pem) {
                Some(config) => config,
                None => {
                    let roots = match &pem {
                        Some(pem) => Some(roots(pem).map_err(|why| {
                            TlsFailure(format!("{} {why}", settings.root_cert_notation()))
                        })?),
                        None => None,
                    };
                    let config = client_config(verify, roots)
                        .map_err(|e| TlsFailure(format!("cannot set up TLS: {e}")))?;
                    self.built.put(pem, &config);
                    config
                }
            };
            // The name sent and checked: the host's; where only the chain or nothing is checked,
            // a name rustls cannot take (an odd host alias) must not stop the connection.
            let host = match (ServerName::try_from(self.host.as_str()), verify) {
                (Ok(_), _) => self.host.clone(),
                (Err(_), Verify::ChainAndName) => {
                    return Err(TlsFailure(format!(
                        "{} cannot check host {:?}: it is not a DNS name or IP address",
                        settings.mode_notation(),
                        self.host
                    )))
                }
                (Err(_), _) => "localhost".to_owned(),
            };
            let mut make = MakeRustlsConnect::new(config);
            let connect = match MakeTlsConnect::<S>::make_tls_connect(&mut make, &host) {
                Ok(c) => c,
                Err(never) => match never {},
            };
            connect
                .connect(stream)
                .await
                .map_err(|e| TlsFailure(handshake_words(&e, settings, &self.host)))
        })
    }
}

/// The certificates of a PEM file, as a root store; the error completes "sslrootcert PATH …".
fn roots(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let mut bad = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("is not a PEM file of certificates ({e})"))?;
        if store.add(cert).is_err() {
            bad += 1;
        }
    }
    if store.is_empty() {
        return Err(if bad > 0 {
            format!("holds no usable CA certificate ({bad} could not be read)")
        } else {
            "holds no certificate (-----BEGIN CERTIFICATE-----)".to_owned()
        });
    }
    Ok(store)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that checks what `verify` says, against `roots`.
fn client_config(verify: Verify, roots: Option<RootCertStore>) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = match (verify, roots) {
        (Verify::Chain | Verify::ChainAndName, Some(roots)) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| e.to_string())?;
            if verify == Verify::Chain {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
        (Verify::Chain | Verify::ChainAndName, None) => {
            return Err("no root certificates to check the server's certificate with".into())
        }
        (Verify::Nothing, _) => Arc::new(Unchecked(provider)),
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The server's certificate must be signed by a CA of the roots; its names are not checked
/// (`verify-ca`). webpki checks the chain before the name, so a name mismatch means the chain
/// was accepted.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Any certificate is accepted (`prefer`, `require` without a root certificate file), as
/// libpq does: encryption without authentication. The handshake's signatures are checked.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a handshake failed, in words: the certificate's fault and the setting that checked it.
fn handshake_words(e: &std::io::Error, settings: &TlsSettings, host: &str) -> String {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return format!("the TLS handshake failed: {}", io_words(e));
    };
    let roots = settings.root_cert_notation();
    match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                format!("the server's certificate is not signed by a CA in {roots} (UnknownIssuer)")
            }
            CertificateError::NotValidForName => format!(
                "the server's certificate is not valid for host {host} ({}; NotValidForName)",
                settings.mode_notation()
            ),
            CertificateError::NotValidForNameContext { presented, .. } => {
                let names: Vec<String> = presented.iter().map(|n| plain_name(n)).collect();
                format!(
                    "the server's certificate is not valid for host {host}: it names {} ({} \
                     checks the host name; NotValidForName)",
                    if names.is_empty() {
                        "no host".to_owned()
                    } else {
                        names.join(", ")
                    },
                    settings.mode_notation()
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired (Expired)".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (NotValidYet)".to_owned()
            }
            other => format!("the server's certificate is not accepted ({other:?})"),
        },
        rustls::Error::AlertReceived(alert) => {
            format!("the server ended the TLS handshake ({alert:?})")
        }
        other => format!("the TLS handshake failed: {other}"),
    }
}

/// `DnsName("db1.internal")` → `db1.internal`, `IpAddress(10.0.0.1)` → `10.0.0.1`.
fn plain_name(n: &str) -> String {
    for (prefix, suffix) in [("DnsName(\"", "\")"), ("IpAddress(", ")")] {
        if let Some(inner) = n.strip_prefix(prefix).and_then(|r| r.strip_suffix(suffix)) {
            return inner.to_owned();
        }
    }
    n.to_owned()
}

/// An I/O error in plain words, without the OS error number.
fn io_words(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::UnexpectedEof => "the server closed the connection".to_owned(),
        _ => e.to_string(),
    }
}

/// Why a connection failed, said once ([`crate::pg_cause`]), with the TLS mode named where
/// it is the reason: `the server does not support TLS (sslmode=require)`.
pub fn cause(e: &tokio_postgres::Error, tls: &PgTls) -> String {
    let text = crate::error::pg_cause(e);
    match text.strip_suffix("server does not support TLS") {
        Some(_) => format!(
            "the server does not support TLS ({})",
            tls.settings().mode_notation()
        ),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_file_must_hold_certificates() {
        assert!(roots(b"").unwrap_err().contains("holds no certificate"));
        assert!(roots(b"hello")
            .unwrap_err()
            .contains("holds no certificate"));
        let bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(
            roots(bad).unwrap_err().contains("no usable CA"),
            "{:?}",
            roots(bad).err()
        );
    }

    #[test]
    fn names_are_shown_plainly() {
        assert_eq!(plain_name("DnsName(\"db1.internal\")"), "db1.internal");
        assert_eq!(plain_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(plain_name("DirectoryName"), "DirectoryName");
    }
}
