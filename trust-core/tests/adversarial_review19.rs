//! Review 19: hostile tests of the fixes of the last hour — `Latch`'s hand-over to the first waiter
//! (bd67651), the boxing of `launch`, `launch_then` and `spawn` closures over 512 bytes (bd67651, e4e5bb3),
//! the thread client's stack range that tells a coroutine on a thread with a client apart (e2d1c27), and the
//! count changes of clients that go by mail and never run the thread's continuations (fc4fc08, e2d1c27).
//! Tests that shut the runtime down, configure `may`, can abort or can hang run in a child process of their own
//! with a deadline (`in_child!`).
//!
//! Ignored tests are bugs found by this review; each one's doc gives the behaviour measured (debug test build,
//! the 2-core machine). Three of them: `spawn`, `launch` and `launch_then` box large closures but not large
//! results, which are copied many times on the fiber's stack (a 32 KiB result overflows a 256 KiB fiber);
//! `spawn`'s out-of-stacks panic names `spawn_sized` inside trust-core instead of the caller (bd67651 split
//! `spawn` and left `#[track_caller]` on the outer half only); a latch keeps the fiber id of a holder that
//! forgot its guard, and the next fiber, reusing that id, panics as if it held the latch.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[macro_use]
mod common;
use common::*;
use trust_core::{Latch, Trust, spawn, wait_pending};

// ---------------------------------------------------------------------------------------------------------
// Helpers.

/// Drops counted per test (index `K`), for captures whose size must be exact: `Cap<N, K>` is `N` bytes of
/// ones with alignment 1, so a closure capturing only it is exactly `N` bytes.
static CAP_DROPS: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];

struct Cap<const N: usize, const K: usize>([u8; N]);

impl<const N: usize, const K: usize> Cap<N, K> {
    fn new() -> Self {
        Cap([1; N])
    }
    fn sum(&self) -> u64 {
        self.0.iter().map(|&b| b as u64).sum()
    }
}

impl<const N: usize, const K: usize> Drop for Cap<N, K> {
    fn drop(&mut self) {
        CAP_DROPS[K].fetch_add(1, Ordering::SeqCst);
    }
}

fn cap_drops(k: usize) -> usize {
    CAP_DROPS[k].load(Ordering::SeqCst)
}

/// Runs `f` on a plain thread with a stack of `mib` MiB and returns its result.
fn on_thread<R: Send + 'static>(mib: usize, f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::Builder::new()
        .stack_size(mib << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

// ---------------------------------------------------------------------------------------------------------
// 1. `Latch`: the hand-over to the first waiter.

/// Rustdoc of `LatchGuard::drop`: "Hands the latch, still locked, to the first waiting fiber (first come, first
/// served: unlocked, the holder could lock it again before the woken fiber runs, and starve it)"; `try_lock`:
/// "Locks the latch if it is free".
///
/// Fiber A (launched) locks the latch and pushes "A1"; fiber B asks for it and waits. A drops its guard and, in
/// the same turn (no yield), calls `try_lock` (the latch belongs to B now: `None`), then `lock` (it queues
/// behind B) and pushes "A2". Expected: A's `try_lock` failed (false), and the value is `["A1", "B", "A2"]`;
/// the latch is free after (`try_lock` from a new launch: `Some(3)`).
#[test]
fn a_latch_handed_to_a_waiter_is_not_taken_back_by_its_old_holders_try_lock() {
    let l: Trust<Latch<Vec<&'static str>>> = rt().trustee(0).entrust(Latch::new(Vec::new()));
    let on0 = rt().trustee(0).entrust(());
    let (go, a_holds, b_waits) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let tried = Arc::new(Mutex::new(None));
    let (g2, a2, t2) = (go.clone(), a_holds.clone(), tried.clone());
    l.launch_then(
        move |latch| {
            let mut g = latch.lock();
            g.push("A1");
            a2.store(true, Ordering::SeqCst);
            while !g2.load(Ordering::SeqCst) {
                trust_core::sleep(Duration::from_millis(1));
            }
            drop(g);
            let took = latch.try_lock().is_some();
            latch.lock().push("A2");
            took
        },
        move |took| *t2.lock().unwrap() = Some(took),
    );
    on0.apply(|_| ());
    eventually("A holds the latch", || a_holds.load(Ordering::SeqCst));
    let b2 = b_waits.clone();
    l.launch_then(
        move |latch| {
            b2.store(true, Ordering::SeqCst);
            latch.lock().push("B");
        },
        |()| (),
    );
    on0.apply(|_| ());
    eventually("B waits for the latch", || b_waits.load(Ordering::SeqCst));
    go.store(true, Ordering::SeqCst);
    wait_pending();
    assert_eq!(
        *tried.lock().unwrap(),
        Some(false),
        "A's try_lock after its hand-over"
    );
    assert_eq!(
        l.launch(|latch| latch.try_lock().map(|g| g.clone())),
        Some(vec!["A1", "B", "A2"])
    );
}

/// Rustdoc of `Latch::lock` ("waiters are served first come, first served") and of `launch` ("A panic in `f`
/// resumes here"); `launch_then`: "A panic in `f` ... is kept and resumed by the issuer's next
/// `wait_pending`".
///
/// Fiber A holds the latch; fibers B and C (launched in that order) wait for it. A then panics while holding it
/// (its guard drops while unwinding, on the fiber). Expected: the first `wait_pending` resumes A's panic
/// ("A panics holding the latch"), the second returns; B and C got the latch in order (the value is `["B",
/// "C"]`), and it is free after (`try_lock`: `Some`).
#[test]
fn a_holder_that_panics_hands_the_latch_to_its_waiters_in_order() {
    let l: Trust<Latch<Vec<&'static str>>> = rt().trustee(0).entrust(Latch::new(Vec::new()));
    let on0 = rt().trustee(0).entrust(());
    let (go, a_holds, waiting) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (g2, a2) = (go.clone(), a_holds.clone());
    l.launch_then(
        move |latch| {
            let _g = latch.lock();
            a2.store(true, Ordering::SeqCst);
            while !g2.load(Ordering::SeqCst) {
                trust_core::sleep(Duration::from_millis(1));
            }
            panic!("A panics holding the latch");
        },
        |()| (),
    );
    on0.apply(|_| ());
    eventually("A holds the latch", || a_holds.load(Ordering::SeqCst));
    for name in ["B", "C"] {
        let w = waiting.clone();
        l.launch_then(
            move |latch| {
                w.fetch_add(1, Ordering::SeqCst);
                latch.lock().push(name);
            },
            |()| (),
        );
        on0.apply(|_| ());
        let want = if name == "B" { 1 } else { 2 };
        eventually("the fiber waits", || load(&waiting) == want);
    }
    go.store(true, Ordering::SeqCst);
    let first = catch_unwind(wait_pending).map_err(panic_message);
    assert_eq!(first, Err("A panics holding the latch".to_string()));
    wait_pending();
    assert_eq!(
        l.launch(|latch| latch.try_lock().map(|g| g.clone())),
        Some(vec!["B", "C"])
    );
}

/// README, Shutdown: "drops every value still entrusted exactly once ... A `join` of a fiber it finds suspended
/// returns the shutdown panic"; `launch`: "Runs `f(&latch)` in a new fiber on this property's trustee and
/// returns its result".
///
/// Fiber A holds a latch whose value is counted (`Tallied`) and never lets go; fiber B (`launch_then`) and a
/// plain thread's `launch` (fiber C) wait for it, B queued first. Then the runtime shuts down. Expected: C's
/// `launch` returns (within 5 s) with a panic (the shutdown's), the value was made once and dropped once
/// (`(1, 1)`), and neither B nor C ever got the latch (0 entries).
#[test]
fn a_latch_with_a_holder_and_waiters_at_shutdown_drops_its_value_once() {
    in_child!(
        "a_latch_with_a_holder_and_waiters_at_shutdown_drops_its_value_once",
        15
    );
    let tally = Arc::new(Tally::default());
    let l: Trust<Latch<(Tallied, u32)>> = rt()
        .trustee(0)
        .entrust(Latch::new((Tallied::new(&tally), 0)));
    let on0 = rt().trustee(0).entrust(());
    let (a_holds, waiting, got) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let a2 = a_holds.clone();
    l.launch_then(
        move |latch| {
            let _g = latch.lock();
            a2.store(true, Ordering::SeqCst);
            loop {
                trust_core::sleep(Duration::from_millis(5));
            }
        },
        |()| (),
    );
    on0.apply(|_| ());
    eventually("A holds the latch", || a_holds.load(Ordering::SeqCst));
    let (w, g) = (waiting.clone(), got.clone());
    l.launch_then(
        move |latch| {
            w.fetch_add(1, Ordering::SeqCst);
            latch.lock().1 += 1;
            g.fetch_add(1, Ordering::SeqCst);
        },
        |()| (),
    );
    on0.apply(|_| ());
    eventually("B waits", || load(&waiting) == 1);
    let (l2, w, g) = (l.clone(), waiting.clone(), got.clone());
    let c = std::thread::spawn(move || {
        catch_unwind(AssertUnwindSafe(|| {
            l2.launch(move |latch| {
                w.fetch_add(1, Ordering::SeqCst);
                latch.lock().1 += 1;
                g.fetch_add(1, Ordering::SeqCst);
            })
        }))
        .map_err(panic_message)
    });
    eventually("C waits", || load(&waiting) == 2);
    rt().shutdown();
    let c_result = within(5, move || c.join().unwrap());
    assert!(c_result.is_err(), "C's launch returned {c_result:?}");
    assert_eq!(
        tally.counts(),
        (1, 1),
        "the latch's value, made and dropped"
    );
    assert_eq!(load(&got), 0, "nobody got the latch after A");
    drop(l);
    child_ok();
}

/// Launches on `l` a fiber that locks the latch, pushes `first`, signals, and holds it until `go`; then a fiber
/// that signals and waits for it, then pushes `second`. Returns once both are where they should be.
fn holder_and_waiter(
    l: &Trust<Latch<(Vec<&'static str>, Tallied)>>,
    on0: &Trust<()>,
    go: &Arc<AtomicBool>,
) {
    let (a_holds, b_waits) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (g2, a2, b2) = (go.clone(), a_holds.clone(), b_waits.clone());
    l.launch_then(
        move |latch| {
            let mut g = latch.lock();
            g.0.push("A");
            a2.store(true, Ordering::SeqCst);
            while !g2.load(Ordering::SeqCst) {
                trust_core::sleep(Duration::from_millis(1));
            }
        },
        |()| (),
    );
    on0.apply(|_| ());
    eventually("A holds the latch", || a_holds.load(Ordering::SeqCst));
    l.launch_then(
        move |latch| {
            b2.store(true, Ordering::SeqCst);
            let mut g = latch.lock();
            trust_core::sleep(Duration::from_millis(5));
            g.0.push("B");
        },
        |()| (),
    );
    on0.apply(|_| ());
    eventually("B waits for the latch", || b_waits.load(Ordering::SeqCst));
}

/// README: "A plain `apply` on a `Trust<Latch<T>>` hands out `&mut Latch<T>`, so it waits until every launched
/// fiber of that property has finished"; `LatchGuard::drop` hands the latch to the first waiter, still locked.
///
/// Fiber A holds the latch, fiber B waits for it; a plain thread then `apply`s to the latch (it waits). A lets
/// go, B takes it over, holds it 5 ms and lets go. Expected: the `apply` returns (within 5 s) after both, and
/// sees the latch free (`try_lock` gives `Some`) with `["A", "B"]`.
#[test]
fn a_plain_apply_on_a_latch_waits_through_a_hand_over_and_finds_it_free() {
    let tally = Arc::new(Tally::default());
    let l = rt()
        .trustee(0)
        .entrust(Latch::new((Vec::new(), Tallied::new(&tally))));
    let on0 = rt().trustee(0).entrust(());
    let go = Arc::new(AtomicBool::new(false));
    holder_and_waiter(&l, &on0, &go);
    let l2 = l.clone();
    let applied =
        std::thread::spawn(move || l2.apply(|latch| latch.try_lock().map(|g| g.0.clone())));
    std::thread::sleep(Duration::from_millis(20));
    go.store(true, Ordering::SeqCst);
    let seen = within(5, move || applied.join().unwrap());
    assert_eq!(seen, Some(vec!["A", "B"]));
    wait_pending();
}

/// README: "the last handle drops the value on its trustee, exactly once"; latch.rs: "the property outlives
/// [the fiber] (retired properties are dropped only once no launched fiber uses them)".
///
/// Fiber A holds a counted latch value, fiber B waits for it; then every handle is dropped (the last by this
/// thread). A lets go, B takes it over and pushes "B" 5 ms later. Expected: the value is not dropped while B
/// holds it (`(1, 0)` while A holds it, checked after the handles are gone and the trustee settled), and is
/// dropped exactly once after B ends (`(1, 1)`); B's push happened (its continuation ran: 1).
#[test]
fn a_latch_whose_handles_all_drop_during_a_hand_over_is_dropped_once_after() {
    let tally = Arc::new(Tally::default());
    let l = rt()
        .trustee(0)
        .entrust(Latch::new((Vec::new(), Tallied::new(&tally))));
    let on0 = rt().trustee(0).entrust(());
    let go = Arc::new(AtomicBool::new(false));
    holder_and_waiter(&l, &on0, &go);
    let ended = Arc::new(AtomicUsize::new(0));
    let e = ended.clone();
    l.launch_then(
        |latch| latch.lock().0.len(),
        move |n| {
            e.store(n + 10, Ordering::SeqCst);
        },
    );
    drop(l);
    settle(&on0);
    assert_eq!(
        tally.counts(),
        (1, 0),
        "dropped while launched fibers use it"
    );
    go.store(true, Ordering::SeqCst);
    wait_pending();
    assert_eq!(load(&ended), 12, "the third fiber saw A's and B's pushes");
    eventually("the value is dropped", || {
        tally.dropped.load(Ordering::SeqCst) >= 1
    });
    settle(&on0);
    assert_eq!(tally.counts(), (1, 1));
}

/// Rustdoc of `Latch::lock`: "Locks the latch, suspending the calling fiber while another fiber holds it ...
/// Panics when the latch is held and the caller is not a fiber that may suspend ..., or is the fiber that holds
/// it". `mem::forget` of a guard is safe code: like a forgotten `MutexGuard`, it leaves the latch held.
///
/// Launched fiber A locks the latch, forgets the guard and ends. Then launched fiber C (a new fiber: it may
/// take A's slot) counts itself in and calls `lock`, catching a panic. C is not the fiber that holds the latch
/// (nobody does: A is gone), and it may suspend, so it must wait. Expected after 300 ms: C waits (1 in), has
/// not panicked (no message), and `try_lock` from another fiber gives `None`.
///
/// Measured: C panicked at once with "`Latch::lock` by the fiber that holds the latch already: it would wait
/// for itself. Use the guard it has, or drop that guard first". The latch keeps the holder's fiber id
/// (`holder`, set by `take`, latch.rs:99-101) after that fiber has ended; fiber ids are reused (the
/// scheduler's free list: pushed at a fiber's end, worker/fiber.rs:437, popped by the next start,
/// worker/fiber.rs:302), so C, started next, got A's id, and `lock`'s check (latch.rs:75-79) took it for the
/// holder. Fixed: the latch tells its holder by fiber id and serial number (`Scheduler::serial_of`: ids are
/// reused, serials never).
#[test]
fn a_fiber_that_reuses_the_id_of_a_forgetful_holder_waits_instead_of_panicking() {
    in_child!(
        "a_fiber_that_reuses_the_id_of_a_forgetful_holder_waits_instead_of_panicking",
        10
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(0));
    l.launch(|latch| std::mem::forget(latch.lock()));
    let (inside, panicked) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(None)));
    let (i2, p2) = (inside.clone(), panicked.clone());
    l.launch_then(
        move |latch| {
            i2.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| drop(latch.lock()))) {
                *p2.lock().unwrap() = Some(panic_message(e));
            }
        },
        |()| (),
    );
    rt().trustee(0).entrust(()).apply(|_| ());
    eventually("C runs", || load(&inside) == 1);
    std::thread::sleep(Duration::from_millis(300));
    let free = l.launch(|latch| latch.try_lock().is_some());
    assert_eq!(
        (load(&inside), panicked.lock().unwrap().clone(), free),
        (1, None, false)
    );
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 2. `launch`, `launch_then` and `spawn` box closures over 512 bytes.

/// trust.rs `BOX_ABOVE` (512) and bd67651: "`launch`, `launch_then` and `spawn` box closures over 512 bytes";
/// `launch`: "returns its result"; `spawn`: "`join()` gives the result".
///
/// Closures capturing exactly 0, 512 and 513 bytes of ones (the closure is the capture, alignment 1: checked
/// with `size_of_val`), and a 1 MiB one, each through `launch`, `launch_then` and `spawn`, from a plain thread
/// with a 64 MiB stack; each adds the latch's value (5) to the sum of its bytes. Expected results: 5, 517, 518
/// and 1,048,581 for the latch calls, 0, 512, 513 and 1,048,576 for `spawn`; each capture dropped exactly
/// once per call (3 drops per size).
#[test]
fn launch_launch_then_and_spawn_of_captures_at_the_boxing_threshold_and_of_one_mib() {
    in_child!(
        "launch_launch_then_and_spawn_of_captures_at_the_boxing_threshold_and_of_one_mib",
        15
    );
    fn three<const N: usize, const K: usize>(l: &Trust<Latch<u64>>) -> [u64; 3] {
        // The closures read their capture in place (a `let c = c;` would move 1 MiB onto the fiber's stack).
        let c = Cap::<N, K>::new();
        let f = move |latch: &Latch<u64>| c.sum() + *latch.lock();
        assert_eq!(std::mem::size_of_val(&f), N);
        let a = l.launch(f);
        let seen = Rc::new(Cell::new(0));
        let s = seen.clone();
        let c = Cap::<N, K>::new();
        l.launch_then(move |latch| c.sum() + *latch.lock(), move |r| s.set(r));
        wait_pending();
        let c = Cap::<N, K>::new();
        let s = spawn(move || c.sum()).join().unwrap();
        [a, seen.get(), s]
    }
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let got = on_thread(64, move || {
        [
            three::<0, 0>(&l),
            three::<512, 1>(&l),
            three::<513, 2>(&l),
            three::<{ 1 << 20 }, 3>(&l),
        ]
    });
    let big = 1u64 << 20;
    assert_eq!(
        got,
        [
            [5, 5, 0],
            [517, 517, 512],
            [518, 518, 513],
            [big + 5, big + 5, big]
        ]
    );
    assert_eq!(
        [cap_drops(0), cap_drops(1), cap_drops(2), cap_drops(3)],
        [3, 3, 3, 3]
    );
    child_ok();
}

/// `launch`: "A panic in `f` resumes here"; `launch_then`: "A panic in `f` ... is kept and resumed by the
/// issuer's next `wait_pending`"; `spawn`: "`join()` gives the result or the panic". A capture is part of `f`:
/// its destructor runs when `f` has run.
///
/// Closures of 600 bytes (boxed) whose capture holds a value that panics when dropped ("PanicsOnDrop"), and
/// that return 1 otherwise: through `launch` (the panic resumes in the caller), `launch_then` (its continuation
/// does not run; `wait_pending` resumes the panic), and `spawn` (`join` gives `Err`). Expected: three
/// "PanicsOnDrop" panics, each capture dropped exactly once (3), the continuation never ran (0), and the
/// latch is usable after (`launch` reads 9).
#[test]
fn boxed_captures_whose_destructor_panics_are_dropped_once_and_the_panic_reaches_the_caller() {
    let _ = quiet();
    let l: Trust<Latch<u64>> = rt().trustee(1).entrust(Latch::new(9));
    let (drops, then_ran) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let d = PanicsOnDrop(drops.clone());
    let pad = [1u8; 600];
    let f = move |_: &Latch<u64>| {
        let _d = &d;
        pad[0] as u64
    };
    assert!(std::mem::size_of_val(&f) > 512);
    let a = catch_unwind(AssertUnwindSafe(|| l.launch(f))).map_err(panic_message);
    let d = PanicsOnDrop(drops.clone());
    let t = then_ran.clone();
    l.launch_then(
        move |_| {
            let _d = &d;
            pad[1] as u64
        },
        move |_| {
            t.fetch_add(1, Ordering::SeqCst);
        },
    );
    let b = catch_unwind(wait_pending).map_err(panic_message);
    let d = PanicsOnDrop(drops.clone());
    let c = spawn(move || {
        let _d = &d;
        pad[2] as u64
    })
    .join()
    .map_err(panic_message);
    let p = || Err::<u64, String>("PanicsOnDrop".to_string());
    assert_eq!((a, b.map(|()| 0), c), (p(), p(), p()));
    assert_eq!((load(&drops), load(&then_ran)), (3, 0));
    assert_eq!(l.launch(|latch| *latch.lock()), 9);
}

/// README, Shutdown: "Nothing sent is lost: requests that arrive too late (or wait behind a latch's launched
/// fibers) are dropped unrun, with what they captured, on the trustee or by their sender"; `spawn`: "Also
/// panics after `Runtime::shutdown`".
///
/// A plain thread issues a `launch_then` whose closure captures 4 KiB (boxed: over 512 bytes) while trustee 0 is
/// stalled 300 ms in a closure; its continuation captures a counted value. The runtime shuts down. Then a
/// thread with a 16 MiB stack `spawn`s a closure capturing 1 MiB (boxed). Expected: the launched closure never
/// ran (0) and its capture was dropped once (1), the continuation never ran (0) and its capture was dropped
/// once (1) (by the thread's exit at the latest); the `spawn` panicked and its 1 MiB capture was dropped once.
/// After the shutdown, a `launch_then` and a `launch` of 600-byte closures (boxed) panic, and their captures
/// (and the continuation's) are dropped once each (2 and 1).
#[test]
fn boxed_launch_then_and_spawn_captures_unrun_at_shutdown_are_dropped_once() {
    in_child!(
        "boxed_launch_then_and_spawn_captures_unrun_at_shutdown_are_dropped_once",
        15
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(0));
    let l_after = l.clone();
    let (ran, then_ran, then_drops) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let stalled = stall(0, 300);
    let (issued_tx, issued_rx) = std::sync::mpsc::channel();
    let (down_tx, down_rx) = std::sync::mpsc::channel::<()>();
    let (r, tr, td) = (ran.clone(), then_ran.clone(), then_drops.clone());
    let h = std::thread::spawn(move || {
        let c = Cap::<4096, 4>::new();
        let d = CountsDrops(td);
        l.launch_then(
            move |latch| {
                let c = c;
                r.fetch_add(1, Ordering::SeqCst);
                c.sum() + *latch.lock()
            },
            move |_| {
                let _d = d;
                tr.fetch_add(1, Ordering::SeqCst);
            },
        );
        issued_tx.send(()).unwrap();
        let _ = down_rx.recv();
        drop(l);
    });
    issued_rx.recv().unwrap();
    rt().shutdown();
    down_tx.send(()).unwrap();
    h.join().unwrap();
    let _ = stalled.join();
    let spawned = on_thread(16, || {
        let c = Cap::<{ 1 << 20 }, 5>::new();
        catch_unwind(AssertUnwindSafe(move || {
            spawn(move || {
                let c = c;
                c.sum()
            })
            .join()
            .ok()
        }))
        .is_err()
    });
    assert_eq!(
        (load(&ran), cap_drops(4), load(&then_ran), load(&then_drops)),
        (0, 1, 0, 1)
    );
    assert_eq!((spawned, cap_drops(5)), (true, 1));
    // After the shutdown, `launch_then` and `launch` of boxed closures panic; each capture dropped once.
    let after_drops = Arc::new(AtomicUsize::new(0));
    let (c, d) = (Cap::<600, 6>::new(), CountsDrops(after_drops.clone()));
    let a = catch_unwind(AssertUnwindSafe(|| {
        l_after.launch_then(move |_| c.sum(), move |_| drop(d))
    }))
    .is_err();
    let c = Cap::<600, 6>::new();
    let b = catch_unwind(AssertUnwindSafe(|| l_after.launch(move |_| c.sum()))).is_err();
    assert_eq!((a, b, cap_drops(6), load(&after_drops)), (true, true, 2, 1));
    child_ok();
}

/// `spawn` is `#[track_caller]` (api/fiber.rs:124): its panics name the caller's line; README: "Past the limit
/// ... `spawn` panics *in the caller*, naming the limit". With `TRUST_MAX_FIBER_STACKS=1`, a fiber holds the
/// only stack (sleeping 3 s); then `spawn` of a small closure and of a 600-byte one (boxed) each panic after
/// their wait. A panic hook records each panic's location. Expected: both panics are located in this file
/// (`trust-core/tests/adversarial_review19.rs`), at the lines of the two `spawn` calls.
///
/// Measured: both are located at `trust-core/src/delegation/api/fiber.rs:153`, the `panic!("{e}")` of
/// `spawn_sized`. bd67651 split `spawn` into `spawn` (still `#[track_caller]`, api/fiber.rs:124-136) and
/// `spawn_sized` (api/fiber.rs:139-159), which lacks `#[track_caller]`: the panic's location stops there
/// (before bd67651 the `panic!` was in `spawn` itself and named the caller). Fixed: `spawn_sized` is
/// `#[track_caller]` too.
#[test]
fn spawn_out_of_stacks_panics_at_the_callers_line() {
    if !crate::common::in_child(
        "spawn_out_of_stacks_panics_at_the_callers_line",
        &[("TRUST_MAX_FIBER_STACKS", "1")],
        10,
    ) {
        return;
    }
    let _ = quiet();
    static AT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let old = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("r19-spawner") {
            let l = info.location().unwrap();
            AT.lock()
                .unwrap()
                .push(format!("{}:{}", l.file(), l.line()));
        } else {
            old(info);
        }
    }));
    let holder = spawn(|| trust_core::sleep(Duration::from_secs(3)));
    let lines = std::thread::Builder::new()
        .name("r19-spawner".into())
        .spawn(|| {
            let small = line!() + 1;
            let a = catch_unwind(|| spawn(|| 1u64)).is_err();
            let pad = [1u8; 600];
            let big = line!() + 1;
            let b = catch_unwind(move || spawn(move || pad[0] as u64)).is_err();
            assert!(a && b, "both spawns panic");
            [small, big]
        })
        .unwrap()
        .join()
        .unwrap();
    let here = "trust-core/tests/adversarial_review19.rs";
    assert_eq!(
        *AT.lock().unwrap(),
        vec![
            format!("{here}:{}", lines[0]),
            format!("{here}:{}", lines[1])
        ]
    );
    drop(holder);
    child_ok();
}

/// README: fibers have "stacks of their own (256 KiB each by default ...)"; `launch`: "returns its result";
/// bd67651 boxed `launch`/`launch_then`/`spawn` *closures* over 512 bytes so that the runtime does not multiply
/// them on a fiber's stack (`apply` boxes both its closure and a result over 512 bytes: "a large result needs
/// no more of the caller's stack than the result itself").
///
/// A fiber (`spawn`) and a launched fiber (`launch`) each return a 32 KiB array of ones (1/8 of the fiber's
/// stack), built in the closure. Expected: sums 32,768 and 32,768.
///
/// Measured: the process aborts, "fiber on thread 'trust-worker-0' has overflowed its 256 KiB stack". Results
/// of 4, 8, 16 and 24 KiB come back; 32, 48 and 64 KiB overflow, for `spawn` and for `launch` alike (over 8
/// copies of the result on the fiber's stack); `launch_then` comes back at 32 KiB and overflows at 64 KiB.
/// For scale: a spawned closure that holds a 64 KiB array as a local (and returns its sum) runs. bd67651 boxed
/// only the closures: the result moves by value out of `f` through `catch_unwind` and `promise.settle(result)`
/// in `fiber_job` (api/fiber.rs:193-200), out of the boxed `dyn FnOnce() -> R` of `spawn` (api/fiber.rs:130-134)
/// and, for `launch`, out of `start_launched`'s closure (api/latch.rs:311-320), each a copy in a debug build;
/// `apply` boxes a result over 512 bytes (`boxed_result`, api/trust.rs:100-104), these did not. Fixed: a
/// fiber's result is boxed as its closure returns it (`fiber_job`), and moves as a pointer from there on.
#[test]
fn spawn_and_launch_returning_thirty_two_kib() {
    in_child!("spawn_and_launch_returning_thirty_two_kib", 10);
    const N: usize = 32 << 10;
    let s = on_thread(16, || {
        spawn(|| [1u8; N])
            .join()
            .unwrap()
            .iter()
            .map(|&b| b as u64)
            .sum::<u64>()
    });
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(0));
    let t = on_thread(16, move || {
        l.launch(|_| [1u8; N])
            .iter()
            .map(|&b| b as u64)
            .sum::<u64>()
    });
    assert_eq!((s, t), (N as u64, N as u64));
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 3. A thread's client keeps its thread's stack range.

/// `apply_then`: "`then(result)` runs later on this thread ... on a plain thread, later trust-core calls and
/// `wait_pending` run it ... Requests from one thread to one trustee are applied in issue order"; e2d1c27: a
/// caller on another stack than its thread's (as told by the client's stack range) takes the slow path.
///
/// On a fresh plain thread, a `corosensei` coroutine (not `may`) makes the thread's first call (its client is
/// made on the coroutine's stack) and issues `apply_then(+1)`s, 10 per resume, 5 resumes; between resumes the
/// thread itself issues 10 more on its own stack. The coroutine calls `wait_pending` at its end, the thread
/// after. Expected: the 90 continuations (50 + 4 x 10) ran once each, in issue order, seeing 1..=90; the value
/// is 90.
#[test]
fn a_user_coroutine_on_a_plain_thread_pipelines_with_its_thread() {
    use corosensei::{Coroutine, CoroutineResult, Yielder};
    let x = rt().trustee(0).entrust(0u64);
    let x2 = x.clone();
    let seen = within(10, move || {
        std::thread::spawn(move || {
            let seen = Rc::new(RefCell::new(Vec::new()));
            let (s, xc) = (seen.clone(), x2.clone());
            let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
                for round in 0..5 {
                    for _ in 0..10 {
                        let s = s.clone();
                        xc.apply_then(
                            |v| {
                                *v += 1;
                                *v
                            },
                            move |r| s.borrow_mut().push(r),
                        );
                    }
                    if round < 4 {
                        y.suspend(());
                    }
                }
                wait_pending();
            });
            while let CoroutineResult::Yield(()) = co.resume(()) {
                for _ in 0..10 {
                    let s = seen.clone();
                    x2.apply_then(
                        |v| {
                            *v += 1;
                            *v
                        },
                        move |r| s.borrow_mut().push(r),
                    );
                }
            }
            wait_pending();
            seen.take()
        })
        .join()
        .unwrap()
    });
    assert_eq!(seen, (1..=90).collect::<Vec<u64>>());
    assert_eq!(x.apply(|v| *v), 90);
}

/// `launch_then`: "From a `may` coroutine it waits like `launch` and runs `then` at once, on the coroutine";
/// `apply_then` likewise, with a result over 512 bytes (boxed on the trustee); README: "`into_inner()` ... The
/// trustee decides once every request and count change sent before the call has been served". e2d1c27: a
/// coroutine on a `may` thread that has a client is told apart by its stack.
///
/// One `may` worker thread, made a client by a coroutine-local's destructor (a real call outside any
/// coroutine). A coroutine there: `launch_then` on a latch (result 7), `apply_then` returning a 1 KiB array of
/// 3s on a counter (+1, then the array), and its `wait_pending`; then the coroutine ends, its clone of the
/// counter dropped. Expected: both continuations ran before the call returned, `(Some(7), Some(3072))`; the
/// main thread's `into_inner` of the counter (within 3 s) gives `Some(1)`.
#[test]
fn a_may_coroutine_on_a_thread_with_a_client_launches_and_applies_then_at_once() {
    in_child!(
        "a_may_coroutine_on_a_thread_with_a_client_launches_and_applies_then_at_once",
        12
    );
    may::config().set_workers(1);
    let p = rt().trustee(0).entrust(0u64);
    let l: Trust<Latch<u64>> = rt().trustee(1).entrust(Latch::new(7));
    give_the_may_thread_a_client(&p);
    let p3 = p.clone();
    let seen = coroutine(move || {
        let (a, b) = (Rc::new(Cell::new(None)), Rc::new(Cell::new(None)));
        let (a2, b2) = (a.clone(), b.clone());
        l.launch_then(|latch| *latch.lock(), move |r| a2.set(Some(r)));
        let after_launch = a.get();
        p3.apply_then(
            |v| {
                *v += 1;
                [3u8; 1024]
            },
            move |r| b2.set(Some(r.iter().map(|&x| x as u64).sum::<u64>())),
        );
        let after_apply = b.get();
        wait_pending();
        (after_launch, after_apply)
    })
    .join()
    .unwrap();
    assert_eq!(seen, (Some(7), Some(3072)));
    let got = within(3, move || p.into_inner());
    assert_eq!(got, Some(1));
    child_ok();
}

/// `apply_then` and `wait_pending` from threads whose stacks are at the extremes: std's minimum (the request
/// is made near the end of the stack's first pages) and 256 MiB, and from deep inside a recursion (1,000
/// frames of 1 KiB on an 8 MiB thread). Each thread issues 40 `apply_then(+1)`s, each continuation adding its
/// result to a sum, and waits. Expected: the sums of 1..=40, 41..=80 and 81..=120 (820, 2420, 4020), each
/// thread's continuations run on that thread (the thread ids match).
#[test]
fn apply_then_from_threads_with_tiny_huge_and_deep_stacks() {
    fn issue(x: &Trust<u64>) -> (u64, bool) {
        let sum = Rc::new(Cell::new(0));
        let same = Rc::new(Cell::new(true));
        let me = std::thread::current().id();
        for _ in 0..40 {
            let (s, same) = (sum.clone(), same.clone());
            x.apply_then(
                |v| {
                    *v += 1;
                    *v
                },
                move |r| {
                    s.set(s.get() + r);
                    same.set(same.get() && std::thread::current().id() == me);
                },
            );
        }
        wait_pending();
        (sum.get(), same.get())
    }
    fn deep(x: &Trust<u64>, depth: u32) -> (u64, bool) {
        let pad = std::hint::black_box([depth as u8; 1024]);
        if depth == 0 {
            return issue(x);
        }
        let r = deep(x, depth - 1);
        std::hint::black_box(&pad);
        r
    }
    let x = rt().trustee(1).entrust(0u64);
    let got = within(10, move || {
        let x1 = x.clone();
        let tiny = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || issue(&x1))
            .unwrap()
            .join()
            .unwrap();
        let x2 = x.clone();
        let huge = std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || issue(&x2))
            .unwrap()
            .join()
            .unwrap();
        let x3 = x.clone();
        let deep = std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(move || {
                x3.apply(|_| ());
                deep(&x3, 1000)
            })
            .unwrap()
            .join()
            .unwrap();
        [tiny, huge, deep]
    });
    assert_eq!(got, [(820, true), (2420, true), (4020, true)]);
}

// ---------------------------------------------------------------------------------------------------------
// 4. Count changes by mail; clone and drop never run continuations.

/// README: "`into_inner()` ... The trustee decides once every request and count change sent before the call has
/// been served, so a clone dropped before it never makes it fail and nothing in flight"; "A change that finds
/// the sender's slot busy ... is netted per value in the trustee's count mail".
///
/// A plain thread with a client issues 5 `apply_then(+1)`s (unpublished: under 48), so its clone of the handle
/// made right after finds unsent records and goes by the count mail; it hands the clone to the main thread and
/// calls `into_inner` on its own handle (a blocking call that publishes the 5). 20 rounds, alternating
/// trustees. Expected each round: the thread's `into_inner` gives `None` (the clone lives), its continuations
/// ran (5), and the main thread's clone then reads 5 and its `into_inner` gives `Some(5)`; 20 values made,
/// 20 dropped by their takers.
#[test]
fn into_inner_beside_a_clone_counted_by_mail_behind_unsent_apply_thens() {
    let tally = Arc::new(Tally::default());
    for round in 0..20 {
        let x = rt()
            .trustee(round % 2)
            .entrust((0u64, Tallied::new(&tally)));
        let (tx, rx) = std::sync::mpsc::channel();
        let (verdict, ran) = within(5, move || {
            std::thread::spawn(move || {
                x.apply(|_| ());
                let ran = Rc::new(Cell::new(0));
                for _ in 0..5 {
                    let r = ran.clone();
                    x.apply_then(|v| v.0 += 1, move |()| r.set(r.get() + 1));
                }
                tx.send(x.clone()).unwrap();
                let verdict = x.into_inner().map(|v| v.0);
                wait_pending();
                (verdict, ran.get())
            })
            .join()
            .unwrap()
        });
        let c = rx.recv().unwrap();
        assert_eq!((verdict, ran), (None, 5), "round {round}");
        assert_eq!(c.apply(|v| v.0), 5, "round {round}");
        let v = c.into_inner().expect("the last handle");
        assert_eq!(v.0, 5);
        drop(v);
    }
    assert_eq!(tally.counts(), (20, 20));
}

/// README: "the trustee drops the value only once every request and count change sent before its count reached
/// zero has been served"; "A plain thread publishes its `apply_then`s ... 48 at a time ... the last few of a
/// burst go out at its next publish ..., at `wait_pending()`"; a change that finds the sender's slot busy goes
/// by the count mail.
///
/// A plain thread with a client issues 5 `apply_then`s (+1, returning the new count) on a counted value of
/// trustee 0 (unpublished), then drops its only handle (the count change goes by mail: the slot has unsent
/// records), waits 50 ms, and calls `wait_pending`. 20 rounds. Expected each round: the value was not dropped
/// before `wait_pending` (made 1, dropped 0 by then), the continuations saw 1..=5 in order, and the value is
/// dropped exactly once after.
#[test]
fn dropping_the_last_handle_behind_unsent_apply_thens_keeps_the_value_for_them() {
    for round in 0..20 {
        let tally = Arc::new(Tally::default());
        let x = rt().trustee(0).entrust((0u64, Tallied::new(&tally)));
        let t2 = tally.clone();
        let (before, seen) = within(5, move || {
            std::thread::spawn(move || {
                x.apply(|_| ());
                let seen = Rc::new(RefCell::new(Vec::new()));
                for _ in 0..5 {
                    let s = seen.clone();
                    x.apply_then(
                        |v| {
                            v.0 += 1;
                            v.0
                        },
                        move |n| s.borrow_mut().push(n),
                    );
                }
                drop(x);
                std::thread::sleep(Duration::from_millis(50));
                let before = t2.counts();
                wait_pending();
                let seen = seen.borrow().clone();
                (before, seen)
            })
            .join()
            .unwrap()
        });
        assert_eq!(
            before,
            (1, 0),
            "round {round}: dropped before its requests ran"
        );
        assert_eq!(seen, vec![1, 2, 3, 4, 5], "round {round}");
        eventually("the value is dropped", || {
            tally.dropped.load(Ordering::SeqCst) >= 1
        });
        settle(&rt().trustee(0).entrust(()));
        assert_eq!(tally.counts(), (1, 1), "round {round}");
    }
}

/// README: "the last handle drops the value on its trustee, exactly once"; Shutdown: "drops every value still
/// entrusted exactly once"; fc4fc08: a registration or count change that finds the sender's slot busy goes by
/// mail (the registration by the trustee's mail, the count change by its count mail).
///
/// A plain thread with a client keeps one `apply_then` unpublished on trustee 0 (its slot has unsent records),
/// then entrusts a counted value to trustee 0 (registration by mail), clones and drops it twice (count mail), and
/// drops it (count mail: the count reaches zero, maybe before the registration is read); then `wait_pending`.
/// 300 values over 3 threads; then the runtime shuts down. Expected: 300 made, 300 dropped before the shutdown,
/// and still 300 after it (none dropped again by the shutdown's registry).
#[test]
fn values_registered_by_mail_and_dropped_by_count_mail_are_dropped_once_across_shutdown() {
    in_child!(
        "values_registered_by_mail_and_dropped_by_count_mail_are_dropped_once_across_shutdown",
        15
    );
    let tally = Arc::new(Tally::default());
    let y = rt().trustee(0).entrust(0u64);
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (y, t) = (y.clone(), tally.clone());
            std::thread::spawn(move || {
                y.apply(|_| ());
                for _ in 0..100 {
                    y.apply_then(|v| *v += 1, |()| ());
                    let x = rt().trustee(0).entrust(Tallied::new(&t));
                    for _ in 0..2 {
                        drop(x.clone());
                    }
                    drop(x);
                    wait_pending();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(y.apply(|v| *v), 300);
    eventually("every value is dropped", || {
        tally.dropped.load(Ordering::SeqCst) >= 300
    });
    settle(&rt().trustee(0).entrust(()));
    assert_eq!(tally.counts(), (300, 300), "before the shutdown");
    rt().shutdown();
    assert_eq!(tally.counts(), (300, 300), "after the shutdown");
    child_ok();
}

/// e2d1c27: "a handle's clone or drop never runs the thread's continuations"; README: "on a plain thread they
/// run inside later trust-core calls and in `wait_pending()`"; the last few of a burst go out "when the thread
/// exits"; Client's drop: "Continuations whose results arrived but that never ran: dropped on the issuing
/// thread".
///
/// A plain thread with a client issues `N` = `PUBLISH_EVERY + 8` (56) `apply_then(+1)`s (48 published, 8 not),
/// each continuation holding a counted value; then for 100 ms it only clones and drops a handle of the same
/// trustee. Expected: no continuation ran during the clones (0); the thread then calls `wait_pending`: 56 ran,
/// 56 captures dropped. A second thread does the same but exits without `wait_pending`: its 56 requests were
/// all applied (the value reads 112 after), no continuation ran inside the clones, and each of its 56 captures
/// was dropped exactly once by the thread's exit (56).
#[test]
fn continuations_left_by_clones_run_at_wait_pending_or_are_dropped_once_at_exit() {
    const N: usize = PUBLISH_EVERY + 8;
    let x = rt().trustee(0).entrust(0u64);
    let run = |wait: bool, x: Trust<u64>| {
        let (ran, drops) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (r, d) = (ran.clone(), drops.clone());
        let during = std::thread::spawn(move || {
            x.apply(|_| ());
            for _ in 0..N {
                let (r, d) = (r.clone(), CountsDrops(d.clone()));
                x.apply_then(
                    |v| *v += 1,
                    move |()| {
                        let _d = d;
                        r.fetch_add(1, Ordering::SeqCst);
                    },
                );
            }
            // Continuations may run inside the `apply_then`s above (the first, alone on an idle channel, is
            // answered while the others are issued); none may run inside a clone or a drop.
            let before = load(&r);
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(100) {
                drop(x.clone());
            }
            let during = load(&r) - before;
            if wait {
                wait_pending();
            }
            during
        })
        .join()
        .unwrap();
        (during, load(&ran), load(&drops))
    };
    let first = within(10, {
        let x = x.clone();
        move || run(true, x)
    });
    assert_eq!(
        first,
        (0, N, N),
        "with wait_pending: (during clones, ran, dropped)"
    );
    let second = within(10, {
        let x = x.clone();
        move || run(false, x)
    });
    settle(&rt().trustee(0).entrust(()));
    assert_eq!(x.apply(|v| *v), 2 * N as u64);
    assert_eq!(
        (second.0, second.2),
        (0, N),
        "without wait_pending: (during clones, dropped); ran {}",
        second.1
    );
}
