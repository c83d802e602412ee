//! `Trust::try_unwrap` and `Trust::into_inner`: the value comes back to the caller when its handle is the last
//! one, decided on the trustee once every request and count change sent before has been served; the value
//! is dropped exactly once on every path.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

mod common;
use common::*;
use trust_core::{Trust, local_trustee, spawn, wait_pending};

/// Waits up to 10 s for `done`.
fn eventually(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_single_handle_gives_its_value_back() {
    let t = rt().trustee(0).entrust(vec![1, 2, 3]);
    t.apply(|v| v.push(4));
    assert_eq!(t.try_unwrap().expect("the only handle"), vec![1, 2, 3, 4]);
    let t = rt().trustee(1).entrust(String::from("last"));
    assert_eq!(t.into_inner().as_deref(), Some("last"));
}

#[test]
fn a_clone_alive_makes_try_unwrap_fail_and_the_handle_still_works() {
    let a = rt().trustee(0).entrust(5u64);
    let b = a.clone();
    let a = a.try_unwrap().expect_err("b is alive");
    assert_eq!(
        a.apply(|v| {
            *v += 1;
            *v
        }),
        6
    );
    assert_eq!(b.apply(|v| *v), 6);
    // Both handles still counted: failing again changes nothing.
    let a = a.try_unwrap().expect_err("b is still alive");
    drop(b);
    assert_eq!(a.try_unwrap().expect("b was dropped before the call"), 6);
}

#[test]
fn a_clone_dropped_on_another_thread_before_the_call_does_not_make_it_fail() {
    for round in 0..200 {
        let a = rt().trustee(round % 2).entrust(round);
        let clones: Vec<Trust<usize>> = (0..4).map(|_| a.clone()).collect();
        let droppers: Vec<_> = clones
            .into_iter()
            .map(|c| std::thread::spawn(move || drop(c)))
            .collect();
        for d in droppers {
            d.join().unwrap();
        }
        assert_eq!(a.try_unwrap().expect("every clone was dropped"), round);
    }
}

#[test]
fn requests_issued_before_are_applied_first() {
    let t = rt().trustee(1).entrust(0u64);
    for _ in 0..10 {
        t.apply_then(|v| *v += 1, |()| ());
    }
    assert_eq!(t.try_unwrap().expect("the only handle"), 10);
    wait_pending();
}

/// Entrusts a fresh value (on trustee `round % 2`) and gives up its two handles at once, from this thread and
/// another, with `give_up`; returns what each side's call reported (this thread's first).
fn race(
    round: usize,
    drops: &Arc<AtomicUsize>,
    barrier: &Arc<Barrier>,
    give_up: fn(Trust<CountsDrops>) -> bool,
) -> (bool, bool) {
    let a = rt().trustee(round % 2).entrust(CountsDrops(drops.clone()));
    let b = a.clone();
    let other = {
        let barrier = barrier.clone();
        std::thread::spawn(move || {
            barrier.wait();
            give_up(b)
        })
    };
    barrier.wait();
    let mine = give_up(a);
    (mine, other.join().unwrap())
}

#[test]
fn into_inner_from_two_threads_at_once_returns_some_exactly_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let rounds = 1000;
    let barrier = Arc::new(Barrier::new(2));
    let mut somes = 0;
    for round in 0..rounds {
        let (mine, theirs) = race(round, &drops, &barrier, |t| t.into_inner().is_some());
        assert!(mine ^ theirs, "round {round}: mine {mine}, theirs {theirs}");
        somes += usize::from(mine) + usize::from(theirs);
        // The `Some` value was dropped by its receiver, already: never by the trustee as well.
        assert_eq!(drops.load(Ordering::SeqCst), round + 1);
    }
    assert_eq!(somes, rounds);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(drops.load(Ordering::SeqCst), rounds);
}

#[test]
fn try_unwrap_from_two_threads_at_once_never_takes_the_value_twice() {
    let drops = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(2));
    let rounds = 300;
    for round in 0..rounds {
        let (mine, theirs) = race(round, &drops, &barrier, |t| {
            t.try_unwrap().map(drop).is_ok()
        });
        // Each failure drops its handle afterwards; at most one took the value.
        assert!(!(mine && theirs), "round {round}: both took the value");
        eventually(|| drops.load(Ordering::SeqCst) == round + 1);
        assert_eq!(drops.load(Ordering::SeqCst), round + 1, "round {round}");
    }
}

#[test]
fn the_value_is_dropped_exactly_once_on_every_path() {
    let drops = Arc::new(AtomicUsize::new(0));

    // Ok: the caller owns the value; the trustee never drops it.
    let v = rt()
        .trustee(0)
        .entrust(CountsDrops(drops.clone()))
        .try_unwrap()
        .ok()
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(v);
    assert_eq!(drops.load(Ordering::SeqCst), 1);

    // Err, then the handles dropped: the trustee drops it once.
    let a = rt().trustee(1).entrust(CountsDrops(drops.clone()));
    let b = a.clone();
    let a = a.try_unwrap().expect_err("b is alive");
    drop(a);
    drop(b);
    eventually(|| drops.load(Ordering::SeqCst) == 2);
    assert_eq!(drops.load(Ordering::SeqCst), 2);

    // into_inner's None: the other handle keeps the value, its drop drops it.
    let a = rt().trustee(0).entrust(CountsDrops(drops.clone()));
    let b = a.clone();
    assert!(a.into_inner().is_none());
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(drops.load(Ordering::SeqCst), 2, "b still holds the value");
    assert!(b.into_inner().is_some_and(|v| {
        drop(v);
        true
    }));
    assert_eq!(drops.load(Ordering::SeqCst), 3);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(drops.load(Ordering::SeqCst), 3);
}

#[test]
fn works_from_fibers_on_the_values_own_trustee_and_on_the_other() {
    rt(); // first: a `spawn` before it would start the default runtime, and `rt()` would then fail
    let results: Vec<_> = (0..8u64)
        .map(|i| {
            spawn(move || {
                let here = local_trustee();
                let there = rt().trustee(1 - here.index());
                let local = here.entrust(i);
                let remote = there.entrust(i * 10);
                let local2 = local.clone();
                let local = local.try_unwrap().expect_err("local2 is alive");
                drop(local2);
                let remote2 = remote.clone();
                let remote = remote.try_unwrap().expect_err("remote2 is alive");
                assert_eq!(remote2.into_inner(), None);
                (local.try_unwrap().ok(), remote.into_inner())
            })
        })
        .collect();
    for (i, f) in results.into_iter().enumerate() {
        let i = i as u64;
        assert_eq!(f.join().unwrap(), (Some(i), Some(i * 10)));
    }
}

#[test]
fn inside_a_delegated_closure_it_panics_with_the_way_out() {
    let keeper = rt().trustee(1).entrust(0u8);
    for trustee in 0..2 {
        let t = rt().trustee(trustee).entrust(7u32);
        let inner = t.clone();
        let r = catch_unwind(AssertUnwindSafe(|| {
            keeper.apply(move |_| inner.try_unwrap().is_ok())
        }));
        let message = panic_message(r.expect_err("the trustee cannot wait"));
        assert!(
            message.contains("`Trust::try_unwrap`/`into_inner` inside a delegated closure"),
            "{message}"
        );
        assert!(message.contains("`spawn`"), "{message}");
        // The trustee keeps serving and the handle moved into the closure was dropped with it.
        assert_eq!(keeper.apply(|k| *k), 0);
        assert_eq!(t.try_unwrap().ok(), Some(7));
    }
}

#[test]
fn works_from_may_coroutines() {
    rt();
    may::config().set_workers(2);
    let handles: Vec<_> = (0..16u64)
        .map(|i| {
            // SAFETY: the coroutine uses no thread-local storage of its own.
            unsafe {
                may::coroutine::spawn(move || {
                    let t = rt().trustee((i % 2) as usize).entrust(i);
                    let t2 = t.clone();
                    let t = t.try_unwrap().expect_err("t2 is alive");
                    assert_eq!(t2.into_inner(), None);
                    t.try_unwrap().ok()
                })
            }
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), Some(i as u64));
    }
}

#[test]
fn requests_not_yet_sent_by_threads_that_dropped_their_clones_run_before_the_value_leaves() {
    // Each thread issues 3 `apply_then`s (fewer than a plain thread publishes at once: they stay unsent),
    // then drops its clone: the decrement goes by mail and overtakes them. `try_unwrap` must wait for the
    // increments, which the threads send only later, in `wait_pending`.
    for round in 0..50 {
        let a = rt().trustee(round % 2).entrust(0u64);
        let dropped = Arc::new(Barrier::new(9));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, dropped) = (a.clone(), dropped.clone());
                std::thread::spawn(move || {
                    for _ in 0..3 {
                        c.apply_then(|v| *v += 1, |()| ());
                    }
                    drop(c);
                    dropped.wait();
                    std::thread::sleep(Duration::from_millis(5));
                    wait_pending();
                })
            })
            .collect();
        dropped.wait();
        assert_eq!(
            a.try_unwrap().expect("every clone was dropped"),
            24,
            "round {round}"
        );
        for t in threads {
            t.join().unwrap();
        }
    }
}
