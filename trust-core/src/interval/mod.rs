//! Interval readers-writer locks: borrow sub-ranges of one slice for reading or writing, so that
//! threads and tasks working on disjoint parts proceed in parallel.
//!
//! [`IntervalRwLock<T>`] owns a `Box<[T]>` (build it from a `Vec<T>`, a boxed slice or an array) and
//! behaves like an array of virtual readers-writer locks, one per element, taken all at once:
//!
//! - [`read(range)`](IntervalRwLock::read) gives a [`ReadGuard`] (`Deref<Target = [T]>`) and
//!   [`write(range)`](IntervalRwLock::write) a [`WriteGuard`] (`DerefMut`), blocking the thread until no
//!   conflicting borrow exists. Reads share with reads; a write conflicts with anything it overlaps. In a
//!   fiber of the [delegation runtime](crate::spawn) they suspend only the fiber, as `apply` does: its
//!   worker runs its other fibers meanwhile (one of which may hold the range) and serves its trustee.
//!   In a continuation its worker runs (outside any fiber, where nothing can suspend), a borrow that would
//!   have to wait panics instead, naming `try_*`: parking there would stop the worker and its fibers. In a
//!   closure delegated to a worker (which cannot suspend either) a borrow that must wait parks the worker's
//!   thread, and succeeds once a plain thread, another worker's fiber or a `may` coroutine releases; but if
//!   it would wait for a borrow taken by a fiber of that same worker (held, queued ahead of it, or waited for
//!   by a blocking request ahead of it), which could never resume, it withdraws its request and panics,
//!   naming `try_*` (see *Caveats*).
//!   In a `may` coroutine they park the coroutine, not its thread (its thread runs its other coroutines), and
//!   the release that grants it unparks it, as it wakes threads and fibers; a coroutine cancelled while it
//!   waits withdraws its request.
//! - [`try_read`](IntervalRwLock::try_read) / [`try_write`](IntervalRwLock::try_write) fail at once with
//!   [`TryLockError`] and leave nothing behind.
//! - [`read_async`](IntervalRwLock::read_async) / [`write_async`](IntervalRwLock::write_async) return
//!   futures ([`ReadFuture`], [`WriteFuture`]) for any executor. Dropping one before it completes cancels
//!   it cleanly: the borrows queued behind it are re-examined and woken if it was all they waited for.
//! - Ranges are any `RangeBounds<usize>` (`a..b`, `a..=b`, `..b`, `a..`, `..`). An out-of-bounds or
//!   inverted range panics at the call site with a message naming the range and the length. An empty range
//!   conflicts with nothing and is granted at once.
//!
//! - [`prioritized(p)`](IntervalRwLock::prioritized) requests with a priority: among conflicting
//!   *waiting* requests, higher priorities are granted first (default 0, then arrival order).
//! - [`replace_container`](IntervalRwLock::replace_container) / [`take_container`](IntervalRwLock::take_container)
//!   swap the elements of an unborrowed lock (`&mut self`); [`IntervalMutex`] is the write-only variant.
//! - [`with_slice`](IntervalRwLock::with_slice) locks a caller's `&mut [T]` in place instead, for the length
//!   of a closure that gets the lock by `&` (share it with threads of a `std::thread::scope` inside it).
//!
//! This is the feature set of the `interlock` crate, on stable Rust, with no pinned `state!` storage:
//! the bookkeeping lives in the lock, behind a short `std::sync::Mutex` critical section.
//!
//! ```
//! use trust_core::interval::IntervalRwLock;
//!
//! let pixels = IntervalRwLock::new(vec![0u8; 64]);
//! std::thread::scope(|s| {
//!     // Two threads write the two halves at the same time.
//!     s.spawn(|| pixels.write(..32).fill(1));
//!     s.spawn(|| pixels.write(32..).fill(2));
//! });
//! let top = pixels.read(0..32);
//! let bottom = pixels.read(16..48); // readers overlap freely
//! assert!(pixels.try_write(16..20).is_err()); // ...but exclude writers
//! assert_eq!((top[0], bottom[31]), (1, 2));
//! ```
//!
//! # Fairness
//!
//! First come, first served among *conflicting* borrows: every request takes a ticket, and a request is
//! granted once no earlier conflicting request (held or still queued) remains. With
//! [priorities](IntervalRwLock::prioritized), "earlier" among queued requests means `(higher priority,
//! then smaller ticket)`; a held borrow is never preempted. A writer queued behind
//! readers is therefore never overtaken by later readers of its range, and `try_*` fails when the range
//! conflicts with a queued request, not only a held one. Requests that do not conflict never wait for each
//! other, whatever their order.
//!
//! # Data structure and cost
//!
//! The lock records every borrow, held or queued, in two randomized balanced search trees (treaps, in an
//! arena): one ordered by `(start, ticket)`, augmented with subtree counts (all, writes) and the largest
//! end of a *queued* range (all, writes); one ordered by `(end, ticket)`, augmented with counts. The
//! number of recorded borrows overlapping `a..b` is `#{start < b} - #{end <= a}`, two descents. Each
//! queued borrow keeps only the number of earlier conflicting borrows it waits for (see the `state`
//! module for why that count is exact). With n borrows recorded:
//!
//! | operation | expected cost |
//! | --- | --- |
//! | `read`, `write`, `try_*`, first poll of a future (granted or queued) | O(log n) |
//! | dropping a guard | O((1 + k) log n), k = borrows queued behind it that it conflicts with |
//! | dropping a queued future | O((1 + k + j) log n), j = queued borrows ahead of it that it overlaps |
//! | a delegated closure's borrow that must wait (the fiber check) | O(f log f) for its worker's f fibers, then O(n log f) per queued request it follows |
//!
//! The k term counts every queued borrow behind the released one that conflicts with it (each counted it
//! among its blockers), not only those it grants: draining n writers queued for one range, one grant per
//! release, costs O(n² log n) (review 42). A release that nobody waits for is O(log n). The bounds are
//! expected values over the treap's random priorities (drawn from the process's random hash keys), for
//! every input order; a pathological depth is possible only with vanishing probability. Space is O(m) plus
//! one `HashMap` entry per queued borrow, m the most borrows ever recorded at once: the arenas and the map
//! keep their capacity until `replace_container`/`take_container` starts the bookkeeping afresh. A granted
//! borrow allocates nothing once the arena has grown; a queued blocking borrow clones its `Thread` handle (a
//! `may` coroutine's allocates a parker), a queued future its `Waker`.
//!
//! # Guards across threads
//!
//! A [`WriteGuard`] is an exclusive `&mut [T]` to its range and a [`ReadGuard`] a shared `&[T]`, and
//! they cross threads exactly as those references do: `WriteGuard: Send` iff `T: Send`,
//! `WriteGuard: Sync` iff `T: Sync`, `ReadGuard: Send + Sync` iff `T: Sync`. Releasing a guard from
//! another thread is fine (the bookkeeping is behind a mutex, not thread-bound). The lock itself is
//! `Send` iff `T: Send` and `Sync` iff `T: Send + Sync`, like `std::sync::RwLock`.
//!
//! # Caveats
//!
//! - A thread that holds a borrow and blocks on a conflicting one of the same lock deadlocks (as with any
//!   readers-writer lock), and so does a second `read` of a range it holds for reading once a conflicting
//!   write is queued in between (FIFO: the new read queues behind that write, which waits for the held read).
//!   Take overlapping ranges as one borrow, or use `try_*`.
//! - There is no poisoning: a panic while a `WriteGuard` is alive releases the range with whatever was
//!   written so far.
//! - `mem::forget` on a guard, or on a queued future, leaks its borrow: the range stays taken (in a lock
//!   lent by `with_slice`, until it returns; a leaked future's waker is dropped then). So does the
//!   delegation runtime's shutdown for a fiber it abandons holding a guard or waiting in `read`/`write`.
//! - In a delegated closure, "a borrow of a fiber of this worker" means one *requested* on the stack of
//!   such a fiber: every borrow records the stack pointer of the requesting call (free; no thread-local
//!   read on the uncontended path), and only a delegated closure that must wait compares those with its
//!   worker's fiber stacks (O(f log f + n log f) for f fibers and n recorded borrows). Nothing runs when a
//!   guard moves, so the record does not follow it: a guard taken in such a fiber and moved to a plain thread
//!   still counts (the closure panics where it could have waited), one taken elsewhere and moved into such a
//!   fiber does not (the closure hangs). Queued requests are followed, not the owners of held borrows: a
//!   thread holding a range the closure waits for, itself blocked behind such a fiber, hangs it, and so do
//!   closures on two workers each waiting for a fiber of the other's (each sees its own fibers). A request
//!   that overtakes the closure's, or one it waits for, later (a higher priority) is not examined, nor
//!   are futures: a `read_async`/`write_async` future polled in a delegated closure just returns `Pending`,
//!   and blocking on it there (`block_on`) hangs the same way, where keeping it to poll later does not.
//! - Every lock and unlock takes a mutex and updates two trees (about 50 ns per lock + unlock
//!   uncontended, on the development machine); for many short borrows of chunks fixed in advance, a
//!   `Vec<Mutex<chunk>>` or atomics are cheaper (see `docs/interval.md` for measured numbers).

mod future;
mod guard;
mod mutex;
mod state;
mod tree;

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Bound, Range, RangeBounds};
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard, PoisonError};

pub use future::{ReadFuture, WriteFuture};
pub use guard::{ReadGuard, WriteGuard};
pub use mutex::{IntervalMutex, PrioritizedMutex};

use state::{Request, State, Wake};
use crate::delegation::api::fiber::Waiter;
#[cfg(feature = "may")]
use crate::delegation::client::outbox::in_may_coroutine;
use crate::delegation::stack;
use crate::delegation::worker::context;

/// A slice whose sub-ranges can be locked for reading or writing independently. See the
/// [module docs](self).
pub struct IntervalRwLock<T> {
    state: Mutex<State>,
    data: Buffer<T>,
    /// The type the user holds, for panic messages: `IntervalRwLock`, or `IntervalMutex` (which wraps one).
    name: &'static str,
}

// SAFETY: sharing `&IntervalRwLock<T>` among threads lets them obtain `&[T]` (read guards: needs
// `T: Sync`) and `&mut [T]` (write guards, which may be dropped or used on any thread: needs `T: Send`)
// to the elements. The bookkeeping in `state` guarantees that no two of these overlap unless both are
// shared, and its mutex orders every release before the grant it enables, so accesses to
// one element from different borrows happen-before each other. This is `RwLock<T>`'s bound.
unsafe impl<T: Send + Sync> Sync for IntervalRwLock<T> {}

/// The elements, as a raw pointer (from `Box::into_raw`, or from a `&mut [T]` lent to
/// [`IntervalRwLock::with_slice`]) so that disjoint `&mut [T]` can be formed from a shared
/// `&IntervalRwLock`: a `&mut Box<[T]>` or `&mut [T]` would assert uniqueness over all of the elements, and
/// a `&[T]` would forbid writing through it.
struct Buffer<T> {
    ptr: NonNull<T>,
    len: usize,
    /// False for a lent slice: nothing is freed or dropped here, and the owner gets it back.
    owned: bool,
    /// Owns the `T`s (drop check) and makes the lock invariant in `T`, as an `UnsafeCell<T>` would:
    /// a covariant lock would let a `WriteGuard` store a shorter-lived value than the owner expects.
    _owns: PhantomData<UnsafeCell<T>>,
}

// SAFETY: `Buffer<T>` owns its elements like a `Box<[T]>` does; moving it to another thread moves them.
unsafe impl<T: Send> Send for Buffer<T> {}

impl<T> Buffer<T> {
    fn new(elements: Box<[T]>) -> Self {
        let len = elements.len();
        let ptr = NonNull::new(Box::into_raw(elements).cast::<T>()).expect("a Box is never null");
        Buffer {
            ptr,
            len,
            owned: true,
            _owns: PhantomData,
        }
    }

    /// Elements lent for the life of the buffer.
    ///
    /// # Safety
    /// The buffer must be dropped before the borrow of `elements` ends (it keeps no lifetime).
    unsafe fn lent(elements: &mut [T]) -> Self {
        Buffer {
            ptr: NonNull::from(&mut *elements).cast::<T>(),
            len: elements.len(),
            owned: false,
            _owns: PhantomData,
        }
    }

    /// A pointer to element `index <= len`, with the provenance of the whole allocation.
    fn at(&self, index: usize) -> *mut T {
        assert!(index <= self.len);
        // SAFETY: `index <= len`, so the result is inside the allocation or one past its end.
        unsafe { self.ptr.as_ptr().add(index) }
    }

    fn get_mut(&mut self) -> &mut [T] {
        // SAFETY: the pointer and length describe the box given up by `Box::into_raw` (or the lent slice, whose
        // lock is never reached through `&mut`); `&mut self` rules out every guard (guards borrow the lock), so
        // this is the only reference into the elements.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    fn into_box(self) -> Box<[T]> {
        // A lent slice's lock is only ever reached through `&` (`with_slice`), and this takes it by value.
        assert!(
            self.owned,
            "a lent slice is given back by `with_slice`, not taken out"
        );
        let this = ManuallyDrop::new(self);
        // SAFETY: the pointer and length came from `Box::into_raw` of a `Box<[T]>`, which is rebuilt exactly
        // once: `ManuallyDrop` keeps `Drop for Buffer` from freeing it again.
        unsafe {
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                this.ptr.as_ptr(),
                this.len,
            ))
        }
    }
}

impl<T> Drop for Buffer<T> {
    fn drop(&mut self) {
        if !self.owned {
            return; // lent: its owner drops the elements
        }
        // SAFETY: as in `into_box`; `drop` runs at most once and `into_box` skips it.
        drop(unsafe {
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.len,
            ))
        });
    }
}

impl<T> IntervalRwLock<T> {
    /// Takes ownership of the elements: a `Vec<T>`, a `Box<[T]>`, an array, or a `&[T]` of `Clone`s.
    pub fn new(elements: impl Into<Box<[T]>>) -> Self {
        IntervalRwLock {
            state: Mutex::new(State::new()),
            data: Buffer::new(elements.into()),
            name: "IntervalRwLock",
        }
    }

    /// Lends `elements` to a lock for the length of `f`, which gets the lock by reference (`interlock`'s
    /// `SliceRef` locks): the slice is locked in place, not copied, and is the caller's again, as `f` left
    /// it, once `f` returns. Guards and futures borrow the lock, so none outlives `f`; to share the lock
    /// among threads, spawn them in a [`std::thread::scope`] inside `f`.
    ///
    /// ```
    /// use trust_core::interval::IntervalRwLock;
    ///
    /// let mut pixels = vec![0u8; 8];
    /// IntervalRwLock::with_slice(&mut pixels, |lock| {
    ///     std::thread::scope(|s| {
    ///         s.spawn(|| lock.write(..4).fill(1));
    ///         s.spawn(|| lock.write(4..).fill(2));
    ///     });
    ///     assert_eq!(lock.read(3..5).to_vec(), [1, 2]);
    /// });
    /// assert_eq!(pixels, [1, 1, 1, 1, 2, 2, 2, 2]);
    /// ```
    pub fn with_slice<R>(elements: &mut [T], f: impl FnOnce(&IntervalRwLock<T>) -> R) -> R {
        // SAFETY: the lock lives in this frame, inside the borrow of `elements`, and `f` gets it by `&` only.
        let lock = unsafe { Self::lent(elements, "IntervalRwLock") };
        f(&lock)
    }

    /// A lock over `elements` in place, whose panics name type `name`.
    ///
    /// # Safety
    /// The lock must be dropped before the borrow of `elements` ends, and be reachable only through `&`: a
    /// lock moved out could outlive the elements (and `into_inner` or `replace_container`, which need it by
    /// value or `&mut`, would panic: the elements are their owner's).
    pub(crate) unsafe fn lent(elements: &mut [T], name: &'static str) -> Self {
        IntervalRwLock {
            state: Mutex::new(State::new()),
            // SAFETY: the lock, and its buffer with it, is dropped before the borrow ends (this function's
            // contract).
            data: unsafe { Buffer::lent(elements) },
            name,
        }
    }

    /// The lock inside an `IntervalMutex`, whose panics name that type.
    pub(crate) fn named(elements: Box<[T]>, name: &'static str) -> Self {
        IntervalRwLock {
            name,
            ..IntervalRwLock::new(elements)
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.data.len == 0
    }

    /// Gives the elements back (no guard can be alive: they borrow the lock).
    pub fn into_inner(self) -> Vec<T> {
        self.into_boxed_slice().into_vec()
    }

    /// Gives the elements back as a boxed slice.
    pub fn into_boxed_slice(self) -> Box<[T]> {
        self.data.into_box()
    }

    /// All elements, mutably, with no locking: `&mut self` proves that no guard or future is alive.
    pub fn get_mut(&mut self) -> &mut [T] {
        self.data.get_mut()
    }

    /// Puts `elements` in place of the current ones and returns those, with no locking: `&mut self`
    /// proves that no guard or future is alive. The length may change; the bookkeeping starts afresh
    /// (it can only hold borrows leaked with `mem::forget`, whose guards can no longer be used).
    ///
    /// ```
    /// use trust_core::interval::IntervalRwLock;
    ///
    /// let mut lock = IntervalRwLock::new(vec![1, 2, 3]);
    /// let old = lock.replace_container(vec![7; 5]);
    /// assert_eq!((&*old, lock.len()), (&[1, 2, 3][..], 5));
    /// assert_eq!(&*lock.take_container(), [7; 5]);
    /// assert!(lock.is_empty());
    /// ```
    pub fn replace_container(&mut self, elements: impl Into<Box<[T]>>) -> Box<[T]> {
        let old = std::mem::replace(&mut self.data, Buffer::new(elements.into()));
        *self.state.get_mut().unwrap_or_else(PoisonError::into_inner) = State::new();
        old.into_box()
    }

    /// Takes the elements out, leaving the lock empty (length 0), with no locking: `&mut self` proves
    /// that no guard or future is alive.
    pub fn take_container(&mut self) -> Box<[T]> {
        self.replace_container(Vec::new())
    }

    /// Requests with a priority: among *conflicting* waiting requests, a higher priority is granted
    /// first, and equal priorities in arrival order (ticket); the default, used by every other method,
    /// is 0. A priority never preempts a held borrow, and `try_*` stay at 0 (they never wait). A stream of
    /// higher-priority requests can keep a conflicting lower-priority one waiting for as long as it lasts.
    ///
    /// ```
    /// use trust_core::interval::IntervalRwLock;
    ///
    /// let lock = IntervalRwLock::new(vec![0u32; 8]);
    /// let held = lock.write(..);
    /// std::thread::scope(|s| {
    ///     let normal = s.spawn(|| lock.write(0..4)[0]);
    ///     while lock.queued() < 1 { std::thread::yield_now(); }
    ///     let urgent = s.spawn(|| lock.prioritized(5).write(2..6)[2]);
    ///     while lock.queued() < 2 { std::thread::yield_now(); }
    ///     drop(held); // `urgent` is granted first, though it came second
    ///     urgent.join().unwrap();
    ///     normal.join().unwrap();
    /// });
    /// ```
    pub fn prioritized(&self, priority: u32) -> Prioritized<'_, T> {
        Prioritized {
            lock: self,
            priority,
        }
    }

    /// Locks `range` for reading, blocking the thread (in a fiber, suspending the fiber) until no earlier
    /// conflicting borrow (a write that overlaps it, held or queued) remains.
    ///
    /// Panics if `range` is out of bounds or inverted. Blocking on a range that this thread already
    /// holds for writing deadlocks, and so does one it holds for reading once a conflicting write is queued
    /// in between (the new read queues behind that write, which waits for the held read).
    #[track_caller]
    pub fn read(&self, range: impl RangeBounds<usize>) -> ReadGuard<'_, T> {
        let range = self.bounds(&range);
        let ticket = self.lock_blocking(&range, false, 0);
        ReadGuard::new(self, range, ticket)
    }

    /// Locks `range` for writing, blocking the thread (in a fiber, suspending the fiber) until no earlier
    /// borrow that overlaps it (read or write, held or queued) remains.
    ///
    /// Panics if `range` is out of bounds or inverted. Blocking on a range that this thread already
    /// holds deadlocks.
    #[track_caller]
    pub fn write(&self, range: impl RangeBounds<usize>) -> WriteGuard<'_, T> {
        let range = self.bounds(&range);
        let ticket = self.lock_blocking(&range, true, 0);
        WriteGuard::new(self, range, ticket)
    }

    /// Locks `range` for reading if that needs no waiting; otherwise returns an error and records
    /// nothing. A queued conflicting write counts: `try_read` does not jump the queue.
    ///
    /// Panics if `range` is out of bounds or inverted.
    #[track_caller]
    pub fn try_read(
        &self,
        range: impl RangeBounds<usize>,
    ) -> Result<ReadGuard<'_, T>, TryLockError> {
        let range = self.bounds(&range);
        let ticket = self.lock_now(&range, false)?;
        Ok(ReadGuard::new(self, range, ticket))
    }

    /// Locks `range` for writing if that needs no waiting; otherwise returns an error and records
    /// nothing. A queued overlapping borrow counts: `try_write` does not jump the queue.
    ///
    /// Panics if `range` is out of bounds or inverted.
    #[track_caller]
    pub fn try_write(
        &self,
        range: impl RangeBounds<usize>,
    ) -> Result<WriteGuard<'_, T>, TryLockError> {
        let range = self.bounds(&range);
        let ticket = self.lock_now(&range, true)?;
        Ok(WriteGuard::new(self, range, ticket))
    }

    /// A future that locks `range` for reading. It takes its place in the queue when first polled;
    /// dropping it before it completes withdraws the request.
    ///
    /// Panics (here, not when polled) if `range` is out of bounds or inverted.
    #[doc(alias = "async_read")] // interlock's name
    #[track_caller]
    pub fn read_async(&self, range: impl RangeBounds<usize>) -> ReadFuture<'_, T> {
        ReadFuture::new(self, self.bounds(&range), 0)
    }

    /// A future that locks `range` for writing. It takes its place in the queue when first polled;
    /// dropping it before it completes withdraws the request.
    ///
    /// Panics (here, not when polled) if `range` is out of bounds or inverted.
    #[doc(alias = "async_write")] // interlock's name
    #[track_caller]
    pub fn write_async(&self, range: impl RangeBounds<usize>) -> WriteFuture<'_, T> {
        WriteFuture::new(self, self.bounds(&range), 0)
    }

    /// Number of borrows of non-empty ranges held right now (a snapshot, for monitoring and tests).
    pub fn held(&self) -> usize {
        self.state().held()
    }

    /// Number of requests queued right now (a snapshot, for monitoring and tests).
    pub fn queued(&self) -> usize {
        self.state().queued()
    }

    /// The bookkeeping, locked. Poisoning cannot mean a half-done update: no code inside the critical
    /// sections calls user code or panics (short of a bug or an allocation failure), so a poisoned mutex
    /// is just entered again.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves `range` against the length, panicking with the range as written and the length.
    #[track_caller]
    fn bounds(&self, range: &impl RangeBounds<usize>) -> Range<usize> {
        let len = self.len();
        let start = match range.start_bound() {
            Bound::Included(&s) => Some(s),
            Bound::Excluded(&s) => s.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => Some(len),
        };
        let shown = || show_range(range.start_bound(), range.end_bound());
        match (start, end) {
            (Some(start), Some(end)) if start <= end && end <= len => start..end,
            (Some(start), Some(end)) if start > end => panic!(
                "{}: range {} starts after it ends (start {start} > end {end}); \
                 the lock has len {len}",
                self.name,
                shown()
            ),
            _ => panic!(
                "{}: range {} is out of bounds for len {len}; \
                 borrow a range within 0..{len}",
                self.name,
                shown()
            ),
        }
    }

    /// Takes `range` now or fails; ticket 0 for an empty range.
    fn lock_now(&self, range: &Range<usize>, write: bool) -> Result<u64, TryLockError> {
        if range.is_empty() {
            return Ok(0);
        }
        self.state()
            .try_request(range.start, range.end, write, stack::stack_pointer())
            .ok_or_else(|| TryLockError {
                range: range.clone(),
                write,
                name: self.name,
            })
    }

    /// Takes `range`, parking the thread (suspending the fiber, parking the `may` coroutine) while it is queued;
    /// ticket 0 for an empty range.
    fn lock_blocking(&self, range: &Range<usize>, write: bool, priority: u32) -> u64 {
        if range.is_empty() {
            return 0;
        }
        // Who waits is asked only if it must (as `thread::current()` was): not on the uncontended path, which
        // records where it was asked from (its stack pointer, not a thread-local) and nothing more. A `may`
        // coroutine's parker is made then too, shared by the lock (which unparks it) and the coroutine.
        let mut coroutine_parker = None;
        let request = self.state().request(range.start, range.end, write, priority, stack::stack_pointer(), || {
            match new_coroutine_parker() {
                Some(parker) => Wake::Coroutine(coroutine_parker.insert(parker).clone()),
                None => Wake::Blocked(Waiter::current()),
            }
        });
        match (request, coroutine_parker) {
            (Request::Granted(ticket), _) => ticket,
            (Request::Queued(ticket), Some(parker)) => self.wait_as_coroutine(range, ticket, write, parker),
            (Request::Queued(ticket), None) if in_a_workers_scheduler() => {
                self.cancel(range, ticket, write);
                scheduler_wait_panic(self.name, range, write)
            }
            (Request::Queued(ticket), None)
                if self.withdrawn_if_it_waits_for_a_stopped_fiber(range, ticket, write) =>
            {
                delegated_wait_panic(self.name, range, write)
            }
            (Request::Queued(ticket), None) => loop {
                // A grant that lands before `park` leaves the unpark token set, so `park` returns at
                // once (a fiber's wake waits in its worker's mail until it suspends); spurious wake-ups just
                // check again.
                Waiter::current().wait();
                if self.state().is_granted(ticket) {
                    break ticket;
                }
            },
        }
    }

    /// In a closure delegated to a worker (its thread parks to wait, stopping all of the worker's fibers):
    /// withdraws the queued request `ticket` and returns true if it waits for a borrow of one of those
    /// fibers — a conflicting one held, or queued ahead of it, or one that a blocking request it waits for
    /// waits for in turn (`State::waits_for`) — which could never resume to release it. Elsewhere, or if it
    /// waits only for others (a plain thread, a fiber of another worker, a `may` coroutine: each releases in
    /// time), returns false and the request stays queued. Only the state at this moment is examined: a
    /// request that later overtakes this one (a higher priority, from another thread) and waits for such a
    /// fiber still hangs it.
    ///
    /// "A borrow of a fiber" means one *requested* on a fiber's stack ([`tree::Entry::origin`]), which is
    /// what the lock can know without a thread-local read on the granted path. Guards are `Send`, and no
    /// code runs when one moves, so the record cannot follow it: we chose to keep where it was taken. A guard
    /// taken in a fiber of this worker and moved to a plain thread therefore still counts as that fiber's
    /// (as long as a fiber of this worker runs on that stack), and the closure panics where it could have
    /// waited: a spurious panic that names `try_*`, rather than a silent hang of the trustee. The converse,
    /// a guard taken elsewhere and moved *into* a fiber of this worker, is not seen, and still hangs (see
    /// `docs/interval.md`, Caveats).
    #[cold]
    #[inline(never)]
    fn withdrawn_if_it_waits_for_a_stopped_fiber(&self, range: &Range<usize>, ticket: u64, write: bool) -> bool {
        let Some(fibers) = context::fibers_stopped_by_a_delegated_wait() else {
            return false;
        };
        // Taken before the mutex is locked: the fibers change only on this thread, which is here.
        let stacks = fibers.fiber_stacks();
        let mut state = self.state();
        if !state.waits_for(ticket, |origin| stacks.contains(origin)) {
            return false;
        }
        let (wakes, own_waker) = state.cancel(range.start, range.end, ticket, write);
        drop(state);
        Wake::drop_then_wake_all(own_waker, wakes);
        true
    }

    /// Waits for `ticket` in a `may` coroutine: parks it on `parker` until the release or cancel that grants it
    /// unparks it ([`Wake::Coroutine`]), as threads and fibers are woken. Parking the thread would stop the
    /// coroutine's other coroutines, one of which may hold the range; `may`'s park suspends only this one.
    ///
    /// No lost wake-up: the lock's copy of `parker` is recorded with the request, in the critical section that
    /// queues it, and a grant removes the request from the waiters (what `is_granted` reads) and takes that copy
    /// in one critical section, then unparks after the mutex is unlocked. So a check below that finds the
    /// request not granted comes before the grant in the mutex's order, and the unpark after that check: before
    /// the park (`may` keeps it as a token, and the park returns at once), while the park suspends the
    /// coroutine (`may` looks at the token again once the coroutine is stored: `Park::subscribe`), or after (the
    /// coroutine is scheduled). A park that returns without a grant just checks again (none should: only the
    /// grant unparks this parker, and a cancel unwinds out of the park; but see the cancelled case below).
    ///
    /// No timeout: a queued request leaves the waiters only through a release or cancel that returns its wake,
    /// or its own withdrawal, and `Wake::drop_then_wake_all` unparks it before any executor code runs; the lock
    /// cannot go while the request is queued (the caller borrows it). A timeout would only hide a lost wake-up.
    ///
    /// A parker of its own per wait, not the coroutine's handle (`may::coroutine::current()`, whose `unpark`
    /// pairs with `may::coroutine::park`): `may` 0.3.51's park, unparked between its check of the token and the
    /// store of the suspended coroutine, resumes the coroutine inside `Park::subscribe` while a flag
    /// (`wait_kernel`) is set that `Park::drop` spins on; a coroutine that ends there drops its local handle,
    /// and if that was the last (a detached coroutine, whose releaser dropped its handle after the unpark),
    /// `Park::drop` spins for good on the flag its own caller holds, a whole core, and the `may` thread runs
    /// nothing again (review 96: `probe_may_coroutine_park_...` in `tests/adversarial_review96.rs`). A
    /// `Blocker`'s last copy is dropped by the coroutine (where `Park::drop` waits by yielding it, which unwinds
    /// that nesting) or by the releaser (which waits for the other thread's `subscribe`): never in `may`'s
    /// scheduler on the thread that holds the flag. It costs one allocation per wait (a thread's wait clones
    /// its `Thread` handle).
    ///
    /// A coroutine cancelled while it waits unwinds from the park (`may` checks the cancel as it resumes it):
    /// its request is withdrawn, or it would hold back every later conflicting borrow for good. One already
    /// unwinding from its cancel (a destructor's `write`) is never suspended again: the park returns at once,
    /// and the wait then naps the thread 1 ms at a time, as `MayWait` does (review 74): nothing else can run on
    /// it anyway.
    #[cfg(feature = "may")]
    fn wait_as_coroutine(
        &self,
        range: &Range<usize>,
        ticket: u64,
        write: bool,
        parker: state::CoroutineParker,
    ) -> u64 {
        struct Withdraw<'a, T> {
            lock: &'a IntervalRwLock<T>,
            range: &'a Range<usize>,
            ticket: u64,
            write: bool,
        }
        impl<T> Drop for Withdraw<'_, T> {
            fn drop(&mut self) {
                self.lock.cancel(self.range, self.ticket, self.write);
            }
        }
        const THREAD_NAP: std::time::Duration = std::time::Duration::from_millis(1);
        let withdraw = Withdraw {
            lock: self,
            range,
            ticket,
            write,
        };
        let mut unsuspendable = false;
        while !self.state().is_granted(ticket) {
            if unsuspendable {
                std::thread::sleep(THREAD_NAP);
            } else {
                // Its result says nothing: a cancelled coroutine's park returns `Ok` while it unwinds (`may`'s
                // `check_cancel` clears the cancel's error as it declines to panic a second time).
                let _ = parker.park(None);
                // Only the grant unparks this parker, and only a cancel resumes it otherwise: a park that
                // ended without the grant while the coroutine unwinds was refused by `may`, as every later
                // one would be.
                unsuspendable = std::thread::panicking();
            }
        }
        std::mem::forget(withdraw);
        ticket
    }

    /// Without `may` no caller is a coroutine, and no parker exists.
    #[cfg(not(feature = "may"))]
    fn wait_as_coroutine(&self, _: &Range<usize>, _: u64, _: bool, parker: state::CoroutineParker) -> u64 {
        match parker {}
    }

    /// Releases a held borrow (ticket 0: nothing recorded) and wakes whoever it let through, after
    /// the mutex is unlocked so that they do not wake into a locked mutex.
    fn release(&self, range: &Range<usize>, ticket: u64, write: bool) {
        if ticket != 0 {
            let wakes = self.state().release(range.start, range.end, ticket, write);
            Wake::wake_all(wakes);
        }
    }

    /// Withdraws a request that may be queued or granted (a dropped future), waking as `release`;
    /// its own waker is dropped only after the mutex is unlocked, and the others are woken even if that
    /// drop panics.
    fn cancel(&self, range: &Range<usize>, ticket: u64, write: bool) {
        let (wakes, own_waker) = self.state().cancel(range.start, range.end, ticket, write);
        Wake::drop_then_wake_all(own_waker, wakes);
    }
}

/// A parker for the caller if it is a `may` coroutine ([`IntervalRwLock::wait_as_coroutine`]).
fn new_coroutine_parker() -> Option<state::CoroutineParker> {
    #[cfg(feature = "may")]
    {
        in_may_coroutine().then(may::sync::Blocker::current)
    }
    #[cfg(not(feature = "may"))]
    {
        None
    }
}

/// True on a worker's thread outside any fiber and outside a delegated closure: in a continuation its scheduler
/// runs. Parking there would stop the worker, and with it its fibers, one of which may hold the range (it
/// could never resume to release it). (A delegated closure parks, unless it waits for one of those fibers:
/// `withdrawn_if_it_waits_for_a_stopped_fiber`.)
fn in_a_workers_scheduler() -> bool {
    context::worker().is_some() && context::fiber().is_none() && !context::in_delegated()
}

/// The name [`IntervalMutex`] gives the lock inside it, for panic messages.
pub(crate) const INTERVAL_MUTEX: &str = "IntervalMutex";

/// What the caller calls the blocking, `try_` and async borrows that a panic names: `lock`, `try_lock` and
/// `lock_async` on an [`IntervalMutex`] (which has no `write`: review 35 found its panics naming `write` and
/// `try_write`), `read`/`write` and theirs on the lock itself.
fn call_names(name: &str, write: bool) -> (&'static str, &'static str, &'static str) {
    match (name, write) {
        (INTERVAL_MUTEX, _) => ("lock", "try_lock", "lock_async"),
        (_, true) => ("write", "try_write", "write_async"),
        (_, false) => ("read", "try_read", "read_async"),
    }
}

#[cold]
#[inline(never)]
fn scheduler_wait_panic(name: &str, range: &Range<usize>, write: bool) -> ! {
    let (call, try_call, async_call) = call_names(name, write);
    panic!(
        "`{name}::{call}({range:?})` must wait for a conflicting borrow, in a continuation that runs on a \
         worker (outside any fiber: it cannot suspend): waiting there would stop the worker, whose fibers may \
         hold that range and could never resume to release it; use `{try_call}`, or borrow the range in the \
         fiber itself (after `wait_pending`), or with `{async_call}`"
    )
}

#[cold]
#[inline(never)]
fn delegated_wait_panic(name: &str, range: &Range<usize>, write: bool) -> ! {
    let (call, try_call, _) = call_names(name, write);
    panic!(
        "`{name}::{call}({range:?})` must wait for a borrow of a fiber of this worker (a conflicting one held or \
         queued ahead of it, or one a request ahead of it waits for), in a closure delegated to the worker (it \
         cannot suspend): waiting there would park the worker's thread, and that fiber could never resume to \
         release the range, so the `apply` would never return; the request was withdrawn. Use `{try_call}` in \
         the closure, or borrow the range in a fiber (`spawn`, or `launch` on this trustee) instead"
    )
}

/// An [`IntervalRwLock`] seen through a request priority; made by
/// [`IntervalRwLock::prioritized`]. Its methods are the lock's blocking and async ones.
pub struct Prioritized<'a, T> {
    lock: &'a IntervalRwLock<T>,
    priority: u32,
}

impl<'a, T> Prioritized<'a, T> {
    /// [`IntervalRwLock::read`] with this priority.
    #[track_caller]
    pub fn read(&self, range: impl RangeBounds<usize>) -> ReadGuard<'a, T> {
        let range = self.lock.bounds(&range);
        let ticket = self.lock.lock_blocking(&range, false, self.priority);
        ReadGuard::new(self.lock, range, ticket)
    }

    /// [`IntervalRwLock::write`] with this priority.
    #[track_caller]
    pub fn write(&self, range: impl RangeBounds<usize>) -> WriteGuard<'a, T> {
        let range = self.lock.bounds(&range);
        let ticket = self.lock.lock_blocking(&range, true, self.priority);
        WriteGuard::new(self.lock, range, ticket)
    }

    /// [`IntervalRwLock::read_async`] with this priority.
    #[doc(alias = "async_read")] // interlock's name
    #[track_caller]
    pub fn read_async(&self, range: impl RangeBounds<usize>) -> ReadFuture<'a, T> {
        ReadFuture::new(self.lock, self.lock.bounds(&range), self.priority)
    }

    /// [`IntervalRwLock::write_async`] with this priority.
    #[doc(alias = "async_write")] // interlock's name
    #[track_caller]
    pub fn write_async(&self, range: impl RangeBounds<usize>) -> WriteFuture<'a, T> {
        WriteFuture::new(self.lock, self.lock.bounds(&range), self.priority)
    }
}

/// Renders a range as written: `3..=5`, `..7`, `(excluded 2)..`, ...
fn show_range(start: Bound<&usize>, end: Bound<&usize>) -> String {
    let start = match start {
        Bound::Included(s) => s.to_string(),
        Bound::Excluded(s) => format!("(excluded {s})"),
        Bound::Unbounded => String::new(),
    };
    let end = match end {
        Bound::Included(e) => format!("={e}"),
        Bound::Excluded(e) => e.to_string(),
        Bound::Unbounded => String::new(),
    };
    format!("{start}..{end}")
}

impl<T> From<Vec<T>> for IntervalRwLock<T> {
    fn from(elements: Vec<T>) -> Self {
        IntervalRwLock::new(elements)
    }
}

impl<T> From<Box<[T]>> for IntervalRwLock<T> {
    fn from(elements: Box<[T]>) -> Self {
        IntervalRwLock::new(elements)
    }
}

impl<T> Default for IntervalRwLock<T> {
    fn default() -> Self {
        IntervalRwLock::new(Vec::new())
    }
}

impl<T> fmt::Debug for IntervalRwLock<T> {
    /// Shows the length and the borrow counts, not the elements (reading them would need a lock).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The counts are read, and the state's mutex let go, before anything is written: writing to `f` runs
        // the caller's code (a socket, a logger, a fiber that suspends), which must not hold up every borrow
        // of this lock (review 60).
        let (held, queued) = {
            let state = self.state();
            (state.held(), state.queued())
        };
        // `IntervalMutex` when it wraps one (as in a `PrioritizedMutex`'s output).
        f.debug_struct(self.name)
            .field("len", &self.len())
            .field("held", &held)
            .field("queued", &queued)
            .finish()
    }
}

impl<T> fmt::Debug for Prioritized<'_, T> {
    /// The lock as its own `Debug` shows it (no elements: no `T: Debug` needed), and the priority.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prioritized")
            .field("lock", self.lock)
            .field("priority", &self.priority)
            .finish()
    }
}

/// `try_read` or `try_write` found a conflicting borrow, held or queued; nothing was recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TryLockError {
    range: Range<usize>,
    write: bool,
    /// The type the caller holds, whose waiting calls the message names (`IntervalMutex`: `lock`, `lock_async`).
    name: &'static str,
}

impl TryLockError {
    /// The range that could not be locked.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }
}

impl fmt::Display for TryLockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (call, _, async_call) = call_names(self.name, self.write);
        let kind = if self.name == INTERVAL_MUTEX {
            ""
        } else if self.write {
            "write-"
        } else {
            "read-"
        };
        write!(
            f,
            "cannot {kind}lock {}..{} now: it conflicts with a borrow that is held or queued \
             (use `{call}` or `{async_call}` to wait for it)",
            self.range.start, self.range.end
        )
    }
}

impl std::error::Error for TryLockError {}

/// Runs the code blocks of the user guide, `docs/interval.md`, as doctests, so the guide cannot drift
/// from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/interval.md")]
struct GuideExamples;
