//! The timing loops shared by every scenario: duration-based throughput runs on OS threads, on fibers, on
//! tokio tasks and on a client/server pair of threads, latency medians, the `RESULT` lines, and the
//! per-scenario markdown tables (with a `vs ring` column once the `limit` scenario has measured the ring).
//!
//! Throughput runs are timed by the clock, not by a fixed amount of work: every thread (or fiber) loops
//! until the stop flag is raised and returns how many operations it completed. The caller gets the total back
//! and checks it against the shared state (a broken run cannot report numbers). With more threads than
//! cores, a fixed amount of work per thread would end with a long tail of one thread running alone; a common
//! start and a common stop measure the contended phase only.

use std::future::Future;
use std::hint::black_box;
use std::ops::Deref;
use std::panic::resume_unwind;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// How long and how often to measure, from the command line.
#[derive(Clone)]
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

/// The physical limit of delegation on this machine, measured by the `limit` scenario: a bare SPSC ring
/// between two threads, no runtime.
#[derive(Clone, Copy)]
pub struct RingLimit {
    /// One client pipelining to one server (M ops/s).
    pub pipelined_mops: f64,
    /// One request in flight: a blocking round trip (ns).
    pub roundtrip_ns: f64,
}

pub struct Bench {
    pub cfg: Config,
    pub rows: Vec<Row>,
    /// Set by the `limit` scenario (it runs first); the later tables then add a `vs ring` column.
    pub ring: Option<RingLimit>,
    /// Print a `RESULT` line per row (a scenario that only computes from the rows turns it off).
    pub print: bool,
}

/// Prints the machine-readable line of one measurement.
pub fn print_result(scenario: &str, imp: &str, threads: usize, value: f64, unit: Unit) {
    match unit {
        Unit::Mops => {
            println!("RESULT scenario={scenario} impl={imp} threads={threads} mops={value:.2}")
        }
        Unit::Ns => {
            println!("RESULT scenario={scenario} impl={imp} threads={threads} ns={value:.1}")
        }
    }
}

impl Bench {
    pub fn new(cfg: Config) -> Self {
        Bench {
            cfg,
            rows: Vec::new(),
            ring: None,
            print: true,
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
        if self.print {
            print_result(scenario, imp, threads, value, unit);
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

    /// Takes the configured samples of a run that times itself: `sample(duration)` returns the operations of
    /// each of its threads (or fibers) and the seconds they ran; records the median throughput and its
    /// fairness under the label `threads`, and returns the total operations.
    pub fn measure(
        &mut self,
        scenario: &'static str,
        imp: &'static str,
        threads: usize,
        mut sample: impl FnMut(Duration) -> (Vec<u64>, f64),
    ) -> u64 {
        let samples: Vec<Sample> = (0..self.cfg.samples)
            .map(|_| {
                let (per_thread, secs) = sample(self.cfg.duration);
                Sample::of(&per_thread, secs)
            })
            .collect();
        let total = samples.iter().map(|s| s.ops).sum();
        self.record_median(scenario, imp, threads, samples);
        total
    }

    /// Runs a client and a server on two OS threads, sharing a fresh `state()` each sample: `client(state,
    /// stop)` works from a common start until the common stop and returns the operations it issued;
    /// `server(state)` returns the operations it applied, once the client has told it (through `state`) that
    /// it is done. Records the median of the client's rate under the label 2 threads, and returns the issued
    /// and the applied operations of all samples, for the caller to check.
    pub fn pair<S, C, V>(
        &mut self,
        scenario: &'static str,
        imp: &'static str,
        state: impl Fn() -> S,
        client: C,
        server: V,
    ) -> (u64, u64)
    where
        S: Sync,
        C: Fn(&S, &Stop) -> u64 + Sync,
        V: Fn(&S) -> u64 + Sync,
    {
        let (mut issued, mut applied) = (0, 0);
        let mut samples = Vec::with_capacity(self.cfg.samples);
        for _ in 0..self.cfg.samples {
            let (state, stop, barrier) = (state(), Stop::default(), Barrier::new(3));
            let (ops, served, secs) = thread::scope(|s| {
                let (state, stop, barrier, client, server) =
                    (&state, &stop, &barrier, &client, &server);
                let server = s.spawn(move || {
                    barrier.wait();
                    server(state)
                });
                let client = s.spawn(move || {
                    barrier.wait();
                    client(state, stop)
                });
                barrier.wait();
                let start = Instant::now();
                thread::sleep(self.cfg.duration);
                stop.stop.store(true, Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64();
                let join = |h: thread::ScopedJoinHandle<'_, u64>| {
                    h.join().unwrap_or_else(|p| resume_unwind(p))
                };
                (join(client), join(server), secs)
            });
            issued += ops;
            applied += served;
            samples.push(Sample::of(&[ops], secs));
        }
        self.record_median(scenario, imp, 2, samples);
        (issued, applied)
    }

    /// Runs `body(task_index, stop)` in `tasks` tasks on the tokio runtime `rt`, from a common start until a
    /// common stop; records the median throughput under the label `threads` (the runtime's worker threads)
    /// and returns the total operations.
    pub fn tasks<F, Fut>(
        &mut self,
        scenario: &'static str,
        imp: &'static str,
        rt: &tokio::runtime::Runtime,
        threads: usize,
        tasks: usize,
        body: F,
    ) -> u64
    where
        F: Fn(usize, Arc<Stop>) -> Fut,
        Fut: Future<Output = u64> + Send + 'static,
    {
        let mut total = 0;
        let mut samples = Vec::with_capacity(self.cfg.samples);
        for _ in 0..self.cfg.samples {
            let stop = Arc::new(Stop::default());
            let handles: Vec<_> = (0..tasks)
                .map(|i| {
                    let run = body(i, stop.clone());
                    let stop = stop.clone();
                    rt.spawn(async move {
                        stop.arrived.fetch_add(1, Ordering::Relaxed);
                        while !stop.go.load(Ordering::Acquire) {
                            tokio::task::yield_now().await;
                        }
                        run.await
                    })
                })
                .collect();
            while stop.arrived.load(Ordering::Relaxed) < tasks {
                thread::sleep(Duration::from_micros(100));
            }
            let start = Instant::now();
            stop.go.store(true, Ordering::Release);
            thread::sleep(self.cfg.duration);
            stop.stop.store(true, Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64();
            let per_task: Vec<u64> = rt.block_on(async {
                let mut per_task = Vec::with_capacity(tasks);
                for h in handles {
                    per_task.push(h.await.unwrap_or_else(|e| resume_unwind(e.into_panic())));
                }
                per_task
            });
            let sample = Sample::of(&per_task, secs);
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
        self.table_vs(scenario, BASELINE, note);
    }

    /// [`table`](Self::table) with the ratios taken to `baseline`. Once the ring is measured (`limit`), a last
    /// column compares each row with it: throughput rows their best M ops/s with the pipelined ring, latency
    /// rows their ns with the ring's round trip.
    pub fn table_vs(&self, scenario: &str, baseline: &str, note: &str) {
        let Some(grid) = Grid::of(&self.rows, scenario) else {
            return;
        };
        println!();
        match grid.unit {
            Unit::Mops => println!(
                "### {scenario}: M ops/s, all threads together (ratio to {baseline}; higher is better)"
            ),
            Unit::Ns => println!(
                "### {scenario}: ns per operation, median (ratio to {baseline}; lower is better)"
            ),
        }
        if !note.is_empty() {
            println!("{note}");
        }
        match (self.ring, grid.unit) {
            (Some(ring), Unit::Mops) => println!(
                "`vs ring`: the row's best M ops/s over the bare SPSC ring's pipelined {:.1} M ops/s \
                 (this run; measured again within the scenario when the table has a `ring_pipelined` row): the \
                 most one client thread and one server thread can move.",
                ring.pipelined_mops
            ),
            (Some(ring), Unit::Ns) => println!(
                "`vs ring`: the row's ns over the bare SPSC ring's round trip, {:.1} ns (`limit`, this \
                 run): the least a request and its answer can take between two threads.",
                ring.roundtrip_ns
            ),
            (None, _) => {}
        }
        let mut heads = grid.heads();
        if self.ring.is_some() {
            heads.push("vs ring".to_owned());
        }
        grid.print(&heads, |imp| {
            let mut cells: Vec<String> = grid
                .threads
                .iter()
                .map(|&t| match (grid.find(imp, t), grid.find(baseline, t)) {
                    (Some(r), Some(b)) => format!("{} ({:.2}x)", fmt_value(r), r.value / b.value),
                    (Some(r), None) => fmt_value(r),
                    (None, _) => "-".to_owned(),
                })
                .collect();
            if let Some(ring) = self.ring {
                let ratio = match grid.unit {
                    Unit::Mops => grid.best(imp) / ring.pipelined_mops,
                    Unit::Ns => grid.best(imp) / ring.roundtrip_ns,
                };
                cells.push(format!("{ratio:.2}x"));
            }
            cells
        });
        if grid.unit == Unit::Mops {
            println!();
            println!(
                "Fairness (same runs): the slowest thread's operations over the mean per thread (fiber and \
                 task rows: per fiber or task); 1.00 is fair, near 0 means a thread was starved while the \
                 others ran."
            );
            grid.print(&grid.heads(), |imp| {
                grid.threads
                    .iter()
                    .map(|&t| match grid.find(imp, t).and_then(|r| r.fairness) {
                        Some(f) => format!("{f:.2}"),
                        None => "-".to_owned(),
                    })
                    .collect()
            });
        }
    }
}

/// One scenario's rows laid out for a table: an implementation per line (in the order measured), a thread
/// count per column.
struct Grid<'a> {
    rows: Vec<&'a Row>,
    threads: Vec<usize>,
    imps: Vec<&'static str>,
    unit: Unit,
}

impl<'a> Grid<'a> {
    fn of(rows: &'a [Row], scenario: &str) -> Option<Self> {
        let rows: Vec<&Row> = rows.iter().filter(|r| r.scenario == scenario).collect();
        let unit = rows.first()?.unit;
        let mut threads: Vec<usize> = rows.iter().map(|r| r.threads).collect();
        threads.sort_unstable();
        threads.dedup();
        let mut imps: Vec<&'static str> = Vec::new();
        for r in &rows {
            if !imps.contains(&r.imp) {
                imps.push(r.imp);
            }
        }
        Some(Grid {
            rows,
            threads,
            imps,
            unit,
        })
    }

    fn find(&self, imp: &str, threads: usize) -> Option<&'a Row> {
        self.rows
            .iter()
            .copied()
            .find(|r| r.imp == imp && r.threads == threads)
    }

    /// The row's best figure over the thread counts: the highest throughput, or the latency.
    fn best(&self, imp: &str) -> f64 {
        let values = self.rows.iter().filter(|r| r.imp == imp).map(|r| r.value);
        match self.unit {
            Unit::Mops => values.fold(f64::MIN, f64::max),
            Unit::Ns => values.fold(f64::MAX, f64::min),
        }
    }

    /// The column heads of the thread counts.
    fn heads(&self) -> Vec<String> {
        self.threads
            .iter()
            .map(|t| match self.unit {
                Unit::Mops => format!("{t} thr"),
                Unit::Ns => "ns".to_owned(),
            })
            .collect()
    }

    /// Prints a markdown table: `heads` after the `impl` column, then a line of `cells(imp)` per
    /// implementation.
    fn print(&self, heads: &[String], cells: impl Fn(&str) -> Vec<String>) {
        println!();
        println!("| impl | {} |", heads.join(" | "));
        println!("| --- |{}", " ---: |".repeat(heads.len()));
        for &imp in &self.imps {
            println!("| {imp} | {} |", cells(imp).join(" | "));
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

/// Operations `median_ns(samples, ..)` performs, warm-up included.
pub fn latency_ops(samples: usize) -> u64 {
    (((samples / 10).max(1) + samples) * LATENCY_BATCH) as u64
}

/// Panics, naming the row, when a run's final state does not match the operations it reported.
pub fn check(scenario: &str, imp: &str, threads: usize, expected: u64, got: u64) {
    assert_eq!(
        got, expected,
        "{scenario}/{imp}/{threads} threads: the shared state counts {got} operations but the threads \
         reported {expected}: the run is broken and its numbers are not reported"
    );
}
