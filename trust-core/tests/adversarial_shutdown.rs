//! Adversarial shutdown, each case in a child process of its own (a runtime cannot be restarted): shutdown
//! with thousands of `apply_then`s, launched fibers or `apply_async` futures in flight, from odd places, at
//! process exit with destructors that panic or delegate, and bad fiber-stack limits. Attacks "`shutdown()`
//! ... answers what was sent, drops every value still entrusted exactly once, and stops the workers" (README).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::*;
use trust_core::{Latch, Runtime, Trust, spawn, wait_pending};

/// "Answers what was sent, drops every value still entrusted exactly once": shutdown from a thread with
/// 10,000 `apply_then`s in flight. Its `wait_pending`s panic naming the shutdown if any were unsent; every
/// answered continuation ran; at thread exit every continuation and result has dropped exactly once.
#[test]
fn shutdown_with_ten_thousand_apply_then_in_flight_from_the_caller() {
    if !is_child() {
        return expect_child_ok(
            "shutdown_with_ten_thousand_apply_then_in_flight_from_the_caller",
            &[],
        );
    }
    let rt = quiet();
    let [values, results, conts, served, ran] = [(); 5].map(|()| Arc::new(AtomicUsize::new(0)));
    let issued = 10_000;
    let (v, r, c, s, n) = (
        values.clone(),
        results.clone(),
        conts.clone(),
        served.clone(),
        ran.clone(),
    );
    let (w1, w2) = std::thread::spawn(move || {
        let handles: Vec<Trust<(u64, CountsDrops)>> = (0..4)
            .map(|i| rt.trustee(i % 2).entrust((0, CountsDrops(v.clone()))))
            .collect();
        for i in 0..issued {
            let (r, s, c, n) = (r.clone(), s.clone(), CountsDrops(c.clone()), n.clone());
            handles[i % 4].apply_then(
                move |v| {
                    v.0 += 1;
                    if i % 100 == 0 {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    s.fetch_add(1, Ordering::SeqCst);
                    CountsDrops(r)
                },
                move |t| {
                    let _ = (t, c);
                    n.fetch_add(1, Ordering::SeqCst);
                },
            );
        }
        rt.shutdown();
        assert_eq!(load(&v), 4, "each value dropped once at shutdown");
        let w1 = catch_unwind(wait_pending).map_err(panic_message);
        let w2 = catch_unwind(wait_pending).map_err(panic_message);
        drop(handles);
        (w1, w2)
    })
    .join()
    .unwrap();
    // What was sent is answered; requests still unsent (the last of a burst) make `wait_pending` fail.
    let want = if load(&served) == issued {
        Ok(())
    } else {
        Err(
            "the trust runtime was shut down while `wait_pending` waited for its trustee"
                .to_string(),
        )
    };
    assert_eq!((w1, w2), (want.clone(), want));
    assert_eq!(
        load(&values),
        4,
        "handles dropped after shutdown do nothing"
    );
    assert_eq!(load(&ran), load(&served), "every answered continuation ran");
    assert_eq!(load(&results), load(&served), "each result dropped once");
    assert_eq!(load(&conts), issued, "each continuation dropped once");
    println!("CHILD-OK");
}

/// "Drops every value still entrusted exactly once": shutdown while launched fibers hold a latch (waiting on
/// a slow `apply`) or wait for it. The latched value drops once; `wait_pending` panics naming the shutdown.
#[test]
fn shutdown_while_launched_fibers_hold_and_wait_for_a_latch() {
    if !is_child() {
        return expect_child_ok(
            "shutdown_while_launched_fibers_hold_and_wait_for_a_latch",
            &[],
        );
    }
    let rt = quiet();
    let drops = Arc::new(AtomicUsize::new(0));
    let latched: Trust<Latch<CountsDrops>> = rt
        .trustee(0)
        .entrust(Latch::new(CountsDrops(drops.clone())));
    let slow = rt.trustee(1).entrust(0u64);
    let started = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        let (slow, started) = (slow.clone(), started.clone());
        latched.launch_then(
            move |latch| {
                started.fetch_add(1, Ordering::SeqCst);
                let _g = latch.lock();
                slow.apply(|v| {
                    std::thread::sleep(Duration::from_millis(100));
                    *v += 1;
                });
            },
            |()| {},
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while load(&started) < 10 {
        assert!(Instant::now() < deadline, "launched fibers did not start");
        // The launch_thens go out at this thread's next publish.
        let _ = catch_unwind(AssertUnwindSafe(|| slow.apply_then(|_| (), |()| ())));
        std::thread::sleep(Duration::from_millis(5));
    }
    rt.shutdown();
    assert_eq!(
        load(&drops),
        1,
        "the latched value dropped exactly once at shutdown"
    );
    // It waits for the launched fibers, and maybe for the last publishing `apply_then`s: either names it.
    let m = panic_message(catch_unwind(wait_pending).unwrap_err());
    let waited = m
        .strip_prefix("the trust runtime was shut down while `wait_pending` waited for ")
        .unwrap_or(&m);
    assert!(
        ["a `launch_then` fiber", "its trustee"].contains(&waited),
        "{m}"
    );
    drop(latched);
    assert_eq!(load(&drops), 1);
    println!("CHILD-OK");
}

/// `shutdown` from a fiber panics ("called on a worker"); from a continuation while another thread shuts down
/// too, and a third time, it returns; afterwards `clone`/`drop` do nothing, `try_unwrap` panics naming the
/// shutdown, `build()` is `AlreadyStarted`, and the value dropped once.
#[test]
fn shutdown_twice_concurrently_and_from_odd_places() {
    if !is_child() {
        return expect_child_ok("shutdown_twice_concurrently_and_from_odd_places", &[]);
    }
    let rt = quiet();
    let drops = Arc::new(AtomicUsize::new(0));
    let v = rt.trustee(1).entrust(CountsDrops(drops.clone()));
    let m = spawn(move || catch_unwind(|| rt.shutdown()).map_err(panic_message))
        .join()
        .unwrap();
    assert!(m.unwrap_err().contains("called on a worker"));
    v.apply_then(|_| (), move |()| rt.shutdown());
    let other = std::thread::spawn(move || rt.shutdown());
    // The other shutdown may come before the request is sent (it goes out in `wait_pending`).
    let w = catch_unwind(wait_pending).map_err(panic_message);
    let shut = "the trust runtime was shut down while `wait_pending` waited for its trustee";
    assert!(w == Ok(()) || w == Err(shut.to_string()), "{w:?}");
    other.join().expect("concurrent shutdown returns");
    rt.shutdown(); // a third time
    assert_eq!(load(&drops), 1);
    let c = v.clone();
    drop(c);
    let t = catch_unwind(AssertUnwindSafe(|| v.clone().try_unwrap().is_ok()));
    assert!(panic_message(t.unwrap_err()).starts_with("the trust runtime has been shut down"));
    drop(v);
    assert_eq!(load(&drops), 1);
    let b = Runtime::builder().workers(1).build();
    assert!(
        matches!(b, Err(trust_core::RuntimeError::AlreadyStarted)),
        "{b:?}"
    );
    println!("CHILD-OK");
}

/// "Also run by itself at process exit": properties whose destructors panic or delegate (`apply_then`,
/// `apply`, `clone`) dropped by the shutdown at exit; the process exits 0 and each destructor runs once.
#[test]
fn exit_without_shutdown_with_hostile_destructors() {
    const NAMES: [&str; 6] = ["plain0", "panic0", "deleg0", "plain1", "panic1", "deleg1"];
    if !is_child() {
        let out = run_in_child("exit_without_shutdown_with_hostile_destructors", &[]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success() && stdout.contains("CHILD-OK"),
            "child failed ({})\n{stdout}\n{stderr}",
            out.status
        );
        for name in NAMES {
            let ran = stderr.matches(&format!("DTOR-RAN {name}\n")).count();
            assert_eq!(ran, 1, "{name}'s destructor ran once at exit\n{stderr}");
        }
        return;
    }
    let rt = quiet();
    /// Prints a marker the parent counts when dropped; delegates to its handle, then panics if named so.
    struct Loud(&'static str, Option<Trust<u64>>);
    impl Drop for Loud {
        fn drop(&mut self) {
            // One write: the workers' destructors and panic messages interleave on stderr.
            let line = format!("DTOR-RAN {}\n", self.0);
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            if let Some(t) = self.1.take() {
                let c = t.clone();
                let _ = catch_unwind(AssertUnwindSafe(|| t.apply_then(|v| *v += 1, |()| ())));
                let _ = catch_unwind(AssertUnwindSafe(|| t.apply(|v| *v += 1)));
                drop(c);
            }
            if self.0.starts_with("panic") {
                panic!("Loud {} panics", self.0);
            }
        }
    }
    let other0 = rt.trustee(0).entrust(0u64);
    let other1 = rt.trustee(1).entrust(0u64);
    let mut keep = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let t = if name.starts_with("deleg") {
            Some(if i < 3 {
                other1.clone()
            } else {
                other0.clone()
            })
        } else {
            None
        };
        keep.push(rt.trustee(i / 3).entrust(Loud(name, t)));
    }
    // Some apply_thens in flight at exit too.
    for _ in 0..1000 {
        other0.apply_then(|v| *v += 1, |()| ());
    }
    std::mem::forget(keep);
    std::mem::forget((other0, other1));
    println!("CHILD-OK");
    // The test harness returns; the process exits; atexit runs shutdown.
}

/// "`build()` returns an error, never panics": each bad `TRUST_MAX_FIBER_STACKS` value (`0`, `-5`, empty,
/// `1e3`, too big) makes it return an error naming the variable and the value.
#[test]
fn bad_max_fiber_stacks_values_make_build_return_an_error() {
    if !is_child() {
        for value in ["0", "-5", "", "1e3", "99999999999999999999999"] {
            expect_child_ok(
                "bad_max_fiber_stacks_values_make_build_return_an_error",
                &[("TRUST_MAX_FIBER_STACKS", value)],
            );
        }
        return;
    }
    let value = std::env::var("TRUST_MAX_FIBER_STACKS").unwrap();
    let r = catch_unwind(|| Runtime::builder().workers(2).build().map(|_| ()));
    let e = r.map_err(panic_message).unwrap().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "TRUST_MAX_FIBER_STACKS must be a positive integer (the most fiber stacks alive at once), got \
             {value:?}; leave it unset for a limit that follows vm.max_map_count"
        )
    );
    println!("CHILD-OK");
}

/// "Past that, `spawn` panics *in the caller*, naming the limit ...; running fibers are unaffected", with a
/// `TRUST_MAX_FIBER_STACKS` above what `vm.max_map_count` allows: up to 100,000 spawns; a refusal names all
/// the live fibers and the sysctl, and every fiber then finishes.
#[test]
fn huge_max_fiber_stacks_then_spawn_until_the_os_refuses() {
    if !is_child() {
        return expect_child_ok(
            "huge_max_fiber_stacks_then_spawn_until_the_os_refuses",
            &[("TRUST_MAX_FIBER_STACKS", "1000000")],
        );
    }
    quiet();
    let open = Arc::new(AtomicBool::new(false));
    let mut fibers = Vec::new();
    let msg = loop {
        let o = open.clone();
        match catch_unwind(AssertUnwindSafe(|| {
            spawn(move || {
                while !o.load(Ordering::Acquire) {
                    trust_core::yield_now();
                }
                1u64
            })
        })) {
            Ok(f) => fibers.push(f),
            Err(p) => break panic_message(p),
        }
        if fibers.len() >= 100_000 {
            break String::new();
        }
    };
    let live = fibers.len();
    // A raised vm.max_map_count may allow all 100,000: then nothing is refused.
    if live < 100_000 {
        let head =
            format!("trust: cannot start a fiber: all {live} fiber stacks this process allows");
        assert!(msg.starts_with(&head), "{msg}");
        assert!(msg.contains("sudo sysctl -w vm.max_map_count="), "{msg}");
    }
    open.store(true, Ordering::Release);
    let n: u64 = fibers.into_iter().map(|f| f.join().unwrap()).sum();
    assert_eq!(n, live as u64);
    assert_eq!(rt().trustee(0).entrust(1u8).apply(|v| *v + 1), 2);
    assert_eq!(spawn(|| 5).join().unwrap(), 5);
    println!("CHILD-OK");
}

/// "Answers what was sent": shutdown once 1000 `apply_async` futures (from tokio) have sent their requests;
/// every one completes with its result, none hangs, and each closure runs and its result drops once.
#[test]
fn shutdown_with_apply_async_in_flight() {
    if !is_child() {
        return expect_child_ok("shutdown_with_apply_async_in_flight", &[]);
    }
    let rt = quiet();
    let v = rt.trustee(0).entrust(0u64);
    let results = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let tk = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (v, r, ran, sent) = (v.clone(), results.clone(), ran.clone(), sent.clone());
            tk.spawn(async move {
                let mut fut = Box::pin(v.apply_async(move |v| {
                    ran.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_micros(200));
                    *v += 1;
                    CountsDrops(r)
                }));
                let mut first = true;
                std::future::poll_fn(move |cx| {
                    let p = fut.as_mut().poll(cx);
                    if std::mem::take(&mut first) {
                        sent.fetch_add(1, Ordering::SeqCst); // the first poll sent the request
                    }
                    p
                })
                .await
            })
        })
        .collect();
    eventually("all 1000 requests sent", || load(&sent) == 1000);
    rt.shutdown();
    let (mut ok, mut failed, mut hung) = (0, 0, 0);
    tk.block_on(async {
        for t in tasks {
            match tokio::time::timeout(Duration::from_secs(if hung > 0 { 0 } else { 10 }), t).await
            {
                Ok(Ok(tok)) => {
                    drop(tok);
                    ok += 1;
                }
                Ok(Err(e)) => {
                    let m = panic_message(e.into_panic());
                    assert!(m.contains("shut down"), "{m}");
                    failed += 1;
                }
                Err(_) => hung += 1,
            }
        }
    });
    assert_eq!((ok, failed, hung), (1000, 0, 0));
    assert_eq!((load(&ran), load(&results)), (1000, 1000));
    println!("CHILD-OK");
}

/// "Answers what was sent", for one `apply_async` sent while the trustee runs a 300 ms closure: after
/// shutdown both the blocking `apply` and the future complete, and the future's closure ran once.
#[test]
fn shutdown_with_one_apply_async_waiting_behind_a_long_closure() {
    if !is_child() {
        return expect_child_ok(
            "shutdown_with_one_apply_async_waiting_behind_a_long_closure",
            &[],
        );
    }
    let rt = quiet();
    let v = rt.trustee(0).entrust(0u64);
    let v2 = v.clone();
    let started = Arc::new(AtomicBool::new(false));
    let st = started.clone();
    let busy = std::thread::spawn(move || {
        catch_unwind(AssertUnwindSafe(|| {
            v2.apply(move |_| {
                st.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(300));
            })
        }))
        .map_err(panic_message)
    });
    eventually("the long closure started", || {
        started.load(Ordering::SeqCst)
    });
    let tk = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r2 = ran.clone();
    let mut fut = Box::pin(v.apply_async(move |v| {
        r2.fetch_add(1, Ordering::SeqCst);
        *v += 1;
    }));
    // The first poll sends it.
    let first = fut
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
    assert!(first.is_pending());
    rt.shutdown();
    let got = tk.block_on(async { tokio::time::timeout(Duration::from_secs(5), fut).await });
    assert!(got.is_ok(), "the future hangs after shutdown");
    assert_eq!(busy.join().unwrap(), Ok(()));
    assert_eq!(load(&ran), 1);
    println!("CHILD-OK");
}

/// "Drops every value still entrusted exactly once", for properties owning the last handles of others (a
/// chain of 20 over 6 leaves, across trustees or on one): each of 26 values drops once, with the root handle
/// kept or forgotten; a normal drop of the same graph as a control.
#[test]
fn shutdown_drops_properties_that_own_the_last_handles_of_others() {
    if !is_child() {
        return expect_child_ok(
            "shutdown_drops_properties_that_own_the_last_handles_of_others",
            &[],
        );
    }
    let rt = quiet();
    /// A node of the graph: counts its drop, owns handles of the nodes below.
    struct Owner {
        _tok: CountsDrops,
        _held: Vec<Trust<Owner>>,
    }
    fn graph(rt: &'static Runtime, drops: &Arc<AtomicUsize>) -> Trust<Owner> {
        graph_on(rt, drops, |i| i % 2)
    }
    fn graph_on(
        rt: &'static Runtime,
        drops: &Arc<AtomicUsize>,
        on: fn(usize) -> usize,
    ) -> Trust<Owner> {
        // leaves on both trustees, a chain of 20 alternating trustees above them, a root.
        let mut below: Vec<Trust<Owner>> = (0..6)
            .map(|i| {
                rt.trustee(on(i)).entrust(Owner {
                    _tok: CountsDrops(drops.clone()),
                    _held: vec![],
                })
            })
            .collect();
        for i in 0..20 {
            let node = rt.trustee(on(i)).entrust(Owner {
                _tok: CountsDrops(drops.clone()),
                _held: std::mem::take(&mut below),
            });
            below = vec![node];
        }
        below.pop().unwrap()
    }
    // Control: dropped normally.
    let d1 = Arc::new(AtomicUsize::new(0));
    drop(graph(rt, &d1));
    eventually("the graph dropped", || load(&d1) >= 26);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(load(&d1), 26, "normal drop: each of 26 values once");
    // At shutdown, with the root handle kept (and with it forgotten).
    let d2 = Arc::new(AtomicUsize::new(0));
    let kept = graph(rt, &d2);
    let d3 = Arc::new(AtomicUsize::new(0));
    std::mem::forget(graph(rt, &d3));
    let d4 = Arc::new(AtomicUsize::new(0));
    std::mem::forget(graph_on(rt, &d4, |_| 0));
    let d5 = Arc::new(AtomicUsize::new(0));
    std::mem::forget(graph_on(rt, &d5, |_| 1));
    rt.shutdown();
    assert_eq!(
        [&d2, &d3, &d4, &d5].map(|d| load(d)),
        [26; 4],
        "shutdown: each of 26 values once"
    );
    drop(kept);
    assert_eq!(load(&d2), 26);
    println!("CHILD-OK");
}
