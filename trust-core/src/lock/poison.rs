//! Poisoning policy, the "broken" flag for a raw lock that panicked, and opt-in poisoning
//! ([`Poisonable`]).
//!
//! **No data poisoning.** A panic while guards are held unwinds through the guards, whose `Drop`
//! releases every lock; a key held by value is dropped and so returns to its thread, and a key lent
//! as `&mut` is simply no longer borrowed. The next locker sees the data as the panicking thread
//! left it, exactly as with `parking_lot`. Reasons: `lock_all!` returns plain guards, and a
//! `Result` per guard would turn every multi-lock call into N unwraps for a condition most
//! programs never recover from; and a thread that wants to detect a half-finished update can keep
//! a "dirty" flag in the data itself, set before and cleared after the update.
//!
//! **Broken raw locks.** A raw lock is outside our control (any `lock_api::RawMutex` or
//! `RawRwLock` can be plugged in). If one panics inside its own `lock`, `try_lock` or `unlock`, its
//! state is unknown: it may be held by nobody forever. Waiting on it could hang, so the lock is
//! marked *broken* and every later acquisition panics with a message instead. Collections and
//! `lock_all!` release the locks they already took before the panic continues, and the key
//! survives. Reading the data through `&mut` (`get_mut`, `into_inner`) still works.

use std::sync::atomic::{AtomicBool, Ordering};

use super::collection::utils::{self, Mode};
use super::key::Keyable;
use super::lockable::{
    Lockable, LockableGetMut, LockableIntoInner, OwnedLockable, RawLock, Sharable,
};

/// Set once the raw lock beside it panicked; checked before every acquisition.
#[derive(Debug)]
pub(crate) struct BrokenFlag(AtomicBool);

impl BrokenFlag {
    #[inline]
    pub(crate) const fn new() -> Self {
        BrokenFlag(AtomicBool::new(false))
    }

    /// Whether a raw-lock operation panicked. `Relaxed`: the flag guards no data; a thread that
    /// misses a fresh `true` just meets the raw lock in whatever state the panic left it.
    #[inline]
    pub(crate) fn is_broken(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Panics if the raw lock is broken; call before acquiring.
    #[inline]
    pub(crate) fn check(&self) {
        if self.is_broken() {
            broken_lock();
        }
    }

    /// Runs one raw-lock operation; if it unwinds, the lock is marked broken on the way out.
    #[inline]
    pub(crate) fn guard<R>(&self, op: impl FnOnce() -> R) -> R {
        let bomb = BreakOnUnwind(&self.0);
        let result = op();
        std::mem::forget(bomb);
        result
    }
}

/// Marks the flag broken when dropped, i.e. only when the operation it watches unwinds.
struct BreakOnUnwind<'a>(&'a AtomicBool);

impl Drop for BreakOnUnwind<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn broken_lock() -> ! {
    panic!(
        "this lock is broken: its raw lock panicked inside an earlier lock or unlock, so whether it \
         is held is unknown and waiting on it could hang forever; take the data out with \
         `get_mut`/`into_inner` and build a new lock"
    )
}

// ---------------------------------------------------------------------------------------------
// Opt-in data poisoning: `Poisonable<L>`.

/// Opt-in poisoning over any lock or group of locks (`happylock`'s `Poisonable`): a panic that
/// unwinds through an exclusive guard of it (drops it; as with `std::sync::Mutex`, a panic caught
/// while the guard lives does not) marks it *poisoned*, and every later acquisition returns
/// `Err(PoisonError)`, which still carries the guard ([`PoisonError::into_inner`]) for a caller
/// that can repair the data. [`clear_poison`](Self::clear_poison) resets the flag.
///
/// Plain locks stay unpoisoned (see the module docs); wrap only the data whose half-finished
/// updates a reader must detect. `L` is a [`Mutex`](super::Mutex), an [`RwLock`](super::RwLock),
/// or a tuple, array or `Vec` of them; a `Poisonable` is itself [`Lockable`] (its guard is a
/// [`PoisonResult`]), so it also goes into a collection (not into `lock_all!`, which takes single
/// locks). Read guards never
/// poison (as with `std::sync::RwLock`).
///
/// ```
/// use trust_core::lock::poison::Poisonable;
/// use trust_core::lock::{Mutex, ThreadKey};
///
/// let mut key = ThreadKey::get().unwrap();
/// let balance = Poisonable::new(Mutex::new(10));
/// let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
///     let mut g = balance.lock(&mut key).unwrap();
///     **g -= 3;
///     panic!("half-done update");
/// }));
/// assert!(balance.is_poisoned());
/// let mut g = balance.lock(&mut key).unwrap_err().into_inner(); // the data, as left
/// assert_eq!(**g, 7);
/// **g = 10;
/// drop(g);
/// balance.clear_poison();
/// assert_eq!(**balance.lock(&mut key).unwrap(), 10);
/// ```
pub struct Poisonable<L> {
    inner: L,
    poisoned: AtomicBool,
}

/// What locking a [`Poisonable`] returns: the guard, or the same guard inside a [`PoisonError`].
pub type PoisonResult<G> = Result<G, PoisonError<G>>;

/// A [`Poisonable`] was poisoned: a thread panicked while holding it exclusively. The guard is
/// still here and still holds the locks.
pub struct PoisonError<G> {
    guard: G,
}

impl<G> PoisonError<G> {
    /// Wraps a guard (or data) of a poisoned lock.
    pub fn new(guard: G) -> Self {
        PoisonError { guard }
    }

    /// The guard (or data), to read or repair what the panicking thread left.
    pub fn into_inner(self) -> G {
        self.guard
    }

    /// The guard, borrowed.
    pub fn get_ref(&self) -> &G {
        &self.guard
    }

    /// The guard, borrowed mutably.
    pub fn get_mut(&mut self) -> &mut G {
        &mut self.guard
    }
}

impl<G> std::fmt::Debug for PoisonError<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoisonError").finish_non_exhaustive()
    }
}

impl<G> std::fmt::Display for PoisonError<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("poisoned lock: another thread panicked while holding it")
    }
}

impl<G> std::error::Error for PoisonError<G> {}

/// The guard of a [`Poisonable`]: dereferences to the inner guard `G` (a `MutexRef`, a tuple of
/// guards, ...) and keeps the key `K` it was taken with (`()` inside a collection); if dropped by
/// a panic that began while it was alive, it poisons the lock (write guards only).
#[must_use = "the locks are released as soon as the guard is dropped"]
pub struct PoisonGuard<'p, G, K = ()> {
    // First, so the locks are released before the key.
    guard: G,
    // `Some` until `unlock` takes it.
    key: Option<K>,
    // `None` for read guards, which never poison.
    flag: Option<&'p AtomicBool>,
    // Whether this thread was already panicking when the guard was made: dropping it during that
    // same unwinding is not a new panic under the lock.
    panicking: bool,
}

impl<G, K> PoisonGuard<'_, G, K> {
    /// Releases every lock and returns the key.
    pub fn unlock(mut this: Self) -> K {
        let key = this.key.take();
        drop(this);
        key.expect("the key is only taken here")
    }
}

impl<G, K> std::ops::Deref for PoisonGuard<'_, G, K> {
    type Target = G;

    fn deref(&self) -> &G {
        &self.guard
    }
}

impl<G, K> std::ops::DerefMut for PoisonGuard<'_, G, K> {
    fn deref_mut(&mut self) -> &mut G {
        &mut self.guard
    }
}

impl<G: std::fmt::Debug, K> std::fmt::Debug for PoisonGuard<'_, G, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.guard, f)
    }
}

impl<G, K> Drop for PoisonGuard<'_, G, K> {
    fn drop(&mut self) {
        if let Some(flag) = self.flag
            && !self.panicking
            && std::thread::panicking()
        {
            // `Relaxed`: the data is published by the lock's release, which follows (the inner
            // guard drops after this body), and the next locker's acquire.
            flag.store(true, Ordering::Relaxed);
        }
    }
}

impl<L> Poisonable<L> {
    /// Wraps `inner`, not poisoned.
    pub const fn new(inner: L) -> Self {
        Poisonable {
            inner,
            poisoned: AtomicBool::new(false),
        }
    }

    /// Whether a thread panicked while holding this exclusively (since the last
    /// [`clear_poison`](Self::clear_poison)).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Relaxed)
    }

    /// Marks the data repaired: later acquisitions return `Ok` again.
    pub fn clear_poison(&self) {
        self.poisoned.store(false, Ordering::Relaxed);
    }

    /// The wrapped locks. Locking them directly bypasses poisoning (neither checked nor set).
    pub fn child(&self) -> &L {
        &self.inner
    }

    /// The wrapped locks through `&mut` (nobody holds them), `Err` if poisoned.
    pub fn child_mut(&mut self) -> PoisonResult<&mut L> {
        let poisoned = self.is_poisoned();
        wrap(&mut self.inner, poisoned)
    }

    /// The wrapped locks, `Err` if poisoned.
    pub fn into_child(self) -> PoisonResult<L> {
        let poisoned = self.is_poisoned();
        wrap(self.inner, poisoned)
    }

    /// The data of every lock, `Err` (with the data) if poisoned.
    pub fn into_inner(self) -> PoisonResult<L::Inner>
    where
        L: LockableIntoInner,
    {
        let poisoned = self.is_poisoned();
        wrap(self.inner.into_inner(), poisoned)
    }

    /// The data of every lock through `&mut` (no locking), `Err` (with it) if poisoned.
    pub fn get_mut(&mut self) -> PoisonResult<<L as LockableGetMut>::Inner<'_>>
    where
        L: LockableGetMut,
    {
        let poisoned = self.is_poisoned();
        wrap(self.inner.get_mut(), poisoned)
    }

    fn guard_of<G, K>(&self, guard: G, key: K, exclusive: bool) -> PoisonResult<PoisonGuard<'_, G, K>> {
        let guard = PoisonGuard {
            guard,
            key: Some(key),
            flag: exclusive.then_some(&self.poisoned),
            panicking: std::thread::panicking(),
        };
        let poisoned = self.is_poisoned();
        wrap(guard, poisoned)
    }
}

fn wrap<T>(value: T, poisoned: bool) -> PoisonResult<T> {
    if poisoned {
        Err(PoisonError::new(value))
    } else {
        Ok(value)
    }
}

/// The exclusive guard of a `Poisonable<L>` with its key.
pub type PoisonLockGuard<'p, L, K> = PoisonGuard<'p, <L as Lockable>::Guard<'p>, K>;
/// The shared guard of a `Poisonable<L>` with its key.
pub type PoisonReadGuard<'p, L, K> = PoisonGuard<'p, <L as Sharable>::ReadGuard<'p>, K>;

impl<L: OwnedLockable> Poisonable<L> {
    /// Blocks until every lock is held (in the global `(rank, address)` order); `Err` with the
    /// guard if poisoned. Panics if a lock is broken, as the plain lock does.
    pub fn lock<K: Keyable>(&self, key: K) -> PoisonResult<PoisonLockGuard<'_, L, K>> {
        utils::lock_in_order(&utils::sorted_locks(&self.inner), Mode::Exclusive);
        // SAFETY: every lock `inner` reports was just taken exclusively; the guard releases them.
        let guard = unsafe { self.inner.guard() };
        self.guard_of(guard, key, true)
    }

    /// Like [`lock`](Self::lock) if no lock is held elsewhere; otherwise `Err(key)`.
    pub fn try_lock<K: Keyable>(&self, key: K) -> Result<PoisonResult<PoisonLockGuard<'_, L, K>>, K> {
        if !utils::try_lock_in_order(&utils::sorted_locks(&self.inner), Mode::Exclusive) {
            return Err(key);
        }
        // SAFETY: the try took every lock `inner` reports, exclusively.
        let guard = unsafe { self.inner.guard() };
        Ok(self.guard_of(guard, key, true))
    }
}

impl<L: OwnedLockable + Sharable> Poisonable<L> {
    /// Blocks until every lock is held shared; `Err` with the guard if poisoned. A panic under a
    /// read guard does not poison.
    pub fn read<K: Keyable>(&self, key: K) -> PoisonResult<PoisonReadGuard<'_, L, K>> {
        utils::lock_in_order(&utils::sorted_locks(&self.inner), Mode::Shared);
        // SAFETY: every lock `inner` reports was just taken shared; the guard releases them.
        let guard = unsafe { self.inner.read_guard() };
        self.guard_of(guard, key, false)
    }
}

impl<L: Default> Default for Poisonable<L> {
    fn default() -> Self {
        Poisonable::new(L::default())
    }
}

impl<L> From<L> for Poisonable<L> {
    fn from(inner: L) -> Self {
        Poisonable::new(inner)
    }
}

impl<L: std::fmt::Debug> std::fmt::Debug for Poisonable<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poisonable")
            .field("inner", &self.inner)
            .field("poisoned", &self.is_poisoned())
            .finish()
    }
}

// SAFETY: reports exactly the inner locks; the guard wraps the inner guard, which the caller's
// holds make valid.
unsafe impl<L: Lockable> Lockable for Poisonable<L> {
    type Guard<'g>
        = PoisonResult<PoisonGuard<'g, L::Guard<'g>>>
    where
        Self: 'g;

    fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
        self.inner.raw_locks(out);
    }

    unsafe fn guard(&self) -> Self::Guard<'_> {
        // SAFETY: forwarded: the caller holds every inner lock exclusively.
        let guard = unsafe { self.inner.guard() };
        self.guard_of(guard, (), true)
    }
}

// SAFETY: the read guard wraps the inner read guard, which gives shared access only.
unsafe impl<L: Sharable> Sharable for Poisonable<L> {
    type ReadGuard<'g>
        = PoisonResult<PoisonGuard<'g, L::ReadGuard<'g>>>
    where
        Self: 'g;

    unsafe fn read_guard(&self) -> Self::ReadGuard<'_> {
        // SAFETY: forwarded: the caller holds every inner lock shared.
        let guard = unsafe { self.inner.read_guard() };
        self.guard_of(guard, (), false)
    }
}

// SAFETY: the inner locks are owned by `inner`, which says they are distinct.
unsafe impl<L: OwnedLockable> OwnedLockable for Poisonable<L> {}
