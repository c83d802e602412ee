//! Review 68: a hostile look at three promises. (1) `Trust::clone` and `Drop` never block and never panic,
//! and the value is dropped exactly once: chains of a million clones (each cloned from the previous) from a
//! thread that never made a call, from inside the value's own trustee, from inside another trustee's closure,
//! from fibers and from continuations; clone/drop storms from threads, fibers and closures racing
//! `Runtime::shutdown`; a value's destructor at shutdown handing clones to a thread that outlives the runtime;
//! `try_unwrap` looping against a holder that clones and drops; `apply_async` futures dropped with handles as
//! results; threads that exit with continuations (capturing handles, answering handles) never run. (2) `net`
//! fiber sockets under shutdown: sockets a fiber waited on, moved to plain threads blocked in `read` and in
//! `write`; fibers blocked in `accept`, `read` and `write` all at once; hundreds of connections reset by their
//! peers mid-transfer. (3) `fork` while clones are alive, counts are in flight, sockets are registered, fibers
//! come and go and tasks await: the child's clone/drop do nothing, its sockets work as std's on its plain
//! thread, and every call there panics naming fork or returns, never waiting on a lock a parent's thread held
//! at the fork.
//!
//! Findings, fixed (each test's doc gives the measurement):
//! - `fork_while_fibers_register_sockets_then_drop_one_in_the_child`: dropping a socket a fiber had waited on,
//!   in a child forked while fibers registered sockets, hung the child for good (4 of the first 84-119 forks,
//!   in each of two runs): `reactor::forget` took the worker's socket-set lock, held by a worker at the fork.
//!   Fixed in `worker/reactor.rs` (a forked child skips the set) and `api/net.rs` (a fiber's socket wait in a
//!   forked child panics naming fork before registering: its locks, and the epoll set shared with the parent).
//! - `spawn_in_a_child_forked_while_fibers_come_and_go_panics_naming_fork`: `spawn` in such a child hung (4 of
//!   1,037 forks) instead of panicking naming fork: it took a stack from the pool, under a lock a parent's
//!   thread held at the fork, before looking at the trustees. Fixed in `api/fiber.rs`.
//! - `apply_async_in_a_child_forked_while_tasks_await_panics_naming_fork`: the first poll of an `apply_async`
//!   future in such a child hung (3 of 2,000 forks): it drained the trustee's relay of wakers, under a lock the
//!   worker held at the fork, before looking at the trustee. Fixed in `trustee/shared.rs` (`drain_relay`) and
//!   `api/future.rs`.
//! - `wait_pending_in_a_child_forked_while_launch_then_results_arrive`: `wait_pending` in a child forked while
//!   `launch_then` results arrived hung for good (4 of the first 36 forks), on the thread's inbox lock, held by
//!   a worker at the fork. Fixed in `client/then.rs` (a forked child takes it only if it is free; so does the
//!   inbox's drop, and a result's sender dropped there).
//! - `an_inline_apply_in_a_child_forked_by_a_fiber_panics_naming_fork`: in a child forked by a fiber, an
//!   `apply` on a value of the fiber's own trustee ran inline (the local shortcut looks at no trustee state)
//!   instead of panicking naming fork. Fixed off the hot path: the fork handler spends the forking worker's
//!   inline-apply credit and a forked child never refills it (`worker/fairness.rs`, `api/runtime.rs`), so the
//!   apply goes by the fairness hold, whose suspension panics naming fork.
//! - `an_inline_apply_then_in_a_child_forked_by_a_fiber_panics_naming_fork`: the same with `apply_then` ran the
//!   closure inline, then aborted the child from `end_if_forked` instead of panicking naming fork. Fixed: one
//!   relaxed load of the fork flag on `apply_then`'s own-trustee branch (`api/trust.rs`).
//! - `an_inline_apply_in_a_child_forked_by_a_delegated_closure_panics_naming_fork` (review 71): the same from a
//!   delegated closure's child still ran, the hold letting a caller that is not a fiber apply at once. Fixed:
//!   the hold panics naming fork in a forked child (`worker/fiber.rs`).
//!
//! Not a finding, for the record: clones are counted on the trustee with a signed count (an `isize`), not with
//! weights, so there is no weight to exhaust: chains of a million clones cost a million counts, netted in the
//! count mail for a thread without a client.
//!
//! Held: everything else below.
//!
//! Every test runs in a child process of its own (a runtime of 2 workers) under a watchdog, so a hang is a
//! failure with a message; every count is exact.

use std::io::{ErrorKind, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

#[macro_use]
mod common;
use common::*;
use trust_core::net::{TcpListener, TcpStream};
use trust_core::{Trust, spawn, wait_pending};

const MAGIC: u64 = 0x5EED_CAFE_F00D_BEEF;

/// A value that counts its drops and poisons its own `magic` as it goes: a closure that runs on a dropped
/// value sees (most likely) something else than `MAGIC`.
struct Counted {
    magic: u64,
    drops: Arc<AtomicUsize>,
}

impl Counted {
    fn new(drops: &Arc<AtomicUsize>) -> Self {
        Counted {
            magic: MAGIC,
            drops: drops.clone(),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        assert_eq!(self.magic, MAGIC, "a value dropped twice");
        self.magic = 0;
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

fn is_shutdown_message(m: &str) -> bool {
    m.contains("shut down")
}

/// Waits up to 10 s for `n` to reach `want`, then 200 ms more (a second drop would show), and checks it.
fn exactly(n: &AtomicUsize, want: usize, what: &str) {
    let got = wait_for(n, want, 10_000);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(load(n), want, "{what} (read {got} first)");
}

/// In a forked child: panics quietly (and quickly: no backtrace).
fn quiet_child() {
    std::panic::set_hook(Box::new(|_| {}));
}

// ---------------------------------------------------------------------------------------------------------
// (1) Clone and drop.

const CHAIN: usize = 1_000_000;

/// Builds a chain of `n` more handles, each cloned from the one before, and drops it newest first; returns its
/// length.
fn chain_of(h: Trust<Counted>, n: usize) -> usize {
    let mut chain = Vec::with_capacity(n + 1);
    chain.push(h);
    for i in 0..n {
        let c = chain[i].clone();
        chain.push(c);
    }
    let len = chain.len();
    while chain.pop().is_some() {}
    len
}

/// A thread that never made a call (no client: every change goes to the count mail) builds a chain of a
/// million handles, each cloned from the one before, then drops them oldest first except the newest. The
/// value is alive throughout (a closure through the newest sees `MAGIC`, drops 0), and is dropped exactly once
/// after the newest goes.
#[test]
fn a_chain_of_a_million_clones_from_a_clientless_thread() {
    in_child!("a_chain_of_a_million_clones_from_a_clientless_thread", 60);
    let drops = Arc::new(AtomicUsize::new(0));
    let v = rt().trustee(1).entrust(Counted::new(&drops));
    let last = thread::spawn(move || {
        let mut chain = Vec::with_capacity(CHAIN + 1);
        chain.push(v);
        for i in 0..CHAIN {
            let c = chain[i].clone();
            chain.push(c);
        }
        let last = chain.pop().unwrap();
        drop(chain);
        last
    })
    .join()
    .expect("clone and drop never panic");
    assert_eq!(last.apply(|c| c.magic), MAGIC);
    assert_eq!(load(&drops), 0, "dropped with a handle alive");
    let again = last.clone();
    drop(last);
    assert_eq!(again.apply(|c| c.magic), MAGIC);
    assert_eq!(load(&drops), 0, "dropped with a handle alive");
    drop(again);
    exactly(&drops, 1, "the value after its million handles");
    child_ok();
}

/// The same chain (200,000 long) built inside the value's own trustee (each clone an inline count), inside
/// the other trustee's closure (each a fire-and-forget change from a worker), in fibers on both workers and in
/// `apply_then` continuations on a plain thread and on workers; each chain is dropped there, newest first. The
/// value outlives them all (the outer handle) and is dropped once, at its drop.
#[test]
fn chains_of_clones_inside_trustees_fibers_and_continuations() {
    in_child!(
        "chains_of_clones_inside_trustees_fibers_and_continuations",
        120
    );
    let drops = Arc::new(AtomicUsize::new(0));
    let v = rt().trustee(1).entrust(Counted::new(&drops));
    const N: usize = 200_000;
    // On its own trustee.
    let h = v.clone();
    assert_eq!(v.apply(move |_| chain_of(h, N)), N + 1);
    // On the other trustee.
    let h = v.clone();
    let other = rt().trustee(0).entrust(());
    assert_eq!(other.apply(move |_| chain_of(h, N)), N + 1);
    // Fibers on both workers.
    let fibers: Vec<_> = (0..4)
        .map(|_| {
            let h = v.clone();
            spawn(move || chain_of(h, N / 4))
        })
        .collect();
    for f in fibers {
        assert_eq!(within(60, move || f.join().unwrap()), N / 4 + 1);
    }
    // Continuations on a plain thread, and on workers (issued from a fiber on each).
    let got = Arc::new(AtomicUsize::new(0));
    let (h, g) = (v.clone(), got.clone());
    other.apply_then(
        |_| (),
        move |()| {
            g.fetch_add(chain_of(h, N / 4), Ordering::SeqCst);
        },
    );
    wait_pending();
    for _ in 0..2 {
        let (h, g, o) = (v.clone(), got.clone(), other.clone());
        spawn(move || {
            o.apply_then(
                |_| (),
                move |()| {
                    g.fetch_add(chain_of(h, N / 4), Ordering::SeqCst);
                },
            );
            wait_pending();
        })
        .join()
        .unwrap();
    }
    assert_eq!(load(&got), 3 * (N / 4 + 1));
    assert_eq!(v.apply(|c| c.magic), MAGIC);
    assert_eq!(load(&drops), 0, "dropped with a handle alive");
    drop(v);
    exactly(&drops, 1, "the value after every chain");
    child_ok();
}

/// Threads, fibers and delegated closures clone, apply and drop handles of eight values in a loop while the
/// main thread shuts the runtime down; the threads go on for a while after it. Promises: no clone or drop
/// ever panics (only `apply`, with the shutdown message), no closure sees a dropped value, the shutdown
/// returns within its 5 s, and each value is dropped exactly once — not again when the handles still alive
/// are cloned and dropped afterwards.
#[test]
fn a_clone_drop_storm_across_shutdown() {
    in_child!("a_clone_drop_storm_across_shutdown", 60);
    let drops = Arc::new(AtomicUsize::new(0));
    let values: Arc<Vec<Trust<Counted>>> = Arc::new(
        (0..8)
            .map(|i| rt().trustee(i % 2).entrust(Counted::new(&drops)))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut threads = Vec::new();
    for t in 0..4usize {
        let (values, stop, bad) = (values.clone(), stop.clone(), bad.clone());
        threads.push(thread::spawn(move || {
            let mut kept = Vec::new();
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_mul(31).wrapping_add(7);
                let h = values[i % 8].clone();
                match catch_unwind(AssertUnwindSafe(|| h.apply(|c| c.magic))) {
                    Ok(MAGIC) => {}
                    Ok(m) => bad.lock().unwrap().push(format!("thread saw magic {m:#x}")),
                    Err(p) => {
                        let m = panic_message(p);
                        if !is_shutdown_message(&m) {
                            bad.lock().unwrap().push(format!("thread apply: {m}"));
                        }
                    }
                }
                // Clones from inside a closure on the other trustee, handed back out.
                let other = values[(i + 1) % 8].clone();
                let h2 = h.clone();
                let r = catch_unwind(AssertUnwindSafe(|| {
                    other.apply(move |c| {
                        let keep = h2.clone();
                        drop(h2);
                        (c.magic, keep)
                    })
                }));
                match r {
                    Ok((MAGIC, keep)) => kept.push(keep),
                    Ok((m, _)) => bad
                        .lock()
                        .unwrap()
                        .push(format!("closure saw magic {m:#x}")),
                    Err(p) => {
                        let m = panic_message(p);
                        if !is_shutdown_message(&m) {
                            bad.lock().unwrap().push(format!("nested apply: {m}"));
                        }
                    }
                }
                if kept.len() > 64 {
                    kept.clear();
                }
                drop(h);
            }
            kept.len()
        }));
    }
    let fibers: Vec<_> = (0..8usize)
        .map(|f| {
            let (values, stop) = (values.clone(), stop.clone());
            spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let a = values[(f + n) % 8].clone();
                    let b = a.clone();
                    drop(a);
                    let _ = b.apply(|c| c.magic);
                    drop(b);
                    n += 1;
                    trust_core::yield_now();
                }
                n
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(400));
    let t0 = Instant::now();
    rt().shutdown();
    let took = t0.elapsed();
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a storm thread panicked outside apply");
    }
    for f in fibers {
        let r = within(10, move || f.join());
        if let Err(p) = r {
            let m = panic_message(p);
            assert!(is_shutdown_message(&m), "a storm fiber: {m}");
        }
    }
    assert!(took < Duration::from_secs(7), "shutdown took {took:?}");
    assert_eq!(*bad.lock().unwrap(), Vec::<String>::new());
    exactly(&drops, 8, "the storm's eight values after shutdown");
    // Handles alive after the shutdown: clone and drop do nothing. (The abandoned fibers leak their `Arc` of
    // the handles: only these are dropped.)
    let more: Vec<_> = values.iter().map(Trust::clone).collect();
    let again: Vec<_> = more.iter().map(Trust::clone).collect();
    drop(values);
    drop(again);
    drop(more);
    exactly(
        &drops,
        8,
        "the eight values after their handles dropped post-shutdown",
    );
    child_ok();
}

/// Holds a handle of another value; at shutdown its destructor clones that handle and sends the clones to a
/// thread that outlives the runtime.
struct HandsOut {
    other: Option<Trust<Counted>>,
    to: mpsc::Sender<Trust<Counted>>,
    drops: Arc<AtomicUsize>,
}

impl Drop for HandsOut {
    fn drop(&mut self) {
        let other = self.other.take().unwrap();
        for _ in 0..1000 {
            let _ = self.to.send(other.clone());
        }
        let _ = self.to.send(other);
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// A value whose destructor runs at shutdown clones a handle of a value of the other trustee 1,000 times and
/// sends them to a thread, which clones, drops, and `try_unwrap`s them after the runtime is gone. Promises
/// ("a value's destructor that runs at shutdown can still clone and drop handles of other values"; after
/// shutdown "dropping a `Trust` does nothing"; `try_unwrap` "panics after `Runtime::shutdown`"): no clone or
/// drop panics, each `try_unwrap` panics with the shutdown message, and each value is dropped exactly once.
#[test]
fn clones_made_by_a_destructor_at_shutdown_outlive_the_runtime() {
    in_child!(
        "clones_made_by_a_destructor_at_shutdown_outlive_the_runtime",
        30
    );
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let target = rt().trustee(1).entrust(Counted::new(&drops));
    let holder = rt().trustee(0).entrust(HandsOut {
        other: Some(target.clone()),
        to: tx,
        drops: drops.clone(),
    });
    drop(target);
    let receiver = thread::spawn(move || {
        let mut got = Vec::new();
        while let Ok(h) = rx.recv() {
            got.push(h);
        }
        // The runtime is gone once the sender was dropped with its value.
        let mut refused = 0;
        for h in got.drain(..10) {
            let c = h.clone();
            drop(h);
            match catch_unwind(AssertUnwindSafe(move || c.try_unwrap())) {
                Err(p) => {
                    let m = panic_message(p);
                    assert!(is_shutdown_message(&m), "try_unwrap after shutdown: {m}");
                    refused += 1;
                }
                Ok(r) => panic!("try_unwrap after shutdown returned (Ok: {})", r.is_ok()),
            }
        }
        (got.len(), refused)
    });
    std::mem::forget(holder); // never dropped here: only the shutdown drops it
    rt().shutdown();
    let (n, refused) = within(20, move || receiver.join().unwrap());
    assert_eq!((n, refused), (991, 10));
    exactly(&drops, 2, "the holder and its target, once each");
    child_ok();
}

/// A thread holds a clone and clones/drops it 20,000 times while the main thread loops `try_unwrap` on the
/// other handle (getting it back on each failure); then the thread drops its clone. Promise: every try fails
/// while the clone is alive, the value comes back exactly once after it is gone, and it is never dropped by
/// the runtime (drops 0 until the main thread drops the value it got back). On each trustee.
#[test]
fn try_unwrap_in_a_loop_against_a_holder_that_clones_and_drops() {
    in_child!(
        "try_unwrap_in_a_loop_against_a_holder_that_clones_and_drops",
        60
    );
    let drops = Arc::new(AtomicUsize::new(0));
    for trustee in 0..2 {
        let mut v = rt().trustee(trustee).entrust(Counted::new(&drops));
        let held = v.clone();
        let released = Arc::new(AtomicBool::new(false));
        let r = released.clone();
        let holder = thread::spawn(move || {
            for i in 0..20_000 {
                let c = held.clone();
                if i % 3 == 0 {
                    let d = c.clone();
                    drop(c);
                    drop(d);
                } else {
                    drop(c);
                }
            }
            r.store(true, Ordering::SeqCst);
            drop(held);
        });
        let mut failures_while_held = 0usize;
        let deadline = Instant::now() + Duration::from_secs(30);
        let value = loop {
            assert!(Instant::now() < deadline, "try_unwrap never succeeded");
            let was_released = released.load(Ordering::SeqCst);
            match v.try_unwrap() {
                Ok(value) => {
                    assert!(
                        was_released || released.load(Ordering::SeqCst),
                        "taken while a clone was alive"
                    );
                    break value;
                }
                Err(back) => {
                    if !was_released {
                        failures_while_held += 1;
                    }
                    v = back;
                }
            }
        };
        holder.join().unwrap();
        assert!(failures_while_held > 0);
        assert_eq!(
            load(&drops),
            trustee,
            "the runtime dropped a value that was given back"
        );
        assert_eq!(value.magic, MAGIC);
        drop(value);
        assert_eq!(load(&drops), trustee + 1);
    }
    child_ok();
}

/// `apply_async` futures whose results are handles (of a value of the same trustee and of the other one) are
/// dropped unpolled and after their first poll, some behind a slow closure. Promise: "dropping the future
/// early is harmless (the result is dropped when it arrives)": every handle in a result is uncounted and each
/// value is dropped exactly once, after the last handle.
#[test]
fn apply_async_futures_dropped_with_handles_as_results() {
    in_child!("apply_async_futures_dropped_with_handles_as_results", 30);
    let drops = Arc::new(AtomicUsize::new(0));
    let a = rt().trustee(0).entrust(Counted::new(&drops));
    let b = rt().trustee(1).entrust(Counted::new(&drops));
    let hub = rt().trustee(0).entrust((a.clone(), b.clone()));
    let waker = futures_task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    for i in 0..2000 {
        let mut fut = Box::pin(hub.apply_async(move |(a, b)| {
            if i % 100 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
            (a.clone(), b.clone(), vec![a.clone(); 3])
        }));
        if i % 2 == 0 {
            let _ = fut.as_mut().poll(&mut cx);
        }
        drop(fut);
    }
    drop(hub);
    drop((a, b));
    exactly(
        &drops,
        2,
        "two values after 2,000 dropped futures answering handles",
    );
    child_ok();
}

/// Threads issue `apply_then`s whose continuations capture handles and whose results are handles, and exit
/// without `wait_pending` (behind a trustee stalled for 300 ms). Promise: a thread may exit with requests in
/// flight; the continuations' captures and results are dropped with them, each handle uncounted: each value is
/// dropped exactly once, after the main thread's last handle.
#[test]
fn threads_exit_with_continuations_holding_and_answering_handles() {
    in_child!(
        "threads_exit_with_continuations_holding_and_answering_handles",
        30
    );
    let drops = Arc::new(AtomicUsize::new(0));
    let a = rt().trustee(0).entrust(Counted::new(&drops));
    let b = rt().trustee(1).entrust(Counted::new(&drops));
    let ran = Arc::new(AtomicUsize::new(0));
    let stall = stall(1, 300);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (a, b, ran) = (a.clone(), b.clone(), ran.clone());
            thread::spawn(move || {
                for i in 0..100 {
                    let (ca, cb, r) = (a.clone(), b.clone(), ran.clone());
                    let target = if (t + i) % 2 == 0 { &a } else { &b };
                    let bb = b.clone();
                    target.apply_then(
                        move |_| (bb.clone(), bb),
                        move |(x, y)| {
                            let _keep = (ca, cb, x, y);
                            r.fetch_add(1, Ordering::SeqCst);
                        },
                    );
                }
                // Exits: no wait_pending.
            })
        })
        .collect();
    for t in threads {
        t.join()
            .expect("a thread exiting with requests in flight panicked");
    }
    stall.join().unwrap();
    assert_eq!(a.apply(|c| c.magic), MAGIC);
    assert_eq!(b.apply(|c| c.magic), MAGIC);
    assert_eq!(load(&drops), 0);
    drop(a);
    drop(b);
    exactly(
        &drops,
        2,
        "two values after threads exited with continuations holding handles",
    );
    // The continuations ran on their threads at exit or not at all: never more than issued.
    assert!(load(&ran) <= 800);
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// (2) Sockets under shutdown.

/// Makes a fiber wait on `s` once (so the worker's set holds it): the fiber reads one byte the peer sends.
fn wait_once_in_a_fiber(s: TcpStream, peer: &mut std::net::TcpStream) -> TcpStream {
    let f = spawn(move || {
        let mut b = [0u8; 1];
        (&s).read_exact(&mut b).unwrap();
        s
    });
    thread::sleep(Duration::from_millis(50));
    peer.write_all(b"x").unwrap();
    within(10, move || f.join().unwrap())
}

/// Sockets a fiber waited on, then moved to plain threads: one blocks in `read`, one in `write` (its peer never
/// reads), one in a listener's `accept`, when the runtime shuts down. Promise ("a plain thread reading one gets
/// `Ok(0)`"): the reader gets `Ok(0)`, the writer and the acceptor an error, all within a few seconds, not a
/// hang.
#[test]
fn plain_threads_blocked_in_read_and_write_on_fiber_sockets_at_shutdown() {
    in_child!(
        "plain_threads_blocked_in_read_and_write_on_fiber_sockets_at_shutdown",
        40
    );
    rt();
    let (r, mut rpeer) = pair();
    let r = wait_once_in_a_fiber(r, &mut rpeer);
    let (w, mut wpeer) = pair();
    let w = wait_once_in_a_fiber(w, &mut wpeer);
    let reader = thread::spawn(move || {
        let mut b = [0u8; 16];
        (&r).read(&mut b).map_err(|e| e.kind())
    });
    // A listener a fiber accepted on once, then a plain thread blocked in `accept` on it.
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    let laddr = listener.local_addr().unwrap();
    let l = listener.clone();
    let first = spawn(move || l.accept().map(|_| ()).map_err(|e| e.kind()));
    thread::sleep(Duration::from_millis(50));
    let _c = std::net::TcpStream::connect(laddr).unwrap();
    assert_eq!(within(10, move || first.join().unwrap()), Ok(()));
    let acceptor = thread::spawn(move || listener.accept().map(|_| ()).map_err(|e| e.kind()));
    let written = Arc::new(AtomicUsize::new(0));
    let wn = written.clone();
    let writer = thread::spawn(move || {
        let chunk = vec![7u8; 1 << 16];
        loop {
            match (&w).write(&chunk) {
                Ok(n) => {
                    wn.fetch_add(n, Ordering::SeqCst);
                }
                Err(e) => return e.kind(),
            }
        }
    });
    // The writer fills the buffers and blocks.
    let mut last = usize::MAX;
    while load(&written) != last {
        last = load(&written);
        thread::sleep(Duration::from_millis(200));
    }
    rt().shutdown();
    let got = within(10, move || reader.join().unwrap());
    assert_eq!(
        got,
        Ok(0),
        "a plain thread blocked in read on a fiber's socket at shutdown"
    );
    let kind = within(10, move || writer.join().unwrap());
    assert_ne!(kind, ErrorKind::WouldBlock, "the writer");
    let accepted = within(10, move || acceptor.join().unwrap());
    assert!(
        accepted.is_err_and(|k| k != ErrorKind::WouldBlock && k != ErrorKind::TimedOut),
        "a plain thread blocked in accept on a fiber's listener at shutdown: {accepted:?}"
    );
    drop(wpeer);
    drop(rpeer);
    child_ok();
}

/// 20 fibers blocked in `accept` on one listener, 20 in `read` and 20 in `write` (peers that never read) when
/// the runtime shuts down. Promises: shutdown returns within its 5 s, every `join` returns (the shutdown panic
/// for a fiber still suspended) within seconds, every read peer sees the end, and the listener refuses or
/// resets new connections.
#[test]
fn sixty_fibers_blocked_in_accept_read_and_write_at_shutdown() {
    in_child!(
        "sixty_fibers_blocked_in_accept_read_and_write_at_shutdown",
        60
    );
    rt();
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let mut fibers = Vec::new();
    for _ in 0..20 {
        let l = listener.clone();
        fibers.push(spawn(move || {
            let _ = l.accept();
        }));
    }
    let mut peers = Vec::new();
    for _ in 0..20 {
        let (s, p) = pair();
        peers.push(p);
        fibers.push(spawn(move || {
            let mut b = [0u8; 8];
            let _ = (&s).read(&mut b);
        }));
    }
    let mut wpeers = Vec::new();
    for _ in 0..20 {
        let (s, p) = pair();
        wpeers.push(p);
        fibers.push(spawn(move || {
            let chunk = vec![1u8; 1 << 16];
            while (&s).write(&chunk).is_ok() {}
        }));
    }
    thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    rt().shutdown();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(7), "shutdown took {took:?}");
    let mut shut = 0;
    let mut done = 0;
    for f in fibers {
        match within(10, move || f.join()) {
            Ok(()) => done += 1,
            Err(p) => {
                let m = panic_message(p);
                assert!(is_shutdown_message(&m), "a blocked fiber's join: {m}");
                shut += 1;
            }
        }
    }
    assert_eq!(shut + done, 60);
    for mut p in peers {
        p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 8];
        let r = p.read(&mut b);
        assert!(
            matches!(r, Ok(0)) || r.as_ref().is_err_and(|e| e.kind() != ErrorKind::WouldBlock),
            "the peer of a fiber blocked in read at shutdown: {r:?}"
        );
    }
    for mut p in wpeers {
        // Drains what was written, then sees the end.
        p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = vec![0u8; 1 << 16];
        loop {
            match p.read(&mut b) {
                Ok(0) => break,
                Err(e) => {
                    assert_ne!(
                        e.kind(),
                        ErrorKind::WouldBlock,
                        "the peer of a fiber blocked in write"
                    );
                    break;
                }
                Ok(_) => {}
            }
        }
    }
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Err(_) => {}
        Ok(mut c) => {
            c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let r = c.read(&mut [0u8; 1]);
            assert!(
                !matches!(r, Err(ref e) if e.kind() == ErrorKind::WouldBlock),
                "a connect to the shut-down listener hangs"
            );
        }
    }
    child_ok();
}

/// 300 connections to a fiber server; each fiber reads a byte then writes 1 MiB chunks back; each peer reads a
/// little and resets the connection (`SO_LINGER` 0) mid-transfer; meanwhile a thread applies 20,000 times.
/// Promises: every fiber ends (its write fails with an error, never a hang or a panic), the applies all
/// count, the server goes on accepting.
#[test]
fn three_hundred_peers_reset_mid_transfer() {
    in_child!("three_hundred_peers_reset_mid_transfer", 90);
    rt();
    const N: usize = 300;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let ended = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let (e1, e2) = (ended.clone(), errors.clone());
    let server = spawn(move || {
        let mut conns = Vec::new();
        for _ in 0..N + 1 {
            let (s, _) = listener.accept().unwrap();
            let (ended, errors) = (e1.clone(), e2.clone());
            conns.push(spawn(move || {
                let mut b = [0u8; 1];
                if (&s).read_exact(&mut b).is_err() {
                    errors.fetch_add(1, Ordering::SeqCst);
                } else if b[0] == b'q' {
                    (&s).write_all(b"ok").unwrap();
                } else {
                    // Until the reset says so (64 MiB at most: far past loopback's buffers).
                    let chunk = vec![9u8; 1 << 20];
                    for _ in 0..64 {
                        if (&s).write_all(&chunk).is_err() {
                            errors.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                    }
                }
                ended.fetch_add(1, Ordering::SeqCst);
            }));
        }
        for c in conns {
            c.join().unwrap();
        }
    });
    let counter = rt().trustee(0).entrust(0u64);
    let c2 = counter.clone();
    let applier = thread::spawn(move || {
        for _ in 0..20_000 {
            c2.apply(|c| *c += 1);
        }
    });
    let clients: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                for _ in 0..N / 4 {
                    let mut c = std::net::TcpStream::connect(addr).unwrap();
                    linger0(&c);
                    c.write_all(b"g").unwrap();
                    let mut b = vec![0u8; 4096 * (t + 1)];
                    c.read_exact(&mut b).unwrap();
                    drop(c); // reset
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let mut q = std::net::TcpStream::connect(addr).unwrap();
    q.write_all(b"q").unwrap();
    let mut ok = [0u8; 2];
    q.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"ok");
    within(60, move || server.join().unwrap());
    applier.join().unwrap();
    assert_eq!(counter.apply(|c| *c), 20_000);
    assert_eq!(load(&ended), N + 1);
    // Writes to a peer that read at most 16 KiB and reset: they fail.
    assert_eq!(load(&errors), N);
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// (3) fork.

/// The process forks (from a plain thread) while 4 threads clone and drop handles in a storm (count changes in
/// flight, the count mail's lock taken and released all the time) and a fiber's socket is registered. In the
/// child: clone/drop pairs of a live handle return at once (the trustees are closed: no count is sent, no
/// lock taken), `apply` panics naming fork, and the registered socket works on the child's thread as std's
/// (it reads the byte its peer sent before the fork) and is dropped; the child exits 0 within 10 s. 200 forks
/// (the child's clone/drop pairs: 100,000 each). In the parent, the storm's values are dropped exactly once
/// each afterwards.
#[test]
fn fork_during_a_clone_storm_with_a_registered_socket() {
    in_child!("fork_during_a_clone_storm_with_a_registered_socket", 120);
    let drops = Arc::new(AtomicUsize::new(0));
    let values: Arc<Vec<Trust<Counted>>> = Arc::new(
        (0..4)
            .map(|i| rt().trustee(i % 2).entrust(Counted::new(&drops)))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let storm: Vec<_> = (0..4)
        .map(|t| {
            let (values, stop) = (values.clone(), stop.clone());
            thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let h = values[(t + n) % 4].clone();
                    let k = h.clone();
                    drop(h);
                    drop(k);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let (s, mut peer) = pair();
    let s = wait_once_in_a_fiber(s, &mut peer);
    let mut failures = Vec::new();
    for round in 0..200 {
        peer.write_all(b"z").unwrap();
        let v = values[round % 4].clone();
        let s = &s;
        let (code, took) = forked(10, move || {
            quiet_child();
            for _ in 0..100_000 {
                drop(v.clone());
            }
            if !names_fork(catch_unwind(AssertUnwindSafe(|| v.apply(|c| c.magic)))) {
                return 3;
            }
            let mut b = [0u8; 1];
            if { s }.read_exact(&mut b).is_err() || &b != b"z" {
                return 4;
            }
            // SAFETY: the child's own copy of the parent's socket, read once and dropped once there; the child
            // `_exit`s without dropping the original.
            drop(unsafe { std::ptr::read(s) });
            drop(v);
            0
        });
        if code != Some(0) {
            failures.push(format!("round {round}: child {code:?} after {took:?}"));
            if failures.len() > 3 {
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in storm {
        t.join().unwrap();
    }
    drop(s);
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "children (None: hung, killed)"
    );
    assert_eq!(load(&drops), 0);
    drop(Arc::try_unwrap(values).ok().unwrap());
    exactly(&drops, 4, "the storm's values after the forks");
    child_ok();
}

/// The process forks while fibers keep registering and forgetting sockets (each connects, waits once for a
/// byte, and drops its socket: the worker's socket set's lock taken and released all the time). In each child,
/// the forking thread drops (its copies of) two sockets fibers had waited on, one per worker: each `Drop`
/// forgets its socket in that worker's set. Promise (docs: in a forked child every call into the runtime
/// panics at once or does nothing; nothing waits for a worker that was not copied): the child exits 0 within
/// 5 s. 500 forks (the hang came in 4 of the first 84); the parent's two sockets still work afterwards.
///
/// Found: the child hung for good now and then (4 of the first 84 forks, and 4 of the first 119 in a second
/// run), in `reactor::forget`: the set's lock was held by a worker at the fork. Fixed: a forked child skips
/// the set (it has no workers to read it).
#[test]
fn fork_while_fibers_register_sockets_then_drop_one_in_the_child() {
    in_child!(
        "fork_while_fibers_register_sockets_then_drop_one_in_the_child",
        150
    );
    rt();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    // Accepts and answers each connection with a byte, at once.
    let acceptor = thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let mut open = Vec::new();
        while !st.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut c, _)) => {
                    let _ = c.write_all(b"y");
                    open.push(c);
                    if open.len() > 256 {
                        open.drain(..128);
                    }
                }
                Err(_) => thread::yield_now(),
            }
        }
    });
    let churn: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(s) = TcpStream::connect(addr) {
                        let mut b = [0u8; 1];
                        let _ = (&s).read(&mut b);
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    // A socket each worker's fibers waited on.
    let mut registered = Vec::new();
    let mut peers = Vec::new();
    calibrate();
    for w in 0..2 {
        let (s, mut peer) = pair();
        let f = spawn_on(w, move || {
            let mut b = [0u8; 1];
            (&s).read_exact(&mut b).unwrap();
            s
        });
        thread::sleep(Duration::from_millis(50));
        peer.write_all(b"x").unwrap();
        registered.push(within(10, move || f.join().unwrap()));
        peers.push(peer);
    }
    thread::sleep(Duration::from_millis(100));
    let mut failures = Vec::new();
    for round in 0..500 {
        let sockets = &registered;
        let (code, took) = forked(5, || {
            for s in sockets {
                // SAFETY: the child's own copy of the parent's socket, read once and dropped once there; the
                // child `_exit`s without dropping the original.
                drop(unsafe { std::ptr::read(s) });
            }
            0
        });
        if code != Some(0) {
            failures.push(format!("round {round}: child {code:?} after {took:?}"));
            if failures.len() > 3 {
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut churned = 0;
    for f in churn {
        churned += within(20, move || f.join().unwrap());
    }
    acceptor.join().unwrap();
    assert!(churned > 0);
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "children (None: hung in the socket's drop, killed)"
    );
    // The parent's sockets still work.
    for (s, mut p) in registered.into_iter().zip(peers) {
        p.write_all(b"k").unwrap();
        let mut b = [0u8; 1];
        (&s).read_exact(&mut b).unwrap();
        assert_eq!(&b, b"k");
    }
    child_ok();
}

/// A fiber forks; in the child it reads a socket that has no data (the read would wait). Promise ("a child
/// forked by a fiber ... any other suspension panics naming `fork`"): the read panics naming fork (exit code
/// 8), now before registering the child's socket in the epoll set it shares with the parent's worker; the
/// parent's fibers on that worker go on reading their sockets.
#[test]
fn a_fiber_in_a_forked_child_waiting_on_a_socket_panics_naming_fork() {
    in_child!(
        "a_fiber_in_a_forked_child_waiting_on_a_socket_panics_naming_fork",
        30
    );
    rt();
    calibrate();
    let (s, mut peer) = pair();
    let (pid, s) = spawn_on(0, move || {
        let pid = fork_running(|| {
            quiet_child();
            let mut b = [0u8; 1];
            let r = catch_unwind(AssertUnwindSafe(|| (&s).read(&mut b)));
            if r.is_ok() {
                7
            } else if names_fork(r) {
                8
            } else {
                9
            }
        });
        (pid, s)
    })
    .join()
    .unwrap();
    let (code, took) = reap(pid, 10);
    drop(s);
    assert_eq!(
        code,
        Some(8),
        "the forked fiber's socket wait after {took:?} (7: returned; 9: another panic; None: hung)"
    );
    let _ = peer.write_all(b"x");
    // The parent's worker 0 still runs socket fibers.
    let (s2, mut peer2) = pair();
    let f = spawn_on(0, move || {
        let mut b = [0u8; 2];
        (&s2).read_exact(&mut b).map(|_| b)
    });
    thread::sleep(Duration::from_millis(50));
    peer2.write_all(b"ok").unwrap();
    assert_eq!(within(10, move || f.join().unwrap()).unwrap(), *b"ok");
    child_ok();
}

/// The process forks while two threads and a fiber spawn and join tiny fibers in a loop (the stack pool's lock
/// taken and released all the time: by `spawn` on the spawning side, by the workers as fibers end). In each
/// child the forking thread calls `spawn`. Promise (docs: in a forked child "`apply`, `apply_then`, `spawn` or
/// a fiber's `join` panics at once naming `fork`"): it panics naming fork (exit code 8) within 5 s. 500
/// forks (before the fix, about one in 250 hung).
///
/// Found: `spawn` took a stack from the pool before anything looked at the trustees, so a child forked while
/// a parent's thread held the pool's lock hung in `spawn` for good (4 of the first 1,037 forks). Fixed: `spawn`
/// panics naming fork first.
#[test]
fn spawn_in_a_child_forked_while_fibers_come_and_go_panics_naming_fork() {
    in_child!(
        "spawn_in_a_child_forked_while_fibers_come_and_go_panics_naming_fork",
        150
    );
    rt();
    let stop = Arc::new(AtomicBool::new(false));
    let mut churn = Vec::new();
    for _ in 0..2 {
        let stop = stop.clone();
        churn.push(thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let fibers: Vec<_> = (0..16).map(|i| spawn(move || i)).collect();
                n += fibers.into_iter().map(|f| f.join().unwrap()).sum::<usize>();
            }
            n
        }));
    }
    let spawner = {
        let stop = stop.clone();
        spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += spawn(|| 1usize).join().unwrap();
            }
            n
        })
    };
    thread::sleep(Duration::from_millis(100));
    let mut failures = Vec::new();
    for round in 0..500 {
        let (code, took) = forked(5, || {
            quiet_child();
            let r = catch_unwind(|| spawn(|| 1).join().ok());
            if r.is_ok() {
                7
            } else if names_fork(r) {
                8
            } else {
                9
            }
        });
        if code != Some(8) {
            failures.push(format!("round {round}: child {code:?} after {took:?}"));
            if failures.len() > 3 {
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in churn {
        assert!(within(20, move || t.join().unwrap()) > 0);
    }
    assert!(within(20, move || spawner.join().unwrap()) > 0);
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "children (8: spawn panicked naming fork; 7: it returned; None: hung, killed)"
    );
    child_ok();
}

/// The process forks while 64 tokio tasks on four threads keep `apply_async` futures in flight to both
/// trustees (the trustees leave the wakers of the tasks they answer on their relays, under a lock, and every
/// poll drains a relay, under the same lock). In each child the forking thread polls a fresh `apply_async`
/// future. Promise (docs: an `apply_async` in a forked child panics naming fork): it panics naming fork (exit
/// code 8) within 5 s. 500 forks; in the parent, every awaited apply counts once.
///
/// Found: the poll hung for good now and then (3 of 2,000 forks): it drained the relay, under the lock the
/// worker held at the fork, before looking at the trustee. Fixed: a forked child's poll leaves the relay alone
/// (`TrusteeShared::drain_relay`).
#[test]
fn apply_async_in_a_child_forked_while_tasks_await_panics_naming_fork() {
    in_child!(
        "apply_async_in_a_child_forked_while_tasks_await_panics_naming_fork",
        150
    );
    let counters: Arc<Vec<Trust<u64>>> =
        Arc::new((0..2).map(|i| rt().trustee(i).entrust(0u64)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..64usize)
        .map(|t| {
            let (counters, stop) = (counters.clone(), stop.clone());
            tokio_rt.spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    counters[(t + n as usize) % 2]
                        .apply_async(|c| *c += 1)
                        .await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    let mut failures = Vec::new();
    for round in 0..500 {
        let c = &counters[round % 2];
        let (code, took) = forked(5, || {
            quiet_child();
            let waker = futures_task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            let r = catch_unwind(AssertUnwindSafe(|| {
                let mut fut = Box::pin(c.apply_async(|c| *c));
                fut.as_mut().poll(&mut cx).is_ready()
            }));
            if r.is_ok() {
                7
            } else if names_fork(r) {
                8
            } else {
                9
            }
        });
        if code != Some(8) {
            failures.push(format!("round {round}: child {code:?} after {took:?}"));
            if failures.len() > 3 {
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for t in tasks {
        total += tokio_rt.block_on(t).unwrap();
    }
    drop(tokio_rt);
    let counted: u64 = counters.iter().map(|c| c.apply(|c| *c)).sum();
    assert_eq!(counted, total, "every awaited apply counted once");
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "children (8: the poll panicked naming fork; None: hung, killed)"
    );
    child_ok();
}

/// A `Waker` that holds two handles (of values on both trustees) and, when woken, clones them and drops them
/// all; dropped unwoken, it drops them with itself.
struct HandleWaker {
    handles: Mutex<Option<(Trust<Counted>, Trust<Counted>)>>,
}

impl std::task::Wake for HandleWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let taken = self.handles.lock().unwrap().take();
        if let Some((a, b)) = taken {
            let more = (a.clone(), b.clone(), a.clone());
            drop(a);
            drop(more);
            drop(b);
        }
    }
}

/// 4 threads poll 500 `apply_async` futures each, to both trustees, with wakers that hold handles: the trustee
/// (or the relay, drained by the next poll, or the trustee again after a few idle rounds) wakes them, and the
/// wake clones and drops the handles, on whichever thread it runs; half the futures are dropped after their
/// first poll, so their wakers (and handles) are dropped where the answer lands. Promise: `clone` and `drop`
/// never panic wherever they run, user wakers are contained; each value is dropped exactly once, after the
/// main thread's last handle.
#[test]
fn wakers_holding_handles_clone_and_drop_them_where_they_wake() {
    in_child!(
        "wakers_holding_handles_clone_and_drop_them_where_they_wake",
        60
    );
    let drops = Arc::new(AtomicUsize::new(0));
    let x = rt().trustee(0).entrust(Counted::new(&drops));
    let y = rt().trustee(1).entrust(Counted::new(&drops));
    let counters: Arc<Vec<Trust<u64>>> =
        Arc::new((0..2).map(|i| rt().trustee(i).entrust(0u64)).collect());
    let threads: Vec<_> = (0..4usize)
        .map(|t| {
            let (x, y, counters) = (x.clone(), y.clone(), counters.clone());
            thread::spawn(move || {
                let noop = futures_task::noop_waker();
                for i in 0..500usize {
                    let waker = std::task::Waker::from(Arc::new(HandleWaker {
                        handles: Mutex::new(Some((x.clone(), y.clone()))),
                    }));
                    let mut fut = Box::pin(counters[(t + i) % 2].apply_async(|c| {
                        *c += 1;
                        *c
                    }));
                    let mut cx = std::task::Context::from_waker(&waker);
                    if fut.as_mut().poll(&mut cx).is_ready() {
                        continue;
                    }
                    drop(waker);
                    if i % 2 == 0 {
                        drop(fut);
                        continue;
                    }
                    let mut cx = std::task::Context::from_waker(&noop);
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while fut.as_mut().poll(&mut cx).is_pending() {
                        assert!(Instant::now() < deadline, "an apply_async never completed");
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a polling thread panicked");
    }
    // Every future was sent: 2,000 increments, the dropped ones' too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while counters.iter().map(|c| c.apply(|c| *c)).sum::<u64>() < 2000 {
        assert!(
            Instant::now() < deadline,
            "the dropped futures' applies never ran"
        );
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(counters.iter().map(|c| c.apply(|c| *c)).sum::<u64>(), 2000);
    assert_eq!(x.apply(|c| c.magic), MAGIC);
    assert_eq!(y.apply(|c| c.magic), MAGIC);
    assert_eq!(load(&drops), 0);
    drop(x);
    drop(y);
    exactly(
        &drops,
        2,
        "two values after 2,000 wakers holding their handles",
    );
    child_ok();
}

/// The main thread keeps 64 `launch_then`s in flight on two latches (one per trustee: their fibers end as the
/// fork happens, and the workers hand the results to the thread's inbox, under its lock), and forks. In each
/// child, `wait_pending` runs the continuations whose results came before the fork and panics naming fork
/// for the others, or returns if all had come (exit code 8 or 0) within 5 s. 500 forks; in the parent every
/// continuation runs once.
///
/// Found: the child hung for good in `wait_pending` (4 of the first 36 forks; gdb: in `Inbox::collect`, waiting
/// for the inbox's lock, which a worker held at the fork, delivering a result). Fixed in `client/then.rs`: a
/// forked child takes that lock only if it is free, and otherwise leaves the results alone.
#[test]
fn wait_pending_in_a_child_forked_while_launch_then_results_arrive() {
    in_child!(
        "wait_pending_in_a_child_forked_while_launch_then_results_arrive",
        150
    );
    let latches: Vec<Trust<trust_core::Latch<u64>>> = (0..2)
        .map(|i| rt().trustee(i).entrust(trust_core::Latch::new(0u64)))
        .collect();
    let ran = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let mut issued = 0u64;
    let mut failures = Vec::new();
    for round in 0..500 {
        for i in 0..64u64 {
            let r = ran.clone();
            latches[(i % 2) as usize].launch_then(
                move |l| {
                    for _ in 0..(i % 4) {
                        trust_core::yield_now();
                    }
                    *l.lock() += 1;
                    i
                },
                move |_| r.set(r.get() + 1),
            );
            issued += 1;
        }
        let (code, took) = forked(5, || {
            quiet_child();
            let r = catch_unwind(wait_pending);
            if r.is_ok() {
                0
            } else if names_fork(r) {
                8
            } else {
                9
            }
        });
        if !matches!(code, Some(0 | 8)) {
            failures.push(format!("round {round}: child {code:?} after {took:?}"));
            if failures.len() > 3 {
                break;
            }
        }
        if round % 8 == 7 {
            wait_pending();
        }
    }
    wait_pending();
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "children (0: returned; 8: panicked naming fork; None: hung, killed)"
    );
    assert_eq!(
        ran.get(),
        issued,
        "every continuation ran once in the parent"
    );
    let total: u64 = latches.iter().map(|l| l.apply(|l| *l.lock())).sum();
    assert_eq!(total, issued);
    child_ok();
}

/// A fiber on worker 0 forks; in the child it applies to a value of its own worker's trustee (the local
/// shortcut: inline, no message). Promise (docs/delegation.md: "in a child forked after the runtime started
/// every trustee is closed, and `apply`, `apply_then`, `spawn` or a fiber's `join` panics at once naming
/// `fork`"): the apply panics naming fork (exit code 8), and the parent's value is untouched.
///
/// Found: the apply ran (exit code 7: the closure ran on the child's copy of the value and returned 42), as
/// the local shortcut looks at no trustee state. Fixed off the hot path: the fork handler spends the forking
/// worker's inline-apply credit (`Fairness::stop_in_forked_child`) and a forked child never refills it, so
/// the apply goes by the fairness hold, which panics naming fork in a forked child. (`apply_then`: the test
/// after the next.)
#[test]
fn an_inline_apply_in_a_child_forked_by_a_fiber_panics_naming_fork() {
    in_child!(
        "an_inline_apply_in_a_child_forked_by_a_fiber_panics_naming_fork",
        30
    );
    rt();
    calibrate();
    let v = rt().trustee(0).entrust(41u64);
    let v2 = v.clone();
    let pid = spawn_on(0, move || {
        fork_running(move || {
            quiet_child();
            let r = catch_unwind(AssertUnwindSafe(|| {
                v2.apply(|c| {
                    *c += 1;
                    *c
                })
            }));
            match r {
                Ok(42) => 7,
                Ok(_) => 6,
                Err(p) => {
                    if panic_message(p).contains("forked after it started") {
                        8
                    } else {
                        9
                    }
                }
            }
        })
    })
    .join()
    .unwrap();
    let (code, took) = reap(pid, 10);
    assert_eq!(v.apply(|c| *c), 41, "the parent's value");
    assert_eq!(
        code,
        Some(8),
        "the inline apply in a fiber's forked child after {took:?} (7: it ran and returned 42)"
    );
    child_ok();
}

/// As above, from a closure delegated to trustee 0 that forks: in the child it applies to another value of
/// trustee 0. Found by review 71: the apply ran (exit code 7), since the fairness hold let a caller that is
/// not a fiber apply at once; the hold now panics naming fork in a forked child, whoever calls.
#[test]
fn an_inline_apply_in_a_child_forked_by_a_delegated_closure_panics_naming_fork() {
    in_child!(
        "an_inline_apply_in_a_child_forked_by_a_delegated_closure_panics_naming_fork",
        30
    );
    let home = rt().trustee(0).entrust(0u8);
    let v = rt().trustee(0).entrust(41u64);
    let v2 = v.clone();
    let pid = home.apply(move |_| {
        fork_running(move || {
            quiet_child();
            match catch_unwind(AssertUnwindSafe(|| v2.apply(|c| *c + 1))) {
                Ok(42) => 7,
                Ok(_) => 6,
                Err(p) => {
                    if panic_message(p).contains("forked after it started") {
                        8
                    } else {
                        9
                    }
                }
            }
        })
    });
    let (code, took) = reap(pid, 10);
    assert_eq!(v.apply(|c| *c), 41, "the parent's value");
    assert_eq!(
        code,
        Some(8),
        "the inline apply in a delegated closure's forked child after {took:?} (7: it ran and returned 42)"
    );
    child_ok();
}

/// A latch whose launched fiber sleeps for a minute (holding `&Latch`); a thread waits in a plain `apply`
/// (deferred behind the launched fiber) when the runtime shuts down; a thread's `try_unwrap` and a fiber's
/// `into_inner` on other handles answer `Err`/`None` (other handles are counted: seen at once in 1 run of 6,
/// else behind the deferred apply) or the shutdown panic. Promises: the waits end with the shutdown panic
/// within seconds (not a hang), and the value is dropped exactly once (by the shutdown; the abandoned fiber
/// never touches it again).
#[test]
fn takers_waiting_behind_a_launched_fiber_at_shutdown() {
    in_child!("takers_waiting_behind_a_launched_fiber_at_shutdown", 40);
    let drops = Arc::new(AtomicUsize::new(0));
    let latch = rt()
        .trustee(0)
        .entrust(trust_core::Latch::new(Counted::new(&drops)));
    let l = latch.clone();
    let running = Arc::new(AtomicBool::new(false));
    let r = running.clone();
    let launcher = thread::spawn(move || {
        catch_unwind(AssertUnwindSafe(|| {
            l.launch(move |latch| {
                let magic = latch.lock().magic;
                r.store(true, Ordering::SeqCst);
                trust_core::sleep(Duration::from_secs(60));
                magic
            })
        }))
        .map_err(panic_message)
    });
    // The launched fiber runs (a loaded machine may take a while to start it).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the launched fiber never ran");
        thread::sleep(Duration::from_millis(1));
    }
    let (a, b, c) = (latch.clone(), latch.clone(), latch.clone());
    let taker = thread::spawn(move || {
        catch_unwind(AssertUnwindSafe(move || a.try_unwrap().is_ok())).map_err(panic_message)
    });
    let fiber_taker = spawn(move || b.into_inner().map(|l| l.lock().magic));
    let applier = thread::spawn(move || {
        catch_unwind(AssertUnwindSafe(move || c.apply(|l| l.lock().magic))).map_err(panic_message)
    });
    thread::sleep(Duration::from_millis(300));
    assert!(
        !applier.is_finished(),
        "apply waits behind the launched fiber"
    );
    let t0 = Instant::now();
    rt().shutdown();
    let took = t0.elapsed();
    let shut = |r: Result<_, String>, what: &str| match r {
        Err(m) => assert!(is_shutdown_message(&m), "{what}: {m}"),
        Ok(_) => panic!("{what} returned after the shutdown"),
    };
    // `try_unwrap` may answer `Err` at once (other handles are counted, and the launched fiber holds none); it
    // never hands the value out.
    match within(10, move || taker.join().unwrap()) {
        Ok(taken) => assert!(
            !taken,
            "try_unwrap handed out a value other handles still refer to"
        ),
        Err(m) => assert!(is_shutdown_message(&m), "try_unwrap: {m}"),
    }
    shut(
        within(10, move || applier.join().unwrap()).map(|_| ()),
        "apply",
    );
    shut(
        within(10, move || launcher.join().unwrap()).map(|_| ()),
        "launch",
    );
    // `into_inner` gives up its count and may answer `None` at once (other handles are counted); it never
    // hands the value out.
    match within(10, move || fiber_taker.join()) {
        Ok(got) => assert_eq!(
            got, None,
            "into_inner handed out a value other handles still refer to"
        ),
        Err(p) => {
            let m = panic_message(p);
            assert!(is_shutdown_message(&m), "into_inner in a fiber: {m}");
        }
    }
    assert!(took < Duration::from_secs(7), "shutdown took {took:?}");
    drop(latch);
    exactly(&drops, 1, "the latch's value at shutdown");
    child_ok();
}

/// Four threads that never make a call (their counts go by the count mail, netted) clone a handle 50,000 times
/// each and hand the clones to two threads with clients (their drops go by their slots, so a clone's decrement
/// often overtakes its increment), which apply through every 64th and drop them all; the main thread drops its
/// own handle at once. Promise: the value is dropped exactly once, after the last handle, and no closure sees
/// it dropped.
#[test]
fn clones_counted_by_mail_dropped_through_slots() {
    in_child!("clones_counted_by_mail_dropped_through_slots", 90);
    let drops = Arc::new(AtomicUsize::new(0));
    let v = rt().trustee(1).entrust(Counted::new(&drops));
    let (tx, rx) = mpsc::sync_channel::<Trust<Counted>>(4096);
    let rx = Arc::new(Mutex::new(rx));
    let producers: Vec<_> = (0..4)
        .map(|_| {
            let (h, tx) = (v.clone(), tx.clone());
            thread::spawn(move || {
                for _ in 0..50_000 {
                    tx.send(h.clone()).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    drop(v);
    let bad = Arc::new(AtomicUsize::new(0));
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let (rx, bad) = (rx.clone(), bad.clone());
            thread::spawn(move || {
                let mut n = 0usize;
                loop {
                    let next = rx.lock().unwrap().recv();
                    let Ok(h) = next else { break n };
                    if n.is_multiple_of(64) && h.apply(|c| c.magic) != MAGIC {
                        bad.fetch_add(1, Ordering::SeqCst);
                    }
                    drop(h);
                    n += 1;
                }
            })
        })
        .collect();
    for p in producers {
        p.join().expect("clone never panics");
    }
    let received: usize = consumers
        .into_iter()
        .map(|c| within(60, move || c.join().unwrap()))
        .sum();
    assert_eq!(received, 200_000);
    assert_eq!(load(&bad), 0, "closures saw the value dropped");
    exactly(
        &drops,
        1,
        "the value after 200,000 clones counted by mail and dropped through slots",
    );
    child_ok();
}

/// A stream shared by two fibers, one on each worker: one blocked in `read`, the other in `write` (its peer
/// never reads); a plain thread shuts the stream down (`Shutdown::Both`) under them. Promise: both wake
/// (their sockets' readiness reports the shutdown): the reader gets `Ok(0)` and the writer an error, within
/// seconds; the workers go on serving.
#[test]
fn a_shared_stream_shut_down_under_a_blocked_reader_and_writer() {
    in_child!(
        "a_shared_stream_shut_down_under_a_blocked_reader_and_writer",
        40
    );
    rt();
    calibrate();
    for round in 0..20 {
        let (s, peer) = pair();
        let s = Arc::new(s);
        let (r, w) = (s.clone(), s.clone());
        let reader = spawn_on(round % 2, move || {
            let mut b = [0u8; 8];
            (&*r).read(&mut b).map_err(|e| e.kind())
        });
        let written = Arc::new(AtomicUsize::new(0));
        let wn = written.clone();
        let writer = spawn_on((round + 1) % 2, move || {
            let chunk = vec![3u8; 1 << 16];
            loop {
                match (&*w).write(&chunk) {
                    Ok(n) => {
                        wn.fetch_add(n, Ordering::SeqCst);
                    }
                    Err(e) => return e.kind(),
                }
            }
        });
        let mut last = usize::MAX;
        while load(&written) != last {
            last = load(&written);
            thread::sleep(Duration::from_millis(50));
        }
        s.shutdown(std::net::Shutdown::Both).unwrap();
        assert_eq!(
            within(10, move || reader.join().unwrap()),
            Ok(0),
            "round {round}: the reader"
        );
        let kind = within(10, move || writer.join().unwrap());
        assert_ne!(kind, ErrorKind::WouldBlock, "round {round}: the writer");
        drop(peer);
    }
    let c = rt().trustee(0).entrust(0u32);
    assert_eq!(c.apply(|c| *c + 1), 1);
    child_ok();
}

/// A plain thread with requests in flight (an `apply_then` published to a trustee stalled for 300 ms, one
/// not yet published, a `launch_then` whose fiber sleeps 300 ms, a clone's count change) forks, and in the
/// child that thread simply returns: its thread-locals are destroyed there (its client: outboxes and inbox),
/// and, the last thread, it ends the process. Promise (a thread may exit with requests in flight; in a forked
/// child nothing waits for a worker that was not copied): the child ends within 5 s, and the parent's thread
/// gets every continuation run once. 12 forks.
#[test]
fn a_forked_child_whose_thread_returns_with_requests_in_flight() {
    in_child!(
        "a_forked_child_whose_thread_returns_with_requests_in_flight",
        120
    );
    let v = rt().trustee(1).entrust(0u64);
    let latch = rt().trustee(0).entrust(trust_core::Latch::new(0u64));
    let mut failures = Vec::new();
    const ROUNDS: u64 = 12;
    for round in 0..ROUNDS {
        let stalled = stall(1, 300);
        let (v2, l2) = (v.clone(), latch.clone());
        let t = thread::spawn(move || {
            let ran = std::rc::Rc::new(std::cell::Cell::new(0));
            let r = ran.clone();
            v2.apply_then(|c| *c += 1, move |()| r.set(r.get() + 1));
            let r = ran.clone();
            l2.launch_then(
                |l| {
                    trust_core::sleep(Duration::from_millis(300));
                    *l.lock() += 1;
                },
                move |()| r.set(r.get() + 1),
            );
            let keep = v2.clone();
            // SAFETY: in the child, this thread only returns (its thread-locals are destroyed, then the
            // process ends); the parent goes on.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                drop(keep);
                return None;
            }
            wait_pending();
            drop(keep);
            Some((pid, ran.get()))
        });
        let Some((pid, ran)) = within(20, move || t.join().unwrap()) else {
            unreachable!("only the child's thread returns None, and its process ends with it");
        };
        assert_eq!(
            ran, 2,
            "round {round}: both continuations ran once in the parent"
        );
        let (code, took) = reap(pid, 5);
        if code != Some(0) {
            failures.push(format!("round {round}: child {code:?} after {took:?}"));
            if failures.len() > 3 {
                break;
            }
        }
        stalled.join().unwrap();
    }
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "children (0: ended; -1: killed by a signal; None: hung, killed)"
    );
    assert_eq!(v.apply(|c| *c), ROUNDS);
    assert_eq!(latch.apply(|l| *l.lock()), ROUNDS);
    child_ok();
}

/// As above, with `apply_then` on a value of the forking fiber's own trustee. Promise (the same sentence of
/// docs/delegation.md): it panics naming fork (exit code 8).
///
/// Found: the closure ran inline on the child's copy of the value, and then the child aborted ("trust: user code
/// that forked returned to a worker in the child", SIGABRT: exit code -1 here), from `end_if_forked` after the
/// inline `apply_caught`.
#[test]
fn an_inline_apply_then_in_a_child_forked_by_a_fiber_panics_naming_fork() {
    in_child!(
        "an_inline_apply_then_in_a_child_forked_by_a_fiber_panics_naming_fork",
        30
    );
    rt();
    calibrate();
    let v = rt().trustee(0).entrust(41u64);
    let v2 = v.clone();
    let pid = spawn_on(0, move || {
        fork_running(move || {
            quiet_child();
            let r = catch_unwind(AssertUnwindSafe(|| {
                v2.apply_then(|c| *c += 1, |()| ());
            }));
            if r.is_ok() {
                7
            } else if names_fork(r) {
                8
            } else {
                9
            }
        })
    })
    .join()
    .unwrap();
    let (code, took) = reap(pid, 10);
    assert_eq!(v.apply(|c| *c), 41, "the parent's value");
    assert_eq!(
        code,
        Some(8),
        "the inline apply_then in a fiber's forked child after {took:?} (-1: aborted after running it)"
    );
    child_ok();
}
