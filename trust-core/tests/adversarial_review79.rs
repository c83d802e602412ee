//! Review 79: a hostile look at `read_async` / `write_async` (`ReadFuture`, `WriteFuture`) under cancellation
//! at scale, on a 2-thread tokio runtime.
//!
//! - Thousands of tasks lock seeded random overlapping ranges (reads and writes, some prioritized), each
//!   cancelled in one of several ways: `tokio::time::timeout` around the acquire and the hold, the losing
//!   branch of a biased `select!` against `yield_now` (dropped after its first poll), polled once by hand and
//!   dropped (even when granted), moved after its first poll to another task that finishes it (a new waker),
//!   or the whole task aborted. A writer appends its id to every element of its range and takes a commit
//!   number in one synchronous step under the guard, then holds it across an await; a reader snapshots its
//!   range and checks it unchanged after an await. At the end: every completed write is in every element of
//!   its range exactly once, no other id is, the commit numbers in each element increase (overlapping writes
//!   were serialized), nothing is held or queued, and a full-range `try_write` succeeds at once. On 48
//!   elements (3,000 tasks, with and without aborts), on 4 (nearly everything conflicts), and six small seeds
//!   on 2, 5 and 48.
//! - Edge ranges through the futures: empty ranges (also on an empty lock and at `len..len`) granted at
//!   once beside a whole-range write and never recorded; a single element between two held neighbours;
//!   the whole buffer queued behind one element and withdrawn; ranges that touch at one boundary (disjoint)
//!   against ranges that share it (`..=b` / `b..`, conflicting).
//! - A granted-but-never-re-polled future dropped at the head of a chain: the requests that waited for it
//!   are granted and their wakers called; a waker that, woken by a grant, withdraws another queued request
//!   of the same lock (re-entering it), which grants a third.
//!
//! Findings: none. Every wait runs under a deadline (a hang fails, it does not stall the suite); no
//! timing is asserted, only exact contents and counts.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Wake, Waker};
use std::time::Duration;

use tokio::time::timeout;
use trust_core::interval::IntervalRwLock;

mod interval_storm;
use interval_storm::{
    DEADLINE, Log, Rng, counting, poll_once, read_and_hold, runtime, write_and_hold,
};

struct Shared {
    lock: IntervalRwLock<Vec<(u32, u64)>>,
    seq: AtomicU64,
    log: Log,
    /// The tasks that finish a moved future: their spawner may be aborted, so the end awaits them too.
    moved: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// One task: a random range, kind, priority and way of being cancelled.
#[allow(clippy::too_many_arguments)]
async fn one_task(
    s: &'static Shared,
    id: u32,
    start: usize,
    end: usize,
    write: bool,
    priority: u32,
    mode: u64,
    hold: u64,
    patience: u64,
) {
    let lock = &s.lock;
    match (mode, write) {
        // Plain await.
        (0, true) => {
            let g = lock.prioritized(priority).write_async(start..end).await;
            write_and_hold(g, id, &s.seq, &s.log, hold).await;
        }
        (0, false) => {
            let g = lock.prioritized(priority).read_async(start..end).await;
            read_and_hold(g, hold).await;
        }
        // A timeout around the acquire and the hold: cancelled queued, granted-not-polled, or holding.
        (1, true) => {
            let _ = timeout(Duration::from_millis(patience), async {
                let g = lock.prioritized(priority).write_async(start..end).await;
                write_and_hold(g, id, &s.seq, &s.log, hold).await;
            })
            .await;
        }
        (1, false) => {
            let _ = timeout(Duration::from_millis(patience), async {
                let g = lock.prioritized(priority).read_async(start..end).await;
                read_and_hold(g, hold).await;
            })
            .await;
        }
        // The losing branch of a biased select: dropped after its first poll if it queued.
        (2, true) => {
            tokio::select! {
                biased;
                g = lock.prioritized(priority).write_async(start..end) => {
                    write_and_hold(g, id, &s.seq, &s.log, hold).await;
                }
                _ = tokio::task::yield_now() => {}
            }
        }
        (2, false) => {
            tokio::select! {
                biased;
                g = lock.prioritized(priority).read_async(start..end) => read_and_hold(g, hold).await,
                _ = tokio::task::yield_now() => {}
            }
        }
        // Polled once by hand, then dropped, even if granted (the guard goes at once, unused).
        (3, true) => {
            let mut f = lock.prioritized(priority).write_async(start..end);
            poll_fn(|cx| {
                drop(std::pin::Pin::new(&mut f).poll(cx));
                Poll::Ready(())
            })
            .await;
            tokio::task::yield_now().await;
            drop(f);
        }
        (3, false) => {
            let mut f = lock.prioritized(priority).read_async(start..end);
            poll_fn(|cx| {
                drop(std::pin::Pin::new(&mut f).poll(cx));
                Poll::Ready(())
            })
            .await;
            tokio::task::yield_now().await;
            drop(f);
        }
        // Polled once here, then finished by another task (a new waker); awaited under the deadline.
        (_, true) => {
            let mut f = lock.prioritized(priority).write_async(start..end);
            let first = poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut f).poll(cx))).await;
            match first {
                Poll::Ready(g) => write_and_hold(g, id, &s.seq, &s.log, hold).await,
                Poll::Pending => {
                    let other = tokio::spawn(async move {
                        let g = f.await;
                        write_and_hold(g, id, &s.seq, &s.log, hold).await;
                    });
                    s.moved.lock().unwrap().push(other);
                }
            }
        }
        (_, false) => {
            let mut f = lock.prioritized(priority).read_async(start..end);
            let first = poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut f).poll(cx))).await;
            match first {
                Poll::Ready(g) => read_and_hold(g, hold).await,
                Poll::Pending => {
                    let other = tokio::spawn(async move { read_and_hold(f.await, hold).await });
                    s.moved.lock().unwrap().push(other);
                }
            }
        }
    }
}

fn check_joined(joined: Result<(), tokio::task::JoinError>) {
    match joined {
        Ok(()) => {}
        Err(e) if e.is_cancelled() => {}
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn stress(seed: u64, tasks: u32, aborts: bool, len: usize) {
    let shared: &'static Shared = Box::leak(Box::new(Shared {
        lock: IntervalRwLock::new(vec![Vec::new(); len]),
        seq: AtomicU64::new(0),
        log: Mutex::new(Vec::new()),
        moved: Mutex::new(Vec::new()),
    }));
    let mut rng = Rng(seed);
    runtime().block_on(async {
        let mut handles = Vec::new();
        for id in 0..tasks {
            // Edge ranges now and then: empty, one element, the whole buffer, sharing a boundary.
            let (start, end) = match rng.below(10) {
                0 => {
                    let a = rng.below(len as u64 + 1) as usize;
                    (a, a)
                }
                1 => {
                    let a = rng.below(len as u64) as usize;
                    (a, a + 1)
                }
                2 => (0, len),
                3 => {
                    let b = 1 + rng.below(len as u64 - 1) as usize;
                    if rng.below(2) == 0 { (0, b) } else { (b, len) }
                }
                _ => {
                    let a = rng.below(len as u64) as usize;
                    let b = a + 1 + rng.below(12) as usize;
                    (a, b.min(len))
                }
            };
            let write = rng.below(2) == 0;
            let priority = if rng.below(5) == 0 {
                1 + rng.below(2) as u32
            } else {
                0
            };
            let mode = rng.below(5);
            let hold = if rng.below(8) == 0 { 1 } else { 0 };
            let patience = [1, 4, 16][rng.below(3) as usize];
            handles.push(tokio::spawn(one_task(
                shared, id, start, end, write, priority, mode, hold, patience,
            )));
            if aborts && rng.below(7) == 0 {
                let victim = rng.below(handles.len() as u64) as usize;
                handles[victim].abort();
            }
            if rng.below(16) == 0 {
                tokio::task::yield_now().await;
            }
        }
        // The spawners first, so that every moved future's task is listed.
        for h in handles {
            check_joined(timeout(DEADLINE, h).await.expect("a task hung"));
        }
        // A moved future's task is listed before its spawner finishes (or is aborted after listing it).
        let moved = std::mem::take(&mut *shared.moved.lock().unwrap());
        for h in moved {
            check_joined(timeout(DEADLINE, h).await.expect("a moved task hung"));
        }
        // Nothing held, nothing queued: a whole-range write is granted at once.
        assert_eq!((shared.lock.held(), shared.lock.queued()), (0, 0));
        let mut all = pin!(shared.lock.write_async(..));
        let (_, waker) = counting();
        assert!(poll_once(&mut all, &waker).is_ready());
    });
    let lock = &shared.lock;
    let all = lock.try_write(..).expect("a range stayed taken");
    let log = shared.log.lock().unwrap();
    for (e, element) in all.iter().enumerate() {
        let mut expected: Vec<u32> = log
            .iter()
            .filter(|&&(_, a, b)| a <= e && e < b)
            .map(|&(id, ..)| id)
            .collect();
        let mut got: Vec<u32> = element.iter().map(|&(id, _)| id).collect();
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected, "element {e}: completed writes, each once");
        assert!(
            element.windows(2).all(|w| w[0].1 < w[1].1),
            "element {e}: overlapping writes not serialized: {element:?}"
        );
    }
    assert!(!log.is_empty());
}

#[test]
fn thousands_of_cancelled_async_requests_leave_exact_data_and_no_range_taken() {
    stress(0x9e37_79b9_7f4a_7c15, 3000, false, 48);
}

#[test]
fn aborted_tasks_among_them_too() {
    stress(0x2545_f491_4f6c_dd1d, 3000, true, 48);
}

/// Four elements: nearly every request conflicts with nearly every other.
#[test]
fn a_tiny_buffer_under_the_same_storm() {
    stress(0x5851_f42d_4c95_7f2d, 2000, true, 4);
}

#[test]
fn several_seeds_small() {
    for seed in 1..=6u64 {
        stress(
            seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            400,
            seed % 2 == 0,
            [2, 5, 48][seed as usize % 3],
        );
    }
}

#[test]
fn empty_ranges_are_granted_at_once_and_never_recorded() {
    let lock = IntervalRwLock::new(vec![0u8; 8]);
    let whole = lock.try_write(..).unwrap();
    let (count, waker) = counting();
    for r in [0..0, 3..3, 8..8] {
        let mut w = lock.write_async(r.clone());
        let mut rd = lock.read_async(r.clone());
        let Poll::Ready(g) = poll_once(&mut w, &waker) else {
            panic!("empty write {r:?} queued");
        };
        assert!(g.is_empty());
        assert_eq!(g.range(), r);
        let Poll::Ready(h) = poll_once(&mut rd, &waker) else {
            panic!("empty read {r:?} queued");
        };
        assert_eq!(h.range(), r);
        assert_eq!((lock.held(), lock.queued()), (1, 0));
    }
    // An empty future dropped unpolled, and one polled and dropped.
    drop(lock.write_async(4..4));
    drop(whole);
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    assert_eq!(count.0.load(Ordering::SeqCst), 0);

    let empty: IntervalRwLock<u8> = IntervalRwLock::new(Vec::new());
    let mut f = empty.write_async(..);
    assert!(poll_once(&mut f, &waker).is_ready());
    assert_eq!((empty.held(), empty.queued()), (0, 0));
}

#[test]
fn single_elements_and_shared_boundaries() {
    let lock = IntervalRwLock::new((0..8u32).collect::<Vec<_>>());
    let (count, waker) = counting();
    let left = lock.try_write(..3).unwrap();
    let right = lock.try_write(4..).unwrap();
    // The single element between them.
    let mut mid = lock.write_async(3..=3);
    let Poll::Ready(mid_guard) = poll_once(&mut mid, &waker) else {
        panic!("3..=3 is free");
    };
    assert_eq!(*mid_guard, [3]);
    // Touching at one boundary: disjoint; sharing it: queued, then withdrawn.
    let mut shares = lock.write_async(2..=3);
    assert!(poll_once(&mut shares, &waker).is_pending());
    assert_eq!(lock.queued(), 1);
    drop(shares);
    assert_eq!(lock.queued(), 0);
    drop((left, right, mid_guard));

    let a = lock.try_write(0..4).unwrap();
    let mut b = lock.write_async(4..8);
    let Poll::Ready(b_guard) = poll_once(&mut b, &waker) else {
        panic!("0..4 and 4..8 share no element");
    };
    let mut c = lock.read_async(..=4);
    let mut d = lock.read_async(3..);
    assert!(poll_once(&mut c, &waker).is_pending());
    assert!(poll_once(&mut d, &waker).is_pending());
    drop(a);
    assert_eq!(
        count.0.load(Ordering::SeqCst),
        0,
        "both still wait for 4..8"
    );
    drop(b_guard);
    assert_eq!(count.0.load(Ordering::SeqCst), 2);
    let (Poll::Ready(c), Poll::Ready(d)) = (poll_once(&mut c, &waker), poll_once(&mut d, &waker))
    else {
        panic!("granted and woken, but not ready");
    };
    assert_eq!((c.range(), d.range()), (0..5, 3..8));
    drop((c, d));
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

#[test]
fn the_whole_buffer_behind_one_element_times_out_cleanly() {
    runtime().block_on(async {
        let lock = IntervalRwLock::new(vec![0u8; 64]);
        let one = lock.read_async(63..64).await;
        let whole = timeout(Duration::from_millis(2), lock.write_async(..)).await;
        assert!(whole.is_err());
        assert_eq!(lock.queued(), 0);
        // Nothing left behind it: a write elsewhere is granted at once.
        let mut g = timeout(DEADLINE, lock.write_async(..63))
            .await
            .expect("hung");
        g.fill(1);
        drop((g, one));
        let g = timeout(DEADLINE, lock.read_async(..)).await.expect("hung");
        assert_eq!(g.iter().map(|&x| x as usize).sum::<usize>(), 63);
    });
}

/// A future granted while it sleeps and dropped without being polled again, at the head of a chain: what
/// waited only for it is granted and woken.
#[test]
fn a_granted_future_dropped_unpolled_passes_the_range_on() {
    let lock = IntervalRwLock::new(vec![0u8; 10]);
    let held = lock.try_read(0..10).unwrap();
    let (head_count, head_waker) = counting();
    let (tail_count, tail_waker) = counting();
    let mut head = lock.write_async(0..10);
    assert!(poll_once(&mut head, &head_waker).is_pending());
    let mut tail_read = lock.read_async(5..6);
    let mut tail_write = lock.write_async(9..=9);
    assert!(poll_once(&mut tail_read, &tail_waker).is_pending());
    assert!(poll_once(&mut tail_write, &tail_waker).is_pending());
    drop(held);
    assert_eq!(head_count.0.load(Ordering::SeqCst), 1);
    assert_eq!((lock.held(), lock.queued()), (1, 2));
    drop(head);
    assert_eq!(tail_count.0.load(Ordering::SeqCst), 2);
    assert_eq!((lock.held(), lock.queued()), (2, 0));
    assert!(poll_once(&mut tail_read, &tail_waker).is_ready());
    assert!(poll_once(&mut tail_write, &tail_waker).is_ready());
    drop((tail_read, tail_write));
    assert!(lock.try_write(..).is_ok());
}

type Parked = Mutex<Option<trust_core::interval::WriteFuture<'static, u8>>>;

/// A waker that, when woken or dropped, drops a queued future of the same lock (re-entering it).
struct DropsAFuture {
    victim: &'static Parked,
    woken: AtomicUsize,
}

impl Wake for DropsAFuture {
    fn wake(self: Arc<Self>) {
        self.woken.fetch_add(1, Ordering::SeqCst);
        drop(self.victim.lock().unwrap().take());
    }
}

/// Granting A wakes A's waker, which withdraws B (queued on the same lock), which grants C: the re-entrant
/// withdrawal runs after the lock's mutex is released and wakes C.
#[test]
fn a_waker_that_withdraws_another_request_of_the_same_lock() {
    let lock: &'static IntervalRwLock<u8> = Box::leak(Box::new(IntervalRwLock::new(vec![0; 10])));
    let victim: &'static Parked = Box::leak(Box::new(Mutex::new(None)));
    let held = lock.try_write(0..2).unwrap();
    let reentrant = Arc::new(DropsAFuture {
        victim,
        woken: AtomicUsize::new(0),
    });
    let a_waker = Waker::from(reentrant.clone());
    let mut a = lock.write_async(0..2);
    assert!(poll_once(&mut a, &a_waker).is_pending());
    // B waits for held 0..2 (and A) over 1..5; C waits only for B.
    let mut b = lock.write_async(1..5);
    let (c_count, c_waker) = counting();
    assert!(poll_once(&mut b, &c_waker).is_pending());
    *victim.lock().unwrap() = Some(b);
    let mut c = lock.read_async(4..6);
    assert!(poll_once(&mut c, &c_waker).is_pending());
    assert_eq!(lock.queued(), 3);
    drop(held); // grants A; A's waker withdraws B; that grants C and wakes it
    assert_eq!(reentrant.woken.load(Ordering::SeqCst), 1);
    assert_eq!(c_count.0.load(Ordering::SeqCst), 1);
    assert_eq!((lock.held(), lock.queued()), (2, 0));
    let Poll::Ready(a_guard) = poll_once(&mut a, &a_waker) else {
        panic!("A granted");
    };
    let Poll::Ready(c_guard) = poll_once(&mut c, &c_waker) else {
        panic!("C granted");
    };
    drop((a_guard, c_guard));
    assert!(lock.try_write(..).is_ok());
}
