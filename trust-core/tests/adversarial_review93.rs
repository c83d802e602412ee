//! Review 93: misuse of the public API that compiles. Nothing unsound compiled (the misuse that the types can
//! refuse is in `ui-tests/`, two cases added for `Latch`); found at run time:
//! - `a_fiber_that_joins_its_own_handle_panics_naming_the_mistake` (hung for good before: the fiber waited
//!   for its own end, silently; std's thread panics when it joins itself). Now `Fiber::join` panics there,
//!   naming the mistake.
//!
//! Found, fixed (seen by review 93, fixed by helper 118): a fiber launched on a latch that holds the latch and
//! makes a blocking `launch` on it waited for good, silently (the new fiber waited for the latch, the holder
//! for the new fiber). Now that launch is refused as the fiber's `apply` on its own latch is: the closure is
//! dropped unrun, exactly once, and `launch` panics naming the mistake and the way out
//! (`a_launched_fiber_that_holds_its_latch_and_launches_on_it_is_refused`,
//! `a_launch_then_fiber_that_holds_its_latch_and_launches_on_it_is_refused`; both hung, killed by the
//! watchdog, before). Not refused, as before: the holder's `launch_then` (nothing waits for its fiber) and a
//! launch from a fiber the holder spawned (the check is direct, as the `apply` refusal's is: such a fiber,
//! joined while the latch is held, still waits for good)
//! (`a_launch_then_by_the_holder_and_a_launch_from_a_fiber_it_spawned_are_not_refused`).

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use trust_core::{Fiber, Latch, Trust, wait_pending};

#[macro_use]
mod common;
use common::{CountsDrops, child_ok, load, panic_message, rt};

fn within<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = channel();
    std::thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(Duration::from_secs(10))
        .expect("hung: a fiber waited for its own end")
}

#[test]
fn a_fiber_that_joins_its_own_handle_panics_naming_the_mistake() {
    let message = within(|| {
        let slot: Arc<Mutex<Option<Fiber<u64>>>> = Arc::default();
        let (handed, inner) = (Arc::new(Barrier::new(2)), slot.clone());
        let (gate, (tx, rx)) = (handed.clone(), channel());
        // Detached: its handle goes into it.
        let fiber = trust_core::spawn(move || {
            gate.wait();
            let me = inner.lock().unwrap().take().expect("its own handle");
            let joined = catch_unwind(AssertUnwindSafe(move || me.join()));
            let payload = joined.expect_err("a fiber cannot wait for its own end");
            tx.send(payload.downcast_ref::<String>().cloned()).unwrap();
            1
        });
        *slot.lock().unwrap() = Some(fiber);
        handed.wait();
        rx.recv().unwrap()
    });
    assert_eq!(
        message.as_deref(),
        Some(
            "a fiber joined its own handle: it would wait for its own end for good. Join it from another \
             fiber or thread, or let the handle go (a fiber runs to its end unjoined)"
        )
    );
    // The runtime goes on.
    assert_eq!(trust_core::spawn(|| 41 + 1).join().unwrap(), 42);
}

/// Another fiber's join of a running fiber is not refused: it waits, and gets the result.
#[test]
fn a_fiber_joining_another_running_fiber_waits_for_its_result() {
    let got = within(|| {
        let first = trust_core::spawn(|| {
            trust_core::sleep(Duration::from_millis(30));
            5u64
        });
        trust_core::spawn(move || first.join().unwrap() + 1)
            .join()
            .unwrap()
    });
    assert_eq!(got, 6);
}

/// The message of a blocking `launch` that a fiber launched on a latch makes on that latch while it holds it.
const LAUNCH_BY_HOLDER: &str = "`launch` on the `Trust<Latch<T>>` whose `launch` runs this fiber, while this \
     fiber holds the latch: the new fiber would wait for the latch, and this fiber for the new fiber, for good. \
     Drop the guard first, or use `launch_then` (which does not wait)";

/// Inside a fiber launched on `l` that holds the latch (the value goes 5 -> 6 under the guard): a blocking
/// `l.launch` of a closure that counts its drops and would lock the latch. Then, with the guard dropped, the
/// same fiber launches on `l` again (allowed: nobody holds the latch). Returns the refused launch's message,
/// the drops counted right after it, whether its closure ran, the value under the guard afterwards and the
/// second launch's result.
fn launch_while_holding(l: Trust<Latch<u64>>) -> (Result<u64, String>, usize, bool, u64, u64) {
    let own = l.clone();
    let drops = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicBool::new(false));
    let (d2, r2) = (drops.clone(), ran.clone());
    let got = l.launch(move |latch| {
        let mut guard = latch.lock();
        *guard += 1;
        let capture = CountsDrops(d2.clone());
        let refused = catch_unwind(AssertUnwindSafe(|| {
            own.launch(move |latch| {
                let _capture = &capture;
                r2.store(true, Ordering::SeqCst);
                *latch.lock() + 100
            })
        }))
        .map_err(panic_message);
        let dropped = load(&d2);
        *guard += 1;
        let under_guard = *guard;
        drop(guard);
        let again = own.launch(|latch| *latch.lock() + 10);
        (refused, dropped, under_guard, again)
    });
    let (refused, dropped, under_guard, again) = got;
    assert_eq!(
        load(&drops),
        1,
        "the refused closure is dropped exactly once"
    );
    (
        refused,
        dropped,
        ran.load(Ordering::SeqCst),
        under_guard,
        again,
    )
}

/// Found by review 93 (seen then, not fixed): a fiber launched on a latch that holds the latch and makes a
/// blocking `launch` on it waited for good, silently (the new fiber waited for the latch, its launcher for the
/// new fiber; the watchdog killed the child). Now the launch is refused as an `apply` on the fiber's own latch
/// is: its closure is dropped unrun, exactly once, and `launch` panics naming the mistake. The latch and its
/// trustee stay usable: the same fiber launches again once it has dropped the guard, and launches and applies
/// from outside see every write.
#[test]
fn a_launched_fiber_that_holds_its_latch_and_launches_on_it_is_refused() {
    in_child!(
        "a_launched_fiber_that_holds_its_latch_and_launches_on_it_is_refused",
        10
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let l2 = l.clone();
    let got = common::within(10, move || launch_while_holding(l2));
    assert_eq!(got, (Err(LAUNCH_BY_HOLDER.to_string()), 1, false, 7, 17));
    // Afterwards, from outside: a launch, a plain apply, and another property of the same trustee.
    assert_eq!(l.launch(|latch| *latch.lock() * 2), 14);
    assert_eq!(l.apply(|latch| *latch.get_mut() + 1), 8);
    let other = rt().trustee(0).entrust(40u64);
    assert_eq!(other.apply(|v| *v + 2), 42);
    child_ok();
}

/// The same from a fiber that `launch_then` started on the latch (it is launched on the latch too), and from a
/// latch on the other trustee (the launch goes to its own worker either way): refused alike.
#[test]
fn a_launch_then_fiber_that_holds_its_latch_and_launches_on_it_is_refused() {
    in_child!(
        "a_launch_then_fiber_that_holds_its_latch_and_launches_on_it_is_refused",
        10
    );
    let (tx, rx) = channel();
    let l: Trust<Latch<u64>> = rt().trustee(1).entrust(Latch::new(5));
    let l2 = l.clone();
    common::within(10, move || {
        let own = l2.clone();
        l2.launch_then(
            move |_| launch_while_holding(own),
            move |got| tx.send(got).unwrap(),
        );
        wait_pending();
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(1)),
        Ok((Err(LAUNCH_BY_HOLDER.to_string()), 1, false, 7, 17))
    );
    assert_eq!(l.launch(|latch| *latch.lock() * 2), 14);
    child_ok();
}

/// Not refused: a `launch_then` by the fiber that holds its latch waits for nothing, so its fiber locks the
/// latch once the guard is dropped (the value goes 5 -> 6 under the guard, then +10 in the new fiber, whose
/// continuation runs in the holder's `wait_pending`). Nor a blocking `launch` from a fiber the holder spawned:
/// that fiber is not launched on the latch, and the check is direct, as the `apply` refusal's is (here the
/// holder drops the guard before joining it, so nothing waits for good: +100).
#[test]
fn a_launch_then_by_the_holder_and_a_launch_from_a_fiber_it_spawned_are_not_refused() {
    in_child!(
        "a_launch_then_by_the_holder_and_a_launch_from_a_fiber_it_spawned_are_not_refused",
        10
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let l2 = l.clone();
    let got = common::within(10, move || {
        let (own, spawned_own) = (l2.clone(), l2.clone());
        l2.launch(move |latch| {
            let mut guard = latch.lock();
            *guard += 1;
            let seen = Rc::new(Cell::new(0));
            let s2 = seen.clone();
            own.launch_then(
                |latch| {
                    let mut g = latch.lock();
                    *g += 10;
                    *g
                },
                move |v| s2.set(v),
            );
            let spawned = trust_core::spawn(move || {
                spawned_own.launch(|latch| {
                    let mut g = latch.lock();
                    *g += 100;
                    *g
                })
            });
            trust_core::sleep(Duration::from_millis(20));
            let before = (seen.get(), *guard);
            drop(guard);
            wait_pending();
            let spawned = spawned.join().unwrap();
            (before, seen.get(), spawned)
        })
    });
    // The launch_then's fiber queued for the latch first (started at once, on the holder's worker), then the
    // spawned fiber's: first come, first served.
    assert_eq!(got, ((0, 6), 16, 116));
    assert_eq!(l.apply(|latch| *latch.get_mut()), 116);
    child_ok();
}
