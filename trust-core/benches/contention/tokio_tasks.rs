//! `tokio`: async code. [`TASKS`] tasks on a [`THREADS`]-thread tokio runtime increment one shared counter,
//! through `Trust::apply_async`, a `tokio::sync::Mutex` and a `std::sync::Mutex`; ratios are taken to the
//! tokio mutex, what async code reaches for first.

use std::sync::Mutex;

use trust_core::{Runtime, Trust};

use crate::harness::{Bench, Padded, check};

const SCENARIO: &str = "tokio";

/// Tasks incrementing the counter.
const TASKS: usize = 1000;

/// Worker threads of the tokio runtime.
const THREADS: usize = 2;

pub fn run(b: &mut Bench, rt: &Runtime) {
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .build()
        .unwrap_or_else(|e| panic!("cannot start the tokio runtime: {e}"));
    let tokio_mutex: &'static Padded<tokio::sync::Mutex<u64>> =
        Box::leak(Box::new(Padded(tokio::sync::Mutex::new(0))));
    let std_mutex: &'static Padded<Mutex<u64>> = Box::leak(Box::new(Padded(Mutex::new(0))));
    let trust: &'static Trust<u64> = Box::leak(Box::new(rt.trustee(0).entrust(0u64)));

    let ops = b.tasks(
        SCENARIO,
        "tokio_mutex",
        &tokio_rt,
        THREADS,
        TASKS,
        |_, stop| async move {
            let mut i = 0;
            while stop.running() {
                *tokio_mutex.lock().await += 1;
                i += 1;
            }
            i
        },
    );
    check(
        SCENARIO,
        "tokio_mutex",
        THREADS,
        ops,
        *tokio_mutex.blocking_lock(),
    );

    let ops = b.tasks(
        SCENARIO,
        "std_mutex",
        &tokio_rt,
        THREADS,
        TASKS,
        |_, stop| async move {
            let mut i = 0;
            while stop.running() {
                *std_mutex.lock().unwrap() += 1;
                i += 1;
            }
            i
        },
    );
    check(
        SCENARIO,
        "std_mutex",
        THREADS,
        ops,
        *std_mutex.lock().unwrap(),
    );

    let ops = b.tasks(
        SCENARIO,
        "trust_async",
        &tokio_rt,
        THREADS,
        TASKS,
        |_, stop| async move {
            let mut i = 0;
            while stop.running() {
                trust.apply_async(|c| *c += 1).await;
                i += 1;
            }
            i
        },
    );
    check(SCENARIO, "trust_async", THREADS, ops, trust.apply(|c| *c));

    b.table_vs(
        SCENARIO,
        "tokio_mutex",
        &format!(
            "{TASKS} tasks on a {THREADS}-thread tokio runtime, one shared counter. `tokio_mutex`: \
             `*m.lock().await += 1`; `std_mutex`: `*m.lock().unwrap() += 1` from the same tasks (it never \
             awaits, so each tokio thread keeps one task running: see its fairness); `trust_async`: \
             `counter.apply_async(|c| *c += 1).await`, the counter on trustee 0 of the trust runtime."
        ),
    );
}
