//! Where the deliverer reads the shards' streams: the server's view of the cluster (its
//! current map and backend pools), behind a trait so that this crate needs no server.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use mezzanine_storage::Cell;

/// The shards' change streams, read from each shard's current owner. Implementations meet a
/// moved or dropped shard with a stale map by refreshing the map and retrying at the owner
/// (never by skipping); an error means "try again later".
pub trait Source: Send + Sync + 'static {
    /// The number of shards (fixed for the life of the data).
    fn num_shards(&self) -> u32;

    /// At most `limit` cells of `shard` with `added_id > after`, in `added_id` order; bodies
    /// only of cells whose column is in `columns` (others carry `null`).
    fn read(
        &self,
        shard: u32,
        after: i64,
        limit: i64,
        columns: &[String],
    ) -> BoxFuture<'_, Result<Vec<Cell>, String>>;

    /// One cell by `added_id` (a parked event's replay).
    fn read_event(&self, shard: u32, added_id: i64) -> BoxFuture<'_, Result<Option<Cell>, String>>;

    /// The `added_id` of the last cell of `shard` created before `before` (0 if none).
    fn start_offset(&self, shard: u32, before: DateTime<Utc>)
        -> BoxFuture<'_, Result<i64, String>>;

    /// A value per shard that changes whenever the shard gets new cells (the `created_at` of
    /// its latest cell); shards of a backend that did not answer are left out.
    fn heads(&self) -> BoxFuture<'_, HashMap<u32, Option<DateTime<Utc>>>>;

    /// The highest `added_id` of each shard (for the lag metrics); shards of a backend that
    /// did not answer are left out.
    fn tails(&self) -> BoxFuture<'_, HashMap<u32, i64>>;
}
