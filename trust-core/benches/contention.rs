//! Contention benchmarks: `Trust<T>` against the locks people would otherwise use, and against the physical
//! limit of delegation, in one run, with the same timing loop for everyone. Scenarios (../shared/DESIGN.md
//! section 6; issues 6 and 11), in this order:
//!
//! - `limit`: a bare SPSC ring between two threads, no runtime: pipelined throughput and the round trip;
//!   every later table compares its rows with it (`vs ring`);
//! - `counter`: one shared `u64`, every thread increments it, and the floor of fiber delegation on it at
//!   fairness 0.5 (`ring_fibers`);
//! - `counters-1024`: 1,024 counters, each increment on one chosen uniformly at random, and the floor of
//!   fiber delegation there (`ring_fibers`: coroutines and bare rings, no runtime);
//! - `kv`: a 1M-key `HashMap`, 90% reads, Zipf(0.99) keys;
//! - `latency`: one uncontended operation of each kind, single thread;
//! - `tokio`: 1,000 tasks on a 2-thread tokio runtime, one counter: `apply_async` against the tokio and std
//!   mutexes (ratios to `tokio::sync::Mutex`);
//! - `paired`: the ratios to the ring again, each side measured right after the other, round after round
//!   (the ring's rate on this VM swings severalfold between seconds): medians, spread, rounds on target.
//!
//! Run: `cargo bench -p trust-core --bench contention -- --quick` (under 30 s; drop `--quick` for longer
//! samples, the median of five, and 8 threads too). A further argument runs only the scenarios whose name
//! contains it (`-- --quick kv`). `TRUST_WORKERS` sets the runtime's workers (default 2); `TRUST_PIN=1` pins
//! each worker to a core.
//!
//! Every measurement prints `RESULT scenario=<name> impl=<name> threads=<n> mops=<float>` (latency rows:
//! `ns=<float>`), and each scenario ends with a markdown table of ratios to `std::sync::Mutex` measured in
//! the same run (`limit`: to the pipelined ring; `tokio`: to `tokio::sync::Mutex`), plus a `vs ring` column
//! when `limit` ran. Each run checks the shared state against the operations the threads reported and panics
//! on a mismatch, so a broken implementation cannot produce a number.

#[path = "contention/counter.rs"]
mod counter;
#[path = "contention/counters.rs"]
mod counters;
#[path = "contention/fiber_ring.rs"]
mod fiber_ring;
#[path = "contention/harness.rs"]
mod harness;
#[path = "contention/kv.rs"]
mod kv;
#[path = "contention/latency.rs"]
mod latency;
#[path = "contention/limit.rs"]
mod limit;
#[path = "contention/paired.rs"]
mod paired;
#[path = "contention/rng.rs"]
mod rng;
#[path = "contention/tokio_tasks.rs"]
mod tokio_tasks;

use std::time::Instant;

use trust_core::Runtime;

use harness::{Bench, Config};

/// A scenario: its name (for the filter) and its body.
type Scenario = (&'static str, fn(&mut Bench, &Runtime));

/// `limit` first: it measures the ring the later tables compare with.
const SCENARIOS: &[Scenario] = &[
    ("limit", limit::run),
    ("counter", counter::run),
    ("counters-1024", counters::run),
    ("kv", kv::run),
    ("latency", latency::run),
    ("tokio", tokio_tasks::run),
    ("paired", paired::run),
];

fn main() {
    let workers = match std::env::var("TRUST_WORKERS") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| {
            panic!(
                "TRUST_WORKERS must be a positive integer (the number of trust workers), got {s:?}"
            )
        }),
        Err(_) => 2,
    };
    // `TRUST_PIN=1` pins each worker to a core of its own (`RuntimeBuilder::pin_workers`).
    let pin = std::env::var("TRUST_PIN").is_ok_and(|v| v == "1");
    let rt = Runtime::builder()
        .workers(workers)
        .pin_workers(pin)
        .build()
        .unwrap_or_else(|e| panic!("cannot start the trust runtime: {e}"));
    let mut bench = Bench::new(Config::from_args(workers));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "contention: {} mode, {cores} cores, {workers} trust workers{}, threads {:?}, load average {}",
        if bench.cfg.quick { "quick" } else { "full" },
        if pin { " (pinned)" } else { "" },
        bench.cfg.threads,
        load_average()
    );
    let start = Instant::now();
    for &(name, run) in SCENARIOS {
        if bench.cfg.wants(name) {
            let t = Instant::now();
            run(&mut bench, rt);
            println!("\n({name}: {:.1} s)\n", t.elapsed().as_secs_f64());
        }
    }
    println!(
        "total: {:.1} s (load average at the end {})",
        start.elapsed().as_secs_f64(),
        load_average()
    );
}

/// The 1-minute load average. Other processes distort every row (delegation most: a round trip needs the
/// client and the trustee on a core at once), so the load is part of the result.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}
