//! No client class starves another (issue 11): fibers on a counter's own worker apply inline, in nanoseconds,
//! while fibers on the other worker need a round trip per request. Without the worker's credit rule
//! (`worker::fairness`) the remote fibers got about a seventh of what the local ones did; with it, the local
//! fibers apply at most two and a half times per remote request served while the remote client is saturated.
//!
//! Ignored by default: it measures a share of time, which holds only while both workers are on a core. With
//! one more busy thread than cores, the OS takes the remote worker off its core for whole time slices
//! (milliseconds), the trustee stops waiting for it after `fairness::SATURATED_FOR`'s bound, and the local
//! fibers run alone meanwhile (measured with the earlier credit of two: 1/9 to 1/20 instead of 1/2). The
//! contention bench reports the same fairness on every run. Run on a quiet machine: `cargo test -p trust-core
//! --test fairness -- --ignored`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod common;
use common::*;
use trust_core::spawn;

#[test]
#[ignore = "a share of time: needs both workers on a core (a quiet machine); run with --ignored"]
fn remote_fibers_get_a_fair_share_of_a_counter_whose_worker_runs_local_fibers() {
    let counter = rt().trustee(0).entrust(0u64);
    let stop = Arc::new(AtomicBool::new(false));
    // `spawn` alternates between the two workers: half the fibers are local to the counter, half remote.
    let fibers: Vec<_> = (0..256)
        .map(|_| {
            let (counter, stop) = (counter.clone(), stop.clone());
            spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    counter.apply(|c| *c += 1);
                    n += 1;
                }
                (trust_core::local_trustee().index(), n)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let mut done = [0u64; 2];
    for f in fibers {
        let (worker, n) = f.join().unwrap();
        done[worker] += n;
    }
    assert_eq!(
        counter.apply(|c| *c),
        done[0] + done[1],
        "every increment counted"
    );
    let (local, remote) = (done[0], done[1]);
    // The rule gives remote fibers 1 / 2.5 of what local ones get; a quarter leaves room for a noisy machine
    // (a worker descheduled for a while stops being saturated, and the local fibers run free meanwhile).
    assert!(
        remote * 4 >= local,
        "remote fibers starved: {remote} increments against {local} local ones"
    );
}
