//! Review 41: programs written to break the promises of `docs/ghost.md` and of the rustdoc of
//! `trust_core::ghost` that no test held yet: unsized and zero-sized aliases in the multi-borrow check,
//! `usize::MAX` zero-sized cells, once and lazy cells holding `GhostCell`s written through references that
//! outlive the token borrow (Miri), lazy locks whose initialiser panics while other threads wait, drops
//! counted, the worklists at capacity 1 under concurrent push/pop/steal, a deque whose owner is dropped,
//! duplicate indices in a Treiber batch, racing set/reset on a bitset, the read phase's threads and panics,
//! the static token after a panicking writer, every `Debug`, and the `Send`/`Sync` table at run time; and
//! the memory orderings the worklists and the bitset justify, by handing plain (non-atomic) memory through
//! them, so that Miri's data-race detector checks them (each test fails under Miri when its ordering is
//! weakened: the Treiber push CAS made Relaxed, the deque's Release fence taken out, `test_and_set` made
//! Relaxed, all tried and caught).
//!
//! Findings (each test's doc gives the measurement before the fix):
//! - `ghost_atomic_bool_has_fetch_update_and_as_ptr`: docs/ghost.md lists `fetch_update` in the std API of
//!   all four branded atomics; `GhostAtomicBool` had neither `fetch_update` nor `as_ptr` (this file did not
//!   compile). Added as forwards.
//! - `deque_capacity_too_large_is_refused_naming_the_bound`: `GhostChaseLevDeque::new` accepted capacities up
//!   to 2^62 (its rustdoc: "exceeds `isize::MAX as usize / 2 + 1`"), whose slots cannot be allocated: 2^60
//!   panicked with `capacity overflow` from the allocation, and 2^63 (a power of two) with "must be a power
//!   of two". Now `MAX_CAPACITY` (2^59 on 64-bit) is checked first, with its own message.
//! - `send_and_sync_table_at_run_time`: a `GhostLazyCell` is `Sync` only if its initialiser is `Sync` too
//!   (docs/ghost.md said "for `T: Send + Sync`"); the doc now says so (`GhostLazyLock` needs `F: Send` only).
//! - `a_bitset_of_usize_max_bits_aborts_on_its_allocation`: `GhostAtomicBitset::new(usize::MAX)` aborts the
//!   process (allocation failure, 2^61 bytes), undocumented; its rustdoc now says so.
//!
//! Doc corrections without a failing program: `with_static_token_mut`'s contract now covers every read
//! through `static_token()` (a `GhostOnceCell::get` racing the write is a data race, not only a live `&T`),
//! and says that a nested call never returns (the `Mutex` is not reentrant: that is what keeps a second
//! `&mut GhostToken<'static>` out); `GhostLazyLock::force` says an initialiser forcing its own lock never
//! returns; `GhostStealer` also has `is_empty`, and stays usable after the owner handle is dropped.
//!
//! Held (no change needed): the `GhostCell` core (aliasing, brands, escapes: ten new UI cases under
//! `ui-tests/tests/ui/ghost/`), exactly-once accounting in every concurrent test, the loom models (rerun,
//! and the ABA model fails with the tag increment taken out). Miri (Stacked Borrows, strict provenance):
//! the file passes in about 16 s on the loaded machine; with Tree Borrows in about 25 s.

use std::cell::Cell;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::MutexGuard;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use trust_core::ghost::{
    GhostAtomicBitset, GhostAtomicBool, GhostAtomicU32, GhostAtomicU64, GhostAtomicUsize,
    GhostBorrowMut, GhostCell, GhostChaseLevDeque, GhostLazyCell, GhostLazyLock, GhostOnceCell,
    GhostStealer, GhostToken, GhostTreiberStack, parallel_read_then_commit,
    parallel_read_then_commit_with, static_token, with_static_token_mut,
};

/// Rounds of the threaded tests: small under Miri (the whole file stays well under 30 s there).
const ROUNDS: usize = if cfg!(miri) { 30 } else { 20_000 };
const THREADS: usize = if cfg!(miri) { 3 } else { 4 };

fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("should panic");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Counts its drops.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

// ---- Send / Sync, at run time ---------------------------------------------------------------------------

/// Autoref probe: `Probe::<T>::new().is_sync()` picks the inherent method (true) when `T: Sync`, and the
/// trait method (false) otherwise; the same for `Send`. Lets one test state both sides of an "iff".
struct Probe<T: ?Sized>(PhantomData<T>);

impl<T: ?Sized> Probe<T> {
    fn new() -> Self {
        Probe(PhantomData)
    }
}

trait NotSync {
    fn is_sync(&self) -> bool {
        false
    }
}
impl<T: ?Sized> NotSync for Probe<T> {}

trait NotSend {
    fn is_send(&self) -> bool {
        false
    }
}
impl<T: ?Sized> NotSend for Probe<T> {}

trait IsSync {
    fn is_sync(&self) -> bool {
        true
    }
}
impl<T: ?Sized + Sync> IsSync for &Probe<T> {}

trait IsSend {
    fn is_send(&self) -> bool {
        true
    }
}
impl<T: ?Sized + Send> IsSend for &Probe<T> {}

macro_rules! send_sync {
    ($t:ty) => {
        (
            (&&Probe::<$t>::new()).is_send(),
            (&&Probe::<$t>::new()).is_sync(),
        )
    };
}

type SendInit = Box<dyn FnOnce() -> u32 + Send>;

/// docs/ghost.md's table (`Send` iff `T: Send`, `Sync` iff `T: Send + Sync`), both directions, for the
/// cell types and the lazy ones.
///
/// Before: the guide said `GhostOnceCell` and `GhostLazyCell` are `Sync` "for `T: Send + Sync`"; a
/// `GhostLazyCell` whose initialiser is `Send` but not `Sync` (a boxed `dyn FnOnce + Send`) is not `Sync`
/// (the initialiser sits in a `GhostCell<Option<F>>`). The guide now states `F: Send + Sync` for it;
/// `GhostLazyLock` is `Sync` with `F: Send`, as `std::sync::LazyLock`.
#[test]
fn send_and_sync_table_at_run_time() {
    assert_eq!(send_sync!(GhostToken<'static>), (true, true));
    assert_eq!(send_sync!(GhostCell<'static, u32>), (true, true));
    assert_eq!(send_sync!(GhostCell<'static, Cell<u32>>), (true, false));
    assert_eq!(
        send_sync!(GhostCell<'static, std::rc::Rc<u32>>),
        (false, false)
    );
    assert_eq!(
        send_sync!(GhostCell<'static, MutexGuard<'static, u32>>),
        (false, false)
    );
    assert_eq!(send_sync!(GhostCell<'static, [u32]>), (true, true));
    assert_eq!(
        send_sync!(GhostCell<'static, dyn Fn() + Send>),
        (true, false)
    );
    assert_eq!(send_sync!(GhostOnceCell<'static, u32>), (true, true));
    assert_eq!(send_sync!(GhostOnceCell<'static, Cell<u32>>), (true, false));
    assert_eq!(
        send_sync!(GhostOnceCell<'static, MutexGuard<'static, u32>>),
        (false, false)
    );
    assert_eq!(send_sync!(GhostLazyCell<'static, u32>), (true, true));
    assert_eq!(
        send_sync!(GhostLazyCell<'static, u32, SendInit>),
        (true, false)
    );
    assert_eq!(
        send_sync!(GhostLazyLock<'static, u32, SendInit>),
        (true, true)
    );
    assert_eq!(
        send_sync!(GhostLazyLock<'static, Cell<u32>, SendInit>),
        (true, false)
    );
    assert_eq!(send_sync!(GhostChaseLevDeque<'static>), (true, false));
    assert_eq!(send_sync!(GhostStealer<'static>), (true, true));
    assert_eq!(send_sync!(GhostTreiberStack<'static>), (true, true));
    assert_eq!(send_sync!(GhostAtomicBitset<'static>), (true, true));
    assert_eq!(send_sync!(GhostAtomicBool<'static>), (true, true));
}

// ---- branded atomics ----------------------------------------------------------------------------------

/// docs/ghost.md: the branded atomics have "the std atomic API (`load`, `store`, `swap`,
/// `compare_exchange[_weak]`, `fetch_*`, `fetch_update`, `get_mut`, `into_inner`, `as_std`)".
///
/// Before: `GhostAtomicBool` had no `fetch_update` and no `as_ptr` (the integer ones had both), so this
/// test did not compile.
#[test]
fn ghost_atomic_bool_has_fetch_update_and_as_ptr() {
    GhostToken::new(|_token| {
        let flag = GhostAtomicBool::new(false);
        assert_eq!(
            flag.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(!v)),
            Ok(false)
        );
        assert_eq!(
            flag.fetch_update(Ordering::AcqRel, Ordering::Acquire, |_| None),
            Err(true)
        );
        // SAFETY: no other access to `flag` is alive; the pointer is valid and aligned.
        unsafe { *flag.as_ptr() = false };
        assert!(!flag.load(Ordering::Relaxed));
        assert!(!flag.fetch_nand(true, Ordering::Relaxed));
        assert!(flag.load(Ordering::Relaxed));
        assert!(flag.fetch_xor(true, Ordering::Relaxed));
        assert_eq!(
            flag.compare_exchange_weak(true, false, Ordering::Relaxed, Ordering::Relaxed),
            Err(false)
        );
        assert_eq!(format!("{flag:?}"), "false");
        assert!(std::ptr::eq(flag.as_ptr(), flag.as_std().as_ptr()));

        let small = GhostAtomicU32::new(u32::MAX);
        assert_eq!(small.fetch_add(2, Ordering::Relaxed), u32::MAX);
        assert_eq!(small.fetch_nand(0, Ordering::Relaxed), 1);
        assert_eq!(small.into_inner(), u32::MAX);
        assert_eq!(GhostAtomicU64::default().into_inner(), 0);
        assert_eq!(
            GhostAtomicUsize::from_std(AtomicUsize::new(9)).into_inner(),
            9
        );
    });
}

// ---- the multi-borrow overlap check ------------------------------------------------------------------

/// The check compares byte ranges, so one cell seen through an unsized alias (`GhostCell<[u8; 4]>` as
/// `GhostCell<[u8]>`, `GhostCell<u32>` as `GhostCell<dyn Debug>`) is refused, naming both positions; a
/// disjoint neighbour is not.
#[test]
fn unsized_aliases_of_one_cell_are_refused() {
    GhostToken::new(|mut token| {
        let bytes = GhostCell::new([1u8, 2, 3, 4]);
        let other = GhostCell::new(9u8);
        let as_slice: &GhostCell<'_, [u8]> = &bytes;
        let err = (&bytes, &other, as_slice)
            .borrow_mut(&mut token)
            .unwrap_err();
        assert_eq!((err.first(), err.second()), (0, 2));
        // The last element of the array as its own cell overlaps the whole.
        let last = &bytes.as_array_of_cells()[3];
        let err = (last, &other, &bytes).borrow_mut(&mut token).unwrap_err();
        assert_eq!((err.first(), err.second()), (0, 2));
        let (all, nine) = (as_slice, &other).borrow_mut(&mut token).unwrap();
        all[3] = *nine;
        assert_eq!(*bytes.borrow(&token), [1, 2, 3, 9]);

        let number = GhostCell::new(7u32);
        let shown: &GhostCell<'_, dyn std::fmt::Debug> = &number;
        let mixed: [&GhostCell<'_, dyn std::fmt::Debug>; 3] = [shown, &other, &number];
        let err = mixed.borrow_mut(&mut token).unwrap_err();
        assert_eq!((err.first(), err.second()), (0, 2));
    });
}

/// A slice of many cell references with the same cell first and last: the sort-based check finds exactly
/// that pair; all distinct, every `&mut` goes to its own cell.
#[test]
fn many_references_report_the_duplicate_at_their_ends() {
    let n = if cfg!(miri) { 200 } else { 100_000 };
    GhostToken::new(|mut token| {
        let cells: Vec<GhostCell<'_, usize>> = (0..n).map(GhostCell::new).collect();
        // Shuffled (a fixed permutation), so the sort has work to do.
        let mut refs: Vec<&GhostCell<'_, usize>> = (0..n).map(|i| &cells[(i * 7919) % n]).collect();
        let mut values = refs.as_slice().borrow_mut(&mut token).unwrap();
        for (position, value) in values.iter_mut().enumerate() {
            **value = position;
        }
        drop(values);
        assert_eq!(*cells[7919 % n].borrow(&token), 1);
        refs[n - 1] = refs[0];
        let err = refs.as_slice().borrow_mut(&mut token).unwrap_err();
        assert_eq!((err.first(), err.second()), (0, n - 1));
    });
}

/// Zero-sized cells at scale: `usize::MAX` of them in one array cost nothing, the infallible view of the
/// array gives all of them, and two references to distinct zero-sized cells at one address are refused
/// (the documented rule), while `swap` of them is a no-op `Ok`. Under Miri 4096 of them: Stacked Borrows
/// runs `usize::MAX` at once, but Tree Borrows takes time linear in the array's length (measured: 2^18
/// cells 0.8 s, 2^22 cells 8.5 s more than Stacked Borrows; `usize::MAX` had not finished after 4 minutes),
/// a cost of the checker, not of the crate.
#[test]
fn usize_max_zero_sized_cells() {
    const ZSTS: usize = if cfg!(miri) { 4096 } else { usize::MAX };
    GhostToken::new(|mut token| {
        let mut units = [(); ZSTS];
        let whole: &GhostCell<'_, [(); ZSTS]> = GhostCell::from_mut(&mut units);
        let cells = whole.as_array_of_cells();
        assert_eq!(cells.len(), ZSTS);
        assert_eq!(cells.borrow_mut(&mut token).unwrap().len(), ZSTS);
        let (first, last) = (&cells[0], &cells[ZSTS - 1]);
        let err = (first, last).borrow_mut(&mut token).unwrap_err();
        assert_eq!((err.first(), err.second()), (0, 1));
        assert_eq!(first.swap(last, &mut token), Ok(()));
        // The whole array and one of its cells are at one address too.
        let err = [whole as &GhostCell<'_, dyn std::fmt::Debug>, first]
            .borrow_mut(&mut token)
            .unwrap_err();
        assert_eq!((err.first(), err.second()), (0, 1));
        assert_eq!(size_of_val(whole), 0);
    });
}

// ---- once and lazy cells -------------------------------------------------------------------------------

/// "`get` returns a reference that borrows the cell only": a `GhostOnceCell` (and a `GhostLazyCell`, and a
/// `GhostLazyLock`) holding a `GhostCell` of the same brand hand out `&GhostCell` that stays alive while the
/// token is taken mutably to write through it, many times. Under Miri (Stacked and Tree Borrows) the
/// writes go through the inner `UnsafeCell` while the outer `&Option`s were created by `get`.
#[test]
fn once_and_lazy_cells_of_ghost_cells_are_written_while_their_reference_lives() {
    GhostToken::new(|mut token| {
        let once = GhostOnceCell::new();
        let inner: &GhostCell<'_, Vec<u32>> =
            once.get_or_init(&mut token, || GhostCell::new(Vec::new()));
        let lazy = GhostLazyCell::new(|| GhostCell::new(0u32));
        let counter = lazy.force(&mut token);
        let lock = GhostLazyLock::new(|| GhostCell::new(String::new()));
        let text = lock.force(&token);
        for i in 0..10 {
            inner.borrow_mut(&mut token).push(i);
            *counter.borrow_mut(&mut token) += i;
            text.borrow_mut(&mut token).push('x');
            assert_eq!(
                once.get(&token).unwrap().borrow(&token).len(),
                i as usize + 1
            );
        }
        assert_eq!(inner.borrow(&token).iter().sum::<u32>(), 45);
        assert_eq!(*lazy.get(&token).unwrap().borrow(&token), 45);
        assert_eq!(lock.get(&token).unwrap().borrow(&token).len(), 10);
        assert!(once.set(GhostCell::new(vec![]), &mut token).is_err());
        assert_eq!(once.into_inner().unwrap().into_inner().len(), 10);
    });
}

/// Drops counted through every path of `GhostLazyLock`: an initialiser never run is dropped once (with the
/// lock, or given back by `into_inner`), one that ran is consumed, one that panicked is dropped by the
/// unwinding (once) and the lock is poisoned (`into_inner` gives `Err(None)`), and the value is dropped
/// once with the lock.
#[test]
fn lazy_lock_drops_every_initialiser_and_value_once() {
    let (inits, values) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (inits, values) = (&inits, &values);
    GhostToken::new(|token| {
        let never = GhostLazyLock::new({
            let capture = Counted(inits);
            move || {
                let _capture = capture;
                Counted(values)
            }
        });
        drop(never);
        assert_eq!(inits.load(Ordering::Relaxed), 1);

        let given_back = GhostLazyLock::new({
            let capture = Counted(inits);
            move || {
                let _capture = capture;
                Counted(values)
            }
        });
        let init = given_back.into_inner().err().unwrap().unwrap();
        assert_eq!(inits.load(Ordering::Relaxed), 1);
        drop(init);
        assert_eq!(inits.load(Ordering::Relaxed), 2);

        let forced = GhostLazyLock::new({
            let capture = Counted(inits);
            move || {
                let _capture = capture;
                Counted(values)
            }
        });
        forced.force(&token);
        assert_eq!(inits.load(Ordering::Relaxed), 3);
        assert_eq!(values.load(Ordering::Relaxed), 0);
        drop(forced);
        assert_eq!(values.load(Ordering::Relaxed), 1);

        let poisoned: GhostLazyLock<'_, Counted<'_>, _> = GhostLazyLock::new({
            let capture = Counted(inits);
            move || {
                let _capture = capture;
                panic!("init failed")
            }
        });
        assert_eq!(
            panic_message(|| {
                poisoned.force(&token);
            }),
            "init failed"
        );
        assert_eq!(inits.load(Ordering::Relaxed), 4);
        assert!(matches!(poisoned.into_inner(), Err(None)));
        assert_eq!(values.load(Ordering::Relaxed), 1);
    });
}

/// Several threads call `force` while the initialiser runs and then panics: the first caller gets the
/// initialiser's panic, each of the others the "panicked on an earlier call" panic (none hangs, none gets
/// a value), and `get` stays `None`. The initialiser waits (without timing) until every thread has entered.
#[test]
fn lazy_lock_waiters_see_the_poison_when_the_initialiser_panics() {
    let entered = AtomicUsize::new(0);
    GhostToken::new(|token| {
        let lazy: GhostLazyLock<'_, u32, _> = GhostLazyLock::new(|| {
            while entered.load(Ordering::Acquire) < THREADS {
                thread::yield_now();
            }
            panic!("init failed")
        });
        let token = &token;
        let messages: Vec<String> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        panic_message(|| {
                            entered.fetch_add(1, Ordering::AcqRel);
                            lazy.force(token);
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let first = messages.iter().filter(|m| *m == "init failed").count();
        let poisoned = messages
            .iter()
            .filter(|m| {
                m.starts_with("GhostLazyLock::force: the initialiser panicked on an earlier call")
            })
            .count();
        assert_eq!((first, poisoned), (1, THREADS - 1), "{messages:?}");
        assert_eq!(lazy.get(token), None);
    });
}

/// `GhostLazyCell::force_mut` after a panicking initialiser: poisoned with its own message, the
/// initialiser's captures dropped once; `GhostLazyLock::force_mut` the same.
#[test]
fn force_mut_after_a_panicking_initialiser() {
    let drops = AtomicUsize::new(0);
    let mut cell: GhostLazyCell<'static, u32, _> = GhostLazyCell::new({
        let capture = Counted(&drops);
        move || {
            let _capture = capture;
            panic!("first")
        }
    });
    assert_eq!(
        panic_message(|| {
            let _ = cell.force_mut();
        }),
        "first"
    );
    assert_eq!(drops.load(Ordering::Relaxed), 1);
    assert!(
        panic_message(|| {
            let _ = cell.force_mut();
        })
        .starts_with("GhostLazyCell::force_mut: the initialiser panicked on an earlier call")
    );
    let mut lock: GhostLazyLock<'static, u32, _> = GhostLazyLock::new(|| panic!("second"));
    assert_eq!(
        panic_message(|| {
            let _ = lock.force_mut();
        }),
        "second"
    );
    assert!(
        panic_message(|| {
            let _ = lock.force_mut();
        })
        .starts_with("GhostLazyLock::force_mut: the initialiser panicked on an earlier call")
    );
    assert_eq!(drops.load(Ordering::Relaxed), 1);
}

// ---- the static token ---------------------------------------------------------------------------------

static AFTER_PANIC: GhostCell<'static, u32> = GhostCell::new(0);

/// A writer that panics in the middle of `with_static_token_mut` leaves its `Mutex` poisoned; the next
/// writer still gets in (the guard protects `()`), and sees the write made before the panic.
#[test]
fn static_token_mut_after_a_panicking_writer() {
    let message = panic_message(|| {
        // SAFETY: only this test touches `AFTER_PANIC`, on this thread.
        unsafe {
            with_static_token_mut(|token| {
                *AFTER_PANIC.borrow_mut(token) = 5;
                panic!("writer failed");
            })
        }
    });
    assert_eq!(message, "writer failed");
    // SAFETY: as above.
    let seen = unsafe {
        with_static_token_mut(|token| {
            let seen = *AFTER_PANIC.borrow(token);
            *AFTER_PANIC.borrow_mut(token) += 1;
            seen
        })
    };
    assert_eq!((seen, *AFTER_PANIC.borrow(static_token())), (5, 6));
}

// ---- parallel_read_then_commit ----------------------------------------------------------------------

/// "shard 0 on the calling thread, the others on scoped threads", results "in shard order", and the
/// default shard count is `available_parallelism()`.
#[test]
fn read_phase_threads_and_order() {
    let caller = thread::current().id();
    GhostToken::new(|mut token| {
        let cell = GhostCell::new(10usize);
        let (ids, sum) = parallel_read_then_commit_with(
            3,
            &mut token,
            |shard, token| {
                (
                    shard,
                    thread::current().id(),
                    *cell.borrow(token) + shard.index,
                )
            },
            |results, token| {
                let shards: Vec<_> = results.iter().map(|r| (r.0.index, r.0.count)).collect();
                assert_eq!(shards, [(0, 3), (1, 3), (2, 3)]);
                *cell.borrow_mut(token) = results.iter().map(|r| r.2).sum();
                (
                    results.iter().map(|r| r.1).collect::<Vec<_>>(),
                    *cell.borrow(token),
                )
            },
        );
        assert_eq!(sum, 33);
        assert_eq!(ids[0], caller);
        assert!(ids[1] != caller && ids[2] != caller && ids[1] != ids[2]);

        let expected = thread::available_parallelism().map_or(1, |n| n.get());
        let counts = parallel_read_then_commit(&mut token, |shard, _| shard.count, |c, _| c);
        assert_eq!(counts, vec![expected; expected]);
    });
}

/// "A panicking reader propagates its panic after all readers stopped": reader 1 panics; reader 2 waits
/// until reader 1 is about to panic and only then finishes. Whichever reader panics (shard 0 on the calling
/// thread, or a scoped one), the call returns only after reader 2 finished, the commit never runs, and the
/// payload is the reader's own.
#[test]
fn a_panicking_reader_returns_after_every_reader_stopped() {
    for panicking in [0usize, 1] {
        GhostToken::new(|mut token| {
            let about_to_panic = AtomicBool::new(false);
            let finished = AtomicBool::new(false);
            let committed = AtomicBool::new(false);
            let message = panic_message(|| {
                parallel_read_then_commit_with(
                    3,
                    &mut token,
                    |shard, _| {
                        if shard.index == panicking {
                            about_to_panic.store(true, Ordering::Release);
                            panic!("reader {panicking} failed");
                        }
                        if shard.index == 2 {
                            while !about_to_panic.load(Ordering::Acquire) {
                                thread::yield_now();
                            }
                            finished.store(true, Ordering::Release);
                        }
                    },
                    |_, _| committed.store(true, Ordering::Relaxed),
                )
            });
            assert_eq!(message, format!("reader {panicking} failed"));
            assert!(finished.load(Ordering::Acquire));
            assert!(!committed.load(Ordering::Relaxed));
        });
    }
}

// ---- the Chase-Lev deque ------------------------------------------------------------------------------

/// The rustdoc of `new` promised a panic only for capacities "not a power of two, or exceeds
/// `isize::MAX as usize / 2 + 1`" (2^62): no ring above 2^59 slots can be allocated.
///
/// Before: `new(1 << 60)` panicked with "capacity overflow" from the allocation (not naming the deque),
/// and `new(1 << 63)`, a power of two, with "capacity 9223372036854775808 must be a power of two". Now
/// both name `MAX_CAPACITY`; no allocation is attempted.
#[test]
fn deque_capacity_too_large_is_refused_naming_the_bound() {
    let max = GhostChaseLevDeque::MAX_CAPACITY;
    // The largest power of two whose slots fit in `isize::MAX` bytes.
    assert!(max * size_of::<usize>() <= isize::MAX as usize);
    assert!(max * 2 * size_of::<usize>() > isize::MAX as usize);
    assert!(max.is_power_of_two());
    if cfg!(target_pointer_width = "64") {
        assert_eq!(max, 1 << 59);
    }
    for capacity in [max * 2, max * 4, 1usize << (usize::BITS - 1)] {
        let message = panic_message(|| drop(GhostChaseLevDeque::<'static>::new(capacity)));
        assert_eq!(
            message,
            format!(
                "GhostChaseLevDeque::new: capacity {capacity} is too large: at most {max} (2^{}) values, \
                 whose slots fit in isize::MAX bytes",
                max.trailing_zeros()
            )
        );
    }
    assert_eq!(
        panic_message(|| drop(GhostChaseLevDeque::<'static>::new(usize::MAX))),
        format!(
            "GhostChaseLevDeque::new: capacity {} must be a power of two (the ring index is `i & (capacity - 1)`)",
            usize::MAX
        )
    );
}

/// The owner handle dropped while stealers live: the values it left stay stealable, each exactly once,
/// oldest first (the ring is kept alive by the stealers).
#[test]
fn deque_stealers_drain_what_a_dropped_owner_left() {
    GhostToken::new(|_token| {
        let owner = GhostChaseLevDeque::new(8);
        let thieves = [owner.stealer(), owner.stealer()];
        for value in 10..16 {
            owner.push_bottom(value).unwrap();
        }
        assert_eq!(owner.pop_bottom(), Some(15));
        drop(owner);
        let taken: Vec<usize> =
            std::iter::from_fn(|| thieves[0].steal().or_else(|| thieves[1].steal())).collect();
        assert_eq!(taken, [10, 11, 12, 13, 14]);
        assert!(thieves[1].is_empty());
        assert_eq!(thieves[1].steal(), None);
    });
}

/// Capacity 1: every value is the last one, so owner and thieves race for each. The owner pushes
/// `ROUNDS` values (popping one itself when full); every value is taken exactly once.
#[test]
fn deque_of_capacity_one_every_value_taken_once() {
    GhostToken::new(|_token| {
        let owner = GhostChaseLevDeque::new(1);
        let done = AtomicBool::new(false);
        let taken: Vec<AtomicUsize> = (0..ROUNDS).map(|_| AtomicUsize::new(0)).collect();
        thread::scope(|s| {
            for _ in 0..THREADS - 1 {
                let thief = owner.stealer();
                let (done, taken) = (&done, &taken);
                s.spawn(move || {
                    loop {
                        match thief.steal() {
                            Some(value) => {
                                taken[value].fetch_add(1, Ordering::Relaxed);
                            }
                            None if done.load(Ordering::Acquire) => break,
                            None => thread::yield_now(),
                        }
                    }
                });
            }
            for value in 0..ROUNDS {
                while let Err(back) = owner.push_bottom(value) {
                    assert_eq!(back, value);
                    if let Some(mine) = owner.pop_bottom() {
                        taken[mine].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            while let Some(mine) = owner.pop_bottom() {
                taken[mine].fetch_add(1, Ordering::Relaxed);
            }
            done.store(true, Ordering::Release);
        });
        let counts: Vec<usize> = taken.iter().map(|t| t.load(Ordering::Relaxed)).collect();
        assert!(
            counts.iter().all(|&c| c == 1),
            "{:?}",
            &counts[..counts.len().min(20)]
        );
        assert!(owner.is_empty());
    });
}

// ---- the Treiber stack -------------------------------------------------------------------------------

/// Capacity 1, every thread popping and pushing back the one index: the worst case for ABA (every pop
/// and push of one index changes `head` between the same two values). The index is never held by two
/// threads at once, and it ends in the stack exactly once.
#[test]
fn treiber_stack_of_one_index_is_never_held_twice() {
    GhostToken::new(|_token| {
        let stack = GhostTreiberStack::new(1);
        stack.push(0);
        let held = AtomicBool::new(false);
        let pops = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for _ in 0..ROUNDS / THREADS {
                        loop {
                            if let Some(index) = stack.pop() {
                                assert_eq!(index, 0);
                                assert!(!held.swap(true, Ordering::AcqRel), "index 0 held twice");
                                pops.fetch_add(1, Ordering::Relaxed);
                                held.store(false, Ordering::Release);
                                stack.push(index);
                                break;
                            }
                            thread::yield_now();
                        }
                    }
                });
            }
        });
        assert_eq!(pops.load(Ordering::Relaxed), ROUNDS / THREADS * THREADS);
        assert_eq!((stack.pop(), stack.pop()), (Some(0), None));
    });
}

/// The contract "an index may be in the stack at most once; breaking that loses elements": a batch that
/// names one index twice links it once, and the indices between the two copies are lost (not popped
/// forever, nothing out of bounds).
#[test]
fn treiber_batch_with_a_duplicate_index_loses_what_lies_between() {
    GhostToken::new(|_token| {
        let stack = GhostTreiberStack::new(4);
        stack.push(0);
        stack.push_batch(&[1, 1]);
        assert_eq!(
            std::iter::from_fn(|| stack.pop()).collect::<Vec<_>>(),
            [1, 0]
        );
        stack.push(0);
        stack.push_batch(&[1, 2, 1]);
        assert_eq!(
            std::iter::from_fn(|| stack.pop()).collect::<Vec<_>>(),
            [1, 0]
        );
        stack.push_batch(&[3, 2, 1, 0]);
        assert_eq!(
            std::iter::from_fn(|| stack.pop()).collect::<Vec<_>>(),
            [3, 2, 1, 0]
        );
    });
}

// ---- the bitset ----------------------------------------------------------------------------------------

/// Threads race `test_and_set` on shared bits; only a winner resets its bit, so every `reset` must find the
/// bit set (a bit won twice without a reset in between would make one of them find it clear), and at the
/// end no bit is set. Bits straddle a word boundary (62..66).
#[test]
fn bitset_set_and_reset_race_exact_accounting() {
    GhostToken::new(|_token| {
        let bits = GhostAtomicBitset::new(66);
        let (wins, losses) = (AtomicUsize::new(0), AtomicUsize::new(0));
        thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for round in 0..ROUNDS / THREADS {
                        let bit = 62 + round % 4;
                        if !bits.test_and_set(bit) {
                            wins.fetch_add(1, Ordering::Relaxed);
                            assert!(bits.reset(bit), "bit {bit} was cleared under its winner");
                        } else {
                            losses.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let (wins, losses) = (wins.into_inner(), losses.into_inner());
        assert_eq!(wins + losses, ROUNDS / THREADS * THREADS);
        assert!(wins >= 1);
        assert_eq!(bits.count_ones(), 0);
        assert_eq!(bits.iter().next(), None);
        for bit in [0, 63, 64, 65] {
            assert!(!bits.test_and_set(bit));
        }
        assert_eq!(bits.iter().collect::<Vec<_>>(), [0, 63, 64, 65]);
        assert_eq!(
            format!("{bits:?}"),
            "GhostAtomicBitset { len_bits: 66, count_ones: 4 }"
        );
        assert_eq!(
            panic_message(|| {
                let _ = bits.reset(66);
            }),
            "GhostAtomicBitset: bit index 66 is out of range for a bitset of 66 bits"
        );
    });
}

// ---- Debug -----------------------------------------------------------------------------------------------

/// Every `Debug` of the module, exactly: the cells never read their value (even while a `&mut` to it is
/// alive), the worklists show their shape.
#[test]
fn debug_output_of_every_type() {
    GhostToken::new(|mut token| {
        assert_eq!(format!("{token:?}"), "GhostToken");
        let cell = GhostCell::new(1);
        let once = GhostOnceCell::with_value(2);
        let lazy = GhostLazyCell::new(|| 3);
        let lock = GhostLazyLock::new(|| 4);
        let value = cell.borrow_mut(&mut token);
        *value += 1;
        assert_eq!(
            format!("{cell:?} {once:?} {lazy:?} {lock:?}"),
            "GhostCell { .. } GhostOnceCell { .. } GhostLazyCell { .. } GhostLazyLock { .. }"
        );
        *value += 1;
        let stack = GhostTreiberStack::new(4);
        stack.push(2);
        let deque = GhostChaseLevDeque::new(8);
        deque.push_bottom(1).unwrap();
        deque.push_bottom(2).unwrap();
        assert_eq!(
            format!("{stack:?} {deque:?} {:?}", deque.stealer()),
            "GhostTreiberStack { capacity: 4, is_empty: false } GhostChaseLevDeque { capacity: 8, len: 2 } \
             GhostStealer { .. }"
        );
        let err = (&cell, &cell).borrow_mut(&mut token).unwrap_err();
        assert_eq!(
            format!("{err:?}"),
            "GhostAliasingError { first: 0, second: 1 }"
        );
        assert_eq!(*cell.borrow(&token), 3);
    });
}

// ---- orderings, checked by Miri's data-race detector ------------------------------------------------------

/// Plain (non-atomic) memory, one `u64` per index, handed from thread to thread only by the structure under
/// test: if an ordering the docs justify were too weak, the hand-over would not order the plain accesses,
/// and Miri would report a data race (natively, the values still have to be the ones written).
struct Payloads(Vec<std::cell::UnsafeCell<u64>>);

// SAFETY: every test below touches an index only while the structure under test gives it that index
// exclusively (popped, stolen, or published by a set bit and then only read); that is what they check.
unsafe impl Sync for Payloads {}

impl Payloads {
    fn new(len: usize) -> Self {
        Payloads((0..len).map(|_| std::cell::UnsafeCell::new(0)).collect())
    }

    /// # Safety
    ///
    /// No other thread accesses `index` meanwhile, and the previous writer's write happens before this.
    unsafe fn read(&self, index: usize) -> u64 {
        // SAFETY: the caller's promise.
        unsafe { *self.0[index].get() }
    }

    /// # Safety
    ///
    /// As `read`, for writing.
    unsafe fn write(&self, index: usize, value: u64) {
        // SAFETY: the caller's promise.
        unsafe { *self.0[index].get() = value }
    }
}

/// Treiber stack: a popped index's payload is the last value written by whoever pushed it (the push's
/// Release CAS, the pop's Acquire), through pops, pushes and batches on every thread. Each payload counts
/// the generations of its index; their sum is the number of pops.
#[test]
fn treiber_hands_plain_memory_from_pusher_to_popper() {
    let indices = 2 * THREADS;
    let payloads = Payloads::new(indices);
    let pops = AtomicUsize::new(0);
    GhostToken::new(|_token| {
        let stack = GhostTreiberStack::new(indices);
        for index in 0..indices {
            // SAFETY: no other thread exists yet.
            unsafe { payloads.write(index, index as u64) };
            stack.push(index);
        }
        thread::scope(|s| {
            for id in 0..THREADS {
                let (stack, payloads, pops) = (&stack, &payloads, &pops);
                s.spawn(move || {
                    let mut round = 0;
                    while round < ROUNDS / THREADS / 4 + 1 {
                        let Some(a) = stack.pop() else {
                            thread::yield_now();
                            continue;
                        };
                        let b = stack.pop();
                        for index in [Some(a), b].into_iter().flatten() {
                            // SAFETY: popped: ours until we push it back.
                            let value = unsafe { payloads.read(index) };
                            assert_eq!(value % indices as u64, index as u64);
                            // SAFETY: as above.
                            unsafe { payloads.write(index, value + indices as u64) };
                            pops.fetch_add(1, Ordering::Relaxed);
                        }
                        match b {
                            Some(b) if (round + id) % 2 == 0 => stack.push_batch(&[b, a]),
                            Some(b) => {
                                stack.push(a);
                                stack.push(b);
                            }
                            None => stack.push(a),
                        }
                        round += 1;
                    }
                });
            }
        });
        let mut left = 0;
        while let Some(index) = stack.pop() {
            left += 1;
            assert!(index < indices);
        }
        assert_eq!(left, indices);
    });
    let generations: u64 = (0..indices)
        // SAFETY: every thread is joined.
        .map(|index| (unsafe { payloads.read(index) } - index as u64) / indices as u64)
        .sum();
    assert_eq!(generations, pops.load(Ordering::Relaxed) as u64);
}

/// Chase-Lev deque: the owner writes a value's payload, then pushes the value; a thief that steals it reads
/// that payload (the Release fence before `bottom`, the stealer's Acquire load of `bottom`), then marks it
/// taken. Every payload ends marked, each value taken once (a second taker would read the mark).
#[test]
fn deque_hands_plain_memory_from_owner_to_thieves() {
    let values = if cfg!(miri) { 40 } else { 4096 };
    let payloads = Payloads::new(values);
    let taken = u64::MAX;
    GhostToken::new(|_token| {
        let owner = GhostChaseLevDeque::new(8);
        let done = AtomicBool::new(false);
        thread::scope(|s| {
            for _ in 0..THREADS - 1 {
                let (thief, payloads, done) = (owner.stealer(), &payloads, &done);
                s.spawn(move || {
                    loop {
                        match thief.steal() {
                            Some(value) => {
                                // SAFETY: stolen: ours alone from now on.
                                assert_eq!(unsafe { payloads.read(value) }, 3 * value as u64 + 1);
                                // SAFETY: as above.
                                unsafe { payloads.write(value, taken) };
                            }
                            None if done.load(Ordering::Acquire) => break,
                            None => thread::yield_now(),
                        }
                    }
                });
            }
            let take_mine = |value: usize| {
                // SAFETY: popped by the owner: ours alone.
                assert_eq!(unsafe { payloads.read(value) }, 3 * value as u64 + 1);
                // SAFETY: as above.
                unsafe { payloads.write(value, taken) };
            };
            for value in 0..values {
                // SAFETY: not pushed yet: nobody else can reach it.
                unsafe { payloads.write(value, 3 * value as u64 + 1) };
                while owner.push_bottom(value).is_err() {
                    if let Some(mine) = owner.pop_bottom() {
                        take_mine(mine);
                    }
                }
            }
            while let Some(mine) = owner.pop_bottom() {
                take_mine(mine);
            }
            done.store(true, Ordering::Release);
        });
    });
    // SAFETY: every thread is joined.
    assert!((0..values).all(|value| unsafe { payloads.read(value) } == taken));
}

/// Bitset: `test_and_set` publishes what the setter wrote before it (Release), and `test` and `iter` read
/// it (Acquire), as the rustdoc says ("whatever the setter wrote before setting it is visible after this
/// returns `true`").
#[test]
fn bitset_publishes_plain_memory_written_before_the_set() {
    let bits_len = if cfg!(miri) { 70 } else { 4096 };
    let payloads = Payloads::new(bits_len);
    GhostToken::new(|_token| {
        let bits = GhostAtomicBitset::new(bits_len);
        thread::scope(|s| {
            s.spawn(|| {
                for bit in (0..bits_len).rev() {
                    // SAFETY: bit not set yet: no reader looks at this payload.
                    unsafe { payloads.write(bit, bit as u64 + 100) };
                    assert!(!bits.test_and_set(bit));
                }
            });
            s.spawn(|| {
                for bit in 0..bits_len {
                    while !bits.test(bit) {
                        thread::yield_now();
                    }
                    // SAFETY: the bit is set, so its payload is written and never written again.
                    assert_eq!(unsafe { payloads.read(bit) }, bit as u64 + 100);
                }
            });
            s.spawn(|| {
                let mut seen = 0;
                while seen < bits_len {
                    seen = 0;
                    for bit in bits.iter() {
                        // SAFETY: as above.
                        assert_eq!(unsafe { payloads.read(bit) }, bit as u64 + 100);
                        seen += 1;
                    }
                    thread::yield_now();
                }
            });
        });
    });
}

// ---- the read phase: drops and huge ranges ---------------------------------------------------------------

/// When a reader panics, the results the other readers produced are dropped exactly once (those already
/// collected and those never joined), whether the panicking reader is shard 0 (the calling thread) or a
/// scoped one, and the commit never sees them.
#[test]
fn read_phase_results_are_dropped_once_when_a_reader_panics() {
    for panicking in [0usize, 2] {
        let drops = AtomicUsize::new(0);
        GhostToken::new(|mut token| {
            let message = panic_message(|| {
                parallel_read_then_commit_with(
                    4,
                    &mut token,
                    |shard, _| {
                        assert!(shard.index != panicking, "reader failed");
                        Counted(&drops)
                    },
                    |_results, _| panic!("the commit ran"),
                )
            });
            assert_eq!(message, "reader failed");
        });
        assert_eq!(
            drops.load(Ordering::Relaxed),
            3,
            "panicking shard {panicking}"
        );
    }
}

/// `Shard::range` over `usize::MAX` elements: contiguous, covering `0..usize::MAX` exactly, sizes differing by
/// at most one, no overflow.
#[test]
fn shard_ranges_of_usize_max_elements() {
    use trust_core::ghost::Shard;
    for count in [1usize, 2, 3, 7, 64, 1000] {
        let ranges: Vec<_> = (0..count)
            .map(|index| Shard { index, count }.range(usize::MAX))
            .collect();
        assert_eq!((ranges[0].start, ranges[count - 1].end), (0, usize::MAX));
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
            assert!(pair[0].len() - pair[1].len() <= 1);
        }
    }
}

// ---- limits and globals ------------------------------------------------------------------------------------

/// `GhostTreiberStack::new` panics "if `capacity >= u32::MAX`" (indices are 32 bits next to the tag, and
/// `u32::MAX` is the "no index" value), before allocating; the message names the capacity and the limit.
/// `GhostChaseLevDeque::NONE` is `usize::MAX`, as the guide says.
#[test]
fn treiber_capacity_limit_and_the_deque_sentinel() {
    for capacity in [u32::MAX as usize, usize::MAX] {
        assert_eq!(
            panic_message(|| drop(GhostTreiberStack::<'static>::new(capacity))),
            format!(
                "GhostTreiberStack::new: capacity {capacity} is too large: indices are stored in 32 bits, so at \
                 most 4294967294 indices"
            )
        );
    }
    assert_eq!(GhostChaseLevDeque::NONE, usize::MAX);
}

/// A `GhostLazyLock<'static>` in a `static`, forced through `static_token()` by several threads at once: the
/// initialiser runs exactly once and every thread gets its value (the halo seed's global singleton, with
/// no `unsafe`).
#[test]
fn a_static_lazy_lock_is_a_global_singleton() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    static TABLE: GhostLazyLock<'static, Vec<u64>> = GhostLazyLock::new(|| {
        RUNS.fetch_add(1, Ordering::Relaxed);
        (0..10).map(|i| i * i).collect()
    });
    let sums: Vec<u64> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| s.spawn(|| TABLE.force(static_token()).iter().sum::<u64>()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(sums, vec![285; THREADS]);
    assert_eq!(RUNS.load(Ordering::Relaxed), 1);
    assert_eq!(TABLE.get(static_token()).map(Vec::len), Some(10));
}

/// `GhostAtomicBitset::new(usize::MAX)` asks for 2^58 words (2^61 bytes): no address space holds that, and,
/// as with `Vec::with_capacity`, a failed allocation aborts the process (it is not a panic). Measured in a
/// child process (this test run again, filtered to itself): the child dies with the allocator's message.
/// Not under Miri (no processes).
#[test]
fn a_bitset_of_usize_max_bits_aborts_on_its_allocation() {
    if std::env::var_os("REVIEW41_CHILD").is_some() {
        // `black_box`: the words escape, so no optimizer may elide their allocation.
        let bits = std::hint::black_box(GhostAtomicBitset::<'static>::new(usize::MAX));
        println!("allocated {} bits", bits.len_bits());
        return;
    }
    if cfg!(miri) {
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_bitset_of_usize_max_bits_aborts_on_its_allocation",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("REVIEW41_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("memory allocation of 2305843009213693952 bytes failed"),
        "{stderr}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(output.status.signal(), Some(6), "SIGABRT");
    }
}
