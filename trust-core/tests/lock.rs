//! `trust_core::lock`: keys, single locks, `lock_all!` (order, duplicates, nesting, `try`), the four
//! collections, and what a panic leaves behind. Exact values throughout.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use lock_api::{GuardNoSend, RawMutex as _};
use trust_core::lock::{
    LockAllError, LockCollection, LockGuard, Mutex, OwnedLockCollection, PoisonGuard, Poisonable,
    Rank, RefLockCollection, RetryingLockCollection, RwLock, ThreadKey, Unranked,
};
use trust_core::{lock_all, lock_ranks, try_lock_all};

lock_ranks! {
    /// Taken first.
    pub Low;
    pub Mid;
    pub High;
}

// ---------------------------------------------------------------------------------------------
// A raw mutex that records, per thread, the order in which locks are acquired.

thread_local! {
    static ACQUIRED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

struct RecordingRawMutex(parking_lot::RawMutex);

// SAFETY: every operation is forwarded to parking_lot's raw mutex; recording only reads our address.
unsafe impl lock_api::RawMutex for RecordingRawMutex {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = RecordingRawMutex(parking_lot::RawMutex::INIT);
    type GuardMarker = GuardNoSend;

    fn lock(&self) {
        self.0.lock();
        ACQUIRED.with(|log| log.borrow_mut().push(self as *const Self as usize));
    }

    fn try_lock(&self) -> bool {
        let taken = self.0.try_lock();
        if taken {
            ACQUIRED.with(|log| log.borrow_mut().push(self as *const Self as usize));
        }
        taken
    }

    unsafe fn unlock(&self) {
        // SAFETY: forwarded: the caller holds the lock.
        unsafe { self.0.unlock() }
    }
}

type Recorded<R> = Mutex<u32, R, RecordingRawMutex>;

fn recorded<R: Rank>(value: u32) -> Recorded<R> {
    Mutex::from_raw(RecordingRawMutex::INIT, value)
}

fn take_log() -> Vec<usize> {
    ACQUIRED.with(|log| std::mem::take(&mut *log.borrow_mut()))
}

fn addr<T>(value: &T) -> usize {
    value as *const T as usize
}

// ---------------------------------------------------------------------------------------------
// Keys

#[test]
fn one_key_per_thread_and_dropping_it_gives_it_back() {
    let key = ThreadKey::get().expect("first key");
    assert!(ThreadKey::get().is_none());
    // Another thread has its own key.
    assert!(thread::spawn(|| ThreadKey::get().is_some()).join().unwrap());
    drop(key);
    assert!(ThreadKey::get().is_some());
}

#[test]
fn a_refused_key_request_does_not_hand_out_a_second_key() {
    let first = ThreadKey::get().expect("the thread's key");
    assert!(ThreadKey::get().is_none());
    // A refused request must leave the key taken: two keys on one thread could deadlock in safe code.
    assert!(ThreadKey::get().is_none());
    drop(first);
    assert!(ThreadKey::get().is_some());
}

#[test]
fn a_forgotten_guard_keeps_a_by_value_key_out() {
    let m = Mutex::new(1);
    let guard = m.lock(ThreadKey::get().unwrap());
    std::mem::forget(guard);
    assert!(ThreadKey::get().is_none());
    assert!(m.is_locked());
}

// ---------------------------------------------------------------------------------------------
// Single locks

#[test]
fn mutex_by_value_and_by_mut_key() {
    let m = Mutex::new(10);
    let mut key = ThreadKey::get().unwrap();
    *m.lock(&mut key) += 1;
    let mut guard = m.lock(key);
    *guard += 1;
    assert!(ThreadKey::get().is_none());
    let key = Mutex::unlock(guard);
    assert_eq!(m.scoped_lock(key, |v| *v), 12);
    // `scoped_lock` took the key by value and dropped it at the end.
    let mut key = ThreadKey::get().unwrap();
    assert_eq!(m.scoped_try_lock(&mut key, |v| *v * 2).ok(), Some(24));
    let mut m = m;
    *m.get_mut() += 1;
    assert_eq!(m.into_inner(), 13);
}

#[test]
fn try_lock_gives_the_key_back_while_another_thread_holds_the_lock() {
    let m = Arc::new(Mutex::new(0));
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let m = Arc::clone(&m);
        thread::spawn(move || {
            let mut key = ThreadKey::get().unwrap();
            let _guard = m.lock(&mut key);
            held_tx.send(()).unwrap();
            done_rx.recv().unwrap();
        })
    };
    held_rx.recv().unwrap();
    let mut key = ThreadKey::get().unwrap();
    assert!(m.try_lock(&mut key).is_err());
    assert!(m.scoped_try_lock(&mut key, |_| ()).is_err());
    assert_eq!(format!("{m:?}"), "Mutex { data: <locked>, .. }");
    done_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(format!("{m:?}"), "Mutex { data: 0, .. }");
    assert!(m.try_lock(&mut key).is_ok());
}

#[test]
fn rwlock_readers_share_and_writers_exclude() {
    let lock = RwLock::new(String::from("a"));
    let mut key = ThreadKey::get().unwrap();
    lock.write(&mut key).push('b');
    {
        let reader = lock.read(&mut key);
        assert_eq!(&*reader, "ab");
        // Another thread can read at the same time, but not write.
        thread::scope(|s| {
            s.spawn(|| {
                let mut key = ThreadKey::get().unwrap();
                assert_eq!(lock.try_read(&mut key).map(|g| g.len()).ok(), Some(2));
                assert!(lock.try_write(&mut key).is_err());
            });
        });
    }
    assert_eq!(lock.scoped_write(&mut key, |s| s.len()), 2);
    assert_eq!(lock.scoped_read(&mut key, |s| s.clone()), "ab");
    let guard = lock.read(key);
    let key = RwLock::unlock_read(guard);
    let guard = lock.write(key);
    let _key = RwLock::unlock_write(guard);
    assert_eq!(format!("{lock:?}"), "RwLock { data: \"ab\", .. }");
    assert_eq!(lock.into_inner(), "ab");
}

// ---------------------------------------------------------------------------------------------
// lock_all!

#[test]
fn lock_all_returns_guards_in_argument_order() {
    let mut key = ThreadKey::get().unwrap();
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
    let (gc, ga) = lock_all!(&mut key, write c, a);
    assert_eq!((gc.as_str(), *ga), ("three", 3));
}

#[test]
fn ranked_locks_are_taken_in_rank_order_whatever_the_argument_order() {
    let low: Recorded<Low> = recorded(1);
    let mid: Recorded<Mid> = recorded(2);
    let high: Recorded<High> = recorded(3);
    let unranked: Recorded<Unranked> = recorded(0);
    let mut key = ThreadKey::get().unwrap();
    take_log();
    {
        let (h, u, l, m) = lock_all!(&mut key, high, unranked, low, mid);
        assert_eq!((*h, *u, *l, *m), (3, 0, 1, 2));
    }
    assert_eq!(
        take_log(),
        [addr(&unranked), addr(&low), addr(&mid), addr(&high)]
    );
}

#[test]
fn equal_ranks_are_taken_in_address_order() {
    let locks: [Recorded<Mid>; 4] = [recorded(0), recorded(1), recorded(2), recorded(3)];
    let low: Recorded<Low> = recorded(9);
    let mut key = ThreadKey::get().unwrap();
    take_log();
    {
        let _guards = lock_all!(&mut key, locks[3], locks[1], low, locks[2], locks[0]);
    }
    let mut expected = vec![addr(&low)];
    expected.extend(locks.iter().map(addr)); // array elements sit at increasing addresses
    assert_eq!(take_log(), expected);
}

#[test]
fn the_same_lock_twice_at_run_time_is_an_error() {
    let accounts = [Mutex::new(1), Mutex::new(2)];
    let (i, j) = (1, 1);
    let mut key = ThreadKey::get().unwrap();
    assert_eq!(
        try_lock_all!(&mut key, accounts[0], accounts[i], accounts[j]).err(),
        Some(LockAllError::Duplicate {
            first: 1,
            second: 2
        })
    );
    // A reference to the same lock is the same lock.
    let alias = &accounts[0];
    assert!(matches!(
        try_lock_all!(&mut key, alias, accounts[0]),
        Err(LockAllError::Duplicate { .. })
    ));
    let panic = catch_unwind(AssertUnwindSafe(|| {
        let _guards = lock_all!(&mut key, accounts[i], accounts[j]);
    }))
    .unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert_eq!(
        message,
        "lock_all!: locks #1 and #2 (counting from 1 after the key) are the same lock; a thread \
         would wait for itself forever: pass each lock once"
    );
    // Nothing was taken and the key still works.
    assert_eq!(*accounts[1].lock(&mut key), 2);
}

#[test]
fn try_lock_all_takes_nothing_when_one_lock_is_busy() {
    let (a, b, c) = (Mutex::new(1), Mutex::new(2), Mutex::new(3));
    let mut key = ThreadKey::get().unwrap();
    let (held, done) = (Barrier::new(2), Barrier::new(2));
    thread::scope(|s| {
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            let _b = b.lock(&mut key);
            held.wait();
            done.wait();
        });
        held.wait();
        assert_eq!(
            try_lock_all!(&mut key, a, b, c).err(),
            Some(LockAllError::WouldBlock)
        );
        assert!(!a.is_locked() && !c.is_locked());
        done.wait();
    });
    let (ga, gb, gc) = try_lock_all!(&mut key, a, b, c).unwrap();
    assert_eq!(*ga + *gb + *gc, 6);
}

#[test]
fn nesting_goes_up_one_rank_level_at_a_time() {
    let config = RwLock::new(7);
    let ledger: Mutex<Vec<u32>, Low> = Mutex::ranked(Vec::new());
    let accounts: [Mutex<u32, Mid>; 3] = [Mutex::ranked(10), Mutex::ranked(20), Mutex::ranked(30)];
    let audit: RwLock<u32, High> = RwLock::ranked(0);

    let mut key = ThreadKey::get().unwrap();
    for round in 0..3 {
        let (cfg, mut k1) = lock_all!(&mut key, read config; nest);
        let (mut log, mut k2) = lock_all!(&mut k1, ledger; nest);
        let (from, to) = (round, (round + 1) % 3);
        let (mut a, mut b, mut k3) = lock_all!(&mut k2, accounts[from], accounts[to]; nest);
        *a -= *cfg;
        *b += *cfg;
        log.push(*a);
        let (mut n,) = try_lock_all!(&mut k3, audit).unwrap();
        *n += 1;
    }
    let values: Vec<u32> = accounts.into_iter().map(Mutex::into_inner).collect();
    assert_eq!(values, [10, 20, 30]);
    assert_eq!(ledger.into_inner(), [3, 20, 30]);
    assert_eq!(audit.into_inner(), 3);
    let nested = {
        let (_config, k) = lock_all!(&mut key, config; nest);
        format!("{k:?}")
    };
    assert_eq!(nested, "NestedKey<trust_core::lock::rank::Unranked>");
}

#[test]
fn read_and_write_are_only_keywords_before_another_expression() {
    let read = RwLock::new(1);
    let write = Mutex::new(2);
    let mut key = ThreadKey::get().unwrap();
    let (a, b) = lock_all!(&mut key, read, write);
    assert_eq!(*a + *b, 3);
    drop((a, b));
    let (a, b) = lock_all!(&mut key, read read, write write,);
    assert_eq!(*a + *b, 3);
}

#[test]
fn pointers_to_locks_are_locks() {
    let shared = Arc::new(Mutex::new(1));
    let boxed = Box::new(RwLock::new(2));
    let plain = Mutex::new(3);
    let by_ref = &plain;
    let mut key = ThreadKey::get().unwrap();
    let (a, b, c) = lock_all!(&mut key, shared, read boxed, by_ref);
    assert_eq!(*a + *b + *c, 6);
}

#[test]
fn eight_locks_at_once() {
    let locks: Vec<Mutex<usize>> = (0..8).map(Mutex::new).collect();
    let mut key = ThreadKey::get().unwrap();
    let (a, b, c, d, e, f, g, h) = lock_all!(
        &mut key, locks[7], locks[6], locks[5], locks[4], locks[3], locks[2], locks[1], locks[0]
    );
    assert_eq!([*a, *b, *c, *d, *e, *f, *g, *h], [7, 6, 5, 4, 3, 2, 1, 0]);
}

// ---------------------------------------------------------------------------------------------
// Collections

#[test]
fn lock_collection_constructors_and_duplicates() {
    let (a, b) = (Mutex::new(1), RwLock::new(2));
    assert!(LockCollection::try_new((&a, &b)).is_some());
    assert!(LockCollection::try_new((&a, &b, &a)).is_none());
    assert!(LockCollection::try_new(vec![&a, &a]).is_none());
    assert!(RefLockCollection::try_new(&(&b, &b)).is_none());
    assert!(RetryingLockCollection::try_new((&a, &a)).is_none());

    let mut key = ThreadKey::get().unwrap();
    let owned = LockCollection::new((Mutex::new(1), RwLock::new(String::from("x"))));
    {
        let mut guard = owned.lock(&mut key);
        *guard.0 += 1;
        guard.1.push('y');
    }
    assert_eq!(owned.child().0.scoped_lock(&mut key, |v| *v), 2);
    assert_eq!(owned.into_inner(), (2, String::from("xy")));

    let array = [Mutex::new(1), Mutex::new(2), Mutex::new(3)];
    let by_ref = LockCollection::new_ref(&array);
    let guard = by_ref.lock(key);
    assert_eq!(guard.iter().map(|g| **g).sum::<i32>(), 6);
    let key = LockGuard::unlock(guard);
    let _key = LockCollection::<&[Mutex<i32>; 3]>::unlock(by_ref.lock(key));
}

#[test]
fn every_collection_locks_reads_and_scopes() {
    let mut key = ThreadKey::get().unwrap();
    let locks = vec![RwLock::new(1), RwLock::new(2)];

    {
        let sorted = LockCollection::new_ref(&locks);
        assert_eq!(
            sorted.scoped_lock(&mut key, |g| {
                *g[0] += 10;
                *g[0] + *g[1]
            }),
            13
        );
        assert_eq!(sorted.scoped_read(&mut key, |g| *g[0]), 11);
        assert_eq!(sorted.read(&mut key).len(), 2);

        let borrowed = RefLockCollection::new(&locks);
        assert_eq!(*borrowed.try_read(&mut key).unwrap()[1], 2);
        assert_eq!(
            borrowed.scoped_try_lock(&mut key, |g| *g[1] * 2).ok(),
            Some(4)
        );

        let retrying = RetryingLockCollection::new_ref(&locks);
        *retrying.lock(&mut key)[1] += 1;
        assert_eq!(retrying.scoped_try_read(&mut key, |g| *g[1]).ok(), Some(3));
    }

    let mut owned = OwnedLockCollection::new(locks);
    assert_eq!(*owned.read(&mut key)[0], 11);
    *owned.get_mut()[1] = 5;
    assert_eq!(&*owned.into_inner(), [11, 5]);
}

#[test]
fn a_busy_collection_gives_the_key_back() {
    let (a, b) = (Mutex::new(1), Mutex::new(2));
    let both = LockCollection::try_new((&a, &b)).unwrap();
    let retrying = RetryingLockCollection::try_new((&b, &a)).unwrap();
    let mut key = ThreadKey::get().unwrap();
    let (held, done) = (Barrier::new(2), Barrier::new(2));
    thread::scope(|s| {
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            let _a = a.lock(&mut key);
            held.wait();
            done.wait();
        });
        held.wait();
        assert!(both.try_lock(&mut key).is_err());
        assert!(retrying.try_lock(&mut key).is_err());
        assert!(!b.is_locked(), "a failed try must release what it took");
        done.wait();
    });
    assert!(both.try_lock(&mut key).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Panics: no poisoning, locks released, key kept

#[test]
fn a_panic_under_lock_all_releases_everything_and_poisons_nothing() {
    let (a, b) = (Arc::new(Mutex::new(0)), Arc::new(RwLock::new(0)));
    let result = {
        let (a, b) = (Arc::clone(&a), Arc::clone(&b));
        thread::spawn(move || {
            let mut key = ThreadKey::get().unwrap();
            let (mut ga, mut gb) = lock_all!(&mut key, a, b);
            *ga = 1;
            *gb = 2;
            panic!("while holding both");
        })
        .join()
    };
    assert!(result.is_err());
    let mut key = ThreadKey::get().unwrap();
    let (ga, gb) = try_lock_all!(&mut key, a, read b).expect("both released");
    assert_eq!((*ga, *gb), (1, 2));
}

#[test]
fn a_panic_with_a_by_value_key_returns_the_key_to_the_thread() {
    let m = Mutex::new(0);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let _guard = m.lock(ThreadKey::get().unwrap());
        panic!("holding the key by value");
    }));
    assert!(caught.is_err());
    assert!(!m.is_locked());
    assert!(ThreadKey::get().is_some());
}

#[test]
fn guards_can_be_shared_with_scoped_threads() {
    let readers = AtomicUsize::new(0);
    let m = Mutex::new(41);
    let mut key = ThreadKey::get().unwrap();
    let (mut guard,) = lock_all!(&mut key, m);
    *guard += 1;
    let guard = &guard;
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| readers.fetch_add(**guard, Ordering::Relaxed));
        }
    });
    assert_eq!(readers.into_inner(), 84);
}

// ---------------------------------------------------------------------------------------------
// happylock 0.5.2 parity: `Poisonable`, `new_unchecked`, children, 14-tuples

#[test]
fn poisonable_is_poisoned_by_a_panic_under_a_write_guard_and_cleared() {
    let mut key = ThreadKey::get().unwrap();
    let balance = Poisonable::new(Mutex::new(10));
    assert!(!balance.is_poisoned());
    **balance.lock(&mut key).unwrap() += 5;
    // A panic under the guard poisons; the next locker gets the data as left, inside the error.
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut g = balance.lock(&mut key).unwrap();
        **g -= 3;
        panic!("half-done");
    }));
    assert!(r.is_err());
    assert!(balance.is_poisoned());
    let err = balance.lock(&mut key).unwrap_err();
    assert_eq!(
        err.to_string(),
        "poisoned lock: another thread panicked while holding it"
    );
    let mut g = err.into_inner();
    assert_eq!(**g, 12);
    **g = 15;
    drop(g);
    // `try_lock` reports it too; a guard made during an unrelated unwinding does not re-poison.
    assert_eq!(
        ***balance.try_lock(&mut key).unwrap().unwrap_err().get_ref(),
        15
    );
    balance.clear_poison();
    assert!(!balance.is_poisoned());
    assert_eq!(**balance.lock(&mut key).unwrap(), 15);
    // Plain locks stay unpoisoned: the wrapped mutex itself knows nothing of it.
    assert!(!balance.child().is_broken());
    assert_eq!(balance.into_inner().unwrap(), 15);
}

#[test]
fn poisonable_read_guards_do_not_poison_and_groups_work() {
    let mut key = ThreadKey::get().unwrap();
    let mut pair = Poisonable::new((RwLock::new(1), RwLock::new(String::from("a"))));
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _g = pair.read(&mut key).unwrap();
        panic!("reader");
    }));
    assert!(r.is_err());
    assert!(!pair.is_poisoned());
    {
        let mut g = pair.lock(&mut key).unwrap();
        *g.0 += 1;
        g.1.push('b');
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let _g = pair.lock(&mut key).unwrap();
        panic!("writer");
    }));
    assert!(pair.is_poisoned());
    let (n, s) = pair.get_mut().unwrap_err().into_inner();
    assert_eq!((*n, s.as_str()), (2, "ab"));
    assert!(pair.child_mut().is_err());
    assert_eq!(
        pair.into_inner().unwrap_err().into_inner(),
        (2, String::from("ab"))
    );

    // A `Poisonable` inside a collection: its guard is a `PoisonResult`.
    let cell = Poisonable::new(Mutex::new(7));
    let plain = Mutex::new(1);
    let both = LockCollection::try_new((&cell, &plain)).unwrap();
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let _g = both.lock(&mut key);
        panic!("in a collection");
    }));
    assert!(cell.is_poisoned());
    let g = both.lock(&mut key);
    assert_eq!((***g.0.as_ref().unwrap_err().get_ref(), *g.1), (7, 1));
    drop(g);
    // The key comes back out of a poison guard.
    let zero = Poisonable::new(Mutex::new(0));
    let key = PoisonGuard::unlock(zero.lock(key).unwrap());
    assert_eq!(**zero.lock(key).unwrap(), 0);
}

#[test]
fn lock_collection_new_unchecked_and_children() {
    let mut key = ThreadKey::get().unwrap();
    let (a, b) = (Mutex::new(1), Mutex::new(2));
    // SAFETY: `a` and `b` are two distinct locks.
    let both = unsafe { LockCollection::new_unchecked((&a, &b)) };
    assert_eq!(both.scoped_lock(&mut key, |(a, b)| **a * 10 + **b), 12);
    assert_eq!(both.child().1.scoped_lock(&mut key, |v| *v), 2);
    let (ra, _) = both.into_child();
    assert_eq!(addr(ra), addr(&a));

    let borrowed = [Mutex::new(3), Mutex::new(4)];
    let by_ref = RefLockCollection::new(&borrowed);
    assert_eq!(addr(by_ref.into_child()), addr(&borrowed));

    let mut retrying = RetryingLockCollection::new((Mutex::new(5), Mutex::new(6)));
    *retrying.child_mut().0.get_mut() += 1;
    assert_eq!(retrying.into_child().1.into_inner(), 6);
}

#[test]
fn with_child_mut_resorts_the_cached_order_even_after_a_panic() {
    let mut key = ThreadKey::get().unwrap();
    let mut all: LockCollection<Vec<Recorded<Mid>>> =
        LockCollection::new(vec![recorded(2), recorded(1)]);
    let in_address_order = |all: &LockCollection<Vec<Recorded<Mid>>>| {
        let mut addrs: Vec<usize> = all.child().iter().map(addr).collect();
        addrs.sort_unstable();
        addrs
    };
    // Growing the `Vec` moves every lock; the cache follows.
    let len = all.with_child_mut(|v| {
        v.extend((3..=40).map(recorded));
        v.len()
    });
    assert_eq!(len, 40);
    take_log();
    assert_eq!(
        all.scoped_lock(&mut key, |g| g.iter().map(|m| **m).sum::<u32>()),
        820
    );
    assert_eq!(take_log(), in_address_order(&all));
    // A panic inside `f` after a change: the cache is re-sorted on the way out.
    let r = catch_unwind(AssertUnwindSafe(|| {
        all.with_child_mut(|v| {
            v.truncate(3);
            v.shrink_to_fit();
            panic!("midway");
        })
    }));
    assert!(r.is_err());
    take_log();
    assert_eq!(
        all.scoped_lock(&mut key, |g| g.iter().map(|m| **m).sum::<u32>()),
        6
    );
    assert_eq!(take_log(), in_address_order(&all));
    assert_eq!(all.into_inner().len(), 3);
}

#[test]
fn collections_take_tuples_of_fourteen() {
    let mut key = ThreadKey::get().unwrap();
    let m = Mutex::new;
    let all = LockCollection::new((
        m(1),
        m(2),
        m(3),
        m(4),
        m(5),
        m(6),
        m(7),
        m(8),
        m(9),
        m(10),
        m(11),
        m(12),
        m(13),
        m(14),
    ));
    assert_eq!(
        all.scoped_lock(&mut key, |g| *g.0 + *g.6 + *g.12 + *g.13),
        1 + 7 + 13 + 14
    );
    let owned = OwnedLockCollection::new(all.into_child());
    *owned.lock(&mut key).13 += 100;
    let inner = owned.into_inner();
    assert_eq!((inner.0, inner.13), (1, 114));
}

// ---------------------------------------------------------------------------------------------
// `LockGuard::lock` and friends: no collection kept, as happylock's `LockGuard::lock(&data, key)`.

#[test]
fn lock_guard_lock_takes_data_in_the_global_order_and_gives_the_key_back() {
    let low: Recorded<Low> = recorded(1);
    let high: Recorded<High> = recorded(3);
    let (a, b) = (recorded::<Unranked>(10), recorded::<Unranked>(20));
    let mut key = ThreadKey::get().unwrap();
    take_log();
    {
        let data = (&high, &b, &low, &a);
        let mut guard = LockGuard::lock(&data, &mut key);
        *guard.0 += 1;
        *guard.3 += *guard.1;
        assert_eq!((*guard.0, *guard.1, *guard.2, *guard.3), (4, 20, 1, 30));
    }
    // Unranked first, by address; then by rank.
    let (first, second) = if addr(&a) < addr(&b) {
        (addr(&a), addr(&b))
    } else {
        (addr(&b), addr(&a))
    };
    assert_eq!(take_log(), [first, second, addr(&low), addr(&high)]);
    // By value: the guard keeps the key, `unlock` gives it back.
    let data = [&a, &b];
    let guard = LockGuard::lock(&data, key);
    assert_eq!((*guard[0], *guard[1]), (30, 20));
    let key = LockGuard::unlock(guard);
    assert_eq!(
        LockGuard::lock(&data, key).iter().map(|g| **g).sum::<u32>(),
        50
    );
}

#[test]
fn lock_guard_try_lock_takes_none_while_another_thread_holds_one() {
    let (a, b) = (Arc::new(Mutex::new(1)), Arc::new(Mutex::new(2)));
    let (held, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let holder = thread::spawn({
        let (b, held, release) = (b.clone(), held.clone(), release.clone());
        move || {
            let mut key = ThreadKey::get().unwrap();
            let guard = b.lock(&mut key);
            held.wait();
            release.wait();
            drop(guard);
        }
    });
    held.wait();
    let mut key = ThreadKey::get().unwrap();
    let data = (&*a, &*b);
    assert!(LockGuard::try_lock(&data, &mut key).is_err());
    // `a` was not left held: it locks alone.
    assert_eq!(*a.try_lock(&mut key).ok().unwrap(), 1);
    release.wait();
    holder.join().unwrap();
    let guard = LockGuard::try_lock(&data, &mut key).ok().unwrap();
    assert_eq!((*guard.0, *guard.1), (1, 2));
}

#[test]
fn lock_guard_read_shares_and_try_read_fails_under_a_writer() {
    let (x, y) = (RwLock::new(String::from("x")), RwLock::new(7));
    let mut key = ThreadKey::get().unwrap();
    let data = (&x, &y);
    {
        let guard = LockGuard::read(&data, &mut key);
        assert_eq!((guard.0.as_str(), *guard.1), ("x", 7));
        // A reader on another thread gets in beside it; a writer does not.
        thread::scope(|s| {
            s.spawn(|| {
                let mut key = ThreadKey::get().unwrap();
                assert_eq!(*y.read(&mut key), 7);
                assert!(y.try_write(&mut key).is_err());
            });
        });
    }
    let (held, release) = (Barrier::new(2), Barrier::new(2));
    thread::scope(|s| {
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            let _writer = y.write(&mut key);
            held.wait();
            release.wait();
        });
        held.wait();
        assert!(LockGuard::try_read(&data, &mut key).is_err());
        release.wait();
    });
    assert_eq!(*LockGuard::try_read(&data, &mut key).ok().unwrap().1, 7);
}

#[test]
fn lock_guard_refuses_a_lock_named_twice_and_leaves_every_lock_free() {
    let (a, b) = (Mutex::new(1), Mutex::new(2));
    let mut key = ThreadKey::get().unwrap();
    let message = |f: &mut dyn FnMut()| {
        let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("a duplicate must be refused");
        payload.downcast_ref::<String>().cloned().unwrap()
    };
    let twice = (&a, &b, &a);
    for (method, text) in [
        (
            "lock",
            message(&mut || drop(LockGuard::lock(&twice, &mut key))),
        ),
        (
            "try_lock",
            message(&mut || drop(LockGuard::try_lock(&twice, &mut key))),
        ),
    ] {
        assert_eq!(
            text,
            format!(
                "`LockGuard::{method}`: the same lock appears twice in its data, which would give two guards to \
                 one value; name each lock once (`LockCollection::try_new` checks data built at run time and \
                 returns `None` for duplicates)"
            )
        );
    }
    let rw = RwLock::new(0);
    let text = message(&mut || drop(LockGuard::read(&[&rw, &rw], &mut key)));
    assert!(
        text.starts_with("`LockGuard::read`: the same lock appears twice"),
        "{text}"
    );
    // Nothing was taken: each lock locks alone, and the key is still this thread's.
    assert_eq!(*a.try_lock(&mut key).ok().unwrap(), 1);
    assert_eq!(*b.try_lock(&mut key).ok().unwrap(), 2);
    assert_eq!(*rw.try_write(&mut key).ok().unwrap(), 0);
}
