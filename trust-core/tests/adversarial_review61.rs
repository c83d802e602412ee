//! Review 61: a hostile look at `lock_all!`, `ThreadKey`, the four collections, `LockContext`, poisoning
//! and the compile-time ranks. Every test has exact expected values. What it found is fixed: guards made with
//! `&mut key` now keep the key borrowed until they drop, and `lock_ranks!`'s steps cannot be called alone
//! (compile-time rules: the UI cases `lock/guard-keeps-its-key-borrowed-until-dropped.rs` and the ones beside
//! it); a collection whose re-listing panicked refuses to lock (below).

mod common;

use common::{panic_message, try_within};
use std::cell::RefCell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use lock_api::{GuardNoSend, RawMutex as _};
use trust_core::lock::{
    LockAfter, LockAllError, LockCollection, LockGuard, Lockable, Mutex, MutexGuard, MutexRef,
    NestedKey, OwnedLockCollection, OwnedLockable, Poisonable, Rank, RawLock, RefLockCollection,
    RetryingLockCollection, RwLock, ThreadKey, Unranked,
};
use trust_core::{lock_all, lock_ranks, try_lock_all};

lock_ranks! {
    pub R1;
    pub R2;
    pub R3;
}

// ---------------------------------------------------------------------------------------------
// Helpers

thread_local! {
    static ACQUIRED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// A raw mutex that records, per thread, the address of every acquisition (the raw lock sits at
/// offset 0 of its `Mutex`, so the address is the mutex's).
struct Recording(parking_lot::RawMutex);

// SAFETY: forwards to parking_lot; recording only reads our own address.
unsafe impl lock_api::RawMutex for Recording {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = Recording(parking_lot::RawMutex::INIT);
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
        // SAFETY: forwarded: the caller holds it.
        unsafe { self.0.unlock() }
    }
}

type Rec<R> = Mutex<u32, R, Recording>;

fn rec<R: Rank>(value: u32) -> Rec<R> {
    Mutex::from_raw(Recording::INIT, value)
}

fn take_log() -> Vec<usize> {
    ACQUIRED.with(|log| std::mem::take(&mut *log.borrow_mut()))
}

fn addr<T>(value: &T) -> usize {
    value as *const T as usize
}

fn sorted2(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

// ---------------------------------------------------------------------------------------------
// Keys

#[test]
fn a_by_value_key_comes_back_after_a_panic_under_its_guard_and_after_unlock() {
    thread::spawn(|| {
        let key = ThreadKey::get().expect("fresh thread");
        assert!(ThreadKey::get().is_none());
        let m = Mutex::new(5);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            let mut g = m.lock(key);
            *g += 1;
            panic!("under the guard");
        }));
        assert_eq!(panic_message(caught.unwrap_err()), "under the guard");
        assert!(!m.is_locked());
        let mut key = ThreadKey::get().expect("the guard's key was dropped by the unwinding");
        assert_eq!(*m.lock(&mut key), 6);

        let c = LockCollection::new((Mutex::new(1), RwLock::new(2)));
        let g = c.lock(key);
        assert!(ThreadKey::get().is_none());
        assert!(c.child().0.is_locked() && c.child().1.is_locked());
        let key = LockGuard::unlock(g);
        assert!(!c.child().0.is_locked() && !c.child().1.is_locked());
        assert!(
            ThreadKey::get().is_none(),
            "unlock handed the key back, it is still out"
        );
        drop(key);
        assert!(ThreadKey::get().is_some());
    })
    .join()
    .unwrap();
}

#[test]
fn a_guard_holding_the_key_in_a_thread_local_is_released_when_the_thread_ends() {
    static M: Mutex<u32> = Mutex::new(0);
    thread_local! {
        static HELD: RefCell<Option<MutexGuard<'static, u32, ThreadKey>>> = const { RefCell::new(None) };
    }
    thread::spawn(|| {
        let mut g = M.lock(ThreadKey::get().unwrap());
        *g = 7;
        HELD.with(|h| *h.borrow_mut() = Some(g));
        assert!(ThreadKey::get().is_none());
        assert!(M.is_locked());
    })
    .join()
    .unwrap();
    // The thread's TLS destructor dropped the guard: lock released, key returned (to a dead thread).
    let mut key = ThreadKey::get().unwrap();
    assert_eq!(M.try_lock(&mut key).map(|g| *g).ok(), Some(7));
}

#[test]
fn a_panicking_debug_inside_a_peek_gives_the_key_and_blocking_locks_back() {
    struct Boom;
    impl fmt::Debug for Boom {
        fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
            panic!("debug boom")
        }
    }
    thread::spawn(|| {
        let m = Mutex::new(Boom);
        let caught = catch_unwind(AssertUnwindSafe(|| format!("{m:?}")));
        assert_eq!(panic_message(caught.unwrap_err()), "debug boom");
        assert!(!m.is_locked());
        let mut key = ThreadKey::get().expect("the peek gave the key back");
        let other = Mutex::new(41);
        // A blocking lock works again: the peek count went back to 0.
        *other.lock(&mut key) += 1;
        assert_eq!(*other.lock(&mut key), 42);
        // With the key out, a peek does not take it and does not give it back.
        assert_eq!(format!("{other:?}"), "Mutex { data: 42, .. }");
        assert!(ThreadKey::get().is_none());
        drop(key);
        assert!(ThreadKey::get().is_some());
    })
    .join()
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// One global order: (rank, address), whatever the argument order, for lock_all! and collections

#[test]
fn lock_all_takes_rank_then_address_order_for_every_argument_order() {
    let mut key = ThreadKey::get().unwrap();
    let u1: Rec<Unranked> = rec(0);
    let u2: Rec<Unranked> = rec(0);
    let a: Rec<R1> = rec(0);
    let b: Rec<R2> = rec(0);
    let c1: Rec<R3> = rec(0);
    let c2: Rec<R3> = rec(0);
    let (ulo, uhi) = sorted2(addr(&u1), addr(&u2));
    let (clo, chi) = sorted2(addr(&c1), addr(&c2));
    let expected = vec![ulo, uhi, addr(&a), addr(&b), clo, chi];
    take_log();
    {
        let _g = lock_all!(&mut key, c1, u1, b, c2, a, u2);
    }
    assert_eq!(take_log(), expected);
    {
        let _g = lock_all!(&mut key, u2, u1, a, b, c2, c1);
    }
    assert_eq!(take_log(), expected);
    {
        let _g = lock_all!(&mut key, c2, c1, b, a, u1, u2);
    }
    assert_eq!(take_log(), expected);
    {
        let _g = lock_all!(&mut key, a, c2, u2, b, u1, c1);
    }
    assert_eq!(take_log(), expected);
    // try_lock_all! takes the same order.
    {
        let _g = try_lock_all!(&mut key, b, c1, u2, a, c2, u1).unwrap();
    }
    assert_eq!(take_log(), expected);
    // The sorting collections too.
    {
        let sorted = LockCollection::try_new((&c2, &u1, &b, &c1, &a, &u2)).unwrap();
        let _g = sorted.lock(&mut key);
    }
    assert_eq!(take_log(), expected);
    {
        let tuple = (&a, &c1, &u2, &c2, &u1, &b);
        let by_ref = RefLockCollection::try_new(&tuple).unwrap();
        let _g = by_ref.lock(&mut key);
    }
    assert_eq!(take_log(), expected);
    // Nesting one level at a time goes up the same order.
    {
        let (_u2, _u1, mut k1) = lock_all!(&mut key, u2, u1; nest);
        let (_a, mut k2) = lock_all!(&mut k1, a; nest);
        let (_b, mut k3) = lock_all!(&mut k2, b; nest);
        let _c = lock_all!(&mut k3, c2, c1);
    }
    assert_eq!(take_log(), expected);
}

#[test]
fn poisonable_sorts_owned_and_retrying_collections_keep_their_own_order() {
    let mut key = ThreadKey::get().unwrap();
    let p = Poisonable::new((rec::<R3>(0), rec::<Unranked>(0), rec::<R1>(0)));
    take_log();
    drop(p.lock(&mut key).unwrap());
    let ch = p.child();
    assert_eq!(take_log(), vec![addr(&ch.1), addr(&ch.2), addr(&ch.0)]);

    let owned = OwnedLockCollection::new((rec::<R3>(0), rec::<Unranked>(0), rec::<R1>(0)));
    let positions = owned.scoped_lock(&mut key, |g| {
        [
            addr(MutexRef::mutex(&g.0)),
            addr(MutexRef::mutex(&g.1)),
            addr(MutexRef::mutex(&g.2)),
        ]
    });
    assert_eq!(take_log(), positions.to_vec(), "positional, ranks ignored");
    // A context that skips part 1.
    {
        let ctx = owned.context(&mut key);
        let (_g0, ctx) = ctx.lock_0();
        let (_g2, _ctx) = ctx.lock_2();
    }
    assert_eq!(take_log(), vec![positions[0], positions[2]]);

    let (x, y, z) = (rec::<R3>(0), rec::<Unranked>(0), rec::<R1>(0));
    let retry = RetryingLockCollection::try_new((&x, &y, &z)).unwrap();
    drop(retry.lock(&mut key));
    assert_eq!(take_log(), vec![addr(&x), addr(&y), addr(&z)]);
}

// ---------------------------------------------------------------------------------------------
// No deadlock, whatever the order: every way of locking the same locks, on 4 threads

#[test]
fn every_way_of_taking_three_shared_locks_on_four_threads_finishes_with_exact_counts() {
    const ROUNDS: usize = 1500;
    let result = try_within(30, || {
        let locks = Arc::new((Mutex::new(0u64), Mutex::new(0u64), Mutex::new(0u64)));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let locks = Arc::clone(&locks);
                thread::spawn(move || {
                    let (a, b, c) = (&locks.0, &locks.1, &locks.2);
                    let mut key = ThreadKey::get().unwrap();
                    let sorted = LockCollection::try_new((b, c, a)).unwrap();
                    let tuple = (c, a, b);
                    let by_ref = RefLockCollection::try_new(&tuple).unwrap();
                    let retrying = RetryingLockCollection::try_new([c, b, a]).unwrap();
                    let retrying_rev = RetryingLockCollection::try_new(vec![a, c, b]).unwrap();
                    let mut done = 0u64;
                    for i in 0..ROUNDS {
                        match (t + i) % 7 {
                            0 => {
                                let (mut x, mut y, mut z) = lock_all!(&mut key, c, a, b);
                                (*x, *y, *z) = (*x + 1, *y + 1, *z + 1);
                            }
                            1 => {
                                let mut g = sorted.lock(&mut key);
                                (*g.0, *g.1, *g.2) = (*g.0 + 1, *g.1 + 1, *g.2 + 1);
                            }
                            2 => by_ref.scoped_lock(&mut key, |g| {
                                (*g.0, *g.1, *g.2) = (*g.0 + 1, *g.1 + 1, *g.2 + 1);
                            }),
                            3 => {
                                let mut g = retrying.lock(&mut key);
                                for m in g.iter_mut() {
                                    **m += 1;
                                }
                            }
                            4 => {
                                let mut g = retrying_rev.lock(&mut key);
                                for m in g.iter_mut() {
                                    **m += 1;
                                }
                            }
                            5 => match try_lock_all!(&mut key, b, c, a) {
                                Ok((mut x, mut y, mut z)) => {
                                    (*x, *y, *z) = (*x + 1, *y + 1, *z + 1);
                                }
                                Err(LockAllError::WouldBlock) => continue,
                                Err(other) => panic!("{other:?}"),
                            },
                            _ => {
                                // Two of them, then the third alone: never two waits at once.
                                {
                                    let (mut x, mut y) = lock_all!(&mut key, b, a);
                                    (*x, *y) = (*x + 1, *y + 1);
                                }
                                *c.lock(&mut key) += 1;
                            }
                        }
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        let done: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let mut key = ThreadKey::get().unwrap();
        let (a, b, c) = lock_all!(&mut key, locks.0, locks.1, locks.2);
        (done, *a, *b, *c)
    });
    let (done, a, b, c) = result.expect("no deadlock");
    assert!(done > 0);
    assert_eq!((a, b, c), (done, done, done));
}

#[test]
fn nested_ranks_flat_calls_and_rwlock_read_write_mixes_on_four_threads_finish() {
    const ROUNDS: usize = 1500;
    struct Shared {
        top: Mutex<u64, R1>,
        mid: [RwLock<u64, R2>; 2],
        leaf: Mutex<u64, R3>,
    }
    let result = try_within(30, || {
        let s = Arc::new(Shared {
            top: Mutex::ranked(0),
            mid: [RwLock::ranked(0), RwLock::ranked(0)],
            leaf: Mutex::ranked(0),
        });
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let s = Arc::clone(&s);
                thread::spawn(move || {
                    let mut key = ThreadKey::get().unwrap();
                    let all =
                        LockCollection::try_new((&s.leaf, &s.mid[1], &s.top, &s.mid[0])).unwrap();
                    let (mut writes, mut reads) = (0u64, 0u64);
                    for i in 0..ROUNDS {
                        let (j, k) = if (t + i) % 2 == 0 { (0, 1) } else { (1, 0) };
                        match (t + i) % 5 {
                            0 => {
                                // Down the ranks one level at a time.
                                let (mut top, mut k1) = lock_all!(&mut key, s.top; nest);
                                let (mut m0, mut m1, mut k2) =
                                    lock_all!(&mut k1, s.mid[j], s.mid[k]; nest);
                                let (mut leaf,) = lock_all!(&mut k2, s.leaf);
                                *top += 1;
                                *m0 += 1;
                                *m1 += 1;
                                *leaf += 1;
                                writes += 1;
                            }
                            1 => {
                                // Everything flat, named bottom-up.
                                let (mut leaf, mut m1, mut top, mut m0) =
                                    lock_all!(&mut key, s.leaf, s.mid[k], s.top, s.mid[j]);
                                *top += 1;
                                *m0 += 1;
                                *m1 += 1;
                                *leaf += 1;
                                writes += 1;
                            }
                            2 => {
                                let mut g = all.lock(&mut key);
                                *g.0 += 1;
                                *g.1 += 1;
                                *g.2 += 1;
                                *g.3 += 1;
                                writes += 1;
                            }
                            3 => {
                                // Read the middle, write the leaf under it.
                                let (m0, m1, mut k1) =
                                    lock_all!(&mut key, read s.mid[j], read s.mid[k]; nest);
                                let (leaf,) = lock_all!(&mut k1, s.leaf);
                                assert_eq!((*m0, *m1), (*leaf, *leaf));
                                reads += 1;
                            }
                            _ => {
                                let (top, mut k1) = lock_all!(&mut key, s.top; nest);
                                let (m0, m1) = lock_all!(&mut k1, read s.mid[0], read s.mid[1]);
                                assert_eq!(*m0, *top);
                                assert_eq!(*m1, *top);
                                reads += 1;
                            }
                        }
                    }
                    (writes, reads)
                })
            })
            .collect();
        let (writes, reads) = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |(w, r), (a, b)| (w + a, r + b));
        let mut key = ThreadKey::get().unwrap();
        let (top, m0, m1, leaf) = lock_all!(&mut key, s.top, read s.mid[0], read s.mid[1], s.leaf);
        (writes, reads, *top, *m0, *m1, *leaf)
    });
    let (writes, reads, top, m0, m1, leaf) = result.expect("no deadlock");
    assert_eq!(writes + reads, 4 * ROUNDS as u64);
    assert_eq!((top, m0, m1, leaf), (writes, writes, writes, writes));
}

/// A generic helper that takes any lock ranked above what its key holds.
fn read_above<'k, H: Rank, R: Rank + LockAfter<H>>(
    key: &mut NestedKey<'k, H>,
    m: &Mutex<u32, R>,
) -> u32 {
    let (g,) = lock_all!(key, m);
    *g
}

#[test]
fn generic_rank_parameters_and_a_nested_key_that_outlives_its_guards() {
    let mut key = ThreadKey::get().unwrap();
    let u: Mutex<u32> = Mutex::new(1);
    let a: Mutex<u32, R1> = Mutex::ranked(10);
    let b: Mutex<u32, R2> = Mutex::ranked(100);
    let c: Mutex<u32, R3> = Mutex::ranked(1000);
    let (gu, mut k0) = lock_all!(&mut key, u; nest);
    assert_eq!(read_above(&mut k0, &a) + read_above(&mut k0, &c), 1010);
    drop(gu);
    // The nested key still only takes higher ranks, but holds nothing now: other threads may take `u`.
    let other = thread::scope(|s| {
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            u.try_lock(&mut key).map(|g| *g).ok()
        })
        .join()
        .unwrap()
    });
    assert_eq!(other, Some(1));
    let (ga, mut k1) = lock_all!(&mut k0, a; nest);
    assert_eq!(
        *ga + read_above(&mut k1, &b) + read_above(&mut k1, &c),
        1110
    );
    assert!(a.is_locked() && !u.is_locked());
}

// ---------------------------------------------------------------------------------------------
// try variants: nothing stays held when they fail

#[test]
fn failed_try_variants_release_what_they_took_first() {
    let low: Mutex<u32, R1> = Mutex::ranked(1);
    let high: Mutex<u32, R3> = Mutex::ranked(2);
    let rw: RwLock<u32, R2> = RwLock::ranked(3);
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (read_tx, read_rx) = mpsc::channel::<()>();
    let (go2_tx, go2_rx) = mpsc::channel::<()>();
    let (high_ref, rw_ref) = (&high, &rw);
    thread::scope(|s| {
        s.spawn(move || {
            let (high, rw) = (high_ref, rw_ref);
            let mut key = ThreadKey::get().unwrap();
            {
                let _h = high.lock(&mut key);
                held_tx.send(()).unwrap();
                go_rx.recv().unwrap();
            }
            let _r = rw.read(&mut key);
            read_tx.send(()).unwrap();
            go2_rx.recv().unwrap();
        });
        held_rx.recv().unwrap();
        let mut key = ThreadKey::get().unwrap();
        // `low` (rank 1) is taken first, then `high` fails: `low` must be free again.
        assert_eq!(
            try_lock_all!(&mut key, high, low).err(),
            Some(LockAllError::WouldBlock)
        );
        assert!(!low.is_locked());
        let sorted = LockCollection::try_new((&high, &low)).unwrap();
        assert!(sorted.try_lock(&mut key).is_err());
        assert!(!low.is_locked());
        let retry = RetryingLockCollection::try_new((&low, &high)).unwrap();
        assert!(retry.try_lock(&mut key).is_err());
        assert!(!low.is_locked());
        assert!(sorted.scoped_try_lock(&mut key, |_| 0u8).is_err());
        go_tx.send(()).unwrap();
        read_rx.recv().unwrap();
        // A reader elsewhere: reading works, writing does not and leaves `low` free.
        assert_eq!(
            try_lock_all!(&mut key, read rw, low)
                .map(|(r, l)| *r + *l)
                .ok(),
            Some(4)
        );
        assert_eq!(
            try_lock_all!(&mut key, low, rw).err(),
            Some(LockAllError::WouldBlock)
        );
        assert!(!low.is_locked());
        let both = LockCollection::try_new((&rw, &low)).unwrap();
        assert!(both.try_lock(&mut key).is_err());
        assert!(!low.is_locked());
        go2_tx.send(()).unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// The same lock twice

#[test]
fn the_same_lock_twice_is_refused_everywhere() {
    let mut key = ThreadKey::get().unwrap();
    let v = [Mutex::new(1), Mutex::new(2), Mutex::new(3)];
    let (i, j) = (2, 2);
    assert!(ThreadKey::get().is_none(), "the key is out");
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let _g = lock_all!(&mut key, v[0], v[i], v[1], v[j]);
    }));
    assert_eq!(
        panic_message(caught.unwrap_err()),
        "lock_all!: locks #2 and #4 (counting from 1 after the key) are the same lock; a thread \
         would wait for itself forever: pass each lock once"
    );
    assert!(v.iter().all(|m| !m.is_locked()));
    let k = 0;
    assert_eq!(
        try_lock_all!(&mut key, v[k], v[1], v[0]).err(),
        Some(LockAllError::Duplicate {
            first: 0,
            second: 2
        })
    );
    // Read and write of one RwLock.
    let rws = [RwLock::new(1), RwLock::new(2)];
    assert_eq!(
        try_lock_all!(&mut key, read rws[i - 1], rws[1]).err(),
        Some(LockAllError::Duplicate {
            first: 0,
            second: 1
        })
    );
    // Through a box, an Arc, and double references.
    let boxed = Box::new(Mutex::new(0));
    let through = &*boxed;
    let through2 = &through;
    assert_eq!(
        try_lock_all!(&mut key, boxed, through2).err(),
        Some(LockAllError::Duplicate {
            first: 0,
            second: 1
        })
    );
    let arc = Arc::new(Mutex::new(0));
    let arc2 = Arc::clone(&arc);
    assert_eq!(
        try_lock_all!(&mut key, arc, arc2).err(),
        Some(LockAllError::Duplicate {
            first: 0,
            second: 1
        })
    );
    // Collections: through a Poisonable wrapper, in a Vec, in an array of references.
    assert!(LockCollection::try_new((&v[0], Poisonable::new(&v[0]))).is_none());
    assert!(LockCollection::try_new((Poisonable::new((&v[1], &v[2])), &v[2])).is_none());
    assert!(RetryingLockCollection::try_new(vec![&v[0], &v[1], &v[0]]).is_none());
    assert!(RefLockCollection::try_new(&[&v[2], &v[1], &v[2]]).is_none());
    assert!(LockCollection::try_new((arc.clone(), &*arc2)).is_none());
    assert!(RetryingLockCollection::try_new((&rws[0], Box::new(&rws[0]))).is_none());
    // Distinct ones are fine.
    assert!(RetryingLockCollection::try_new(vec![&v[0], &v[1], &v[2]]).is_some());
    assert!(v.iter().all(|m| !m.is_locked()));
}

// ---------------------------------------------------------------------------------------------
// Poisoning and panics while locked

#[test]
fn a_panic_under_a_collection_write_guard_poisons_only_its_poisonable_parts() {
    let mut key = ThreadKey::get().unwrap();
    let c = LockCollection::new((
        Poisonable::new(Mutex::new(1)),
        Mutex::new(2),
        Poisonable::new(RwLock::new(3)),
    ));
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let mut g = c.lock(&mut key);
        ***g.0.as_mut().unwrap() += 10;
        *g.1 += 10;
        panic!("mid-update");
    }));
    assert!(caught.is_err());
    assert!(c.child().0.is_poisoned());
    assert!(
        c.child().2.is_poisoned(),
        "a write guard of the RwLock was alive too"
    );
    {
        let g = c.lock(&mut key);
        assert_eq!(***g.0.as_ref().unwrap_err().get_ref(), 11);
        assert_eq!(*g.1, 12);
        assert_eq!(***g.2.as_ref().unwrap_err().get_ref(), 3);
    }
    c.child().0.clear_poison();
    c.child().2.clear_poison();
    // A panic under read guards poisons nothing.
    let r = LockCollection::new((Poisonable::new(RwLock::new(5)), RwLock::new(6)));
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let g = r.read(&mut key);
        assert_eq!(***g.0.as_ref().unwrap(), 5);
        panic!("while reading");
    }));
    assert!(caught.is_err());
    assert!(!r.child().0.is_poisoned());
    assert!(!c.child().0.is_poisoned());
    assert_eq!(***c.lock(&mut key).0.as_ref().unwrap(), 11);
}

#[test]
fn a_panic_under_every_kind_of_guard_releases_every_lock() {
    let mut key = ThreadKey::get().unwrap();
    let (a, b): (Mutex<u8, R1>, RwLock<u8, R2>) = (Mutex::ranked(1), RwLock::ranked(2));
    let free =
        |key: &mut ThreadKey| a.try_lock(&mut *key).is_ok() && b.try_write(&mut *key).is_ok();
    assert!(
        catch_unwind(AssertUnwindSafe(|| {
            let (_x, mut k) = lock_all!(&mut key, a; nest);
            let (_y,) = lock_all!(&mut k, read b);
            panic!("nested");
        }))
        .is_err()
    );
    assert!(free(&mut key));
    let sorted = LockCollection::try_new((&b, &a)).unwrap();
    assert!(
        catch_unwind(AssertUnwindSafe(
            || sorted.scoped_lock(&mut key, |_| panic!("sorted"))
        ))
        .is_err()
    );
    assert!(free(&mut key));
    let retry = RetryingLockCollection::try_new((&b, &a)).unwrap();
    assert!(
        catch_unwind(AssertUnwindSafe(|| {
            let _g = retry.lock(&mut key);
            panic!("retry")
        }))
        .is_err()
    );
    assert!(free(&mut key));
    let owned = OwnedLockCollection::new((Mutex::new(1), RwLock::new(2)));
    assert!(
        catch_unwind(AssertUnwindSafe(|| {
            let ctx = owned.context(&mut key);
            let (_g, ctx) = ctx.lock_0();
            let (_h, _) = ctx.read_1();
            panic!("context")
        }))
        .is_err()
    );
    assert!(owned.try_lock(&mut key).is_ok());
    drop(sorted);
    let first = *a.lock(&mut key);
    assert_eq!(first + *b.read(&mut key), 3);
}

// ---------------------------------------------------------------------------------------------
// Contexts: branches ("forked code paths") and a failed try that gives the context back

#[test]
fn context_branches_and_a_failed_try_that_gives_the_context_back() {
    let locks = OwnedLockCollection::new((Mutex::new(1u32), Mutex::new(10u32), Mutex::new(100u32)));
    let mut key = ThreadKey::get().unwrap();
    let mut totals = Vec::new();
    for long_way in [true, false] {
        let ctx = locks.context(&mut key);
        let (first, ctx) = ctx.lock_0();
        let total = if long_way {
            let (x, ctx) = ctx.lock_1();
            let (y, _) = ctx.lock_2();
            *first + *x + *y
        } else {
            let (y, _) = ctx.lock_2();
            *first + *y
        };
        totals.push(total);
    }
    assert_eq!(totals, [111, 101]);

    // Another thread holds part 0 through its own context; ours fails on part 0 and goes on to part 1.
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let locks_ref = &locks;
    thread::scope(|s| {
        s.spawn(move || {
            let mut key = ThreadKey::get().unwrap();
            let (_g0, _ctx) = locks_ref.context(&mut key).lock_0();
            held_tx.send(()).unwrap();
            go_rx.recv().unwrap();
        });
        held_rx.recv().unwrap();
        let ctx = locks.context(&mut key);
        let Err(ctx) = ctx.try_lock_0() else {
            panic!("part 0 is held elsewhere")
        };
        let (g1, ctx) = ctx.lock_1();
        let (g2, _) = ctx.try_lock_2().expect("part 2 is free");
        assert_eq!(*g1 + *g2, 110);
        drop((g1, g2));
        assert!(locks.try_lock(&mut key).is_err());
        go_tx.send(()).unwrap();
    });
    assert_eq!(locks.into_inner(), (1, 10, 100));
}

// ---------------------------------------------------------------------------------------------
// fork(2): the child has one thread; holds of other threads stay busy, its own key state is kept

#[test]
fn a_forked_child_sees_another_threads_hold_as_busy_and_keeps_its_key_out() {
    static HELD: Mutex<u32> = Mutex::new(1);
    static FREE: Mutex<u32> = Mutex::new(2);
    let (locked_tx, locked_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        let mut key = ThreadKey::get().unwrap();
        let g = HELD.lock(&mut key);
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        drop(g);
    });
    locked_rx.recv().unwrap();
    let mut key = ThreadKey::get().unwrap();
    // SAFETY: the child only runs code that neither allocates nor takes a lock another thread may hold
    // (beyond the `try` on `HELD`), then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let mut code = 0;
        if ThreadKey::get().is_some() {
            code |= 1; // the key is out in the child too
        }
        match try_lock_all!(&mut key, HELD, FREE) {
            Err(LockAllError::WouldBlock) => {}
            _ => code |= 2,
        }
        if FREE.is_locked() {
            code |= 4;
        }
        {
            let (g,) = lock_all!(&mut key, FREE);
            if *g != 2 {
                code |= 8;
            }
        }
        // SAFETY: ends the child at once, running nothing of the parent's.
        unsafe { libc::_exit(code) };
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut status = 0;
    let status = loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break Some(status);
        }
        if Instant::now() > deadline {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: reaps it.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            break None;
        }
        thread::sleep(Duration::from_millis(5));
    };
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let status = status.expect("the child hung");
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0);
    let free = *FREE.lock(&mut key);
    assert_eq!(free + *HELD.lock(&mut key), 3);
}

// =============================================================================================
// Review 61's finding at run time: a collection whose locks could not be listed again

/// A user's owned `Lockable` whose `raw_locks` panics once when asked (a flag it checks), then
/// behaves: it reports its one mutex, and its guard is that mutex's guard.
struct ListsOnceBadly {
    m: Mutex<u64>,
    refuse_next_listing: AtomicBool,
}

// SAFETY: whenever `raw_locks` returns, it has reported the one mutex `guard` gives access to.
unsafe impl Lockable for ListsOnceBadly {
    type Guard<'g> = MutexRef<'g, u64>;

    fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
        if self.refuse_next_listing.swap(false, Ordering::SeqCst) {
            panic!("listing refused once");
        }
        self.m.raw_locks(out);
    }

    unsafe fn guard(&self) -> Self::Guard<'_> {
        // SAFETY: forwarded: the caller holds `m`, the lock reported above.
        unsafe { self.m.guard() }
    }
}

// SAFETY: it owns its one mutex.
unsafe impl OwnedLockable for ListsOnceBadly {}

/// Fixed: the collection keeps a stand-in lock list that panics when taken, so `lock` and `try_lock` refuse
/// (before: an empty list, so `lock` took no lock and two threads got `&mut` to the same data).
#[test]
fn with_child_mut_whose_resort_panics_leaves_a_collection_that_refuses_to_lock() {
    let mut c = LockCollection::new(ListsOnceBadly {
        m: Mutex::new(0),
        refuse_next_listing: AtomicBool::new(false),
    });
    let caught = catch_unwind(AssertUnwindSafe(|| {
        c.with_child_mut(|child| child.refuse_next_listing.store(true, Ordering::SeqCst))
    }));
    assert_eq!(panic_message(caught.unwrap_err()), "listing refused once");
    let unlisted = "this `LockCollection` cannot be locked: its child's `Lockable::raw_locks` panicked when \
         `with_child_mut` listed its locks again; take the child out with `into_child` and build a new collection";
    let mut key = ThreadKey::get().unwrap();
    let lock = catch_unwind(AssertUnwindSafe(|| drop(c.lock(&mut key))));
    assert_eq!(panic_message(lock.unwrap_err()), unlisted);
    let try_lock = catch_unwind(AssertUnwindSafe(|| c.try_lock(&mut key).is_ok()));
    assert_eq!(panic_message(try_lock.unwrap_err()), unlisted);
    let scoped = catch_unwind(AssertUnwindSafe(|| c.scoped_lock(&mut key, |g| **g)));
    assert_eq!(panic_message(scoped.unwrap_err()), unlisted);
    // Nothing was taken, and the child comes back whole.
    let child = c.into_child();
    assert!(!child.m.is_locked());
    assert_eq!(*child.m.lock(&mut key), 0);
}

#[test]
fn an_array_collection_locked_on_two_threads_counts_exactly() {
    let hits = AtomicUsize::new(0);
    let barrier = Barrier::new(2);
    let locks = LockCollection::new([Mutex::new(0u32), Mutex::new(0u32)]);
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut key = ThreadKey::get().unwrap();
                barrier.wait();
                for _ in 0..500 {
                    let mut g = locks.lock(&mut key);
                    *g[0] += 1;
                    *g[1] += 2;
                    hits.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(hits.load(Ordering::Relaxed), 1000);
    assert_eq!(locks.into_inner(), [1000, 2000]);
}

// ---------------------------------------------------------------------------------------------
