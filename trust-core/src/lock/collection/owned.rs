//! [`OwnedLockCollection`]: owns its locks and never lends them out, so it may take them in its
//! own order with no sorting.

use super::utils::{self, Mode};
use super::{Strategy, collection_methods, collection_read_methods};
use crate::lock::context::LockContext;
use crate::lock::key::LockKey;
use crate::lock::lockable::{LockableGetMut, LockableIntoInner, OwnedLockable, Sharable};

/// Owned locks taken all together in the child's own order.
///
/// Nothing else can reach the locks (there is no `child()`: only `&mut` access and `into_child`),
/// so every acquisition of them goes through this collection, in this one order, and sorting is
/// unnecessary.
///
/// ```
/// use trust_core::lock::{Mutex, OwnedLockCollection, RwLock, ThreadKey};
///
/// let mut key = ThreadKey::get().unwrap();
/// let pair = OwnedLockCollection::new((Mutex::new(1), RwLock::new(2)));
/// let sum = pair.scoped_lock(&mut key, |(a, b)| **a + **b);
/// assert_eq!(sum, 3);
/// assert_eq!(pair.into_inner(), (1, 2));
/// ```
#[derive(Debug, Default)]
pub struct OwnedLockCollection<L> {
    child: L,
}

impl<L: OwnedLockable> OwnedLockCollection<L> {
    /// A collection that owns `data`'s locks.
    pub fn new(data: L) -> Self {
        OwnedLockCollection { child: data }
    }

    collection_methods!();

    /// The locks, through `&mut` (proof that none is held).
    pub fn child_mut(&mut self) -> &mut L {
        &mut self.child
    }

    /// Locks the parts one at a time, in order, deciding as it goes: see [`LockContext`]. The context
    /// borrows `key` (a `ThreadKey`, or a `NestedKey` below every part's rank) while it and its guards live.
    pub fn context<'a, K: LockKey + ?Sized>(&'a self, key: &'a mut K) -> LockContext<'a, K, L> {
        LockContext::new(&self.child, key)
    }

    /// Takes the locks back out.
    pub fn into_child(self) -> L {
        self.child
    }
}

impl<L: OwnedLockable + Sharable> OwnedLockCollection<L> {
    collection_read_methods!();
}

impl<L: OwnedLockable + LockableIntoInner> OwnedLockCollection<L> {
    /// Consumes the collection and returns the data of every lock.
    pub fn into_inner(self) -> L::Inner {
        self.child.into_inner()
    }
}

impl<L: OwnedLockable + LockableGetMut> OwnedLockCollection<L> {
    /// The data of every lock, through `&mut`: no locking needed.
    pub fn get_mut(&mut self) -> L::Inner<'_> {
        self.child.get_mut()
    }
}

impl<L: OwnedLockable> From<L> for OwnedLockCollection<L> {
    fn from(data: L) -> Self {
        Self::new(data)
    }
}

impl<L: OwnedLockable> Strategy for OwnedLockCollection<L> {
    type Child = L;

    fn child_locks(&self) -> &L {
        &self.child
    }

    fn acquire(&self, mode: Mode) {
        utils::lock_in_order(&utils::unsorted_locks(&self.child), mode);
    }

    fn try_acquire(&self, mode: Mode) -> bool {
        utils::try_lock_in_order(&utils::unsorted_locks(&self.child), mode)
    }
}
