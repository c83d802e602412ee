//! Parallel breadth-first search with the branded building blocks of `trust_core::ghost`: a
//! `GhostAtomicBitset` as the visited set and one `GhostChaseLevDeque` per thread, checked against a
//! sequential BFS, and timed against the same algorithm on `Vec<AtomicBool>` + `crossbeam-deque`.
//!
//! The search is level-synchronous, so it computes exact BFS distances: at the start of a level each thread
//! pushes the part of the frontier it discovered into its own deque; then it pops its own deque (newest first) and, when that is empty, steals from
//! the others (oldest first). A vertex belongs to whichever thread wins its bit (`test_and_set`, one
//! `fetch_or`): that thread writes its distance and puts it in its part of the next frontier. The deque
//! owners move into each level's threads and come back when the level ends (an owner is `Send` but not
//! `Sync`: it cannot be shared, only handed over).
//!
//! Run: `cargo run --release --example parallel_bfs`

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_deque::{Steal, Stealer, Worker};
use trust_core::ghost::{GhostAtomicBitset, GhostChaseLevDeque, GhostStealer, GhostToken};

/// 2^19 vertices, each with 4 random out-edges and an edge to its successor: 2.6 M edges.
const VERTICES: usize = 1 << 19;
const RANDOM_EDGES: usize = 4;
const UNREACHED: u32 = u32::MAX;

/// A directed graph in compressed sparse row form.
struct Graph {
    offsets: Vec<usize>,
    targets: Vec<u32>,
}

impl Graph {
    fn generate(vertices: usize, random_edges: usize, seed: u64) -> Self {
        let mut state = seed;
        let mut next_random = move || {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let mut offsets = Vec::with_capacity(vertices + 1);
        let mut targets = Vec::with_capacity(vertices * (random_edges + 1));
        for v in 0..vertices {
            offsets.push(targets.len());
            targets.push(((v + 1) % vertices) as u32);
            for _ in 0..random_edges {
                targets.push((next_random() % vertices as u64) as u32);
            }
        }
        offsets.push(targets.len());
        Graph { offsets, targets }
    }

    fn vertices(&self) -> usize {
        self.offsets.len() - 1
    }

    fn neighbours(&self, v: usize) -> &[u32] {
        &self.targets[self.offsets[v]..self.offsets[v + 1]]
    }
}

fn sequential_bfs(graph: &Graph, source: usize) -> Vec<u32> {
    let mut dist = vec![UNREACHED; graph.vertices()];
    let mut queue = std::collections::VecDeque::new();
    dist[source] = 0;
    queue.push_back(source);
    while let Some(v) = queue.pop_front() {
        for &w in graph.neighbours(v) {
            if dist[w as usize] == UNREACHED {
                dist[w as usize] = dist[v] + 1;
                queue.push_back(w as usize);
            }
        }
    }
    dist
}

/// The BFS on the ghost structures; all of one traversal's structures carry the brand of `_token`.
fn ghost_bfs<'brand>(
    graph: &Graph,
    source: usize,
    threads: usize,
    _token: &GhostToken<'brand>,
) -> Vec<u32> {
    let visited = GhostAtomicBitset::<'brand>::new(graph.vertices());
    let dist: Vec<AtomicU32> = (0..graph.vertices())
        .map(|_| AtomicU32::new(UNREACHED))
        .collect();
    let capacity = graph.vertices().next_power_of_two();
    let mut owners: Vec<GhostChaseLevDeque<'brand>> = (0..threads)
        .map(|_| GhostChaseLevDeque::new(capacity))
        .collect();
    let stealers: Vec<GhostStealer<'brand>> =
        owners.iter().map(GhostChaseLevDeque::stealer).collect();

    visited.test_and_set(source);
    dist[source].store(0, Ordering::Relaxed);
    // Each thread keeps the part of the next frontier it discovered, and deals it into its own deque at
    // the start of the next level: no thread gathers or distributes the frontier.
    let mut frontiers: Vec<Vec<usize>> = (0..threads).map(|_| Vec::new()).collect();
    frontiers[0].push(source);
    let mut level = 0;
    while frontiers.iter().any(|f| !f.is_empty()) {
        level += 1;
        let barrier = Barrier::new(threads);
        let (visited, dist, stealers, barrier) = (&visited, &dist, &stealers, &barrier);
        let results: Vec<(GhostChaseLevDeque<'brand>, Vec<usize>)> = thread::scope(|s| {
            let handles: Vec<_> = owners
                .drain(..)
                .zip(frontiers.drain(..))
                .enumerate()
                .map(|(me, (owner, mut frontier))| {
                    s.spawn(move || {
                        for v in frontier.drain(..) {
                            owner.push_bottom(v).expect("capacity >= vertices");
                        }
                        // Every deque is filled before any thread may find them all empty.
                        barrier.wait();
                        loop {
                            let v = owner.pop_bottom().or_else(|| {
                                (1..threads).find_map(|k| stealers[(me + k) % threads].steal())
                            });
                            // Nothing is pushed during a level, so empty everywhere means done.
                            let Some(v) = v else { break };
                            for &w in graph.neighbours(v) {
                                // Test first (a plain load): most edges lead to visited vertices, and a
                                // read keeps the cache line shared instead of taking it exclusive.
                                if !visited.test(w as usize) && !visited.test_and_set(w as usize) {
                                    // Relaxed: read after the level's threads are joined.
                                    dist[w as usize].store(level, Ordering::Relaxed);
                                    frontier.push(w as usize);
                                }
                            }
                        }
                        (owner, frontier)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (owner, frontier) in results {
            owners.push(owner);
            frontiers.push(frontier);
        }
    }
    dist.into_iter().map(AtomicU32::into_inner).collect()
}

/// The same algorithm on `Vec<AtomicBool>` and `crossbeam-deque`.
fn crossbeam_bfs(graph: &Graph, source: usize, threads: usize) -> Vec<u32> {
    let visited: Vec<AtomicBool> = (0..graph.vertices())
        .map(|_| AtomicBool::new(false))
        .collect();
    let dist: Vec<AtomicU32> = (0..graph.vertices())
        .map(|_| AtomicU32::new(UNREACHED))
        .collect();
    let mut workers: Vec<Worker<usize>> = (0..threads).map(|_| Worker::new_lifo()).collect();
    let stealers: Vec<Stealer<usize>> = workers.iter().map(Worker::stealer).collect();

    visited[source].store(true, Ordering::Relaxed);
    dist[source].store(0, Ordering::Relaxed);
    let mut frontiers: Vec<Vec<usize>> = (0..threads).map(|_| Vec::new()).collect();
    frontiers[0].push(source);
    let mut level = 0;
    while frontiers.iter().any(|f| !f.is_empty()) {
        level += 1;
        let barrier = Barrier::new(threads);
        let (visited, dist, stealers, barrier) = (&visited, &dist, &stealers, &barrier);
        let results: Vec<(Worker<usize>, Vec<usize>)> = thread::scope(|s| {
            let handles: Vec<_> = workers
                .drain(..)
                .zip(frontiers.drain(..))
                .enumerate()
                .map(|(me, (worker, mut frontier))| {
                    s.spawn(move || {
                        for v in frontier.drain(..) {
                            worker.push(v);
                        }
                        barrier.wait();
                        loop {
                            let v = worker.pop().or_else(|| {
                                (1..threads).find_map(|k| {
                                    loop {
                                        match stealers[(me + k) % threads].steal() {
                                            Steal::Success(v) => break Some(v),
                                            Steal::Empty => break None,
                                            Steal::Retry => continue,
                                        }
                                    }
                                })
                            });
                            let Some(v) = v else { break };
                            for &w in graph.neighbours(v) {
                                let seen = &visited[w as usize];
                                if !seen.load(Ordering::Acquire)
                                    && !seen.swap(true, Ordering::AcqRel)
                                {
                                    dist[w as usize].store(level, Ordering::Relaxed);
                                    frontier.push(w as usize);
                                }
                            }
                        }
                        (worker, frontier)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (worker, frontier) in results {
            workers.push(worker);
            frontiers.push(frontier);
        }
    }
    dist.into_iter().map(AtomicU32::into_inner).collect()
}

/// Best of `runs` timings of `f`, and its last result.
fn best_of<R>(runs: usize, mut f: impl FnMut() -> R) -> (Duration, R) {
    let mut best = Duration::MAX;
    let mut result = None;
    for _ in 0..runs {
        let start = Instant::now();
        let r = f();
        best = best.min(start.elapsed());
        result = Some(r);
    }
    (best, result.expect("runs > 0"))
}

fn main() {
    let threads = thread::available_parallelism()
        .map_or(2, usize::from)
        .max(2);
    let graph = Graph::generate(VERTICES, RANDOM_EDGES, 0x9e37_79b9_7f4a_7c15);
    println!(
        "graph: {} vertices, {} edges; {threads} threads",
        graph.vertices(),
        graph.targets.len()
    );

    let (sequential, expected) = best_of(3, || sequential_bfs(&graph, 0));
    let reached = expected.iter().filter(|&&d| d != UNREACHED).count();
    let depth = expected.iter().filter(|&&d| d != UNREACHED).max().unwrap();
    println!("sequential BFS: {reached} vertices reached, depth {depth}, {sequential:.2?}");

    let (ghost, dist) =
        GhostToken::new(|token| best_of(3, || ghost_bfs(&graph, 0, threads, &token)));
    assert_eq!(
        dist, expected,
        "the ghost BFS must find the sequential distances"
    );
    println!(
        "GhostAtomicBitset + GhostChaseLevDeque: {ghost:.2?}, speedup {:.2}x over sequential",
        sequential.as_secs_f64() / ghost.as_secs_f64()
    );

    let (crossbeam, dist) = best_of(3, || crossbeam_bfs(&graph, 0, threads));
    assert_eq!(
        dist, expected,
        "the crossbeam BFS must find the sequential distances"
    );
    println!(
        "Vec<AtomicBool> + crossbeam-deque:       {crossbeam:.2?}, speedup {:.2}x over sequential \
         (ghost / crossbeam time: {:.2})",
        sequential.as_secs_f64() / crossbeam.as_secs_f64(),
        ghost.as_secs_f64() / crossbeam.as_secs_f64()
    );
}
