//! Review 31: programs written to break the promises of the runtime when the process around it turns hostile.
//!
//! Attacked here: `std::process::exit` from a value's destructor while the runtime shuts down (explicitly, and
//! at exit, with main in `exit` too), from a panic hook on a worker, and from a plain thread while another is
//! blocked in `apply` and a third holds `apply_then`s unpublished (exit from a fiber, a delegated closure and
//! a continuation on a worker: `tests/adversarial_more.rs`); panic hooks that delegate on the worker where a
//! delegated closure panics, and one that suspends its fiber; `fork` after the runtime started (an `apply`
//! in the child, `exit` in the child, the parent's runtime after both); `RLIMIT_AS` lowered while the runtime
//! runs, then fibers spawned until `spawn` fails; a daemon-style close of every inherited descriptor (the
//! workers' epoll sets and eventfds); thread-local destructors that delegate after the runtime's own client
//! thread-local is destroyed. Not attacked: `RLIMIT_NPROC` (not enforced for this container's root, which has
//! `CAP_SYS_RESOURCE`; the runtime starts no thread after `build` anyway: a plain-thread or `may` client
//! needs none of its own, and `may`'s own threads are `may`'s); a panic hook that panics (std aborts any
//! process for that, as for any panic while the hook runs).
//!
//! Findings, fixed (each test failed before its fix and passes after):
//! - `exit_in_a_forked_child_is_prompt`: `exit` in a process forked after the runtime started ran the at-exit
//!   `Runtime::shutdown`, which waited its full 5 s for workers that `fork` did not copy (exit 12 after
//!   5.004 s; now under 1 s).
//! - `apply_in_a_forked_child_does_not_hang`: an `apply` in a forked child hung forever (killed after 3 s): no
//!   worker serves it. Now a `pthread_atfork` child handler closes every trustee in the child, as a shutdown
//!   does (the at-exit hook and `shutdown` return at once there), and every use panics at once naming `fork`:
//!   `apply`, `apply_then`, `spawn`, the `join` of a fiber the parent started; a handle's drop does nothing.
//!   No cost on the request path: the check is the one every call makes for a shutdown.
//! - `apply_after_the_workers_descriptors_were_closed_does_not_hang`: closing every descriptor from 3 up (a
//!   daemon's "close inherited descriptors", which breaks Rust's I/O safety) closed the workers' epoll sets and
//!   eventfds; each worker's next sleep got EBADF from `epoll_wait`, panicked ("trust: a worker's epoll_wait
//!   failed") and its thread ended; every later `apply` hung (no answer in 5 s). Now the worker says so once
//!   and naps 1 ms at a time instead: requests are served (each within a nap), deadlines fire; only a fiber
//!   waiting for a socket's readiness is no longer woken by it. (A descriptor number reused meanwhile by a file
//!   the program opens would receive the wakers' 8-byte writes: what breaking I/O safety costs.)
//! - `wait_pending_in_a_thread_local_destructor_after_the_client_is_gone`: a thread-local destructor that runs
//!   after the runtime's client thread-local (registered before it) got a fresh client context for every
//!   call, dropped at the call's end: its 10 `apply_then`s ran but their continuations never did (0 of 10 after
//!   `wait_pending`, which found nothing outstanding), and a continuation's panic was lost ("nothing" resumed).
//!   Same in `a_continuation_capture_dropped_at_thread_exit_delegates_and_waits`: a continuation dropped unrun
//!   at thread exit (during the client thread-local's own destruction) whose capture's `Drop` does `apply_then`
//!   and `wait_pending`: the continuation never ran (20 of 20 threads). Such calls now share a second
//!   thread-local client (`LATE_CLIENT`, in `call.rs`), made then and destroyed after them.
//! - `spawn_past_a_lowered_address_space_limit_panics_in_the_caller`: `spawn`'s panic when `mmap` fails under a
//!   lowered `RLIMIT_AS` (after 128 fibers) said "memory is short" but not the limit; it now names `ulimit -v`
//!   (`RLIMIT_AS`). Everything else held: the panic is in the caller, the 128 fibers ran to their end.
//! - `a_panic_hooks_apply_to_another_trustee_on_a_worker_says_why_it_aborts`: a panic hook that logs through a
//!   blocking `apply` to another trustee, run on the worker where a delegated closure panicked: that `apply`
//!   panics (as documented), and std aborts on a panic inside the hook without printing its message, so the
//!   process died (SIGABRT) saying only "panicked at trust-core/src/delegation/call.rs:238:9: thread panicked
//!   while processing panic". `nested_blocking` now prints its message first when the thread is already
//!   panicking (the message names `apply_then`). The abort itself is std's.
//!
//! Findings, not fixed (ignored tests, each fails with `--ignored`):
//! - `exit_from_a_values_drop_during_at_exit_shutdown_ends_promptly`: main's `exit(3)` runs the at-exit
//!   shutdown; a value's destructor calls `exit(9)` on a worker; std makes that second `exit` block forever
//!   (it serializes `exit` because glibc's is not thread-safe), so the shutdown waits its 5 s for that worker:
//!   exit code 3 after 5.02 s, the `exit(9)` lost. The runtime cannot tell a destructor stuck in `exit` from
//!   a slow one; a shorter wait at exit is a trade-off (values dropped late would be cut off). README states it.
//! - `a_fiber_suspended_in_the_panic_hook_and_another_panic_on_its_worker`: a panic hook that makes a blocking
//!   `apply` to a busy trustee from a fiber suspends the fiber *inside the hook*; std's per-thread "in the panic
//!   hook" flag stays set on the worker, and the next panic there (a delegated closure's, which the runtime
//!   would catch) aborts the process: SIGABRT, "thread panicked while processing panic". Same root as the
//!   known limitation of `tests/adversarial_review29.rs` (fibers share std's panic count); a fix would have
//!   the fiber not suspend while `std::thread::panicking()` (block the worker, or panic: both design
//!   decisions). README's known-limitation paragraph now names it.
//!
//! Promises that held: `exit` in a value's destructor during an explicit shutdown (code 9, at once), in a
//! panic hook on a worker (code 6), from a plain thread with a blocked `apply` and unpublished `apply_then`s
//! (code 4 in under 3 s, both values dropped once, the running closure finished); a panic hook that `apply`s
//! to another property of its trustee and `apply_then`s to the other trustee and to the panicking property
//! (100 panics, each resumed, each counter exactly 100); a panic hook on a plain thread that `apply`s and
//! `apply_then`s while 100 of its continuations panic (`wait_pending` resumes "cont" once, then nothing; each
//! count exactly 100); the parent's runtime after a fork.
//!
//! Every test runs in a child process of its own, one at a time, under a watchdog.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

#[macro_use]
mod common;
use common::*;
use trust_core::{Trust, spawn};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a child test process ended: its exit code (`None`: killed by a signal), how long it took, its stderr.
struct Ended {
    code: Option<i32>,
    signal: Option<i32>,
    took: Duration,
    stderr: String,
}

/// Runs test `name` in a child process (killed, failing the test with `HUNG`, after `secs` seconds).
fn ended(name: &str, secs: u64) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    let begun = Instant::now();
    let out = child_output(name, &[], secs);
    Ended {
        code: out.status.code(),
        signal: out.status.signal(),
        took: begun.elapsed(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Ended {
    fn tail(&self) -> String {
        let tail: Vec<&str> = self.stderr.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Fails unless the child exited with `code` within `secs` seconds.
    fn expect(&self, code: i32, secs: u64, what: &str) {
        assert!(
            self.code == Some(code) && self.took < Duration::from_secs(secs),
            "{what}: expected exit code {code} within {secs} s, got code {:?} (signal {:?}) after {:?}\n--- stderr \
             (tail)\n{}",
            self.code,
            self.signal,
            self.took,
            self.tail()
        );
    }
}

/// Prints one line per drop to stderr (unbuffered): `DROPPED <tag>`.
struct Loud(&'static str);

impl Drop for Loud {
    fn drop(&mut self) {
        eprintln!("DROPPED {}", self.0);
    }
}

/// Exits the process with `code` when dropped.
struct ExitsOnDrop(i32);

impl Drop for ExitsOnDrop {
    fn drop(&mut self) {
        eprintln!("EXITING {}", self.0);
        std::process::exit(self.0);
    }
}

// ---------------------------------------------------------------------------------------------------------
// 1. `std::process::exit` from inside the runtime.

/// `exit(9)` from the destructor of an entrusted value, run on its worker by an explicit `Runtime::shutdown`
/// from main: the at-exit hook runs on the worker and must skip the shutdown (it would wait for itself), so the
/// process exits with 9, promptly; the value dropped before it (same trustee, entrusted first) is dropped once.
#[test]
fn exit_from_a_values_drop_during_explicit_shutdown_exits_with_its_code() {
    let _s = serial();
    if !is_child() {
        let e = ended(
            "exit_from_a_values_drop_during_explicit_shutdown_exits_with_its_code",
            30,
        );
        e.expect(9, 4, "exit(9) in a value's drop during shutdown");
        assert_eq!(e.stderr.matches("EXITING 9").count(), 1, "{}", e.tail());
        assert!(!e.stderr.contains("SHUTDOWN RETURNED"), "{}", e.tail());
        return;
    }
    watchdog("exit_from_a_values_drop_during_explicit_shutdown", 20);
    let rt = quiet();
    let a = rt.trustee(1).entrust(ExitsOnDrop(9));
    a.apply(|_| ());
    std::mem::forget(a);
    rt.shutdown();
    eprintln!("SHUTDOWN RETURNED");
    thread::sleep(Duration::from_secs(10));
    std::process::exit(1);
}

/// `exit(9)` from the destructor of an entrusted value, run on its worker by the shutdown that the at-exit hook
/// runs when main calls `exit(3)`: two threads in `exit` at once (undefined in C; glibc serializes them). The
/// process must end promptly (not after the shutdown's 5-second wait for the worker that is stuck in `exit`),
/// with one of the two codes, and the other trustee's value dropped exactly once.
#[test]
#[ignore = "review 31: exit() in a value's drop at the at-exit shutdown blocks forever (std serializes exit); the process ends with main's code after the 5 s shutdown timeout"]
fn exit_from_a_values_drop_during_at_exit_shutdown_ends_promptly() {
    let _s = serial();
    if !is_child() {
        let e = ended(
            "exit_from_a_values_drop_during_at_exit_shutdown_ends_promptly",
            30,
        );
        assert!(
            matches!(e.code, Some(3 | 9)) && e.took < Duration::from_secs(4),
            "exit(3) from main, exit(9) in a value's drop at the at-exit shutdown: code {:?} (signal {:?}) after \
             {:?}\n{}",
            e.code,
            e.signal,
            e.took,
            e.tail()
        );
        assert_eq!(e.stderr.matches("EXITING 9").count(), 1, "{}", e.tail());
        assert!(
            e.stderr.matches("DROPPED other").count() <= 1,
            "{}",
            e.tail()
        );
        return;
    }
    watchdog("exit_from_a_values_drop_during_at_exit_shutdown", 20);
    let rt = quiet();
    let a = rt.trustee(1).entrust(ExitsOnDrop(9));
    let b = rt.trustee(0).entrust(Loud("other"));
    a.apply(|_| ());
    b.apply(|_| ());
    std::mem::forget((a, b));
    std::process::exit(3);
}

/// `exit(6)` from a panic hook that runs on a worker (a delegated closure panicked there): exits with 6.
#[test]
fn exit_from_a_panic_hook_on_a_worker_exits_with_its_code() {
    let _s = serial();
    if !is_child() {
        let e = ended("exit_from_a_panic_hook_on_a_worker_exits_with_its_code", 30);
        e.expect(6, 4, "exit(6) in a panic hook on a worker");
        return;
    }
    watchdog("exit_from_a_panic_hook_on_a_worker", 20);
    let rt = quiet();
    std::panic::set_hook(Box::new(|_| std::process::exit(6)));
    let t = rt.trustee(0).entrust(0u64);
    let _ = catch_unwind(AssertUnwindSafe(|| t.apply(|_| panic!("boom"))));
    eprintln!("APPLY RETURNED");
    std::process::exit(1);
}

/// `exit(4)` from a plain thread while a second thread is blocked in `apply` (its closure runs 300 ms on
/// trustee 0) and a third has 20 `apply_then`s unpublished (fewer than the 48 a publish takes) and waits on a
/// barrier: the process exits with 4 within 3 s, the at-exit shutdown drops each of the two entrusted values
/// once, and the blocked `apply`'s closure ran to its end (the shutdown answers what was sent).
#[test]
fn exit_from_a_plain_thread_with_a_blocked_apply_and_unpublished_apply_thens() {
    let _s = serial();
    if !is_child() {
        let e = ended(
            "exit_from_a_plain_thread_with_a_blocked_apply_and_unpublished_apply_thens",
            30,
        );
        e.expect(4, 3, "exit(4) from a plain thread");
        assert_eq!(e.stderr.matches("DROPPED zero").count(), 1, "{}", e.tail());
        assert_eq!(e.stderr.matches("DROPPED one").count(), 1, "{}", e.tail());
        assert_eq!(e.stderr.matches("CLOSURE ENDED").count(), 1, "{}", e.tail());
        return;
    }
    watchdog("exit_from_a_plain_thread_with_a_blocked_apply", 20);
    let rt = quiet();
    let zero = rt.trustee(0).entrust((0u64, Loud("zero")));
    let one = rt.trustee(1).entrust((0u64, Loud("one")));
    let (started_tx, started_rx) = mpsc::channel();
    let z = zero.clone();
    thread::spawn(move || {
        z.apply(move |v| {
            started_tx.send(()).unwrap();
            thread::sleep(Duration::from_millis(300));
            v.0 += 1;
            eprintln!("CLOSURE ENDED");
        });
        eprintln!("APPLY RETURNED");
    });
    started_rx.recv().unwrap();
    let issued = Arc::new(Barrier::new(2));
    let (o, i2) = (one.clone(), issued.clone());
    thread::spawn(move || {
        o.apply(|v| v.0 += 1);
        for _ in 0..20 {
            o.apply_then(|v| v.0 += 1, |()| ());
        }
        i2.wait();
        thread::sleep(Duration::from_secs(3600));
    });
    issued.wait();
    drop((zero, one));
    thread::spawn(|| std::process::exit(4)).join().unwrap();
    unreachable!();
}

// ---------------------------------------------------------------------------------------------------------
// 2. Panic hooks that delegate, on the worker where a delegated closure panics.

/// Handles the hook of `a_panic_hook_that_delegates_on_the_worker` uses: another property of trustee 0, one
/// of trustee 1, and the property whose closure panics.
static HOOKED: OnceLock<(Trust<u64>, Trust<u64>, Trust<u64>)> = OnceLock::new();

fn payload_is(info: &std::panic::PanicHookInfo<'_>, what: &str) -> bool {
    let p: &dyn Any = info.payload();
    p.downcast_ref::<&str>() == Some(&what)
}

/// Promise ("Any user code the trustee runs is contained"; `apply` inside a delegated closure to another
/// property of the same trustee runs inline, `apply_then` is allowed there): a panic hook that, on the worker
/// where a delegated closure panics, `apply`s to another property of that trustee, and `apply_then`s to a
/// property of the other trustee and to the panicking property itself. 100 panics: each `apply` resumes its
/// panic ("boom"), and the three counters reach exactly 100.
#[test]
fn a_panic_hook_that_delegates_on_the_worker() {
    let _s = serial();
    in_child!("a_panic_hook_that_delegates_on_the_worker", 60);
    let rt = rt();
    let side = rt.trustee(0).entrust(0u64);
    let far = rt.trustee(1).entrust(0u64);
    let bad = rt.trustee(0).entrust(0u64);
    assert!(HOOKED.set((side.clone(), far.clone(), bad.clone())).is_ok());
    std::panic::set_hook(Box::new(|info| {
        if payload_is(info, "boom") {
            let (side, far, bad) = HOOKED.get().unwrap();
            side.apply(|c| *c += 1);
            far.apply_then(|c| *c += 1, |()| ());
            bad.apply_then(|c| *c += 1, |()| ());
        }
    }));
    for i in 0..100 {
        let r = catch_unwind(AssertUnwindSafe(|| bad.apply(|_| panic!("boom"))));
        let msg = r.map_or_else(panic_message, |()| "no panic".into());
        assert_eq!(msg, "boom", "apply {i}: the closure's panic resumed");
    }
    assert_eq!(side.apply(|c| *c), 100, "the hook's inline applies");
    eventually("the hook's apply_thens on trustee 1 ran", || {
        far.apply(|c| *c) == 100
    });
    eventually(
        "the hook's apply_thens on the panicking property ran",
        || bad.apply(|c| *c) == 100,
    );
    thread::sleep(Duration::from_millis(50));
    assert_eq!((far.apply(|c| *c), bad.apply(|c| *c)), (100, 100));
    child_ok();
}

static FAR: OnceLock<Trust<u64>> = OnceLock::new();

/// Promise ("a panic [in user code the trustee runs] never stops a trustee"; fibers may block in `apply`):
/// a fiber on worker 0 panics, and the panic hook, running on that fiber, makes a blocking `apply` to trustee
/// 1, which is busy for 500 ms, so the fiber suspends *inside the hook*. Meanwhile a delegated closure on
/// worker 0 panics. That panic must be caught by the runtime and resumed in its caller ("boom"), and the
/// fiber's `join` must return its own panic ("fiber-boom").
#[test]
fn a_fiber_suspended_in_the_panic_hook_and_another_panic_on_its_worker() {
    let _s = serial();
    in_child!(
        "a_fiber_suspended_in_the_panic_hook_and_another_panic_on_its_worker",
        60
    );
    let rt = rt();
    calibrate();
    let far = rt.trustee(1).entrust(0u64);
    assert!(FAR.set(far.clone()).is_ok());
    let in_hook = Arc::new(AtomicBool::new(false));
    let ih = in_hook.clone();
    std::panic::set_hook(Box::new(move |info| {
        if payload_is(info, "fiber-boom") {
            ih.store(true, Ordering::SeqCst);
            FAR.get().unwrap().apply(|c| *c += 1);
        }
    }));
    let busy = stall(1, 500);
    let fiber = spawn_on(0, || -> () { panic!("fiber-boom") });
    eventually("the fiber is in the hook", || {
        in_hook.load(Ordering::SeqCst)
    });
    let bad = rt.trustee(0).entrust(0u64);
    let r = catch_unwind(AssertUnwindSafe(|| bad.apply(|_| panic!("boom"))));
    assert_eq!(r.map_or_else(panic_message, |()| "no panic".into()), "boom");
    let joined = fiber.join();
    assert_eq!(
        joined.map_or_else(panic_message, |()| "no panic".into()),
        "fiber-boom"
    );
    busy.join().unwrap();
    assert_eq!(far.apply(|c| *c), 1);
    assert_eq!(bad.apply(|c| *c), 0);
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 3. fork() after the runtime has started.

/// After `fork`, the child has no worker threads: a request there can never be served. Before, an `apply` in
/// the child (from a thread that was already a client, so its channel exists) hung forever (killed after 3 s).
/// Now the trustees are closed in the child (a `pthread_atfork` handler) and every use panics at once with a
/// message that names `fork`: a blocking `apply`, an `apply_then`, `spawn`, and the `join` of a fiber the parent
/// had started; dropping a handle does nothing there, and `shutdown` returns at once. Each check is a bit of the
/// grandchild's exit code (all set: 31; 70: something else panicked). In the parent the runtime keeps working.
#[test]
fn apply_in_a_forked_child_does_not_hang() {
    let _s = serial();
    in_child!("apply_in_a_forked_child_does_not_hang", 60);
    let rt = rt();
    let v = rt.trustee(0).entrust(41u64);
    assert_eq!(v.apply(|c| *c + 1), 42);
    let sleeper = spawn(|| trust_core::sleep(Duration::from_millis(500)));
    let v2 = v.clone();
    let (code, took) = forked(3, move || {
        let mut code = 0;
        if names_fork(catch_unwind(AssertUnwindSafe(|| {
            v2.apply(|c| *c += 1);
        }))) {
            code |= 1;
        }
        if names_fork(catch_unwind(AssertUnwindSafe(|| {
            v2.apply_then(|c| *c + 1, drop);
            trust_core::wait_pending();
        }))) {
            code |= 2;
        }
        if names_fork(catch_unwind(|| drop(spawn(|| 1)))) {
            code |= 4;
        }
        if names_fork(catch_unwind(AssertUnwindSafe(|| drop(sleeper.join())))) {
            code |= 8;
        }
        let begun = Instant::now();
        drop(v2);
        trust_core::runtime().shutdown();
        if begun.elapsed() < Duration::from_millis(100) {
            code |= 16;
        }
        code
    });
    assert_eq!(
        v.apply(|c| *c + 1),
        42,
        "the parent's runtime after the fork"
    );
    assert_eq!(
        code,
        Some(31),
        "the grandchild's exit code (None: still running after {took:?}, killed; 70: an unexpected panic; bits: \
         1 apply, 2 apply_then, 4 spawn, 8 join panicked naming fork, 16 drop and shutdown were prompt)"
    );
    child_ok();
}

/// `exit(12)` in a process forked after the runtime started, with no delegation in it: the at-exit hook must
/// not run a shutdown that waits for worker threads the fork did not copy. Expected: exit code 12 within
/// 1 s; the parent's runtime keeps working (the child shares its workers' wake-up `eventfd`s and epoll sets).
#[test]
fn exit_in_a_forked_child_is_prompt() {
    let _s = serial();
    in_child!("exit_in_a_forked_child_is_prompt", 60);
    let rt = rt();
    let v = rt.trustee(0).entrust(41u64);
    assert_eq!(v.apply(|c| *c + 1), 42);
    let (code, took) = forked(10, || std::process::exit(12));
    assert_eq!(
        v.apply(|c| *c + 1),
        42,
        "the parent's runtime after the fork"
    );
    let fibers: Vec<_> = (0..100)
        .map(|_| {
            let v = v.clone();
            spawn(move || v.apply(|c| *c += 1))
        })
        .collect();
    for f in fibers {
        f.join().unwrap();
    }
    assert_eq!(v.apply(|c| *c), 141);
    assert!(
        code == Some(12) && took < Duration::from_secs(1),
        "exit(12) in the forked child: code {code:?} after {took:?} (the at-exit shutdown waits 5 s for workers \
         that are not there)"
    );
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 4. Resource limits lowered while the runtime runs.

/// The process's address space now (VmSize), in bytes.
fn address_space() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Promise ("Past the limit (memory, ...), `spawn` panics *in the caller*, naming the limit ...; running
/// fibers are unaffected"): `RLIMIT_AS` lowered to what the process uses plus 48 MiB while the runtime runs,
/// then fibers that wait on a flag are spawned until `spawn` fails. The failure must be a panic in the caller
/// naming `mmap` and `fiber_stack_size`, after at least 64 fibers (one chunk fits) and at most 20,000; once
/// the limit is raised again, every fiber spawned runs to its end (exact count), and `spawn` works again.
#[test]
fn spawn_past_a_lowered_address_space_limit_panics_in_the_caller() {
    let _s = serial();
    in_child!(
        "spawn_past_a_lowered_address_space_limit_panics_in_the_caller",
        60
    );
    let rt = rt();
    let v = rt.trustee(1).entrust(0u64);
    v.apply(|c| *c += 1);
    let stop = Arc::new(AtomicBool::new(false));
    let ended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut fibers = Vec::with_capacity(20_001);
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a valid `rlimit`.
    unsafe { assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut old), 0) };
    let low = libc::rlimit {
        rlim_cur: address_space() + (48 << 20),
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above; lowering a soft limit is always allowed.
    unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &low), 0) };
    let mut failure = None;
    for _ in 0..20_000 {
        let (stop, ended, v) = (stop.clone(), ended.clone(), v.clone());
        match catch_unwind(AssertUnwindSafe(|| {
            spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    trust_core::sleep(Duration::from_millis(1));
                }
                v.apply(|c| *c += 1);
                ended.fetch_add(1, Ordering::SeqCst);
            })
        })) {
            Ok(f) => fibers.push(f),
            Err(p) => {
                failure = Some(panic_message(p));
                break;
            }
        }
    }
    // SAFETY: as above; raising the soft limit back up to the unchanged hard limit is allowed.
    unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &old), 0) };
    let spawned = fibers.len();
    let msg =
        failure.unwrap_or_else(|| panic!("{spawned} fibers spawned under the limit, no failure"));
    assert!(
        msg.contains("mmap") && msg.contains("RLIMIT_AS") && msg.contains("fiber_stack_size"),
        "spawn's panic does not name the limit: {msg:?}"
    );
    assert!(
        (64..20_000).contains(&spawned),
        "{spawned} fibers spawned before the failure"
    );
    stop.store(true, Ordering::SeqCst);
    for f in fibers {
        f.join().unwrap();
    }
    assert_eq!(load(&ended), spawned, "every spawned fiber ran to its end");
    assert_eq!(v.apply(|c| *c), 1 + spawned as u64);
    assert_eq!(
        spawn(|| 7).join().unwrap(),
        7,
        "spawn after the limit is raised"
    );
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 5. The process takes the runtime's file descriptors away.

/// Closes every file descriptor of this process from 3 up (what a daemon does after it started: "close all
/// inherited descriptors"), the workers' epoll sets and wake-up eventfds among them.
fn close_all_from_3() {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: closing a descriptor frees nothing Rust owns here but the runtime's, which is the point.
        unsafe { libc::close(fd) };
    }
}

/// A daemon-style "close every inherited descriptor" after the runtime started (the workers' epoll sets and
/// eventfds go): the workers then sleep on a closed epoll set. Before, each worker's next `epoll_wait` failed
/// (EBADF), the worker panicked ("trust: a worker's epoll_wait failed") and its thread ended: every later
/// `apply` to it hung (no answer in 5 s). Now a worker whose epoll set fails says so once and naps 1 ms at a
/// time instead: requests from threads (to a worker that went idle, so it must be found by its nap) and from
/// fibers are served, and a fiber's sleep (a deadline) still ends.
#[test]
fn apply_after_the_workers_descriptors_were_closed_does_not_hang() {
    let _s = serial();
    in_child!(
        "apply_after_the_workers_descriptors_were_closed_does_not_hang",
        30
    );
    let rt = rt();
    let v = rt.trustee(0).entrust(41u64);
    assert_eq!(v.apply(|c| *c + 1), 42);
    close_all_from_3();
    thread::sleep(Duration::from_millis(300));
    let w = v.clone();
    let (first, rest) = within(5, move || {
        let first = w.apply(|c| *c + 1);
        let rest: u64 = (0..100).map(|_| w.apply(|c| *c)).sum();
        (first, rest)
    });
    assert_eq!(
        (first, rest),
        (42, 4100),
        "applies from a thread after the descriptors were closed"
    );
    let fibers: Vec<_> = (0..10)
        .map(|_| {
            let v = v.clone();
            spawn(move || {
                trust_core::sleep(Duration::from_millis(5));
                v.apply(|c| *c += 1)
            })
        })
        .collect();
    within(5, move || {
        for f in fibers {
            f.join().unwrap();
        }
    });
    assert_eq!(v.apply(|c| *c), 51);
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// Thread-local destructors that delegate after the runtime's own thread-local is gone.

/// What a thread-local destructor saw: continuations run after its `wait_pending`, the value's count then, and
/// what its second `wait_pending` resumed.
#[derive(Debug, PartialEq)]
struct AtThreadExit {
    continuations_run: usize,
    count: u64,
    resumed: String,
}

struct DelegatesAtThreadExit {
    t: Option<Trust<u64>>,
    report: Option<mpsc::Sender<AtThreadExit>>,
}

impl Drop for DelegatesAtThreadExit {
    fn drop(&mut self) {
        let (Some(t), Some(report)) = (self.t.take(), self.report.take()) else {
            return;
        };
        let ran = std::rc::Rc::new(std::cell::Cell::new(0));
        for _ in 0..10 {
            let ran = ran.clone();
            t.apply_then(|c| *c += 1, move |()| ran.set(ran.get() + 1));
        }
        trust_core::wait_pending();
        let continuations_run = ran.get();
        let count = t.apply(|c| *c);
        t.apply_then(|_| (), |()| panic!("continuation"));
        let resumed = catch_unwind(trust_core::wait_pending)
            .map_or_else(panic_message, |()| "nothing".into());
        let _ = report.send(AtThreadExit {
            continuations_run,
            count,
            resumed,
        });
    }
}

thread_local! {
    static DELEGATES: std::cell::RefCell<DelegatesAtThreadExit> =
        const { std::cell::RefCell::new(DelegatesAtThreadExit { t: None, report: None }) };
}

/// Promise (`wait_pending`: "every `apply_then` of this thread (or fiber) is done and its continuation ran";
/// a panic in a continuation "is kept and resumed by the issuer's next `wait_pending()`"), from a thread-local
/// destructor that runs *after* the runtime's own thread-local client is destroyed (it was registered first:
/// std runs thread-local destructors in reverse order of registration). It issues 10 `apply_then`s, then
/// `wait_pending`: the 10 continuations must have run; then one whose continuation panics, then `wait_pending`:
/// it must resume "continuation". The same destructor on a thread whose client is still alive (registered
/// after it) is the control.
#[test]
fn wait_pending_in_a_thread_local_destructor_after_the_client_is_gone() {
    let _s = serial();
    in_child!(
        "wait_pending_in_a_thread_local_destructor_after_the_client_is_gone",
        30
    );
    let rt = rt();
    let want = AtThreadExit {
        continuations_run: 10,
        count: 11,
        resumed: "continuation".into(),
    };
    for client_first in [true, false] {
        let t = rt.trustee(1).entrust(0u64);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            if client_first {
                t.apply(|c| *c += 1);
            }
            // The first access registers the destructor.
            DELEGATES.with(|d| {
                let mut d = d.borrow_mut();
                d.t = Some(t.clone());
                d.report = Some(tx);
            });
            if !client_first {
                t.apply(|c| *c += 1);
            }
        })
        .join()
        .unwrap();
        let got = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the destructor reports");
        let which = if client_first {
            "client made before the thread-local (alive in its destructor)"
        } else {
            "client made after the thread-local (destroyed before its destructor)"
        };
        assert_eq!(got, want, "{which}");
    }
    child_ok();
}

/// Delegates when dropped: an `apply`, then an `apply_then` and `wait_pending`; reports the `apply`'s result
/// and whether the continuation ran.
struct DelegatesWhenDropped(Trust<u64>, mpsc::Sender<(u64, bool)>);

impl Drop for DelegatesWhenDropped {
    fn drop(&mut self) {
        let got = self.0.apply(|c| {
            *c += 1;
            *c
        });
        let ran = std::rc::Rc::new(std::cell::Cell::new(false));
        let r = ran.clone();
        self.0.apply_then(|c| *c += 1, move |()| r.set(true));
        trust_core::wait_pending();
        let _ = self.1.send((got, ran.get()));
    }
}

/// Promise ("A thread may exit with requests in flight": its continuations are "dropped on it with them", and
/// `clone`/`drop`/`apply` keep working in destructors): 20 threads each exit with an `apply_then` in flight
/// whose continuation captures a `DelegatesWhenDropped`, dropped unrun while the runtime's own client
/// thread-local is being destroyed. Its `apply` must return the value's count (1), its continuation must run by
/// its `wait_pending`, each exactly once; the value ends at 1 + 2 per thread.
#[test]
fn a_continuation_capture_dropped_at_thread_exit_delegates_and_waits() {
    let _s = serial();
    in_child!(
        "a_continuation_capture_dropped_at_thread_exit_delegates_and_waits",
        30
    );
    let rt = rt();
    let (tx, rx) = mpsc::channel();
    let t = rt.trustee(1).entrust(0u64);
    let mut seen = Vec::new();
    for _ in 0..20 {
        let own = rt.trustee(0).entrust(0u64);
        let (t2, own2, tx2) = (t.clone(), own.clone(), tx.clone());
        thread::spawn(move || {
            let capture = DelegatesWhenDropped(own2, tx2);
            t2.apply(|_| ());
            // Unpublished (a plain thread publishes 48 at a time): the exiting thread publishes it, waits for
            // its answer and drops the continuation unrun, with its capture.
            t2.apply_then(
                |_| thread::sleep(Duration::from_millis(20)),
                move |()| drop(capture),
            );
        })
        .join()
        .unwrap();
        seen.push(
            rx.recv_timeout(Duration::from_secs(5))
                .expect("the capture's drop reports"),
        );
        assert_eq!(
            own.apply(|c| *c),
            2,
            "the capture's apply and apply_then each ran once"
        );
    }
    thread::sleep(Duration::from_millis(50));
    assert!(rx.try_recv().is_err(), "a capture dropped twice");
    assert_eq!(seen, vec![(1, true); 20]);
    child_ok();
}

/// A panic hook that makes a blocking `apply` to *another* trustee: on the worker where a delegated closure
/// panicked that `apply` panics (README: "a blocking `apply` to another trustee from inside a delegated closure
/// panics ... the message names `apply_then` and `launch`"), and a panic inside the panic hook aborts any Rust
/// process. What must hold: the process dies (SIGABRT, within seconds, no hang), and stderr says why: the
/// runtime's message naming `apply_then`, not only std's "thread panicked while processing panic".
#[test]
fn a_panic_hooks_apply_to_another_trustee_on_a_worker_says_why_it_aborts() {
    let _s = serial();
    if !is_child() {
        let e = ended(
            "a_panic_hooks_apply_to_another_trustee_on_a_worker_says_why_it_aborts",
            30,
        );
        assert_eq!(e.signal, Some(libc::SIGABRT), "{}", e.tail());
        assert!(e.took < Duration::from_secs(5), "took {:?}", e.took);
        assert!(
            e.stderr.contains("apply_then"),
            "the abort does not say why (stderr has no `apply_then`):\n{}",
            e.tail()
        );
        return;
    }
    watchdog("a_panic_hooks_apply_to_another_trustee", 20);
    let rt = rt();
    let far = rt.trustee(1).entrust(0u64);
    assert!(FAR.set(far).is_ok());
    std::panic::set_hook(Box::new(|info| {
        if payload_is(info, "boom") {
            FAR.get().unwrap().apply(|c| *c += 1);
        }
    }));
    let t = rt.trustee(0).entrust(0u64);
    let _ = catch_unwind(AssertUnwindSafe(|| t.apply(|_| panic!("boom"))));
    eprintln!("APPLY RETURNED");
    std::process::exit(1);
}

static PLAIN_HOOKED: OnceLock<(Trust<u64>, Trust<u64>)> = OnceLock::new();

/// Promise (a continuation's panic "is kept and resumed by the issuer's next `wait_pending()`"; continuations
/// may issue more `apply_then`s, which count for the issuer): on a plain thread, 100 `apply_then`s whose
/// continuations panic, with a panic hook that (on that thread) makes a blocking `apply` to trustee 0 and an
/// `apply_then` to trustee 1. `wait_pending` must resume a "cont" panic once, then return normally, and by then
/// all 200 of the hook's requests have run (exact counts), none twice.
#[test]
fn a_panic_hook_that_delegates_on_a_plain_thread_whose_continuations_panic() {
    let _s = serial();
    in_child!(
        "a_panic_hook_that_delegates_on_a_plain_thread_whose_continuations_panic",
        60
    );
    let rt = rt();
    let near = rt.trustee(0).entrust(0u64);
    let far = rt.trustee(1).entrust(0u64);
    let t = rt.trustee(1).entrust(0u64);
    assert!(PLAIN_HOOKED.set((near.clone(), far.clone())).is_ok());
    std::panic::set_hook(Box::new(|info| {
        if payload_is(info, "cont") {
            let (near, far) = PLAIN_HOOKED.get().unwrap();
            near.apply(|c| *c += 1);
            far.apply_then(|c| *c += 1, |()| ());
        }
    }));
    for _ in 0..100 {
        t.apply_then(|c| *c += 1, |()| panic!("cont"));
    }
    let first =
        catch_unwind(trust_core::wait_pending).map_or_else(panic_message, |()| "nothing".into());
    assert_eq!(first, "cont", "wait_pending resumes a continuation's panic");
    let second =
        catch_unwind(trust_core::wait_pending).map_or_else(panic_message, |()| "nothing".into());
    assert_eq!(second, "nothing", "one panic resumed, then none");
    assert_eq!(
        (t.apply(|c| *c), near.apply(|c| *c), far.apply(|c| *c)),
        (100, 100, 100),
        "(requests, the hook's applies, the hook's apply_thens)"
    );
    child_ok();
}
