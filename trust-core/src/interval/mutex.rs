//! [`IntervalMutex`]: the write-only face of [`IntervalRwLock`] (`interlock`'s interval mutex).

use std::fmt;
use std::ops::RangeBounds;

use super::{INTERVAL_MUTEX, IntervalRwLock, Prioritized, TryLockError, WriteFuture, WriteGuard};

/// A slice whose sub-ranges can be locked exclusively and independently: every borrow writes, so any
/// two overlapping borrows exclude each other. Same fairness (first come, first served among
/// overlapping requests, with [`prioritized`](Self::prioritized) priorities), futures and range syntax
/// as [`IntervalRwLock`], whose write side it is.
///
/// Cost: the same bookkeeping as the readers-writer lock (this crate keeps one structure for both);
/// what the type buys is an API without reads, so a reader of the code knows every borrow excludes.
/// It keeps the readers-writer lock's thread bounds too: `Send` iff `T: Send`, `Sync` iff `T: Send + Sync`
/// (`std::sync::Mutex<T>` is `Sync` for `T: Send` alone).
///
/// ```
/// use trust_core::interval::IntervalMutex;
///
/// let rows = IntervalMutex::new(vec![0u32; 8]);
/// std::thread::scope(|s| {
///     s.spawn(|| rows.lock(..4).fill(1));
///     s.spawn(|| rows.lock(4..).fill(2));
/// });
/// let left = rows.lock(0..4);
/// assert!(rows.try_lock(3..5).is_err()); // overlaps `left`
/// assert_eq!(rows.try_lock(4..8).unwrap().iter().sum::<u32>(), 8);
/// assert_eq!(left.iter().sum::<u32>(), 4);
/// ```
pub struct IntervalMutex<T>(IntervalRwLock<T>);

impl<T> IntervalMutex<T> {
    /// Takes ownership of the elements: a `Vec<T>`, a `Box<[T]>`, an array, or a `&[T]` of `Clone`s.
    pub fn new(elements: impl Into<Box<[T]>>) -> Self {
        IntervalMutex(IntervalRwLock::named(elements.into(), INTERVAL_MUTEX))
    }

    /// Lends `elements` to a lock for the length of `f`, locked in place ([`IntervalRwLock::with_slice`]).
    ///
    /// ```
    /// use trust_core::interval::IntervalMutex;
    ///
    /// let mut rows = [0u32; 6];
    /// IntervalMutex::with_slice(&mut rows, |lock| {
    ///     let _left = lock.lock(..3);
    ///     assert!(lock.try_lock(2..4).is_err()); // overlaps `_left`
    ///     lock.lock(3..).fill(7);
    /// });
    /// assert_eq!(rows, [0, 0, 0, 7, 7, 7]);
    /// ```
    pub fn with_slice<R>(elements: &mut [T], f: impl FnOnce(&IntervalMutex<T>) -> R) -> R {
        // SAFETY: the lock lives in this frame, inside the borrow of `elements`, and `f` gets it by `&` only.
        let lock = IntervalMutex(unsafe { IntervalRwLock::lent(elements, INTERVAL_MUTEX) });
        f(&lock)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Locks `range`, blocking the thread until no earlier overlapping borrow remains
    /// ([`IntervalRwLock::write`]). Panics if `range` is out of bounds or inverted.
    #[track_caller]
    pub fn lock(&self, range: impl RangeBounds<usize>) -> WriteGuard<'_, T> {
        self.0.write(range)
    }

    /// Locks `range` if that needs no waiting; otherwise an error, and nothing is recorded.
    #[track_caller]
    pub fn try_lock(&self, range: impl RangeBounds<usize>) -> Result<WriteGuard<'_, T>, TryLockError> {
        self.0.try_write(range)
    }

    /// A future that locks `range`; cancel-safe ([`IntervalRwLock::write_async`]).
    #[track_caller]
    pub fn lock_async(&self, range: impl RangeBounds<usize>) -> WriteFuture<'_, T> {
        self.0.write_async(range)
    }

    /// Requests with a priority (see [`IntervalRwLock::prioritized`]): its `lock` and `lock_async`.
    pub fn prioritized(&self, priority: u32) -> PrioritizedMutex<'_, T> {
        PrioritizedMutex(self.0.prioritized(priority))
    }

    /// All elements, mutably, with no locking.
    pub fn get_mut(&mut self) -> &mut [T] {
        self.0.get_mut()
    }

    /// Puts `elements` in place of the current ones and returns those
    /// ([`IntervalRwLock::replace_container`]).
    pub fn replace_container(&mut self, elements: impl Into<Box<[T]>>) -> Box<[T]> {
        self.0.replace_container(elements)
    }

    /// Takes the elements out, leaving the lock empty.
    pub fn take_container(&mut self) -> Box<[T]> {
        self.0.take_container()
    }

    /// Gives the elements back.
    pub fn into_inner(self) -> Vec<T> {
        self.0.into_inner()
    }

    /// Number of borrows held right now (a snapshot).
    pub fn held(&self) -> usize {
        self.0.held()
    }

    /// Number of requests queued right now (a snapshot).
    pub fn queued(&self) -> usize {
        self.0.queued()
    }
}

/// An [`IntervalMutex`] seen through a request priority; made by [`IntervalMutex::prioritized`]. Like the
/// mutex, it only writes: the readers-writer lock's [`Prioritized`] would hand out shared borrows that
/// overlap.
pub struct PrioritizedMutex<'a, T>(Prioritized<'a, T>);

impl<'a, T> PrioritizedMutex<'a, T> {
    /// [`IntervalMutex::lock`] with this priority.
    #[track_caller]
    pub fn lock(&self, range: impl RangeBounds<usize>) -> WriteGuard<'a, T> {
        self.0.write(range)
    }

    /// [`IntervalMutex::lock_async`] with this priority.
    #[track_caller]
    pub fn lock_async(&self, range: impl RangeBounds<usize>) -> WriteFuture<'a, T> {
        self.0.write_async(range)
    }
}

impl<T> From<Vec<T>> for IntervalMutex<T> {
    fn from(elements: Vec<T>) -> Self {
        IntervalMutex::new(elements)
    }
}

impl<T> Default for IntervalMutex<T> {
    fn default() -> Self {
        IntervalMutex::new(Vec::new())
    }
}

impl<T> fmt::Debug for PrioritizedMutex<'_, T> {
    /// As [`Prioritized`]'s: no `T: Debug` needed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrioritizedMutex")
            .field("lock", self.0.lock)
            .field("priority", &self.0.priority)
            .finish()
    }
}

impl<T> fmt::Debug for IntervalMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntervalMutex")
            .field("len", &self.len())
            .field("held", &self.held())
            .field("queued", &self.queued())
            .finish()
    }
}
