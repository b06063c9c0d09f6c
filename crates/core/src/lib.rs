//! mezzanine's pure logic, free of I/O: the cell model and its validation, the go-mezzanine
//! compatible shard function, the shard map and `shards.json`, shard sets (`8-15`), the
//! live-move state machine, the mover leader's terms, and duration parsing.

pub mod cell;
pub mod conninfo;
pub mod copytime;
pub mod duration;
pub mod hash;
pub mod hosts;
pub mod moves;
pub mod page;
pub mod plugin;
pub mod plugin_ops;
pub mod rebalance;
pub mod shardmap;
pub mod shardset;
pub mod term;
pub mod trigger;

pub use cell::{CellKey, FieldError, NewCell, MAX_COLUMN_NAME_BYTES};
pub use hash::{fnv1a_32, shard_for_row_key, shard_for_str};
pub use shardmap::{BackendSpec, MapBackend, MapError, ShardMap, ShardsFile};
pub use shardset::{format_shard_set, parse_shard_set, ShardSetError};
pub use term::Term;
