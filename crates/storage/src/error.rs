use std::time::Duration;

pub use tokio_postgres::error::SqlState;

/// What can go wrong talking to a backend. `backend` names the server as the user knows it
/// ([`crate::Backend::label`]: `backend db1`, or `the catalog database`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The backend is down, hung or overloaded: retry later.
    #[error("{backend} is unavailable: {reason}")]
    Unavailable {
        backend: String,
        reason: String,
        retry_after: Duration,
    },
    /// The backend does not serve this shard for client traffic (its state row is missing or
    /// not `active`/`frozen`).
    #[error("shard {shard} is not served by {backend} (state: {state})")]
    NotServed {
        shard: u32,
        backend: String,
        state: String,
    },
    /// The backend answered with an error that is not about its availability.
    #[error("{backend}: {message}")]
    Database {
        backend: String,
        /// PostgreSQL's SQLSTATE; `None` for a row of an unexpected shape.
        code: Option<SqlState>,
        message: String,
    },
    /// The backend's layout does not fit the configuration.
    #[error("{backend}: {message}")]
    Layout { backend: String, message: String },
    /// A step of a shard move was refused: the shard's state or data on this backend does not
    /// allow it (for example importing a shard the backend serves).
    #[error("shard {shard} on {backend}: {message}")]
    Refused {
        shard: u32,
        backend: String,
        message: String,
    },
    /// The database URL of a backend is not usable.
    #[error("{backend}: invalid database_url: {message}")]
    BadUrl { backend: String, message: String },
    /// A change by the mover's leader of term `term` was refused, nothing changed: the shard's
    /// row on this backend holds the higher term `newer`, so a newer leader took over the
    /// shard (this one lost its catalog session, perhaps without noticing yet).
    #[error(
        "shard {shard} on {backend}: a newer leader took over (term {newer} there, this \
         leader's term is {term}); the change was refused"
    )]
    Superseded {
        shard: u32,
        backend: String,
        term: mezzanine_core::Term,
        newer: mezzanine_core::Term,
    },
}

impl StorageError {
    /// Whether this is PostgreSQL's error `code`.
    pub fn is(&self, code: &SqlState) -> bool {
        matches!(self, StorageError::Database { code: Some(c), .. } if c == code)
    }

    /// Seconds a client should wait before retrying, for errors that are worth a retry.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            StorageError::Unavailable { retry_after, .. } => Some(*retry_after),
            StorageError::NotServed { .. } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

impl StorageError {
    /// A row that does not have the shape a statement promised (a column's type or count).
    pub(crate) fn shape(backend: &crate::Backend, e: impl std::fmt::Display) -> StorageError {
        StorageError::Database {
            backend: backend.label().to_owned(),
            code: None,
            message: format!("unexpected row shape: {e}"),
        }
    }
}

/// What went wrong in a driver error, said once: PostgreSQL's own message for an error it sent
/// (`password authentication failed for user "x"`, `database "y" does not exist`, with its
/// detail and hint), otherwise the driver's words followed by each underlying cause, an
/// operating-system error in plain words (`connection refused`).
pub fn pg_cause(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = db.message().to_owned();
        if let Some(detail) = db.detail() {
            s.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            s.push_str(&format!("; {hint}"));
        }
        return s;
    }
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io_cause(io),
            None => cause.to_string(),
        };
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    // "error connecting to server: connection refused" says the same thing twice, and so
    // does "error performing TLS handshake: the server's certificate is …".
    if parts.len() > 1
        && (parts[0] == "error connecting to server"
            || parts[0] == "error performing TLS handshake")
    {
        parts.remove(0);
    }
    parts.join(": ")
}

/// An I/O error in plain words, without the OS error number.
fn io_cause(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::TimedOut
        | K::AddrNotAvailable
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::PermissionDenied
        | K::UnexpectedEof => e.kind().to_string(),
        K::NotFound if e.raw_os_error().is_some() => "no such socket".to_owned(),
        _ => e.to_string(),
    }
}
