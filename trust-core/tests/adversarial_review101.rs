//! Review 101: `LockGuard::lock`, `try_lock`, `read` and `try_read` over data and a key with no collection
//! (commit 3b09dbc, `happylock`'s `LockGuard::lock(&data, key)`), attacked with what a hostile user writes.
//!
//! Held when written:
//! - one global order: nested children (`&(&high, &[&c, &b], (&low, &a))`) are taken unranked-by-address
//!   first, then by rank, whatever the nesting and naming order; seven threads naming the same five locks in
//!   seven orders (these functions by `&mut` and by value, `try_lock`, `read`/`try_read`, `lock_all!` with
//!   `; nest` three levels deep, a `LockCollection`, a `RetryingLockCollection`; `Mutex`es and `RwLock`s,
//!   ranked and not) finish with exact totals, and the reader of two `RwLock`s written together sees them
//!   equal every time;
//! - a lock named twice (read twice, read and write, through `&&m`, an `Arc` clone, a `Poisonable`, a nested
//!   array, the last of 10,001) panics naming the method before taking any lock, and a key passed by value
//!   comes back; zero-sized data and adjacent locks are never taken for duplicates;
//! - a `try_lock`/`try_read` that fails part-way (a lock held, or read, by another thread) releases what it
//!   took and returns the key;
//! - one `ThreadKey` per thread: the key is out whenever a raw lock's own code runs (in `lock`, and in the
//!   `unlock` of a drop, of `LockGuard::unlock`, of a panic's unwinding); a guard kept with its key in a
//!   thread-local releases both at thread exit, whichever thread-local is destroyed first;
//! - a user `Deref` that panics while the locks are listed leaves nothing held; a raw lock that panics in
//!   `lock` breaks only itself and the locks taken before it are released; `Poisonable` children poison under
//!   write guards only; empty data (`[]`, `&[]`, an empty `Vec`) locks nothing and keeps the key; 10,000
//!   locks in a slice lock in address order and a failed try leaves all of them free; inside a lock's
//!   `Debug`, a blocking `LockGuard::lock` (with a key kept in a thread-local) panics with the `Debug`
//!   message, and `try_lock` works.
//!
//! Failed when written: no behaviour. The docs did: `try_lock`, `read` and `try_read` said they panic only
//! for a lock named twice, but they also panic on a [broken] lock and on a raw lock that panics, and
//! `try_lock`/`try_read` then panic instead of returning `Err`, even when the panic comes from an unlock
//! that gives back what a failed try took (`a_broken_lock_makes_try_lock_panic_not_fail_and_frees_the_rest`
//! measures it; it passed before the fix, which is to the `# Panics` sections in `collection/mod.rs` and a
//! sentence of `docs/lock.md`).
//!
//! Documented and pinned, not changed: a user `Lockable` whose `guard` panics leaves held the locks it had
//! not yet handed to a guard (`Lockable::guard`'s docs), through these functions as through collections.
//! Not tested: `&()` as data does not compile (`()` is not `Lockable`).
//!
//! Each test that needs another thread to let go releases it even when an assertion fails first, and the
//! two that deadlock if the order or the duplicate check goes run under a deadline. Checked by breaking the
//! code four ways (no sort, no duplicate check, no release after a failed try, none after a raw lock's
//! panic): each break failed one to five of these tests, and none hung.
//!
//! Under Miri (no strict provenance: parking_lot's contended path casts integers to pointers):
//! `cargo +nightly miri test -p trust-core --no-default-features --test adversarial_review101` (the thread
//! and lock counts shrink there).
//!
//! [broken]: trust_core::lock::poison

use std::cell::{Cell, RefCell};
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use lock_api::{GuardNoSend, RawMutex};
use trust_core::lock::{
    LockCollection, LockGuard, Lockable, Mutex, MutexRef, Poisonable, RawLock,
    RetryingLockCollection, RwLock, ThreadKey, Unranked,
};
use trust_core::{lock_all, lock_ranks};

mod common;
use common::within;

lock_ranks! {
    Low;
    High;
}

/// Locks per slice in the "very many" tests.
const MANY: usize = if cfg!(miri) { 64 } else { 10_000 };
/// Rounds per thread in the deadlock test.
const ROUNDS: u64 = if cfg!(miri) { 20 } else { 2_000 };

thread_local! {
    /// Set while this thread runs code expected to panic: the hook stays quiet.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// What [`Rec`] saw on this thread: `('L', addr)` lock, `('T', addr)` successful try, `('U', addr)` unlock.
    static LOG: RefCell<Vec<(char, usize)>> = const { RefCell::new(Vec::new()) };
    /// While set, [`Rec`] records in `PROBES` whether this thread's key was free inside its lock and unlock.
    static PROBE: Cell<bool> = const { Cell::new(false) };
    static PROBES: RefCell<Vec<bool>> = const { RefCell::new(Vec::new()) };
    /// The next [`Rec`] unlock on this thread panics without releasing.
    static ARMED_UNLOCK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, which must panic; returns the panic's message (the hook is quiet meanwhile).
fn panics(f: impl FnOnce()) -> String {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                default(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    common::panic_message(result.expect_err("expected a panic"))
}

fn take_log() -> Vec<(char, usize)> {
    LOG.with(|log| std::mem::take(&mut *log.borrow_mut()))
}

fn take_probes() -> Vec<bool> {
    PROBES.with(|p| std::mem::take(&mut *p.borrow_mut()))
}

fn probe() {
    if PROBE.with(Cell::get) {
        let free = ThreadKey::get().is_some();
        PROBES.with(|p| p.borrow_mut().push(free));
    }
}

/// A parking_lot mutex that records what this thread does with it, and panics when armed: in
/// `lock`/`try_lock` before taking it (`evil`), in `unlock` without releasing it (`ARMED_UNLOCK`).
struct Rec {
    inner: parking_lot::RawMutex,
    evil: AtomicBool,
}

impl Rec {
    fn addr(&self) -> usize {
        self as *const Self as usize
    }
}

// SAFETY: when it does not panic, every call is forwarded to parking_lot's raw mutex.
unsafe impl RawMutex for Rec {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = Rec {
        inner: parking_lot::RawMutex::INIT,
        evil: AtomicBool::new(false),
    };
    type GuardMarker = GuardNoSend;

    fn lock(&self) {
        if self.evil.load(Ordering::Relaxed) {
            panic!("r101: evil lock");
        }
        probe();
        self.inner.lock();
        LOG.with(|log| log.borrow_mut().push(('L', self.addr())));
    }

    fn try_lock(&self) -> bool {
        if self.evil.load(Ordering::Relaxed) {
            panic!("r101: evil try_lock");
        }
        let taken = self.inner.try_lock();
        if taken {
            LOG.with(|log| log.borrow_mut().push(('T', self.addr())));
        }
        taken
    }

    unsafe fn unlock(&self) {
        if ARMED_UNLOCK.with(|armed| armed.replace(false)) {
            panic!("r101: evil unlock");
        }
        probe();
        LOG.with(|log| log.borrow_mut().push(('U', self.addr())));
        // SAFETY: forwarded: the caller holds the lock.
        unsafe { self.inner.unlock() }
    }

    // Not the default (a try and an unlock): it would panic when armed and show in the log.
    fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }
}

type RecMutex<R = Unranked> = Mutex<u32, R, Rec>;

fn rec<R: trust_core::lock::Rank>(value: u32) -> RecMutex<R> {
    Mutex::from_raw(Rec::INIT, value)
}

/// A mutex whose raw `lock` and `try_lock` panic before taking it.
fn evil(value: u32) -> RecMutex {
    Mutex::from_raw(
        Rec {
            inner: parking_lot::RawMutex::INIT,
            evil: AtomicBool::new(true),
        },
        value,
    )
}

/// The address `Rec` records for a lock: its raw lock is at offset 0 (`repr(C)`).
fn addr<T, R>(m: &Mutex<T, R, Rec>) -> usize {
    m as *const Mutex<T, R, Rec> as usize
}

/// Waits at its barrier when dropped: the other thread is let go even if an assertion fails first.
struct Release<'a>(&'a Barrier);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.wait();
    }
}

/// The start of every duplicate message.
fn duplicate(method: &str) -> String {
    format!("`LockGuard::{method}`: the same lock appears twice in its data")
}

// ---------------------------------------------------------------------------------------------
// One global order, whatever the nesting.

/// Fields in address order (`repr(C)`): `high` lowest, so rank and address disagree.
#[repr(C)]
struct Five {
    high: RecMutex<High>,
    b: RecMutex,
    low: RecMutex<Low>,
    a: RecMutex,
    c: RecMutex,
}

#[test]
fn nested_children_are_taken_unranked_by_address_then_by_rank() {
    let s = Box::new(Five {
        high: rec(1),
        b: rec(2),
        low: rec(3),
        a: rec(4),
        c: rec(5),
    });
    let mut key = ThreadKey::get().unwrap();
    let data = (&s.high, [&s.c, &s.b], (&s.low, &s.a));
    take_log();
    let sum = {
        let g = LockGuard::lock(&data, &mut key);
        *g.0 + *g.1[0] + *g.1[1] + *g.2.0 + *g.2.1
    };
    let taken = |kind| {
        [
            (kind, addr(&s.b)),
            (kind, addr(&s.a)),
            (kind, addr(&s.c)),
            (kind, addr(&s.low)),
            (kind, addr(&s.high)),
        ]
    };
    let log = take_log();
    assert_eq!(sum, 15);
    assert_eq!(log[..5], taken('L'));
    let mut released: Vec<_> = log[5..].to_vec();
    released.sort();
    let mut expected = taken('U').to_vec();
    expected.sort();
    assert_eq!(released, expected);

    // `try_lock`, with the key by value: the same order, the key back through `unlock`.
    let g = LockGuard::try_lock(&data, key).ok().unwrap();
    let key = LockGuard::unlock(g);
    assert_eq!(take_log()[..5], taken('T'));
    drop(key);
    assert!(ThreadKey::get().is_some());
}

#[repr(C)]
struct World {
    high: Mutex<u64, High>,
    b: RwLock<u64>,
    low: Mutex<u64, Low>,
    a: Mutex<u64>,
    c: RwLock<u64>,
}

#[test]
fn seven_threads_naming_the_same_locks_in_seven_orders_never_deadlock() {
    let (values, tried, reads) = within(20, || {
        let w = World {
            high: Mutex::ranked(0),
            b: RwLock::new(0),
            low: Mutex::ranked(0),
            a: Mutex::new(0),
            c: RwLock::new(0),
        };
        let start = Barrier::new(7);
        let (tried, reads) = (AtomicUsize::new(0), AtomicUsize::new(0));
        thread::scope(|s| {
            // LockGuard::lock, `&mut` key, rank order backwards.
            s.spawn(|| {
                let mut key = ThreadKey::get().unwrap();
                let data = (&w.high, &w.low, &w.c, &w.b, &w.a);
                start.wait();
                for _ in 0..ROUNDS {
                    let mut g = LockGuard::lock(&data, &mut key);
                    *g.0 += 1;
                    *g.1 += 1;
                    *g.2 += 1;
                    *g.3 += 1;
                    *g.4 += 1;
                }
            });
            // LockGuard::lock, key by value, nested children.
            s.spawn(|| {
                let mut key = ThreadKey::get().unwrap();
                let data = (&w.a, (&w.b, [&w.c]), &w.low, &w.high);
                start.wait();
                for _ in 0..ROUNDS {
                    let mut g = LockGuard::lock(&data, key);
                    *g.0 += 1;
                    *g.1.0 += 1;
                    *g.1.1[0] += 1;
                    *g.2 += 1;
                    *g.3 += 1;
                    key = LockGuard::unlock(g);
                }
            });
            // lock_all!, three levels of nesting.
            s.spawn(|| {
                let mut key = ThreadKey::get().unwrap();
                start.wait();
                for _ in 0..ROUNDS {
                    let (mut c, mut a, mut b, mut k1) = lock_all!(&mut key, w.c, w.a, w.b; nest);
                    let (mut low, mut k2) = lock_all!(&mut k1, w.low; nest);
                    let (mut high,) = lock_all!(&mut k2, w.high);
                    *a += 1;
                    *b += 1;
                    *c += 1;
                    *low += 1;
                    *high += 1;
                }
            });
            // A collection built once.
            s.spawn(|| {
                let mut key = ThreadKey::get().unwrap();
                let all = LockCollection::try_new((&w.c, &w.high, &w.a, &w.low, &w.b)).unwrap();
                start.wait();
                for _ in 0..ROUNDS {
                    let mut g = all.lock(&mut key);
                    *g.0 += 1;
                    *g.1 += 1;
                    *g.2 += 1;
                    *g.3 += 1;
                    *g.4 += 1;
                }
            });
            // try_lock: counts its successes.
            s.spawn(|| {
                let mut key = ThreadKey::get().unwrap();
                let data = (&w.low, &w.b, &w.high, &w.a, &w.c);
                start.wait();
                for _ in 0..ROUNDS {
                    if let Ok(mut g) = LockGuard::try_lock(&data, &mut key) {
                        *g.0 += 1;
                        *g.1 += 1;
                        *g.2 += 1;
                        *g.3 += 1;
                        *g.4 += 1;
                        tried.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            // A retrying collection: no order at all, never waits while it holds a lock.
            s.spawn(|| {
                let mut key = ThreadKey::get().unwrap();
                let all =
                    RetryingLockCollection::try_new((&w.b, &w.high, &w.c, &w.low, &w.a)).unwrap();
                start.wait();
                for _ in 0..ROUNDS {
                    let mut g = all.lock(&mut key);
                    *g.0 += 1;
                    *g.1 += 1;
                    *g.2 += 1;
                    *g.3 += 1;
                    *g.4 += 1;
                }
            });
            // A reader: `b` and `c` are only ever written together.
            s.spawn(|| {
                let mut key = ThreadKey::get().unwrap();
                let data = [&w.c, &w.b];
                start.wait();
                for i in 0..ROUNDS {
                    let g = if i % 2 == 0 {
                        LockGuard::read(&data, &mut key)
                    } else {
                        match LockGuard::try_read(&data, &mut key) {
                            Ok(g) => g,
                            Err(_) => continue,
                        }
                    };
                    assert_eq!(*g[0], *g[1]);
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            });
        });
        let mut w = w;
        (
            [
                *w.a.get_mut(),
                *w.b.get_mut(),
                *w.c.get_mut(),
                *w.low.get_mut(),
                *w.high.get_mut(),
            ],
            tried.into_inner() as u64,
            reads.into_inner() as u64,
        )
    });
    let total = 5 * ROUNDS + tried;
    assert_eq!(values, [total; 5]);
    assert!(reads >= ROUNDS / 2, "{reads}");
}

// ---------------------------------------------------------------------------------------------
// Duplicates.

#[test]
fn a_lock_named_twice_panics_before_taking_anything_and_a_key_by_value_comes_back() {
    // In a thread of its own: without the check, `(&rw, &rw)` would wait for itself forever.
    let (messages, key_came_back, left_locked) = within(10, || {
        let (m, n) = (Mutex::new(1), Mutex::new(2));
        let rw = RwLock::new(3);
        let low: Mutex<u32, Low> = Mutex::ranked(4);
        let arc = Arc::new(Mutex::new(5));
        let poisonable = Poisonable::new(&m);
        let many: Vec<Mutex<u32>> = (0..MANY as u32).map(Mutex::new).collect();
        let mut refs: Vec<&Mutex<u32>> = many.iter().rev().collect();
        refs.push(&many[MANY / 2]);

        let mut messages = Vec::new();
        let mut key_came_back = Vec::new();
        let mut run = |f: &dyn Fn(ThreadKey)| {
            let key = ThreadKey::get().unwrap();
            messages.push(panics(|| f(key)));
            key_came_back.push(ThreadKey::get().is_some());
        };
        run(&|k| drop(LockGuard::read(&(&rw, [&rw]), k)));
        run(&|k| drop(LockGuard::try_read(&[&rw, &rw], k)));
        run(&|k| drop(LockGuard::lock(&(&rw, &rw), k)));
        run(&|k| drop(LockGuard::try_lock(&(&m, &&m), k)));
        run(&|k| drop(LockGuard::lock(&(&*arc, arc.clone()), k)));
        run(&|k| drop(LockGuard::lock(&(&poisonable, &n, &m), k)));
        run(&|k| drop(LockGuard::lock(&(&m, [&n, &m]), k)));
        run(&|k| drop(LockGuard::lock(&(&low, (&m, [&low])), k)));
        run(&|k| drop(LockGuard::lock(&refs, k)));
        run(&|k| drop(LockGuard::try_lock(&refs[..], k)));
        // Nothing was taken, nothing is poisoned.
        let left_locked = [
            m.is_locked(),
            n.is_locked(),
            rw.is_locked(),
            low.is_locked(),
            arc.is_locked(),
        ]
        .iter()
        .filter(|&&l| l)
        .count()
            + many.iter().filter(|m| m.is_locked()).count()
            + usize::from(poisonable.is_poisoned());
        (messages, key_came_back, left_locked)
    });
    let methods = [
        "read", "try_read", "lock", "try_lock", "lock", "lock", "lock", "lock", "lock", "try_lock",
    ];
    assert_eq!(messages.len(), methods.len());
    for (message, method) in messages.iter().zip(methods) {
        assert!(
            message.starts_with(&duplicate(method)),
            "{method}: {message}"
        );
    }
    assert_eq!(
        messages[0],
        "`LockGuard::read`: the same lock appears twice in its data, which would read-lock it twice, and the \
         second read can wait for good behind a writer; name each lock once (`LockCollection::try_new` checks \
         data built at run time and returns `None` for duplicates)"
    );
    assert_eq!(key_came_back, [true; 10]);
    assert_eq!(left_locked, 0);
}

#[test]
fn zero_sized_data_and_adjacent_locks_are_never_duplicates() {
    #[repr(C)]
    struct Adjacent {
        unit: Mutex<()>,
        empty: Mutex<[u8; 0]>,
        rw: RwLock<()>,
        units: [Mutex<()>; 3],
        poisonable: Poisonable<Mutex<()>>,
    }
    let s = Adjacent {
        unit: Mutex::new(()),
        empty: Mutex::new([]),
        rw: RwLock::new(()),
        units: [Mutex::new(()), Mutex::new(()), Mutex::new(())],
        poisonable: Poisonable::new(Mutex::new(())),
    };
    let mut key = ThreadKey::get().unwrap();
    let data = (&s.unit, &s.empty, &s.rw, &s.units, &s.poisonable);
    let g = LockGuard::lock(&data, &mut key);
    assert_eq!((g.3.len(), g.4.is_ok()), (3, true));
    assert!(s.unit.is_locked() && s.empty.is_locked() && s.rw.is_locked());
    assert!(s.units.iter().all(Mutex::is_locked));
    drop(g);
    assert!(!s.unit.is_locked() && !s.rw.is_locked() && !s.units[2].is_locked());
    let rw = [&s.rw];
    let r = LockGuard::read(&rw, &mut key);
    assert_eq!(r.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// try_lock and try_read that fail part-way.

#[test]
fn a_try_lock_that_fails_part_way_leaves_every_lock_free_and_returns_the_key() {
    let locks: [RecMutex; 5] = std::array::from_fn(|i| rec(i as u32));
    let (held, release) = (Barrier::new(2), Barrier::new(2));
    thread::scope(|s| {
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            let g = locks[3].lock(&mut key);
            held.wait();
            release.wait();
            drop(g);
        });
        held.wait();
        let _release = Release(&release);
        let key = ThreadKey::get().unwrap();
        let backwards: Vec<&RecMutex> = locks.iter().rev().collect();
        take_log();
        let key = LockGuard::try_lock(&backwards, key).err().unwrap();
        let log = take_log();
        let tried: Vec<(char, usize)> = (0..3).map(|i| ('T', addr(&locks[i]))).collect();
        assert_eq!(log[..3], tried);
        let mut released = log[3..].to_vec();
        released.sort();
        let mut expected: Vec<_> = (0..3).map(|i| ('U', addr(&locks[i]))).collect();
        expected.sort();
        assert_eq!(released, expected);
        let locked: Vec<bool> = locks.iter().map(Mutex::is_locked).collect();
        assert_eq!(locked, [false, false, false, true, false]);
        // The key came back in `Err`: still this thread's only one.
        assert!(ThreadKey::get().is_none());
        drop(key);
    });
    let mut key = ThreadKey::get().unwrap();
    let g = LockGuard::try_lock(&locks, &mut key).ok().unwrap();
    assert_eq!(g.iter().map(|g| **g).sum::<u32>(), 10);
}

#[test]
fn a_try_read_that_fails_under_a_writer_and_a_try_lock_under_a_reader_leave_every_lock_free() {
    let rws: [RwLock<u32>; 4] = std::array::from_fn(|i| RwLock::new(i as u32));
    let m = Mutex::new(9);
    let (held, release) = (Barrier::new(2), Barrier::new(2));
    let mut out = Vec::new();
    for writer in [true, false] {
        thread::scope(|s| {
            s.spawn(|| {
                let mut key = ThreadKey::get().unwrap();
                if writer {
                    let _g = rws[2].write(&mut key);
                    held.wait();
                    release.wait();
                } else {
                    let _g = rws[2].read(&mut key);
                    held.wait();
                    release.wait();
                }
            });
            held.wait();
            let _release = Release(&release);
            let mut key = ThreadKey::get().unwrap();
            let backwards = [&rws[3], &rws[2], &rws[1], &rws[0]];
            let failed = if writer {
                LockGuard::try_read(&backwards, &mut key).is_err()
            } else {
                LockGuard::try_lock(&(&m, backwards), &mut key).is_err()
            };
            // Which locks could this thread still take exclusively?
            let free: Vec<bool> = rws
                .iter()
                .map(|rw| rw.try_write(&mut key).is_ok())
                .collect();
            out.push((failed, free, m.try_lock(&mut key).is_ok()));
        });
    }
    assert_eq!(
        out,
        [
            (true, vec![true, true, false, true], true),
            (true, vec![true, true, false, true], true),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// One key per thread.

#[test]
fn the_key_is_out_whenever_a_raw_lock_runs_and_comes_back_after_unlock_drop_or_panic() {
    let (a, b) = (rec::<Unranked>(1), rec::<Unranked>(2));
    let data = [&b, &a];
    PROBE.with(|p| p.set(true));
    let mut out = Vec::new();

    // Key by value, guard dropped.
    let g = LockGuard::lock(&data, ThreadKey::get().unwrap());
    drop(g);
    out.push((take_probes(), ThreadKey::get().is_some()));

    // Key by value, given back by `unlock`.
    let g = LockGuard::lock(&data, ThreadKey::get().unwrap());
    let key = LockGuard::unlock(g);
    out.push((take_probes(), ThreadKey::get().is_some()));
    drop(key);

    // Key by value, a panic under the guard.
    let message = panics(|| {
        let mut g = LockGuard::lock(&data, ThreadKey::get().unwrap());
        *g[0] += 10;
        panic!("r101: under the guard");
    });
    assert_eq!(message, "r101: under the guard");
    out.push((take_probes(), ThreadKey::get().is_some()));

    // `&mut` key, a panic under the guard: the key is the caller's and stays out.
    let mut key = ThreadKey::get().unwrap();
    panics(|| {
        let _g = LockGuard::lock(&data, &mut key);
        panic!("r101: under the guard");
    });
    out.push((take_probes(), ThreadKey::get().is_some()));
    PROBE.with(|p| p.set(false));

    // Each raw `lock` and `unlock` found the key out (two locks, four probes).
    assert_eq!(
        out,
        [
            (vec![false; 4], true),
            (vec![false; 4], false),
            (vec![false; 4], true),
            (vec![false; 4], false),
        ]
    );
    assert!(!a.is_locked() && !b.is_locked());
    assert_eq!(*LockGuard::lock(&data, &mut key)[0], 12);
}

static TLS_PAIR: (Mutex<u32>, Mutex<u32>) = (Mutex::new(0), Mutex::new(0));
/// (holder dropped, key free, pair locked), seen by each thread's `Watcher` as it is destroyed.
static SEEN: std::sync::Mutex<Vec<(bool, bool, bool)>> = std::sync::Mutex::new(Vec::new());

type PairGuard = LockGuard<(MutexRef<'static, u32>, MutexRef<'static, u32>), ThreadKey>;

struct Holder(Option<PairGuard>);

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.0.take());
        HOLDER_DROPPED.with(|d| d.set(true));
    }
}

struct Watcher;

impl Drop for Watcher {
    fn drop(&mut self) {
        let seen = (
            HOLDER_DROPPED.with(Cell::get),
            ThreadKey::get().is_some(),
            TLS_PAIR.0.is_locked(),
        );
        SEEN.lock().unwrap().push(seen);
    }
}

thread_local! {
    static HOLDER: RefCell<Option<Holder>> = const { RefCell::new(None) };
    static WATCHER: RefCell<Option<Watcher>> = const { RefCell::new(None) };
    static HOLDER_DROPPED: Cell<bool> = const { Cell::new(false) };
}

#[test]
fn a_guard_kept_with_its_key_in_a_thread_local_releases_both_at_thread_exit_in_either_order() {
    for holder_first in [true, false] {
        thread::spawn(move || {
            let register_holder = || HOLDER.with(|h| drop(h.borrow()));
            let register_watcher = || WATCHER.with(|w| *w.borrow_mut() = Some(Watcher));
            if holder_first {
                register_holder();
                register_watcher();
            } else {
                register_watcher();
                register_holder();
            }
            let mut g = LockGuard::lock(&TLS_PAIR, ThreadKey::get().unwrap());
            *g.0 += 1;
            *g.1 += 1;
            HOLDER.with(|h| *h.borrow_mut() = Some(Holder(Some(g))));
            assert!(ThreadKey::get().is_none());
        })
        .join()
        .unwrap();
    }
    let mut seen = SEEN.lock().unwrap().clone();
    seen.sort();
    // One thread's watcher went first (the holder still had the key and the locks), the other's last:
    // never a free key beside a held guard.
    assert_eq!(seen, [(false, false, true), (true, true, false)]);
    let mut key = ThreadKey::get().unwrap();
    let g = LockGuard::try_lock(&TLS_PAIR, &mut key).ok().unwrap();
    assert_eq!((*g.0, *g.1), (2, 2));
}

// ---------------------------------------------------------------------------------------------
// User code and raw locks that panic during locking.

/// A pointer whose `Deref` panics on call number `panic_at` (counting from 1).
struct Tripwire<'a> {
    target: &'a Mutex<u32>,
    calls: Cell<usize>,
    panic_at: usize,
}

impl Deref for Tripwire<'_> {
    type Target = Mutex<u32>;
    fn deref(&self) -> &Mutex<u32> {
        self.calls.set(self.calls.get() + 1);
        if self.calls.get() == self.panic_at {
            panic!("r101: deref {}", self.panic_at);
        }
        self.target
    }
}

/// A user `Lockable` over any pointer to a mutex.
struct Via<P>(P);

// SAFETY: reports the one lock `guard` goes through (the pointer's target, the same every call).
unsafe impl<P: Deref<Target = Mutex<u32>>> Lockable for Via<P> {
    type Guard<'g>
        = MutexRef<'g, u32>
    where
        Self: 'g;

    fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
        (*self.0).raw_locks(out);
    }

    unsafe fn guard(&self) -> Self::Guard<'_> {
        // SAFETY: forwarded: the caller holds the target.
        unsafe { (*self.0).guard() }
    }
}

#[test]
fn a_user_deref_that_panics_while_listing_leaves_nothing_held_and_while_guarding_is_as_documented()
{
    let mut out = Vec::new();
    for panic_at in [1, 2] {
        let (a, b, c) = (Mutex::new(1), Mutex::new(2), Mutex::new(3));
        let via = Via(Tripwire {
            target: &b,
            calls: Cell::new(0),
            panic_at,
        });
        let message = panics(|| drop(LockGuard::lock(&(&a, &via, &c), ThreadKey::get().unwrap())));
        out.push((
            message,
            ThreadKey::get().is_some(),
            a.is_locked(),
            b.is_locked(),
            c.is_locked(),
        ));
    }
    assert_eq!(
        out,
        [
            // Listing: before any lock.
            ("r101: deref 1".to_string(), true, false, false, false),
            // Making the guards (`Lockable::guard` "should not panic"): `a`'s guard was made and dropped,
            // `b` and `c` had none yet and stay held; the key comes back.
            ("r101: deref 2".to_string(), true, false, true, true),
        ]
    );
}

#[test]
fn a_raw_lock_that_panics_breaks_only_itself_and_releases_the_locks_taken_before_it() {
    let locks: [RecMutex; 3] = std::array::from_fn(|i| {
        if i == 1 {
            evil(i as u32)
        } else {
            rec(i as u32)
        }
    });
    let data = [&locks[2], &locks[1], &locks[0]];
    take_log();
    let message = panics(|| drop(LockGuard::lock(&data, ThreadKey::get().unwrap())));
    let log = take_log();
    assert_eq!(message, "r101: evil lock");
    assert_eq!(log, [('L', addr(&locks[0])), ('U', addr(&locks[0]))]);
    assert!(ThreadKey::get().is_some());
    assert_eq!(
        locks
            .iter()
            .map(|m| (m.is_locked(), m.is_broken()))
            .collect::<Vec<_>>(),
        [(false, false), (false, true), (false, false)]
    );
    // The others still lock together.
    let mut key = ThreadKey::get().unwrap();
    let others = [&locks[2], &locks[0]];
    let g = LockGuard::lock(&others, &mut key);
    assert_eq!(*g[0] + *g[1], 2);
}

/// `LockGuard::try_lock`'s `# Panics` named only the duplicate (fixed): it panics on a broken lock rather than
/// return `Err`, and when a raw unlock panics while it gives back what it took. Passed before the fix too (the
/// behaviour did not change).
#[test]
fn a_broken_lock_makes_try_lock_panic_not_fail_and_frees_the_rest() {
    let locks: [RecMutex; 3] = std::array::from_fn(|i| {
        if i == 2 {
            evil(i as u32)
        } else {
            rec(i as u32)
        }
    });
    let mut key = ThreadKey::get().unwrap();
    // Break `locks[2]`: its raw try panics.
    let first = panics(|| drop(LockGuard::try_lock(&[&locks[2]], &mut key)));
    drop(key);
    let data = [&locks[2], &locks[1], &locks[0]];
    let broken = panics(|| drop(LockGuard::try_lock(&data, ThreadKey::get().unwrap())));
    let key_back = ThreadKey::get().is_some();
    assert_eq!(first, "r101: evil try_lock");
    assert!(
        broken.starts_with("this lock is broken: its raw lock panicked"),
        "{broken}"
    );
    assert!(key_back);
    assert_eq!(
        locks.iter().map(Mutex::is_locked).collect::<Vec<_>>(),
        [false, false, false]
    );

    // A try that fails on a held lock and whose give-back meets a panicking unlock: it panics, and the one lock
    // that did not release (the raw unlock panicked first) is broken, the other is free.
    let fresh: [RecMutex; 3] = std::array::from_fn(|i| rec(i as u32));
    let (held, release) = (Barrier::new(2), Barrier::new(2));
    thread::scope(|s| {
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            let g = fresh[2].lock(&mut key);
            held.wait();
            release.wait();
            drop(g);
        });
        held.wait();
        let _release = Release(&release);
        ARMED_UNLOCK.with(|a| a.set(true));
        let message = panics(|| drop(LockGuard::try_lock(&fresh, ThreadKey::get().unwrap())));
        assert_eq!(message, "r101: evil unlock");
        assert!(ThreadKey::get().is_some());
        assert_eq!(
            fresh
                .iter()
                .map(|m| (m.is_locked(), m.is_broken()))
                .collect::<Vec<_>>(),
            [(true, true), (false, false), (true, false)]
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Poisoning, empty data, very many locks.

#[test]
fn poisonable_children_poison_under_write_guards_only() {
    let p = Poisonable::new(Mutex::new(5));
    let r = Poisonable::new(RwLock::new(7));
    let m = Mutex::new(1);
    let mut key = ThreadKey::get().unwrap();
    let (pm, r1) = ((&p, &m), (&r,));
    panics(|| {
        let mut g = LockGuard::lock(&pm, &mut key);
        ***g.0.as_mut().unwrap() += 1;
        *g.1 += 1;
        panic!("r101: half-done");
    });
    panics(|| {
        let g = LockGuard::read(&r1, &mut key);
        assert_eq!(***g.0.as_ref().unwrap(), 7);
        panic!("r101: under a read guard");
    });
    assert_eq!((p.is_poisoned(), r.is_poisoned()), (true, false));
    let g = LockGuard::try_lock(&pm, &mut key).ok().unwrap();
    assert_eq!((***g.0.as_ref().unwrap_err().get_ref(), *g.1), (6, 2));
    drop(g);
    p.clear_poison();
    assert!(LockGuard::lock(&(&p, &r), &mut key).0.is_ok());
}

#[test]
fn empty_data_locks_nothing_and_still_keeps_the_key() {
    let none: [Mutex<u32>; 0] = [];
    let rws: Vec<RwLock<u32>> = Vec::new();
    let refs: Vec<&Mutex<u32>> = Vec::new();
    let mut out = Vec::new();
    let g = LockGuard::lock(&none, ThreadKey::get().unwrap());
    out.push((g.len(), ThreadKey::get().is_none()));
    let key = LockGuard::unlock(g);
    let g = LockGuard::try_lock(&refs[..], key).ok().unwrap();
    out.push((g.len(), ThreadKey::get().is_none()));
    let key = LockGuard::unlock(g);
    let g = LockGuard::read(&rws, key);
    out.push((g.len(), ThreadKey::get().is_none()));
    let key = LockGuard::unlock(g);
    let g = LockGuard::try_read(&rws[..], key).ok().unwrap();
    out.push((g.len(), ThreadKey::get().is_none()));
    drop(g);
    assert_eq!(out, [(0, true); 4]);
    assert!(ThreadKey::get().is_some());
}

#[test]
fn ten_thousand_locks_in_a_slice_lock_in_address_order_and_a_failed_try_frees_them() {
    let locks: Vec<RecMutex> = (0..MANY as u32).map(rec).collect();
    let backwards: Vec<&RecMutex> = locks.iter().rev().collect();
    let mut key = ThreadKey::get().unwrap();
    take_log();
    {
        let mut g = LockGuard::lock(&backwards[..], &mut key);
        for (i, g) in g.iter_mut().enumerate() {
            **g += i as u32;
        }
    }
    let log = take_log();
    let ascending: Vec<(char, usize)> = locks.iter().map(|m| ('L', addr(m))).collect();
    assert_eq!(log[..MANY], ascending[..]);
    assert_eq!(log.len(), 2 * MANY);
    // Each lock got its position in `backwards`.
    let sum: u64 = LockGuard::lock(&locks, &mut key)
        .iter()
        .map(|g| u64::from(**g))
        .sum();
    let n = MANY as u64;
    assert_eq!(sum, (n - 1) * n / 2 + (n - 1) * n / 2);

    let (held, release) = (Barrier::new(2), Barrier::new(2));
    let busy = MANY * 7 / 9;
    thread::scope(|s| {
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            let g = locks[busy].lock(&mut key);
            held.wait();
            release.wait();
            drop(g);
        });
        held.wait();
        let _release = Release(&release);
        assert!(LockGuard::try_lock(&backwards, &mut key).is_err());
        let locked: Vec<usize> = (0..MANY).filter(|&i| locks[i].is_locked()).collect();
        assert_eq!(locked, [busy]);
    });
    assert!(!locks.iter().any(Mutex::is_locked));
}

// ---------------------------------------------------------------------------------------------
// Inside a lock's `Debug` (which holds that lock, taken without the key).

thread_local! {
    /// A key the program keeps where a `Debug` can reach it.
    static STASH: RefCell<Option<ThreadKey>> = const { RefCell::new(None) };
}

static OTHER: Mutex<u32> = Mutex::new(7);

/// Data whose `Debug` locks `OTHER` with the stashed key: blocking or trying.
struct Reaches {
    blocking: bool,
}

impl std::fmt::Debug for Reaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = STASH.with(|s| s.borrow_mut().take()).expect("stashed");
        let data = (&OTHER,);
        let (value, key) = if self.blocking {
            let g = LockGuard::lock(&data, key);
            (*g.0, LockGuard::unlock(g))
        } else {
            let g = LockGuard::try_lock(&data, key).expect("free");
            (*g.0, LockGuard::unlock(g))
        };
        STASH.with(|s| *s.borrow_mut() = Some(key));
        write!(f, "{value}")
    }
}

#[test]
fn inside_a_locks_debug_a_blocking_lock_guard_lock_panics_and_try_lock_works() {
    STASH.with(|s| *s.borrow_mut() = ThreadKey::get());
    let printed = format!("{:?}", Mutex::new(Reaches { blocking: false }));
    let outer = Mutex::new(Reaches { blocking: true });
    let message = panics(|| drop(format!("{outer:?}")));
    // The stashed key was dropped by the panic: the thread has it back, and nothing stays held.
    assert_eq!(printed, "Mutex { data: 7, .. }");
    assert!(
        message.starts_with("a blocking lock inside the `Debug` of a `Mutex`'s or `RwLock`'s data"),
        "{message}"
    );
    assert!(STASH.with(|s| s.borrow().is_none()));
    assert!(ThreadKey::get().is_some());
    assert!(!OTHER.is_locked() && !outer.is_locked());
}
