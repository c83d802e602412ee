//! The main example: many clients add 1 to one shared counter, for a fixed time each way, and every count is
//! checked exactly. `Arc<Mutex<u64>>` moves the counter's cache line between the cores on every increment;
//! `Trust<u64>` leaves the counter on one worker (its trustee) and sends the increments there.
//!
//! The delegation way to have many clients is many fibers: a fiber's `apply` suspends only the fiber, so a
//! worker keeps hundreds of requests in flight and the trustee applies them in batches; fibers on the
//! counter's own worker apply inline, without a message (the `inline` column says how much of a row that
//! was). OS threads pipeline with `apply_then`.
//!
//! Run: `cargo run --release --example fetch_and_add`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use trust_core::{Trust, spawn, wait_pending};

const FIBERS_PER_WORKER: usize = 256;
/// How long each row runs.
const RUN: Duration = Duration::from_millis(400);

fn main() {
    let workers = trust_core::runtime().workers();
    let fibers = workers * FIBERS_PER_WORKER;
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    println!("fetch-and-add on one shared u64: {workers} workers, {cores} cores, {RUN:?} a row\n");
    println!("| counter | clients | M ops/s | vs Mutex | inline | fairness |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");

    // The usual way: as many threads as cores, each locking the counter.
    let mutex = Arc::new(Mutex::new(0u64));
    let m = mutex.clone();
    let run = on_threads(workers, move |stop| count(stop, || *m.lock().unwrap() += 1));
    assert_eq!(*mutex.lock().unwrap(), run.ops);
    let baseline = run.rate;
    row(
        "Arc<Mutex<u64>>",
        &format!("{workers} threads, lock"),
        &run,
        baseline,
        None,
    );

    // Delegation: the counter on one worker's trustee, fibers on every worker sending it increments.
    let counter: Trust<u64> = trust_core::entrust(0);
    let (c, inline) = (counter.clone(), Arc::new(AtomicU64::new(0)));
    let i = inline.clone();
    let run = on_fibers(fibers, move |stop| {
        let n = count(stop, || c.apply(|c| *c += 1));
        if trust_core::local_trustee().index() == c.trustee().index() {
            i.fetch_add(n, Ordering::Relaxed); // this fiber runs on the counter's own worker
        }
        n
    });
    assert_eq!(counter.apply(|c| *c), run.ops);
    let clients = format!("{workers} x {FIBERS_PER_WORKER} fibers, apply");
    let inline = inline.load(Ordering::Relaxed) as f64 / run.ops as f64;
    row("Trust<u64>", &clients, &run, baseline, Some(inline));

    // From OS threads: pipelined requests, with one wait for all answers at the end.
    let counter: Trust<u64> = trust_core::entrust(0);
    let c = counter.clone();
    let run = on_threads(workers, move |stop| {
        let n = count(stop, || c.apply_then(|c| *c += 1, |()| {}));
        wait_pending();
        n
    });
    assert_eq!(counter.apply(|c| *c), run.ops);
    let clients = format!("{workers} threads, apply_then");
    row("Trust<u64>", &clients, &run, baseline, Some(0.0));

    // The mutex from the same fibers. A fiber that never suspends keeps its worker's thread (also while it
    // waits for the lock): the first fiber of each worker runs the whole row and the others start only after
    // `stop` (fairness 0.00), so this is one locking client per worker, plus the fibers' overhead.
    let mutex = Arc::new(Mutex::new(0u64));
    let m = mutex.clone();
    let run = on_fibers(fibers, move |stop| count(stop, || *m.lock().unwrap() += 1));
    assert_eq!(*mutex.lock().unwrap(), run.ops);
    let clients = format!("{workers} x {FIBERS_PER_WORKER} fibers, lock (one runs per worker)");
    row("Arc<Mutex<u64>>", &clients, &run, baseline, None);

    // The worst case for delegation: one request in flight per thread.
    let counter: Trust<u64> = trust_core::entrust(0);
    let c = counter.clone();
    let threads = 4 * workers;
    let run = on_threads(threads, move |stop| count(stop, || c.apply(|c| *c += 1)));
    assert_eq!(counter.apply(|c| *c), run.ops);
    let clients = format!("{threads} threads, apply *");
    row("Trust<u64>", &clients, &run, baseline, Some(0.0));

    println!(
        "\nEvery count checked exactly. inline: the share of the increments applied by fibers on the"
    );
    println!(
        "counter's own worker, without a message. * worst case: each blocking `apply` from a plain"
    );
    println!("thread is a full round trip between two threads that must both be on a core.");
    println!(
        "fairness: the slowest client's increments over the mean per client (1.00: even; near 0: some"
    );
    println!("client barely got a turn).");
}

/// What a row measured: increments in all, M ops/s, and the slowest client's share over the mean.
struct Run {
    ops: u64,
    rate: f64,
    fairness: f64,
}

impl Run {
    fn new(per_client: Vec<u64>, secs: f64) -> Self {
        let ops: u64 = per_client.iter().sum();
        let mean = ops as f64 / per_client.len() as f64;
        let slowest = per_client.iter().copied().min().unwrap_or(0);
        Run {
            ops,
            rate: ops as f64 / secs / 1e6,
            fairness: if mean > 0.0 {
                slowest as f64 / mean
            } else {
                0.0
            },
        }
    }
}

/// Calls `op` until `stop` is raised; returns how many times it did.
fn count(stop: &AtomicBool, mut op: impl FnMut()) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        op();
        n += 1;
    }
    n
}

/// Runs `client` on `n` OS threads for [`RUN`]; returns what they reported.
fn on_threads<F>(n: usize, client: F) -> Run
where
    F: Fn(&AtomicBool) -> u64 + Send + Sync + 'static,
{
    let (client, stop) = (Arc::new(client), Arc::new(AtomicBool::new(false)));
    let start = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (client, stop) = (client.clone(), stop.clone());
            thread::spawn(move || client(&stop))
        })
        .collect();
    let secs = stop_after_run(&stop, start);
    Run::new(
        handles.into_iter().map(|h| h.join().unwrap()).collect(),
        secs,
    )
}

/// Runs `client` in `n` fibers, spread over the workers, for [`RUN`]; as [`on_threads`].
fn on_fibers<F>(n: usize, client: F) -> Run
where
    F: Fn(&AtomicBool) -> u64 + Send + Sync + 'static,
{
    let (client, stop) = (Arc::new(client), Arc::new(AtomicBool::new(false)));
    let start = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (client, stop) = (client.clone(), stop.clone());
            spawn(move || client(&stop))
        })
        .collect();
    let secs = stop_after_run(&stop, start);
    Run::new(
        handles.into_iter().map(|h| h.join().unwrap()).collect(),
        secs,
    )
}

/// Sleeps until [`RUN`] has passed since `start`, raises `stop`, and returns the seconds run.
fn stop_after_run(stop: &AtomicBool, start: Instant) -> f64 {
    thread::sleep(RUN.saturating_sub(start.elapsed()));
    stop.store(true, Ordering::Relaxed);
    start.elapsed().as_secs_f64()
}

/// One line of the table; `inline` is the share of the row's increments applied without a message.
fn row(counter: &str, clients: &str, run: &Run, baseline: f64, inline: Option<f64>) {
    let inline = inline.map_or("-".to_owned(), |share| format!("{:.1}%", share * 100.0));
    println!(
        "| {counter} | {clients} | {:.2} | {:.2}x | {inline} | {:.2} |",
        run.rate,
        run.rate / baseline,
        run.fairness
    );
}
