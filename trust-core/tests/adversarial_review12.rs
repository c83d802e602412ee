//! Review 12: hostile tests of the shutdown and ordering fixes since 037797c: the three-phase drop of a
//! trustee's values (fb4c7d5), the batches a closing trustee took or left (`Channel::taken`,
//! `Outbox::drop_untaken`, fba3a0f), requests to a worker's own trustee counted per issuer (`call::ToSelf`,
//! 8c47a30), and what destructors may do while a runtime shuts down. Tests that shut the runtime down, or
//! can hang, run in a child process of their own with a deadline (`in_child!`).
//!
//! Ignored tests are bugs found by this review; each one's doc gives the behaviour measured.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[macro_use]
mod common;
use common::*;
use trust_core::{Latch, Trust, spawn, wait_pending};

/// Waits (up to `ms`) for `flag`.
fn wait_flag(flag: &AtomicBool, ms: u64) -> bool {
    let deadline = Instant::now() + Duration::from_millis(ms);
    while !flag.load(Ordering::SeqCst) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

// ---------------------------------------------------------------------------------------------------------
// 1. Destructors at shutdown (fb4c7d5): the three phases, and what runs after them.

/// Uses a handle of a value of worker 0's trustee from its destructor, and records what happened.
struct LateUser {
    h: Option<Trust<u64>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Drop for LateUser {
    fn drop(&mut self) {
        let h = self.h.take().unwrap();
        let on = std::thread::current().name().unwrap_or("?").to_string();
        let r = catch_unwind(AssertUnwindSafe(|| h.apply(|v| *v)));
        let line = match r {
            Ok(v) => format!("{on}: apply returned {v}"),
            Err(p) => format!("{on}: apply panicked: {}", panic_message(p)),
        };
        self.seen.lock().unwrap().push(line);
        // A clone on the trustee's own thread counts the new handle in the property's header.
        let c = catch_unwind(AssertUnwindSafe(|| h.clone()));
        self.seen.lock().unwrap().push(format!(
            "{on}: clone {}",
            if c.is_ok() { "ok" } else { "panicked" }
        ));
        std::mem::forget(c);
        // Allocations of the size class of a property (128-byte aligned, 128 bytes): a write into a freed
        // one corrupts the allocator's free list, which these would trip over.
        let probes: Vec<Box<[u8; 128]>> = (0..16).map(|_| Box::new([7u8; 128])).collect();
        drop(probes);
        drop(h);
    }
}

/// fb4c7d5 keeps every value of a closing trustee allocated while destructors run (phase 2), so a handle used
/// there never reaches freed memory. But user code also runs on the worker after phase 3 has freed them:
/// `Worker::close` drops its client (worker/run.rs:868) after `drop_all_at_shutdown` (run.rs:861), and with
/// it the continuations of its requests to other trustees, answered or not. Here a fiber of worker 0 issues an
/// `apply_then` to trustee 1 (busy in a long closure), whose continuation captures a handle `h` of a value of
/// trustee 0 and uses it when dropped. The shutdown frees `h`'s property, then worker 0 waits for trustee 1's
/// answer and drops the continuation unrun, on worker 0: `h.apply` and `h.clone` take the local shortcut
/// (api/trust.rs:133-147, :457-459; neither checks that the runtime runs) on the freed property.
///
/// Expected: `apply` panics with the shutdown message without reading the property; `clone` writes nothing.
///
/// Measured under AddressSanitizer (run with `--include-ignored`): "heap-use-after-free ... READ of size 8" on
/// `trust-worker-0` in `property::launched` (property.rs:250) from `Trust::apply_sized` (api/trust.rs:141),
/// inside `LateUser::drop`; freed by the same thread in `Worker::close` (run.rs:861, `release::<u64>`). In a
/// plain build the test passes by luck: the freed header's `in_use` byte holds glibc's tcache key, so `apply`
/// "panics with the shutdown message", and `clone` silently increments the freed chunk's free-list word.
#[test]
fn a_continuation_dropped_after_the_values_were_freed_uses_no_freed_property() {
    in_child!(
        "a_continuation_dropped_after_the_values_were_freed_uses_no_freed_property",
        10
    );
    calibrate();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let h: Trust<u64> = rt().trustee(0).entrust(41);
    let t1: Trust<u64> = rt().trustee(1).entrust(0);
    let stalled = stall(1, 600);
    let issued = Arc::new(AtomicBool::new(false));
    let (i2, s2, hc) = (issued.clone(), seen.clone(), h.clone());
    let f = spawn_on(0, move || {
        let late = LateUser {
            h: Some(hc),
            seen: s2,
        };
        t1.apply_then(|v| *v += 1, move |()| drop(late));
        i2.store(true, Ordering::SeqCst);
    });
    eventually("the apply_then was issued", || {
        issued.load(Ordering::SeqCst)
    });
    f.join().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    rt().shutdown();
    stalled.join().unwrap();
    drop(h);
    let seen = seen.lock().unwrap().clone();
    eprintln!("{seen:#?}");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].contains("apply panicked") && seen[0].contains("shut down"),
        "{seen:?}"
    );
    child_ok();
}

/// A value of each trustee whose destructor, at shutdown, reaches its sibling (a value of the same trustee
/// whose handle it holds) in every way: `apply` (must panic with the shutdown message, or find it alive),
/// `apply_then` (dropped unrun: its capture is dropped once), a clone (kept past the shutdown; dropping it
/// then does nothing), `entrust` and `spawn` (panic with the shutdown message: their arguments are dropped
/// once), then panics itself. Every value, capture and argument is dropped exactly once, and the process
/// survives (under ASan too).
#[test]
fn destructors_at_shutdown_reach_their_siblings_in_every_way_and_each_value_drops_once() {
    in_child!(
        "destructors_at_shutdown_reach_their_siblings_in_every_way_and_each_value_drops_once",
        10
    );
    struct Sibling {
        alive: Arc<AtomicBool>,
        _t: Tallied,
    }
    impl Drop for Sibling {
        fn drop(&mut self) {
            self.alive.store(false, Ordering::SeqCst);
        }
    }
    struct Reacher {
        sib: Option<Trust<Sibling>>,
        tally: Arc<Tally>,
        seen: Arc<Mutex<Vec<String>>>,
        kept: Arc<Mutex<Vec<Trust<Sibling>>>>,
        _t: Tallied,
    }
    impl Drop for Reacher {
        fn drop(&mut self) {
            let sib = self.sib.take().unwrap();
            let mut seen = Vec::new();
            match catch_unwind(AssertUnwindSafe(|| {
                sib.apply(|s| s.alive.load(Ordering::SeqCst))
            })) {
                Ok(true) => seen.push("apply: alive".to_string()),
                Ok(false) => seen.push("apply: RAN ON A DROPPED VALUE".to_string()),
                Err(p) => seen.push(format!("apply: {}", panic_message(p))),
            }
            let cap = Tallied::new(&self.tally);
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| {
                sib.apply_then(
                    move |s| {
                        drop(cap);
                        s.alive.load(Ordering::SeqCst)
                    },
                    |_| (),
                )
            })) {
                seen.push(format!("apply_then: {}", panic_message(p)));
            }
            self.kept.lock().unwrap().push(sib.clone());
            let v = Tallied::new(&self.tally);
            let here = trust_core::local_trustee();
            match catch_unwind(AssertUnwindSafe(|| here.entrust(v))) {
                Ok(t) => {
                    seen.push("entrust: ok".to_string());
                    std::mem::forget(t);
                }
                Err(p) => seen.push(format!("entrust: {}", panic_message(p))),
            }
            let cap = Tallied::new(&self.tally);
            match catch_unwind(AssertUnwindSafe(|| spawn(move || drop(cap)))) {
                Ok(f) => {
                    seen.push("spawn: ok".to_string());
                    drop(f);
                }
                Err(p) => seen.push(format!("spawn: {}", panic_message(p))),
            }
            self.seen.lock().unwrap().extend(seen);
            drop(sib);
            panic!("Reacher panics in its destructor");
        }
    }
    let tally = Arc::new(Tally::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for w in 0..2 {
        for _ in 0..3 {
            // Siblings entrusted before and after their reachers: the registry's order is either way.
            let a = rt().trustee(w).entrust(Sibling {
                alive: Arc::new(AtomicBool::new(true)),
                _t: Tallied::new(&tally),
            });
            let r = rt().trustee(w).entrust(Reacher {
                sib: Some(a),
                tally: tally.clone(),
                seen: seen.clone(),
                kept: kept.clone(),
                _t: Tallied::new(&tally),
            });
            let b = rt().trustee(w).entrust(Sibling {
                alive: Arc::new(AtomicBool::new(true)),
                _t: Tallied::new(&tally),
            });
            let r2 = rt().trustee(w).entrust(Reacher {
                sib: Some(b.clone()),
                tally: tally.clone(),
                seen: seen.clone(),
                kept: kept.clone(),
                _t: Tallied::new(&tally),
            });
            handles.push((r, r2, b));
        }
    }
    let on0 = rt().trustee(0).entrust(());
    settle(&on0);
    rt().shutdown();
    drop(handles);
    drop(on0);
    drop(std::mem::take(&mut *kept.lock().unwrap()));
    let seen = seen.lock().unwrap().clone();
    // 12 reachers, 3 lines each (apply_then queues without panicking).
    assert_eq!(seen.len(), 12 * 3, "{seen:#?}");
    for line in &seen {
        assert!(
            line == "apply: alive" || line.contains("shut down"),
            "{seen:#?}"
        );
    }
    // 12 siblings + 12 reachers + 12 apply_then captures + 12 entrusted + 12 spawn captures.
    assert_eq!(tally.counts(), (60, 60));
    child_ok();
}

/// A value of trustee 0 whose destructor, at shutdown, calls `launch_then` on a latch of its own trustee
/// (allowed inside delegated closures): the fiber must either run, or its closure be dropped (with what it
/// captured), as `spawn` and `entrust` there panic with the shutdown message and drop their arguments.
///
/// Measured: the capture is never dropped (made 1, dropped 0): `launch_then` checks nothing
/// (api/latch.rs:204 `expect_later` on a worker, :215 `start_launched`, start the fiber at once); the fiber
/// is made ready on a scheduler that never runs again, and `Scheduler::abandon` (fiber.rs:465) forgets it.
#[test]
fn launch_then_from_a_destructor_at_shutdown_drops_its_closure() {
    in_child!(
        "launch_then_from_a_destructor_at_shutdown_drops_its_closure",
        8
    );
    struct Launcher {
        l: Option<Trust<Latch<u64>>>,
        tally: Arc<Tally>,
    }
    impl Drop for Launcher {
        fn drop(&mut self) {
            let l = self.l.take().unwrap();
            let cap = Tallied::new(&self.tally);
            let _ = catch_unwind(AssertUnwindSafe(|| {
                l.launch_then(move |_| drop(cap), |()| ())
            }));
        }
    }
    let tally = Arc::new(Tally::default());
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let keep = rt().trustee(0).entrust(Launcher {
        l: Some(l),
        tally: tally.clone(),
    });
    let on0 = rt().trustee(0).entrust(());
    settle(&on0);
    rt().shutdown();
    drop((keep, on0));
    assert_eq!(tally.counts(), (1, 1));
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 2. What a closing trustee took, and what its clients drop (fba3a0f).

/// Sets `dropping`, then holds its trustee's shutdown until `release` (up to 3 s) and 200 ms more.
struct Holds {
    dropping: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
}

impl Drop for Holds {
    fn drop(&mut self) {
        self.dropping.store(true, Ordering::SeqCst);
        wait_flag(&self.release, 3_000);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sets its flag when dropped.
struct Flags(Arc<AtomicBool>);

impl Drop for Flags {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Trustee 1 shuts down slowly (a destructor holds it, after its last serve, until worker 0 has dropped its
/// own values). Meanwhile worker 0, still in the closure of a remote client that began before the shutdown,
/// has `what` issue a request to trustee 1 (from inside that delegated closure); worker 0 publishes it when
/// the closure returns, after trustee 1's last serve, then closes itself. Returns once the runtime is down.
fn behind_a_slow_shutdown(what: impl FnOnce() + Send + 'static) {
    let (dropping, release) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let holds = rt().trustee(1).entrust(Holds {
        dropping: dropping.clone(),
        release: release.clone(),
    });
    let flags = rt().trustee(0).entrust(Flags(release.clone()));
    let on0 = rt().trustee(0).entrust(());
    let entered = Arc::new(AtomicBool::new(false));
    let (e2, d2, o2) = (entered.clone(), dropping.clone(), on0.clone());
    let client = std::thread::spawn(move || {
        o2.apply(move |_| {
            what();
            e2.store(true, Ordering::SeqCst);
            // Until trustee 1 is past its last serve (dropping its values).
            assert!(wait_flag(&d2, 3_000), "trustee 1 never began dropping");
        })
    });
    eventually("the closure on worker 0 runs", || {
        entered.load(Ordering::SeqCst)
    });
    rt().shutdown();
    client.join().unwrap();
    std::mem::forget((holds, flags, on0));
}

/// Worker 0 entrusts a value to trustee 1 from inside a delegated closure that began before the shutdown
/// (the registration record waits in worker 0's batch to trustee 1), and publishes it after trustee 1's last
/// serve, while trustee 1 is still dropping its values (closing, not closed). README: shutdown "drops every
/// value still entrusted exactly once".
///
/// Measured: the value is never dropped (made 1, dropped 0). Worker 0's `Client` drop in `Worker::close`
/// (run.rs:868) finds the batch in flight but awaiting no answer (`Outbox::drop`'s `must_wait` is false for a
/// registration), breaks out because trustee 1 is closing (outbox.rs:613), and calls `drop_untaken` only if
/// trustee 1 is closed already (outbox.rs:619): it is not yet (its `taken` is stored, its values are being
/// dropped), so nobody ever runs or drops the record, its `Registration` included, and the value leaks.
#[test]
fn a_registration_published_after_the_trustees_last_serve_drops_the_value_once() {
    in_child!(
        "a_registration_published_after_the_trustees_last_serve_drops_the_value_once",
        12
    );
    let tally = Arc::new(Tally::default());
    let t2 = tally.clone();
    behind_a_slow_shutdown(move || {
        let v = rt().trustee(1).entrust(Tallied::new(&t2));
        std::mem::forget(v);
    });
    assert_eq!(tally.counts(), (1, 1));
    child_ok();
}

/// The same with an `apply_then` (whose continuation worker 0 waits for): its closure and continuation, each
/// capturing a counted value, are dropped unrun exactly once.
#[test]
fn an_apply_then_published_after_the_trustees_last_serve_drops_its_captures_once() {
    in_child!(
        "an_apply_then_published_after_the_trustees_last_serve_drops_its_captures_once",
        12
    );
    let tally = Arc::new(Tally::default());
    let t1v: Trust<u64> = rt().trustee(1).entrust(0);
    let t2 = tally.clone();
    behind_a_slow_shutdown(move || {
        let (a, b) = (Tallied::new(&t2), Tallied::new(&t2));
        t1v.apply_then(move |v| drop((a, *v)), move |()| drop(b));
    });
    assert_eq!(tally.counts(), (2, 2));
    child_ok();
}

/// A plain thread's batch: an `apply_then` whose closure returns a counted value, then a blocking `apply` on a
/// latch whose launched fiber holds it (the batch pauses at that, its last record). Shutdown while paused:
/// the thread's `apply` panics naming the shutdown; the continuation never runs. Every value made is dropped
/// once: the closure's result (written into the response slot before the pause), the continuation's capture.
///
/// Measured before the fix: the result was never dropped (made 1, dropped 0): `Worker::close` dropped the
/// paused record and the ones after it but never answered the batch, and the client dropped the flight's
/// continuations without the results written before the pause. Now the trustee tells the client how many
/// bytes of results the paused batch holds (`Channel::written`), and the client drops them with their
/// continuations.
#[test]
fn results_of_records_before_a_pause_are_dropped_at_shutdown() {
    in_child!(
        "results_of_records_before_a_pause_are_dropped_at_shutdown",
        10
    );
    let on0 = rt().trustee(0).entrust(());
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    hold_open(&l, &on0, &stop);
    let p = rt().trustee(0).entrust(0u64);
    let (results, captures) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let ran = Arc::new(AtomicBool::new(false));
    let (r2, c2, ran2) = (results.clone(), captures.clone(), ran.clone());
    let (out_tx, out_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let cap = Tallied::new(&c2);
        p.apply_then(
            move |_| {
                ran2.store(true, Ordering::SeqCst);
                Tallied::new(&r2)
            },
            move |r| drop((r, cap)),
        );
        let r = catch_unwind(AssertUnwindSafe(|| l.apply(|l| *l.get_mut())));
        out_tx.send(r.map_err(panic_message)).unwrap();
    });
    eventually("the apply_then ran", || ran.load(Ordering::SeqCst));
    settle(&on0);
    rt().shutdown();
    let r = out_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the blocked apply returned");
    assert!(r.as_ref().is_err_and(|m| m.contains("shut down")), "{r:?}");
    thread.join().unwrap();
    std::mem::forget(on0);
    assert_eq!(captures.counts(), (1, 1), "the continuation's capture");
    assert_eq!(results.counts(), (1, 1), "the closure's result");
    child_ok();
}

/// As above, harder: five `apply_then`s with results of three sizes (8 bytes, a 40-byte tuple, and a
/// 300-byte array boxed on the way back) run, then an `apply_then` on the held latch pauses the batch, and
/// three more `apply_then`s follow it; the thread then exits with all of them in flight. At shutdown no
/// continuation runs, and every result made (five) and every capture (nine) is dropped exactly once.
#[test]
fn results_of_several_sizes_before_a_paused_apply_then_are_dropped_at_shutdown() {
    in_child!(
        "results_of_several_sizes_before_a_paused_apply_then_are_dropped_at_shutdown",
        10
    );
    let on0 = rt().trustee(0).entrust(());
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    hold_open(&l, &on0, &stop);
    let p = rt().trustee(0).entrust(0u64);
    let (results, captures) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let (ran, continued) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let thread = {
        let (results, captures, ran, continued) = (
            results.clone(),
            captures.clone(),
            ran.clone(),
            continued.clone(),
        );
        std::thread::spawn(move || {
            let then = |cap: Tallied| {
                let continued = continued.clone();
                move |r: Box<dyn std::any::Any>| {
                    continued.fetch_add(1, Ordering::SeqCst);
                    drop((r, cap));
                }
            };
            // All nine in one batch: behind a request in flight (the first on an idle channel would go alone).
            let busy = busy_channel(&p);
            for i in 0..5 {
                let (r, ran, k) = (results.clone(), ran.clone(), then(Tallied::new(&captures)));
                match i % 3 {
                    0 => p.apply_then(
                        move |_| {
                            ran.fetch_add(1, Ordering::SeqCst);
                            Tallied::new(&r)
                        },
                        move |t| k(Box::new(t)),
                    ),
                    1 => p.apply_then(
                        move |_| {
                            ran.fetch_add(1, Ordering::SeqCst);
                            (Tallied::new(&r), [7u64; 4])
                        },
                        move |t| k(Box::new(t)),
                    ),
                    _ => p.apply_then(
                        move |_| {
                            ran.fetch_add(1, Ordering::SeqCst);
                            (Tallied::new(&r), [7u64; 37])
                        },
                        move |t| k(Box::new(t)),
                    ),
                }
            }
            let k = then(Tallied::new(&captures));
            l.apply_then(|l| *l.get_mut(), move |n| k(Box::new(n)));
            for _ in 0..3 {
                let (r, k) = (results.clone(), then(Tallied::new(&captures)));
                p.apply_then(move |_| Tallied::new(&r), move |t| k(Box::new(t)));
            }
            drop(busy);
        })
    };
    eventually("the five apply_thens before the pause ran", || {
        ran.load(Ordering::SeqCst) == 5
    });
    settle(&on0);
    rt().shutdown();
    thread.join().unwrap();
    std::mem::forget(on0);
    assert_eq!(continued.load(Ordering::SeqCst), 0, "no continuation runs");
    assert_eq!(captures.counts(), (9, 9), "the continuations' captures");
    assert_eq!(
        results.counts(),
        (5, 5),
        "the results written before the pause"
    );
    child_ok();
}

/// Shutdown while a latch's launched fiber holds a paused batch of one plain thread (its first record waits
/// on the latch, 20 more follow), a second thread's blocking `apply` waits on the latch too (a batch of one
/// record, paused), and a fiber of worker 1 has an `apply_then` queued on the latch: every capture (of the
/// paused records, the records behind them, later unsent batches and continuations) is dropped exactly once.
#[test]
fn shutdown_with_paused_batches_of_several_clients_drops_every_capture_once() {
    in_child!(
        "shutdown_with_paused_batches_of_several_clients_drops_every_capture_once",
        10
    );
    calibrate();
    let captures = Arc::new(Tally::default());
    let on0 = rt().trustee(0).entrust(());
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    hold_open(&l, &on0, &stop);
    let sink = rt().trustee(0).entrust(());
    let (down_tx, down_rx) = std::sync::mpsc::channel::<()>();
    let mut threads = Vec::new();
    {
        let (l, c, sink) = (l.clone(), captures.clone(), sink.clone());
        threads.push(std::thread::spawn(move || {
            let cap = Tallied::new(&c);
            l.apply_then(move |l| drop((cap, l.get_mut())), |()| ());
            for _ in 0..52 {
                let (cap, cap2) = (Tallied::new(&c), Tallied::new(&c));
                sink.apply_then(move |_| drop(cap), move |()| drop(cap2));
            }
            let _ = down_rx.recv();
        }));
    }
    {
        let (l, c) = (l.clone(), captures.clone());
        threads.push(std::thread::spawn(move || {
            let cap = Tallied::new(&c);
            let r = catch_unwind(AssertUnwindSafe(|| l.apply(move |_| drop(cap))));
            assert!(r.is_err(), "the apply on the held latch returned");
        }));
    }
    {
        let (l, c) = (l.clone(), captures.clone());
        let _ = spawn_on(1, move || {
            let (cap, cap2) = (Tallied::new(&c), Tallied::new(&c));
            l.apply_then(move |_| drop(cap), move |()| drop(cap2));
            wait_pending();
        });
    }
    std::thread::sleep(Duration::from_millis(100));
    settle(&on0);
    let before = captures.counts();
    assert_eq!(before.1, 0, "ran behind the launched fiber: {before:?}");
    rt().shutdown();
    drop(down_tx);
    for t in threads {
        t.join().unwrap();
    }
    std::mem::forget((on0, sink, l));
    let (made, dropped) = captures.counts();
    assert_eq!(made, 1 + 52 * 2 + 1 + 2);
    // The fiber on worker 1 is abandoned at shutdown: its frame (nothing counted) is leaked; its request
    // and continuation went out and are dropped.
    assert_eq!(dropped, made, "made {made} dropped {dropped}");
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 3. Requests to a worker's own trustee, per issuer (8c47a30).

/// A fiber F launched on latch L (worker 0) does an `apply_then` on a plain value P of its worker (inline),
/// whose continuation (run on worker 0's scheduler, counted for F: "chains count for whoever issued the
/// first") does an `apply_then` on L: it goes by worker 0's channel to itself and pauses there until F ends.
/// F then does a blocking `apply` on P. F never issued anything on L itself (there it would panic with
/// `APPLY_THEN_ON_OWN_LATCH`); its `apply` on P must answer (or panic naming the problem), never hang.
///
/// Measured: `HUNG: no answer within 3 s`. `Worker::to_self_issuer` (run.rs:234-237) counts the continuation's
/// request for F (`issuer()` -> `continuing`, F's `Pending`), so `call::queued_to_self` is true for F and its
/// `apply` on P goes `apply_behind_queued` (api/trust.rs:135), behind the request paused on L, which waits for
/// F to end. Before 8c47a30 a launched fiber's `apply` took the local shortcut.
#[test]
fn a_continuations_request_on_its_fibers_latch_does_not_hang_the_fibers_apply() {
    in_child!(
        "a_continuations_request_on_its_fibers_latch_does_not_hang_the_fibers_apply",
        8
    );
    let on0 = rt().trustee(0).entrust(());
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(0));
    let p: Trust<u64> = rt().trustee(0).entrust(1);
    let ran = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(None));
    let (l2, ran2, out2) = (l.clone(), ran.clone(), out.clone());
    l.launch_then(
        move |_| {
            let r3 = ran2.clone();
            p.apply_then(
                |_| (),
                move |()| {
                    l2.apply_then(
                        |l| *l.get_mut() += 100,
                        move |()| {
                            r3.fetch_add(1, Ordering::SeqCst);
                        },
                    )
                },
            );
            // The continuation runs meanwhile; its request pauses on L (this fiber is alive).
            trust_core::sleep(Duration::from_millis(30));
            let r = catch_unwind(AssertUnwindSafe(|| p.apply(|v| *v + 1))).map_err(panic_message);
            *out2.lock().unwrap() = Some(r);
        },
        |()| (),
    );
    on0.apply(|_| ());
    let r = within(3, move || {
        loop {
            if let Some(r) = out.lock().unwrap().take() {
                return r;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    assert!(
        r == Ok(2) || r.as_ref().is_err_and(|m| m.contains("latch")),
        "{r:?}"
    );
    eventually("the request on L ran once F ended", || load(&ran) == 1);
    assert_eq!(l.apply(|l| *l.get_mut()), 100);
    child_ok();
}

/// Issue order inside a delegated closure that a fiber applies inline: the closure (on worker 0) queues an
/// `apply_then` on a busy latch L (it goes by the channel to itself, counted for the fiber), then an
/// `apply_then` setting a plain value Q of worker 0 to 5 (queued behind, as the fiber's), then a blocking
/// `apply` reading Q. README: "Requests from one thread to one trustee are applied in issue order". The
/// read must see 5, or the `apply` must panic naming the problem.
///
/// Measured: the read returns 1 (the old value): inside a delegated closure `in_fiber()` is false, so the
/// blocking `apply` takes the local shortcut (api/trust.rs:135) past the closure's own `apply_then`, which
/// `queued_to_self` (counted for the fiber, call.rs:447) sent to the channel to itself. (As before 8c47a30.)
#[test]
fn a_blocking_apply_in_a_delegated_closure_goes_behind_its_own_queued_apply_then() {
    in_child!(
        "a_blocking_apply_in_a_delegated_closure_goes_behind_its_own_queued_apply_then",
        8
    );
    calibrate();
    let on0 = rt().trustee(0).entrust(());
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    hold_open(&l, &on0, &stop);
    let q: Trust<u64> = rt().trustee(0).entrust(1);
    let p: Trust<()> = rt().trustee(0).entrust(());
    let (l2, q2) = (l.clone(), q.clone());
    let f = spawn_on(0, move || {
        p.apply(move |_| {
            l2.apply_then(|l| *l.get_mut() += 100, |()| ());
            q2.apply_then(|q| *q = 5, |()| ());
            catch_unwind(AssertUnwindSafe(|| q2.apply(|q| *q))).map_err(panic_message)
        })
    });
    let r = within(3, move || f.join().unwrap());
    stop.store(true, Ordering::SeqCst);
    assert!(
        r == Ok(5) || r.as_ref().is_err_and(|m| m.contains("order")),
        "{r:?}"
    );
    eventually("the queued requests ran", || q.apply(|q| *q) == 5);
    child_ok();
}

/// Issue order per issuer on worker 0, each issuer a fiber: two fibers, each with an `apply_then` paused on a
/// busy latch L and then, on a plain value of its own, `apply_then(set i)` and a blocking `apply(read)`: each
/// read sees its own set (it goes behind its own requests), both fibers finish once L is free, and the
/// requests on L run once each.
#[test]
fn two_fibers_each_read_their_own_queued_set_once_the_latch_is_free() {
    in_child!(
        "two_fibers_each_read_their_own_queued_set_once_the_latch_is_free",
        8
    );
    calibrate();
    let on0 = rt().trustee(0).entrust(());
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    hold_open(&l, &on0, &stop);
    let fibers: Vec<_> = (0..2u64)
        .map(|i| {
            let l = l.clone();
            let q: Trust<u64> = rt().trustee(0).entrust(0);
            spawn_on(0, move || {
                l.apply_then(|l| *l.get_mut() += 1, |()| ());
                q.apply_then(move |q| *q = 10 + i, |()| ());
                let read = q.apply(|q| *q);
                wait_pending();
                read
            })
        })
        .collect();
    settle(&on0);
    std::thread::sleep(Duration::from_millis(30));
    assert!(
        fibers.iter().all(|f| !f.is_finished()),
        "ran past the held latch"
    );
    stop.store(true, Ordering::SeqCst);
    let reads = within(5, move || {
        fibers
            .into_iter()
            .map(|f| f.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(reads, vec![10, 11]);
    assert_eq!(l.apply(|l| *l.get_mut()), 2);
    child_ok();
}

/// A fiber ends with a request to its own worker still paused (on a busy latch): a fiber started afterwards,
/// which may get the same fiber id, has a fresh issue-order count: its `apply` on a plain value of the worker
/// answers at once (it has no request of its own queued), and the old request still runs, once, when the
/// latch is free.
#[test]
fn a_fiber_ending_with_a_queued_request_leaves_no_count_to_the_next_fiber() {
    in_child!(
        "a_fiber_ending_with_a_queued_request_leaves_no_count_to_the_next_fiber",
        8
    );
    calibrate();
    let on0 = rt().trustee(0).entrust(());
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    hold_open(&l, &on0, &stop);
    let ran = Arc::new(AtomicUsize::new(0));
    let (l2, ran2) = (l.clone(), ran.clone());
    spawn_on(0, move || {
        l2.apply_then(
            |l| *l.get_mut() += 1,
            move |()| {
                ran2.fetch_add(1, Ordering::SeqCst);
            },
        );
    })
    .join()
    .unwrap();
    let p: Trust<u64> = rt().trustee(0).entrust(3);
    // Several fibers, so that one of them reuses the ended fiber's id.
    let reads = within(3, move || {
        (0..4)
            .map(|_| {
                let p = p.clone();
                spawn_on(0, move || p.apply(|v| *v)).join().unwrap()
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(reads, vec![3; 4]);
    assert_eq!(load(&ran), 0, "ran past the held latch");
    stop.store(true, Ordering::SeqCst);
    eventually("the ended fiber's request ran", || load(&ran) == 1);
    assert_eq!(l.apply(|l| *l.get_mut()), 1);
    child_ok();
}

/// `entrust` racing nothing: a registration record that runs (a plain thread's entrust to trustee 1, and a
/// worker's to the other trustee) registers the value once; each is dropped once, by its last handle while
/// running, or by the shutdown.
#[test]
fn registrations_that_run_drop_each_value_once() {
    in_child!("registrations_that_run_drop_each_value_once", 8);
    calibrate();
    let tally = Arc::new(Tally::default());
    let mut kept = Vec::new();
    for i in 0..20 {
        let v = rt().trustee(1).entrust(Tallied::new(&tally));
        if i % 2 == 0 {
            kept.push(v);
        }
    }
    let t2 = tally.clone();
    let from_worker = spawn_on(0, move || {
        (0..20)
            .map(|_| rt().trustee(1).entrust(Tallied::new(&t2)))
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    kept.extend(from_worker.into_iter().step_by(2));
    let on1 = rt().trustee(1).entrust(());
    settle(&on1);
    eventually("the dropped ones are gone", || tally.counts() == (40, 20));
    rt().shutdown();
    drop(kept);
    std::mem::forget(on1);
    assert_eq!(tally.counts(), (40, 40));
    child_ok();
}
