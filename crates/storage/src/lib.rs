//! mezzanine's PostgreSQL side.
//!
//! - [`schema`]: the `cells_NNNN` tables (go-mezzanine's shape, never altered when they exist
//!   already), mezzanine's per-backend metadata and the start-up migration that costs one round
//!   trip per backend when the schema is current.
//! - [`backend`]: one connection pool per backend with its health: a backend that is down or
//!   hung answers [`StorageError::Unavailable`] within the query timeout, then fails fast until
//!   its prober sees it healthy again. Pools are separate, so a sick backend never exhausts
//!   the connections of a healthy one.
//! - [`cells`]: the statements that write and read cells of one shard, including the shard
//!   lock that makes the change stream ordered (invariant I1).
//! - [`conninfo`]: connection strings: every password masked in one place, the password file,
//!   and the checks of a backend's URL before any connection.
//! - [`sslmode`], [`tls`]: TLS to PostgreSQL after libpq's `sslmode` and `sslrootcert`: the
//!   settings taken out of a connection string, and the one rustls connector every
//!   connection uses.
//! - [`keepalive`]: TCP keepalives and user timeouts on every connection, both sides, so a
//!   silent partition is noticed within seconds.
//! - [`shard_state`]: the state of a shard on one backend, which the fence checks.
//! - [`stream_index`]: the index that serves reads by `created_at`, built online on tables
//!   that existed before it.
//! - [`stream_lag`]: how far plugins are behind in a shard's change stream (one probe).
//! - [`transfer`]: the storage steps of live shard moves: per-backend shard state, preparing a
//!   target, binary `COPY` between backends, checksums, precise diffs and self-checks.

pub mod backend;
pub mod cells;
pub mod conninfo;
pub mod error;
pub mod keepalive;
pub mod schema;
pub mod shard_state;
pub mod sslmode;
pub mod stream;
pub mod stream_index;
pub mod stream_lag;
pub mod tls;
pub mod transfer;

pub use backend::{default_max_conns, Backend, BackendHealth, PoolSettings};
pub use cells::{Cell, PartitionRead, WriteOutcome};
pub use conninfo::mask_url;
pub use error::{pg_cause, SqlState, StorageError};
pub use transfer::{
    Checksum, CopyReport, DiffReport, Difference, SelfCheck, ShardState, ShardStats, Side,
};
