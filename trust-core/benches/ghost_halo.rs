//! The branded concurrency of `trust_core::ghost` against its std and crossbeam peers, in one run:
//!
//! - branded atomics vs bare std atomics (the claim: the same code, so within noise);
//! - `GhostAtomicBitset` vs `Vec<AtomicBool>` on a dense visited-set workload (the seed's claim: better
//!   locality, less memory traffic);
//! - `GhostChaseLevDeque` vs `crossbeam-deque` (owner push/pop, steal), `GhostTreiberStack` vs a
//!   `Mutex<Vec<usize>>`;
//! - the seed's pairs `GhostOnceCell` vs `std::cell::OnceCell` and `GhostLazyLock` vs `std::sync::LazyLock`.
//!
//! Run: `cargo bench -p trust-core --bench ghost_halo` (add `-- --quick` for a run of a few seconds).
//! Prints one `RESULT scenario=.. impl=.. ns=..` line per measurement, then a markdown table with each
//! row's ratio to the first implementation of its scenario (the ghost one).

use std::cell::OnceCell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use crossbeam_deque::{Steal, Worker};
use trust_core::ghost::{
    GhostAtomicBitset, GhostAtomicU64, GhostAtomicUsize, GhostChaseLevDeque, GhostLazyLock,
    GhostOnceCell, GhostToken, GhostTreiberStack,
};

/// Atomics per array in the atomic scenarios: 8 KiB, in L1.
const LEN: usize = 1024;
/// Bits of the visited set: 2^22 (512 KiB as bits, 4 MiB as `AtomicBool`s: the bitset fits in L2, the
/// bools do not).
const BITS: usize = 1 << 22;
/// Visits per pass of the bitset scenario (random vertices, some visited twice).
const VISITS: usize = 1 << 20;
/// Values per pass of the deque and stack scenarios.
const BATCH: usize = 256;

type Pass<'a> = (&'static str, Box<dyn FnMut() + 'a>);

fn pass<'a>(imp: &'static str, f: impl FnMut() + 'a) -> Pass<'a> {
    (imp, Box::new(f))
}

struct Row {
    scenario: &'static str,
    imp: &'static str,
    ns: f64,
}

struct Bench {
    sample: Duration,
    samples: usize,
    rows: Vec<Row>,
}

impl Bench {
    /// Best ns per operation of each implementation; samples are interleaved (A, B, A, B, ...) so noise
    /// from other processes hits all alike.
    fn compare(&mut self, scenario: &'static str, ops: usize, impls: &mut [Pass<'_>]) {
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
            println!("RESULT scenario={scenario} impl={imp} ns={ns:.3}");
            self.rows.push(Row { scenario, imp, ns });
        }
    }

    fn table(&self) {
        println!();
        println!("| scenario | impl | ns/op | ratio to the ghost row |");
        println!("| --- | --- | --- | --- |");
        for row in &self.rows {
            let base = self
                .rows
                .iter()
                .find(|r| r.scenario == row.scenario)
                .map(|r| r.ns);
            println!(
                "| {} | {} | {:.3} | {} |",
                row.scenario,
                row.imp,
                row.ns,
                base.map_or("-".into(), |b| format!("{:.2}x", row.ns / b))
            );
        }
    }
}

fn atomics(bench: &mut Bench) {
    GhostToken::new(|_token| {
        let ghost: Vec<GhostAtomicU64<'_>> = (0..LEN as u64).map(GhostAtomicU64::new).collect();
        let std: Vec<AtomicU64> = (0..LEN as u64).map(AtomicU64::new).collect();
        bench.compare(
            "atomic fetch_add",
            LEN,
            &mut [
                pass("GhostAtomicU64", || {
                    for a in black_box(&ghost) {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                }),
                pass("AtomicU64", || {
                    for a in black_box(&std) {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                }),
            ],
        );
        let ghost: Vec<GhostAtomicUsize<'_>> = (0..LEN).map(GhostAtomicUsize::new).collect();
        let std: Vec<AtomicUsize> = (0..LEN).map(AtomicUsize::new).collect();
        bench.compare(
            "atomic load (Acquire)",
            LEN,
            &mut [
                pass("GhostAtomicUsize", || {
                    black_box(
                        black_box(&ghost)
                            .iter()
                            .map(|a| a.load(Ordering::Acquire))
                            .sum::<usize>(),
                    );
                }),
                pass("AtomicUsize", || {
                    black_box(
                        black_box(&std)
                            .iter()
                            .map(|a| a.load(Ordering::Acquire))
                            .sum::<usize>(),
                    );
                }),
            ],
        );
    });
}

/// A dense visited set: clear it, then visit `VISITS` random vertices (test, then test-and-set if
/// unvisited, as a traversal does), counting first visits.
fn bitset(bench: &mut Bench) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let order: Vec<usize> = (0..VISITS)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) % BITS as u64) as usize
        })
        .collect();
    GhostToken::new(|_token| {
        let set = GhostAtomicBitset::<'_>::new(BITS);
        let bools: Vec<AtomicBool> = (0..BITS).map(|_| AtomicBool::new(false)).collect();
        bench.compare(
            "visited set (2^22 vertices, 2^20 visits + clear)",
            VISITS,
            &mut [
                pass("GhostAtomicBitset", || {
                    let set = black_box(&set);
                    set.clear();
                    let mut first = 0usize;
                    for &v in &order {
                        if !set.test(v) && !set.test_and_set(v) {
                            first += 1;
                        }
                    }
                    black_box(first);
                }),
                pass("Vec<AtomicBool>", || {
                    let bools = black_box(&bools);
                    for b in bools {
                        b.store(false, Ordering::Release);
                    }
                    let mut first = 0usize;
                    for &v in &order {
                        let b = &bools[v];
                        if !b.load(Ordering::Acquire) && !b.swap(true, Ordering::AcqRel) {
                            first += 1;
                        }
                    }
                    black_box(first);
                }),
            ],
        );
    });
}

fn worklists(bench: &mut Bench) {
    let owner = GhostChaseLevDeque::<'static>::new(BATCH);
    let stealer = owner.stealer();
    let worker = Worker::<usize>::new_lifo();
    let cb_stealer = worker.stealer();
    bench.compare(
        "deque: owner push then pop",
        BATCH,
        &mut [
            pass("GhostChaseLevDeque", || {
                for i in 0..BATCH {
                    owner.push_bottom(black_box(i)).unwrap();
                }
                while let Some(v) = owner.pop_bottom() {
                    black_box(v);
                }
            }),
            pass("crossbeam-deque", || {
                for i in 0..BATCH {
                    worker.push(black_box(i));
                }
                while let Some(v) = worker.pop() {
                    black_box(v);
                }
            }),
        ],
    );
    bench.compare(
        "deque: owner push, stealer steals (one thread)",
        BATCH,
        &mut [
            pass("GhostChaseLevDeque", || {
                for i in 0..BATCH {
                    owner.push_bottom(black_box(i)).unwrap();
                }
                while let Some(v) = stealer.steal() {
                    black_box(v);
                }
            }),
            pass("crossbeam-deque", || {
                for i in 0..BATCH {
                    worker.push(black_box(i));
                }
                while let Steal::Success(v) = cb_stealer.steal() {
                    black_box(v);
                }
            }),
        ],
    );
    let stack = GhostTreiberStack::<'static>::new(BATCH);
    let batch: Vec<usize> = (0..BATCH).collect();
    let locked = Mutex::new(Vec::with_capacity(BATCH));
    bench.compare(
        "stack: push then pop",
        BATCH,
        &mut [
            pass("GhostTreiberStack", || {
                for i in 0..BATCH {
                    stack.push(black_box(i));
                }
                while let Some(v) = stack.pop() {
                    black_box(v);
                }
            }),
            pass("GhostTreiberStack push_batch", || {
                stack.push_batch(black_box(&batch));
                while let Some(v) = stack.pop() {
                    black_box(v);
                }
            }),
            pass("Mutex<Vec<usize>>", || {
                for i in 0..BATCH {
                    locked.lock().unwrap().push(black_box(i));
                }
                while let Some(v) = locked.lock().unwrap().pop() {
                    black_box(v);
                }
            }),
        ],
    );
}

/// Values moved per sample of the two-thread deque scenario.
const TRANSFER: usize = 1 << 18;

/// Two threads: the owner pushes `TRANSFER` values (popping one itself whenever the ring is full) while a
/// thief steals; both count what they take, and the run ends when every value is taken. ns per value.
fn steal_across_threads(bench: &mut Bench, samples: usize) {
    fn run(
        push: impl Fn(usize) -> bool,
        pop: impl Fn() -> Option<usize>,
        steal: impl Fn() -> Option<usize> + Sync,
    ) -> f64 {
        let taken = AtomicUsize::new(0);
        let start = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                while taken.load(Ordering::Relaxed) < TRANSFER {
                    if let Some(v) = steal() {
                        black_box(v);
                        taken.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            for i in 0..TRANSFER {
                while !push(i) {
                    if pop().is_some() {
                        taken.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            while let Some(v) = pop() {
                black_box(v);
                taken.fetch_add(1, Ordering::Relaxed);
            }
        });
        assert_eq!(
            taken.load(Ordering::Relaxed),
            TRANSFER,
            "every value taken exactly once"
        );
        start.elapsed().as_nanos() as f64 / TRANSFER as f64
    }
    let scenario = "deque: owner pushes, 1 thief steals (2 threads)";
    let mut best = [f64::INFINITY; 2];
    for _ in 0..samples {
        let owner = GhostChaseLevDeque::<'static>::new(1024);
        let stealer = owner.stealer();
        best[0] = best[0].min(run(
            |v| owner.push_bottom(v).is_ok(),
            || owner.pop_bottom(),
            || stealer.steal(),
        ));
        let worker = Worker::<usize>::new_lifo();
        let thief = worker.stealer();
        best[1] = best[1].min(run(
            |v| {
                worker.push(v);
                true
            },
            || worker.pop(),
            || loop {
                match thief.steal() {
                    Steal::Success(v) => break Some(v),
                    Steal::Empty => break None,
                    Steal::Retry => {}
                }
            },
        ));
    }
    for (imp, ns) in ["GhostChaseLevDeque", "crossbeam-deque"]
        .into_iter()
        .zip(best)
    {
        println!("RESULT scenario={scenario} impl={imp} ns={ns:.3}");
        bench.rows.push(Row { scenario, imp, ns });
    }
}

fn once_and_lazy(bench: &mut Bench) {
    GhostToken::new(|mut token| {
        let ghost: Vec<GhostOnceCell<'_, u64>> = (0..LEN).map(|_| GhostOnceCell::new()).collect();
        for (i, c) in ghost.iter().enumerate() {
            c.set(i as u64, &mut token).unwrap();
        }
        let std: Vec<OnceCell<u64>> = (0..LEN as u64).map(OnceCell::from).collect();
        bench.compare(
            "once cell get",
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
                pass("std::cell::OnceCell", || {
                    black_box(
                        black_box(&std)
                            .iter()
                            .map(|c| *c.get().unwrap())
                            .sum::<u64>(),
                    );
                }),
            ],
        );
        let ghost: Vec<GhostLazyLock<'_, u64, Box<dyn FnOnce() -> u64 + Send>>> = (0..LEN as u64)
            .map(|i| GhostLazyLock::new(Box::new(move || i) as Box<dyn FnOnce() -> u64 + Send>))
            .collect();
        let std: Vec<LazyLock<u64, Box<dyn FnOnce() -> u64 + Send>>> = (0..LEN as u64)
            .map(|i| LazyLock::new(Box::new(move || i) as Box<dyn FnOnce() -> u64 + Send>))
            .collect();
        bench.compare(
            "lazy lock force (initialised)",
            LEN,
            &mut [
                pass("GhostLazyLock", || {
                    black_box(
                        black_box(&ghost)
                            .iter()
                            .map(|c| *c.force(&token))
                            .sum::<u64>(),
                    );
                }),
                pass("std::sync::LazyLock", || {
                    black_box(black_box(&std).iter().map(|c| **c).sum::<u64>());
                }),
            ],
        );
    });
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let mut bench = Bench {
        sample: Duration::from_millis(if quick { 10 } else { 40 }),
        samples: if quick { 5 } else { 15 },
        rows: Vec::new(),
    };
    atomics(&mut bench);
    bitset(&mut bench);
    worklists(&mut bench);
    steal_across_threads(&mut bench, if quick { 3 } else { 10 });
    once_and_lazy(&mut bench);
    bench.table();
}
