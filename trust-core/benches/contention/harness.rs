//! The timing loops shared by every scenario: duration-based throughput runs on OS threads and on fibers,
//! latency medians, the `RESULT` lines, and the per-scenario markdown tables.
//!
//! Throughput runs are timed by the clock, not by a fixed amount of work: every thread (or fiber) loops
//! until the stop flag is raised and returns how many operations it completed. The caller gets the total back
//! and checks it against the shared state (a broken run cannot report numbers). With more threads than
//! cores, a fixed amount of work per thread would end with a long tail of one thread running alone; a common
//! start and a common stop measure the contended phase only.

use std::hint::black_box;
use std::ops::Deref;
use std::panic::resume_unwind;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// How long and how often to measure, from the command line.
pub struct Config {
    pub quick: bool,
    /// Thread counts to sweep.
    pub threads: Vec<usize>,
    /// Length of one throughput sample.
    pub duration: Duration,
    /// Throughput samples per row (the median is reported: a contended lock flips between a fast unfair
    /// mode, one thread keeping the lock while the others sleep, and a slow handing-over mode, so the best
    /// sample would report the luckiest flip).
    pub samples: usize,
    /// Latency samples per row (the median is reported), each the mean of `LATENCY_BATCH` operations.
    pub latency_samples: usize,
    /// Workers of the trust runtime.
    pub workers: usize,
    /// Run only the scenarios whose name contains one of these comma-separated words.
    pub filter: Option<String>,
}

impl Config {
    /// `--quick` (a run under 30 s), and an optional scenario filter (`kv,latency`); the other flags cargo passes
    /// (`--bench`) are ignored.
    pub fn from_args(workers: usize) -> Self {
        let mut quick = false;
        let mut filter = None;
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "--quick" => quick = true,
                a if a.starts_with('-') => {}
                a => filter = Some(a.to_owned()),
            }
        }
        Config {
            quick,
            threads: if quick {
                vec![1, 2, 4, 16]
            } else {
                vec![1, 2, 4, 8, 16]
            },
            duration: Duration::from_millis(if quick { 50 } else { 200 }),
            samples: if quick { 3 } else { 5 },
            latency_samples: if quick { 2_000 } else { 20_000 },
            workers,
            filter,
        }
    }

    pub fn wants(&self, scenario: &str) -> bool {
        self.filter
            .as_deref()
            .is_none_or(|f| f.split(',').any(|w| scenario.contains(w)))
    }
}

/// A value alone on its cache lines (two, for the adjacent-line prefetcher), so that no measurement is
/// slowed by false sharing with unrelated data.
#[repr(align(128))]
#[derive(Default)]
pub struct Padded<T>(pub T);

impl<T> Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The start and stop signals of one throughput sample. `stop` is read on every operation: it sits on its
/// own cache lines, which stay shared in every core's cache until the single store that ends the run.
#[derive(Default)]
pub struct Stop {
    stop: Padded<AtomicBool>,
    go: Padded<AtomicBool>,
    arrived: Padded<AtomicUsize>,
}

impl Stop {
    /// True until the run is over: loop `while stop.running() { one operation }`.
    #[inline]
    pub fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

/// What a row measures.
#[derive(Clone, Copy, PartialEq)]
pub enum Unit {
    /// Million operations per second, all threads together (higher is better).
    Mops,
    /// Nanoseconds per operation (lower is better).
    Ns,
}

pub struct Row {
    pub scenario: &'static str,
    pub imp: &'static str,
    pub threads: usize,
    pub value: f64,
    pub unit: Unit,
    /// Throughput rows: the slowest thread's (or fiber's) operations over the mean, in the median sample; 1.0
    /// is perfectly fair, near 0 means some thread was starved while others ran.
    pub fairness: Option<f64>,
}

/// The implementation every ratio is taken against, in every scenario.
pub const BASELINE: &str = "std_mutex";

/// Operations per latency sample: amortizes the ~20 ns of reading the clock.
pub const LATENCY_BATCH: usize = 100;

pub struct Bench {
    pub cfg: Config,
    pub rows: Vec<Row>,
}

impl Bench {
    pub fn new(cfg: Config) -> Self {
        Bench {
            cfg,
            rows: Vec::new(),
        }
    }

    /// Prints the machine-readable line and keeps the row for the table.
    pub fn record(
        &mut self,
        scenario: &'static str,
        imp: &'static str,
        threads: usize,
        value: f64,
        unit: Unit,
    ) {
        match unit {
            Unit::Mops => {
                println!("RESULT scenario={scenario} impl={imp} threads={threads} mops={value:.2}")
            }
            Unit::Ns => {
                println!("RESULT scenario={scenario} impl={imp} threads={threads} ns={value:.1}")
            }
        }
        self.rows.push(Row {
            scenario,
            imp,
            threads,
            value,
            unit,
            fairness: None,
        });
    }

    /// Records a throughput row: the median sample's rate and its fairness.
    fn record_median(
        &mut self,
        scenario: &'static str,
        imp: &'static str,
        threads: usize,
        mut samples: Vec<Sample>,
    ) {
        samples.sort_by(|a, b| a.mops.total_cmp(&b.mops));
        let median = samples[samples.len() / 2];
        self.record(scenario, imp, threads, median.mops, Unit::Mops);
        self.rows.last_mut().expect("just recorded").fairness = Some(median.fairness);
    }

    /// Runs `body(thread_index, &stop)` on `n` OS threads from a common start until a common stop, records
    /// the median throughput over the samples, and returns the total operations of all samples.
    pub fn threads<F>(
        &mut self,
        scenario: &'static str,
        imp: &'static str,
        n: usize,
        body: F,
    ) -> u64
    where
        F: Fn(usize, &Stop) -> u64 + Sync,
    {
        let mut total = 0;
        let mut samples = Vec::with_capacity(self.cfg.samples);
        for _ in 0..self.cfg.samples {
            let stop = Stop::default();
            let barrier = Barrier::new(n + 1);
            let (per_thread, secs) = thread::scope(|s| {
                let handles: Vec<_> = (0..n)
                    .map(|i| {
                        let (stop, barrier, body) = (&stop, &barrier, &body);
                        s.spawn(move || {
                            barrier.wait();
                            body(i, stop)
                        })
                    })
                    .collect();
                barrier.wait();
                let start = Instant::now();
                thread::sleep(self.cfg.duration);
                stop.stop.store(true, Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64();
                let per_thread: Vec<u64> = handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| resume_unwind(p)))
                    .collect();
                (per_thread, secs)
            });
            let sample = Sample::of(&per_thread, secs);
            total += sample.ops;
            samples.push(sample);
        }
        self.record_median(scenario, imp, n, samples);
        total
    }

    /// Runs `body(fiber_index, &stop)` in `per_worker` fibers on each worker of the trust runtime (spawn is
    /// round-robin), from a common start until a common stop; records the median throughput under the label
    /// `threads` (the group it is compared in: the fibers always run on the runtime's workers), and returns
    /// the total operations.
    pub fn fibers<F>(
        &mut self,
        scenario: &'static str,
        imp: &'static str,
        threads: usize,
        per_worker: usize,
        body: F,
    ) -> u64
    where
        F: Fn(usize, &Stop) -> u64 + Send + Sync + 'static,
    {
        let body = Arc::new(body);
        let count = per_worker * self.cfg.workers;
        let mut total = 0;
        let mut samples = Vec::with_capacity(self.cfg.samples);
        for _ in 0..self.cfg.samples {
            let stop = Arc::new(Stop::default());
            let fibers: Vec<_> = (0..count)
                .map(|i| {
                    let (body, stop) = (body.clone(), stop.clone());
                    trust_core::spawn(move || {
                        stop.arrived.fetch_add(1, Ordering::Relaxed);
                        while !stop.go.load(Ordering::Acquire) {
                            trust_core::yield_now();
                        }
                        body(i, &stop)
                    })
                })
                .collect();
            while stop.arrived.load(Ordering::Relaxed) < count {
                thread::sleep(Duration::from_micros(100));
            }
            let start = Instant::now();
            stop.go.store(true, Ordering::Release);
            thread::sleep(self.cfg.duration);
            stop.stop.store(true, Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64();
            let per_fiber: Vec<u64> = fibers
                .into_iter()
                .map(|f| f.join().unwrap_or_else(|p| resume_unwind(p)))
                .collect();
            let sample = Sample::of(&per_fiber, secs);
            total += sample.ops;
            samples.push(sample);
        }
        self.record_median(scenario, imp, threads, samples);
        total
    }

    /// Records the median latency of `op` on the calling thread; see [`median_ns`].
    pub fn latency(&mut self, scenario: &'static str, imp: &'static str, op: impl FnMut()) {
        let ns = median_ns(self.cfg.latency_samples, op);
        self.record(scenario, imp, 1, ns, Unit::Ns);
    }

    /// Prints the scenario's rows as one markdown table: an implementation per line, a thread count per
    /// column, each cell the result and its ratio to `std_mutex` with the same thread count.
    pub fn table(&self, scenario: &str, note: &str) {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.scenario == scenario)
            .collect();
        let Some(first) = rows.first() else { return };
        let mut threads: Vec<usize> = rows.iter().map(|r| r.threads).collect();
        threads.sort_unstable();
        threads.dedup();
        let mut imps: Vec<&str> = Vec::new();
        for r in &rows {
            if !imps.contains(&r.imp) {
                imps.push(r.imp);
            }
        }
        let find = |imp: &str, t: usize| rows.iter().find(|r| r.imp == imp && r.threads == t);
        println!();
        match first.unit {
            Unit::Mops => println!(
                "### {scenario}: M ops/s, all threads together (ratio to {BASELINE}; higher is better)"
            ),
            Unit::Ns => println!(
                "### {scenario}: ns per operation, median (ratio to {BASELINE}; lower is better)"
            ),
        }
        if !note.is_empty() {
            println!("{note}");
        }
        println!();
        let heads: Vec<String> = threads
            .iter()
            .map(|t| match first.unit {
                Unit::Mops => format!("{t} thr"),
                Unit::Ns => "ns".to_owned(),
            })
            .collect();
        println!("| impl | {} |", heads.join(" | "));
        println!("| --- |{}", " ---: |".repeat(threads.len()));
        for &imp in &imps {
            let cells: Vec<String> = threads
                .iter()
                .map(|&t| match (find(imp, t), find(BASELINE, t)) {
                    (Some(r), Some(b)) => format!("{} ({:.2}x)", fmt_value(r), r.value / b.value),
                    (Some(r), None) => fmt_value(r),
                    (None, _) => "-".to_owned(),
                })
                .collect();
            println!("| {imp} | {} |", cells.join(" | "));
        }
        if first.unit == Unit::Mops {
            println!();
            println!(
                "Fairness (same runs): the slowest thread's operations over the mean per thread (fiber rows: \
                 per fiber); 1.00 is fair, near 0 means a thread was starved while the others ran."
            );
            println!();
            println!("| impl | {} |", heads.join(" | "));
            println!("| --- |{}", " ---: |".repeat(threads.len()));
            for &imp in &imps {
                let cells: Vec<String> = threads
                    .iter()
                    .map(|&t| match find(imp, t).and_then(|r| r.fairness) {
                        Some(f) => format!("{f:.2}"),
                        None => "-".to_owned(),
                    })
                    .collect();
                println!("| {imp} | {} |", cells.join(" | "));
            }
        }
    }
}

/// One throughput sample.
#[derive(Clone, Copy)]
struct Sample {
    ops: u64,
    mops: f64,
    fairness: f64,
}

impl Sample {
    fn of(per_thread: &[u64], secs: f64) -> Self {
        let ops: u64 = per_thread.iter().sum();
        let mean = ops as f64 / per_thread.len() as f64;
        let min = per_thread.iter().copied().min().unwrap_or(0);
        Sample {
            ops,
            mops: ops as f64 / secs / 1e6,
            fairness: if mean > 0.0 { min as f64 / mean } else { 0.0 },
        }
    }
}

fn fmt_value(r: &Row) -> String {
    match r.unit {
        Unit::Mops if r.value < 10.0 => format!("{:.2}", r.value),
        Unit::Mops => format!("{:.1}", r.value),
        Unit::Ns => format!("{:.1}", r.value),
    }
}

/// The median, over `samples` samples of [`LATENCY_BATCH`] back-to-back calls, of the mean ns per call,
/// after a warm-up of a tenth as many. Usable inside a fiber (it touches no `Bench`).
pub fn median_ns(samples: usize, mut op: impl FnMut()) -> f64 {
    for _ in 0..(samples / 10).max(1) * LATENCY_BATCH {
        op();
    }
    let mut ns: Vec<f64> = (0..samples)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..LATENCY_BATCH {
                op();
            }
            start.elapsed().as_nanos() as f64 / LATENCY_BATCH as f64
        })
        .collect();
    ns.sort_by(f64::total_cmp);
    black_box(ns[ns.len() / 2])
}

/// Panics, naming the row, when a run's final state does not match the operations it reported.
pub fn check(scenario: &str, imp: &str, threads: usize, expected: u64, got: u64) {
    assert_eq!(
        got, expected,
        "{scenario}/{imp}/{threads} threads: the shared state counts {got} operations but the threads \
         reported {expected}: the run is broken and its numbers are not reported"
    );
}
