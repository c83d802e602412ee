//! Review 42 (hostile): `trust_core::interval` (`IntervalRwLock`, `IntervalMutex`, their guards and futures)
//! against docs/interval.md and the rustdoc of its public items.
//!
//! Attacked: wakers that panic in `clone` or `drop` (at a granted first poll, at a re-poll, at a withdrawal),
//! a waker replaced on every poll (clones kept, who is woken), first-poll order, futures moved to and dropped
//! on other threads, a wake that releases another range of the same lock, spurious unparks, `usize::MAX`
//! zero-sized elements and over-aligned ones, allocations of granted borrows (counted), the space kept after
//! a burst (counted), a stream of readers against a writer, priorities against FIFO, 100 000 waiters woken by
//! one release, a chain of writers drained one wake at a time, `replace_container` with a leaked future,
//! `Debug`, a blocking `write` in a thread-local's destructor, the panic location of a bad range on every way
//! in, a future polled in a delegated closure and completed elsewhere, and a fiber queued at the delegation
//! runtime's shutdown; six compile-fail cases under `ui-tests/tests/ui/interval/` (invariance, a reference
//! into a temporary guard, a future of a `!Sync` lock, `replace_container` while borrowed, a lock of `Rc`s,
//! an `IntervalMutex` of `Cell`s).
//!
//! Found and fixed in the code (future.rs, state.rs, mod.rs):
//! - `a_granted_first_poll_whose_waker_drop_panics_leaks_no_range`: a future granted on its first poll
//!   dropped its unused waker clone before noting its ticket; a panicking drop left it at `Start`, so the
//!   borrow leaked for good (`(held, queued)` stayed `(1, 0)`, `try_write(..)` failed forever).
//! - `a_withdrawn_future_whose_waker_drop_panics_still_wakes_the_thread_behind_it`: a withdrawal dropped the
//!   future's own stored waker before waking the requests it granted; a panicking drop skipped the wakes, and
//!   the thread it let through stayed parked (`HUNG: no answer within 10 s`).
//!
//! Found and stated in docs/interval.md (and the module docs), tests kept:
//! - `a_chain_of_writers_is_served_one_wake_at_a_time_in_order`: "the k term is the work of waking k waiters"
//!   was wrong: a release visits every conflicting waiter behind it (each counted it), so draining n writers
//!   queued for one range costs O(n² log n) (10 000 took 6.7 s in a debug build; 100 000 readers, 0.65 s).
//! - `the_bookkeeping_keeps_the_space_of_its_largest_burst_until_replaced`: "Space is O(n)" held only for the
//!   largest n so far: the arenas never shrink.
//! - `a_second_read_of_a_held_read_waits_behind_a_queued_writer`: the deadlock caveat named conflicting ranges
//!   only; a re-read of a range the thread reads waits for good behind a queued writer.
//! - `higher_priority_readers_overtake_a_queued_writer_for_as_long_as_they_come`: priorities can starve a
//!   lower-priority request; and a request with `p > 0` visits every conflicting waiter, not only those it
//!   overtakes (read in `State::request`).
//! - `ui-tests/tests/ui/interval/mutex-of-cell-is-not-sync.rs`: `IntervalMutex<T>` is `Sync` only for
//!   `T: Send + Sync` (it wraps the readers-writer lock), stricter than `std::sync::Mutex<T>`; now in the
//!   threads table and the type's rustdoc.
//! - `a_fiber_queued_at_shutdown_does_not_take_its_range_for_good` (ignored, KNOWN LIMIT): a fiber abandoned
//!   at shutdown while queued in `write` leaves its request recorded; once granted, the range is taken for
//!   good (`(held, queued) == (1, 0)`).
//!
//! Held: everything else here. Miri (`-Zmiri-strict-provenance`, no `may`): clean, 22 tests in about 20 s
//! (the three that need child processes or the delegation runtime are skipped there).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Wake, Waker};
use std::thread;

use trust_core::interval::{IntervalMutex, IntervalRwLock};

#[macro_use]
mod common;
use common::{calibrate, child_ok, eventually, panic_message, rt, spawn_on, within};

/// Smaller sizes under Miri, which runs many times slower.
fn size(native: usize, miri: usize) -> usize {
    if cfg!(miri) { miri } else { native }
}

fn poll_once<F: Future + Unpin>(f: &mut F, w: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(w))
}

/// A task's waker that counts its wakes; `Arc::strong_count` of it, less the test's own, is the number
/// of clones the lock keeps.
#[derive(Default)]
struct Task(AtomicUsize);

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Task {
    fn wakes(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn task() -> Arc<Task> {
    Arc::new(Task::default())
}

/// A raw waker whose `drop` panics (`clone`, `wake` and `wake_by_ref` do nothing). The test keeps the
/// original in a `ManuallyDrop`; every clone the lock makes panics when the lock drops it.
fn waker_whose_drop_panics() -> std::mem::ManuallyDrop<Waker> {
    fn clone(_: *const ()) -> RawWaker {
        RawWaker::new(std::ptr::null(), &VTABLE)
    }
    fn nothing(_: *const ()) {}
    fn panics(_: *const ()) {
        panic!("waker drop panics");
    }
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, nothing, nothing, panics);
    // SAFETY: the vtable's functions never look at the data pointer; none of them is unsafe to call.
    std::mem::ManuallyDrop::new(unsafe {
        Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE))
    })
}

// ---------------------------------------------------------------------------------------------------------
// Wakers that panic when dropped.
// ---------------------------------------------------------------------------------------------------------

/// Promise (docs/interval.md, Async: "Dropping one before it completes ... withdraws the request"; future.rs:
/// "a waker is user code"). A `read_async` whose range is free is granted on its first poll; the clone of
/// the waker that poll made (before locking the bookkeeping, in case it must queue) is then dropped, and that
/// drop panics. The future is dropped after the panic.
///
/// Measured before the fix: the poll panicked after the borrow was recorded and before the future noted its
/// ticket (it stayed at `Start`), so its drop withdrew nothing: `(held, queued)` stayed `(1, 0)` and
/// `try_write(..)` failed for good (a leaked range, without any `mem::forget`).
#[test]
fn a_granted_first_poll_whose_waker_drop_panics_leaks_no_range() {
    let lock = IntervalRwLock::new(vec![0u8; 8]);
    let waker = waker_whose_drop_panics();
    let mut f = lock.read_async(2..6);
    let r = catch_unwind(AssertUnwindSafe(|| poll_once(&mut f, &waker).is_ready()));
    assert_eq!(panic_message(r.unwrap_err()), "waker drop panics");
    drop(f);
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    assert!(lock.try_write(..).is_ok(), "the range leaked");
    // The same future polled again after the panic completes normally (it kept its ticket).
    let mut g = lock.write_async(0..4);
    let r = catch_unwind(AssertUnwindSafe(|| poll_once(&mut g, &waker).is_ready()));
    assert!(r.is_err());
    assert_eq!((lock.held(), lock.queued()), (1, 0));
    match poll_once(&mut g, Waker::noop()) {
        Poll::Ready(mut guard) => guard.fill(3),
        Poll::Pending => panic!("a granted future is pending"),
    }
    drop(g);
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    assert_eq!(lock.read(..).to_vec(), [3, 3, 3, 3, 0, 0, 0, 0]);
}

/// Promise (docs/interval.md, Async: dropping a queued future "withdraws the request, and the requests queued
/// behind it that waited only for it are granted and woken"). A `write_async(0..8)` is queued behind a held
/// `write(0..4)` with a waker whose drop panics; a thread blocks in `write(6..8)`, which waits only for the
/// future. The future is dropped: its withdrawal grants the thread, then drops the future's stored waker.
///
/// Measured before the fix: the stored waker's drop panicked before the granted requests were woken, so the
/// thread was granted (`queued() == 0`) but never unparked: `HUNG: no answer within 10 s`.
#[test]
fn a_withdrawn_future_whose_waker_drop_panics_still_wakes_the_thread_behind_it() {
    within(10, || {
        let lock = Arc::new(IntervalRwLock::new(vec![0u8; 8]));
        let held = lock.write(0..4);
        let waker = waker_whose_drop_panics();
        let mut f = lock.write_async(0..8);
        assert!(poll_once(&mut f, &waker).is_pending());
        let behind = {
            let lock = lock.clone();
            thread::spawn(move || lock.write(6..8).fill(6))
        };
        while lock.queued() < 2 {
            thread::yield_now();
        }
        let r = catch_unwind(AssertUnwindSafe(|| drop(f)));
        assert_eq!(panic_message(r.unwrap_err()), "waker drop panics");
        behind.join().unwrap();
        drop(held);
        assert_eq!((lock.held(), lock.queued()), (0, 0));
        assert_eq!(lock.read(..).to_vec(), [0, 0, 0, 0, 0, 0, 6, 6]);
    });
}

/// A waker whose `clone` panics makes the first poll panic before anything is recorded, and the future
/// can be polled again with a good waker; on a queued future it leaves the stored waker in place.
#[test]
fn a_waker_whose_clone_panics_records_nothing_and_keeps_the_stored_waker() {
    fn clone(_: *const ()) -> RawWaker {
        panic!("waker clone panics");
    }
    fn nothing(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, nothing, nothing, nothing);
    // SAFETY: the vtable's functions never look at the data pointer; none of them is unsafe to call.
    let bad = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) };
    let lock = IntervalRwLock::new(vec![0u8; 8]);
    let mut f = lock.write_async(0..4);
    let r = catch_unwind(AssertUnwindSafe(|| poll_once(&mut f, &bad).is_ready()));
    assert_eq!(panic_message(r.unwrap_err()), "waker clone panics");
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    let held = lock.write(2..6);
    let t = task();
    assert!(poll_once(&mut f, &Waker::from(t.clone())).is_pending());
    assert_eq!(Arc::strong_count(&t), 2, "the lock keeps one clone");
    let r = catch_unwind(AssertUnwindSafe(|| poll_once(&mut f, &bad).is_ready()));
    assert!(r.is_err());
    assert_eq!(Arc::strong_count(&t), 2, "the stored waker was kept");
    drop(held);
    assert_eq!(t.wakes(), 1);
    assert!(poll_once(&mut f, Waker::noop()).is_ready());
}

/// Promise (future.rs: the waker is "refreshed on every later poll"; interval_model: "every granted future
/// woken and no other"). A queued future polled with five different wakers in turn: the lock keeps exactly
/// one clone (the last), drops the others at once, and the grant wakes only the last, once; re-polling with
/// a waker that `will_wake` the stored one keeps the stored clone.
#[test]
fn a_future_polled_with_a_new_waker_each_time_keeps_one_clone_and_wakes_the_last() {
    let lock = IntervalRwLock::new(vec![0u8; 8]);
    let held = lock.write(..);
    let tasks: Vec<Arc<Task>> = (0..5).map(|_| task()).collect();
    let mut f = lock.read_async(1..3);
    for (i, t) in tasks.iter().enumerate() {
        assert!(poll_once(&mut f, &Waker::from(t.clone())).is_pending());
        let kept: Vec<usize> = tasks.iter().map(|t| Arc::strong_count(t) - 1).collect();
        let mut expected = vec![0; 5];
        expected[i] = 1;
        assert_eq!(kept, expected, "after poll {i}");
    }
    let last = Waker::from(tasks[4].clone());
    for _ in 0..3 {
        assert!(poll_once(&mut f, &last).is_pending());
    }
    assert_eq!(Arc::strong_count(&tasks[4]), 3, "ours, `last`, the lock's");
    drop(held);
    let wakes: Vec<usize> = tasks.iter().map(|t| t.wakes()).collect();
    assert_eq!(wakes, [0, 0, 0, 0, 1]);
    assert_eq!(
        Arc::strong_count(&tasks[4]),
        2,
        "the wake consumed the lock's clone"
    );
    let guard = match poll_once(&mut f, &last) {
        Poll::Ready(g) => g,
        Poll::Pending => panic!("granted and woken, but pending"),
    };
    assert_eq!(guard.range(), 1..3);
    assert_eq!(tasks[4].wakes(), 1);
}

/// Promise (docs/interval.md, Async: "The futures take their ticket on their first poll"). Two futures for
/// one range, created in one order and first polled in the other, are granted in poll order.
#[test]
fn futures_are_served_in_first_poll_order_not_creation_order() {
    let lock = IntervalRwLock::new(vec![0u8; 4]);
    let held = lock.write(..);
    let mut created_first = lock.write_async(0..2);
    let mut created_second = lock.write_async(1..3);
    let (a, b) = (task(), task());
    assert!(poll_once(&mut created_second, &Waker::from(b.clone())).is_pending());
    assert!(poll_once(&mut created_first, &Waker::from(a.clone())).is_pending());
    drop(held);
    assert_eq!((a.wakes(), b.wakes()), (0, 1));
    let g = match poll_once(&mut created_second, Waker::noop()) {
        Poll::Ready(g) => g,
        Poll::Pending => panic!("the first polled is not first served"),
    };
    assert!(poll_once(&mut created_first, &Waker::from(a.clone())).is_pending());
    drop(g);
    assert_eq!((a.wakes(), b.wakes()), (1, 1));
    assert!(poll_once(&mut created_first, Waker::noop()).is_ready());
}

/// Promise (docs/interval.md: a queued future "withdraws the request" when dropped; the futures are `Send`
/// for `T: Send + Sync`). A queued future moved to another thread, polled there with that thread's waker,
/// and dropped there lets the blocked thread behind it through.
#[test]
fn a_queued_future_moved_to_another_thread_and_dropped_there_lets_the_next_through() {
    within(10, || {
        let lock = Arc::new(IntervalRwLock::new(vec![0u32; 6]));
        let held = lock.write(0..2);
        let mut f = lock.write_async(0..6);
        assert!(poll_once(&mut f, Waker::noop()).is_pending());
        thread::scope(|s| {
            let behind = s.spawn(|| lock.write(4..6).fill(4));
            while lock.queued() < 2 {
                thread::yield_now();
            }
            s.spawn(move || {
                let t = task();
                assert!(poll_once(&mut f, &Waker::from(t.clone())).is_pending());
                drop(f);
                assert_eq!(t.wakes(), 0);
                assert_eq!(
                    Arc::strong_count(&t),
                    1,
                    "the withdrawn request's waker was dropped"
                );
            })
            .join()
            .unwrap();
            behind.join().unwrap();
        });
        drop(held);
        assert_eq!(lock.read(..).to_vec(), [0, 0, 0, 0, 4, 4]);
    });
}

/// Promise (`replace_container`: "the bookkeeping starts afresh (it can only hold borrows leaked with
/// `mem::forget` ...)"). A queued future leaked with `mem::forget` keeps its waker in the lock until the
/// bookkeeping is replaced, which drops it (exactly once); a leaked guard's range is free again after.
#[test]
fn replace_container_drops_the_waker_of_a_leaked_queued_future() {
    let mut lock = IntervalRwLock::new(vec![1u8; 4]);
    let t = task();
    std::mem::forget(lock.write(0..2));
    let mut f = lock.write_async(1..4);
    assert!(poll_once(&mut f, &Waker::from(t.clone())).is_pending());
    std::mem::forget(f);
    assert_eq!((lock.held(), lock.queued()), (1, 1));
    assert!(
        lock.try_read(3..4).is_err(),
        "the leaked request still queues"
    );
    assert_eq!(Arc::strong_count(&t), 2);
    let old = lock.replace_container(vec![2u8; 3]);
    assert_eq!(
        (&*old, Arc::strong_count(&t), t.wakes()),
        (&[1u8; 4][..], 1, 0)
    );
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    assert_eq!(lock.try_write(..).unwrap().to_vec(), [2, 2, 2]);
}

/// `Debug` of the lock, the mutex, the guards and the futures: exact strings (they read no element they
/// are not entitled to).
#[test]
fn debug_output_is_exact() {
    let lock = IntervalRwLock::new(vec![1u8, 2, 3, 4]);
    let r = lock.read(0..2);
    let mut f = lock.write_async(1..3);
    assert!(poll_once(&mut f, Waker::noop()).is_pending());
    assert_eq!(
        format!("{lock:?}"),
        "IntervalRwLock { len: 4, held: 1, queued: 1 }"
    );
    assert_eq!(format!("{r:?}"), "ReadGuard { range: 0..2, data: [1, 2] }");
    assert_eq!(
        format!("{f:?}"),
        "WriteFuture { range: 1..3, step: Recorded(2) }"
    );
    drop(r);
    let w = match poll_once(&mut f, Waker::noop()) {
        Poll::Ready(w) => w,
        Poll::Pending => panic!("pending"),
    };
    assert_eq!(format!("{w:?}"), "WriteGuard { range: 1..3, data: [2, 3] }");
    assert_eq!(format!("{f:?}"), "WriteFuture { range: 1..3, step: Done }");
    let m = IntervalMutex::new(vec![0u8; 3]);
    let _g = m.lock(..1);
    assert_eq!(
        format!("{m:?}"),
        "IntervalMutex { len: 3, held: 1, queued: 0 }"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Ranges at the edge of `usize`.
// ---------------------------------------------------------------------------------------------------------

/// `usize::MAX` zero-sized elements (a `Vec<()>` may be that long): whole-lock, last-element and empty
/// ranges at `usize::MAX`, inclusive ends that would overflow, a queued future at the very end, and the
/// panic messages, exact.
#[test]
#[allow(clippy::uninit_vec)] // `()` has nothing to initialise
#[allow(clippy::reversed_empty_ranges)] // `M..=M - 1` and `M..M - 1` on purpose
fn usize_max_zero_sized_elements_lock_and_conflict_exactly() {
    let mut elements = Vec::<()>::new();
    // SAFETY: a `Vec` of a zero-sized type has capacity `usize::MAX`, and `()` needs no initialisation.
    unsafe { elements.set_len(usize::MAX) };
    let lock = IntervalRwLock::new(elements);
    assert_eq!(lock.len(), usize::MAX);
    const M: usize = usize::MAX;
    {
        let all = lock.write(..);
        assert_eq!((all.len(), all.range()), (M, 0..M));
        assert!(lock.try_read(M - 1..).is_err());
        assert!(lock.try_read(..=0).is_err());
        let empty = lock.write(M..);
        assert_eq!(empty.range(), M..M);
        let also_empty = lock.read((Bound::Excluded(M - 1), Bound::Unbounded));
        assert_eq!(also_empty.range(), M..M);
        let t = task();
        let mut last = lock.read_async(M - 1..=M - 1);
        assert!(poll_once(&mut last, &Waker::from(t.clone())).is_pending());
        drop(all);
        assert_eq!(t.wakes(), 1);
        let g = match poll_once(&mut last, Waker::noop()) {
            Poll::Ready(g) => g,
            Poll::Pending => panic!("pending"),
        };
        assert_eq!((g.range(), g.len()), (M - 1..M, 1));
        assert!(lock.try_write(..M - 1).is_ok());
        assert!(lock.try_write(M - 2..).is_err());
        assert!(lock.try_read(M - 2..).is_ok());
    }
    let halves = (lock.write(..M / 2), lock.write(M / 2..));
    assert_eq!((halves.0.len(), halves.1.len()), (M / 2, M - M / 2));
    assert_eq!(lock.held(), 2);
    drop(halves);
    let message = |f: &dyn Fn()| panic_message(catch_unwind(AssertUnwindSafe(f)).unwrap_err());
    assert_eq!(
        message(&|| drop(lock.read(..=M))),
        format!(
            "IntervalRwLock: range ..={M} is out of bounds for len {M}; borrow a range within 0..{M}"
        )
    );
    assert_eq!(
        message(&|| drop(lock.write_async((Bound::Excluded(M), Bound::Excluded(M))))),
        format!(
            "IntervalRwLock: range (excluded {M})..{M} is out of bounds for len {M}; borrow a range within 0..{M}"
        )
    );
    assert_eq!(
        lock.try_write(M..=M - 1).unwrap().range(),
        M..M,
        "`a..=a-1` is empty"
    );
    let inverted = message(&|| drop(lock.try_write(M..M - 1)));
    assert_eq!(
        inverted,
        format!(
            "IntervalRwLock: range {M}..{} starts after it ends (start {M} > end {}); the lock has len {M}",
            M - 1,
            M - 1
        )
    );
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

// ---------------------------------------------------------------------------------------------------------
// Allocations and space, counted.
// ---------------------------------------------------------------------------------------------------------

/// Counts this thread's allocations and the bytes it holds (allocated less freed, on this thread).
struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    static BYTES: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: forwards to `System`; the counts are const thread-locals without destructors (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        let _ = BYTES.try_with(|n| n.set(n.get() + layout.size() as isize));
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = BYTES.try_with(|n| n.set(n.get() - layout.size() as isize));
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        let _ = BYTES.try_with(|n| n.set(n.get() + new_size as isize - layout.size() as isize));
        // SAFETY: forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// How many allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

/// Promise (module docs, cost: "A granted borrow allocates nothing once the arena has grown"). After one
/// round that grows the arenas to 8 borrows, every granted way in — `try_read`, `try_write`, `read`,
/// `write`, `prioritized(3).write`, a future granted on its first poll, an empty range — and its release
/// allocate exactly 0 times, with 7 other borrows held meanwhile.
#[test]
fn granted_borrows_allocate_nothing_once_the_arena_has_grown() {
    let lock = IntervalRwLock::new(vec![0u64; 64]);
    drop(
        (0..8)
            .map(|i| lock.write(i * 8..i * 8 + 4))
            .collect::<Vec<_>>(),
    );
    let mut others = Vec::with_capacity(7);
    let n = allocations(|| {
        for i in 1..8 {
            others.push(lock.read(i * 8..i * 8 + 8));
        }
        for _ in 0..size(100, 5) {
            drop(lock.try_read(0..4).unwrap());
            drop(lock.try_write(0..8).unwrap());
            drop(lock.read(2..6));
            lock.write(0..8)[0] += 1;
            lock.prioritized(3).write(0..1)[0] += 1;
            let mut f = lock.write_async(4..8);
            match poll_once(&mut f, Waker::noop()) {
                Poll::Ready(mut g) => g[0] += 1,
                Poll::Pending => panic!("pending"),
            }
            drop(lock.write(8..8));
        }
        others.clear();
    });
    assert_eq!(n, 0);
    assert_eq!(
        lock.read(0..5).to_vec(),
        [2 * size(100, 5) as u64, 0, 0, 0, size(100, 5) as u64]
    );
}

/// Promise (module docs: "Space is O(n) plus one `HashMap` entry per queued borrow", n the recorded
/// borrows). Measured: after a burst of 20 000 held borrows (150 under Miri), all released, the lock
/// still holds the two arenas' nodes and free lists, more than 2 × 20 000 × 48 bytes, with nothing
/// recorded: the arenas never shrink, so the space is O(the most borrows ever recorded at once). Only
/// `replace_container`/`take_container` (a fresh bookkeeping) give it back. docs/interval.md now says so.
#[test]
fn the_bookkeeping_keeps_the_space_of_its_largest_burst_until_replaced() {
    let burst = size(20_000, 150);
    let mut lock = IntervalRwLock::new(vec![0u8; burst]);
    let before = BYTES.with(Cell::get);
    let guards: Vec<_> = (0..burst).map(|i| lock.read(i..i + 1)).collect();
    drop(guards);
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    let kept = BYTES.with(Cell::get) - before;
    assert!(kept > (2 * burst * 48) as isize, "kept {kept} bytes");
    let elements = lock.take_container();
    drop(elements);
    let after = BYTES.with(Cell::get) - before;
    // The fresh bookkeeping: two one-node arenas (the sentinels), a few hundred bytes at most.
    assert!(after < 1024, "{after} bytes after take_container");
}

// ---------------------------------------------------------------------------------------------------------
// Fairness, FIFO and many waiters.
// ---------------------------------------------------------------------------------------------------------

/// Promise (docs/interval.md, Fairness: "a writer queued behind readers is not overtaken by readers that
/// arrive after it"). Four reader threads take overlapping `read(0..64)` guards back to back, so that a
/// read is held nearly all the time; a writer thread must still get in 50 times (5 under Miri), each time
/// seeing every earlier write. A starving writer would hang (the deadline only detects that).
#[test]
fn a_stream_of_overlapping_readers_does_not_starve_a_writer() {
    within(30, || {
        let lock = IntervalRwLock::new(vec![0u32; 64]);
        let done = AtomicBool::new(false);
        let reads = AtomicUsize::new(0);
        let writes = size(50, 5);
        thread::scope(|s| {
            for r in 0..size(4, 2) {
                let (lock, done, reads) = (&lock, &done, &reads);
                s.spawn(move || {
                    while !done.load(Ordering::SeqCst) {
                        let g = lock.read(r..64);
                        // Every element reads the same: no write is half seen.
                        assert!(g.iter().all(|&x| x == g[0]));
                        reads.fetch_add(1, Ordering::SeqCst);
                        thread::yield_now();
                    }
                });
            }
            while reads.load(Ordering::SeqCst) < size(4, 2) {
                thread::yield_now();
            }
            for i in 1..=writes as u32 {
                let mut g = lock.write(..);
                assert!(g.iter().all(|&x| x == i - 1));
                g.fill(i);
            }
            done.store(true, Ordering::SeqCst);
        });
        assert!(lock.read(..).iter().all(|&x| x == writes as u32));
    });
}

/// Caveat (docs/interval.md: "A thread that holds a range and blocks on a conflicting range of the same lock
/// deadlocks"). Reads do not conflict with reads, yet a thread that holds `read(0..10)` and asks for
/// `read(5..8)` waits for good once a conflicting `write(0..20)` was queued in between: FIFO puts the new read
/// behind the write, which waits for the held read. Measured (with a future, which can be dropped): the second
/// read stays `Pending` while the only held borrow is the thread's own read, and `try_read` fails. Not a bug
/// (std's `RwLock` warns of the same); docs/interval.md's caveat now names this case.
#[test]
fn a_second_read_of_a_held_read_waits_behind_a_queued_writer() {
    within(10, || {
        let lock = Arc::new(IntervalRwLock::new(vec![0u8; 20]));
        let first = lock.read(0..10);
        let writer = {
            let lock = lock.clone();
            thread::spawn(move || lock.write(0..20).fill(1))
        };
        while lock.queued() < 1 {
            thread::yield_now();
        }
        let t = task();
        let mut second = lock.read_async(5..8);
        assert!(poll_once(&mut second, &Waker::from(t.clone())).is_pending());
        assert!(lock.try_read(5..8).is_err());
        assert_eq!((lock.held(), lock.queued()), (1, 2));
        drop(first); // the way out: the writer goes, then the second read
        writer.join().unwrap();
        assert_eq!(t.wakes(), 1);
        match poll_once(&mut second, Waker::noop()) {
            Poll::Ready(g) => assert_eq!(g.to_vec(), [1, 1, 1]),
            Poll::Pending => panic!("pending"),
        }
    });
}

/// Promise (docs/interval.md, Priorities: "among conflicting *queued* requests the order is (higher
/// priority, then ticket)"). The flip side, measured: a writer of priority 0 queued behind a held read is
/// overtaken by every later `prioritized(1)` read of its range, each granted at once (1 000 of them, 10 under
/// Miri), while the writer stays queued; it goes only once no such read is held. A stream of higher-priority
/// requests can starve a lower-priority one for as long as it lasts; docs/interval.md now says so.
#[test]
fn higher_priority_readers_overtake_a_queued_writer_for_as_long_as_they_come() {
    let lock = IntervalRwLock::new(vec![0u8; 16]);
    let first = lock.read(0..8);
    let t = task();
    let mut writer = lock.write_async(4..12);
    assert!(poll_once(&mut writer, &Waker::from(t.clone())).is_pending());
    let mut held = vec![first];
    for i in 0..size(1_000, 10) {
        let f = lock.prioritized(1).read_async(i % 8..8 + i % 4);
        let mut f = f;
        match poll_once(&mut f, Waker::noop()) {
            Poll::Ready(g) => held.push(g),
            Poll::Pending => panic!("read {i} of priority 1 queued behind the writer"),
        }
        if held.len() > 3 {
            drop(held.remove(0));
        }
        assert_eq!(t.wakes(), 0);
    }
    assert!(
        lock.try_read(4..5).is_err(),
        "priority 0 still queues behind the writer"
    );
    drop(held);
    assert_eq!(t.wakes(), 1);
    assert!(poll_once(&mut writer, Waker::noop()).is_ready());
}

/// Docs (docs/interval.md, How it works: "Granting removes nobody's blocker, so grants never cascade"; the k
/// term of a release "is the work of waking k waiters"). 100 000 read futures (40 under Miri) queued behind
/// one held write, and one write future behind all of them: releasing the write wakes exactly the readers,
/// each once, and the writer only when the last reader's guard drops.
#[test]
fn one_release_wakes_a_hundred_thousand_readers_once_each_and_the_writer_last() {
    let n = size(100_000, 40);
    let lock = IntervalRwLock::new(vec![0u8; 1024]);
    let held = lock.write(..);
    let readers_task = task();
    let readers_waker = Waker::from(readers_task.clone());
    let mut readers: Vec<_> = (0..n)
        .map(|i| {
            let mut f = lock.read_async(i * 7 % 1000..i * 7 % 1000 + 24);
            assert!(poll_once(&mut f, &readers_waker).is_pending());
            f
        })
        .collect();
    let writer_task = task();
    let mut writer = lock.write_async(100..101);
    assert!(poll_once(&mut writer, &Waker::from(writer_task.clone())).is_pending());
    assert_eq!((lock.held(), lock.queued()), (1, n + 1));
    drop(held);
    assert_eq!((readers_task.wakes(), writer_task.wakes()), (n, 0));
    assert_eq!((lock.held(), lock.queued()), (n, 1));
    let mut guards: Vec<_> = readers
        .iter_mut()
        .map(|f| match poll_once(f, Waker::noop()) {
            Poll::Ready(g) => g,
            Poll::Pending => panic!("woken but pending"),
        })
        .collect();
    // Drop the readers that overlap 100..101 last.
    guards.sort_by_key(|g| g.range().contains(&100));
    let overlapping = guards.iter().filter(|g| g.range().contains(&100)).count();
    for (dropped, g) in guards.into_iter().enumerate() {
        drop(g);
        let expected = usize::from(dropped + 1 == n);
        assert_eq!(
            writer_task.wakes(),
            expected,
            "after {} drops ({overlapping} overlap)",
            dropped + 1
        );
    }
    assert_eq!(readers_task.wakes(), n);
    assert!(poll_once(&mut writer, Waker::noop()).is_ready());
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

/// Docs (FIFO among conflicting requests; grants never cascade): a chain of 2 000 write futures (20 under
/// Miri) on one element, each released in turn: every release wakes exactly the next one, in order.
///
/// Read, not asserted (no timing here): each release decrements the blocker count of *every* conflicting
/// waiter behind it (each counted it), though it grants one, so draining n such writers costs O(n² log n):
/// with 10 000 this test took 6.7 s in a debug build, against 0.65 s for the 100 000 readers above.
/// docs/interval.md said "The k term is the work of waking k waiters"; it now says k counts every
/// conflicting waiter behind the released borrow, woken or not.
#[test]
fn a_chain_of_writers_is_served_one_wake_at_a_time_in_order() {
    let n = size(2_000, 20);
    let lock = IntervalRwLock::new(vec![0u32; 1]);
    let tasks: Vec<Arc<Task>> = (0..n).map(|_| task()).collect();
    let held = lock.write(..);
    let mut futures: Vec<_> = tasks
        .iter()
        .map(|t| {
            let mut f = lock.write_async(..);
            assert!(poll_once(&mut f, &Waker::from(t.clone())).is_pending());
            f
        })
        .collect();
    drop(held);
    for (i, f) in futures.iter_mut().enumerate() {
        assert_eq!(tasks[i].wakes(), 1, "future {i} was not woken");
        if i + 1 < n {
            assert_eq!(tasks[i + 1].wakes(), 0, "future {} woken early", i + 1);
        }
        let mut g = match poll_once(f, Waker::noop()) {
            Poll::Ready(g) => g,
            Poll::Pending => panic!("future {i} pending"),
        };
        assert_eq!(g[0], i as u32);
        g[0] += 1;
    }
    assert_eq!(lock.read(..)[0], n as u32);
}

// ---------------------------------------------------------------------------------------------------------
// Re-entrancy, spurious wake-ups, alignment.
// ---------------------------------------------------------------------------------------------------------

static REENTRANT: std::sync::LazyLock<IntervalRwLock<u8>> =
    std::sync::LazyLock::new(|| IntervalRwLock::new(vec![0u8; 8]));
static SLOT: std::sync::Mutex<Option<trust_core::interval::WriteGuard<'static, u8>>> =
    std::sync::Mutex::new(None);

/// A waker whose `wake` drops the guard in `SLOT` (an executor that drops a task's state when woken).
struct DropsTheSlot;

impl Wake for DropsTheSlot {
    fn wake(self: Arc<Self>) {
        let guard = SLOT.lock().unwrap().take();
        drop(guard);
    }
}

/// Promise (docs/interval.md: "no user code runs inside" the bookkeeping's mutex; the wakes come "after the
/// mutex is released"). Releasing `0..2` wakes a future whose waker, inside that wake, drops the guard of
/// `2..4`, which grants and wakes a second future: a release inside a wake, on the same thread. Both futures
/// end granted, each woken once.
#[test]
fn a_wake_that_releases_another_range_of_the_same_lock_grants_its_waiter() {
    within(10, || {
        let lock = &*REENTRANT;
        let first = lock.write(0..2);
        *SLOT.lock().unwrap() = Some(lock.write(2..4));
        let mut a = lock.read_async(0..2);
        assert!(poll_once(&mut a, &Waker::from(Arc::new(DropsTheSlot))).is_pending());
        let t = task();
        let mut b = lock.read_async(2..4);
        assert!(poll_once(&mut b, &Waker::from(t.clone())).is_pending());
        drop(first);
        assert!(SLOT.lock().unwrap().is_none());
        assert_eq!((t.wakes(), lock.held(), lock.queued()), (1, 2, 0));
        assert!(poll_once(&mut a, Waker::noop()).is_ready());
        assert!(poll_once(&mut b, Waker::noop()).is_ready());
        assert_eq!((lock.held(), lock.queued()), (0, 0));
    });
}

/// A thread blocked in `write` and unparked 1 000 times (10 under Miri) while its range is still held keeps
/// waiting (a spurious wake-up grants nothing), then gets the range once it is released.
#[test]
fn spurious_unparks_do_not_grant_a_blocked_thread() {
    within(20, || {
        let lock = Arc::new(IntervalRwLock::new(vec![0u8; 4]));
        let held = lock.write(1..3);
        let got = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (lock, got) = (lock.clone(), got.clone());
            thread::spawn(move || {
                let mut g = lock.write(0..2);
                got.store(true, Ordering::SeqCst);
                g[0] = 7;
            })
        };
        while lock.queued() < 1 {
            thread::yield_now();
        }
        for _ in 0..size(1_000, 10) {
            waiter.thread().unpark();
            thread::yield_now();
        }
        assert!(
            !got.load(Ordering::SeqCst),
            "granted while the range was held"
        );
        assert_eq!((lock.held(), lock.queued()), (1, 1));
        drop(held);
        waiter.join().unwrap();
        assert_eq!(lock.read(..).to_vec(), [7, 0, 0, 0]);
    });
}

/// A zero-sized element type aligned to 4 KiB: every guard's slice pointer is aligned (Miri checks the
/// `from_raw_parts` calls too).
#[test]
fn guards_of_an_over_aligned_zero_sized_type_are_aligned() {
    #[derive(Clone, Debug, PartialEq)]
    #[repr(align(4096))]
    struct Page;
    let lock = IntervalRwLock::new(vec![Page; 100]);
    let (a, b) = (lock.write(0..50), lock.read(50..100));
    let c = lock.read(100..);
    for p in [a.as_ptr(), b.as_ptr(), c.as_ptr()] {
        assert_eq!(p.addr() % 4096, 0);
    }
    assert_eq!((a.len(), b.len(), c.len(), &b[49]), (50, 50, 0, &Page));
}

// ---------------------------------------------------------------------------------------------------------
// The delegation runtime's shutdown.
// ---------------------------------------------------------------------------------------------------------

/// Promise (docs/interval.md: dropping a future "withdraws the request"; a blocking request in a fiber
/// "suspends only the fiber"; docs/delegation.md: a `join` of a fiber shutdown found suspended returns the
/// shutdown panic). A fiber on worker 0 queues `write(0..8)` behind a thread's held `write(0..4)`; the runtime
/// shuts down, the fiber's join reports the shutdown, and the thread releases `0..4`. Measured: the dead
/// fiber's request is still recorded; the release grants it (to nobody), so `(held, queued)` is `(1, 0)` and
/// `try_write(..)` fails for good: shutdown abandons suspended fibers without unwinding them, so their queued
/// requests (and held guards) leak like a `mem::forget`. docs/interval.md's caveats now say so.
#[test]
#[ignore = "KNOWN LIMIT (docs/interval.md, Caveats: shutdown): review 42: a fiber queued in `write` at shutdown leaves its request recorded, and the range is taken for good once it is granted"]
fn a_fiber_queued_at_shutdown_does_not_take_its_range_for_good() {
    in_child!(
        "a_fiber_queued_at_shutdown_does_not_take_its_range_for_good",
        15
    );
    static LOCK: std::sync::LazyLock<IntervalRwLock<u32>> =
        std::sync::LazyLock::new(|| IntervalRwLock::new(vec![0u32; 8]));
    calibrate();
    let held = LOCK.write(0..4);
    let f = spawn_on(0, || {
        LOCK.write(0..8).fill(8);
        8
    });
    eventually("the fiber never queued", || LOCK.queued() == 1);
    rt().shutdown();
    let joined = f.join().map_err(|p| panic_message(p).contains("shut down"));
    drop(held);
    assert_eq!(
        (
            joined,
            LOCK.held(),
            LOCK.queued(),
            LOCK.try_write(..).is_ok()
        ),
        (Err(true), 0, 0, true),
        "the fiber that asked for 0..8 is gone, so nothing may hold it"
    );
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// Blocking FIFO, constructors.
// ---------------------------------------------------------------------------------------------------------

/// Promise (docs/interval.md, Fairness: "Every request takes a ticket. A request is granted once no *earlier*
/// request that conflicts with it is still recorded"). 32 threads (4 under Miri), each queued in a
/// `write(0..2)` of its own before the next is started, alternating with `read(1..3)`s that share with one
/// another: the writes are granted exactly in arrival order, each after every earlier read and write.
#[test]
fn blocked_threads_are_granted_in_arrival_order() {
    within(30, || {
        let n = size(32, 4);
        let lock = Arc::new(IntervalRwLock::new(vec![0u32; 3]));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let held = lock.write(..);
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let (l, o) = (lock.clone(), order.clone());
                let t = thread::spawn(move || {
                    if i % 2 == 0 {
                        let mut g = l.write(0..2);
                        g[1] += 1;
                        o.lock().unwrap().push((i, g[1]));
                    } else {
                        let g = l.read(1..3);
                        o.lock().unwrap().push((i, g[0]));
                    }
                });
                while lock.queued() < i + 1 {
                    thread::yield_now();
                }
                t
            })
            .collect();
        drop(held);
        for t in threads {
            t.join().unwrap();
        }
        let order = order.lock().unwrap().clone();
        // What each saw: the writes of the even threads up to it (its own included), i / 2 + 1.
        let saw = |i: usize| (i / 2 + 1) as u32;
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..n).map(|i| (i, saw(i))).collect::<Vec<_>>());
        // The writes in arrival order.
        let writes: Vec<usize> = order
            .iter()
            .map(|&(i, _)| i)
            .filter(|i| i % 2 == 0)
            .collect();
        assert_eq!(writes, (0..n).step_by(2).collect::<Vec<_>>());
    });
}

/// docs/interval.md, the API table: a lock over "a `Vec<T>`, `Box<[T]>`, array, or `&[T]` of `Clone`s", and
/// the `From` conversions; `into_inner` and `into_boxed_slice` give them back in order.
#[test]
fn every_documented_container_builds_a_lock() {
    let from_array = IntervalRwLock::new([1, 2, 3]);
    let from_slice = IntervalRwLock::new(&[4, 5][..]);
    let from_box: IntervalRwLock<i32> = IntervalRwLock::from(vec![6].into_boxed_slice());
    let from_vec: IntervalRwLock<i32> = vec![7, 8].into();
    let mutex: IntervalMutex<i32> = vec![9].into();
    assert_eq!(from_array.into_inner(), [1, 2, 3]);
    assert_eq!(&*from_slice.into_boxed_slice(), [4, 5]);
    assert_eq!(from_box.into_inner(), [6]);
    assert_eq!(from_vec.read(1..)[0], 8);
    assert_eq!(mutex.into_inner(), [9]);
    let empty: IntervalMutex<u8> = IntervalMutex::default();
    assert_eq!((empty.len(), empty.is_empty()), (0, true));
}

static IN_A_DESTRUCTOR: std::sync::LazyLock<IntervalRwLock<u32>> =
    std::sync::LazyLock::new(|| IntervalRwLock::new(vec![0u32; 4]));

/// Writes `0..4` of `IN_A_DESTRUCTOR` when its thread's locals are destroyed.
struct WritesOnExit;

impl Drop for WritesOnExit {
    fn drop(&mut self) {
        IN_A_DESTRUCTOR.write(0..4).fill(5);
    }
}

thread_local! {
    static WRITES_ON_EXIT: WritesOnExit = const { WritesOnExit };
}

/// A blocking `write` that must wait, called from a thread-local's destructor as its thread ends (where
/// `thread::current()` and other thread-locals may be gone): it queues, parks, and is granted once the range
/// is released; nothing is left recorded.
#[test]
#[cfg_attr(miri, ignore = "a child process")]
fn a_blocking_write_in_a_thread_local_destructor_waits_and_is_granted() {
    in_child!(
        "a_blocking_write_in_a_thread_local_destructor_waits_and_is_granted",
        10
    );
    let held = IN_A_DESTRUCTOR.write(1..2);
    let t = thread::spawn(|| WRITES_ON_EXIT.with(|_| ()));
    eventually("the destructor's write never queued", || {
        IN_A_DESTRUCTOR.queued() == 1
    });
    drop(held);
    t.join().unwrap();
    assert_eq!(
        (
            IN_A_DESTRUCTOR.held(),
            IN_A_DESTRUCTOR.queued(),
            IN_A_DESTRUCTOR.read(..).to_vec()
        ),
        (0, 0, vec![5; 4])
    );
    child_ok();
}

thread_local! {
    static PANICKED_AT: Cell<Option<(&'static str, u32)>> = const { Cell::new(None) };
}

/// Where `f` panicked (file, line), as the panic hook saw it.
fn panic_location(f: impl FnOnce()) -> (&'static str, u32) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let old = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(l) = info.location() {
                // This file's name, or a marker: a `'static` to keep in the thread-local.
                let file: &'static str = if l.file() == file!() {
                    file!()
                } else {
                    "elsewhere"
                };
                PANICKED_AT.with(|p| p.set(Some((file, l.line()))));
            }
            old(info);
        }));
    });
    PANICKED_AT.with(|p| p.set(None));
    assert!(catch_unwind(AssertUnwindSafe(f)).is_err(), "no panic");
    PANICKED_AT
        .with(Cell::get)
        .expect("the hook saw no location")
}

/// Checks that `$call` panics at the line it is written on, in this file.
macro_rules! panics_here {
    ($call:expr) => {{
        let line = line!();
        assert_eq!(
            panic_location(|| drop($call)),
            (file!(), line),
            "{}",
            stringify!($call)
        );
    }};
}

/// Promise (docs/interval.md: a bad range "panics at the call site (for futures: when the future is created,
/// not when it is polled)"). Every way in, the prioritized and the mutex ones included, reports the caller's
/// line (each call below is on the line of its check), in this file, not a line of the lock's sources.
#[test]
#[allow(clippy::reversed_empty_ranges)] // `3..1` on purpose
fn a_bad_range_panics_at_the_callers_line_on_every_way_in() {
    let lock = IntervalRwLock::new(vec![0u8; 4]);
    let p = lock.prioritized(1);
    panics_here!(lock.read(0..5));
    panics_here!(lock.write(3..1));
    panics_here!(lock.try_read(..=4));
    panics_here!(lock.try_write(5..));
    panics_here!(lock.read_async(0..5));
    panics_here!(lock.write_async(3..1));
    panics_here!(p.read(0..5));
    panics_here!(p.write(0..5));
    panics_here!(p.read_async(0..5));
    panics_here!(p.write_async(0..5));
    let m = IntervalMutex::new(vec![0u8; 4]);
    let pm = m.prioritized(1);
    panics_here!(m.lock(0..5));
    panics_here!(m.try_lock(3..1));
    panics_here!(m.lock_async(0..5));
    panics_here!(pm.lock(0..5));
    panics_here!(pm.lock_async(0..5));
}

/// Promise (docs/interval.md, Caveats: "`read_async` / `write_async` never panic for this: polled in a delegated
/// closure, a future returns `Pending` ... keeping it to poll later ... is correct"). A fiber of worker 0 holds
/// `write(0..4)`, suspended; a closure delegated to trustee 0 makes `write_async(2..6)`, polls it once (it
/// must be `Pending`, with no panic), and returns it. Once the fiber releases, the closure's waker has been
/// woken exactly once and the returned future, polled on the test thread, is granted and sees the fiber's
/// writes.
#[test]
#[cfg_attr(miri, ignore = "a child process and the delegation runtime")]
fn a_future_polled_in_a_delegated_closure_is_pending_and_completes_later_elsewhere() {
    in_child!(
        "a_future_polled_in_a_delegated_closure_is_pending_and_completes_later_elsewhere",
        20
    );
    calibrate();
    let lock: &'static IntervalRwLock<u32> =
        Box::leak(Box::new(IntervalRwLock::new(vec![0u32; 8])));
    let (held, go) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (held2, go2) = (held.clone(), go.clone());
    let fiber = spawn_on(0, move || {
        lock.write(0..4).fill(1);
        let mut g = lock.write(0..4);
        g.fill(2);
        held2.store(true, Ordering::SeqCst);
        while !go2.load(Ordering::SeqCst) {
            trust_core::yield_now();
        }
    });
    eventually("the fiber never took 0..4", || held.load(Ordering::SeqCst));
    let t = task();
    let waker = Waker::from(t.clone());
    let on0 = rt().trustee(0).entrust(());
    let (pending, mut f) = within(5, move || {
        on0.apply(move |_| {
            let mut f = lock.write_async(2..6);
            (poll_once(&mut f, &waker).is_pending(), f)
        })
    });
    assert!(pending);
    assert_eq!((lock.held(), lock.queued(), t.wakes()), (1, 1, 0));
    go.store(true, Ordering::SeqCst);
    within(5, move || fiber.join().unwrap());
    assert_eq!(t.wakes(), 1);
    match poll_once(&mut f, Waker::noop()) {
        Poll::Ready(g) => assert_eq!(g.to_vec(), [2, 2, 0, 0]),
        Poll::Pending => panic!("granted and woken, but pending"),
    }
    drop(f);
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    child_ok();
}
