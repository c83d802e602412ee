//! Shared by the delegation test binaries: each binary is a process with one runtime of 2 workers.

#![allow(dead_code)] // each test binary uses part of it

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use trust_core::{Runtime, Trust, wait_pending};

/// This process's runtime: 2 workers, whatever the machine.
pub fn rt() -> &'static Runtime {
    static RT: OnceLock<&'static Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::builder()
            .workers(2)
            .build()
            .expect("first runtime of this process")
    })
}

/// The message of a panic payload (`panic!` with or without arguments).
pub fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

/// Counts its drops.
#[derive(Debug)]
pub struct CountsDrops(pub Arc<AtomicUsize>);

impl Drop for CountsDrops {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Counts its drop, then panics: a result, capture or panic payload whose destructor panics.
pub struct PanicsOnDrop(pub Arc<AtomicUsize>);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("PanicsOnDrop");
    }
}

/// Set in a child process started by [`run_in_child`].
pub const CHILD: &str = "TRUST_TEST_CHILD";

/// True in the child process of [`run_in_child`].
pub fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// Runs test `name` of this test binary again in a child process (a fresh runtime, its own configuration,
/// and a crash that cannot take the other tests with it), with `env` set; returns its output.
pub fn run_in_child(name: &str, env: &[(&str, &str)]) -> std::process::Output {
    let exe = std::env::current_exe().expect("the test binary's path");
    std::process::Command::new(exe)
        .args([
            "--exact",
            name,
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(CHILD, "1")
        .envs(env.iter().copied())
        .output()
        .expect("the test binary runs again")
}

/// Issues `rounds` pairs of `apply_then`s on `t` and waits for them: continuations small enough to wait
/// inline beside ones whose 128-byte captures need a box, results of 24 bytes and boxed ones (over 256 bytes),
/// wherever the caller runs (a plain thread, a fiber on `t`'s worker: the local shortcut, a fiber elsewhere).
/// Every continuation sees its own capture and result, in issue order, and each capture is dropped once.
pub fn inline_and_boxed_continuations(t: &Trust<u64>, rounds: u64) {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let drops = Arc::new(AtomicUsize::new(0));
    for i in 0..rounds {
        let (s, d) = (seen.clone(), CountsDrops(drops.clone()));
        t.apply_then(
            move |c| {
                *c += 1;
                i
            },
            move |r| {
                let _d = d;
                s.borrow_mut().push(r);
            },
        );
        let (s, d, big) = (seen.clone(), CountsDrops(drops.clone()), [i; 16]);
        t.apply_then(
            move |_| [i * 2; 40],
            move |r| {
                let _d = d;
                s.borrow_mut().push(big.iter().sum::<u64>() / 16 + r[39]);
            },
        );
    }
    wait_pending();
    let want: Vec<u64> = (0..rounds).flat_map(|i| [i, 3 * i]).collect();
    assert_eq!(*seen.borrow(), want);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        2 * rounds as usize,
        "each capture dropped once"
    );
}

/// A counter's value (`SeqCst`).
pub fn load(n: &AtomicUsize) -> usize {
    n.load(Ordering::SeqCst)
}

/// Waits (up to 20 s) until `done()` holds, failing the test with `what` if it never does.
pub fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// [`rt`], with panics on its worker threads (provoked by the tests, caught by the runtime) kept off stderr.
pub fn quiet() -> &'static Runtime {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let old = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("trust-worker"))
            {
                old(info);
            }
        }));
    });
    rt()
}

/// Runs test `name` in a child process ([`run_in_child`]) with `env`; fails unless it exits 0 having printed `CHILD-OK`.
pub fn expect_child_ok(name: &str, env: &[(&str, &str)]) {
    let out = run_in_child(name, env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(50).collect();
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child {name} failed ({})\n--- stdout\n{stdout}\n--- stderr (tail)\n{}",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

/// Runs `f` on a thread of its own and fails the test if it does not finish within `secs` seconds (a hang
/// becomes a failure; under Miri, which runs far slower, the limit is 10 minutes).
pub fn within<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    let secs = if cfg!(miri) { 600 } else { secs };
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(Ok(r)) => r,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("HUNG: no answer within {secs} s"),
    }
}

/// CPU time (utime + stime, in clock ticks of 10 ms) of the worker threads together.
pub fn worker_cpu_ticks() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| {
            let path = t.ok()?.path();
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            name.starts_with("trust-worker")
                .then(|| fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap())
        })
        .sum()
}

/// Occupies trustee `index` with a closure that sleeps `ms` milliseconds, on a helper thread; returns once the
/// closure runs (join the handle to wait for its end).
pub fn stall(index: usize, ms: u64) -> std::thread::JoinHandle<()> {
    let t = rt().trustee(index).entrust(());
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        t.apply(move |_| {
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(ms));
        })
    });
    rx.recv().unwrap();
    h
}
