//! Adversarial tests of `trust_core::interval`: edge-case ranges, a randomized exclusion checker, guards
//! dropped on other threads, futures cancelled in odd orders, and wakers that misbehave (a clone or drop that
//! looks at the lock, a wake that panics): docs/interval.md's promises.

use std::future::Future;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Wake, Waker};

use trust_core::interval::{IntervalMutex, IntervalRwLock};

mod common;
use common::{panic_message, within};

/// A waker that counts wakes.
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker(c: &Arc<Counter>) -> Waker {
    Waker::from(c.clone())
}

/// A waker whose `wake` panics.
struct Panicky;

impl Wake for Panicky {
    fn wake(self: Arc<Self>) {
        panic!("waker panics");
    }
}

fn poll_once<F: Future + Unpin>(f: &mut F, w: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(w))
}

#[test]
#[allow(clippy::reversed_empty_ranges)] // `7..3` on purpose: its message is checked
fn range_edge_cases() {
    let lock = IntervalRwLock::new(vec![0u8; 10]);
    // Empty ranges at and inside the end are fine and conflict with nothing.
    let all = lock.write(..);
    let e1 = lock.write(10..10);
    let e2 = lock.try_write(0..0).expect("empty range granted at once");
    let e3 = lock.read(5..5);
    assert_eq!(lock.held(), 1, "empty ranges are never recorded");
    assert_eq!((e1.len(), e2.len(), e3.len()), (0, 0, 0));
    drop((all, e1, e2, e3));
    // Inclusive end at usize::MAX must not overflow into a valid range.
    let m = catch_unwind(AssertUnwindSafe(|| drop(lock.read(0..=usize::MAX)))).unwrap_err();
    let m = panic_message(m);
    assert!(m.contains("out of bounds") && m.contains("len 10"), "{m}");
    let m = panic_message(
        catch_unwind(AssertUnwindSafe(|| {
            drop(lock.read((Bound::Excluded(usize::MAX), Bound::Unbounded)))
        }))
        .unwrap_err(),
    );
    assert!(m.contains("IntervalRwLock"), "{m}");
    let m = panic_message(catch_unwind(AssertUnwindSafe(|| drop(lock.write(11..11)))).unwrap_err());
    assert!(m.contains("11..11") && m.contains("out of bounds"), "{m}");
    let m = panic_message(catch_unwind(AssertUnwindSafe(|| drop(lock.write(7..3)))).unwrap_err());
    assert_eq!(
        m,
        "IntervalRwLock: range 7..3 starts after it ends (start 7 > end 3); the lock has len 10"
    );
    // Futures: panic at creation, not poll.
    let m = catch_unwind(AssertUnwindSafe(|| {
        let _f = lock.write_async(3..=10);
    }));
    assert!(m.is_err());
    // `..=9` is the whole thing; `(Excluded(9), Unbounded)` is the empty 10..10.
    assert_eq!(lock.read(..=9).range(), 0..10);
    assert_eq!(
        lock.read((Bound::Excluded(9), Bound::Unbounded)).range(),
        10..10
    );
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

#[test]
fn zero_length_lock_and_zero_sized_elements() {
    let lock = IntervalRwLock::new(Vec::<u64>::new());
    assert_eq!(lock.write(..).len(), 0);
    assert_eq!(lock.read(0..0).len(), 0);
    assert!(catch_unwind(AssertUnwindSafe(|| drop(lock.read(0..1)))).is_err());
    let zst = IntervalRwLock::new(vec![(); 1000]);
    let a = zst.write(0..500);
    let b = zst.write(500..1000);
    assert!(zst.try_read(499..501).is_err());
    assert_eq!((a.len(), b.len()), (500, 500));
}

struct Tracked(Arc<AtomicIsize>, u32);
impl Clone for Tracked {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, Ordering::SeqCst);
        Tracked(self.0.clone(), self.1)
    }
}
impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn every_element_dropped_exactly_once_through_replace_take_and_drop() {
    let live = Arc::new(AtomicIsize::new(0));
    let mk = |n: usize, tag: u32| {
        (0..n)
            .map(|_| {
                live.fetch_add(1, Ordering::SeqCst);
                Tracked(live.clone(), tag)
            })
            .collect::<Vec<_>>()
    };
    let mut lock = IntervalRwLock::new(mk(10, 1));
    {
        let mut g = lock.write(2..5);
        g[0] = Tracked(live.clone(), 9); // old one dropped, new counted below
        live.fetch_add(1, Ordering::SeqCst);
    }
    assert_eq!(live.load(Ordering::SeqCst), 10);
    let old = lock.replace_container(mk(3, 2));
    assert_eq!(old.len(), 10);
    assert_eq!(old[2].1, 9);
    drop(old);
    assert_eq!(live.load(Ordering::SeqCst), 3);
    let taken = lock.take_container();
    assert_eq!(taken.len(), 3);
    assert!(lock.is_empty());
    drop(taken);
    assert_eq!(live.load(Ordering::SeqCst), 0);
    let lock2 = IntervalRwLock::new(&mk(4, 3)[..]); // from a slice of clones
    assert_eq!(live.load(Ordering::SeqCst), 4);
    drop(lock2);
    drop(lock);
    assert_eq!(live.load(Ordering::SeqCst), 0);
    // A panic under a write guard: the guard is released, elements intact.
    let lock = IntervalRwLock::new(mk(5, 4));
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _g = lock.write(1..4);
        panic!("x");
    }));
    assert!(r.is_err());
    assert_eq!(lock.held(), 0);
    assert_eq!(lock.try_write(..).unwrap().len(), 5);
    drop(lock);
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

/// Per-element counters: readers add 1, writers set a flag; any reader/writer or writer/writer overlap
/// shows as an illegal state.
#[test]
fn randomized_exclusion_checker_across_threads() {
    const LEN: usize = 64;
    let (threads, ops) = if cfg!(miri) { (3, 30) } else { (6, 20_000) };
    let lock = Arc::new(IntervalRwLock::new(vec![0u64; LEN]));
    let readers: Arc<Vec<AtomicIsize>> = Arc::new((0..LEN).map(|_| AtomicIsize::new(0)).collect());
    let writers: Arc<Vec<AtomicBool>> =
        Arc::new((0..LEN).map(|_| AtomicBool::new(false)).collect());
    let bad = Arc::new(AtomicUsize::new(0));
    let writes = within(120, move || {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (lock, readers, writers, bad) =
                    (lock.clone(), readers.clone(), writers.clone(), bad.clone());
                std::thread::spawn(move || {
                    let mut rng = 0x9E3779B97F4A7C15u64 ^ (t as u64 * 0x1234567);
                    let mut next = || {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng
                    };
                    let mut my_writes = 0u64;
                    for _ in 0..ops {
                        let a = (next() % (LEN as u64 + 1)) as usize;
                        let b = (next() % (LEN as u64 + 1)) as usize;
                        let (a, b) = (a.min(b), a.max(b));
                        let kind = next() % 4;
                        if kind == 0 {
                            let mut g = if next() % 2 == 0 {
                                lock.write(a..b)
                            } else {
                                match lock.try_write(a..b) {
                                    Ok(g) => g,
                                    Err(_) => continue,
                                }
                            };
                            for i in a..b {
                                if writers[i].swap(true, Ordering::SeqCst)
                                    || readers[i].load(Ordering::SeqCst) != 0
                                {
                                    bad.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            for x in g.iter_mut() {
                                *x += 1;
                            }
                            my_writes += (b - a) as u64;
                            std::thread::yield_now();
                            for i in a..b {
                                writers[i].store(false, Ordering::SeqCst);
                            }
                        } else {
                            let g = if kind == 1 {
                                match lock.try_read(a..b) {
                                    Ok(g) => g,
                                    Err(_) => continue,
                                }
                            } else {
                                lock.read(a..b)
                            };
                            for i in a..b {
                                readers[i].fetch_add(1, Ordering::SeqCst);
                                if writers[i].load(Ordering::SeqCst) {
                                    bad.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            let _s: u64 = g.iter().sum();
                            for i in a..b {
                                readers[i].fetch_sub(1, Ordering::SeqCst);
                            }
                        }
                    }
                    my_writes
                })
            })
            .collect();
        let total: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(bad.load(Ordering::SeqCst), 0, "exclusion violated");
        assert_eq!((lock.held(), lock.queued()), (0, 0));
        let sum: u64 = lock.read(..).iter().sum();
        (total, sum)
    });
    assert_eq!(writes.0, writes.1, "lost updates");
}

#[test]
fn write_guard_dropped_on_another_thread_wakes_waiters() {
    within(20, || {
        let lock = Arc::new(IntervalRwLock::new(vec![0u32; 16]));
        let g = lock.write(4..12);
        let l2 = lock.clone();
        let waiter = std::thread::spawn(move || {
            let mut g = l2.write(8..9);
            g[0] = 5;
        });
        while lock.queued() == 0 {
            std::thread::yield_now();
        }
        std::thread::scope(|s| {
            s.spawn(move || drop(g));
        });
        waiter.join().unwrap();
        assert_eq!(lock.read(8..9)[0], 5);
        assert_eq!((lock.held(), lock.queued()), (0, 0));
    });
}

/// Many futures queued behind a held write, dropped in an interleaved order (some after their grant was
/// already signalled but before they were polled again): the rest proceed, counts return to 0.
#[test]
fn cancelled_futures_in_odd_orders_never_strand_the_others() {
    let lock = IntervalRwLock::new(vec![0u32; 32]);
    let counter = Arc::new(Counter(AtomicUsize::new(0)));
    let w = counting_waker(&counter);
    let held = lock.write(0..16);
    let mut futs: Vec<_> = (0..16)
        .map(|i| {
            let r = (i % 8) * 2..(i % 8) * 2 + 10;
            if i % 3 == 0 {
                Err(lock.read_async(r))
            } else {
                Ok(lock.write_async(r))
            }
        })
        .collect();
    for f in futs.iter_mut() {
        let p = match f {
            Ok(f) => poll_once(f, &w).is_pending(),
            Err(f) => poll_once(f, &w).is_pending(),
        };
        assert!(p);
    }
    assert_eq!(lock.queued(), 16);
    // Drop every other queued future while the holder is still there.
    let mut i = 0;
    futs.retain(|_| {
        i += 1;
        i % 2 == 0
    });
    assert_eq!(lock.queued(), 8);
    drop(held);
    // Now drain: repeatedly poll; drop a granted-but-unpolled one whenever we can.
    let mut guards_taken = 0;
    let mut rounds = 0;
    while !futs.is_empty() {
        rounds += 1;
        assert!(
            rounds < 1000,
            "stuck: queued {} held {}",
            lock.queued(),
            lock.held()
        );
        let f = futs.remove(0);
        match f {
            Ok(mut f) => match poll_once(&mut f, &w) {
                Poll::Ready(g) => {
                    guards_taken += 1;
                    drop(g)
                }
                Poll::Pending => futs.push(Ok(f)),
            },
            Err(mut f) => match poll_once(&mut f, &w) {
                Poll::Ready(g) => {
                    guards_taken += 1;
                    drop(g)
                }
                Poll::Pending => futs.push(Err(f)),
            },
        }
    }
    assert_eq!(guards_taken, 8);
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    // A granted future dropped before its next poll releases the grant.
    let held = lock.write(..);
    let mut f = lock.write_async(0..1);
    assert!(poll_once(&mut f, &w).is_pending());
    let before = counter.0.load(Ordering::SeqCst);
    drop(held);
    assert!(
        counter.0.load(Ordering::SeqCst) > before,
        "granted future was not woken"
    );
    assert_eq!(lock.held(), 1);
    drop(f);
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    assert!(lock.try_write(..).is_ok());
}

thread_local! {
    static REENTER: std::cell::Cell<Option<*const IntervalRwLock<u8>>> = const { std::cell::Cell::new(None) };
}

/// "A std::sync::Mutex guards the lock's state; no user code runs inside it" (docs/interval.md). A
/// `Waker`'s `clone` is user code; if the lock clones the waker inside its mutex, a waker that looks at
/// the lock (`queued()`) deadlocks.
#[test]
fn a_waker_clone_that_inspects_the_lock_does_not_deadlock() {
    within(10, || {
        fn clone(_: *const ()) -> RawWaker {
            REENTER.with(|r| {
                if let Some(p) = r.get() {
                    // SAFETY: `REENTER` points at the test's lock while it lives (cleared before it is dropped).
                    let _ = unsafe { &*p }.queued(); // user code in Waker::clone
                }
            });
            RawWaker::new(std::ptr::null(), &VT)
        }
        fn noop(_: *const ()) {}
        static VT: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
        // SAFETY: the vtable's functions ignore the data pointer and do nothing unsafe.
        let waker = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VT)) };
        let lock = IntervalRwLock::new(vec![0u8; 4]);
        REENTER.with(|r| r.set(Some(&lock as *const _)));
        let held = lock.write(..);
        let mut f = lock.read_async(0..2);
        let p = poll_once(&mut f, &waker).is_pending();
        let p2 = poll_once(&mut f, &waker).is_pending();
        REENTER.with(|r| r.set(None));
        drop(held);
        assert!(p && p2);
        drop(f);
    });
}

/// The waker's `drop` is user code too: a waker whose drop takes the lock's bookkeeping (queued()).
#[test]
fn a_waker_drop_that_inspects_the_lock_does_not_deadlock() {
    within(10, || {
        fn clone(p: *const ()) -> RawWaker {
            RawWaker::new(p, &VT)
        }
        fn noop(_: *const ()) {}
        fn drop_w(_: *const ()) {
            REENTER.with(|r| {
                if let Some(p) = r.get() {
                    // SAFETY: as above.
                    let _ = unsafe { &*p }.queued();
                }
            });
        }
        static VT: RawWakerVTable = RawWakerVTable::new(clone, drop_w, noop, drop_w);
        let lock = IntervalRwLock::new(vec![0u8; 4]);
        REENTER.with(|r| r.set(Some(&lock as *const _)));
        let held = lock.write(..);
        // SAFETY: the vtable's functions never dereference the data pointer (it only tells the wakers apart).
        let w1 = unsafe { Waker::from_raw(RawWaker::new(std::ptr::without_provenance(1), &VT)) };
        // SAFETY: as above.
        let w2 = unsafe { Waker::from_raw(RawWaker::new(std::ptr::without_provenance(2), &VT)) };
        let mut f = lock.read_async(0..2);
        assert!(poll_once(&mut f, &w1).is_pending());
        assert!(poll_once(&mut f, &w2).is_pending()); // replaces the stored waker: old one dropped
        drop(held); // wakes (consumes) the stored waker
        assert!(poll_once(&mut f, &w1).is_ready());
        let held = lock.write(..);
        let mut g = lock.write_async(0..1);
        assert!(poll_once(&mut g, &w1).is_pending());
        drop(g); // cancel: drops the stored waker
        drop(held);
        REENTER.with(|r| r.set(None));
    });
}

#[test]
fn fifo_async_reader_does_not_jump_a_queued_blocking_writer() {
    within(20, || {
        let lock = Arc::new(IntervalRwLock::new(vec![0u32; 10]));
        let r = lock.read(0..5);
        let l2 = lock.clone();
        let writer = std::thread::spawn(move || {
            l2.write(3..7).fill(1);
        });
        while lock.queued() == 0 {
            std::thread::yield_now();
        }
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let w = counting_waker(&counter);
        let mut late = lock.read_async(4..5);
        assert!(
            poll_once(&mut late, &w).is_pending(),
            "reader jumped the queued writer"
        );
        let ok = lock.read_async(7..10);
        let mut ok = ok;
        assert!(poll_once(&mut ok, &w).is_ready());
        drop(r);
        writer.join().unwrap();
        let mut spins = 0;
        loop {
            if let Poll::Ready(g) = poll_once(&mut late, &w) {
                assert_eq!(g[0], 1, "reader saw the data before the earlier writer");
                break;
            }
            spins += 1;
            assert!(spins < 1_000_000);
            std::thread::yield_now();
        }
    });
}

#[test]
fn interval_mutex_adjacent_ranges_do_not_conflict_but_one_overlap_does() {
    let m = IntervalMutex::new(vec![0u8; 8]);
    let a = m.lock(0..4);
    let b = m.lock(4..8);
    assert!(m.try_lock(3..5).is_err());
    assert!(m.try_lock(4..4).is_ok());
    drop((a, b));
    assert!(m.try_lock(..).is_ok());
}

#[test]
fn priorities_at_extremes_and_cancelled_priority_waiters() {
    within(20, || {
        let lock = Arc::new(IntervalRwLock::new(vec![0u32; 8]));
        let order = Arc::new(StdMutex::new(Vec::new()));
        let held = lock.write(..);
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let w = counting_waker(&counter);
        let mut hi = lock.prioritized(u32::MAX).write_async(0..8);
        assert!(poll_once(&mut hi, &w).is_pending());
        let mut hs = vec![];
        for (i, p) in [0u32, 1, u32::MAX, 0].into_iter().enumerate() {
            let (l, o) = (lock.clone(), order.clone());
            hs.push(std::thread::spawn(move || {
                let _g = l.prioritized(p).write(i..i + 1);
                o.lock().unwrap().push(i);
            }));
            while lock.queued() < 2 + i {
                std::thread::yield_now();
            }
        }
        drop(hi); // cancel the highest-priority queued request
        drop(held);
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(order.lock().unwrap().len(), 4);
        assert_eq!((lock.held(), lock.queued()), (0, 0));
    });
}

/// The grant rule, exactly: a request waits for earlier *conflicting* requests, held or queued; reads
/// never conflict with reads, even queued ones.
#[test]
fn try_semantics_against_queued_requests_of_each_kind() {
    let lock = IntervalRwLock::new(vec![0u8; 20]);
    let counter = Arc::new(Counter(AtomicUsize::new(0)));
    let w = counting_waker(&counter);
    let held = lock.write(0..5);
    let mut qr = lock.read_async(3..8); // queued read (waits for the held write)
    assert!(poll_once(&mut qr, &w).is_pending());
    assert!(
        lock.try_read(6..8).is_ok(),
        "a read must not wait for a queued read"
    );
    assert!(
        lock.try_write(6..8).is_err(),
        "a write must not jump a queued read it overlaps"
    );
    assert!(
        lock.try_write(8..20).is_ok(),
        "adjacent to the queued read: no conflict"
    );
    let mut qw = lock.write_async(7..12); // queued behind the queued read (overlap 7..8)
    assert!(poll_once(&mut qw, &w).is_pending());
    assert!(
        lock.try_read(11..12).is_err(),
        "would jump the queued write"
    );
    assert!(lock.try_read(12..13).is_ok());
    assert_eq!(lock.queued(), 2);
    // Cancel the queued read: the queued write waited only for it, so it is granted now.
    drop(qr);
    assert_eq!(lock.queued(), 0);
    match poll_once(&mut qw, &w) {
        Poll::Ready(g) => assert_eq!(g.range(), 7..12),
        Poll::Pending => panic!("the write that waited only for a cancelled read is stranded"),
    }
    drop(held);
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

/// Blocking threads chained through queued requests, with the middle one a cancelled future.
#[test]
fn cancelling_the_middle_of_a_chain_releases_the_tail_thread() {
    within(20, || {
        let lock = Arc::new(IntervalRwLock::new(vec![0u32; 12]));
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let w = counting_waker(&counter);
        let held = lock.write(0..4);
        let mut mid = lock.write_async(2..8);
        assert!(poll_once(&mut mid, &w).is_pending());
        let l2 = lock.clone();
        let tail = std::thread::spawn(move || {
            let mut g = l2.write(6..10);
            g[0] = 9;
        });
        while lock.queued() < 2 {
            std::thread::yield_now();
        }
        drop(mid);
        tail.join().unwrap();
        drop(held);
        assert_eq!(lock.read(6..7)[0], 9);
    });
}

/// One release grants two queued futures; the first one's waker panics in `wake`. The other must still
/// be woken (a lost wake-up strands a task that is granted but never polled again).
#[test]
fn a_panicking_waker_does_not_strand_the_other_granted_waiters() {
    let lock = IntervalRwLock::new(vec![0u8; 8]);
    let counter = Arc::new(Counter(AtomicUsize::new(0)));
    let good = counting_waker(&counter);
    let bad = Waker::from(Arc::new(Panicky));
    let held = lock.write(..);
    let mut f1 = lock.read_async(0..4);
    let mut f2 = lock.read_async(4..8);
    assert!(poll_once(&mut f1, &bad).is_pending());
    assert!(poll_once(&mut f2, &good).is_pending());
    let r = catch_unwind(AssertUnwindSafe(|| drop(held)));
    assert_eq!(
        panic_message(r.unwrap_err()),
        "waker panics",
        "resumed once every waiter was woken"
    );
    assert_eq!(lock.queued(), 0, "both granted");
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        1,
        "the well-behaved task was never woken"
    );
}

/// As above, but the other waiter is a *blocked thread*: it must not stay parked forever.
#[test]
fn a_panicking_waker_does_not_leave_a_blocked_thread_parked() {
    within(10, || {
        let lock = Arc::new(IntervalRwLock::new(vec![0u8; 8]));
        let bad = Waker::from(Arc::new(Panicky));
        let held = lock.write(..);
        let mut f1 = lock.read_async(0..4);
        assert!(poll_once(&mut f1, &bad).is_pending());
        let l2 = lock.clone();
        let t = std::thread::spawn(move || {
            l2.write(4..8).fill(1);
        });
        while lock.queued() < 2 {
            std::thread::yield_now();
        }
        let _ = catch_unwind(AssertUnwindSafe(|| drop(held)));
        t.join().unwrap(); // hangs if the thread was never unparked
        drop(f1);
    });
}
