//! Review 24: hostile tests of `trust_core::lock` (docs/lock.md) through the safe public API only.
//!
//! Every test that could hang runs its risky part on a spawned thread and gives up after a few
//! seconds; a thread that deadlocked is leaked (the process exits when the harness is done).

mod common;

use std::cell::RefCell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use trust_core::lock::{
    LockAllError, LockCollection, Mutex, OwnedLockCollection, Poisonable, RwLock, ThreadKey,
};
use trust_core::{lock_all, lock_ranks, try_lock_all};

/// How a risky closure ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome<R> {
    Finished(R),
    Panicked,
    TimedOut,
}

/// Runs `f` on its own thread; `TimedOut` if it has not returned after `secs` seconds (the thread is leaked).
fn within<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> Outcome<R> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(r) => Outcome::Finished(r),
        Err(mpsc::RecvTimeoutError::Disconnected) => Outcome::Panicked,
        Err(mpsc::RecvTimeoutError::Timeout) => Outcome::TimedOut,
    }
}

/// Spins (yielding) until `n` parties arrived at `count`, or 5 s passed (so nothing here spins forever).
fn rendezvous(count: &AtomicUsize, n: usize) {
    count.fetch_add(1, Ordering::SeqCst);
    let start = Instant::now();
    while count.load(Ordering::SeqCst) < n && start.elapsed() < Duration::from_secs(5) {
        thread::yield_now();
    }
}

// ---------------------------------------------------------------------------------------------
// BUG 1: `Debug` of `Mutex`/`RwLock` takes the lock without a key when this thread's key is out but idle.

thread_local! {
    /// This thread's key, parked where any code on the thread (a `Debug` impl) can take it.
    static PARKED: RefCell<Option<ThreadKey>> = const { RefCell::new(None) };
}

fn park_this_threads_key() {
    let key = ThreadKey::get().expect("a fresh thread's key is free");
    PARKED.with(|p| *p.borrow_mut() = Some(key));
}

/// Takes the parked key, runs `f` with it (blocking on a lock), parks it again.
fn with_parked_key(f: impl FnOnce(&mut ThreadKey)) -> bool {
    let Some(mut key) = PARKED.with(|p| p.borrow_mut().take()) else {
        return false;
    };
    f(&mut key);
    PARKED.with(|p| *p.borrow_mut() = Some(key));
    true
}

/// What the two printing threads sent, failing if either has not finished within 3 s (deadlocked).
fn both_printers_finish<T>(rx: &mpsc::Receiver<T>) -> Vec<T> {
    let done: Vec<T> = (0..2)
        .filter_map(|_| rx.recv_timeout(Duration::from_secs(3)).ok())
        .collect();
    assert_eq!(
        done.len(),
        2,
        "deadlock: the printing threads did not finish"
    );
    done
}

struct Peer {
    other: usize,
}

static PEERS: [Mutex<Peer>; 2] = [Mutex::new(Peer { other: 1 }), Mutex::new(Peer { other: 0 })];
static PEERS_ARRIVED: AtomicUsize = AtomicUsize::new(0);

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Both threads hold their own mutex (taken by `Mutex`'s `Debug`) before either blocks.
        rendezvous(&PEERS_ARRIVED, 2);
        with_parked_key(|key| drop(PEERS[self.other].lock(key)));
        f.write_str("Peer")
    }
}

/// Promise (docs/lock.md, first bullets; `mutex.rs` `Debug`: "this thread's key is held meanwhile ... that
/// code cannot take the key and block on a lock"): a thread that holds a lock cannot wait for another.
///
/// The fix of `debug_of_two_mutexes_whose_data_lock_each_other_does_not_deadlock` held the key while `Debug`
/// peeks, but only *if it is free*. A key that is out but idle (parked in a thread-local, a field, ...) is held
/// by nothing, so `Debug` still try-locked the mutex with no key, ran the data's `Debug` under it, and that
/// code took the parked key and blocked on the other mutex: two threads printing one mutex each deadlocked
/// (neither finished in 3 s). Now a blocking acquisition inside a peek panics, naming the problem: both
/// threads finish with that panic, their mutexes free and their keys back.
#[test]
fn debug_with_the_key_parked_in_a_thread_local_panics_instead_of_deadlocking() {
    let (tx, rx) = mpsc::channel();
    for peer in &PEERS {
        let tx = tx.clone();
        thread::spawn(move || {
            park_this_threads_key();
            let shown = catch_unwind(AssertUnwindSafe(|| format!("{peer:?}")))
                .map_err(common::panic_message);
            let key_back = ThreadKey::get().is_some();
            tx.send((shown, key_back)).unwrap();
        });
    }
    let done = both_printers_finish(&rx);
    for (shown, key_back) in done {
        let message = shown.expect_err("the data's Debug blocked on a lock inside the peek");
        assert!(
            message.starts_with("a blocking lock inside the `Debug`"),
            "{message}"
        );
        assert!(
            key_back,
            "the parked key, dropped by the unwinding, is back"
        );
    }
    assert!(!PEERS[0].is_locked() && !PEERS[1].is_locked());
}

struct ReadsThenLocks;
struct LocksThenWrites;

static RW_SIDE: RwLock<ReadsThenLocks> = RwLock::new(ReadsThenLocks);
static MUTEX_SIDE: Mutex<LocksThenWrites> = Mutex::new(LocksThenWrites);
static MIXED_ARRIVED: AtomicUsize = AtomicUsize::new(0);

impl fmt::Debug for ReadsThenLocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        rendezvous(&MIXED_ARRIVED, 2);
        with_parked_key(|key| drop(MUTEX_SIDE.lock(key)));
        f.write_str("R")
    }
}

impl fmt::Debug for LocksThenWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        rendezvous(&MIXED_ARRIVED, 2);
        with_parked_key(|key| drop(RW_SIDE.write(key)));
        f.write_str("M")
    }
}

/// Same promise, through `RwLock`'s `Debug` (a keyless *shared* hold) against `Mutex`'s: one thread prints the
/// `RwLock` (holds it shared, then blocks on the mutex), the other prints the mutex (holds it, then blocks
/// writing the `RwLock`). Before the fix neither finished in 3 s; now both end in the peek's panic.
#[test]
fn debug_of_an_rwlock_and_a_mutex_with_parked_keys_panics_instead_of_deadlocking() {
    let (tx, rx) = mpsc::channel();
    let t1 = tx.clone();
    thread::spawn(move || {
        park_this_threads_key();
        t1.send(catch_unwind(|| format!("{RW_SIDE:?}")).map_err(common::panic_message))
            .unwrap();
    });
    thread::spawn(move || {
        park_this_threads_key();
        tx.send(catch_unwind(|| format!("{MUTEX_SIDE:?}")).map_err(common::panic_message))
            .unwrap();
    });
    let done = both_printers_finish(&rx);
    for shown in done {
        let message = shown.expect_err("the data's Debug blocked on a lock inside the peek");
        assert!(
            message.starts_with("a blocking lock inside the `Debug`"),
            "{message}"
        );
    }
    assert!(!RW_SIDE.is_locked() && !MUTEX_SIDE.is_locked());
}

// Review 24 also found that guards were `Send` over a raw lock whose `GuardMarker` is `GuardSend` (`spin`'s;
// `parking_lot`'s with its `send_guard` feature): a guard moved to another thread held its lock while that
// thread's key was free, and two such threads deadlocked, or took a lower rank while holding a higher one.
// Guards are now never `Send`: a compile error, `ui-tests/tests/ui/lock/guard-is-not-send.rs`.

/// docs/lock.md "Tour" compiles and behaves as written (docs/lock.md is not doc-tested).
#[test]
fn docs_tour_example_compiles_and_behaves() {
    let r = within(5, || {
        let mut key = ThreadKey::get().expect("one key per thread");
        let (a, b, c) = (
            Mutex::new(1),
            Mutex::new(2),
            RwLock::new(String::from("three")),
        );
        {
            let (mut ga, gb, gc) = lock_all!(&mut key, a, b, read c);
            *ga += *gb;
            assert_eq!(gc.len(), 5);
        }
        let g = a.lock(&mut key);
        drop(g);
        let accounts = [Mutex::new(10), Mutex::new(20)];
        let (i, j) = (1, 1);
        assert_eq!(
            try_lock_all!(&mut key, accounts[i], accounts[j]).err(),
            Some(LockAllError::Duplicate {
                first: 0,
                second: 1
            })
        );
        let both = LockCollection::try_new((&a, &c)).expect("distinct locks");
        let mut guard = both.lock(&mut key);
        *guard.0 += 1;
        guard.1.push('!');
        drop(guard);
        drop(both);
        (a.into_inner(), b.into_inner(), c.into_inner())
    });
    assert_eq!(r, Outcome::Finished((4, 2, String::from("three!"))));
}

/// docs/lock.md "Ranks and nesting": both blocks, run as one program.
#[test]
fn docs_ranks_example_compiles_and_behaves() {
    trust_core::lock_ranks! {
        /// The bank's ledger: always taken first.
        pub Ledger;
        pub Account;
        pub Audit;
    }
    let r = within(5, || {
        let ledger: Mutex<Vec<i64>, Ledger> = Mutex::ranked(Vec::new());
        let (alice, bob): (Mutex<i64, Account>, Mutex<i64, Account>) =
            (Mutex::ranked(10), Mutex::ranked(0));
        let audit: RwLock<u32, Audit> = RwLock::ranked(0);
        let mut key = ThreadKey::get().unwrap();
        {
            let (mut log, mut key) = lock_all!(&mut key, ledger; nest);
            let (mut a, mut b, mut key) = lock_all!(&mut key, alice, bob; nest);
            let (mut n,) = lock_all!(&mut key, audit);
            *a -= 3;
            *b += 3;
            log.push(3);
            *n += 1;
        }
        (
            ledger.into_inner(),
            alice.into_inner(),
            bob.into_inner(),
            audit.into_inner(),
        )
    });
    assert_eq!(r, Outcome::Finished((vec![3], 7, 3, 1)));
}

/// docs/lock.md "One part at a time: `LockContext`", with the loop body counting the items.
#[test]
fn docs_context_example_compiles_and_behaves() {
    let r = within(5, || {
        let mut key = ThreadKey::get().unwrap();
        let locks = OwnedLockCollection::new((Mutex::new(true), Mutex::new(42), Mutex::new(67)));
        let number = {
            let ctx = locks.context(&mut key);
            let (use_last, ctx) = ctx.lock_0();
            let number = if *use_last {
                ctx.lock_2().0
            } else {
                ctx.lock_1().0
            };
            *number
        };
        let list = OwnedLockCollection::new(vec![Mutex::new(1), Mutex::new(3)]);
        let mut ctx = list.context(&mut key);
        let mut items = Vec::new();
        while let Some(item) = ctx.lock_next() {
            items.push(item); // earlier guards stay alive
        }
        let sum: i32 = items.iter().map(|g| **g).sum();
        (number, sum, items.len())
    });
    assert_eq!(r, Outcome::Finished((67, 4, 2)));
}

lock_ranks! { pub R1; pub R2; pub R3; }

/// Promise: `lock_all!` with many locks (20, the tuple limit of nothing) sorts each run of equal rank by
/// address at run time and reports a duplicate by exact argument positions, whatever run it falls in and
/// however far apart; nothing stays locked; `lock_all!` panics with the 1-based message. With distinct
/// locks, all 20 are taken and written.
#[test]
fn twenty_locks_with_rank_ties_report_the_exact_duplicate_pair() {
    let r = within(5, || {
        let us: Vec<Mutex<u32>> = (0..6).map(Mutex::new).collect();
        let r1: Vec<Mutex<u32, R1>> = (0..5).map(Mutex::ranked).collect();
        let r2: Vec<Mutex<u32, R2>> = (0..5).map(Mutex::ranked).collect();
        let r3: Vec<RwLock<u32, R3>> = (0..4).map(RwLock::ranked).collect();
        let mut key = ThreadKey::get().unwrap();
        let mut results = Vec::new();
        for (p, q) in [(0usize, 0usize), (1, 3), (0, 3), (3, 2)] {
            // Argument 3 is `r1[p]`, argument 17 is `r1[q]`.
            let e = try_lock_all!(&mut key,
                r3[0], us[5], r2[4], r1[p], us[0], r1[1], r2[0], us[3], r3[1], r1[2],
                us[1], r2[1], read r3[2], us[2], r2[2], r1[4], us[4], r1[q], r2[3], r3[3])
            .err();
            results.push(e);
        }
        let all_free = us.iter().all(|m| !m.is_locked())
            && r1.iter().all(|m| !m.is_locked())
            && r2.iter().all(|m| !m.is_locked())
            && r3.iter().all(|m| !m.is_locked());
        let (i, j) = (2usize, 2usize);
        let msg = catch_unwind(AssertUnwindSafe(|| {
            let _g = lock_all!(
                &mut key, r3[0], us[0], us[1], us[2], us[3], us[4], us[5], r1[0], r1[1], r1[2],
                r1[3], r1[4], r2[0], r2[1], r2[2], r2[3], r2[4], r3[1], r3[i], r3[j]
            );
        }))
        .map_err(|p| p.downcast::<String>().map(|s| *s).unwrap_or_default())
        .err();
        let (i, j) = (0usize, 3usize);
        let sum = {
            let g = lock_all!(
                &mut key, r3[0], us[0], us[1], us[2], us[3], us[4], us[5], r1[i], r1[1], r1[2],
                r1[j], r1[4], r2[0], r2[1], r2[2], r2[3], r2[4], r3[1], r3[2], r3[3]
            );
            *g.0 + *g.1 + *g.6 + *g.7 + *g.10 + *g.11 + *g.16 + *g.19
        };
        (results, all_free, msg, sum)
    });
    let dup = |first, second| Some(LockAllError::Duplicate { first, second });
    assert_eq!(
        r,
        Outcome::Finished((
            vec![dup(3, 17), dup(3, 5), None, dup(9, 17)],
            true,
            Some(String::from(
                "lock_all!: locks #19 and #20 (counting from 1 after the key) are the same lock; a thread \
                 would wait for itself forever: pass each lock once"
            )),
            19
        ))
    );
}

/// Promise (docs/lock.md, Limits): ranks from two `lock_ranks!` lists (here in two modules, with the same
/// names in opposite orders) "can be taken together in one call, ordered by RANK then address, which is
/// still one global order". Four threads mixing nesting inside each list with calls across the lists, in
/// every argument order, for 2000 rounds each, finish within 10 s with exact counts.
#[test]
fn ranks_declared_twice_across_modules_stay_one_global_order() {
    mod first {
        trust_core::lock_ranks! { pub Alpha; pub Beta; }
    }
    mod second {
        trust_core::lock_ranks! { pub Beta; pub Alpha; }
    }
    use trust_core::lock::Rank;
    assert_eq!(
        (
            first::Alpha::RANK,
            first::Beta::RANK,
            second::Beta::RANK,
            second::Alpha::RANK
        ),
        (1, 2, 1, 2)
    );
    struct Locks {
        a1: Mutex<u64, first::Alpha>,
        b1: Mutex<u64, first::Beta>,
        b2: Mutex<u64, second::Beta>,
        a2: Mutex<u64, second::Alpha>,
    }
    let locks = Arc::new(Locks {
        a1: Mutex::ranked(0),
        b1: Mutex::ranked(0),
        b2: Mutex::ranked(0),
        a2: Mutex::ranked(0),
    });
    const ROUNDS: u64 = 2000;
    let r = within(10, move || {
        let barrier = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (l, barrier) = (locks.clone(), barrier.clone());
                thread::spawn(move || {
                    let mut key = ThreadKey::get().unwrap();
                    barrier.wait();
                    for _ in 0..ROUNDS {
                        match t {
                            0 => {
                                let (mut a, mut k) = lock_all!(&mut key, l.a1; nest);
                                let (mut b,) = lock_all!(&mut k, l.b1);
                                *a += 1;
                                *b += 1;
                            }
                            1 => {
                                let (mut b2, mut k) = lock_all!(&mut key, l.b2; nest);
                                let (mut a2,) = lock_all!(&mut k, l.a2);
                                *a2 += 1;
                                *b2 += 1;
                            }
                            2 => {
                                let (mut b1, mut a2, mut a1, mut b2) =
                                    lock_all!(&mut key, l.b1, l.a2, l.a1, l.b2);
                                *b1 += 1;
                                *a2 += 1;
                                *a1 += 1;
                                *b2 += 1;
                            }
                            _ => {
                                let c = LockCollection::try_new((&l.a2, &l.b1, &l.b2, &l.a1))
                                    .expect("distinct");
                                c.scoped_lock(&mut key, |(a2, b1, b2, a1)| {
                                    **a2 += 1;
                                    **b1 += 1;
                                    **b2 += 1;
                                    **a1 += 1;
                                });
                            }
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        let mut key = ThreadKey::get().unwrap();
        let (a1, b1, b2, a2) = lock_all!(&mut key, locks.a1, locks.b1, locks.b2, locks.a2);
        (*a1, *b1, *b2, *a2)
    });
    assert_eq!(
        r,
        Outcome::Finished((3 * ROUNDS, 3 * ROUNDS, 3 * ROUNDS, 3 * ROUNDS))
    );
}

/// Drops its value's slot by panicking (once armed).
struct PanicsOnDrop(bool);
impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if self.0 {
            self.0 = false;
            panic!("drop of the old value");
        }
    }
}

/// Promise (docs/lock.md, Poisoning and panics): a panic while holding guards (here: the *data's* `Drop`,
/// run by an assignment under the lock) releases every lock, a key held by value returns to the thread, a
/// `&mut` key is usable again; a `Poisonable` is poisoned by it. Every acquisition style, one after another.
#[test]
fn a_panicking_drop_of_the_old_value_under_every_style_releases_and_keeps_the_key() {
    let r = within(5, || {
        let m = Mutex::new(PanicsOnDrop(true));
        let rw = RwLock::new(PanicsOnDrop(true));
        let (x, y) = (
            Mutex::new(PanicsOnDrop(false)),
            Mutex::new(PanicsOnDrop(true)),
        );
        let coll = LockCollection::new((Mutex::new(PanicsOnDrop(true)), Mutex::new(0u8)));
        let owned = OwnedLockCollection::new([
            Mutex::new(PanicsOnDrop(false)),
            Mutex::new(PanicsOnDrop(true)),
        ]);
        let p = Poisonable::new(Mutex::new(PanicsOnDrop(true)));
        let mut panics = 0;
        let mut count = |r: std::thread::Result<()>| panics += usize::from(r.is_err());

        // Key by value into the guard.
        count(catch_unwind(AssertUnwindSafe(|| {
            let mut g = m.lock(ThreadKey::get().unwrap());
            *g = PanicsOnDrop(false);
        })));
        count(catch_unwind(AssertUnwindSafe(|| {
            rw.scoped_write(ThreadKey::get().unwrap(), |v| *v = PanicsOnDrop(false));
        })));
        count(catch_unwind(AssertUnwindSafe(|| {
            coll.scoped_lock(ThreadKey::get().unwrap(), |(a, _)| {
                **a = PanicsOnDrop(false)
            });
        })));
        // Key borrowed.
        let mut key = ThreadKey::get().expect("the key came back after three panics");
        count(catch_unwind(AssertUnwindSafe(|| {
            let (_gx, mut gy) = lock_all!(&mut key, x, y);
            *gy = PanicsOnDrop(false);
        })));
        count(catch_unwind(AssertUnwindSafe(|| {
            let mut ctx = owned.context(&mut key);
            let _first = ctx.lock_next().unwrap();
            let mut second = ctx.lock_next().unwrap();
            *second = PanicsOnDrop(false);
        })));
        count(catch_unwind(AssertUnwindSafe(|| {
            let mut g = p.lock(&mut key).unwrap();
            **g = PanicsOnDrop(false);
        })));
        let none_locked = !m.is_locked()
            && !rw.is_locked()
            && !x.is_locked()
            && !y.is_locked()
            && !coll.child().0.is_locked()
            && !coll.child().1.is_locked()
            && !p.child().is_locked();
        let owned_free = owned.try_lock(&mut key).is_ok();
        let poisoned = p.is_poisoned();
        drop(key);
        let key_back = ThreadKey::get().is_some();
        (panics, none_locked, owned_free, poisoned, key_back)
    });
    assert_eq!(r, Outcome::Finished((6, true, true, true, true)));
}
