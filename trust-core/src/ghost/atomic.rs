//! Branded atomics: `GhostAtomicUsize<'brand>`, `GhostAtomicU64`, `GhostAtomicU32`, `GhostAtomicBool`.
//!
//! Each is a `std::sync::atomic` type plus a brand marker, `#[repr(transparent)]`: same size, same alignment,
//! same code (every method is an `#[inline(always)]` forward). The brand is a compile-time domain marker, as
//! in halo's `concurrency::atomic`: structures built for one traversal (a visited set, its worklists, the
//! `GhostCell`s of its graph) carry one brand, so a value of another traversal does not type-check there.
//! The brand gives no synchronization of its own; the orderings are the caller's, exactly as with std.

use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::token::InvariantLifetime;

macro_rules! ghost_atomic_int {
    ($(#[$doc:meta])* $name:ident, $atomic:ident, $int:ty) => {
        $(#[$doc])*
        #[repr(transparent)]
        pub struct $name<'brand> {
            inner: $atomic,
            _brand: InvariantLifetime<'brand>,
        }

        impl<'brand> $name<'brand> {
            /// A new atomic holding `value`.
            #[inline(always)]
            pub const fn new(value: $int) -> Self {
                Self::from_std($atomic::new(value))
            }

            /// Brands a std atomic.
            #[inline(always)]
            pub const fn from_std(inner: $atomic) -> Self {
                Self { inner, _brand: PhantomData }
            }

            /// The std atomic inside (for APIs that take one).
            #[inline(always)]
            pub const fn as_std(&self) -> &$atomic {
                &self.inner
            }

            /// The value, through exclusive access (no atomic operation).
            #[inline(always)]
            pub fn get_mut(&mut self) -> &mut $int {
                self.inner.get_mut()
            }

            /// The value.
            #[inline(always)]
            pub fn into_inner(self) -> $int {
                self.inner.into_inner()
            }

            /// A raw pointer to the value (as `std`'s `as_ptr`).
            #[inline(always)]
            pub const fn as_ptr(&self) -> *mut $int {
                self.inner.as_ptr()
            }

            /// As `std`'s `load`.
            #[inline(always)]
            pub fn load(&self, order: Ordering) -> $int {
                self.inner.load(order)
            }

            /// As `std`'s `store`.
            #[inline(always)]
            pub fn store(&self, value: $int, order: Ordering) {
                self.inner.store(value, order)
            }

            /// As `std`'s `swap`.
            #[inline(always)]
            pub fn swap(&self, value: $int, order: Ordering) -> $int {
                self.inner.swap(value, order)
            }

            /// As `std`'s `compare_exchange`.
            #[inline(always)]
            pub fn compare_exchange(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                self.inner.compare_exchange(current, new, success, failure)
            }

            /// As `std`'s `compare_exchange_weak` (may fail spuriously: call it in a loop).
            #[inline(always)]
            pub fn compare_exchange_weak(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                self.inner.compare_exchange_weak(current, new, success, failure)
            }

            /// As `std`'s `fetch_update`.
            #[inline(always)]
            pub fn fetch_update(
                &self,
                set_order: Ordering,
                fetch_order: Ordering,
                f: impl FnMut($int) -> Option<$int>,
            ) -> Result<$int, $int> {
                self.inner.fetch_update(set_order, fetch_order, f)
            }

            /// As `std`'s `fetch_add` (wrapping).
            #[inline(always)]
            pub fn fetch_add(&self, value: $int, order: Ordering) -> $int {
                self.inner.fetch_add(value, order)
            }

            /// As `std`'s `fetch_sub` (wrapping).
            #[inline(always)]
            pub fn fetch_sub(&self, value: $int, order: Ordering) -> $int {
                self.inner.fetch_sub(value, order)
            }

            /// As `std`'s `fetch_and`.
            #[inline(always)]
            pub fn fetch_and(&self, value: $int, order: Ordering) -> $int {
                self.inner.fetch_and(value, order)
            }

            /// As `std`'s `fetch_nand`.
            #[inline(always)]
            pub fn fetch_nand(&self, value: $int, order: Ordering) -> $int {
                self.inner.fetch_nand(value, order)
            }

            /// As `std`'s `fetch_or`.
            #[inline(always)]
            pub fn fetch_or(&self, value: $int, order: Ordering) -> $int {
                self.inner.fetch_or(value, order)
            }

            /// As `std`'s `fetch_xor`.
            #[inline(always)]
            pub fn fetch_xor(&self, value: $int, order: Ordering) -> $int {
                self.inner.fetch_xor(value, order)
            }

            /// As `std`'s `fetch_max`.
            #[inline(always)]
            pub fn fetch_max(&self, value: $int, order: Ordering) -> $int {
                self.inner.fetch_max(value, order)
            }

            /// As `std`'s `fetch_min`.
            #[inline(always)]
            pub fn fetch_min(&self, value: $int, order: Ordering) -> $int {
                self.inner.fetch_min(value, order)
            }
        }

        impl Default for $name<'_> {
            fn default() -> Self {
                Self::new(0)
            }
        }

        impl From<$int> for $name<'_> {
            fn from(value: $int) -> Self {
                Self::new(value)
            }
        }

        impl fmt::Debug for $name<'_> {
            /// Prints the value read with `Relaxed`, as std's atomics do.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.inner, f)
            }
        }
    };
}

ghost_atomic_int!(
    /// An [`AtomicUsize`] of brand `'brand`: the same API, size and code.
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// use trust_core::ghost::{GhostAtomicUsize, GhostToken};
    ///
    /// GhostToken::new(|_token| {
    ///     let hits = GhostAtomicUsize::new(0);
    ///     std::thread::scope(|s| {
    ///         for _ in 0..4 {
    ///             s.spawn(|| hits.fetch_add(1, Ordering::Relaxed));
    ///         }
    ///     });
    ///     assert_eq!(hits.load(Ordering::Relaxed), 4);
    /// });
    /// ```
    GhostAtomicUsize,
    AtomicUsize,
    usize
);

ghost_atomic_int!(
    /// An [`AtomicU64`] of brand `'brand`: the same API, size and code.
    GhostAtomicU64,
    AtomicU64,
    u64
);

ghost_atomic_int!(
    /// An [`AtomicU32`] of brand `'brand`: the same API, size and code.
    GhostAtomicU32,
    AtomicU32,
    u32
);

/// An [`AtomicBool`] of brand `'brand`: the same API, size and code.
#[repr(transparent)]
pub struct GhostAtomicBool<'brand> {
    inner: AtomicBool,
    _brand: InvariantLifetime<'brand>,
}

impl<'brand> GhostAtomicBool<'brand> {
    /// A new atomic holding `value`.
    #[inline(always)]
    pub const fn new(value: bool) -> Self {
        Self::from_std(AtomicBool::new(value))
    }

    /// Brands a std atomic.
    #[inline(always)]
    pub const fn from_std(inner: AtomicBool) -> Self {
        Self {
            inner,
            _brand: PhantomData,
        }
    }

    /// The std atomic inside.
    #[inline(always)]
    pub const fn as_std(&self) -> &AtomicBool {
        &self.inner
    }

    /// The value, through exclusive access.
    #[inline(always)]
    pub fn get_mut(&mut self) -> &mut bool {
        self.inner.get_mut()
    }

    /// The value.
    #[inline(always)]
    pub fn into_inner(self) -> bool {
        self.inner.into_inner()
    }

    /// A raw pointer to the value (as `std`'s `as_ptr`).
    #[inline(always)]
    pub const fn as_ptr(&self) -> *mut bool {
        self.inner.as_ptr()
    }

    /// As `std`'s `load`.
    #[inline(always)]
    pub fn load(&self, order: Ordering) -> bool {
        self.inner.load(order)
    }

    /// As `std`'s `store`.
    #[inline(always)]
    pub fn store(&self, value: bool, order: Ordering) {
        self.inner.store(value, order)
    }

    /// As `std`'s `swap`.
    #[inline(always)]
    pub fn swap(&self, value: bool, order: Ordering) -> bool {
        self.inner.swap(value, order)
    }

    /// As `std`'s `compare_exchange`.
    #[inline(always)]
    pub fn compare_exchange(
        &self,
        current: bool,
        new: bool,
        success: Ordering,
        failure: Ordering,
    ) -> Result<bool, bool> {
        self.inner.compare_exchange(current, new, success, failure)
    }

    /// As `std`'s `compare_exchange_weak`.
    #[inline(always)]
    pub fn compare_exchange_weak(
        &self,
        current: bool,
        new: bool,
        success: Ordering,
        failure: Ordering,
    ) -> Result<bool, bool> {
        self.inner.compare_exchange_weak(current, new, success, failure)
    }

    /// As `std`'s `fetch_and`.
    #[inline(always)]
    pub fn fetch_and(&self, value: bool, order: Ordering) -> bool {
        self.inner.fetch_and(value, order)
    }

    /// As `std`'s `fetch_or`.
    #[inline(always)]
    pub fn fetch_or(&self, value: bool, order: Ordering) -> bool {
        self.inner.fetch_or(value, order)
    }

    /// As `std`'s `fetch_xor`.
    #[inline(always)]
    pub fn fetch_xor(&self, value: bool, order: Ordering) -> bool {
        self.inner.fetch_xor(value, order)
    }

    /// As `std`'s `fetch_nand`.
    #[inline(always)]
    pub fn fetch_nand(&self, value: bool, order: Ordering) -> bool {
        self.inner.fetch_nand(value, order)
    }

    /// As `std`'s `fetch_update`.
    #[inline(always)]
    pub fn fetch_update(
        &self,
        set_order: Ordering,
        fetch_order: Ordering,
        f: impl FnMut(bool) -> Option<bool>,
    ) -> Result<bool, bool> {
        self.inner.fetch_update(set_order, fetch_order, f)
    }

    /// As `std`'s `fetch_not`.
    #[inline(always)]
    pub fn fetch_not(&self, order: Ordering) -> bool {
        self.inner.fetch_not(order)
    }
}

impl Default for GhostAtomicBool<'_> {
    fn default() -> Self {
        Self::new(false)
    }
}

impl From<bool> for GhostAtomicBool<'_> {
    fn from(value: bool) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for GhostAtomicBool<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}
