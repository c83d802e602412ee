//! Review 99: `apply_then` inlined down to a plain thread's push (de58b2b, 5840722), the unchecked push behind
//! `has_room`'s constants (a293ffa), and the refusal of a take that a join closes a cycle on (db4cab2, helper
//! 128). Tests that configure `may`, shut the runtime down or fork run in a child process of their own with a
//! watchdog (`in_child!`); the rest are bounded by `within` where they could hang.
//!
//! Found, fixed (review 99):
//! - `on_own_stack`, inlined into every caller's `apply_then` loop with `post_then_from_thread`, asks `may`
//!   whether it runs in a coroutine when the thread's stack could not be told (`Client::stack` is `None`: not
//!   Linux, or `pthread_getattr_np` failed). `may::coroutine::is_coroutine` and the `generator` functions under
//!   it are `#[inline]` down to `ContextStack::current`, which reads `generator`'s thread-local root context;
//!   in the release build of `review99_pipelined_loop` (`objdump -d`) that call was out of line only because
//!   `generator` 0.8.12 marks it `#[inline(never)]` (its own workaround, after Rust 1.89); earlier 0.8 releases,
//!   which `may` 0.3 accepts in a user's build, mark it nothing or `#[inline]`. That is the thread-local read
//!   DESIGN.md section 4 says must go through an out-of-line function of ours: `outbox::in_may_coroutine` is now
//!   `#[inline(never)]` (its callers inlined into user code: `on_own_stack`, a generic `Fiber::join`). The
//!   loop's code now calls `thread_client_cell`, `in_may_coroutine`, `run_thread_continuations`, `announced`,
//!   `publish_all`, `make_room` and `open_outbox`, and reads no thread-local itself (no `%fs` access in it);
//!   the runtime's other thread-locals on `apply_then`'s path are read in `apply_then_elsewhere` (out of line)
//!   or through `context::worker` (out of line already).
//!
//! Held (tests added), with exact counts, in debug and release:
//! - (1) The inlined path: 20,000 pipelined requests from one thread; 8 coroutines on 2 `may` threads that both
//!   have a thread client, 500 `apply_then`s each, every other one's capture over 128 bytes, with a yield
//!   between (they move between the threads, 4-5 of the 8 here: each
//!   request finds the current thread's client, is not on its stack, goes out of line as a blocking call; each
//!   continuation ran on its own coroutine, at once, with its own result); `apply_then` from thread-local
//!   destructors run before and after `THREAD_CLIENT`'s, and from captures of continuations dropped or run while
//!   the thread's client is destroyed at exit (each delegating again: `thread_client_cell` gives null then, the
//!   late client takes over); continuations that pipeline 200 requests each (no re-entry of
//!   `run_thread_continuations`) and a chain of 10,000; closures and a continuation whose captures panic when
//!   dropped (the first panic out of `wait_pending`, once); after `Runtime::shutdown` (refused with the message,
//!   both captures, panicking when dropped, dropped once each, outside the client's borrow, twice in a row); in
//!   a forked child from the thread whose client was copied (refused naming `fork`, at once). The SAFETY
//!   argument of `thread_client_cell`'s deref holds: between the `borrow_mut` and its `drop` the path runs no
//!   user code (records and continuations are moved, never dropped, there; `make_room` parks the thread, never
//!   a coroutine, and drops nothing; what a shutdown gives back is dropped after the borrow), and `try_with`
//!   gives null while `THREAD_CLIENT` is being destroyed. `in_forked_child` inlined: its relaxed load follows
//!   user code that is an opaque call (the fork's handler writes it), so it is not hoisted; nothing relied on
//!   the call.
//! - (2) `has_room`'s constants cannot fail to compile for any user type: a record's `RESULT` is at most
//!   `MAX_INLINE_RESULT` (a larger or more aligned result travels boxed) and `pushed_size` at most `BODY` (a
//!   record that does not fit is boxed first). Compiled and run from a plain thread, a worker's fiber
//!   (`post_then_on_worker`), a delegated closure (`push_or_queue_then`, its backlog) and a `may` coroutine:
//!   zero-sized, 64-aligned zero-sized, 16/32/64-aligned captures and results, results of 255, 256 and 257
//!   bytes, captures around the API's 512-byte boxing and up to 32 KB, results up to 40 KB. Every caller of
//!   `push_then` checks `has_room` (or `make_room` returns only once it holds) in the same borrow of the client;
//!   a fiber behind a delegated closure's backlog of 5,000 records waits for it (issue order kept, exactly).
//! - (3) Takes refused by a join: a take displaced by a later take (told no at once, its handle back), the later
//!   one refused; a second take after a refused one gets the value once the launched fiber ends; a join by a
//!   fiber that likely reuses a finished launched fiber's id does not refuse (the take waits and gets the value);
//!   a refusal followed by `Runtime::shutdown`; the message exactly. Each value dropped exactly once. A refused take
//!   whose promise has no joiner cannot be made through the API (the taking fiber joins its verdict at once, and
//!   cannot end meanwhile); a cycle through a join across workers is outside the promise ("on this worker").

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trust_core::{Latch, Trust, wait_pending};

#[macro_use]
mod common;
#[path = "common/latch_chains.rs"]
mod latch_chains;
use common::{CountsDrops, PanicsOnDrop, child_ok, coroutine, load, panic_message, rt};
use latch_chains::*;

/// The message of any call after `Runtime::shutdown` (`shared::SHUT_DOWN`).
const SHUT_DOWN: &str = "the trust runtime has been shut down: no property can be entrusted or applied to after \
     `Runtime::shutdown`";

// ---------------------------------------------------------------------------------------------------------
// (1) `apply_then` inlined down to a plain thread's push (de58b2b, 5840722).

/// The loop whose generated code was read (`objdump -d` of the release test binary): `apply_then` inlined into
/// it, the thread-local found by a call each iteration.
#[inline(never)]
pub fn review99_pipelined_loop(t: &Trust<u64>, n: u64, sum: &Rc<Cell<u64>>) {
    for i in 0..n {
        let s = sum.clone();
        t.apply_then(
            move |v| {
                *v += i;
                *v
            },
            move |r| s.set(s.get() + r),
        );
    }
}

/// Sum over `i < n` of the counter after adding `i` (starting at 0): the continuations' total.
fn prefix_sums(n: u64) -> u64 {
    (0..n).map(|i| i * (i + 1) / 2).sum()
}

/// (1a) Held: the inlined loop, pipelined from one thread (many batches, both lanes, room waited for), every
/// continuation ran once with the right result: exact totals.
#[test]
fn a_pipelined_inlined_loop_counts_exactly() {
    let t = rt().trustee(0).entrust(0u64);
    let sum = Rc::new(Cell::new(0));
    review99_pipelined_loop(&t, 20_000, &sum);
    wait_pending();
    assert_eq!(sum.get(), prefix_sums(20_000));
    assert_eq!(t.apply(|v| *v), 20_000 * 19_999 / 2);
}

/// A coroutine-local whose destructor makes a call on the `may` thread, outside any coroutine: that thread gets
/// a client of its own (`THREAD_CLIENT`), so `post_then_from_thread` finds one for the coroutines it runs.
struct CallsOnDrop(Trust<u64>);

impl Drop for CallsOnDrop {
    fn drop(&mut self) {
        self.0.apply(|v| *v += 0);
    }
}

may::coroutine_local!(static WHO: Cell<u64> = Cell::new(u64::MAX));
may::coroutine_local!(static CALLER: std::cell::RefCell<Option<CallsOnDrop>> = std::cell::RefCell::new(None));

/// (1b) Held: coroutines on two `may` threads, both of which have a thread client of their own, loop over
/// `apply_then` (the inlined path: each finds the current thread's client, whose stack it is not on, and goes
/// out of line), yielding between calls so that `may` moves them between its threads. Each continuation ran on
/// its own coroutine, once, right away, with its exact result; every coroutine ran on both threads here.
#[test]
fn coroutines_looping_apply_then_across_may_threads_count_exactly_coroutine() {
    in_child!(
        "coroutines_looping_apply_then_across_may_threads_count_exactly_coroutine",
        60
    );
    may::config().set_workers(2);
    let t = rt().trustee(0).entrust(0u64);
    // Give both `may` threads a client (several coroutines end on each).
    for _ in 0..8 {
        let t2 = t.clone();
        coroutine(move || CALLER.with(|k| *k.borrow_mut() = Some(CallsOnDrop(t2))))
            .join()
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    const COROUTINES: u64 = 8;
    const EACH: u64 = 500;
    let moved = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..COROUTINES)
        .map(|c| {
            let (t, moved) = (t.clone(), moved.clone());
            coroutine(move || {
                WHO.with(|w| w.set(c));
                let (ran, wrong) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(0u64)));
                let mut threads = std::collections::HashSet::new();
                for i in 0..EACH {
                    threads.insert(std::thread::current().id());
                    let (r, w) = (ran.clone(), wrong.clone());
                    let then = move |got| {
                        // Its own coroutine, with its own result.
                        let here = may::coroutine::is_coroutine() && WHO.with(Cell::get) == c;
                        if !here || got != c * 1_000_000 + i {
                            w.set(w.get() + 1);
                        }
                        r.set(r.get() + 1);
                    };
                    if i % 2 == 1 {
                        // A capture over `MAY_INLINE` (128 bytes): `apply_then` asks whether it runs in a
                        // coroutine before it boxes, inlined into this loop too.
                        let pad = [i; 24];
                        t.apply_then(
                            move |v| {
                                *v += 1;
                                c * 1_000_000 + pad[23]
                            },
                            then,
                        );
                    } else {
                        t.apply_then(
                            move |v| {
                                *v += 1;
                                c * 1_000_000 + i
                            },
                            then,
                        );
                    }
                    // A coroutine's request is a blocking call: its continuation has run when it returns.
                    assert_eq!(
                        ran.get(),
                        i + 1,
                        "the continuation ran when apply_then returned"
                    );
                    may::coroutine::yield_now();
                }
                wait_pending();
                if threads.len() > 1 {
                    moved.fetch_add(1, Ordering::SeqCst);
                }
                (ran.get(), wrong.get())
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), (EACH, 0));
    }
    assert_eq!(t.apply(|v| *v), COROUTINES * EACH);
    eprintln!("coroutines that ran on both may threads: {}", load(&moved));
    child_ok();
}

thread_local! {
    static BEFORE: ThenOnExit = const { ThenOnExit(std::cell::RefCell::new(None)) };
    static AFTER: ThenOnExit = const { ThenOnExit(std::cell::RefCell::new(None)) };
}

/// Issues an `apply_then` (+1) and waits for it in its destructor: (counter, continuations run).
struct ThenOnExit(std::cell::RefCell<Option<(Trust<u64>, Arc<AtomicUsize>)>>);

impl Drop for ThenOnExit {
    fn drop(&mut self) {
        if let Some((t, ran)) = self.0.borrow_mut().take() {
            for _ in 0..100 {
                let ran = ran.clone();
                t.apply_then(
                    |v| *v += 1,
                    move |()| {
                        ran.fetch_add(1, Ordering::SeqCst);
                    },
                );
            }
            wait_pending();
        }
    }
}

/// (1c) Held: `apply_then` from thread-local destructors, one made before the thread's client and one after
/// (destroyed after it and before it): 100 requests each, every one applied and continued once.
#[test]
fn apply_then_from_thread_local_destructors_before_and_after_the_client_counts_exactly() {
    let t = rt().trustee(1).entrust(0u64);
    let ran = Arc::new(AtomicUsize::new(0));
    let (t2, r2) = (t.clone(), ran.clone());
    std::thread::spawn(move || {
        BEFORE.with(|b| *b.0.borrow_mut() = Some((t2.clone(), r2.clone())));
        // The thread's client is made here.
        let sum = Rc::new(Cell::new(0));
        review99_pipelined_loop(&t2, 1000, &sum);
        wait_pending();
        assert_eq!(sum.get(), prefix_sums(1000));
        AFTER.with(|a| *a.0.borrow_mut() = Some((t2.clone(), r2.clone())));
    })
    .join()
    .unwrap();
    assert_eq!(load(&ran), 200);
    assert_eq!(t.apply(|v| *v), 1000 * 999 / 2 + 200);
}

/// Its drop issues an `apply_then` (+1,000, continued by +1,000 on the count), waits for it, then a blocking
/// `apply` (+1), and counts itself (+1).
struct DelegatesOnDrop(Trust<u64>, Arc<AtomicUsize>);

impl Drop for DelegatesOnDrop {
    fn drop(&mut self) {
        let count = self.1.clone();
        self.0.apply_then(
            |v| *v += 1000,
            move |()| {
                count.fetch_add(1000, Ordering::SeqCst);
            },
        );
        wait_pending();
        self.0.apply(|v| *v += 1);
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

/// (1c') Held: a thread pipelines 50 `apply_then`s whose continuations hold a capture that delegates when
/// dropped, and exits without `wait_pending`: the continuations run or are dropped with the thread's client
/// (`THREAD_CLIENT` being destroyed: the inlined path finds it gone, the late client takes the calls), and
/// every capture's `apply_then`, continuation and `apply` happen exactly once.
#[test]
fn continuations_that_delegate_when_dropped_at_thread_exit_count_exactly() {
    let t = rt().trustee(1).entrust(0u64);
    let (count, ran) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (t2, c2, r2) = (t.clone(), count.clone(), ran.clone());
    std::thread::spawn(move || {
        for _ in 0..50 {
            let (capture, r3) = (DelegatesOnDrop(t2.clone(), c2.clone()), r2.clone());
            t2.apply_then(
                |v| *v += 1,
                move |()| {
                    let _c = capture;
                    r3.fetch_add(1, Ordering::SeqCst);
                },
            );
        }
    })
    .join()
    .unwrap();
    let ran = load(&ran);
    assert!(ran <= 50);
    assert_eq!(
        load(&count),
        50 * 1001,
        "each capture's drop delegated once ({ran} continuations ran)"
    );
    assert_eq!(t.apply(|v| *v), 50 + 50 * 1001);
}

/// (1d) Held: continuations that issue `apply_then`s (the inlined path, inside `run_thread_continuations`'s
/// loop, which it does not re-enter): 200 continuations issue 200 each, filling batches (the room waited for
/// inside a continuation); every one runs once, in constant stack.
#[test]
fn continuations_that_pipeline_from_inside_a_continuation_count_exactly() {
    let t = rt().trustee(0).entrust(0u64);
    let ran = Rc::new(Cell::new(0u64));
    for _ in 0..200 {
        let (t2, r2) = (t.clone(), ran.clone());
        t.apply_then(
            |v| *v += 1,
            move |()| {
                for _ in 0..200 {
                    let r3 = r2.clone();
                    t2.apply_then(|v| *v += 1, move |()| r3.set(r3.get() + 1));
                }
            },
        );
    }
    wait_pending();
    assert_eq!(ran.get(), 200 * 200);
    assert_eq!(t.apply(|v| *v), 200 + 200 * 200);
    common::chain_of_increments(t.clone(), 10_000);
    wait_pending();
    assert_eq!(t.apply(|v| *v), 200 + 200 * 200 + 10_000);
}

/// (1e) Held: on the inlined path, closures whose capture panics when dropped (at the end of the closure, on
/// the trustee: the closure's panic, after its effect) and a continuation whose capture panics when dropped (at
/// its end): the first panic comes out of `wait_pending`, once, the others are dropped; each capture dropped
/// once; the continuations of the other requests all ran.
#[test]
fn drop_panics_of_captures_on_the_inlined_path_are_contained_and_counted() {
    let _ = common::quiet();
    let t = rt().trustee(0).entrust(0u64);
    let sum = Rc::new(Cell::new(0));
    review99_pipelined_loop(&t, 10, &sum); // the client is made
    wait_pending();
    let (closure_drops, then_drops) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let ran = Rc::new(Cell::new(0));
    for i in 0..100u64 {
        let capture = i
            .is_multiple_of(10)
            .then(|| PanicsOnDrop(closure_drops.clone()));
        let r = ran.clone();
        let then_capture = (i == 55).then(|| PanicsOnDrop(then_drops.clone()));
        t.apply_then(
            move |v| {
                let _c = capture;
                *v += 1;
            },
            move |()| {
                let _c = then_capture;
                r.set(r.get() + 1);
            },
        );
    }
    let got = catch_unwind(AssertUnwindSafe(wait_pending));
    assert_eq!(got.map_err(panic_message), Err("PanicsOnDrop".to_string()));
    wait_pending();
    assert_eq!(
        ran.get(),
        90,
        "the continuations of the 90 closures that did not panic"
    );
    assert_eq!(load(&then_drops), 1);
    assert_eq!(t.apply(|v| *v), 45 + 100);
    assert_eq!(load(&closure_drops), 10);
}

/// (1f) Held: after `Runtime::shutdown`, a thread that has a client (the inlined path finds it, sees the trustee
/// closed, gives the arguments back) is refused with the shutdown's message; the closure's and the
/// continuation's captures, both panicking when dropped, are each dropped once, unrun, outside the client's
/// borrow (a second `apply_then` is refused alike, not a `BorrowMutError`).
#[test]
fn apply_then_after_shutdown_on_the_inlined_path_is_refused_dropping_each_capture_once() {
    in_child!(
        "apply_then_after_shutdown_on_the_inlined_path_is_refused_dropping_each_capture_once",
        20
    );
    let t = rt().trustee(0).entrust(0u64);
    let sum = Rc::new(Cell::new(0));
    review99_pipelined_loop(&t, 100, &sum);
    wait_pending();
    rt().shutdown();
    let drops = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    for round in 1..=2 {
        let (capture, then_capture, r2) = (
            PanicsOnDrop(drops.clone()),
            PanicsOnDrop(drops.clone()),
            ran.clone(),
        );
        let got = catch_unwind(AssertUnwindSafe(|| {
            t.apply_then(
                move |v| {
                    let _c = capture;
                    *v += 1;
                },
                move |()| {
                    let _c = then_capture;
                    r2.fetch_add(1, Ordering::SeqCst);
                },
            )
        }));
        assert_eq!(got.map_err(panic_message), Err(SHUT_DOWN.to_string()));
        assert_eq!(load(&drops), 2 * round);
    }
    assert_eq!(load(&ran), 0);
    child_ok();
}

/// (1g) Held: in a child forked after the runtime started, the thread that forked (its client copied, the
/// inlined path finds it) is refused at once with the fork's message, not left waiting for a trustee that
/// the child does not have.
#[test]
fn apply_then_in_a_forked_child_from_a_thread_with_a_client_is_refused_at_once() {
    in_child!(
        "apply_then_in_a_forked_child_from_a_thread_with_a_client_is_refused_at_once",
        20
    );
    let t = rt().trustee(0).entrust(0u64);
    let sum = Rc::new(Cell::new(0));
    review99_pipelined_loop(&t, 100, &sum);
    wait_pending();
    let (code, _) = common::forked(10, || {
        let got = catch_unwind(AssertUnwindSafe(|| {
            t.apply_then(|v| *v += 1, |()| {});
        }));
        if common::names_fork(got) { 0 } else { 1 }
    });
    assert_eq!(code, Some(0));
    assert_eq!(t.apply(|v| *v), 100 * 99 / 2);
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// (2) `has_room` with constants, `push_unchecked` and `push_then` unsafe (a293ffa): every record shape.

#[derive(Clone, Copy, PartialEq, Debug)]
#[repr(align(16))]
struct A16([u8; 48]);
#[derive(Clone, Copy, PartialEq, Debug)]
#[repr(align(32))]
struct A32([u8; 40]);
#[derive(Clone, Copy, PartialEq, Debug)]
#[repr(align(64))]
struct A64([u8; 200]);
#[derive(Clone, Copy, PartialEq, Debug)]
#[repr(align(64))]
struct Z64;

/// A value of each shape, from a seed.
trait Shape: Copy + PartialEq + std::fmt::Debug + Send + 'static {
    fn make(seed: u8) -> Self;
}

impl Shape for A16 {
    fn make(seed: u8) -> Self {
        A16([seed; 48])
    }
}
impl Shape for A32 {
    fn make(seed: u8) -> Self {
        A32([seed.wrapping_add(1); 40])
    }
}
impl Shape for A64 {
    fn make(seed: u8) -> Self {
        A64([seed.wrapping_add(2); 200])
    }
}
impl Shape for Z64 {
    fn make(_: u8) -> Self {
        Z64
    }
}
impl Shape for () {
    fn make(_: u8) -> Self {}
}
impl<const N: usize> Shape for [u8; N] {
    fn make(seed: u8) -> Self {
        [seed; N]
    }
}
impl<const N: usize> Shape for [u64; N] {
    fn make(seed: u8) -> Self {
        [u64::from(seed) * 3; N]
    }
}

fn aligned<T>(v: &T) -> bool {
    (std::ptr::from_ref(v) as usize).is_multiple_of(align_of::<T>())
}

/// `n` `apply_then`s on `t` (from the caller, whatever it is) whose closure captures a `C` and returns an `R`
/// (each checks its capture's alignment and value, each continuation its result's), then `wait_pending`:
/// the number of continuations that saw what they should, and that of those that did not.
fn shapes<C: Shape, R: Shape>(t: &Trust<u64>, n: u8) -> (usize, usize) {
    let (good, bad) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    for seed in 0..n {
        let capture = C::make(seed);
        let (g, b) = (good.clone(), bad.clone());
        t.apply_then(
            move |v| {
                *v += 1;
                let capture = capture;
                assert!(
                    aligned(&capture) && capture == C::make(seed),
                    "capture moved intact"
                );
                R::make(seed)
            },
            move |r: R| {
                if aligned(&r) && r == R::make(seed) {
                    g.set(g.get() + 1);
                } else {
                    b.set(b.get() + 1);
                }
            },
        );
    }
    wait_pending();
    (good.get(), bad.get())
}

/// Every shape: zero-sized, 16/32/64-aligned, results at and just over `MAX_INLINE_RESULT` (256), huge
/// captures (boxed by the API over 512 bytes, and just under it) and huge results; 100 each. Returns the
/// number of shapes checked.
fn every_shape(t: &Trust<u64>) -> u64 {
    let mut shapes_run = 0;
    macro_rules! check {
        ($($c:ty => $r:ty),* $(,)?) => {$(
            assert_eq!(shapes::<$c, $r>(t, 100), (100, 0), "{} => {}", stringify!($c), stringify!($r));
            shapes_run += 1;
        )*};
    }
    check!(
        () => (),
        Z64 => Z64,
        () => Z64,
        A16 => A16,
        A32 => A32,
        A64 => A64,
        A64 => (),
        () => A64,
        [u8; 1] => [u8; 256],
        [u8; 7] => [u8; 257],
        [u64; 63] => [u8; 255],
        [u64; 64] => [u64; 32],
        [u64; 65] => [u64; 33],
        [u64; 140] => [u64; 141],
        [u64; 4000] => [u64; 5000],
        [u8; 1128] => (),
        [u8; 1129] => [u8; 1136],
    );
    shapes_run
}

/// (2a) Held (compiles and runs, exact): every shape from a plain thread (the inlined path, 100 each pipelined,
/// record and result room waited for, boxed records and results), from a worker's fiber (`post_then_on_worker`:
/// its room check, then `push_then`), from a delegated closure on another trustee (`push_or_queue_then`: the
/// backlog), and from a `may` coroutine.
#[test]
fn every_record_shape_compiles_and_counts_exactly_from_every_caller_coroutine() {
    in_child!(
        "every_record_shape_compiles_and_counts_exactly_from_every_caller_coroutine",
        60
    );
    let t = rt().trustee(0).entrust(0u64);
    let n = every_shape(&t);
    assert_eq!(t.apply(|v| *v), n * 100);
    common::calibrate();
    let t2 = t.clone();
    let on_fiber = common::spawn_on(1, move || every_shape(&t2))
        .join()
        .unwrap();
    assert_eq!(on_fiber, n);
    assert_eq!(t.apply(|v| *v), 2 * n * 100);
    // From a delegated closure on trustee 1: continuations run on that worker after the closure returns, so
    // they are counted from there.
    let other = rt().trustee(1).entrust(());
    let t3 = t.clone();
    other.apply(move |()| {
        macro_rules! issue {
            ($($c:ty => $r:ty),*) => {$(
                for seed in 0..100u8 {
                    let capture = <$c>::make(seed);
                    t3.apply_then(
                        move |v| {
                            let capture = capture;
                            assert!(aligned(&capture) && capture == <$c>::make(seed));
                            *v += 1;
                            <$r>::make(seed)
                        },
                        move |r: $r| assert!(aligned(&r) && r == <$r>::make(seed)),
                    );
                }
            )*};
        }
        issue!(A64 => A64, [u64; 4000] => [u64; 5000], [u8; 7] => [u8; 257], Z64 => Z64, () => ());
    });
    let t4 = t.clone();
    common::eventually("the delegated closure's 500 requests ran", move || {
        t4.apply(|v| *v) == 2 * n * 100 + 500
    });
    // Room for the 32 KB capture and 40 KB result on the coroutine's stack (`may`'s default is 32 KiB).
    may::config().set_workers(1).set_stack_size(0x10_0000);
    let t5 = t.clone();
    let in_coroutine = coroutine(move || every_shape(&t5)).join().unwrap();
    assert_eq!(in_coroutine, n);
    assert_eq!(t.apply(|v| *v), 3 * n * 100 + 500);
    child_ok();
}

/// (2b) Held: a worker fiber's room check with a backlog: a delegated closure on the fiber's worker queues more
/// `apply_then`s than a batch holds (to the other trustee), then the fiber issues its own; the fiber's waits
/// for the backlog (`has_room` is false while it is non-empty) instead of going ahead of it: the trustee sees
/// the requests in issue order.
#[test]
fn a_fibers_apply_then_behind_a_delegated_closures_backlog_keeps_issue_order() {
    in_child!(
        "a_fibers_apply_then_behind_a_delegated_closures_backlog_keeps_issue_order",
        20
    );
    common::calibrate();
    let log: Trust<Vec<u32>> = rt().trustee(0).entrust(Vec::new());
    let here: Trust<()> = rt().trustee(1).entrust(());
    let (log2, here2) = (log.clone(), here.clone());
    let done = common::spawn_on(1, move || {
        let log3 = log2.clone();
        // Delegated, on this fiber's worker (the local shortcut runs it inline): 5,000 records of 512 bytes.
        here2.apply(move |()| {
            for i in 0..5000u32 {
                let pad = [0u8; 500];
                log3.apply_then(
                    move |l| {
                        let _ = pad;
                        l.push(i);
                    },
                    |()| {},
                );
            }
        });
        for i in 5000..5100u32 {
            log2.apply_then(move |l| l.push(i), |()| {});
        }
        wait_pending();
        log2.apply(|l| l.clone())
    })
    .join()
    .unwrap();
    assert_eq!(done, (0..5100).collect::<Vec<_>>());
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// (3) Takes refused when a join closes the cycle (db4cab2, helper 128).

/// In a fiber: spawns on this worker a fiber that signals once it runs, then takes `l` (`into_inner` when
/// `inner`); yields until it has begun (and once more: its take now waits).
fn start_take(
    l: Trust<Latch<CountsDrops>>,
    inner: bool,
) -> trust_core::Fiber<Result<bool, String>> {
    spawn_waiting_here(move || {
        catch_unwind(AssertUnwindSafe(move || {
            if inner {
                l.into_inner().is_some()
            } else {
                l.try_unwrap().is_ok()
            }
        }))
        .map_err(panic_message)
    })
}

/// (3a) Two takes on one latch by two fibers of its worker: the second displaces the first (told no at once:
/// `try_unwrap` gets its handle back), then a launched fiber joins the second, which is refused. The first's
/// handle was counted again, the refused one's given up: the thread's last take gets the value, dropped once.
#[test]
fn a_take_displaced_by_a_later_take_then_the_later_refused_drops_once() {
    in_child!(
        "a_take_displaced_by_a_later_take_then_the_later_refused_drops_once",
        10
    );
    let drops = Arc::new(AtomicUsize::new(0));
    let l: Trust<Latch<CountsDrops>> = rt()
        .trustee(0)
        .entrust(Latch::new(CountsDrops(drops.clone())));
    let l2 = l.clone();
    let got = common::within(5, move || {
        let (first, second) = (l2.clone(), l2.clone());
        l2.launch(move |_| {
            // `try_unwrap` gives the handle back when displaced: returned, then dropped here.
            let begun = Arc::new(AtomicBool::new(false));
            let b2 = begun.clone();
            let first = spawn_here(move || {
                b2.store(true, Ordering::SeqCst);
                first.try_unwrap().map(|_| ()).map_err(drop)
            });
            while !begun.load(Ordering::SeqCst) {
                trust_core::yield_now();
            }
            // Once more: the first take now waits.
            trust_core::yield_now();
            let second = start_take(second, true);
            let first = first.join().map_err(panic_message);
            let second = second.join().map_err(panic_message);
            (first, second)
        })
    });
    assert_eq!(
        got,
        (Ok(Err(())), Ok(Err(TAKE_JOINED_BY_LAUNCHED.to_string())))
    );
    assert_eq!(load(&drops), 0);
    let latch = l
        .try_unwrap()
        .expect("the thread's handle is the last counted");
    drop(latch);
    assert_eq!(load(&drops), 1);
    child_ok();
}

/// (3b) A take refused, then a second take of the same latch (another handle) by another fiber that no
/// launched fiber joins: it waits and gets the value once the launched fiber ends (the first refusal left no
/// taker behind to be told twice, and the property's retirement is settled once).
#[test]
fn a_second_take_after_a_refused_one_gets_the_value_once() {
    in_child!("a_second_take_after_a_refused_one_gets_the_value_once", 10);
    let drops = Arc::new(AtomicUsize::new(0));
    let l: Trust<Latch<CountsDrops>> = rt()
        .trustee(0)
        .entrust(Latch::new(CountsDrops(drops.clone())));
    let (own, later) = (l.clone(), l.clone());
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    l.launch_then(
        move |_| {
            let refused = start_take(own, false).join().map_err(panic_message);
            // The second take begins now; this fiber does not join it.
            let second = start_take(later, true);
            tx.lock().unwrap().send((refused, second)).unwrap();
            for _ in 0..10 {
                trust_core::yield_now();
            }
        },
        |()| {},
    );
    drop(l);
    wait_pending();
    let (refused, second) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(refused, Ok(Err(TAKE_JOINED_BY_LAUNCHED.to_string())));
    let second = common::within(5, move || second.join().map_err(panic_message));
    assert_eq!(second, Ok(Ok(true)), "the second take got the value");
    assert_eq!(
        load(&drops),
        1,
        "dropped once, by the second take's into_inner"
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(load(&drops), 1);
    child_ok();
}

/// (3c) The id of a fiber launched on the latch reused by a fiber that is not: a take waits (another launched
/// fiber keeps it waiting), a launched fiber ends, and a plain fiber that likely takes its id joins the taking
/// fiber: not refused (the launched mark went with the fiber); the take gets the value once the launched
/// fiber holding it ends.
#[test]
fn a_join_by_a_fiber_reusing_a_launched_fibers_id_does_not_refuse_the_take() {
    in_child!(
        "a_join_by_a_fiber_reusing_a_launched_fibers_id_does_not_refuse_the_take",
        10
    );
    let drops = Arc::new(AtomicUsize::new(0));
    let l: Trust<Latch<CountsDrops>> = rt()
        .trustee(0)
        .entrust(Latch::new(CountsDrops(drops.clone())));
    let own = l.clone();
    let release = Arc::new(AtomicBool::new(false));
    let r2 = release.clone();
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    // The long-lived launched fiber, which keeps the take waiting until released.
    l.launch_then(
        move |_| {
            while !r2.load(Ordering::SeqCst) {
                trust_core::yield_now();
            }
        },
        |()| {},
    );
    common::calibrate();
    let l3 = l.clone();
    // A short launched fiber that starts the take and a joiner after it ends: the joiner is spawned after the
    // launched fiber's end, from a plain fiber.
    let starter = common::spawn_on(0, move || {
        let short_lived = l3.launch(|_| trust_core::local_trustee().index());
        drop(l3);
        let taking = start_take(own, true);
        let joiner = spawn_here(move || taking.join().map_err(panic_message));
        for _ in 0..4 {
            trust_core::yield_now();
        }
        tx.lock().unwrap().send(joiner.is_finished()).unwrap();
        (short_lived, joiner)
    });
    drop(l);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)),
        Ok(false),
        "not refused: waits"
    );
    release.store(true, Ordering::SeqCst);
    wait_pending();
    let (short_lived, joiner) = common::within(5, move || starter.join().unwrap());
    assert_eq!(short_lived, 0);
    assert_eq!(
        common::within(5, move || joiner.join().unwrap()),
        Ok(Ok(true))
    );
    assert_eq!(load(&drops), 1);
    child_ok();
}

/// (3d) The refusal's message, exactly, as the panic hook and `catch_unwind` see it (a fresh panic of the
/// taking fiber, not the payload's resume).
#[test]
fn the_refusals_message_is_exact() {
    assert_eq!(
        TAKE_JOINED_BY_LAUNCHED,
        "`Trust::try_unwrap`/`into_inner` on a `Trust<Latch<T>>` from a fiber that a fiber launched on that latch \
         joins (directly, or through fibers joining each other on this worker): the value comes back only once \
         every launched fiber has ended, the joining one included, which waits for this fiber. Take the value \
         after the launched fibers have returned"
    );
}

/// (3e) A refusal, then `Runtime::shutdown` right after: the take waits, a launched fiber joins it (refused),
/// the thread's handle is gone, and the thread shuts the runtime down. Nothing hangs, and the value is dropped
/// exactly once (the refused take left the property retired with no taker).
#[test]
fn a_refused_take_then_shutdown_drops_the_value_once() {
    in_child!("a_refused_take_then_shutdown_drops_the_value_once", 20);
    let drops = Arc::new(AtomicUsize::new(0));
    let l: Trust<Latch<CountsDrops>> = rt()
        .trustee(0)
        .entrust(Latch::new(CountsDrops(drops.clone())));
    let own = l.clone();
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    l.launch_then(
        move |_| {
            let taking = start_take(own, false);
            tx.lock().unwrap().send(()).unwrap();
            let _ = taking.join();
        },
        |()| {},
    );
    drop(l);
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let _ = catch_unwind(AssertUnwindSafe(wait_pending));
    rt().shutdown();
    assert_eq!(
        load(&drops),
        1,
        "dropped once, by the retirement or the shutdown"
    );
    child_ok();
}
