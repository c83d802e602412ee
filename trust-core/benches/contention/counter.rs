//! `counter`: one shared `u64`, every thread increments it in a loop. The most contended workload there is:
//! every operation needs the same cache line, so a lock's cost is the line moving between cores (and, once
//! threads outnumber cores, the holder being descheduled), while delegation keeps the line on the trustee.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use trust_core::{Runtime, Trust};

use crate::fiber_ring::{self, Layout};
use crate::harness::{Bench, Padded, Stop, check};

const SCENARIO: &str = "counter";

/// `apply_then` requests issued between two looks at the stop flag.
pub const CHUNK: u64 = 64;

/// Fibers per worker in the fiber rows.
pub const FIBERS_PER_WORKER: usize = 256;

thread_local! {
    /// Continuations of `apply_then` that ran on this thread: checked against the requests issued.
    static THENS: Cell<u64> = const { Cell::new(0) };
}

/// Calls `issue` (one `apply_then` whose continuation is [`count_then`]) in chunks until the stop, then
/// waits for every continuation; returns the requests issued after checking that each continuation ran
/// exactly once.
pub fn pipelined(stop: &Stop, mut issue: impl FnMut()) -> u64 {
    let before = THENS.get();
    let mut issued = 0;
    while stop.running() {
        for _ in 0..CHUNK {
            issue();
        }
        issued += CHUNK;
    }
    trust_core::wait_pending();
    assert_eq!(
        THENS.get() - before,
        issued,
        "every apply_then continuation runs exactly once after wait_pending"
    );
    issued
}

/// A continuation for `apply_then` that counts itself in `THENS`.
pub fn count_then<R>(_: R) {
    THENS.set(THENS.get() + 1);
}

pub fn run(b: &mut Bench, rt: &Runtime) {
    let std_mutex = Padded(Mutex::new(0u64));
    let parking = Padded(parking_lot::Mutex::new(0u64));
    let spin = Padded(spin::Mutex::new(0u64));
    let atomic = Padded(AtomicU64::new(0));
    let trust: &'static Trust<u64> = Box::leak(Box::new(rt.trustee(0).entrust(0u64)));
    let trust_value = || trust.apply(|c| *c);

    for &n in &b.cfg.threads.clone() {
        let before = *std_mutex.lock().unwrap();
        let ops = b.threads(SCENARIO, "std_mutex", n, |_, stop| {
            let mut i = 0;
            while stop.running() {
                *std_mutex.lock().unwrap() += 1;
                i += 1;
            }
            i
        });
        check(
            SCENARIO,
            "std_mutex",
            n,
            ops,
            *std_mutex.lock().unwrap() - before,
        );

        let before = *parking.lock();
        let ops = b.threads(SCENARIO, "parking_lot", n, |_, stop| {
            let mut i = 0;
            while stop.running() {
                *parking.lock() += 1;
                i += 1;
            }
            i
        });
        check(SCENARIO, "parking_lot", n, ops, *parking.lock() - before);

        let before = *spin.lock();
        let ops = b.threads(SCENARIO, "spin", n, |_, stop| {
            let mut i = 0;
            while stop.running() {
                *spin.lock() += 1;
                i += 1;
            }
            i
        });
        check(SCENARIO, "spin", n, ops, *spin.lock() - before);

        let before = atomic.load(Ordering::Relaxed);
        let ops = b.threads(SCENARIO, "atomic", n, |_, stop| {
            let mut i = 0;
            while stop.running() {
                atomic.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            i
        });
        check(
            SCENARIO,
            "atomic",
            n,
            ops,
            atomic.load(Ordering::Relaxed) - before,
        );

        let before = trust_value();
        let ops = b.threads(SCENARIO, "trust_apply", n, |_, stop| {
            let mut i = 0;
            while stop.running() {
                trust.apply(|c| *c += 1);
                i += 1;
            }
            i
        });
        check(SCENARIO, "trust_apply", n, ops, trust_value() - before);

        if n == 1 && b.ring.is_some() {
            // The rings again, right before the row the issue compares with them.
            crate::limit::rings_again(b, SCENARIO);
        }
        let before = trust_value();
        let ops = b.threads(SCENARIO, "trust_apply_then", n, |_, stop| {
            pipelined(stop, || trust.apply_then(|c| *c += 1, count_then))
        });
        check(SCENARIO, "trust_apply_then", n, ops, trust_value() - before);

        let before = trust_value();
        let ops = b.fibers(SCENARIO, "trust_fibers", n, FIBERS_PER_WORKER, |_, stop| {
            let mut i = 0;
            while stop.running() {
                trust.apply(|c| *c += 1);
                i += 1;
            }
            i
        });
        check(SCENARIO, "trust_fibers", n, ops, trust_value() - before);
        fiber_ring::row(b, SCENARIO, n, Layout::One);
    }
    b.table(
        SCENARIO,
        "`trust_*` rows: the counter lives on trustee 0. `trust_apply`: blocking `apply` from the OS threads; \
         `trust_apply_then`: each thread pipelines with `apply_then`, then `wait_pending`; `trust_fibers`: \
         256 fibers per worker on the runtime's workers, the same at every thread count (compared with the \
         locks at that count). `ring_fibers`: the floor of fiber delegation on one counter at fairness 0.5, \
         no runtime: 2 threads x 256 coroutines, thread 1's reaching the counter through bare rings, thread \
         0's applying inline, 3 for each remote request served (as `trust_fibers`, always 2 threads).",
    );
}
