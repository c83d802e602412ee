//! What every collection shares: listing and sorting raw locks, duplicate checks, and acquiring
//! or releasing a list of locks so that a panicking raw lock never leaves the others held.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use crate::lock::lockable::{Lockable, RawLock};

/// Exclusive (`lock`, `try_lock`) or shared (`read`, `try_read`) acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Exclusive,
    Shared,
}

impl Mode {
    // Safe inside the crate: only the collections' `lock`/`try_lock`/`read`/`try_read` come here, and
    // each takes the thread's key (or a nested key) first, as the raw locks' contract asks.
    pub(crate) fn lock(self, lock: &dyn RawLock) {
        // SAFETY: the caller holds the key (above).
        unsafe {
            match self {
                Mode::Exclusive => lock.raw_lock(),
                Mode::Shared => lock.raw_lock_shared(),
            }
        }
    }

    pub(crate) fn try_lock(self, lock: &dyn RawLock) -> bool {
        // SAFETY: as in `lock`.
        unsafe {
            match self {
                Mode::Exclusive => lock.raw_try_lock(),
                Mode::Shared => lock.raw_try_lock_shared(),
            }
        }
    }

    /// # Safety
    ///
    /// The caller holds `lock` in this mode and nobody else will release that hold.
    unsafe fn unlock(self, lock: &dyn RawLock) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match self {
                Mode::Exclusive => lock.raw_unlock(),
                Mode::Shared => lock.raw_unlock_shared(),
            }
        }
    }
}

/// The raw locks of `data`, in its own order.
pub(crate) fn unsorted_locks<L: Lockable + ?Sized>(data: &L) -> Vec<&dyn RawLock> {
    let mut locks = Vec::new();
    data.raw_locks(&mut locks);
    locks
}

/// The raw locks of `data` in the global acquisition order: by rank, then by address (the order
/// `lock_all!` uses, so collections and `lock_all!` calls never wait on each other in a cycle).
pub(crate) fn sorted_locks<L: Lockable + ?Sized>(data: &L) -> Vec<&dyn RawLock> {
    let mut locks = unsorted_locks(data);
    locks.sort_unstable_by_key(|lock| (lock.rank(), lock.lock_id()));
    locks
}

/// Whether a list sorted by [`sorted_locks`] holds a lock twice (a lock has one rank, so its
/// copies end up side by side).
pub(crate) fn sorted_has_duplicates(locks: &[&dyn RawLock]) -> bool {
    locks
        .windows(2)
        .any(|pair| pair[0].lock_id() == pair[1].lock_id())
}

/// Whether an unsorted list holds a lock twice.
pub(crate) fn unsorted_has_duplicates(locks: &[&dyn RawLock]) -> bool {
    let mut ids: Vec<usize> = locks.iter().map(|lock| lock.lock_id()).collect();
    ids.sort_unstable();
    ids.windows(2).any(|pair| pair[0] == pair[1])
}

/// Blocks until every lock is held, taking them in list order. If a raw lock panics, the ones
/// already taken are released before the panic continues.
pub(crate) fn lock_in_order(locks: &[&dyn RawLock], mode: Mode) {
    let mut taken = 0;
    let result = catch_unwind(AssertUnwindSafe(|| {
        for lock in locks {
            mode.lock(*lock);
            taken += 1;
        }
    }));
    if let Err(payload) = result {
        // SAFETY: the first `taken` locks were acquired in `mode` above and no guard owns them.
        unsafe { release_after_panic(&locks[..taken], mode) };
        resume_unwind(payload);
    }
}

/// Takes every lock if none blocks, in list order; otherwise releases what it took and returns
/// `false`. Never blocks.
pub(crate) fn try_lock_in_order(locks: &[&dyn RawLock], mode: Mode) -> bool {
    let mut taken = 0;
    let result = catch_unwind(AssertUnwindSafe(|| {
        for lock in locks {
            if !mode.try_lock(*lock) {
                return false;
            }
            taken += 1;
        }
        true
    }));
    match result {
        Ok(true) => true,
        Ok(false) => {
            // SAFETY: the first `taken` locks were acquired in `mode` and no guard owns them.
            unsafe { release(&locks[..taken], mode) };
            false
        }
        Err(payload) => {
            // SAFETY: as above.
            unsafe { release_after_panic(&locks[..taken], mode) };
            resume_unwind(payload)
        }
    }
}

/// Releases every lock, even if some raw unlock panics; then re-raises the first such panic.
///
/// # Safety
///
/// The caller holds each lock in `mode`, and nobody else will release those holds.
pub(crate) unsafe fn release(locks: &[&dyn RawLock], mode: Mode) {
    // SAFETY: forwarded from the caller.
    if let Some(payload) = unsafe { release_each(locks, mode) } {
        resume_unwind(payload);
    }
}

/// Releases every lock while another panic is already on its way; a raw unlock that panics too
/// has marked its lock broken, and that second panic is dropped in favour of the first.
///
/// # Safety
///
/// As for [`release`].
pub(crate) unsafe fn release_after_panic(locks: &[&dyn RawLock], mode: Mode) {
    // SAFETY: forwarded from the caller.
    drop(unsafe { release_each(locks, mode) });
}

/// # Safety
///
/// As for [`release`].
unsafe fn release_each(locks: &[&dyn RawLock], mode: Mode) -> Option<Box<dyn Any + Send>> {
    let mut first_panic = None;
    for lock in locks {
        // SAFETY: forwarded from the caller: we hold `lock` in `mode`.
        let result = catch_unwind(AssertUnwindSafe(|| unsafe { mode.unlock(*lock) }));
        if let Err(payload) = result {
            first_panic.get_or_insert(payload);
        }
    }
    first_panic
}
