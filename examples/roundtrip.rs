//! Latency of one blocking `apply` from a plain thread to a trustee on another worker: the median of 2,000
//! samples, each the mean of 100 back-to-back round trips (one clock read per sample, not per call), next to
//! an uncontended `std::sync::Mutex` lock/unlock measured the same way.
//!
//! Run: `cargo run --release --example roundtrip`

use std::time::Instant;

use trust_core::Runtime;

fn median(mut samples: Vec<u64>) -> u64 {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() {
    let rt = Runtime::builder()
        .workers(2)
        .build()
        .unwrap_or_else(|e| panic!("cannot start the runtime: {e}"));
    let counter = rt.trustee(1).entrust(0u64);
    for _ in 0..10_000 {
        counter.apply(|c| *c += 1); // warm up: channel, caches
    }
    const N: usize = 200_000;
    const BATCH: usize = 100;
    let mut samples = Vec::with_capacity(N / BATCH);
    for _ in 0..N / BATCH {
        let start = Instant::now();
        for _ in 0..BATCH {
            counter.apply(|c| *c += 1);
        }
        samples.push(start.elapsed().as_nanos() as u64 / BATCH as u64);
    }
    let trust = median(samples);
    let mutex = std::sync::Mutex::new(0u64);
    let mut samples = Vec::with_capacity(N / BATCH);
    for _ in 0..N / BATCH {
        let start = Instant::now();
        for _ in 0..BATCH {
            *mutex.lock().unwrap() += 1;
        }
        samples.push(start.elapsed().as_nanos() as u64 / BATCH as u64);
    }
    assert_eq!(counter.apply(|c| *c), (10_000 + N) as u64);
    println!("blocking apply, plain thread -> trustee 1: median {trust} ns per round trip");
    println!(
        "uncontended std::sync::Mutex lock/unlock:  median {} ns",
        median(samples)
    );
}
