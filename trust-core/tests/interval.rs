//! `trust_core::interval`: exact values, range syntax and panics, `try_*` semantics, FIFO order,
//! parallel disjoint writers, an overlap checker under contention, cancellation of futures polled by
//! hand, drop accounting and `Send`/`Sync`. Sizes shrink under Miri
//! (`cargo +nightly miri test -p trust-core --test interval`).

use std::cell::Cell;
use std::future::Future;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use trust_core::interval::{IntervalMutex, IntervalRwLock, ReadGuard, TryLockError, WriteGuard};

/// Spins (yielding) until `cond` holds; fails the test after 10 s instead of hanging.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        thread::yield_now();
    }
}

#[test]
fn reads_and_writes_see_exact_values() {
    let lock = IntervalRwLock::new((0..10).collect::<Vec<u32>>());
    assert_eq!((lock.len(), lock.is_empty()), (10, false));
    {
        let mut w = lock.write(2..5);
        assert_eq!(&*w, &[2, 3, 4]);
        w.iter_mut().for_each(|x| *x *= 10);
        let r = lock.read(5..7); // disjoint from the write: held at once
        assert_eq!(&*r, &[5, 6]);
        assert_eq!((lock.held(), lock.queued()), (2, 0));
    }
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    assert_eq!(&*lock.read(..), &[0, 1, 20, 30, 40, 5, 6, 7, 8, 9]);
    assert_eq!(lock.into_inner(), vec![0, 1, 20, 30, 40, 5, 6, 7, 8, 9]);
}

#[test]
fn every_range_syntax_resolves_to_the_right_slice() {
    let lock = IntervalRwLock::new([0u8, 1, 2, 3, 4, 5]);
    assert_eq!(lock.read(..).range(), 0..6);
    assert_eq!(&*lock.read(4..), &[4, 5]);
    assert_eq!(&*lock.read(..2), &[0, 1]);
    assert_eq!(&*lock.read(..=2), &[0, 1, 2]);
    assert_eq!(&*lock.read(1..=3), &[1, 2, 3]);
    assert_eq!(
        &*lock.read((Bound::Excluded(1), Bound::Included(3))),
        &[2, 3]
    );
    assert_eq!(lock.write(6..).range(), 6..6);
}

#[test]
fn empty_ranges_conflict_with_nothing() {
    let lock = IntervalRwLock::new(vec![1, 2, 3]);
    let all = lock.write(..);
    let empty = lock.write(1..1); // would block forever if it were recorded
    assert!(empty.is_empty());
    assert!(lock.try_read(3..3).is_ok());
    assert_eq!((lock.held(), lock.queued()), (1, 0));
    drop((all, empty));
    let mut waker_fired = false;
    let fut = pin!(lock.write_async(0..0));
    assert!(matches!(poll_once(fut, &mut waker_fired), Poll::Ready(g) if g.is_empty()));
}

#[test]
#[should_panic(
    expected = "IntervalRwLock: range 5..12 is out of bounds for len 10; borrow a range within 0..10"
)]
fn out_of_bounds_range_panics_naming_range_and_len() {
    let lock = IntervalRwLock::new(vec![0; 10]);
    let _ = lock.read(5..12);
}

#[test]
#[should_panic(
    expected = "IntervalMutex: range 5..12 is out of bounds for len 10; borrow a range within 0..10"
)]
fn an_interval_mutex_panics_under_its_own_name() {
    let lock = IntervalMutex::new(vec![0; 10]);
    let _ = lock.lock(5..12);
}

#[test]
#[should_panic(
    expected = "IntervalMutex: range 3..2 starts after it ends (start 3 > end 2); the lock has len 0"
)]
fn a_default_interval_mutex_panics_under_its_own_name() {
    let lock = IntervalMutex::<u8>::default();
    #[allow(clippy::reversed_empty_ranges)]
    let _ = lock.try_lock(3..2);
}

#[test]
#[should_panic(
    expected = "IntervalRwLock: range 7..3 starts after it ends (start 7 > end 3); the lock has len 10"
)]
fn inverted_range_panics() {
    let lock = IntervalRwLock::new(vec![0; 10]);
    #[allow(clippy::reversed_empty_ranges)]
    let _ = lock.write(7..3);
}

#[test]
#[should_panic(
    expected = "IntervalRwLock: range ..=18446744073709551615 is out of bounds for len 4"
)]
fn inclusive_end_at_usize_max_panics_instead_of_overflowing() {
    let lock = IntervalRwLock::new(vec![0; 4]);
    let _ = lock.try_write(..=usize::MAX);
}

#[test]
#[should_panic(
    expected = "IntervalRwLock: range (excluded 4).. starts after it ends (start 5 > end 4)"
)]
fn async_requests_check_the_range_when_created() {
    let lock = IntervalRwLock::new(vec![0; 4]);
    let _future = lock.read_async((Bound::Excluded(4), Bound::Unbounded));
}

#[test]
fn try_fails_on_conflict_and_records_nothing() {
    let lock = IntervalRwLock::new(vec![0u8; 10]);
    let read = lock.read(0..5);
    let err = lock.try_write(4..6).unwrap_err();
    assert_eq!(err.range(), 4..6);
    assert_eq!(
        err.to_string(),
        "cannot write-lock 4..6 now: it conflicts with a borrow that is held or queued \
         (use `write` or `write_async` to wait for it)"
    );
    assert_eq!((lock.held(), lock.queued()), (1, 0));
    // Reads share; an adjacent range does not overlap.
    let shared = lock.try_read(4..6).unwrap();
    let adjacent = lock.try_write(6..10).unwrap();
    assert_eq!(lock.held(), 3);
    assert!(matches!(lock.try_read(9..), Err(TryLockError { .. })));
    drop((read, shared, adjacent));
    assert!(lock.try_write(..).is_ok());
}

#[test]
fn try_and_later_requests_do_not_jump_the_queue() {
    let lock = IntervalRwLock::new(vec![0u8; 20]);
    let order = Mutex::new(Vec::new());
    thread::scope(|s| {
        let first_read = lock.read(0..10);
        s.spawn(|| {
            let _w = lock.write(5..15);
            order.lock().unwrap().push("writer");
        });
        wait_until("the writer to queue", || lock.queued() == 1);
        // A read of 8..9 would share with the held read, but a writer of that range queued first.
        assert!(lock.try_read(8..9).is_err());
        assert!(lock.try_read(15..).is_ok()); // no conflict with anyone
        s.spawn(|| {
            let _r = lock.read(8..9);
            order.lock().unwrap().push("later reader");
        });
        wait_until("the later reader to queue", || lock.queued() == 2);
        order.lock().unwrap().push("first reader releases");
        drop(first_read);
    });
    assert_eq!(
        *order.lock().unwrap(),
        ["first reader releases", "writer", "later reader"]
    );
}

#[test]
fn non_conflicting_requests_never_wait_for_each_other() {
    let lock = IntervalRwLock::new(vec![0u8; 20]);
    thread::scope(|s| {
        let held = lock.write(0..10);
        s.spawn(|| drop(lock.write(5..15)));
        wait_until("the writer to queue", || lock.queued() == 1);
        // Behind the queued writer in time, but disjoint from it and from the held range.
        let late = lock
            .try_write(15..20)
            .expect("disjoint from every recorded borrow");
        let reader = lock.try_read(15..20);
        assert!(reader.is_err());
        drop((late, held));
    });
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

#[test]
fn disjoint_writes_from_8_threads_are_held_at_once() {
    const THREADS: usize = 8;
    let chunk = if cfg!(miri) { 4 } else { 1000 };
    let lock = IntervalRwLock::new(vec![0usize; THREADS * chunk]);
    let all_inside = Barrier::new(THREADS);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (lock, all_inside) = (&lock, &all_inside);
            s.spawn(move || {
                let mut mine = lock.write(t * chunk..(t + 1) * chunk);
                // Every thread reaches this barrier only while holding its guard, so all 8 ranges are
                // held at the same time; an implementation that serialized them would hang here.
                all_inside.wait();
                assert_eq!(lock.held(), THREADS);
                all_inside.wait(); // nobody releases before everyone has counted
                mine.fill(t + 1);
            });
        }
    });
    let values = lock.into_inner();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(*v, i / chunk + 1, "element {i}");
    }
}

/// Random overlapping reads and writes from several threads. Inside each guard a per-element checker
/// proves exclusion (a writer finds no other writer or reader; a reader finds no writer), and every
/// write adds 1 with a plain `+=`, so a lost update would show in the exact final counts.
#[test]
fn overlapping_borrows_exclude_each_other() {
    const LEN: usize = 32;
    let (threads, rounds) = if cfg!(miri) { (3, 20) } else { (4, 10_000) };
    let lock = IntervalRwLock::new(vec![0usize; LEN]);
    // 0: free; n > 0: n readers; -1: one writer.
    let checker: Vec<AtomicIsize> = (0..LEN).map(|_| AtomicIsize::new(0)).collect();
    let coverage: Vec<Vec<usize>> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (lock, checker) = (&lock, &checker);
                s.spawn(move || {
                    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (t as u64 + 1));
                    let mut covered = vec![0usize; LEN];
                    for _ in 0..rounds {
                        let start = rng.below(LEN);
                        let end = (start + 1 + rng.below(8)).min(LEN);
                        if rng.below(3) == 0 {
                            let guard = lock.read(start..end);
                            for c in &checker[start..end] {
                                assert!(
                                    c.fetch_add(1, Ordering::SeqCst) >= 0,
                                    "read overlaps a write"
                                );
                            }
                            std::hint::black_box(guard.iter().sum::<usize>());
                            for c in &checker[start..end] {
                                c.fetch_sub(1, Ordering::SeqCst);
                            }
                        } else {
                            let mut guard = lock.write(start..end);
                            for c in &checker[start..end] {
                                assert_eq!(
                                    c.swap(-1, Ordering::SeqCst),
                                    0,
                                    "write overlaps a borrow"
                                );
                            }
                            for (x, cov) in guard.iter_mut().zip(&mut covered[start..end]) {
                                *x += 1;
                                *cov += 1;
                            }
                            for c in &checker[start..end] {
                                c.store(0, Ordering::SeqCst);
                            }
                        }
                    }
                    covered
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let expected: Vec<usize> = (0..LEN)
        .map(|i| coverage.iter().map(|c| c[i]).sum())
        .collect();
    assert_eq!(lock.into_inner(), expected);
}

/// A waker that records whether it was woken.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn poll_once<F: Future>(future: std::pin::Pin<&mut F>, woken: &mut bool) -> Poll<F::Output> {
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let poll = future.poll(&mut Context::from_waker(&waker));
    *woken = flag.0.load(Ordering::SeqCst);
    poll
}

#[test]
fn futures_queue_in_fifo_order_and_are_woken_once_granted() {
    let lock = IntervalRwLock::new(vec![0u8; 8]);
    let held = lock.read(0..4);
    let flag_w = Arc::new(Flag(AtomicBool::new(false)));
    let flag_r = Arc::new(Flag(AtomicBool::new(false)));
    let (waker_w, waker_r) = (Waker::from(flag_w.clone()), Waker::from(flag_r.clone()));
    let mut writer = pin!(lock.write_async(2..6));
    let mut reader = pin!(lock.read_async(3..4));
    assert!(
        writer
            .as_mut()
            .poll(&mut Context::from_waker(&waker_w))
            .is_pending()
    );
    assert!(
        reader
            .as_mut()
            .poll(&mut Context::from_waker(&waker_r))
            .is_pending()
    );
    assert_eq!((lock.held(), lock.queued()), (1, 2));
    drop(held);
    assert!(flag_w.0.load(Ordering::SeqCst) && !flag_r.0.load(Ordering::SeqCst));
    let Poll::Ready(mut w) = writer.as_mut().poll(&mut Context::from_waker(&waker_w)) else {
        panic!("the writer was woken but is not ready");
    };
    w.fill(7);
    assert!(
        reader
            .as_mut()
            .poll(&mut Context::from_waker(&waker_r))
            .is_pending()
    );
    drop(w);
    assert!(flag_r.0.load(Ordering::SeqCst));
    let Poll::Ready(r) = reader.as_mut().poll(&mut Context::from_waker(&waker_r)) else {
        panic!("the reader was woken but is not ready");
    };
    assert_eq!(&*r, &[7]);
}

#[test]
fn dropping_a_queued_future_wakes_the_waiters_behind_it() {
    let lock = IntervalRwLock::new(vec![0u8; 8]);
    let held = lock.read(0..4);
    let mut woken = false;
    let mut writer = Box::pin(lock.write_async(0..8));
    assert!(poll_once(writer.as_mut(), &mut woken).is_pending());
    // A reader of 6..8 shares nothing with the held read but queues behind the writer (FIFO).
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let mut reader = pin!(lock.read_async(6..8));
    assert!(
        reader
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    assert_eq!(lock.queued(), 2);
    drop(writer); // cancelled while queued
    assert!(
        flag.0.load(Ordering::SeqCst),
        "the reader behind the cancelled writer was stranded"
    );
    let Poll::Ready(granted) = reader.as_mut().poll(&mut Context::from_waker(&waker)) else {
        panic!("woken but not ready");
    };
    assert_eq!((lock.held(), lock.queued()), (2, 0));
    drop((held, granted));
}

#[test]
fn dropping_a_granted_but_unpolled_future_releases_its_range() {
    let lock = IntervalRwLock::new(vec![0u8; 8]);
    let held = lock.write(0..4);
    let mut woken = false;
    let mut first = Box::pin(lock.write_async(0..4));
    assert!(poll_once(first.as_mut(), &mut woken).is_pending());
    let mut second = Box::pin(lock.read_async(2..3));
    assert!(poll_once(second.as_mut(), &mut woken).is_pending());
    drop(held); // grants `first`, which is never polled again
    assert_eq!((lock.held(), lock.queued()), (1, 1));
    drop(first);
    assert_eq!((lock.held(), lock.queued()), (1, 0));
    assert!(poll_once(second.as_mut(), &mut woken).is_ready());
}

#[test]
#[should_panic(expected = "WriteFuture polled after it completed")]
fn polling_a_completed_future_panics() {
    let lock = IntervalRwLock::new(vec![0u8; 2]);
    let mut woken = false;
    let mut future = pin!(lock.write_async(..));
    let _guard = poll_once(future.as_mut(), &mut woken);
    let _ = poll_once(future.as_mut(), &mut woken);
}

#[test]
fn a_guard_can_be_released_on_another_thread() {
    let lock = IntervalRwLock::new(vec![0u8; 4]);
    let guard = lock.write(..);
    thread::scope(|s| {
        s.spawn(move || {
            let mut guard = guard;
            guard[0] = 1;
        });
    });
    assert_eq!(&*lock.try_read(..).unwrap(), &[1, 0, 0, 0]);
}

#[test]
fn a_panic_inside_a_write_guard_releases_the_range() {
    let lock = IntervalRwLock::new(vec![0u8; 4]);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut guard = lock.write(1..3);
        guard[0] = 9;
        panic!("boom");
    }));
    assert!(result.is_err());
    assert_eq!(&*lock.try_write(..).unwrap(), &[0, 9, 0, 0]); // no poisoning
}

#[test]
fn zero_sized_elements_work() {
    let lock = IntervalRwLock::new(vec![(); 5]);
    let a = lock.write(0..2);
    let b = lock.write(2..5);
    assert_eq!((a.len(), b.len()), (2, 3));
    drop((a, b));
    assert_eq!(lock.into_inner().len(), 5);
}

#[test]
fn elements_are_dropped_exactly_once() {
    struct Counted<'a>(&'a AtomicUsize);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let drops = AtomicUsize::new(0);
    let lock = IntervalRwLock::new((0..6).map(|_| Counted(&drops)).collect::<Vec<_>>());
    drop(lock.write(1..4));
    drop(lock);
    assert_eq!(drops.load(Ordering::SeqCst), 6);

    let drops = AtomicUsize::new(0);
    let lock = IntervalRwLock::new((0..6).map(|_| Counted(&drops)).collect::<Vec<_>>());
    let mut elements = lock.into_inner();
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    elements.truncate(2);
    assert_eq!(drops.load(Ordering::SeqCst), 4);
    drop(elements);
    assert_eq!(drops.load(Ordering::SeqCst), 6);
}

#[test]
fn get_mut_boxed_slice_default_and_debug() {
    let mut lock: IntervalRwLock<i32> = vec![1, 2, 3, 4].into();
    lock.get_mut()[0] = 10;
    {
        let r = lock.read(0..2);
        let w = lock.write(2..3);
        assert_eq!(
            format!("{lock:?}"),
            "IntervalRwLock { len: 4, held: 2, queued: 0 }"
        );
        assert_eq!(format!("{r:?}"), "ReadGuard { range: 0..2, data: [10, 2] }");
        assert_eq!(format!("{w:?}"), "WriteGuard { range: 2..3, data: [3] }");
    }
    assert_eq!(&*lock.into_boxed_slice(), &[10, 2, 3, 4]);
    let empty = IntervalRwLock::<u8>::default();
    assert!(empty.is_empty());
    assert_eq!(empty.read(..).len(), 0);
}

#[test]
fn send_and_sync_follow_the_references_the_guards_stand_for() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<IntervalRwLock<u8>>();
    sync::<IntervalRwLock<u8>>();
    send::<IntervalRwLock<Cell<u8>>>(); // a Cell lock can move, not be shared (UI test)
    send::<ReadGuard<'_, u8>>();
    sync::<ReadGuard<'_, u8>>();
    // A write guard is a `&mut [T]`: it can move to another thread with `T: Send` only.
    send::<WriteGuard<'_, Cell<u8>>>();
    sync::<WriteGuard<'_, u8>>();
    // A read guard is a `&[T]`: `T: Sync` suffices even when `T` is not `Send`.
    send::<ReadGuard<'_, std::sync::MutexGuard<'_, u8>>>();
    send::<trust_core::interval::WriteFuture<'_, u8>>();
    send::<trust_core::interval::ReadFuture<'_, u8>>();
}

/// xorshift64: deterministic randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// A waker whose last drop releases a guard of the same lock, as dropping a task that owns such a
/// guard would. The lock must drop stale wakers only after unlocking its mutex, or this deadlocks.
struct GuardHoldingWaker {
    _guard: WriteGuard<'static, u8>,
}

impl Wake for GuardHoldingWaker {
    fn wake(self: Arc<Self>) {}
}

#[test]
fn dropping_a_stale_waker_may_reenter_the_lock() {
    let (done, finished) = std::sync::mpsc::channel();
    // A `static`, so that a waker (which must be `'static`) can hold a guard; not leaked, for Miri.
    static LOCK: std::sync::OnceLock<IntervalRwLock<u8>> = std::sync::OnceLock::new();
    let worker = thread::spawn(move || {
        let lock = LOCK.get_or_init(|| IntervalRwLock::new(vec![0; 8]));
        let held = lock.write(0..2);
        let waker_with_guard = |range| {
            Waker::from(Arc::new(GuardHoldingWaker {
                _guard: lock.write(range),
            }))
        };
        // Replaced waker: `set_waker` hands back the old one, the last reference to it.
        let mut future = Box::pin(lock.write_async(0..2));
        let first = waker_with_guard(4..6);
        assert!(
            future
                .as_mut()
                .poll(&mut Context::from_waker(&first))
                .is_pending()
        );
        drop(first);
        assert!(
            future
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
        assert_eq!(lock.held(), 1, "the old waker's guard was released");
        // Withdrawn request: `cancel` hands back its waker, the last reference to it.
        let second = waker_with_guard(6..8);
        assert!(
            future
                .as_mut()
                .poll(&mut Context::from_waker(&second))
                .is_pending()
        );
        drop(second);
        drop(future);
        assert_eq!((lock.held(), lock.queued()), (1, 0));
        drop(held);
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(10))
        .expect("deadlock: a waker was dropped while the lock's mutex was held");
    worker.join().unwrap();
}

// ---------------------------------------------------------------------------------------------
// interlock parity: priorities, replacing the container, the interval mutex

/// Polls `future` once with a flag waker; `Some(output)` if ready.
fn poll_flag<F: Future + Unpin>(future: &mut F, flag: &Arc<Flag>) -> Option<F::Output> {
    flag.0.store(false, Ordering::SeqCst);
    let waker = Waker::from(flag.clone());
    match std::pin::Pin::new(future).poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fn flag() -> Arc<Flag> {
    Arc::new(Flag(AtomicBool::new(false)))
}

#[test]
fn higher_priority_waiters_overtake_lower_ones_but_never_a_held_borrow() {
    let lock = IntervalRwLock::new(vec![0u32; 8]);
    let held = lock.write(0..8);
    let (fa, fb, fc, fd) = (flag(), flag(), flag(), flag());
    // Arrival order: a (prio 0), b (prio 0), c (prio 7), d (prio 3); all conflict on 2..4.
    let mut a = Box::pin(lock.write_async(0..4));
    let mut b = Box::pin(lock.read_async(2..6));
    let mut c = Box::pin(lock.prioritized(7).write_async(2..4));
    let mut d = Box::pin(lock.prioritized(3).write_async(3..8));
    assert!(poll_flag(&mut a, &fa).is_none());
    assert!(poll_flag(&mut b, &fb).is_none());
    assert!(poll_flag(&mut c, &fc).is_none());
    assert!(poll_flag(&mut d, &fd).is_none());
    assert!(lock.try_write(7..8).is_err()); // `try_*` never jump the queue
    assert_eq!((lock.held(), lock.queued()), (1, 4));
    // The held borrow was not preempted; releasing it grants c (highest) and nobody else.
    drop(held);
    let granted = |f: &Arc<Flag>| f.0.load(Ordering::SeqCst);
    assert_eq!(
        [granted(&fa), granted(&fb), granted(&fc), granted(&fd)],
        [false, false, true, false]
    );
    let mut order = Vec::new();
    let mut gc = poll_flag(&mut c, &fc).expect("c was woken");
    gc.fill(3);
    order.push('c');
    drop(gc);
    // Then d (prio 3) before a and b (prio 0), though it came last.
    assert_eq!(
        [granted(&fa), granted(&fb), granted(&fd)],
        [false, false, true]
    );
    let mut gd = poll_flag(&mut d, &fd).expect("d was woken");
    gd.fill(4);
    order.push('d');
    drop(gd);
    // Then a, the earlier of the two at priority 0; b reads 2..6, which a overlaps.
    assert_eq!([granted(&fa), granted(&fb)], [true, false]);
    let mut ga = poll_flag(&mut a, &fa).expect("a was woken");
    ga[0] = 1;
    order.push('a');
    drop(ga);
    let gb = poll_flag(&mut b, &fb).expect("b was woken");
    order.push('b');
    assert_eq!(&*gb, &[3, 4, 4, 4]);
    assert_eq!(order, ['c', 'd', 'a', 'b']);
    drop(gb);
    drop((a, b, c, d));
    assert_eq!(lock.into_inner(), [1, 0, 3, 4, 4, 4, 4, 4]);
}

#[test]
fn cancelling_a_priority_request_restores_the_order_it_overtook() {
    let lock = IntervalRwLock::new(vec![0u8; 4]);
    let held = lock.read(0..4);
    let (fw, fu) = (flag(), flag());
    let mut low = Box::pin(lock.write_async(0..2));
    let mut urgent = Box::pin(lock.prioritized(1).write_async(1..3));
    assert!(poll_flag(&mut low, &fw).is_none());
    assert!(poll_flag(&mut urgent, &fu).is_none());
    drop(urgent); // withdrawn while queued: `low` waits only for `held` again
    assert_eq!((lock.held(), lock.queued()), (1, 1));
    drop(held);
    assert!(fw.0.load(Ordering::SeqCst));
    assert_eq!(poll_flag(&mut low, &fw).map(|g| g.range()), Some(0..2));
    // A priority request that meets only lower-priority waiters (nothing held) is granted at once.
    let blocker = lock.write(3..4);
    let mut waiting = Box::pin(lock.write_async(2..4));
    assert!(poll_flag(&mut waiting, &fw).is_none());
    let now = lock.prioritized(1).write(2..3);
    assert_eq!(now.range(), 2..3);
    drop(blocker);
    assert!(!fw.0.load(Ordering::SeqCst)); // still behind `now`, which overtook it
    drop(now);
    assert!(fw.0.load(Ordering::SeqCst));
}

#[test]
fn blocking_priority_requests_are_granted_first() {
    let lock = IntervalRwLock::new(vec![0u32; 4]);
    let log = Mutex::new(Vec::new());
    let held = lock.write(..);
    thread::scope(|s| {
        let normal = s.spawn(|| {
            let _g = lock.write(0..2);
            log.lock().unwrap().push("normal");
        });
        wait_until("the normal request to queue", || lock.queued() == 1);
        let urgent = s.spawn(|| {
            let _g = lock.prioritized(2).write(1..3);
            log.lock().unwrap().push("urgent");
        });
        wait_until("the urgent request to queue", || lock.queued() == 2);
        drop(held);
        urgent.join().unwrap();
        normal.join().unwrap();
    });
    assert_eq!(*log.lock().unwrap(), ["urgent", "normal"]);
}

#[test]
fn replace_and_take_container_on_an_unborrowed_lock() {
    let mut lock = IntervalRwLock::new(vec![1, 2, 3]);
    lock.write(0..1)[0] = 10;
    std::mem::forget(lock.read(1..2)); // a leaked borrow: replacing the container forgets it
    assert_eq!((lock.held(), lock.queued()), (1, 0));
    let old = lock.replace_container(vec![5; 6]);
    assert_eq!(&*old, [10, 2, 3]);
    assert_eq!((lock.len(), lock.held()), (6, 0));
    lock.write(1..2)[0] = 7; // the leaked range is free again
    assert_eq!(&*lock.read(..), [5, 7, 5, 5, 5, 5]);
    assert_eq!(&*lock.take_container(), [5, 7, 5, 5, 5, 5]);
    assert!(lock.is_empty());
    assert_eq!(lock.read(..).len(), 0);
    lock.replace_container([1u8, 2].map(i32::from));
    assert_eq!(lock.into_inner(), [1, 2]);
}

#[test]
fn the_interval_mutex_excludes_every_overlap() {
    let mut m = IntervalMutex::new(vec![0u64; 16]);
    thread::scope(|s| {
        for part in 0..4u64 {
            let m = &m;
            s.spawn(move || {
                let start = part as usize * 4;
                for _ in 0..100 {
                    m.lock(start..start + 4).iter_mut().for_each(|x| *x += part);
                    // Straddles into the next part: overlaps that thread's borrows.
                    let end = (start + 6).min(16);
                    m.lock(start + 2..end).iter_mut().for_each(|x| *x += 1);
                }
            });
        }
    });
    assert_eq!((m.held(), m.queued()), (0, 0));
    let g = m.lock(0..8);
    assert_eq!(m.try_lock(7..9).err().map(|e| e.range()), Some(7..9));
    assert!(m.try_lock(8..9).is_ok());
    drop(g);
    let mut f = Box::pin(m.lock_async(3..5));
    assert_eq!(poll_flag(&mut f, &flag()).map(|g| g.range()), Some(3..5));
    drop(f);
    assert_eq!(
        m.get_mut(),
        [
            0, 0, 100, 100, 200, 200, 200, 200, 300, 300, 300, 300, 400, 400, 400, 400
        ]
    );
    assert_eq!(m.take_container().iter().sum::<u64>(), 3800);
    assert!(m.is_empty());
}

/// `Debug` of a prioritized view needs no `T: Debug` (it shows no element), as the lock's own does.
#[test]
fn a_prioritized_view_is_debug_for_elements_that_are_not() {
    struct Opaque;
    let lock = IntervalRwLock::new(vec![Opaque, Opaque]);
    let _r = lock.read(..1);
    assert_eq!(
        format!("{:?}", lock.prioritized(7)),
        "Prioritized { lock: IntervalRwLock { len: 2, held: 1, queued: 0 }, priority: 7 }"
    );
    let m = IntervalMutex::new(vec![Opaque]);
    assert_eq!(
        format!("{:?}", m.prioritized(0)),
        "PrioritizedMutex { lock: IntervalMutex { len: 1, held: 0, queued: 0 }, priority: 0 }"
    );
}

/// `with_slice` locks a caller's slice in place: threads in a scope write disjoint ranges through the lent
/// lock, and the caller's slice holds their writes once `with_slice` returns, with `f`'s result.
#[test]
fn a_lent_slice_is_locked_in_place_and_given_back_as_left() {
    let mut cells: Vec<u32> = (0..8).collect();
    let before = cells.as_ptr();
    let sum = IntervalRwLock::with_slice(&mut cells, |lock| {
        assert_eq!(lock.len(), 8);
        thread::scope(|s| {
            s.spawn(|| lock.write(..4).iter_mut().for_each(|x| *x += 100));
            s.spawn(|| lock.write(4..).iter_mut().for_each(|x| *x *= 10));
        });
        let held = lock.write(2..3);
        assert!(lock.try_read(0..4).is_err(), "overlaps the held write");
        drop(held);
        lock.read(..).iter().sum::<u32>()
    });
    assert_eq!(cells, [100, 101, 102, 103, 40, 50, 60, 70]);
    assert_eq!(sum, 626);
    assert_eq!(cells.as_ptr(), before, "locked in place, not copied");
}

/// A lent lock drops none of the elements (their owner does, once), also when `f` panics: the panic reaches
/// the caller and the slice is the caller's again, with the writes made before the panic.
#[test]
fn a_panic_in_with_slice_leaves_the_elements_to_their_owner() {
    struct Counted<'a>(&'a AtomicUsize, u32);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let drops = AtomicUsize::new(0);
    let mut cells: Vec<Counted> = (0..4).map(|i| Counted(&drops, i)).collect();
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        IntervalMutex::with_slice(&mut cells, |lock| {
            lock.lock(1..2)[0].1 = 7;
            let _held = lock.lock(3..);
            panic!("inside with_slice");
        })
    }));
    assert!(panicked.is_err());
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "the lent lock drops nothing"
    );
    assert_eq!(cells.iter().map(|c| c.1).collect::<Vec<_>>(), [0, 7, 2, 3]);
    drop(cells);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        4,
        "each element dropped once, by its owner"
    );
}

/// A lent lock's futures and panics are those of an owned one: a queued write is granted when the read
/// before it goes, and an out-of-bounds range names the type the caller holds.
#[test]
fn a_lent_lock_queues_futures_and_names_its_type_in_panics() {
    let mut cells = [1u8; 6];
    IntervalRwLock::with_slice(&mut cells, |lock| {
        let read = lock.read(2..4);
        let mut write = pin!(lock.write_async(..3));
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(write.as_mut().poll(&mut cx).is_pending());
        assert!(!flag.0.load(Ordering::SeqCst));
        drop(read);
        assert!(flag.0.load(Ordering::SeqCst), "woken once the read went");
        let Poll::Ready(mut guard) = write.as_mut().poll(&mut cx) else {
            panic!("granted once the read went");
        };
        guard.fill(9);
    });
    assert_eq!(cells, [9, 9, 9, 1, 1, 1]);
    let message = catch_unwind(AssertUnwindSafe(|| {
        IntervalMutex::with_slice(&mut cells, |lock| drop(lock.lock(4..9)))
    }))
    .expect_err("out of bounds");
    assert_eq!(
        message.downcast_ref::<String>().map(String::as_str),
        Some("IntervalMutex: range 4..9 is out of bounds for len 6; borrow a range within 0..6")
    );
}

// Hostile review of `with_slice` (review 70): empty and zero-sized slices, leaked guards and futures, panics
// with scoped threads and pending futures, nested lending, panicking destructors, fibers and coroutines.

/// An empty slice lends a lock of length 0: every empty range is granted at once and a non-empty one panics,
/// naming the type; a zero-sized `T` is locked by index like any other, and only its owner drops it.
#[test]
fn a_lent_empty_or_zero_sized_slice_is_locked_by_index() {
    let mut none: [u8; 0] = [];
    let lens = IntervalRwLock::with_slice(&mut none, |lock| {
        let (a, b) = (lock.write(..), lock.write(0..0));
        assert_eq!((lock.held(), lock.queued()), (0, 0), "empty ranges");
        (lock.len(), lock.is_empty(), a.len() + b.len())
    });
    assert_eq!(lens, (0, true, 0));
    let message = catch_unwind(AssertUnwindSafe(|| {
        IntervalRwLock::with_slice(&mut none, |lock| drop(lock.read(0..1)))
    }))
    .expect_err("out of bounds");
    assert_eq!(
        message.downcast_ref::<String>().map(String::as_str),
        Some("IntervalRwLock: range 0..1 is out of bounds for len 0; borrow a range within 0..0")
    );

    static ZST_DROPS: AtomicUsize = AtomicUsize::new(0);
    #[derive(Debug)]
    struct Zst;
    impl Drop for Zst {
        fn drop(&mut self) {
            ZST_DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }
    let mut zsts = [Zst, Zst, Zst, Zst, Zst];
    IntervalMutex::with_slice(&mut zsts, |lock| {
        let mut left = lock.lock(1..3);
        assert_eq!((left.len(), lock.len()), (2, 5));
        assert_eq!(lock.try_lock(2..4).unwrap_err().range(), 2..4);
        left[0] = Zst; // drops the one it replaces
        assert_eq!(lock.lock(3..).len(), 2);
    });
    assert_eq!(ZST_DROPS.load(Ordering::SeqCst), 1, "only the replaced one");
    drop(zsts);
    assert_eq!(ZST_DROPS.load(Ordering::SeqCst), 6);
}

/// Guards leaked in `f` (`mem::forget`, `ManuallyDrop`) keep their ranges until `f` returns, and no longer:
/// the slice is the caller's again with the writes made through them, and the next lent lock starts afresh.
#[test]
fn leaked_guards_end_with_the_lent_lock() {
    let mut cells = [0u8; 6];
    IntervalRwLock::with_slice(&mut cells, |lock| {
        let mut forgotten = lock.write(..2);
        forgotten.fill(1);
        std::mem::forget(forgotten);
        let mut kept = std::mem::ManuallyDrop::new(lock.write(4..));
        kept.fill(3);
        assert_eq!((lock.held(), lock.queued()), (2, 0));
        assert_eq!(lock.try_read(1..3).unwrap_err().range(), 1..3);
        lock.write(2..4).fill(2);
        kept[1] = 4;
    });
    assert_eq!(cells, [1, 1, 2, 2, 3, 4]);
    cells[2] = 9; // the caller's again
    IntervalMutex::with_slice(&mut cells, |lock| {
        assert_eq!((lock.held(), lock.queued()), (0, 0), "a new lock each time");
        assert_eq!(lock.lock(..).to_vec(), [1, 1, 9, 2, 3, 4]);
    });
}

/// A queued future leaked in `f` (its box forgotten, so not under Miri's leak check) and a guard leaked in a
/// box: the range stays taken only until `f` returns, and the future's waker is dropped with the lent lock's
/// bookkeeping.
#[test]
#[cfg_attr(miri, ignore = "leaks two boxes by design (Miri's leak check)")]
fn a_leaked_queued_future_ends_with_the_lent_lock() {
    struct Flag;
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {}
    }
    let flag = Arc::new(Flag);
    let waker = Waker::from(flag.clone());
    let mut cells = [0u8; 6];
    IntervalRwLock::with_slice(&mut cells, |lock| {
        let leaked: &mut WriteGuard<'_, u8> = Box::leak(Box::new(lock.write(4..)));
        leaked.fill(3);
        let mut queued = Box::pin(lock.write_async(3..5));
        let mut cx = Context::from_waker(&waker);
        assert!(queued.as_mut().poll(&mut cx).is_pending());
        std::mem::forget(queued);
        assert_eq!((lock.held(), lock.queued()), (1, 1));
        assert_eq!(
            Arc::strong_count(&flag),
            3,
            "the test's, `waker` and the queue's"
        );
        assert_eq!(
            lock.try_read(3..4).unwrap_err().range(),
            3..4,
            "queued write"
        );
        lock.write(1..3).fill(2);
        leaked[1] = 4;
    });
    assert_eq!(cells, [0, 2, 2, 0, 3, 4]);
    assert_eq!(
        Arc::strong_count(&flag),
        2,
        "the queue's clone went with the lock"
    );
}

/// `f` panics while a scoped thread holds a write guard and `f`'s own future is queued behind it: the
/// future is withdrawn, the scope joins the thread (which finishes its write), the panic reaches the caller
/// with its own payload and the slice holds the thread's write.
#[test]
fn a_panic_in_with_slice_with_a_scoped_holder_and_a_queued_future() {
    let mut cells = [0u32; 4];
    let barrier = Barrier::new(2);
    let payload = catch_unwind(AssertUnwindSafe(|| {
        IntervalRwLock::with_slice(&mut cells, |lock| {
            thread::scope(|s| {
                s.spawn(|| {
                    let mut held = lock.write(..2);
                    barrier.wait(); // held
                    barrier.wait(); // the future is queued
                    held.fill(5);
                });
                barrier.wait();
                let mut future = pin!(lock.write_async(1..3));
                let mut woken = false;
                assert!(poll_once(future.as_mut(), &mut woken).is_pending());
                assert_eq!((lock.held(), lock.queued()), (1, 1));
                barrier.wait();
                panic!("in f, future queued");
            })
        })
    }))
    .expect_err("f panicked");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"in f, future queued"));
    assert_eq!(cells, [5, 5, 0, 0]);

    // A scoped thread that panics holding a guard: the scope panics once it is joined, with the writes made.
    let payload = catch_unwind(AssertUnwindSafe(|| {
        IntervalMutex::with_slice(&mut cells, |lock| {
            thread::scope(|s| {
                s.spawn(|| {
                    let mut held = lock.lock(2..);
                    held[0] = 7;
                    panic!("in a scoped thread");
                });
            });
        })
    }))
    .expect_err("the scope panicked");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"a scoped thread panicked")
    );
    assert_eq!(cells, [5, 5, 7, 0]);
}

/// A write guard's sub-slice is lent again: the inner lock's threads write it while the outer lock still
/// excludes that range and serves the rest.
#[test]
fn a_guards_slice_is_lent_again_inside_with_slice() {
    let mut cells = [0u16; 8];
    IntervalRwLock::with_slice(&mut cells, |outer| {
        let mut middle = outer.write(2..6);
        let inner_sum = IntervalMutex::with_slice(&mut middle, |inner| {
            thread::scope(|s| {
                s.spawn(|| inner.lock(..2).fill(1));
                s.spawn(|| inner.lock(2..).fill(2));
                s.spawn(|| outer.write(6..).fill(3));
            });
            assert!(outer.try_read(5..7).is_err(), "the outer guard holds 2..6");
            inner.lock(..).iter().sum::<u16>()
        });
        assert_eq!(inner_sum, 6);
        middle[0] += 10;
        drop(middle);
        assert_eq!(outer.read(..).to_vec(), [0, 0, 11, 1, 2, 2, 3, 3]);
    });
    assert_eq!(cells, [0, 0, 11, 1, 2, 2, 3, 3]);
}

/// An element whose drop panics, replaced through a lent lock's guard: the panic reaches the caller, the
/// new element is in place and nothing is dropped twice or by the lent lock.
#[test]
fn a_panicking_drop_in_with_slice_reaches_the_caller_once() {
    let drops = AtomicUsize::new(0);
    struct Bomb<'a>(&'a AtomicUsize, u32, bool);
    impl Drop for Bomb<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
            assert!(!self.2, "bomb {}", self.1);
        }
    }
    let mut cells = vec![Bomb(&drops, 0, true), Bomb(&drops, 1, false)];
    let payload = catch_unwind(AssertUnwindSafe(|| {
        IntervalRwLock::with_slice(&mut cells, |lock| {
            let mut guard = lock.write(..1);
            let old = std::mem::replace(&mut guard[0], Bomb(&drops, 2, false));
            drop(old);
        })
    }))
    .expect_err("the old element's drop panicked");
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("bomb 0")
    );
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(cells.iter().map(|b| b.1).collect::<Vec<_>>(), [2, 1]);
    drop(cells);
    assert_eq!(drops.load(Ordering::SeqCst), 3);
}

/// The lent lock is the owned one's type: `Sync` for `Sync + Send` elements (shared by scoped threads above),
/// its guards and futures `Send` as the owned lock's are.
#[test]
fn a_lent_lock_has_the_owned_ones_auto_traits() {
    fn sync<T: Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let mut cells = [0u64; 2];
    IntervalRwLock::with_slice(&mut cells, |lock| {
        sync(lock);
        send(&lock.read(..1));
        send(&lock.write(1..));
        send(&lock.prioritized(3).write_async(..));
    });
    // A `WriteGuard<Cell<_>>` moves to another thread although the lent lock of cells is not `Sync`.
    let mut cells = [Cell::new(1), Cell::new(2)];
    IntervalMutex::with_slice(&mut cells, |lock| {
        let guard = lock.lock(1..);
        thread::scope(|s| {
            s.spawn(move || guard[0].set(20));
        });
    });
    assert_eq!(cells.map(Cell::into_inner), [1, 20]);
}

/// A fiber of the delegation runtime lends its own array and waits inside `f` for a range a scoped thread
/// holds: the fiber suspends (its worker runs on) and resumes with the thread's write in place.
#[cfg(not(miri))]
#[test]
fn a_fiber_waits_inside_with_slice() {
    let _rt = trust_core::Runtime::builder()
        .workers(1)
        .build()
        .expect("the only runtime of this test binary");
    let fiber = trust_core::spawn(|| {
        let mut cells = [0u8; 4];
        IntervalRwLock::with_slice(&mut cells, |lock| {
            thread::scope(|s| {
                let holder = s.spawn(|| {
                    let mut held = lock.write(..2);
                    wait_until("the fiber's queued write", || lock.queued() == 1);
                    held.fill(1);
                });
                wait_until("the thread's write", || lock.held() == 1);
                lock.write(1..3).fill(2);
                holder.join().unwrap();
            });
        });
        cells
    });
    assert_eq!(fiber.join().unwrap(), [1, 2, 2, 0]);
}

/// A `may` coroutine lends its own array and waits inside `f`: it yields instead of blocking its thread, and
/// resumes with the scoped thread's write in place.
#[cfg(all(feature = "may", not(miri)))]
#[test]
fn a_may_coroutine_waits_inside_with_slice() {
    // SAFETY: the coroutine uses no thread-local storage of its own across yields.
    let coroutine = unsafe {
        may::coroutine::spawn(|| {
            let mut cells = [0u8; 4];
            IntervalMutex::with_slice(&mut cells, |lock| {
                thread::scope(|s| {
                    s.spawn(|| {
                        let mut held = lock.lock(2..);
                        wait_until("the coroutine's queued lock", || lock.queued() == 1);
                        held.fill(3);
                    });
                    wait_until("the thread's lock", || lock.held() == 1);
                    lock.lock(1..3).fill(4);
                });
            });
            cells
        })
    };
    assert_eq!(coroutine.join().unwrap(), [0, 4, 4, 3]);
}

/// Leaked queued futures whose wakers' drops panic (executor code): the lent lock goes while `f` unwinds,
/// or right after `f` returns, and takes their wakers with it, each dropped on its own. `f`'s panic reaches
/// the caller as it was (it aborted the process: a panic in a destructor during cleanup), and after a normal
/// return the first waker's panic does, once, with both wakers dropped (two aborted it).
#[test]
#[cfg_attr(
    miri,
    ignore = "leaks the futures' boxes by design (Miri's leak check)"
)]
fn leaked_futures_with_panicking_wakers_go_with_the_lent_lock() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    struct Hostile(u32);
    impl Wake for Hostile {
        fn wake(self: Arc<Self>) {}
    }
    impl Drop for Hostile {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
            panic!("waker {} dropped", self.0);
        }
    }
    /// Queues a write of `range` behind the held `..4`, with a waker only the lock keeps, and leaks it.
    fn leak_queued(lock: &IntervalRwLock<u8>, range: std::ops::Range<usize>, id: u32) {
        let waker = Waker::from(Arc::new(Hostile(id)));
        let mut queued = Box::pin(lock.write_async(range));
        assert!(
            queued
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        std::mem::forget(queued);
        drop(waker); // the lock's clone is the last one
    }
    let mut cells = [0u8; 4];
    let payload = catch_unwind(AssertUnwindSafe(|| {
        IntervalRwLock::with_slice(&mut cells, |lock| {
            lock.write(2..).fill(2);
            std::mem::forget(lock.write(..2));
            leak_queued(lock, 0..1, 1);
            leak_queued(lock, 1..2, 2);
            assert_eq!((lock.held(), lock.queued()), (1, 2));
            panic!("in f");
        })
    }))
    .expect_err("f panicked");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"in f"));
    assert_eq!(DROPS.load(Ordering::SeqCst), 2);
    assert_eq!(cells, [0, 0, 2, 2]);

    let payload = catch_unwind(AssertUnwindSafe(|| {
        IntervalRwLock::with_slice(&mut cells, |lock| {
            std::mem::forget(lock.write(..2));
            leak_queued(lock, 0..1, 3);
            leak_queued(lock, 0..1, 3);
            lock.write(2..).fill(3);
        })
    }))
    .expect_err("a waker's drop panicked");
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("waker 3 dropped")
    );
    assert_eq!(DROPS.load(Ordering::SeqCst), 4);
    assert_eq!(cells, [0, 0, 3, 3]);
}

/// A lent slice of `usize::MAX` zero-sized elements: ranges up to the last index are locked and queued
/// exactly (no overflow at the end), and `..=usize::MAX` is out of bounds, not wrapped.
#[test]
fn a_lent_slice_of_usize_max_zero_sized_elements() {
    let mut units = vec![(); usize::MAX];
    IntervalRwLock::with_slice(&mut units, |lock| {
        let last = lock.write(usize::MAX - 1..);
        let rest = lock.read(..usize::MAX - 1);
        assert_eq!((last.len(), rest.len()), (1, usize::MAX - 1));
        assert_eq!(
            lock.try_read(usize::MAX - 2..).unwrap_err().range(),
            usize::MAX - 2..usize::MAX
        );
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut all = pin!(lock.write_async(..));
        assert!(all.as_mut().poll(&mut cx).is_pending());
        assert_eq!((lock.held(), lock.queued()), (2, 1));
        drop(last);
        assert!(
            !flag.0.load(Ordering::SeqCst),
            "the read still holds ..MAX-1"
        );
        drop(rest);
        assert!(flag.0.load(Ordering::SeqCst), "woken once both went");
        let Poll::Ready(guard) = all.as_mut().poll(&mut cx) else {
            panic!("granted once both went");
        };
        assert_eq!((guard.range(), lock.held()), (0..usize::MAX, 1));
    });
    let message = catch_unwind(AssertUnwindSafe(|| {
        IntervalRwLock::with_slice(&mut units, |lock| drop(lock.read(..=usize::MAX)))
    }))
    .expect_err("one past the last index");
    assert_eq!(
        message.downcast_ref::<String>().map(String::as_str),
        Some(
            "IntervalRwLock: range ..=18446744073709551615 is out of bounds for len 18446744073709551615; \
             borrow a range within 0..18446744073709551615"
        )
    );
}

/// A `may` coroutine cancelled while it waits inside `with_slice` unwinds out of it: its request is
/// withdrawn before the lent lock goes (the scoped holder sees the queue empty), and the slice is the
/// coroutine's again on the way out.
#[cfg(all(feature = "may", not(miri)))]
#[test]
fn a_may_coroutine_cancelled_inside_with_slice_withdraws_its_request() {
    static QUEUED: AtomicBool = AtomicBool::new(false);
    static WITHDRAWN: AtomicBool = AtomicBool::new(false);
    static AFTER: AtomicUsize = AtomicUsize::new(0);
    // SAFETY: the coroutine uses no thread-local storage of its own across yields.
    let coroutine = unsafe {
        may::coroutine::spawn(|| {
            struct Report<'a>(&'a [u8; 4]);
            impl Drop for Report<'_> {
                fn drop(&mut self) {
                    AFTER.store(self.0.iter().map(|&x| x as usize).sum(), Ordering::SeqCst);
                }
            }
            let mut cells = [0u8; 4];
            IntervalMutex::with_slice(&mut cells, |lock| {
                thread::scope(|s| {
                    s.spawn(|| {
                        let mut held = lock.lock(..2);
                        held.fill(5);
                        wait_until("the coroutine's queued lock", || lock.queued() == 1);
                        QUEUED.store(true, Ordering::SeqCst);
                        wait_until("the withdrawal", || lock.queued() == 0);
                        WITHDRAWN.store(true, Ordering::SeqCst);
                    });
                    wait_until("the thread's lock", || lock.held() == 1);
                    lock.lock(1..3).fill(9); // cancelled while it waits
                    unreachable!("cancelled");
                });
            });
            let _report = Report(&cells);
        })
    };
    wait_until("the queued coroutine", || QUEUED.load(Ordering::SeqCst));
    // SAFETY: the coroutine holds no resource that a cancellation (an unwind from its yield) would leak.
    unsafe { coroutine.coroutine().cancel() };
    assert!(coroutine.join().is_err(), "cancelled");
    assert!(WITHDRAWN.load(Ordering::SeqCst));
    assert_eq!(AFTER.load(Ordering::SeqCst), 0, "never reached: it unwound");
}
