//! The main example: many clients increment one shared counter, once behind `Arc<Mutex<u64>>` and once
//! entrusted as `Trust<u64>`; first from plain OS threads, then from fibers on the runtime's workers.
//!
//! Run: `cargo run --release --example fetch_and_add`

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use trust_core::{Runtime, Trust, spawn};

const THREADS: usize = 4;
const FIBERS_PER_WORKER: usize = 64;
/// Each mode runs for about this long.
const BUDGET: Duration = Duration::from_millis(700);

fn main() {
    let rt = Runtime::builder()
        .build()
        .expect("the first runtime of this process");
    let workers = rt.workers();
    println!(
        "trust fetch-and-add: {workers} workers, {} cores",
        thread::available_parallelism().map_or(1, |n| n.get())
    );

    let ops = calibrate(THREADS);
    println!("\n{THREADS} OS threads, {ops} increments each");
    let mutex = run_threads(THREADS, ops, mutex_counter());
    let trust = run_threads(THREADS, ops, trust_counter(rt));
    report(mutex, trust);

    let fibers = workers * FIBERS_PER_WORKER;
    let ops = ops * THREADS / fibers;
    println!("\n{workers} workers x {FIBERS_PER_WORKER} fibers, {ops} increments each");
    let mutex = run_fibers(fibers, ops, mutex_counter());
    let trust = run_fibers(fibers, ops, trust_counter(rt));
    report(mutex, trust);
}

/// One way to increment a shared counter, and to read it.
type Counter = (Arc<dyn Fn() + Send + Sync>, Box<dyn Fn() -> u64>);

fn mutex_counter() -> Counter {
    let m = Arc::new(Mutex::new(0u64));
    let m2 = m.clone();
    (
        Arc::new(move || *m.lock().unwrap() += 1),
        Box::new(move || *m2.lock().unwrap()),
    )
}

fn trust_counter(rt: &Runtime) -> Counter {
    let t: Trust<u64> = rt.trustee(0).entrust(0);
    let t2 = t.clone();
    (
        Arc::new(move || t.apply(|c| *c += 1)),
        Box::new(move || t2.apply(|c| *c)),
    )
}

/// Increments per thread that take roughly `BUDGET` with a mutex.
fn calibrate(threads: usize) -> usize {
    let (inc, _) = mutex_counter();
    let start = Instant::now();
    for _ in 0..100_000 {
        inc();
    }
    let per_op = start.elapsed().as_secs_f64() / 100_000.0;
    ((BUDGET.as_secs_f64() / per_op / threads as f64 / 4.0) as usize).clamp(10_000, 2_000_000)
}

fn run_threads(threads: usize, ops: usize, (inc, read): Counter) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let inc = inc.clone();
            thread::spawn(move || (0..ops).for_each(|_| inc()))
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    finish(start, threads * ops, read)
}

fn run_fibers(fibers: usize, ops: usize, (inc, read): Counter) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = (0..fibers)
        .map(|_| {
            let inc = inc.clone();
            spawn(move || (0..ops).for_each(|_| inc()))
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    finish(start, fibers * ops, read)
}

fn finish(start: Instant, total: usize, read: Box<dyn Fn() -> u64>) -> f64 {
    let rate = total as f64 / start.elapsed().as_secs_f64();
    let count = read();
    assert_eq!(
        count, total as u64,
        "every increment must land exactly once"
    );
    rate
}

fn report(mutex: f64, trust: f64) {
    println!("  Arc<Mutex<u64>>  {:>8.2} M ops/s", mutex / 1e6);
    println!(
        "  Trust<u64>       {:>8.2} M ops/s   ({:.2}x the mutex; counts checked)",
        trust / 1e6,
        trust / mutex
    );
}
