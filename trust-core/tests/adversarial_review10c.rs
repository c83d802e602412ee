//! Third review of the count mail and deferred requests (commits 7a3ad58, 690f0d4, 38c711f, 47247da): the
//! worker that polls the count mail behind `counts_pending` (`TrusteeShared::poll_counts`, `Worker::poll_counts`,
//! `counting` in `has_work`), and a deferred request that holds back only its own property's drop
//! (`Job::waits_on`, `ToSelf::waits_on`, `Worker::deferred` in `drop_retired`). Each test runs in a child
//! process of its own with a watchdog.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

#[macro_use]
mod common;
use common::*;
use trust_core::{Latch, wait_pending};

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `f` once on this thread (it sends its request) and drops it.
fn poll_once_and_drop<F: Future>(f: F) {
    let mut f = pin!(f);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    assert!(
        f.as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending(),
        "the request ran at once on a busy latch"
    );
}

/// A plain thread that clones and drops a handle of a value on trustee 0 without pause while `on` holds:
/// its changes go to the count mail whenever its lanes are in flight, and the worker polls.
fn hammer(on: Arc<AtomicBool>, quit: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let mine = rt().trustee(0).entrust(0u64);
    std::thread::spawn(move || {
        let mut pairs = 0;
        while !quit.load(Ordering::Relaxed) {
            if on.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    drop(mine.clone());
                }
                pairs += 64;
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        pairs
    })
}

// ---------------------------------------------------------------------------------------------------------

/// `counting` must fall back to false once the count mail stays empty (`Worker::poll_counts`, `IDLE_POLLS`),
/// else `has_work` keeps the worker from parking and it spins at 100% with nothing to do. Five bursts of
/// count-mail changes, each followed by 400 ms of quiet: the workers' CPU time in each quiet window stays
/// near zero, and the value behind the bursts is dropped exactly once afterwards.
#[test]
fn workers_park_after_each_burst_of_count_mail() {
    in_child!("workers_park_after_each_burst_of_count_mail", 10);
    let (on, quit) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let drops = Arc::new(AtomicUsize::new(0));
    let x = rt().trustee(0).entrust(CountsDrops(drops.clone()));
    let h = hammer(on.clone(), quit.clone());
    let mut idle_ticks = Vec::new();
    for _ in 0..5 {
        on.store(true, Ordering::SeqCst);
        let x = x.clone();
        let t = std::thread::spawn(move || {
            for _ in 0..20_000 {
                drop(x.clone());
            }
        });
        std::thread::sleep(Duration::from_millis(40));
        t.join().unwrap();
        on.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(60));
        let before = worker_cpu_ticks();
        std::thread::sleep(Duration::from_millis(400));
        idle_ticks.push(worker_cpu_ticks() - before);
    }
    quit.store(true, Ordering::SeqCst);
    assert!(h.join().unwrap() > 0);
    eprintln!("workers' CPU ticks (10 ms) per 400 ms quiet window: {idle_ticks:?}");
    assert_eq!(load(&drops), 0, "dropped while a handle lives");
    drop(x);
    assert_eq!(wait_for(&drops, 1, 1_000), 1, "never dropped");
    // Two workers spinning for 400 ms would take 80 ticks.
    assert!(
        idle_ticks.iter().all(|&t| t <= 8),
        "a worker kept spinning while idle: {idle_ticks:?}"
    );
    child_ok();
}

/// The flag protocol under a load that toggles on and off (so `counting` goes true and false again and
/// again, and the stop poll resets `announced` between changes): every round, a value gets a clone and its
/// two handles are dropped from two threads; it must be alive while a handle lives and dropped within 1 s of
/// the last one, exactly once.
#[test]
fn last_decrements_across_counting_on_and_off_are_all_applied() {
    in_child!(
        "last_decrements_across_counting_on_and_off_are_all_applied",
        10
    );
    let (on, quit) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let h = hammer(on.clone(), quit.clone());
    let drops = Arc::new(AtomicUsize::new(0));
    let mut slowest = Duration::ZERO;
    const ROUNDS: usize = 150;
    for round in 0..ROUNDS {
        on.store(round % 3 != 0, Ordering::SeqCst);
        if round % 5 == 0 {
            // A quiet spell: the worker stops polling, and the next change is announced by mail again.
            std::thread::sleep(Duration::from_millis(2));
        }
        let v = rt().trustee(0).entrust(CountsDrops(drops.clone()));
        let c = v.clone();
        let t = std::thread::spawn(move || drop(c));
        t.join().unwrap();
        std::thread::sleep(Duration::from_micros(300));
        assert_eq!(
            load(&drops),
            round,
            "round {round}: dropped while a handle lives"
        );
        let start = Instant::now();
        drop(v);
        while load(&drops) == round {
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "round {round}: the last decrement was never applied (1 s)"
            );
            std::thread::yield_now();
        }
        slowest = slowest.max(start.elapsed());
    }
    quit.store(true, Ordering::SeqCst);
    h.join().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    eprintln!("slowest drop: {slowest:?}");
    assert_eq!(load(&drops), ROUNDS);
    child_ok();
}

/// `into_inner` of a latch whose own `apply_async` is deferred behind its launched fiber: the taker waits on
/// the deferred request (`drop_retired`'s `deferred` check), gets nothing while the fiber runs, then the value
/// as the deferred closure left it (7 -> 8), exactly once; the value is never dropped.
#[test]
fn into_inner_of_a_latch_waits_for_its_own_deferred_request() {
    in_child!(
        "into_inner_of_a_latch_waits_for_its_own_deferred_request",
        10
    );
    let ldrops = Arc::new(AtomicUsize::new(0));
    let on0 = rt().trustee(0).entrust(());
    let l = rt()
        .trustee(0)
        .entrust(Latch::new((7u64, CountsDrops(ldrops.clone()))));
    let stop = Arc::new(AtomicBool::new(false));
    launch_reader(&l, &on0, &stop, &Arc::new(AtomicUsize::new(0)));
    let ran = Arc::new(AtomicUsize::new(0));
    {
        let ran = ran.clone();
        poll_once_and_drop(l.apply_async(move |v| {
            v.get_mut().0 += 1;
            ran.fetch_add(1, Ordering::SeqCst);
        }));
    }
    settle(&on0);
    let (tx, rx) = std::sync::mpsc::channel();
    let taker =
        std::thread::spawn(move || tx.send(l.into_inner().map(|v| v.into_inner().0)).unwrap());
    let early = rx.recv_timeout(Duration::from_millis(300)).ok();
    assert_eq!(load(&ran), 0);
    stop.store(true, Ordering::SeqCst);
    let late = early.or_else(|| rx.recv_timeout(Duration::from_millis(2_000)).ok());
    taker.join().unwrap();
    eprintln!("into_inner while the fiber ran: {early:?}; after: {late:?}");
    assert_eq!(
        early, None,
        "into_inner took the latch under its deferred request"
    );
    assert_eq!(late, Some(Some(8)));
    assert_eq!((load(&ran), load(&ldrops)), (1, 1));
    child_ok();
}

/// Two deferred requests on one latch, both futures dropped, the latch's last handle dropped, then the fiber
/// stopped (it ends within a round, the requests run the next): both closures run on the live latch, in some
/// order (7 and 8 seen), and only then is it dropped, once.
#[test]
fn two_deferred_requests_run_before_their_latch_drops() {
    in_child!("two_deferred_requests_run_before_their_latch_drops", 10);
    let ldrops = Arc::new(AtomicUsize::new(0));
    let on0 = rt().trustee(0).entrust(());
    let l = rt()
        .trustee(0)
        .entrust(Latch::new((7u64, CountsDrops(ldrops.clone()))));
    let stop = Arc::new(AtomicBool::new(false));
    launch_reader(&l, &on0, &stop, &Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..2 {
        let (seen, ldrops) = (seen.clone(), ldrops.clone());
        poll_once_and_drop(l.apply_async(move |v| {
            let x = &mut v.get_mut().0;
            seen.lock().unwrap().push((*x, load(&ldrops)));
            *x += 1;
        }));
    }
    settle(&on0);
    drop(l);
    settle(&on0);
    assert_eq!(load(&ldrops), 0, "dropped under its fiber and requests");
    stop.store(true, Ordering::SeqCst);
    assert_eq!(wait_for(&ldrops, 1, 1_000), 1, "never dropped");
    settle(&on0);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        vec![(7, 0), (8, 0)],
        "(value, drops) each closure saw"
    );
    assert_eq!(load(&ldrops), 1);
    child_ok();
}

/// A deferred request that holds its own latch's last handle (captured in the closure): while the fiber
/// runs it is kept alive by that handle; when the closure runs, it drops the handle inside its own closure
/// (retired while in use) and the latch is dropped once, after. In a second latch, the same at shutdown with
/// the fiber never stopped: the deferred request is dropped unrun, its capture once, the latch once, and the
/// shutdown ends.
#[test]
fn a_deferred_request_holding_its_latchs_last_handle() {
    in_child!("a_deferred_request_holding_its_latchs_last_handle", 10);
    let on0 = rt().trustee(0).entrust(());
    let mut outcomes = Vec::new();
    for shutdown in [false, true] {
        let (ldrops, cdrops, ran) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let l = rt()
            .trustee(0)
            .entrust(Latch::new((7u64, CountsDrops(ldrops.clone()))));
        let stop = Arc::new(AtomicBool::new(false));
        launch_reader(&l, &on0, &stop, &Arc::new(AtomicUsize::new(0)));
        {
            let (keep, capture, ran, ldrops) = (
                l.clone(),
                CountsDrops(cdrops.clone()),
                ran.clone(),
                ldrops.clone(),
            );
            poll_once_and_drop(l.apply_async(move |v| {
                assert_eq!(load(&ldrops), 0);
                v.get_mut().0 += 1;
                ran.fetch_add(1, Ordering::SeqCst);
                drop(keep); // the latch's last handle, inside its own closure
                drop(capture);
            }));
        }
        drop(l);
        settle(&on0);
        assert_eq!(
            (load(&ran), load(&ldrops), load(&cdrops)),
            (0, 0, 0),
            "ran or dropped under the launched fiber"
        );
        if shutdown {
            let start = Instant::now();
            rt().shutdown();
            let took = start.elapsed();
            std::thread::sleep(Duration::from_millis(50));
            outcomes.push((load(&ran), load(&ldrops), load(&cdrops)));
            assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
        } else {
            stop.store(true, Ordering::SeqCst);
            wait_for(&ldrops, 1, 1_000);
            settle(&on0);
            outcomes.push((load(&ran), load(&ldrops), load(&cdrops)));
        }
    }
    std::mem::forget(on0); // its trustee is shut down
    eprintln!("(ran, latch drops, capture drops): {outcomes:?}");
    assert_eq!(outcomes, vec![(1, 1, 1), (0, 1, 1)]);
    child_ok();
}

/// A `ToSelf`-wrapped request on a busy latch: a fiber on the latch's own worker issues `apply_then` on it
/// while a launched fiber reads it (in use: it goes by the worker's channel to itself and pauses that batch),
/// drops its handle (the last) and waits for the answer. The request runs once the reader ends, on the live
/// latch; the latch is dropped once, after; and the worker's later applies to its own values work (its
/// `to_self` count went back to zero: an `apply` from a fiber on it after that is local and answers).
#[test]
fn a_to_self_apply_then_on_a_busy_latch_runs_before_its_latch_drops() {
    in_child!(
        "a_to_self_apply_then_on_a_busy_latch_runs_before_its_latch_drops",
        10
    );
    calibrate();
    let ldrops = Arc::new(AtomicUsize::new(0));
    let on0 = rt().trustee(0).entrust(());
    let l = rt()
        .trustee(0)
        .entrust(Latch::new((7u64, CountsDrops(ldrops.clone()))));
    let stop = Arc::new(AtomicBool::new(false));
    launch_reader(&l, &on0, &stop, &Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let issued = Arc::new(AtomicBool::new(false));
    let fiber = {
        let (seen, ldrops, issued) = (seen.clone(), ldrops.clone(), issued.clone());
        let other = rt().trustee(0).entrust(40u64);
        spawn_on(0, move || {
            let seen2 = seen.clone();
            l.apply_then(
                move |v| {
                    let x = &mut v.get_mut().0;
                    *x += 1;
                    (*x, load(&ldrops))
                },
                move |r| seen2.lock().unwrap().push(r),
            );
            drop(l);
            issued.store(true, Ordering::SeqCst);
            wait_pending();
            // After the paused request ran: a plain local apply on this worker.
            other.apply(|o| *o + 2)
        })
    };
    eventually("the fiber issued", || issued.load(Ordering::SeqCst));
    settle(&on0);
    assert_eq!(load(&ldrops), 0, "dropped under its fiber");
    assert!(
        seen.lock().unwrap().is_empty(),
        "ran under its launched fiber"
    );
    stop.store(true, Ordering::SeqCst);
    let r = within(3, move || fiber.join().unwrap());
    assert_eq!(wait_for(&ldrops, 1, 1_000), 1, "never dropped");
    assert_eq!(*seen.lock().unwrap(), vec![(8, 0)]);
    assert_eq!(r, 42);
    child_ok();
}
