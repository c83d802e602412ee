//! # trust-core
//!
//! Safe, scalable alternatives to `Arc<Mutex<T>>`:
//!
//! - **Delegation**: [`Trust<T>`] hands a value to a *trustee* (one per worker thread); clients send it
//!   closures over single-producer/single-consumer slots and the trustee applies them one after another
//!   ("Delegation with Trust<T>", arXiv 2408.11173). [`spawn`] starts fibers, so one thread keeps many
//!   requests in flight.
//! - [`lock`]: deadlock-free lock collections; [`ghost`]: branded token cells; [`interval`]: interval
//!   readers-writer locks.
//!
//! ```
//! use trust_core::entrust;
//!
//! let counter = entrust(0u64);
//! let fibers: Vec<_> = (0..8)
//!     .map(|_| {
//!         let counter = counter.clone();
//!         trust_core::spawn(move || for _ in 0..100 { counter.apply(|c| *c += 1) })
//!     })
//!     .collect();
//! for f in fibers {
//!     f.join().unwrap();
//! }
//! assert_eq!(counter.apply(|c| *c), 800);
//! ```

#[cfg(not(loom))]
mod client;
#[cfg(not(loom))]
mod context;
#[cfg(not(loom))]
mod entrust;
#[cfg(not(loom))]
mod fiber;
#[cfg(not(loom))]
mod future;
#[cfg(not(loom))]
mod job;
#[cfg(not(loom))]
mod latch;
#[cfg(not(loom))]
mod parker;
#[cfg(not(loom))]
mod property;
#[cfg(not(loom))]
mod runtime;
#[cfg(not(loom))]
mod then;
#[cfg(not(loom))]
mod trust;
#[cfg(not(loom))]
mod trustee;
#[cfg(not(loom))]
mod worker;

// Under `--cfg loom` only the slot protocol is built, for its model check (`slot::loom_model`).
mod slot;
mod sync;

#[cfg(not(loom))]
pub mod ghost;
#[cfg(not(loom))]
pub mod interval;
#[cfg(not(loom))]
pub mod lock;

#[cfg(not(loom))]
pub use client::wait_pending;
#[cfg(not(loom))]
pub use fiber::{Fiber, spawn, yield_now};
#[cfg(not(loom))]
pub use future::ApplyFuture;
#[cfg(not(loom))]
pub use latch::{Latch, LatchGuard};
#[cfg(not(loom))]
pub use runtime::{Runtime, RuntimeBuilder, RuntimeError, entrust, local_trustee, runtime};
#[cfg(not(loom))]
pub use trust::Trust;
/// `#[entrust]` on a struct and its inherent `impl` blocks: every `&self` / `&mut self` method becomes a stub
/// callable on `Trust<Struct>`. See `docs/entrust.md`. (A function of the same name, [`entrust()`], entrusts a
/// value: attribute macros and functions live in different namespaces.)
#[cfg(not(loom))]
pub use trust_macros::entrust;
#[cfg(not(loom))]
pub use trustee::Trustee;

/// What macro-generated code names, as `::trust_core::__private::X`; not public API.
#[doc(hidden)]
#[cfg(not(loom))]
pub mod __private {
    pub use crate::entrust::{
        Arg, CopiedSlice, CopiedStr, DelegatedArg, DelegatedReturn, DelegatedSliceElem, Entrusted,
        Returned, arg, ret, slice_arg, str_arg, trust_of,
    };
    pub use crate::trust::Trust;
}
