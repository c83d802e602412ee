//! `Trust<Latch<T>>::launch_then`: `launch` without waiting. The fiber runs on the trustee (it may block), the
//! continuation runs later on the issuing thread or fiber once the fiber has finished, and `wait_pending`
//! waits for it. Nothing waits for the fiber: later requests go ahead, and many launched fibers run at once.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::*;
use trust_core::{Latch, Trust, local_trustee, spawn, wait_pending, yield_now};

/// Five withdrawals of 10 from 100, each launched without waiting; returns what the continuations saw and
/// the final balance. The fibers run at once; the latch (first come, first served) orders them, and each
/// finishes before the next gets the latch, so the continuations run in launch order.
fn five_withdrawals(account: &Trust<Latch<i64>>, other: &Trust<i64>) -> (Vec<(i64, i64)>, i64) {
    let seen = Rc::new(RefCell::new(Vec::new()));
    for _ in 0..5 {
        let other = other.clone();
        let seen = seen.clone();
        account.launch_then(
            move |latch| {
                let mut balance = latch.lock();
                *balance -= 10;
                yield_now(); // suspends while holding the latch: other launched fibers must wait
                let moved = other.apply(|o| {
                    *o += 10;
                    *o
                }); // blocking delegation: fine in a launched fiber
                (*balance, moved)
            },
            move |r| seen.borrow_mut().push(r),
        );
    }
    wait_pending();
    let balance = account.apply(|l| *l.get_mut());
    let seen = seen.borrow().clone();
    (seen, balance)
}

const EXPECTED: [(i64, i64); 5] = [(90, 10), (80, 20), (70, 30), (60, 40), (50, 50)];

#[test]
fn from_a_plain_thread_the_continuations_run_here_with_exact_results() {
    let account = rt().trustee(0).entrust(Latch::new(100i64));
    let other = rt().trustee(1).entrust(0i64);
    let (seen, balance) = five_withdrawals(&account, &other);
    assert_eq!(seen, EXPECTED);
    assert_eq!(balance, 50);
    assert_eq!(other.apply(|o| *o), 50);
}

#[test]
fn the_continuation_runs_on_the_issuing_thread_never_on_the_trustee() {
    let account = rt().trustee(1).entrust(Latch::new(0u32));
    let me = std::thread::current().id();
    let ran = Rc::new(RefCell::new(None));
    let r = ran.clone();
    account.launch_then(
        |l| {
            *l.lock() += 1;
            local_trustee().index()
        },
        move |trustee| *r.borrow_mut() = Some((trustee, std::thread::current().id())),
    );
    wait_pending();
    assert_eq!(*ran.borrow(), Some((1, me)));
}

#[test]
fn from_fibers_on_the_latchs_own_trustee_and_on_the_other() {
    rt(); // first: a `spawn` before it would start the default runtime, and `rt()` would then fail
    let fibers: Vec<_> = (0..4)
        .map(|_| {
            spawn(|| {
                let here = local_trustee();
                let there = rt().trustee(1 - here.index());
                let mut results = Vec::new();
                // The latch on this fiber's own trustee (the fiber starts at once, nothing is sent), then on
                // the other one (a request).
                for account_on in [here, there] {
                    let account = account_on.entrust(Latch::new(100i64));
                    let other = there.entrust(0i64);
                    results.push(five_withdrawals(&account, &other));
                }
                results
            })
        })
        .collect();
    for f in fibers {
        let results = f.join().unwrap();
        assert_eq!(results, [(EXPECTED.to_vec(), 50), (EXPECTED.to_vec(), 50)]);
    }
}

#[test]
fn a_panic_in_the_fiber_resumes_at_wait_pending_and_releases_the_latch() {
    for trustee in 0..2 {
        let latched = rt().trustee(trustee).entrust(Latch::new(0u64));
        let ran = Rc::new(RefCell::new(0));
        let r = ran.clone();
        latched.launch_then(
            |l| {
                let _held = l.lock();
                panic!("launched boom")
            },
            move |()| *r.borrow_mut() += 1,
        );
        let r = ran.clone();
        latched.launch_then(|l| *l.lock() + 7, move |v| *r.borrow_mut() += v);
        let err = catch_unwind(AssertUnwindSafe(wait_pending)).unwrap_err();
        assert_eq!(panic_message(err), "launched boom");
        assert_eq!(*ran.borrow(), 7, "only the second continuation ran");
        assert_eq!(latched.launch(|l| *l.lock()), 0, "the latch was released");
    }
}

#[test]
fn inside_a_delegated_closure_it_queues_and_the_continuation_runs_on_that_worker() {
    let account = rt().trustee(0).entrust(Latch::new(1u64));
    let keeper = rt().trustee(1).entrust(0u64);
    let ran_on = Arc::new(AtomicUsize::new(usize::MAX));
    let (a, r) = (account.clone(), ran_on.clone());
    keeper.apply(move |_| {
        // Returns at once: the closure does not wait for the launched fiber.
        a.launch_then(
            |l| {
                *l.lock() += 1;
                *l.lock()
            },
            move |v| r.store(v as usize * 10 + local_trustee().index(), Ordering::SeqCst),
        );
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while ran_on.load(Ordering::SeqCst) == usize::MAX && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The fiber saw 2; the continuation ran on worker 1, whose closure issued it.
    assert_eq!(ran_on.load(Ordering::SeqCst), 21);
    assert_eq!(account.apply(|l| *l.get_mut()), 2);
}

/// Launches a fiber that waits for a flag, then sets the flag with a plain request from the same issuer: the
/// request must not queue behind the launched fiber.
fn signal_after_launch(trustee: usize) -> Vec<&'static str> {
    let latched = rt().trustee(trustee).entrust(Latch::new(Vec::new()));
    let flag = rt().trustee(trustee).entrust(false);
    let log = Rc::new(RefCell::new(Vec::new()));
    let (f, l) = (flag.clone(), log.clone());
    latched.launch_then(
        move |latch| {
            while !f.apply(|set| *set) {
                yield_now();
            }
            latch.lock().push("fiber saw the flag");
            "done"
        },
        move |r| l.borrow_mut().push(r),
    );
    flag.apply(|set| *set = true); // would wait forever behind the fiber if it paused this client's batch
    log.borrow_mut().push("flag set");
    wait_pending();
    // The continuation may run inside `flag.apply` (a plain thread runs continuations in later calls), so
    // "done" and "flag set" come in either order.
    let mut log = log.borrow().clone();
    log.sort_unstable();
    log.extend(latched.apply(|l| l.get_mut().clone()));
    log
}

#[test]
fn a_later_request_of_the_same_issuer_does_not_wait_for_the_launched_fiber() {
    for trustee in 0..2 {
        assert_eq!(
            signal_after_launch(trustee),
            ["done", "flag set", "fiber saw the flag"]
        );
    }
    let from_fibers: Vec<_> = (0..2)
        .map(|t| spawn(move || signal_after_launch(t)))
        .collect();
    for f in from_fibers {
        assert_eq!(
            f.join().unwrap(),
            ["done", "flag set", "fiber saw the flag"]
        );
    }
}

#[test]
fn many_launched_fibers_of_one_issuer_run_at_once() {
    // Each fiber arrives at a barrier on the trustee and waits there until all ten have arrived: only
    // possible if the ten run at the same time.
    let n = 10u32;
    let arrived = rt().trustee(1).entrust(0u32);
    let latched = rt().trustee(1).entrust(Latch::new(()));
    let sum = Rc::new(RefCell::new(0));
    for i in 0..n {
        let (arrived, sum) = (arrived.clone(), sum.clone());
        latched.launch_then(
            move |_| {
                arrived.apply(|a| *a += 1);
                while arrived.apply(|a| *a) < n {
                    yield_now();
                }
                i
            },
            move |i| *sum.borrow_mut() += i,
        );
    }
    wait_pending();
    assert_eq!(*sum.borrow(), (0..n).sum::<u32>());
    assert_eq!(arrived.apply(|a| *a), n);
}

#[test]
fn a_thread_may_exit_before_its_launched_fiber_ends() {
    // The continuation can no longer run (it is dropped with the thread's client); the fiber still runs to
    // the end on the trustee, and its result is dropped there, once.
    let drops = Arc::new(AtomicUsize::new(0));
    let latched = rt().trustee(0).entrust(Latch::new(0u32));
    let ran = Arc::new(AtomicUsize::new(0));
    let (l, d, r) = (latched.clone(), drops.clone(), ran.clone());
    std::thread::spawn(move || {
        l.launch_then(
            move |latch| {
                for _ in 0..100 {
                    yield_now();
                }
                *latch.lock() += 1;
                CountsDrops(d)
            },
            move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            },
        );
    })
    .join()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while drops.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(
        latched.apply(|l| *l.get_mut()),
        1,
        "the fiber ran to the end"
    );
}

#[test]
fn a_thread_that_only_issues_apply_thens_still_runs_a_launched_fibers_continuation() {
    // The thread never calls `wait_pending` or a blocking `apply`: after the launch (one record for trustee 0,
    // far from a batch's worth) it only pipelines `apply_then`s to trustee 1. The launch must still go out
    // (a thread publishing to one trustee sends what waits for the others), and its continuation must run
    // among the `apply_then`s, on this thread (ready continuations are looked for at each publish).
    let account = rt().trustee(0).entrust(Latch::new(5u64));
    let counter = rt().trustee(1).entrust(0u64);
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    account.launch_then(
        |latch| *latch.lock() * 2,
        move |v| *g.borrow_mut() = Some(v),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut issued = 0u64;
    while got.borrow().is_none() {
        assert!(
            Instant::now() < deadline,
            "the continuation did not run within 10 s of apply_thens ({issued} issued)"
        );
        counter.apply_then(|c| *c += 1, |()| {});
        issued += 1;
    }
    assert_eq!(*got.borrow(), Some(10));
    wait_pending();
    assert_eq!(counter.apply(|c| *c), issued);
}
