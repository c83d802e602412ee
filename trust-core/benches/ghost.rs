//! `GhostCell` against `RefCell`, `Cell`, `UnsafeCell` and the `ghost-cell` crate, in one run.
//!
//! The claim to show: a `GhostCell` access costs what an `UnsafeCell` access costs (the token is checked
//! at compile time), while `RefCell` pays a borrow flag on every access. Each scenario walks an array of
//! cells; every pass starts from `black_box(&cells)` so no pass can be folded into another, and the
//! results go through `black_box`.
//!
//! Run: `cargo bench -p trust-core --bench ghost` (add `-- --quick` for a run under 10 seconds).
//! Prints one `RESULT scenario=.. impl=.. threads=.. ns=..` (or `mops=..`) line per measurement, then a
//! markdown table with ratios against `UnsafeCell` (single-threaded) or the ghost row (multi-threaded).

use std::cell::{Cell, OnceCell, RefCell, UnsafeCell};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use trust_core::ghost::{GhostBorrowMut, GhostCell, GhostOnceCell, GhostToken};

/// Cells per array: 8 KiB of `u64`, in L1 on the development machine.
const LEN: usize = 1024;

/// One implementation of a scenario: its name and one pass over the cells.
type Pass<'a> = (&'static str, Box<dyn FnMut() + 'a>);

struct Row {
    scenario: &'static str,
    imp: &'static str,
    threads: usize,
    /// ns per operation (single-threaded rows) or million operations per second (threaded rows).
    value: f64,
    throughput: bool,
}

struct Bench {
    sample: Duration,
    samples: usize,
    rows: Vec<Row>,
}

impl Bench {
    /// Times every `(impl, pass)` of a scenario, where one `pass()` performs `ops` operations, and
    /// records the best ns per operation of each.
    ///
    /// Samples are interleaved (impl A, B, C, A, B, C, ...), so a burst of noise from other processes or
    /// a CPU frequency change hits every implementation alike instead of whichever ran first.
    fn compare(&mut self, scenario: &'static str, ops: usize, impls: &mut [Pass<'_>]) {
        // Calibrate each: how many passes fill one sample.
        let passes: Vec<u64> = impls
            .iter_mut()
            .map(|(_, pass)| {
                let start = Instant::now();
                let mut n = 0u64;
                while start.elapsed() < self.sample / 4 {
                    pass();
                    n += 1;
                }
                (n * 4).max(1)
            })
            .collect();
        let mut best = vec![f64::INFINITY; impls.len()];
        for _ in 0..self.samples {
            for (i, (_, pass)) in impls.iter_mut().enumerate() {
                let start = Instant::now();
                for _ in 0..passes[i] {
                    pass();
                }
                let ns = start.elapsed().as_nanos() as f64 / (passes[i] as f64 * ops as f64);
                best[i] = best[i].min(ns);
            }
        }
        for ((imp, _), ns) in impls.iter().zip(best) {
            println!("RESULT scenario={scenario} impl={imp} threads=1 ns={ns:.3}");
            self.rows.push(Row {
                scenario,
                imp,
                threads: 1,
                value: ns,
                throughput: false,
            });
        }
    }

    /// Runs `work(passes)` on `threads` scoped threads at once; records the best aggregate throughput.
    ///
    /// The threads start together after a barrier, so thread start-up is not measured.
    fn throughput(
        &mut self,
        scenario: &'static str,
        imp: &'static str,
        threads: usize,
        ops: usize,
        work: impl Fn(u64) + Sync,
    ) {
        // Calibrate on this thread: how many passes fill one sample.
        let mut passes = 1u64;
        loop {
            let start = Instant::now();
            work(passes);
            if start.elapsed() >= self.sample / 4 {
                break;
            }
            passes *= 2;
        }
        passes *= 4;
        let barrier = Barrier::new(threads);
        // Wall time from the first thread past the barrier to the last one done: with more threads than
        // cores, a thread that only gets a core later still counts from the common start.
        let run = || {
            thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            let start = Instant::now();
                            work(passes);
                            (start, Instant::now())
                        })
                    })
                    .collect();
                let spans: Vec<(Instant, Instant)> =
                    handles.into_iter().map(|h| h.join().unwrap()).collect();
                let first_start = spans.iter().map(|s| s.0).min().unwrap();
                let last_end = spans.iter().map(|s| s.1).max().unwrap();
                last_end - first_start
            })
        };
        let mut best = 0f64;
        for _ in 0..self.samples {
            let wall = run();
            let mops = (passes as f64 * ops as f64 * threads as f64) / wall.as_secs_f64() / 1e6;
            best = best.max(mops);
        }
        println!("RESULT scenario={scenario} impl={imp} threads={threads} mops={best:.1}");
        self.rows.push(Row {
            scenario,
            imp,
            threads,
            value: best,
            throughput: true,
        });
    }

    fn table(&self) {
        println!();
        println!("| scenario | impl | threads | result | ratio |");
        println!("| --- | --- | --- | --- | --- |");
        for row in &self.rows {
            // Single-threaded rows compare with `UnsafeCell` (the floor); threaded rows with `ghost`.
            let base_impl = if row.throughput {
                "ghost"
            } else {
                "UnsafeCell"
            };
            let base = self
                .rows
                .iter()
                .find(|r| {
                    r.scenario == row.scenario && r.threads == row.threads && r.imp == base_impl
                })
                .map(|r| r.value);
            let (result, ratio) = if row.throughput {
                (
                    format!("{:.0} M ops/s", row.value),
                    base.map(|b| format!("{:.2}x ghost", row.value / b)),
                )
            } else {
                (
                    format!("{:.3} ns/op", row.value),
                    base.map(|b| format!("{:.2}x UnsafeCell", row.value / b)),
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

/// An array of cells on its own cache lines, so no implementation is favoured by where the allocator
/// happened to put its data (16-byte vector loads that straddle cache lines cost up to 2x).
#[repr(align(64))]
struct Aligned<T>(T);

impl<T> std::ops::Deref for Aligned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

fn aligned<C>(mut make: impl FnMut(u64) -> C) -> Box<Aligned<[C; LEN]>> {
    Box::new(Aligned(std::array::from_fn(|i| make(i as u64))))
}

/// Boxes one implementation's pass for [`Bench::compare`].
fn pass<'a>(imp: &'static str, f: impl FnMut() + 'a) -> Pass<'a> {
    (imp, Box::new(f))
}

/// Sum of every cell: one shared borrow per element.
fn read(bench: &mut Bench) {
    GhostToken::new(|token| {
        ghost_cell::GhostToken::new(|peer_token| {
            let ghost = aligned(GhostCell::new);
            let peer = aligned(ghost_cell::GhostCell::new);
            let refcell = aligned(RefCell::new);
            let cell = aligned(Cell::new);
            let unsafecell = aligned(UnsafeCell::new);
            bench.compare(
                "read",
                LEN,
                &mut [
                    pass("GhostCell", || {
                        black_box(
                            black_box(&ghost)
                                .iter()
                                .map(|c| *c.borrow(&token))
                                .sum::<u64>(),
                        );
                    }),
                    pass("ghost-cell 0.2", || {
                        black_box(
                            black_box(&peer)
                                .iter()
                                .map(|c| *c.borrow(&peer_token))
                                .sum::<u64>(),
                        );
                    }),
                    pass("RefCell", || {
                        black_box(black_box(&refcell).iter().map(|c| *c.borrow()).sum::<u64>());
                    }),
                    pass("Cell", || {
                        black_box(black_box(&cell).iter().map(Cell::get).sum::<u64>());
                    }),
                    pass("UnsafeCell", || {
                        // SAFETY: single-threaded, no `&mut` into the cells exists during the pass.
                        black_box(
                            black_box(&unsafecell)
                                .iter()
                                .map(|c| unsafe { *c.get() })
                                .sum::<u64>(),
                        );
                    }),
                ],
            );
        });
    });
}

/// Every cell `+= its index`: one exclusive borrow per element.
fn write(bench: &mut Bench) {
    GhostToken::new(|mut token| {
        ghost_cell::GhostToken::new(|mut peer_token| {
            let ghost = aligned(GhostCell::new);
            let peer = aligned(ghost_cell::GhostCell::new);
            let refcell = aligned(RefCell::new);
            let cell = aligned(Cell::new);
            let unsafecell = aligned(UnsafeCell::new);
            bench.compare(
                "write",
                LEN,
                &mut [
                    pass("GhostCell", || {
                        for (i, c) in black_box(&ghost).iter().enumerate() {
                            *c.borrow_mut(&mut token) += i as u64;
                        }
                    }),
                    pass("ghost-cell 0.2", || {
                        for (i, c) in black_box(&peer).iter().enumerate() {
                            *c.borrow_mut(&mut peer_token) += i as u64;
                        }
                    }),
                    pass("RefCell", || {
                        for (i, c) in black_box(&refcell).iter().enumerate() {
                            *c.borrow_mut() += i as u64;
                        }
                    }),
                    pass("Cell", || {
                        for (i, c) in black_box(&cell).iter().enumerate() {
                            c.set(c.get() + i as u64);
                        }
                    }),
                    pass("UnsafeCell", || {
                        for (i, c) in black_box(&unsafecell).iter().enumerate() {
                            // SAFETY: single-threaded; the only reference into the cell for the statement.
                            unsafe { *c.get() += i as u64 };
                        }
                    }),
                ],
            );
            black_box((&ghost, &peer, &refcell, &cell, &unsafecell));
        });
    });
}

/// Swap neighbours `(i, i + 1)` for every even `i`: two exclusive borrows at once.
fn swap_pairs(bench: &mut Bench) {
    // Both GhostCell rows hold `&mut token` for the whole comparison, so each gets its own brand.
    GhostToken::new(|mut token| {
        GhostToken::new(|mut token2| {
            let tuple = aligned(GhostCell::new);
            let method = aligned(GhostCell::new);
            let refcell = aligned(RefCell::new);
            let cell = aligned(Cell::new);
            let unsafecell = aligned(UnsafeCell::new);
            bench.compare(
                "swap-pairs",
                LEN / 2,
                &mut [
                    pass("GhostCell (a, b).borrow_mut", || {
                        for pair in black_box(&tuple).chunks_exact(2) {
                            let (a, b) = (&pair[0], &pair[1]).borrow_mut(&mut token).unwrap();
                            std::mem::swap(a, b);
                        }
                    }),
                    pass("GhostCell::swap", || {
                        for pair in black_box(&method).chunks_exact(2) {
                            pair[0].swap(&pair[1], &mut token2).unwrap();
                        }
                    }),
                    pass("RefCell::swap", || {
                        for pair in black_box(&refcell).chunks_exact(2) {
                            pair[0].swap(&pair[1]);
                        }
                    }),
                    pass("Cell::swap", || {
                        for pair in black_box(&cell).chunks_exact(2) {
                            pair[0].swap(&pair[1]);
                        }
                    }),
                    pass("UnsafeCell", || {
                        for pair in black_box(&unsafecell).chunks_exact(2) {
                            // SAFETY: two different cells, single-threaded, no references into them alive.
                            unsafe { std::ptr::swap(pair[0].get(), pair[1].get()) };
                        }
                    }),
                ],
            );
            black_box((&tuple, &method, &refcell, &cell, &unsafecell));
        });
    });
}

/// Swap `LEN / 2` pairs of cells picked by a shuffled index table: the compiler cannot see that the two
/// cells differ, so the overlap check of `(a, b).borrow_mut` (and `RefCell`'s flags) really run.
fn swap_shuffled(bench: &mut Bench) {
    // Pairs (i, j), i != j, from a fixed permutation (multiplying by an odd number mod LEN).
    let pairs: Vec<(usize, usize)> = (0..LEN / 2)
        .map(|k| ((k * 2 * 389) % LEN, ((k * 2 + 1) * 389) % LEN))
        .collect();
    GhostToken::new(|mut token| {
        let ghost = aligned(GhostCell::new);
        let refcell = aligned(RefCell::new);
        let cell = aligned(Cell::new);
        let unsafecell = aligned(UnsafeCell::new);
        bench.compare(
            "swap-shuffled",
            LEN / 2,
            &mut [
                pass("GhostCell (a, b).borrow_mut", || {
                    let cells = black_box(&ghost);
                    for &(i, j) in black_box(&pairs) {
                        let (a, b) = (&cells[i], &cells[j]).borrow_mut(&mut token).unwrap();
                        std::mem::swap(a, b);
                    }
                }),
                pass("RefCell::swap", || {
                    let cells = black_box(&refcell);
                    for &(i, j) in black_box(&pairs) {
                        cells[i].swap(&cells[j]);
                    }
                }),
                pass("Cell::swap", || {
                    let cells = black_box(&cell);
                    for &(i, j) in black_box(&pairs) {
                        cells[i].swap(&cells[j]);
                    }
                }),
                pass("UnsafeCell", || {
                    let cells = black_box(&unsafecell);
                    for &(i, j) in black_box(&pairs) {
                        // SAFETY: `i != j` by construction of `pairs`; single-threaded, no references alive.
                        unsafe { std::ptr::swap_nonoverlapping(cells[i].get(), cells[j].get(), 1) };
                    }
                }),
            ],
        );
        black_box((&ghost, &refcell, &cell, &unsafecell));
    });
}

/// Read an initialised once-cell: a flag check on every access.
fn once_get(bench: &mut Bench) {
    GhostToken::new(|mut token| {
        let ghost = aligned(|_| GhostOnceCell::new());
        for (i, c) in ghost.iter().enumerate() {
            c.set(i as u64, &mut token).unwrap();
        }
        let once = aligned(OnceCell::from);
        let unsafecell = aligned(UnsafeCell::new);
        bench.compare(
            "once-get",
            LEN,
            &mut [
                pass("GhostOnceCell", || {
                    black_box(
                        black_box(&ghost)
                            .iter()
                            .map(|c| *c.get(&token).unwrap())
                            .sum::<u64>(),
                    );
                }),
                pass("OnceCell", || {
                    black_box(
                        black_box(&once)
                            .iter()
                            .map(|c| *c.get().unwrap())
                            .sum::<u64>(),
                    );
                }),
                pass("UnsafeCell", || {
                    // SAFETY: single-threaded, no `&mut` into the cells exists during the pass.
                    black_box(
                        black_box(&unsafecell)
                            .iter()
                            .map(|c| unsafe { *c.get() })
                            .sum::<u64>(),
                    );
                }),
            ],
        );
    });
}

/// Every thread sums the whole array: `&GhostToken` shared by all threads vs the thread-safe ways to
/// share mutable data (`AtomicU64` loads; one `RwLock` read lock per pass).
fn parallel_read(bench: &mut Bench, threads: usize) {
    let scenario = "parallel-read";
    GhostToken::new(|token| {
        let cells = aligned(GhostCell::new);
        let token = &token;
        bench.throughput(scenario, "ghost", threads, LEN, |passes| {
            for _ in 0..passes {
                let cells = black_box(&cells);
                black_box(cells.iter().map(|c| *c.borrow(token)).sum::<u64>());
            }
        });
    });
    let atomics = aligned(AtomicU64::new);
    bench.throughput(scenario, "AtomicU64 (Relaxed)", threads, LEN, |passes| {
        for _ in 0..passes {
            let cells = black_box(&atomics);
            black_box(cells.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>());
        }
    });
    let lock = RwLock::new(aligned(|i| i));
    bench.throughput(
        scenario,
        "RwLock (one read lock per pass)",
        threads,
        LEN,
        |passes| {
            for _ in 0..passes {
                let guard = black_box(&lock).read().unwrap();
                black_box(guard.iter().sum::<u64>());
            }
        },
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let mut bench = if quick {
        Bench {
            sample: Duration::from_millis(10),
            samples: 7,
            rows: Vec::new(),
        }
    } else {
        Bench {
            sample: Duration::from_millis(40),
            samples: 15,
            rows: Vec::new(),
        }
    };
    read(&mut bench);
    write(&mut bench);
    swap_pairs(&mut bench);
    swap_shuffled(&mut bench);
    once_get(&mut bench);
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let mut thread_counts = vec![1, cores, 2 * cores];
    thread_counts.dedup();
    for threads in thread_counts {
        parallel_read(&mut bench, threads);
    }
    bench.table();
}
