//! Hostile parity tests for `trust_core::lock`, `trust_core::interval` and `trust_core::ghost`: what
//! users of `happylock`, `interlock` and `ghost-cell`/halo expect, pushed where the earlier adversarial
//! files (`adversarial_lock.rs`, `lock_evil.rs`, `adversarial_interval.rs`, `adversarial_ghost.rs`) did
//! not go. Every runtime case asserts exact values. Tests that show a bug are `#[ignore = "BUG: .."]`.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use trust_core::ghost::{
    GhostAtomicBitset, GhostAtomicBool, GhostAtomicU32, GhostAtomicU64, GhostBorrowMut, GhostCell,
    GhostChaseLevDeque, GhostLazyCell, GhostLazyLock, GhostOnceCell, GhostToken,
};
use trust_core::interval::{IntervalMutex, IntervalRwLock};
use trust_core::lock::{
    LockAfter, LockAllError, LockCollection, LockKey, Mutex, PoisonGuard, Poisonable,
    RefLockCollection, RetryingLockCollection, RwLock, ThreadKey,
};
use trust_core::{lock_all, lock_ranks, try_lock_all};

/// Smaller loops under Miri.
const SMALL: bool = cfg!(miri);

mod common;
use common::panic_message;

/// A waker that counts its wakes.
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counter() -> (Arc<Counter>, Waker) {
    let c = Arc::new(Counter(AtomicUsize::new(0)));
    let w = Waker::from(c.clone());
    (c, w)
}

fn wakes(c: &Counter) -> usize {
    c.0.load(Ordering::SeqCst)
}

fn poll_once<F: Future + Unpin>(f: &mut F, w: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(w))
}

// =====================================================================================================
// trust_core::lock
// =====================================================================================================

lock_ranks! {
    pub Ledger;
    pub Account;
    pub Audit;
}

/// Data whose `Debug` looks for the thread's key (and, if it gets one, tries to lock its own mutex).
struct PeeksForTheKey {
    got_key: Arc<AtomicUsize>,
    /// Weak: the mutex holds this, and a strong reference back would leak both (Miri reports it).
    me: Arc<std::sync::OnceLock<std::sync::Weak<Mutex<PeeksForTheKey>>>>,
}

impl fmt::Debug for PeeksForTheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(key) = ThreadKey::get() {
            self.got_key.fetch_add(1, Ordering::SeqCst);
            // With the key in hand, this thread could now *block* on any lock, while it holds its own
            // mutex without a key: the situation the key discipline exists to rule out.
            let me = self
                .me
                .get()
                .and_then(std::sync::Weak::upgrade)
                .expect("set before printing");
            assert!(
                me.try_lock(key).is_err(),
                "Debug runs while the mutex is held"
            );
        }
        f.write_str("PeeksForTheKey")
    }
}

/// `Mutex`'s `Debug` takes the lock without a key (a try, "so peeking without a key cannot deadlock")
/// and then runs the data's `Debug` under it. That is user code holding a lock: with the thread's key
/// free, it could `ThreadKey::get()` and block on other locks, holding one, waiting for another (see
/// `debug_of_two_mutexes_whose_data_lock_each_other_does_not_deadlock`). `Debug` now holds the key while it
/// peeks: the data's `Debug` gets none (it got one before).
#[test]
fn debug_of_a_mutex_runs_user_code_under_the_lock_with_the_key_held() {
    let got_key = Arc::new(AtomicUsize::new(0));
    let me = Arc::new(std::sync::OnceLock::new());
    let m = Arc::new(Mutex::new(PeeksForTheKey {
        got_key: got_key.clone(),
        me: me.clone(),
    }));
    assert!(me.set(Arc::downgrade(&m)).is_ok());
    let shown = format!("{m:?}");
    assert!(shown.contains("PeeksForTheKey"), "{shown}");
    assert_eq!(
        got_key.load(Ordering::SeqCst),
        0,
        "the data's Debug got this thread's ThreadKey while the thread held the mutex"
    );
    // Same for RwLock (its Debug takes a keyless *shared* lock).
    let got = Arc::new(AtomicUsize::new(0));
    struct Peek(Arc<AtomicUsize>);
    impl fmt::Debug for Peek {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            if ThreadKey::get().is_some() {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
            f.write_str("Peek")
        }
    }
    let rw = RwLock::new(Peek(got.clone()));
    let _ = format!("{rw:?}");
    assert_eq!(got.load(Ordering::SeqCst), 0, "RwLock's Debug too");
    // The mutex is free again afterwards (nothing leaked).
    let mut key = ThreadKey::get().unwrap();
    assert!(m.try_lock(&mut key).is_ok());
}

/// Two mutexes whose data's `Debug` would lock the other one (a plausible "print the peer too"): two threads
/// printing one each deadlocked (no `unsafe`, no `mem::forget`, every lock a `trust_core` lock), because the
/// data's `Debug` got the thread's key. Now `Debug` holds the key while it peeks: the data's `Debug` finds no
/// key, so it cannot block, and both threads finish.
#[test]
fn debug_of_two_mutexes_whose_data_lock_each_other_does_not_deadlock() {
    struct Side {
        other: usize,
    }
    static ARRIVED: AtomicUsize = AtomicUsize::new(0);
    static NO_KEY: AtomicUsize = AtomicUsize::new(0);
    static SIDES: [Mutex<Side>; 2] = [Mutex::new(Side { other: 1 }), Mutex::new(Side { other: 0 })];
    impl fmt::Debug for Side {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            // Both threads hold their own mutex (through Debug) before either locks the other.
            ARRIVED.fetch_add(1, Ordering::SeqCst);
            while ARRIVED.load(Ordering::SeqCst) < 2 {
                std::thread::yield_now();
            }
            match ThreadKey::get() {
                // Would block: the other thread holds it, and waits for this one's.
                Some(key) => drop(SIDES[self.other].lock(key)),
                None => _ = NO_KEY.fetch_add(1, Ordering::SeqCst),
            }
            f.write_str("Side")
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let threads: Vec<_> = SIDES
        .iter()
        .map(|side| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = format!("{side:?}");
                tx.send(()).unwrap();
            })
        })
        .collect();
    let done = (0..2)
        .filter(|_| rx.recv_timeout(Duration::from_secs(2)).is_ok())
        .count();
    // The threads stay blocked forever when this fails; they are leaked.
    assert_eq!(
        (done, NO_KEY.load(Ordering::SeqCst)),
        (2, 2),
        "both printing threads finish, neither data's Debug having a key"
    );
    threads.into_iter().for_each(|t| t.join().unwrap());
}

/// docs/lock.md: "A deadlock needs a thread that holds one lock and waits for another;
/// `trust_core::lock` makes that impossible to write by accident". A thread that holds a guard and joins
/// a scoped thread waits for whatever that thread waits for, and the scoped thread has its own key.
#[test]
#[ignore = "a documented limit (docs/lock.md, Limits: waiting for another thread while holding guards): it deadlocks"]
fn holding_a_guard_across_a_scoped_thread_that_locks_deadlocks() {
    let locks: Arc<[Mutex<u32>; 2]> = Arc::new([Mutex::new(0), Mutex::new(0)]);
    let arrived = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..2usize {
        let (locks, arrived, tx) = (locks.clone(), arrived.clone(), tx.clone());
        std::thread::spawn(move || {
            let mut key = ThreadKey::get().unwrap();
            let mut mine = locks[i].lock(&mut key);
            arrived.fetch_add(1, Ordering::SeqCst);
            while arrived.load(Ordering::SeqCst) < 2 {
                std::thread::yield_now();
            }
            std::thread::scope(|s| {
                s.spawn(|| {
                    let mut key = ThreadKey::get().expect("a scoped thread has its own key");
                    *locks[1 - i].lock(&mut key) += 1;
                });
            });
            *mine += 1;
            drop(mine);
            tx.send(i).unwrap();
        });
    }
    let done = (0..2)
        .filter(|_| rx.recv_timeout(Duration::from_secs(2)).is_ok())
        .count();
    assert_eq!(
        done, 2,
        "deadlock: each thread holds one lock and joins a thread waiting for the other"
    );
}

thread_local! {
    static LOCK_IN_TLS_DTOR: RefCell<Option<LocksInDrop>> = const { RefCell::new(None) };
}

static TLS_MUTEX: Mutex<u32> = Mutex::new(0);

struct LocksInDrop(Arc<AtomicUsize>);

impl Drop for LocksInDrop {
    fn drop(&mut self) {
        // Thread-local destructors run after the thread's main function: the key is free again (the
        // thread dropped it), and locking must work here like anywhere else.
        let mut key = ThreadKey::get().expect("no key is out at thread exit");
        assert!(ThreadKey::get().is_none());
        *TLS_MUTEX.lock(&mut key) += 1;
        let (g,) = lock_all!(&mut key, TLS_MUTEX);
        self.0.fetch_add(*g as usize, Ordering::SeqCst);
    }
}

#[test]
fn a_thread_local_destructor_takes_the_key_and_locks() {
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    std::thread::spawn(move || {
        let key = ThreadKey::get().unwrap();
        LOCK_IN_TLS_DTOR.with(|d| *d.borrow_mut() = Some(LocksInDrop(s)));
        drop(key);
    })
    .join()
    .expect("the thread-local destructor must not panic");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert!(!TLS_MUTEX.is_locked());
}

#[test]
fn a_forgotten_key_is_gone_for_that_thread_only() {
    let r = std::thread::spawn(|| {
        std::mem::forget(ThreadKey::get().unwrap());
        (0..3).all(|_| ThreadKey::get().is_none())
    })
    .join()
    .unwrap();
    assert!(
        r,
        "a forgotten key must stay out for the rest of the thread"
    );
    // Other threads (and this one) are unaffected.
    let other = std::thread::spawn(|| ThreadKey::get().is_some())
        .join()
        .unwrap();
    assert!(other);
    assert!(ThreadKey::get().is_some());
}

/// A panic two nest levels deep while the key was taken by value inside the closure: every guard is
/// released and the key is back.
#[test]
fn panic_two_nest_levels_deep_releases_everything_and_returns_the_key() {
    let ledger: Mutex<Vec<u32>, Ledger> = Mutex::ranked(vec![]);
    let accounts: [Mutex<i64, Account>; 3] =
        [Mutex::ranked(10), Mutex::ranked(20), Mutex::ranked(30)];
    let audit: RwLock<u32, Audit> = RwLock::ranked(0);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut key = ThreadKey::get().unwrap();
        let (mut log, mut k1) = lock_all!(&mut key, ledger; nest);
        let (mut a, mut b, mut k2) = lock_all!(&mut k1, accounts[2], accounts[0]; nest);
        let (mut n,) = lock_all!(&mut k2, audit);
        *a -= 5;
        *b += 5;
        log.push(5);
        *n += 1;
        assert!(ThreadKey::get().is_none());
        panic!("deep");
    }));
    assert_eq!(panic_message(r.unwrap_err()), "deep");
    assert!(!ledger.is_locked() && !audit.is_locked());
    assert!(accounts.iter().all(|m| !m.is_locked()));
    let mut key = ThreadKey::get().expect("the key came back");
    let (log, a0, a1, a2, n) =
        lock_all!(&mut key, ledger, accounts[0], accounts[1], accounts[2], read audit);
    assert_eq!(
        ((*log).clone(), *a0, *a1, *a2, *n),
        (vec![5], 15, 20, 25, 1)
    );
}

/// The same lock through `Arc` clones, `Box<&_>`, `&&_` and a read/read pair: each is a duplicate at
/// run time, positions exact, nothing left locked; `lock_all!`'s panic message exact.
#[test]
fn duplicates_through_arc_box_and_double_references() {
    let mut key = ThreadKey::get().unwrap();
    let m = Arc::new(Mutex::new(1u32));
    let m2 = m.clone();
    let other = Mutex::new(2u32);
    assert_eq!(
        try_lock_all!(&mut key, other, m, m2).err(),
        Some(LockAllError::Duplicate {
            first: 1,
            second: 2
        })
    );
    let plain = Mutex::new(3u32);
    let r: &Mutex<u32> = &plain;
    let rr: &&Mutex<u32> = &r;
    let boxed: Box<&Mutex<u32>> = Box::new(&plain);
    assert_eq!(
        try_lock_all!(&mut key, *rr, other, boxed).err(),
        Some(LockAllError::Duplicate {
            first: 0,
            second: 2
        })
    );
    let rw = Arc::new(RwLock::new(0u8));
    let rw2 = rw.clone();
    assert_eq!(
        try_lock_all!(&mut key, read rw, read rw2).err(),
        Some(LockAllError::Duplicate {
            first: 0,
            second: 1
        })
    );
    let msg = panic_message(
        catch_unwind(AssertUnwindSafe(|| {
            let _g = lock_all!(&mut key, m2, other, m);
        }))
        .unwrap_err(),
    );
    assert_eq!(
        msg,
        "lock_all!: locks #1 and #3 (counting from 1 after the key) are the same lock; a thread would \
         wait for itself forever: pass each lock once"
    );
    assert!(!m.is_locked() && !other.is_locked() && !plain.is_locked() && !rw.is_locked());
    // And the display of each error, word for word.
    assert_eq!(
        LockAllError::WouldBlock.to_string(),
        "a lock was held elsewhere, so nothing was taken (try again, or use `lock_all!` to wait)"
    );
}

/// Children that share a lock through nesting (a tuple inside a tuple, an array inside a tuple, a
/// `Vec` of pairs, a `Poisonable` and one part of its child) are refused by every checking constructor.
#[test]
fn collections_whose_parts_share_a_lock_are_refused() {
    let (a, b, c) = (Mutex::new(1), Mutex::new(2), RwLock::new(3));
    assert!(LockCollection::try_new(((&a, &b), [&c], (&b,))).is_none());
    assert!(RetryingLockCollection::try_new(vec![(&a, &c), (&b, &c)]).is_none());
    let nested = ((&a, (&b, [&c])), vec![&a]);
    assert!(RefLockCollection::try_new(&nested).is_none());
    let p = Poisonable::new((Mutex::new(10), Mutex::new(20)));
    assert!(LockCollection::try_new((&p, &p.child().1)).is_none());
    assert!(RetryingLockCollection::try_new((&p.child().0, &p)).is_none());
    // Distinct: accepted, and a lock is really taken once.
    let ok = LockCollection::try_new(((&a, &b), [&c])).expect("distinct");
    let mut key = ThreadKey::get().unwrap();
    let g = ok.lock(&mut key);
    assert!(a.is_locked() && b.is_locked() && c.is_locked());
    assert_eq!(*(g.0).0 + *(g.0).1 + *g.1[0], 6);
    drop(g);
    assert!(!a.is_locked() && !b.is_locked() && !c.is_locked());
}

/// A generic helper bounded by `LockAfter<K::Held>` works with a bare key and with a nested key, and the
/// duplicate check still runs one level down.
fn transfer<K: LockKey>(
    key: &mut K,
    from: &Mutex<i64, Account>,
    to: &Mutex<i64, Account>,
    amount: i64,
) -> Result<(), LockAllError>
where
    Account: LockAfter<K::Held>,
{
    let (mut f, mut t) = try_lock_all!(&mut *key, from, to)?;
    *f -= amount;
    *t += amount;
    Ok(())
}

#[test]
fn ranks_through_a_generic_helper_and_duplicates_one_level_down() {
    let ledger: Mutex<u32, Ledger> = Mutex::ranked(0);
    let accounts: Vec<Mutex<i64, Account>> = (0..4).map(|_| Mutex::ranked(100)).collect();
    let mut key = ThreadKey::get().unwrap();
    transfer(&mut key, &accounts[0], &accounts[1], 10).unwrap();
    {
        let (mut n, mut nested) = lock_all!(&mut key, ledger; nest);
        transfer(&mut nested, &accounts[2], &accounts[3], 7).unwrap();
        let (i, j) = (std::hint::black_box(1), std::hint::black_box(1));
        assert_eq!(
            transfer(&mut nested, &accounts[i], &accounts[j], 1),
            Err(LockAllError::Duplicate {
                first: 0,
                second: 1
            })
        );
        *n += 1;
        assert!(ledger.is_locked());
        assert!(accounts.iter().all(|m| !m.is_locked()));
    }
    let sum: i64 = accounts.iter().map(|m| *m.lock(&mut key)).sum();
    assert_eq!(sum, 400);
    assert_eq!(*accounts[3].lock(&mut key), 107);
    assert_eq!(*ledger.lock(&mut key), 1);
}

/// Opt-in poisoning, end to end: a panic on another thread under a write guard poisons; `try_lock`
/// reports the poison (not `WouldBlock`) and carries the data; `PoisonGuard::unlock` gives the key
/// back, and a panic after `unlock` does not poison; `into_inner` reports it too.
#[test]
fn poisoning_across_threads_try_lock_and_unlock() {
    let p = Arc::new(Poisonable::new(Mutex::new(0u32)));
    let p2 = p.clone();
    let r = std::thread::spawn(move || {
        let mut key = ThreadKey::get().unwrap();
        let mut g = p2.lock(&mut key).unwrap();
        **g = 41;
        panic!("writer died");
    })
    .join();
    assert_eq!(panic_message(r.unwrap_err()), "writer died");
    assert!(p.is_poisoned());
    let mut key = ThreadKey::get().unwrap();
    match p.try_lock(&mut key) {
        Ok(Err(e)) => {
            assert_eq!(
                e.to_string(),
                "poisoned lock: another thread panicked while holding it"
            );
            let mut g = e.into_inner();
            assert_eq!(**g, 41);
            **g = 42;
        }
        Ok(Ok(_)) => panic!("poison not reported by try_lock"),
        Err(_) => panic!("try_lock reported WouldBlock on a free lock"),
    }
    p.clear_poison();
    assert!(
        ThreadKey::get().is_none(),
        "the key is out (held by `key` above)"
    );
    drop(key);
    // unlock hands the key back; a panic after that is not under the lock.
    let r = catch_unwind(AssertUnwindSafe(|| {
        let key = ThreadKey::get().unwrap();
        let g = p.lock(key).unwrap();
        let key = PoisonGuard::unlock(g);
        drop(key);
        panic!("after unlock");
    }));
    assert_eq!(panic_message(r.unwrap_err()), "after unlock");
    assert!(!p.is_poisoned(), "a panic after unlock poisoned the lock");
    let p = Arc::into_inner(p).unwrap();
    assert_eq!(p.into_inner().ok(), Some(42));
}

/// A `try_lock` spinner does not starve a blocking locker (parking_lot's eventual fairness), and every
/// increment of both is counted.
#[test]
fn a_try_lock_spinner_does_not_starve_a_blocking_locker() {
    let n = if SMALL { 20 } else { 2_000 };
    let m = Mutex::new((0u64, 0u64));
    let stop = AtomicBool::new(false);
    let spins = std::thread::scope(|s| {
        let spinner = s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            let mut mine = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut g) = m.try_lock(&mut key) {
                    g.0 += 1;
                    mine += 1;
                }
            }
            mine
        });
        let blocker = s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            for _ in 0..n {
                m.lock(&mut key).1 += 1;
            }
        });
        blocker.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap()
    });
    let (s, b) = m.into_inner();
    assert_eq!((s, b), (spins, n));
}

/// `try_lock_all!` with a write of an RwLock another thread reads: `WouldBlock`, and the other lock
/// of the call (taken first or not) is not left held; a read of it succeeds.
#[test]
fn try_lock_all_against_a_foreign_reader() {
    let rw = RwLock::new(5u32);
    let m = Mutex::new(0u32);
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let rw_ref = &rw;
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut key = ThreadKey::get().unwrap();
            let _r = rw_ref.read(&mut key);
            tx.send(()).unwrap();
            done_rx.recv().unwrap();
        });
        rx.recv().unwrap();
        let mut key = ThreadKey::get().unwrap();
        assert_eq!(
            try_lock_all!(&mut key, m, rw).err(),
            Some(LockAllError::WouldBlock)
        );
        assert!(!m.is_locked());
        {
            let (mut g, r) = try_lock_all!(&mut key, m, read rw).expect("readers share");
            *g += *r;
        }
        done_tx.send(()).unwrap();
    });
    assert_eq!(m.into_inner(), 5);
}

// =====================================================================================================
// trust_core::interval
// =====================================================================================================

/// A lock of `usize::MAX` zero-sized elements: ranges touching `usize::MAX` work, conflict exactly, and
/// the ones that overflow are refused with the documented messages.
#[test]
fn huge_ranges_on_a_lock_of_usize_max_zero_sized_elements() {
    let lock = IntervalRwLock::new([(); usize::MAX]);
    assert_eq!(lock.len(), usize::MAX);
    let top = lock.write(usize::MAX - 1..);
    assert_eq!((top.len(), top.range()), (1, usize::MAX - 1..usize::MAX));
    let rest = lock.read(..usize::MAX - 1);
    assert_eq!(rest.len(), usize::MAX - 1);
    assert!(lock.try_read(..).is_err());
    assert!(lock.try_write(usize::MAX - 2..usize::MAX - 1).is_err());
    assert!(lock.try_read(usize::MAX - 2..=usize::MAX - 2).is_ok());
    assert_eq!(
        lock.try_write(usize::MAX..).unwrap().len(),
        0,
        "empty at the end"
    );
    assert_eq!((lock.held(), lock.queued()), (2, 0));
    drop((top, rest));
    assert_eq!(lock.write(..).len(), usize::MAX);
    let m = panic_message(
        catch_unwind(AssertUnwindSafe(|| drop(lock.read(..=usize::MAX)))).unwrap_err(),
    );
    assert_eq!(
        m,
        format!(
            "IntervalRwLock: range ..={} is out of bounds for len {}; borrow a range within 0..{}",
            usize::MAX,
            usize::MAX,
            usize::MAX
        )
    );
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

#[test]
#[allow(clippy::reversed_empty_ranges)]
fn reversed_ranges_written_every_way_give_exact_messages() {
    let lock = IntervalRwLock::new(vec![0u8; 10]);
    let msg = |f: &dyn Fn()| panic_message(catch_unwind(AssertUnwindSafe(f)).unwrap_err());
    assert_eq!(
        msg(&|| drop(lock.read((Bound::Excluded(5), Bound::Excluded(5))))),
        "IntervalRwLock: range (excluded 5)..5 starts after it ends (start 6 > end 5); the lock has len 10"
    );
    assert_eq!(
        msg(&|| drop(lock.write(4..=2))),
        "IntervalRwLock: range 4..=2 starts after it ends (start 4 > end 3); the lock has len 10"
    );
    // Reversed *and* past the end: which message wins is the one for reversal.
    assert_eq!(
        msg(&|| drop(lock.write_async(20..15))),
        "IntervalRwLock: range 20..15 starts after it ends (start 20 > end 15); the lock has len 10"
    );
    // `(Excluded(4), Included(4))` is empty (5..5), not reversed.
    assert_eq!(
        lock.read((Bound::Excluded(4), Bound::Included(4))).range(),
        5..5
    );
    let m = IntervalMutex::new(vec![0u8; 3]);
    assert_eq!(
        msg(&|| drop(m.lock(2..1))),
        "IntervalMutex: range 2..1 starts after it ends (start 2 > end 1); the lock has len 3"
    );
    assert_eq!((lock.held(), lock.queued(), m.held()), (0, 0, 0));
}

/// A high-priority read overtakes a queued low-priority write and shares with the held read at once;
/// the write must then wait for *both* reads. If its blocker count missed the overtaker, it would be
/// granted over a live read guard.
#[test]
fn a_priority_reader_that_overtakes_a_writer_is_counted_by_it() {
    let lock = IntervalRwLock::new(vec![0u32; 10]);
    let (cw, w) = counter();
    let held = lock.read(0..10);
    let mut writer = lock.write_async(2..8);
    assert!(poll_once(&mut writer, &w).is_pending());
    let mut vip = lock.prioritized(5).read_async(4..6);
    let vip_guard = match poll_once(&mut vip, &w) {
        Poll::Ready(g) => g,
        Poll::Pending => {
            panic!("a priority read that only conflicts with a lower queued write must be granted")
        }
    };
    assert_eq!((lock.held(), lock.queued()), (2, 1));
    drop(held);
    assert_eq!(
        wakes(&cw),
        0,
        "the writer was woken while the priority read still holds 4..6"
    );
    assert!(poll_once(&mut writer, &w).is_pending());
    drop(vip_guard);
    assert_eq!(wakes(&cw), 1);
    let mut g = match poll_once(&mut writer, &w) {
        Poll::Ready(g) => g,
        Poll::Pending => panic!("woken but not granted"),
    };
    g.fill(7);
    drop(g);
    assert_eq!(lock.read(..).iter().sum::<u32>(), 42);
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

/// Priority inversion: a low-priority read holds; a high-priority write waits for it; medium-priority
/// readers that would share with the held read but conflict with the queued write must queue behind it
/// (they are of lower priority), while a read of higher priority than the write may pass.
#[test]
fn medium_priority_readers_do_not_starve_a_high_priority_writer() {
    let lock = IntervalRwLock::new(vec![0u8; 16]);
    let (cw, w) = counter();
    let low = lock.read(0..16);
    let mut high = lock.prioritized(10).write_async(0..8);
    assert!(poll_once(&mut high, &w).is_pending());
    let mut mediums: Vec<_> = (0..5)
        .map(|i| lock.prioritized(5).read_async(i..i + 4))
        .collect();
    for m in &mut mediums {
        assert!(
            poll_once(m, &w).is_pending(),
            "a medium read jumped the high write"
        );
    }
    assert!(
        lock.try_read(0..1).is_err(),
        "try_read jumped the queued write"
    );
    let mut top = lock.prioritized(11).read_async(6..10);
    assert!(
        matches!(poll_once(&mut top, &w), Poll::Ready(_)),
        "priority 11 passes the priority-10 write"
    );
    // `top` was dropped right after being granted (the guard in the Ready went out of scope).
    assert_eq!((lock.held(), lock.queued()), (1, 6));
    drop(low);
    assert_eq!(wakes(&cw), 1, "only the high write is woken");
    let hw = match poll_once(&mut high, &w) {
        Poll::Ready(g) => g,
        Poll::Pending => panic!("high write not granted"),
    };
    for m in &mut mediums {
        assert!(poll_once(m, &w).is_pending());
    }
    drop(hw);
    assert_eq!(wakes(&cw), 6);
    let granted = mediums
        .iter_mut()
        .map(|m| poll_once(m, &w))
        .filter(|p| p.is_ready())
        .count();
    assert_eq!(granted, 5);
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

/// A writer queued behind a read is not starved by a stream of later readers on threads: each later
/// reader waits, and sees the writer's value.
#[test]
fn later_blocking_readers_see_the_queued_writers_value() {
    let readers = if SMALL { 3 } else { 16 };
    let lock = IntervalRwLock::new(vec![0u32; 64]);
    let first = lock.read(0..64);
    std::thread::scope(|s| {
        let writer = s.spawn(|| lock.write(10..20).fill(9));
        while lock.queued() < 1 {
            std::thread::yield_now();
        }
        let hs: Vec<_> = (0..readers)
            .map(|i| {
                let lock = &lock;
                let h = s.spawn(move || lock.read(i..i + 15).iter().filter(|&&v| v == 9).count());
                while lock.queued() < 2 + i {
                    std::thread::yield_now();
                }
                h
            })
            .collect();
        // Readers that do not touch 10..20 never wait.
        assert!(lock.try_read(20..64).is_ok());
        drop(first);
        writer.join().unwrap();
        let seen: Vec<usize> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        let want: Vec<usize> = (0..readers)
            .map(|i| (i..i + 15).filter(|j| (10..20).contains(j)).count())
            .collect();
        assert_eq!(seen, want, "a later reader ran before the queued writer");
    });
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

/// A future polled with one waker, then with another that does not `will_wake` the first: the grant
/// wakes only the latest, exactly once; a future never polled records nothing.
#[test]
fn a_future_moved_between_wakers_wakes_only_the_latest() {
    let lock = IntervalRwLock::new(vec![0u8; 8]);
    let (c1, w1) = counter();
    let (c2, w2) = counter();
    let held = lock.write(..);
    let never = lock.write_async(..);
    let mut f = lock.read_async(2..4);
    assert!(poll_once(&mut f, &w1).is_pending());
    assert!(poll_once(&mut f, &w2).is_pending());
    assert!(poll_once(&mut f, &w2).is_pending());
    assert_eq!(
        (lock.held(), lock.queued()),
        (1, 1),
        "the unpolled future recorded something"
    );
    drop(never);
    drop(held);
    assert_eq!((wakes(&c1), wakes(&c2)), (0, 1));
    assert!(matches!(poll_once(&mut f, &w1), Poll::Ready(_)));
    let m = panic_message(
        catch_unwind(AssertUnwindSafe(|| poll_once(&mut f, &w1).is_ready())).unwrap_err(),
    );
    assert_eq!(m, "ReadFuture polled after it completed");
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    assert_eq!(lock.try_write(..).unwrap().len(), 8);
}

/// An `IntervalMutex` cancelled future in the middle of a chain of conflicting futures: the tail gets
/// it, in order, with exact wake counts.
#[test]
fn interval_mutex_chain_with_a_cancelled_middle() {
    let m = IntervalMutex::new(vec![0u32; 12]);
    let (c, w) = counter();
    let held = m.lock(0..4);
    let mut a = m.lock_async(2..6);
    let mut b = m.lock_async(5..9);
    let mut d = m.lock_async(8..12);
    for f in [&mut a, &mut b, &mut d] {
        assert!(poll_once(f, &w).is_pending());
    }
    drop(b); // a and d no longer conflict through anyone but themselves
    assert_eq!(wakes(&c), 1, "d waited only for b");
    let gd = match poll_once(&mut d, &w) {
        Poll::Ready(g) => g,
        Poll::Pending => panic!("d stranded"),
    };
    drop(held);
    assert_eq!(wakes(&c), 2);
    let ga = match poll_once(&mut a, &w) {
        Poll::Ready(g) => g,
        Poll::Pending => panic!("a stranded"),
    };
    assert_eq!((ga.range(), gd.range()), (2..6, 8..12));
    drop((ga, gd));
    assert_eq!((m.held(), m.queued()), (0, 0));
}

// =====================================================================================================
// trust_core::ghost
// =====================================================================================================

/// The last element of a Chase-Lev deque raced by the owner's `pop_bottom` and a thief's `steal`, round
/// after round, in lock step: exactly one of them gets it every time.
#[test]
fn deque_last_element_race_has_exactly_one_winner_every_round() {
    let rounds = if SMALL { 10 } else { 3_000 };
    GhostToken::new(|_t| {
        let owner = GhostChaseLevDeque::new(2);
        let thief = owner.stealer();
        let barrier = Barrier::new(2);
        let stolen = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let mut got = Vec::new();
                for _ in 0..rounds {
                    barrier.wait();
                    if let Some(v) = thief.steal() {
                        got.push(v);
                    }
                    barrier.wait();
                }
                got
            });
            let mut popped = Vec::new();
            for r in 0..rounds {
                owner.push_bottom(r).unwrap();
                barrier.wait();
                if let Some(v) = owner.pop_bottom() {
                    popped.push(v);
                }
                barrier.wait();
                assert!(owner.is_empty(), "round {r}: element left behind");
            }
            let stolen = h.join().unwrap();
            let mut all: Vec<usize> = popped.iter().chain(&stolen).copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..rounds).collect::<Vec<_>>(), "lost or duplicated");
            stolen.len()
        });
        assert!(stolen <= rounds);
        assert_eq!(
            (owner.len(), owner.pop_bottom(), thief.steal()),
            (0, None, None)
        );
    });
}

/// The branded atomics' read-modify-write operations under contention, with exact results.
#[test]
fn branded_atomics_read_modify_write_exact_under_contention() {
    let (threads, per) = if SMALL { (3usize, 20u64) } else { (4, 20_000) };
    GhostToken::new(|_t| {
        let max = GhostAtomicU64::new(0);
        let min = GhostAtomicU64::new(u64::MAX);
        let xor = GhostAtomicU64::new(0xdead_beef);
        let toggles = GhostAtomicBool::new(true);
        let winner = GhostAtomicU32::new(0);
        let wins = AtomicUsize::new(0);
        let down = GhostAtomicU32::new(0);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (max, min, xor, toggles, winner, wins, down) =
                    (&max, &min, &xor, &toggles, &winner, &wins, &down);
                s.spawn(move || {
                    for i in 0..per {
                        let v = i * threads as u64 + t as u64 + 1;
                        max.fetch_max(v, Ordering::AcqRel);
                        min.fetch_min(v, Ordering::AcqRel);
                        xor.fetch_xor(v, Ordering::AcqRel);
                        xor.fetch_xor(v, Ordering::AcqRel);
                        toggles.fetch_not(Ordering::AcqRel);
                        down.fetch_sub(1, Ordering::AcqRel);
                    }
                    if winner
                        .compare_exchange(0, t as u32 + 1, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        wins.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        let total = threads as u64 * per;
        assert_eq!(max.into_inner(), total);
        assert_eq!(min.into_inner(), 1);
        assert_eq!(xor.into_inner(), 0xdead_beef);
        assert_eq!(toggles.into_inner(), total.is_multiple_of(2));
        assert_eq!(wins.load(Ordering::Relaxed), 1);
        assert!((1..=threads as u32).contains(&winner.into_inner()));
        assert_eq!(
            down.into_inner(),
            0u32.wrapping_sub(total as u32),
            "fetch_sub wraps like std"
        );
    });
}

#[test]
fn bitset_out_of_range_indices_give_the_documented_message() {
    GhostToken::new(|_t| {
        let b = GhostAtomicBitset::new(100);
        let msg =
            |f: &dyn Fn() -> bool| panic_message(catch_unwind(AssertUnwindSafe(f)).unwrap_err());
        assert_eq!(
            msg(&|| b.test_and_set(100)),
            "GhostAtomicBitset: bit index 100 is out of range for a bitset of 100 bits"
        );
        assert_eq!(
            msg(&|| b.test(usize::MAX)),
            format!(
                "GhostAtomicBitset: bit index {} is out of range for a bitset of 100 bits",
                usize::MAX
            )
        );
        assert_eq!(
            msg(&|| b.reset(128)),
            "GhostAtomicBitset: bit index 128 is out of range for a bitset of 100 bits"
        );
        // Bits 100..128 live in the last word but are never reachable: nothing was set.
        assert_eq!((b.count_ones(), b.iter().count()), (0, 0));
        assert!(!b.test_and_set(99));
        assert_eq!(b.iter().collect::<Vec<_>>(), [99]);
        let empty = GhostAtomicBitset::new(0);
        assert_eq!(
            msg(&|| empty.test(0)),
            "GhostAtomicBitset: bit index 0 is out of range for a bitset of 0 bits"
        );
    });
}

/// Once and lazy cells after failures, word for word.
#[test]
fn once_and_lazy_cells_exact_results_after_failures() {
    GhostToken::new(|mut token| {
        let once: GhostOnceCell<String> = GhostOnceCell::new();
        let r: Result<&String, &str> = once.get_or_try_init(&mut token, || Err("nope"));
        assert_eq!(r, Err("nope"));
        assert_eq!(once.get(&token), None);
        assert_eq!(
            once.try_insert("a".into(), &mut token),
            Ok(&"a".to_string())
        );
        assert_eq!(
            once.try_insert("b".into(), &mut token),
            Err((&"a".to_string(), "b".to_string()))
        );
        let lazy: GhostLazyCell<u8, _> = GhostLazyCell::new(|| -> u8 { panic!("first") });
        let m =
            panic_message(catch_unwind(AssertUnwindSafe(|| *lazy.force(&mut token))).unwrap_err());
        assert_eq!(m, "first");
        let ll: GhostLazyLock<u8, _> = GhostLazyLock::new(|| -> u8 { panic!("init") });
        let t = &token;
        assert_eq!(
            panic_message(catch_unwind(AssertUnwindSafe(|| *ll.force(t))).unwrap_err()),
            "init"
        );
        let m = panic_message(catch_unwind(AssertUnwindSafe(|| *ll.force(t))).unwrap_err());
        assert_eq!(
            m,
            "GhostLazyLock::force: the initialiser panicked on an earlier call, so the value can never be \
             computed; catch that panic where it happened, or build a new GhostLazyLock"
        );
        assert_eq!(ll.get(t), None);
        assert!(matches!(ll.into_inner(), Err(None)));
    });
}

/// Multi-borrows far apart in long slices and wide tuples: the positions of the reported pair are exact,
/// and nothing is borrowed on error.
#[test]
fn multi_borrow_reports_exact_positions_in_long_slices_and_wide_tuples() {
    GhostToken::new(|mut token| {
        let cells: Vec<GhostCell<u32>> = (0..64).map(GhostCell::new).collect();
        let mut refs: Vec<&GhostCell<u32>> = cells.iter().collect();
        refs[42] = &cells[7];
        let e = refs[..].borrow_mut(&mut token).unwrap_err();
        assert_eq!((e.first(), e.second()), (7, 42));
        refs[42] = &cells[42];
        let all = refs[..].borrow_mut(&mut token).unwrap();
        for r in all {
            *r += 1;
        }
        assert_eq!(
            cells.iter().map(|c| *c.borrow(&token)).sum::<u32>(),
            (1..=64).sum()
        );
        let c = &cells;
        let e = (
            &c[0], &c[1], &c[2], &c[3], &c[4], &c[5], &c[6], &c[7], &c[8], &c[9], &c[10], &c[3],
        )
            .borrow_mut(&mut token)
            .unwrap_err();
        assert_eq!((e.first(), e.second()), (3, 11));
        assert_eq!(
            e.to_string(),
            "GhostCell arguments #3 and #11 of borrow_mut are the same cell (or overlap in memory), so they \
             cannot both be borrowed mutably; pass distinct cells, or borrow them one after the other"
        );
        // An array cell and the cells of its elements.
        let mut arr = [1u8, 2, 3, 4];
        let whole = GhostCell::from_mut(&mut arr);
        let parts = whole.as_array_of_cells();
        let e = [&parts[3], &parts[0], &parts[3]]
            .borrow_mut(&mut token)
            .unwrap_err();
        assert_eq!((e.first(), e.second()), (0, 2));
        let (w, p) = (&*whole, &parts[1]);
        assert!((w, p).borrow_mut(&mut token).is_err());
        *parts[1].borrow_mut(&mut token) = 20;
        assert_eq!(*whole.borrow(&token), [1, 20, 3, 4]);
    });
}

thread_local! {
    static QUEUE_IN_TLS_DTOR: RefCell<Option<QueuesInDrop>> = const { RefCell::new(None) };
}

struct QueuesInDrop(
    Arc<IntervalRwLock<u32>>,
    Arc<AtomicBool>,
    std::sync::mpsc::Sender<u32>,
);

impl Drop for QueuesInDrop {
    fn drop(&mut self) {
        // Runs after the thread's main function: a blocking request that must queue (another thread
        // holds the range) parks this thread and is woken by the release, like anywhere else.
        self.1.store(true, Ordering::SeqCst);
        let g = self.0.write(0..4);
        self.2.send(g[0]).unwrap();
    }
}

#[test]
fn a_blocking_interval_request_queues_from_a_thread_local_destructor() {
    let lock = Arc::new(IntervalRwLock::new(vec![0u32; 8]));
    let about_to_queue = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut held = lock.write(..);
    held[0] = 5;
    let (l, a) = (lock.clone(), about_to_queue.clone());
    let t = std::thread::spawn(move || {
        QUEUE_IN_TLS_DTOR.with(|d| *d.borrow_mut() = Some(QueuesInDrop(l, a, tx)));
    });
    while !about_to_queue.load(Ordering::SeqCst) || lock.queued() == 0 {
        std::thread::yield_now();
    }
    assert_eq!((lock.held(), lock.queued()), (1, 1));
    drop(held);
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(5));
    t.join().expect("the destructor must not panic");
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}
