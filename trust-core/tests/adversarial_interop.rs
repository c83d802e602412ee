//! Hostile tests of the interop promises: `apply_async` from tokio and by hand, `may` coroutines as clients,
//! and threads that exit (or exit the process) with requests in flight. Every check is an exact count.

mod common;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use trust_core::{Latch, Trust, wait_pending};

/// Polls `f` once with a waker that does nothing.
fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
}

/// Wakes a parked thread and counts its wakes.
struct ThreadWaker(thread::Thread, AtomicUsize);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.unpark();
    }
}

/// A minimal executor: polls `f` on this thread, parking between polls.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = Waker::from(Arc::new(ThreadWaker(
        thread::current(),
        AtomicUsize::new(0),
    )));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park_timeout(Duration::from_millis(50));
    }
}

fn tokio_rt(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_time()
        .build()
        .unwrap()
}

/// A value whose handle lives for the whole process (tokio tasks need `'static` futures, and the futures
/// borrow their handle).
fn leaked(trustee: usize, v: u64) -> &'static Trust<u64> {
    Box::leak(Box::new(rt().trustee(trustee).entrust(v)))
}

// ---------------------------------------------------------------------------------------------------------
// 1. apply_async
// ---------------------------------------------------------------------------------------------------------

/// Futures dropped before their first poll: nothing runs, every capture drops exactly once, on the dropping
/// thread, and the value is untouched; a plain thread, a fiber and a delegated closure alike.
#[test]
fn apply_async_dropped_before_first_poll_runs_nothing_anywhere() {
    quiet();
    let t = rt().trustee(1).entrust(5u64);
    let drops = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let make = |t: &Trust<u64>, d: &Arc<AtomicUsize>, r: &Arc<AtomicUsize>| {
        let (cap, r) = (CountsDrops(d.clone()), r.clone());
        drop(t.apply_async(move |v| {
            let _c = &cap;
            r.fetch_add(1, Ordering::SeqCst);
            *v += 1;
        }));
    };
    for _ in 0..1000 {
        make(&t, &drops, &ran);
    }
    assert_eq!((load(&drops), load(&ran)), (1000, 0));
    let (t2, d2, r2) = (t.clone(), drops.clone(), ran.clone());
    trust_core::spawn(move || {
        for _ in 0..1000 {
            make(&t2, &d2, &r2);
        }
    })
    .join()
    .unwrap();
    assert_eq!((load(&drops), load(&ran)), (2000, 0));
    let other = rt().trustee(0).entrust(0u64);
    let (t3, d3, r3) = (t.clone(), drops.clone(), ran.clone());
    other.apply(move |_| {
        for _ in 0..1000 {
            make(&t3, &d3, &r3);
        }
    });
    assert_eq!((load(&drops), load(&ran)), (3000, 0));
    assert_eq!(t.apply(|v| *v), 5);
}

/// Futures dropped at every point after the first poll (right after sending, after a few more polls, after a
/// sleep long enough for the answer, after completion), 20,000 of them to both trustees: each closure runs
/// exactly once, each result drops exactly once (by the trustee or by us), the value is exact.
#[test]
fn apply_async_dropped_at_every_point_after_first_poll() {
    quiet();
    let a = rt().trustee(0).entrust(0u64);
    let b = rt().trustee(1).entrust(0u64);
    let results = Arc::new(AtomicUsize::new(0));
    let captures = Arc::new(AtomicUsize::new(0));
    let mut completed = 0usize;
    const N: usize = 20_000;
    for i in 0..N {
        let t = if i % 2 == 0 { &a } else { &b };
        let (r, cap) = (results.clone(), CountsDrops(captures.clone()));
        let mut f = t.apply_async(move |v| {
            let _c = cap;
            *v += 1;
            (CountsDrops(r), *v)
        });
        assert!(
            poll_once(&mut f).is_pending(),
            "a plain thread is never local"
        );
        match i % 5 {
            0 => {}
            1 => {
                for _ in 0..3 {
                    if let Poll::Ready(r) = poll_once(&mut f) {
                        drop(r);
                        completed += 1;
                        break;
                    }
                }
            }
            2 => thread::yield_now(),
            3 if i % 500 == 3 => thread::sleep(Duration::from_millis(2)),
            4 => loop {
                if let Poll::Ready(r) = poll_once(&mut f) {
                    drop(r);
                    completed += 1;
                    break;
                }
                thread::yield_now();
            },
            _ => {}
        }
        drop(f);
    }
    assert_eq!(a.apply(|v| *v) + b.apply(|v| *v), N as u64);
    eventually("every result dropped once", || load(&results) >= N);
    thread::sleep(Duration::from_millis(20));
    assert_eq!(load(&results), N, "each result dropped exactly once");
    assert_eq!(load(&captures), N, "each closure dropped exactly once");
    assert!(completed >= N / 5, "{completed}");
}

/// The future is `Unpin` and `Send`: first polled on one thread, then handed to a second one which polls it
/// (with its own waker) to completion; the second waker is the one woken, the first never is after the
/// hand-over. Ten rounds each way between two threads, while the trustee is busy 20 ms per request.
#[test]
fn apply_async_polled_from_two_threads_in_turn() {
    quiet();
    let t = rt().trustee(1).entrust(0u64);
    for round in 0..10u64 {
        let first_waker = Arc::new(ThreadWaker(thread::current(), AtomicUsize::new(0)));
        let w1 = Waker::from(first_waker.clone());
        let mut f = t.apply_async(move |v| {
            thread::sleep(Duration::from_millis(20));
            *v += round;
            *v
        });
        assert!(
            Pin::new(&mut f)
                .poll(&mut Context::from_waker(&w1))
                .is_pending()
        );
        let got = thread::scope(|s| {
            s.spawn(move || {
                let second = Arc::new(ThreadWaker(thread::current(), AtomicUsize::new(0)));
                let w2 = Waker::from(second.clone());
                loop {
                    if let Poll::Ready(v) = Pin::new(&mut f).poll(&mut Context::from_waker(&w2)) {
                        return (v, load(&second.1));
                    }
                    thread::park_timeout(Duration::from_millis(200));
                }
            })
            .join()
            .unwrap()
        });
        let want: u64 = (0..=round).sum();
        assert_eq!(got.0, want);
        assert!(got.1 >= 1, "the second waker was woken");
        assert_eq!(load(&first_waker.1), 0, "the first waker is stale");
    }
}

/// The same through tokio: a task polls a future once, sends it over a channel to another task, which awaits
/// it. 2,000 of them, values exact.
#[test]
fn apply_async_handed_between_tokio_tasks() {
    quiet();
    let t = leaked(0, 0);
    let tk = tokio_rt(2);
    let sum = tk.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let producer = tokio::spawn(async move {
            for i in 0..2000u64 {
                let mut f = t.apply_async(move |v| {
                    *v += 1;
                    i
                });
                let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut f).poll(cx))).await;
                assert!(first.is_pending());
                tx.send(f).unwrap();
            }
        });
        let consumer = tokio::spawn(async move {
            let mut sum = 0;
            while let Some(f) = rx.recv().await {
                sum += f.await;
            }
            sum
        });
        producer.await.unwrap();
        consumer.await.unwrap()
    });
    assert_eq!(sum, (0..2000u64).sum::<u64>());
    assert_eq!(t.apply(|v| *v), 2000);
}

/// 100,000 `tokio::time::timeout`s (zero, or 1 ms for every 1,000th) around `apply_async` futures, from two
/// tasks on a two-thread tokio runtime: no hang, each closure runs once, each result drops once (by us when
/// the future finished in time, else by the trustee), the value is exact.
#[test]
fn apply_async_cancelled_by_tokio_timeouts_a_hundred_thousand_times() {
    quiet();
    let a = leaked(0, 0);
    let b = leaked(1, 0);
    let results = Arc::new(AtomicUsize::new(0));
    let captures = Arc::new(AtomicUsize::new(0));
    const PER_TASK: usize = 50_000;
    let (ok, late) = within(60, {
        let (results, captures) = (results.clone(), captures.clone());
        move || {
            let tk = tokio_rt(2);
            tk.block_on(async move {
                let tasks: Vec<_> = [a, b]
                    .into_iter()
                    .map(|t| {
                        let (results, captures) = (results.clone(), captures.clone());
                        tokio::spawn(async move {
                            let (mut ok, mut late) = (0usize, 0usize);
                            for i in 0..PER_TASK {
                                let (r, cap) = (results.clone(), CountsDrops(captures.clone()));
                                let f = t.apply_async(move |v| {
                                    let _c = cap;
                                    *v += 1;
                                    CountsDrops(r)
                                });
                                let limit = if i % 1000 == 0 {
                                    Duration::from_millis(1)
                                } else {
                                    Duration::ZERO
                                };
                                match tokio::time::timeout(limit, f).await {
                                    Ok(res) => {
                                        drop(res);
                                        ok += 1;
                                    }
                                    Err(_) => late += 1,
                                }
                            }
                            (ok, late)
                        })
                    })
                    .collect();
                let mut total = (0, 0);
                for t in tasks {
                    let (o, l) = t.await.unwrap();
                    total.0 += o;
                    total.1 += l;
                }
                total
            })
        }
    });
    assert_eq!(ok + late, 2 * PER_TASK);
    assert_eq!(a.apply(|v| *v) + b.apply(|v| *v), 2 * PER_TASK as u64);
    eventually("every result dropped", || load(&results) >= 2 * PER_TASK);
    thread::sleep(Duration::from_millis(20));
    assert_eq!(
        load(&results),
        2 * PER_TASK,
        "each result dropped exactly once"
    );
    assert_eq!(load(&captures), 2 * PER_TASK);
}

/// `block_on` (tokio's own current-thread runtime, and a parking one) inside a delegated closure: of a
/// future to the other trustee (completes), of one to another property of the same trustee (the local
/// shortcut: completes at the first poll), and of one to the very property in use (re-entrant: panics with
/// `re-entrant apply`, and the value stays usable).
#[test]
fn block_on_apply_async_inside_a_delegated_closure() {
    quiet();
    let a = rt().trustee(0).entrust(1u64);
    let same_trustee = rt().trustee(0).entrust(10u64);
    let other = rt().trustee(1).entrust(100u64);
    let (s2, o2) = (same_trustee.clone(), other.clone());
    let got = within(10, {
        let a = a.clone();
        move || {
            a.apply(move |v| {
                let tk = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                let x = tk.block_on(o2.apply_async(|o| {
                    *o += 1;
                    *o
                }));
                let y = block_on(s2.apply_async(|s| {
                    *s += 1;
                    *s
                }));
                let z = block_on(o2.apply_async(|o| *o * 2));
                *v += x + y + z;
                *v
            })
        }
    });
    assert_eq!(got, 1 + 101 + 11 + 202);
    let a2 = a.clone();
    let err = catch_unwind(AssertUnwindSafe(|| {
        a.apply(move |_| block_on(a2.apply_async(|v| *v)))
    }))
    .map_err(panic_message);
    let msg = err.expect_err("re-entering the same property must panic");
    assert!(msg.starts_with("re-entrant `apply`"), "{msg}");
    assert_eq!(a.apply(|v| *v), 315);
    assert_eq!((same_trustee.apply(|v| *v), other.apply(|v| *v)), (11, 101));
}

/// A result whose `Drop` panics: awaited, it reaches the task (dropping it there panics in our code, as it
/// should); dropped in flight, the trustee drops it, the panic is contained, and the trustee keeps serving.
#[test]
fn apply_async_result_whose_drop_panics() {
    quiet();
    let t = leaked(1, 0);
    let drops = Arc::new(AtomicUsize::new(0));
    let tk = tokio_rt(2);
    // Awaited: the value reaches us; we forget half and drop half inside catch_unwind.
    let caught = tk.block_on({
        let drops = drops.clone();
        async move {
            let mut caught = 0;
            for i in 0..100 {
                let d = drops.clone();
                let r = t
                    .apply_async(move |v| {
                        *v += 1;
                        PanicsOnDrop(d)
                    })
                    .await;
                if i % 2 == 0 {
                    std::mem::forget(r);
                } else if catch_unwind(AssertUnwindSafe(|| drop(r))).is_err() {
                    caught += 1;
                }
            }
            caught
        }
    });
    assert_eq!(caught, 50);
    assert_eq!(load(&drops), 50);
    // Dropped in flight: the trustee drops 1,000 of them.
    for _ in 0..1000 {
        let d = drops.clone();
        let mut f = t.apply_async(move |v| {
            *v += 1;
            PanicsOnDrop(d)
        });
        assert!(poll_once(&mut f).is_pending());
        drop(f);
    }
    // Mailed requests are not ordered with this thread's blocking `apply`: wait for them.
    eventually("every mailed request ran", || t.apply(|v| *v) == 1100);
    eventually("the trustee dropped every result", || load(&drops) >= 1050);
    thread::sleep(Duration::from_millis(20));
    assert_eq!(load(&drops), 1050);
    assert_eq!(
        tk.block_on(t.apply_async(|v| *v)),
        1100,
        "the trustee still serves"
    );
}

const SHUT_DOWN: &str = "the trust runtime has been shut down: no property can be entrusted or applied to after `Runtime::shutdown`";

/// Shutdown (from a plain thread, in a child) with futures pending in tokio tasks: 200 sent to a trustee
/// busy with a 300 ms closure, 200 created but never polled. The sent ones complete with their value (shutdown
/// answers what was sent); each unsent one panics at its first poll with the documented message; none hangs;
/// each closure that ran ran once and each result dropped once.
#[test]
fn shutdown_with_sent_and_unsent_apply_async_futures() {
    if !is_child() {
        return expect_child_ok("shutdown_with_sent_and_unsent_apply_async_futures", &[]);
    }
    let rt = quiet();
    let t: &'static Trust<u64> = Box::leak(Box::new(rt.trustee(0).entrust(0u64)));
    let started = Arc::new(AtomicBool::new(false));
    let st = started.clone();
    let busy = thread::spawn(move || {
        catch_unwind(AssertUnwindSafe(|| {
            t.apply(move |v| {
                st.store(true, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(300));
                *v += 1000;
            })
        }))
        .map_err(panic_message)
    });
    eventually("the long closure started", || {
        started.load(Ordering::SeqCst)
    });
    let results = Arc::new(AtomicUsize::new(0));
    let tk = tokio_rt(2);
    let sent = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(tokio::sync::Notify::new());
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let (r, sent, go) = (results.clone(), sent.clone(), go.clone());
            tk.spawn(async move {
                let mut f = t.apply_async(move |v| {
                    *v += 1;
                    CountsDrops(r)
                });
                if i % 2 == 0 {
                    let p = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut f).poll(cx))).await;
                    assert!(p.is_pending());
                    sent.fetch_add(1, Ordering::SeqCst);
                    drop(f.await);
                } else {
                    sent.fetch_add(1, Ordering::SeqCst);
                    go.notified().await;
                    drop(f.await);
                }
                i
            })
        })
        .collect();
    eventually("every task started", || load(&sent) == 400);
    rt.shutdown();
    go.notify_waiters();
    let (mut ok, mut refused, mut other) = (0, 0, Vec::new());
    tk.block_on(async {
        for task in tasks {
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(i)) => {
                    assert_eq!(i % 2, 0, "an unsent future completed after shutdown");
                    ok += 1;
                }
                Ok(Err(e)) => {
                    let m = panic_message(e.into_panic());
                    if m == SHUT_DOWN {
                        refused += 1;
                    } else {
                        other.push(m);
                    }
                }
                Err(_) => other.push("HUNG".into()),
            }
        }
    });
    assert_eq!(other, Vec::<String>::new());
    assert_eq!((ok, refused), (200, 200));
    assert_eq!(busy.join().unwrap(), Ok(()));
    assert_eq!(load(&results), 200);
    println!("CHILD-OK");
}

/// A future polled after shutdown by hand, outside any executor: one sent before completes, one created
/// before and polled after panics with the message (and drops its closure once), one created after panics too.
#[test]
fn apply_async_polled_by_hand_after_shutdown() {
    if !is_child() {
        return expect_child_ok("apply_async_polled_by_hand_after_shutdown", &[]);
    }
    let rt = quiet();
    let t: &'static Trust<u64> = Box::leak(Box::new(rt.trustee(1).entrust(7u64)));
    let caps = Arc::new(AtomicUsize::new(0));
    let mut sent = t.apply_async(|v| *v + 1);
    assert!(poll_once(&mut sent).is_pending());
    let cap = CountsDrops(caps.clone());
    let mut unsent = t.apply_async(move |v| {
        let _c = cap;
        *v
    });
    rt.shutdown();
    let got = within(5, move || block_on(sent));
    assert_eq!(got, 8);
    let err = catch_unwind(AssertUnwindSafe(|| poll_once(&mut unsent))).map_err(panic_message);
    assert_eq!(err.err().as_deref(), Some(SHUT_DOWN));
    drop(unsent);
    assert_eq!(load(&caps), 1, "the unsent closure dropped once");
    let mut late = t.apply_async(|v| *v);
    let err = catch_unwind(AssertUnwindSafe(|| poll_once(&mut late))).map_err(panic_message);
    assert_eq!(err.err().as_deref(), Some(SHUT_DOWN));
    println!("CHILD-OK");
}

/// `apply_async` from a fiber (polled by hand with `yield_now` between polls; to the fiber's own trustee and
/// to the other) and from a delegated closure (to the other trustee, polled until ready): values exact,
/// panics resume with their payload.
#[test]
fn apply_async_from_fibers_and_delegated_closures() {
    quiet();
    let a = rt().trustee(0).entrust(0u64);
    let b = rt().trustee(1).entrust(0u64);
    let fibers: Vec<_> = (0..200u64)
        .map(|i| {
            let (a, b) = (a.clone(), b.clone());
            trust_core::spawn(move || {
                let mut sum = 0;
                for t in [&a, &b] {
                    let mut f = t.apply_async(move |v| {
                        *v += i;
                        i
                    });
                    sum += loop {
                        if let Poll::Ready(x) = poll_once(&mut f) {
                            break x;
                        }
                        trust_core::yield_now();
                    };
                }
                let mut p = a.apply_async(move |_| -> u64 { std::panic::panic_any(i) });
                let caught = catch_unwind(AssertUnwindSafe(|| {
                    loop {
                        if let Poll::Ready(x) = poll_once(&mut p) {
                            break x;
                        }
                        trust_core::yield_now();
                    }
                }));
                let payload = *caught.unwrap_err().downcast::<u64>().unwrap();
                assert_eq!(payload, i);
                sum
            })
        })
        .collect();
    let total: u64 = fibers.into_iter().map(|f| f.join().unwrap()).sum();
    assert_eq!(total, 2 * (0..200u64).sum::<u64>());
    assert_eq!(a.apply(|v| *v), (0..200u64).sum::<u64>());
    assert_eq!(b.apply(|v| *v), (0..200u64).sum::<u64>());
    let b2 = b.clone();
    let got = a.apply(move |v| {
        let mut f = b2.apply_async(|w| {
            *w += 1;
            *w
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Poll::Ready(x) = poll_once(&mut f) {
                *v += x;
                break *v;
            }
            assert!(Instant::now() < deadline, "HUNG inside a delegated closure");
            thread::yield_now();
        }
    });
    let s = (0..200u64).sum::<u64>();
    assert_eq!(got, s + s + 1);
}

// ---------------------------------------------------------------------------------------------------------
// 2. may coroutines
// ---------------------------------------------------------------------------------------------------------

fn may_setup() {
    may::config().set_workers(2);
}

/// Spawns a named coroutine.
fn co<R: Send + 'static>(
    name: String,
    f: impl FnOnce() -> R + Send + 'static,
) -> may::coroutine::JoinHandle<R> {
    // SAFETY: the coroutines use no thread-local storage of their own.
    unsafe { may::coroutine::Builder::new().name(name).spawn(f) }.unwrap()
}

fn co_name() -> String {
    may::coroutine::current().name().unwrap_or("?").to_owned()
}

/// 64 named coroutines each issue 200 `apply_then`s (to both trustees) and `apply`s, yielding between calls
/// so `may` moves them between its threads; every continuation runs on the coroutine that issued it (checked
/// by name and by a non-`Send` counter it captures), and before `wait_pending` returns.
#[test]
fn may_apply_then_continuations_run_on_their_own_coroutine() {
    quiet();
    may_setup();
    let a = rt().trustee(0).entrust(0u64);
    let b = rt().trustee(1).entrust(0u64);
    let wrong = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let (a, b, wrong) = (a.clone(), b.clone(), wrong.clone());
            co(format!("co-{i}"), move || {
                let me = co_name();
                assert_eq!(me, format!("co-{i}"));
                let ran = std::rc::Rc::new(Cell::new(0u32));
                let mut threads = std::collections::HashSet::new();
                for k in 0..200u64 {
                    let t = if k % 2 == 0 { &a } else { &b };
                    let (ran, me, wrong) = (ran.clone(), me.clone(), wrong.clone());
                    t.apply_then(
                        move |v| {
                            *v += 1;
                            k
                        },
                        move |got| {
                            if co_name() != me || got != k {
                                wrong.fetch_add(1, Ordering::SeqCst);
                            }
                            ran.set(ran.get() + 1);
                        },
                    );
                    threads.insert(thread::current().id());
                    if k % 10 == 0 {
                        may::coroutine::yield_now();
                        assert!(t.apply(|v| *v) > 0);
                    }
                }
                wait_pending();
                assert_eq!(ran.get(), 200);
                threads.len()
            })
        })
        .collect();
    let mut moved = 0;
    for h in handles {
        if h.join().unwrap() > 1 {
            moved += 1;
        }
    }
    assert_eq!(load(&wrong), 0, "a continuation ran on another coroutine");
    assert_eq!(a.apply(|v| *v) + b.apply(|v| *v), 64 * 200);
    println!("{moved} of 64 coroutines ran on more than one thread");
}

/// `launch_then` from coroutines: the continuation runs on the issuing coroutine, with the fiber's result;
/// a panicking fiber and a panicking continuation are each kept for that coroutine's `wait_pending` (exact
/// payloads), never seen by another coroutine's `wait_pending`.
#[test]
fn may_launch_then_and_panics_stay_with_their_coroutine() {
    quiet();
    may_setup();
    let l = rt().trustee(1).entrust(Latch::new(0u64));
    let wrong = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..32u64)
        .map(|i| {
            let (l, wrong) = (l.clone(), wrong.clone());
            co(format!("launcher-{i}"), move || {
                let me = co_name();
                let got = std::rc::Rc::new(Cell::new(0u64));
                let (g, me2, w2) = (got.clone(), me.clone(), wrong.clone());
                l.launch_then(
                    move |latch| {
                        trust_core::sleep(Duration::from_millis(5));
                        *latch.lock() += i;
                        i * 10
                    },
                    move |r| {
                        if co_name() != me2 {
                            w2.fetch_add(1, Ordering::SeqCst);
                        }
                        g.set(r);
                    },
                );
                // A panicking fiber, then a panicking continuation, each tagged with this coroutine.
                l.launch_then(
                    move |_| -> u64 { std::panic::panic_any(format!("fiber-{i}")) },
                    |_| unreachable!("the fiber panicked"),
                );
                let mut payloads = Vec::new();
                let p = catch_unwind(AssertUnwindSafe(wait_pending)).map_err(panic_message);
                payloads.push(p.err());
                l.apply_then(|_| (), move |()| std::panic::panic_any(format!("cont-{i}")));
                may::coroutine::yield_now();
                let p = catch_unwind(AssertUnwindSafe(wait_pending)).map_err(panic_message);
                payloads.push(p.err());
                let p = catch_unwind(AssertUnwindSafe(wait_pending)).map_err(panic_message);
                payloads.push(p.err());
                (got.get(), payloads)
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (got, payloads) = h.join().unwrap();
        assert_eq!(got, i as u64 * 10);
        assert_eq!(
            payloads,
            vec![Some(format!("fiber-{i}")), Some(format!("cont-{i}")), None]
        );
    }
    assert_eq!(load(&wrong), 0);
    assert_eq!(l.apply(|l| *l.lock()), (0..32u64).sum::<u64>());
}

/// A panic in an `apply_then` closure from a coroutine is kept until that coroutine's `wait_pending`, even
/// when the coroutine is suspended for a while in between and others on the same threads call `wait_pending`
/// (they see nothing), and the trustee keeps serving.
#[test]
fn may_panics_in_closures_are_not_resumed_in_another_coroutine() {
    quiet();
    may_setup();
    let t = rt().trustee(0).entrust(0u64);
    let stolen = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..40u64)
        .map(|i| {
            let (t, stolen) = (t.clone(), stolen.clone());
            co(format!("p-{i}"), move || {
                if i % 2 == 0 {
                    t.apply_then(
                        move |_| -> u64 { std::panic::panic_any(format!("closure-{i}")) },
                        |_| unreachable!(),
                    );
                    may::coroutine::sleep(Duration::from_millis(30));
                    catch_unwind(AssertUnwindSafe(wait_pending))
                        .map_err(panic_message)
                        .err()
                } else {
                    for _ in 0..30 {
                        t.apply_then(|v| *v += 1, |()| ());
                        if let Err(p) = catch_unwind(AssertUnwindSafe(wait_pending)) {
                            stolen.fetch_add(1, Ordering::SeqCst);
                            eprintln!("coroutine {i} got {}", panic_message(p));
                        }
                        may::coroutine::sleep(Duration::from_millis(1));
                    }
                    None
                }
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let got = h.join().unwrap();
        if i % 2 == 0 {
            assert_eq!(got, Some(format!("closure-{i}")));
        } else {
            assert_eq!(got, None);
        }
    }
    assert_eq!(load(&stolen), 0);
    assert_eq!(t.apply(|v| *v), 20 * 30);
}

/// `apply_async` polled by hand inside coroutines (yielding to `may` between polls), and handles cloned and
/// dropped there (the last one in a coroutine): values exact, the value dropped exactly once.
#[test]
fn may_apply_async_by_hand_and_dropping_handles() {
    quiet();
    may_setup();
    let drops = Arc::new(AtomicUsize::new(0));
    let t = rt().trustee(1).entrust((0u64, CountsDrops(drops.clone())));
    let handles: Vec<_> = (0..100u64)
        .map(|i| {
            let t = t.clone();
            co(format!("async-{i}"), move || {
                let mut f = t.apply_async(move |v| {
                    v.0 += i + 1;
                    v.0
                });
                let mut polls = 0;
                let r = loop {
                    polls += 1;
                    if let Poll::Ready(x) = poll_once(&mut f) {
                        break x;
                    }
                    may::coroutine::yield_now();
                };
                drop(f);
                let extra: Vec<_> = (0..10).map(|_| t.clone()).collect();
                drop(extra);
                drop(t);
                (r, polls)
            })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.join().unwrap().0);
    }
    results.sort();
    results.dedup();
    assert_eq!(results.len(), 100, "every partial sum is distinct");
    assert_eq!(t.apply(|v| v.0), (1..=100u64).sum::<u64>());
    assert_eq!(load(&drops), 0);
    drop(t);
    eventually("the value dropped", || load(&drops) == 1);
    thread::sleep(Duration::from_millis(20));
    assert_eq!(load(&drops), 1);
}

/// 10,000 coroutines at once, each an `apply`, an `apply_then` (with `wait_pending`) and a `launch_then` to
/// latches on both trustees: exact totals, every continuation ran once.
#[test]
fn may_ten_thousand_coroutines_at_once() {
    quiet();
    may_setup();
    let t = rt().trustee(0).entrust(0u64);
    let s = rt().trustee(1).entrust(0u64);
    let l = rt().trustee(1).entrust(Latch::new(0u64));
    let conts = Arc::new(AtomicUsize::new(0));
    let r = within(60, {
        let (t, s, l, conts) = (t.clone(), s.clone(), l.clone(), conts.clone());
        move || {
            let handles: Vec<_> = (0..10_000u64)
                .map(|i| {
                    let (t, s, l, conts) = (t.clone(), s.clone(), l.clone(), conts.clone());
                    // SAFETY: no thread-local storage of its own.
                    unsafe {
                        may::coroutine::spawn(move || {
                            let a = t.apply(move |v| {
                                *v += 1;
                                *v
                            });
                            let c1 = conts.clone();
                            s.apply_then(
                                move |v| *v += i,
                                move |()| {
                                    c1.fetch_add(1, Ordering::SeqCst);
                                },
                            );
                            let c2 = conts.clone();
                            l.launch_then(
                                move |l| *l.lock() += 1,
                                move |()| {
                                    c2.fetch_add(1, Ordering::SeqCst);
                                },
                            );
                            wait_pending();
                            a
                        })
                    }
                })
                .collect();
            let mut seen: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            seen.sort();
            seen
        }
    });
    assert_eq!(
        r,
        (1..=10_000u64).collect::<Vec<_>>(),
        "each apply saw its own count"
    );
    assert_eq!(load(&conts), 20_000);
    assert_eq!(t.apply(|v| *v), 10_000);
    assert_eq!(s.apply(|v| *v), (0..10_000u64).sum::<u64>());
    assert_eq!(l.apply(|l| *l.lock()), 10_000);
}

// ---------------------------------------------------------------------------------------------------------
// 3. Thread exit
// ---------------------------------------------------------------------------------------------------------

/// A thread issues 100 `apply_then`s to a trustee busy with a 200 ms closure and exits: each request runs
/// once (in order), each result and each unrun continuation is dropped exactly once, the exit waited for the
/// answers (the thread joins only after the busy closure), and continuations that could not run did not run.
#[test]
fn thread_exits_with_apply_then_to_a_busy_trustee() {
    quiet();
    let t = rt().trustee(1).entrust(Vec::<u64>::new());
    let busy = stall(1, 200);
    let (results, conts, ran) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let t1 = t.clone();
    let (r, c, rn) = (results.clone(), conts.clone(), ran.clone());
    let begun = Instant::now();
    thread::spawn(move || {
        for i in 0..100u64 {
            let (r, cap, rn) = (r.clone(), CountsDrops(c.clone()), rn.clone());
            t1.apply_then(
                move |v| {
                    v.push(i);
                    CountsDrops(r)
                },
                move |res| {
                    let _ = (cap, res);
                    rn.fetch_add(1, Ordering::SeqCst);
                },
            );
        }
    })
    .join()
    .unwrap();
    let took = begun.elapsed();
    busy.join().unwrap();
    assert_eq!(t.apply(|v| v.clone()), (0..100u64).collect::<Vec<_>>());
    eventually("results dropped", || load(&results) >= 100);
    // Continuations whose answers the exit collected may run there; the rest are dropped unrun. Either
    // way each is dropped exactly once, and so is each result.
    eventually("continuations dropped", || load(&conts) >= 100);
    assert_eq!(
        (load(&results), load(&conts)),
        (100, 100),
        "results and continuations dropped once ({} ran, took {took:?})",
        load(&ran)
    );
    assert!(
        took >= Duration::from_millis(100),
        "the exit waited for the answers: {took:?}"
    );
}

/// The same with continuations whose captures panic when dropped (every third), in a child so an abort
/// would be seen: the thread exits normally and everything else of its batch is still dropped once.
#[test]
fn thread_exits_with_unrun_continuations_that_panic_on_drop() {
    if !is_child() {
        return expect_child_ok(
            "thread_exits_with_unrun_continuations_that_panic_on_drop",
            &[],
        );
    }
    quiet();
    let t = rt().trustee(0).entrust(0u64);
    let busy = stall(0, 200);
    let (bombs, conts, ran) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let t1 = t.clone();
    let (b, c, rn) = (bombs.clone(), conts.clone(), ran.clone());
    let joined = thread::spawn(move || {
        for i in 0..90u64 {
            let (cap, rn) = (CountsDrops(c.clone()), rn.clone());
            let bomb = (i % 3 == 0).then(|| PanicsOnDrop(b.clone()));
            t1.apply_then(
                move |v| *v += 1,
                move |()| {
                    let _ = cap;
                    std::mem::forget(bomb);
                    rn.fetch_add(1, Ordering::SeqCst);
                },
            );
        }
    })
    .join();
    assert!(joined.is_ok(), "a destructor's panic is contained");
    busy.join().unwrap();
    assert_eq!(t.apply(|v| *v), 90);
    assert_eq!((load(&bombs), load(&conts), load(&ran)), (30, 90, 0));
    println!("CHILD-OK");
}

/// A thread exits with 20 `launch_then` fibers still running (each sleeps 200 ms on the trustee): every
/// fiber finishes its work, its continuation never runs and is dropped once, and the latch is usable after.
#[test]
fn thread_exits_with_launch_then_fibers_running() {
    quiet();
    let l = rt().trustee(1).entrust(Latch::new(0u64));
    let (conts, ran, results) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let l1 = l.clone();
    let (c, rn, res) = (conts.clone(), ran.clone(), results.clone());
    let begun = Instant::now();
    thread::spawn(move || {
        for _ in 0..20 {
            let (cap, rn, res) = (CountsDrops(c.clone()), rn.clone(), res.clone());
            l1.launch_then(
                move |latch| {
                    trust_core::sleep(Duration::from_millis(200));
                    *latch.lock() += 1;
                    CountsDrops(res)
                },
                move |r| {
                    let _ = (cap, r);
                    rn.fetch_add(1, Ordering::SeqCst);
                },
            );
        }
    })
    .join()
    .unwrap();
    let took = begun.elapsed();
    assert_eq!(l.apply(|l| *l.lock()), 20, "every fiber finished");
    eventually("continuations and results dropped", || {
        load(&conts) >= 20 && load(&results) >= 20
    });
    assert_eq!(
        (load(&conts), load(&results), load(&ran)),
        (20, 20, 0),
        "exit took {took:?}"
    );
}

/// `std::process::exit(3)` from a plain thread while another thread has 10,000 `apply_then`s in flight to a
/// trustee busy 10 ms per request (at most two batches published, each under 72 records while both lanes are
/// busy: under 1.5 s of work that shutdown at exit answers): the process exits with code 3, within 3 seconds (not after the 5 s shutdown timeout).
#[test]
fn process_exit_from_a_plain_thread_while_another_has_requests_in_flight() {
    if !is_child() {
        let begun = Instant::now();
        let out = run_in_child(
            "process_exit_from_a_plain_thread_while_another_has_requests_in_flight",
            &[],
        );
        let took = begun.elapsed();
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(took < Duration::from_secs(3), "exit took {took:?}");
        return;
    }
    quiet();
    let t = rt().trustee(0).entrust(0u64);
    let issued = Arc::new(AtomicUsize::new(0));
    let (t1, is) = (t.clone(), issued.clone());
    thread::spawn(move || {
        for _ in 0..10_000 {
            t1.apply_then(
                |v| {
                    *v += 1;
                    thread::sleep(Duration::from_millis(10));
                },
                |()| (),
            );
            is.fetch_add(1, Ordering::SeqCst);
        }
        wait_pending();
    });
    eventually("requests in flight", || load(&issued) >= 100);
    thread::spawn(|| std::process::exit(3)).join().unwrap();
    unreachable!();
}

thread_local! {
    static AT_EXIT: RefCell<Option<AtExit>> = const { RefCell::new(None) };
}

/// A value that records its final count when dropped.
struct Recorded(u64, Arc<Mutex<Vec<u64>>>);

impl Drop for Recorded {
    fn drop(&mut self) {
        self.1.lock().unwrap().push(self.0);
    }
}

/// Held in a thread-local: at thread exit, an `apply` (its result recorded), an `apply_then` (its
/// continuation may or may not run, but its request runs once) and the drop of the last handle.
struct AtExit {
    t: Option<Trust<Recorded>>,
    seen: Arc<Mutex<Vec<u64>>>,
    conts: Arc<AtomicUsize>,
}

impl Drop for AtExit {
    fn drop(&mut self) {
        let t = self.t.take().unwrap();
        let got = t.apply(|v| {
            v.0 += 1;
            v.0
        });
        self.seen.lock().unwrap().push(got);
        let cap = CountsDrops(self.conts.clone());
        t.apply_then(|v| v.0 += 10, move |()| drop(cap));
        drop(t); // the last handle
    }
}

/// A thread-local destructor that calls `apply`, then `apply_then`, then drops the last handle; 50 threads,
/// each with its own value: each `apply` returns 1, each value is dropped exactly once after the
/// `apply_then` ran (its final count is 11), each continuation capture is dropped once.
#[test]
fn thread_local_destructor_applies_and_drops_the_last_handle() {
    quiet();
    let finals = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let conts = Arc::new(AtomicUsize::new(0));
    for i in 0..50 {
        let (seen, conts, finals) = (seen.clone(), conts.clone(), finals.clone());
        within(5, move || {
            thread::spawn(move || {
                let t = rt().trustee(i % 2).entrust(Recorded(0, finals));
                AT_EXIT.with(|a| {
                    *a.borrow_mut() = Some(AtExit {
                        t: Some(t),
                        seen,
                        conts,
                    })
                });
            })
            .join()
            .unwrap()
        });
    }
    eventually("every value dropped", || finals.lock().unwrap().len() >= 50);
    thread::sleep(Duration::from_millis(20));
    assert_eq!(*finals.lock().unwrap(), vec![11u64; 50]);
    assert_eq!(*seen.lock().unwrap(), vec![1u64; 50]);
    assert_eq!(load(&conts), 50);
}

/// Issues `apply_then` number `k` of a chain of `n` on `t`: each continuation issues the next.
fn chain(t: Trust<u64>, k: u64, n: u64, done: Arc<AtomicUsize>) {
    if k == n {
        done.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let t2 = t.clone();
    t.apply_then(move |v| *v += 1, move |()| chain(t2, k + 1, n, done));
}

/// "A chain of 100,000 (each issued by the previous continuation) runs in constant stack": from a plain thread
/// (the control) and from a `may` coroutine (with a 1 Mi-word stack), in a child since a stack overflow
/// aborts. The coroutine runs each continuation at once inside the `apply_then` that issued it.
#[test]
fn may_apply_then_chain_of_a_hundred_thousand_runs_in_constant_stack() {
    if !is_child() {
        return expect_child_ok(
            "may_apply_then_chain_of_a_hundred_thousand_runs_in_constant_stack",
            &[],
        );
    }
    quiet();
    may_setup();
    const N: u64 = 100_000;
    let done = Arc::new(AtomicUsize::new(0));
    let t = rt().trustee(1).entrust(0u64);
    let (t1, d1) = (t.clone(), done.clone());
    thread::spawn(move || {
        chain(t1, 0, N, d1);
        wait_pending();
    })
    .join()
    .unwrap();
    assert_eq!((t.apply(|v| *v), load(&done)), (N, 1), "the control");
    eprintln!("control done; now from a coroutine");
    let (t2, d2) = (t.clone(), done.clone());
    // SAFETY: no thread-local storage of its own.
    let h = unsafe {
        may::coroutine::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || {
                chain(t2, 0, N, d2);
                wait_pending();
            })
    }
    .unwrap();
    let joined = h.join().map_err(|_| "the coroutine died");
    let links = t.apply(|v| *v) - N;
    assert_eq!((joined, links, load(&done)), (Ok(()), N, 2));
    println!("CHILD-OK");
}
