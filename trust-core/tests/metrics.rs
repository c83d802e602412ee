//! `Runtime::metrics`: each worker's own counters — requests served, batches answered, fibers alive, parks,
//! time busy and idle. The tests of this binary take turns (`SERIAL`): the counts are per trustee, and a
//! test running at the same time would add its own requests.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::*;
use trust_core::{TrusteeMetrics, spawn, wait_pending, yield_now};

static SERIAL: Mutex<()> = Mutex::new(());

/// Takes this binary's turn, then lets the count changes of the previous test's dropped handles (sent
/// without waiting) reach their trustees: waits until no trustee's request count moves for 20 ms (a fixed
/// pause was a guess that a slow machine, or AddressSanitizer, could outlast).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    let turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let requests = || {
        rt().metrics()
            .iter()
            .map(|m| m.requests)
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = requests();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = requests();
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    turn
}

fn of(trustee: usize) -> TrusteeMetrics {
    rt().metrics()[trustee]
}

#[test]
fn n_blocking_applies_from_one_thread_are_n_requests_in_n_batches() {
    let _turn = serial();
    let counter = rt().trustee(0).entrust(0u64);
    counter.apply(|c| *c += 1); // the registration and the channel's first use are behind us now
    let before = of(0);
    let n = 1000;
    for _ in 0..n {
        counter.apply(|c| *c += 1);
    }
    let after = of(0);
    assert_eq!(after.trustee, 0);
    assert_eq!(after.requests - before.requests, n);
    // Each blocking apply is published alone and waited for.
    assert_eq!(after.batches - before.batches, n);
    assert_eq!(counter.apply(|c| *c), n + 1);
    let other = of(1);
    assert_eq!(other.trustee, 1);
}

#[test]
fn apply_then_batches_several_requests_per_batch() {
    let _turn = serial();
    let counter = rt().trustee(1).entrust(0u64);
    counter.apply(|c| *c += 1);
    let before = of(1);
    let n = 10_000;
    for _ in 0..n {
        counter.apply_then(|c| *c += 1, |()| ());
    }
    wait_pending();
    let after = of(1);
    let (requests, batches) = (
        after.requests - before.requests,
        after.batches - before.batches,
    );
    assert_eq!(requests, n);
    assert!(
        batches >= 1 && batches * 4 <= n,
        "{batches} batches for {n} requests: no batching"
    );
    assert!(after.requests_per_batch() > 0.0);
    assert_eq!(counter.apply(|c| *c), n + 1);
}

#[test]
fn fibers_alive_are_counted_while_they_live() {
    let _turn = serial();
    let baseline: u64 = rt().metrics().iter().map(|m| m.fibers).sum();
    let go = Arc::new(AtomicBool::new(false));
    let k = 10;
    let fibers: Vec<_> = (0..k)
        .map(|_| {
            let go = go.clone();
            spawn(move || {
                while !go.load(Ordering::Acquire) {
                    yield_now();
                }
            })
        })
        .collect();
    let alive = || rt().metrics().iter().map(|m| m.fibers).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive() != baseline + k && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(alive(), baseline + k);
    go.store(true, Ordering::Release);
    for f in fibers {
        f.join().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive() != baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(alive(), baseline);
}

/// A joined fiber no longer counts as alive: `join` returns once the result is settled, and the worker used to
/// take the fiber off its count only after the fiber's coroutine returned, a moment later. A thread that
/// watches `is_finished` sees that moment: before the fix, 1,000 spawn-watch-join rounds read a count one too
/// high right after `join` in most runs.
#[test]
fn a_fiber_is_not_counted_once_joined() {
    let _turn = serial();
    let alive = || rt().metrics().iter().map(|m| m.fibers).sum::<u64>();
    let baseline = alive();
    let mut too_high = 0;
    for i in 0..1_000u64 {
        let f = spawn(move || i * 2);
        while !f.is_finished() {
            std::hint::spin_loop();
        }
        assert_eq!(f.join().unwrap(), i * 2);
        too_high += u64::from(alive() != baseline);
    }
    assert_eq!(too_high, 0, "rounds that counted a joined fiber as alive");
}

#[test]
fn an_idle_worker_parks_and_its_idle_time_grows() {
    let _turn = serial();
    let before = of(0);
    std::thread::sleep(Duration::from_millis(500));
    let after = of(0);
    assert!(
        after.parks > before.parks,
        "an idle worker parks: {before:?} -> {after:?}"
    );
    assert!(
        after.idle - before.idle >= Duration::from_millis(100),
        "half a second without work is mostly asleep: {before:?} -> {after:?}"
    );
    assert!(after.busy >= before.busy && after.busy_fraction() <= 1.0);
    // No request reached it meanwhile.
    assert_eq!(
        (after.requests, after.batches),
        (before.requests, before.batches)
    );
}
