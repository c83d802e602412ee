//! What `#[entrust]` stubs cost: a stub against the hand-written `apply` closure it replaces, and both against
//! a mutex-protected struct, in one run.
//!
//! The claims to show: a stub costs what its `apply` costs (the packing is free), a `&str` argument copied
//! into the request is cheaper than the `String` a hand-written closure must capture, and under contention
//! delegation keeps its throughput where a mutex's cache line bounces.
//!
//! Run: `cargo bench -p trust-core --bench entrust` (add `-- --quick` for a run under 10 seconds).
//! Prints one `RESULT scenario=.. impl=.. threads=.. ns=..` (or `mops=..`) line per measurement, then a
//! markdown table with ratios against the stub row of each scenario.

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use trust_core::{Trust, entrust, runtime, spawn, wait_pending};

#[entrust]
#[derive(Debug, Default)]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    pub fn deposit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.balance
    }

    /// Keeps the memo's length only, so that no scenario measures the allocator on the trustee.
    pub fn set_memo(&mut self, memo: &str) -> usize {
        self.balance += memo.len() as i64;
        memo.len()
    }
}

struct Row {
    scenario: &'static str,
    imp: &'static str,
    threads: usize,
    value: f64,
    throughput: bool,
}

struct Bench {
    sample: Duration,
    samples: usize,
    rows: Vec<Row>,
}

impl Bench {
    /// Best ns per call of each implementation, samples interleaved so noise hits all alike.
    fn latency(&mut self, scenario: &'static str, impls: &mut [(&'static str, &mut dyn FnMut())]) {
        let calls: Vec<u64> = impls
            .iter_mut()
            .map(|(_, f)| {
                let start = Instant::now();
                let mut n = 0u64;
                while start.elapsed() < self.sample / 4 {
                    f();
                    n += 1;
                }
                n * 4
            })
            .collect();
        let mut best = vec![f64::INFINITY; impls.len()];
        for _ in 0..self.samples {
            for (i, (_, f)) in impls.iter_mut().enumerate() {
                let start = Instant::now();
                for _ in 0..calls[i] {
                    f();
                }
                best[i] = best[i].min(start.elapsed().as_nanos() as f64 / calls[i] as f64);
            }
        }
        for ((imp, _), ns) in impls.iter().zip(best) {
            println!("RESULT scenario={scenario} impl={imp} threads=1 ns={ns:.1}");
            self.rows.push(Row {
                scenario,
                imp,
                threads: 1,
                value: ns,
                throughput: false,
            });
        }
    }

    /// Best throughput of `run(calls)`, which makes `calls` calls in all, on `threads` threads or fibers.
    fn throughput(
        &mut self,
        scenario: &'static str,
        imp: &'static str,
        threads: usize,
        calls: u64,
        run: &dyn Fn(u64),
    ) {
        let mut best = 0f64;
        for _ in 0..self.samples {
            let start = Instant::now();
            run(calls);
            best = best.max(calls as f64 / start.elapsed().as_secs_f64() / 1e6);
        }
        println!("RESULT scenario={scenario} impl={imp} threads={threads} mops={best:.2}");
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
        println!("| scenario | impl | threads | result | vs stub |");
        println!("| --- | --- | --- | --- | --- |");
        for row in &self.rows {
            let base = self
                .rows
                .iter()
                .find(|r| r.scenario == row.scenario && r.imp.starts_with("stub"))
                .map_or(row.value, |r| r.value);
            let (result, ratio) = if row.throughput {
                (format!("{:.2} M calls/s", row.value), row.value / base)
            } else {
                (format!("{:.1} ns/call", row.value), base / row.value)
            };
            println!(
                "| {} | {} | {} | {} | {:.2}x |",
                row.scenario, row.imp, row.threads, result, ratio
            );
        }
        println!();
        println!("(vs stub: above 1 is faster than the stub, below 1 slower.)");
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let mut bench = Bench {
        sample: Duration::from_millis(if quick { 60 } else { 400 }),
        samples: if quick { 3 } else { 7 },
        rows: Vec::new(),
    };
    let rt = runtime();
    let workers = rt.workers();
    println!("# entrust: {workers} workers, quick={quick}");

    // One blocking call from a plain thread to a trustee on another thread.
    let acct: Trust<Account> = rt.trustee(0).entrust(Account::default());
    let mutex = Mutex::new(Account::default());
    let pl = parking_lot::Mutex::new(Account::default());
    bench.latency(
        "blocking call, plain thread",
        &mut [
            ("stub", &mut || _ = black_box(acct.deposit(black_box(1)))),
            ("apply closure", &mut || {
                let amount = black_box(1);
                black_box(acct.apply(move |a| a.deposit(amount)));
            }),
            ("std Mutex (uncontended)", &mut || {
                _ = black_box(mutex.lock().unwrap().deposit(black_box(1)))
            }),
            ("parking_lot Mutex (uncontended)", &mut || {
                _ = black_box(pl.lock().deposit(black_box(1)))
            }),
        ],
    );

    // A `&str` argument: the stub copies it into the request; a hand-written closure must own a `String`.
    let memo = "groceries and rent";
    bench.latency(
        "&str argument, plain thread",
        &mut [
            ("stub (copied inline)", &mut || {
                _ = black_box(acct.set_memo(black_box(memo)))
            }),
            ("apply closure owning a String", &mut || {
                let owned = black_box(memo).to_owned();
                black_box(acct.apply(move |a| a.set_memo(&owned)));
            }),
            ("std Mutex (uncontended)", &mut || {
                _ = black_box(mutex.lock().unwrap().set_memo(black_box(memo)))
            }),
        ],
    );

    // Many callers on one account: fibers on every worker through stubs, against OS threads on a mutex.
    let fibers = 64;
    let calls = if quick { 200_000 } else { 1_000_000 };
    let hot = rt.trustee(0).entrust(Account::default());
    let fiber_run = |per_call: fn(&Trust<Account>)| {
        let hot = &hot;
        move |calls: u64| {
            let each = calls / fibers;
            let handles: Vec<_> = (0..fibers)
                .map(|_| {
                    let hot = hot.clone();
                    spawn(move || {
                        for _ in 0..each {
                            per_call(&hot);
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
        }
    };
    bench.throughput(
        "one hot account, many callers",
        "stub",
        fibers as usize,
        calls,
        &fiber_run(|a| _ = black_box(a.deposit(1))),
    );
    bench.throughput(
        "one hot account, many callers",
        "apply closure",
        fibers as usize,
        calls,
        &fiber_run(|a| _ = black_box(a.apply(|a| a.deposit(1)))),
    );
    let shared = Arc::new(Mutex::new(Account::default()));
    bench.throughput(
        "one hot account, many callers",
        "std Mutex, OS threads",
        workers,
        calls,
        &|calls| {
            thread::scope(|s| {
                for _ in 0..workers {
                    let shared = &shared;
                    s.spawn(move || {
                        for _ in 0..calls / workers as u64 {
                            black_box(shared.lock().unwrap().deposit(1));
                        }
                    });
                }
            })
        },
    );

    // One plain thread pipelining non-blocking stubs against blocking ones.
    let batch = if quick { 20_000 } else { 100_000 };
    bench.throughput(
        "one plain thread, pipelined",
        "stub deposit_then",
        1,
        batch,
        &|calls| {
            for _ in 0..calls {
                acct.deposit_then(1, |b| _ = black_box(b));
            }
            wait_pending();
        },
    );
    bench.throughput(
        "one plain thread, pipelined",
        "blocking stub",
        1,
        batch,
        &|calls| {
            for _ in 0..calls {
                black_box(acct.deposit(1));
            }
        },
    );
    bench.table();
}
