//! Review 16: hostile tests of the life cycle of handles from threads in unusual states, after fc4fc08 (a plain
//! thread that has no client context sends its registrations and count changes by mail,
//! `TrusteeShared::run_later` / `count_later`, and gets no client for them). Attacked: threads that only clone
//! and drop, racing threads that call, `into_inner` and the shutdown; `into_inner` as a fresh thread's first
//! call, behind its mailed registration; handles dropped from thread-local destructors after the thread's
//! client is gone, from the `Drop` of values entrusted to the other trustee, from continuations dropped at a
//! thread's exit; handles kept in statics across the shutdown; the memory of millions of clone/drop pairs from
//! threads without a client; `clone` on a thread whose continuations are ready; and `may` worker threads whose
//! coroutine-locals hold handles, or call, outside any coroutine. Tests that shut the runtime down, configure
//! `may`, or can hang run in a child process of their own with a deadline (`in_child!`).
//!
//! Ignored tests are bugs found by this review; each one's doc gives the behaviour measured. Three of them:
//! `clone` (and `drop`) on a plain thread with a client runs the thread's ready continuations, user code that
//! can block it; and, the fix's known remaining hole, a `may` worker thread that made a real call outside any
//! coroutine takes its coroutines' `apply_then`s into its thread client (the continuation does not run at once,
//! and the request is never published: a later `into_inner` on the value hangs).

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

#[macro_use]
mod common;
use common::*;
use trust_core::{Trust, local_trustee, wait_pending};

/// A counter that counts its own drop.
struct Counter {
    n: u64,
    _t: Tallied,
}

/// Resident memory of this process, in KiB (`/proc/self/statm`, second field, in pages).
fn rss_kib() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

/// Samples `rss_kib` every millisecond on a thread of its own until the returned flag is set; the handle gives
/// the highest value seen.
fn rss_sampler() -> (Arc<AtomicBool>, std::thread::JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        let mut peak = rss_kib();
        while !s.load(Ordering::SeqCst) {
            peak = peak.max(rss_kib());
            std::thread::sleep(Duration::from_millis(1));
        }
        peak.max(rss_kib())
    });
    (stop, h)
}

/// In a child: keeps the shutdown panics that a test provokes on its own threads (thousands of them) off
/// stderr; other panics are reported as usual.
fn silence_shutdown_panics() {
    let old = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !msg.contains("shut down") {
            old(info);
        }
    }));
}

/// README: "`into_inner()` returns `Some(value)` or drops the handle (like `Arc`'s: if every handle ends in
/// `into_inner`, exactly one gets `Some`). The trustee decides once every request and count change sent before
/// the call has been served". Per round (40 rounds, trustee `round % 2`): a fresh thread that never called
/// entrusts a counter (its registration goes by mail) and hands a clone (counted by mail) to each of four
/// threads: two that never call but clone and drop their handle 2,000 times (all by the count mail), two that
/// `apply(+1)` 50 times each through their slots; then each of the four, and the maker (its first call), ends in
/// `into_inner`. Expected every round: exactly one `Some`, holding n = 100 (every increment came before the last
/// handle was given up); over the run 40 values made, 40 dropped (each by its taker, once).
#[test]
fn into_inner_racing_threads_that_only_clone_and_drop_gives_the_value_once() {
    let tally = Arc::new(Tally::default());
    for round in 0..40usize {
        let t2 = tally.clone();
        let results = std::thread::spawn(move || {
            let v = rt().trustee(round % 2).entrust(Counter {
                n: 0,
                _t: Tallied::new(&t2),
            });
            let go = Arc::new(Barrier::new(5));
            let threads: Vec<_> = (0..4)
                .map(|i| {
                    let (c, go) = (v.clone(), go.clone());
                    std::thread::spawn(move || {
                        go.wait();
                        if i < 2 {
                            for _ in 0..2_000 {
                                drop(c.clone());
                            }
                        } else {
                            for _ in 0..50 {
                                c.apply(|c| c.n += 1);
                            }
                        }
                        c.into_inner().map(|c| c.n)
                    })
                })
                .collect();
            go.wait();
            let mut all = vec![v.into_inner().map(|c| c.n)];
            all.extend(threads.into_iter().map(|t| t.join().unwrap()));
            all
        })
        .join()
        .unwrap();
        let somes: Vec<u64> = results.iter().flatten().copied().collect();
        assert_eq!(somes, vec![100], "round {round}: {results:?}");
    }
    assert_eq!(tally.counts(), (40, 40));
}

/// README: "`into_inner()` ... The trustee decides once every request and count change sent before the call
/// has been served, so a clone dropped before it never makes it fail and nothing in flight can touch the value
/// after it left"; `Runtime::shutdown` "drops every value still entrusted exactly once". 300 fresh threads,
/// three at a time, none of which called before: each entrusts a counted value to trustee `i % 2` (the
/// registration goes by mail), makes three clones (counted by mail); an even thread drops them, then calls
/// `into_inner` (its first call: its new slot can overtake the mailed registration); an odd thread keeps one,
/// calls `into_inner` on the original (must be `None`: the clone is counted), then on the clone (`Some`).
/// Expected: 300 `Some`s, 150 `None`s, and no value dropped by the runtime: (300, 0) while the taken values are
/// kept, (300, 300) once they are dropped here; then the shutdown (a taker that ran before its mailed
/// registration would leave the freed property in the registry, for the shutdown to drop again) returns and
/// leaves (300, 300).
#[test]
fn into_inner_as_a_fresh_threads_first_call_behind_its_mailed_registration() {
    in_child!(
        "into_inner_as_a_fresh_threads_first_call_behind_its_mailed_registration",
        30
    );
    let tally = Arc::new(Tally::default());
    let mut taken = Vec::new();
    let mut nones = 0;
    for batch in 0..100usize {
        let threads: Vec<_> = (0..3)
            .map(|j| {
                let i = batch * 3 + j;
                let t = tally.clone();
                std::thread::spawn(move || {
                    let v = rt().trustee(i % 2).entrust(Tallied::new(&t));
                    let mut clones: Vec<_> = (0..3).map(|_| v.clone()).collect();
                    if i % 2 == 0 {
                        drop(clones);
                        (v.into_inner(), None)
                    } else {
                        let kept = clones.pop().unwrap();
                        drop(clones);
                        let first = v.into_inner();
                        (kept.into_inner(), Some(first.is_none()))
                    }
                })
            })
            .collect();
        for t in threads {
            let (got, first_none) = t.join().unwrap();
            taken.push(got.expect("the last handle's into_inner gets the value"));
            if first_none == Some(true) {
                nones += 1;
            }
        }
    }
    assert_eq!(nones, 150, "into_inner with a live clone counted");
    settle(&rt().trustee(0).entrust(()));
    settle(&rt().trustee(1).entrust(()));
    assert_eq!(
        tally.counts(),
        (300, 0),
        "a taken value dropped by the runtime"
    );
    drop(taken);
    assert_eq!(tally.counts(), (300, 300));
    rt().shutdown();
    assert_eq!(tally.counts(), (300, 300), "after the shutdown");
    child_ok();
}

/// Set by the thread-local destructor of `LATE`.
struct Late {
    h: Trust<(u64, Tallied)>,
    tally: Arc<Tally>,
    out: Arc<Mutex<Vec<u64>>>,
    ran: Arc<AtomicUsize>,
}

impl Drop for Late {
    /// Runs after the thread's client thread-local is gone: clones and drops, entrusts, applies, `apply_then`s.
    fn drop(&mut self) {
        for _ in 0..1_000 {
            drop(self.h.clone());
        }
        let kept: Vec<_> = (0..10).map(|_| self.h.clone()).collect();
        drop(rt().trustee(1).entrust(Tallied::new(&self.tally)));
        let n = self.h.apply(|v| {
            v.0 += 1;
            v.0
        });
        self.out.lock().unwrap().push(n);
        let (ran, cap) = (self.ran.clone(), Tallied::new(&self.tally));
        self.h.apply_then(
            |v| {
                v.0 += 1;
                v.0
            },
            move |_| {
                drop(cap);
                ran.fetch_add(1, Ordering::SeqCst);
            },
        );
        let clone = kept[0].clone();
        drop(kept);
        // The last handle this thread holds goes with `self.h`, after this one.
        drop(clone);
    }
}

thread_local! {
    static LATE: RefCell<Option<Late>> = const { RefCell::new(None) };
}

/// README: "`clone` and `drop` never block and never panic, wherever they run"; "the last handle drops the
/// value on its trustee, exactly once"; "A thread may exit with requests in flight ... its requests still run".
/// A thread first sets a thread-local (so its destructor runs after the client's, which is registered later),
/// then makes its first call, `apply(+1)` on a counted value of trustee 0. At its exit, after the client
/// thread-local is gone, the destructor clones and drops the handle 1,000 times, keeps 10 clones, entrusts a
/// counted value to trustee 1 and drops it, `apply(+1)`s (returns 2), `apply_then(+1)`s with a counted capture in
/// the continuation, then drops every handle. Expected: the apply returned 2, the value reads 3 (the
/// `apply_then` ran), the continuation's capture and the trustee-1 value are dropped once each and the counted
/// value not at all while the main thread's handle lives: (3 made, 2 dropped); the continuation itself never
/// ran (README: "dropped on it with them"; the call's client, made for it, goes at once); (3, 3) once the main
/// thread's handle is dropped too.
#[test]
fn handles_cloned_dropped_and_used_from_a_thread_local_destructor_after_the_client_is_gone() {
    let tally = Arc::new(Tally::default());
    let v = rt().trustee(0).entrust((0u64, Tallied::new(&tally)));
    let (out, ran) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(AtomicUsize::new(0)),
    );
    let (h, t2, o2, r2) = (v.clone(), tally.clone(), out.clone(), ran.clone());
    within(10, move || {
        std::thread::spawn(move || {
            LATE.with(|l| {
                *l.borrow_mut() = Some(Late {
                    h: h.clone(),
                    tally: t2,
                    out: o2,
                    ran: r2,
                })
            });
            h.apply(|v| v.0 += 1);
        })
        .join()
        .unwrap()
    });
    assert_eq!(*out.lock().unwrap(), vec![2]);
    assert_eq!(
        v.apply(|v| v.0),
        3,
        "the apply_then from the destructor ran"
    );
    settle(&rt().trustee(0).entrust(()));
    settle(&rt().trustee(1).entrust(()));
    eventually("the trustee-1 value and the capture are dropped", || {
        tally.dropped.load(Ordering::SeqCst) >= 2
    });
    assert_eq!(tally.counts(), (3, 2));
    assert_eq!(
        load(&ran),
        0,
        "the continuation is dropped with the fresh client, unrun"
    );
    drop(v);
    eventually("the value is dropped", || {
        tally.dropped.load(Ordering::SeqCst) == 3
    });
    settle(&rt().trustee(0).entrust(()));
    assert_eq!(tally.counts(), (3, 3));
}

/// A link of a chain of values alternating between the trustees: its drop logs where it ran and drops the
/// handle of the next link.
struct Link {
    i: usize,
    next: Option<Trust<Link>>,
    log: Arc<Mutex<Vec<(usize, usize)>>>,
    _t: Tallied,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.log
            .lock()
            .unwrap()
            .push((self.i, local_trustee().index()));
        // Dropped here, on this link's trustee: the next link's trustee is the other one.
        drop(self.next.take());
    }
}

/// README: "the last handle drops the value on its trustee, exactly once"; "`clone` and `drop` never block
/// and never panic, wherever they run (inside delegated closures and continuations too)". A thread that never
/// calls builds a chain of 200 values alternating between trustees 1 and 0 (link `i` on trustee `(i + 1) % 2`,
/// each holding the only handle of the next), all registered by mail; it also keeps a clone of every link
/// (counted by mail) and drops those clones, the last link's first, then the head. Each link's `Drop`, on its
/// trustee, drops the next one's last handle (a handle of the other trustee, dropped in a destructor on a
/// worker). Expected: the links dropped once each, in order 0..200, each on its own trustee; (200, 200).
#[test]
fn a_chain_dropped_link_by_link_from_destructors_on_alternating_trustees_after_clientless_clones() {
    let tally = Arc::new(Tally::default());
    let log = Arc::new(Mutex::new(Vec::new()));
    let (t2, l2) = (tally.clone(), log.clone());
    within(20, move || {
        std::thread::spawn(move || {
            let mut next: Option<Trust<Link>> = None;
            let mut clones = Vec::new();
            for i in (0..200).rev() {
                let link = rt().trustee((i + 1) % 2).entrust(Link {
                    i,
                    next: next.take(),
                    log: l2.clone(),
                    _t: Tallied::new(&t2),
                });
                clones.push(link.clone());
                next = Some(link);
            }
            drop(clones);
            drop(next);
        })
        .join()
        .unwrap()
    });
    eventually("every link is dropped", || {
        tally.dropped.load(Ordering::SeqCst) >= 200
    });
    settle(&rt().trustee(0).entrust(()));
    settle(&rt().trustee(1).entrust(()));
    let want: Vec<(usize, usize)> = (0..200).map(|i| (i, (i + 1) % 2)).collect();
    assert_eq!(*log.lock().unwrap(), want);
    assert_eq!(tally.counts(), (200, 200));
}

static HELD: Mutex<Vec<Trust<(u64, Tallied)>>> = Mutex::new(Vec::new());

/// README: "`Runtime::shutdown()` ... drops every value still entrusted exactly once"; `Drop for Trust`:
/// "After the runtime has shut down this does nothing: shutdown already dropped the value"; `into_inner`
/// panics "after `Runtime::shutdown`". A thread that never calls entrusts 100 counted values (alternating
/// trustees), keeps a clone of each in a static and drops the originals (all by mail); another thread
/// `apply(+1)`s each through the static. Expected: the sum of the values 100 and (100, 0) before the shutdown;
/// (100, 100) after it; the static's handles then cloned and dropped, and one given to `into_inner`, which
/// panics naming the shutdown: still (100, 100).
#[test]
fn handles_kept_in_a_static_across_the_shutdown_drop_each_value_once() {
    in_child!(
        "handles_kept_in_a_static_across_the_shutdown_drop_each_value_once",
        20
    );
    let tally = Arc::new(Tally::default());
    let t2 = tally.clone();
    std::thread::spawn(move || {
        for i in 0..100 {
            let v = rt().trustee(i % 2).entrust((0u64, Tallied::new(&t2)));
            HELD.lock().unwrap().push(v.clone());
        }
    })
    .join()
    .unwrap();
    std::thread::spawn(|| {
        for h in HELD.lock().unwrap().iter() {
            h.apply(|v| v.0 += 1);
        }
    })
    .join()
    .unwrap();
    let sum: u64 = HELD.lock().unwrap().iter().map(|h| h.apply(|v| v.0)).sum();
    assert_eq!(sum, 100);
    assert_eq!(tally.counts(), (100, 0));
    rt().shutdown();
    assert_eq!(tally.counts(), (100, 100), "after the shutdown");
    let held = std::mem::take(&mut *HELD.lock().unwrap());
    let clones: Vec<_> = held.iter().map(Trust::clone).collect();
    drop(clones);
    let mut held = held.into_iter();
    let first = held.next().unwrap();
    drop(held);
    let r = catch_unwind(AssertUnwindSafe(move || first.into_inner().is_some()));
    let msg = panic_message(r.expect_err("into_inner after the shutdown panics"));
    assert!(msg.contains("shut down"), "{msg}");
    assert_eq!(tally.counts(), (100, 100));
    child_ok();
}

/// README: "`Runtime::shutdown()` ... answers what was sent, drops every value still entrusted exactly once ...
/// Nothing sent is lost: requests that arrive too late ... are dropped unrun, with what they captured, on the
/// trustee or by their sender"; "`clone` and `drop` never block and never panic". Four threads that never call
/// entrust counted values in a loop (alternating trustees), clone each, keep every fourth clone and drop the
/// rest, while the main thread shuts the runtime down after 50 ms; once `entrust` panics with the shutdown
/// (its argument dropped by the unwinding), each thread stops and drops what it kept. Expected: many values
/// made, and as many dropped, once each: made == dropped.
#[test]
fn threads_that_only_entrust_clone_and_drop_racing_the_shutdown_drop_each_value_once() {
    in_child!(
        "threads_that_only_entrust_clone_and_drop_racing_the_shutdown_drop_each_value_once",
        20
    );
    silence_shutdown_panics();
    let _ = rt();
    let tally = Arc::new(Tally::default());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let tally = tally.clone();
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                for i in 0usize.. {
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        let v = rt().trustee((t + i) % 2).entrust(Tallied::new(&tally));
                        let c = v.clone();
                        if i % 4 == 0 {
                            kept.push(c);
                        }
                    }));
                    if r.is_err() {
                        break;
                    }
                }
                drop(kept);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    rt().shutdown();
    for t in threads {
        t.join().unwrap();
    }
    let (made, dropped) = tally.counts();
    assert!(made > 100, "made {made}");
    assert_eq!(dropped, made);
    child_ok();
}

/// Counts its drop, and applies `+1` to a value of trustee 0 while being dropped (a blocking call from a
/// destructor that runs inside the exiting thread's client destructor).
struct CallsWhenDropped {
    x: Trust<(u64, Tallied)>,
    _t: Tallied,
}

impl Drop for CallsWhenDropped {
    fn drop(&mut self) {
        self.x.apply(|v| v.0 += 100);
    }
}

/// README: "A thread may exit with requests in flight (no `wait_pending`): its requests still run, the exiting
/// thread waits for the answers that carry results of its own (its continuations', dropped on it with them)";
/// "`clone` and `drop` never block and never panic, wherever they run". A thread issues 10 `apply_then(+1)`s to
/// a value `y` of trustee 1 (left unsent: a plain thread publishes 48 at a time); each closure captures a clone
/// of `x` (trustee 0), dropped on trustee 1 after it runs; each continuation captures a clone of `x` and a
/// counted value whose destructor `apply`s `+100` to `x`; then the thread exits. Expected: `y` reads 10; the
/// continuations never ran (dropped at the exit), their captures were dropped once each (10, 10), and each
/// capture's `apply` landed: `x` reads 1,000; `x` is not dropped while the main thread holds it, and is dropped
/// once after.
#[test]
fn continuations_holding_handles_dropped_at_a_threads_exit_count_and_call() {
    let xt = Arc::new(Tally::default());
    let caps = Arc::new(Tally::default());
    let x = rt().trustee(0).entrust((0u64, Tallied::new(&xt)));
    let y = rt().trustee(1).entrust(0u64);
    let ran = Arc::new(AtomicUsize::new(0));
    let (x2, y2, c2, r2) = (x.clone(), y.clone(), caps.clone(), ran.clone());
    within(10, move || {
        std::thread::spawn(move || {
            for _ in 0..10 {
                let in_closure = x2.clone();
                let held = CallsWhenDropped {
                    x: x2.clone(),
                    _t: Tallied::new(&c2),
                };
                let r = r2.clone();
                y2.apply_then(
                    move |y| {
                        drop(in_closure);
                        *y += 1;
                    },
                    move |()| {
                        let _held = held;
                        r.fetch_add(1, Ordering::SeqCst);
                    },
                );
            }
            drop(x2);
        })
        .join()
        .unwrap()
    });
    assert_eq!(y.apply(|y| *y), 10);
    assert_eq!(load(&ran), 0, "continuations run at the exit");
    assert_eq!(caps.counts(), (10, 10));
    assert_eq!(x.apply(|v| v.0), 1_000);
    settle(&rt().trustee(0).entrust(()));
    settle(&rt().trustee(1).entrust(()));
    assert_eq!(
        xt.counts(),
        (1, 0),
        "x dropped while the main thread holds it"
    );
    drop(x);
    eventually("x is dropped", || xt.dropped.load(Ordering::SeqCst) == 1);
    settle(&rt().trustee(0).entrust(()));
    assert_eq!(xt.counts(), (1, 1));
}

/// README: "A change that finds the sender's slot busy is netted per value in the trustee's count mail, so a
/// million clone/drop pairs faster than the trustee serves them take one entry, not a million messages
/// (`tests/adversarial_counting.rs`: under 32 MiB of RSS)". Threads that never call (their changes always go by
/// the count mail): one clones and drops a handle of trustee 0 2,000,000 times while trustee 0 is held in a
/// 1.5 s closure; then 500,000 clones made by one such thread are dropped by another (through a bounded
/// channel), over both trustees' values. RSS sampled every millisecond (`/proc/self/statm`). Expected: peak
/// RSS grows by under 32 MiB (measured: 436-564 KiB in three runs; not checked under AddressSanitizer, whose
/// quarantine keeps freed memory resident: +32.1 MiB there); the value is dropped once, only after the last
/// handle.
#[test]
fn millions_of_clone_drop_pairs_from_threads_without_a_client_keep_memory_bounded() {
    in_child!(
        "millions_of_clone_drop_pairs_from_threads_without_a_client_keep_memory_bounded",
        40
    );
    let _ = rt();
    let tally = Arc::new(Tally::default());
    let x = rt().trustee(0).entrust((0u64, Tallied::new(&tally)));
    let z = rt().trustee(1).entrust((0u64, Tallied::new(&tally)));
    settle(&rt().trustee(0).entrust(()));
    let base = rss_kib();
    let (stop, sampler) = rss_sampler();
    let stalled = stall(0, 1_500);
    let x2 = x.clone();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        for _ in 0..2_000_000 {
            drop(x2.clone());
        }
    })
    .join()
    .unwrap();
    let pairs = t0.elapsed();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Trust<(u64, Tallied)>>(1024);
    let (x3, z3) = (x.clone(), z.clone());
    let maker = std::thread::spawn(move || {
        for i in 0..500_000 {
            tx.send(if i % 2 == 0 { x3.clone() } else { z3.clone() })
                .unwrap();
        }
    });
    let dropper = std::thread::spawn(move || {
        for h in rx {
            drop(h);
        }
    });
    maker.join().unwrap();
    dropper.join().unwrap();
    stalled.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    let peak = sampler.join().unwrap();
    let grown = peak.saturating_sub(base);
    eprintln!("pairs took {pairs:?}; RSS {base} KiB, peak {peak} KiB, grown {grown} KiB");
    // Under AddressSanitizer its quarantine keeps freed memory resident: only the counts are checked there.
    assert!(
        cfg!(feature = "sanitizer") || grown < 32 * 1024,
        "RSS grew by {grown} KiB"
    );
    assert_eq!(x.apply(|v| v.0), 0);
    settle(&rt().trustee(0).entrust(()));
    settle(&rt().trustee(1).entrust(()));
    assert_eq!(tally.counts(), (2, 0));
    drop((x, z));
    eventually("both values are dropped", || {
        tally.dropped.load(Ordering::SeqCst) == 2
    });
    child_ok();
}

/// README: "`clone` and `drop` never block and never panic, wherever they run ... each sends a fire-and-forget
/// count change". A plain thread with a client issues `PUBLISH_EVERY` (48) `apply_then`s to trustee 0 (the last
/// publishes them);
/// the first continuation makes a blocking `apply` to trustee 1, which is held in a 400 ms closure (a blocking
/// call in a continuation on a plain thread is allowed). 50 ms later, with the answers in, the thread clones a
/// handle of trustee 0. Expected: `clone` returns at once (under 100 ms) and runs no continuation (0 ran during
/// it).
///
/// Measured: the clone took 339 ms and ran all 32 continuations (the first one blocked in its `apply` until
/// trustee 1's closure ended): `Trust::clone` -> `call::count` -> `post_from_thread` (call.rs:270-287) asks
/// `client.has_ready()` after posting its count change (call.rs:277) and then runs the thread's ready
/// continuations itself (`run_thread_continuations`, call.rs:285): user code, which may block (or panic, caught
/// and kept for `wait_pending`, or borrow what the caller of `clone` holds), inside a `clone` or a `drop`.
/// (`drop` takes the same path.) A thread without a client (fc4fc08) does not do this. Fixed:
/// `post_from_thread` no longer runs continuations (the thread's next call or `wait_pending` does).
#[test]
fn clone_on_a_thread_whose_continuations_are_ready_does_not_run_them() {
    let x = rt().trustee(0).entrust(0u64);
    let on1 = rt().trustee(1).entrust(0u64);
    let (x2, ran) = (x.clone(), Arc::new(AtomicUsize::new(0)));
    let r2 = ran.clone();
    let (took, during) = within(10, move || {
        std::thread::spawn(move || {
            // A client first (a blocking call), then the burst.
            x2.apply(|_| ());
            let stalled = stall(1, 400);
            for i in 0..PUBLISH_EVERY {
                let (on1, r) = (on1.clone(), r2.clone());
                x2.apply_then(
                    |_| (),
                    move |()| {
                        if i == 0 {
                            on1.apply(|_| ());
                        }
                        r.fetch_add(1, Ordering::SeqCst);
                    },
                );
            }
            std::thread::sleep(Duration::from_millis(50));
            let before = load(&r2);
            let t0 = Instant::now();
            let c = x2.clone();
            let took = t0.elapsed();
            let during = load(&r2) - before;
            drop(c);
            wait_pending();
            stalled.join().unwrap();
            (took, during)
        })
        .join()
        .unwrap()
    });
    assert_eq!(load(&ran), PUBLISH_EVERY);
    assert!(
        took < Duration::from_millis(100) && during == 0,
        "clone took {took:?} and ran {during} continuations"
    );
}

may::coroutine_local!(static KEPT: RefCell<Option<Trust<(u64, Tallied)>>> = RefCell::new(None));

/// README: "the last handle drops the value on its trustee, exactly once"; "From a `may` coroutine,
/// `apply_then` and `launch_then` wait for their result ... and run the continuation at once, on the
/// coroutine". With one `may` worker thread: 100 coroutines each keep a clone of a counted value of trustee 0
/// in coroutine-local storage, which `may` drops on its worker thread outside any coroutine (by mail, no client
/// made there); then a coroutine on that thread issues `apply_then(+1)` (20 ms) and calls `wait_pending`.
/// Expected: the continuation ran at once, `(Some(1), Some(1))`; the value not dropped while the main thread
/// holds it (1, 0), and dropped once after (1, 1).
#[test]
fn coroutine_local_handles_dropped_outside_any_coroutine_are_counted_and_leave_apply_then_at_once()
{
    in_child!(
        "coroutine_local_handles_dropped_outside_any_coroutine_are_counted_and_leave_apply_then_at_once",
        15
    );
    may::config().set_workers(1);
    let tally = Arc::new(Tally::default());
    let p = rt().trustee(0).entrust((0u64, Tallied::new(&tally)));
    let cs: Vec<_> = (0..100)
        .map(|_| {
            let c = p.clone();
            coroutine(move || KEPT.with(|k| *k.borrow_mut() = Some(c)))
        })
        .collect();
    for c in cs {
        c.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    let p3 = p.clone();
    let seen = coroutine(move || {
        let done = std::rc::Rc::new(std::cell::Cell::new(None));
        let d = done.clone();
        p3.apply_then(
            |v| {
                std::thread::sleep(Duration::from_millis(20));
                v.0 += 1;
                v.0
            },
            move |v| d.set(Some(v)),
        );
        let right_after = done.get();
        wait_pending();
        (right_after, done.get())
    })
    .join()
    .unwrap();
    assert_eq!(seen, (Some(1), Some(1)));
    settle(&rt().trustee(0).entrust(()));
    assert_eq!(tally.counts(), (1, 0));
    drop(p);
    eventually("the value is dropped", || {
        tally.dropped.load(Ordering::SeqCst) == 1
    });
    assert_eq!(tally.counts(), (1, 1));
    child_ok();
}

/// README: "From a `may` coroutine, `apply_then` and `launch_then` wait for their result (the coroutine
/// yields, its thread goes on) and run the continuation at once, on the coroutine". With one `may` worker
/// thread: a first coroutine keeps in coroutine-local storage a value whose `Drop` applies to a handle (a real
/// call, which `may` makes on its worker thread outside any coroutine once the coroutine has ended: the thread
/// gets a client of its own). Then a second coroutine on that thread issues `apply_then` (20 ms, result 1) and
/// calls `wait_pending`. Expected: `(Some(1), Some(1))`, and the value reads 1.
///
/// Measured: `(None, None)` (the fix's known remaining hole): `Trust::apply_then` (api/trust.rs:207) tries
/// `call::post_then_from_thread` first (call.rs:422-448), which takes the thread's client whenever the thread
/// has one, without asking whether the caller is a coroutine; fc4fc08 only stopped a handle's clone or drop from
/// making one, and a real call still does (`call_from_thread` asks `in_may_coroutine`, then
/// `with_thread_client`, call.rs:203-216). The request is batched unsent in the thread's client and the
/// continuation left to whatever later runs that thread's continuations, while the coroutine's `wait_pending`
/// looks only at its coroutine-local queue. Fixed: a thread's client keeps its thread's stack range, and
/// `post_then_from_thread` leaves a caller running on another stack (a coroutine) to `post_then`, which asks
/// `may`.
#[test]
fn a_coroutines_apply_then_waits_even_after_its_thread_called_outside_any_coroutine() {
    in_child!(
        "a_coroutines_apply_then_waits_even_after_its_thread_called_outside_any_coroutine",
        10
    );
    may::config().set_workers(1);
    let p = rt().trustee(0).entrust(0u64);
    give_the_may_thread_a_client(&p);
    let seen = coroutine_apply_then_then_wait(p.clone());
    assert_eq!(seen, (Some(1), Some(1)));
    assert_eq!(p.apply(|v| *v), 1);
    child_ok();
}

/// README: "`into_inner()` ... The trustee decides once every request and count change sent before the call has
/// been served ...; that includes `apply_then`s another thread issued to that trustee but has not sent yet";
/// "From a `may` coroutine, `apply_then` ... wait[s] for [its] result". With one `may` worker thread that made a
/// real call outside any coroutine (a coroutine-local's destructor, as above), a coroutine there issues
/// `apply_then(+1)` on a value of trustee 0 and ends; its handle is gone. Then the main thread calls
/// `into_inner` on the last handle. Expected within 3 s: `Some(1)` (the coroutine's request ran first).
///
/// Measured: no answer within 3 s (the `into_inner` never returns): the coroutine's request was batched unsent
/// in the `may` thread's client (call.rs:429, `post_then_from_thread`), which announced it (lingering), so the
/// trustee's retire waits for that batch; but nothing on that thread ever publishes it again (the `may` thread
/// idles in `may`'s scheduler, and a plain thread publishes its `apply_then`s 48 at a time or at its next call).
/// The same test with a blocking `apply(+1)` in the coroutine instead gives `Some(1)` at once. Fixed with
/// the test above.
#[test]
fn into_inner_after_a_coroutines_apply_then_on_a_thread_that_called_outside_any_coroutine() {
    in_child!(
        "into_inner_after_a_coroutines_apply_then_on_a_thread_that_called_outside_any_coroutine",
        10
    );
    may::config().set_workers(1);
    let p = rt().trustee(0).entrust(0u64);
    give_the_may_thread_a_client(&p);
    let p3 = p.clone();
    coroutine(move || {
        p3.apply_then(|v| *v += 1, |()| ());
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let got = within(3, move || p.into_inner());
    assert_eq!(got, Some(1));
    child_ok();
}

/// Kept by the destructor of `TAKES`, for the test to read.
static TAKEN: Mutex<Vec<Option<u64>>> = Mutex::new(Vec::new());

/// At its thread's exit, after the client thread-local is gone: clones its handle (by mail), calls
/// `into_inner` on the original while the clone lives (`None`), then on the clone (`Some`).
struct Takes(Option<Trust<Counter>>);

impl Drop for Takes {
    fn drop(&mut self) {
        let h = self.0.take().unwrap();
        let c = h.clone();
        let first = h.into_inner().map(|c| c.n);
        let second = c.into_inner().map(|c| c.n);
        TAKEN.lock().unwrap().extend([first, second]);
    }
}

thread_local! {
    static TAKES: RefCell<Option<Takes>> = const { RefCell::new(None) };
}

/// README: "`into_inner()` returns `Some(value)` or drops the handle"; "a clone dropped before it never makes it
/// fail". Ten threads, one after the other, each set a thread-local first (its destructor runs after the client
/// thread-local's), make their first call, `apply(+1)` on their own counted value (trustee `i % 2`), and exit;
/// the destructor then clones the handle and calls `into_inner` twice (original, then clone), each a call made
/// with a fresh client. Expected per thread: `[None, Some(1)]`; 10 values made, 10 dropped (each by its taker,
/// here), none by the runtime.
#[test]
fn into_inner_from_a_thread_local_destructor_after_the_client_is_gone() {
    let tally = Arc::new(Tally::default());
    for i in 0..10 {
        let t = tally.clone();
        within(10, move || {
            std::thread::spawn(move || {
                let v = rt().trustee(i % 2).entrust(Counter {
                    n: 0,
                    _t: Tallied::new(&t),
                });
                TAKES.with(|k| *k.borrow_mut() = Some(Takes(Some(v.clone()))));
                v.apply(|c| c.n += 1);
            })
            .join()
            .unwrap()
        });
    }
    let taken = std::mem::take(&mut *TAKEN.lock().unwrap());
    assert_eq!(taken, [None, Some(1)].repeat(10));
    settle(&rt().trustee(0).entrust(()));
    settle(&rt().trustee(1).entrust(()));
    assert_eq!(tally.counts(), (10, 10));
}

/// README: "`try_unwrap()` returns `Ok(value)` when no other handle is counted, else `Err(handle)` (still
/// usable) ... a clone dropped before it never makes it fail". 200 fresh threads, two at a time: each entrusts
/// a counter to trustee `i % 2` (registered by mail), makes a clone (counted by mail), then `try_unwrap`s the
/// original (its first call): `Err`, with a handle that still works (`apply(+1)`); drops the clone (by its
/// client's slot or the count mail) and `try_unwrap`s again: `Ok` with n = 1. Expected: 200 `Err` then `Ok(1)`;
/// 200 values made and dropped once each (by the thread that took it).
#[test]
fn try_unwrap_from_fresh_threads_with_clones_counted_by_mail() {
    let tally = Arc::new(Tally::default());
    let mut outcomes = Vec::new();
    for pair in 0..100usize {
        let threads: Vec<_> = (0..2)
            .map(|j| {
                let (i, t) = (pair * 2 + j, tally.clone());
                std::thread::spawn(move || {
                    let v = rt().trustee(i % 2).entrust(Counter {
                        n: 0,
                        _t: Tallied::new(&t),
                    });
                    let c = v.clone();
                    let v = match v.try_unwrap() {
                        Ok(_) => return (false, None),
                        Err(v) => v,
                    };
                    v.apply(|c| c.n += 1);
                    drop(c);
                    (true, v.try_unwrap().ok().map(|c| c.n))
                })
            })
            .collect();
        outcomes.extend(threads.into_iter().map(|t| t.join().unwrap()));
    }
    assert_eq!(outcomes, vec![(true, Some(1)); 200]);
    assert_eq!(tally.counts(), (200, 200));
}

/// README: "a thread, or `exit` from main, never waits for a trustee stuck in a long closure only to send it a
/// handle's count change"; `into_inner`: "a clone dropped before it never makes it fail". Trustee 0 is held in
/// a 300 ms closure; meanwhile a thread that never calls receives a clone of a counter of trustee 0, clones it
/// 10,000 times keeping them all, drops them all and its clone, and exits (all by the count mail). Expected: the
/// thread is done well before the closure ends (under 250 ms); then the main thread's `into_inner` returns
/// `Some` with the counter intact (n = 0); (1, 1) once that value is dropped.
#[test]
fn into_inner_after_a_clientless_thread_left_its_count_changes_to_a_stalled_trustee() {
    let tally = Arc::new(Tally::default());
    let v = rt().trustee(0).entrust(Counter {
        n: 0,
        _t: Tallied::new(&tally),
    });
    settle(&rt().trustee(0).entrust(()));
    let stalled = stall(0, 300);
    let c = v.clone();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let all: Vec<_> = (0..10_000).map(|_| c.clone()).collect();
        drop(all);
        drop(c);
    })
    .join()
    .unwrap();
    let left = t0.elapsed();
    let got = within(10, move || v.into_inner().map(|c| c.n));
    stalled.join().unwrap();
    assert!(
        left < Duration::from_millis(250),
        "the thread took {left:?}"
    );
    assert_eq!(got, Some(0));
    assert_eq!(tally.counts(), (1, 1));
}

/// README: "`Runtime::shutdown()` ... drops every value still entrusted exactly once"; `into_inner` returns
/// `Some(value)` or `None` and panics "after `Runtime::shutdown`". Four threads that never called each entrust
/// (by mail) 2,000 counted values, alternating trustees, and clone and drop each once (by the count mail); then
/// they `into_inner` them one by one while the main thread shuts the runtime down after 20 ms; a panicking
/// `into_inner` (the shutdown) is caught and the thread goes on with the next handle. Expected: every value
/// dropped exactly once, by its taker or by the shutdown: made 8,000, dropped 8,000; no `None` (each handle was
/// the last); some taken before the shutdown.
#[test]
fn into_inner_from_threads_without_a_client_racing_the_shutdown_drops_each_value_once() {
    in_child!(
        "into_inner_from_threads_without_a_client_racing_the_shutdown_drops_each_value_once",
        20
    );
    silence_shutdown_panics();
    let _ = rt();
    let tally = Arc::new(Tally::default());
    let go = Arc::new(Barrier::new(5));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (tally, go) = (tally.clone(), go.clone());
            std::thread::spawn(move || {
                let vs: Vec<_> = (0..2_000usize)
                    .map(|i| {
                        let v = rt().trustee((t + i) % 2).entrust(Tallied::new(&tally));
                        drop(v.clone());
                        v
                    })
                    .collect();
                go.wait();
                let (mut some, mut none, mut panicked) = (0, 0, 0);
                for v in vs {
                    match catch_unwind(AssertUnwindSafe(move || v.into_inner())) {
                        Ok(Some(_)) => some += 1,
                        Ok(None) => none += 1,
                        Err(_) => panicked += 1,
                    }
                }
                (some, none, panicked)
            })
        })
        .collect();
    go.wait();
    std::thread::sleep(Duration::from_millis(20));
    rt().shutdown();
    let outcomes: Vec<(usize, usize, usize)> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    let some: usize = outcomes.iter().map(|o| o.0).sum();
    let none: usize = outcomes.iter().map(|o| o.1).sum();
    eprintln!("(taken, none, panicked) per thread: {outcomes:?}");
    assert_eq!(none, 0, "{outcomes:?}");
    assert!(some > 0, "{outcomes:?}");
    assert_eq!(tally.counts(), (8_000, 8_000), "{outcomes:?}");
    child_ok();
}
