//! [`RwLock`]: a readers-writer lock that needs the thread's key, carries a rank in its type, and
//! runs on any `lock_api::RawRwLock` (`parking_lot`'s by default).
//!
//! Bare guards ([`RwLockReadRef`], [`RwLockWriteRef`]) come from `lock_all!` and collections;
//! keyed guards ([`RwLockReadGuard`], [`RwLockWriteGuard`]) from `read`/`write`, and
//! `unlock_read`/`unlock_write` give their key back.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use lock_api::RawRwLock;

use super::key::{self, KeyInUse, Keyable};
use super::lockable::{
    Lock, Lockable, LockableGetMut, LockableIntoInner, OwnedLockable, RawLock, Sharable,
};
use super::poison::BrokenFlag;
use super::rank::{Rank, Unranked};

/// The raw readers-writer lock used unless a third type argument says otherwise.
pub type DefaultRawRwLock = parking_lot::RawRwLock;

/// A readers-writer lock whose every blocking acquisition needs the thread's
/// [`ThreadKey`](super::ThreadKey).
///
/// ```
/// use trust_core::lock::{RwLock, ThreadKey};
///
/// let mut key = ThreadKey::get().unwrap();
/// let config = RwLock::new(String::from("a"));
/// config.write(&mut key).push('b');
/// assert_eq!(&*config.read(&mut key), "ab");
/// ```
///
/// Reading the same `RwLock` twice in one thread is refused like any duplicate: with a
/// writer-preferring raw lock, a writer queued between the two reads would deadlock them.
// `repr(C)`: raw lock first, so the address identifies this lock alone (see `Mutex`).
#[repr(C)]
pub struct RwLock<T: ?Sized, R = Unranked, L = DefaultRawRwLock> {
    raw: L,
    broken: BrokenFlag,
    rank: PhantomData<fn() -> R>,
    data: UnsafeCell<T>,
}

// SAFETY: readers on several threads share `&T` (`T: Sync`); a writer gets `&mut T`, which moves
// `T` between threads (`T: Send`).
unsafe impl<T: ?Sized + Send + Sync, R, L: Sync> Sync for RwLock<T, R, L> {}

impl<T> RwLock<T> {
    /// An unlocked, [`Unranked`] lock on `parking_lot`'s raw readers-writer lock.
    pub const fn new(value: T) -> Self {
        Self::from_raw(DefaultRawRwLock::INIT, value)
    }
}

impl<T, R: Rank> RwLock<T, R> {
    /// An unlocked lock of rank `R` (from the type annotation).
    pub const fn ranked(value: T) -> Self {
        Self::from_raw(DefaultRawRwLock::INIT, value)
    }
}

impl<T, R: Rank, L: RawRwLock> RwLock<T, R, L> {
    /// An unlocked lock on the given raw lock.
    pub const fn from_raw(raw: L, value: T) -> Self {
        RwLock {
            raw,
            broken: BrokenFlag::new(),
            rank: PhantomData,
            data: UnsafeCell::new(value),
        }
    }

    /// Consumes the lock and returns its data.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized, R, L> RwLock<T, R, L> {
    /// The data, through `&mut`: no lock and no key needed.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

impl<T: ?Sized, R: Rank, L: RawRwLock> RwLock<T, R, L> {
    /// Blocks until the lock is held shared.
    ///
    /// Panics if the lock is [broken](super::poison).
    pub fn read<K: Keyable>(&self, key: K) -> RwLockReadGuard<'_, T, K, R, L> {
        self.acquire_shared();
        // SAFETY: we hold the lock shared; the guard releases it.
        let inner = unsafe { RwLockReadRef::new(self) };
        RwLockReadGuard { inner, key, _in_use: KeyInUse::new() }
    }

    /// Takes the lock shared if no writer holds it; otherwise `Err(key)`. Never blocks.
    pub fn try_read<K: Keyable>(&self, key: K) -> Result<RwLockReadGuard<'_, T, K, R, L>, K> {
        if !self.try_acquire_shared() {
            return Err(key);
        }
        // SAFETY: the try succeeded; the guard releases the shared hold.
        let inner = unsafe { RwLockReadRef::new(self) };
        Ok(RwLockReadGuard { inner, key, _in_use: KeyInUse::new() })
    }

    /// Blocks until the lock is held exclusively.
    ///
    /// Panics if the lock is [broken](super::poison).
    pub fn write<K: Keyable>(&self, key: K) -> RwLockWriteGuard<'_, T, K, R, L> {
        self.acquire();
        // SAFETY: we hold the lock exclusively; the guard releases it.
        let inner = unsafe { RwLockWriteRef::new(self) };
        RwLockWriteGuard { inner, key, _in_use: KeyInUse::new() }
    }

    /// Takes the lock exclusively if it is free; otherwise `Err(key)`. Never blocks.
    pub fn try_write<K: Keyable>(&self, key: K) -> Result<RwLockWriteGuard<'_, T, K, R, L>, K> {
        if !self.try_acquire() {
            return Err(key);
        }
        // SAFETY: the try succeeded; the guard releases the lock.
        let inner = unsafe { RwLockWriteRef::new(self) };
        Ok(RwLockWriteGuard { inner, key, _in_use: KeyInUse::new() })
    }

    /// Releases a shared hold and returns the key its guard held.
    pub fn unlock_read<K: Keyable>(guard: RwLockReadGuard<'_, T, K, R, L>) -> K {
        let RwLockReadGuard { inner, key, .. } = guard;
        drop(inner);
        key
    }

    /// Releases an exclusive hold and returns the key its guard held.
    pub fn unlock_write<K: Keyable>(guard: RwLockWriteGuard<'_, T, K, R, L>) -> K {
        let RwLockWriteGuard { inner, key, .. } = guard;
        drop(inner);
        key
    }

    /// Locks shared, runs `f` on the data, unlocks.
    pub fn scoped_read<K: Keyable, Ret>(&self, key: K, f: impl FnOnce(&T) -> Ret) -> Ret {
        let guard = self.read(key);
        f(&guard)
    }

    /// Like [`scoped_read`](Self::scoped_read) if no writer holds the lock; otherwise `Err(key)`.
    pub fn scoped_try_read<K: Keyable, Ret>(
        &self,
        key: K,
        f: impl FnOnce(&T) -> Ret,
    ) -> Result<Ret, K> {
        let guard = self.try_read(key)?;
        Ok(f(&guard))
    }

    /// Locks exclusively, runs `f` on the data, unlocks.
    pub fn scoped_write<K: Keyable, Ret>(&self, key: K, f: impl FnOnce(&mut T) -> Ret) -> Ret {
        let mut guard = self.write(key);
        f(&mut guard)
    }

    /// Like [`scoped_write`](Self::scoped_write) if the lock is free; otherwise `Err(key)`.
    pub fn scoped_try_write<K: Keyable, Ret>(
        &self,
        key: K,
        f: impl FnOnce(&mut T) -> Ret,
    ) -> Result<Ret, K> {
        let mut guard = self.try_write(key)?;
        Ok(f(&mut guard))
    }

    /// Whether anyone holds the lock right now (a hint).
    pub fn is_locked(&self) -> bool {
        self.raw.is_locked()
    }

    /// Whether the raw lock panicked earlier (see [`poison`](super::poison)).
    pub fn is_broken(&self) -> bool {
        self.broken.is_broken()
    }

    fn acquire(&self) {
        key::check_not_peeking();
        self.broken.check();
        self.broken.guard(|| self.raw.lock_exclusive());
    }

    fn try_acquire(&self) -> bool {
        self.broken.check();
        self.broken.guard(|| self.raw.try_lock_exclusive())
    }

    fn acquire_shared(&self) {
        key::check_not_peeking();
        self.broken.check();
        self.broken.guard(|| self.raw.lock_shared());
    }

    fn try_acquire_shared(&self) -> bool {
        self.broken.check();
        self.broken.guard(|| self.raw.try_lock_shared())
    }

    /// # Safety
    ///
    /// The caller holds the lock exclusively and nobody else will release it.
    unsafe fn release(&self) {
        // SAFETY: forwarded from the caller.
        self.broken.guard(|| unsafe { self.raw.unlock_exclusive() });
    }

    /// # Safety
    ///
    /// The caller holds one shared hold and nobody else will release it.
    unsafe fn release_shared(&self) {
        // SAFETY: forwarded from the caller.
        self.broken.guard(|| unsafe { self.raw.unlock_shared() });
    }
}

impl<T: Default> Default for RwLock<T> {
    fn default() -> Self {
        RwLock::new(T::default())
    }
}

impl<T> From<T> for RwLock<T> {
    fn from(value: T) -> Self {
        RwLock::new(value)
    }
}

impl<T: ?Sized + fmt::Debug, R: Rank, L: RawRwLock> fmt::Debug for RwLock<T, R, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RwLock");
        // A try never blocks, so the peek itself cannot deadlock; but the data's own `Debug` runs under the
        // lock, so the peek holds this thread's key meanwhile (if it is free), and no blocking acquisition may start
        // (`Peek`: the key may be out where that code can reach it): it cannot block on a lock, which could
        // wait for a thread that waits for this one.
        let _peek = key::Peek::start();
        if self.is_broken() {
            d.field("data", &format_args!("<broken>"));
        } else if self.try_acquire_shared() {
            // SAFETY: the try succeeded; the guard releases the shared hold after printing.
            let guard = unsafe { RwLockReadRef::new(self) };
            d.field("data", &&*guard);
        } else {
            d.field("data", &format_args!("<locked>"));
        }
        d.finish_non_exhaustive()
    }
}

// SAFETY: exclusive and shared holds go to the raw readers-writer lock, which gives them their
// meaning; the address is unique (`repr(C)`).
unsafe impl<T: ?Sized, R: Rank, L: RawRwLock> RawLock for RwLock<T, R, L> {
    fn lock_id(&self) -> usize {
        (self as *const Self).cast::<()>() as usize
    }

    fn rank(&self) -> u32 {
        R::RANK
    }

    unsafe fn raw_lock(&self) {
        self.acquire();
    }

    unsafe fn raw_try_lock(&self) -> bool {
        self.try_acquire()
    }

    unsafe fn raw_unlock(&self) {
        // SAFETY: forwarded from the caller: it holds the lock exclusively.
        unsafe { self.release() }
    }

    unsafe fn raw_lock_shared(&self) {
        self.acquire_shared();
    }

    unsafe fn raw_try_lock_shared(&self) -> bool {
        self.try_acquire_shared()
    }

    unsafe fn raw_unlock_shared(&self) {
        // SAFETY: forwarded from the caller: it holds the lock shared.
        unsafe { self.release_shared() }
    }
}

// SAFETY: reports itself, the only lock guarding `data`.
unsafe impl<T, R: Rank, L: RawRwLock> Lockable for RwLock<T, R, L> {
    type Guard<'g>
        = RwLockWriteRef<'g, T, R, L>
    where
        Self: 'g;

    fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
        out.push(self);
    }

    unsafe fn guard(&self) -> Self::Guard<'_> {
        // SAFETY: forwarded from the caller: it holds this lock exclusively.
        unsafe { RwLockWriteRef::new(self) }
    }
}

// SAFETY: read guards hand out `&T` only.
unsafe impl<T, R: Rank, L: RawRwLock> Sharable for RwLock<T, R, L> {
    type ReadGuard<'g>
        = RwLockReadRef<'g, T, R, L>
    where
        Self: 'g;

    unsafe fn read_guard(&self) -> Self::ReadGuard<'_> {
        // SAFETY: forwarded from the caller: it holds this lock shared.
        unsafe { RwLockReadRef::new(self) }
    }
}

// SAFETY: one lock, reported as itself; `R::RANK` is what `rank` returns.
unsafe impl<T, R: Rank, L: RawRwLock> Lock for RwLock<T, R, L> {
    type Rank = R;
}

// SAFETY: the lock owns its one raw lock.
unsafe impl<T, R: Rank, L: RawRwLock> OwnedLockable for RwLock<T, R, L> {}

impl<T, R: Rank, L: RawRwLock> LockableIntoInner for RwLock<T, R, L> {
    type Inner = T;

    fn into_inner(self) -> T {
        self.into_inner()
    }
}

impl<T, R: Rank, L: RawRwLock> LockableGetMut for RwLock<T, R, L> {
    type Inner<'a>
        = &'a mut T
    where
        Self: 'a;

    fn get_mut(&mut self) -> &mut T {
        self.get_mut()
    }
}

/// Shared access to an [`RwLock`]'s data; releases its hold when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockReadRef<'a, T: ?Sized, R: Rank = Unranked, L: RawRwLock = DefaultRawRwLock> {
    lock: &'a RwLock<T, R, L>,
    // `*const ()`: never `Send`, whatever the raw lock allows (see `MutexRef`).
    _marker: PhantomData<(&'a T, *const ())>,
}

// SAFETY: a shared `&RwLockReadRef` only reads `T`.
unsafe impl<T: ?Sized + Sync, R: Rank, L: RawRwLock + Sync> Sync for RwLockReadRef<'_, T, R, L> {}

impl<'a, T: ?Sized, R: Rank, L: RawRwLock> RwLockReadRef<'a, T, R, L> {
    /// # Safety
    ///
    /// The caller holds `lock` shared and hands the release of that hold to the guard.
    pub(crate) unsafe fn new(lock: &'a RwLock<T, R, L>) -> Self {
        RwLockReadRef {
            lock,
            _marker: PhantomData,
        }
    }

    /// The lock this guard reads, for as long as this borrow of the guard (see [`MutexRef::mutex`](crate::lock::MutexRef::mutex)).
    pub fn rwlock(this: &Self) -> &RwLock<T, R, L> {
        this.lock
    }
}

impl<T: ?Sized, R: Rank, L: RawRwLock> Drop for RwLockReadRef<'_, T, R, L> {
    fn drop(&mut self) {
        // SAFETY: the guard owns one shared hold, released only here.
        unsafe { self.lock.release_shared() }
    }
}

impl<T: ?Sized, R: Rank, L: RawRwLock> Deref for RwLockReadRef<'_, T, R, L> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: we hold the lock shared, so no writer touches the data.
        unsafe { &*self.lock.data.get() }
    }
}

/// Exclusive access to an [`RwLock`]'s data; releases the lock when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockWriteRef<'a, T: ?Sized, R: Rank = Unranked, L: RawRwLock = DefaultRawRwLock> {
    lock: &'a RwLock<T, R, L>,
    // `*const ()`: never `Send`, whatever the raw lock allows (see `MutexRef`).
    _marker: PhantomData<(&'a mut T, *const ())>,
}

// SAFETY: a shared `&RwLockWriteRef` only reads `T`.
unsafe impl<T: ?Sized + Sync, R: Rank, L: RawRwLock + Sync> Sync for RwLockWriteRef<'_, T, R, L> {}

impl<'a, T: ?Sized, R: Rank, L: RawRwLock> RwLockWriteRef<'a, T, R, L> {
    /// # Safety
    ///
    /// The caller holds `lock` exclusively and hands its release to the guard.
    pub(crate) unsafe fn new(lock: &'a RwLock<T, R, L>) -> Self {
        RwLockWriteRef {
            lock,
            _marker: PhantomData,
        }
    }

    /// The lock this guard writes, for as long as this borrow of the guard (see [`MutexRef::mutex`](crate::lock::MutexRef::mutex)).
    pub fn rwlock(this: &Self) -> &RwLock<T, R, L> {
        this.lock
    }
}

impl<T: ?Sized, R: Rank, L: RawRwLock> Drop for RwLockWriteRef<'_, T, R, L> {
    fn drop(&mut self) {
        // SAFETY: the guard owns the exclusive hold, released only here.
        unsafe { self.lock.release() }
    }
}

impl<T: ?Sized, R: Rank, L: RawRwLock> Deref for RwLockWriteRef<'_, T, R, L> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: we hold the lock exclusively.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized, R: Rank, L: RawRwLock> DerefMut for RwLockWriteRef<'_, T, R, L> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we hold the lock exclusively, and `&mut self` makes this the only reference.
        unsafe { &mut *self.lock.data.get() }
    }
}

/// An [`RwLockReadRef`] that also holds its key; [`RwLock::unlock_read`] returns the key.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockReadGuard<'a, T: ?Sized, K, R: Rank = Unranked, L: RawRwLock = DefaultRawRwLock> {
    // First, so the hold is released before the key.
    inner: RwLockReadRef<'a, T, R, L>,
    key: K,
    _in_use: KeyInUse<K>,
}

impl<T: ?Sized, K, R: Rank, L: RawRwLock> Deref for RwLockReadGuard<'_, T, K, R, L> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner
    }
}

/// An [`RwLockWriteRef`] that also holds its key; [`RwLock::unlock_write`] returns the key.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockWriteGuard<'a, T: ?Sized, K, R: Rank = Unranked, L: RawRwLock = DefaultRawRwLock> {
    // First, so the lock is released before the key.
    inner: RwLockWriteRef<'a, T, R, L>,
    key: K,
    _in_use: KeyInUse<K>,
}

impl<T: ?Sized, K, R: Rank, L: RawRwLock> Deref for RwLockWriteGuard<'_, T, K, R, L> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized, K, R: Rank, L: RawRwLock> DerefMut for RwLockWriteGuard<'_, T, K, R, L> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

macro_rules! forward_fmt {
    ($($guard:ident [$($k:ident)?]),*) => {$(
        impl<T: ?Sized + fmt::Debug, $($k,)? R: Rank, L: RawRwLock> fmt::Debug
            for $guard<'_, T, $($k,)? R, L>
        {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&**self, f)
            }
        }

        impl<T: ?Sized + fmt::Display, $($k,)? R: Rank, L: RawRwLock> fmt::Display
            for $guard<'_, T, $($k,)? R, L>
        {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&**self, f)
            }
        }
    )*};
}

forward_fmt!(RwLockReadRef [], RwLockWriteRef [], RwLockReadGuard [K], RwLockWriteGuard [K]);
