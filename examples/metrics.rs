//! `Runtime::metrics`: a workload in three phases — blocking `apply`s from plain threads, pipelined
//! `apply_then`s, fibers applying to the other worker — with every trustee's counters printed after each, then once more after a
//! quiet spell (the workers park and their idle time grows). Each phase's request count is checked exactly.
//!
//! Run: `cargo run --release --example metrics`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use trust_core::{Runtime, Trust, TrusteeMetrics, local_trustee, spawn, wait_pending, yield_now};

/// Prints the counters' changes since `before`, checks that every trustee served `expected` requests in the
/// phase, and returns the counters now.
fn print(
    phase: &str,
    rt: &Runtime,
    before: &[TrusteeMetrics],
    expected: u64,
) -> Vec<TrusteeMetrics> {
    let now = rt.metrics();
    println!("{phase}:");
    println!(
        "  {:>7} {:>10} {:>9} {:>9} {:>6} {:>6} {:>9} {:>9}",
        "trustee", "requests", "batches", "req/batch", "fibers", "parks", "busy", "idle"
    );
    for (m, b) in now.iter().zip(before) {
        let (requests, batches) = (m.requests - b.requests, m.batches - b.batches);
        let per_batch = if batches == 0 {
            0.0
        } else {
            requests as f64 / batches as f64
        };
        println!(
            "  {:>7} {:>10} {:>9} {:>9.1} {:>6} {:>6} {:>7}ms {:>7}ms",
            m.trustee,
            requests,
            batches,
            per_batch,
            m.fibers,
            m.parks - b.parks,
            (m.busy - b.busy).as_millis(),
            (m.idle - b.idle).as_millis(),
        );
    }
    for (m, b) in now.iter().zip(before) {
        assert_eq!(
            m.requests - b.requests,
            expected,
            "{phase}: trustee {}'s requests",
            m.trustee
        );
    }
    now
}

fn main() {
    let rt = Runtime::builder()
        .workers(2)
        .build()
        .unwrap_or_else(|e| panic!("cannot start the runtime: {e}"));
    // An `Arc`, so the fibers below share the handles: cloning or dropping a `Trust` off its trustee's
    // worker is a request to that trustee, and a fiber's drop may reach it after the fiber's `join` returned.
    let counters: Arc<[Trust<u64>]> = (0..rt.workers())
        .map(|i| rt.trustee(i).entrust(0))
        .collect();
    // `entrust` does not wait for the trustee: one apply each, so the registrations are counted before `start`.
    for c in counters.iter() {
        c.apply(|v| *v);
    }
    let start = rt.metrics();

    // 1. Blocking round trips from two plain threads: one request per batch.
    std::thread::scope(|s| {
        for c in counters.iter() {
            s.spawn(move || {
                for _ in 0..50_000 {
                    c.apply(|v| *v += 1);
                }
            });
        }
    });
    let after_blocking = print(
        "50,000 blocking applies per trustee, from two threads",
        rt,
        &start,
        50_000,
    );

    // 2. Pipelined apply_then: many requests per batch.
    for c in counters.iter() {
        for _ in 0..200_000 {
            c.apply_then(|v| *v += 1, |()| ());
        }
    }
    wait_pending();
    let after_then = print(
        "200,000 apply_then per trustee, from one thread",
        rt,
        &after_blocking,
        200_000,
    );

    // 3. Fibers on both workers, each applying to the *other* worker's counter (a request each; on its own
    //    worker's counter an apply would run inline, which is not a request). They wait for `go` first, so
    //    the snapshot below sees them alive.
    let go = Arc::new(AtomicBool::new(false));
    let fibers: Vec<_> = (0..200)
        .map(|_| {
            let (counters, go) = (counters.clone(), go.clone());
            spawn(move || {
                while !go.load(Ordering::Acquire) {
                    yield_now();
                }
                let other = &counters[1 - local_trustee().index()];
                for _ in 0..500 {
                    other.apply(|v| *v += 1);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    let during = print(
        "200 fibers started, waiting (fibers alive now)",
        rt,
        &after_then,
        0,
    );
    go.store(true, Ordering::Release);
    for f in fibers {
        f.join().expect("the fiber finished");
    }
    // `spawn` deals the fibers round-robin: 100 on each worker, each applying 500 times to the other's counter.
    let after_fibers = print("200 fibers x 500 applies, done", rt, &during, 100 * 500);

    std::thread::sleep(Duration::from_millis(300));
    print("300 ms without work", rt, &after_fibers, 0);

    let total: u64 = counters.iter().map(|c| c.apply(|v| *v)).sum();
    assert_eq!(total, 2 * 50_000 + 2 * 200_000 + 200 * 500);
    println!("total {total}: every increment counted");
}
