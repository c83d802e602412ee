//! Examples live beside this package; run them with `cargo run --release --example NAME`.
//!
//! The library part holds examples big enough to have modules and tests of their own:
//! [`memcached`], a memcached-compatible server built on `#[entrust]` shards.

pub mod memcached;
