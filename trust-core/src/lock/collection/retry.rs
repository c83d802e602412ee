//! [`RetryingLockCollection`]: no order at all. It blocks on one lock while holding nothing, then
//! only *tries* the others; if one is busy it releases everything and starts over blocking on the
//! busy one. A thread that waits never holds a lock, so it can never be part of a deadlock.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use super::utils::{self, Mode};
use super::{Strategy, collection_methods, collection_read_methods};
use crate::lock::lockable::{
    Lockable, LockableGetMut, LockableIntoInner, OwnedLockable, RawLock, Sharable,
};

/// Locks taken all together by trying and backing off, with no sorting.
///
/// Cheap when uncontended and when every user of the locks names the same one first; wasteful
/// under contention (locks are taken and dropped again). [`LockCollection`](super::LockCollection)
/// is the sensible default.
///
/// ```
/// use trust_core::lock::{Mutex, RetryingLockCollection, ThreadKey};
///
/// let mut key = ThreadKey::get().unwrap();
/// let (a, b) = (Mutex::new(1), Mutex::new(2));
/// let both = RetryingLockCollection::try_new((&a, &b)).unwrap();
/// let guard = both.lock(&mut key);
/// assert_eq!(*guard.0 + *guard.1, 3);
/// ```
#[derive(Debug, Default)]
pub struct RetryingLockCollection<L> {
    child: L,
}

impl<L: OwnedLockable> RetryingLockCollection<L> {
    /// A collection that owns its locks: no duplicate check needed.
    pub fn new(data: L) -> Self {
        RetryingLockCollection { child: data }
    }
}

impl<'a, L: OwnedLockable + ?Sized> RetryingLockCollection<&'a L> {
    /// A collection over borrowed owned locks: no duplicate check needed.
    pub fn new_ref(data: &'a L) -> Self {
        RetryingLockCollection { child: data }
    }
}

impl<L: Lockable> RetryingLockCollection<L> {
    /// A collection over any locks, or `None` if some lock appears twice.
    pub fn try_new(data: L) -> Option<Self> {
        let duplicates = utils::unsorted_has_duplicates(&utils::unsorted_locks(&data));
        (!duplicates).then_some(RetryingLockCollection { child: data })
    }

    collection_methods!();
}

impl<L: Sharable> RetryingLockCollection<L> {
    collection_read_methods!();
}

impl<L> RetryingLockCollection<L> {
    /// The locks themselves. Locking them elsewhere is fine: this collection never waits while
    /// it holds a lock.
    pub fn child(&self) -> &L {
        &self.child
    }

    /// The locks, through `&mut`: for a child that owns its locks only, which cannot come to name one lock
    /// twice (through a child of references, a lock pushed a second time made `lock` retry forever). To
    /// change a child of references, take it out with `into_child` and build again with `try_new`.
    pub fn child_mut(&mut self) -> &mut L
    where
        L: OwnedLockable,
    {
        &mut self.child
    }

    /// Takes the locks back out.
    pub fn into_child(self) -> L {
        self.child
    }
}

impl<L: LockableIntoInner> RetryingLockCollection<L> {
    /// Consumes the collection and returns the data of every lock.
    pub fn into_inner(self) -> L::Inner {
        self.child.into_inner()
    }
}

impl<L: LockableGetMut> RetryingLockCollection<L> {
    /// The data of every lock, through `&mut`.
    pub fn get_mut(&mut self) -> L::Inner<'_> {
        self.child.get_mut()
    }
}

impl<L: Lockable> Strategy for RetryingLockCollection<L> {
    type Child = L;

    fn child_locks(&self) -> &L {
        &self.child
    }

    fn acquire(&self, mode: Mode) {
        let locks = utils::unsorted_locks(&self.child);
        if locks.is_empty() {
            return;
        }
        let mut first = 0;
        loop {
            // Wait here, holding nothing: the only blocking step.
            mode.lock(locks[first]);
            match try_others(&locks, first, mode) {
                None => return,
                // Block on the busy lock next time, rather than spinning on the same failure.
                Some(busy) => first = busy,
            }
        }
    }

    fn try_acquire(&self, mode: Mode) -> bool {
        utils::try_lock_in_order(&utils::unsorted_locks(&self.child), mode)
    }
}

/// With `locks[first]` held, tries every other lock. Returns `None` with all of them held, or the
/// index of a busy lock with none held. A panicking raw lock releases everything first.
fn try_others(locks: &[&dyn RawLock], first: usize, mode: Mode) -> Option<usize> {
    let mut held = Vec::with_capacity(locks.len());
    held.push(locks[first]);
    let mut busy = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        for (index, lock) in locks.iter().enumerate() {
            if index == first {
                continue;
            }
            if !mode.try_lock(*lock) {
                busy = Some(index);
                return;
            }
            held.push(*lock);
        }
    }));
    match result {
        Ok(()) => {
            if busy.is_some() {
                // SAFETY: `held` lists exactly the locks taken above, in `mode`, owned by nobody.
                unsafe { utils::release(&held, mode) };
            }
            busy
        }
        Err(payload) => {
            // SAFETY: as above.
            unsafe { utils::release_after_panic(&held, mode) };
            resume_unwind(payload)
        }
    }
}
