//! [`RefLockCollection`]: sorted once like [`LockCollection`](super::LockCollection), over a
//! borrowed child, so nothing is boxed and no pointer needs its lifetime hidden.

use std::fmt;

use super::utils::{self, Mode};
use super::{Strategy, collection_methods, collection_read_methods};
use crate::lock::lockable::{Lockable, OwnedLockable, RawLock, Sharable};

/// Borrowed locks taken all together, in the `(rank, address)` order sorted at construction.
///
/// ```
/// use trust_core::lock::{Mutex, RefLockCollection, ThreadKey};
///
/// let mut key = ThreadKey::get().unwrap();
/// let accounts = [Mutex::new(5), Mutex::new(7)];
/// let all = RefLockCollection::new(&accounts);
/// let total: i32 = all.lock(&mut key).iter().map(|g| **g).sum();
/// assert_eq!(total, 12);
/// ```
pub struct RefLockCollection<'a, L: ?Sized> {
    child: &'a L,
    locks: Vec<&'a dyn RawLock>,
}

// SAFETY: the collection is a `&L` and references into `*L` (its locks, sorted), used only through `&self`: it
// is what a `&L` is, `Send` and `Sync` when `L: Sync` (several threads may then lock the child's locks at
// once). happylock 0.5 asks only `L: Send` for `Send`; a `&L` moved to another thread is shared with this
// one, so here it takes `L: Sync`, as `&L` does.
unsafe impl<L: Sync + ?Sized> Send for RefLockCollection<'_, L> {}
// SAFETY: as above.
unsafe impl<L: Sync + ?Sized> Sync for RefLockCollection<'_, L> {}

impl<'a, L: OwnedLockable + ?Sized> RefLockCollection<'a, L> {
    /// A collection over owned locks: they cannot repeat, so there is no duplicate check.
    pub fn new(data: &'a L) -> Self {
        RefLockCollection {
            child: data,
            locks: utils::sorted_locks(data),
        }
    }
}

impl<'a, L: Lockable + ?Sized> RefLockCollection<'a, L> {
    /// A collection over any locks, or `None` if some lock appears twice.
    pub fn try_new(data: &'a L) -> Option<Self> {
        let locks = utils::sorted_locks(data);
        (!utils::sorted_has_duplicates(&locks)).then_some(RefLockCollection { child: data, locks })
    }

    /// The locks themselves.
    pub fn child(&self) -> &'a L {
        self.child
    }

    /// The borrowed locks back, for as long as they were lent.
    pub fn into_child(self) -> &'a L {
        self.child
    }

    collection_methods!();
}

impl<L: Sharable + ?Sized> RefLockCollection<'_, L> {
    collection_read_methods!();
}

impl<L: Lockable + ?Sized> Strategy for RefLockCollection<'_, L> {
    type Child = L;

    fn child_locks(&self) -> &L {
        self.child
    }

    fn acquire(&self, mode: Mode) {
        utils::lock_in_order(&self.locks, mode);
    }

    fn try_acquire(&self, mode: Mode) -> bool {
        utils::try_lock_in_order(&self.locks, mode)
    }
}

impl<L: fmt::Debug + ?Sized> fmt::Debug for RefLockCollection<'_, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefLockCollection")
            .field("child", &self.child)
            .finish_non_exhaustive()
    }
}
