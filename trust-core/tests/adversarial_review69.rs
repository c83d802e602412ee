//! Review 69: a hostile look at the delegation runtime's promises that no earlier test held to account.
//!
//! - `apply_async` under strict hand-written executors (a `std::task::Wake` waker and no timed re-polling, so
//!   a lost wake-up is a hang caught by a deadline): a future moved to another thread between polls wakes its
//!   new waker; futures first polled inside a fiber or inside a delegated closure complete on a plain thread;
//!   400 tasks each polled only through its own waker, mixing blocking `apply`, `apply_then` + `wait_pending`
//!   and awaited futures in issue order; one parked future per thread, 48 sent at once (the relay's deferred
//!   wake-ups with nobody polling); continuations and late thread-local destructors that drive futures.
//! - Wakers that call back into the runtime (an inline `apply`, an `apply_then`, dropping the last handle)
//!   on the trustee's thread; wakers and results whose `wake`/`Drop` panic, on requests answered at once,
//!   deferred behind a launched fiber's latch, and dropped unrun at shutdown.
//! - Continuations on a plain thread that call `wait_pending` (nested: it waits for the others, and resumes
//!   a kept panic inside the continuation) and blocking `apply`; the local shortcut nested with a re-entrant
//!   apply; threads and fibers that exit keeping panics or continuations whose destructors panic; 100,000
//!   fibers ending with continuations in flight; the last handle dropped right behind a burst of unpublished
//!   `apply_then`s; closures on both trustees entrusting past the 256-registration queue to each other;
//!   clones, drops and entrusts aimed at a trustee stuck in a closure; `launch_then` continuation order.
//! - The runtime after `shutdown` (every call refuses and drops what it was given once), bad
//!   `TRUST_MAX_FIBER_STACKS` values, a bad `TRUST_WORKERS` ignored beside `workers(n)`.
//!
//! Findings, both fixed (the same root cause: the runtime dropped two pieces of user code in one unwind, although
//! `trustee/unwind.rs` says each value is dropped on its own; now `oneshot::Answering::answer` drops an unused waker
//! before it frees the node, and `job::pause_job`'s box and `oneshot::finish(.., false)` drop the job quietly before
//! what answers it):
//! - `a_result_and_a_waker_that_both_panic_when_dropped_are_contained`: an `apply_async` future dropped after its first
//!   poll, whose waker's destructor panics and whose result's destructor panics: when the trustee answers,
//!   `oneshot::Answering::answer` takes the waker out of the node, then `let_go` (now `lets_go_last`) -> `free` drops
//!   the node with the result, which panics; unwinding drops the taken waker, which panics again: the process aborted
//!   ("thread caused non-unwinding panic").
//! - `shutdown_drops_a_deferred_apply_async_with_both_hostile_contained`: at shutdown, an `apply_async` deferred behind
//!   a launched fiber's latch, whose capture panics when dropped and whose waker panics when woken: `Worker::close`
//!   drops the deferred box (`job::pause_job`) with `drop_quietly`, but that one box holds the job and its `Answering`;
//!   the capture's panic unwinds into `Answering::drop`, which wakes the waker, which panics: abort.
//!   `oneshot::finish(.., false)` (mail dropped unrun) had the same shape.
//!
//! Everything else held. Every test that could hang has a deadline; those that shut down the runtime or set
//! its environment run in a child process of their own.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

#[macro_use]
mod common;
use common::*;
use trust_core::{Latch, Runtime, RuntimeError, Trust, spawn, wait_pending};

const SHUT_DOWN: &str = "the trust runtime has been shut down";

/// A waker that counts its wakes and unparks the thread that will poll next.
struct Flag {
    woken: AtomicUsize,
    thread: thread::Thread,
}

impl Flag {
    fn new() -> Arc<Flag> {
        Arc::new(Flag {
            woken: AtomicUsize::new(0),
            thread: thread::current(),
        })
    }

    /// Parks until this waker was woken (no polling in between): fails with `what` after `secs` seconds.
    fn wait(&self, what: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.woken.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "lost wake-up: {what}");
            thread::park_timeout(Duration::from_millis(50));
        }
    }
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.woken.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// Polls `f` once with `waker`.
fn poll_once<F: Future + Unpin>(f: &mut F, waker: &Arc<Flag>) -> Poll<F::Output> {
    let waker = Waker::from(waker.clone());
    Pin::new(f).poll(&mut Context::from_waker(&waker))
}

/// Polls `f` to completion, polling again only when its waker was woken (a lost wake-up fails the test).
fn strict_block_on<F: Future>(f: F, what: &str) -> F::Output {
    let mut f = std::pin::pin!(f);
    loop {
        let flag = Flag::new();
        let waker = Waker::from(flag.clone());
        if let Poll::Ready(r) = f.as_mut().poll(&mut Context::from_waker(&waker)) {
            return r;
        }
        flag.wait(what, 30);
    }
}

/// An `apply_async` future polled first on one thread, then moved to another and polled there with a new
/// waker while its closure still blocks (on a std channel, on the trustee): the trustee's answer must wake the
/// latest waker, and the result comes back on the second thread. Another future, polled once and then moved
/// to a third thread and dropped there before the answer, has its result dropped exactly once, and the
/// trustee keeps serving.
#[test]
fn apply_async_moved_between_threads_wakes_the_latest_waker() {
    within(60, || {
        let t = rt().trustee(1).entrust(5u64);
        let drops = Arc::new(AtomicUsize::new(0));
        for round in 0..20u64 {
            let (gate_tx, gate_rx) = mpsc::channel::<()>();
            let mut fut = t.apply_async(move |v| {
                gate_rx
                    .recv_timeout(Duration::from_secs(20))
                    .expect("the gate opens");
                *v += 1;
                *v
            });
            thread::scope(|s| {
                let fut = s
                    .spawn(move || {
                        let first = Flag::new();
                        assert!(poll_once(&mut fut, &first).is_pending());
                        fut
                    })
                    .join()
                    .unwrap();
                let (polled_tx, polled_rx) = mpsc::channel::<()>();
                let b = s.spawn(move || {
                    let mut fut = fut;
                    let second = Flag::new();
                    if let Poll::Ready(r) = poll_once(&mut fut, &second) {
                        panic!("ready before the gate opened: {r}");
                    }
                    polled_tx.send(()).unwrap();
                    second.wait("the second thread's waker after the move", 30);
                    match poll_once(&mut fut, &second) {
                        Poll::Ready(r) => r,
                        Poll::Pending => panic!("woken, but still pending"),
                    }
                });
                polled_rx
                    .recv_timeout(Duration::from_secs(20))
                    .expect("the second thread polled");
                gate_tx.send(()).unwrap();
                assert_eq!(b.join().unwrap(), 6 + round);
            });

            // Polled once here (sent), moved to a third thread and dropped there while its closure blocks.
            let (gate_tx, gate_rx) = mpsc::channel::<()>();
            let d = drops.clone();
            let mut fut = t.apply_async(move |v| {
                gate_rx
                    .recv_timeout(Duration::from_secs(20))
                    .expect("the gate opens");
                *v += 100;
                CountsDrops(d)
            });
            assert!(poll_once(&mut fut, &Flag::new()).is_pending());
            thread::scope(|s| s.spawn(move || drop(fut)).join().unwrap());
            gate_tx.send(()).unwrap();
            // The dropped future's request went by the mailbox: not ordered with this blocking apply.
            eventually("the dropped future's closure ran", || {
                t.apply(|v| *v) == 106 + round
            });
            t.apply(|v| *v -= 100);
        }
        eventually("each dropped result dropped once", || load(&drops) == 20);
        thread::sleep(Duration::from_millis(20));
        assert_eq!(load(&drops), 20);
        assert_eq!(t.apply(|v| *v), 25);
    });
}

/// A task for [`many_strict_tasks_each_woken_only_by_its_own_waker`]: woken, it queues its index.
struct TaskWaker {
    index: usize,
    queue: Mutex<mpsc::Sender<usize>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        let _ = self.queue.lock().unwrap().send(self.index);
    }
}

/// 400 tasks on two executor threads (hand-written: a task is polled only after its own waker queued it),
/// each awaiting `apply_async`s on both trustees and mixing blocking `apply`, `apply_then` + `wait_pending`
/// in one task: every task completes (no wake-up is lost, including those the trustee defers to its relay),
/// each task's requests to its own log apply in issue order, and the shared counters are exact.
#[test]
fn many_strict_tasks_each_woken_only_by_its_own_waker() {
    within(120, || {
        let counters = [rt().trustee(0).entrust(0u64), rt().trustee(1).entrust(0u64)];
        let executors: Vec<_> = (0..2)
            .map(|e| {
                let counters = counters.clone();
                thread::spawn(move || run_tasks(e, counters))
            })
            .collect();
        for e in executors {
            e.join().unwrap();
        }
        assert_eq!(counters[0].apply(|c| *c), 2 * 200 * 2);
        assert_eq!(counters[1].apply(|c| *c), 2 * 200 * 2);
    });
}

fn run_tasks(executor: usize, counters: [Trust<u64>; 2]) {
    const TASKS: usize = 200;
    type Task = Pin<Box<dyn Future<Output = Vec<u32>>>>;
    let (tx, rx) = mpsc::channel::<usize>();
    let mut tasks: Vec<Option<Task>> = Vec::new();
    let mut wakers = Vec::new();
    for i in 0..TASKS {
        let counters = counters.clone();
        let log = rt().trustee((i + executor) % 2).entrust(Vec::<u32>::new());
        let task: Task = Box::pin(async move {
            log.apply(|l| l.push(1));
            let a = counters[0].apply_async(|c| {
                *c += 1;
                *c
            });
            let b = counters[1].apply_async(|c| {
                *c += 1;
                *c
            });
            let (a, b) = (a.await, b.await);
            assert!(a > 0 && b > 0);
            log.apply_async(|l| l.push(2)).await;
            log.apply_then(|l| l.push(3), |()| ());
            wait_pending();
            log.apply_async(|l| l.push(4)).await;
            counters[(i + 1) % 2].apply(|c| *c += 1);
            counters[i % 2].apply_async(|c| *c += 1).await;
            log.apply(|l| l.push(5));
            log.apply_async(std::mem::take).await
        });
        tasks.push(Some(task));
        wakers.push(Waker::from(Arc::new(TaskWaker {
            index: i,
            queue: Mutex::new(tx.clone()),
        })));
    }
    let mut left = TASKS;
    let poll = |i: usize, tasks: &mut Vec<Option<Task>>| -> usize {
        if let Some(task) = tasks[i].as_mut()
            && let Poll::Ready(log) = task.as_mut().poll(&mut Context::from_waker(&wakers[i]))
        {
            assert_eq!(log, [1, 2, 3, 4, 5], "task {i}: issue order");
            tasks[i] = None;
            return 1;
        }
        0
    };
    for i in 0..TASKS {
        left -= poll(i, &mut tasks);
    }
    while left > 0 {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(i) => left -= poll(i, &mut tasks),
            Err(_) => {
                let pending: Vec<usize> = (0..TASKS).filter(|&i| tasks[i].is_some()).collect();
                panic!("lost wake-up: executor {executor}: tasks {pending:?} never woken again");
            }
        }
    }
}

/// On a plain thread, a continuation that calls `wait_pending` waits for the thread's other requests issued
/// so far, to both trustees (their continuations run inside it), and a blocking `apply` from a continuation
/// works. The continuation runs inside a later `apply_then` of the loop (a plain thread runs continuations in
/// its calls), so "the others" are those issued before that call.
#[test]
fn wait_pending_and_apply_inside_a_continuation_on_a_plain_thread() {
    within(60, || {
        let t = rt().trustee(0).entrust(0u64);
        let u = rt().trustee(1).entrust(0u64);
        let done = Rc::new(Cell::new(0usize));
        let returned = Rc::new(Cell::new(0usize));
        let checked = Rc::new(Cell::new(false));
        let done_all = done.clone();
        for i in 0..2000u64 {
            let (done, returned2, checked, t2, u2) = (
                done_all.clone(),
                returned.clone(),
                checked.clone(),
                t.clone(),
                u.clone(),
            );
            t.apply_then(
                move |v| {
                    *v += 1;
                    *v
                },
                move |now| {
                    assert_eq!(now, i + 1, "issue order");
                    if i == 0 {
                        let issued = returned2.get();
                        wait_pending();
                        // Every continuation of a request issued before (but this one) ran inside.
                        assert!(
                            done.get() + 1 >= 2 * issued,
                            "nested wait_pending: {} continuations ran, {issued} pairs issued",
                            done.get()
                        );
                        // Issued so far: `issued` pairs, and perhaps this round's first or both (whose push
                        // ran this continuation) — all applied once `wait_pending` returns, nothing later.
                        let pairs = issued as u64..=issued as u64 + 1;
                        assert!(pairs.contains(&t2.apply(|v| *v)));
                        assert!(pairs.contains(&u2.apply(|v| *v)));
                        checked.set(true);
                    }
                    done.set(done.get() + 1);
                },
            );
            let done2 = done_all.clone();
            u.apply_then(move |v| *v += 1, move |()| done2.set(done2.get() + 1));
            returned.set(returned.get() + 1);
        }
        wait_pending();
        assert!(checked.get());
        assert_eq!(done.get(), 4000);
        assert_eq!((t.apply(|v| *v), u.apply(|v| *v)), (2000, 2000));
    });
}

/// Inside a closure on trustee 0, an `apply` to another property of trustee 0 runs inline; from inside that,
/// an `apply` back to the first property panics `re-entrant apply`; the panic reaches the caller; both
/// properties stay usable and every capture is dropped once.
#[test]
fn nested_local_shortcut_and_reentrant_apply() {
    within(60, || {
        let a = rt().trustee(0).entrust(1u64);
        let b = rt().trustee(0).entrust(10u64);
        let b2 = b.clone();
        assert_eq!(a.apply(move |x| *x + b2.apply(|y| *y)), 11);
        let drops = Arc::new(AtomicUsize::new(0));
        let (a3, b3, c) = (a.clone(), b.clone(), CountsDrops(drops.clone()));
        let e = catch_unwind(AssertUnwindSafe(|| {
            a.apply(move |x| {
                *x += 1;
                let _c = &c;
                b3.apply(move |y| {
                    *y += 1;
                    a3.apply(|_| ())
                })
            })
        }))
        .expect_err("a re-entrant apply panics");
        let m = panic_message(e);
        assert!(m.contains("re-entrant"), "{m}");
        assert_eq!(load(&drops), 1);
        assert_eq!(a.apply(|x| *x), 2);
        assert_eq!(b.apply(|y| *y), 11);
        let b4 = b.clone();
        assert_eq!(a.apply(move |x| *x + b4.apply(|y| *y)), 13);
    });
}

/// A thread exits with 100 `apply_then`s in flight whose results and continuation captures panic when
/// dropped (no `wait_pending`): every closure runs, each result and capture is dropped exactly once (run or
/// discarded), and the process survives with its trustees serving.
#[test]
fn thread_exits_with_continuations_whose_drops_panic() {
    in_child!("thread_exits_with_continuations_whose_drops_panic", 60);
    let t = rt().trustee(0).entrust(0u64);
    let (results, captures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    for _ in 0..5 {
        let (t2, r, c) = (t.clone(), results.clone(), captures.clone());
        let joined = thread::spawn(move || {
            for _ in 0..100 {
                let r = r.clone();
                let cap = PanicsOnDrop(c.clone());
                t2.apply_then(
                    move |v| {
                        *v += 1;
                        thread::sleep(Duration::from_micros(50));
                        PanicsOnDrop(r)
                    },
                    move |res| {
                        // One panic at a time: dropped together (a tuple), the second would panic while the
                        // first unwinds, and abort the process in this closure, not in the runtime. A slow
                        // client (AddressSanitizer) runs some continuations before the thread exits.
                        let _ = catch_unwind(AssertUnwindSafe(move || drop(res)));
                        drop(cap);
                    },
                );
            }
        })
        .join();
        // Whether the thread's join reports a panic is not promised; the counts are.
        let _ = joined;
    }
    eventually("every closure ran", || t.apply(|v| *v) == 500);
    eventually("every result dropped", || load(&results) == 500);
    eventually("every capture dropped", || load(&captures) == 500);
    thread::sleep(Duration::from_millis(50));
    assert_eq!((load(&results), load(&captures)), (500, 500));
    assert_eq!(rt().trustee(1).entrust(7u64).apply(|v| *v), 7);
    child_ok();
}

/// 100,000 fibers, each ending with an `apply_then` to the other trustee in flight (no `wait_pending`): every
/// closure runs and every continuation runs later on the scheduler.
#[test]
fn a_hundred_thousand_fibers_end_with_continuations_in_flight() {
    within(300, || {
        const N: usize = 100_000;
        let targets = [rt().trustee(0).entrust(0u64), rt().trustee(1).entrust(0u64)];
        let ran = Arc::new(AtomicUsize::new(0));
        let mut fibers = Vec::with_capacity(N);
        for _ in 0..N {
            let (targets, ran) = (targets.clone(), ran.clone());
            fibers.push(spawn(move || {
                let other = 1 - trust_core::local_trustee().index();
                targets[other].apply_then(
                    |v| {
                        *v += 1;
                        *v
                    },
                    move |_| {
                        ran.fetch_add(1, Ordering::SeqCst);
                    },
                );
            }));
        }
        for f in fibers {
            f.join().unwrap();
        }
        eventually("every continuation ran", || load(&ran) == N);
        assert_eq!(
            targets[0].apply(|v| *v) + targets[1].apply(|v| *v),
            N as u64
        );
    });
}

/// After `Runtime::shutdown`: `apply`, `apply_then`, `apply_with`, `apply_async`, `launch`, `launch_then`,
/// `entrust`, `spawn`, `try_unwrap`, `into_inner` each panic with the shutdown message and drop what they were
/// given exactly once, unrun; `clone` and `drop` do neither; the values were dropped once by the shutdown; a
/// second `shutdown` returns; `build` gives `AlreadyStarted`; metrics stand still.
#[test]
fn every_call_after_shutdown_refuses_and_drops_what_it_was_given() {
    in_child!(
        "every_call_after_shutdown_refuses_and_drops_what_it_was_given",
        60
    );
    let rt = quiet();
    let value_drops = Arc::new(AtomicUsize::new(0));
    let t = rt
        .trustee(0)
        .entrust((0u64, CountsDrops(value_drops.clone())));
    let latch = rt.trustee(1).entrust(Latch::new(0u64));
    let spare = t.clone();
    assert_eq!(t.apply(|v| v.0), 0);
    rt.shutdown();
    assert_eq!(load(&value_drops), 1, "shutdown drops the value once");

    let given = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicBool::new(false));
    let refused = |what: &str, f: &mut dyn FnMut()| {
        let before = load(&given);
        let m = panic_message(catch_unwind(AssertUnwindSafe(f)).expect_err(what));
        assert!(m.contains(SHUT_DOWN), "{what}: {m}");
        assert!(!ran.load(Ordering::SeqCst), "{what}: ran");
        before
    };
    let g = || CountsDrops(given.clone());
    let r = || ran.clone();

    let b = refused("apply", &mut || {
        let (c, r) = (g(), r());
        t.apply(move |_| {
            let _c = c;
            r.store(true, Ordering::SeqCst);
        });
    });
    assert_eq!(load(&given), b + 1, "apply: closure dropped once");

    let b = refused("apply_then", &mut || {
        let (c, d, r1, r2) = (g(), g(), r(), r());
        t.apply_then(
            move |_| {
                let _c = c;
                r1.store(true, Ordering::SeqCst);
            },
            move |()| {
                let _d = d;
                r2.store(true, Ordering::SeqCst);
            },
        );
    });
    assert_eq!(load(&given), b + 2, "apply_then: closure and continuation");

    let b = refused("apply_with", &mut || {
        let (c, r) = (g(), r());
        t.apply_with(
            move |_, a: CountsDrops| {
                let _a = a;
                r.store(true, Ordering::SeqCst);
            },
            c,
        );
    });
    assert_eq!(load(&given), b + 1, "apply_with: argument");

    let b = refused("apply_async", &mut || {
        let (c, r) = (g(), r());
        block_on(t.apply_async(move |_| {
            let _c = c;
            r.store(true, Ordering::SeqCst);
        }));
    });
    assert_eq!(load(&given), b + 1, "apply_async: closure");

    let b = refused("launch", &mut || {
        let (c, r) = (g(), r());
        latch.launch(move |_| {
            let _c = c;
            r.store(true, Ordering::SeqCst);
        });
    });
    assert_eq!(load(&given), b + 1, "launch: closure");

    let b = refused("launch_then", &mut || {
        let (c, d, r1, r2) = (g(), g(), r(), r());
        latch.launch_then(
            move |_| {
                let _c = c;
                r1.store(true, Ordering::SeqCst);
            },
            move |()| {
                let _d = d;
                r2.store(true, Ordering::SeqCst);
            },
        );
    });
    assert_eq!(load(&given), b + 2, "launch_then: closure and continuation");

    let b = refused("entrust", &mut || {
        let _ = rt.trustee(1).entrust(g());
    });
    assert_eq!(load(&given), b + 1, "entrust: the value");

    let b = refused("spawn", &mut || {
        let (c, r) = (g(), r());
        let _ = spawn(move || {
            let _c = c;
            r.store(true, Ordering::SeqCst);
        });
    });
    assert_eq!(load(&given), b + 1, "spawn: closure");

    let b = refused("try_unwrap", &mut || {
        let _ = spare.clone().try_unwrap();
    });
    assert_eq!(load(&given), b);
    refused("into_inner", &mut || {
        let _ = spare.clone().into_inner();
    });

    // `clone` and `drop` never block and never panic; the value is not dropped again.
    within(10, {
        let t = t.clone();
        move || {
            let clones: Vec<_> = (0..1000).map(|_| t.clone()).collect();
            drop(clones);
            drop(t);
        }
    });
    drop(spare);
    drop(t);
    drop(latch);
    assert_eq!(load(&value_drops), 1);
    assert_eq!(load(&given), 10);

    // A second shutdown returns; a new runtime cannot start; metrics stand still.
    let m1 = rt.metrics();
    within(10, || trust_core::runtime().shutdown());
    assert!(matches!(
        Runtime::builder().workers(2).build(),
        Err(RuntimeError::AlreadyStarted)
    ));
    thread::sleep(Duration::from_millis(50));
    let m2 = rt.metrics();
    for (a, b) in m1.iter().zip(&m2) {
        assert_eq!(
            (a.requests, a.batches, a.parks, a.busy, a.idle),
            (b.requests, b.batches, b.parks, b.busy, b.idle)
        );
    }
    child_ok();
}

/// `TRUST_MAX_FIBER_STACKS` that is not a positive integer (zero, words, empty, negative, a fraction, too
/// large for a `usize`): `build` returns `BadMaxFiberStacksVar` with the exact value, and never panics.
#[test]
fn bad_max_fiber_stacks_values_are_errors_with_the_exact_value() {
    if is_child() {
        let want = std::env::var("TRUST_MAX_FIBER_STACKS").unwrap();
        let result = catch_unwind(|| Runtime::builder().workers(2).build().map(|_| ()));
        match result {
            Ok(Err(RuntimeError::BadMaxFiberStacksVar { value })) => assert_eq!(value, want),
            Ok(other) => panic!("{want:?}: expected BadMaxFiberStacksVar, got {other:?}"),
            Err(p) => panic!("{want:?}: build panicked: {}", panic_message(p)),
        }
        child_ok();
        return;
    }
    for value in ["0", "abc", "", "-1", "1.5", "99999999999999999999999"] {
        child(
            "bad_max_fiber_stacks_values_are_errors_with_the_exact_value",
            &[("TRUST_MAX_FIBER_STACKS", value)],
            30,
        );
    }
}

/// `TRUST_WORKERS` is read only when `workers(n)` is not given: a bad value is ignored then.
#[test]
fn bad_trust_workers_is_ignored_when_workers_is_given() {
    if !in_child(
        "bad_trust_workers_is_ignored_when_workers_is_given",
        &[("TRUST_WORKERS", "abc")],
        30,
    ) {
        return;
    }
    assert_eq!(std::env::var("TRUST_WORKERS").as_deref(), Ok("abc"));
    assert_eq!(rt().workers(), 2);
    assert_eq!(rt().trustee(1).entrust(3u64).apply(|v| *v + 1), 4);
    child_ok();
}

/// Counted and checked: a value that must be dropped on trustee `on`'s worker thread.
struct DroppedOn {
    on: usize,
    drops: Arc<AtomicUsize>,
    wrong_thread: Arc<AtomicUsize>,
}

impl Drop for DroppedOn {
    fn drop(&mut self) {
        let here = thread::current().name().map(str::to_owned);
        if here.as_deref() != Some(&format!("trust-worker-{}", self.on)) {
            self.wrong_thread.fetch_add(1, Ordering::SeqCst);
        }
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Closures on both trustees at once, each entrusting 1,000 values to the *other* trustee (past the 256 queued
/// registrations after which an `entrust` waits) while that trustee is busy in its own such closure, which
/// answers nothing until it is done: "a delegated closure cannot wait for good: one that answers nothing for
/// 2 ms is not waited for again", so both finish; every value is registered, usable, and dropped exactly once
/// on its trustee.
#[test]
fn closures_on_both_trustees_entrust_past_the_queue_to_each_other() {
    within(120, || {
        const N: usize = 1000;
        let drops = Arc::new(AtomicUsize::new(0));
        let wrong = Arc::new(AtomicUsize::new(0));
        let homes = [rt().trustee(0).entrust(()), rt().trustee(1).entrust(())];
        let (ready_tx, ready_rx) = mpsc::channel::<usize>();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let callers: Vec<_> = (0..2)
            .map(|me| {
                let home = homes[me].clone();
                let (drops, wrong, ready_tx, barrier) = (
                    drops.clone(),
                    wrong.clone(),
                    ready_tx.clone(),
                    barrier.clone(),
                );
                thread::spawn(move || {
                    home.apply(move |_| {
                        // Both closures run at once: neither trustee answers until both are done.
                        barrier.wait();
                        let other = rt().trustee(1 - me);
                        let values: Vec<Trust<DroppedOn>> = (0..N)
                            .map(|_| {
                                other.entrust(DroppedOn {
                                    on: 1 - me,
                                    drops: drops.clone(),
                                    wrong_thread: wrong.clone(),
                                })
                            })
                            .collect();
                        ready_tx.send(me).unwrap();
                        values
                    })
                })
            })
            .collect();
        for _ in 0..2 {
            ready_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("a closure entrusting to a busy trustee waited for good");
        }
        let values: Vec<Vec<Trust<DroppedOn>>> =
            callers.into_iter().map(|c| c.join().unwrap()).collect();
        for (me, vs) in values.iter().enumerate() {
            for v in vs.iter().step_by(97) {
                assert_eq!(v.apply(|d| d.on), 1 - me);
            }
        }
        assert_eq!(load(&drops), 0);
        drop(values);
        eventually("every value dropped", || load(&drops) == 2 * N);
        thread::sleep(Duration::from_millis(20));
        assert_eq!(load(&drops), 2 * N);
        assert_eq!(load(&wrong), 0, "values dropped off their trustee");
    });
}

/// A leaked handle, so that a future borrowing it can move anywhere.
fn leaked(on: usize, v: u64) -> &'static Trust<u64> {
    Box::leak(Box::new(rt().trustee(on).entrust(v)))
}

/// An `apply_async` future first polled inside a fiber on worker 0 (to trustee 1: sent), then moved to a
/// plain thread and completed there with a new waker; and one first polled inside a delegated closure on
/// trustee 0 (to trustee 1), handed back as the closure's result and completed by the caller.
#[test]
fn apply_async_first_polled_on_a_worker_completes_on_a_plain_thread() {
    within(60, || {
        let t = leaked(1, 0);
        for round in 0..50u64 {
            let (gate_tx, gate_rx) = mpsc::channel::<()>();
            let mut fut = on_worker(0, move || {
                let mut fut = t.apply_async(move |v| {
                    gate_rx.recv_timeout(Duration::from_secs(20)).unwrap();
                    *v += 1;
                    *v
                });
                assert!(poll_once(&mut fut, &Flag::new()).is_pending());
                fut
            });
            let flag = Flag::new();
            assert!(poll_once(&mut fut, &flag).is_pending());
            gate_tx.send(()).unwrap();
            flag.wait("a future first polled in a fiber, moved to a thread", 30);
            assert_eq!(poll_once(&mut fut, &flag), Poll::Ready(2 * round + 1));

            let home = rt().trustee(0).entrust(());
            let (gate_tx, gate_rx) = mpsc::channel::<()>();
            let mut fut = home.apply(move |_| {
                let mut fut = t.apply_async(move |v| {
                    gate_rx.recv_timeout(Duration::from_secs(20)).unwrap();
                    *v += 1;
                    *v
                });
                assert!(poll_once(&mut fut, &Flag::new()).is_pending());
                fut
            });
            let flag = Flag::new();
            assert!(poll_once(&mut fut, &flag).is_pending());
            gate_tx.send(()).unwrap();
            flag.wait(
                "a future first polled in a delegated closure, moved out",
                30,
            );
            assert_eq!(poll_once(&mut fut, &flag), Poll::Ready(2 * round + 2));
        }
    });
}

/// Runs `f` in a fiber on worker `w` (launched on a latch of trustee `w`: other tests spawn meanwhile, so
/// `spawn`'s round-robin cannot be predicted) and returns its result.
fn on_worker<R: Send + 'static>(w: usize, f: impl FnOnce() -> R + Send + 'static) -> R {
    rt().trustee(w).entrust(Latch::new(())).launch(move |_| {
        assert_eq!(trust_core::local_trustee().index(), w);
        f()
    })
}

/// A waker that holds a handle: woken (on the trustee's thread), it applies to its own handle's property on
/// that same trustee (inline), sends an `apply_then` to the other trustee, and then drops its handle,
/// possibly the last one.
struct Meddling {
    own: Mutex<Option<Trust<(u64, DroppedOn)>>>,
    other: Trust<u64>,
    outcome: Mutex<Vec<String>>,
    woken: AtomicUsize,
}

impl Wake for Meddling {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.fetch_add(1, Ordering::SeqCst);
        let own = self.own.lock().unwrap().take();
        let mut outcome = Vec::new();
        if let Some(own) = own {
            match catch_unwind(AssertUnwindSafe(|| {
                own.apply(|v| {
                    v.0 += 1000;
                    v.0
                })
            })) {
                Ok(v) => outcome.push(format!("apply {v}")),
                Err(p) => outcome.push(format!("apply panicked: {}", panic_message(p))),
            }
            self.other.apply_then(|v| *v += 1, |()| ());
            drop(own);
        }
        self.outcome.lock().unwrap().extend(outcome);
    }
}

/// The waker of an `apply_async` future holds a clone of the value's handle; the future is dropped after its
/// first poll and so is every other handle, so the waker's is the last. Woken on the trustee, the waker applies
/// to the value (on its own trustee: inline), issues an `apply_then` to the other trustee, and drops the last
/// handle: the value is dropped exactly once, on its trustee; the `apply_then` runs; the trustee keeps serving.
#[test]
fn a_waker_that_delegates_and_drops_the_last_handle_on_the_trustee() {
    within(60, || {
        let drops = Arc::new(AtomicUsize::new(0));
        let wrong = Arc::new(AtomicUsize::new(0));
        let other = rt().trustee(1).entrust(0u64);
        for round in 0..100usize {
            let t = rt().trustee(0).entrust((
                0u64,
                DroppedOn {
                    on: 0,
                    drops: drops.clone(),
                    wrong_thread: wrong.clone(),
                },
            ));
            let waker = Arc::new(Meddling {
                own: Mutex::new(Some(t.clone())),
                other: other.clone(),
                outcome: Mutex::new(Vec::new()),
                woken: AtomicUsize::new(0),
            });
            let (gate_tx, gate_rx) = mpsc::channel::<()>();
            let mut fut = t.apply_async(move |v| {
                gate_rx.recv_timeout(Duration::from_secs(20)).unwrap();
                v.0 += 1;
                v.0
            });
            let w = Waker::from(waker.clone());
            let keep = round % 2 == 0;
            assert!(
                Pin::new(&mut fut)
                    .poll(&mut Context::from_waker(&w))
                    .is_pending()
            );
            drop(w);
            if round % 3 == 2 {
                // Everything but the request's own clone of the waker goes first: the last handle is the
                // waker's, dropped wherever the runtime lets go of the waker (on the trustee, say).
                drop(fut);
                drop(t);
                drop(waker);
                gate_tx.send(()).unwrap();
                eventually("the value dropped", || load(&drops) == round + 1);
                continue;
            }
            gate_tx.send(()).unwrap();
            if keep {
                // Kept: woken, then polled to completion.
                let deadline = Instant::now() + Duration::from_secs(30);
                while waker.woken.load(Ordering::SeqCst) == 0 {
                    assert!(Instant::now() < deadline, "lost wake-up (round {round})");
                    thread::sleep(Duration::from_millis(1));
                }
                let w = Waker::noop();
                assert_eq!(
                    Pin::new(&mut fut).poll(&mut Context::from_waker(w)),
                    Poll::Ready(1)
                );
            }
            drop(fut);
            drop(t);
            if keep {
                // Woken (on the trustee), it applied inline there and dropped its handle.
                eventually("the waker's work done", || {
                    !waker.outcome.lock().unwrap().is_empty()
                });
                assert_eq!(*waker.outcome.lock().unwrap(), ["apply 1001"]);
            } else {
                // The trustee may wake it once the closure has run (or not: the future is gone).
                eventually("the closure ran", || {
                    waker.woken.load(Ordering::SeqCst) == 1 || load(&drops) == round
                });
            }
            drop(waker);
            eventually("the value dropped", || load(&drops) == round + 1);
        }
        thread::sleep(Duration::from_millis(20));
        assert_eq!(load(&drops), 100);
        assert_eq!(load(&wrong), 0, "dropped off its trustee");
        let applied = other.apply(|v| *v);
        assert!(applied <= 100, "{applied}");
        assert_eq!(rt().trustee(0).entrust(9u64).apply(|v| *v), 9);
    });
}

/// A thread keeps a panic for its `wait_pending` (a closure's `panic_any` with a payload whose destructor
/// panics too), and exits without calling it; so does a fiber. The payload is dropped exactly once wherever
/// the runtime lets go of it, its second panic contained: the process survives and both trustees serve.
#[test]
fn a_thread_and_a_fiber_exit_keeping_a_panic_whose_payload_panics_when_dropped() {
    in_child!(
        "a_thread_and_a_fiber_exit_keeping_a_panic_whose_payload_panics_when_dropped",
        60
    );
    let t = rt().trustee(0).entrust(0u64);
    let payloads = Arc::new(AtomicUsize::new(0));
    for round in 0..10 {
        let (t2, p) = (t.clone(), payloads.clone());
        let joined = thread::spawn(move || {
            t2.apply_then(
                move |_| -> () { std::panic::panic_any(PanicsOnDrop(p)) },
                |()| unreachable!("the closure panicked"),
            );
            // A blocking call: the answer (the panic) comes in, is kept for `wait_pending`; none follows.
            t2.apply(|v| *v += 1);
        })
        .join();
        assert!(joined.is_ok(), "round {round}: the thread itself panicked");
        eventually("the thread's kept payload dropped", || {
            load(&payloads) == round + 1
        });
    }
    for round in 0..10 {
        let (t2, p) = (t.clone(), payloads.clone());
        let fiber = spawn(move || {
            t2.apply_then(
                move |_| -> () { std::panic::panic_any(PanicsOnDrop(p)) },
                |()| unreachable!("the closure panicked"),
            );
            t2.apply(|v| *v += 1);
        });
        assert!(fiber.join().is_ok(), "round {round}: the fiber panicked");
        eventually("the fiber's kept payload dropped", || {
            load(&payloads) == 10 + round + 1
        });
    }
    thread::sleep(Duration::from_millis(20));
    assert_eq!(load(&payloads), 20);
    assert_eq!(t.apply(|v| *v), 20);
    assert_eq!(rt().trustee(1).entrust(4u64).apply(|v| *v), 4);
    child_ok();
}

/// `wait_pending` nested in a continuation on a plain thread resumes the panic kept so far (a closure's)
/// there, inside the continuation; that continuation's panic is then kept in turn: the outer `wait_pending`
/// resumes the same payload once, every other continuation ran, and the next `wait_pending` returns.
#[test]
fn a_nested_wait_pending_resumes_a_kept_panic_inside_a_continuation() {
    within(60, || {
        let t = rt().trustee(1).entrust(0u64);
        let ran = Rc::new(Cell::new(0));
        let nested = Rc::new(Cell::new(String::new()));
        t.apply_then(|_| -> () { panic!("one") }, |()| unreachable!());
        let (r, n) = (ran.clone(), nested.clone());
        t.apply_then(
            |v| *v += 1,
            move |()| {
                r.set(r.get() + 1);
                // The first request's panic is kept by now (answers come in order).
                let caught = catch_unwind(wait_pending).map_err(panic_message);
                n.set(format!("{caught:?}"));
                if let Err(m) = caught {
                    std::panic::resume_unwind(Box::new(m));
                }
            },
        );
        for _ in 0..100 {
            let r = ran.clone();
            t.apply_then(|v| *v += 1, move |()| r.set(r.get() + 1));
        }
        let outer = catch_unwind(AssertUnwindSafe(wait_pending)).map_err(panic_message);
        assert_eq!(outer, Err("one".to_string()), "nested: {}", nested.take());
        assert_eq!(nested.take(), r#"Err("one")"#);
        assert_eq!(ran.get(), 101);
        wait_pending();
        assert_eq!(t.apply(|v| *v), 101);
    });
}

const MAGIC: u64 = 0x0BAD_F00D_DEAD_BEEF;

/// A value that poisons itself as it is dropped, and counts closures that see it dropped.
struct Live {
    magic: u64,
    applied: u64,
    drops: Arc<AtomicUsize>,
}

impl Drop for Live {
    fn drop(&mut self) {
        assert_eq!(self.magic, MAGIC, "dropped twice");
        self.magic = 0;
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// The last handle is dropped right behind a burst of `apply_then`s on it (most not yet published: a thread
/// publishes 48 at a time; the drop itself may go by the count mail when the slot is busy), from a plain
/// thread, from a fiber on each worker, and from a delegated closure on each trustee: every closure runs on the
/// live value, all before its drop, and it is dropped exactly once.
#[test]
fn the_last_drop_right_behind_a_burst_of_apply_thens_waits_for_them() {
    within(120, || {
        let drops = Arc::new(AtomicUsize::new(0));
        let bad = Arc::new(AtomicUsize::new(0));
        let applied = Arc::new(AtomicUsize::new(0));
        let burst = |t: Trust<Live>, n: usize, bad: Arc<AtomicUsize>, applied: Arc<AtomicUsize>| {
            for _ in 0..n {
                let (bad, applied) = (bad.clone(), applied.clone());
                t.apply_then(
                    move |v| {
                        if v.magic != MAGIC {
                            bad.fetch_add(1, Ordering::SeqCst);
                        }
                        v.applied += 1;
                        applied.fetch_add(1, Ordering::SeqCst);
                    },
                    |()| (),
                );
            }
            drop(t);
        };
        let mut expected = 0;
        for round in 0..40 {
            let on = round % 2;
            let n = [1, 47, 48, 49, 97, 500][round % 6];
            let t = rt().trustee(on).entrust(Live {
                magic: MAGIC,
                applied: 0,
                drops: drops.clone(),
            });
            let (b, a) = (bad.clone(), applied.clone());
            match (round / 2) % 4 {
                0 => thread::spawn(move || burst(t, n, b, a)).join().unwrap(),
                1 => on_worker(0, move || burst(t, n, b, a)),
                2 => on_worker(1, move || burst(t, n, b, a)),
                _ => {
                    let home = rt().trustee(round / 2 % 2).entrust(());
                    home.apply(move |_| burst(t, n, b, a));
                }
            }
            expected += n;
            eventually("every closure ran and the value was dropped", || {
                load(&applied) == expected && load(&drops) == round + 1
            });
        }
        thread::sleep(Duration::from_millis(20));
        assert_eq!(load(&bad), 0, "closures ran on a dropped value");
        assert_eq!(load(&drops), 40);
    });
}

/// Futures awaited one after another apply in that order, under the strict executor (woken only by the
/// trustee): 1,000 futures alternating between the trustees, each appending to one log, and a blocking
/// `apply` and an `apply_then` + `wait_pending` between every tenth, all in one task.
#[test]
fn futures_awaited_in_turn_apply_in_turn_under_a_strict_executor() {
    within(120, || {
        let log = rt().trustee(0).entrust(Vec::<u32>::new());
        let other = rt().trustee(1).entrust(0u64);
        let log2 = log.clone();
        let n = strict_block_on(
            async move {
                for i in 0..1000u32 {
                    if i % 2 == 0 {
                        log2.apply_async(move |l| l.push(i)).await;
                    } else {
                        let l2 = log2.clone();
                        other
                            .apply_async(move |o| {
                                *o += 1;
                                l2.apply_then(move |l| l.push(i), |()| ());
                            })
                            .await;
                        // Issued from inside a closure on trustee 1: ordered only by this wait.
                        log2.apply(|_| ());
                    }
                    if i % 10 == 9 {
                        log2.apply(|_| ());
                        other.apply_then(|o| *o += 0, |()| ());
                        wait_pending();
                    }
                }
                other.apply(|o| *o)
            },
            "sequential futures",
        );
        assert_eq!(n, 500);
        let got = log.apply(|l| l.clone());
        assert_eq!(got.len(), 1000);
        let evens: Vec<u32> = got.iter().copied().filter(|i| i % 2 == 0).collect();
        assert_eq!(
            evens,
            (0..1000).step_by(2).collect::<Vec<_>>(),
            "issue order"
        );
    });
}

/// Continuations on a plain thread (run inside its later `apply_then`s and `wait_pending`) each drive an
/// `apply_async` to completion with the strict executor, and issue more `apply_then`s: the client context is
/// re-entered from inside a continuation. Every continuation and every future completes exactly once.
#[test]
fn continuations_that_block_on_apply_async_futures() {
    within(120, || {
        let t = rt().trustee(0).entrust(0u64);
        let u = rt().trustee(1).entrust(0u64);
        let ran = Rc::new(Cell::new(0u64));
        let chained = Rc::new(Cell::new(0u64));
        for i in 0..300u64 {
            let (u2, ran, chained) = (u.clone(), ran.clone(), chained.clone());
            t.apply_then(
                move |v| {
                    *v += 1;
                    *v
                },
                move |now| {
                    assert_eq!(now, i + 1, "issue order");
                    let got = strict_block_on(
                        u2.apply_async(move |x| {
                            *x += 1;
                            *x
                        }),
                        "a future driven inside a continuation",
                    );
                    // The earlier continuations' futures (all applied) and their `apply_then`s (some
                    // perhaps not yet), then this one.
                    assert!((i + 1..=2 * i + 1).contains(&got), "{got} at {i}");
                    let chained = chained.clone();
                    u2.apply_then(|x| *x += 1, move |()| chained.set(chained.get() + 1));
                    ran.set(ran.get() + 1);
                },
            );
        }
        wait_pending();
        assert_eq!((ran.get(), chained.get()), (300, 300));
        assert_eq!((t.apply(|v| *v), u.apply(|v| *v)), (300, 600));
    });
}

/// A thread-local registered before the runtime's client context on that thread (so destroyed after it)
/// whose destructor drives `apply_async` futures, blocking `apply`s and `apply_then`s + `wait_pending`: each
/// completes with its result, the thread exits, and the counts are exact.
#[test]
fn a_late_thread_local_destructor_drives_apply_async() {
    type Report = mpsc::Sender<Result<u64, String>>;
    struct Late(Option<(Trust<u64>, Report)>);
    impl Drop for Late {
        fn drop(&mut self) {
            let (t, tx) = self.0.take().unwrap();
            let r = catch_unwind(AssertUnwindSafe(|| {
                let a = strict_block_on(
                    t.apply_async(|v| {
                        *v += 1;
                        *v
                    }),
                    "apply_async in a late destructor",
                );
                let b = t.apply(|v| {
                    *v += 10;
                    *v
                });
                t.apply_then(|v| *v += 100, |()| ());
                wait_pending();
                let c = strict_block_on(t.apply_async(|v| *v), "second future");
                a + b + c
            }))
            .map_err(panic_message);
            let _ = tx.send(r);
        }
    }
    thread_local! {
        static LATE: std::cell::RefCell<Late> = const { std::cell::RefCell::new(Late(None)) };
    }
    within(60, || {
        for on in [0, 1] {
            let t = rt().trustee(on).entrust(0u64);
            let (tx, rx) = mpsc::channel();
            let t2 = t.clone();
            thread::spawn(move || {
                // Registered first: destroyed after the runtime's thread-locals.
                LATE.with(|l| l.borrow_mut().0 = Some((t2.clone(), tx)));
                t2.apply(|v| *v += 0);
                t2.apply_then(|v| *v += 0, |()| ());
            })
            .join()
            .unwrap();
            let r = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the destructor reported");
            assert_eq!(r, Ok(1 + 11 + 111));
            assert_eq!(t.apply(|v| *v), 111);
        }
    });
}

/// `launch_then`'s continuations "run in the order their fibers finish": three fibers launched in turn from a
/// plain thread (and from a fiber on the other worker) finish in reverse order (each waits, yielding, until
/// the later ones have recorded their end); the continuations run in that reverse order.
#[test]
fn launch_then_continuations_run_in_the_order_the_fibers_finish() {
    within(60, || {
        let run = || {
            let latch = rt().trustee(0).entrust(Latch::new(Vec::<usize>::new()));
            let order = Rc::new(std::cell::RefCell::new(Vec::new()));
            for i in 0..3usize {
                let order = order.clone();
                latch.launch_then(
                    move |l| {
                        let deadline = Instant::now() + Duration::from_secs(20);
                        loop {
                            {
                                let mut g = l.lock();
                                if g.len() == 2 - i {
                                    g.push(i);
                                    break;
                                }
                            }
                            assert!(Instant::now() < deadline, "fiber {i} never got its turn");
                            trust_core::yield_now();
                        }
                        i
                    },
                    move |i| order.borrow_mut().push(i),
                );
            }
            wait_pending();
            assert_eq!(latch.apply(|l| l.get_mut().clone()), [2, 1, 0]);
            order.take()
        };
        assert_eq!(run(), [2, 1, 0], "from a plain thread");
        assert_eq!(on_worker(1, run), [2, 1, 0], "from a fiber");
    });
}

/// Clones, drops (the last handle of another value among them) and entrusts (fewer than 256) aimed at a
/// trustee stuck in a closure that waits on a std channel: from a thread that never made a call, from a thread
/// with a channel there, from a fiber and from a closure on the other trustee, all of them finish while the
/// trustee is still stuck ("never block"); once it is free, every count is right.
#[test]
fn clones_drops_and_entrusts_aimed_at_a_stuck_trustee_never_wait() {
    within(120, || {
        let drops = Arc::new(AtomicUsize::new(0));
        let value = rt().trustee(0).entrust(7u64);
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let (stuck_tx, stuck_rx) = mpsc::channel::<()>();
        let blocker = {
            let value = value.clone();
            thread::spawn(move || {
                value.apply(move |_| {
                    stuck_tx.send(()).unwrap();
                    gate_rx.recv_timeout(Duration::from_secs(60)).unwrap();
                })
            })
        };
        stuck_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        let storm = {
            let drops = drops.clone();
            move |value: Trust<u64>| -> Vec<Trust<CountsDrops>> {
                let clones: Vec<_> = (0..10_000).map(|_| value.clone()).collect();
                drop(clones);
                let extra = rt().trustee(0).entrust(CountsDrops(drops.clone()));
                drop(extra);
                (0..50)
                    .map(|_| rt().trustee(0).entrust(CountsDrops(drops.clone())))
                    .collect()
            }
        };
        let (done_tx, done_rx) = mpsc::channel::<(&str, Vec<Trust<CountsDrops>>)>();
        let fresh = {
            let (v, s, tx) = (value.clone(), storm.clone(), done_tx.clone());
            thread::spawn(move || tx.send(("fresh thread", s(v))).unwrap())
        };
        let known = {
            let (v, s, tx) = (value.clone(), storm.clone(), done_tx.clone());
            thread::spawn(move || {
                v.apply_then(|_| (), |()| ()); // a channel to trustee 0, a request queued behind the stuck one
                tx.send(("thread with a channel", s(v))).unwrap()
            })
        };
        let fiber = {
            let (v, s, tx) = (value.clone(), storm.clone(), done_tx.clone());
            let home = rt().trustee(1).entrust(Latch::new(()));
            thread::spawn(move || home.launch(move |_| tx.send(("fiber", s(v))).unwrap()))
        };
        let closure = {
            let (v, s, tx) = (value.clone(), storm.clone(), done_tx.clone());
            let home = rt().trustee(1).entrust(());
            thread::spawn(move || home.apply(move |_| tx.send(("closure", s(v))).unwrap()))
        };
        let mut kept = Vec::new();
        for _ in 0..4 {
            let (who, vs) = done_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("a clone, drop or entrust waited for the stuck trustee");
            kept.push((who, vs));
        }
        gate_tx.send(()).unwrap();
        blocker.join().unwrap();
        for h in [fresh, known, fiber, closure] {
            h.join().unwrap();
        }
        eventually("the four dropped values", || load(&drops) == 4);
        for (_, vs) in &kept {
            assert_eq!(vs.len(), 50);
            for v in vs.iter().step_by(7) {
                v.apply(|_| ());
            }
        }
        assert_eq!(load(&drops), 4);
        drop(kept);
        eventually("every value dropped", || load(&drops) == 4 + 200);
        let v = value
            .try_unwrap()
            .expect("the last handle: every clone uncounted");
        assert_eq!(v, 7);
    });
}

/// A waker whose `wake` panics, and (optionally) whose destructor panics too.
struct Hostile {
    woken: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    panic_on_drop: bool,
}

impl Wake for Hostile {
    fn wake(self: Arc<Self>) {
        self.woken.fetch_add(1, Ordering::SeqCst);
        panic!("a waker that panics");
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
        if self.panic_on_drop {
            panic!("a waker whose destructor panics");
        }
    }
}

/// `apply_async` futures on a `Trust<Latch<T>>` while a launched fiber holds the latch wait behind it (a plain
/// apply waits for the launched fibers), and are answered later, when the fiber ends, outside the trustee's
/// reading of its mail. Their wakers are hostile: one panics when woken (its future kept and completed by a
/// later poll), one panics when woken and when dropped (its future dropped after its first poll), and a third
/// future dropped after its first poll has a result that panics when dropped (its waker's `wake` panics).
/// Each one hostile destructor at a time (two at once: see
/// [`a_result_and_a_waker_that_both_panic_when_dropped_are_contained`]). All of it is contained: the
/// trustee keeps serving, each result and waker is dropped once.
#[test]
fn deferred_apply_async_answers_with_hostile_wakers_and_results() {
    in_child!(
        "deferred_apply_async_answers_with_hostile_wakers_and_results",
        60
    );
    let _ = quiet();
    if std::env::var_os("R69_DEBUG").is_some() {
        std::panic::set_hook(Box::new(|info| {
            eprintln!(
                "PANIC on {:?}: {info}\n{}",
                thread::current().name(),
                std::backtrace::Backtrace::force_capture()
            );
        }));
    }
    let latch = rt().trustee(0).entrust(Latch::new(0u64));
    let (woken, dropped, results) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    for round in 0..20u64 {
        let release = Arc::new(AtomicBool::new(false));
        let (held_tx, held_rx) = mpsc::channel::<()>();
        let holder = {
            let (latch, release) = (latch.clone(), release.clone());
            thread::spawn(move || {
                latch.launch(move |l| {
                    let mut g = l.lock();
                    *g += 1;
                    held_tx.send(()).unwrap();
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while !release.load(Ordering::SeqCst) {
                        assert!(Instant::now() < deadline, "never released");
                        trust_core::sleep(Duration::from_millis(1));
                    }
                })
            })
        };
        held_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        let hostile = |panic_on_drop| {
            Waker::from(Arc::new(Hostile {
                woken: woken.clone(),
                dropped: dropped.clone(),
                panic_on_drop,
            }))
        };
        let mut kept = latch.apply_async(|l| {
            *l.get_mut() += 10;
            *l.get_mut()
        });
        let w = hostile(false);
        assert!(
            Pin::new(&mut kept)
                .poll(&mut Context::from_waker(&w))
                .is_pending()
        );
        drop(w);
        let mut gone = latch.apply_async(move |l| {
            *l.get_mut() += 50;
        });
        let w = hostile(true);
        assert!(
            Pin::new(&mut gone)
                .poll(&mut Context::from_waker(&w))
                .is_pending()
        );
        drop(w);
        drop(gone);
        let r = results.clone();
        let mut gone = latch.apply_async(move |l| {
            *l.get_mut() += 50;
            PanicsOnDrop(r)
        });
        let w = hostile(false);
        assert!(
            Pin::new(&mut gone)
                .poll(&mut Context::from_waker(&w))
                .is_pending()
        );
        drop(w);
        drop(gone);
        release.store(true, Ordering::SeqCst);
        holder.join().unwrap();
        let flag = Flag::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let got = loop {
            // The hostile waker may have been woken (and panicked) already: poll until ready.
            if let Poll::Ready(v) = poll_once(&mut kept, &flag) {
                break v;
            }
            assert!(Instant::now() < deadline, "round {round}: never answered");
            thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(got, 111 * round + 11);
        drop(kept);
        eventually("the dropped future's result dropped", || {
            load(&results) == round as usize + 1
        });
        eventually("the three wakers dropped", || {
            load(&dropped) == 3 * (round as usize + 1)
        });
    }
    assert_eq!(latch.apply(|l| *l.get_mut()), 111 * 20);
    thread::sleep(Duration::from_millis(20));
    assert_eq!(load(&results), 20);
    assert_eq!(load(&dropped), 60);
    eprintln!("hostile wakers woken: {}", load(&woken));
    assert_eq!(rt().trustee(0).entrust(5u64).apply(|v| *v), 5);
    child_ok();
}

/// An `apply_async` future polled once (its waker's destructor panics) and dropped while its closure runs; the
/// closure's result panics when dropped too. When the trustee answered, it took the waker out of the request, freed the
/// request (dropping the result, whose destructor panics) and, unwinding from that, dropped the waker, whose destructor
/// panicked again: a panic during a panic, and the process aborted (fixed: the waker is dropped first, on its own). The
/// docs promise "Any user code the trustee runs (closures, result and property destructors, `Waker`s) is contained: a
/// panic there never stops a trustee" (each destructor on its own, as review 53 made a refused call drop what it was
/// given). One hostile destructor at a time is contained (the test above).
#[test]
fn a_result_and_a_waker_that_both_panic_when_dropped_are_contained() {
    in_child!(
        "a_result_and_a_waker_that_both_panic_when_dropped_are_contained",
        60
    );
    let t = rt().trustee(0).entrust(0u64);
    let (woken, dropped, results) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let r = results.clone();
    let mut gone = t.apply_async(move |v| {
        gate_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        *v += 1;
        PanicsOnDrop(r)
    });
    let w = Waker::from(Arc::new(Hostile {
        woken: woken.clone(),
        dropped: dropped.clone(),
        panic_on_drop: true,
    }));
    assert!(
        Pin::new(&mut gone)
            .poll(&mut Context::from_waker(&w))
            .is_pending()
    );
    drop(w);
    drop(gone);
    gate_tx.send(()).unwrap();
    eventually("the result dropped", || load(&results) == 1);
    eventually("the waker dropped", || load(&dropped) == 1);
    assert_eq!(t.apply(|v| *v), 1, "the trustee keeps serving");
    assert_eq!(load(&woken), 0, "the future was gone: nobody to wake");
    child_ok();
}

/// Shutdown with `apply_async` requests waiting behind a launched fiber that holds its latch for good: they
/// are dropped unrun ("requests that ... wait behind a latch's launched fibers are dropped unrun, with what
/// they captured"), and their tasks are told (woken; a poll panics naming the shutdown). `hostile_waker`: the
/// waker panics when woken; `hostile_capture`: the closure's capture panics when dropped. Each alone is
/// contained; the process must survive.
fn shutdown_drops_deferred_apply_async(hostile_waker: bool, hostile_capture: bool) {
    let latch = rt().trustee(0).entrust(Latch::new(0u64));
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let l2 = latch.clone();
    let _holder = thread::spawn(move || {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            l2.launch(move |l| {
                let _g = l.lock();
                held_tx.send(()).unwrap();
                loop {
                    trust_core::sleep(Duration::from_millis(5));
                }
            })
        }));
    });
    held_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let (woken, dropped, captures) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let c = captures.clone();
    let capture: Box<dyn Send> = if hostile_capture {
        Box::new(PanicsOnDrop(c))
    } else {
        Box::new(CountsDrops(c))
    };
    let mut fut = latch.apply_async(move |l| {
        let _c = capture;
        *l.get_mut() += 1;
    });
    let flag = Flag::new();
    let hostile = Waker::from(Arc::new(Hostile {
        woken: woken.clone(),
        dropped: dropped.clone(),
        panic_on_drop: false,
    }));
    let benign = Waker::from(flag.clone());
    let w = if hostile_waker { &hostile } else { &benign };
    assert!(
        Pin::new(&mut fut)
            .poll(&mut Context::from_waker(w))
            .is_pending()
    );
    drop(hostile);
    rt().shutdown();
    assert_eq!(load(&captures), 1, "the closure dropped unrun, once");
    let m = panic_message(
        catch_unwind(AssertUnwindSafe(|| poll_once(&mut fut, &flag))).expect_err("polled after"),
    );
    assert!(m.contains(SHUT_DOWN), "{m}");
    drop(fut);
    assert_eq!(load(&dropped), 1, "the waker dropped once");
}

#[test]
fn shutdown_drops_a_deferred_apply_async_with_a_hostile_waker() {
    in_child!(
        "shutdown_drops_a_deferred_apply_async_with_a_hostile_waker",
        60
    );
    shutdown_drops_deferred_apply_async(true, false);
    child_ok();
}

#[test]
fn shutdown_drops_a_deferred_apply_async_whose_capture_panics_when_dropped() {
    in_child!(
        "shutdown_drops_a_deferred_apply_async_whose_capture_panics_when_dropped",
        60
    );
    shutdown_drops_deferred_apply_async(false, true);
    child_ok();
}

/// Both at once aborted the process (fixed: `job::PausedParts` drops the two apart): at shutdown `Worker::close` drops each
/// deferred request with `unwind::drop_quietly`, but one deferred request is one boxed closure (`job::pause_job`)
/// holding both the job (the user's captures) and its `Answering`, whose drop answers `None` and wakes the user's
/// waker. The capture's destructor panics first; unwinding from it drops the `Answering`, which calls `Waker::wake`,
/// which panics: a panic while a panic unwinds, and the process aborts ("thread caused non-unwinding panic").
/// `unwind.rs` says the runtime drops "each value on its own (a second panic while the first unwinds aborts the
/// process)"; the docs say user code the trustee runs (destructors, `Waker`s) is contained.
#[test]
fn shutdown_drops_a_deferred_apply_async_with_both_hostile_contained() {
    in_child!(
        "shutdown_drops_a_deferred_apply_async_with_both_hostile_contained",
        60
    );
    shutdown_drops_deferred_apply_async(true, true);
    child_ok();
}

/// One future per thread, each thread parked in a strict `block_on` (no timed polling) and nothing else
/// polling: the trustee wakes the first and the last task of each mail itself and leaves the others on its
/// relay, which only a poll of one of its futures or the trustee's own later rounds drain. With every thread
/// parked, no poll comes: the trustee must wake them all by itself, even as it goes idle.
#[test]
fn one_parked_future_per_thread_all_sent_at_once_are_all_woken() {
    within(240, || {
        const THREADS: usize = 48;
        let t = rt().trustee(1).entrust(0u64);
        for round in 0..30u64 {
            let barrier = Arc::new(std::sync::Barrier::new(THREADS));
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (t, barrier) = (t.clone(), barrier.clone());
                    thread::spawn(move || {
                        barrier.wait();
                        strict_block_on(
                            t.apply_async(|v| {
                                *v += 1;
                                *v
                            }),
                            "a parked thread's only future",
                        )
                    })
                })
                .collect();
            let mut got: Vec<u64> = threads.into_iter().map(|h| h.join().unwrap()).collect();
            got.sort_unstable();
            let base = round * THREADS as u64;
            assert_eq!(got, (base + 1..=base + THREADS as u64).collect::<Vec<_>>());
        }
    });
}

/// Threads send `apply_async` requests in a loop while the runtime shuts down; each closure's capture panics
/// when dropped (run or not) and each waker panics when woken. Every capture is dropped exactly once and the
/// process survives. (A request mailed after the trustee's last read would be dropped unrun by
/// `shared::drop_unrun`, `Runnable`'s drop, `oneshot::finish(.., false)`, which drops the job and then its
/// `Answering` in one contained call: the same double panic as
/// [`shutdown_drops_a_deferred_apply_async_with_both_hostile_contained`]. In 120 runs this race never reached it.)
#[test]
fn apply_async_racing_shutdown_with_hostile_captures_and_wakers() {
    in_child!(
        "apply_async_racing_shutdown_with_hostile_captures_and_wakers",
        90
    );
    let targets = [rt().trustee(0).entrust(0u64), rt().trustee(1).entrust(0u64)];
    let (made, captures, woken, dropped) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|i| {
            let t = targets[i % 2].clone();
            let (made, captures, woken, dropped, stop) = (
                made.clone(),
                captures.clone(),
                woken.clone(),
                dropped.clone(),
                stop.clone(),
            );
            thread::spawn(move || {
                let mut kept = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    made.fetch_add(1, Ordering::SeqCst);
                    let c = PanicsOnDrop(captures.clone());
                    let mut fut = Box::pin(t.apply_async(move |v| {
                        let _c = c;
                        *v += 1;
                    }));
                    let w = Waker::from(Arc::new(Hostile {
                        woken: woken.clone(),
                        dropped: dropped.clone(),
                        panic_on_drop: false,
                    }));
                    let polled = catch_unwind(AssertUnwindSafe(|| {
                        fut.as_mut().poll(&mut Context::from_waker(&w))
                    }));
                    if polled.is_err() {
                        break; // refused: the shutdown came
                    }
                    kept.push(fut);
                    if kept.len() > 64 {
                        drop(kept.remove(0));
                    }
                }
                drop(kept);
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(30));
    rt().shutdown();
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.join().unwrap();
    }
    eventually("every capture dropped once", || {
        load(&captures) == load(&made)
    });
    thread::sleep(Duration::from_millis(20));
    assert_eq!(load(&captures), load(&made));
    eprintln!(
        "made {}, wakers woken {}, dropped {}",
        load(&made),
        load(&woken),
        load(&dropped)
    );
    child_ok();
}
