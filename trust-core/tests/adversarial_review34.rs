//! Review 34: programs written to break the promises of `entrust`'s flow control (commit a5ed935,
//! `Trustee::entrust`): "never waits while fewer than 256 registrations are queued [for a trustee]; past that,
//! from a thread, a fiber or a `may` coroutine it waits for its own (a blocking round trip, which runs no
//! continuation)", "a delegated closure (or a continuation on a worker) cannot wait, so its `entrust`s all
//! queue", and "a loop that entrusts and drops values goes at the trustee's pace".
//!
//! Attacked here: an `apply_then` that pauses its caller's channel (on a latch a launched fiber holds until
//! the caller goes on) followed by 257 entrusts, from a thread and from a fiber; the count of queued
//! registrations (`TrusteeShared::registering`), measured as the number of entrusts that return while the
//! trustee is held (exactly 256), fresh and after `may` coroutines cancelled inside a waiting entrust,
//! threads exiting with registrations queued, values taken back (`into_inner`, `try_unwrap`) or with
//! panicking destructors while their registrations queue, and 2,000 registrations queued by a delegated
//! closure; waiting entrusts from a thread-local destructor that runs after the runtime's client is gone,
//! from an `apply_then` continuation run by `wait_pending`, and from a coroutine; continuations run inside a
//! waiting entrust; values applied, cloned, taken back and dropped at once while their registrations queue
//! or are waited for (thread, fiber, coroutine); memory for 8 producer threads, 64 producer fibers, 64 KiB
//! values and `#[entrust]` structs; two trustees flooded by each other's fibers; a shutdown racing threads,
//! fibers and coroutines that wait in `entrust`; a tokio current-thread executor entrusting past the queue.
//!
//! Findings:
//! - `a_thread_entrust_past_the_queue_does_not_wait_behind_its_own_paused_apply_then`,
//!   `a_fiber_entrust_past_the_queue_does_not_wait_behind_its_own_paused_apply_then` (fixed): a waiting
//!   entrust was a blocking request on the caller's own channel (`call_from_thread` / `call_from`), so it went
//!   behind the caller's earlier requests to that trustee, and one of those may wait for what the caller does
//!   after the entrust: an `apply_then` on a latch that a launched fiber holds until the caller sets a flag
//!   pauses the channel, and the 257th entrust (trustee held 300 ms while the first 256 queued) then waited
//!   for good: `HUNG: no answer within 10 s`, from a plain thread and from a fiber (whose worker's channel is
//!   shared by all its fibers and closures, so any of them pausing it was enough). Before a5ed935 no entrust
//!   waited and the same program ended at once. Fixed (`register_and_wait` in `api/trustee.rs`): the registration that
//!   waits goes by the trustee's mailbox, never paused, and the caller waits for it to run as for a fiber's
//!   promise (a thread parks, a fiber suspends, a coroutine yields; no continuation runs; no client context is
//!   needed, so a late thread-local destructor makes none). Both tests now pass in ~0.4 s.
//! - `the_queued_registrations_stay_counted_exactly_after_every_abuse` (fixed): a `may` coroutine cancelled
//!   while its entrust waited unwound out of `Trustee::entrust` after the registration was sent but before
//!   the handle was made; the trustee then registered the value with a count of one that no handle held, so
//!   it lived until shutdown: 3 coroutines cancelled in a waiting entrust left 259 values made, 256 dropped.
//!   Fixed (`Trustee::entrust`): the handle is made before the registration goes, so the unwind drops it and
//!   gives the count up as any early drop does (a registration dropped unrun means a shutdown, where the
//!   handle's drop does nothing): 259 made, 259 dropped.
//!
//! Held: the count of queued registrations stayed exact: 256 entrusts returned while the trustee was held
//! fresh and after each abuse above ([256, 256, 256, 256, 256]); every value of every test dropped exactly
//! once; waiting entrusts from a late thread-local destructor, a continuation run by `wait_pending` and a
//! coroutine (356 each) all returned the right values; no continuation ran inside a waiting entrust, even in
//! one; 600 values per caller kind applied, cloned, taken back or dropped at once read right, 392 takes of
//! 392 succeeded per kind, 1,800 values made and dropped; peak RSS growth (KiB): 8 threads x 50,000 x 264 B
//! 2,416-5,836; 64 fibers x 5,000 4,752-6,840 before the fix and 12,432-13,992 after it (12,532-15,768 for
//! 64 x 20,000, and one fiber +7.6 MiB for 300,000 pairs: a higher constant, not linear; the waiting fiber no
//! longer waits for its worker's whole channel), 20,000
//! x 64 KiB 14,636-24,896 (the queue holds values: 256 x 64 KiB = 16 MiB), 200,000 `#[entrust]` structs
//! 0-64; 64 fibers flooding each other's trustees all finished, 192,000 values dropped; a shutdown 150 ms
//! into a 600 ms hold, with 3 threads, 4 fibers and 2 coroutines entrusting: 265 entrusts went in (256
//! queued, one waiting per producer; the fibers' wakes came too late and they were abandoned), every later
//! one panicked with the shutdown message, 270 values made and 270 dropped, in 444-460 ms (12 runs). The 1,000,000-pair test of
//! `entrust_flow_control.rs`: +672-4,032 KiB before the fix, +7,856-7,984 KiB after, in the same 3.7-3.9 s.
//! Seen, documented ("from a thread ... it waits"): on a tokio current-thread executor, 300 entrusts to a
//! trustee held 400 ms stall the executor: a 5 ms ticker ticked 0 times meanwhile.
//!
//! Every test runs in a child process of its own, one at a time (`SERIAL`), under a watchdog.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread;
use std::time::{Duration, Instant};

#[macro_use]
mod common;
use common::*;
use trust_core::{Latch, Trust, wait_pending};

static SERIAL: Mutex<()> = Mutex::new(());

/// One child at a time: the counts and RSS are process-wide, and the timings share the two cores.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registrations a trustee may have queued before an `entrust` that can wait does (`REGISTERING_MAX`).
const QUEUED: usize = 256;

/// Holds trustee `index` in a closure for `ms` milliseconds (from a thread of its own); returns once the
/// closure runs, with a flag that turns true as it ends.
fn hold(index: usize, ms: u64) -> Arc<AtomicBool> {
    let over = Arc::new(AtomicBool::new(false));
    let t = rt().trustee(index).entrust(());
    t.apply(|_| ());
    let (tx, rx) = mpsc::channel();
    let o = over.clone();
    thread::spawn(move || {
        t.apply(move |_| {
            tx.send(()).unwrap();
            thread::sleep(Duration::from_millis(ms));
            o.store(true, Ordering::SeqCst);
        })
    });
    rx.recv().unwrap();
    over
}

/// How many of `n` entrusts to trustee 1 (values `0..n`) return while it is held for `ms` ms: with nothing
/// queued before, exactly `QUEUED`. The handles read back their values.
fn entrusts_while_held(n: usize, ms: u64) -> usize {
    let over = hold(1, ms);
    let mut before = 0;
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        handles.push(rt().trustee(1).entrust(i));
        if !over.load(Ordering::SeqCst) {
            before += 1;
        }
    }
    assert!(
        over.load(Ordering::SeqCst),
        "all {n} entrusts returned while trustee 1 was held"
    );
    for (i, h) in handles.iter().enumerate() {
        assert_eq!(h.apply(|v| *v), i, "value {i} read back");
    }
    before
}

/// Round trips to both trustees and a pause: every registration queued before has run.
fn settle_both() {
    for i in 0..2 {
        let t = rt().trustee(i).entrust(());
        settle(&t);
    }
    thread::sleep(Duration::from_millis(30));
}

/// Peak resident memory so far (`VmHWM`), in KiB.
fn peak_rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------------------------------------
// 1. A waiting entrust queued behind the caller's own request, which waits for something the caller does
//    after the entrust.

/// The scene: a latch on trustee 0 held open by a launched fiber until `stop`; trustee 0 held for 300 ms; the
/// caller issues an `apply_then` on the latch (it must wait for the launched fiber: its batch pauses there),
/// then entrusts 257 values to trustee 0 (256 queue while the trustee is held; the 257th waits), and only then
/// sets `stop`. Before a5ed935 no entrust waited and this always finished; an entrust that waits for its own
/// registration behind the paused `apply_then` of its own channel waits for `stop`, which comes after it.
fn apply_then_on_a_held_latch_then_entrust(
    l: &Trust<Latch<u64>>,
    stop: &AtomicBool,
) -> Vec<Trust<usize>> {
    let _held = stall(0, 300);
    l.apply_then(|l| *l.get_mut() += 1, |()| ());
    let handles: Vec<_> = (0..=QUEUED).map(|i| rt().trustee(0).entrust(i)).collect();
    stop.store(true, Ordering::SeqCst);
    handles
}

#[test]
fn a_thread_entrust_past_the_queue_does_not_wait_behind_its_own_paused_apply_then() {
    let _s = serial();
    in_child!(
        "a_thread_entrust_past_the_queue_does_not_wait_behind_its_own_paused_apply_then",
        30
    );
    let (_on0, l, stop) = held_latch();
    let l2 = l.clone();
    let handles = within(10, move || {
        let handles = apply_then_on_a_held_latch_then_entrust(&l2, &stop);
        wait_pending();
        handles
    });
    assert_eq!(
        l.apply(|l| *l.get_mut()),
        1,
        "the apply_then on the latch ran once"
    );
    for (i, h) in handles.iter().enumerate() {
        assert_eq!(h.apply(|v| *v), i);
    }
    child_ok();
}

#[test]
fn a_fiber_entrust_past_the_queue_does_not_wait_behind_its_own_paused_apply_then() {
    let _s = serial();
    in_child!(
        "a_fiber_entrust_past_the_queue_does_not_wait_behind_its_own_paused_apply_then",
        30
    );
    calibrate();
    let (_on0, l, stop) = held_latch();
    let l2 = l.clone();
    let handles = within(10, move || {
        spawn_on(1, move || {
            let handles = apply_then_on_a_held_latch_then_entrust(&l2, &stop);
            wait_pending();
            handles
        })
        .join()
        .unwrap()
    });
    assert_eq!(
        l.apply(|l| *l.get_mut()),
        1,
        "the apply_then on the latch ran once"
    );
    for (i, h) in handles.iter().enumerate() {
        assert_eq!(h.apply(|v| *v), i);
    }
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 2. The count of queued registrations stays exact.

/// A value that panics when dropped, and counts its drops first.
struct PanicsWhenDropped(Arc<AtomicUsize>);

impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("a value's destructor panics");
    }
}

/// `entrusts_while_held` gives exactly 256 in a fresh process, and again after every way found to lose a
/// registration or count one twice: `may` coroutines cancelled while their entrust waits; threads that exit
/// with their registrations queued; values taken back (`into_inner`, `try_unwrap`) and dropped while their
/// registrations are still queued; values whose destructor panics; 2,000 registrations queued by a delegated
/// closure; entrusts from a thread-local destructor that runs after the runtime's client is gone. Each
/// drop is counted: every value made is dropped exactly once.
#[test]
fn the_queued_registrations_stay_counted_exactly_after_every_abuse() {
    let _s = serial();
    in_child!(
        "the_queued_registrations_stay_counted_exactly_after_every_abuse",
        90
    );
    may::config().set_workers(2);
    let mut seen = vec![entrusts_while_held(QUEUED + 20, 600)];
    settle_both();

    // (a) Coroutines cancelled while their entrust waits (trustee 1 held: each waits past the queue).
    let tally = Arc::new(Tally::default());
    let over = hold(1, 400);
    let mut cos = Vec::new();
    for _ in 0..4 {
        let t = tally.clone();
        cos.push(coroutine(move || {
            let mut hs = Vec::new();
            for _ in 0..200 {
                hs.push(rt().trustee(1).entrust(Tallied::new(&t)));
            }
            hs.len()
        }));
    }
    thread::sleep(Duration::from_millis(150));
    assert!(!over.load(Ordering::SeqCst));
    for co in &cos {
        // SAFETY: `may`'s cancel: the coroutine unwinds at its next yield (inside the waiting entrust).
        unsafe { co.coroutine().cancel() };
    }
    let cancelled = cos
        .into_iter()
        .map(|co| co.join())
        .filter(Result::is_err)
        .count();
    assert!(
        cancelled >= 2,
        "only {cancelled} of 4 coroutines were cancelled while they waited"
    );
    eventually("trustee 1 is free", || over.load(Ordering::SeqCst));
    settle_both();
    let deadline = Instant::now() + Duration::from_secs(3);
    while tally.counts().0 != tally.counts().1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let (made, dropped) = tally.counts();
    eprintln!(
        "{cancelled} coroutines cancelled in a waiting entrust: {made} values made, {dropped} dropped"
    );
    assert_eq!(
        made - dropped,
        0,
        "{cancelled} coroutines cancelled in a waiting entrust: values made {made}, dropped {dropped}"
    );
    seen.push(entrusts_while_held(QUEUED + 20, 600));
    settle_both();

    // (b) Threads that exit with their registrations queued (trustee 1 held).
    let tally = Arc::new(Tally::default());
    let over = hold(1, 300);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let t = tally.clone();
            thread::spawn(move || {
                for _ in 0..100 {
                    drop(rt().trustee(1).entrust(Tallied::new(&t)));
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    eventually("trustee 1 is free", || over.load(Ordering::SeqCst));
    settle_both();
    eventually("the exited threads' values dropped", || {
        let (made, dropped) = tally.counts();
        made == 400 && dropped == 400
    });
    seen.push(entrusts_while_held(QUEUED + 20, 600));
    settle_both();

    // (c) Values taken back at once, and values whose destructor panics, while registrations are queued.
    let tally = Arc::new(Tally::default());
    let panicked = Arc::new(AtomicUsize::new(0));
    let over = hold(1, 300);
    let (t2, p2) = (tally.clone(), panicked.clone());
    let taker = thread::spawn(move || {
        let mut back = 0;
        for i in 0..300 {
            let h = rt().trustee(1).entrust(Tallied::new(&t2));
            let v = if i % 2 == 0 {
                h.into_inner()
            } else {
                h.try_unwrap().ok()
            };
            back += usize::from(v.is_some());
            drop(rt().trustee(1).entrust(PanicsWhenDropped(p2.clone())));
        }
        back
    });
    assert_eq!(taker.join().unwrap(), 300, "every value taken back");
    assert!(over.load(Ordering::SeqCst));
    settle_both();
    assert_eq!(tally.counts(), (300, 300));
    eventually("the panicking values dropped", || {
        panicked.load(Ordering::SeqCst) == 300
    });
    seen.push(entrusts_while_held(QUEUED + 20, 600));
    settle_both();

    // (d) 2,000 registrations queued by a delegated closure on trustee 0 while trustee 1 is held.
    let tally = Arc::new(Tally::default());
    let over = hold(1, 300);
    let t2 = tally.clone();
    let on0 = rt().trustee(0).entrust(());
    let hs = on0.apply(move |_| {
        (0..2000)
            .map(|_| rt().trustee(1).entrust(Tallied::new(&t2)))
            .collect::<Vec<_>>()
    });
    assert!(
        !over.load(Ordering::SeqCst),
        "the delegated closure's entrusts waited"
    );
    drop(hs);
    eventually("trustee 1 is free", || over.load(Ordering::SeqCst));
    settle_both();
    eventually("the delegated closure's values dropped", || {
        tally.counts() == (2000, 2000)
    });
    seen.push(entrusts_while_held(QUEUED + 20, 600));
    eprintln!("entrusts returned while trustee 1 was held, after each abuse: {seen:?}");
    assert_eq!(
        seen,
        vec![QUEUED; 5],
        "entrusts that returned while trustee 1 was held (fresh, then after each abuse)"
    );
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 3. Callers that now wait: where waiting is allowed, it must work, with exact values.

/// Entrusts `n` values to trustee 1 from a thread-local destructor that runs after the runtime's own client
/// thread-local is gone, trustee 1 held meanwhile (so all past 256 wait), and reports their values read back.
struct LateEntruster(Option<(usize, mpsc::Sender<Vec<usize>>)>);

impl Drop for LateEntruster {
    fn drop(&mut self) {
        let Some((n, report)) = self.0.take() else {
            return;
        };
        let hs: Vec<_> = (0..n).map(|i| rt().trustee(1).entrust(i)).collect();
        let _ = report.send(hs.iter().map(|h| h.apply(|v| *v)).collect());
    }
}

thread_local! {
    static LATE: RefCell<LateEntruster> = const { RefCell::new(LateEntruster(None)) };
}

/// Past the queue from a thread-local destructor that runs after the runtime's client is gone (the entrust
/// waits through the late client), from an `apply_then` continuation that `wait_pending` runs on a plain
/// thread (a blocking call is allowed there), and from a `may` coroutine: all finish, with their values.
#[test]
fn entrusts_that_wait_from_a_late_destructor_a_continuation_and_a_coroutine() {
    let _s = serial();
    in_child!(
        "entrusts_that_wait_from_a_late_destructor_a_continuation_and_a_coroutine",
        60
    );
    may::config().set_workers(2);
    const N: usize = QUEUED + 100;
    let want: Vec<usize> = (0..N).collect();

    // A late thread-local destructor: registered before the thread's client (the thread's first call).
    let _over = hold(1, 300);
    let (tx, rx) = mpsc::channel();
    let th = thread::spawn(move || {
        LATE.with(|l| *l.borrow_mut() = LateEntruster(Some((N, tx))));
        rt().trustee(0).entrust(()).apply(|_| ());
    });
    th.join().unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        want,
        "late destructor"
    );
    settle_both();

    // A continuation run by `wait_pending`.
    let _over = hold(1, 300);
    let got = within(10, || {
        let out = Rc::new(RefCell::new(Vec::new()));
        let on0 = rt().trustee(0).entrust(0u64);
        let o = out.clone();
        on0.apply_then(
            |v| *v + 1,
            move |one| {
                let hs: Vec<_> = (0..N)
                    .map(|i| rt().trustee(1).entrust(i * one as usize))
                    .collect();
                o.borrow_mut().extend(hs.iter().map(|h| h.apply(|v| *v)));
            },
        );
        wait_pending();
        out.take()
    });
    assert_eq!(got, want, "continuation");
    settle_both();

    // A `may` coroutine.
    let _over = hold(1, 300);
    let co = coroutine(|| {
        let hs: Vec<_> = (0..N).map(|i| rt().trustee(1).entrust(i)).collect();
        hs.iter().map(|h| h.apply(|v| *v)).collect::<Vec<_>>()
    });
    assert_eq!(co.join().unwrap(), want, "coroutine");
    child_ok();
}

/// An entrust that waits runs no continuation, from a thread whose continuations are ready and which is
/// inside a continuation itself (`wait_pending` running it): the other continuation waits for the next
/// `wait_pending` turn.
#[test]
fn an_entrust_that_waits_inside_a_continuation_runs_no_other_continuation() {
    let _s = serial();
    in_child!(
        "an_entrust_that_waits_inside_a_continuation_runs_no_other_continuation",
        30
    );
    let _over = hold(1, 300);
    within(10, || {
        let on0 = rt().trustee(0).entrust(0u64);
        let order = Rc::new(RefCell::new(Vec::new()));
        let o1 = order.clone();
        let on0b = on0.clone();
        on0.apply_then(
            |v| *v,
            move |_| {
                // Issued and answered while this continuation waits in its entrusts.
                let o = o1.clone();
                on0b.apply_then(|v| *v, move |_| o.borrow_mut().push("second"));
                on0b.apply(|_| ());
                for i in 0..=QUEUED {
                    drop(rt().trustee(1).entrust(i));
                    assert!(
                        !o1.borrow().contains(&"second"),
                        "a continuation ran inside entrust {i}"
                    );
                }
                o1.borrow_mut().push("first");
            },
        );
        wait_pending();
        assert_eq!(*order.borrow(), ["first", "second"]);
    });
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 4. A value entrusted, then used at once, while its registration is queued or being waited for.

/// From a thread, a fiber and a `may` coroutine, with trustee 1 held so that the first 256 registrations
/// queue and the rest wait: each value entrusted is at once applied, cloned, its clone dropped, and then
/// alternately taken back (`into_inner`, `try_unwrap`) or dropped. Every value reads right, the takes all
/// succeed, and every value is dropped exactly once (by the taker or the trustee).
#[test]
fn values_used_at_once_while_their_registrations_queue_or_wait() {
    let _s = serial();
    in_child!(
        "values_used_at_once_while_their_registrations_queue_or_wait",
        90
    );
    may::config().set_workers(2);
    calibrate();
    const N: usize = 600;
    let tally = Arc::new(Tally::default());
    fn run(tally: Arc<Tally>) -> usize {
        let mut back = 0;
        let mut kept = Vec::new();
        for i in 0..N {
            let h = rt().trustee(1).entrust((i, Tallied::new(&tally)));
            if i % 50 == 0 {
                // Kept alive across the queue: read back at the end.
                kept.push(h.clone());
            }
            let c = h.clone();
            assert_eq!(c.apply(|v| v.0), i);
            drop(c);
            match i % 3 {
                0 => back += usize::from(h.into_inner().map(|v| v.0) == Some(i)),
                1 => back += usize::from(h.try_unwrap().ok().map(|v| v.0) == Some(i)),
                _ => drop(h),
            }
        }
        for (k, h) in kept.iter().enumerate() {
            assert_eq!(h.apply(|v| v.0), 50 * k);
        }
        back
    }
    // The kept ones (every 50th) are not the last handle: their takes fail.
    let expected_back = (0..N).filter(|i| i % 3 != 2 && i % 50 != 0).count();
    let _over = hold(1, 300);
    assert_eq!(run(tally.clone()), expected_back, "thread");
    let _over = hold(1, 300);
    let t = tally.clone();
    assert_eq!(
        spawn_on(0, move || run(t)).join().unwrap(),
        expected_back,
        "fiber"
    );
    let _over = hold(1, 300);
    let t = tally.clone();
    assert_eq!(
        coroutine(move || run(t)).join().unwrap(),
        expected_back,
        "coroutine"
    );
    settle_both();
    eventually("every value dropped once", || {
        tally.counts() == (3 * N, 3 * N)
    });
    thread::sleep(Duration::from_millis(50));
    assert_eq!(tally.counts(), (3 * N, 3 * N), "values made and dropped");
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 5. Memory for other shapes of producers.

/// A value of `N` bytes that counts its drops.
struct Sized<const N: usize> {
    _bytes: [u8; N],
    dropped: Arc<AtomicUsize>,
}

impl<const N: usize> Sized<N> {
    fn new(fill: u8, dropped: &Arc<AtomicUsize>) -> Self {
        Sized {
            _bytes: [fill; N],
            dropped: dropped.clone(),
        }
    }
}

impl<const N: usize> Drop for Sized<N> {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

#[trust_core::entrust]
struct Account {
    balance: u64,
    _pad: [u64; 30],
    dropped: Arc<AtomicUsize>,
}

impl Drop for Account {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

#[trust_core::entrust]
impl Account {
    fn deposit(&mut self, n: u64) -> u64 {
        self.balance += n;
        self.balance
    }
}

/// Producers that entrust and drop values on trustee 1 as fast as they can: 8 threads of 50,000 values of
/// 264 bytes; 64 fibers on worker 0 of 5,000 each; one thread of 20,000 values of 64 KiB; one thread of
/// 200,000 `#[entrust]` structs, each used once. Each shape's peak RSS growth is bounded by what the queue
/// holds (256 values, plus one per waiting producer), not by the count; every value dropped exactly once.
#[test]
fn other_producer_shapes_stay_in_bounded_memory() {
    let _s = serial();
    in_child!("other_producer_shapes_stay_in_bounded_memory", 240);
    calibrate();
    rt().trustee(1).entrust(()).apply(|_| ());
    let dropped = Arc::new(AtomicUsize::new(0));
    let mut grown = Vec::new();
    let mut expected = 0;
    let base = peak_rss_kib();

    // 8 threads.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let d = dropped.clone();
            thread::spawn(move || {
                for i in 0..50_000usize {
                    drop(
                        rt().trustee(1)
                            .entrust(Sized::<256>::new((i + t) as u8, &d)),
                    );
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    expected += 8 * 50_000;
    settle_both();
    grown.push((
        "8 threads x 50,000 x 264 B",
        peak_rss_kib().saturating_sub(base),
    ));

    // 64 fibers on worker 0.
    let base = peak_rss_kib();
    let fibers: Vec<_> = (0..64)
        .map(|f| {
            let d = dropped.clone();
            spawn_on(0, move || {
                for i in 0..5_000usize {
                    drop(
                        rt().trustee(1)
                            .entrust(Sized::<256>::new((i + f) as u8, &d)),
                    );
                }
            })
        })
        .collect();
    for f in fibers {
        f.join().unwrap();
    }
    expected += 64 * 5_000;
    settle_both();
    grown.push((
        "64 fibers x 5,000 x 264 B",
        peak_rss_kib().saturating_sub(base),
    ));

    // Big values.
    let base = peak_rss_kib();
    for i in 0..20_000usize {
        drop(
            rt().trustee(1)
                .entrust(Box::new(Sized::<{ 64 * 1024 }>::new(i as u8, &dropped))),
        );
    }
    expected += 20_000;
    settle_both();
    grown.push(("20,000 x 64 KiB", peak_rss_kib().saturating_sub(base)));

    // `#[entrust]` structs.
    let base = peak_rss_kib();
    let mut total = 0;
    for i in 0..200_000u64 {
        let a = rt().trustee(1).entrust(Account {
            balance: i,
            _pad: [i; 30],
            dropped: dropped.clone(),
        });
        if i % 1000 == 0 {
            total += a.deposit(1);
        }
    }
    expected += 200_000;
    assert_eq!(total, (0..200).map(|k| k * 1000 + 1).sum::<u64>());
    settle_both();
    grown.push((
        "200,000 #[entrust] structs",
        peak_rss_kib().saturating_sub(base),
    ));

    eprintln!("peak RSS growth (KiB): {grown:?}");
    eventually("every value dropped", || {
        dropped.load(Ordering::SeqCst) == expected
    });
    // 256 queued values of 64 KiB are 16 MiB; the small shapes' bound is that of `entrust_flow_control.rs`.
    let bounds = [32 * 1024, 32 * 1024, 48 * 1024, 32 * 1024];
    for ((what, kib), bound) in grown.iter().zip(bounds) {
        assert!(
            *kib < bound,
            "{what}: peak RSS grew by {kib} KiB (bound {bound} KiB); all: {grown:?}"
        );
    }
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 6. Both trustees flooded by each other's fibers; a shutdown racing waiting entrusts.

/// 32 fibers on each worker entrust and drop 3,000 values each on the *other* trustee, both trustees held for
/// 200 ms at the start, so that both queues fill and the fibers of each worker wait on the other. All finish
/// and every value is dropped exactly once.
#[test]
fn two_trustees_flooded_by_each_others_fibers() {
    let _s = serial();
    in_child!("two_trustees_flooded_by_each_others_fibers", 60);
    calibrate();
    let dropped = Arc::new(AtomicUsize::new(0));
    let sum = Arc::new(AtomicUsize::new(0));
    let _h0 = stall(0, 200);
    let _h1 = stall(1, 200);
    let mut fibers = Vec::new();
    for w in 0..2 {
        for f in 0..32usize {
            let (d, s) = (dropped.clone(), sum.clone());
            fibers.push(spawn_on(w, move || {
                for i in 0..3_000usize {
                    let h = rt().trustee(1 - w).entrust((i, CountsDrops(d.clone())));
                    if i % 500 == 0 {
                        s.fetch_add(h.apply(|v| v.0) + f, Ordering::SeqCst);
                    }
                }
            }));
        }
    }
    let fibers = within(40, move || {
        fibers
            .into_iter()
            .map(|f| f.join().is_ok())
            .collect::<Vec<_>>()
    });
    assert!(fibers.iter().all(|ok| *ok), "a fiber panicked");
    settle_both();
    eventually("every value dropped", || {
        dropped.load(Ordering::SeqCst) == 64 * 3_000
    });
    let per_fiber: usize = (0..3_000).step_by(500).sum();
    let want = 2 * (32 * per_fiber + 6 * (0..32).sum::<usize>());
    assert_eq!(sum.load(Ordering::SeqCst), want);
    child_ok();
}

/// Three threads, four fibers on worker 0 and two `may` coroutines entrust counted values to trustee 1, held
/// for 600 ms, until an entrust panics; the runtime shuts down 150 ms in, while they wait past the queue.
/// Every thread's and coroutine's entrust returns or panics with the shutdown message (none hangs, none
/// panics otherwise); the fibers, abandoned by the shutdown or ended by the panic, join with the shutdown
/// message; every value made is dropped exactly once (by the shutdown, or unwinding out of the entrust that
/// panicked), none of them by a handle dropped after the shutdown.
#[test]
fn a_shutdown_racing_entrusts_that_wait() {
    let _s = serial();
    in_child!("a_shutdown_racing_entrusts_that_wait", 30);
    may::config().set_workers(2);
    calibrate();
    let made = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    /// Entrusts until an entrust panics: the handles made, and the panic's message.
    fn produce(m: Arc<AtomicUsize>, d: Arc<AtomicUsize>) -> (Vec<Trust<CountsDrops>>, String) {
        let mut handles = Vec::new();
        loop {
            m.fetch_add(1, Ordering::SeqCst);
            let v = CountsDrops(d.clone());
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rt().trustee(1).entrust(v)
            })) {
                Ok(h) => handles.push(h),
                Err(p) => return (handles, panic_message(p)),
            }
        }
    }
    let _over = hold(1, 600);
    let producers: Vec<_> = (0..3)
        .map(|_| {
            let (m, d) = (made.clone(), dropped.clone());
            thread::spawn(move || produce(m, d))
        })
        .collect();
    let fibers: Vec<_> = (0..4)
        .map(|_| {
            let (m, d) = (made.clone(), dropped.clone());
            spawn_on(0, move || produce(m, d).1)
        })
        .collect();
    let coroutines: Vec<_> = (0..2)
        .map(|_| {
            let (m, d) = (made.clone(), dropped.clone());
            coroutine(move || produce(m, d))
        })
        .collect();
    thread::sleep(Duration::from_millis(150));
    let start = Instant::now();
    rt().shutdown();
    let took = start.elapsed();
    let mut returned = 0;
    let joined = producers
        .into_iter()
        .map(|p| p.join().unwrap())
        .chain(coroutines.into_iter().map(|c| c.join().unwrap()));
    for (handles, message) in joined {
        assert!(
            message.contains("shut down"),
            "an entrust panicked with {message:?}"
        );
        returned += handles.len();
    }
    // Entrusts that panicked at their start (the runtime shut down): one per thread and coroutine, and one
    // per fiber that ran on after the shutdown (the others were abandoned waiting).
    let mut refused = 5;
    for f in fibers {
        let message = match f.join() {
            Ok(message) => {
                refused += 1;
                message
            }
            Err(p) => panic_message(p),
        };
        assert!(
            message.contains("shut down"),
            "a fiber's entrust panicked with {message:?}"
        );
    }
    let made_n = made.load(Ordering::SeqCst);
    eprintln!(
        "shutdown took {took:?}; {returned} entrusts of threads and coroutines returned; values made {made_n} \
         ({refused} refused at the start), dropped {}",
        dropped.load(Ordering::SeqCst)
    );
    // The queue filled before the shutdown (one entrust per producer waited past it), whoever filled it.
    assert!(
        made_n - refused > QUEUED,
        "only {} entrusts went in before the shutdown",
        made_n - refused
    );
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        made.load(Ordering::SeqCst),
        "values made and dropped"
    );
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// 7. An executor's thread.

/// On a tokio current-thread runtime, a task entrusts 300 values to trustee 1 (held 400 ms) while another
/// task ticks every 5 ms and an `apply_async` to trustee 0 is in flight. The entrusts past the queue wait on
/// the executor's thread (documented: "from a thread ... it waits"), so the ticker stalls meanwhile; nothing
/// hangs, the `apply_async` completes, every value reads back. Prints the ticks seen during the hold.
#[test]
fn an_entrust_past_the_queue_on_an_executor_thread_waits_and_completes() {
    let _s = serial();
    in_child!(
        "an_entrust_past_the_queue_on_an_executor_thread_waits_and_completes",
        30
    );
    let tk = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let ticks = Arc::new(AtomicUsize::new(0));
    let on0 = rt().trustee(0).entrust(41u64);
    let (sum, during, async_result) = tk.block_on(async {
        let t = ticks.clone();
        let ticker = tokio::spawn(async move {
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                t.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let async_result = on0.apply_async(|v| *v + 1);
        let over = hold(1, 400);
        let before = ticks.load(Ordering::SeqCst);
        let handles: Vec<_> = (0..300usize).map(|i| rt().trustee(1).entrust(i)).collect();
        assert!(
            over.load(Ordering::SeqCst),
            "300 entrusts returned while trustee 1 was held"
        );
        let during = ticks.load(Ordering::SeqCst) - before;
        let async_result = async_result.await;
        let mut sum = 0;
        for h in &handles {
            sum += h.apply_async(|v| *v).await;
        }
        ticker.abort();
        (sum, during, async_result)
    });
    eprintln!("ticks of a 5 ms ticker while 300 entrusts went to a trustee held 400 ms: {during}");
    assert_eq!(async_result, 42);
    assert_eq!(sum, (0..300).sum::<usize>());
    child_ok();
}
