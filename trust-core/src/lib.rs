//! # trust-core
//!
//! Safe, scalable alternatives to `Arc<Mutex<T>>`.

pub mod ghost;
pub mod interval;
pub mod lock;
