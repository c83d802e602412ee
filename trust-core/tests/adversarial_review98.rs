//! Review 98: the join chain of latch refusals (helper 122: `Scheduler::joined_chain`, `JoinState::link_joiner`),
//! the fairness hold of a fiber that unwinds (fbcf7e9), and the refusals while unwinding. Each test runs in a
//! child process of its own with a watchdog.
//!
//! Found, fixed (review 98):
//! - `the_10_000th_fiber_down_a_join_chain_from_the_holder_is_refused`: the chain's walk stopped after 64 links
//!   (`MAX_JOIN_LINKS`), so the holder's 65th fiber down a chain of joins that launched on the latch was not
//!   refused: its new fiber waited for the latch, the holder for the chain, for good (a chain of 100 hung until
//!   the watchdog). The walk is now bounded by the worker's live fibers (a chain from a live fiber visits each
//!   at most once), not by a cap: a chain of 10,000 is refused at its end, launch and apply alike (0.6 s here,
//!   most of it the 20,000 fibers' starts).
//! - `a_fiber_a_launched_fiber_joins_after_its_apply_began_waiting_is_refused`: the check ran only when the
//!   `apply` started. A fiber's `apply` on the latch that already waited for the launched fibers when a
//!   launched fiber joined it waited for good (the apply for its joiner, the joiner for it). A join that
//!   suspends on its worker now makes ready the fibers waiting for a latch's launched fibers whose join chain
//!   now reaches a fiber launched on that latch (`Scheduler::recheck_latch_waiters`; other waiters are left
//!   alone), and `trust::wait_for_launched` refuses the apply after the wake-up (`APPLY_JOINED_BY_LAUNCHED`,
//!   the closure dropped unrun, once).
//! - `a_fiber_polling_inline_beside_a_fiber_suspended_mid_unwind_lets_remote_clients_in` (fixed after the
//!   review, thirty-seventh session): `thread::panicking()` is per thread, so `hold` (fbcf7e9) and
//!   `yield_burst` (review 92) skipped their suspension for every fiber of the worker while one fiber was
//!   suspended mid-unwind (a destructor's `sleep`), not only for the one that unwinds: a fiber polling a
//!   property of its own trustee with blocking `apply`s until a plain thread's `apply` changed it never
//!   suspended, and the worker served no remote request and never fired the sleeper's timer, for good. The
//!   worker now counts the fibers suspended while they unwind (`fiber::suspend_on`: one load of std's global
//!   panic count per switch where nothing panics), and `Worker::unwinding_here` takes the others for not
//!   unwinding.
//!
//! - `a_fiber_the_holder_joins_after_its_launch_began_is_refused_in_lock` (fixed after the review, helper 127;
//!   was `a_fiber_the_holder_joins_after_its_launch_began_waits_for_good`): the same order with a blocking
//!   `launch`: the new fiber started, nobody joined its launcher yet, so it was not refused, and it waited for the
//!   latch; then the holder joined the launcher, and each waited for the next for good. `Latch::lock` now looks
//!   down the waiting fiber's join chain (a blocking `launch` joins its fiber) for the holder, when it would wait
//!   and after every wake-up, and panics (`LOCK_WAITED_FOR_BY_HOLDER`); a join that suspends makes ready the lock
//!   waiters whose chain it extends (`Scheduler::recheck_lock_waiters`), once each, and a latch handed to one so
//!   woken does not make it ready twice (`Scheduler::hand_latch_to`). The panic comes back through the launch
//!   and the join; a waiter whose chain does not reach the holder waits on and gets the latch once
//!   (`a_lock_waiter_whose_chain_does_not_reach_the_holder_gets_the_latch_once`), and a lock made after the
//!   cycle closed is refused at once (`a_lock_by_a_fiber_the_holder_already_waits_for_is_refused_at_once`).
//!
//! - `a_take_that_began_before_a_launched_fiber_joined_it_is_refused` (fixed after the review, helper 128; was
//!   `a_take_that_began_before_a_launched_fiber_joined_it_waits_for_good`): the order of (5) with `try_unwrap`,
//!   whose wait is a verdict settled at retirement (a promise the join could not look into): it hung. A take
//!   from a fiber on its latch's worker now records that fiber with its taker (`Worker::retire_to`), and a join
//!   that suspends refuses the waiting takes whose chain now reaches a fiber launched on their latch
//!   (`Worker::refuse_joined_takes`): the taker is told so and forgotten (the property stays retired, the
//!   handle's count given up, as a plain drop leaves it), and the taking fiber wakes and panics
//!   (`TAKE_JOINED_BY_LAUNCHED`, as when the join came first). Through a chain of joins and with `into_inner`
//!   too (`a_take_a_launched_fiber_joins_through_a_chain_after_it_began_is_refused`: the value dropped once,
//!   with its last handle); a refused take of the last handle leaves the value to its retirement, dropped once
//!   (`a_refused_take_of_the_last_handle_leaves_the_value_dropped_once`); a take whose chain reaches no launched
//!   fiber waits on and gets the value (`a_waiting_take_whose_chain_reaches_no_launched_fiber_gets_the_value`).
//!
//! Held (tests added): a fiber that reuses the id of one the holder joined is not refused (the link died with
//! the serial); a `launch_then` from a fiber the holder joins, and a `launch_then` and an inline `apply` to an
//! unrelated property from a fiber that a launched fiber joins, are not refused; a chain through a second
//! latch's blocking `launch` is followed (a launched fiber's start records its joiner too); a destructor that
//! launches on the held latch during a panic (inside `catch_unwind`) is refused, the closure dropped once, and
//! the fiber's own panic reaches the join; a fiber that unwinds through 100,000 inline applies beside a
//! saturated remote client runs them at once (no other fiber sees `panicking()`, the remote client's longest
//! wait was 8.5 ms here, every request counted).

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trust_core::{Latch, Trust};

#[macro_use]
mod common;
#[path = "common/latch_chains.rs"]
mod latch_chains;
use common::{CountsDrops, calibrate, child_ok, load, panic_message, rt, spawn_on};
use latch_chains::*;

/// In a fiber: `links` fibers, each spawned on this worker and joined by the one before (this fiber joins the
/// first); the last runs `f`. A panic comes back up the chain with its payload.
fn join_chain<R: Send + 'static>(links: usize, f: impl FnOnce() -> R + Send + 'static) -> R {
    if links == 0 {
        return f();
    }
    spawn_here(move || join_chain(links - 1, f))
        .join()
        .unwrap_or_else(|p| resume_unwind(p))
}

/// In a fiber launched on `l` (value 5) that locks the latch (6 under the guard): runs `under_guard` with a
/// handle on the latch, then (+1, 7) drops the guard and launches again (+10). Returns what `under_guard`
/// returned, the value under the guard after it, and the second launch's result.
fn while_holding<R: Send + 'static>(
    l: Trust<Latch<u64>>,
    under_guard: impl FnOnce(Trust<Latch<u64>>) -> R + Send + 'static,
) -> (R, u64, u64) {
    let own = l.clone();
    l.launch(move |latch| {
        let mut guard = latch.lock();
        *guard += 1;
        let got = under_guard(own.clone());
        *guard += 1;
        let value = *guard;
        drop(guard);
        let again = own.launch(|latch| {
            let mut g = latch.lock();
            *g += 10;
            *g
        });
        (got, value, again)
    })
}

const LINKS: usize = 10_000;

/// (1) The join chain's walk stopped after 64 links (`MAX_JOIN_LINKS`): the holder's 100th (here 10,000th) fiber down a chain
/// of joins on its worker launched on the latch and was not refused, so its new fiber waited for the latch, the
/// holder for the chain, for good (killed by the watchdog). Found, fixed: the walk is bounded by the worker's
/// live fibers (a chain from a fiber that runs visits each at most once), so a chain of any length is
/// followed. The apply at the end of such a chain (from a fiber a launched fiber joins) is refused alike.
#[test]
fn the_10_000th_fiber_down_a_join_chain_from_the_holder_is_refused() {
    in_child!(
        "the_10_000th_fiber_down_a_join_chain_from_the_holder_is_refused",
        8
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let (l2, launched, applied) = (l.clone(), Counted::default(), Counted::default());
    let (r2, a2) = (launched.clone(), applied.clone());
    let got = common::within(6, move || {
        while_holding(l2, move |own| {
            let (first, second) = (own.clone(), own);
            let launch = catch_unwind(AssertUnwindSafe(|| {
                join_chain(LINKS, move || first.launch(r2.launched()))
            }))
            .map_err(panic_message);
            let apply = catch_unwind(AssertUnwindSafe(|| {
                join_chain(LINKS, move || second.apply(a2.applied()))
            }))
            .map_err(panic_message);
            (launch, apply)
        })
    });
    assert_eq!(
        got,
        (
            (
                Err(LAUNCH_JOINED_BY_HOLDER.to_string()),
                Err(APPLY_JOINED_BY_LAUNCHED.to_string())
            ),
            7,
            17
        )
    );
    assert_eq!(launched.counts(), (0, 1), "never run, dropped exactly once");
    assert_eq!(applied.counts(), (0, 1), "never run, dropped exactly once");
    assert_eq!(l.launch(|latch| *latch.lock() + 1), 18);
    child_ok();
}

/// (2) Ids are reused: the holder joins a fiber that ends (its id goes back to the worker's free list, its
/// link with it), then spawns, without joining it, a fiber that takes that id and launches on the latch. Not
/// refused (the link died with the first fiber's serial): the closure waits for the latch, runs once after the
/// guard is dropped (+100), before the holder's own second launch (+10). Held.
#[test]
fn a_fiber_that_reuses_the_id_of_a_joined_one_is_not_refused() {
    in_child!(
        "a_fiber_that_reuses_the_id_of_a_joined_one_is_not_refused",
        8
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let (l2, c) = (l.clone(), Counted::default());
    let c2 = c.clone();
    let got = common::within(6, move || {
        while_holding(l2, move |own| {
            let joined = spawn_here(|| 1u64).join().unwrap();
            let f = c2.launched();
            let detached = spawn_here(move || own.launch(f));
            trust_core::sleep(Duration::from_millis(20));
            let under_guard = c2.counts();
            (joined, under_guard, detached)
        })
    });
    let ((joined, under_guard, detached), value, again) = got;
    assert_eq!((joined, under_guard, value, again), (1, (1, 0), 7, 117));
    assert_eq!(common::within(5, move || detached.join().unwrap()), 107);
    assert_eq!(c.counts(), (1, 1));
    child_ok();
}

/// (3) Not refused, as promised: a `launch_then` from a fiber the holder joins while holding the latch
/// (nothing waits for its fiber: it locks the latch once the guard is dropped, +100, before the holder's
/// second launch, +10), and a `launch_then` and an inline `apply` to an unrelated property of the same
/// trustee from a fiber that a launched fiber (not holding the latch) joins. Held.
#[test]
fn launch_then_and_unrelated_applies_from_joined_fibers_are_not_refused() {
    in_child!(
        "launch_then_and_unrelated_applies_from_joined_fibers_are_not_refused",
        8
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let other = rt().trustee(0).entrust(40u64);
    let (l2, c, (tx, rx)) = (l.clone(), Counted::default(), channel());
    let c2 = c.clone();
    let got = common::within(6, move || {
        while_holding(l2, move |own| {
            spawn_here(move || {
                own.launch_then(c2.launched(), move |r| tx.send(r).unwrap());
                3u64
            })
            .join()
            .map_err(panic_message)
        })
    });
    assert_eq!(got, (Ok(3), 7, 117));
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(107));
    assert_eq!(c.counts(), (1, 1));

    let (l3, (tx, rx)) = (l.clone(), channel());
    let got = common::within(6, move || {
        let own = l3.clone();
        l3.launch(move |_| {
            spawn_here(move || {
                let a = other.apply(|v| {
                    *v += 2;
                    *v
                });
                own.launch_then(
                    |latch| {
                        let mut g = latch.lock();
                        *g += 1;
                        *g
                    },
                    move |r| tx.send(r).unwrap(),
                );
                a
            })
            .join()
            .map_err(panic_message)
        })
    });
    assert_eq!(got, Ok(42));
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(118));
    child_ok();
}

/// (4) A launch then join, in that order: the check runs when the launched fiber starts, not when the holder
/// joins. A fiber the holder spawned launches on the latch (the new fiber starts, is not refused since nobody
/// joins its launcher yet, and waits for the latch); then the holder joins that fiber, holding the latch: the
/// holder waited for it, it for its new fiber, that one for the latch, for good. Fixed: the join wakes the
/// fiber waiting in `Latch::lock` (`Scheduler::recheck_lock_waiters`), which finds the holder down its join
/// chain (the blocking launch joins its fiber) and panics; the panic comes back through the launch and the join.
/// The closure ran once (up to its `lock`), its capture dropped once, and the latch stays usable.
#[test]
fn a_fiber_the_holder_joins_after_its_launch_began_is_refused_in_lock() {
    in_child!(
        "a_fiber_the_holder_joins_after_its_launch_began_is_refused_in_lock",
        8
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let (l2, c) = (l.clone(), Counted::default());
    let c2 = c.clone();
    let got = common::within(6, move || {
        while_holding(l2, move |own| {
            let f = c2.launched();
            let launching = spawn_here(move || own.launch(f));
            while load(&c2.runs) == 0 {
                trust_core::yield_now();
            }
            launching.join().map_err(panic_message)
        })
    });
    assert_eq!(got, (Err(LOCK_WAITED_FOR_BY_HOLDER.to_string()), 7, 17));
    assert_eq!(
        c.counts(),
        (1, 1),
        "ran once up to its lock, dropped exactly once"
    );
    assert_eq!(l.launch(|latch| *latch.lock() + 1), 18);
    child_ok();
}

/// (4b) The control: the same launch waits in `Latch::lock`, and another fiber (not the holder) joins its
/// launcher. That join extends the waiter's chain, so the waiter is made ready to look again; the holder is not
/// down its chain, so it waits on (not refused), and gets the latch once the holder drops its guard (+100),
/// before the holder's second launch, which waited behind it (+10). Held.
#[test]
fn a_lock_waiter_whose_chain_does_not_reach_the_holder_gets_the_latch_once() {
    in_child!(
        "a_lock_waiter_whose_chain_does_not_reach_the_holder_gets_the_latch_once",
        8
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let (l2, c) = (l.clone(), Counted::default());
    let c2 = c.clone();
    let got = common::within(6, move || {
        while_holding(l2, move |own| {
            let f = c2.launched();
            let launching = spawn_here(move || own.launch(f));
            while load(&c2.runs) == 0 {
                trust_core::yield_now();
            }
            let joining = spawn_here(move || launching.join().map_err(panic_message));
            for _ in 0..4 {
                trust_core::yield_now();
            }
            (c2.counts(), joining)
        })
    });
    let ((under_guard, joining), value, again) = got;
    assert_eq!((under_guard, value, again), ((1, 0), 7, 117));
    assert_eq!(common::within(5, move || joining.join().unwrap()), Ok(107));
    assert_eq!(c.counts(), (1, 1));
    assert_eq!(l.launch(|latch| *latch.lock() + 1), 118);
    child_ok();
}

/// (4c) The cycle closed before the `lock`: the launched fiber yields until the holder has joined its launcher,
/// then locks. Refused at the call, before it waits: the same panic comes back through the launch and the join,
/// the latch stays usable. Held.
#[test]
fn a_lock_by_a_fiber_the_holder_already_waits_for_is_refused_at_once() {
    in_child!(
        "a_lock_by_a_fiber_the_holder_already_waits_for_is_refused_at_once",
        8
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let (l2, started, locked) = (
        l.clone(),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let got = common::within(6, move || {
        while_holding(l2, move |own| {
            let (s2, k2) = (started.clone(), locked.clone());
            let launching = spawn_here(move || {
                own.launch(move |latch| {
                    s2.store(true, Ordering::SeqCst);
                    for _ in 0..8 {
                        trust_core::yield_now();
                    }
                    let mut g = latch.lock();
                    k2.fetch_add(1, Ordering::SeqCst);
                    *g += 100;
                    *g
                })
            });
            while !started.load(Ordering::SeqCst) {
                trust_core::yield_now();
            }
            let got = launching.join().map_err(panic_message);
            (got, load(&locked))
        })
    });
    assert_eq!(
        got,
        ((Err(LOCK_WAITED_FOR_BY_HOLDER.to_string()), 0), 7, 17)
    );
    assert_eq!(l.launch(|latch| *latch.lock() + 1), 18);
    child_ok();
}

/// (5) The same order with an apply: a fiber applies to the latch while a launched fiber runs (it waits for
/// the launched fibers to end, not refused: nobody joins it yet); then that launched fiber joins it. Hung
/// before; now the join wakes the apply, which is refused. Another fiber's apply that waits meanwhile, joined
/// by nobody, is left waiting and runs once after the launched fiber ends (5 -> 6).
#[test]
fn a_fiber_a_launched_fiber_joins_after_its_apply_began_waiting_is_refused() {
    in_child!(
        "a_fiber_a_launched_fiber_joins_after_its_apply_began_waiting_is_refused",
        8
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let (l2, c, (tx, rx)) = (l.clone(), Counted::default(), channel());
    let c2 = c.clone();
    let got = common::within(6, move || {
        let own = l2.clone();
        l2.launch(move |_| {
            // A control: another fiber's apply waits too, joined by nobody: it waits on, and runs once after.
            let control = own.clone();
            drop(spawn_here(move || {
                tx.send(control.apply(|latch| {
                    *latch.get_mut() += 1;
                    *latch.get_mut()
                }))
                .unwrap();
            }));
            let applying = spawn_waiting_here(move || own.apply(c2.applied()));
            applying.join().map_err(panic_message)
        })
    });
    assert_eq!(got, Err(APPLY_JOINED_BY_LAUNCHED.to_string()));
    assert_eq!(c.counts(), (0, 1), "never run, dropped exactly once");
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(6));
    assert_eq!(l.apply(|latch| *latch.get_mut() + 1), 7);
    child_ok();
}

/// Sleeps (suspends its fiber) when dropped, after saying so: dropped during a panic, its fiber is suspended
/// mid-unwind, and `thread::panicking()` is true for the worker's other fibers meanwhile (documented).
struct SleepsOnDrop(Arc<AtomicBool>);

impl Drop for SleepsOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        trust_core::sleep(Duration::from_millis(30));
    }
}

/// (6) `thread::panicking()` is per thread, so the fairness hold (fbcf7e9) and the inline burst's yield (review
/// 92) were skipped for every fiber of a worker while one of them was suspended mid-unwind, not only for the one
/// that unwinds. A fiber there that polls a property of its own trustee until a plain thread's `apply` changes
/// it then never suspended: the worker served no remote request, resumed no fiber (the sleeper's timer never
/// fired), for good. Fixed: the fibers suspended mid-unwind are counted, and the others yield.
#[test]
fn a_fiber_polling_inline_beside_a_fiber_suspended_mid_unwind_lets_remote_clients_in() {
    in_child!(
        "a_fiber_polling_inline_beside_a_fiber_suspended_mid_unwind_lets_remote_clients_in",
        4
    );
    calibrate();
    let t = rt().trustee(0).entrust(0u64);
    let (asleep, polling) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let a2 = asleep.clone();
    let unwinding = spawn_on(0, move || {
        let _s = SleepsOnDrop(a2);
        trust_core::yield_now();
        panic!("unwinds through a sleep");
    });
    let (t2, a3, p2) = (t.clone(), asleep.clone(), polling.clone());
    let poller = spawn_on(0, move || {
        while !a3.load(Ordering::SeqCst) {
            trust_core::yield_now();
        }
        p2.store(true, Ordering::SeqCst);
        let mut polls = 0u64;
        while t2.apply(|v| *v) == 0 {
            polls += 1;
        }
        polls > 0
    });
    while !polling.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let t3 = t.clone();
    common::within(2, move || t3.apply(|v| *v = 1));
    assert!(common::within(2, move || poller.join().unwrap()));
    let p = common::within(2, move || unwinding.join().unwrap_err());
    assert_eq!(panic_message(p), "unwinds through a sleep");
    child_ok();
}

/// Makes this many applies to a property of its own worker's trustee when dropped (inline from a fiber there).
struct AppliesOnDrop(Trust<u64>, u64);

impl Drop for AppliesOnDrop {
    fn drop(&mut self) {
        for _ in 0..self.1 {
            self.0.apply(|v| *v += 1);
        }
    }
}

/// (7) The fairness fix's cost: a fiber unwinds through 100,000 inline applies beside a plain thread that keeps
/// the trustee saturated. It applies at once, over its share, without suspending: the worker's other fiber
/// never sees `panicking()`, no remote request is lost, and the remote client waits at most as long as the
/// destructor runs (8.5 ms here; asserted under 3 s). Held.
#[test]
fn a_fiber_unwinding_through_100_000_inline_applies_beside_a_saturated_client() {
    in_child!(
        "a_fiber_unwinding_through_100_000_inline_applies_beside_a_saturated_client",
        10
    );
    calibrate();
    let t = rt().trustee(0).entrust(0u64);
    let stop = Arc::new(AtomicBool::new(false));
    let remote = {
        let (t, stop) = (t.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut sent, mut longest) = (0u64, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                t.apply(|v| *v += 1);
                longest = longest.max(at.elapsed());
                sent += 1;
            }
            (sent, longest)
        })
    };
    while t.apply(|v| *v) < 1_000 {}
    let m = Arc::new(Mutex::new(0u32));
    let other = common::counts_panicking_turns(m.clone());
    let t2 = t.clone();
    let unwinding = spawn_on(0, move || {
        let _a = AppliesOnDrop(t2, 100_000);
        trust_core::yield_now();
        panic!("unwinds through 100,000 applies");
    });
    let p = common::within(8, move || unwinding.join().unwrap_err());
    assert_eq!(panic_message(p), "unwinds through 100,000 applies");
    assert_eq!(common::within(8, move || other.join().unwrap()), 0);
    assert!(!m.is_poisoned());
    stop.store(true, Ordering::Relaxed);
    let (sent, longest) = common::within(8, move || remote.join().unwrap());
    assert_eq!(t.apply(|v| *v), sent + 100_000);
    eprintln!("longest remote apply: {longest:?}");
    assert!(longest < Duration::from_secs(3), "{longest:?}");
    child_ok();
}

/// (8) A refusal while unwinding: a fiber the holder joins panics, and its destructor launches on the latch
/// (inside `catch_unwind`, as a destructor must). The launch is refused (the closure dropped unrun, once), the
/// destructor sees the refusal, and the fiber's own panic reaches the holder's join. Held.
#[test]
fn a_destructor_that_launches_on_the_held_latch_during_a_panic_is_refused() {
    in_child!(
        "a_destructor_that_launches_on_the_held_latch_during_a_panic_is_refused",
        8
    );
    struct LaunchesOnDrop(
        Trust<Latch<u64>>,
        Counted,
        std::sync::mpsc::Sender<Result<u64, String>>,
    );
    impl Drop for LaunchesOnDrop {
        fn drop(&mut self) {
            let (l, c) = (&self.0, &self.1);
            let got =
                catch_unwind(AssertUnwindSafe(|| l.launch(c.launched()))).map_err(panic_message);
            self.2.send(got).unwrap();
        }
    }
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let (l2, c, (tx, rx)) = (l.clone(), Counted::default(), channel());
    let c2 = c.clone();
    let got = common::within(6, move || {
        while_holding(l2, move |own| {
            spawn_here(move || {
                let _d = LaunchesOnDrop(own, c2, tx);
                panic!("the joined fiber panics");
            })
            .join()
            .map_err(panic_message)
            .map(|()| 0)
        })
    });
    assert_eq!(got, (Err("the joined fiber panics".to_string()), 7, 17));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(1)),
        Ok(Err(LAUNCH_JOINED_BY_HOLDER.to_string()))
    );
    assert_eq!(c.counts(), (0, 1), "never run, dropped exactly once");
    child_ok();
}

/// (9) The chain through a second latch's launch: the holder of latch A joins a fiber that makes a blocking
/// launch on latch B (same trustee); that launched fiber launches on A. Its launcher's chain goes through the
/// launch's own join (a launched fiber is a fiber whose start records its joiner too) to the holder: refused,
/// and the refusal comes back up through B's launch and the join. Held.
#[test]
fn a_launch_on_the_held_latch_through_another_latchs_launch_is_refused() {
    in_child!(
        "a_launch_on_the_held_latch_through_another_latchs_launch_is_refused",
        8
    );
    let a: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let b: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(50));
    let (a2, c) = (a.clone(), Counted::default());
    let c2 = c.clone();
    let got = common::within(6, move || {
        while_holding(a2, move |own| {
            let f = c2.launched();
            spawn_here(move || b.launch(move |latch| *latch.lock() + own.launch(f)))
                .join()
                .map_err(panic_message)
        })
    });
    assert_eq!(got, (Err(LAUNCH_JOINED_BY_HOLDER.to_string()), 7, 17));
    assert_eq!(c.counts(), (0, 1), "never run, dropped exactly once");
    child_ok();
}

/// (10) The take in that order: a fiber's `try_unwrap` of the latch's handle waits for the latch's launched
/// fibers to end (the verdict is settled at retirement); then a launched fiber joins it. Its verdict waited for
/// the joiner, the joiner for it, for good: the take's wait was a promise the join could not look into. Fixed:
/// the join refuses the waiting take whose chain now reaches a fiber launched on its latch
/// (`Worker::refuse_joined_takes`): its verdict says so, and the taking fiber panics
/// (`TAKE_JOINED_BY_LAUNCHED`), which comes back through the join and the launch. The handle's count stays given
/// up, as when the refusal comes before the take: the other handles keep the value, and the last one takes it
/// back, untouched.
#[test]
fn a_take_that_began_before_a_launched_fiber_joined_it_is_refused() {
    in_child!(
        "a_take_that_began_before_a_launched_fiber_joined_it_is_refused",
        4
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let l2 = l.clone();
    let got = common::within(2, move || {
        let own = l2.clone();
        l2.launch(move |_| {
            let taking = spawn_waiting_here(move || own.try_unwrap().is_ok());
            taking.join().map_err(panic_message)
        })
    });
    assert_eq!(got, Err(TAKE_JOINED_BY_LAUNCHED.to_string()));
    assert_eq!(l.apply(|latch| *latch.get_mut()), 5);
    // The last handle: the refused take's count was given up once (not leaked, not twice).
    let latch = l.try_unwrap().expect("no other handle is counted");
    assert_eq!(latch.into_inner(), 5);
    child_ok();
}

/// (10b) The same through a chain, with `into_inner`: the take waits, another fiber joins the taking fiber (not
/// refused: no launched fiber down that chain yet), then the launched fiber joins that joiner, which closes the
/// cycle: refused then, and the refusal comes back through both joins. The value is dropped once, with the
/// last handle.
#[test]
fn a_take_a_launched_fiber_joins_through_a_chain_after_it_began_is_refused() {
    in_child!(
        "a_take_a_launched_fiber_joins_through_a_chain_after_it_began_is_refused",
        4
    );
    let drops = Arc::new(AtomicUsize::new(0));
    let l: Trust<Latch<CountsDrops>> = rt()
        .trustee(0)
        .entrust(Latch::new(CountsDrops(drops.clone())));
    let l2 = l.clone();
    let got = common::within(2, move || {
        let own = l2.clone();
        l2.launch(move |_| {
            let taking = spawn_waiting_here(move || own.into_inner().is_some());
            let joining = spawn_here(move || taking.join().map_err(panic_message));
            for _ in 0..4 {
                trust_core::yield_now();
            }
            joining.join().map_err(panic_message)
        })
    });
    assert_eq!(got, Ok(Err(TAKE_JOINED_BY_LAUNCHED.to_string())));
    let latch = l.try_unwrap().expect("no other handle is counted");
    assert_eq!(load(&drops), 0, "the refused take dropped nothing");
    drop(latch);
    assert_eq!(load(&drops), 1, "dropped exactly once");
    child_ok();
}

/// (10c) The refused take held the last handle (the thread's was dropped before it began): its count stays given
/// up, so the value is the retirement's to drop, once, on its trustee, once the launched fiber has ended. Held.
#[test]
fn a_refused_take_of_the_last_handle_leaves_the_value_dropped_once() {
    in_child!(
        "a_refused_take_of_the_last_handle_leaves_the_value_dropped_once",
        4
    );
    let drops = Arc::new(AtomicUsize::new(0));
    let l: Trust<Latch<CountsDrops>> = rt()
        .trustee(0)
        .entrust(Latch::new(CountsDrops(drops.clone())));
    let own = l.clone();
    let (dropped, (tx, rx)) = (Arc::new(AtomicBool::new(false)), channel());
    let (d2, n2) = (dropped.clone(), drops.clone());
    l.launch_then(
        move |_| {
            while !d2.load(Ordering::SeqCst) {
                trust_core::yield_now();
            }
            let taking = spawn_waiting_here(move || own.try_unwrap().is_ok());
            let got = taking.join().map_err(panic_message);
            // Still here: the launched fiber has not ended, and the latch it shares stays.
            tx.send((got, load(&n2))).unwrap();
        },
        |()| {},
    );
    drop(l);
    dropped.store(true, Ordering::SeqCst);
    trust_core::wait_pending();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(2)),
        Ok((Err(TAKE_JOINED_BY_LAUNCHED.to_string()), 0))
    );
    let at = Instant::now();
    while load(&drops) == 0 && at.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(load(&drops), 1, "dropped once, by the retirement");
    child_ok();
}

/// (10d) The control: the take waits, and a fiber not launched on the latch joins the taking fiber. That join
/// is looked at (it suspends on the take's worker) but the take's chain reaches no launched fiber: it waits
/// on, and once the launched fiber has changed the value (5 -> 6) and ended, gets the value, exactly (the
/// thread's handle was dropped before the take, so the take's handle is the last). Held.
#[test]
fn a_waiting_take_whose_chain_reaches_no_launched_fiber_gets_the_value() {
    in_child!(
        "a_waiting_take_whose_chain_reaches_no_launched_fiber_gets_the_value",
        4
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(5));
    let own = l.clone();
    let (dropped, (tx, rx)) = (Arc::new(AtomicBool::new(false)), channel());
    let d2 = dropped.clone();
    l.launch_then(
        move |latch| {
            // The thread's handle is dropped before the take begins: the take counts it gone.
            while !d2.load(Ordering::SeqCst) {
                trust_core::yield_now();
            }
            let taking = spawn_waiting_here(move || {
                own.try_unwrap()
                    .map(Latch::into_inner)
                    .map_err(|_| "a handle is still counted")
            });
            let joining = spawn_here(move || taking.join().map_err(panic_message));
            for _ in 0..4 {
                trust_core::yield_now();
            }
            let taken_early = joining.is_finished();
            *latch.lock() += 1;
            tx.send((taken_early, joining)).unwrap();
        },
        |()| {},
    );
    drop(l);
    dropped.store(true, Ordering::SeqCst);
    trust_core::wait_pending();
    let (taken_early, joining) = rx.recv_timeout(Duration::from_secs(2)).unwrap();
    assert!(!taken_early, "the take waits for the launched fiber");
    assert_eq!(
        common::within(2, move || joining.join().unwrap()),
        Ok(Ok(6))
    );
    child_ok();
}
