//! `counters-1024`: 1,024 counters, each thread increments one chosen uniformly at random. Contention is
//! low (two threads rarely want the same counter), so a lock costs little more than its uncontended
//! lock/unlock plus a cache miss, while every delegated increment still crosses to a trustee: the
//! "many objects" case where delegation has the least to win.

use std::sync::Mutex;

use trust_core::{Runtime, Trust};

use crate::counter::{FIBERS_PER_WORKER, count_then, pipelined};
use crate::fiber_ring;
use crate::harness::{Bench, Padded, check};
use crate::rng::Rng;

const SCENARIO: &str = "counters-1024";
const COUNTERS: usize = 1024;

#[inline]
pub fn pick(rng: &mut Rng) -> usize {
    (rng.next_u64() >> 54) as usize // 10 bits: 0..1024
}

pub fn seed(thread: usize) -> u64 {
    thread as u64 + 1
}

/// `parking_lot` per-counter locks, each on its own cache lines.
pub fn parking_counters() -> Vec<Padded<parking_lot::Mutex<u64>>> {
    (0..COUNTERS)
        .map(|_| Padded(parking_lot::Mutex::new(0)))
        .collect()
}

/// The entrusted counters: counter i lives on trustee i mod workers.
pub fn trust_counters(rt: &Runtime) -> &'static [Trust<u64>] {
    Box::leak(
        (0..COUNTERS)
            .map(|i| rt.trustee(i % rt.workers()).entrust(0u64))
            .collect::<Box<[_]>>(),
    )
}

pub fn run(b: &mut Bench, rt: &Runtime) {
    // Each lock on its own cache lines: this measures the locks, not false sharing between neighbours.
    let std_mutex: Vec<Padded<Mutex<u64>>> = (0..COUNTERS).map(|_| Padded(Mutex::new(0))).collect();
    let parking = parking_counters();
    let trust = trust_counters(rt);
    let std_sum = || std_mutex.iter().map(|m| *m.lock().unwrap()).sum::<u64>();
    let parking_sum = || parking.iter().map(|m| *m.lock()).sum::<u64>();
    let trust_sum = || trust.iter().map(|t| t.apply(|c| *c)).sum::<u64>();

    for &n in &b.cfg.threads.clone() {
        let before = std_sum();
        let ops = b.threads(SCENARIO, "std_mutex", n, |t, stop| {
            let (mut rng, mut i) = (Rng::new(seed(t)), 0);
            while stop.running() {
                *std_mutex[pick(&mut rng)].lock().unwrap() += 1;
                i += 1;
            }
            i
        });
        check(SCENARIO, "std_mutex", n, ops, std_sum() - before);

        let before = parking_sum();
        let ops = b.threads(SCENARIO, "parking_lot", n, |t, stop| {
            let (mut rng, mut i) = (Rng::new(seed(t)), 0);
            while stop.running() {
                *parking[pick(&mut rng)].lock() += 1;
                i += 1;
            }
            i
        });
        check(SCENARIO, "parking_lot", n, ops, parking_sum() - before);

        let before = trust_sum();
        let ops = b.threads(SCENARIO, "trust_apply", n, |t, stop| {
            let (mut rng, mut i) = (Rng::new(seed(t)), 0);
            while stop.running() {
                trust[pick(&mut rng)].apply(|c| *c += 1);
                i += 1;
            }
            i
        });
        check(SCENARIO, "trust_apply", n, ops, trust_sum() - before);

        let before = trust_sum();
        let ops = b.threads(SCENARIO, "trust_apply_then", n, |t, stop| {
            let mut rng = Rng::new(seed(t));
            pipelined(stop, || {
                trust[pick(&mut rng)].apply_then(|c| *c += 1, count_then)
            })
        });
        check(SCENARIO, "trust_apply_then", n, ops, trust_sum() - before);

        let before = trust_sum();
        let ops = b.fibers(SCENARIO, "trust_fibers", n, FIBERS_PER_WORKER, |f, stop| {
            let (mut rng, mut i) = (Rng::new(seed(f)), 0);
            while stop.running() {
                trust[pick(&mut rng)].apply(|c| *c += 1);
                i += 1;
            }
            i
        });
        check(SCENARIO, "trust_fibers", n, ops, trust_sum() - before);

        fiber_ring::row(b, SCENARIO, n, fiber_ring::Layout::Spread);
    }
    b.table(
        SCENARIO,
        "Locks: one per counter, each on its own cache lines. `trust_*`: 1,024 `Trust<u64>`, counter i on \
         trustee i mod workers; from fibers, half the requests hit the fiber's own trustee (local shortcut). `ring_fibers`: the floor \
         of fiber delegation, no runtime: 2 threads x 256 coroutines, the other thread's counters reached \
         through bare rings (always 2 threads, as `trust_fibers` always runs on the 2 workers).",
    );
}
