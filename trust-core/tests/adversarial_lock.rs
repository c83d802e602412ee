//! Adversarial tests of `trust_core::lock`: a second `ThreadKey`, keys in thread-local destructors, duplicates
//! through references, hundreds of locks, panics while holding collections, poisoning, and every acquisition
//! style over the same locks at once (docs/lock.md's promises).

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use trust_core::lock::{
    LockAllError, LockCollection, Mutex, OwnedLockCollection, Poisonable, RefLockCollection,
    RetryingLockCollection, RwLock, ThreadKey,
};
use trust_core::{lock_all, lock_ranks, try_lock_all};

mod common;
use common::{panic_message, within};

#[test]
fn second_key_is_refused_and_key_comes_back_after_drop_and_panic() {
    let key = ThreadKey::get().unwrap();
    assert!(ThreadKey::get().is_none());
    assert!(
        ThreadKey::get().is_none(),
        "a refused get must not clear the flag"
    );
    let m = Mutex::new(5);
    // Key by value into a guard, panic while held: key returns to the thread.
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _g = m.lock(key);
        assert!(ThreadKey::get().is_none());
        panic!("boom");
    }));
    assert!(r.is_err());
    assert!(!m.is_locked());
    let mut key = ThreadKey::get().expect("key returns after panic");
    assert_eq!(*m.lock(&mut key), 5);
}

#[test]
fn each_thread_has_its_own_key_and_scoped_threads_too() {
    let _mine = ThreadKey::get().unwrap();
    let got = std::thread::scope(|s| {
        (0..8)
            .map(|_| {
                s.spawn(|| {
                    let k = ThreadKey::get();
                    let again = ThreadKey::get();
                    k.is_some() && again.is_none()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|b| *b)
            .count()
    });
    assert_eq!(got, 8);
    assert!(ThreadKey::get().is_none());
}

thread_local! {
    static STASH: RefCell<Option<ThreadKey>> = const { RefCell::new(None) };

}

struct GetKeyInDtor(Arc<AtomicUsize>);
impl Drop for GetKeyInDtor {
    fn drop(&mut self) {
        // Whatever the TLS destructor order, get must not panic; record whether it said Some.
        let got = ThreadKey::get();
        self.0
            .fetch_add(if got.is_some() { 1 } else { 100 }, Ordering::SeqCst);
    }
}

thread_local! {
    static DTOR: RefCell<Option<GetKeyInDtor>> = const { RefCell::new(None) };
}

#[test]
fn key_kept_in_a_thread_local_is_dropped_at_thread_exit_without_panicking() {
    let counter = Arc::new(AtomicUsize::new(0));
    let c = counter.clone();
    std::thread::spawn(move || {
        DTOR.with(|d| *d.borrow_mut() = Some(GetKeyInDtor(c)));
        STASH.with(|s| *s.borrow_mut() = Some(ThreadKey::get().unwrap()));
        assert!(ThreadKey::get().is_none());
    })
    .join()
    .expect("thread exit with a stashed key must not panic");
    // Either 1 (key dropped first) or 100 (still stashed); never a panic.
    let v = counter.load(Ordering::SeqCst);
    assert!(v == 1 || v == 100, "{v}");
}

#[test]
fn lock_all_runtime_duplicate_panics_names_positions_and_leaves_nothing_locked() {
    let mut key = ThreadKey::get().unwrap();
    let v: Vec<Mutex<u32>> = (0..5).map(Mutex::new).collect();
    let (i, j) = (std::hint::black_box(3), std::hint::black_box(3));
    let err = catch_unwind(AssertUnwindSafe(|| {
        let _g = lock_all!(&mut key, v[0], v[i], v[1], v[j]);
    }))
    .unwrap_err();
    let msg = panic_message(err);
    assert!(msg.contains("#2 and #4"), "{msg}");
    assert!(v.iter().all(|m| !m.is_locked()));
    // Key usable after the panic.
    let (a, b) = lock_all!(&mut key, v[0], v[4]);
    assert_eq!(*a + *b, 4);
}

#[test]
fn lock_all_duplicate_through_a_reference_and_read_write_mix() {
    let mut key = ThreadKey::get().unwrap();
    let a = RwLock::new(1);
    let r = &a;
    let err = catch_unwind(AssertUnwindSafe(|| {
        let _g = lock_all!(&mut key, a, read * r);
    }));
    assert!(
        err.is_err(),
        "same RwLock for write and read must be refused"
    );
    assert!(!a.is_locked());
    let e = try_lock_all!(&mut key, read a, read *r).err();
    assert_eq!(
        e,
        Some(LockAllError::Duplicate {
            first: 0,
            second: 1
        })
    );
    assert!(!a.is_locked());
}

#[test]
fn try_lock_all_wouldblock_releases_every_lock_taken() {
    let mut key = ThreadKey::get().unwrap();
    let locks: Vec<Mutex<u8>> = (0..6).map(|_| Mutex::new(0)).collect();
    // Hold the highest-address lock on another thread, so the try fails last.
    let hi = locks
        .iter()
        .max_by_key(|m| *m as *const _ as usize)
        .unwrap();
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        s.spawn(move || {
            let mut k = ThreadKey::get().unwrap();
            let _g = hi.lock(&mut k);
            tx.send(()).unwrap();
            done_rx.recv().unwrap();
        });
        rx.recv().unwrap();
        let e = try_lock_all!(
            &mut key, locks[0], locks[1], locks[2], locks[3], locks[4], locks[5]
        )
        .err();
        assert_eq!(e, Some(LockAllError::WouldBlock));
        let held = locks.iter().filter(|m| m.is_locked()).count();
        assert_eq!(held, 1, "only the other thread's lock may remain held");
        done_tx.send(()).unwrap();
    });
}

#[test]
fn a_hundred_locks_in_a_collection_with_a_duplicate_are_refused_everywhere() {
    let locks: Vec<Mutex<usize>> = (0..300).map(Mutex::new).collect();
    let mut refs: Vec<&Mutex<usize>> = locks.iter().collect();
    refs.push(&locks[150]);
    assert!(LockCollection::try_new(refs.clone()).is_none());
    assert!(RetryingLockCollection::try_new(refs.clone()).is_none());
    refs.pop();
    let c = LockCollection::try_new(refs).expect("distinct");
    let mut key = ThreadKey::get().unwrap();
    let g = c.lock(&mut key);
    assert_eq!(g.iter().map(|x| **x).sum::<usize>(), (0..300).sum());
    drop(g);
    assert!(locks.iter().all(|m| !m.is_locked()));
}

#[test]
fn panic_inside_scoped_collection_lock_releases_all_and_no_poison_without_poisonable() {
    let mut key = ThreadKey::get().unwrap();
    let c = LockCollection::new((Mutex::new(1), RwLock::new(2), Mutex::new(3)));
    let r = catch_unwind(AssertUnwindSafe(|| {
        c.scoped_lock(&mut key, |g| {
            *g.0 = 10;
            panic!("mid-update");
        })
    }));
    assert!(r.is_err());
    let g = c.lock(&mut key);
    assert_eq!((*g.0, *g.1, *g.2), (10, 2, 3));
}

#[test]
fn poisonable_inside_a_collection_is_poisoned_only_by_write_guards() {
    let mut key = ThreadKey::get().unwrap();
    let p = Poisonable::new(RwLock::new(0u32));
    let q = Mutex::new(0u32);
    let pair = (Poisonable::new(RwLock::new(0u32)), Mutex::new(0u32));
    let c = RefLockCollection::new(&pair);
    drop(c);
    // Read under the collection, panic: no poison.
    let coll = LockCollection::try_new((&p, &q)).expect("distinct");
    let r = catch_unwind(AssertUnwindSafe(|| {
        let g = p.read(&mut key);
        let _ = g;
        panic!("under read");
    }));
    assert!(r.is_err());
    assert!(!p.is_poisoned(), "read guards never poison");
    // Write through the collection, panic: poisoned.
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut g = coll.lock(&mut key);
        ***g.0.as_mut().unwrap() = 7;
        panic!("under write");
    }));
    assert!(r.is_err());
    assert!(p.is_poisoned());
    assert!(!q.is_locked());
    {
        let g = coll.lock(&mut key);
        match &g.0 {
            Err(e) => assert_eq!(***e.get_ref(), 7),
            Ok(_) => panic!("expected a poison error"),
        }
    }
    p.clear_poison();
    assert!(p.lock(&mut key).is_ok());
}

struct LockInDrop<'a>(&'a Poisonable<Mutex<u32>>);
impl Drop for LockInDrop<'_> {
    fn drop(&mut self) {
        // Runs while unwinding: a guard taken and dropped *during* the panic must not poison.
        let mut key = ThreadKey::get().expect("key free during unwinding");
        let mut g = self.0.lock(&mut key).unwrap();
        **g += 1;
    }
}

#[test]
fn a_guard_taken_during_unwinding_does_not_poison() {
    let p = Poisonable::new(Mutex::new(0u32));
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _d = LockInDrop(&p);
        panic!("outer");
    }));
    assert!(r.is_err());
    assert!(!p.is_poisoned());
    let mut key = ThreadKey::get().unwrap();
    assert_eq!(**p.lock(&mut key).unwrap(), 1);
}

lock_ranks! {
    pub A1; pub A2;
}
lock_ranks! {
    pub B1; pub B2;
}

/// Locks from two rank lists, taken together from many threads in every argument order, mixed with
/// sorted, borrowed and retrying collections over the same locks: no deadlock, no lost update.
#[test]
fn mixed_acquisition_styles_over_the_same_locks_make_progress() {
    let done = within(60, || {
        let a1: Arc<Mutex<u64, A1>> = Arc::new(Mutex::ranked(0));
        let a2: Arc<Mutex<u64, A2>> = Arc::new(Mutex::ranked(0));
        let b1: Arc<Mutex<u64, B1>> = Arc::new(Mutex::ranked(0));
        let b2: Arc<RwLock<u64, B2>> = Arc::new(RwLock::ranked(0));
        let u: Arc<Mutex<u64>> = Arc::new(Mutex::new(0));
        const N: u64 = 3000;
        let stop = Arc::new(AtomicBool::new(false));
        let mut hs = vec![];
        for t in 0..6u64 {
            let (a1, a2, b1, b2, u) = (a1.clone(), a2.clone(), b1.clone(), b2.clone(), u.clone());
            let _stop = stop.clone();
            hs.push(std::thread::spawn(move || {
                let mut key = ThreadKey::get().unwrap();
                for i in 0..N {
                    match (t + i) % 5 {
                        0 => {
                            let (mut x, mut y, mut z, mut w, mut v) =
                                lock_all!(&mut key, b2, u, a2, b1, a1);
                            *x += 1;
                            *y += 1;
                            *z += 1;
                            *w += 1;
                            *v += 1;
                        }
                        1 => {
                            let c = LockCollection::try_new((&*a1, &*b2, &*u, &*a2, &*b1)).unwrap();
                            let mut g = c.lock(&mut key);
                            *g.0 += 1;
                            *g.1 += 1;
                            *g.2 += 1;
                            *g.3 += 1;
                            *g.4 += 1;
                        }
                        2 => {
                            let c = RetryingLockCollection::try_new((&*b1, &*a2, &*u, &*b2, &*a1))
                                .unwrap();
                            let mut g = c.lock(&mut key);
                            *g.0 += 1;
                            *g.1 += 1;
                            *g.2 += 1;
                            *g.3 += 1;
                            *g.4 += 1;
                        }
                        3 => {
                            // nest: A1 then A2 (same list), then B2 alone is from another list: take B's
                            // together with u in one call instead.
                            let (mut x, mut nk) = lock_all!(&mut key, a1; nest);
                            let (mut y,) = lock_all!(&mut nk, a2);
                            *x += 1;
                            *y += 1;
                            drop((x, y));
                            let (mut p, mut q, mut r) = lock_all!(&mut key, u, b1, b2);
                            *p += 1;
                            *q += 1;
                            *r += 1;
                        }
                        _ => {
                            let (r, mut w) = lock_all!(&mut key, read b2, a1);
                            let _ = *r;
                            *w += 0;
                            drop((r, w));
                            let (mut x, mut y, mut z, mut p, mut q) =
                                lock_all!(&mut key, a1, a2, b1, b2, u);
                            *x += 1;
                            *y += 1;
                            *z += 1;
                            *p += 1;
                            *q += 1;
                        }
                    }
                }
            }));
        }
        for h in hs {
            h.join().unwrap();
        }
        let total = 6 * N;
        let mut key = ThreadKey::get().unwrap();
        let (x, y, z, w, v) = lock_all!(&mut key, a1, a2, b1, b2, u);
        (*x, *y, *z, *w, *v, total)
    });
    let (x, y, z, w, v, total) = done;
    assert_eq!((x, y, z, w, v), (total, total, total, total, total));
}

#[test]
fn owned_collection_context_panic_midway_releases_parts_and_key() {
    let mut key = ThreadKey::get().unwrap();
    let c = OwnedLockCollection::new(vec![Mutex::new(1), Mutex::new(2), Mutex::new(3)]);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut ctx = c.context(&mut key);
        let _g1 = ctx.lock_next().unwrap();
        let _g2 = ctx.lock_next().unwrap();
        panic!("midway");
    }));
    assert!(r.is_err());
    let g = c.lock(&mut key);
    assert_eq!(g.iter().map(|m| **m).sum::<i32>(), 6);
}

#[test]
fn with_child_mut_growing_a_vec_then_locking_sees_every_lock() {
    let mut key = ThreadKey::get().unwrap();
    let mut c = LockCollection::new(vec![Mutex::new(0usize)]);
    for i in 1..200 {
        c.with_child_mut(|v| v.push(Mutex::new(i)));
        let g = c.lock(&mut key);
        assert_eq!(g.len(), i + 1);
        assert_eq!(g.iter().map(|x| **x).sum::<usize>(), i * (i + 1) / 2);
    }
    // And the locks really are the child's (a stale cache would lock freed memory or other locks).
    let g = c.lock(&mut key);
    assert!(c.child().iter().all(|m| m.is_locked()));
    drop(g);
    assert!(c.child().iter().all(|m| !m.is_locked()));
}

#[test]
fn retrying_collection_contended_by_sorted_collections_finishes() {
    let r = within(60, || {
        let locks: Arc<Vec<Mutex<u64>>> = Arc::new((0..8).map(|_| Mutex::new(0)).collect());
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let locks = locks.clone();
                std::thread::spawn(move || {
                    let mut key = ThreadKey::get().unwrap();
                    let mut mine = 0u64;
                    for i in 0..5000usize {
                        let idx: Vec<&Mutex<u64>> = (0..4)
                            .map(|k| &locks[(t * 3 + i * 5 + k * 7) % 8])
                            .collect();
                        let mut seen = std::collections::HashSet::new();
                        let idx: Vec<_> = idx
                            .into_iter()
                            .filter(|m| seen.insert(*m as *const _))
                            .collect();
                        mine += idx.len() as u64;
                        if t % 2 == 0 {
                            let c = RetryingLockCollection::try_new(idx).unwrap();
                            let mut g = c.lock(&mut key);
                            for x in g.iter_mut() {
                                **x += 1;
                            }
                        } else {
                            let c = LockCollection::try_new(idx).unwrap();
                            let mut g = c.lock(&mut key);
                            for x in g.iter_mut() {
                                **x += 1;
                            }
                        }
                    }
                    mine
                })
            })
            .collect();
        let expected: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        let mut key = ThreadKey::get().unwrap();
        let c = LockCollection::try_new(locks.iter().collect::<Vec<_>>()).unwrap();
        let g = c.lock(&mut key);
        (g.iter().map(|x| **x).sum::<u64>(), expected)
    });
    assert_eq!(r.0, r.1);
}

#[test]
fn poisonable_and_its_child_in_one_collection_are_a_duplicate() {
    let p = Poisonable::new(Mutex::new(1));
    assert!(LockCollection::try_new((&p, p.child())).is_none());
    assert!(RetryingLockCollection::try_new((&p, p.child())).is_none());
}

#[test]
fn lock_all_with_forty_locks_and_two_rank_lists() {
    let mut key = ThreadKey::get().unwrap();
    let v: Vec<Mutex<usize>> = (0..40).map(Mutex::new).collect();
    let a2: Mutex<usize, A2> = Mutex::ranked(100);
    let b1: Mutex<usize, B1> = Mutex::ranked(200);
    {
        let g = lock_all!(
            &mut key, v[39], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], b1,
            v[12], v[13], v[14], v[15], v[16], v[17], v[18], v[19], v[20], v[21], v[22], v[23], a2,
            v[25], v[26], v[27], v[28], v[29], v[30], v[31], v[32], v[33], v[34], v[35], v[36],
            v[37], v[38], v[0]
        );
        assert!(
            v.iter()
                .enumerate()
                .all(|(i, m)| m.is_locked() != (i == 11 || i == 24))
        );
        assert_eq!(*g.0 + *g.39 + *g.11 + *g.24, 39 + 200 + 100);
    }
    assert!(v.iter().all(|m| !m.is_locked()) && !a2.is_locked() && !b1.is_locked());
    let (i, j) = (std::hint::black_box(17usize), std::hint::black_box(17usize));
    let e = try_lock_all!(
        &mut key, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12],
        v[13], v[14], v[15], v[16], v[i], v[18], v[j]
    )
    .err();
    assert_eq!(
        e,
        Some(LockAllError::Duplicate {
            first: 17,
            second: 19
        })
    );
    assert!(v.iter().all(|m| !m.is_locked()));
}
