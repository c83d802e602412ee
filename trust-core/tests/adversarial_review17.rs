//! Review 17: hostile tests of the lock collections (`lock_all!`, collections, contexts), the branded
//! token cells and worklists (`ghost`), and the interval locks, against the promises of the rustdoc,
//! `docs/*.md` and the peer crates (happylock 0.5, ghost-cell 0.2, interlock). Every test asserts exact
//! values; a test that shows a bug is `#[ignore = "BUG: .."]` and says in its doc comment what was measured.

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use trust_core::ghost::{
    GhostAtomicBitset, GhostAtomicUsize, GhostCell, GhostToken, GhostTreiberStack,
};
use trust_core::interval::{IntervalMutex, IntervalRwLock};
use trust_core::lock::{LockAllError, Mutex, RefLockCollection, RetryingLockCollection, ThreadKey};
use trust_core::{lock_all, try_lock_all};

fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        String::from("<non-string panic>")
    }
}

// ---------------------------------------------------------------------------------------------
// Lock collections.

// `OwnedLockCollection`'s promise ("Nothing else can reach the locks ..., so every acquisition of them goes
// through this collection, in this one order") was broken from safe code: `MutexRef::mutex(&guard)` (and
// `RwLock{Read,Write}Ref::rwlock`) returned `&'a Mutex` for the whole borrow of the collection, so its parts
// escaped, and `lock_all!` over them (rank order, Low then High) against a context on the collection
// (positional order, High then Low) left two threads blocked forever (both locks held after 3 s). Fixed: the
// reference lives only as long as the borrow of the guard; the program no longer compiles
// (`ui-tests/tests/ui/lock/guard-mutex-outlives-guard.rs`).

/// Promise: `RefLockCollection` is happylock 0.5's `RefLockCollection` (`src/lock/collection/mod.rs`: "One
/// file per strategy, as in `happylock`"), and `docs/lock.md` presents the collections as values "you can keep
/// and lock many times" from any thread that has a key. happylock 0.5.2 declares
/// `unsafe impl<L: Sync> Sync for RefLockCollection<'_, L>` (and `Send` for `L: Send`), so
/// `thread::scope(|s| s.spawn(|| coll.lock(key)))` over a shared `&RefLockCollection` compiles there.
///
/// Attack: probe `Sync`/`Send` at run time (inherent-method-over-trait-method resolution, as the `impls`
/// crate does) for both crates' `RefLockCollection<'_, [Mutex<u32>; 2]>`, and for our `LockCollection`
/// as a control.
///
/// Expected: `(sync, send)` is `(true, true)` for happylock's, ours, and our `LockCollection`.
///
/// Measured before the fix: ours was `(false, false)`: its `locks: Vec<&'a dyn RawLock>` field (`dyn RawLock`
/// has no `Send`/`Sync` bound) made the auto traits fail, and unlike `LockCollection` it had no `unsafe impl`.
/// Fixed (`Send` and `Sync` when `L: Sync`, as a `&L`). Then two scoped threads share one and lock it 1,000
/// times each: both counters end at 2,000.
#[test]
fn ref_lock_collection_is_sync_and_send_like_happylocks() {
    struct Probe<T: ?Sized>(PhantomData<T>);
    // Used only for a type that is not `Sync` (or `Send`): then the inherent method does not apply.
    #[allow(dead_code)]
    trait Fallback {
        fn sync(&self) -> bool {
            false
        }
        fn send(&self) -> bool {
            false
        }
    }
    impl<T: ?Sized> Fallback for Probe<T> {}
    struct SendProbe<T: ?Sized>(PhantomData<T>);
    impl<T: ?Sized> Fallback for SendProbe<T> {}
    impl<T: ?Sized + Sync> Probe<T> {
        fn sync(&self) -> bool {
            true
        }
    }
    impl<T: ?Sized + Send> SendProbe<T> {
        fn send(&self) -> bool {
            true
        }
    }

    type Theirs = happylock::collection::RefLockCollection<'static, [happylock::Mutex<u32>; 2]>;
    type Ours = RefLockCollection<'static, [Mutex<u32>; 2]>;
    type OursBoxed = trust_core::lock::LockCollection<[Mutex<u32>; 2]>;
    let theirs = (
        Probe::<Theirs>(PhantomData).sync(),
        SendProbe::<Theirs>(PhantomData).send(),
    );
    let boxed = (
        Probe::<OursBoxed>(PhantomData).sync(),
        SendProbe::<OursBoxed>(PhantomData).send(),
    );
    let ours = (
        Probe::<Ours>(PhantomData).sync(),
        SendProbe::<Ours>(PhantomData).send(),
    );
    assert_eq!(theirs, (true, true), "happylock's probe");
    assert_eq!(boxed, (true, true), "our LockCollection");
    assert_eq!(ours, (true, true), "our RefLockCollection");

    let counters = [Mutex::new(0u32), Mutex::new(0u32)];
    let both = RefLockCollection::new(&counters);
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut key = ThreadKey::get().unwrap();
                for _ in 0..1_000 {
                    let mut g = both.lock(&mut key);
                    *g[0] += 1;
                    *g[1] += 1;
                }
            });
        }
    });
    let mut key = ThreadKey::get().unwrap();
    assert_eq!(
        both.lock(&mut key).iter().map(|g| **g).collect::<Vec<_>>(),
        [2_000, 2_000]
    );
}

/// Promise (`docs/lock.md`, Limits): "Pass the key by value where that matters: a leaked guard then leaks the
/// key too, and the thread can never lock again (starved, not deadlocked)." And `ThreadKey`: "Forgetting a
/// key (`mem::forget`) loses it for the rest of the thread's life, which can starve that thread but never
/// deadlock it."
///
/// Attack: in a fresh thread, lock `m` with the key *by value* and `mem::forget` the guard. Then that thread
/// asks for its key again, and another thread tries `m` and an unrelated `n`.
///
/// Expected: in the leaking thread `ThreadKey::get()` is `None` (2 tries); `m.is_locked() == true`; the other
/// thread's `m.try_lock` is `Err` (key returned) and `n.lock` works: `*n == 8` after adding 1 to 7; a third
/// thread's `try_lock_all!(m, n)` is `Err(WouldBlock)` and leaves `n` unlocked.
#[test]
fn a_guard_forgotten_with_the_key_by_value_starves_only_its_thread() {
    let m: &'static Mutex<u32> = Box::leak(Box::new(Mutex::new(5)));
    let n: &'static Mutex<u32> = Box::leak(Box::new(Mutex::new(7)));
    let refused = thread::spawn(move || {
        let key = ThreadKey::get().unwrap();
        std::mem::forget(m.lock(key));
        [ThreadKey::get().is_none(), ThreadKey::get().is_none()]
    })
    .join()
    .unwrap();
    assert_eq!(refused, [true, true]);
    assert!(m.is_locked());
    let (m_refused, n_value) = thread::spawn(move || {
        let mut key = ThreadKey::get().unwrap();
        let refused = m.try_lock(&mut key).is_err();
        *n.lock(&mut key) += 1;
        (refused, *n.lock(&mut key))
    })
    .join()
    .unwrap();
    assert_eq!((m_refused, n_value), (true, 8));
    let (err, n_locked) = thread::spawn(move || {
        let mut key = ThreadKey::get().unwrap();
        let err = try_lock_all!(&mut key, *m, *n).err();
        (err, n.is_locked())
    })
    .join()
    .unwrap();
    assert_eq!((err, n_locked), (Some(LockAllError::WouldBlock), false));
}

/// Promise (`try_lock_all!` / `LockAllError::WouldBlock`): "Some lock was held elsewhere; every lock taken so
/// far was released." `RetryingLockCollection`: "A thread that waits never holds a lock, so it can never be
/// part of a deadlock." `lock_all!`: deadlock-free in every argument order.
///
/// Attack: 4 threads on 3 shared counters `a, b, c`, for 1.5 s each under a watchdog: thread 0 spins
/// `try_lock_all!(c, b, a)`, thread 1 `lock_all!(b, c, a)`, thread 2 a `RetryingLockCollection` over
/// `(&c, &a, &b)`, thread 3 `try_lock_all!(a, c)` (a pair). Every successful acquisition adds 1 to every
/// counter it holds and to the thread's own tally.
///
/// Expected: all threads finish within 10 s; every thread succeeded at least once; and exactly
/// `a == t0 + t1 + t2 + t3`, `b == t0 + t1 + t2`, `c == t0 + t1 + t2 + t3` (no lost or double update); no
/// lock is left held (`is_locked() == false` for all three).
#[test]
fn try_and_blocking_and_retrying_acquisitions_in_every_order_lose_no_update() {
    let locks: &'static (Mutex<u64>, Mutex<u64>, Mutex<u64>) =
        Box::leak(Box::new((Mutex::new(0), Mutex::new(0), Mutex::new(0))));
    let stop = Instant::now() + Duration::from_millis(1500);
    let (tx, rx) = mpsc::channel::<(usize, u64)>();
    for t in 0..4usize {
        let tx = tx.clone();
        thread::spawn(move || {
            let (a, b, c) = locks;
            let mut key = ThreadKey::get().unwrap();
            let retrying = RetryingLockCollection::try_new((c, a, b)).unwrap();
            let mut mine = 0u64;
            while Instant::now() < stop {
                match t {
                    0 => {
                        if let Ok((mut gc, mut gb, mut ga)) = try_lock_all!(&mut key, *c, *b, *a) {
                            *ga += 1;
                            *gb += 1;
                            *gc += 1;
                            mine += 1;
                        }
                    }
                    1 => {
                        let (mut gb, mut gc, mut ga) = lock_all!(&mut key, *b, *c, *a);
                        *ga += 1;
                        *gb += 1;
                        *gc += 1;
                        mine += 1;
                    }
                    2 => {
                        let mut g = retrying.lock(&mut key);
                        *g.0 += 1;
                        *g.1 += 1;
                        *g.2 += 1;
                        mine += 1;
                    }
                    _ => {
                        if let Ok((mut ga, mut gc)) = try_lock_all!(&mut key, *a, *c) {
                            *ga += 1;
                            *gc += 1;
                            mine += 1;
                        }
                    }
                }
            }
            tx.send((t, mine)).unwrap();
        });
    }
    drop(tx);
    let mut tallies = [0u64; 4];
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen < 4 {
        let left = deadline.saturating_duration_since(Instant::now());
        let (t, mine) = rx
            .recv_timeout(left)
            .expect("watchdog: a thread did not finish within 10 s (deadlock or lost wake-up)");
        tallies[t] = mine;
        seen += 1;
    }
    assert!(tallies.iter().all(|&n| n > 0), "tallies {tallies:?}");
    let (a, b, c) = locks;
    let mut key = ThreadKey::get().unwrap();
    let (ga, gb, gc) = lock_all!(&mut key, *a, *b, *c);
    let all: u64 = tallies.iter().sum();
    assert_eq!(
        (*ga, *gb, *gc),
        (all, all - tallies[3], all),
        "tallies {tallies:?}"
    );
    drop((ga, gb, gc));
    assert_eq!(
        (a.is_locked(), b.is_locked(), c.is_locked()),
        (false, false, false)
    );
}

// ---------------------------------------------------------------------------------------------
// Branded cells and worklists.

/// Promise (`GhostCell::swap` rustdoc, first version): "Swapping a cell with itself is a no-op and
/// returns `Ok`. Two *different* cells that overlap in memory (only possible for zero-sized values placed at
/// the same address) cannot be borrowed mutably together, and give `Err`."
///
/// Attack: the two *different* elements of `[GhostCell<'_, ()>; 2]` share one address (zero-sized). Swap
/// them, and, as a control, borrow them together through `GhostBorrowMut`.
///
/// Measured: `swap` returned `Ok(())`: its `core::ptr::eq(self, other)` short-cut compares addresses, which
/// are equal for any two zero-sized cells at one address, so the documented `Err` could never happen
/// (ghost-cell 0.2.6 has the same code; the doc sentence was ours). Fixed in the doc, which now says `swap`
/// never gives `Err` and zero-sized cells at one address swap as a no-op, as in ghost-cell.
///
/// Expected: the multi-borrow is `Err` with positions `(0, 1)`; both swaps are `Ok`.
#[test]
fn swap_of_two_zero_sized_cells_at_one_address_is_a_no_op() {
    use trust_core::ghost::GhostBorrowMut;
    GhostToken::new(|mut token| {
        let cells = [GhostCell::new(()), GhostCell::new(())];
        assert_eq!(
            std::ptr::from_ref(&cells[0]).addr(),
            std::ptr::from_ref(&cells[1]).addr()
        );
        let err = (&cells[0], &cells[1]).borrow_mut(&mut token).unwrap_err();
        assert_eq!((err.first(), err.second()), (0, 1));
        assert!(cells[0].swap(&cells[0], &mut token).is_ok(), "itself: Ok");
        assert_eq!(cells[0].swap(&cells[1], &mut token), Ok(()));
    });
}

/// Promise (`GhostTreiberStack::push_batch` rustdoc): "# Panics: If an index is `>= capacity()`, naming it
/// (before anything is pushed)."
///
/// Attack: push `0`, then `push_batch(&[1, 2, 3, 99])` on a stack of capacity 8: the bad index comes after
/// three good ones, whose `next` links the batch loop writes before it reaches `99`.
///
/// Expected: the panic message is exactly "GhostTreiberStack: index 99 is out of range for a stack of
/// capacity 8"; the stack then pops `Some(0)` then `None` (nothing of the batch was pushed); a later
/// `push_batch(&[1, 2, 3])` and `push(4)` pop as `4, 1, 2, 3, None`.
#[test]
fn treiber_push_batch_with_a_bad_index_after_good_ones_pushes_nothing() {
    GhostToken::new(|_token| {
        let stack = GhostTreiberStack::new(8);
        stack.push(0);
        let message = panic_message(
            catch_unwind(AssertUnwindSafe(|| stack.push_batch(&[1, 2, 3, 99]))).unwrap_err(),
        );
        assert_eq!(
            message,
            "GhostTreiberStack: index 99 is out of range for a stack of capacity 8"
        );
        assert_eq!((stack.pop(), stack.pop()), (Some(0), None));
        stack.push_batch(&[1, 2, 3]);
        stack.push(4);
        let popped: Vec<Option<usize>> = (0..5).map(|_| stack.pop()).collect();
        assert_eq!(popped, [Some(4), Some(1), Some(2), Some(3), None]);
    });
}

/// Promise (`ghost` module docs): "`GhostTreiberStack`: a lock-free MPMC stack of indices, ABA-safe with a
/// tagged head, `push_batch`" and "`GhostAtomicBitset`: a word-packed visited set; `test_and_set` is one
/// `fetch_or`" (halo parity: a parallel traversal whose pieces share one brand).
///
/// Attack: a parallel graph search on 4 threads (2 cores: preempted mid-CAS) over `N = 40_000` nodes with
/// edges `i -> 2i+1, 2i+2, (7i + 3) mod N` from node 0. A node is pushed when its bit is first set
/// (`test_and_set`), by single `push` or `push_batch` alternately; every pop bumps that node's branded
/// counter. Threads stop when a shared count of pushed-but-unprocessed nodes reaches 0.
///
/// Expected: exactly the nodes a sequential search reaches are popped, each exactly once (every counter is
/// 1 for reached nodes and 0 for the others); the bitset's `count_ones()` equals the reached count, and its
/// `iter()` lists exactly the reached nodes in increasing order; the stack ends empty.
#[test]
fn parallel_search_with_a_branded_bitset_and_treiber_worklist_visits_each_node_once() {
    const N: usize = 40_000;
    let edges = |i: usize| [2 * i + 1, 2 * i + 2, (7 * i + 3) % N];
    let mut reached = vec![false; N];
    let mut stack = vec![0usize];
    reached[0] = true;
    while let Some(i) = stack.pop() {
        for j in edges(i) {
            if j < N && !reached[j] {
                reached[j] = true;
                stack.push(j);
            }
        }
    }
    let expected: Vec<usize> = (0..N).filter(|&i| reached[i]).collect();

    GhostToken::new(|_token| {
        let visited = GhostAtomicBitset::new(N);
        let work = GhostTreiberStack::new(N);
        let pops: Vec<GhostAtomicUsize<'_>> = (0..N).map(|_| GhostAtomicUsize::new(0)).collect();
        let pending = AtomicUsize::new(1);
        visited.test_and_set(0);
        work.push(0);
        thread::scope(|s| {
            for t in 0..4 {
                let (visited, work, pops, pending) = (&visited, &work, &pops, &pending);
                s.spawn(move || {
                    let mut batch = Vec::with_capacity(3);
                    let deadline = Instant::now() + Duration::from_secs(8);
                    while pending.load(Ordering::Acquire) > 0 {
                        assert!(Instant::now() < deadline, "watchdog: search did not finish");
                        let Some(i) = work.pop() else {
                            std::hint::spin_loop();
                            continue;
                        };
                        pops[i].fetch_add(1, Ordering::Relaxed);
                        batch.clear();
                        for j in edges(i) {
                            if j < N && !visited.test_and_set(j) {
                                batch.push(j);
                            }
                        }
                        pending.fetch_add(batch.len(), Ordering::AcqRel);
                        if (i + t) % 2 == 0 {
                            work.push_batch(&batch);
                        } else {
                            batch.iter().for_each(|&j| work.push(j));
                        }
                        pending.fetch_sub(1, Ordering::AcqRel);
                    }
                });
            }
        });
        let counts: Vec<usize> = pops.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let wrong: Vec<(usize, usize)> = (0..N)
            .filter(|&i| counts[i] != usize::from(reached[i]))
            .map(|i| (i, counts[i]))
            .take(10)
            .collect();
        assert_eq!(wrong, [], "(node, pops) that are not exactly once/never");
        assert_eq!(visited.count_ones(), expected.len());
        assert_eq!(visited.iter().collect::<Vec<_>>(), expected);
        assert_eq!(work.pop(), None);
    });
}

// ---------------------------------------------------------------------------------------------
// Interval locks.

/// Promise (`IntervalMutex` rustdoc, `src/interval/mutex.rs:8-14`): "A slice whose sub-ranges can be locked
/// exclusively and independently: every borrow writes, so any two overlapping borrows exclude each other.
/// [...] what the type buys is an API without reads, so a reader of the code knows every borrow excludes."
/// (interlock's interval mutex.)
///
/// Attack (first version): `IntervalMutex::prioritized` returned the readers-writer lock's `Prioritized`,
/// whose `read` and `read_async` handed out shared borrows. `m.prioritized(0).read(0..4)`, then one poll of
/// `m.prioritized(0).read_async(2..6)`: `Ready` while the first guard lived, `held() == 2`, `queued() == 0`.
/// Fixed: it returns a `PrioritizedMutex`, which only has `lock` and `lock_async` (calling `read` on it does
/// not compile: `ui-tests/tests/ui/interval/mutex-prioritized-cannot-read.rs`). This test takes the same two
/// overlapping borrows through those.
///
/// Expected: the second, overlapping borrow waits for the first: the poll is `Pending`, `held() == 1`,
/// `queued() == 1`; once the first is dropped, the second is granted (`held() == 1`, `queued() == 0`).
#[test]
fn interval_mutex_prioritized_borrows_do_not_overlap() {
    let m = IntervalMutex::new(vec![1u32, 2, 3, 4, 5, 6, 7, 8]);
    let first = m.prioritized(0).lock(0..4);
    assert_eq!(&*first, &[1, 2, 3, 4]);
    let mut second = m.prioritized(0).lock_async(2..6);
    let polled = poll_once(&mut second);
    let (held, queued) = (m.held(), m.queued());
    let ready = polled.is_ready();
    drop(polled);
    assert_eq!((ready, held, queued), (false, 1, 1));
    drop(first);
    let Poll::Ready(second) = poll_once(&mut second) else {
        panic!("the second borrow is granted once the first is dropped");
    };
    assert_eq!((&*second, m.held(), m.queued()), (&[3, 4, 5, 6][..], 1, 0));
}

/// Promise (interval module docs, "Guards across threads"): "A `WriteGuard` is an exclusive `&mut [T]` to its
/// range [...] `WriteGuard: Send` iff `T: Send` [...] Releasing a guard from another thread is fine", and "An
/// empty range conflicts with nothing and is granted at once".
///
/// Attack: an `IntervalRwLock<Cell<u64>>` (Send, not Sync: the lock itself cannot be shared). Take write
/// guards of `0..4` and `4..8`, move the first into a thread that adds `10 * i` to every cell 1000 times and
/// drops the guard there; meanwhile this thread adds 1 to cells 4..8 1000 times through the second guard
/// and takes empty borrows at `4..4`, `8..8` and `0..0` (all granted, `held()` unchanged at 2). After the
/// join, `try_write(..)` must succeed.
///
/// Expected: cells are exactly `[0, 10000, 20000, 30000, 1000, 1000, 1000, 1000]`; `held()` is 2 while both
/// guards live (empty borrows not counted) and 0 at the end, `queued()` 0.
#[test]
fn write_guards_of_cells_cross_threads_and_empty_ranges_are_free() {
    use std::cell::Cell;
    let lock = IntervalRwLock::new((0..8).map(|_| Cell::new(0u64)).collect::<Vec<_>>());
    let left = lock.write(0..4);
    let mut right = lock.write(4..8);
    let held_during = thread::scope(|s| {
        let worker = s.spawn(move || {
            for _ in 0..1000 {
                for (i, cell) in left.iter().enumerate() {
                    cell.set(cell.get() + 10 * i as u64);
                }
            }
            drop(left);
        });
        for _ in 0..1000 {
            for cell in right.iter_mut() {
                *cell.get_mut() += 1;
            }
        }
        let empties = (
            lock.write(4..4),
            lock.read(8..8),
            lock.try_write(0..0).unwrap(),
        );
        assert_eq!(
            (empties.0.len(), empties.1.len(), empties.2.len()),
            (0, 0, 0)
        );
        let held = lock.held();
        worker.join().unwrap();
        held
    });
    drop(right);
    assert_eq!(held_during, 2);
    let all = lock
        .try_write(..)
        .expect("nothing held after the worker dropped its guard");
    let values: Vec<u64> = all.iter().map(Cell::get).collect();
    assert_eq!(values, [0, 10000, 20000, 30000, 1000, 1000, 1000, 1000]);
    drop(all);
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

/// Promise (interval module docs, Fairness): "With priorities, 'earlier' among queued requests means (higher
/// priority, then smaller ticket); a held borrow is never preempted", and cancellation: "Dropping one before
/// it completes cancels it cleanly: the borrows queued behind it are re-examined and woken if it was all they
/// waited for."
///
/// Attack: `W0` writes `0..10` (held). Queue, in order: `R1` read `0..5` (priority 0), `R2` read `5..10`
/// (priority 0), `W3` write `4..6` (priority 9: overtakes `R1` and `R2`), `R4` read `8..9` (priority 9, only
/// behind `W0`). Then cancel `W3` while it waits, and release `W0`.
///
/// Expected, step by step (`Pending`/`Ready` of each future on a fresh poll): after queueing all, `held() ==
/// 1`, `queued() == 4`; after dropping `W3`: still `queued() == 3`, nothing ready; after dropping `W0`: `R1`,
/// `R2` and `R4` are all `Ready` (three readers share), `held() == 3`, `queued() == 0`; then a
/// `try_write(4..6)` fails and `try_read(4..6)` succeeds.
#[test]
fn cancelling_a_high_priority_writer_that_overtook_readers_leaves_them_behind_the_holder_only() {
    let lock = IntervalRwLock::new(vec![0u8; 10]);
    let w0 = lock.write(0..10);
    let mut r1 = lock.read_async(0..5);
    let mut r2 = lock.read_async(5..10);
    let mut w3 = lock.prioritized(9).write_async(4..6);
    let mut r4 = lock.prioritized(9).read_async(8..9);
    assert!(poll_once(&mut r1).is_pending());
    assert!(poll_once(&mut r2).is_pending());
    assert!(poll_once(&mut w3).is_pending());
    assert!(poll_once(&mut r4).is_pending());
    assert_eq!((lock.held(), lock.queued()), (1, 4));
    drop(w3);
    assert_eq!((lock.held(), lock.queued()), (1, 3));
    assert!(poll_once(&mut r1).is_pending());
    assert!(poll_once(&mut r4).is_pending());
    drop(w0);
    let g1 = match poll_once(&mut r1) {
        Poll::Ready(g) => g,
        Poll::Pending => panic!("R1 still pending after W0 and W3 are gone"),
    };
    let g2 = match poll_once(&mut r2) {
        Poll::Ready(g) => g,
        Poll::Pending => panic!("R2 still pending after W0 and W3 are gone"),
    };
    let g4 = match poll_once(&mut r4) {
        Poll::Ready(g) => g,
        Poll::Pending => panic!("R4 still pending after W0 is gone"),
    };
    assert_eq!((g1.range(), g2.range(), g4.range()), (0..5, 5..10, 8..9));
    assert_eq!((lock.held(), lock.queued()), (3, 0));
    assert!(lock.try_write(4..6).is_err());
    assert_eq!(lock.try_read(4..6).map(|g| g.len()).ok(), Some(2));
}
