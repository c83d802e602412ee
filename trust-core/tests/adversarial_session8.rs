//! Session 8 review: attacks on what changed in b5fce54..60cc1d4 — `Worker::to_self` (a worker's requests to
//! its own trustee, and the fiber `apply` that goes behind them), `Outbox::drop` waiting only for answers that
//! carry something, `Batch::drop` of unpublished records, the `Inbox` dropping results, continuations of `may`
//! coroutines, and `Mutex`/`RwLock` `Debug` holding the thread's key.

mod common;

use std::any::Any;
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, mpsc};
use std::time::{Duration, Instant};

use common::{
    CountsDrops, busy_channel, expect_child_ok, is_child, load, panic_message, quiet, rt, within,
};
use trust_core::lock::{Mutex, RwLock, ThreadKey};
use trust_core::{Latch, local_trustee, spawn, wait_pending};

type Job = Box<dyn FnOnce() + Send>;

/// Runs `f` in a fiber on worker `index` (fibers are spawned round-robin: those landing elsewhere do nothing),
/// and resumes its panic here.
fn fiber_on<R: Send + 'static>(index: usize, f: impl FnOnce() -> R + Send + 'static) -> R {
    let out: Arc<StdMutex<Option<R>>> = Arc::default();
    let job: Arc<StdMutex<Option<Job>>> = Arc::new(StdMutex::new(Some(Box::new({
        let out = out.clone();
        move || *out.lock().unwrap() = Some(f())
    }))));
    loop {
        let job = job.clone();
        let ran = spawn(move || {
            if local_trustee().index() != index {
                return false;
            }
            let f = job.lock().unwrap().take().expect("run once");
            f();
            true
        })
        .join()
        .unwrap_or_else(|p| panic::resume_unwind(p));
        if ran {
            return out.lock().unwrap().take().unwrap();
        }
    }
}

/// Records the names of the threads its values are dropped on.
struct DropsOn(Arc<StdMutex<Vec<String>>>);

impl Drop for DropsOn {
    fn drop(&mut self) {
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        self.0.lock().unwrap().push(name);
    }
}

fn names(v: &Arc<StdMutex<Vec<String>>>) -> Vec<String> {
    v.lock().unwrap().clone()
}

// ---------------------------------------------------------------------------------------------------------
// 1. `to_self`
// ---------------------------------------------------------------------------------------------------------

/// The promise the change makes: an `apply_then` queued in the worker's channel to itself (issued inside a
/// closure on the same property) is applied before a later `apply` of a fiber of that worker.
#[test]
fn fiber_apply_goes_behind_its_workers_queued_apply_then() {
    quiet();
    let p = rt().trustee(0).entrust(Vec::<u32>::new());
    let got = within(5, move || {
        fiber_on(0, move || {
            let p2 = p.clone();
            p.apply(move |v| {
                v.push(1);
                p2.apply_then(|v| v.push(2), |()| ());
            });
            p.apply(|v| v.push(3));
            let got = p.apply(|v| v.clone());
            wait_pending();
            got
        })
    });
    assert_eq!(got, vec![1, 2, 3]);
}

/// A queued `apply_then` to self whose closure panics still counts itself out: the fiber's later local applies
/// take the shortcut again (no request reaches the trustee's channels for them).
#[test]
fn to_self_counts_out_a_panicking_apply_then() {
    quiet();
    let p = rt().trustee(0).entrust(0u64);
    let ran = Arc::new(AtomicUsize::new(0));
    let (p2, r2) = (p.clone(), ran.clone());
    // From a plain thread: the closure runs on worker 0 outside any fiber; its `apply_then` has no issuer that
    // waits (its panic goes to the hook).
    p.apply(move |_| {
        p2.apply_then(
            move |_| {
                r2.fetch_add(1, Ordering::SeqCst);
                panic!("boom in a queued apply_then");
            },
            |()| unreachable!("the request panicked"),
        );
    });
    common::eventually("the queued apply_then ran", || load(&ran) == 1);
    let sum = within(5, move || {
        fiber_on(0, move || {
            // Settle: let the worker finish the turn that served it.
            trust_core::yield_now();
            let before = rt().trustee(0).metrics().requests;
            for _ in 0..200 {
                p.apply(|v| *v += 1);
            }
            let after = rt().trustee(0).metrics().requests;
            (after - before, p.apply(|v| *v))
        })
    });
    assert_eq!(sum, (0, 200), "200 local applies, none through a channel");
}

/// A launched fiber's `apply` on another property of its own trustee, while an `apply_then` on its latch waits in
/// the worker's channel to itself (queued behind the launched fibers): before the change it applied inline; now
/// it queues behind that record, which waits for this very fiber to end.
#[test]
fn launched_fiber_local_apply_while_latch_apply_then_is_queued() {
    if !is_child() {
        expect_child_ok(
            "launched_fiber_local_apply_while_latch_apply_then_is_queued",
            &[],
        );
        return;
    }
    quiet();
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let p = rt().trustee(0).entrust(0u64);
    let got = within(5, move || {
        let p2 = p.clone();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        l.launch_then(
            move |_| {
                trust_core::sleep(Duration::from_millis(100));
                p2.apply(|p| {
                    *p += 1;
                    *p
                })
            },
            move |v| s.borrow_mut().push(v),
        );
        // Runs on worker 0 while the fiber sleeps: the latch is in use, so this waits in the channel to self.
        let l2 = l.clone();
        p.apply(move |_| l2.apply_then(|l| *l.get_mut() += 10, |()| ()));
        wait_pending();
        let seen = seen.borrow().clone();
        (seen, p.apply(|p| *p), l.apply(|l| *l.get_mut()))
    });
    assert_eq!(got, (vec![1], 1, 10));
    println!("CHILD-OK");
}

/// A launched fiber's `apply` on its own latch panics with `APPLY_ON_OWN_LATCH` (README: "Waiting where the
/// trustee cannot wait panics"). While a request of the worker to itself is queued, it takes the new path
/// instead, which skips that check: the apply waits in the channel for the fiber that issued it.
#[test]
fn own_latch_apply_with_to_self_queued_still_panics() {
    if !is_child() {
        expect_child_ok("own_latch_apply_with_to_self_queued_still_panics", &[]);
        return;
    }
    quiet();
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let p = rt().trustee(0).entrust(0u64);
    let msg = within(5, move || {
        let own = l.clone();
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            l.launch(move |_| {
                let p2 = p.clone();
                // Inline on `p`; inside, an `apply_then` on `p` itself is queued to self.
                p.apply(move |_| p2.apply_then(|p| *p += 1, |()| ()));
                own.apply(|l| *l.get_mut() += 1);
            })
        }));
        panic_message(r.expect_err("apply on the fiber's own latch panics"))
    });
    assert!(msg.contains("whose `launch` runs this fiber"), "{msg}");
    println!("CHILD-OK");
}

/// Issue order from a worker to its own trustee: an `apply_then` queued to self (its property in use), then a
/// `launch_then` on a latch of the same trustee, issued by the same delegated closure. README: the launched
/// fiber "starts after the requests this thread (or worker) sent the trustee before, like an `apply_then`
/// issued now". The local `launch_then` starts its fiber at once, past the queued request.
#[test]
fn local_launch_then_starts_after_queued_apply_then() {
    quiet();
    let p = rt().trustee(0).entrust(());
    let l = rt().trustee(0).entrust(Latch::new(()));
    let log = Arc::new(StdMutex::new(Vec::new()));
    let (p2, log2) = (p.clone(), log.clone());
    p.apply(move |_| {
        let (a, b) = (log2.clone(), log2);
        p2.apply_then(move |_| a.lock().unwrap().push("apply_then"), |()| ());
        l.launch_then(move |_| b.lock().unwrap().push("launch_then"), |()| ());
    });
    common::eventually("both ran", || log.lock().unwrap().len() == 2);
    assert_eq!(*log.lock().unwrap(), ["apply_then", "launch_then"]);
}

// ---------------------------------------------------------------------------------------------------------
// 2. `Outbox::drop`: exiting threads
// ---------------------------------------------------------------------------------------------------------

/// A thread that leaves only count changes to a stalled trustee exits at once; they are applied later, and
/// the value is dropped exactly once, after the last handle.
#[test]
fn exiting_thread_leaves_count_changes_to_a_stalled_trustee() {
    quiet();
    let drops = Arc::new(AtomicUsize::new(0));
    let t = rt().trustee(1).entrust(CountsDrops(drops.clone()));
    let stalled = common::stall(1, 800);
    let t2 = t.clone();
    let took = std::thread::spawn(move || {
        let start = Instant::now();
        let inner = std::thread::spawn(move || {
            for _ in 0..100 {
                drop(t2.clone());
            }
            drop(t2);
        });
        inner.join().unwrap();
        start.elapsed()
    })
    .join()
    .unwrap();
    assert!(
        took < Duration::from_millis(400),
        "the thread waited {took:?}"
    );
    assert_eq!(load(&drops), 0);
    stalled.join().unwrap();
    assert_eq!(t.apply(|_| 7), 7);
    drop(t);
    common::eventually("the value dropped", || load(&drops) == 1);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(load(&drops), 1);
}

/// Mixed: `apply_then`s (continuation capture and result counted) and count changes, unsent and in flight,
/// when the thread exits without `wait_pending` while the trustee is stalled. The thread waits for the batch
/// that carries continuations; each closure runs once, no continuation runs, each capture and result is
/// dropped once, the results on the exiting thread; the count changes are applied (the value dropped once).
#[test]
fn exiting_thread_with_apply_thens_and_count_changes_mixed() {
    quiet();
    let value = Arc::new(AtomicUsize::new(0));
    let t = rt().trustee(1).entrust(CountsDrops(value.clone()));
    let (ran, conts, caps) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let results = Arc::new(StdMutex::new(Vec::new()));
    let stalled = common::stall(1, 300);
    let (t2, r2, c2, k2, res2) = (
        t.clone(),
        ran.clone(),
        conts.clone(),
        caps.clone(),
        results.clone(),
    );
    let took = std::thread::Builder::new()
        .name("leaver".into())
        .spawn(move || {
            let start = Instant::now();
            for i in 0..40 {
                let (r, c, k, res) = (
                    r2.clone(),
                    c2.clone(),
                    CountsDrops(k2.clone()),
                    res2.clone(),
                );
                t2.apply_then(
                    move |_| {
                        r.fetch_add(1, Ordering::SeqCst);
                        DropsOn(res)
                    },
                    move |_d| {
                        let _k = k;
                        c.fetch_add(1, Ordering::SeqCst);
                    },
                );
                if i % 3 == 0 {
                    drop(t2.clone());
                }
            }
            drop(t2);
            start
        })
        .unwrap()
        .join()
        .unwrap()
        .elapsed();
    stalled.join().unwrap();
    assert!(
        took >= Duration::from_millis(100),
        "waited for its continuations' batch: {took:?}"
    );
    assert_eq!((load(&ran), load(&conts), load(&caps)), (40, 0, 40));
    let res = names(&results);
    assert_eq!(res.len(), 40);
    assert!(res.iter().all(|n| n == "leaver"), "{res:?}");
    assert_eq!(load(&value), 0);
    drop(t);
    common::eventually("the value dropped", || load(&value) == 1);
}

/// The trustee shuts down while an exiting thread's count changes (published, not waited for) are still
/// queued behind a long closure: the thread left at once, and shutdown drops the value exactly once.
#[test]
fn shutdown_after_a_thread_left_count_changes_unanswered() {
    if !is_child() {
        expect_child_ok("shutdown_after_a_thread_left_count_changes_unanswered", &[]);
        return;
    }
    quiet();
    let drops = Arc::new(AtomicUsize::new(0));
    let t = rt().trustee(1).entrust(CountsDrops(drops.clone()));
    let stalled = common::stall(1, 300);
    let t2 = t.clone();
    let start = Instant::now();
    std::thread::spawn(move || {
        let c = t2.clone();
        drop(t2);
        drop(c);
    })
    .join()
    .unwrap();
    assert!(start.elapsed() < Duration::from_millis(200));
    rt().shutdown();
    stalled.join().unwrap();
    assert_eq!(load(&drops), 1);
    drop(t); // after shutdown: nothing
    assert_eq!(load(&drops), 1);
    println!("CHILD-OK");
}

// ---------------------------------------------------------------------------------------------------------
// 3. `Batch::drop`: unpublished records after the trustee stopped
// ---------------------------------------------------------------------------------------------------------

/// A capture whose destructor panics with a payload whose own destructor panics again.
struct Bomb {
    drops: Arc<AtomicUsize>,
    payload_drops: Arc<AtomicUsize>,
}

struct BombPayload(Arc<AtomicUsize>);

impl Drop for BombPayload {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("the payload panics again");
    }
}

impl Drop for Bomb {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        panic::panic_any(BombPayload(self.payload_drops.clone()));
    }
}

/// A plain thread holds 3 `apply_then`s unpublished (fewer than a publish's 48) when the runtime shuts down;
/// then it exits: each record is dropped unrun, once, and a capture whose drop panics with a payload that
/// panics again is contained (no abort); the continuations are dropped once, unrun.
#[test]
fn unpublished_records_with_bomb_captures_are_dropped_once_after_shutdown() {
    if !is_child() {
        expect_child_ok(
            "unpublished_records_with_bomb_captures_are_dropped_once_after_shutdown",
            &[],
        );
        return;
    }
    quiet();
    let t = rt().trustee(1).entrust(0u64);
    let (ran, bombs, payloads, conts) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (issued_tx, issued_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (r2, b2, p2, c2) = (ran.clone(), bombs.clone(), payloads.clone(), conts.clone());
    let thread = std::thread::spawn(move || {
        // A first call makes the thread's client; a request in flight keeps the channel busy, so the next
        // `apply_then`s batch up (the first on an idle channel would go at once).
        t.apply(|_| ());
        let busy = busy_channel(&t);
        for _ in 0..3 {
            let bomb = Bomb {
                drops: b2.clone(),
                payload_drops: p2.clone(),
            };
            let (r, k) = (r2.clone(), CountsDrops(c2.clone()));
            t.apply_then(
                move |_| {
                    let _b = &bomb;
                    r.fetch_add(1, Ordering::SeqCst);
                },
                move |()| drop(k),
            );
        }
        drop(busy);
        issued_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        drop(t);
    });
    issued_rx.recv().unwrap();
    rt().shutdown();
    go_tx.send(()).unwrap();
    thread.join().expect("the exiting thread is not hurt");
    assert_eq!(
        (load(&ran), load(&bombs), load(&payloads), load(&conts)),
        (0, 3, 3, 3)
    );
    println!("CHILD-OK");
}

// ---------------------------------------------------------------------------------------------------------
// 4. `Inbox`: `launch_then` results of a thread that left
// ---------------------------------------------------------------------------------------------------------

/// A `launch_then` result that arrived before its thread exited (uncollected) is dropped on that thread; one
/// that arrives after is dropped by the sender, on the trustee. Each once; no continuation runs; each
/// continuation capture is dropped once, on the exiting thread.
#[test]
fn launch_then_results_of_a_thread_that_left() {
    quiet();
    let l = rt().trustee(1).entrust(Latch::new(0u64));
    let (results, caps) = (
        Arc::new(StdMutex::new(Vec::new())),
        Arc::new(StdMutex::new(Vec::new())),
    );
    let conts = Arc::new(AtomicUsize::new(0));
    let fast_done = Arc::new(AtomicUsize::new(0));
    let (l2, res2, caps2, c2, f2) = (
        l.clone(),
        results.clone(),
        caps.clone(),
        conts.clone(),
        fast_done.clone(),
    );
    std::thread::Builder::new()
        .name("leaver".into())
        .spawn(move || {
            let (res, k, c) = (res2.clone(), DropsOn(caps2.clone()), c2.clone());
            l2.launch_then(
                move |_| {
                    f2.fetch_add(1, Ordering::SeqCst);
                    DropsOn(res)
                },
                move |_d| {
                    let _k = k;
                    c.fetch_add(1, Ordering::SeqCst);
                },
            );
            let (res, k, c) = (res2, DropsOn(caps2), c2);
            l2.launch_then(
                move |_| {
                    trust_core::sleep(Duration::from_millis(200));
                    DropsOn(res)
                },
                move |_d| {
                    let _k = k;
                    c.fetch_add(1, Ordering::SeqCst);
                },
            );
            // The fast fiber's result arrives; this thread never collects it.
            let start = Instant::now();
            while load(&fast_done) == 0 && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(30));
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(names(&caps), ["leaver", "leaver"]);
    common::eventually("both results dropped", || {
        results.lock().unwrap().len() == 2
    });
    let res = names(&results);
    assert_eq!(res[0], "leaver");
    assert!(res[1].starts_with("trust-worker"), "{res:?}");
    assert_eq!(load(&conts), 0);
    // The trustee keeps serving.
    assert_eq!(l.apply(|l| *l.get_mut()), 0);
}

/// A result whose drop panics, arriving after its thread left: contained on the trustee, which keeps serving.
#[test]
fn launch_then_result_panicking_on_drop_after_its_thread_left() {
    quiet();
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let drops = Arc::new(AtomicUsize::new(0));
    let (l2, d2) = (l.clone(), drops.clone());
    std::thread::spawn(move || {
        l2.launch_then(
            move |_| {
                trust_core::sleep(Duration::from_millis(100));
                common::PanicsOnDrop(d2)
            },
            |_| unreachable!("its thread left"),
        );
    })
    .join()
    .unwrap();
    common::eventually("the result dropped", || load(&drops) == 1);
    assert_eq!(l.apply(|l| *l.get_mut() + 5), 5);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(load(&drops), 1);
}

// ---------------------------------------------------------------------------------------------------------
// 5. `may` coroutines
// ---------------------------------------------------------------------------------------------------------

fn co<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    may::config().set_workers(2);
    // SAFETY: the coroutine uses no thread-local storage of its own.
    let h = unsafe { may::coroutine::spawn(f) };
    h.join().unwrap_or_else(|p| panic::resume_unwind(p))
}

/// A continuation issues another and calls `wait_pending` inside (it runs the queued one, which panics: that
/// panic resumes in the outer continuation, which is kept as its panic); a later `apply_then` still runs its
/// continuation at once; `wait_pending` resumes the panic once.
#[test]
fn coroutine_nested_wait_pending_inside_a_continuation() {
    quiet();
    let t = rt().trustee(0).entrust(0u64);
    let got = within(5, move || {
        co(move || {
            let log = Rc::new(RefCell::new(Vec::new()));
            let (t2, l1) = (t.clone(), log.clone());
            t.apply_then(
                |_| 1,
                move |r| {
                    l1.borrow_mut().push(r);
                    let l2 = l1.clone();
                    t2.apply_then(
                        |_| 2,
                        move |r| {
                            l2.borrow_mut().push(r);
                            panic!("c2");
                        },
                    );
                    // Nothing ran yet: the inner one is queued behind this one.
                    let only_mine = l1.borrow().len() == 1;
                    l1.borrow_mut().push(if only_mine { 10 } else { 99 });
                    wait_pending();
                    l1.borrow_mut().push(99);
                },
            );
            let l3 = log.clone();
            t.apply_then(|_| 3, move |r| l3.borrow_mut().push(r));
            let first = panic::catch_unwind(wait_pending).map_err(panic_message);
            let second = panic::catch_unwind(wait_pending).map_err(panic_message);
            let log = log.borrow().clone();
            (log, first, second)
        })
    });
    assert_eq!(got, (vec![1, 10, 2, 3], Err("c2".to_owned()), Ok(())));
}

/// `launch_then` from a coroutine whose fiber panics: the continuation is dropped unrun (once), the panic
/// resumes at `wait_pending`; the next `launch_then` works.
#[test]
fn coroutine_launch_then_whose_fiber_panics() {
    quiet();
    let l = rt().trustee(1).entrust(Latch::new(5u64));
    let caps = Arc::new(AtomicUsize::new(0));
    let c2 = caps.clone();
    let got = within(5, move || {
        co(move || {
            let k = CountsDrops(c2);
            let ran = Rc::new(RefCell::new(Vec::new()));
            let r1 = ran.clone();
            l.launch_then(
                |_| -> u64 { panic!("fiber boom") },
                move |v| {
                    let _k = k;
                    r1.borrow_mut().push(v);
                },
            );
            let r2 = ran.clone();
            l.launch_then(|l| *l.lock() + 1, move |v| r2.borrow_mut().push(v));
            let first = panic::catch_unwind(wait_pending).map_err(panic_message);
            let ran = ran.borrow().clone();
            (ran, first)
        })
    });
    assert_eq!(got, (vec![6], Err("fiber boom".to_owned())));
    assert_eq!(load(&caps), 1);
}

/// Two `apply_then`s from a coroutine whose closures panic with payloads that panic when dropped: the first is
/// kept for `wait_pending`, the second dropped by the runtime (contained); nothing aborts.
#[test]
fn coroutine_panic_payloads_that_panic_when_dropped() {
    quiet();
    let t = rt().trustee(0).entrust(0u64);
    let drops = Arc::new(AtomicUsize::new(0));
    let d2 = drops.clone();
    let got = within(5, move || {
        co(move || {
            for _ in 0..2 {
                let d = d2.clone();
                t.apply_then(
                    move |_| panic::panic_any(common::PanicsOnDrop(d)),
                    |()| unreachable!(),
                );
            }
            let r = panic::catch_unwind(wait_pending);
            let payload: Box<dyn Any + Send> = r.expect_err("the first panic");
            let is_bomb = payload.is::<common::PanicsOnDrop>();
            std::mem::forget(payload);
            (is_bomb, panic::catch_unwind(wait_pending).is_ok())
        })
    });
    assert_eq!(got, (true, true));
    assert_eq!(load(&drops), 1, "the second payload dropped once");
}

/// A chain of 20,000 `apply_then`s from a coroutine, each issued by the previous continuation, runs in issue
/// order before the first `apply_then` returns.
#[test]
fn coroutine_chain_runs_in_order_in_constant_stack() {
    quiet();
    let t = rt().trustee(1).entrust(0u64);
    let got = within(20, move || {
        co(move || {
            let seen = Rc::new(RefCell::new(Vec::new()));
            fn link(t: trust_core::Trust<u64>, seen: Rc<RefCell<Vec<u64>>>, left: u32) {
                if left == 0 {
                    return;
                }
                let t2 = t.clone();
                t.apply_then(
                    |v| {
                        *v += 1;
                        *v
                    },
                    move |v| {
                        seen.borrow_mut().push(v);
                        link(t2, seen, left - 1);
                    },
                );
            }
            link(t.clone(), seen.clone(), 20_000);
            let n = seen.borrow().len();
            wait_pending();
            let ordered = seen.borrow().windows(2).all(|w| w[1] == w[0] + 1);
            (n, ordered, t.apply(|v| *v))
        })
    });
    assert_eq!(got, (20_000, true, 20_000));
}

// ---------------------------------------------------------------------------------------------------------
// 6. `Mutex`/`RwLock` `Debug`
// ---------------------------------------------------------------------------------------------------------

/// Data whose `Debug` tries to take the thread's key, and reports whether it could.
struct TakesKey;

impl std::fmt::Debug for TakesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let got = ThreadKey::get().is_some();
        write!(f, "key:{got}")
    }
}

#[test]
fn debug_while_the_thread_holds_its_key_or_guards() {
    let r = within(5, || {
        let m = Mutex::new(5);
        let rw = RwLock::new(7);
        let mut out = Vec::new();
        // Key free: the data's Debug runs with the key held; free again afterwards.
        out.push(format!("{:?}", Mutex::new(TakesKey)));
        out.push(format!("{:?}", RwLock::new(TakesKey)));
        out.push(format!("{}", ThreadKey::get().is_some()));
        // Key in hand.
        let mut key = ThreadKey::get().unwrap();
        out.push(format!("{m:?} {rw:?} {:?}", Mutex::new(TakesKey)));
        {
            let g = m.lock(&mut key);
            out.push(format!("{m:?} {}", *g));
        }
        {
            let g = rw.read(&mut key);
            out.push(format!("{rw:?} {}", *g));
        }
        {
            let g = rw.write(&mut key);
            out.push(format!("{rw:?} {}", *g));
        }
        // Nested: a mutex of a mutex, printed while the outer is locked.
        let nested = Mutex::new(Mutex::new(1));
        out.push(format!("{nested:?}"));
        drop(key);
        out.push(format!("{}", ThreadKey::get().is_some()));
        out
    });
    assert_eq!(
        r,
        [
            "Mutex { data: key:false, .. }",
            "RwLock { data: key:false, .. }",
            "true",
            "Mutex { data: 5, .. } RwLock { data: 7, .. } Mutex { data: key:false, .. }",
            "Mutex { data: <locked>, .. } 5",
            "RwLock { data: 7, .. } 7",
            "RwLock { data: <locked>, .. } 7",
            "Mutex { data: Mutex { data: 1, .. }, .. }",
            "true",
        ]
    );
}

/// A `Debug` whose data's `Debug` panics gives the key back (the guard of the peek and the key both unwind).
#[test]
fn debug_that_panics_gives_the_key_back() {
    struct Panics;
    impl std::fmt::Debug for Panics {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("debug boom")
        }
    }
    let r = within(5, || {
        let m = Mutex::new(Panics);
        let p = panic::catch_unwind(AssertUnwindSafe(|| format!("{m:?}")));
        let mut key = ThreadKey::get();
        let relocked = key.as_mut().map(|k| m.try_lock(k).is_ok());
        (p.is_err(), key.is_some(), relocked)
    });
    assert_eq!(r, (true, true, Some(true)));
}
