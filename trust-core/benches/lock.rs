//! Taking several locks at once: `lock_all!` (unranked: address order at run time; ranked: order
//! fixed at compile time) against `happylock`'s `LockCollection` (built once, or per call like an
//! ad-hoc `lock_all!`), our own `LockCollection`, and hand-ordered `parking_lot` mutexes (the floor:
//! no key, no checks, the programmer got the order right by hand).
//!
//! Run: `cargo bench -p trust-core --bench lock` (`-- --quick` finishes in a few seconds).
//! Each measurement prints `RESULT scenario=.. impl=.. threads=.. ns=..` (latency of one
//! lock-all/modify/unlock-all, one thread) or `mops=..` (transfers per microsecond, contended);
//! a markdown table with ratios to `parking_lot_ordered` follows.

use std::hint::black_box;
use std::thread;
use std::time::Instant;

use trust_core::lock::{LockCollection, Mutex, ThreadKey};
use trust_core::{lock_all, lock_ranks};

lock_ranks! { R1; R2; R3; R4; R5; R6; R7; R8; }

struct Bench {
    quick: bool,
    rows: Vec<(String, String, usize, f64, &'static str)>,
}

impl Bench {
    fn record(
        &mut self,
        scenario: &str,
        imp: &str,
        threads: usize,
        value: f64,
        unit: &'static str,
    ) {
        println!("RESULT scenario={scenario} impl={imp} threads={threads} {unit}={value:.2}");
        self.rows
            .push((scenario.into(), imp.into(), threads, value, unit));
    }

    /// Nanoseconds per call of `f`, best of a few runs (the machine is shared).
    fn latency(&mut self, scenario: &str, imp: &str, mut f: impl FnMut()) {
        let iters = if self.quick { 200_000 } else { 2_000_000 };
        let runs = if self.quick { 3 } else { 7 };
        let mut best = f64::INFINITY;
        for _ in 0..runs {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            best = best.min(start.elapsed().as_nanos() as f64 / iters as f64);
        }
        self.record(scenario, imp, 1, best, "ns");
    }
}

fn single_thread(bench: &mut Bench) {
    let mut key = ThreadKey::get().unwrap();
    let mut happy_key = happylock::ThreadKey::get().unwrap();

    // Two locks.
    let (a, b) = (Mutex::new(0u64), Mutex::new(0u64));
    bench.latency("lock2", "lock_all", || {
        let (b, a) = (black_box(&b), black_box(&a));
        let (mut x, mut y) = lock_all!(&mut key, b, a);
        *x += 1;
        *y += 1;
    });
    let (ra, rb): (Mutex<u64, R1>, Mutex<u64, R2>) = (Mutex::ranked(0), Mutex::ranked(0));
    bench.latency("lock2", "lock_all_ranked", || {
        let (rb, ra) = (black_box(&rb), black_box(&ra));
        let (mut x, mut y) = lock_all!(&mut key, rb, ra);
        *x += 1;
        *y += 1;
    });
    let ours = LockCollection::try_new((&a, &b)).unwrap();
    bench.latency("lock2", "trust_collection", || {
        ours.scoped_lock(&mut key, |(x, y)| {
            **x += 1;
            **y += 1;
        })
    });
    let (ha, hb) = (happylock::Mutex::new(0u64), happylock::Mutex::new(0u64));
    let happy = happylock::LockCollection::try_new((&ha, &hb)).unwrap();
    bench.latency("lock2", "happylock_collection", || {
        happy.scoped_lock(&mut happy_key, |(x, y)| {
            *x += 1;
            *y += 1;
        })
    });
    bench.latency("lock2", "happylock_try_new_per_call", || {
        let pair = happylock::LockCollection::try_new((black_box(&hb), black_box(&ha))).unwrap();
        pair.scoped_lock(&mut happy_key, |(x, y)| {
            *x += 1;
            *y += 1;
        })
    });
    let (pa, pb) = (parking_lot::Mutex::new(0u64), parking_lot::Mutex::new(0u64));
    bench.latency("lock2", "parking_lot_ordered", || {
        let mut x = black_box(&pa).lock();
        let mut y = black_box(&pb).lock();
        *x += 1;
        *y += 1;
    });

    // Eight locks, named out of order.
    let m: Vec<Mutex<u64>> = (0..8).map(|_| Mutex::new(0)).collect();
    bench.latency("lock8", "lock_all", || {
        let m = black_box(&m);
        let g = lock_all!(&mut key, m[5], m[2], m[7], m[0], m[3], m[6], m[1], m[4]);
        let (mut g0, mut g7) = (g.3, g.2);
        *g0 += 1;
        *g7 += 1;
    });
    let r = (
        Mutex::<u64, R1>::ranked(0),
        Mutex::<u64, R2>::ranked(0),
        Mutex::<u64, R3>::ranked(0),
        Mutex::<u64, R4>::ranked(0),
        Mutex::<u64, R5>::ranked(0),
        Mutex::<u64, R6>::ranked(0),
        Mutex::<u64, R7>::ranked(0),
        Mutex::<u64, R8>::ranked(0),
    );
    bench.latency("lock8", "lock_all_ranked", || {
        let r = black_box(&r);
        let g = lock_all!(&mut key, r.5, r.2, r.7, r.0, r.3, r.6, r.1, r.4);
        let (mut g0, mut g7) = (g.3, g.2);
        *g0 += 1;
        *g7 += 1;
    });
    let refs: [&Mutex<u64>; 8] = std::array::from_fn(|i| &m[i]);
    let ours = LockCollection::try_new(refs).unwrap();
    bench.latency("lock8", "trust_collection", || {
        ours.scoped_lock(&mut key, |g| {
            *g[0] += 1;
            *g[7] += 1;
        })
    });
    let hm: Vec<happylock::Mutex<u64>> = (0..8).map(|_| happylock::Mutex::new(0)).collect();
    let hrefs: [&happylock::Mutex<u64>; 8] = std::array::from_fn(|i| &hm[i]);
    let happy = happylock::LockCollection::try_new(hrefs).unwrap();
    bench.latency("lock8", "happylock_collection", || {
        happy.scoped_lock(&mut happy_key, |g| {
            *g[0] += 1;
            *g[7] += 1;
        })
    });
    bench.latency("lock8", "happylock_try_new_per_call", || {
        let hm = black_box(&hm);
        let set = [
            &hm[5], &hm[2], &hm[7], &hm[0], &hm[3], &hm[6], &hm[1], &hm[4],
        ];
        let all = happylock::LockCollection::try_new(set).unwrap();
        all.scoped_lock(&mut happy_key, |g| {
            *g[3] += 1;
            *g[2] += 1;
        })
    });
    let pm: Vec<parking_lot::Mutex<u64>> = (0..8).map(|_| parking_lot::Mutex::new(0)).collect();
    bench.latency("lock8", "parking_lot_ordered", || {
        let pm = black_box(&pm);
        let mut g: [_; 8] = std::array::from_fn(|i| pm[i].lock());
        *g[0] += 1;
        *g[7] += 1;
    });
}

/// Random pairs of 16 accounts, in random argument order, on several threads: transfers per µs.
fn contended(bench: &mut Bench, threads: usize) {
    const ACCOUNTS: usize = 16;
    let transfers = if bench.quick { 200_000 } else { 2_000_000 } / threads;

    let runs = if bench.quick { 3 } else { 7 };
    // Best (shortest) of several runs: the machine is shared, and a run that lost its core to
    // another process says nothing about the lock.
    let run = |threads: usize, work: &(dyn Fn(usize) + Sync)| -> f64 {
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                thread::scope(|s| {
                    for t in 0..threads {
                        s.spawn(move || work(t));
                    }
                });
                start.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let pairs = |seed: usize, count: usize| {
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (seed as u64 + 1);
        (0..count).map(move |_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let from = (state % ACCOUNTS as u64) as usize;
            let to = (from + 1 + ((state >> 20) % (ACCOUNTS as u64 - 1)) as usize) % ACCOUNTS;
            (from, to)
        })
    };
    let total = (transfers * threads) as f64 / 1e6;

    let accounts: Vec<Mutex<i64>> = (0..ACCOUNTS).map(|_| Mutex::new(0)).collect();
    let secs = run(threads, &|t| {
        let mut key = ThreadKey::get().unwrap();
        for (from, to) in pairs(t, transfers) {
            let (mut a, mut b) = lock_all!(&mut key, accounts[from], accounts[to]);
            *a -= 1;
            *b += 1;
        }
    });
    bench.record("pairs16", "lock_all", threads, total / secs, "mops");

    let happy: Vec<happylock::Mutex<i64>> =
        (0..ACCOUNTS).map(|_| happylock::Mutex::new(0)).collect();
    let secs = run(threads, &|t| {
        let mut key = happylock::ThreadKey::get().unwrap();
        for (from, to) in pairs(t, transfers) {
            let pair = happylock::LockCollection::try_new((&happy[from], &happy[to])).unwrap();
            pair.scoped_lock(&mut key, |(a, b)| {
                *a -= 1;
                *b += 1;
            });
        }
    });
    bench.record(
        "pairs16",
        "happylock_try_new_per_call",
        threads,
        total / secs,
        "mops",
    );

    let plain: Vec<parking_lot::Mutex<i64>> =
        (0..ACCOUNTS).map(|_| parking_lot::Mutex::new(0)).collect();
    let secs = run(threads, &|t| {
        for (from, to) in pairs(t, transfers) {
            let (low, high) = (from.min(to), from.max(to));
            let mut a = plain[low].lock();
            let mut b = plain[high].lock();
            *a -= 1;
            *b += 1;
        }
    });
    bench.record(
        "pairs16",
        "parking_lot_ordered",
        threads,
        total / secs,
        "mops",
    );
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let mut bench = Bench {
        quick,
        rows: Vec::new(),
    };
    single_thread(&mut bench);
    for threads in [2, 4] {
        contended(&mut bench, threads);
    }

    println!();
    println!("| scenario | impl | threads | result | vs parking_lot_ordered |");
    println!("| --- | --- | --- | --- | --- |");
    for (scenario, imp, threads, value, unit) in &bench.rows {
        let base = bench
            .rows
            .iter()
            .find(|r| &r.0 == scenario && r.1 == "parking_lot_ordered" && r.2 == *threads)
            .map(|r| r.3)
            .unwrap_or(f64::NAN);
        // For latency lower is better, for throughput higher: show "x times the floor's cost".
        let ratio = if *unit == "ns" {
            value / base
        } else {
            base / value
        };
        println!("| {scenario} | {imp} | {threads} | {value:.1} {unit} | {ratio:.2}x |");
    }
}
