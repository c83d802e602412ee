//! Configuration errors are errors, not panics: a bad `TRUST_WORKERS`, or a worker thread the OS refuses, make
//! `Runtime::builder().build()` return `Err` (and `runtime()` panic with the same message), leave no worker
//! thread behind, and let a later `build` start afresh. Also: the worker threads' stack size, and that a
//! runtime is never restarted after `shutdown`.
//!
//! A runtime is one per process and reads the environment when it starts, so each case runs in a child
//! process: this test binary re-executed on the test `child`, with the case in `TRUST_CONFIG_CHILD`. The child
//! prints what it observed on lines starting with `child> `; the parent checks them exactly.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Command, Output};

use trust_core::{Runtime, RuntimeError, runtime};

const CASE_VAR: &str = "TRUST_CONFIG_CHILD";
const PREFIX: &str = "child> ";

/// Runs this binary's `child` test in a new process with `case` and `env` (and no `TRUST_WORKERS` unless
/// `env` sets it).
fn run_child(case: &str, env: &[(&str, &std::ffi::OsStr)]) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env_remove("TRUST_WORKERS")
        .env(CASE_VAR, case)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// What the child reported (its `child> ` lines, without the prefix); fails the test if it did not pass.
fn child_report(case: &str, env: &[(&str, &std::ffi::OsStr)]) -> Vec<String> {
    let out = run_child(case, env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child {case} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| Some(l[l.find(PREFIX)? + PREFIX.len()..].to_owned()))
        .collect()
}

fn report(line: String) {
    println!("{PREFIX}{line}");
}

/// Worker threads of this process, by name, once the listing is settled: a joined thread can still be listed
/// for a moment, because the kernel wakes `join` (it clears the thread's id) before it removes the task.
fn worker_threads() -> Vec<String> {
    let mut last = list_worker_threads();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(10));
        let now = list_worker_threads();
        if now == last {
            return now;
        }
        last = now;
    }
}

fn list_worker_threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .filter(|name| name.starts_with("trust-worker"))
        .collect();
    names.sort();
    names
}

fn describe(result: &Result<&'static Runtime, RuntimeError>) -> String {
    match result {
        Ok(rt) => format!("Ok({} workers)", rt.workers()),
        Err(e) => format!("Err({e:?}): {e}"),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

/// The message of a bad `TRUST_WORKERS`, as `build` reports it.
fn bad_workers_message(value: &str) -> String {
    format!(
        "TRUST_WORKERS={value:?} is not a number of worker threads: expected a positive integer such as \
         TRUST_WORKERS=4 (or leave it unset for one worker per available CPU)"
    )
}

/// Bytes of a by-value capture. An unoptimized build moves a capture through some 20 stack frames on the
/// trustee (record, job, catch_unwind, the closure): measured, this one needs between 2 and 3 MiB of worker
/// stack there, more than a spawned std thread's 2 MiB, well within the default 8 MiB.
const BIG_CAPTURE: usize = 128 << 10;

/// Entrusts a number to trustee 0 and applies a closure capturing `BIG_CAPTURE` bytes by value, from a client
/// thread whose own stack is large enough to build the closure.
fn apply_big_capture(rt: &'static Runtime) -> u64 {
    let counter = rt.trustee(0).entrust(1u64);
    std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(move || {
            let big = [1u8; BIG_CAPTURE];
            counter.apply(move |c| {
                let big = std::hint::black_box(big);
                *c += big.iter().map(|&b| u64::from(b)).sum::<u64>();
                *c
            })
        })
        .unwrap()
        .join()
        .unwrap()
}

/// The child process's side of every case (in the parent, where `TRUST_CONFIG_CHILD` is unset, it does
/// nothing).
#[test]
fn child() {
    let Ok(case) = std::env::var(CASE_VAR) else {
        return;
    };
    match case.as_str() {
        // Workers pinned to core 0, then checked through each worker thread's allowed-CPU list.
        "pinned" => {
            let rt = Runtime::builder().workers(2).core_ids([0]).build().unwrap();
            rt.trustee(1).entrust(0u8).apply(|v| *v += 1);
            report(format!("allowed: {:?}", worker_cpus()));
        }
        "pin_workers" => {
            let rt = Runtime::builder()
                .workers(2)
                .pin_workers(true)
                .build()
                .unwrap();
            rt.trustee(1).entrust(0u8).apply(|v| *v += 1);
            report(format!("allowed: {:?}", worker_cpus()));
        }
        "no_such_core" => {
            let result = Runtime::builder().workers(2).core_ids([0, 100_000]).build();
            report(format!("build: {}", describe(&result)));
            report(format!("threads: {:?}", worker_threads()));
        }
        // `build` with the environment's TRUST_WORKERS, then a `build` that names its workers.
        "build" => {
            let first = Runtime::builder().build();
            report(format!("build: {}", describe(&first)));
            report(format!("threads: {:?}", worker_threads()));
            if first.is_err() {
                let second = Runtime::builder().workers(1).build();
                report(format!("then workers(1): {}", describe(&second)));
                report(format!("threads: {:?}", worker_threads()));
            }
        }
        // `runtime()` with the environment's TRUST_WORKERS.
        "runtime" => {
            let message = catch_unwind(runtime).map_or_else(panic_message, |rt| {
                format!("no panic: {} workers", rt.workers())
            });
            report(format!("runtime() panicked: {message}"));
            report(format!("threads: {:?}", worker_threads()));
        }
        // The third worker thread cannot get its stack: the address space is limited to what is in use
        // now plus two worker stacks and some heap.
        "spawn_fails" => {
            const STACK: u64 = 256 << 20;
            let mut old = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: plain system calls on a valid `rlimit`.
            unsafe { assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut old), 0) };
            let limit = libc::rlimit {
                rlim_cur: address_space() + 2 * STACK + STACK / 2,
                rlim_max: old.rlim_max,
            };
            // SAFETY: as above; lowering a soft limit is always allowed.
            unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &limit), 0) };
            let failed = Runtime::builder()
                .workers(16)
                .worker_stack_size(STACK as usize)
                .build();
            // SAFETY: as above; raising the soft limit back up to the unchanged hard limit is allowed.
            unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &old), 0) };
            match &failed {
                Err(e @ RuntimeError::Spawn(_)) => report(format!("build: Err(Spawn): {e}")),
                other => report(format!("build: {}", describe(other))),
            }
            report(format!("threads: {:?}", worker_threads()));
            let second = Runtime::builder().workers(2).build();
            report(format!("then workers(2): {}", describe(&second)));
            report(format!("threads: {:?}", worker_threads()));
            let answer = second.unwrap().trustee(1).entrust(40u64).apply(|v| *v + 2);
            report(format!("apply: {answer}"));
        }
        // Delegated closures run on the worker thread's own stack, big captures included.
        "big_capture" => {
            let stack: Option<usize> = std::env::var("WORKER_STACK")
                .ok()
                .map(|s| s.parse().unwrap());
            let mut builder = Runtime::builder().workers(1);
            if let Some(bytes) = stack {
                builder = builder.worker_stack_size(bytes);
            }
            let rt = builder.build().unwrap();
            report(format!("apply: {}", apply_big_capture(rt)));
        }
        // One runtime per process, for the process's whole life.
        "restart" => {
            let rt = Runtime::builder().workers(1).build().unwrap();
            rt.shutdown();
            report(format!("threads: {:?}", worker_threads()));
            report(format!(
                "build again: {}",
                describe(&Runtime::builder().build())
            ));
            report(format!(
                "runtime() is the stopped one: {}",
                std::ptr::eq(runtime(), rt)
            ));
            let entrust = catch_unwind(AssertUnwindSafe(|| rt.trustee(0).entrust(0u8)));
            report(format!(
                "entrust: {}",
                entrust.map_or_else(panic_message, |_| "Ok".into())
            ));
        }
        other => panic!("unknown case {other}"),
    }
}

/// Bytes of address space this process uses now (`VmSize`).
fn address_space() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

fn bad_value_is_an_error(value: &str) {
    let message = bad_workers_message(value);
    assert_eq!(
        child_report("build", &[("TRUST_WORKERS", os(value))]),
        [
            format!("build: Err(BadWorkersVar {{ value: {value:?} }}): {message}"),
            "threads: []".to_owned(),
            "then workers(1): Ok(1 workers)".to_owned(),
            "threads: [\"trust-worker-0\"]".to_owned(),
        ]
    );
}

#[test]
fn trust_workers_zero_is_an_error() {
    bad_value_is_an_error("0");
}

#[test]
fn trust_workers_not_a_number_is_an_error() {
    bad_value_is_an_error("abc");
}

#[test]
fn trust_workers_negative_is_an_error() {
    bad_value_is_an_error("-1");
}

#[test]
fn trust_workers_empty_is_an_error() {
    bad_value_is_an_error("");
}

#[test]
fn trust_workers_too_large_for_usize_is_an_error() {
    bad_value_is_an_error("18446744073709551616");
}

#[test]
fn trust_workers_not_utf8_is_an_error() {
    use std::os::unix::ffi::OsStrExt;
    let value = std::ffi::OsStr::from_bytes(b"4\xff");
    let message = bad_workers_message("4\u{fffd}");
    assert_eq!(
        child_report("build", &[("TRUST_WORKERS", value)])[0],
        format!("build: Err(BadWorkersVar {{ value: \"4\u{fffd}\" }}): {message}")
    );
}

#[test]
fn runtime_panics_with_the_same_message() {
    assert_eq!(
        child_report("runtime", &[("TRUST_WORKERS", os("abc"))]),
        [
            format!("runtime() panicked: {}", bad_workers_message("abc")),
            "threads: []".to_owned(),
        ]
    );
}

#[test]
fn trust_workers_with_spaces_around_is_read() {
    assert_eq!(
        child_report("build", &[("TRUST_WORKERS", os(" 3 "))]),
        [
            "build: Ok(3 workers)",
            "threads: [\"trust-worker-0\", \"trust-worker-1\", \"trust-worker-2\"]",
        ]
    );
}

#[test]
fn a_refused_worker_thread_is_an_error_and_stops_the_started_ones() {
    let report = child_report("spawn_fails", &[("MALLOC_ARENA_MAX", os("1"))]);
    assert_eq!(
        report,
        [
            "build: Err(Spawn): cannot start a trust worker thread: Resource temporarily unavailable (os error 11)",
            "threads: []",
            "then workers(2): Ok(2 workers)",
            "threads: [\"trust-worker-0\", \"trust-worker-1\"]",
            "apply: 42",
        ]
    );
}

#[test]
fn the_default_worker_stack_takes_a_big_capture() {
    assert_eq!(
        child_report("big_capture", &[]),
        [format!("apply: {}", 1 + BIG_CAPTURE)]
    );
}

#[test]
fn worker_stack_size_sets_the_worker_threads_stack() {
    // A bigger stack than the default takes the same capture...
    let big = (16usize << 20).to_string();
    assert_eq!(
        child_report("big_capture", &[("WORKER_STACK", os(&big))]),
        [format!("apply: {}", 1 + BIG_CAPTURE)]
    );
    // ...and a small one overflows: the process aborts, naming the worker.
    let small = (128usize << 10).to_string();
    let out = run_child("big_capture", &[("WORKER_STACK", os(&small))]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "stderr:\n{stderr}"
    );
    // "thread 'trust-worker-0' (<thread id>) has overflowed its stack"
    let line = stderr
        .lines()
        .find(|l| l.contains("overflowed"))
        .unwrap_or_default();
    assert!(
        line.starts_with("thread 'trust-worker-0' (")
            && line.ends_with(") has overflowed its stack"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn a_runtime_is_never_restarted() {
    assert_eq!(
        child_report("restart", &[]),
        [
            "threads: []".to_owned(),
            format!(
                "build again: Err(AlreadyStarted): {}",
                RuntimeError::AlreadyStarted
            ),
            "runtime() is the stopped one: true".to_owned(),
            "entrust: the trust runtime has been shut down: no property can be entrusted or applied to after \
             `Runtime::shutdown`"
                .to_owned(),
        ]
    );
}

/// Each worker thread's `Cpus_allowed_list`, in thread-name order.
fn worker_cpus() -> Vec<String> {
    let mut cpus: Vec<(String, String)> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| {
            let path = t.ok()?.path();
            let name = std::fs::read_to_string(path.join("comm"))
                .ok()?
                .trim_end()
                .to_owned();
            let status = std::fs::read_to_string(path.join("status")).ok()?;
            let allowed = status
                .lines()
                .find(|l| l.starts_with("Cpus_allowed_list:"))?;
            let allowed = allowed.split_whitespace().nth(1)?.to_owned();
            name.starts_with("trust-worker").then_some((name, allowed))
        })
        .collect();
    cpus.sort();
    cpus.into_iter().map(|(_, allowed)| allowed).collect()
}

/// The cores this process may run on, as the kernel lists them.
fn process_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))
        .unwrap();
    let mut cpus = Vec::new();
    for part in list.split_whitespace().nth(1).unwrap().split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

#[test]
fn workers_can_be_pinned_to_cores() {
    assert_eq!(child_report("pinned", &[]), ["allowed: [\"0\", \"0\"]"]);
    // `pin_workers(true)`: worker i on the i-th core this process may run on, round-robin.
    let cpus = process_cpus();
    let expected: Vec<String> = (0..2).map(|i| cpus[i % cpus.len()].to_string()).collect();
    assert_eq!(
        child_report("pin_workers", &[]),
        [format!("allowed: {expected:?}")]
    );
}

#[test]
fn pinning_to_a_core_that_does_not_exist_is_an_error() {
    let cpus = process_cpus();
    assert_eq!(
        child_report("no_such_core", &[]),
        [
            format!(
                "build: Err(NoSuchCore {{ core: 100000, available: {cpus:?} }}): cannot pin a trust worker to \
                 core 100000: this process may run on cores {cpus:?} only; pass ids from that list to \
                 `core_ids`, or use `pin_workers(true)`"
            ),
            "threads: []".to_owned(),
        ]
    );
}
