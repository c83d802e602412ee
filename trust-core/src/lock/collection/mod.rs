//! Lock collections: several locks taken all together or not at all, behind one guard.
//!
//! One file per strategy, as in `happylock`:
//!
//! | type | order | duplicates | cost per lock |
//! | --- | --- | --- | --- |
//! | [`LockCollection`] (`boxed.rs`) | sorted once by `(rank, address)`, cached | rejected by `try_new`; impossible with `new`/`new_ref` | no allocation |
//! | [`RefLockCollection`] (`ref.rs`) | same, over a borrowed child | same | no allocation |
//! | [`OwnedLockCollection`] (`owned.rs`) | the child's own order, no sorting (it owns its locks, so nobody can take them in another order) | impossible | one small `Vec` |
//! | [`RetryingLockCollection`] (`retry.rs`) | no order: blocks on one lock, tries the rest, releases all and retries on contention | rejected by `try_new` | one small `Vec` |
//!
//! All of them need the [`ThreadKey`](super::ThreadKey), by value or `&mut`, and return a
//! [`LockGuard`] that keeps or borrows it. Unlike `lock_all!`, a collection is a value you can keep
//! and lock many times; its child can be a tuple, an array, a `Vec` or a `Box<[_]>` of locks (or
//! references to locks, for [`LockCollection::new_ref`] and `try_new`).

mod boxed;
mod owned;
mod r#ref;
mod retry;
pub(crate) mod utils;

use std::fmt;
use std::ops::{Deref, DerefMut};

pub use boxed::LockCollection;
pub use owned::OwnedLockCollection;
pub use r#ref::RefLockCollection;
pub use retry::RetryingLockCollection;

use super::key::{KeyInUse, Keyable};
use super::lockable::{Lockable, RawLock, Sharable};
use utils::Mode;

/// The guards of a whole collection (`G`, e.g. a tuple of `MutexRef`s) plus the key they were
/// taken with (`K`: `ThreadKey` or `&mut ThreadKey`).
#[must_use = "the locks are released as soon as the guard is dropped"]
pub struct LockGuard<G, K> {
    // First, so every lock is released before the key.
    guard: G,
    key: K,
    _in_use: KeyInUse<K>,
}

impl<G, K> LockGuard<G, K> {
    /// Releases every lock and returns the key.
    pub fn unlock(this: Self) -> K {
        let LockGuard { guard, key, .. } = this;
        drop(guard);
        key
    }
}

/// Locking without a collection, as `happylock`'s `LockGuard::lock(&data, key)`: the locks of `data` are
/// sorted and checked for duplicates on every call (a [`LockCollection`] or [`RefLockCollection`] does that
/// once, for data locked many times).
///
/// ```
/// use trust_core::lock::{LockGuard, Mutex, RwLock, ThreadKey};
///
/// static DATA_1: Mutex<i32> = Mutex::new(0);
/// static DATA_2: RwLock<String> = RwLock::new(String::new());
///
/// let mut key = ThreadKey::get().unwrap();
/// let data = (&DATA_1, &DATA_2);
/// let mut guard = LockGuard::lock(&data, &mut key);
/// *guard.1 = (100 - *guard.0).to_string();
/// *guard.0 += 1;
/// drop(guard);
/// assert_eq!(LockGuard::try_read(&[&DATA_2], &mut key).map(|g| g[0].clone()).ok(), Some("100".into()));
/// ```
impl<'a, G, K: Keyable> LockGuard<G, K> {
    /// Blocks until every lock of `data` is held; the guard keeps or borrows the key.
    ///
    /// # Panics
    ///
    /// If `data` names one lock twice (e.g. `(&a, &a)`: two guards to one value), before taking any lock; and,
    /// as a collection's `lock`, if a lock is [broken](crate::lock::poison) or its raw lock panics, after
    /// releasing the locks already taken. A key passed by value is dropped by the panic, so it returns to the
    /// thread.
    pub fn lock<L>(data: &'a L, key: K) -> Self
    where
        L: Lockable<Guard<'a> = G> + ?Sized,
    {
        utils::lock_in_order(&distinct_locks(data, "lock", Mode::Exclusive), Mode::Exclusive);
        // SAFETY: every lock `data` reports is held exclusively, once each; the guards release them.
        let guard = unsafe { data.guard() };
        LockGuard { guard, key, _in_use: KeyInUse::new() }
    }

    /// Takes every lock of `data` if none is held elsewhere; otherwise takes none and returns the key.
    ///
    /// # Panics
    ///
    /// As [`LockGuard::lock`]: a lock named twice, a [broken](crate::lock::poison) lock, or a raw lock that
    /// panics (also in the unlock that gives back what a failed try took) is a panic, not `Err`; the locks
    /// this call took are released first (but for one whose raw unlock panicked, which is broken).
    pub fn try_lock<L>(data: &'a L, key: K) -> Result<Self, K>
    where
        L: Lockable<Guard<'a> = G> + ?Sized,
    {
        if !utils::try_lock_in_order(&distinct_locks(data, "try_lock", Mode::Exclusive), Mode::Exclusive) {
            return Err(key);
        }
        // SAFETY: as in `lock`.
        let guard = unsafe { data.guard() };
        Ok(LockGuard { guard, key, _in_use: KeyInUse::new() })
    }

    /// Blocks until every lock of `data` is held shared.
    ///
    /// # Panics
    ///
    /// As [`LockGuard::lock`]: a lock named twice (reading one `RwLock` twice too), a broken lock, a raw
    /// lock that panics.
    pub fn read<L>(data: &'a L, key: K) -> Self
    where
        L: Sharable<ReadGuard<'a> = G> + ?Sized,
    {
        utils::lock_in_order(&distinct_locks(data, "read", Mode::Shared), Mode::Shared);
        // SAFETY: every lock `data` reports is held shared, once each; the read guards release them.
        let guard = unsafe { data.read_guard() };
        LockGuard { guard, key, _in_use: KeyInUse::new() }
    }

    /// Takes every lock of `data` shared if no writer holds any; otherwise takes none and returns the key.
    ///
    /// # Panics
    ///
    /// As [`LockGuard::try_lock`]: a lock named twice, a broken lock or a raw lock that panics is a panic,
    /// not `Err`.
    pub fn try_read<L>(data: &'a L, key: K) -> Result<Self, K>
    where
        L: Sharable<ReadGuard<'a> = G> + ?Sized,
    {
        if !utils::try_lock_in_order(&distinct_locks(data, "try_read", Mode::Shared), Mode::Shared) {
            return Err(key);
        }
        // SAFETY: as in `read`.
        let guard = unsafe { data.read_guard() };
        Ok(LockGuard { guard, key, _in_use: KeyInUse::new() })
    }
}

/// The locks of `data` in the global order, or a panic naming `LockGuard::{method}` if one appears twice (and
/// what it would do in `mode`: two writers of one value; or a second read, which can wait for good behind a
/// writer that waits for the first).
fn distinct_locks<'a, L: Lockable + ?Sized>(data: &'a L, method: &str, mode: Mode) -> Vec<&'a dyn RawLock> {
    let locks = utils::sorted_locks(data);
    if utils::sorted_has_duplicates(&locks) {
        let harm = match mode {
            Mode::Exclusive => "which would give two guards to one value",
            Mode::Shared => "which would read-lock it twice, and the second read can wait for good behind a writer",
        };
        panic!(
            "`LockGuard::{method}`: the same lock appears twice in its data, {harm}; name each lock once \
             (`LockCollection::try_new` checks data built at run time and returns `None` for duplicates)"
        );
    }
    locks
}

impl<G, K> Deref for LockGuard<G, K> {
    type Target = G;

    fn deref(&self) -> &G {
        &self.guard
    }
}

impl<G, K> DerefMut for LockGuard<G, K> {
    fn deref_mut(&mut self) -> &mut G {
        &mut self.guard
    }
}

impl<G: fmt::Debug, K> fmt::Debug for LockGuard<G, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.guard, f)
    }
}

/// How one collection strategy takes its locks; the public methods are shared below.
trait Strategy {
    type Child: Lockable + ?Sized;

    fn child_locks(&self) -> &Self::Child;

    /// Blocks until every lock of the child is held in `mode`.
    fn acquire(&self, mode: Mode);

    /// Takes every lock of the child in `mode`, or none; never blocks.
    fn try_acquire(&self, mode: Mode) -> bool;
}

type Guard<'a, C> = <<C as Strategy>::Child as Lockable>::Guard<'a>;
type ReadGuard<'a, C> = <<C as Strategy>::Child as Sharable>::ReadGuard<'a>;

fn lock<C: Strategy, K: Keyable>(collection: &C, key: K) -> LockGuard<Guard<'_, C>, K> {
    collection.acquire(Mode::Exclusive);
    // SAFETY: `acquire` took every lock the child reports, exclusively; the guards release them.
    let guard = unsafe { collection.child_locks().guard() };
    LockGuard { guard, key, _in_use: KeyInUse::new() }
}

fn try_lock<C: Strategy, K: Keyable>(
    collection: &C,
    key: K,
) -> Result<LockGuard<Guard<'_, C>, K>, K> {
    if !collection.try_acquire(Mode::Exclusive) {
        return Err(key);
    }
    // SAFETY: the try took every lock the child reports, exclusively.
    let guard = unsafe { collection.child_locks().guard() };
    Ok(LockGuard { guard, key, _in_use: KeyInUse::new() })
}

fn read<C: Strategy, K: Keyable>(collection: &C, key: K) -> LockGuard<ReadGuard<'_, C>, K>
where
    C::Child: Sharable,
{
    collection.acquire(Mode::Shared);
    // SAFETY: `acquire` took every lock the child reports, shared; the guards release them.
    let guard = unsafe { collection.child_locks().read_guard() };
    LockGuard { guard, key, _in_use: KeyInUse::new() }
}

fn try_read<C: Strategy, K: Keyable>(
    collection: &C,
    key: K,
) -> Result<LockGuard<ReadGuard<'_, C>, K>, K>
where
    C::Child: Sharable,
{
    if !collection.try_acquire(Mode::Shared) {
        return Err(key);
    }
    // SAFETY: the try took every lock the child reports, shared.
    let guard = unsafe { collection.child_locks().read_guard() };
    Ok(LockGuard { guard, key, _in_use: KeyInUse::new() })
}

/// The methods every collection has, written once: `$ty` implements [`Strategy`].
macro_rules! collection_methods {
    () => {
        /// Blocks until every lock is held; the guard keeps or borrows the key.
        ///
        /// Panics if a lock is [broken](crate::lock::poison); the locks taken before it are
        /// released first.
        pub fn lock<K: $crate::lock::Keyable>(
            &self,
            key: K,
        ) -> $crate::lock::collection::LockGuard<<L as $crate::lock::Lockable>::Guard<'_>, K> {
            super::lock(self, key)
        }

        /// Takes every lock if none is held elsewhere; otherwise takes none and returns the key.
        pub fn try_lock<K: $crate::lock::Keyable>(
            &self,
            key: K,
        ) -> Result<
            $crate::lock::collection::LockGuard<<L as $crate::lock::Lockable>::Guard<'_>, K>,
            K,
        > {
            super::try_lock(self, key)
        }

        /// Releases every lock and returns the key (same as [`LockGuard::unlock`](super::LockGuard::unlock)).
        pub fn unlock<G, K>(guard: $crate::lock::collection::LockGuard<G, K>) -> K {
            $crate::lock::collection::LockGuard::unlock(guard)
        }

        /// Locks everything, runs `f` on the guards, unlocks.
        ///
        /// `f` gets `&mut` to the guards (e.g. a tuple of `MutexRef`s): swapping them with other
        /// guards is harmless, since each guard releases exactly the lock it holds.
        pub fn scoped_lock<'s, K: $crate::lock::Keyable, Ret>(
            &'s self,
            key: K,
            f: impl FnOnce(&mut <L as $crate::lock::Lockable>::Guard<'s>) -> Ret,
        ) -> Ret {
            let mut guard = self.lock(key);
            f(&mut guard)
        }

        /// Like `scoped_lock` if no lock is held elsewhere; otherwise `Err(key)` and `f` does not run.
        pub fn scoped_try_lock<'s, K: $crate::lock::Keyable, Ret>(
            &'s self,
            key: K,
            f: impl FnOnce(&mut <L as $crate::lock::Lockable>::Guard<'s>) -> Ret,
        ) -> Result<Ret, K> {
            let mut guard = self.try_lock(key)?;
            Ok(f(&mut guard))
        }
    };
}

/// The read methods, for collections whose child is [`Sharable`].
macro_rules! collection_read_methods {
    () => {
        /// Blocks until every lock is held shared.
        pub fn read<K: $crate::lock::Keyable>(
            &self,
            key: K,
        ) -> $crate::lock::collection::LockGuard<<L as $crate::lock::Sharable>::ReadGuard<'_>, K> {
            super::read(self, key)
        }

        /// Takes every lock shared if no writer holds any; otherwise takes none and returns the key.
        pub fn try_read<K: $crate::lock::Keyable>(
            &self,
            key: K,
        ) -> Result<
            $crate::lock::collection::LockGuard<<L as $crate::lock::Sharable>::ReadGuard<'_>, K>,
            K,
        > {
            super::try_read(self, key)
        }

        /// Releases every shared hold and returns the key.
        pub fn unlock_read<G, K>(guard: $crate::lock::collection::LockGuard<G, K>) -> K {
            $crate::lock::collection::LockGuard::unlock(guard)
        }

        /// Locks everything shared, runs `f` on the read guards, unlocks.
        pub fn scoped_read<'s, K: $crate::lock::Keyable, Ret>(
            &'s self,
            key: K,
            f: impl FnOnce(&<L as $crate::lock::Sharable>::ReadGuard<'s>) -> Ret,
        ) -> Ret {
            let guard = self.read(key);
            f(&guard)
        }

        /// Like `scoped_read` if no writer holds any lock; otherwise `Err(key)`.
        pub fn scoped_try_read<'s, K: $crate::lock::Keyable, Ret>(
            &'s self,
            key: K,
            f: impl FnOnce(&<L as $crate::lock::Sharable>::ReadGuard<'s>) -> Ret,
        ) -> Result<Ret, K> {
            let guard = self.try_read(key)?;
            Ok(f(&guard))
        }
    };
}

use collection_methods;
use collection_read_methods;
