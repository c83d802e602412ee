//! Review 13: hostile tests of the results a batch paused at shutdown had written (`Channel::written`,
//! `Outbox::drop_written`, `Cursor::written`, 65b43f7) — a batch paused twice, both lanes in flight, a worker's
//! batches (its fibers' and its channel to itself), results of every size and ones whose `Drop` panics, a thread
//! that exits or calls `wait_pending` — and of fibers, `may` coroutines, `apply_async` and `into_inner` around a
//! shutdown. Tests that shut the runtime down, or can hang, run in a child process of their own with a deadline
//! (`in_child!`).
//!
//! Ignored tests are bugs found by this review; each one's doc gives the behaviour measured. Six of them: a
//! fiber that the closing worker starts (its `spawn` mail, a `launch_then` or `launch` record read or served by
//! `Worker::close`) never runs and its closure is never dropped (two tests); a `may` coroutine's `apply_then`
//! goes through its thread's client when that thread has one (the continuation does not run at once, and
//! `wait_pending` does not wait for it); a `may` coroutine waiting for a paused batch spins its thread, and,
//! once cancelled, blocks it; an `apply_then` that waited for room across the shutdown drops its captures while
//! the thread's client is borrowed (their destructors' runtime calls panic `RefCell already borrowed`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[macro_use]
mod common;
use common::*;
use trust_core::{Latch, Trust, spawn, wait_pending};

/// README: "Nothing sent is lost: requests that arrive too late ... are dropped unrun, with what they
/// captured"; `fiber_job`: "A job dropped unrun (its mail came after the shutdown) drops its promise". Four
/// fibers are spawned before the shutdown while both workers are busy in a 400 ms closure, so their `spawn` mail
/// waits; the shutdown begins meanwhile. Each closure captures a counted value: it must run, or be dropped.
///
/// Measured before the fix (`Scheduler::abandon` now drops fibers never resumed): made 4, dropped 0, ran 0; each `join` returns the shutdown panic. The closing worker reads the
/// mail in `Worker::close` (worker/run.rs:833, `read_mail` -> :360 `Mail::Spawn` -> `Scheduler::start`, which
/// makes the fiber ready), but no fiber runs after that: `Scheduler::abandon` (worker/fiber.rs:465-469)
/// forgets every coroutine, the never-resumed ones with their closures. Mail that comes a moment later is
/// dropped unrun by `close_mailbox`, with its closure: the difference is only when the mail was read.
#[test]

fn a_fiber_spawned_before_the_shutdown_but_never_run_drops_its_closure() {
    in_child!(
        "a_fiber_spawned_before_the_shutdown_but_never_run_drops_its_closure",
        10
    );
    let _ = rt();
    let tally = Arc::new(Tally::default());
    let (s0, s1) = (stall(0, 400), stall(1, 400));
    let ran = Arc::new(AtomicUsize::new(0));
    let fibers: Vec<_> = (0..4)
        .map(|_| {
            let (cap, ran) = (Tallied::new(&tally), ran.clone());
            spawn(move || {
                ran.fetch_add(1, Ordering::SeqCst);
                drop(cap);
            })
        })
        .collect();
    rt().shutdown();
    s0.join().unwrap();
    s1.join().unwrap();
    let joins: Vec<_> = fibers
        .into_iter()
        .map(|f| f.join().map_err(panic_message))
        .collect();
    assert_eq!(tally.counts(), (4, 4), "ran {}: {joins:?}", load(&ran));
    child_ok();
}

/// The same through a batch: a plain thread's `launch_then` (its fiber's closure and its continuation each
/// capture a counted value) and another thread's blocking `launch` (its closure captures one), sent to trustee 0
/// while it is busy in a 400 ms closure; the shutdown begins meanwhile, and `Worker::close` serves the batches
/// ("answers what was sent"). The launched fibers are started there and can never run: each closure must be
/// dropped once, as `launch_then` itself promises when no fiber can be had ("the fiber never ran ... so there is
/// no result": its `Sender` is dropped with the closure).
///
/// Measured before the same fix: made 3, dropped 1 (only the continuation's capture, dropped when the thread's client goes; its
/// `wait_pending` panics "shut down while `wait_pending` waited for a `launch_then` fiber", the `launch` returns
/// the shutdown panic). The start records run in `Worker::close`'s serve loop (run.rs:833, `start_launched`,
/// api/latch.rs:224 and `launch`), the fibers are made ready, and `Scheduler::abandon` (fiber.rs:469) forgets
/// them with their closures (and the `Sender` in the `launch_then` one).
#[test]

fn a_launch_then_started_by_the_closing_worker_drops_its_closure() {
    in_child!(
        "a_launch_then_started_by_the_closing_worker_drops_its_closure",
        10
    );
    let _ = rt();
    let tally = Arc::new(Tally::default());
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let on0 = rt().trustee(0).entrust(());
    on0.apply(|_| ());
    let s0 = stall(0, 400);
    let (t2, l2, o2) = (tally.clone(), l.clone(), on0.clone());
    let client = std::thread::spawn(move || {
        let (cap, cap2) = (Tallied::new(&t2), Tallied::new(&t2));
        l2.launch_then(move |_| drop(cap), move |()| drop(cap2));
        // Publishes the launch_then with it; answered by the closing worker.
        let r = catch_unwind(AssertUnwindSafe(|| o2.apply(|_| ()))).map_err(panic_message);
        let w = catch_unwind(wait_pending).map_err(panic_message);
        (r, w)
    });
    let (t3, l3) = (tally.clone(), l.clone());
    let launcher = std::thread::spawn(move || {
        let cap = Tallied::new(&t3);
        catch_unwind(AssertUnwindSafe(|| l3.launch(move |_| drop(cap)))).map_err(panic_message)
    });
    std::thread::sleep(Duration::from_millis(100));
    rt().shutdown();
    s0.join().unwrap();
    let (r, w) = client.join().unwrap();
    let launched = launcher.join().unwrap();
    std::mem::forget((l, on0));
    assert_eq!(r, Ok(()), "answered by the closing worker");
    assert!(
        w.as_ref().is_err_and(|m| m.contains("launch_then")),
        "{w:?}"
    );
    assert!(
        launched.as_ref().is_err_and(|m| m.contains("shut down")),
        "{launched:?}"
    );
    assert_eq!(tally.counts(), (3, 3));
    child_ok();
}

/// The fresh code, a batch paused twice: a plain thread's batch of five `apply_then`s (results counted) on
/// trustee 0: a plain value, a latch L1 held by a launched fiber (the batch pauses), the value, a latch L2 also
/// held (it pauses again), the value. L1 is released: the batch resumes and pauses at L2, three records having
/// run. The thread then calls `wait_pending` (twice), and the runtime shuts down. Both calls panic naming the
/// shutdown, no continuation runs, and the three results written before the second pause (the first paused
/// record's among them, written when it resumed) and the five continuations' captures are dropped exactly once.
#[test]
fn a_batch_paused_twice_drops_the_results_written_before_its_second_pause() {
    in_child!(
        "a_batch_paused_twice_drops_the_results_written_before_its_second_pause",
        10
    );
    let on0 = rt().trustee(0).entrust(());
    let (l1, l2) = (
        rt().trustee(0).entrust(Latch::new(0u64)),
        rt().trustee(0).entrust(Latch::new(0u64)),
    );
    let (stop1, stop2) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    hold_open(&l1, &on0, &stop1);
    hold_open(&l2, &on0, &stop2);
    let p = rt().trustee(0).entrust(0u64);
    let (results, captures) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let ran = Arc::new(AtomicUsize::new(0));
    let continued = Arc::new(AtomicUsize::new(0));
    let (r2, c2, ran2, k2) = (
        results.clone(),
        captures.clone(),
        ran.clone(),
        continued.clone(),
    );
    let thread = std::thread::spawn(move || {
        let one = |r: &Arc<Tally>| {
            let (r, ran) = (r.clone(), ran2.clone());
            move || {
                ran.fetch_add(1, Ordering::SeqCst);
                Tallied::new(&r)
            }
        };
        let then = |c: &Arc<Tally>| {
            let (cap, k) = (Tallied::new(c), k2.clone());
            move |t: Tallied| {
                k.fetch_add(1, Ordering::SeqCst);
                drop((t, cap));
            }
        };
        // All five in one batch: behind a request in flight (the first on an idle channel would go alone).
        let busy = busy_channel(&p);
        let f = one(&r2);
        p.apply_then(move |_| f(), then(&c2));
        let f = one(&r2);
        l1.apply_then(move |_| f(), then(&c2));
        let f = one(&r2);
        p.apply_then(move |_| f(), then(&c2));
        let f = one(&r2);
        l2.apply_then(move |_| f(), then(&c2));
        let f = one(&r2);
        p.apply_then(move |_| f(), then(&c2));
        drop(busy);
        let w = catch_unwind(wait_pending).map_err(panic_message);
        let again = catch_unwind(wait_pending).map_err(panic_message);
        (w, again)
    });
    eventually("the first record ran", || load(&ran) == 1);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(load(&ran), 1, "ran past the first pause");
    stop1.store(true, Ordering::SeqCst);
    eventually("the batch resumed up to its second pause", || {
        load(&ran) == 3
    });
    settle(&on0);
    assert_eq!(load(&ran), 3, "ran past the second pause");
    rt().shutdown();
    let (w, again) = thread.join().unwrap();
    std::mem::forget(on0);
    assert!(w.as_ref().is_err_and(|m| m.contains("shut down")), "{w:?}");
    assert!(
        again.as_ref().is_err_and(|m| m.contains("shut down")),
        "{again:?}"
    );
    assert_eq!(load(&continued), 0);
    assert_eq!(captures.counts(), (5, 5), "the continuations' captures");
    assert_eq!(
        results.counts(),
        (3, 3),
        "the three results written before the second pause"
    );
    child_ok();
}

/// A worker's batch, paused at shutdown: two fibers of worker 1 start in one turn (worker 1 was busy while their
/// `spawn`s arrived), so their requests to trustee 0 go in one batch: fiber A's blocking `apply` (its result
/// counted), then fiber B's three `apply_then`s (results counted): on a value, on a latch held by a launched
/// fiber (the batch pauses), on the value. Shutdown: both `join`s return the shutdown panic, the continuation's
/// result written before the pause is dropped once, and the three continuations' captures once each.
///
/// Measured besides: fiber A's own result, written before the pause too, is never dropped (made 1, dropped 0):
/// `Outbox::drop_written` skips waiting callers' rooms on purpose (client/outbox.rs: "A caller whose record ran
/// is a worker fiber, abandoned at shutdown with its frame"). Not asserted here: the README says nothing of what
/// an abandoned fiber's pending result becomes.
#[test]
fn a_worker_batch_paused_at_shutdown_drops_its_continuations_results_once() {
    in_child!(
        "a_worker_batch_paused_at_shutdown_drops_its_continuations_results_once",
        10
    );
    calibrate();
    let on0 = rt().trustee(0).entrust(());
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    hold_open(&l, &on0, &stop);
    let p = rt().trustee(0).entrust(0u64);
    let (callers, results, captures) = (
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
    );
    let ran = Arc::new(AtomicUsize::new(0));
    let stalled = stall(1, 200);
    // Both fibers start in one turn of worker 1 (their spawns wait in its mail), so their requests go in one batch.
    let (p2, c2, ran2) = (p.clone(), callers.clone(), ran.clone());
    let a = spawn_on(1, move || {
        let r = p2.apply(move |_| {
            ran2.fetch_add(1, Ordering::SeqCst);
            Tallied::new(&c2)
        });
        drop(r);
    });
    let (p2, l2, r2, k2, ran2) = (
        p.clone(),
        l.clone(),
        results.clone(),
        captures.clone(),
        ran.clone(),
    );
    let b = spawn_on(1, move || {
        for i in 0..3 {
            let (r, ran, cap) = (r2.clone(), ran2.clone(), Tallied::new(&k2));
            let f = move || {
                ran.fetch_add(1, Ordering::SeqCst);
                Tallied::new(&r)
            };
            if i == 1 {
                l2.apply_then(move |_| f(), move |t| drop((t, cap)));
            } else {
                p2.apply_then(move |_| f(), move |t| drop((t, cap)));
            }
        }
        wait_pending();
    });
    stalled.join().unwrap();
    eventually("the records before the pause ran", || load(&ran) == 2);
    settle(&on0);
    assert_eq!(load(&ran), 2);
    rt().shutdown();
    let ja = a.join().map_err(panic_message);
    let jb = b.join().map_err(panic_message);
    std::mem::forget((on0, p, l));
    assert!(ja.is_err_and(|m| m.contains("shut down")));
    assert!(jb.is_err_and(|m| m.contains("shut down")));
    assert_eq!(captures.counts(), (3, 3), "the continuations' captures");
    assert_eq!(
        results.counts(),
        (1, 1),
        "the continuation's result written before the pause"
    );
    child_ok();
}

/// A result counted in `tally`; its drop also panics when `bomb`.
struct Res {
    _t: Tallied,
    bomb: bool,
}

impl Drop for Res {
    fn drop(&mut self) {
        if self.bomb {
            panic!("Res panics in its destructor");
        }
    }
}

/// Issues on `p` five `apply_then`s whose results are of five kinds (a counted value; `()`; one whose drop
/// panics; a 4.8 KiB one, boxed on the trustee; a 256-byte one, the largest inline), each counting `ran`,
/// each continuation capturing a value counted in `caps`.
fn five_kinds(p: &Trust<u64>, results: &Arc<Tally>, caps: &Arc<Tally>, ran: &Arc<AtomicUsize>) {
    let go = |ran: &Arc<AtomicUsize>| {
        let ran = ran.clone();
        move || {
            ran.fetch_add(1, Ordering::SeqCst);
        }
    };
    let (r, g, c) = (results.clone(), go(ran), Tallied::new(caps));
    p.apply_then(
        move |_| {
            g();
            Res {
                _t: Tallied::new(&r),
                bomb: false,
            }
        },
        move |x| drop((x, c)),
    );
    let (g, c) = (go(ran), Tallied::new(caps));
    p.apply_then(move |_| g(), move |()| drop(c));
    let (r, g, c) = (results.clone(), go(ran), Tallied::new(caps));
    p.apply_then(
        move |_| {
            g();
            Res {
                _t: Tallied::new(&r),
                bomb: true,
            }
        },
        move |x| drop((x, c)),
    );
    let (r, g, c) = (results.clone(), go(ran), Tallied::new(caps));
    p.apply_then(
        move |_| {
            g();
            (Tallied::new(&r), [3u64; 600])
        },
        move |x| drop((x, c)),
    );
    let (r, g, c) = (results.clone(), go(ran), Tallied::new(caps));
    p.apply_then(
        move |_| {
            g();
            (Tallied::new(&r), [5u8; 240])
        },
        move |x| drop((x, c)),
    );
}

/// Both lanes in flight, the first paused, and the thread exits: a plain thread issues the five kinds of results
/// (`five_kinds`: a counted value, `()`, one whose `Drop` panics, a 4.8 KiB one boxed on the trustee, a 256-byte
/// inline one), an `apply_then` on a held latch, then 70 more `apply_then`s: the first batch (48 records) pauses
/// at its sixth, the second is published in the other lane, the rest wait unsent. The thread exits without
/// `wait_pending` (README: "A thread may exit with requests in flight"); its client waits for the closing trustee.
/// After the shutdown: the five records before the pause ran once, the four counted results they wrote are
/// dropped once each (the panicking one's panic contained), and all 76 continuations' captures once each.
#[test]
fn both_lanes_in_flight_the_first_paused_a_thread_exits_and_every_result_drops_once() {
    in_child!(
        "both_lanes_in_flight_the_first_paused_a_thread_exits_and_every_result_drops_once",
        10
    );
    let on0 = rt().trustee(0).entrust(());
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    hold_open(&l, &on0, &stop);
    let p = rt().trustee(0).entrust(0u64);
    let (results, caps) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let ran = Arc::new(AtomicUsize::new(0));
    let (r2, c2, ran2) = (results.clone(), caps.clone(), ran.clone());
    let thread = std::thread::spawn(move || {
        five_kinds(&p, &r2, &c2, &ran2);
        let (r, c) = (r2.clone(), Tallied::new(&c2));
        l.apply_then(move |_| Tallied::new(&r), move |x| drop((x, c)));
        // 70 more: the rest of the first batch, a second batch in the other lane, and more unsent.
        for _ in 0..70 {
            let (r, c) = (r2.clone(), Tallied::new(&c2));
            p.apply_then(move |_| Tallied::new(&r), move |x| drop((x, c)));
        }
        // Exits without waiting: its client waits for the answers that carry its continuations' results.
    });
    eventually("the records before the pause ran", || load(&ran) == 5);
    settle(&on0);
    rt().shutdown();
    thread.join().unwrap();
    std::mem::forget(on0);
    assert_eq!(load(&ran), 5);
    assert_eq!(caps.counts(), (76, 76), "the continuations' captures");
    assert_eq!(
        results.counts(),
        (4, 4),
        "the results written before the pause"
    );
    child_ok();
}

/// A worker's channel to itself, paused at shutdown: a fiber of worker 0 applies inline to a value P of worker 0,
/// and inside that closure issues the five kinds of results on P (in use: they go by worker 0's channel to
/// itself), an `apply_then` on a held latch of worker 0, and one more on P. The batch runs once the closure is
/// done and pauses at the latch. Shutdown: the four counted results written before the pause are dropped once
/// each, and the seven continuations' captures once each (by worker 0's own client, dropped in `Worker::close`).
#[test]
fn a_batch_to_its_own_worker_paused_at_shutdown_drops_the_results_before_the_pause_once() {
    in_child!(
        "a_batch_to_its_own_worker_paused_at_shutdown_drops_the_results_before_the_pause_once",
        10
    );
    calibrate();
    let on0 = rt().trustee(0).entrust(());
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    hold_open(&l, &on0, &stop);
    let p = rt().trustee(0).entrust(0u64);
    let (results, caps) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let ran = Arc::new(AtomicUsize::new(0));
    let (r2, c2, ran2) = (results.clone(), caps.clone(), ran.clone());
    let f = spawn_on(0, move || {
        let inner = p.clone();
        p.apply(move |_| {
            // `p` is in use: these go by worker 0's channel to itself, and run once this closure is done.
            five_kinds(&inner, &r2, &c2, &ran2);
            let (r, c) = (r2.clone(), Tallied::new(&c2));
            l.apply_then(move |_| Tallied::new(&r), move |x| drop((x, c)));
            let (r, c) = (r2.clone(), Tallied::new(&c2));
            inner.apply_then(move |_| Tallied::new(&r), move |x| drop((x, c)));
        });
        wait_pending();
    });
    eventually("the records before the pause ran", || load(&ran) == 5);
    settle(&on0);
    assert_eq!(load(&ran), 5);
    rt().shutdown();
    // Issued inside a delegated closure, they count for the worker, not for the fiber, which went on.
    assert_eq!(f.join().map_err(panic_message), Ok(()));
    std::mem::forget(on0);
    assert_eq!(caps.counts(), (7, 7), "the continuations' captures");
    assert_eq!(
        results.counts(),
        (4, 4),
        "the results written before the pause"
    );
    child_ok();
}

may::coroutine_local!(static KEPT: std::cell::RefCell<Option<Trust<u64>>> = std::cell::RefCell::new(None));

/// README: "From a `may` coroutine, `apply_then` and `launch_then` wait for their result (the coroutine yields,
/// its thread goes on) and run the continuation at once, on the coroutine". With one `may` worker thread: a
/// first coroutine keeps a handle in its coroutine-local storage, which `may` drops after the coroutine ended,
/// on its worker thread, outside any coroutine.
/// Then a second coroutine on that thread issues an `apply_then` (20 ms, result 1) and calls `wait_pending`.
/// Expected: the continuation has run when `apply_then` returns, and so after `wait_pending`.
///
/// Measured before the fix: `(None, None)`: the continuation had not run after `apply_then` nor after
/// `wait_pending` (the same test with the handle dropped inside the first coroutine gives `(Some(1), Some(1))`).
/// `Trust::apply_then` tries `call::post_then_from_thread` first, which takes the thread's client whenever the
/// thread has one, without asking whether the caller is a coroutine, and the handle's drop had made one: the
/// request was batched unsent in it and the continuation left to whatever later ran that thread's
/// continuations. Fixed: a handle's drop (a record that answers nothing) no longer makes a thread a client.
#[test]
fn a_coroutines_apply_then_waits_for_its_result_even_on_a_thread_that_made_a_client() {
    in_child!(
        "a_coroutines_apply_then_waits_for_its_result_even_on_a_thread_that_made_a_client",
        10
    );
    may::config().set_workers(1);
    let p = rt().trustee(0).entrust(0u64);
    let p2 = p.clone();
    // A handle in a coroutine's local storage: `may` drops it after the coroutine ends, on its worker thread,
    // outside any coroutine.
    coroutine(move || KEPT.with(|k| *k.borrow_mut() = Some(p2)))
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let seen = coroutine_apply_then_then_wait(p.clone());
    assert_eq!(seen, (Some(1), Some(1)));
    assert_eq!(p.apply(|v| *v), 1);
    child_ok();
}

/// A value of trustee 0 with a counter and a counted part.
struct Counter {
    n: u64,
    _t: Tallied,
}

/// README: "if every handle ends in `into_inner`, exactly one gets `Some`", and the trustee decides "once every
/// request ... sent before the call has been served". Per round: seven handles of a value of trustee 0 (four
/// plain threads, two fibers wherever `spawn` puts them, and this thread, which lets go first): each issues ten
/// `apply_then(+1)`s, left unsent by the plain threads (published 48 at a time), then `into_inner`. Twenty
/// rounds: each time exactly one `Some`, holding all 60 increments, and each value dropped once (by its taker).
#[test]
fn into_inner_from_threads_and_fibers_with_apply_thens_unsent_gives_the_value_once_with_every_increment()
 {
    let tally = Arc::new(Tally::default());
    for round in 0..20 {
        let v = rt().trustee(0).entrust(Counter {
            n: 0,
            _t: Tallied::new(&tally),
        });
        let got = Arc::new(Mutex::new(Vec::new()));
        let go = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut fibers = Vec::new();
        for i in 0..6 {
            let (c, got, go) = (v.clone(), got.clone(), go.clone());
            let body = move || {
                while !go.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                    trust_core::yield_now();
                }
                // Ten increments, left unsent (a plain thread publishes 48 at a time), then the handle.
                for _ in 0..10 {
                    c.apply_then(|c| c.n += 1, |()| ());
                }
                let r = c.into_inner().map(|c| c.n);
                got.lock().unwrap().push(r);
            };
            if i < 4 {
                threads.push(std::thread::spawn(body));
            } else {
                fibers.push(spawn(body));
            }
        }
        let r = v.into_inner().map(|c| c.n);
        go.store(true, Ordering::SeqCst);
        got.lock().unwrap().push(r);
        for t in threads {
            t.join().unwrap();
        }
        for f in fibers {
            f.join().unwrap();
        }
        let got = got.lock().unwrap().clone();
        let some: Vec<_> = got.iter().flatten().collect();
        assert_eq!(some, vec![&60], "round {round}: {got:?}");
        assert_eq!(got.len(), 7);
    }
    eventually("every value dropped", || tally.counts() == (20, 20));
}

fn rss_kib() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

/// 10,000 fibers with requests in flight at shutdown: latches on both trustees are held by launched fibers; each
/// fiber entrusts a counted value to the other trustee (its registration queued in the worker's batch) and one
/// to its own, then sends an `apply_then` on the other trustee's held latch (the first pauses there, the rest
/// wait behind it or for room) and one on its remote value, and sleeps. Once all have started, the runtime
/// shuts down: each of the 20,000 values is dropped exactly once, every `join` returns the shutdown panic, and
/// RSS grows by less than 160 MiB (measured: about 80 MiB).
#[test]
fn ten_thousand_fibers_with_registrations_and_requests_in_flight_at_shutdown_drop_each_value_once()
{
    in_child!(
        "ten_thousand_fibers_with_registrations_and_requests_in_flight_at_shutdown_drop_each_value_once",
        30
    );
    let _ = rt();
    let on: Vec<Trust<()>> = (0..2).map(|w| rt().trustee(w).entrust(())).collect();
    let latches: Vec<_> = (0..2)
        .map(|w| rt().trustee(w).entrust(Latch::new(0u64)))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    hold_open(&latches[0], &on[0], &stop);
    hold_open(&latches[1], &on[1], &stop);
    let before = rss_kib();
    let (values, started) = (Arc::new(Tally::default()), Arc::new(AtomicUsize::new(0)));
    let fibers: Vec<_> = (0..10_000u64)
        .map(|i| {
            let (values, started, latches) = (values.clone(), started.clone(), latches.clone());
            spawn(move || {
                let here = trust_core::local_trustee().index();
                let other = 1 - here;
                // Counted once it exists: the fiber made it, so no unstarted fiber holds one.
                let v = rt().trustee(other).entrust(Tallied::new(&values));
                let mine = rt().trustee(here).entrust(Tallied::new(&values));
                started.fetch_add(1, Ordering::SeqCst);
                // To the other worker: one waits on its held latch, the rest behind it or for room.
                let w = v.clone();
                latches[other].apply_then(move |l| *l.get_mut() += i, move |()| drop(w));
                let m = mine.clone();
                v.apply_then(move |_| i, move |_| drop(m));
                trust_core::sleep(Duration::from_secs(3600));
                drop((v, mine));
            })
        })
        .collect();
    eventually("every fiber started", || load(&started) == 10_000);
    settle(&on[0]);
    rt().shutdown();
    let grown = rss_kib().saturating_sub(before);
    assert_eq!(
        values.counts(),
        (20_000, 20_000),
        "every value entrusted is dropped once"
    );
    for f in fibers {
        let j = f.join().map_err(panic_message);
        assert!(j.as_ref().is_err_and(|m| m.contains("shut down")), "{j:?}");
    }
    std::mem::forget((on, latches));
    // Under AddressSanitizer the fibers' stacks have shadow memory and freed memory waits in quarantine.
    assert!(
        cfg!(feature = "sanitizer") || grown < 160 * 1024,
        "RSS grew by {grown} KiB"
    );
    child_ok();
}

/// README: "A `join` of a fiber it finds suspended returns the shutdown panic." Fibers blocked forever: asleep
/// for an hour, in a blocking `apply` on a held latch, and one joining a sleeper; joined from a plain thread,
/// from a `may` coroutine and from this thread (the joining fiber). After the shutdown every join returns the
/// shutdown panic within 2 s.
#[test]
fn joins_of_fibers_blocked_forever_return_the_shutdown_panic_from_threads_fibers_and_coroutines() {
    in_child!(
        "joins_of_fibers_blocked_forever_return_the_shutdown_panic_from_threads_fibers_and_coroutines",
        10
    );
    calibrate();
    let on0 = rt().trustee(0).entrust(());
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    hold_open(&l, &on0, &stop);
    // Blocked forever in three ways: asleep, in a blocking apply on a held latch, joining one of those.
    let asleep = spawn_on(1, || trust_core::sleep(Duration::from_secs(3600)));
    let l2 = l.clone();
    let applying = spawn_on(1, move || l2.apply(|l| *l.get_mut()));
    let joining = spawn_on(0, move || asleep.join().map_err(panic_message));
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = tx.send(());
        applying.join().map_err(panic_message)
    });
    rx.recv().unwrap();
    let joining2 = spawn_on(1, || trust_core::sleep(Duration::from_secs(3600)));
    let coroutine = coroutine(move || joining2.join().map_err(panic_message));
    settle(&on0);
    std::thread::sleep(Duration::from_millis(20));
    rt().shutdown();
    let started = Instant::now();
    let from_thread = thread.join().unwrap();
    let from_coroutine = coroutine.join().unwrap();
    let from_fiber = joining.join().map_err(panic_message);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    fn shut<R>(r: &Result<R, String>) -> bool {
        r.as_ref().is_err_and(|m| m.contains("shut down"))
    }
    assert!(shut(&from_thread), "{from_thread:?}");
    assert!(shut(&from_coroutine), "{from_coroutine:?}");
    // The joining fiber was itself abandoned while it waited.
    assert!(shut(&from_fiber), "{from_fiber:?}");
    std::mem::forget((on0, l));
    child_ok();
}

/// README: fibers' panics are their `join`'s. Eight fibers each apply once to trustee 1, then four drop a
/// captured value whose `Drop` panics (the body does not panic otherwise) and four forget it: the four `join`s
/// return that panic's payload, the others their values, each counted capture is dropped once (12 drops), and
/// the workers keep serving (all eight increments are there).
#[test]
fn a_fibers_capture_that_panics_when_dropped_is_its_joins_panic_and_is_dropped_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let p = rt().trustee(1).entrust(0u64);
    let fibers: Vec<_> = (0..8)
        .map(|i| {
            let (bomb, keep, p) = (
                PanicsOnDrop(drops.clone()),
                CountsDrops(drops.clone()),
                p.clone(),
            );
            spawn(move || {
                p.apply(|v| *v += 1);
                let _k = keep;
                if i % 2 == 0 {
                    drop(bomb);
                    unreachable!("the drop panicked");
                }
                std::mem::forget(bomb);
                i
            })
        })
        .collect();
    let joins: Vec<_> = fibers
        .into_iter()
        .map(|f| f.join().map_err(panic_message))
        .collect();
    for (i, j) in joins.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(j, &Err("PanicsOnDrop".to_string()));
        } else {
            assert_eq!(j, &Ok(i));
        }
    }
    // Four bombs and eight counted captures, each dropped once.
    assert_eq!(load(&drops), 12);
    assert_eq!(p.apply(|v| *v), 8);
}

/// Polls `f` once (on whatever task runs this) and gives it back.
async fn poll_once<F: std::future::Future + Unpin>(mut f: F) -> (F, std::task::Poll<F::Output>) {
    let p = std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut f).poll(cx)))
        .await;
    (f, p)
}

/// README: "Dropping an `apply_async` future early is harmless: the result is dropped when it arrives"; "After
/// `Runtime::shutdown`, polling panics with `apply`'s message"; shutdown "answers what was sent". Futures made
/// on a tokio runtime, at each stage across a shutdown: never polled (polled after: panics); sent to a held
/// latch (deferred) and dropped; sent to the latch and kept (polled after: panics); sent to a trustee busy in a
/// 300 ms closure and dropped (the closing worker runs it); the same kept (polled after: ready with its
/// result). Each closure's capture is dropped once (5), each result of the two that ran once (2).
#[test]
fn apply_async_futures_dropped_or_kept_at_each_stage_across_a_shutdown_drop_everything_once() {
    in_child!(
        "apply_async_futures_dropped_or_kept_at_each_stage_across_a_shutdown_drop_everything_once",
        10
    );
    use std::future::Future;
    let on0 = rt().trustee(0).entrust(());
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    hold_open(&l, &on0, &stop);
    let p1 = rt().trustee(1).entrust(0u64);
    let (caps, results) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stalled = stall(1, 300);
    let (c, r) = (caps.clone(), results.clone());
    let (unpolled, on_latch_kept, on_stalled_kept) = tokio.block_on(async {
        let cap = Tallied::new(&c);
        let unpolled = Box::pin(l.apply_async(move |l| drop((cap, l.get_mut()))));
        // Sent, deferred on the held latch, dropped.
        let cap = Tallied::new(&c);
        let (f, p) = poll_once(Box::pin(l.apply_async(move |l| drop((cap, l.get_mut()))))).await;
        assert!(p.is_pending());
        drop(f);
        // Sent, deferred, kept.
        let cap = Tallied::new(&c);
        let (kept, p) = poll_once(Box::pin(l.apply_async(move |l| drop((cap, l.get_mut()))))).await;
        assert!(p.is_pending());
        // Sent to a stalled trustee (its mail waits), dropped: the closing worker runs it.
        let (cap, r2) = (Tallied::new(&c), r.clone());
        let (f, p) = poll_once(Box::pin(p1.apply_async(move |_| {
            drop(cap);
            Tallied::new(&r2)
        })))
        .await;
        assert!(p.is_pending());
        drop(f);
        // The same, kept.
        let (cap, r2) = (Tallied::new(&c), r.clone());
        let (kept2, p) = poll_once(Box::pin(p1.apply_async(move |_| {
            drop(cap);
            Tallied::new(&r2)
        })))
        .await;
        assert!(p.is_pending());
        (unpolled, kept, kept2)
    });
    rt().shutdown();
    stalled.join().unwrap();
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut on_latch_kept = on_latch_kept;
    let r = catch_unwind(AssertUnwindSafe(|| on_latch_kept.as_mut().poll(&mut cx)))
        .map_err(panic_message);
    assert!(
        r.as_ref().is_err_and(|m| m.contains("shut down")),
        "{:?}",
        r.map(|p| p.is_ready())
    );
    let mut on_stalled_kept = on_stalled_kept;
    // Sent before the shutdown: answered by it.
    match on_stalled_kept.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(t) => drop(t),
        std::task::Poll::Pending => panic!("the closing worker did not answer what was sent"),
    }
    let mut unpolled = unpolled;
    let r =
        catch_unwind(AssertUnwindSafe(|| unpolled.as_mut().poll(&mut cx))).map_err(panic_message);
    assert!(
        r.as_ref().is_err_and(|m| m.contains("shut down")),
        "{:?}",
        r.map(|p| p.is_ready())
    );
    drop((unpolled, on_latch_kept, on_stalled_kept));
    std::mem::forget(on0);
    assert_eq!(caps.counts(), (5, 5), "every closure's capture");
    assert_eq!(results.counts(), (2, 2), "the results of the two that ran");
    child_ok();
}

/// README: "an `apply` yields the coroutine, not its thread". With one `may` worker thread, a coroutine's
/// blocking `apply` waits on a latch held by a launched fiber (its batch paused); the coroutine is cancelled
/// (`Coroutine::cancel`, which unwinds it at its next yield). Another coroutine must still run on that thread.
///
/// Measured before the fix (the guard no longer waits: the result is dropped when it comes, and the client
/// goes back to its pool): `HUNG: no answer within 3 s` for the second coroutine, and the process burns a core meanwhile
/// (105 ticks of 10 ms per second). The cancel unwinds through `Client::call`, and `WaitGuard::drop`
/// (client/outbox.rs:991-1000) waits for the answer with `std::thread::yield_now` — the thread, not the
/// coroutine (a cancelled coroutine may still yield to `may` while unwinding: its cancel check does not panic
/// again then) — until the latch is released.
#[test]

fn a_coroutine_cancelled_while_its_apply_waits_on_a_held_latch_frees_its_may_thread() {
    in_child!(
        "a_coroutine_cancelled_while_its_apply_waits_on_a_held_latch_frees_its_may_thread",
        10
    );
    may::config().set_workers(1);
    let on0 = rt().trustee(0).entrust(());
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    hold_open(&l, &on0, &stop);
    let waiting = Arc::new(AtomicBool::new(false));
    let (l2, w2) = (l.clone(), waiting.clone());
    // SAFETY: the coroutine uses no thread-local storage of its own.
    let a = unsafe {
        may::coroutine::spawn(move || {
            w2.store(true, Ordering::SeqCst);
            l2.apply(|l| *l.get_mut() + 1)
        })
    };
    eventually("the coroutine waits", || waiting.load(Ordering::SeqCst));
    std::thread::sleep(Duration::from_millis(20));
    // SAFETY: the coroutine holds nothing whose forced unwinding at its next yield is unsound.
    unsafe { a.coroutine().cancel() };
    // Another coroutine on the one `may` thread.
    let b = within(3, || coroutine(|| 7).join().unwrap());
    assert_eq!(b, 7);
    stop.store(true, Ordering::SeqCst);
    let ra = within(3, move || a.join().map_err(|_| ()));
    assert!(ra.is_err(), "the cancelled coroutine returned {ra:?}");
    assert_eq!(l.apply(|l| *l.get_mut()), 0);
    child_ok();
}

/// ../shared/DESIGN.md 3.1: "`apply` ... from a plain OS thread or a `may` coroutine it waits without burning a core
/// forever (spin briefly, then yield/park)". A coroutine's blocking `apply` on a latch held by a launched fiber
/// (its batch paused for as long as the fiber runs), the only coroutine of its one `may` thread: over one second
/// the threads other than the workers must use well under a core (under 30 ticks of 10 ms).
///
/// Measured before the fix (a waiting coroutine now sleeps on `may`'s timer after 256 yields): 101-106 ticks
/// in 1 s (a whole core; the workers used 5). `Outbox::wait` (client/outbox.rs:539-540)
/// calls `may_yield` on every round for a coroutine, with no backoff and no park: with nothing else to run,
/// `may` resumes it at once (a plain thread parks after its backoff, as the same function does for it).
#[test]

fn a_coroutine_waiting_on_a_held_latch_does_not_burn_a_core() {
    in_child!(
        "a_coroutine_waiting_on_a_held_latch_does_not_burn_a_core",
        10
    );
    may::config().set_workers(1);
    let on0 = rt().trustee(0).entrust(());
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    hold_open(&l, &on0, &stop);
    let waiting = Arc::new(AtomicBool::new(false));
    let (l2, w2) = (l.clone(), waiting.clone());
    // SAFETY: the coroutine uses no thread-local storage of its own.
    let a = unsafe {
        may::coroutine::spawn(move || {
            w2.store(true, Ordering::SeqCst);
            l2.apply(|l| *l.get_mut() + 1)
        })
    };
    eventually("the coroutine waits", || waiting.load(Ordering::SeqCst));
    std::thread::sleep(Duration::from_millis(100));
    let (t0, w0) = (process_cpu_ticks(), worker_cpu_ticks());
    std::thread::sleep(Duration::from_millis(1000));
    let others = (process_cpu_ticks() - t0).saturating_sub(worker_cpu_ticks() - w0);
    stop.store(true, Ordering::SeqCst);
    assert_eq!(within(3, move || a.join().unwrap()), 1);
    assert!(
        others < 30,
        "threads other than the workers used {others} ticks of 10 ms in 1 s"
    );
    child_ok();
}

/// From a `may` coroutine, an `apply_then` on a latch held by a launched fiber waits (as a blocking call, its
/// batch paused) when the runtime shuts down: the `apply_then` panics in the coroutine naming the shutdown, the
/// continuation never runs, and the captures of the closure and of the continuation are dropped once each.
#[test]
fn a_coroutines_apply_then_paused_on_a_latch_at_shutdown_panics_and_drops_its_captures_once() {
    in_child!(
        "a_coroutines_apply_then_paused_on_a_latch_at_shutdown_panics_and_drops_its_captures_once",
        10
    );
    let on0 = rt().trustee(0).entrust(());
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    hold_open(&l, &on0, &stop);
    let tally = Arc::new(Tally::default());
    let (continued, waiting) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (l2, t2, k2, w2) = (l.clone(), tally.clone(), continued.clone(), waiting.clone());
    // SAFETY: the coroutine uses no thread-local storage of its own.
    let co = unsafe {
        may::coroutine::spawn(move || {
            let (cap, cap2) = (Tallied::new(&t2), Tallied::new(&t2));
            w2.store(true, Ordering::SeqCst);
            catch_unwind(AssertUnwindSafe(|| {
                l2.apply_then(
                    move |l| drop((cap, l.get_mut())),
                    move |()| {
                        k2.fetch_add(1, Ordering::SeqCst);
                        drop(cap2);
                    },
                )
            }))
            .map_err(panic_message)
        })
    };
    eventually("the coroutine waits", || waiting.load(Ordering::SeqCst));
    settle(&on0);
    rt().shutdown();
    let r = within(5, move || co.join().unwrap());
    std::mem::forget((on0, l));
    assert!(r.as_ref().is_err_and(|m| m.contains("shut down")), "{r:?}");
    assert_eq!(load(&continued), 0);
    assert_eq!(tally.counts(), (2, 2));
    child_ok();
}

/// On drop, calls `apply_then` and `wait_pending` on this thread (each caught) and records what they said.
struct CallsOnDrop {
    p: Option<Trust<u64>>,
    seen: Arc<Mutex<Vec<String>>>,
    _t: Tallied,
}

impl Drop for CallsOnDrop {
    fn drop(&mut self) {
        let p = self.p.take().unwrap();
        let a =
            catch_unwind(AssertUnwindSafe(|| p.apply_then(|_| (), |()| ()))).map_err(panic_message);
        let w = catch_unwind(wait_pending).map_err(panic_message);
        self.seen
            .lock()
            .unwrap()
            .push(format!("apply_then: {a:?}; wait_pending: {w:?}"));
    }
}

/// shutdown.rs: an `apply_then` after the shutdown has "its closure and continuation ... dropped once, outside
/// the thread's client: a destructor that calls the runtime meets the same message" (`post_then_from_thread`
/// drops them after the client's borrow for that reason). The same for one that waited for room across the
/// shutdown: a plain thread's batches to trustee 0 are full (the first paused on a held latch, the second in
/// flight, the third full), so its next `apply_then` waits in `make_room`; the runtime shuts down. Its closure
/// and continuation each capture a value whose `Drop` calls `apply_then` and `wait_pending` (caught): each call
/// must panic with the shutdown message; every capture is dropped once.
///
/// Measured before the fix (the client now gives the request back, dropped after its borrow): 2 of the 96
/// recorded drops (the closure's and the continuation's of the `apply_then` that waited)
/// got `RefCell already borrowed` from both calls; counts are exact. `Outbox::wait` panics inside
/// `Client::post_then` (client/outbox.rs:865-867, `make_room`), run inside `THREAD_CLIENT`'s `borrow_mut`
/// (call.rs:332-340), while the record and the continuation are still locals there: they are dropped during
/// the unwind with the client borrowed. Uncaught, such a second panic during the unwind aborts the process.
#[test]

fn captures_of_an_apply_then_waiting_for_room_at_shutdown_are_dropped_outside_the_clients_borrow() {
    in_child!(
        "captures_of_an_apply_then_waiting_for_room_at_shutdown_are_dropped_outside_the_clients_borrow",
        10
    );
    let on0 = rt().trustee(0).entrust(());
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    hold_open(&l, &on0, &stop);
    let p = rt().trustee(1).entrust(0u64);
    let (tally, seen) = (Arc::new(Tally::default()), Arc::new(Mutex::new(Vec::new())));
    let issued = Arc::new(AtomicUsize::new(0));
    let (t2, s2, i2) = (tally.clone(), seen.clone(), issued.clone());
    let thread = std::thread::spawn(move || {
        // Two batches in flight (the first paused on the latch), the third full: one of these waits for room.
        catch_unwind(AssertUnwindSafe(|| {
            for _ in 0..200 {
                let cap = CallsOnDrop {
                    p: Some(p.clone()),
                    seen: s2.clone(),
                    _t: Tallied::new(&t2),
                };
                let then = CallsOnDrop {
                    p: Some(p.clone()),
                    seen: s2.clone(),
                    _t: Tallied::new(&t2),
                };
                i2.fetch_add(1, Ordering::SeqCst);
                l.apply_then(move |l| drop((cap, l.get_mut())), move |()| drop(then));
            }
        }))
        .map_err(panic_message)
    });
    eventually("the thread waits for room", || {
        let n = load(&issued);
        std::thread::sleep(Duration::from_millis(50));
        n > 3 && n == load(&issued)
    });
    rt().shutdown();
    let r = thread.join().unwrap();
    std::mem::forget(on0);
    assert!(r.as_ref().is_err_and(|m| m.contains("shut down")), "{r:?}");
    let seen = seen.lock().unwrap().clone();
    let n = load(&issued);
    assert_eq!(tally.counts(), (2 * n, 2 * n));
    // Those dropped on this thread by the panicking `apply_then` (the one waiting for room): each call names the
    // shutdown; none meets the client borrowed.
    let borrowed: Vec<_> = seen.iter().filter(|l| l.contains("borrow")).collect();
    assert!(
        borrowed.is_empty(),
        "{} of {}: {:?}",
        borrowed.len(),
        seen.len(),
        borrowed.first()
    );
    child_ok();
}
