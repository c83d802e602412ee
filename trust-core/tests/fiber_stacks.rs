//! Fiber stacks: tens of thousands of live fibers fit under Linux's default `vm.max_map_count`, and past the
//! stack budget `spawn` panics in its caller while the workers keep serving.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

mod common;
use common::*;
use trust_core::{Latch, Runtime, RuntimeError, spawn, yield_now};

const FIBERS: u64 = 40_000;

/// A figure of this process's `/proc/self/status`, in KiB (`VmRSS`, `VmPTE`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Parks a fiber until `open` is set.
fn wait_for(open: &AtomicBool) {
    while !open.load(Ordering::Acquire) {
        yield_now();
    }
}

/// Spawns `n` fibers, all live at once: each but the first joins the one spawned before it, the first waits
/// for `open`. The last one returns the sum of `0..n`.
fn spawn_chain(n: u64, open: &Arc<AtomicBool>) -> trust_core::Fiber<u64> {
    let open = open.clone();
    let mut last = spawn(move || {
        wait_for(&open);
        0
    });
    for i in 1..n {
        last = spawn(move || last.join().unwrap() + i);
    }
    last
}

#[test]
fn forty_thousand_live_fibers_all_finish() {
    rt();
    let limit = trust_core::__private::fiber_stack_limit() as u64;
    let n = FIBERS.min(limit);
    if n < FIBERS {
        eprintln!("this kernel guards stacks with mprotect (2 mappings each): only {n} fibers fit");
    }
    let open = Arc::new(AtomicBool::new(false));
    let last = spawn_chain(n, &open);
    open.store(true, Ordering::Release);
    assert_eq!(last.join().unwrap(), n * (n - 1) / 2);
}

/// How many fibers fit under this machine's `vm.max_map_count`, and what they cost (run by hand:
/// `cargo test --release -p trust-core --test fiber_stacks -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement: spawns fibers until the stack budget is spent"]
fn measure_live_fibers_at_the_limit() {
    if !is_child() {
        let out = run_in_child("measure_live_fibers_at_the_limit", &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "child failed: {}\n{stderr}",
            out.status
        );
        eprintln!(
            "{}",
            stderr
                .lines()
                .filter(|l| l.contains("live fibers"))
                .collect::<String>()
        );
        return;
    }
    rt();
    let (rss_before, pte_before) = (status_kib("VmRSS:"), status_kib("VmPTE:"));
    let open = Arc::new(AtomicBool::new(false));
    let n = trust_core::__private::fiber_stack_limit() as u64;
    let last = spawn_chain(n, &open);
    let (rss, pte) = (status_kib("VmRSS:"), status_kib("VmPTE:"));
    let mappings = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count();
    assert!(
        catch_unwind(|| spawn(|| 0)).is_err(),
        "the limit is reached"
    );
    eprintln!(
        "{n} live fibers, {mappings} mappings in the process, VmRSS {} MiB (+{:.1} KiB a fiber), page tables \
         +{:.1} KiB a fiber",
        rss / 1024,
        (rss - rss_before) as f64 / n as f64,
        (pte - pte_before) as f64 / n as f64,
    );
    open.store(true, Ordering::Release);
    assert_eq!(last.join().unwrap(), n * (n - 1) / 2);
}

const LOW_LIMIT: usize = 64;

#[test]
fn spawning_past_the_budget_panics_in_the_caller_and_the_workers_keep_serving() {
    if !is_child() {
        let out = run_in_child(
            "spawning_past_the_budget_panics_in_the_caller_and_the_workers_keep_serving",
            &[("TRUST_MAX_FIBER_STACKS", &LOW_LIMIT.to_string())],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "child failed: {}\n{stderr}",
            out.status
        );
        return;
    }
    rt();
    assert_eq!(trust_core::__private::fiber_stack_limit(), LOW_LIMIT);
    let open = Arc::new(AtomicBool::new(false));
    let fibers: Vec<_> = (0..LOW_LIMIT as u64)
        .map(|i| {
            let open = open.clone();
            spawn(move || {
                wait_for(&open);
                i
            })
        })
        .collect();

    let spawn_error = panic_message(catch_unwind(|| spawn(|| 0)).unwrap_err());
    for part in [
        "cannot start a fiber",
        "vm.max_map_count",
        "TRUST_MAX_FIBER_STACKS=64",
    ] {
        assert!(spawn_error.contains(part), "{spawn_error:?} lacks {part:?}");
    }
    // A launch takes its stack on the trustee: it fails in its caller, and the trustee lives on.
    let latched = rt().trustee(1).entrust(Latch::new(10u64));
    let launch_error = panic_message(
        catch_unwind(AssertUnwindSafe(|| latched.launch(|l| *l.lock()))).unwrap_err(),
    );
    assert_eq!(launch_error, spawn_error);

    open.store(true, Ordering::Release);
    let sum: u64 = fibers.into_iter().map(|f| f.join().unwrap()).sum();
    assert_eq!(sum, (0..LOW_LIMIT as u64).sum());
    for worker in 0..2 {
        assert_eq!(
            rt().trustee(worker).entrust(worker).apply(|w| *w + 1),
            worker + 1
        );
    }
    // The finished fibers' stacks are free again.
    assert_eq!(spawn(|| 7).join().unwrap(), 7);
    assert_eq!(latched.launch(|l| *l.lock() + 1), 11);
}

#[test]
fn a_bad_stack_limit_is_a_clear_error() {
    if !is_child() {
        let out = run_in_child(
            "a_bad_stack_limit_is_a_clear_error",
            &[("TRUST_MAX_FIBER_STACKS", "lots")],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("TRUST_MAX_FIBER_STACKS must be a positive integer")
                && stderr.contains("\"lots\"")
                && stderr.contains("the error build() returned"),
            "{stderr}"
        );
        return;
    }
    // `build` returns the error (it never panics); `runtime()` would panic with the same message.
    let err = Runtime::builder()
        .workers(2)
        .build()
        .expect_err("a bad TRUST_MAX_FIBER_STACKS");
    assert!(
        matches!(&err, RuntimeError::BadMaxFiberStacksVar { value } if value == "lots"),
        "{err:?}"
    );
    panic!("the error build() returned: {err}");
}
