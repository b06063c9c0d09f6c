//! The client side of TLS, for the admin commands and the bench: which `https://` servers to
//! trust (`--cacert`: the CA certificates of a file, for a private CA; else the public roots
//! of webpki-roots) and the client certificate to present to a server that requires one
//! (`--client-cert` and `--client-key`, for `TLS_CLIENT_CA_FILE`). rustls with *ring*, never
//! the process's default provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ClientConfig;

/// The TLS options of the admin commands and the bench.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Trust the CA certificates of this PEM file for an https:// server (a private CA)
    /// instead of the public roots (as curl's --cacert).
    #[arg(long, global = true, env = "MEZZANINE_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM, chain allowed) for a server that requires one
    /// (TLS_CLIENT_CA_FILE); with --client-key.
    #[arg(
        long,
        global = true,
        env = "MEZZANINE_CLIENT_CERT",
        value_name = "FILE"
    )]
    pub client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM).
    #[arg(long, global = true, env = "MEZZANINE_CLIENT_KEY", value_name = "FILE")]
    pub client_key: Option<PathBuf>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

async fn read(path: &Path, option: &str) -> anyhow::Result<Vec<u8>> {
    tokio::fs::read(path).await.map_err(|e| {
        let cause = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_owned(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
            _ => e.to_string(),
        };
        anyhow::anyhow!("cannot read {} ({option}): {cause}", path.display())
    })
}

fn certificates(
    bytes: &[u8],
    path: &Path,
    option: &str,
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} ({option}) is not PEM certificates", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{} ({option}) holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certs)
}

/// A client configuration trusting `roots`, presenting `identity`, speaking HTTP/1.1.
fn config(
    roots: rustls::RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> anyhow::Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("no TLS protocol version")?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).context(
            "the client certificate and key (--client-cert, --client-key) cannot be used",
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The configuration without options: the public roots, no client certificate.
#[cfg(test)]
pub fn default_config() -> anyhow::Result<ClientConfig> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    config(roots, None)
}

impl TlsArgs {
    /// The client configuration these options give (reads their files).
    pub async fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let roots = match &self.cacert {
            None => rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
            Some(path) => {
                let option = "--cacert or MEZZANINE_CACERT";
                let bytes = read(path, option).await?;
                let mut roots = rustls::RootCertStore::empty();
                for ca in certificates(&bytes, path, option)? {
                    roots.add(ca).with_context(|| {
                        format!(
                            "{} ({option}) holds an unusable CA certificate",
                            path.display()
                        )
                    })?;
                }
                roots
            }
        };
        let identity = match (&self.client_cert, &self.client_key) {
            (None, None) => None,
            (Some(_), None) => bail!("--client-cert needs --client-key (MEZZANINE_CLIENT_KEY)"),
            (None, Some(_)) => bail!("--client-key needs --client-cert (MEZZANINE_CLIENT_CERT)"),
            (Some(cert), Some(key)) => {
                let option = "--client-cert or MEZZANINE_CLIENT_CERT";
                let chain = certificates(&read(cert, option).await?, cert, option)?;
                let option = "--client-key or MEZZANINE_CLIENT_KEY";
                let key_der = PrivateKeyDer::from_pem_slice(&read(key, option).await?)
                    .with_context(|| {
                        format!("{} ({option}) holds no PEM private key", key.display())
                    })?;
                Some((chain, key_der))
            }
        };
        config(roots, identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_that_cannot_be_used_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let cases = [
            (
                TlsArgs {
                    cacert: Some(dir.path().join("missing.pem")),
                    ..Default::default()
                },
                "missing.pem (--cacert or MEZZANINE_CACERT): no such file",
            ),
            (
                TlsArgs {
                    cacert: Some(junk.clone()),
                    ..Default::default()
                },
                "holds no certificate",
            ),
            (
                TlsArgs {
                    client_cert: Some(junk.clone()),
                    ..Default::default()
                },
                "--client-cert needs --client-key",
            ),
        ];
        for (args, says) in cases {
            let e = format!("{:#}", args.client_config().await.unwrap_err());
            assert!(e.contains(says), "{e}");
        }
        assert!(TlsArgs::default().client_config().await.is_ok());
    }
}
