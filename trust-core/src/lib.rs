//! # trust-core
//!
//! Safe, scalable alternatives to `Arc<Mutex<T>>`.

pub mod ghost;
pub mod interval;
pub mod lock;
pub use trust_macros::{lock_all, try_lock_all};
#[doc(hidden)]
pub mod __private;
