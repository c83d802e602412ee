//! Review 60: hostile tests of the interval readers-writer locks (`trust_core::interval`), against the
//! promises of docs/interval.md, the module docs and README.md: range validation (exact messages, nothing
//! recorded), empty / adjacent / off-by-one ranges, FIFO fairness (a writer behind 10 000 later readers),
//! 100 000 pending futures with cancellations, futures dropped at every stage of their life, `mem::forget`,
//! panics while holding guards (no poisoning), priorities at the extremes, wakers that re-enter the lock,
//! a concurrent stress of blocking threads and cancelled async tasks with an exclusion checker, and borrows
//! in delegated closures, fibers, and `Debug` output.
//!
//! Found and fixed: `impl Debug for IntervalRwLock` kept the bookkeeping mutex locked while it wrote to the
//! formatter (user code), so a slow sink stalled every lock call, and a fiber suspended in its sink stopped
//! its worker for good once anything on that worker touched the lock (the last two tests).
//!
//! Every test has exact expected values; anything that could hang runs under `within` (a watchdog that fails
//! the test after a generous deadline).

mod common;

use common::panic_message;
use std::future::Future;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use trust_core::interval::{IntervalMutex, IntervalRwLock, ReadFuture, WriteFuture};

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

/// Runs `f` on its own thread and fails if it has not finished after `secs` seconds (a hang detector, not a
/// timing assertion).
fn within<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(r)) => r,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("HUNG: no answer within {secs} s"),
    }
}

/// The panic message of `f`, which must panic.
fn message_of(f: impl FnOnce()) -> String {
    panic_message(catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic"))
}

/// A task that counts its wakes.
struct Task(AtomicUsize);

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Task {
    fn wakes(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn task() -> Arc<Task> {
    Arc::new(Task(AtomicUsize::new(0)))
}

fn poll<F: Future + Unpin>(f: &mut F, w: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(w))
}

fn ready<F: Future + Unpin>(f: &mut F) -> F::Output {
    match poll(f, Waker::noop()) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("expected Ready, got Pending"),
    }
}

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

// ---------------------------------------------------------------------------------------------------------
// Range validation
// ---------------------------------------------------------------------------------------------------------

/// Promise (docs/interval.md, The API): "A range past the end, or one that starts after it ends, panics at
/// the call site (for futures: when the future is created, not when it is polled) with a message that names
/// the range as written and the length". Checked exactly for every entry point, with nothing recorded,
/// both on an idle lock and while a write is held and a request queued.
#[test]
#[allow(clippy::reversed_empty_ranges)]
fn bad_ranges_panic_with_exact_messages_and_record_nothing() {
    let lock = IntervalRwLock::new(vec![0u8; 10]);
    let mutex = IntervalMutex::new(vec![0u8; 10]);
    let check = |lock: &IntervalRwLock<u8>,
                 mutex: &IntervalMutex<u8>,
                 held: usize,
                 queued: usize| {
        let cases: Vec<(String, String)> = vec![
            (
                message_of(|| drop(lock.read(5..12))),
                "IntervalRwLock: range 5..12 is out of bounds for len 10; borrow a range within 0..10".into(),
            ),
            (
                message_of(|| drop(lock.write(7..3))),
                "IntervalRwLock: range 7..3 starts after it ends (start 7 > end 3); the lock has len 10"
                    .into(),
            ),
            (
                message_of(|| drop(lock.try_read(..=10))),
                "IntervalRwLock: range ..=10 is out of bounds for len 10; borrow a range within 0..10".into(),
            ),
            (
                message_of(|| drop(lock.try_write(0..=usize::MAX))),
                format!(
                    "IntervalRwLock: range 0..={} is out of bounds for len 10; borrow a range within 0..10",
                    usize::MAX
                ),
            ),
            (
                message_of(|| drop(lock.read_async(3..11))),
                "IntervalRwLock: range 3..11 is out of bounds for len 10; borrow a range within 0..10".into(),
            ),
            (
                message_of(|| drop(lock.write_async((Bound::Excluded(usize::MAX), Bound::Unbounded)))),
                format!(
                    "IntervalRwLock: range (excluded {}).. is out of bounds for len 10; borrow a range within 0..10",
                    usize::MAX
                ),
            ),
            (
                message_of(|| drop(lock.prioritized(3).read(9..=10))),
                "IntervalRwLock: range 9..=10 is out of bounds for len 10; borrow a range within 0..10".into(),
            ),
            (
                message_of(|| drop(lock.prioritized(3).write_async(4..=2))),
                "IntervalRwLock: range 4..=2 starts after it ends (start 4 > end 3); the lock has len 10"
                    .into(),
            ),
            (
                message_of(|| drop(mutex.lock(0..11))),
                "IntervalMutex: range 0..11 is out of bounds for len 10; borrow a range within 0..10".into(),
            ),
            (
                message_of(|| drop(mutex.try_lock(6..5))),
                "IntervalMutex: range 6..5 starts after it ends (start 6 > end 5); the lock has len 10".into(),
            ),
            (
                message_of(|| drop(mutex.prioritized(1).lock_async(..11))),
                "IntervalMutex: range ..11 is out of bounds for len 10; borrow a range within 0..10".into(),
            ),
        ];
        for (i, (got, want)) in cases.iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        assert_eq!((lock.held(), lock.queued()), (held, queued));
        assert_eq!((mutex.held(), mutex.queued()), (held, queued));
    };
    check(&lock, &mutex, 0, 0);
    // Busy locks: one write held, one request queued; a bad range still records nothing.
    let h1 = lock.write(..);
    let h2 = mutex.lock(..);
    let t = task();
    let mut q1 = lock.read_async(2..3);
    let mut q2 = mutex.lock_async(2..3);
    assert!(poll(&mut q1, &Waker::from(t.clone())).is_pending());
    assert!(poll(&mut q2, &Waker::from(t.clone())).is_pending());
    check(&lock, &mutex, 1, 1);
    drop((h1, h2));
    assert_eq!(t.wakes(), 2);
    let (g1, g2) = (ready(&mut q1), ready(&mut q2));
    assert_eq!((g1.range(), g2.range()), (2..3, 2..3));
}

/// Every documented range syntax resolves to the documented slice; the `Bound` pairs that are empty at
/// the edges (`(excluded 9)..=9`, `(excluded 9)..`, `10..10`) are granted.
#[test]
fn every_range_syntax_resolves_exactly() {
    let lock = IntervalRwLock::new((0u8..10).collect::<Vec<_>>());
    let r = |g: trust_core::interval::ReadGuard<'_, u8>| (g.range(), g.to_vec());
    assert_eq!(r(lock.read(2..5)), (2..5, vec![2, 3, 4]));
    assert_eq!(r(lock.read(2..=5)), (2..6, vec![2, 3, 4, 5]));
    assert_eq!(r(lock.read(..3)), (0..3, vec![0, 1, 2]));
    assert_eq!(r(lock.read(..=0)), (0..1, vec![0]));
    assert_eq!(r(lock.read(8..)), (8..10, vec![8, 9]));
    assert_eq!(r(lock.read(..)), (0..10, (0..10).collect()));
    assert_eq!(
        r(lock.read((Bound::Excluded(2), Bound::Excluded(5)))),
        (3..5, vec![3, 4])
    );
    assert_eq!(
        r(lock.read((Bound::Excluded(9), Bound::Included(9)))),
        (10..10, vec![])
    );
    assert_eq!(
        r(lock.read((Bound::Excluded(9), Bound::Unbounded))),
        (10..10, vec![])
    );
    assert_eq!(r(lock.read(10..10)), (10..10, vec![]));
    assert_eq!(r(lock.read(10..)), (10..10, vec![]));
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

// ---------------------------------------------------------------------------------------------------------
// Empty, adjacent and overlapping-by-one ranges
// ---------------------------------------------------------------------------------------------------------

/// Promise: "An empty range (`3..3`) conflicts with nothing: it is granted at once and never recorded."
/// Checked through every entry point while the whole lock is write-held *and* a conflicting write is
/// queued; the queued write is then woken exactly once and granted.
#[test]
fn empty_ranges_are_granted_under_a_whole_write_and_a_queue() {
    within(30, || {
        let lock = IntervalRwLock::new(vec![0u8; 10]);
        let mutex = IntervalMutex::new(vec![0u8; 10]);
        let held = lock.write(..);
        let mheld = mutex.lock(..);
        let t = task();
        let mut queued = lock.write_async(..);
        assert!(poll(&mut queued, &Waker::from(t.clone())).is_pending());
        let e1 = lock.read(3..3);
        let e2 = lock.write(0..0);
        let e3 = lock.write(10..10);
        let e4 = lock.try_write(5..5).expect("empty try_write");
        let e5 = lock.try_read(10..).expect("empty try_read");
        let e6 = lock.prioritized(7).write(4..4);
        let e7 = ready(&mut lock.read_async(2..2));
        let e8 = ready(&mut lock.prioritized(u32::MAX).write_async(9..9));
        let m1 = mutex.lock(1..1);
        let m2 = mutex.try_lock(10..10).expect("empty try_lock");
        let m3 = ready(&mut mutex.lock_async(0..0));
        let ranges = [
            e1.range(),
            e2.range(),
            e3.range(),
            e4.range(),
            e5.range(),
            e6.range(),
            e7.range(),
            e8.range(),
            m1.range(),
            m2.range(),
            m3.range(),
        ];
        assert_eq!(
            ranges,
            [
                3..3,
                0..0,
                10..10,
                5..5,
                10..10,
                4..4,
                2..2,
                9..9,
                1..1,
                10..10,
                0..0
            ]
        );
        assert_eq!((lock.held(), lock.queued()), (1, 1));
        assert_eq!((mutex.held(), mutex.queued()), (1, 0));
        drop(held);
        assert_eq!(t.wakes(), 1);
        let mut g = ready(&mut queued);
        g.fill(3);
        // The empty guards, still alive, do not block a whole-lock write's release or a new try.
        drop(g);
        assert!(lock.try_write(..).is_ok());
        drop((e1, e2, e3, e4, e5, e6, e7, e8, m1, m2, m3, mheld));
        assert_eq!((lock.held(), lock.queued()), (0, 0));
        assert_eq!(lock.read(..).to_vec(), vec![3; 10]);
    });
}

/// Adjacent ranges never conflict; an overlap of one element does (for a write on either side). Exact
/// table of `try_*` outcomes against a held write and a held read.
#[test]
fn adjacent_ranges_share_overlaps_of_one_element_conflict() {
    let lock = IntervalRwLock::new(vec![0u8; 10]);
    // Consumes the result: a granted guard is released before the next `try_*` (inside one `vec![..]`
    // the temporaries would all live to the end of the statement).
    fn ok<G>(r: Result<G, trust_core::interval::TryLockError>) -> bool {
        r.is_ok()
    }
    {
        let _w = lock.write(2..5);
        let got: Vec<bool> = vec![
            ok(lock.try_write(0..2)),
            ok(lock.try_write(5..7)),
            ok(lock.try_write(4..5)),
            ok(lock.try_write(1..3)),
            ok(lock.try_read(5..6)),
            ok(lock.try_read(4..5)),
            ok(lock.try_read(0..=1)),
            ok(lock.try_read(..=2)),
            ok(lock.try_read(..)),
            ok(lock.try_write(5..)),
        ];
        assert_eq!(
            got,
            [
                true, true, false, false, true, false, true, false, false, true
            ]
        );
        assert_eq!(lock.held(), 1);
    }
    {
        let _r = lock.read(2..5);
        let got: Vec<bool> = vec![
            ok(lock.try_read(1..6)),
            ok(lock.try_write(5..10)),
            ok(lock.try_write(0..2)),
            ok(lock.try_write(4..=4)),
            ok(lock.try_write(2..3)),
            ok(lock.try_write(..)),
        ];
        assert_eq!(got, [true, true, true, false, false, false]);
    }
    // Many adjacent writes held at once, one per element, then a read across two of them waits for both.
    let guards: Vec<_> = (0..10).map(|i| lock.write(i..i + 1)).collect();
    assert_eq!(lock.held(), 10);
    let t = task();
    let mut across = lock.read_async(4..6);
    assert!(poll(&mut across, &Waker::from(t.clone())).is_pending());
    let mut guards: Vec<_> = guards.into_iter().map(Some).collect();
    for i in [0, 1, 2, 3, 6, 7, 8, 9, 4] {
        guards[i] = None;
        assert_eq!(
            t.wakes(),
            0,
            "woken before element 5 was released (after {i})"
        );
    }
    guards[5] = None;
    assert_eq!(t.wakes(), 1);
    assert_eq!(ready(&mut across).range(), 4..6);
}

/// `usize::MAX` zero-sized elements: adjacent halves at the very top, a last element and an
/// `Excluded(usize::MAX - 1)` start, a queued future at the top woken by the release of an adjacent-but-
/// overlapping write.
#[test]
#[allow(clippy::uninit_vec)]
#[allow(clippy::reversed_empty_ranges)] // `M..=M - 1` on purpose: it is empty
fn ranges_at_usize_max_on_zero_sized_elements() {
    let mut v = Vec::<()>::new();
    // SAFETY: a `Vec<()>` has capacity `usize::MAX`, and `()` needs no initialisation.
    unsafe { v.set_len(usize::MAX) };
    let lock = IntervalRwLock::new(v);
    const M: usize = usize::MAX;
    let top = lock.write((Bound::Excluded(M - 2), Bound::Unbounded));
    assert_eq!((top.range(), top.len()), (M - 1..M, 1));
    let below = lock.write(..M - 1);
    assert_eq!(below.len(), M - 1);
    assert!(lock.try_read(M - 2..M - 1).is_err());
    assert!(lock.try_read(M - 1..=M - 1).is_err());
    assert!(lock.try_read(M..=M - 1).is_ok());
    let t = task();
    let mut f = lock.read_async(M - 2..);
    assert!(poll(&mut f, &Waker::from(t.clone())).is_pending());
    drop(top);
    assert_eq!(t.wakes(), 0, "still behind `below`");
    drop(below);
    assert_eq!(t.wakes(), 1);
    assert_eq!(ready(&mut f).range(), M - 2..M);
    assert_eq!(
        message_of(|| drop(lock.write((Bound::Excluded(M), Bound::Included(M))))),
        format!(
            "IntervalRwLock: range (excluded {M})..={M} is out of bounds for len {M}; borrow a range within 0..{M}"
        )
    );
}

// ---------------------------------------------------------------------------------------------------------
// Fairness at scale
// ---------------------------------------------------------------------------------------------------------

/// Promise (Fairness): "a writer queued behind readers is not overtaken by readers that arrive after it".
/// 10 000 overlapping read futures arrive after a writer queued behind a held read: none is granted before
/// the writer, though each would share with the held read; 100 reads that do not conflict with the writer
/// are granted at once. Releasing the held read wakes only the writer; its release wakes all 10 000.
#[test]
fn a_writer_is_not_overtaken_by_ten_thousand_later_overlapping_readers() {
    within(30, || {
        let lock = IntervalRwLock::new(vec![0u32; 100]);
        let first = lock.read(0..50);
        let wt = task();
        let mut writer = lock.write_async(40..60);
        assert!(poll(&mut writer, &Waker::from(wt.clone())).is_pending());
        let rt = task();
        let rw = Waker::from(rt.clone());
        let mut readers: Vec<_> = (0..10_000)
            .map(|i| {
                let s = i % 60;
                let mut f = lock.read_async(s..s + 41);
                assert!(
                    poll(&mut f, &rw).is_pending(),
                    "read {i} ({s}..{}) jumped the queued writer",
                    s + 41
                );
                f
            })
            .collect();
        let free: Vec<_> = (0..100)
            .map(|i| ready(&mut lock.read_async(60 + i % 40..100)))
            .collect();
        assert_eq!((lock.held(), lock.queued()), (101, 10_001));
        assert!(lock.try_read(45..46).is_err());
        assert!(lock.try_read(0..40).is_ok());
        drop(first);
        assert_eq!((wt.wakes(), rt.wakes()), (1, 0));
        let mut w = ready(&mut writer);
        w.fill(9);
        assert_eq!((lock.held(), lock.queued()), (101, 10_000));
        drop(w);
        assert_eq!((wt.wakes(), rt.wakes()), (1, 10_000));
        let sums: u64 = readers
            .iter_mut()
            .map(|f| {
                let g = ready(f);
                g.iter().filter(|&&x| x == 9).count() as u64
            })
            .sum();
        // Reader i covers s..s+41 (s = i % 60): it sees the written 9s at max(s, 40)..min(s + 41, 60).
        let expected: u64 = (0..10_000u64)
            .map(|i| {
                let s = i % 60;
                let (lo, hi) = (s.max(40), (s + 41).min(60));
                hi.saturating_sub(lo)
            })
            .sum();
        assert_eq!(sums, expected);
        drop(free);
        assert_eq!((lock.held(), lock.queued()), (0, 0));
    });
}

/// 100 000 pending futures (writes of one element, and reads straddling a write and its left neighbour),
/// every sixth read and every sixth write cancelled while queued: one release of the whole lock grants
/// exactly the writes and the reads whose write was cancelled, each woken once; releasing the writes then
/// grants the other reads, each woken once. The counts are computed, then checked exactly.
#[test]
fn a_hundred_thousand_pending_futures_with_cancellations_drain_exactly() {
    within(60, || {
        const N: usize = 100_000;
        let lock = IntervalRwLock::new(vec![0u8; N + 2]);
        let held = lock.write(..);
        enum F<'a> {
            W(WriteFuture<'a, u8>),
            R(ReadFuture<'a, u8>),
        }
        let tasks: Vec<Arc<Task>> = (0..N).map(|_| task()).collect();
        let mut futures: Vec<Option<F<'_>>> = (0..N)
            .map(|i| {
                let w = Waker::from(tasks[i].clone());
                if i % 2 == 0 {
                    let mut f = lock.write_async(i..i + 1);
                    assert!(poll(&mut f, &w).is_pending());
                    Some(F::W(f))
                } else {
                    let mut f = lock.read_async(i - 1..i + 1);
                    assert!(poll(&mut f, &w).is_pending());
                    Some(F::R(f))
                }
            })
            .collect();
        assert_eq!((lock.held(), lock.queued()), (1, N));
        let cancelled = |i: usize| i % 6 == 1 || i % 6 == 4;
        for (i, f) in futures.iter_mut().enumerate() {
            if cancelled(i) {
                *f = None;
            }
        }
        let alive = (0..N).filter(|&i| !cancelled(i)).count();
        assert_eq!((lock.held(), lock.queued()), (1, alive));
        assert!(
            tasks.iter().all(|t| t.wakes() == 0),
            "a cancel woke someone"
        );
        drop(held);
        // Granted by that release: every live write, and every live read whose write was cancelled.
        let first_wave: Vec<usize> = (0..N)
            .filter(|&i| !cancelled(i) && (i % 2 == 0 || cancelled(i - 1)))
            .collect();
        let woken: Vec<usize> = (0..N).filter(|&i| tasks[i].wakes() == 1).collect();
        assert_eq!(woken.len(), first_wave.len());
        assert_eq!(woken, first_wave);
        assert!(tasks.iter().all(|t| t.wakes() <= 1));
        assert_eq!(
            (lock.held(), lock.queued()),
            (first_wave.len(), alive - first_wave.len())
        );
        let mut write_guards = Vec::new();
        let mut read_guards = Vec::new();
        for &i in &first_wave {
            match futures[i].as_mut().unwrap() {
                F::W(f) => {
                    let mut g = ready(f);
                    g[0] = 1;
                    write_guards.push(g);
                }
                F::R(f) => read_guards.push(ready(f)),
            }
        }
        // Reads granted early saw no write (their write was cancelled, its element untouched).
        assert!(read_guards.iter().all(|g| g.iter().all(|&x| x == 0)));
        drop(write_guards);
        let second_wave: Vec<usize> = (0..N)
            .filter(|&i| !cancelled(i) && i % 2 == 1 && !cancelled(i - 1))
            .collect();
        assert_eq!(
            (0..N).filter(|&i| tasks[i].wakes() == 1).count(),
            first_wave.len() + second_wave.len()
        );
        assert!(tasks.iter().all(|t| t.wakes() <= 1));
        for &i in &second_wave {
            match futures[i].as_mut().unwrap() {
                F::R(f) => {
                    let g = ready(f);
                    assert_eq!(g.to_vec(), [1, 0], "read {i} sees its write");
                    read_guards.push(g);
                }
                F::W(_) => unreachable!(),
            }
        }
        assert_eq!(
            (lock.held(), lock.queued()),
            (
                first_wave.iter().filter(|&&i| i % 2 == 1).count() + second_wave.len(),
                0
            )
        );
        drop(read_guards);
        drop(futures);
        assert_eq!((lock.held(), lock.queued()), (0, 0));
        assert!(lock.try_write(..).is_ok());
    });
}

/// The blocking API and futures share one queue at scale: 50 000 read futures, then a thread blocked in
/// `write`, then 50 000 more read futures, all behind a held write. The release grants the first 50 000
/// only; their release grants the thread; its release grants the other 50 000, which see its write.
#[test]
fn a_blocked_thread_keeps_its_place_between_fifty_thousand_futures_on_each_side() {
    within(60, || {
        let lock: &'static IntervalRwLock<u32> =
            Box::leak(Box::new(IntervalRwLock::new(vec![0u32; 16])));
        let held = lock.write(..);
        let before = task();
        let bw = Waker::from(before.clone());
        let mut first: Vec<_> = (0..50_000)
            .map(|i| {
                let mut f = lock.read_async(i % 8..8 + i % 8);
                assert!(poll(&mut f, &bw).is_pending());
                f
            })
            .collect();
        let granted = Arc::new(AtomicBool::new(false));
        let g2 = granted.clone();
        let writer = thread::spawn(move || {
            let mut g = lock.write(4..12);
            g2.store(true, Ordering::SeqCst);
            g.fill(7);
        });
        while lock.queued() < 50_001 {
            thread::yield_now();
        }
        let after = task();
        let aw = Waker::from(after.clone());
        let mut second: Vec<_> = (0..50_000)
            .map(|i| {
                let mut f = lock.read_async(i % 8..8 + i % 8);
                assert!(poll(&mut f, &aw).is_pending());
                f
            })
            .collect();
        assert_eq!((lock.held(), lock.queued()), (1, 100_001));
        drop(held);
        assert_eq!((before.wakes(), after.wakes()), (50_000, 0));
        let guards: Vec<_> = first.iter_mut().map(ready).collect();
        thread::sleep(Duration::from_millis(20));
        assert!(
            !granted.load(Ordering::SeqCst),
            "the thread overtook 50 000 earlier reads"
        );
        drop(guards);
        writer.join().unwrap();
        assert!(granted.load(Ordering::SeqCst));
        assert_eq!(after.wakes(), 50_000);
        let sevens: usize = second
            .iter_mut()
            .map(|f| ready(f).iter().filter(|&&x| x == 7).count())
            .sum();
        // Read i covers i%8..8+i%8, of which 4..12 were written: min(12, 8+s) - max(4, s).
        let expected: usize = (0..50_000)
            .map(|i| (8 + i % 8).min(12) - (i % 8).max(4))
            .sum();
        assert_eq!(sevens, expected);
        drop(first);
        drop(second);
        assert_eq!((lock.held(), lock.queued()), (0, 0));
    });
}

// ---------------------------------------------------------------------------------------------------------
// Futures dropped at every stage
// ---------------------------------------------------------------------------------------------------------

/// Promise (Async and cancellation): "Dropping one before it completes ... withdraws the request, and the
/// requests queued behind it that waited only for it are granted and woken; if the grant had already
/// arrived, the drop releases it the same way." A write future is dropped at each stage — never polled,
/// polled 1..=3 times while queued, granted but not polled again, completed with its guard dropped — with a
/// read queued behind it only and a write queued behind the holder only: exact wakes and counts each time.
#[test]
fn a_future_dropped_at_every_stage_of_its_life_lets_exactly_the_right_ones_through() {
    for stage in 0..6 {
        let lock = IntervalRwLock::new(vec![0u8; 8]);
        let holder = lock.write(0..4);
        let (ft, bt, ct) = (task(), task(), task());
        let mut victim = lock.write_async(2..6);
        let polls = match stage {
            0 => 0,
            1..=3 => stage,
            _ => 1,
        };
        for _ in 0..polls {
            assert!(poll(&mut victim, &Waker::from(ft.clone())).is_pending());
        }
        // Behind the victim only (if it is recorded): reads 4..8.
        let mut behind = lock.read_async(4..8);
        let mut behind_guard = match poll(&mut behind, &Waker::from(bt.clone())) {
            Poll::Ready(g) => Some(g),
            Poll::Pending => None,
        };
        assert_eq!(behind_guard.is_none(), polls > 0, "stage {stage}");
        // Behind the holder only (the victim's 2..6 does not overlap 0..2).
        let mut other = lock.write_async(0..2);
        assert!(poll(&mut other, &Waker::from(ct.clone())).is_pending());
        let mut holder = Some(holder);
        let mut victim = Some(victim);
        match stage {
            4 => {
                // Granted, never polled again.
                holder = None;
                assert_eq!((ft.wakes(), ct.wakes()), (1, 1), "stage {stage}");
            }
            5 => {
                holder = None;
                let g = ready(victim.as_mut().unwrap());
                assert_eq!(g.range(), 2..6);
                victim = None; // the future is done; its guard lives on
                assert_eq!(bt.wakes(), 0);
                drop(g);
            }
            _ => {}
        }
        drop(victim);
        if polls > 0 {
            assert_eq!(
                bt.wakes(),
                1,
                "stage {stage}: the read behind the victim was not woken"
            );
        }
        let b = behind_guard.take().unwrap_or_else(|| ready(&mut behind));
        assert_eq!(b.range(), 4..8);
        drop(holder);
        assert_eq!(ct.wakes(), 1, "stage {stage}");
        let c = ready(&mut other);
        assert_eq!((lock.held(), lock.queued()), (2, 0), "stage {stage}");
        drop((b, c));
        assert_eq!((lock.held(), lock.queued()), (0, 0), "stage {stage}");
        assert_eq!(ft.wakes(), usize::from(stage >= 4), "stage {stage}");
    }
}

/// A granted borrow of the randomized schedule below.
enum Held<'a> {
    R(trust_core::interval::ReadGuard<'a, u8>),
    W(trust_core::interval::WriteGuard<'a, u8>),
}

impl Held<'_> {
    fn range(&self) -> (std::ops::Range<usize>, bool) {
        match self {
            Held::R(g) => (g.range(), false),
            Held::W(g) => (g.range(), true),
        }
    }
}

/// A randomized single-thread schedule of 5 000 futures (random priorities) on 32 elements, each dropped
/// after a random number of polls (0..=3, whether queued or granted), every guard kept for a random number
/// of steps: no two conflicting guards are ever alive at once, the lock's counts always equal the live
/// guards plus the futures polled at least once, and at the end nothing is left recorded.
#[test]
fn futures_dropped_after_random_numbers_of_polls_never_overlap_and_leave_nothing() {
    let lock = IntervalRwLock::new(vec![0u8; 32]);
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    type Fut<'a> = Pin<Box<dyn Future<Output = Held<'a>> + 'a>>;
    // (future, polls left, polled at least once)
    let mut pending: Vec<(Fut<'_>, u64, bool)> = Vec::new();
    let mut guards: Vec<(Held<'_>, u64)> = Vec::new();
    let (mut completed, mut cancelled) = (0usize, 0usize);
    let lock_ref = &lock;
    for step in 0..5_000u64 {
        let s = rng.below(32) as usize;
        let e = (s + 1 + rng.below(6) as usize).min(32);
        let write = rng.below(2) == 0;
        let prio = if rng.below(4) == 0 {
            rng.below(3) as u32
        } else {
            0
        };
        let fut: Fut<'_> = if write {
            Box::pin(async move { Held::W(lock_ref.prioritized(prio).write_async(s..e).await) })
        } else {
            Box::pin(async move { Held::R(lock_ref.prioritized(prio).read_async(s..e).await) })
        };
        pending.push((fut, rng.below(4), false));
        let mut i = 0;
        while i < pending.len() {
            if pending[i].1 == 0 {
                drop(pending.swap_remove(i));
                cancelled += 1;
                continue;
            }
            pending[i].1 -= 1;
            pending[i].2 = true;
            match pending[i]
                .0
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
            {
                Poll::Ready(g) => {
                    let (range, w) = g.range();
                    for (other, _) in &guards {
                        let (r, ow) = other.range();
                        let overlap = r.start < range.end && range.start < r.end;
                        assert!(
                            !(overlap && (w || ow)),
                            "step {step}: {range:?} (write {w}) granted over {r:?} (write {ow})"
                        );
                    }
                    guards.push((g, rng.below(5)));
                    drop(pending.swap_remove(i));
                    completed += 1;
                }
                Poll::Pending => i += 1,
            }
        }
        guards.retain_mut(|g| {
            if g.1 == 0 {
                false
            } else {
                g.1 -= 1;
                true
            }
        });
        let recorded = guards.len() + pending.iter().filter(|p| p.2).count();
        assert_eq!(lock.held() + lock.queued(), recorded, "step {step}");
    }
    drop(pending);
    drop(guards);
    assert!(
        completed > 1_000 && cancelled > 500,
        "completed {completed}, cancelled {cancelled}"
    );
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    assert!(lock.try_write(..).is_ok());
}

// ---------------------------------------------------------------------------------------------------------
// mem::forget
// ---------------------------------------------------------------------------------------------------------

/// Caveat: "`mem::forget` of a guard or of a queued future leaks its borrow; the range stays taken." Exactly
/// that: a forgotten guard keeps its range (and a queued request behind it waits for good), a forgotten
/// *unpolled* future records nothing, a forgotten queued future is later granted to nobody and keeps its
/// range; `replace_container` starts afresh.
#[test]
fn forgotten_guards_and_futures_leak_exactly_their_borrow() {
    let mut lock = IntervalRwLock::new(vec![0u8; 10]);
    {
        let l = &lock;
        std::mem::forget(l.write(2..4));
        std::mem::forget(l.read(6..7));
        std::mem::forget(l.read_async(0..10)); // never polled: nothing recorded
        assert_eq!((l.held(), l.queued()), (2, 0));
        assert!(l.try_write(3..5).is_err());
        assert!(l.try_write(4..6).is_ok());
        assert!(l.try_read(6..7).is_ok());
        assert!(l.try_write(6..7).is_err());
        // A queued future forgotten: it stays queued, then is granted to nobody once 8..9 is released.
        let h = l.write(8..9);
        let mut f = l.write_async(8..10);
        assert!(poll(&mut f, Waker::noop()).is_pending());
        std::mem::forget(f);
        assert_eq!((l.held(), l.queued()), (3, 1));
        drop(h);
        assert_eq!((l.held(), l.queued()), (3, 0));
        assert!(l.try_read(9..10).is_err());
        // A request behind the forgotten guard waits for good (cancelled here, cleanly).
        let t = task();
        let mut behind = l.write_async(3..4);
        assert!(poll(&mut behind, &Waker::from(t.clone())).is_pending());
        assert_eq!(l.queued(), 1);
        drop(behind);
        assert_eq!((l.held(), l.queued(), t.wakes()), (3, 0, 0));
    }
    let old = lock.replace_container(vec![5u8; 3]);
    assert_eq!(old.len(), 10);
    assert_eq!((lock.len(), lock.held(), lock.queued()), (3, 0, 0));
    assert_eq!(lock.try_write(..).unwrap().to_vec(), vec![5, 5, 5]);
}

// ---------------------------------------------------------------------------------------------------------
// Panics while holding guards; no poisoning
// ---------------------------------------------------------------------------------------------------------

/// Promise: "No poisoning: a panic while a `WriteGuard` is alive releases the range with whatever was
/// written." A thread holding a write and a read panics mid-write while another thread is blocked behind
/// it and a future behind that: both get in, in order, and see exactly the partial write.
#[test]
fn a_panic_while_holding_guards_releases_them_with_the_partial_write() {
    within(30, || {
        let lock: &'static IntervalRwLock<u32> =
            Box::leak(Box::new(IntervalRwLock::new(vec![0u32; 8])));
        let (held_tx, held_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let panicker = thread::spawn(move || {
            let mut w = lock.write(0..4);
            let _r = lock.read(6..8);
            held_tx.send(()).unwrap();
            w[0] = 1;
            w[1] = 2;
            go_rx.recv().unwrap();
            panic!("review 60: a panic while holding guards");
        });
        held_rx.recv().unwrap();
        let waiter = thread::spawn(move || {
            let mut g = lock.write(..);
            let seen = g.to_vec();
            g.fill(9);
            seen
        });
        while lock.queued() < 1 {
            thread::yield_now();
        }
        let t = task();
        let mut f = lock.read_async(3..7);
        assert!(poll(&mut f, &Waker::from(t.clone())).is_pending());
        assert_eq!((lock.held(), lock.queued()), (2, 2));
        go_tx.send(()).unwrap();
        let err = panicker.join().expect_err("the thread panicked");
        assert_eq!(
            panic_message(err),
            "review 60: a panic while holding guards"
        );
        assert_eq!(waiter.join().unwrap(), vec![1, 2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(t.wakes(), 1);
        assert_eq!(ready(&mut f).to_vec(), vec![9, 9, 9, 9]);
        assert_eq!((lock.held(), lock.queued()), (0, 0));
        assert!(lock.try_write(..).is_ok());
    });
}

/// A panic inside an `async` block holding a write guard, polled by an executor that catches it: the range
/// is released, and a future queued behind it is woken once.
#[test]
fn a_panic_in_a_task_holding_a_guard_releases_it() {
    let lock = IntervalRwLock::new(vec![0u8; 4]);
    let mut task_fut = Box::pin(async {
        let mut g = lock.write_async(..).await;
        g[0] = 5;
        std::future::pending::<()>().await; // suspended while holding
        unreachable!()
    });
    assert!(
        task_fut
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
    );
    let t = task();
    let mut behind = lock.read_async(0..1);
    assert!(poll(&mut behind, &Waker::from(t.clone())).is_pending());
    // The task is dropped mid-await (an aborted task), with its guard.
    let dropped = catch_unwind(AssertUnwindSafe(|| drop(task_fut)));
    assert!(dropped.is_ok());
    assert_eq!(t.wakes(), 1);
    assert_eq!(ready(&mut behind).to_vec(), vec![5]);
    let mut panicking = Box::pin(async {
        let mut g = lock.write_async(1..3).await;
        g[1] = 7;
        panic!("review 60: panic in a task");
    });
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _ = panicking
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
    }));
    assert_eq!(panic_message(r.unwrap_err()), "review 60: panic in a task");
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    assert_eq!(lock.read(..).to_vec(), vec![5, 0, 7, 0]);
}

// ---------------------------------------------------------------------------------------------------------
// Priorities and TryLockError
// ---------------------------------------------------------------------------------------------------------

/// Priorities at the extremes: among requests queued for one element, the grant order is (higher priority,
/// then arrival): `u32::MAX` twice, then 1, then two 0s in arrival order, a blocking thread of priority 0
/// among them keeping its place; each release wakes exactly the next one.
#[test]
fn priority_order_at_the_extremes_wakes_one_at_a_time() {
    within(30, || {
        let lock: &'static IntervalRwLock<u32> =
            Box::leak(Box::new(IntervalRwLock::new(vec![0u32; 1])));
        let held = lock.write(..);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mk = |p: u32| {
            let t = task();
            let mut f = lock.prioritized(p).write_async(..);
            assert!(poll(&mut f, &Waker::from(t.clone())).is_pending());
            (t, f)
        };
        let (t_a, mut a) = mk(0); // 'a'
        let o = order.clone();
        let thread0 = thread::spawn(move || {
            let mut g = lock.write(..);
            o.lock().unwrap().push('T');
            g[0] += 1;
        });
        while lock.queued() < 2 {
            thread::yield_now();
        }
        let (t_b, mut b) = mk(u32::MAX);
        let (t_c, mut c) = mk(1);
        let (t_d, mut d) = mk(u32::MAX);
        let (t_e, mut e) = mk(0);
        assert_eq!((lock.held(), lock.queued()), (1, 6));
        let wakes = || {
            [
                t_a.wakes(),
                t_b.wakes(),
                t_c.wakes(),
                t_d.wakes(),
                t_e.wakes(),
            ]
        };
        drop(held);
        assert_eq!(wakes(), [0, 1, 0, 0, 0]);
        drop(ready(&mut b));
        assert_eq!(wakes(), [0, 1, 0, 1, 0]);
        drop(ready(&mut d));
        assert_eq!(wakes(), [0, 1, 1, 1, 0]);
        drop(ready(&mut c));
        assert_eq!(wakes(), [1, 1, 1, 1, 0]);
        let ga = ready(&mut a);
        thread::sleep(Duration::from_millis(10));
        assert!(order.lock().unwrap().is_empty());
        drop(ga);
        thread0.join().unwrap();
        assert_eq!(*order.lock().unwrap(), vec!['T']);
        assert_eq!(wakes(), [1, 1, 1, 1, 1]);
        assert_eq!(ready(&mut e)[0], 1);
    });
}

/// A `prioritized` future that overtook a blocked thread, granted and then dropped unpolled: the thread is
/// granted next.
#[test]
fn a_granted_priority_future_dropped_unpolled_lets_the_overtaken_thread_in() {
    within(30, || {
        let lock: &'static IntervalRwLock<u32> =
            Box::leak(Box::new(IntervalRwLock::new(vec![0u32; 4])));
        let held = lock.write(..);
        let th = thread::spawn(move || {
            let mut g = lock.write(0..4);
            g[0] = 4;
        });
        while lock.queued() < 1 {
            thread::yield_now();
        }
        let t = task();
        let mut f = lock.prioritized(5).write_async(1..3);
        assert!(poll(&mut f, &Waker::from(t.clone())).is_pending());
        drop(held);
        assert_eq!(t.wakes(), 1);
        thread::sleep(Duration::from_millis(10));
        assert_eq!(
            lock.held(),
            1,
            "the priority future holds, the thread waits"
        );
        assert_eq!(lock.queued(), 1);
        drop(f);
        th.join().unwrap();
        assert_eq!(lock.read(..).to_vec(), vec![4, 0, 0, 0]);
    });
}

/// `TryLockError` names the resolved range and the waiting calls, exactly.
#[test]
fn try_lock_errors_display_exactly() {
    let lock = IntervalRwLock::new(vec![0u8; 10]);
    let mutex = IntervalMutex::new(vec![0u8; 10]);
    let _w = lock.write(2..4);
    let _m = mutex.lock(..);
    let e = lock.try_read(..=2).unwrap_err();
    assert_eq!(e.range(), 0..3);
    assert_eq!(
        e.to_string(),
        "cannot read-lock 0..3 now: it conflicts with a borrow that is held or queued (use `read` or `read_async` to wait for it)"
    );
    let e = lock.try_write(3..).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot write-lock 3..10 now: it conflicts with a borrow that is held or queued (use `write` or `write_async` to wait for it)"
    );
    let e = mutex
        .try_lock((Bound::Excluded(4), Bound::Included(4)))
        .map(|g| g.range());
    assert_eq!(e, Ok(5..5));
    let e = mutex.try_lock(4..=4).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot lock 4..5 now: it conflicts with a borrow that is held or queued (use `lock` or `lock_async` to wait for it)"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Wakers that re-enter the lock
// ---------------------------------------------------------------------------------------------------------

/// A waker whose `wake` drops *another* future of the same lock, which the same release had just granted:
/// that drop releases the grant (the future was never polled again), which grants a third request, woken
/// from inside the first wake. Nothing is lost or woken twice.
#[test]
fn a_wake_that_drops_a_future_granted_by_the_same_release_passes_the_grant_on() {
    within(30, || {
        let lock: &'static IntervalRwLock<u8> =
            Box::leak(Box::new(IntervalRwLock::new(vec![0u8; 4])));
        let slot: Arc<Mutex<Option<WriteFuture<'static, u8>>>> = Arc::new(Mutex::new(None));
        struct DropsB(Arc<Mutex<Option<WriteFuture<'static, u8>>>>, AtomicUsize);
        impl Wake for DropsB {
            fn wake(self: Arc<Self>) {
                self.wake_by_ref();
            }
            fn wake_by_ref(self: &Arc<Self>) {
                self.1.fetch_add(1, Ordering::SeqCst);
                drop(self.0.lock().unwrap().take());
            }
        }
        let held = lock.write(..);
        let a_task = Arc::new(DropsB(slot.clone(), AtomicUsize::new(0)));
        let mut a = lock.write_async(0..2);
        assert!(poll(&mut a, &Waker::from(a_task.clone())).is_pending());
        let b_task = task();
        let mut b = lock.write_async(2..4);
        assert!(poll(&mut b, &Waker::from(b_task.clone())).is_pending());
        let c_task = task();
        let mut c = lock.read_async(3..4);
        assert!(poll(&mut c, &Waker::from(c_task.clone())).is_pending());
        *slot.lock().unwrap() = Some(b);
        assert_eq!((lock.held(), lock.queued()), (1, 3));
        drop(held);
        assert_eq!(
            (
                a_task.1.load(Ordering::SeqCst),
                b_task.wakes(),
                c_task.wakes()
            ),
            (1, 1, 1)
        );
        assert!(slot.lock().unwrap().is_none());
        let ga = ready(&mut a);
        let gc = ready(&mut c);
        assert_eq!((ga.range(), gc.range()), (0..2, 3..4));
        assert_eq!((lock.held(), lock.queued()), (2, 0));
    });
}

// ---------------------------------------------------------------------------------------------------------
// Concurrency stress: blocking threads and cancelled async tasks, with an exclusion checker
// ---------------------------------------------------------------------------------------------------------

/// Per-element occupancy: readers count up, a writer sets -1. Any overlap of a write with anything is caught.
struct Checker(Vec<AtomicIsize>);

impl Checker {
    fn enter(&self, r: std::ops::Range<usize>, write: bool) {
        for i in r {
            if write {
                let was = self.0[i].swap(-1, Ordering::SeqCst);
                assert_eq!(
                    was, 0,
                    "write entered element {i} while it was taken ({was})"
                );
            } else {
                let was = self.0[i].fetch_add(1, Ordering::SeqCst);
                assert!(was >= 0, "read entered element {i} while written");
            }
        }
    }
    fn leave(&self, r: std::ops::Range<usize>, write: bool) {
        for i in r {
            if write {
                assert_eq!(self.0[i].swap(0, Ordering::SeqCst), -1);
            } else {
                assert!(self.0[i].fetch_sub(1, Ordering::SeqCst) >= 1);
            }
        }
    }
}

/// Two blocking threads (random reads and writes, some prioritized) and 300 tokio tasks on a 2-thread
/// runtime (random reads and writes, a third under a short timeout, a sixth dropped after one poll): no
/// conflicting borrows ever overlap, every completed write's increments are all there, and nothing is
/// left recorded.
#[test]
fn threads_and_cancelled_tasks_never_overlap_and_lose_no_write() {
    within(60, || {
        const LEN: usize = 48;
        let lock: &'static IntervalRwLock<u64> =
            Box::leak(Box::new(IntervalRwLock::new(vec![0u64; LEN])));
        let checker: &'static Checker = Box::leak(Box::new(Checker(
            (0..LEN).map(|_| AtomicIsize::new(0)).collect(),
        )));
        let written = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(3);
        let threads: Vec<_> = (0..2u64)
            .map(|k| {
                let written = written.clone();
                thread::spawn(move || {
                    let mut rng = Rng(0x1234_5678 + k);
                    let mut n = 0;
                    while n < 2_000 && Instant::now() < deadline {
                        n += 1;
                        let s = rng.below(LEN as u64) as usize;
                        let e = (s + 1 + rng.below(8) as usize).min(LEN);
                        let p = if rng.below(5) == 0 { 2 } else { 0 };
                        if rng.below(2) == 0 {
                            let mut g = lock.prioritized(p).write(s..e);
                            checker.enter(s..e, true);
                            g.iter_mut().for_each(|x| *x += 1);
                            written.fetch_add((e - s) as u64, Ordering::SeqCst);
                            checker.leave(s..e, true);
                        } else {
                            let g = lock.prioritized(p).read(s..e);
                            checker.enter(s..e, false);
                            let _sum: u64 = g.iter().sum();
                            checker.leave(s..e, false);
                        }
                    }
                })
            })
            .collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut handles = Vec::new();
            for k in 0..300u64 {
                let written = written.clone();
                handles.push(tokio::spawn(async move {
                    let mut rng = Rng(0x9e37_79b9 + k * 7919);
                    for _ in 0..20 {
                        let s = rng.below(LEN as u64) as usize;
                        let e = (s + 1 + rng.below(8) as usize).min(LEN);
                        let write = rng.below(2) == 0;
                        let p = if rng.below(5) == 0 { 1 } else { 0 };
                        match rng.below(6) {
                            0 => {
                                // Polled once, then dropped (a `select!` that lost at once).
                                if write {
                                    let mut f = lock.prioritized(p).write_async(s..e);
                                    let _ = futures_lite::future::poll_once(&mut f).await;
                                } else {
                                    let mut f = lock.prioritized(p).read_async(s..e);
                                    let _ = futures_lite::future::poll_once(&mut f).await;
                                }
                                continue;
                            }
                            1 | 2 => {
                                let d = Duration::from_micros(rng.below(300));
                                if write {
                                    if let Ok(mut g) = tokio::time::timeout(
                                        d,
                                        lock.prioritized(p).write_async(s..e),
                                    )
                                    .await
                                    {
                                        checker.enter(s..e, true);
                                        g.iter_mut().for_each(|x| *x += 1);
                                        written.fetch_add((e - s) as u64, Ordering::SeqCst);
                                        checker.leave(s..e, true);
                                    }
                                } else if let Ok(g) =
                                    tokio::time::timeout(d, lock.prioritized(p).read_async(s..e))
                                        .await
                                {
                                    checker.enter(s..e, false);
                                    tokio::task::yield_now().await;
                                    let _sum: u64 = g.iter().sum();
                                    checker.leave(s..e, false);
                                }
                            }
                            _ => {
                                if write {
                                    let mut g = lock.prioritized(p).write_async(s..e).await;
                                    checker.enter(s..e, true);
                                    g.iter_mut().for_each(|x| *x += 1);
                                    written.fetch_add((e - s) as u64, Ordering::SeqCst);
                                    checker.leave(s..e, true);
                                } else {
                                    let g = lock.prioritized(p).read_async(s..e).await;
                                    checker.enter(s..e, false);
                                    tokio::task::yield_now().await;
                                    let _sum: u64 = g.iter().sum();
                                    checker.leave(s..e, false);
                                }
                            }
                        }
                    }
                }));
            }
            for h in handles {
                h.await.unwrap();
            }
        });
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!((lock.held(), lock.queued()), (0, 0));
        let total: u64 = lock.read(..).iter().sum();
        assert_eq!(total, written.load(Ordering::SeqCst));
    });
}

// ---------------------------------------------------------------------------------------------------------
// Delegated closures (`Trust`)
// ---------------------------------------------------------------------------------------------------------

fn runtime() -> &'static trust_core::Runtime {
    static RT: OnceLock<&'static trust_core::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        trust_core::Runtime::builder()
            .workers(2)
            .build()
            .expect("the only runtime of this test binary")
    })
}

/// Borrows inside delegated closures: a `try_write` that fails against a plain thread's write (nothing
/// recorded), a blocking `read` of a disjoint range (never waits), an empty-range `write` of a range the
/// thread holds (granted at once), and a blocking `write` that waits for the thread's range and is
/// granted when the thread releases it — the trustee keeps answering afterwards.
#[test]
fn delegated_closures_borrow_try_and_wait_for_a_plain_thread() {
    within(30, || {
        let lock: &'static IntervalRwLock<u32> =
            Box::leak(Box::new(IntervalRwLock::new(vec![0u32; 8])));
        let on0 = runtime().trustee(0).entrust(0u32);
        let mut held = lock.write(0..4);
        held.fill(1);
        let r = on0.apply(move |n| {
            *n += 1;
            let failed = lock.try_write(2..6).map(|_| ()).map_err(|e| e.range());
            let read = lock.read(4..8).to_vec();
            let empty = lock.write(2..2).range();
            (failed, read, empty, lock.held(), lock.queued())
        });
        assert_eq!(r, (Err(2..6), vec![0, 0, 0, 0], 2..2, 1, 0));
        assert_eq!((lock.held(), lock.queued()), (1, 0));
        let on0b = on0.clone();
        let waiting = thread::spawn(move || {
            on0b.apply(move |n| {
                *n += 1;
                let mut g = lock.write(2..6);
                let seen = g.to_vec();
                g.fill(2);
                seen
            })
        });
        while lock.queued() < 1 {
            thread::yield_now();
        }
        held[3] = 7;
        drop(held);
        assert_eq!(waiting.join().unwrap(), vec![1, 7, 0, 0]);
        assert_eq!(on0.apply(|n| *n), 2);
        assert_eq!(lock.read(..).to_vec(), vec![1, 1, 2, 2, 2, 2, 0, 0]);
    });
}

// ---------------------------------------------------------------------------------------------------------
// `Debug` and the bookkeeping mutex
// ---------------------------------------------------------------------------------------------------------

/// A `fmt::Write` sink that, when it is first asked to write `at` (a field name written inside a lock's
/// `Debug`), runs `probe` on another thread — a `try_*` of a free range, which needs the bookkeeping mutex and
/// nothing else — with a generous 2 s deadline, and counts a probe that could not get through.
struct ProbesTheLock {
    probe: Arc<dyn Fn() -> bool + Send + Sync>,
    at: &'static str,
    out: String,
    probed: bool,
    blocked: usize,
}

impl std::fmt::Write for ProbesTheLock {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if !self.probed && s == self.at {
            self.probed = true;
            let probe = self.probe.clone();
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let _ = tx.send(probe());
            });
            match rx.recv_timeout(Duration::from_secs(2)) {
                Ok(ok) => assert!(ok, "the probed range is free"),
                Err(_) => self.blocked += 1,
            }
        }
        self.out.push_str(s);
        Ok(())
    }
}

/// Formats with `what` into a probing sink; returns the output and whether the probe was blocked.
fn probed(
    probe: impl Fn() -> bool + Send + Sync + 'static,
    what: impl FnOnce(&mut ProbesTheLock),
) -> (String, usize) {
    let mut p = ProbesTheLock {
        probe: Arc::new(probe),
        at: "len",
        out: String::new(),
        probed: false,
        blocked: 0,
    };
    what(&mut p);
    assert!(p.probed, "the output never wrote `len`");
    (p.out, p.blocked)
}

/// `IntervalMutex`'s `Debug` takes each count and lets go of the mutex before it writes: a lock operation
/// from another thread gets through while the output is being written.
#[test]
fn an_interval_mutex_debug_writes_without_holding_the_bookkeeping_mutex() {
    within(30, || {
        use std::fmt::Write;
        let mutex: &'static IntervalMutex<u8> =
            Box::leak(Box::new(IntervalMutex::new(vec![0u8; 4])));
        let _g = mutex.lock(0..1);
        let (out, blocked) = probed(
            move || mutex.try_lock(3..4).is_ok(),
            |p| write!(p, "{mutex:?}").unwrap(),
        );
        assert_eq!(out, "IntervalMutex { len: 4, held: 1, queued: 0 }");
        assert_eq!(blocked, 0);
    });
}

/// Promise (docs/interval.md, How it works: "A `std::sync::Mutex` guards the lock's state; no user code runs
/// inside it"; state.rs: "Guarded by the lock's mutex; nothing in here calls user code"). But
/// `impl Debug for IntervalRwLock` (src/interval/mod.rs, `let state = self.state();` then
/// `f.debug_struct(..)...finish()`) keeps the bookkeeping mutex locked while it writes to the formatter,
/// which is user code (the `fmt::Write` sink: a socket, a pipe, a logger). Measured: a `try_write` of a free
/// range from another thread cannot get through while the sink writes the lock's fields (blocked for the
/// probe's whole 2 s deadline), for `IntervalRwLock`, `Prioritized` and `PrioritizedMutex` alike (these print
/// the lock through it). A sink that touches the lock on its own thread deadlocks outright (std's `Mutex` is
/// not reentrant); one that suspends a fiber stops its whole worker (next test).
#[test]
fn debug_output_is_written_without_holding_the_bookkeeping_mutex() {
    within(60, || {
        use std::fmt::Write;
        let lock: &'static IntervalRwLock<u8> =
            Box::leak(Box::new(IntervalRwLock::new(vec![0u8; 4])));
        let mutex: &'static IntervalMutex<u8> =
            Box::leak(Box::new(IntervalMutex::new(vec![0u8; 4])));
        let _g = lock.write(0..1);
        let _m = mutex.lock(1..2);
        let a = probed(
            move || lock.try_write(3..4).is_ok(),
            |p| write!(p, "{lock:?}").unwrap(),
        );
        let b = probed(
            move || lock.try_write(3..4).is_ok(),
            |p| write!(p, "{:?}", lock.prioritized(2)).unwrap(),
        );
        let c = probed(
            move || mutex.try_lock(3..4).is_ok(),
            |p| write!(p, "{:?}", mutex.prioritized(1)).unwrap(),
        );
        assert_eq!(
            (a, b, c),
            (
                ("IntervalRwLock { len: 4, held: 1, queued: 0 }".to_string(), 0),
                (
                    "Prioritized { lock: IntervalRwLock { len: 4, held: 1, queued: 0 }, priority: 2 }".to_string(),
                    0
                ),
                (
                    "PrioritizedMutex { lock: IntervalMutex { len: 4, held: 1, queued: 0 }, priority: 1 }"
                        .to_string(),
                    0
                ),
            )
        );
    });
}

/// A sink that suspends the calling fiber on its first write (`trust_core::sleep`, as a fiber socket does on
/// `WouldBlock`), after saying it is inside.
struct SuspendsOnce {
    inside: Arc<AtomicBool>,
    out: String,
    once: bool,
}

impl std::fmt::Write for SuspendsOnce {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if !self.once {
            self.once = true;
            self.inside.store(true, Ordering::SeqCst);
            trust_core::sleep(Duration::from_secs(1));
        }
        self.out.push_str(s);
        Ok(())
    }
}

/// The consequence in this crate's runtime of the bug above. A fiber prints the lock into a sink that
/// suspends it (its worker runs on meanwhile); a closure delegated to that fiber's worker then asks for a
/// `try_read` of the lock — which must "fail at once" or succeed, never wait. It blocks the worker's thread
/// on the bookkeeping mutex that the suspended fiber holds, so the fiber can never resume to release it: the
/// worker is stopped for good, and the `apply` never returns (the watchdog reports HUNG after 10 s).
#[test]
fn a_fiber_suspended_inside_the_locks_debug_does_not_stop_its_worker() {
    let rt = runtime();
    let lock: &'static IntervalRwLock<u8> = Box::leak(Box::new(IntervalRwLock::new(vec![0u8; 4])));
    let trusts = [rt.trustee(0).entrust(()), rt.trustee(1).entrust(())];
    let inside = Arc::new(AtomicBool::new(false));
    let inside2 = inside.clone();
    let (tx, rx) = mpsc::channel();
    let fiber = trust_core::spawn(move || {
        tx.send(trust_core::local_trustee().index()).unwrap();
        let mut w = SuspendsOnce {
            inside: inside2,
            out: String::new(),
            once: false,
        };
        use std::fmt::Write;
        write!(w, "{lock:?}").unwrap();
        w.out
    });
    let worker = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let start = Instant::now();
    while !inside.load(Ordering::SeqCst) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the fiber never printed"
        );
        thread::yield_now();
    }
    let on_its_worker = trusts[worker].clone();
    let tried = within(10, move || {
        on_its_worker.apply(move |_| lock.try_read(..).is_ok())
    });
    assert!(tried);
    assert_eq!(
        within(10, move || fiber.join().unwrap()),
        "IntervalRwLock { len: 4, held: 0, queued: 0 }"
    );
}

/// Promise (README, docs/interval.md): "In a fiber of the delegation runtime, `read` and `write` suspend only
/// the fiber ... the worker goes on running its other fibers, one of which may hold the range". 200 fibers
/// (over both workers) and 2 plain threads take 40 random blocking borrows each of 32 elements, some
/// prioritized, yielding (fibers) while they hold them: no conflicting borrows ever overlap, every write's
/// increments are all there, nothing is left recorded, and it all ends (a lost fiber wake would hang it).
#[test]
fn fibers_and_threads_taking_blocking_borrows_never_overlap_and_all_finish() {
    let _ = runtime();
    const LEN: usize = 32;
    let lock: &'static IntervalRwLock<u64> =
        Box::leak(Box::new(IntervalRwLock::new(vec![0u64; LEN])));
    let checker: &'static Checker = Box::leak(Box::new(Checker(
        (0..LEN).map(|_| AtomicIsize::new(0)).collect(),
    )));
    let written: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
    let borrow = move |rng: &mut Rng, in_fiber: bool| {
        let s = rng.below(LEN as u64) as usize;
        let e = (s + 1 + rng.below(6) as usize).min(LEN);
        let p = if rng.below(6) == 0 {
            1 + rng.below(3) as u32
        } else {
            0
        };
        if rng.below(2) == 0 {
            let mut g = lock.prioritized(p).write(s..e);
            checker.enter(s..e, true);
            if in_fiber && rng.below(3) == 0 {
                trust_core::yield_now();
            }
            g.iter_mut().for_each(|x| *x += 1);
            written.fetch_add((e - s) as u64, Ordering::SeqCst);
            checker.leave(s..e, true);
        } else {
            let g = lock.prioritized(p).read(s..e);
            checker.enter(s..e, false);
            if in_fiber && rng.below(3) == 0 {
                trust_core::yield_now();
            }
            let _sum: u64 = g.iter().sum();
            checker.leave(s..e, false);
        }
    };
    let fibers: Vec<_> = (0..200u64)
        .map(|k| {
            trust_core::spawn(move || {
                let mut rng = Rng(0x5851_f42d_4c95_7f2d ^ (k * 0x9e37_79b9));
                for _ in 0..40 {
                    borrow(&mut rng, true);
                }
            })
        })
        .collect();
    let threads: Vec<_> = (0..2u64)
        .map(|k| {
            thread::spawn(move || {
                let mut rng = Rng(0x2545_f491 + k);
                for _ in 0..40 {
                    borrow(&mut rng, false);
                }
            })
        })
        .collect();
    within(60, move || {
        for f in fibers {
            f.join().unwrap();
        }
        for t in threads {
            t.join().unwrap();
        }
    });
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    let total: u64 = lock.read(..).iter().sum();
    assert_eq!(total, written.load(Ordering::SeqCst));
}
