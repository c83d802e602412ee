//! [`LockCollection`]: the child is boxed so its address never moves, and the sorted list of its
//! raw locks is computed once and kept.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr::NonNull;

use super::utils::{self, Mode};
use super::{Strategy, collection_methods, collection_read_methods};
use crate::lock::lockable::{Lockable, LockableIntoInner, OwnedLockable, RawLock, Sharable};

/// Locks taken all together, in the global `(rank, address)` order sorted once at construction.
///
/// ```
/// use trust_core::lock::{LockCollection, Mutex, RwLock, ThreadKey};
///
/// let mut key = ThreadKey::get().unwrap();
/// let (a, b) = (Mutex::new(1), RwLock::new(String::from("x")));
/// let both = LockCollection::try_new((&a, &b)).expect("distinct locks");
/// {
///     let mut guard = both.lock(&mut key);
///     *guard.0 += 1;
///     guard.1.push('y');
/// }
/// assert_eq!(both.scoped_lock(&mut key, |(a, b)| format!("{}{}", **a, **b)), "2xy");
/// assert!(LockCollection::try_new((&a, &a)).is_none()); // the same lock twice
/// ```
pub struct LockCollection<L> {
    // From `Box::into_raw`, freed in `Drop`/`into_child`. A raw pointer rather than a `Box`,
    // because moving a `Box` asserts unique access, which the cached `locks` (pointing into the
    // child) would contradict.
    child: NonNull<L>,
    // Sorted by `(rank, address)`. `'static` is a lie told to the type system: the references
    // point into `*child` and are only ever handed out re-borrowed for the lifetime of `&self`.
    locks: Vec<&'static dyn RawLock>,
}

// SAFETY: the collection owns the boxed child; the cached pointers are only used through `&self`.
// Moving it to another thread moves the child (`L: Send`); sharing it lets several threads lock
// the child's locks at once, which is what `L: Sync` allows.
unsafe impl<L: Send> Send for LockCollection<L> {}
// SAFETY: as above.
unsafe impl<L: Sync> Sync for LockCollection<L> {}

impl<L: OwnedLockable> LockCollection<L> {
    /// A collection that owns its locks: they cannot repeat, so there is no duplicate check.
    pub fn new(data: L) -> Self {
        Self::build(data)
    }
}

impl<'a, L: OwnedLockable + ?Sized> LockCollection<&'a L> {
    /// A collection over borrowed owned locks (e.g. `&[Mutex<T>; N]`): no duplicate check needed.
    pub fn new_ref(data: &'a L) -> Self {
        Self::build(data)
    }
}

impl<L: Lockable> LockCollection<L> {
    /// A collection over any locks (e.g. a tuple of references), or `None` if some lock appears
    /// twice, which would make `lock` wait for itself forever.
    pub fn try_new(data: L) -> Option<Self> {
        let collection = Self::build(data);
        (!utils::sorted_has_duplicates(&collection.locks)).then_some(collection)
    }

    /// A collection over any locks, with no duplicate check.
    ///
    /// # Safety
    ///
    /// No lock may appear twice in `data` (e.g. `(&a, &a)`): the collection would hand out two
    /// guards to the same data, two `&mut` to one value. [`try_new`](Self::try_new) checks this
    /// (one sort and one pass over the locks); use this only where the check is measured to
    /// matter and the distinctness is evident.
    pub unsafe fn new_unchecked(data: L) -> Self {
        Self::build(data)
    }

    fn build(data: L) -> Self {
        // The collection owns the box before the locks are listed: if a user's `Lockable` panics
        // in `raw_locks`, dropping it frees the box (and drops `data`) instead of leaking it.
        let mut collection = LockCollection {
            child: NonNull::from(Box::leak(Box::new(data))),
            locks: Vec::new(),
        };
        // SAFETY: `child` was just leaked from a `Box`, so it is valid, and we only read it.
        let child_ref: &L = unsafe { collection.child.as_ref() };
        collection.locks = utils::sorted_locks(child_ref)
            .into_iter()
            // SAFETY: only the lifetime changes. The pointee lives in the box until `Drop` or
            // `into_child`, which clear this list first, and `locks()` shortens the lifetime back
            // to `&self` before anyone can use it.
            .map(|lock| unsafe { std::mem::transmute::<&dyn RawLock, &'static dyn RawLock>(lock) })
            .collect();
        collection
    }

    collection_methods!();
}

impl<L: Sharable> LockCollection<L> {
    collection_read_methods!();
}

impl<L> LockCollection<L> {
    /// The locks themselves (e.g. to lock one of them alone).
    pub fn child(&self) -> &L {
        // SAFETY: the box lives as long as `self`, and nobody holds `&mut` to it.
        unsafe { self.child.as_ref() }
    }

    /// Takes the locks back out.
    pub fn into_child(mut self) -> L {
        // `take`, not `clear`: `forget(self)` below would leak the list's buffer.
        drop(std::mem::take(&mut self.locks));
        // SAFETY: the pointer came from `Box::leak`; `forget(self)` keeps `Drop` from freeing it
        // a second time, and the cached pointers into it are gone.
        let child = unsafe { Box::from_raw(self.child.as_ptr()) };
        std::mem::forget(self);
        *child
    }

    /// Runs `f` on the locks through `&mut` (no lock is held: `&mut self` proves it), then sorts the
    /// cached acquisition order again, even if `f` panics.
    ///
    /// There is no `child_mut`: the order is cached as pointers into the child, so a `&mut L`
    /// that outlived the call could move, replace or reallocate locks behind the cache (a `Vec`
    /// child that grows). Restricted to owned children (`L: OwnedLockable`): whatever `f` does,
    /// no lock can appear twice afterwards, so re-sorting is the whole re-validation. A child of
    /// references goes through [`into_child`](Self::into_child) and
    /// [`try_new`](Self::try_new) instead.
    ///
    /// ```
    /// use trust_core::lock::{LockCollection, Mutex, ThreadKey};
    ///
    /// let mut key = ThreadKey::get().unwrap();
    /// let mut all = LockCollection::new(vec![Mutex::new(1), Mutex::new(2)]);
    /// all.with_child_mut(|v| v.push(Mutex::new(3)));
    /// assert_eq!(all.scoped_lock(&mut key, |g| g.iter().map(|m| **m).sum::<i32>()), 6);
    /// ```
    pub fn with_child_mut<R>(&mut self, f: impl FnOnce(&mut L) -> R) -> R
    where
        L: OwnedLockable,
    {
        /// Re-sorts on the way out, also when `f` unwinds.
        struct Resort<'c, L: Lockable>(&'c mut LockCollection<L>);
        impl<L: Lockable> Drop for Resort<'_, L> {
            fn drop(&mut self) {
                let collection = &mut *self.0;
                // SAFETY: `child` is the box's live pointee, and the `&mut` to it that `f` had
                // has ended; nothing else borrows it while we hold `&mut collection`.
                let child: &L = unsafe { collection.child.as_ref() };
                // A user's `raw_locks` may panic. If `f` already did, a second panic in this destructor
                // would abort the process: keep `Unlisted` (the collection then refuses to lock) and let
                // `f`'s panic go on. Otherwise the listing's panic is the one that goes on.
                let listed = catch_unwind(AssertUnwindSafe(|| utils::sorted_locks(child)));
                let locks = match listed {
                    Ok(locks) => locks,
                    Err(payload) if std::thread::panicking() => {
                        crate::delegation::trustee::unwind::drop_payload(payload);
                        return;
                    }
                    Err(payload) => resume_unwind(payload),
                };
                collection.locks = locks
                    .into_iter()
                    // SAFETY: as in `build`: only the lifetime changes, and the list never
                    // outlives the box.
                    .map(|lock| unsafe {
                        std::mem::transmute::<&dyn RawLock, &'static dyn RawLock>(lock)
                    })
                    .collect();
            }
        }
        // The cached pointers must not be used while `f` holds `&mut` to what they point at. Until the re-sort
        // lists the locks again, the list holds `Unlisted`: if listing panics (a user's `Lockable`), the
        // collection keeps it, and a later lock panics instead of taking no lock and handing out the guards.
        self.locks.clear();
        self.locks.push(&Unlisted);
        let resort = Resort(self);
        // SAFETY: the box lives as long as `self`; `&mut self` (held by `resort`) makes this
        // the only reference to the child, and the cache that pointed into it is empty.
        let child: &mut L = unsafe { resort.0.child.as_mut() };
        f(child)
    }

    fn locks(&self) -> &[&dyn RawLock] {
        &self.locks
    }
}

/// The lock list of a collection whose child panicked while `with_child_mut` listed its locks again: every
/// attempt to take it panics, so the collection never hands out guards over locks it did not take.
struct Unlisted;

const UNLISTED: &str = "this `LockCollection` cannot be locked: its child's `Lockable::raw_locks` panicked \
     when `with_child_mut` listed its locks again; take the child out with `into_child` and build a new collection";

// SAFETY: it never grants a hold: every method that would take or release it panics.
unsafe impl RawLock for Unlisted {
    fn lock_id(&self) -> usize {
        0
    }

    fn rank(&self) -> u32 {
        0
    }

    unsafe fn raw_lock(&self) {
        panic!("{UNLISTED}");
    }

    unsafe fn raw_try_lock(&self) -> bool {
        panic!("{UNLISTED}");
    }

    unsafe fn raw_unlock(&self) {
        panic!("{UNLISTED}");
    }

    unsafe fn raw_lock_shared(&self) {
        panic!("{UNLISTED}");
    }

    unsafe fn raw_try_lock_shared(&self) -> bool {
        panic!("{UNLISTED}");
    }

    unsafe fn raw_unlock_shared(&self) {
        panic!("{UNLISTED}");
    }
}

impl<L: LockableIntoInner> LockCollection<L> {
    /// Consumes the collection and returns the data of every lock.
    pub fn into_inner(self) -> L::Inner {
        self.into_child().into_inner()
    }
}

impl<L> Drop for LockCollection<L> {
    fn drop(&mut self) {
        // The cached references must not outlive the box they point into.
        self.locks.clear();
        // SAFETY: the pointer came from `Box::leak` and is freed only here (or in `into_child`,
        // which forgets `self`).
        drop(unsafe { Box::from_raw(self.child.as_ptr()) });
    }
}

impl<L: Lockable> Strategy for LockCollection<L> {
    type Child = L;

    fn child_locks(&self) -> &L {
        self.child()
    }

    fn acquire(&self, mode: Mode) {
        utils::lock_in_order(self.locks(), mode);
    }

    fn try_acquire(&self, mode: Mode) -> bool {
        utils::try_lock_in_order(self.locks(), mode)
    }
}

impl<L: fmt::Debug> fmt::Debug for LockCollection<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockCollection")
            .field("child", self.child())
            .finish_non_exhaustive()
    }
}

impl<L: OwnedLockable + Default> Default for LockCollection<L> {
    fn default() -> Self {
        Self::new(L::default())
    }
}

impl<L: OwnedLockable> From<L> for LockCollection<L> {
    fn from(data: L) -> Self {
        Self::new(data)
    }
}
