//! Review 89: user code that the lock module calls (a `Lockable`'s listing and guards, the `Index`/`Deref`
//! impls `lock_all!` evaluates, closures passed to collection methods) that blocks,
//! waits for a thread that locks one of the same locks, panics, or re-enters. Expected: it works, or a
//! clear panic, never a lost or double unlock, a lost or second key, an abort, or a deadlock the docs say
//! cannot happen.
//!
//! Checked under Miri (`cargo +nightly miri test -p trust-core --no-default-features --test adversarial_review89
//! -- an_index a_deref a_listing a_scoped a_guard_that`; no strict provenance for the two that contend a lock:
//! parking_lot's slow path). Not under Miri: the fiber test and the one that starts a child process.

use std::cell::Cell;
use std::ops::{Deref, Index};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use trust_core::lock::{
    LockAllError, LockCollection, Lockable, Mutex, MutexRef, OwnedLockCollection, OwnedLockable,
    Poisonable, RawLock, RetryingLockCollection, ThreadKey,
};
use trust_core::{lock_all, try_lock_all};

mod common;
use common::try_within;

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic>".to_string()
    }
}

/// Silences the expected panics' messages in `f` (the hook is process-wide, so it stays installed).
fn quiet() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info.payload().downcast_ref::<&str>().copied().unwrap_or("");
            let string = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .unwrap_or("");
            if !(text.starts_with("r89:") || string.starts_with("r89:")) {
                default(info);
            }
        }));
    });
}

// ---------------------------------------------------------------------------------------------
// (a), (b), (d): the code `lock_all!` evaluates for its arguments runs before any lock is taken.

/// An `Index` that counts its calls and panics on one of them.
struct Forks {
    locks: Vec<Mutex<u32>>,
    calls: Cell<usize>,
    panic_on: usize,
}

impl Index<usize> for Forks {
    type Output = Mutex<u32>;

    fn index(&self, i: usize) -> &Mutex<u32> {
        let n = self.calls.get() + 1;
        self.calls.set(n);
        if n == self.panic_on {
            panic!("r89: index call {n}");
        }
        &self.locks[i]
    }
}

#[test]
fn an_index_that_panics_on_its_second_call_leaves_nothing_held_and_the_key_usable() {
    quiet();
    let forks = Forks {
        locks: vec![Mutex::new(0), Mutex::new(0)],
        calls: Cell::new(0),
        panic_on: 2,
    };
    let mut key = ThreadKey::get().unwrap();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let (mut a, mut b) = lock_all!(&mut key, forks[0], forks[1]);
        *a += 1;
        *b += 1;
    }));
    assert_eq!(panic_message(caught.unwrap_err()), "r89: index call 2");
    assert!(!forks.locks[0].is_locked());
    assert!(!forks.locks[1].is_locked());
    // The same for `try_lock_all!` (calls 3 and 4; the 4th panics).
    let forks = Forks {
        panic_on: 4,
        ..forks
    };
    let caught = catch_unwind(AssertUnwindSafe(|| {
        try_lock_all!(&mut key, forks[1], forks[0]).map(|(mut a, mut b)| {
            *a += 1;
            *b += 1;
        })
    }));
    assert_eq!(panic_message(caught.unwrap_err()), "r89: index call 4");
    assert!(!forks.locks[0].is_locked() && !forks.locks[1].is_locked());
    // Calls 5 and 6 go through; the key was never lost.
    {
        let (mut a, mut b) = lock_all!(&mut key, forks[1], forks[0]);
        *a += 10;
        *b += 20;
    }
    assert_eq!(forks.calls.get(), 6);
    // Two index expressions that reach one lock are the run-time address check's.
    let zero = forks.calls.get() - 6;
    assert_eq!(
        try_lock_all!(&mut key, forks.locks[zero], forks.locks[0]).err(),
        Some(LockAllError::Duplicate {
            first: 0,
            second: 1
        })
    );
    drop(key);
    assert!(ThreadKey::get().is_some());
    let values: Vec<u32> = forks.locks.into_iter().map(Mutex::into_inner).collect();
    assert_eq!(values, [20, 10]);
}

/// A pointer whose `Deref` first waits for a scoped thread that locks `other` with its own key.
struct Waits<'a> {
    target: &'a Mutex<u32>,
    other: &'a Mutex<u32>,
    derefs: AtomicUsize,
}

impl Deref for Waits<'_> {
    type Target = Mutex<u32>;

    fn deref(&self) -> &Mutex<u32> {
        self.derefs.fetch_add(1, Ordering::SeqCst);
        thread::scope(|s| {
            s.spawn(|| {
                let mut key = ThreadKey::get().unwrap();
                *self.other.lock(&mut key) += 1;
            });
        });
        self.target
    }
}

#[test]
fn a_deref_argument_that_waits_for_a_thread_locking_another_argument_does_not_deadlock() {
    let result = try_within(5, || {
        let (a, b) = (Mutex::new(0u32), Mutex::new(0u32));
        let mut key = ThreadKey::get().unwrap();
        // `*p` names `b`, and its `Deref` waits for a thread that locks `a`, the other argument, in both
        // argument orders: `lock_all!` evaluates every argument before it takes any lock.
        let p = Waits {
            target: &b,
            other: &a,
            derefs: AtomicUsize::new(0),
        };
        for _ in 0..3 {
            let (mut ga, mut gb) = lock_all!(&mut key, a, *p);
            *ga += 10;
            *gb += 1;
            drop((ga, gb));
            let (mut gb, mut ga) = lock_all!(&mut key, *p, a);
            *ga += 10;
            *gb += 1;
            drop((ga, gb));
            let got = try_lock_all!(&mut key, *p, a).map(|(mut gb, mut ga)| {
                *ga += 10;
                *gb += 1;
            });
            assert_eq!(got, Ok(()));
        }
        (
            p.derefs.load(Ordering::SeqCst),
            a.into_inner(),
            b.into_inner(),
        )
    });
    // 9 derefs, each one increment of `a` by another thread; 9 calls adding 10 to `a` and 1 to `b`.
    assert_eq!(result, Ok((9, 99, 9)));
}

// ---------------------------------------------------------------------------------------------
// (a), (c): a user `Lockable` whose listing waits for a thread that takes the same locks, or re-enters.

struct Waiting {
    m: Mutex<u32>,
    n: Mutex<u32>,
    listings: AtomicUsize,
    /// Listings that found this thread's key free.
    key_free: AtomicUsize,
    wait: AtomicBool,
}

impl Waiting {
    fn new() -> Self {
        Waiting {
            m: Mutex::new(0),
            n: Mutex::new(0),
            listings: AtomicUsize::new(0),
            key_free: AtomicUsize::new(0),
            wait: AtomicBool::new(true),
        }
    }
}

// SAFETY: always reports `m` and `n`, the two locks `guard` goes through.
unsafe impl Lockable for Waiting {
    type Guard<'g> = (MutexRef<'g, u32>, MutexRef<'g, u32>);

    fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
        self.listings.fetch_add(1, Ordering::SeqCst);
        if ThreadKey::get().is_some() {
            self.key_free.fetch_add(1, Ordering::SeqCst);
        }
        if self.wait.load(Ordering::SeqCst) {
            // Waits for another thread that takes both locks: fine only if no lock is held here.
            thread::scope(|s| {
                s.spawn(|| {
                    let mut key = ThreadKey::get().unwrap();
                    let (mut m, mut n) = lock_all!(&mut key, self.m, self.n);
                    *m += 1;
                    *n += 1;
                });
            });
        }
        self.m.raw_locks(out);
        self.n.raw_locks(out);
    }

    unsafe fn guard(&self) -> Self::Guard<'_> {
        // SAFETY: forwarded: the caller holds `m` and `n`, both reported above.
        unsafe { (self.m.guard(), self.n.guard()) }
    }
}

// SAFETY: it owns its two mutexes.
unsafe impl OwnedLockable for Waiting {}

fn counts(w: Waiting) -> (usize, usize, u32, u32) {
    (
        w.listings.into_inner(),
        w.key_free.into_inner(),
        w.m.into_inner(),
        w.n.into_inner(),
    )
}

#[test]
fn a_listing_that_waits_for_a_thread_taking_the_same_locks_never_runs_under_a_lock() {
    let result = try_within(5, || {
        let mut key = ThreadKey::get().unwrap();
        let mut out = Vec::new();

        let owned = OwnedLockCollection::new(Waiting::new());
        owned.scoped_lock(&mut key, |(m, n)| {
            **m += 10;
            **n += 100;
        });
        drop(owned.try_lock(&mut key).expect("free"));
        out.push(counts(owned.into_child()));

        let retrying = RetryingLockCollection::new(Waiting::new());
        retrying.scoped_lock(&mut key, |(m, n)| {
            **m += 10;
            **n += 100;
        });
        drop(retrying.try_lock(&mut key).expect("free"));
        out.push(counts(retrying.into_child()));

        let poisonable = Poisonable::new(Waiting::new());
        {
            let mut g = poisonable.lock(&mut key).unwrap();
            *g.0 += 10;
            *g.1 += 100;
        }
        drop(poisonable.try_lock(&mut key).expect("free").unwrap());
        out.push(counts(poisonable.into_child().unwrap()));

        // Lists once, when built (the key is out here: it is this test's).
        let sorted = LockCollection::new(Waiting::new());
        sorted.scoped_lock(&mut key, |(m, n)| {
            **m += 10;
            **n += 100;
        });
        drop(sorted.try_lock(&mut key).expect("free"));
        out.push(counts(sorted.into_child()));
        drop(key);

        // With the key free, a listing sees it free (and gives it back).
        let sorted = LockCollection::new(Waiting::new());
        let mut key = ThreadKey::get().expect("the listing gave the key back");
        drop(sorted.lock(&mut key));
        out.push(counts(sorted.into_child()));
        out
    });
    // (listings, listings that found the key free, m, n): each listing is one increment of both by
    // another thread; no listing ever found the key free while a `lock` held it.
    assert_eq!(
        result,
        Ok(vec![
            (2, 0, 12, 102),
            (2, 0, 12, 102),
            (2, 0, 12, 102),
            (1, 0, 11, 101),
            (1, 1, 1, 1),
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// (b), (c): a closure passed to `scoped_lock` re-enters and panics.

#[test]
fn a_scoped_closure_that_reenters_then_panics_gives_back_the_key_and_every_lock_once() {
    quiet();
    let (a, b) = (Mutex::new(0u32), Mutex::new(0u32));
    let both = LockCollection::try_new((&a, &b)).unwrap();
    let key = ThreadKey::get().unwrap();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        both.scoped_lock(key, |(ga, gb)| {
            // No second key inside, a peek at the collection waits for nothing, and the locks are held.
            assert!(ThreadKey::get().is_none());
            assert_eq!(
                format!("{both:?}"),
                "LockCollection { child: (Mutex { data: <locked>, .. }, Mutex { data: <locked>, .. }), .. }"
            );
            **ga += 1;
            **gb += 2;
            panic!("r89: inside scoped_lock");
        })
    }));
    assert_eq!(
        panic_message(caught.unwrap_err()),
        "r89: inside scoped_lock"
    );
    assert!(!a.is_locked() && !b.is_locked());
    // The key came back exactly once.
    let mut key = ThreadKey::get().expect("the by-value key came back");
    assert!(ThreadKey::get().is_none());
    assert_eq!(both.scoped_lock(&mut key, |(ga, gb)| (**ga, **gb)), (1, 2));
    drop(key);
    drop(both);
    assert_eq!((a.into_inner(), b.into_inner()), (1, 2));
}

// ---------------------------------------------------------------------------------------------
// (b): a user `Lockable` whose `guard` panics part-way (documented: "It should not panic").

struct Hooked {
    a: Mutex<u32>,
    b: Mutex<u32>,
    c: Mutex<u32>,
    /// `guard` panics after handing this many locks to guards (3: never).
    panic_after: AtomicUsize,
}

// SAFETY: reports `a`, `b`, `c`, the locks `guard` goes through.
unsafe impl Lockable for Hooked {
    type Guard<'g> = (MutexRef<'g, u32>, MutexRef<'g, u32>, MutexRef<'g, u32>);

    fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
        self.a.raw_locks(out);
        self.b.raw_locks(out);
        self.c.raw_locks(out);
    }

    unsafe fn guard(&self) -> Self::Guard<'_> {
        let after = self.panic_after.load(Ordering::SeqCst);
        // SAFETY: forwarded: the caller holds all three.
        let ga = unsafe { self.a.guard() };
        if after == 1 {
            panic!("r89: guard after one");
        }
        // SAFETY: as above.
        let gb = unsafe { self.b.guard() };
        if after == 2 {
            panic!("r89: guard after two");
        }
        // SAFETY: as above.
        (ga, gb, unsafe { self.c.guard() })
    }
}

// SAFETY: owns its three mutexes.
unsafe impl OwnedLockable for Hooked {}

#[test]
fn a_guard_that_panics_part_way_releases_what_it_handed_out_keeps_the_rest_held_and_gives_the_key_back()
 {
    quiet();
    let result = try_within(5, || {
        let mut out = Vec::new();
        for after in [1, 2] {
            let owned = OwnedLockCollection::new(Hooked {
                a: Mutex::new(0),
                b: Mutex::new(0),
                c: Mutex::new(0),
                panic_after: AtomicUsize::new(after),
            });
            let key = ThreadKey::get().unwrap();
            let caught = catch_unwind(AssertUnwindSafe(|| drop(owned.lock(key))));
            let message = panic_message(caught.unwrap_err());
            // The key (by value) came back; a later try refuses with it and takes nothing.
            let key = ThreadKey::get().expect("the key came back");
            let key = owned.try_lock(key).expect_err("b or c still held");
            drop(key);
            let mut child = owned.into_child();
            out.push((
                message,
                child.a.is_locked(),
                child.b.is_locked(),
                child.c.is_locked(),
                *child.a.get_mut(),
            ));
        }
        out
    });
    assert_eq!(
        result,
        Ok(vec![
            ("r89: guard after one".to_string(), false, true, true, 0),
            ("r89: guard after two".to_string(), false, false, true, 0),
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// (b): `with_child_mut` whose closure panics over a child whose listing panics too.

struct ListsBadly {
    m: Mutex<u64>,
    refuse: AtomicBool,
}

// SAFETY: whenever `raw_locks` returns, it has reported `m`, the one lock `guard` goes through.
unsafe impl Lockable for ListsBadly {
    type Guard<'g> = MutexRef<'g, u64>;

    fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
        if self.refuse.load(Ordering::SeqCst) {
            panic!("r89: listing refused");
        }
        self.m.raw_locks(out);
    }

    unsafe fn guard(&self) -> Self::Guard<'_> {
        // SAFETY: forwarded: the caller holds `m`.
        unsafe { self.m.guard() }
    }
}

// SAFETY: owns its one mutex.
unsafe impl OwnedLockable for ListsBadly {}

const CHILD: &str = "TRUST_REVIEW89_CHILD";

/// Run in a child process (an abort would end this test binary): a closure that panics inside
/// `with_child_mut` over a child whose listing then panics as well.
#[test]
fn with_child_mut_whose_closure_and_relisting_both_panic_does_not_abort() {
    if std::env::var_os(CHILD).is_some() {
        quiet();
        let mut c = LockCollection::new(ListsBadly {
            m: Mutex::new(7),
            refuse: AtomicBool::new(false),
        });
        let caught = catch_unwind(AssertUnwindSafe(|| {
            c.with_child_mut(|child| {
                child.refuse.store(true, Ordering::SeqCst);
                panic!("r89: closure panicked");
            })
        }));
        // The closure's panic comes back; the collection refuses to lock rather than taking nothing.
        assert_eq!(panic_message(caught.unwrap_err()), "r89: closure panicked");
        let mut key = ThreadKey::get().unwrap();
        let lock = catch_unwind(AssertUnwindSafe(|| drop(c.lock(&mut key))));
        assert!(
            panic_message(lock.unwrap_err()).starts_with("this `LockCollection` cannot be locked")
        );
        let mut child = c.into_child();
        assert!(!child.m.is_locked());
        assert_eq!(*child.m.get_mut(), 7);
        println!("r89 child: done");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let output = try_within(20, move || {
        std::process::Command::new(exe)
            .args([
                "--exact",
                "with_child_mut_whose_closure_and_relisting_both_panic_does_not_abort",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap()
    })
    .expect("the child process ended");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("r89 child: done"),
        "child: {:?}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
}

// ---------------------------------------------------------------------------------------------
// (a), (c) in a fiber: a listing that suspends the fiber (an `apply` to the other worker, whose closure takes
// the same locks with that worker's key) while the fiber has its worker's key lent to the collection's `lock`.
// Not under Miri (fibers switch stacks).

static FM: Mutex<u32> = Mutex::new(0);
static FN: Mutex<u32> = Mutex::new(0);

/// Lists `FM` and `FN`, after an `apply` to `other` that locks both there.
struct RemoteListing {
    other: trust_core::Trust<()>,
    listings: AtomicUsize,
}

// SAFETY: always reports `FM` and `FN`, the two locks `guard` goes through.
unsafe impl Lockable for RemoteListing {
    type Guard<'g> = (MutexRef<'static, u32>, MutexRef<'static, u32>);

    fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
        self.listings.fetch_add(1, Ordering::SeqCst);
        let other_had_a_key = self.other.apply(|_| {
            let Some(mut key) = ThreadKey::get() else {
                return false;
            };
            let (mut m, mut n) = lock_all!(&mut key, FM, FN);
            *m += 1;
            *n += 1;
            true
        });
        assert!(other_had_a_key, "r89: the other worker's key was out");
        FM.raw_locks(out);
        FN.raw_locks(out);
    }

    unsafe fn guard(&self) -> Self::Guard<'_> {
        // SAFETY: forwarded: the caller holds `FM` and `FN`.
        unsafe { (FM.guard(), FN.guard()) }
    }
}

#[test]
fn a_fiber_whose_listing_suspends_it_on_an_apply_that_takes_the_same_locks_finishes() {
    let result = try_within(10, || {
        let rt = trust_core::Runtime::builder()
            .workers(2)
            .build()
            .expect("the only runtime of this test binary");
        let trusts = [rt.trustee(0).entrust(()), rt.trustee(1).entrust(())];
        let fiber = trust_core::spawn(move || {
            let here = trust_core::local_trustee().index();
            let listing = RemoteListing {
                other: trusts[1 - here].clone(),
                listings: AtomicUsize::new(0),
            };
            let mut key = ThreadKey::get().expect("the worker's key is free");
            let retrying = RetryingLockCollection::try_new(listing).expect("distinct");
            for _ in 0..3 {
                retrying.scoped_lock(&mut key, |(m, n)| {
                    **m += 10;
                    **n += 100;
                });
            }
            // The same through an owned-order collection over the same listing.
            let listing = retrying.into_child();
            let sorted = LockCollection::try_new(listing).expect("distinct");
            sorted.scoped_lock(&mut key, |(m, n)| {
                **m += 10;
                **n += 100;
            });
            let listing = sorted.into_child();
            let listings = listing.listings.load(Ordering::SeqCst);
            // Both workers' keys are back once the fiber drops its own.
            drop(key);
            let back = trusts[1 - here].apply(|_| ThreadKey::get().is_some());
            (listings, ThreadKey::get().is_some(), back)
        });
        let out = fiber.join().unwrap();
        let values = trust_core::spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            let (m, n) = lock_all!(&mut key, FM, FN);
            (*m, *n)
        });
        (out, values.join().unwrap())
    });
    // The retrying collection lists in `try_new` (1) and at each lock (3), the sorting one once, when built (1):
    // 5 increments by the other worker; 4 locks adding 10 and 100.
    assert_eq!(result, Ok(((5, true, true), (45, 405))));
}
