//! # trust-core
//!
//! Safe, scalable alternatives to `Arc<Mutex<T>>`:
//!
//! - **Delegation**: [`Trust<T>`] hands a value to a *trustee* (one per worker thread); clients send it
//!   closures over single-producer/single-consumer slots and the trustee applies them one after another
//!   ("Delegation with `Trust<T>`", arXiv 2408.11173). [`spawn`] starts fibers, so one thread keeps many
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

/// Declares items that exist only outside the loom model check: under `--cfg loom` the crate is just the
/// slot protocol, the sleep/wake handshake, the wake-up relay and their facade over atomics and threads
/// (`slot::loom_model`, `parker::loom_model`, `relay::loom_model`), and the ghost worklists with theirs
/// (`treiber::loom_model`, `deque::loom_model`).
macro_rules! not_loom {
    ($($item:item)*) => { $( #[cfg(not(loom))] $item )* };
}

/// Under loom: the protocol floor and the relay, for their models, which use part of them only (the rest is
/// dead code in this build).
#[cfg(loom)]
#[allow(dead_code)]
mod delegation {
    pub(crate) mod protocol;
    /// The relay's handshake with the polls that drain it (`relay::loom_model`).
    pub(crate) mod trustee {
        pub(crate) mod relay;
        pub(crate) mod unwind;
    }
}

/// Under loom: the lock-free worklists of `ghost` and their facade (`treiber::loom_model`,
/// `deque::loom_model`).
#[cfg(loom)]
#[allow(dead_code)]
mod ghost {
    mod deque;
    mod sync;
    mod token;
    mod treiber;
}

not_loom! {
    mod delegation;

    pub mod ghost;
    pub mod interval;
    pub mod lock;

    #[doc(hidden)]
    pub mod __private;

    pub use delegation::api::fiber::{Fiber, JoinHandle, sleep, spawn, yield_now};
    pub use delegation::api::future::ApplyFuture;
    pub use delegation::api::latch::{Latch, LatchGuard};
    pub use delegation::api::metrics::TrusteeMetrics;
    pub use delegation::api::runtime::{
        MAX_WORKERS, Runtime, RuntimeBuilder, RuntimeError, entrust, local_trustee, runtime,
    };
    pub use delegation::api::trust::Trust;
    pub use delegation::call::wait_pending;
    pub use trust_macros::{lock_all, try_lock_all};
    /// `#[entrust]` on a struct and its inherent `impl` blocks: every `&self` / `&mut self` method becomes a
    /// stub callable on `Trust<Struct>`. See `docs/entrust.md`. (A function of the same name, [`entrust()`],
    /// entrusts a value; functions and attribute macros live in different namespaces.)
    pub use trust_macros::entrust;
    pub use delegation::api::trustee::Trustee;
    pub use delegation::api::net;

    /// The names delegation code uses everywhere, for `use trust_core::prelude::*;` (as `trust_tee::prelude`):
    /// `Trust`, `Trustee`, `Runtime`, `Latch`, `Fiber`, `entrust` (the function and the attribute),
    /// `spawn`, `wait_pending`, `local_trustee` and `runtime`. Nothing of `lock`, whose `Mutex` and `RwLock`
    /// would clash with `std::sync`'s.
    ///
    /// ```
    /// use trust_core::prelude::*;
    ///
    /// #[entrust]
    /// struct Tally(u64);
    ///
    /// #[entrust]
    /// impl Tally {
    ///     fn add(&mut self, n: u64) -> u64 {
    ///         self.0 += n;
    ///         self.0
    ///     }
    /// }
    ///
    /// let tally: Trust<Tally> = entrust(Tally(0));
    /// let fiber: Fiber<u64> = spawn({
    ///     let tally = tally.clone();
    ///     move || tally.add(2)
    /// });
    /// assert_eq!(fiber.join().unwrap(), 2);
    /// tally.add_then(3, |total| assert_eq!(total, 5));
    /// wait_pending();
    /// assert_eq!(tally.apply(|t| t.0), 5);
    /// ```
    pub mod prelude {
        pub use crate::{
            Fiber, Latch, Runtime, Trust, Trustee, entrust, local_trustee, runtime, spawn, wait_pending,
        };
    }
}
