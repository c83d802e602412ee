//! Shared by the delegation test binaries: each binary is a process with one runtime of 2 workers.

#![allow(dead_code)] // each test binary uses part of it

/// Runs the calling test in a child process of its own, with a deadline of `$secs` seconds (see
/// [`in_child`]): in the parent it returns once the child is done; in the child it goes on, quiet.
#[allow(unused_macros)]
macro_rules! in_child {
    ($name:literal, $secs:expr) => {
        if !crate::common::in_child($name, &[], $secs) {
            return;
        }
        let _ = crate::common::quiet();
    };
}

use std::any::Any;
use std::cell::RefCell;
use std::io::Read;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use trust_core::{Fiber, Runtime, Trust, local_trustee, spawn, wait_pending};

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
/// and a crash that cannot take the other tests with it), with `env` set; returns its output. Fails unless the
/// child ran exactly that one test ([`ran_one_test`]).
pub fn run_in_child(name: &str, env: &[(&str, &str)]) -> std::process::Output {
    let out = child_command(name, env)
        .output()
        .expect("the test binary runs again");
    ran_one_test(name, &out);
    out
}

/// Fails the test unless the child process ran exactly one test (the harness's first line): a name that
/// matches no test (a typo, a renamed test) would otherwise give a child that passes having run nothing.
pub fn ran_one_test(name: &str, out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("running 1 test\n"),
        "child {name}: the test binary did not run exactly that test\n--- stdout\n{stdout}"
    );
}

/// The command that runs test `name` of this test binary in a child process, with `env` set.
pub fn child_command(name: &str, env: &[(&str, &str)]) -> std::process::Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = std::process::Command::new(exe);
    command
        .args([
            "--exact",
            name,
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(CHILD, "1")
        .envs(env.iter().copied());
    command
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

/// Trustee `i`'s metrics once its request count has not moved for 50 ms (count changes are sent without
/// waiting), within 10 s.
pub fn settled(i: usize) -> trust_core::TrusteeMetrics {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = rt().trustee(i).metrics();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = rt().trustee(i).metrics();
        if now.requests == last.requests || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
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

/// Runs `f` on its own thread; `Err("timed out")` if it has not finished after `secs` (a hang; the thread is
/// leaked), or `Err("panicked")`.
pub fn try_within<T: Send + 'static>(
    secs: u64,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, &'static str> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(value) => Ok(value),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err("timed out"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err("panicked"),
    }
}

/// Runs `f` on a thread of its own and fails the test if it does not finish within `secs` seconds (a hang
/// becomes a failure; under Miri, which runs far slower, the limit is 10 minutes).
pub fn within<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    // Under Miri and AddressSanitizer code runs many times slower (`child_output` scales its deadline too).
    let secs = if cfg!(miri) {
        600
    } else if cfg!(feature = "sanitizer") {
        secs * 4
    } else {
        secs
    };
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

/// Runs test `name` in a child process with `env`, killing it after `secs` seconds; fails unless it exits 0
/// having printed `CHILD-OK`. Returns the child's stderr.
pub fn child(name: &str, env: &[(&str, &str)], secs: u64) -> String {
    let out = child_output(name, env, secs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let tail: Vec<&str> = stderr.lines().rev().take(60).collect();
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child {name} failed ({})\n--- stdout\n{stdout}\n--- stderr (tail)\n{}",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    stderr
}

/// The child's output; a child still running after `secs` seconds is killed and the test fails with `HUNG`.
/// Fails too unless the child ran exactly that one test ([`ran_one_test`]).
pub fn child_output(name: &str, env: &[(&str, &str)], secs: u64) -> std::process::Output {
    let secs = if cfg!(feature = "sanitizer") {
        secs * 4
    } else {
        secs
    };
    let mut c = child_command(name, env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the test binary runs again");
    // Drain the pipes on threads, so a chatty child cannot block on a full pipe.
    let mut so = c.stdout.take().unwrap();
    let mut se = c.stderr.take().unwrap();
    let to = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let te = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            let stderr = String::from_utf8_lossy(&te.join().unwrap()).into_owned();
            let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
            panic!(
                "HUNG: child {name} still running after {secs} s\n--- stderr (tail)\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = std::process::Output {
        status,
        stdout: to.join().unwrap(),
        stderr: te.join().unwrap(),
    };
    ran_one_test(name, &out);
    out
}

/// In a child: fails the process (exit 101, with `what`) if it is still running after `secs` seconds, so a
/// hang inside the child is reported as such rather than as the parent's kill.
pub fn watchdog(what: &'static str, secs: u64) {
    let secs = if cfg!(feature = "sanitizer") {
        secs * 4
    } else {
        secs
    };
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        eprintln!("WATCHDOG: {what} still running after {secs} s");
        std::process::exit(101);
    });
}

/// The preamble of a test that runs in a child process of its own: in the parent, runs test `name` there with
/// `env` ([`child`], which fails the test on a failure or a hang) and returns false; in the child, starts a
/// [`watchdog`] of `secs` seconds (the parent allows 5 more) and returns true.
pub fn in_child(name: &'static str, env: &[(&str, &str)], secs: u64) -> bool {
    if !is_child() {
        child(name, env, secs + 5);
        return false;
    }
    watchdog(name, secs);
    true
}

/// In a child: tells the parent ([`child`]) that the test passed.
pub fn child_ok() {
    println!("CHILD-OK");
}

/// Where the next `spawn` of this process lands (`spawn` goes round-robin over the two workers): set by
/// [`calibrate`], kept by [`spawn_on`]. A guess when other threads of the process spawn meanwhile (tests of
/// one file run in parallel): then [`spawn_on`]'s fiber hops.
pub static NEXT_SPAWN: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Finds out where the next `spawn` lands (a probe fiber, joined: call it while both workers run).
pub fn calibrate() {
    let probe = spawn(|| local_trustee().index()).join().unwrap();
    NEXT_SPAWN.store(probe + 1, Ordering::SeqCst);
}

/// Spawns `f` on worker `w` (after [`calibrate`]; a no-op fiber takes the other worker's turn if needed,
/// unjoined, so a stalled worker never delays this). A fiber that lands elsewhere all the same (another test
/// spawned in between: the CI run of 7 December) spawns again from there and waits, until one lands on `w`;
/// the handle's result, or panic, is that one's.
pub fn spawn_on<R: Send + 'static>(w: usize, f: impl FnOnce() -> R + Send + 'static) -> Fiber<R> {
    fn land<R: Send + 'static>(w: usize, f: impl FnOnce() -> R + Send + 'static) -> R {
        if local_trustee().index() == w {
            return f();
        }
        spawn(move || land(w, f))
            .join()
            .unwrap_or_else(|payload| std::panic::resume_unwind(payload))
    }
    let next = NEXT_SPAWN.load(Ordering::SeqCst);
    assert_ne!(next, usize::MAX, "calibrate() first");
    if next % 2 != w {
        let _ = spawn(|| ());
        NEXT_SPAWN.fetch_add(1, Ordering::SeqCst);
    }
    NEXT_SPAWN.fetch_add(1, Ordering::SeqCst);
    spawn(move || land(w, f))
}

/// Blocks until the trustee has served a blocking round trip from this thread after all earlier requests, and
/// a full loop turn after that (its `drop_retired` included).
pub fn settle(on: &Trust<()>) {
    for _ in 0..3 {
        on.apply(|_| ());
    }
    std::thread::sleep(Duration::from_millis(20));
    on.apply(|_| ());
}

/// Waits up to `ms` for `n` to reach `want`; returns what it read last.
pub fn wait_for(n: &AtomicUsize, want: usize, ms: u64) -> usize {
    let deadline = Instant::now() + Duration::from_millis(ms);
    while n.load(Ordering::SeqCst) < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    n.load(Ordering::SeqCst)
}

pub struct Unpark(pub std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `f` to completion on this thread, parking between polls.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(r) = f.as_mut().poll(&mut cx) {
            return r;
        }
        std::thread::park_timeout(Duration::from_millis(1));
    }
}

/// A latch whose value counts its drops (the review tests' launched fibers read it).
pub type Guarded = trust_core::Latch<(u64, CountsDrops)>;

/// Launches on `l` (from this plain thread) a fiber that keeps reading the latch's value until `stop`, and
/// returns once it runs. `reads` counts its reads.
pub fn launch_reader(
    l: &Trust<Guarded>,
    on0: &Trust<()>,
    stop: &Arc<AtomicBool>,
    reads: &Arc<AtomicUsize>,
) {
    let (stop, reads2) = (stop.clone(), reads.clone());
    l.launch_then(
        move |latch| {
            while !stop.load(Ordering::SeqCst) {
                let v = latch.lock();
                assert_eq!(v.0, 7, "the latch's value changed under its launched fiber");
                reads2.fetch_add(1, Ordering::SeqCst);
                drop(v);
                trust_core::sleep(Duration::from_millis(1));
            }
        },
        |()| (),
    );
    // A plain thread's `launch_then` goes with its next publish.
    on0.apply(|_| ());
    eventually("the launched fiber runs", || {
        reads.load(Ordering::SeqCst) > 0
    });
}

/// One round that makes a live value's count dip to zero and below on its trustee: clones go by the slot
/// and the count mail, and all of them are dropped inline on the trustee by a mailed closure, which can run
/// before their increments are served. Every dip retires the (live) value again.
pub fn dip<T: Send + 'static>(x: &Trust<T>, y: &Trust<()>, clones: usize) {
    let cs: Vec<_> = (0..clones).map(|_| x.clone()).collect();
    block_on(y.apply_async(move |_| drop(cs)));
}

/// A fiber launched on latch `l` (trustee 0) that holds it open until `stop`; returns once it runs.
pub fn hold_open<T: Send + 'static>(
    l: &Trust<trust_core::Latch<T>>,
    on0: &Trust<()>,
    stop: &Arc<AtomicBool>,
) {
    let (stop, running) = (stop.clone(), Arc::new(AtomicBool::new(false)));
    let r = running.clone();
    l.launch_then(
        move |_| {
            r.store(true, Ordering::SeqCst);
            while !stop.load(Ordering::SeqCst) {
                trust_core::sleep(Duration::from_millis(1));
            }
        },
        |()| (),
    );
    on0.apply(|_| ());
    eventually("the holding fiber runs", || running.load(Ordering::SeqCst));
}

/// Values made and dropped, across threads.
#[derive(Default)]
pub struct Tally {
    pub made: AtomicUsize,
    pub dropped: AtomicUsize,
}

impl Tally {
    pub fn counts(&self) -> (usize, usize) {
        (
            self.made.load(Ordering::SeqCst),
            self.dropped.load(Ordering::SeqCst),
        )
    }
}

/// Counted in its tally when made and when dropped.
pub struct Tallied(pub Arc<Tally>);

impl Tallied {
    pub fn new(t: &Arc<Tally>) -> Self {
        t.made.fetch_add(1, Ordering::SeqCst);
        Tallied(t.clone())
    }
}

impl Drop for Tallied {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// Spawns a `may` coroutine.
pub fn coroutine<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> may::coroutine::JoinHandle<R> {
    // SAFETY: the coroutines use no thread-local storage of their own.
    unsafe { may::coroutine::spawn(f) }
}

/// [`quiet`], and panics of `may` coroutines (cancels, provoked by the tests) kept off stderr too.
pub fn quiet_coroutines() {
    let _ = quiet();
    let old = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !may::coroutine::is_coroutine() {
            old(info);
        }
    }));
}

/// Polls `cond` from a plain thread, yielding between looks, for up to 5 s; panics naming `what` if it never
/// holds (`eventually` sleeps a millisecond between looks instead).
pub fn wait_until_true(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// Reviews 91 and 96: coroutines cancelled around their interval grant. `rounds` times (on `may`'s one worker,
/// `may::config().set_workers(1)` first), a coroutine queues to write `2..6` behind a held `0..8`, a thread
/// queues behind it, and the coroutine is cancelled right after the release grants it (after a spin of 0-800
/// iterations, while it takes the grant or writes); with `parked`, it is first left 8 ms to park, and every
/// third round is cancelled while still queued (withdrawn: the cancel must unwind it, and the thread still
/// waits for the held range). Checks that each write counted once, every thread got the range and nothing is
/// left held or queued; returns how many coroutines ended by their cancel.
pub fn cancel_coroutines_around_their_interval_grant(rounds: u64, parked: bool) -> u64 {
    use std::sync::atomic::AtomicU64;
    use trust_core::interval::IntervalRwLock;
    let lock = Arc::new(IntervalRwLock::new(vec![0u64; 8]));
    let done = Arc::new(AtomicU64::new(0));
    let mut cancelled = 0;
    for round in 0..rounds {
        let held = lock.write(0..8);
        // The coroutine queues behind the held range, a thread behind the coroutine.
        let c = {
            let (lock, done) = (lock.clone(), done.clone());
            coroutine(move || {
                let mut g = lock.write(2..6);
                g[0] += 1;
                done.fetch_add(1, Ordering::SeqCst);
                drop(g);
                may::coroutine::yield_now();
            })
        };
        wait_until_true("the coroutine's request", || lock.queued() == 1);
        let w = {
            let lock = lock.clone();
            std::thread::spawn(move || lock.write(0..8)[7] += 1)
        };
        wait_until_true("the thread's request", || lock.queued() == 2);
        if parked {
            std::thread::sleep(Duration::from_millis(8));
        }
        let ended = if parked && round % 3 == 0 {
            // SAFETY: the coroutine holds nothing a cancel (an unwind from its wait) would leak.
            unsafe { c.coroutine().cancel() };
            let ended = c.join();
            assert!(ended.is_err(), "cancelled while queued");
            assert_eq!(lock.queued(), 1, "the cancelled request is withdrawn");
            drop(held);
            ended
        } else {
            drop(held);
            for _ in 0..(round % 5) * 200 {
                std::hint::spin_loop();
            }
            // SAFETY: as above.
            unsafe { c.coroutine().cancel() };
            c.join()
        };
        if ended.is_err() {
            cancelled += 1;
        }
        w.join().unwrap();
    }
    let cells = lock.read(..).to_vec();
    assert_eq!(
        cells[2],
        done.load(Ordering::SeqCst),
        "a write counted once"
    );
    assert_eq!(
        cells[7], rounds,
        "every thread behind a cancelled coroutine got the range"
    );
    assert!(lock.try_write(..).is_ok(), "nothing left held or queued");
    assert_eq!(lock.queued(), 0);
    eprintln!(
        "MEASURED: {cancelled} of {rounds} coroutines ended by their cancel, {} before their write",
        rounds - done.load(Ordering::SeqCst)
    );
    cancelled
}

/// A latch on trustee 0 held open by a launched fiber until the flag is set; and a handle on trustee 0.
pub fn held_latch() -> (Trust<()>, Trust<trust_core::Latch<u64>>, Arc<AtomicBool>) {
    let on0 = rt().trustee(0).entrust(());
    let l = rt().trustee(0).entrust(trust_core::Latch::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    hold_open(&l, &on0, &stop);
    (on0, l, stop)
}

/// CPU time (utime + stime, clock ticks of 10 ms) of the whole process.
pub fn process_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Overlapping launches: a fiber on worker 1 (`calibrate` first) launches a 4 ms fiber on a latch of trustee 0
/// every 2 ms, so two always overlap. Returns the flag that stops it, the count of launched fibers that ran,
/// and the driving fiber.
pub fn overlapping_launches(
    l: &Trust<trust_core::Latch<u64>>,
) -> (Arc<AtomicBool>, Arc<AtomicUsize>, Fiber<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let launched = Arc::new(AtomicUsize::new(0));
    let (l2, stop2, n2) = (l.clone(), stop.clone(), launched.clone());
    let driver = spawn_on(1, move || {
        while !stop2.load(Ordering::SeqCst) {
            let n3 = n2.clone();
            l2.launch_then(
                move |_| {
                    trust_core::sleep(Duration::from_millis(4));
                    n3.fetch_add(1, Ordering::SeqCst);
                },
                |()| (),
            );
            trust_core::sleep(Duration::from_millis(2));
        }
        wait_pending();
    });
    eventually("launches run", || load(&launched) > 5);
    (stop, launched, driver)
}

/// A coroutine-local whose destructor makes a real call: `may` runs it on its worker thread, outside any
/// coroutine, where the call makes that thread a client of its own.
pub struct CallsOnDrop(pub Trust<u64>);

impl Drop for CallsOnDrop {
    fn drop(&mut self) {
        self.0.apply(|v| *v += 0);
    }
}

may::coroutine_local!(static CALLER: RefCell<Option<CallsOnDrop>> = RefCell::new(None));

/// Gives the `may` worker thread (the only one: `may::config().set_workers(1)` first) a client of its own: a
/// coroutine keeps a `CallsOnDrop` of `p`, whose call runs once the coroutine has ended.
pub fn give_the_may_thread_a_client(p: &Trust<u64>) {
    let p2 = p.clone();
    coroutine(move || CALLER.with(|k| *k.borrow_mut() = Some(CallsOnDrop(p2))))
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
}

/// A coroutine's `apply_then(+1)` on `p` (20 ms on the trustee) then its `wait_pending`: the continuation's
/// result seen right after `apply_then` returned, and after `wait_pending`.
pub fn coroutine_apply_then_then_wait(p: Trust<u64>) -> (Option<u64>, Option<u64>) {
    coroutine(move || {
        let done = Rc::new(std::cell::Cell::new(None));
        let d = done.clone();
        p.apply_then(
            |v| {
                std::thread::sleep(Duration::from_millis(20));
                *v += 1;
                *v
            },
            move |v| d.set(Some(v)),
        );
        let right_after = done.get();
        wait_pending();
        (right_after, done.get())
    })
    .join()
    .unwrap()
}

/// A chain of `left` increments of `counter`, each `apply_then` issued by the previous one's continuation:
/// `wait_pending` must run them from its loop, never nested in the previous link (constant stack).
pub fn chain_of_increments(counter: Trust<u64>, left: u32) {
    let next = counter.clone();
    counter.apply_then(
        |c| *c += 1,
        move |()| {
            if left > 1 {
                chain_of_increments(next, left - 1);
            }
        },
    );
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`): what a waiting thread burns.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the calling thread's CPU clock into a local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Sets `SO_LINGER` to 0 on `s`: closing it sends a reset, and neither side's port waits in TIME_WAIT.
/// A connection: the `trust_core::net` end (accepted on the calling thread) and its std peer.
pub fn pair() -> (trust_core::net::TcpStream, std::net::TcpStream) {
    let l = trust_core::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (s, c)
}

/// A fiber on worker 0 that yields 500 times, taking `m` each time, and counts the turns on which it saw
/// `thread::panicking()`: 0 unless another fiber of its worker was suspended mid-unwind (reviews 90 and 92).
pub fn counts_panicking_turns(m: Arc<std::sync::Mutex<u32>>) -> trust_core::Fiber<u32> {
    spawn_on(0, move || {
        let mut seen = 0;
        for _ in 0..500 {
            *m.lock().unwrap() += 1;
            if std::thread::panicking() {
                seen += 1;
            }
            trust_core::yield_now();
        }
        seen
    })
}

pub fn linger0(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `s` is an open socket; the option is read from a local of its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

/// Trustee `index`'s channel counts now (`TrusteeMetrics`): all of them, and the cold ones.
pub fn channel_counts(index: usize) -> (u64, u64) {
    let m = rt().trustee(index).metrics();
    (m.channels, m.cold_channels)
}

/// Waits up to `secs` seconds (running `step` meanwhile) until `done()`; fails with `what` and trustee 1's
/// channel counts otherwise (the cold-channel tests' wait).
pub fn wait_until(what: &str, secs: u64, mut step: impl FnMut(), done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for: {what}; (channels, cold) = {:?}",
            channel_counts(1)
        );
        step();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The median of `v` (the upper one of an even count).
pub fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Forks; the child runs `f` and `_exit`s with its result (70 if it panicked), never returning into the test
/// harness. Returns the child's pid.
pub fn fork_running(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child runs only `f` (what it may do there is the point under test) and then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(70);
        // SAFETY: ends the child at once, without running the parent's at-exit handlers.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for our child `pid` up to `secs` seconds (then kills it: `None`); returns its exit code (-1: ended by
/// a signal) and how long the wait took.
pub fn reap(pid: libc::pid_t, secs: u64) -> (Option<i32>, Duration) {
    let begun = Instant::now();
    let deadline = begun + Duration::from_secs(secs);
    loop {
        let mut status = 0;
        // SAFETY: waits without blocking for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            return (code.or(Some(-1)), begun.elapsed());
        }
        if Instant::now() > deadline {
            // SAFETY: kills and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return (None, begun.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Forks this (single-purpose child) process; the grandchild runs `f` and `_exit`s with its result. Returns the
/// grandchild's exit code and how long it took (`None`: still running after `secs` seconds, killed).
pub fn forked(secs: u64, f: impl FnOnce() -> i32) -> (Option<i32>, Duration) {
    reap(fork_running(f), secs)
}

/// True if `r` is a panic whose message names `fork` (the runtime's message in a forked child).
pub fn names_fork<T>(r: std::thread::Result<T>) -> bool {
    r.is_err_and(|p| panic_message(p).contains("forked after it started"))
}

// ---------------------------------------------------------------------------------------------------------
// Interval locks in delegated closures (`interval_delegated.rs`, review 35).

/// A leaked interval lock of 8 zeros, shared by a test's threads, fibers, coroutines and closures.
pub fn eight_zeros() -> &'static trust_core::interval::IntervalRwLock<u32> {
    Box::leak(Box::new(trust_core::interval::IntervalRwLock::new(
        vec![0u32; 8],
    )))
}

/// Waits (sleeping 1 ms on a thread, suspending in a fiber) until `cond` holds; false after 5 s.
pub fn wait_for_5s(cond: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > Duration::from_secs(5) {
            return false;
        }
        trust_core::sleep(Duration::from_millis(1));
    }
    true
}

/// Applies, on trustee 0 (worker 0) from a plain thread (under a 5 s deadline), a closure that writes `range`
/// of `lock` through `priority`: it returns what the range held, then fills it with `fill`. A panic comes
/// back as its message.
pub fn write_on_worker_0(
    lock: &'static trust_core::interval::IntervalRwLock<u32>,
    range: std::ops::Range<usize>,
    priority: u32,
    fill: u32,
) -> Result<Vec<u32>, String> {
    let on0 = rt().trustee(0).entrust(());
    within(5, move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            on0.apply(move |_| {
                let mut g = lock.prioritized(priority).write(range);
                let before = g.to_vec();
                g.fill(fill);
                before
            })
        }))
        .map_err(panic_message)
    })
}

/// Trustee 0 still answers.
pub fn trustee_0_serves() {
    let on0 = rt().trustee(0).entrust(5u8);
    assert_eq!(within(5, move || on0.apply(|v| *v + 1)), 6);
}

/// A plain thread publishes its `apply_then`s this many at a time (the runtime's `PUBLISH_EVERY`): a test that
/// needs a batch published by its count alone issues this many.
pub const PUBLISH_EVERY: usize = 48;

/// Makes the calling thread's channel to `t`'s trustee busy until the guard is dropped: an `apply_then` on `t`
/// that holds that trustee (spinning) meanwhile. The first `apply_then` on an idle channel is published at
/// once; behind a batch in flight, the thread's next ones wait in its batch (up to [`PUBLISH_EVERY`], or until
/// it calls, publishes elsewhere or waits), as a pipelining thread's do. Drop the guard before anything that waits for
/// that trustee.
pub fn busy_channel<T: Send + 'static>(t: &Trust<T>) -> BusyChannel {
    let released = Arc::new(AtomicBool::new(false));
    let held = released.clone();
    t.apply_then(
        move |_| {
            while !held.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        },
        |()| (),
    );
    BusyChannel(released)
}

/// See [`busy_channel`].
pub struct BusyChannel(Arc<AtomicBool>);

impl Drop for BusyChannel {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Issues `f` on `t` as an `apply_then` that stays unsent on the calling thread (lingering, announced), as the
/// rest of a burst does on a thread that then idles ([`busy_channel`]).
pub fn issue_lingering<T: Send + 'static>(t: &Trust<T>, f: impl FnOnce(&mut T) + Send + 'static) {
    let _busy = busy_channel(t);
    t.apply_then(f, |()| ());
}

/// A listener whose accept queue is full (backlog 0 holds one connection; the kernel drops every later SYN), so
/// a connect to it gets no answer until the kernel's retries give up; with the connections that filled it.
pub fn a_listener_that_never_answers() -> (std::net::TcpListener, Vec<std::net::TcpStream>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    // SAFETY: a listening socket's own fd; `listen` again only changes its backlog.
    let listened = unsafe { libc::listen(fd, 0) };
    assert_eq!(listened, 0);
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    loop {
        match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)) {
            Ok(s) => queued.push(s),
            Err(e)
                if e.kind() == std::io::ErrorKind::TimedOut
                    || e.kind() == std::io::ErrorKind::WouldBlock =>
            {
                break;
            }
            Err(e) => panic!("filling the accept queue: {e}"),
        }
        assert!(
            queued.len() < 16,
            "the kernel keeps accepting past backlog 0"
        );
    }
    (listener, queued)
}

/// Holds the trustee it runs on until opened (a closure that waits on it: at most 10 s).
#[derive(Default)]
pub struct Gate {
    pub open: AtomicBool,
    pub entered: AtomicBool,
}

impl Gate {
    pub fn wait(&self) {
        self.entered.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.open.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}
