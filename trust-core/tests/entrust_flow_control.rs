//! `entrust`'s flow control: a value entrusted to another trustee is registered there by a request that
//! never waits while fewer than 256 registrations are queued for that trustee; past that, a caller that can
//! wait (a plain thread, a fiber, a `may` coroutine) waits for its own to run, so a loop entrusting values
//! goes at the trustee's pace. Each test holds trustee 1 in a closure (`stall`) and counts how far a producer
//! gets before the closure ends: an order of events, not a timing. Each runs in a child process of its own
//! (the queued registrations are counted per trustee, process-wide).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

#[macro_use]
mod common;
use common::*;
use trust_core::{Trust, wait_pending};

/// Registrations a trustee may have queued before an `entrust` that can wait does (`REGISTERING_MAX`).
const QUEUED: usize = 256;

/// Holds trustee 1 in a closure for `ms` milliseconds (from a thread of its own); the flag turns true as the
/// closure ends.
fn hold_trustee_1(ms: u64) -> Arc<AtomicBool> {
    let over = Arc::new(AtomicBool::new(false));
    let t = rt().trustee(1).entrust(());
    t.apply(|_| ());
    let (tx, rx) = std::sync::mpsc::channel();
    let o = over.clone();
    std::thread::spawn(move || {
        t.apply(move |_| {
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(ms));
            o.store(true, Ordering::SeqCst);
        })
    });
    rx.recv().unwrap();
    over
}

/// Entrusts `QUEUED + 1` values to trustee 1 while it is held: the first `QUEUED` return while it is still
/// held, the next only once it is free. Returns the handles, which all read back their values.
fn producer_waits_past_the_queue() -> Vec<Trust<usize>> {
    let over = hold_trustee_1(1500);
    let mut handles: Vec<Trust<usize>> = (0..QUEUED).map(|i| rt().trustee(1).entrust(i)).collect();
    assert!(
        !over.load(Ordering::SeqCst),
        "{QUEUED} entrusts to a busy trustee waited for it"
    );
    handles.push(rt().trustee(1).entrust(QUEUED));
    assert!(
        over.load(Ordering::SeqCst),
        "entrust number {} returned while its trustee was busy with {QUEUED} registrations queued",
        QUEUED + 1
    );
    handles
}

fn read_back(handles: &[Trust<usize>]) {
    for (i, h) in handles.iter().enumerate() {
        assert_eq!(h.apply(|v| *v), i);
    }
}

#[test]
fn a_thread_waits_for_its_entrust_past_256_queued_registrations() {
    in_child!(
        "a_thread_waits_for_its_entrust_past_256_queued_registrations",
        20
    );
    let handles = producer_waits_past_the_queue();
    read_back(&handles);
    child_ok();
}

#[test]
fn a_fiber_waits_for_its_entrust_past_256_queued_registrations() {
    in_child!(
        "a_fiber_waits_for_its_entrust_past_256_queued_registrations",
        20
    );
    calibrate();
    let handles = spawn_on(0, producer_waits_past_the_queue).join().unwrap();
    read_back(&handles);
    child_ok();
}

/// A delegated closure cannot wait: its entrusts to a busy trustee all queue, however many.
#[test]
fn a_delegated_closure_never_waits_for_its_entrusts() {
    in_child!("a_delegated_closure_never_waits_for_its_entrusts", 20);
    let over = hold_trustee_1(1500);
    let on0 = rt().trustee(0).entrust(());
    let handles = on0.apply(move |_| {
        let handles: Vec<Trust<usize>> = (0..4 * QUEUED)
            .map(|i| rt().trustee(1).entrust(i))
            .collect();
        assert!(
            !over.load(Ordering::SeqCst),
            "a delegated closure's entrust waited"
        );
        handles
    });
    read_back(&handles);
    child_ok();
}

/// An `entrust` that waits does not run the thread's arrived `apply_then` continuations (a blocking `apply`
/// would): they run at its next blocking call or `wait_pending`, as before.
#[test]
fn an_entrust_that_waits_runs_no_continuation() {
    in_child!("an_entrust_that_waits_runs_no_continuation", 20);
    let ran = Arc::new(AtomicUsize::new(0));
    let on0 = rt().trustee(0).entrust(0u64);
    let r = ran.clone();
    on0.apply_then(
        |v| *v += 1,
        move |()| {
            r.fetch_add(1, Ordering::SeqCst);
        },
    );
    let handles = producer_waits_past_the_queue();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "a continuation ran inside entrust"
    );
    wait_pending();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    read_back(&handles);
    child_ok();
}

/// 1,000,000 values entrusted to another trustee and dropped at once, one at a time, from a plain thread and
/// from a fiber: every value dropped exactly once, and peak memory does not follow the count (the same loop
/// grew it by 476 MiB from a thread and 758 MiB from a fiber before `entrust` waited).
#[test]
fn a_steady_producer_of_entrusted_values_stays_in_bounded_memory() {
    in_child!(
        "a_steady_producer_of_entrusted_values_stays_in_bounded_memory",
        120
    );
    const N: usize = 1_000_000;
    struct Counted {
        _bytes: [u64; 32],
        dropped: Arc<AtomicUsize>,
    }
    impl Drop for Counted {
        fn drop(&mut self) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    rt().trustee(1).entrust(()).apply(|_| ());
    let produce = {
        let d = dropped.clone();
        move || {
            for i in 0..N {
                drop(trust_core::runtime().trustee(1).entrust(Counted {
                    _bytes: [i as u64; 32],
                    dropped: d.clone(),
                }));
            }
        }
    };
    calibrate();
    let base = peak_rss_kib();
    produce.clone()();
    spawn_on(0, produce).join().unwrap();
    let grown = peak_rss_kib().saturating_sub(base);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dropped.load(Ordering::SeqCst) < 2 * N && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("peak RSS +{grown} KiB");
    assert_eq!(dropped.load(Ordering::SeqCst), 2 * N, "values dropped");
    assert!(
        grown < 32 * 1024,
        "2 x {N} values of 264 bytes entrusted and dropped one at a time grew peak RSS by {grown} KiB"
    );
    child_ok();
}

/// The process's peak resident memory so far (`VmHWM`), in KiB.
fn peak_rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
