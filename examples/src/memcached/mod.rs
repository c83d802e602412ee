//! A memcached-compatible server built on delegation: the cache is one [`store::Shard`] per worker, each
//! entrusted to that worker's trustee with `#[entrust]`, and every protocol command is one stub call on the
//! shard its key hashes to. There is no lock anywhere in the server.
//!
//! - [`protocol`]: the text protocol parser (incremental, zero-copy).
//! - [`store`]: the shard: hash map, LRU list, memory limit, exptime, cas, counters.
//! - [`server`]: configuration, the accept loop and the per-connection handler.

pub mod protocol;
pub mod server;
pub mod store;

pub use server::{Config, Server, ServerHandle};
pub use store::Shard;
