//! Review 40: programs written to break the promises of `docs/lock.md` that no test held yet, or held only
//! in the easy case (poisoning, 64 locks, `try` forms under contention, keys and guards in fibers, delegated
//! closures and shutdown, `Debug` peeks, the collection table, `lock_all!`'s public support functions).
//!
//! Findings (each test's doc gives the measurement; all five are now stated in docs/lock.md, four as limits
//! whose tests stay ignored, and the table's counts held by the fifth):
//! - `a_lock_held_by_a_fiber_suspended_at_shutdown_is_released`: shutdown leaks suspended fibers without
//!   unwinding them, so a guard one holds is leaked: the lock stays held for good while the fiber's `join`
//!   reports a panic; the next blocking `lock` of it, anywhere, never returns.
//! - `the_public_macro_support_acquire_takes_locks_without_a_key_and_deadlocks`: the safe, public
//!   (`#[doc(hidden)]`) `trust_core::__private::acquire` takes any lock with no key at all; two threads that
//!   use it in opposite orders deadlock.
//! - `a_poison_guard_made_during_an_unwind_and_kept_is_not_poisoned_by_a_later_panic`: a `Poisonable`
//!   guard taken inside a `Drop` during an unwinding and kept after it is dropped by a *new* panic, and the
//!   lock is not poisoned (the guard remembered "already panicking" from when it was made).
//! - `debug_of_a_mutex_whose_data_waits_for_a_thread_that_locks_it_hangs`: `{:?}` holds the lock (no guard
//!   in sight) while the data's `Debug` joins a scoped thread that locks the same mutex: a hang, not the
//!   panic the peek gives on its own thread.
//! - `per_lock_allocations_match_the_collection_table`: the table's "no allocation" / "one small `Vec`" per
//!   `lock` is wrong for `Vec` children and for the retrying collection.

#[macro_use]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::{calibrate, child_ok, panic_message, rt, spawn_on};
use trust_core::lock::{
    LockAllError, LockCollection, Mutex, OwnedLockCollection, PoisonLockGuard, Poisonable,
    RefLockCollection, RetryingLockCollection, RwLock, ThreadKey,
};
use trust_core::{lock_all, lock_ranks, try_lock_all};

lock_ranks! {
    /// Above every unranked lock.
    Hi;
}

/// Counts this thread's allocations (for the "per `lock`" column of docs/lock.md's collection table).
struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to `System`; the count is a const thread-local without a destructor (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// How many allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

/// Waits (yielding the fiber) until `flag` is set, at most 5 s; whether it was.
fn fiber_wait(flag: &AtomicBool) -> bool {
    let start = Instant::now();
    while !flag.load(Ordering::SeqCst) {
        if start.elapsed() > Duration::from_secs(5) {
            return false;
        }
        trust_core::yield_now();
    }
    true
}

/// Promise (docs/lock.md:242-245, "a panic while one of its *write* guards lives sets a flag, and every
/// later `lock`/`try_lock`/`read` returns `Err(PoisonError)`"). The program takes a `Poisonable`'s write
/// guard inside a `Drop` that runs while a first panic unwinds, parks the guard (with the key, by value) in
/// an `Option` outside the `catch_unwind`, and, once that unwinding is over, moves the guard into a second
/// closure that writes through it and panics: a new panic, begun while the guard lives, whose unwinding
/// drops the guard. Measured: `is_poisoned()` is `false` afterwards and the next `lock` is `Ok` with the
/// half-done value 1. The guard records `std::thread::panicking()` when it is *made* (`PoisonGuard::panicking`)
/// and treats every later unwinding as that one. (`std::sync::Mutex` records the same flag the same way; the
/// doc promises more than either does.)
#[test]
#[ignore = "KNOWN LIMIT (docs/lock.md, Poisoning): review 40: a Poisonable guard made during an unwinding and kept past it is not poisoned by a later panic"]
fn a_poison_guard_made_during_an_unwind_and_kept_is_not_poisoned_by_a_later_panic() {
    let p = Poisonable::new(Mutex::new(0));
    type Slot<'p> = Option<PoisonLockGuard<'p, Mutex<i32>, ThreadKey>>;
    struct GrabOnUnwind<'s, 'p>(&'s mut Slot<'p>, &'p Poisonable<Mutex<i32>>);
    impl Drop for GrabOnUnwind<'_, '_> {
        fn drop(&mut self) {
            assert!(thread::panicking());
            let key = ThreadKey::get().expect("the key is free");
            *self.0 = Some(self.1.lock(key).expect("not poisoned yet"));
        }
    }
    let mut slot: Slot<'_> = None;
    let first = catch_unwind(AssertUnwindSafe(|| {
        let _grab = GrabOnUnwind(&mut slot, &p);
        panic!("first panic: no guard lives yet");
    }));
    assert_eq!(
        panic_message(first.unwrap_err()),
        "first panic: no guard lives yet"
    );
    assert!(!thread::panicking());
    assert!(!p.is_poisoned());
    let guard = slot.take().expect("the guard survived the first unwinding");
    assert!(ThreadKey::get().is_none(), "the guard keeps the key");
    let second = catch_unwind(AssertUnwindSafe(move || {
        let mut guard = guard;
        **guard += 1;
        panic!("second panic, under the guard");
    }));
    assert_eq!(
        panic_message(second.unwrap_err()),
        "second panic, under the guard"
    );
    let mut key = ThreadKey::get().expect("the guard's unwinding gave the key back");
    assert_eq!(
        (p.is_poisoned(), p.lock(&mut key).map(|g| **g).ok()),
        (true, None),
        "a panic began while the write guard lived and unwound through it: the lock must be poisoned"
    );
}

/// Promise (docs/lock.md:6-8, "every blocking acquisition needs this thread's `ThreadKey`"; :307-308, raw
/// acquisitions are `unsafe` for that reason). The expansion of `lock_all!` calls
/// `::trust_core::__private::acquire(&lock)` (docs/lock.md:139), a *safe* `pub fn` that blocks on any lock
/// and returns its guard, keyed by nothing (`lock/lock_all.rs:197`; `acquire_read`, the `try_` forms and
/// `nested_key`, which turns `&mut NestedKey<High>` into a `NestedKey<Low>`, are public and safe too). The
/// program: two threads, neither of which ever takes a `ThreadKey`, each `acquire`s one of two mutexes,
/// meet at a barrier, then `acquire` the other's. Measured: the child is still blocked when the watchdog
/// fires after 2 s (`WATCHDOG: .. still running after 2 s`): a deadlock in safe code. `#[doc(hidden)]`
/// keeps it out of the docs, not out of reach; these functions could be `unsafe fn` (the expansion already
/// sits in generated code that can say `unsafe`) or take the key.
#[test]
#[ignore = "BY DESIGN (docs/lock.md, intro: __private is the macros' hidden support): review 40: the safe public __private::acquire locks without a key: two threads deadlock in safe code"]
fn the_public_macro_support_acquire_takes_locks_without_a_key_and_deadlocks() {
    in_child!(
        "the_public_macro_support_acquire_takes_locks_without_a_key_and_deadlocks",
        2
    );
    let (a, b) = (Mutex::new(1), Mutex::new(2));
    let barrier = Barrier::new(2);
    let total = thread::scope(|s| {
        let t = s.spawn(|| {
            let ga = trust_core::__private::acquire(&a);
            barrier.wait();
            let gb = trust_core::__private::acquire(&b);
            *ga + *gb
        });
        let gb = trust_core::__private::acquire(&b);
        barrier.wait();
        let ga = trust_core::__private::acquire(&a);
        let here = *ga + *gb;
        drop((ga, gb));
        here + t.join().unwrap()
    });
    assert_eq!(total, 6);
    child_ok();
}

/// Promise (docs/lock.md:298-303: `{:?}` of a `Mutex` "prints the data if a try-lock gets it"; a blocking
/// lock inside the data's own `Debug` "panics, naming the problem, instead of risking a deadlock"; :280-286:
/// "a thread that *holds a guard* and then waits for another thread ... deadlocks"). The program prints a
/// static mutex whose data's `Debug` runs a `thread::scope` whose thread takes its own key and locks that
/// same mutex (as a helper that computes part of the text on another thread would). The printing thread
/// holds no guard and called no `lock`. Measured: hang (the watchdog fires after 2 s): the peek's try-lock
/// holds the mutex while `Debug` joins, and the scoped thread waits for it forever. The peek's protection is
/// per thread; the Limits entry on waiting for other threads speaks of guards only, and `{:?}` holds a lock
/// without one. At least the doc should say so.
#[test]
#[ignore = "KNOWN LIMIT (docs/lock.md, Limits: waiting for another thread): review 40: {:?} of a Mutex whose data's Debug joins a thread that locks the same Mutex hangs"]
fn debug_of_a_mutex_whose_data_waits_for_a_thread_that_locks_it_hangs() {
    in_child!(
        "debug_of_a_mutex_whose_data_waits_for_a_thread_that_locks_it_hangs",
        2
    );
    struct AsksAHelper;
    static SHARED: Mutex<AsksAHelper> = Mutex::new(AsksAHelper);
    impl fmt::Debug for AsksAHelper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let helper = thread::scope(|s| {
                s.spawn(|| {
                    let mut key = ThreadKey::get().expect("a new thread's key");
                    SHARED.scoped_lock(&mut key, |_| "helper")
                })
                .join()
                .unwrap()
            });
            write!(f, "{helper}")
        }
    }
    assert_eq!(format!("{SHARED:?}"), "Mutex { data: helper, .. }");
    child_ok();
}

/// Promise (docs/lock.md:9-10 and :34: `lock_all!` takes its locks "all or nothing, in one global order:
/// by rank, then by address"; `try_lock_all!` "Never waits: Err(WouldBlock) with nothing held, or
/// Err(Duplicate) if a lock appears twice"; the existing tests stop at 40 locks). 64 locks, 32 unranked and
/// 32 of rank `Hi`, named interleaved and in reverse index order. Measured: (1) while the 64 guards live,
/// another thread's `try_lock` fails on all 64, guards come back in argument order (values 131, 31, .., 100,
/// 0); afterwards all 64 are free; (2) with `hi[17]` held by another thread, `try_lock_all!` of the 64 is
/// `Err(WouldBlock)` and leaves the other 63 free; (3) the same call with its last argument `lo[z]`, `z == 31`
/// at run time (argument 1 is `lo[31]`) is `Err(Duplicate { first: 1, second: 63 })` and takes nothing.
#[test]
fn sixty_four_locks_over_two_ranks_all_or_nothing_and_the_exact_duplicate() {
    let lo: [Mutex<u32>; 32] = std::array::from_fn(|i| Mutex::new(i as u32));
    let hi: [Mutex<u32, Hi>; 32] = std::array::from_fn(|i| Mutex::ranked(100 + i as u32));
    let free_count = |skip: Option<usize>| {
        thread::scope(|s| {
            s.spawn(|| {
                let mut key = ThreadKey::get().unwrap();
                let lo_free = lo.iter().filter(|m| m.try_lock(&mut key).is_ok()).count();
                let hi_free = (0..32)
                    .filter(|&i| Some(i) != skip && hi[i].try_lock(&mut key).is_ok())
                    .count();
                lo_free + hi_free
            })
            .join()
            .unwrap()
        })
    };
    let mut key = ThreadKey::get().unwrap();
    {
        let g = lock_all!(
            &mut key, hi[31], lo[31], hi[30], lo[30], hi[29], lo[29], hi[28], lo[28], hi[27],
            lo[27], hi[26], lo[26], hi[25], lo[25], hi[24], lo[24], hi[23], lo[23], hi[22], lo[22],
            hi[21], lo[21], hi[20], lo[20], hi[19], lo[19], hi[18], lo[18], hi[17], lo[17], hi[16],
            lo[16], hi[15], lo[15], hi[14], lo[14], hi[13], lo[13], hi[12], lo[12], hi[11], lo[11],
            hi[10], lo[10], hi[9], lo[9], hi[8], lo[8], hi[7], lo[7], hi[6], lo[6], hi[5], lo[5],
            hi[4], lo[4], hi[3], lo[3], hi[2], lo[2], hi[1], lo[1], hi[0], lo[0]
        );
        assert_eq!(free_count(None), 0, "all 64 are held");
        assert_eq!((*g.0, *g.1, *g.28, *g.62, *g.63), (131, 31, 117, 100, 0));
    }
    assert_eq!(free_count(None), 64);

    // hi[17] held elsewhere: nothing else stays held.
    let (hold_tx, hold_rx) = mpsc::channel::<()>();
    let (held_tx, held_rx) = mpsc::channel::<()>();
    thread::scope(|s| {
        let h17 = &hi[17];
        s.spawn(move || {
            let mut key = ThreadKey::get().unwrap();
            let _g = h17.lock(&mut key);
            held_tx.send(()).unwrap();
            hold_rx.recv().unwrap();
        });
        held_rx.recv().unwrap();
        let r = try_lock_all!(
            &mut key, hi[31], lo[31], hi[30], lo[30], hi[29], lo[29], hi[28], lo[28], hi[27],
            lo[27], hi[26], lo[26], hi[25], lo[25], hi[24], lo[24], hi[23], lo[23], hi[22], lo[22],
            hi[21], lo[21], hi[20], lo[20], hi[19], lo[19], hi[18], lo[18], hi[17], lo[17], hi[16],
            lo[16], hi[15], lo[15], hi[14], lo[14], hi[13], lo[13], hi[12], lo[12], hi[11], lo[11],
            hi[10], lo[10], hi[9], lo[9], hi[8], lo[8], hi[7], lo[7], hi[6], lo[6], hi[5], lo[5],
            hi[4], lo[4], hi[3], lo[3], hi[2], lo[2], hi[1], lo[1], hi[0], lo[0]
        );
        assert_eq!(r.err(), Some(LockAllError::WouldBlock));
        assert_eq!(
            free_count(Some(17)),
            63,
            "every lock but hi[17] is free again"
        );
        hold_tx.send(()).unwrap();
    });

    let z = std::hint::black_box(31);
    let r = try_lock_all!(
        &mut key, hi[31], lo[31], hi[30], lo[30], hi[29], lo[29], hi[28], lo[28], hi[27], lo[27],
        hi[26], lo[26], hi[25], lo[25], hi[24], lo[24], hi[23], lo[23], hi[22], lo[22], hi[21],
        lo[21], hi[20], lo[20], hi[19], lo[19], hi[18], lo[18], hi[17], lo[17], hi[16], lo[16],
        hi[15], lo[15], hi[14], lo[14], hi[13], lo[13], hi[12], lo[12], hi[11], lo[11], hi[10],
        lo[10], hi[9], lo[9], hi[8], lo[8], hi[7], lo[7], hi[6], lo[6], hi[5], lo[5], hi[4], lo[4],
        hi[3], lo[3], hi[2], lo[2], hi[1], lo[1], hi[0], lo[z]
    );
    assert_eq!(
        r.err(),
        Some(LockAllError::Duplicate {
            first: 1,
            second: 63
        })
    );
    assert_eq!(free_count(None), 64);
}

/// Promise (docs/lock.md:242-248: `Poisonable` wraps "a lock, or a tuple, array or `Vec` of them"; "a
/// `Poisonable` is itself `Lockable`", its guard inside is a `PoisonResult`; poisoned "until
/// `clear_poison()`"). The program nests one in another, `Poisonable<Poisonable<Mutex<i32>>>`, writes 5
/// under the outer write guard and panics. Measured: both levels are poisoned; the outer lock is
/// `Err(PoisonError)` whose guard holds the inner `Err` with the value 5; clearing the outer level only
/// gives `Ok(Err(..))`; clearing the inner too gives `Ok(Ok(5))`; a panic under a *read* of the same shape
/// (over an `RwLock`) poisons neither level.
#[test]
fn nested_poisonables_poison_both_levels_and_clear_one_at_a_time() {
    let mut key = ThreadKey::get().unwrap();
    let p = Poisonable::new(Poisonable::new(Mutex::new(0)));
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut outer = p.lock(&mut key).expect("fresh");
        let inner = outer.as_mut().expect("fresh inside");
        ***inner = 5;
        panic!("under both levels");
    }));
    assert_eq!(panic_message(r.unwrap_err()), "under both levels");
    assert_eq!((p.is_poisoned(), p.child().is_poisoned()), (true, true));
    {
        let outer = p.lock(&mut key).unwrap_err().into_inner();
        let inner = outer.as_ref().unwrap_err().get_ref();
        assert_eq!(***inner, 5);
    }
    p.clear_poison();
    assert_eq!(
        p.lock(&mut key)
            .map(|outer| outer.as_ref().map(|g| ***g).map_err(|e| ***e.get_ref()))
            .ok(),
        Some(Err(5))
    );
    p.child().clear_poison();
    assert_eq!(
        p.lock(&mut key)
            .map(|outer| outer.as_ref().map(|g| ***g).map_err(|e| ***e.get_ref()))
            .ok(),
        Some(Ok(5))
    );

    let rw = Poisonable::new(Poisonable::new(RwLock::new(7)));
    let r = catch_unwind(AssertUnwindSafe(|| {
        let outer = rw.read(&mut key).expect("fresh");
        assert_eq!(***outer.as_ref().expect("fresh inside"), 7);
        panic!("under two read guards");
    }));
    assert!(r.is_err());
    assert_eq!((rw.is_poisoned(), rw.child().is_poisoned()), (false, false));
}

/// Promise (docs/lock.md:34, "Never waits: Err(WouldBlock) with nothing held"; :187-188, collections'
/// `try_lock`/`try_read`; :221, "a failed try gives the context back"; `Poisonable::try_lock`: `Err(key)`).
/// Helper threads hold `w` (write) and `r` (read) in one `lock_all!`, a `Poisonable<RwLock>` `pw` with their key
/// by value, and part 1 of an owned collection through a context. Every `try` form runs against them and a
/// free mutex `m`, the key passed by value where allowed (a lost key would show). Measured: each gives back
/// exactly its key or context, shared reads succeed (2, 5), `try_lock_all!(read r, m)` is `Ok((2, 3))`,
/// `try_lock_all!(r, m)` is `Err(WouldBlock)` with `m` free, and after the helpers go everything is free.
#[test]
fn every_try_form_under_contention_gives_back_exactly_what_it_was_given() {
    let (w, r, m, pw) = (
        RwLock::new(1),
        RwLock::new(2),
        Mutex::new(3),
        Poisonable::new(RwLock::new(4)),
    );
    let owned = OwnedLockCollection::new((RwLock::new(5), RwLock::new(6)));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let done_rx = std::sync::Mutex::new(done_rx);
    let wait_done = || {
        held_tx.send(()).unwrap();
        let _ = done_rx.lock().unwrap().recv();
    };
    thread::scope(|s| {
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            let _g = lock_all!(&mut key, w, read r);
            wait_done();
        });
        s.spawn(|| {
            let _g = pw.lock(ThreadKey::get().unwrap()).expect("not poisoned");
            wait_done();
        });
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            let (_g1, _ctx) = owned.context(&mut key).lock_1();
            wait_done();
        });
        (0..3).for_each(|_| held_rx.recv().unwrap());
        let key = ThreadKey::get().unwrap();
        let key = RwLock::unlock_read(r.try_read(key).expect("readers share"));
        let key = r.try_write(key).expect_err("a reader holds r");
        let key = w.try_write(key).expect_err("a writer holds w");
        let mut key = w.try_read(key).expect_err("a writer holds w");
        let rm = LockCollection::try_new((&r, &m)).unwrap();
        key = rm.try_lock(key).map(|_| ()).expect_err("r is read-held");
        assert!(m.try_lock(&mut key).is_ok(), "m is free again");
        let r_only = LockCollection::try_new((&r,)).unwrap();
        assert_eq!(r_only.try_read(&mut key).map(|g| *g.0).ok(), Some(2));
        let mw = RetryingLockCollection::try_new((&m, &w)).unwrap();
        key = mw.try_lock(key).map(|_| ()).expect_err("w is write-held");
        assert!(m.try_lock(&mut key).is_ok(), "m is free again");
        key = pw
            .try_lock(key)
            .map(|_| ())
            .expect_err("pw is held elsewhere");
        {
            let (g0, ctx) = owned
                .context(&mut key)
                .try_read_0()
                .expect("part 0 is free");
            assert_eq!(*g0, 5);
            let ctx = ctx
                .try_lock_1()
                .map(|_| ())
                .expect_err("part 1 is held elsewhere");
            assert!(ctx.try_read_1().is_err(), "part 1 is write-held");
        }
        assert_eq!(
            try_lock_all!(&mut key, read r, m).map(|(r, m)| (*r, *m)),
            Ok((2, 3))
        );
        assert_eq!(
            try_lock_all!(&mut key, r, m).map(|(r, m)| (*r, *m)),
            Err(LockAllError::WouldBlock)
        );
        assert!(m.try_lock(&mut key).is_ok(), "m is free again");
        (0..3).for_each(|_| done_tx.send(()).unwrap());
    });
    let mut k = ThreadKey::get().unwrap();
    // One statement each: a guard made with `&mut k` keeps the key until it drops.
    let w_free = w.try_write(&mut k).is_ok();
    let r_free = r.try_write(&mut k).is_ok();
    let pw_free = pw.try_lock(&mut k).is_ok();
    let after = (w_free, r_free, pw_free);
    assert_eq!(
        (after, owned.try_lock(&mut k).map(|g| (*g.0, *g.1)).ok()),
        ((true, true, true), Some((5, 6)))
    );
}

/// Promise (docs/lock.md:290-293, "A fiber holds its worker's key": "while one fiber keeps it across a
/// suspension ..., the worker's other fibers get `None`"; :236-237, a panic "releases every lock; a key held by
/// value is dropped and returns to its thread"). Fiber A on worker 0 locks `M` with worker 0's key *by value*
/// and suspends (`yield_now`) until told; meanwhile fiber B on worker 0 asks for the key, and a closure
/// delegated to worker 0 from the test thread asks too and looks at `M`. Then A panics, still suspended-over
/// guard and key in its frame. Measured: B gets `None` during; the delegated closure gets `None` and sees `M`
/// locked (the doc names fibers only: a delegated closure on that worker is refused as well); A's join is
/// `Err` with its message; B then gets the key and reads 8 (A's write, no poisoning); a later delegated
/// closure on worker 0 gets the key and reads 8.
#[test]
fn a_fiber_holding_its_workers_key_across_a_suspension_then_panicking_gives_key_and_lock_back() {
    in_child!(
        "a_fiber_holding_its_workers_key_across_a_suspension_then_panicking_gives_key_and_lock_back",
        20
    );
    calibrate();
    static M: Mutex<u32> = Mutex::new(7);
    let holding = Arc::new(AtomicBool::new(false));
    let probed = Arc::new(AtomicBool::new(false));
    let (h, p) = (holding.clone(), probed.clone());
    let a: trust_core::Fiber<()> = spawn_on(0, move || {
        let mut g = M.lock(ThreadKey::get().expect("worker 0's key is free"));
        *g += 1;
        h.store(true, Ordering::SeqCst);
        assert!(fiber_wait(&p));
        panic!("fiber A panics holding worker 0's key and M");
    });
    let (h, p) = (holding.clone(), probed.clone());
    let b = spawn_on(0, move || {
        assert!(fiber_wait(&h));
        let during = ThreadKey::get().is_none();
        assert!(fiber_wait(&p));
        let start = Instant::now();
        let after = loop {
            if let Some(mut key) = ThreadKey::get() {
                break Some(*M.lock(&mut key));
            }
            if start.elapsed() > Duration::from_secs(5) {
                break None;
            }
            trust_core::yield_now();
        };
        (during, after)
    });
    common::eventually("fiber A never locked", || holding.load(Ordering::SeqCst));
    let on0 = rt().trustee(0).entrust(());
    let in_closure = on0.apply(|_| (ThreadKey::get().is_none(), M.is_locked()));
    probed.store(true, Ordering::SeqCst);
    assert_eq!(in_closure, (true, true));
    assert_eq!(b.join().unwrap(), (true, Some(8)));
    assert_eq!(
        panic_message(a.join().unwrap_err()),
        "fiber A panics holding worker 0's key and M"
    );
    assert_eq!(
        on0.apply(|_| ThreadKey::get().map(|mut k| *M.lock(&mut k))),
        Some(8)
    );
    child_ok();
}

/// Promise (docs/lock.md:280-289: release guards before a blocking `apply`, which deadlocks only "if that
/// thread locks the same lock"; :290-293, a fiber's key is its worker's). A fiber on worker 0 holds `M`
/// (guard borrowing worker 0's key) across two `apply`s: one to a value on worker 0 (the local shortcut runs
/// the closure inline, on the same thread) and one to a value on worker 1; each closure asks for its thread's
/// key and, if it gets one, only *tries* `M`. Measured: the inline closure gets no key (`None`: the fiber's
/// guard has it), worker 1's closure gets worker 1's key and `try_lock` gives it back (`Err`), both answers
/// come back (no hang), and after the fiber ends `M` holds 42 and is free.
#[test]
fn a_guard_held_across_an_inline_and_a_remote_apply_meets_no_key_and_a_refused_try() {
    in_child!(
        "a_guard_held_across_an_inline_and_a_remote_apply_meets_no_key_and_a_refused_try",
        20
    );
    calibrate();
    static M: Mutex<u32> = Mutex::new(0);
    let on0 = rt().trustee(0).entrust(10u32);
    let on1 = rt().trustee(1).entrust(20u32);
    let f = spawn_on(0, move || {
        let mut key = ThreadKey::get().expect("worker 0's key");
        let mut g = M.lock(&mut key);
        let inline = on0.apply(|v| {
            *v += 1;
            (ThreadKey::get().map(|mut k| M.try_lock(&mut k).is_ok()), *v)
        });
        let remote = on1.apply(|v| {
            *v += 1;
            (ThreadKey::get().map(|mut k| M.try_lock(&mut k).is_ok()), *v)
        });
        *g = 42;
        drop(g);
        (inline, remote)
    });
    assert_eq!(f.join().unwrap(), ((None, 11), (Some(false), 21)));
    let mut key = ThreadKey::get().unwrap();
    assert_eq!(M.try_lock(&mut key).map(|g| *g).ok(), Some(42));
    child_ok();
}

/// Promise (docs/lock.md:236-237, "A panic while holding guards unwinds through them, which releases every
/// lock"; :3-8, no thread can be left waiting for a lock by construction; docs/delegation.md:192-194, "A `join`
/// of a fiber it finds suspended returns the shutdown panic"). A fiber on worker 0 locks a static mutex with
/// worker 0's key and suspends in `trust_core::sleep(60 s)` holding the guard (allowed: the doc only advises
/// against it, the cost it names is the worker's other fibers going keyless). The test thread shuts the
/// runtime down, joins the fiber, and tries the mutex. Measured: the join is `Err` with the shutdown panic,
/// but the mutex stays locked (`is_locked()` true, `try_lock` gives the key back): shutdown leaks suspended
/// fibers without unwinding them (`worker/fiber.rs` `abandon`), so their guards are leaked like a
/// `mem::forget`, and any later blocking `lock` of that mutex, on any thread, waits forever for a holder that
/// no longer exists. Neither `docs/lock.md` (its leak entry, :274-277, speaks of `mem::forget` only) nor
/// `docs/delegation.md` says that a lock held by a suspended fiber stays held after shutdown.
#[test]
#[ignore = "KNOWN LIMIT (docs/lock.md, Limits: leaking a guard): review 40: a fiber suspended at shutdown holding a guard leaves its lock held forever, though its join says it panicked"]
fn a_lock_held_by_a_fiber_suspended_at_shutdown_is_released() {
    in_child!(
        "a_lock_held_by_a_fiber_suspended_at_shutdown_is_released",
        15
    );
    calibrate();
    static M: Mutex<u32> = Mutex::new(1);
    let f: trust_core::Fiber<u32> = spawn_on(0, || {
        let mut key = ThreadKey::get().expect("worker 0's key");
        let mut g = M.lock(&mut key);
        *g += 1;
        trust_core::sleep(Duration::from_secs(60));
        *g
    });
    common::eventually("the fiber never locked", || M.is_locked());
    rt().shutdown();
    let joined = f
        .join()
        .map_err(panic_message)
        .map_err(|m| m.contains("shut down"));
    let mut key = ThreadKey::get().unwrap();
    assert_eq!(
        (joined, M.is_locked(), M.try_lock(&mut key).map(|g| *g).ok()),
        (Err(true), false, Some(2)),
        "the fiber that held M is gone (its join returned a panic), so M must be free"
    );
    child_ok();
}

/// Promise (docs/lock.md:179-184, the collection table's "per `lock`" column: `LockCollection` and
/// `RefLockCollection` "no allocation", `OwnedLockCollection` and `RetryingLockCollection` "one small `Vec`";
/// :186, children include "arrays, `Vec`, `Box<[_]>`"). The program counts this thread's allocations (a
/// counting global allocator) across one uncontended `lock` + unlock of 8 mutexes, each collection over an
/// array child and over a `Vec` child. Measured `[0, 1, 0, 1, 2, 3, 3, 4]` (array, `Vec` for `LockCollection`,
/// `RefLockCollection`, `OwnedLockCollection`, `RetryingLockCollection`): a `Vec` (or `Box<[_]>`) child costs
/// one more allocation in every collection (the `Guards` box of its guards), so "no allocation" holds for
/// fixed-size children only; the owned collection's "one small `Vec`" is built by `push` (`unsorted_locks`)
/// and grows, 2 allocations for 8 locks; the retrying collection makes that list *and* the `held` list of
/// `try_others` (3 for 8 locks), not one `Vec`. Fixed in the doc: the table gives these counts, which this
/// test now holds.
#[test]
fn per_lock_allocations_match_the_collection_table() {
    let mut key = ThreadKey::get().unwrap();
    let arr = || -> [Mutex<u8>; 8] { std::array::from_fn(|i| Mutex::new(i as u8)) };
    let vec = || -> Vec<Mutex<u8>> { (0..8).map(Mutex::new).collect() };
    let (ba, bv) = (LockCollection::new(arr()), LockCollection::new(vec()));
    let (ra, rv) = (arr(), vec());
    let (ra, rv) = (RefLockCollection::new(&ra), RefLockCollection::new(&rv));
    let (oa, ov) = (
        OwnedLockCollection::new(arr()),
        OwnedLockCollection::new(vec()),
    );
    let (ta, tv) = (
        RetryingLockCollection::new(arr()),
        RetryingLockCollection::new(vec()),
    );
    let measured = [
        allocations(|| drop(ba.lock(&mut key))),
        allocations(|| drop(bv.lock(&mut key))),
        allocations(|| drop(ra.lock(&mut key))),
        allocations(|| drop(rv.lock(&mut key))),
        allocations(|| drop(oa.lock(&mut key))),
        allocations(|| drop(ov.lock(&mut key))),
        allocations(|| drop(ta.lock(&mut key))),
        allocations(|| drop(tv.lock(&mut key))),
    ];
    assert_eq!(
        measured,
        [0, 1, 0, 1, 2, 3, 3, 4],
        "per lock, as docs/lock.md's table says (array child, Vec child): LockCollection and \
         RefLockCollection none (one for a Vec child), Owned 2 (3), Retrying 3 (4)"
    );
}

/// Promise (docs/lock.md:236-238, a panic "releases every lock; a key held by value is dropped and returns to
/// its thread"; :242-244, `Poisonable` is poisoned by "a panic while one of its *write* guards lives";
/// docs/delegation.md:100, a closure's panic is resumed by the issuer). Closures delegated to worker 1 take
/// worker 1's key by value, lock a `Poisonable<Mutex>` and a plain `Mutex` through it, write, and panic: once
/// from a plain thread, once from a fiber on worker 1 (the local shortcut: the closure runs inline in the
/// fiber, which itself holds no key). Measured: each issuer gets the closure's panic message back; the
/// `Poisonable` is poisoned with the half-done value 1 (then 2), the plain mutex holds 1 (then 2) unpoisoned;
/// afterwards the next closure on worker 1, and the fiber itself, get worker 1's key back, and both locks are
/// free.
#[test]
fn a_delegated_closure_that_panics_holding_the_workers_key_releases_and_poisons_exactly() {
    in_child!(
        "a_delegated_closure_that_panics_holding_the_workers_key_releases_and_poisons_exactly",
        20
    );
    calibrate();
    static P: Poisonable<Mutex<u32>> = Poisonable::new(Mutex::new(0));
    static M: Mutex<u32> = Mutex::new(0);
    fn write_and_panic(who: &str) {
        let key = ThreadKey::get().expect("worker 1's key is free");
        let mut p = match P.lock(key) {
            Ok(g) => g,
            Err(e) => e.into_inner(),
        };
        **p += 1;
        assert!(ThreadKey::get().is_none(), "the guard holds the key");
        panic!("{who} panics under the guard");
    }
    let on1 = rt().trustee(1).entrust(());
    let from_thread = catch_unwind(AssertUnwindSafe(|| {
        on1.apply(|_| {
            let mut key = ThreadKey::get().expect("worker 1's key is free");
            *M.lock(&mut key) += 1;
            drop(key);
            write_and_panic("the thread's closure")
        })
    }));
    assert_eq!(
        panic_message(from_thread.unwrap_err()),
        "the thread's closure panics under the guard"
    );
    assert_eq!(
        on1.apply(|_| ThreadKey::get().map(|mut k| (P.is_poisoned(), *M.lock(&mut k)))),
        Some((true, 1))
    );
    let on1_for_fiber = on1.clone();
    let fiber = spawn_on(1, move || {
        let inline = catch_unwind(AssertUnwindSafe(|| {
            on1_for_fiber.apply(|_| {
                let mut key = ThreadKey::get().expect("worker 1's key is free");
                *M.lock(&mut key) += 1;
                drop(key);
                write_and_panic("the fiber's inline closure")
            })
        }))
        .map_err(panic_message);
        let after = ThreadKey::get().map(|mut k| {
            let p = P.lock(&mut k).map_or_else(|e| ***e.get_ref(), |g| **g);
            (p, *M.lock(&mut k))
        });
        (inline, after)
    });
    assert_eq!(
        fiber.join().unwrap(),
        (
            Err("the fiber's inline closure panics under the guard".to_string()),
            Some((2, 2))
        )
    );
    let mut key = ThreadKey::get().unwrap();
    assert_eq!(
        (
            P.is_poisoned(),
            P.try_lock(&mut key).map(|r| r.is_err()).ok(),
            M.try_lock(&mut key).map(|g| *g).ok()
        ),
        (true, Some(true), Some(2))
    );
    child_ok();
}
