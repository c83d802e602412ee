//! Fiber stacks: a hundred thousand live fibers fit under Linux's default `vm.max_map_count` (64 stacks to a
//! mapping), their memory goes back to the OS when they finish, and past the stack budget `spawn` panics in
//! its caller while the workers keep serving.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::*;
use trust_core::{Latch, Runtime, RuntimeError, spawn, yield_now};

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

/// Fibers live at once: 100,000 (20,000 under AddressSanitizer, whose own mappings and shadow memory make
/// it slow), more than a mapping per stack allowed (57,339 under the default `vm.max_map_count`).
const FIBERS: u64 = if cfg!(feature = "sanitizer") {
    20_000
} else {
    100_000
};

/// The memory mappings of this process.
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

/// `FIBERS` live fibers fit, in a few mappings (64 stacks to one), and once they are joined the pool gives
/// their stacks' pages back but for the 1,024 it keeps warm. In a child: its own process's figures.
#[test]
fn a_hundred_thousand_live_fibers_fit_and_give_their_memory_back() {
    if !is_child() {
        let out = run_in_child(
            "a_hundred_thousand_live_fibers_fit_and_give_their_memory_back",
            &[],
        );
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
    let n = FIBERS.min(trust_core::__private::fiber_stack_limit() as u64);
    if n < FIBERS {
        eprintln!("this kernel guards stacks with mprotect (2 mappings each): only {n} fibers fit");
    }
    let (maps_before, rss_before) = (mappings(), status_kib("VmRSS:"));
    let open = Arc::new(AtomicBool::new(false));
    let last = spawn_chain(n, &open);
    let (maps_live, rss_live) = (mappings(), status_kib("VmRSS:"));
    open.store(true, Ordering::Release);
    assert_eq!(last.join().unwrap(), n * (n - 1) / 2);
    if n == FIBERS {
        // A chunk per 64 stacks, and some for the allocator's growth.
        assert!(
            maps_live - maps_before <= n as usize / 64 + 200,
            "{maps_before} -> {maps_live} mappings"
        );
    }
    // The last stacks come back right after their fibers' results: wait for the pool to have them all. Not
    // under AddressSanitizer, whose shadow memory of the stacks grows as the fibers end (measured: VmRSS 13,
    // 153 and 1,694 MiB) and stays.
    let grown = if cfg!(feature = "sanitizer") {
        u64::MAX
    } else {
        rss_live - rss_before
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let rss_after = loop {
        let rss = status_kib("VmRSS:");
        if rss.saturating_sub(rss_before) < grown / 4 || Instant::now() > deadline {
            break rss;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!(
        "{n} live fibers: mappings {maps_before} -> {maps_live}; VmRSS {rss_before} KiB -> {rss_live} -> \
         {rss_after} once joined"
    );
    assert!(
        cfg!(feature = "sanitizer") || rss_after.saturating_sub(rss_before) < grown / 4,
        "VmRSS {rss_before} KiB, {rss_live} with the fibers live, {rss_after} after they were joined"
    );
    // The pooled stacks serve new fibers.
    let again = spawn_chain(1_000, &open);
    assert_eq!(again.join().unwrap(), 1_000 * 999 / 2);
    println!("CHILD-OK");
}

/// What a million live fibers cost (or as many as the stack budget allows, if fewer), and that one more
/// `spawn` past the budget panics (run by hand: `cargo test --release -p trust-core --test fiber_stacks --
/// --ignored --nocapture`; it takes about 5 GiB).
#[test]
#[ignore = "a measurement: spawns a million fibers"]
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
    let limit = trust_core::__private::fiber_stack_limit() as u64;
    let n = limit.min(1_000_000);
    let last = spawn_chain(n, &open);
    let (rss, pte) = (status_kib("VmRSS:"), status_kib("VmPTE:"));
    let mappings = mappings();
    if n == limit {
        assert!(
            catch_unwind(|| spawn(|| 0)).is_err(),
            "the limit is reached"
        );
    }
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

/// Huge stacks are carved fewer to a mapping (at most 64 MiB of stacks, or one): 64 stacks of 1 GiB in one
/// `mmap` would pass what the kernel's overcommit heuristic allows a single mapping on a machine with less
/// memory, where one of them does not. Eight live fibers with 1 GiB stacks, each using some of it.
#[test]
fn fibers_with_huge_stacks_run() {
    if !is_child() {
        return expect_child_ok("fibers_with_huge_stacks_run", &[]);
    }
    Runtime::builder()
        .workers(2)
        .fiber_stack_size(1 << 30)
        .build()
        .expect("runtime");
    let open = Arc::new(AtomicBool::new(false));
    let fibers: Vec<_> = (0..8u64)
        .map(|i| {
            let open = open.clone();
            spawn(move || {
                let buf = std::hint::black_box([i as u8; 64 * 1024]);
                wait_for(&open);
                buf.iter().map(|&b| u64::from(b)).sum::<u64>()
            })
        })
        .collect();
    open.store(true, Ordering::Release);
    let sums: Vec<u64> = fibers.into_iter().map(|f| f.join().unwrap()).collect();
    assert_eq!(sums, (0..8).map(|i| i * 64 * 1024).collect::<Vec<u64>>());
    println!("CHILD-OK");
}
