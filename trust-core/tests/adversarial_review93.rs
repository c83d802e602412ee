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
//! launch from a fiber the holder spawned but does not join while holding the latch
//! (`a_launch_then_by_the_holder_and_a_launch_from_a_fiber_it_spawned_are_not_refused`).
//!
//! Found, fixed (helper 122): the join chain. A fiber on the holder's worker that the holder joins while holding
//! the latch (directly or through fibers joining each other) and that launches on the latch, or applies to it,
//! waited for good; refused now, naming the way out (the tests at the end of this file, after `spawn_here`).

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use trust_core::{Fiber, Latch, Trust, local_trustee, wait_pending};

#[macro_use]
mod common;
#[path = "common/latch_chains.rs"]
mod latch_chains;
use common::{CountsDrops, child_ok, load, panic_message, rt};
use latch_chains::*;

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
/// that fiber is not launched on the latch, and the holder does not join it while holding the latch (it drops
/// the guard before joining it, so nothing waits for good: +100).
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

// Helper 122: the join chain. A fiber the holder spawned and joins, holding the latch, that launches on the
// latch (or applies to it) waited for good: the new fiber waited for the latch (the apply for the launched
// holder to end), the holder for the spawned fiber. Refused now, as the direct cases are, when the spawned
// fiber runs on the holder's worker; each of the first three tests hung before (killed by the watchdog).

/// After a refusal under `join_while_holding` (which leaves 17): the latch is still usable, a launch locks it
/// once (18) and an apply sees that.
fn assert_usable_at_17(l: &Trust<Latch<u64>>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let r3 = runs.clone();
    let after = l.launch(move |latch| {
        r3.fetch_add(1, Ordering::SeqCst);
        let mut g = latch.lock();
        *g += 1;
        *g
    });
    assert_eq!((after, load(&runs)), (18, 1));
    assert_eq!(l.apply(|latch| *latch.get_mut()), 18);
}

/// Inside a fiber launched on `l` that holds the latch (5 -> 6 under the guard): `in_joined` runs in a fiber
/// spawned on the same worker, which the holder joins while holding the guard. Then (7 under the guard) the
/// guard is dropped and the holder launches on `l` again (+10). Returns the holder's worker, the joined fiber's
/// worker, the join's result (a panic's message), the value under the guard after the join, and the second
/// launch's result.
fn join_while_holding(
    l: Trust<Latch<u64>>,
    in_joined: impl FnOnce(Trust<Latch<u64>>) -> u64 + Send + 'static,
) -> (usize, usize, Result<u64, String>, u64, u64) {
    let own = l.clone();
    l.launch(move |latch| {
        let mut guard = latch.lock();
        *guard += 1;
        let here = local_trustee().index();
        let (joined_own, at) = (own.clone(), Arc::new(AtomicUsize::new(usize::MAX)));
        let at2 = at.clone();
        let joined = spawn_here(move || {
            at2.store(local_trustee().index(), Ordering::SeqCst);
            in_joined(joined_own)
        })
        .join()
        .map_err(panic_message);
        *guard += 1;
        let under_guard = *guard;
        drop(guard);
        let again = own.launch(|latch| {
            let mut g = latch.lock();
            *g += 10;
            *g
        });
        (here, load(&at), joined, under_guard, again)
    })
}

/// (1) The holder spawns a fiber and joins it, holding the latch; that fiber launches on the latch: refused,
/// the closure dropped unrun exactly once, the panic resumed by the holder's join. Once the holder has dropped
/// the guard, launches on the latch work, each run exactly once.
#[test]
fn a_fiber_the_holder_joins_that_launches_on_the_latch_is_refused() {
    in_child!(
        "a_fiber_the_holder_joins_that_launches_on_the_latch_is_refused",
        10
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let (l2, refused) = (l.clone(), Counted::default());
    let r2 = refused.clone();
    let got = common::within(10, move || {
        join_while_holding(l2, move |own| own.launch(r2.launched()))
    });
    assert_eq!(got, (0, 0, Err(LAUNCH_JOINED_BY_HOLDER.to_string()), 7, 17));
    assert_eq!(refused.counts(), (0, 1), "never run, dropped exactly once");
    assert_usable_at_17(&l);
    child_ok();
}

/// (2) The same with a blocking `apply`, then an `apply_with`, from the joined fiber: refused alike (an apply
/// waits for every launched fiber to end, the holder too, guard or not).
#[test]
fn a_fiber_the_holder_joins_that_applies_to_the_latch_is_refused() {
    in_child!(
        "a_fiber_the_holder_joins_that_applies_to_the_latch_is_refused",
        10
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let (l2, refused, refused_with) = (l.clone(), Counted::default(), Counted::default());
    let (r2, w2) = (refused.clone(), refused_with.clone());
    let got = common::within(10, move || {
        join_while_holding(l2, move |own| {
            let first =
                catch_unwind(AssertUnwindSafe(|| own.apply(r2.applied()))).map_err(panic_message);
            assert_eq!(first, Err(APPLY_JOINED_BY_LAUNCHED.to_string()));
            let f = w2.applied();
            own.apply_with(move |latch, add: u64| f(latch) + add, 1)
        })
    });
    assert_eq!(
        got,
        (0, 0, Err(APPLY_JOINED_BY_LAUNCHED.to_string()), 7, 17)
    );
    assert_eq!(refused.counts(), (0, 1), "never run, dropped exactly once");
    assert_eq!(
        refused_with.counts(),
        (0, 1),
        "never run, dropped exactly once"
    );
    assert_usable_at_17(&l);
    child_ok();
}

/// (3) A chain of two: the holder joins a fiber that joins another, both on the holder's worker; the last
/// launches on the latch, then (in a second fiber of the chain) applies to it: both refused.
#[test]
fn a_fiber_at_the_end_of_a_join_chain_from_the_holder_is_refused() {
    in_child!(
        "a_fiber_at_the_end_of_a_join_chain_from_the_holder_is_refused",
        10
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let (l2, launched, applied) = (l.clone(), Counted::default(), Counted::default());
    let (r2, a2) = (launched.clone(), applied.clone());
    let got = common::within(10, move || {
        join_while_holding(l2, move |own| {
            let (first, second) = (own.clone(), own);
            let launch = spawn_here(move || (local_trustee().index(), first.launch(r2.launched())));
            let launch = launch.join().map_err(panic_message);
            let apply = spawn_here(move || (local_trustee().index(), second.apply(a2.applied())));
            let apply = apply.join().map_err(panic_message);
            assert_eq!(
                (launch, apply),
                (
                    Err(LAUNCH_JOINED_BY_HOLDER.to_string()),
                    Err(APPLY_JOINED_BY_LAUNCHED.to_string())
                )
            );
            3
        })
    });
    assert_eq!(got, (0, 0, Ok(3), 7, 17));
    assert_eq!(launched.counts(), (0, 1), "never run, dropped exactly once");
    assert_eq!(applied.counts(), (0, 1), "never run, dropped exactly once");
    assert_eq!(l.launch(|latch| *latch.lock() + 1), 18);
    child_ok();
}

/// (4) Controls, not refused: fibers the holder spawned on its worker but does not join while holding the
/// latch. A detached one launches on the latch (+100); another is joined only after the guard is dropped, and
/// launches once joined (+1,000). Each closure runs exactly once, after the guard is dropped.
#[test]
fn fibers_the_holder_spawns_but_does_not_join_while_holding_are_not_refused() {
    in_child!(
        "fibers_the_holder_spawns_but_does_not_join_while_holding_are_not_refused",
        10
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let l2 = l.clone();
    let runs: Arc<[AtomicUsize; 2]> = Arc::default();
    let runs2 = runs.clone();
    let got = common::within(10, move || {
        let own = l2.clone();
        l2.launch(move |latch| {
            let mut guard = latch.lock();
            *guard += 1;
            let (detached, joined) = (own.clone(), own.clone());
            let (r1, r2) = (runs2.clone(), runs2.clone());
            let launching = spawn_here(move || {
                detached.launch(move |latch| {
                    let mut g = latch.lock();
                    r1[0].fetch_add(1, Ordering::SeqCst);
                    *g += 100;
                })
            });
            drop(launching);
            let later = spawn_here(move || {
                // Launches once the holder, the guard dropped, joins it.
                trust_core::sleep(Duration::from_millis(40));
                (
                    local_trustee().index(),
                    joined.launch(move |latch| {
                        let mut g = latch.lock();
                        r2[1].fetch_add(1, Ordering::SeqCst);
                        *g += 1000;
                    }),
                )
            });
            trust_core::sleep(Duration::from_millis(20));
            let before: Vec<usize> = runs2.iter().map(load).collect();
            let under_guard = *guard;
            drop(guard);
            let later = later.join().map_err(panic_message);
            for _ in 0..5000 {
                if load(&runs2[0]) == 1 {
                    break;
                }
                trust_core::sleep(Duration::from_millis(1));
            }
            let value = *latch.lock();
            (before, under_guard, later, value)
        })
    });
    assert_eq!(got, (vec![0, 0], 6, Ok((0, ())), 1106));
    assert_eq!(runs.iter().map(load).collect::<Vec<_>>(), vec![1, 1]);
    assert_eq!(l.apply(|latch| *latch.get_mut()), 1106);
    child_ok();
}

/// (5) A launch by a fiber that a fiber launched on the latch joins, while a plain apply waits for the latch's
/// launched fibers: it starts at once, as the launched fiber's own launch would (behind the apply, it waited for
/// good: the apply waits for the joining fiber to end, which waits for this one). The apply, from a detached
/// fiber, is not refused: it runs once, after them.
#[test]
fn a_launch_from_a_fiber_joined_by_a_launched_fiber_does_not_wait_behind_an_apply() {
    in_child!(
        "a_launch_from_a_fiber_joined_by_a_launched_fiber_does_not_wait_behind_an_apply",
        10
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let l2 = l.clone();
    let runs: Arc<[AtomicUsize; 2]> = Arc::default();
    let (runs2, (tx, rx)) = (runs.clone(), channel());
    let got = common::within(10, move || {
        let own = l2.clone();
        l2.launch(move |_| {
            let (applying, joined) = (own.clone(), own.clone());
            let (r1, r2) = (runs2.clone(), runs2.clone());
            let applier = spawn_here(move || {
                let v = applying.apply(move |latch| {
                    r1[0].fetch_add(1, Ordering::SeqCst);
                    *latch.get_mut() += 1;
                    *latch.get_mut()
                });
                tx.send(v).unwrap();
            });
            drop(applier);
            let launching = spawn_here(move || {
                // Launches once the apply waits.
                trust_core::sleep(Duration::from_millis(20));
                (
                    local_trustee().index(),
                    joined.launch(move |latch| {
                        r2[1].fetch_add(1, Ordering::SeqCst);
                        let mut g = latch.lock();
                        *g += 10;
                        *g
                    }),
                )
            });
            let got = launching.join().map_err(panic_message);
            (got, load(&runs2[0]))
        })
    });
    assert_eq!(got, (Ok((0, 15)), 0));
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(16));
    assert_eq!(runs.iter().map(load).collect::<Vec<_>>(), vec![1, 1]);
    assert_eq!(l.apply(|latch| *latch.get_mut()), 16);
    child_ok();
}

/// (6) `try_unwrap` and `into_inner` of the latch's handle from a fiber the holder joins (thirty-seventh session;
/// helper 122 found them still waiting for good): refused, each handle given up (dropped, its count returned)
/// so that the last handle, outside, takes the value afterwards.
#[test]
fn a_fiber_the_holder_joins_that_takes_the_latch_is_refused() {
    in_child!(
        "a_fiber_the_holder_joins_that_takes_the_latch_is_refused",
        10
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let l2 = l.clone();
    let got = common::within(10, move || {
        join_while_holding(l2, move |own| {
            let second = own.clone();
            let unwrapped = catch_unwind(AssertUnwindSafe(move || own.try_unwrap().is_ok()))
                .map_err(panic_message);
            let inner = catch_unwind(AssertUnwindSafe(move || second.into_inner().is_some()))
                .map_err(panic_message);
            assert_eq!(
                (unwrapped, inner),
                (
                    Err(TAKE_JOINED_BY_LAUNCHED.to_string()),
                    Err(TAKE_JOINED_BY_LAUNCHED.to_string())
                )
            );
            4
        })
    });
    assert_eq!(got, (0, 0, Ok(4), 7, 17));
    let latch = l
        .try_unwrap()
        .unwrap_or_else(|_| panic!("the refused takes left a handle counted"));
    assert_eq!(latch.into_inner(), 17);
    child_ok();
}
