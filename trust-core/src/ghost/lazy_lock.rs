//! `GhostLazyLock`: a thread-safe lazy value of a brand, read with `&GhostToken`: the `std::sync::LazyLock`
//! next to [`GhostLazyCell`](super::GhostLazyCell).
//!
//! `GhostLazyCell` initialises under `&mut token`, so it needs no synchronization at all; `GhostLazyLock` is
//! for when the threads that may be first to read only hold `&token` (shared among scoped threads): the
//! initialisation then runs exactly once behind a `std::sync::OnceLock`, whose fast path is one Acquire load.
//! The construction is std's `LazyLock`: a `OnceLock<T>` plus the initialiser, taken by whoever runs it.

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use std::sync::OnceLock;

use super::token::{GhostToken, InvariantLifetime};

/// A value of brand `'brand` computed by `F` on first [`force`](Self::force), on whichever thread gets
/// there first; the others wait for it.
///
/// ```
/// use trust_core::ghost::{GhostLazyLock, GhostToken};
///
/// GhostToken::new(|token| {
///     let primes = GhostLazyLock::new(|| (2..50u32).filter(|n| (2..*n).all(|d| n % d != 0)).count());
///     let token = &token;
///     std::thread::scope(|s| {
///         for _ in 0..4 {
///             s.spawn(|| assert_eq!(*primes.force(token), 15));
///         }
///     });
///     assert_eq!(primes.get(token), Some(&15));
/// });
/// ```
///
/// If `F` panics, the lock is poisoned: later `force` calls panic too (`F` was consumed).
pub struct GhostLazyLock<'brand, T, F = fn() -> T> {
    _brand: InvariantLifetime<'brand>,
    value: OnceLock<T>,
    // Taken (once) inside `OnceLock::get_or_init`'s closure, which runs on one thread at a time.
    init: UnsafeCell<Option<F>>,
}

// SAFETY: as std's `LazyLock`: `&T` is handed out on many threads (`T: Sync`), the value may be created
// on one thread and dropped on another (`T: Send`), and `F` may be taken and run on any thread (`F: Send`);
// `init` is touched only inside `get_or_init`'s closure, which `OnceLock` runs on one thread at a time.
unsafe impl<'brand, T: Send + Sync, F: Send> Sync for GhostLazyLock<'brand, T, F> {}

impl<'brand, T, F: FnOnce() -> T> GhostLazyLock<'brand, T, F> {
    /// A lazy value that `init` will compute on first use.
    pub const fn new(init: F) -> Self {
        Self {
            _brand: PhantomData,
            value: OnceLock::new(),
            init: UnsafeCell::new(Some(init)),
        }
    }

    /// The value, computing it first if no thread has. Concurrent first callers wait for one of them.
    ///
    /// The initialiser must not force this same lock: that call waits for the initialisation it is part
    /// of, and never returns (std's `OnceLock` deadlocks there, as `std::sync::LazyLock` does).
    ///
    /// # Panics
    ///
    /// If the initialiser panicked on an earlier call.
    #[inline]
    pub fn force(&self, token: &GhostToken<'brand>) -> &T {
        let _ = token;
        self.value.get_or_init(|| {
            // SAFETY: `OnceLock` runs this closure on at most one thread at a time, and nothing else touches
            // `init` while `&self` is shared (only `into_inner` and `force_mut`, through exclusive access).
            let init = unsafe { (*self.init.get()).take() };
            let init = init.expect(
                "GhostLazyLock::force: the initialiser panicked on an earlier call, so the value can never be \
                 computed; catch that panic where it happened, or build a new GhostLazyLock",
            );
            init()
        })
    }

    /// The value, computing it first if needed, through exclusive access (no token, no waiting).
    ///
    /// # Panics
    ///
    /// If the initialiser panicked on an earlier call.
    pub fn force_mut(&mut self) -> &mut T {
        if self.value.get().is_none() {
            let init = self.init.get_mut().take().expect(
                "GhostLazyLock::force_mut: the initialiser panicked on an earlier call, so the value can never \
                 be computed; catch that panic where it happened, or build a new GhostLazyLock",
            );
            let _ = self.value.set(init());
        }
        self.value.get_mut().expect("set above")
    }

    /// The value if some thread already computed it; never runs the initialiser.
    #[inline]
    pub fn get(&self, token: &GhostToken<'brand>) -> Option<&T> {
        let _ = token;
        self.value.get()
    }

    /// The value if computed, or the initialiser if not.
    pub fn into_inner(self) -> Result<T, Option<F>> {
        let Self { value, init, .. } = self;
        value.into_inner().ok_or_else(|| init.into_inner())
    }
}

impl<T, F> fmt::Debug for GhostLazyLock<'_, T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GhostLazyLock").finish_non_exhaustive()
    }
}
