//! Review 75: the session's `MayWait` change (client/outbox.rs: a wait whose 16 ms `may` sleep returns in
//! under 4 ms while the thread panics sleeps its thread from then on) must not misfire for a coroutine that
//! unwinds a plain panic, not a cancel: `may` still suspends that one, and the other coroutines of its
//! thread must keep running while its destructor's call waits.
//!
//! What held, measured: `may` suspends such a coroutine (each 16 ms sleep took 16 ms), and a cancelled one's
//! sleep returns at once, so the wait's `elapsed < SLEEP / 4` test tells the two apart. `thread::panicking()`
//! alone would not: `std` counts panics per thread, and in a bare `may` program a coroutine that slept
//! mid-unwind read it false afterwards while another coroutine of the thread it left read it true. (Here the
//! unwinding coroutine read it false after each sleep, so this test passes with the `elapsed` test removed
//! too: it guards the misfire, not that line.)
//!
//! Every test runs in a child process of its own with a deadline (`in_child!`): it configures `may`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

#[macro_use]
mod common;
use common::*;
use trust_core::Trust;

/// A coroutine that panics (no cancel) while it holds a value whose `Drop` applies to a trustee held for a
/// while: its wait suspends it in `may`'s sleep, as any wait of a coroutine does, so another coroutine of
/// the same (only) `may` thread keeps running meanwhile. Were the wait taken for a cancelled coroutine's
/// (`MayWait`'s `unsuspendable`), it would sleep the thread and the other coroutine would stand still (0 of
/// its 1 ms sleeps ended in 300 ms; at least 20 must).
#[test]
fn a_coroutine_unwinding_a_plain_panic_still_lets_its_may_thread_run_others() {
    in_child!(
        "a_coroutine_unwinding_a_plain_panic_still_lets_its_may_thread_run_others",
        30
    );
    may::config().set_workers(1);
    let t = rt().trustee(1).entrust(0u64);
    t.apply(|_| ());
    let gate = Arc::new(Gate::default());
    let (g, t2) = (gate.clone(), t.clone());
    let holder = thread::spawn(move || t2.apply(move |_| g.wait()));
    eventually("held", || gate.entered.load(Ordering::SeqCst));
    let (stop, ticks) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let (s, k) = (stop.clone(), ticks.clone());
    let other = coroutine(move || {
        while !s.load(Ordering::SeqCst) {
            k.fetch_add(1, Ordering::SeqCst);
            // A sleep, not a yield: a coroutine that only yields keeps those spawned from outside `may`
            // (the panicking one below) off the thread.
            may::coroutine::sleep(Duration::from_millis(1));
        }
    });
    eventually("the other coroutine runs", || {
        ticks.load(Ordering::SeqCst) > 0
    });
    let waiting = Arc::new(AtomicBool::new(false));
    let (t3, w) = (t.clone(), waiting.clone());
    let panicking = coroutine(move || {
        struct AddsOnDrop(Trust<u64>, Arc<AtomicBool>);
        impl Drop for AddsOnDrop {
            fn drop(&mut self) {
                self.1.store(true, Ordering::SeqCst);
                self.0.apply(|v| *v += 1);
            }
        }
        let _guard = AddsOnDrop(t3, w);
        panic!("r75: a plain panic");
    });
    eventually("the destructor waits", || waiting.load(Ordering::SeqCst));
    // A coroutine that does not panic, waiting on the same trustee on the same thread. `std` counts panics
    // per thread, and a coroutine suspended mid-unwind leaves its count on the thread it left (measured in a
    // bare `may` program: another coroutine there read `thread::panicking()` true), so only the sleep's
    // length tells `MayWait` that a coroutine was suspended.
    let t4 = t.clone();
    let calm = coroutine(move || t4.apply(|v| *v += 10));
    // Past the wait's 4 ms of yields: from here on it sleeps, on `may`'s timer or (misfired) its thread's.
    thread::sleep(Duration::from_millis(100));
    let before = ticks.load(Ordering::SeqCst);
    thread::sleep(Duration::from_millis(300));
    let during = ticks.load(Ordering::SeqCst) - before;
    gate.open();
    holder.join().unwrap();
    assert!(within(10, move || panicking.join().is_err()), "it panicked");
    within(10, move || calm.join().unwrap());
    stop.store(true, Ordering::SeqCst);
    within(10, move || other.join().unwrap());
    assert_eq!(
        t.apply(|v| *v),
        11,
        "the destructor's apply and the other call ran once each"
    );
    assert!(
        during >= 20,
        "the other coroutine of the may thread ran {during} times in 300 ms while the panicking one waited"
    );
    child_ok();
}
