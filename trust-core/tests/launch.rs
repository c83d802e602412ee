//! `Latch` and `launch`: fibers on the trustee that may block, mutual exclusion among them, and plain
//! `apply` waiting for them.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::*;
use trust_core::{Latch, spawn, yield_now};

#[test]
fn launch_runs_on_the_trustee_and_returns_the_result() {
    let latched = rt().trustee(1).entrust(Latch::new(41u64));
    let (worker, value) = latched.launch(|l| {
        let mut v = l.lock();
        *v += 1;
        (trust_core::local_trustee().index(), *v)
    });
    assert_eq!((worker, value), (1, 42));
}

#[test]
fn the_latch_excludes_fibers_that_suspend_while_holding_it() {
    let latched = rt().trustee(0).entrust(Latch::new(0u64));
    let fibers: Vec<_> = (0..100)
        .map(|_| {
            let latched = latched.clone();
            spawn(move || {
                latched.launch(|l| {
                    let mut v = l.lock();
                    let seen = *v;
                    for _ in 0..3 {
                        yield_now(); // other launched fibers run now, and must wait for the latch
                    }
                    *v = seen + 1;
                })
            })
        })
        .collect();
    for f in fibers {
        f.join().unwrap();
    }
    assert_eq!(latched.apply(|l| *l.get_mut()), 100, "no update was lost");
}

#[test]
fn blocking_apply_inside_launch_is_fine_and_plain_apply_waits_for_launched_fibers() {
    let latched = rt().trustee(0).entrust(Latch::new(Vec::<&str>::new()));
    let other = rt().trustee(1).entrust(5u64);
    let l2 = latched.clone();
    let (started, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (started2, sent2) = (started.clone(), sent.clone());
    let launched = std::thread::spawn(move || {
        l2.launch(move |l| {
            let mut log = l.lock();
            log.push("launch start");
            started2.store(true, Ordering::Release);
            // Blocking delegation to another trustee from inside a launched fiber: allowed.
            let five = other.apply(|v| *v);
            // Still running when the plain apply below is sent, and for 5 ms more: it must wait for this.
            while !sent2.load(Ordering::Acquire) {
                yield_now();
            }
            let until = Instant::now() + Duration::from_millis(5);
            while Instant::now() < until {
                yield_now();
            }
            log.push("launch end");
            five
        })
    });
    // Once the launched fiber runs (not after a fixed sleep: under AddressSanitizer in CI, 20 ms were once too
    // few for the launch to start), a plain apply: it must wait until the launch has finished.
    while !started.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1));
    }
    sent.store(true, Ordering::Release);
    latched.apply(|l| l.get_mut().push("apply"));
    assert_eq!(launched.join().unwrap(), 5);
    let log = latched.apply(|l| l.get_mut().clone());
    assert_eq!(log, ["launch start", "launch end", "apply"]);
}

#[test]
fn a_panic_in_launch_resumes_in_the_caller_and_releases_the_latch() {
    let latched = rt().trustee(1).entrust(Latch::new(0u64));
    let err = catch_unwind(AssertUnwindSafe(|| {
        latched.launch(|l| {
            let _held = l.lock();
            panic!("launched boom")
        })
    }))
    .unwrap_err();
    assert_eq!(*err.downcast::<&str>().unwrap(), "launched boom");
    assert_eq!(latched.launch(|l| *l.lock()), 0);
    assert_eq!(latched.apply(|l| *l.get_mut()), 0);
}

#[test]
fn a_fiber_locking_the_latch_it_holds_panics_and_the_latch_is_released() {
    let latched = rt().trustee(0).entrust(Latch::new(5u64));
    let err = catch_unwind(AssertUnwindSafe(|| {
        latched.launch(|l| {
            let _held = l.lock();
            assert!(l.try_lock().is_none());
            let _again = l.lock();
        })
    }))
    .map_err(panic_message)
    .unwrap_err();
    assert!(
        err.starts_with("`Latch::lock` by the fiber that holds the latch already"),
        "{err}"
    );
    // The first guard was dropped by the unwinding: another fiber locks it at once.
    assert_eq!(latched.launch(|l| *l.lock() + 1), 6);
}

#[test]
fn locking_a_held_latch_outside_a_fiber_panics_with_the_way_out() {
    let latch = Latch::new(1);
    let _held = latch.lock();
    let err = catch_unwind(AssertUnwindSafe(|| drop(latch.lock()))).unwrap_err();
    assert!(err.downcast::<&str>().unwrap().contains("Trust::launch"));
}
