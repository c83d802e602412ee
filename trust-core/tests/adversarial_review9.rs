//! Review of the runtime changes of 3106e24 (stack `returning`), 4402acb (reactor stale deadlines), 51f7ed1
//! (postponed mail, idle-worker checks) and 02f2304 (latch waiters). Each test runs in a child process of its
//! own (this binary again): a fresh runtime of two workers, its own `TRUST_MAX_FIBER_STACKS`, and a hang that
//! becomes a failure (a watchdog in the child, a kill in the parent).

use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

mod common;
use common::*;
use trust_core::net::TcpStream;
use trust_core::{Latch, Trust, local_trustee, spawn, wait_pending};

const BUDGET_PART: &str = "cannot start a fiber";

// ---------------------------------------------------------------------------------------------------------
// 3106e24: `stack::returning`.

/// Set by `SpawnsOnDrop`: 1 = its spawn panicked with the budget message, 2 = it got a fiber.
static DROP_SPAWN: AtomicUsize = AtomicUsize::new(0);

/// A fiber result whose drop spawns a fiber (user code, run by the fiber itself when its handle was dropped
/// unjoined).
struct SpawnsOnDrop;

impl Drop for SpawnsOnDrop {
    fn drop(&mut self) {
        let r = catch_unwind(|| spawn(|| 5u32));
        let code = match r {
            Ok(_) => 2,
            Err(p) => {
                if panic_message(p).contains(BUDGET_PART) {
                    1
                } else {
                    3
                }
            }
        };
        DROP_SPAWN.store(code, Ordering::SeqCst);
    }
}

/// With a budget of one stack, a fiber whose handle was dropped unjoined returns a value whose `Drop` calls
/// `spawn`. The fiber has called `stack::returning` (it counts as a stack on its way back) but the stack is its
/// own, in use by the very code that spawns: `take` yields in a loop that can never end, and the worker is
/// stuck for good. Expected: the spawn fails with the budget message (as before 3106e24), the worker goes on.
#[test]
fn a_result_drop_that_spawns_at_the_budget_does_not_hang_its_worker() {
    if !in_child(
        "a_result_drop_that_spawns_at_the_budget_does_not_hang_its_worker",
        &[("TRUST_MAX_FIBER_STACKS", "1")],
        10,
    ) {
        return;
    }
    quiet();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let f = spawn(move || {
        rx.recv().unwrap();
        SpawnsOnDrop
    });
    // Unjoined: the fiber drops its own result, after `returning`.
    drop(f);
    tx.send(()).unwrap();
    eventually("the result's drop has spawned", || load(&DROP_SPAWN) != 0);
    assert_eq!(
        load(&DROP_SPAWN),
        1,
        "the spawn in the drop fails with the budget message"
    );
    // Both workers still serve.
    for w in 0..2 {
        assert_eq!(
            rt().trustee(w).entrust(w as u64).apply(|v| *v + 1),
            w as u64 + 1
        );
    }
    child_ok();
}

static SLEEPING_IN_DROP: AtomicBool = AtomicBool::new(false);

/// A fiber result whose drop suspends its fiber (a fiber `sleep` of 50 ms).
struct SleepsOnDrop;

impl Drop for SleepsOnDrop {
    fn drop(&mut self) {
        SLEEPING_IN_DROP.store(true, Ordering::SeqCst);
        trust_core::sleep(Duration::from_millis(50));
    }
}

/// Every stack of the budget in use; fiber A on worker 0 has returned a value whose `Drop` sleeps (it suspends
/// A after `stack::returning`). A `spawn` on worker 0 (here inside a delegated closure; a fiber there does the
/// same) finds no stack and `returning > 0`, and yields its thread in a loop: A's stack can come back only
/// when worker 0 resumes A, which it never will. Expected: the spawn gets A's stack 50 ms later (or fails
/// with the budget message); worker 0 goes on either way.
#[test]
fn a_spawn_at_the_budget_beside_a_returning_fiber_suspended_on_its_worker_does_not_deadlock() {
    if !in_child(
        "a_spawn_at_the_budget_beside_a_returning_fiber_suspended_on_its_worker_does_not_deadlock",
        &[("TRUST_MAX_FIBER_STACKS", "6")],
        10,
    ) {
        return;
    }
    quiet();
    calibrate();
    let w0 = rt().trustee(0).entrust(0u64);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let mut sleepers = Vec::new();
    let sleeper = || spawn(|| trust_core::sleep(Duration::from_secs(60)));
    // No fiber that ends before the test does: if the next spawn would land on worker 1, a sleeper takes it.
    if !NEXT_SPAWN.load(Ordering::SeqCst).is_multiple_of(2) {
        sleepers.push(sleeper());
    }
    let a = spawn(move || {
        assert_eq!(local_trustee().index(), 0);
        rx.recv().unwrap();
        SleepsOnDrop
    });
    drop(a);
    // Fill the budget with sleepers.
    loop {
        match catch_unwind(sleeper) {
            Ok(f) => sleepers.push(f),
            Err(p) => {
                let m = panic_message(p);
                assert!(m.contains(BUDGET_PART), "{m}");
                break;
            }
        }
    }
    assert_eq!(sleepers.len(), 5, "6 stacks: A's and these");
    tx.send(()).unwrap();
    eventually("A sleeps in its result's drop", || {
        SLEEPING_IN_DROP.load(Ordering::SeqCst)
    });
    let got = within(8, move || {
        w0.apply(|_| match catch_unwind(|| spawn(|| 7u32)) {
            Ok(f) => Ok(f),
            Err(p) => Err(panic_message(p)),
        })
    });
    match got {
        Ok(f) => assert_eq!(f.join().unwrap(), 7),
        Err(m) => assert!(m.contains(BUDGET_PART), "{m}"),
    }
    std::mem::forget(sleepers);
    child_ok();
}

/// The stack-count invariant on the paths where a fiber ends other than by returning a plain value: its closure
/// panics; its result's drop panics (the handle dropped unjoined); a `launch` that finds no stack. After each, the
/// whole budget (4) can be used again by live fibers, 50 times: `RETURNING` went back to zero each time (if it
/// stayed positive, the fifth spawn below would wait forever instead of failing).
#[test]
fn the_returning_count_balances_after_panics_and_refused_launches() {
    if !in_child(
        "the_returning_count_balances_after_panics_and_refused_launches",
        &[("TRUST_MAX_FIBER_STACKS", "4")],
        25,
    ) {
        return;
    }
    quiet();
    let dropped = Arc::new(AtomicUsize::new(0));
    let latch = rt().trustee(1).entrust(Latch::new(3u64));
    for round in 0..50u64 {
        let p = catch_unwind(|| spawn(|| -> u64 { panic!("boom") }).join()).unwrap();
        assert_eq!(panic_message(p.unwrap_err()), "boom");
        let d = dropped.clone();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        drop(spawn(move || {
            rx.recv().unwrap();
            PanicsOnDrop(d)
        }));
        tx.send(()).unwrap();
        eventually("the result dropped", || {
            load(&dropped) == round as usize + 1
        });
        eventually("all fibers gone", || {
            rt().metrics().iter().all(|m| m.fibers == 0)
        });
        // The whole budget, live at once.
        let gate = Arc::new(AtomicBool::new(false));
        let live: Vec<_> = (0..4u64)
            .map(|i| {
                let gate = gate.clone();
                spawn(move || {
                    while !gate.load(Ordering::Acquire) {
                        trust_core::sleep(Duration::from_micros(300));
                    }
                    i
                })
            })
            .collect();
        // At the budget with nobody returning: refused at once, by spawn and by launch.
        let m = panic_message(catch_unwind(|| spawn(|| 0u64)).unwrap_err());
        assert!(m.contains(BUDGET_PART), "{m}");
        let l = latch.clone();
        let m =
            panic_message(catch_unwind(AssertUnwindSafe(|| l.launch(|l| *l.lock()))).unwrap_err());
        assert!(m.contains(BUDGET_PART), "{m}");
        gate.store(true, Ordering::Release);
        let sum: u64 = live.into_iter().map(|f| f.join().unwrap()).sum();
        assert_eq!(sum, 6);
        assert_eq!(latch.launch(move |l| *l.lock() + round), 3 + round);
    }
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 51f7ed1: postponed mail.

/// A value that logs its drop.
struct Logged {
    log: Arc<Mutex<Vec<&'static str>>>,
    v: u64,
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.log.lock().unwrap().push("dropped");
    }
}

static F_READY: AtomicBool = AtomicBool::new(false);

/// The escape `Worker::retire` is written for: a handle sends a request, then moves to another client whose
/// decrement makes the count zero. Here the request is an `apply_async` (mailed; its future dropped after the
/// first poll, which the docs allow), and the handle moves to a fiber on the trustee that drops it: `retire`
/// now only registers channels and postpones the mailed request (`register_channels`), and `drop_retired`, at
/// the end of the same turn, drops the value — it checks `deferred` but not `postponed` — before the next turn's
/// `read_mail` runs the request on the freed property (use after free; AddressSanitizer reports it). Before
/// 51f7ed1, `retire` ran the mail first. Expected log: the closure, then the drop.
#[test]
fn a_request_mailed_before_the_last_handle_escapes_runs_before_the_value_is_dropped() {
    if !in_child(
        "a_request_mailed_before_the_last_handle_escapes_runs_before_the_value_is_dropped",
        &[],
        10,
    ) {
        return;
    }
    quiet();
    calibrate();
    let log = Arc::new(Mutex::new(Vec::new()));
    let h = rt().trustee(0).entrust(Logged {
        log: log.clone(),
        v: 5,
    });
    let slot: Arc<Mutex<Option<Trust<Logged>>>> = Arc::default();
    let s = slot.clone();
    // Worker 0 runs this fiber without a turn in between: no `read_mail` from here to the drop.
    let f = spawn_on(0, move || {
        F_READY.store(true, Ordering::SeqCst);
        loop {
            if let Some(h) = s.lock().unwrap().take() {
                drop(h);
                return;
            }
            std::hint::spin_loop();
        }
    });
    eventually("the fiber waits for the handle", || {
        F_READY.load(Ordering::SeqCst)
    });
    let l = log.clone();
    {
        let mut fut = Box::pin(h.apply_async(move |x: &mut Logged| {
            l.lock().unwrap().push("ran");
            x.v
        }));
        assert!(
            fut.as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
    }
    *slot.lock().unwrap() = Some(h);
    f.join().unwrap();
    eventually("the value is dropped", || log.lock().unwrap().len() == 2);
    assert_eq!(*log.lock().unwrap(), ["ran", "dropped"]);
    child_ok();
}

/// `retire` inside a delegated closure with mail of every kind waiting (a registration, spawns, an
/// `apply_async`, count changes): all of it runs, each once, exactly as before, and the worker does not park
/// with postponed mail (every wait below would otherwise take the 100 ms park timeout, 200 rounds).
#[test]
fn mail_postponed_by_a_retire_all_runs_and_does_not_wait_for_the_park_timeout() {
    if !in_child(
        "mail_postponed_by_a_retire_all_runs_and_does_not_wait_for_the_park_timeout",
        &[],
        25,
    ) {
        return;
    }
    quiet();
    let drops = Arc::new(AtomicUsize::new(0));
    let gate = rt().trustee(0).entrust(0u64);
    let t0 = Instant::now();
    for round in 0..200u64 {
        let victim = rt().trustee(0).entrust(CountsDrops(drops.clone()));
        let counter = rt().trustee(0).entrust(0u64);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (in_tx, in_rx) = std::sync::mpsc::channel::<()>();
        // The closure holds worker 0 until the mail is in, then drops the last handle of `victim`.
        let g = gate.clone();
        let holder = std::thread::spawn(move || {
            g.apply(move |_| {
                in_tx.send(()).unwrap();
                rx.recv().unwrap();
                drop(victim);
            })
        });
        in_rx.recv().unwrap();
        // Mail for worker 0 while it is inside the closure: a new thread's registration and request, a spawn
        // to it, an apply_async, and a clone's increment.
        let c = counter.clone();
        let newcomer = std::thread::spawn(move || {
            c.apply(|v| {
                *v += 10;
                *v
            })
        });
        let c2 = counter.clone();
        let f = spawn(move || {
            c2.apply(|v| {
                *v += 100;
                *v
            })
        });
        let mut fut = Box::pin(counter.apply_async(|v| {
            *v += 1000;
            *v
        }));
        assert!(
            fut.as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
        std::thread::sleep(Duration::from_micros(200));
        tx.send(()).unwrap();
        holder.join().unwrap();
        newcomer.join().unwrap();
        f.join().unwrap();
        drop(fut);
        eventually("the victim dropped", || load(&drops) == round as usize + 1);
        assert_eq!(counter.apply(|v| *v), 1110, "round {round}");
    }
    assert_eq!(load(&drops), 200);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(15), "200 rounds took {took:?}");
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 02f2304: fibers waiting for a latch's launched fibers.

/// Fibers on the latch's worker apply to it while launched fibers come and go (each launched fiber starts
/// another before it ends, so the count bounces without reaching zero, then reaches it): every waiter is
/// woken when it does, re-checks, and the total is exact. Also from the other worker and a plain thread.
#[test]
fn latch_waiters_wake_when_the_last_launched_fiber_ends_and_re_wait_when_one_starts() {
    if !in_child(
        "latch_waiters_wake_when_the_last_launched_fiber_ends_and_re_wait_when_one_starts",
        &[],
        25,
    ) {
        return;
    }
    quiet();
    calibrate();
    let latch = rt().trustee(0).entrust(Latch::new(0u64));
    for round in 0..20u64 {
        // A chain of 3 launched fibers, each starting the next before it ends.
        let l = latch.clone();
        latch.launch_then(
            move |lt| {
                *lt.lock() += 1;
                let l2 = l.clone();
                l.launch_then(
                    move |lt| {
                        trust_core::sleep(Duration::from_millis(2));
                        *lt.lock() += 1;
                        l2.launch_then(
                            |lt| {
                                trust_core::sleep(Duration::from_millis(2));
                                *lt.lock() += 1;
                            },
                            |()| (),
                        );
                    },
                    |()| (),
                );
            },
            |()| (),
        );
        let waiters: Vec<_> = (0..6)
            .map(|i| {
                let l = latch.clone();
                spawn_on(i % 2, move || l.apply(|lt| *lt.get_mut() += 10))
            })
            .collect();
        for w in waiters {
            w.join().unwrap();
        }
        wait_pending();
        // Launched fibers are done once a plain apply runs after them all: 3 + 60 per round.
        let total = within(5, {
            let l = latch.clone();
            move || {
                let t0 = Instant::now();
                loop {
                    let v = l.apply(|lt| *lt.get_mut());
                    if v == 63 * (round + 1) || t0.elapsed() > Duration::from_secs(3) {
                        return v;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        assert_eq!(total, 63 * (round + 1));
    }
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 4402acb: stale deadlines removed in bulk.

fn pair(listener: &std::net::TcpListener) -> (TcpStream, std::net::TcpStream) {
    let addr = listener.local_addr().unwrap();
    let peer = std::net::TcpStream::connect(addr).unwrap();
    let (mine, _) = listener.accept().unwrap();
    (TcpStream::from_std(mine).unwrap(), peer)
}

/// 100 fibers on one worker read with a one-hour timeout and get their byte (100 stale deadlines: the heap is
/// compacted), then each reads again with a 300 ms timeout and gets nothing: every second read must time out
/// (its new deadline survived the compaction), and a sleeper whose deadline was in the heap throughout wakes.
#[test]
fn a_compaction_of_stale_deadlines_keeps_every_live_one() {
    if !in_child(
        "a_compaction_of_stale_deadlines_keeps_every_live_one",
        &[],
        25,
    ) {
        return;
    }
    rt();
    calibrate();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sleeper = spawn_on(0, || {
        let t0 = Instant::now();
        trust_core::sleep(Duration::from_millis(400));
        t0.elapsed()
    });
    let got = Arc::new(AtomicUsize::new(0));
    let mut peers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..100 {
        let (mine, peer) = pair(&listener);
        mine.set_read_timeout(Some(Duration::from_secs(3600)))
            .unwrap();
        let g = got.clone();
        readers.push(spawn_on(0, move || {
            let mut b = [0u8; 1];
            assert_eq!((&mine).read(&mut b).unwrap(), 1);
            g.fetch_add(1, Ordering::SeqCst);
            mine.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let t0 = Instant::now();
            let e = (&mine).read(&mut b).unwrap_err().kind();
            (e, t0.elapsed())
        }));
        peers.push(peer);
    }
    std::thread::sleep(Duration::from_millis(20));
    for p in peers.iter_mut() {
        std::io::Write::write_all(p, b"x").unwrap();
    }
    let timed_out = within(10, move || {
        readers
            .into_iter()
            .map(|r| r.join().unwrap())
            .filter(|(e, took)| {
                *e == std::io::ErrorKind::TimedOut && *took >= Duration::from_millis(300)
            })
            .count()
    });
    assert_eq!(load(&got), 100);
    assert_eq!(timed_out, 100);
    let slept = sleeper.join().unwrap();
    assert!(
        slept >= Duration::from_millis(400) && slept < Duration::from_secs(5),
        "{slept:?}"
    );
    drop(peers);
    child_ok();
}

/// An `apply_async` on a latch that a launched fiber holds is deferred by the trustee (it must wait for the
/// launched fiber). The runtime shuts down meanwhile: the launched fiber is abandoned, so the request can
/// never run. Expected: its future ends with the shutdown panic, as for any request the shutdown leaves unrun,
/// and the shutdown itself returns. Before the fix, `Worker::close` left the deferred request in place: the
/// future was never woken.
#[test]
fn an_apply_async_deferred_behind_a_launched_fiber_ends_at_shutdown() {
    if !in_child(
        "an_apply_async_deferred_behind_a_launched_fiber_ends_at_shutdown",
        &[],
        15,
    ) {
        return;
    }
    quiet();
    let latch = rt().trustee(0).entrust(Latch::new(0u64));
    let (tx, rx) = std::sync::mpsc::channel();
    let l = latch.clone();
    let launcher = std::thread::spawn(move || {
        l.launch(move |latch| {
            let _g = latch.lock();
            tx.send(()).unwrap();
            trust_core::sleep(Duration::from_secs(60));
        })
    });
    rx.recv().unwrap();
    let l = latch.clone();
    let asker = std::thread::spawn(move || {
        catch_unwind(AssertUnwindSafe(|| {
            futures_lite_block_on(l.apply_async(|l| *l.get_mut()))
        }))
        .map_err(panic_message)
    });
    std::thread::sleep(Duration::from_millis(100));
    rt().shutdown();
    let answer = asker.join().unwrap();
    assert!(
        answer
            .as_ref()
            .is_err_and(|m| m.contains("has been shut down")),
        "{answer:?}"
    );
    drop(launcher);
    child_ok();
}

/// Polls `f` to completion on this thread, parking between polls.
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl std::task::Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut f = std::pin::pin!(f);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
