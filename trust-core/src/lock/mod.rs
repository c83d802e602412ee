//! Deadlock-free locks: a per-thread [`ThreadKey`], [`Mutex`] and [`RwLock`] that need it,
//! all-or-nothing collections, and `lock_all!` with ranks checked at compile time.
//!
//! A deadlock needs a thread that holds one lock and waits for another. Here a thread can only
//! wait for locks through its key, and while guards live the key is taken (held by value or
//! borrowed), so it cannot wait for more, unless it took a [`NestedKey`] whose type names the
//! highest rank it holds and which only accepts strictly higher ranks. Every call that takes
//! several locks takes them in one global order: by [rank], then by address.
//!
//! ```
//! use trust_core::lock::{Mutex, RwLock, ThreadKey};
//! use trust_core::lock_all;
//!
//! let mut key = ThreadKey::get().expect("one key per thread");
//! let (a, b, c) = (Mutex::new(1), Mutex::new(2), RwLock::new(String::from("three")));
//! {
//!     let (mut ga, gb, gc) = lock_all!(&mut key, a, b, read c); // all or nothing
//!     *ga += *gb;
//!     assert_eq!(gc.len(), 5);
//! } // while the guards live, `key` is borrowed: no second `lock_all!`
//! let g = a.lock(&mut key); // a single lock needs the key too
//! assert_eq!(*g, 3);
//! ```
//!
//! Ranks and nesting ([`lock_ranks!`](crate::lock_ranks)): a lock may carry a rank in its type.
//! `lock_all!(..; nest)` returns, after the guards, a [`NestedKey`] for taking higher ranks while
//! holding these; a lower or equal rank is a compile error naming both ranks.
//!
//! ```
//! use trust_core::lock::{Mutex, ThreadKey};
//! use trust_core::{lock_all, lock_ranks, try_lock_all};
//! use trust_core::lock::LockAllError;
//!
//! lock_ranks! { pub Table; pub Row; }
//! let table: Mutex<Vec<usize>, Table> = Mutex::ranked(vec![]);
//! let rows: [Mutex<u64, Row>; 3] = [Mutex::ranked(0), Mutex::ranked(0), Mutex::ranked(0)];
//!
//! let mut key = ThreadKey::get().unwrap();
//! let (mut log, mut key) = lock_all!(&mut key, table; nest);
//! for (i, j) in [(0, 1), (2, 0)] {
//!     let (mut x, mut y) = lock_all!(&mut key, rows[i], rows[j]); // ordered by address
//!     *x += 1;
//!     *y += 1;
//!     log.push(i);
//! }
//! // The same lock twice is a run-time error here (the macro cannot see that `i == j`).
//! let i = 1;
//! assert_eq!(
//!     try_lock_all!(&mut key, rows[i], rows[1]).err(),
//!     Some(LockAllError::Duplicate { first: 0, second: 1 })
//! );
//! assert_eq!(*log, [0, 2]);
//! ```
//!
//! Poisoning: none by default; see [`poison`] for what a panic does instead, and [`Poisonable`]
//! to opt in.

pub mod collection;
pub mod context;
mod key;
mod lock_all;
mod lockable;
mod mutex;
pub mod poison;
pub mod rank;
mod rwlock;

pub use collection::{
    LockCollection, LockGuard, OwnedLockCollection, RefLockCollection, RetryingLockCollection,
};
pub use context::LockContext;
pub use key::{Keyable, LockKey, NestedKey, ThreadKey};
pub use lock_all::LockAllError;
pub use lockable::{
    Guards, Lock, Lockable, LockableGetMut, LockableIntoInner, OwnedLockable, RawLock, Sharable,
};
pub use mutex::{DefaultRawMutex, Mutex, MutexGuard, MutexRef};
pub use poison::{
    PoisonError, PoisonGuard, PoisonLockGuard, PoisonReadGuard, PoisonResult, Poisonable,
};
pub use rank::{DeclaredRank, LockAfter, MaxRank, NoneHeld, Rank, Unranked};
pub use rwlock::{
    DefaultRawRwLock, RwLock, RwLockReadGuard, RwLockReadRef, RwLockWriteGuard, RwLockWriteRef,
};
pub use trust_macros::{lock_all, try_lock_all};

/// What `lock_all!`'s expansion names, through `trust_core::__private`.
#[doc(hidden)]
pub mod __private {
    pub use super::lock_all::{
        Plan, acquire, acquire_read, acquired, key, lock_id, nested_key, order, rank_of,
        try_acquire, try_acquire_read, unreachable_step,
    };
    pub use super::rank::seal;
    pub use super::{
        Lock, LockAfter, LockAllError, LockKey, Lockable, MaxRank, NestedKey, Rank, Sharable,
    };
}
