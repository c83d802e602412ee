//! Review 62: a hostile look at the newest delegation paths. (1) The trustee's mailbox: the swap-then-link
//! push, the worker loop's held mail (`take_or_hold`, `HeldMail`), a retire's patient take
//! (`register_channels`), the close's last take, and a forked child's emptied mailbox; its senders are plain
//! threads with no client (registrations, count changes), `apply_async` futures (pollster, tokio), fibers
//! spawned and woken from threads, and thread-local destructors. Senders are descheduled between their swap
//! and their link by running the whole process on one core with 64 or more threads. (2) A lone fiber's fast
//! path (`fiber::call_alone`): results of no size, of 512 and more bytes, over-aligned; panics; handles in
//! results; a closure that waits for something only the caller's worker can do; a call to its own trustee.
//!
//! Every test runs in a child process of its own (a runtime of 2 workers, pinned where it says so) with a
//! watchdog, and counts exactly: each closure run once, each value and capture dropped once, each sender's
//! sequence in order.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use trust_core::{Latch, Trust, spawn};

use common::{
    CountsDrops, calibrate, child_ok, eventually, in_child, panic_message, quiet, reap, rt,
    spawn_on,
};

/// Restricts the calling thread (and every thread it starts from now on, the runtime's workers included
/// when it builds the runtime after this) to core 0, as `taskset -c 0` would.
fn pin_to_core_0() {
    // SAFETY: a zeroed mask with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

/// The preamble of a test whose whole process (its runtime's workers too) runs on core 0: in the parent,
/// runs the test in a child and returns false; in the child, pins, starts the runtime, returns true.
fn in_pinned_child(name: &'static str, secs: u64) -> bool {
    if !in_child(name, &[], secs) {
        return false;
    }
    pin_to_core_0();
    let _ = quiet();
    true
}

/// A value that records its drops in its own cell of a shared table: a double drop shows as a 2.
struct DropsOnce(Arc<Vec<AtomicU8>>, usize);

impl Drop for DropsOnce {
    fn drop(&mut self) {
        self.0[self.1].fetch_add(1, Ordering::SeqCst);
    }
}

fn table(n: usize) -> Arc<Vec<AtomicU8>> {
    Arc::new((0..n).map(|_| AtomicU8::new(0)).collect())
}

/// The cells of `t` that are not exactly `want`, as (index, count), at most 10.
fn off(t: &[AtomicU8], want: u8) -> Vec<(usize, u8)> {
    t.iter()
        .enumerate()
        .map(|(i, c)| (i, c.load(Ordering::SeqCst)))
        .filter(|&(_, c)| c != want)
        .take(10)
        .collect()
}

/// Checks a log of `(sender << 32) | seq` entries: each sender's entries are exactly `0..each`, in order.
fn check_log(log: &[u64], senders: impl Iterator<Item = u64>, each: u64) {
    let mut next = std::collections::HashMap::new();
    for &e in log {
        let (s, i) = (e >> 32, e & 0xffff_ffff);
        let n = next.entry(s).or_insert(0u64);
        assert_eq!(
            i, *n,
            "sender {s}'s request {i} ran when {n} was next (out of order, lost or twice)"
        );
        *n += 1;
    }
    for s in senders {
        assert_eq!(
            next.get(&s).copied().unwrap_or(0),
            each,
            "sender {s}'s requests that ran"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// 1. The mailbox under oversubscription.

/// 64 plain threads that never make a blocking call (so they have no client: every request of theirs is
/// mail) share core 0 with both workers. Each, 40 times: awaits an `apply_async` that logs its number on a
/// log of the trustee of its parity (docs: "futures awaited one after another apply in that order"),
/// entrusts a value to the other trustee (its registration mailed), clones and drops that handle (the count
/// mail), and every 8th time spawns a fiber that calls the other trustee and joins it from the thread
/// (a `Spawn` mail; the join's wake). Promises: each thread's requests ran once each, in issue order; every
/// value is dropped exactly once once its handles are gone; nothing hangs.
#[test]
fn sixty_four_clientless_threads_on_one_core_mail_exactly_and_in_order() {
    if !in_pinned_child(
        "sixty_four_clientless_threads_on_one_core_mail_exactly_and_in_order",
        25,
    ) {
        return;
    }
    const THREADS: u64 = 64;
    const EACH: u64 = 40;
    let logs: Arc<[Trust<Vec<u64>>; 2]> = Arc::new([
        rt().trustee(0).entrust(Vec::new()),
        rt().trustee(1).entrust(Vec::new()),
    ]);
    let drops = table((THREADS * EACH) as usize);
    let fibers = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(THREADS as usize));
    let threads: Vec<_> = (0..THREADS)
        .map(|s| {
            let (logs, drops, fibers, start) =
                (logs.clone(), drops.clone(), fibers.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let (mine, other) = ((s % 2) as usize, ((s + 1) % 2) as usize);
                for i in 0..EACH {
                    let tag = (s << 32) | i;
                    let got = pollster::block_on(logs[mine].apply_async(move |v| {
                        v.push(tag);
                        v.len()
                    }));
                    assert!(got >= 1);
                    let v = rt()
                        .trustee(other)
                        .entrust(DropsOnce(drops.clone(), (s * EACH + i) as usize));
                    let c = v.clone();
                    drop(v);
                    drop(c);
                    if i % 8 == 0 {
                        let (l, f) = (logs.clone(), fibers.clone());
                        let n = spawn(move || {
                            let n = l[other].apply(|v| v.len());
                            f.fetch_add(1, Ordering::SeqCst);
                            n
                        })
                        .join()
                        .unwrap();
                        assert!(n <= (THREADS * EACH) as usize);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let log0 = logs[0].apply(|v| v.clone());
    let log1 = logs[1].apply(|v| v.clone());
    assert_eq!(
        (log0.len(), log1.len()),
        (32 * EACH as usize, 32 * EACH as usize)
    );
    check_log(&log0, (0..THREADS).filter(|s| s % 2 == 0), EACH);
    check_log(&log1, (0..THREADS).filter(|s| s % 2 == 1), EACH);
    assert_eq!(
        fibers.load(Ordering::SeqCst),
        (THREADS * EACH.div_ceil(8)) as usize
    );
    eventually("every entrusted value dropped", || {
        off(&drops, 1).iter().all(|&(_, c)| c == 0)
    });
    assert_eq!(off(&drops, 1), vec![], "values dropped other than once");
    child_ok();
}

/// A tokio runtime of 8 threads on core 0 beside both workers: 256 tasks, each awaiting 25 `apply_async`s
/// one after another on a log (alternating trustees by task), each capturing a value that counts its drop,
/// and dropping a clone of a handle inside the task (the count mail from an executor thread). Promises: each
/// task's requests ran once, in order; each capture dropped once; the shared value dropped once at the end.
#[test]
fn tokio_tasks_on_one_core_await_apply_async_in_issue_order() {
    if !in_pinned_child(
        "tokio_tasks_on_one_core_await_apply_async_in_issue_order",
        25,
    ) {
        return;
    }
    const TASKS: u64 = 256;
    const EACH: u64 = 25;
    let logs: Arc<[Trust<Vec<u64>>; 2]> = Arc::new([
        rt().trustee(0).entrust(Vec::new()),
        rt().trustee(1).entrust(Vec::new()),
    ]);
    let captures = table((TASKS * EACH) as usize);
    let shared_drops = Arc::new(AtomicUsize::new(0));
    let shared = rt().trustee(1).entrust(CountsDrops(shared_drops.clone()));
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(8)
        .build()
        .unwrap();
    tokio.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|s| {
                let (logs, captures, shared) = (logs.clone(), captures.clone(), shared.clone());
                tokio::spawn(async move {
                    let log = &logs[(s % 2) as usize];
                    for i in 0..EACH {
                        let tag = (s << 32) | i;
                        let cap = DropsOnce(captures.clone(), (s * EACH + i) as usize);
                        log.apply_async(move |v| {
                            let _cap = cap;
                            v.push(tag)
                        })
                        .await;
                        let c = shared.clone();
                        drop(c);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    drop(tokio);
    let log0 = logs[0].apply(|v| v.clone());
    let log1 = logs[1].apply(|v| v.clone());
    check_log(&log0, (0..TASKS).filter(|s| s % 2 == 0), EACH);
    check_log(&log1, (0..TASKS).filter(|s| s % 2 == 1), EACH);
    assert_eq!(
        off(&captures, 1),
        vec![],
        "captures dropped other than once"
    );
    assert_eq!(
        shared_drops.load(Ordering::SeqCst),
        0,
        "the shared value dropped while handles live"
    );
    drop(shared);
    eventually("the shared value dropped", || {
        shared_drops.load(Ordering::SeqCst) == 1
    });
    thread::sleep(Duration::from_millis(50));
    assert_eq!(shared_drops.load(Ordering::SeqCst), 1);
    child_ok();
}

/// Registrations past the queue's 256 from clientless threads on one core: 16 threads each entrust 400
/// values to trustee 1 in a burst (so past `REGISTERING_MAX` they wait for their own registration, mailed),
/// keeping the handles, then drop them all. Meanwhile a plain thread with a client applies to each value
/// (a channel beside the mail: a request may overtake a mailed registration). Promises: every value is
/// dropped exactly once, only after its handles are gone; the applies see the values intact.
#[test]
fn registrations_past_the_queue_from_clientless_threads_on_one_core_drop_once() {
    if !in_pinned_child(
        "registrations_past_the_queue_from_clientless_threads_on_one_core_drop_once",
        25,
    ) {
        return;
    }
    const THREADS: usize = 16;
    const EACH: usize = 400;
    let drops = table(THREADS * EACH);
    let (tx, rx) = std::sync::mpsc::channel::<Trust<(u64, DropsOnce)>>();
    let applier = thread::spawn(move || {
        let mut sum = 0u64;
        for t in rx {
            sum += t.apply(|(n, _)| *n);
        }
        sum
    });
    let threads: Vec<_> = (0..THREADS)
        .map(|s| {
            let (drops, tx) = (drops.clone(), tx.clone());
            thread::spawn(move || {
                let handles: Vec<_> = (0..EACH)
                    .map(|i| {
                        rt().trustee(1).entrust((
                            (s * EACH + i) as u64,
                            DropsOnce(drops.clone(), s * EACH + i),
                        ))
                    })
                    .collect();
                for h in handles.iter().step_by(10) {
                    tx.send(h.clone()).unwrap();
                }
                let early = off(&drops[s * EACH..(s + 1) * EACH], 0);
                drop(handles);
                early
            })
        })
        .collect();
    drop(tx);
    for t in threads {
        assert_eq!(
            t.join().unwrap(),
            vec![],
            "values dropped while their handles lived"
        );
    }
    let want: u64 = (0..(THREADS * EACH) as u64).step_by(10).sum();
    assert_eq!(applier.join().unwrap(), want);
    eventually("every value dropped", || {
        off(&drops, 1).iter().all(|&(_, c)| c == 0)
    });
    thread::sleep(Duration::from_millis(50));
    assert_eq!(off(&drops, 1), vec![], "values dropped other than once");
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 2. Shutdown while mail is in flight (and possibly held).

/// 48 clientless threads on core 0 keep mailing: `apply_async`s whose closures capture a value that counts
/// its drop and mark their run, entrusts whose values count their drops, clones and drops. The runtime
/// shuts down under them. Docs: "Nothing sent is lost: requests that arrive too late ... are dropped unrun,
/// with what they captured, on the trustee or by their sender"; "drops every value still entrusted exactly
/// once". Promises: every capture dropped exactly once; each future either returns (its closure ran once)
/// or panics with the shutdown message (its closure never ran); every entrusted value dropped exactly once;
/// the shutdown and every thread end.
#[test]
fn shutdown_under_sixty_four_mailing_threads_loses_and_repeats_nothing() {
    if !in_pinned_child(
        "shutdown_under_sixty_four_mailing_threads_loses_and_repeats_nothing",
        25,
    ) {
        return;
    }
    const THREADS: usize = 48;
    const MAX: usize = 4000; // per thread, a bound on what each can send
    let caps = table(THREADS * MAX);
    let ran = table(THREADS * MAX);
    let values = table(THREADS * MAX);
    let counter = rt().trustee(1).entrust(0u64);
    let other = rt().trustee(0).entrust(0u64);
    let sent = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|s| {
            let (caps, ran, values, sent) =
                (caps.clone(), ran.clone(), values.clone(), sent.clone());
            let (counter, other) = (counter.clone(), other.clone());
            thread::spawn(move || {
                let mut answered = 0usize;
                let mut issued = 0usize;
                let mut entrusted = 0usize;
                let message = loop {
                    if issued == MAX {
                        break String::from("ran out");
                    }
                    let k = s * MAX + issued;
                    let cap = DropsOnce(caps.clone(), k);
                    let r = ran.clone();
                    let target = if issued.is_multiple_of(2) {
                        &counter
                    } else {
                        &other
                    };
                    let fut = target.apply_async(move |c| {
                        let _cap = cap;
                        r[k].fetch_add(1, Ordering::SeqCst);
                        *c += 1;
                    });
                    issued += 1;
                    sent.fetch_add(1, Ordering::SeqCst);
                    match catch_unwind(AssertUnwindSafe(|| pollster::block_on(fut))) {
                        Ok(()) => answered += 1,
                        Err(p) => break panic_message(p),
                    }
                    let v = catch_unwind(AssertUnwindSafe(|| {
                        rt().trustee(issued % 2)
                            .entrust(DropsOnce(values.clone(), k))
                    }));
                    entrusted += 1;
                    match v {
                        Ok(v) => {
                            let c = v.clone();
                            drop(v);
                            drop(c);
                        }
                        Err(p) => break panic_message(p),
                    }
                };
                (issued, answered, entrusted, message)
            })
        })
        .collect();
    eventually("2,000 requests sent", || {
        sent.load(Ordering::SeqCst) >= 2000
    });
    let t0 = Instant::now();
    rt().shutdown();
    let took = t0.elapsed();
    let (mut issued, mut answered) = (vec![0; THREADS], 0);
    let mut entrusted = vec![0; THREADS];
    for (s, t) in threads.into_iter().enumerate() {
        let (i, a, e, message) = t.join().unwrap();
        assert!(
            message.contains("shut down"),
            "thread {s} stopped with {message:?} (after {i} requests)"
        );
        (issued[s], entrusted[s]) = (i, e);
        answered += a;
    }
    drop((counter, other));
    assert!(took < Duration::from_secs(5), "the shutdown took {took:?}");
    let mut wrong_caps = Vec::new();
    let mut wrong_runs = Vec::new();
    let mut ran_total = 0;
    for (s, &issued) in issued.iter().enumerate() {
        for i in 0..issued {
            let k = s * MAX + i;
            let (c, r) = (
                caps[k].load(Ordering::SeqCst),
                ran[k].load(Ordering::SeqCst),
            );
            if c != 1 {
                wrong_caps.push((k, c));
            }
            if r > 1 {
                wrong_runs.push((k, r));
            }
            ran_total += r as usize;
        }
    }
    assert_eq!(
        wrong_caps,
        vec![],
        "captures dropped other than once (index, drops)"
    );
    assert_eq!(wrong_runs, vec![], "closures run more than once");
    assert_eq!(ran_total, answered, "closures run against futures answered");
    let mut wrong_values = Vec::new();
    for (s, &entrusted) in entrusted.iter().enumerate() {
        for i in 0..entrusted {
            // The value entrusted after request `i` carries that request's index.
            let k = s * MAX + i;
            let c = values[k].load(Ordering::SeqCst);
            if c != 1 {
                wrong_values.push((k, c));
            }
        }
    }
    assert_eq!(
        wrong_values,
        vec![],
        "entrusted values dropped other than once (index, drops)"
    );
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 3. fork() while mail is in flight.

/// 8 clientless threads keep mailing both trustees (`apply_async`, entrust, clone, drop) while the main
/// thread forks 12 times. Docs: "in a child forked after the runtime started every trustee is closed, and
/// `apply`, `apply_then`, `spawn` ... panics at once naming `fork`". In each child: an `apply_async` panics
/// naming fork, an `apply` does too, a clone and a drop of a handle do nothing, an `entrust` panics naming
/// fork; then `_exit(0)` (7 if a promise failed). Promises: each child exits 0 within 5 s; in the parent every
/// request still runs exactly once and every value is dropped once.
#[test]
fn fork_while_threads_mail_gives_a_child_that_refuses_at_once() {
    if !in_child(
        "fork_while_threads_mail_gives_a_child_that_refuses_at_once",
        &[],
        25,
    ) {
        return;
    }
    let _ = quiet();
    const THREADS: usize = 8;
    let counter = rt().trustee(1).entrust(0u64);
    let values = Arc::new(AtomicUsize::new(0));
    let made = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..THREADS)
        .map(|s| {
            let (counter, values, made, stop) =
                (counter.clone(), values.clone(), made.clone(), stop.clone());
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    pollster::block_on(counter.apply_async(|c| *c += 1));
                    n += 1;
                    let v = rt().trustee(s % 2).entrust(CountsDrops(values.clone()));
                    made.fetch_add(1, Ordering::SeqCst);
                    let c = v.clone();
                    drop(v);
                    drop(c);
                }
                n
            })
        })
        .collect();
    let mut results = Vec::new();
    for _ in 0..12 {
        thread::sleep(Duration::from_millis(15));
        let probe = counter.clone();
        // SAFETY: the child runs only the code below and ends with `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let forked = |r: thread::Result<()>| match r {
                Ok(()) => false,
                Err(p) => panic_message(p).contains("fork"),
            };
            let a = forked(catch_unwind(AssertUnwindSafe(|| {
                pollster::block_on(probe.apply_async(|c| *c += 1000))
            })));
            let b = forked(catch_unwind(AssertUnwindSafe(|| {
                probe.apply(|c| *c += 1000)
            })));
            let c = catch_unwind(AssertUnwindSafe(|| drop(probe.clone()))).is_ok();
            let d = forked(catch_unwind(AssertUnwindSafe(|| {
                drop(rt().trustee(0).entrust(1u8))
            })));
            let e = catch_unwind(AssertUnwindSafe(|| drop(probe))).is_ok();
            // SAFETY: ends the forked child without running anything of the parent's.
            unsafe { libc::_exit(if a && b && c && d && e { 0 } else { 7 }) };
        }
        assert!(pid > 0, "fork failed");
        drop(probe);
        let (code, _) = reap(pid, 5);
        results.push(code);
    }
    stop.store(true, Ordering::SeqCst);
    let sent: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(
        results,
        vec![Some(0); 12],
        "the forked children's exits (None: still running after 5 s)"
    );
    assert_eq!(
        counter.apply(|c| *c),
        sent,
        "the parent's requests that ran"
    );
    let made = made.load(Ordering::SeqCst);
    eventually("every value dropped", || {
        values.load(Ordering::SeqCst) == made
    });
    thread::sleep(Duration::from_millis(30));
    assert_eq!(values.load(Ordering::SeqCst), made);
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 4. Handles dropped, and requests made, from thread-local destructors.

struct InTls {
    handles: Vec<Trust<u64>>,
    counter: Trust<u64>,
    guard: Option<CountsDrops>,
}

impl Drop for InTls {
    fn drop(&mut self) {
        // An `apply_async` awaited from a thread-local destructor, then the handles dropped there.
        pollster::block_on(self.counter.apply_async(|c| *c += 1));
        self.handles.clear();
        drop(self.guard.take());
    }
}

thread_local! {
    static HELD: std::cell::RefCell<Option<InTls>> = const { std::cell::RefCell::new(None) };
}

/// 64 threads on core 0 each leave handles of two shared values (one per trustee) and a counter in a
/// thread-local whose destructor awaits an `apply_async` and drops the handles. Half the threads made a
/// blocking call (a quarter before setting the thread-local, so their client is destroyed after its
/// destructor; a quarter after, so before it), half never did.
/// Docs: "Thread-local destructors may delegate too". Promises: the counter reads exactly 64 once every
/// thread is joined; the shared values are dropped exactly once, after the last handle (the main thread's).
#[test]
fn handles_dropped_and_requests_made_by_thread_local_destructors_on_one_core() {
    if !in_pinned_child(
        "handles_dropped_and_requests_made_by_thread_local_destructors_on_one_core",
        25,
    ) {
        return;
    }
    const THREADS: usize = 64;
    let drops = Arc::new(AtomicUsize::new(0));
    let guards = Arc::new(AtomicUsize::new(0));
    let a = rt().trustee(0).entrust(0u64);
    let b = rt().trustee(1).entrust(0u64);
    let ad = rt().trustee(0).entrust(CountsDrops(drops.clone()));
    let bd = rt().trustee(1).entrust(CountsDrops(drops.clone()));
    let counter = rt().trustee(1).entrust(0u64);
    let threads: Vec<_> = (0..THREADS)
        .map(|s| {
            let (a, b, counter, guards) = (a.clone(), b.clone(), counter.clone(), guards.clone());
            let (ad, bd) = (ad.clone(), bd.clone());
            thread::spawn(move || {
                // A client made before the thread-local (destroyed after its destructor), after it (destroyed
                // before: the destructor's calls use the late client), or never.
                if s % 4 == 0 {
                    a.apply(|v| *v += 1);
                }
                let late = s % 4 == 1;
                let probe = late.then(|| a.clone());
                HELD.with(|h| {
                    *h.borrow_mut() = Some(InTls {
                        handles: vec![a.clone(), b.clone(), a, b],
                        counter,
                        guard: Some(CountsDrops(guards)),
                    })
                });
                if let Some(p) = probe {
                    p.apply(|v| *v += 1);
                }
                drop((ad, bd));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        guards.load(Ordering::SeqCst),
        THREADS,
        "thread-local destructors that finished"
    );
    assert_eq!(
        counter.apply(|c| *c),
        THREADS as u64,
        "apply_asyncs from thread-local destructors"
    );
    assert_eq!(a.apply(|v| *v), (THREADS / 2) as u64);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "shared values dropped while the main thread's handles live"
    );
    drop((ad, bd));
    eventually("both values dropped", || drops.load(Ordering::SeqCst) == 2);
    thread::sleep(Duration::from_millis(30));
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 5. A lone fiber's fast path (`fiber::call_alone`).

/// A result over-aligned past a record's alignment: boxed, not inline.
#[derive(Clone, Copy, PartialEq, Debug)]
#[repr(C, align(64))]
struct Aligned64([u8; 64]);

/// From a fiber alone on worker 0 (each test runs alone in its child), through the lone path to trustee 1:
/// `launch` results of no size (`()`, `[u64; 0]`), of exactly 512 bytes (the largest inline), of 520, of
/// 64 KiB, over-aligned; `apply` results of the same; alternating with requests that panic. Docs: "a result
/// over 512 bytes is boxed where it is made (`apply`, ..., `launch`)"; "`apply` resumes the panic in the
/// caller with its original payload, and the value stays usable". Promises: every result exact, every panic
/// its own payload, the count of runs exact.
#[test]
fn a_lone_fibers_results_of_every_shape_and_panics_come_back_exact() {
    if !in_child(
        "a_lone_fibers_results_of_every_shape_and_panics_come_back_exact",
        &[],
        25,
    ) {
        return;
    }
    let _ = quiet();
    calibrate();
    let latch: &'static Trust<Latch<u64>> =
        Box::leak(Box::new(rt().trustee(1).entrust(Latch::new(0))));
    let plain: &'static Trust<u64> = Box::leak(Box::new(rt().trustee(1).entrust(0)));
    let wrong = spawn_on(0, move || {
        let mut wrong: Vec<String> = Vec::new();
        for i in 0..300u64 {
            let () = latch.launch(move |l| *l.lock() += 1);
            let z: [u64; 0] = latch.launch(|_| []);
            assert_eq!(z.len(), 0);
            let exact = latch.launch(move |_| [i; 64]);
            if exact != [i; 64] {
                wrong.push(format!("512 bytes at {i}"));
            }
            let over = latch.launch(move |_| [i as u8; 520]);
            if over != [i as u8; 520] {
                wrong.push(format!("520 bytes at {i}"));
            }
            let al = latch.launch(move |_| Aligned64([i as u8; 64]));
            if al != Aligned64([i as u8; 64]) || !(&raw const al as usize).is_multiple_of(64) {
                wrong.push(format!("aligned at {i}"));
            }
            let a = plain.apply(move |c| {
                *c += 1;
                Aligned64([*c as u8; 64])
            });
            if a != Aligned64([(i + 1) as u8; 64]) {
                wrong.push(format!("apply aligned at {i}: {:?}", a.0[0]));
            }
            let p = catch_unwind(AssertUnwindSafe(|| {
                plain.apply(move |c| -> [u8; 600] {
                    if i % 2 == 0 {
                        std::panic::panic_any(i);
                    }
                    [*c as u8; 600]
                })
            }));
            match p {
                Ok(r) if i % 2 == 1 && r == [(i + 1) as u8; 600] => {}
                Err(payload) if i % 2 == 0 && payload.downcast_ref::<u64>() == Some(&i) => {}
                Ok(r) => wrong.push(format!("600 bytes at {i}: {}", r[0])),
                Err(_) => wrong.push(format!("panic at {i}: another payload")),
            }
            if i % 50 == 0 {
                let big = latch.launch(move |_| vec![i; 8192].into_boxed_slice());
                let arr: Box<[u64; 8192]> = latch.launch(move |_| Box::new([i; 8192]));
                if big.iter().any(|&x| x != i) || arr.iter().any(|&x| x != i) {
                    wrong.push(format!("64 KiB at {i}"));
                }
            }
        }
        wrong
    })
    .join()
    .unwrap();
    assert_eq!(wrong, Vec::<String>::new());
    assert_eq!(latch.apply(|l| *l.lock()), 300);
    assert_eq!(plain.apply(|c| *c), 300);
    child_ok();
}

/// A lone fiber on worker 0 calls trustee 1, whose closure then waits (up to 10 s) for a flag that only a
/// fiber on worker 0 sets, a fiber another thread spawns there once the closure has started. Docs (the lone
/// path): "as soon as its worker has anything else to do ... or after `IN_PLACE_SPINS` rounds, it ... suspends
/// until its worker's loop has the answer". Promises: the worker 0 fiber runs while the lone fiber waits,
/// the closure sees the flag, and the call returns it; 20 times.
#[test]
fn a_lone_fibers_worker_runs_the_fiber_its_callee_waits_for() {
    if !in_child(
        "a_lone_fibers_worker_runs_the_fiber_its_callee_waits_for",
        &[],
        25,
    ) {
        return;
    }
    let _ = quiet();
    calibrate();
    let t: &'static Trust<u64> = Box::leak(Box::new(rt().trustee(1).entrust(0)));
    for round in 0..20 {
        let started = Arc::new(AtomicBool::new(false));
        let flag = Arc::new(AtomicBool::new(false));
        let (s, f) = (started.clone(), flag.clone());
        let caller = spawn_on(0, move || {
            t.apply(move |c| {
                *c += 1;
                s.store(true, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(10);
                while !f.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::hint::spin_loop();
                    thread::yield_now();
                }
                f.load(Ordering::SeqCst)
            })
        });
        eventually("the closure started", || started.load(Ordering::SeqCst));
        let f = flag.clone();
        let setter = spawn_on(0, move || f.store(true, Ordering::SeqCst));
        let t0 = Instant::now();
        assert!(
            caller.join().unwrap(),
            "round {round}: the closure never saw the flag"
        );
        setter.join().unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "round {round} took {:?}",
            t0.elapsed()
        );
    }
    assert_eq!(t.apply(|c| *c), 20);
    child_ok();
}

/// A lone fiber's calls whose results are handles: trustee 1's closure returns a clone of a handle of a value
/// on trustee 0 (the fiber's own worker) each time; the fiber keeps 100 and drops them, 1,000 calls. And a
/// lone fiber's `launch` on a latch of its own trustee (the call goes to its own worker, through its channel
/// to itself or at once). Promises: the value on trustee 0 is dropped exactly once, after the last handle;
/// every launch result exact.
#[test]
fn a_lone_fibers_results_that_are_handles_and_launches_on_its_own_trustee_count_exactly() {
    if !in_child(
        "a_lone_fibers_results_that_are_handles_and_launches_on_its_own_trustee_count_exactly",
        &[],
        25,
    ) {
        return;
    }
    let _ = quiet();
    calibrate();
    let drops = Arc::new(AtomicUsize::new(0));
    let value = rt().trustee(0).entrust(CountsDrops(drops.clone()));
    let holder: &'static Trust<Option<Trust<CountsDrops>>> =
        Box::leak(Box::new(rt().trustee(1).entrust(Some(value))));
    let own: &'static Trust<Latch<u64>> =
        Box::leak(Box::new(rt().trustee(0).entrust(Latch::new(0))));
    let sum = spawn_on(0, move || {
        let mut kept = Vec::new();
        for i in 0..1000 {
            let h = holder.apply(|v| v.clone()).expect("still held");
            kept.push(h);
            if kept.len() == 100 {
                kept.clear();
            }
            if i % 10 == 0 {
                let n = own.launch(move |l| {
                    let mut g = l.lock();
                    *g += 1;
                    *g
                });
                assert_eq!(n, i / 10 + 1);
            }
        }
        drop(kept);
        own.launch(|l| *l.lock())
    })
    .join()
    .unwrap();
    assert_eq!(sum, 100);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "dropped while the holder keeps a handle"
    );
    holder.apply(|v| drop(v.take()));
    eventually("the value dropped", || drops.load(Ordering::SeqCst) == 1);
    thread::sleep(Duration::from_millis(30));
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    child_ok();
}

/// A lone fiber whose request's closure spawns fibers (landing on either worker, the caller's included) and
/// returns their handles; the fiber joins them. And a lone fiber whose trustee's closure blocks 200 ms while
/// threads mail the fiber's own worker (`apply_async`s on a value there, and entrusts). Promises: every
/// spawned fiber's result exact; every mailed request served during the wait (they complete before the
/// lone call returns), each once.
#[test]
fn a_lone_fibers_callee_spawns_fibers_and_mail_arrives_while_it_waits() {
    if !in_child(
        "a_lone_fibers_callee_spawns_fibers_and_mail_arrives_while_it_waits",
        &[],
        25,
    ) {
        return;
    }
    let _ = quiet();
    calibrate();
    let t: &'static Trust<u64> = Box::leak(Box::new(rt().trustee(1).entrust(0)));
    let mine: &'static Trust<u64> = Box::leak(Box::new(rt().trustee(0).entrust(0)));
    let total = spawn_on(0, move || {
        let mut total = 0u64;
        for i in 0..100u64 {
            let fibers = t.apply(move |c| {
                *c += 1;
                (0..4u64)
                    .map(|k| spawn(move || i * 10 + k))
                    .collect::<Vec<_>>()
            });
            total += fibers.into_iter().map(|f| f.join().unwrap()).sum::<u64>();
        }
        total
    })
    .join()
    .unwrap();
    assert_eq!(total, (0..100u64).map(|i| 40 * i + 6).sum::<u64>());
    // The slow call, with mail for the caller's worker meanwhile.
    let during = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let caller = spawn_on(0, move || {
        t.apply(move |c| {
            s.store(true, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(300));
            *c
        })
    });
    eventually("the slow closure started", || {
        started.load(Ordering::SeqCst)
    });
    let mailers: Vec<_> = (0..4)
        .map(|_| {
            let during = during.clone();
            thread::spawn(move || {
                for _ in 0..25 {
                    pollster::block_on(mine.apply_async(|c| *c += 1));
                    drop(rt().trustee(0).entrust(0u8));
                    during.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for m in mailers {
        m.join().unwrap();
    }
    let served_during = !caller.is_finished();
    assert_eq!(caller.join().unwrap(), 100);
    assert!(
        served_during,
        "the mailed requests waited for the lone fiber's slow call"
    );
    assert_eq!(mine.apply(|c| *c), 100);
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 6. fork() inside a delegated closure: what the copied worker does in the child before it aborts.

/// Appends "`what` by pid N" to a file: a trace outside the process, of a drop or of a closure's run.
fn mark(path: &std::path::Path, what: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let _ = writeln!(f, "{what} by pid {}", std::process::id());
}

/// The traces in a file, as "`what` in parent" or "`what` in child".
fn traces(path: &std::path::Path) -> Vec<String> {
    let me = format!("by pid {}", std::process::id());
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (what, by) = l.split_once(" by ").unwrap();
            format!(
                "{what} in {}",
                if format!("by {by}") == me {
                    "parent"
                } else {
                    "child"
                }
            )
        })
        .collect()
}

struct MarksOnDrop(std::path::PathBuf);

impl Drop for MarksOnDrop {
    fn drop(&mut self) {
        mark(&self.0, "dropped");
    }
}

/// A delegated closure on worker 0 drops the last handle of a value of worker 0 (whose destructor leaves a
/// trace in a file), then forks, and returns in both processes. The value's drop waits for the batch that
/// holds the closure (`Worker::retire`), so it is due in the same round of the loop, after `serve`. Docs
/// (Shutdown, `exit` and `fork`): "a delegated closure that forked and returns, aborts the child with that
/// message; the child never drops the parent's values". Promises: the child aborts (-1) within 5 s; the value
/// is dropped once, by the parent.
#[test]
fn a_value_retired_by_a_forking_closure_is_dropped_by_the_parent_alone() {
    if !in_child(
        "a_value_retired_by_a_forking_closure_is_dropped_by_the_parent_alone",
        &[],
        20,
    ) {
        return;
    }
    let _ = quiet();
    let path = std::env::temp_dir().join(format!("trust-review62-a-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let value = rt().trustee(0).entrust(MarksOnDrop(path.clone()));
    let holder = rt().trustee(0).entrust(Some(value));
    holder.apply(|_| ());
    let pid = holder.apply(|slot| {
        drop(slot.take());
        // SAFETY: what the child's copied worker does after the closure returns is the point under test.
        unsafe { libc::fork() }
    });
    assert!(pid > 0, "fork failed");
    let (code, _) = reap(pid, 5);
    eventually("the parent's drop", || !traces(&path).is_empty());
    thread::sleep(Duration::from_millis(50));
    let seen = traces(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        (code, seen),
        (Some(-1), vec!["dropped in parent".to_string()]),
        "(the child's end: -1 is its abort; who dropped the value)"
    );
    child_ok();
}

/// A plain thread's batch to worker 0 holds three `apply_then`s: the first forks, the second and third leave
/// a trace in a file. And a thread's `apply_async` (mailed) that the forking closure's retire postponed (the
/// closure waits until the request is in the mailbox, then drops a last handle of a local value, whose retire
/// takes the mail, then forks). Docs: "a delegated closure that forked and returns, aborts the child with that
/// message"; the requests are the parent's, run once, by its worker. Promises: each of the three requests
/// leaves exactly one trace, in the parent; the child aborts within 5 s.
#[test]
fn requests_after_a_forking_closure_run_in_the_parent_alone() {
    if !in_child(
        "requests_after_a_forking_closure_run_in_the_parent_alone",
        &[],
        20,
    ) {
        return;
    }
    let _ = quiet();
    let path = std::env::temp_dir().join(format!("trust-review62-b-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let t = rt().trustee(0).entrust(Some(rt().trustee(0).entrust(0u8)));
    t.apply(|_| ());
    let sent = Arc::new(AtomicBool::new(false));
    let (p1, p2, p3) = (path.clone(), path.clone(), path.clone());
    let started = Arc::new(AtomicBool::new(false));
    let (t2, s2, st2) = (t.clone(), sent.clone(), started.clone());
    // The mailer: an `apply_async` sent while the forking closure runs.
    let mailer = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !st2.load(Ordering::SeqCst) && Instant::now() < deadline {
            thread::yield_now();
        }
        struct SetOnPoll<F>(F, Arc<AtomicBool>);
        impl<F: std::future::Future + Unpin> std::future::Future for SetOnPoll<F> {
            type Output = F::Output;
            fn poll(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<F::Output> {
                let r = std::pin::Pin::new(&mut self.0).poll(cx);
                self.1.store(true, Ordering::SeqCst);
                r
            }
        }
        pollster::block_on(SetOnPoll(t2.apply_async(move |_| mark(&p3, "mailed")), s2));
    });
    let pid = Arc::new(AtomicUsize::new(0));
    let (pid2, s3, st3) = (pid.clone(), sent.clone(), started);
    t.apply_then(|_| (), |()| ()); // goes at once (an idle channel): the next three share a batch
    t.apply_then(
        move |slot| {
            st3.store(true, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !s3.load(Ordering::SeqCst) && Instant::now() < deadline {
                thread::yield_now();
            }
            // The last handle of a local value: its retire takes the mailbox (the `apply_async`) and postpones it.
            drop(slot.take());
            // SAFETY: what the child's copied worker does after the closure returns is the point under test.
            unsafe { libc::fork() }
        },
        move |p| pid2.store(p as usize, Ordering::SeqCst),
    );
    t.apply_then(move |_| mark(&p1, "second"), |()| ());
    t.apply_then(move |_| mark(&p2, "third"), |()| ());
    trust_core::wait_pending();
    mailer.join().unwrap();
    let pid = pid.load(Ordering::SeqCst) as libc::pid_t;
    assert!(pid > 0, "fork failed");
    let (code, _) = reap(pid, 5);
    thread::sleep(Duration::from_millis(50));
    let mut seen = traces(&path);
    seen.sort();
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        (code, seen),
        (
            Some(-1),
            vec![
                "mailed in parent".to_string(),
                "second in parent".into(),
                "third in parent".into()
            ]
        ),
        "(the child's end: -1 is its abort; the requests' traces)"
    );
    child_ok();
}

/// A fiber on worker 0 forks and ends, while another fiber of worker 0 is ready (it yields in a loop until a
/// flag the first sets before forking, then leaves a trace). Docs: "A child forked by a fiber is a copy of its
/// worker's thread: ... a fiber that ends there ... aborts the child with that message". Promises: the child
/// aborts within 5 s; the other fiber's trace is left once, by the parent.
#[test]
fn a_ready_fiber_does_not_run_in_the_child_of_a_fiber_that_forked() {
    if !in_child(
        "a_ready_fiber_does_not_run_in_the_child_of_a_fiber_that_forked",
        &[],
        20,
    ) {
        return;
    }
    let _ = quiet();
    calibrate();
    let path = std::env::temp_dir().join(format!("trust-review62-c-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let flag = Arc::new(AtomicBool::new(false));
    let (f, p) = (flag.clone(), path.clone());
    let other = spawn_on(0, move || {
        while !f.load(Ordering::SeqCst) {
            trust_core::yield_now();
        }
        mark(&p, "other fiber");
    });
    thread::sleep(Duration::from_millis(20));
    let forker = spawn_on(0, move || {
        flag.store(true, Ordering::SeqCst);
        // SAFETY: the child ends this fiber at once; what its copied worker does then is under test.
        unsafe { libc::fork() }
    });
    let pid = forker.join().unwrap();
    other.join().unwrap();
    assert!(pid > 0, "fork failed");
    let (code, _) = reap(pid, 5);
    thread::sleep(Duration::from_millis(50));
    let seen = traces(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        (code, seen),
        (Some(-1), vec!["other fiber in parent".to_string()]),
        "(the child's end: -1 is its abort; the other fiber's traces)"
    );
    child_ok();
}
