//! Throwaway servers with TLS (`ssl = on`), for the tests of TLS to PostgreSQL: the test
//! writes the certificate and key (made with rcgen, say), this puts them where the server
//! reads them, and can make the server refuse TCP connections without TLS.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::unistd::chown;

use crate::{io_err, postgres_user, start_temp_server_with, sys_err, PgError, PgInstall, PgServer};

/// A server's TLS: its certificate chain and key (PEM), and whether plain TCP is refused.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server's certificate, then any intermediates (PEM).
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
    /// Refuse TCP connections without TLS (`hostnossl all all all reject` first in pg_hba).
    pub reject_plain: bool,
}

impl ServerTls {
    /// Writes the certificate, the key (0600, owned by the server's user: PostgreSQL refuses
    /// a key others can read) and, with `reject_plain`, an hba file into `dir`, and returns
    /// `spec` with the settings that use them.
    pub fn apply(&self, dir: &Path, spec: crate::ServerSpec) -> Result<crate::ServerSpec, PgError> {
        let user = postgres_user()?;
        let write = |name: &str, text: &str, mode: u32| -> Result<String, PgError> {
            let path = dir.join(name);
            let shown = path.display().to_string();
            fs::write(&path, text).map_err(io_err(format!("could not write {shown}")))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(io_err(format!("could not set permissions of {shown}")))?;
            if let Some((uid, gid)) = user {
                chown(&path, Some(uid), Some(gid))
                    .map_err(sys_err(format!("could not chown {shown} to postgres")))?;
            }
            Ok(shown)
        };
        let cert = write("server.crt", &self.cert_pem, 0o644)?;
        let key = write("server.key", &self.key_pem, 0o600)?;
        let mut spec = spec
            .setting("ssl", "on")
            .setting("ssl_cert_file", cert)
            .setting("ssl_key_file", key);
        if self.reject_plain {
            // initdb's rules are `trust` (see `prepare_data_dir`); the same, less plain TCP.
            let hba = write(
                "tls_hba.conf",
                "local all all trust\n\
                 hostnossl all all all reject\n\
                 host all all all trust\n",
                0o644,
            )?;
            spec = spec.setting("hba_file", hba);
        }
        Ok(spec)
    }
}

/// A throwaway server (as [`crate::start_temp_servers`] starts them) with TLS.
pub fn start_temp_tls_server(install: &PgInstall, tls: &ServerTls) -> Result<PgServer, PgError> {
    start_temp_server_with(install, |root, spec| tls.apply(root, spec))
}
