use std::time::Duration;

/// What can go wrong talking to a backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The backend is down, hung or overloaded: retry later.
    #[error("backend {backend} is unavailable: {reason}")]
    Unavailable {
        backend: String,
        reason: String,
        retry_after: Duration,
    },
    /// The backend does not serve this shard for client traffic (its state row is missing or
    /// not `active`/`frozen`).
    #[error("shard {shard} is not served by backend {backend} (state: {state})")]
    NotServed {
        shard: u32,
        backend: String,
        state: String,
    },
    /// The backend answered with an error that is not about its availability.
    #[error("backend {backend}: {message}")]
    Database {
        backend: String,
        code: String,
        message: String,
    },
    /// The backend's layout does not fit the configuration.
    #[error("backend {backend}: {message}")]
    Layout { backend: String, message: String },
    /// A step of a shard move was refused: the shard's state or data on this backend does not
    /// allow it (for example importing a shard the backend serves).
    #[error("shard {shard} on backend {backend}: {message}")]
    Refused {
        shard: u32,
        backend: String,
        message: String,
    },
    /// The database URL of a backend is not usable.
    #[error("backend {backend}: invalid database_url: {message}")]
    BadUrl { backend: String, message: String },
}

impl StorageError {
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
            backend: backend.name().to_owned(),
            code: String::new(),
            message: format!("unexpected row shape: {e}"),
        }
    }
}
