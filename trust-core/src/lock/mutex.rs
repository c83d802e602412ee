//! [`Mutex`]: a mutual-exclusion lock that needs the thread's key, carries a rank in its type, and
//! runs on any `lock_api::RawMutex` (`parking_lot`'s by default).
//!
//! Two guard types: [`MutexRef`] is the bare guard (`lock_all!` and collections hand these out;
//! the key is borrowed by the call that made them), [`MutexGuard`] is a `MutexRef` plus the key
//! (`Mutex::lock` hands these out; [`Mutex::unlock`] gives the key back).

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use lock_api::RawMutex;

use super::key::{self, KeyInUse, Keyable};
use super::lockable::{Lock, Lockable, LockableGetMut, LockableIntoInner, OwnedLockable, RawLock};
use super::poison::BrokenFlag;
use super::rank::{Rank, Unranked};

/// The raw mutex used unless a third type argument says otherwise.
pub type DefaultRawMutex = parking_lot::RawMutex;

/// A mutex whose every blocking acquisition needs the thread's [`ThreadKey`](super::ThreadKey).
///
/// `R` is its [rank](super::rank) (default [`Unranked`]), `L` the raw lock (default
/// `parking_lot::RawMutex`).
///
/// ```
/// use trust_core::lock::{Mutex, ThreadKey};
///
/// let mut key = ThreadKey::get().unwrap();
/// let m = Mutex::new(vec![1, 2]);
/// m.lock(&mut key).push(3);
/// assert_eq!(m.scoped_lock(&mut key, |v| v.len()), 3);
/// assert_eq!(m.into_inner(), [1, 2, 3]);
/// ```
// `repr(C)` puts the raw lock at offset 0 and the data after it, so no lock nested in the data can
// share this mutex's address: `lock_id` (the address) is unique among live locks.
#[repr(C)]
pub struct Mutex<T: ?Sized, R = Unranked, L = DefaultRawMutex> {
    raw: L,
    broken: BrokenFlag,
    rank: PhantomData<fn() -> R>,
    data: UnsafeCell<T>,
}

// SAFETY: the raw lock hands `&mut T` to one thread at a time, so sharing the mutex only ever moves
// `T` between threads (`T: Send`); the raw lock itself is shared (`L: Sync`).
unsafe impl<T: ?Sized + Send, R, L: Sync> Sync for Mutex<T, R, L> {}

impl<T> Mutex<T> {
    /// An unlocked, [`Unranked`] mutex on `parking_lot`'s raw mutex.
    pub const fn new(value: T) -> Self {
        Self::from_raw(DefaultRawMutex::INIT, value)
    }
}

impl<T, R: Rank> Mutex<T, R> {
    /// An unlocked mutex of rank `R` (from the type annotation: `let m: Mutex<u8, Account> =
    /// Mutex::ranked(0);`).
    pub const fn ranked(value: T) -> Self {
        Self::from_raw(DefaultRawMutex::INIT, value)
    }
}

impl<T, R: Rank, L: RawMutex> Mutex<T, R, L> {
    /// An unlocked mutex on the given raw lock.
    pub const fn from_raw(raw: L, value: T) -> Self {
        Mutex {
            raw,
            broken: BrokenFlag::new(),
            rank: PhantomData,
            data: UnsafeCell::new(value),
        }
    }

    /// Consumes the mutex and returns its data; owning it proves nobody holds it.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized, R, L> Mutex<T, R, L> {
    /// The data, through `&mut`: no lock and no key needed, since nobody else can hold it.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

impl<T: ?Sized, R: Rank, L: RawMutex> Mutex<T, R, L> {
    /// Blocks until the lock is held; the guard keeps (`ThreadKey`) or borrows (`&mut ThreadKey`)
    /// the key until it is dropped or passed to [`Mutex::unlock`].
    ///
    /// Panics if the mutex is [broken](super::poison).
    pub fn lock<K: Keyable>(&self, key: K) -> MutexGuard<'_, T, K, R, L> {
        self.acquire();
        // SAFETY: we just acquired the lock; the guard releases it.
        let inner = unsafe { MutexRef::new(self) };
        MutexGuard { inner, key, _in_use: KeyInUse::new() }
    }

    /// Takes the lock if it is free; otherwise gives the key back in `Err`. Never blocks.
    pub fn try_lock<K: Keyable>(&self, key: K) -> Result<MutexGuard<'_, T, K, R, L>, K> {
        if !self.try_acquire() {
            return Err(key);
        }
        // SAFETY: the try succeeded, so we hold the lock; the guard releases it.
        let inner = unsafe { MutexRef::new(self) };
        Ok(MutexGuard { inner, key, _in_use: KeyInUse::new() })
    }

    /// Releases the lock and returns the key the guard held.
    pub fn unlock<K: Keyable>(guard: MutexGuard<'_, T, K, R, L>) -> K {
        let MutexGuard { inner, key, .. } = guard;
        drop(inner);
        key
    }

    /// Locks, runs `f` on the data, unlocks. The data reference cannot escape `f`.
    pub fn scoped_lock<K: Keyable, Ret>(&self, key: K, f: impl FnOnce(&mut T) -> Ret) -> Ret {
        let mut guard = self.lock(key);
        f(&mut guard)
    }

    /// Like [`scoped_lock`](Self::scoped_lock) if the lock is free; otherwise `Err(key)` and `f`
    /// does not run.
    pub fn scoped_try_lock<K: Keyable, Ret>(
        &self,
        key: K,
        f: impl FnOnce(&mut T) -> Ret,
    ) -> Result<Ret, K> {
        let mut guard = self.try_lock(key)?;
        Ok(f(&mut guard))
    }

    /// Whether some thread holds the lock right now (a hint: it may change at once).
    pub fn is_locked(&self) -> bool {
        self.raw.is_locked()
    }

    /// Whether the raw lock panicked earlier, so every acquisition now panics (see
    /// [`poison`](super::poison)).
    pub fn is_broken(&self) -> bool {
        self.broken.is_broken()
    }

    fn acquire(&self) {
        key::check_not_peeking();
        self.broken.check();
        self.broken.guard(|| self.raw.lock());
    }

    fn try_acquire(&self) -> bool {
        self.broken.check();
        self.broken.guard(|| self.raw.try_lock())
    }

    /// # Safety
    ///
    /// The caller holds the lock and nobody else will release it.
    unsafe fn release(&self) {
        // SAFETY: forwarded from the caller.
        self.broken.guard(|| unsafe { self.raw.unlock() });
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

impl<T> From<T> for Mutex<T> {
    fn from(value: T) -> Self {
        Mutex::new(value)
    }
}

impl<T: ?Sized + fmt::Debug, R: Rank, L: RawMutex> fmt::Debug for Mutex<T, R, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        // A try never blocks, so the peek itself cannot deadlock; but the data's own `Debug` runs under the
        // lock, so the peek holds this thread's key meanwhile (if it is free), and no blocking acquisition may start
        // (`Peek`: the key may be out where that code can reach it): it cannot block on a lock, which could
        // wait for a thread that waits for this one.
        let _peek = key::Peek::start();
        if self.is_broken() {
            d.field("data", &format_args!("<broken>"));
        } else if self.try_acquire() {
            // SAFETY: the try succeeded; the guard releases the lock after printing.
            let guard = unsafe { MutexRef::new(self) };
            d.field("data", &&*guard);
        } else {
            d.field("data", &format_args!("<locked>"));
        }
        d.finish_non_exhaustive()
    }
}

// SAFETY: `raw_lock`/`raw_try_lock` go to the raw mutex, which gives mutual exclusion (a mutex has
// no shared mode, so the shared variants take it exclusively); the address is unique (`repr(C)`).
unsafe impl<T: ?Sized, R: Rank, L: RawMutex> RawLock for Mutex<T, R, L> {
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
        // SAFETY: forwarded from the caller: it holds the lock.
        unsafe { self.release() }
    }

    unsafe fn raw_lock_shared(&self) {
        self.acquire();
    }

    unsafe fn raw_try_lock_shared(&self) -> bool {
        self.try_acquire()
    }

    unsafe fn raw_unlock_shared(&self) {
        // SAFETY: forwarded from the caller: it holds the lock (exclusively, as a mutex must).
        unsafe { self.release() }
    }
}

// SAFETY: reports itself, the only lock guarding `data`.
unsafe impl<T, R: Rank, L: RawMutex> Lockable for Mutex<T, R, L> {
    type Guard<'g>
        = MutexRef<'g, T, R, L>
    where
        Self: 'g;

    fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
        out.push(self);
    }

    unsafe fn guard(&self) -> Self::Guard<'_> {
        // SAFETY: forwarded from the caller: it holds this lock and hands us its release.
        unsafe { MutexRef::new(self) }
    }
}

// SAFETY: one lock, reported as itself; `R::RANK` is what `rank` returns.
unsafe impl<T, R: Rank, L: RawMutex> Lock for Mutex<T, R, L> {
    type Rank = R;
}

// SAFETY: a mutex owns its one lock.
unsafe impl<T, R: Rank, L: RawMutex> OwnedLockable for Mutex<T, R, L> {}

impl<T, R: Rank, L: RawMutex> LockableIntoInner for Mutex<T, R, L> {
    type Inner = T;

    fn into_inner(self) -> T {
        self.into_inner()
    }
}

impl<T, R: Rank, L: RawMutex> LockableGetMut for Mutex<T, R, L> {
    type Inner<'a>
        = &'a mut T
    where
        Self: 'a;

    fn get_mut(&mut self) -> &mut T {
        self.get_mut()
    }
}

/// Exclusive access to a [`Mutex`]'s data; releases the lock when dropped.
///
/// Handed out by `lock_all!` and collections, which keep the key borrowed for its lifetime `'a`.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MutexRef<'a, T: ?Sized, R: Rank = Unranked, L: RawMutex = DefaultRawMutex> {
    mutex: &'a Mutex<T, R, L>,
    // `&mut T`: invariant in `T`, like a `&mut`. `*const ()`: never `Send`, whatever the raw lock allows
    // (`lock_api`'s `GuardSend`): on another thread the guard would hold the lock while that thread's key is
    // free, and the key, not the raw lock, is what keeps a holder from waiting for more locks.
    _marker: PhantomData<(&'a mut T, *const ())>,
}

// SAFETY: a shared `&MutexRef` only reads `T` (`T: Sync`) and never touches the raw lock.
unsafe impl<T: ?Sized + Sync, R: Rank, L: RawMutex + Sync> Sync for MutexRef<'_, T, R, L> {}

impl<'a, T: ?Sized, R: Rank, L: RawMutex> MutexRef<'a, T, R, L> {
    /// # Safety
    ///
    /// The caller holds `mutex` and hands its release to the new guard.
    pub(crate) unsafe fn new(mutex: &'a Mutex<T, R, L>) -> Self {
        MutexRef {
            mutex,
            _marker: PhantomData,
        }
    }

    /// The mutex this guard holds, for as long as this borrow of the guard (so while the lock is held): a
    /// reference that outlived the guard would let an owned collection's parts be locked outside it, in
    /// another order.
    pub fn mutex(this: &Self) -> &Mutex<T, R, L> {
        this.mutex
    }
}

impl<T: ?Sized, R: Rank, L: RawMutex> Drop for MutexRef<'_, T, R, L> {
    fn drop(&mut self) {
        // SAFETY: a `MutexRef` exists only while its lock is held, and only it releases it.
        unsafe { self.mutex.release() }
    }
}

impl<T: ?Sized, R: Rank, L: RawMutex> Deref for MutexRef<'_, T, R, L> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: we hold the lock, so no one else touches the data.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T: ?Sized, R: Rank, L: RawMutex> DerefMut for MutexRef<'_, T, R, L> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we hold the lock exclusively, and `&mut self` makes this the only reference.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T: ?Sized + fmt::Debug, R: Rank, L: RawMutex> fmt::Debug for MutexRef<'_, T, R, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display, R: Rank, L: RawMutex> fmt::Display for MutexRef<'_, T, R, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

/// A [`MutexRef`] that also holds the key it was locked with; [`Mutex::unlock`] returns the key.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized, K, R: Rank = Unranked, L: RawMutex = DefaultRawMutex> {
    // Declared first so it drops first: the lock is released before the key is.
    inner: MutexRef<'a, T, R, L>,
    key: K,
    _in_use: KeyInUse<K>,
}

impl<T: ?Sized, K, R: Rank, L: RawMutex> Deref for MutexGuard<'_, T, K, R, L> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized, K, R: Rank, L: RawMutex> DerefMut for MutexGuard<'_, T, K, R, L> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: ?Sized + fmt::Debug, K, R: Rank, L: RawMutex> fmt::Debug for MutexGuard<'_, T, K, R, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display, K, R: Rank, L: RawMutex> fmt::Display
    for MutexGuard<'_, T, K, R, L>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}
