//! The borrows handed out by [`IntervalRwLock`]: [`ReadGuard`] (`&[T]` to a range) and [`WriteGuard`]
//! (`&mut [T]` to a range). Dropping one releases its range and wakes the requests it held back.

use std::fmt;
use std::ops::{Deref, DerefMut, Range};

use super::IntervalRwLock;

/// Shared access to a range of an [`IntervalRwLock`]; derefs to `[T]`. Released on drop.
#[must_use = "the range is released as soon as the guard is dropped"]
pub struct ReadGuard<'a, T> {
    lock: &'a IntervalRwLock<T>,
    range: Range<usize>,
    /// 0 for an empty range, which is never recorded.
    ticket: u64,
}

/// Exclusive access to a range of an [`IntervalRwLock`]; derefs mutably to `[T]`. Released on drop.
#[must_use = "the range is released as soon as the guard is dropped"]
pub struct WriteGuard<'a, T> {
    lock: &'a IntervalRwLock<T>,
    range: Range<usize>,
    /// 0 for an empty range, which is never recorded.
    ticket: u64,
}

// SAFETY: a `ReadGuard` is a `&[T]` to its range plus the right to release it. The release goes through
// the lock's mutex and works from any thread, so the guard may move or be shared wherever `&[T]` may:
// both need `T: Sync`, and nothing more (the auto traits would demand `T: Send + Sync` through the
// `&IntervalRwLock<T>` field).
unsafe impl<T: Sync> Send for ReadGuard<'_, T> {}
// SAFETY: `&ReadGuard` only gives `&[T]`; see above.
unsafe impl<T: Sync> Sync for ReadGuard<'_, T> {}

// SAFETY: a `WriteGuard` is a `&mut [T]` to its range, which no other borrow overlaps while it lives.
// Moving it to another thread moves that exclusive access, as sending `&mut [T]` does: `T: Send`.
// Other threads may meanwhile use *other* ranges of the lock, never this one.
unsafe impl<T: Send> Send for WriteGuard<'_, T> {}
// SAFETY: `&WriteGuard` only gives `&[T]` (mutation needs `&mut WriteGuard`), as `&&mut [T]` does:
// `T: Sync`.
unsafe impl<T: Sync> Sync for WriteGuard<'_, T> {}

impl<'a, T> ReadGuard<'a, T> {
    /// `ticket` must be a granted read of `range` (or 0 with an empty range).
    pub(super) fn new(lock: &'a IntervalRwLock<T>, range: Range<usize>, ticket: u64) -> Self {
        ReadGuard {
            lock,
            range,
            ticket,
        }
    }

    /// The locked range, as indices into the whole slice.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }
}

impl<'a, T> WriteGuard<'a, T> {
    /// `ticket` must be a granted write of `range` (or 0 with an empty range).
    pub(super) fn new(lock: &'a IntervalRwLock<T>, range: Range<usize>, ticket: u64) -> Self {
        WriteGuard {
            lock,
            range,
            ticket,
        }
    }

    /// The locked range, as indices into the whole slice.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `range` is within the buffer (checked by `bounds`), and the lock granted this guard a
        // read of it: until the guard drops, no write to any of these elements is granted, so shared
        // references are sound. The pointer carries the whole allocation's provenance (`Buffer`).
        unsafe { std::slice::from_raw_parts(self.lock.data.at(self.range.start), self.range.len()) }
    }
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: as in `deref_mut`; a shared view of the exclusively held range.
        unsafe { std::slice::from_raw_parts(self.lock.data.at(self.range.start), self.range.len()) }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: `range` is within the buffer, and the lock granted this guard a write of it: until the
        // guard drops, no other borrow of any of these elements is granted, and `&mut self` makes this
        // the only reference derived from the guard. Disjoint write guards form `&mut [T]` to disjoint
        // sub-slices of one allocation through the raw pointer, never through a `&mut` to the whole.
        unsafe {
            std::slice::from_raw_parts_mut(self.lock.data.at(self.range.start), self.range.len())
        }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.release(&self.range, self.ticket, false);
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.release(&self.range, self.ticket, true);
    }
}

impl<T: fmt::Debug> fmt::Debug for ReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadGuard")
            .field("range", &self.range)
            .field("data", &&**self)
            .finish()
    }
}

impl<T: fmt::Debug> fmt::Debug for WriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteGuard")
            .field("range", &self.range)
            .field("data", &&**self)
            .finish()
    }
}
