//! `IntervalRwLock` against one `RwLock<Vec<u64>>` and a `Vec<Mutex<Vec<u64>>>` of fixed chunks.
//!
//! A 1M-element `u64` vector is cut into N chunks (N = 1, 8, 64). Each thread walks the chunks
//! cyclically from its own starting offset (thread t starts at chunk t*N/threads) and, per operation,
//! write-locks one chunk and then either
//! - `whole`: adds 1 to every element of the chunk (the lock is held for 1M/N element updates), or
//! - `touch-one`: adds 1 to the chunk's first element (the cost of locking itself, and its contention).
//!
//! `RwLock<Vec>` serializes every writer; `Vec<Mutex<chunk>>` is the per-chunk floor, but needs the
//! chunking fixed in advance; `IntervalRwLock` locks any range. A last scenario, `live-borrows`, times
//! one `try_write` + drop on one thread while L other borrows are held, to show the O(log L) cost.
//!
//! Run: `cargo bench -p trust-core --bench interval` (add `-- --quick` for a run under 10 seconds, and
//! a bare word, as in `-- touch-one`, to run only the scenarios whose name contains it).
//! Prints one `RESULT scenario=.. impl=.. threads=.. mops=..` (or `ns=..`) line per measurement, then
//! a markdown table with ratios against `RwLock<Vec>` (or against L = 0).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use trust_core::interval::IntervalRwLock;

const LEN: usize = 1 << 20;

/// The three ways to lock chunk `c` of `size` elements and run `work` on it.
trait Chunked: Sync {
    const NAME: &'static str;
    fn with_chunk(&self, c: usize, size: usize, work: impl FnOnce(&mut [u64]));
}

struct Interval(IntervalRwLock<u64>);
struct OneRwLock(RwLock<Vec<u64>>);
struct MutexPerChunk(Vec<Mutex<Vec<u64>>>);

impl Chunked for Interval {
    const NAME: &'static str = "IntervalRwLock";
    fn with_chunk(&self, c: usize, size: usize, work: impl FnOnce(&mut [u64])) {
        work(&mut self.0.write(c * size..(c + 1) * size));
    }
}

impl Chunked for OneRwLock {
    const NAME: &'static str = "RwLock<Vec>";
    fn with_chunk(&self, c: usize, size: usize, work: impl FnOnce(&mut [u64])) {
        work(&mut self.0.write().unwrap()[c * size..(c + 1) * size]);
    }
}

impl Chunked for MutexPerChunk {
    const NAME: &'static str = "Vec<Mutex<chunk>>";
    fn with_chunk(&self, c: usize, _size: usize, work: impl FnOnce(&mut [u64])) {
        work(&mut self.0[c].lock().unwrap());
    }
}

struct Row {
    scenario: String,
    imp: &'static str,
    threads: usize,
    /// Million operations (element updates for `whole`) per second, or ns per op for `live-borrows`.
    value: f64,
    throughput: bool,
}

struct Bench {
    run: Duration,
    samples: usize,
    rows: Vec<Row>,
}

impl Bench {
    /// Runs `threads` threads for `self.run` on `lock`; records the best rate over the samples, in
    /// million `unit`s per second (`unit` = elements updated per operation).
    fn chunks<L: Chunked>(&mut self, lock: &L, n: usize, threads: usize, whole: bool) {
        let size = LEN / n;
        let unit = if whole { size } else { 1 };
        let mut best = 0f64;
        for _ in 0..self.samples {
            let stop = AtomicBool::new(false);
            let barrier = Barrier::new(threads + 1);
            let (ops, elapsed) = thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let (stop, barrier) = (&stop, &barrier);
                        s.spawn(move || {
                            let mut c = t * n / threads;
                            let mut ops = 0u64;
                            barrier.wait();
                            while !stop.load(Ordering::Relaxed) {
                                lock.with_chunk(c, size, |chunk| {
                                    if whole {
                                        chunk.iter_mut().for_each(|x| *x += 1);
                                    } else {
                                        chunk[0] += 1;
                                    }
                                    black_box(chunk);
                                });
                                ops += 1;
                                c = (c + 1) % n;
                            }
                            ops
                        })
                    })
                    .collect();
                barrier.wait();
                let start = Instant::now();
                thread::sleep(self.run);
                stop.store(true, Ordering::Relaxed);
                let ops: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
                (ops, start.elapsed())
            });
            let mops = (ops * unit as u64) as f64 / elapsed.as_secs_f64() / 1e6;
            best = best.max(mops);
        }
        let scenario = format!("chunks-{n}/{}", if whole { "whole" } else { "touch-one" });
        println!(
            "RESULT scenario={scenario} impl={} threads={threads} mops={best:.1}",
            L::NAME
        );
        self.rows.push(Row {
            scenario,
            imp: L::NAME,
            threads,
            value: best,
            throughput: true,
        });
    }

    /// One `try_write` + drop of a free element while `live` borrows are held; best ns per op.
    fn live_borrows(&mut self, live: usize) {
        let lock = IntervalRwLock::new(vec![0u64; LEN]);
        // Every other element, spread over the whole vector; the probe takes the gaps between them.
        let stride = LEN / live.max(1);
        let held: Vec<_> = (0..live)
            .map(|i| lock.try_write(i * stride..i * stride + 1).unwrap())
            .collect();
        let probes: Vec<usize> = (0..1024)
            .map(|i| (i * 7919 % live.max(1)) * stride + 1)
            .collect();
        let mut best = f64::INFINITY;
        for _ in 0..self.samples {
            let start = Instant::now();
            let mut ops = 0u64;
            while start.elapsed() < self.run {
                for &p in &probes {
                    drop(black_box(lock.try_write(p..p + 1).unwrap()));
                }
                ops += probes.len() as u64;
            }
            best = best.min(start.elapsed().as_nanos() as f64 / ops as f64);
        }
        drop(held);
        let scenario = format!("live-borrows L={live}");
        println!("RESULT scenario={scenario} impl=IntervalRwLock threads=1 ns={best:.1}");
        self.rows.push(Row {
            scenario,
            imp: "IntervalRwLock",
            threads: 1,
            value: best,
            throughput: false,
        });
    }

    fn table(&self) {
        println!();
        println!("| scenario | impl | threads | result | ratio |");
        println!("| --- | --- | --- | --- | --- |");
        for row in &self.rows {
            let (result, ratio) = if row.throughput {
                let base = self.rows.iter().find(|r| {
                    r.scenario == row.scenario && r.threads == row.threads && r.imp == "RwLock<Vec>"
                });
                let unit = if row.scenario.ends_with("whole") {
                    "M elements/s"
                } else {
                    "M locks/s"
                };
                (
                    format!("{:.1} {unit}", row.value),
                    base.map(|b| format!("{:.2}x RwLock<Vec>", row.value / b.value)),
                )
            } else {
                let base = self.rows.iter().find(|r| r.scenario == "live-borrows L=0");
                (
                    format!("{:.1} ns/op", row.value),
                    base.map(|b| format!("{:.2}x L=0", row.value / b.value)),
                )
            };
            println!(
                "| {} | {} | {} | {} | {} |",
                row.scenario,
                row.imp,
                row.threads,
                result,
                ratio.unwrap_or_else(|| "-".into())
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    // Like libtest: a bare argument keeps only the scenarios whose name contains it.
    let filter = args.iter().find(|a| !a.starts_with("--")).cloned();
    let wanted = |scenario: &str| {
        filter
            .as_ref()
            .is_none_or(|f| scenario.contains(f.as_str()))
    };
    let mut bench = Bench {
        run: Duration::from_millis(if quick { 25 } else { 200 }),
        samples: if quick { 2 } else { 5 },
        rows: Vec::new(),
    };
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let mut thread_counts = vec![1, cores, 2 * cores];
    thread_counts.dedup();
    for whole in [true, false] {
        for n in [1, 8, 64] {
            if !wanted(&format!(
                "chunks-{n}/{}",
                if whole { "whole" } else { "touch-one" }
            )) {
                continue;
            }
            let interval = Interval(IntervalRwLock::new(vec![0u64; LEN]));
            let one = OneRwLock(RwLock::new(vec![0u64; LEN]));
            let per_chunk =
                MutexPerChunk((0..n).map(|_| Mutex::new(vec![0u64; LEN / n])).collect());
            for &threads in &thread_counts {
                bench.chunks(&interval, n, threads, whole);
                bench.chunks(&one, n, threads, whole);
                bench.chunks(&per_chunk, n, threads, whole);
            }
        }
    }
    for live in [0, 64, 4096, 65536] {
        if wanted(&format!("live-borrows L={live}")) {
            bench.live_borrows(live);
        }
    }
    bench.table();
}
