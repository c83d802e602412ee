//! Review 52: more of the delegation runtime's unsafe code under Miri, through the paths a plain-thread client
//! reaches that `miri_delegation`, `adversarial_then_layout` and `miri_review23` did not run yet.
//!
//! Attacked (plain threads only; exact values and drop counts):
//! - one thread's batches filled by records of mixed sizes (closures capturing 16 B, 200 B, 600 B and 4 KiB,
//!   the last two boxed by `apply_then`; results of 0 B, 8 B, 300 B (boxed by the slot) and 600 B (boxed where
//!   made); continuations of 24 B and 600 B, boxed), with blocking `apply` and `apply_with` calls (600 B and
//!   8 B arguments) between them, so that a waiting caller's result lies among the continuations' in the
//!   response body (`Outbox::poll`'s split), and with the trustee held so that issuing waits for room
//!   (`Outbox::make_room`);
//! - `apply_then`s issued on the trustee, inside a closure on the very property they target, past a full
//!   batch: they go to the worker's channel to itself and then to its backlog, boxed (`Box<dyn Queued>`,
//!   `Batch::push_queued`, `slot::run_queued`), one of them panicking there (its continuation dropped unrun),
//!   one continuation (on the worker's scheduler) issuing one more, which must run after all of them, and an
//!   issuing closure that panics once its requests are queued;
//! - values over 512 bytes: `entrust` (`Property::allocate_in_place`) from a thread with a client, from one
//!   that never called (registration by mail) and on the trustee; `try_unwrap` and `into_inner` of them
//!   (`try_unwrap_boxed`, `into_inner_boxed`), behind unpublished `apply_then`s of the same thread;
//! - `apply_async` futures with results of 8 B, 300 B and 600 B (`poll_large`, `Answer::take_boxed`) and
//!   closures of 16 B and 4 KiB (in the node), dropped before their first poll, after it, after their answer
//!   (the result still in the node) and awaited; polled on the trustee (the local shortcut `apply_here`,
//!   `into_boxed_closure` for the 4 KiB closure, `ready_here` for the 600 B result), also inside a closure
//!   on the future's own property (the re-entrant apply refused, the closure dropped unrun);
//! - a chain of `apply_then`s of alternating result and continuation sizes, `wait_pending` inside a link;
//! - panicking closures in the middle of a mixed-size batch, one with a payload whose `Drop` panics, and a
//!   blocking `apply_with` whose 600-byte argument carries a drop counter and whose closure panics;
//! - `Trust::clone` and drop from four threads (one that never calls, so its changes go by the count mail),
//!   from continuations and from delegated closures, while `apply_then`s and `apply`s are in flight;
//! - a thread exiting with records of every size above unsent and in flight, and an `apply_async` future sent
//!   and dropped;
//! - thread-local destructors that delegate, registered after the runtime's thread client and before it (the
//!   late client `LATE_CLIENT` and its sweepers), with and without `wait_pending`; eleven of them run after
//!   the client, more than its eight sweepers;
//! - two trustees: a blocking call to trustee 1 while trustee 0's batch waits unsent with both lanes busy (the
//!   call's `others`, `Outbox::try_wait`), and from a closure on trustee 0, `apply_then`s to trustee 1 past a
//!   full batch (the worker's outbox to another trustee and its backlog), count changes from the worker netted
//!   in the count mail (`TrusteeShared::count_later`), a continuation on worker 0's scheduler that clones a
//!   handle and issues one more, and a blocking `apply` to trustee 1 (refused); then `try_unwrap` right after
//!   the continuation dropped its clone (it must count that drop).
//!
//! Natively, a debugger confirmed each path named above is taken (breakpoints on `make_room`, the backlog push,
//! `run_queued`, `push_queued`, `count_later`, the `others` flush, `try_unwrap_boxed`, `into_inner_boxed`,
//! `allocate_in_place`, `poll_large`, `take_boxed`, `apply_here`, `ready_here`, `into_boxed_closure`).
//!
//! Held: all of it, under `MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-ignore-leaks"` (Stacked Borrows; also
//! with other seeds of Miri's scheduler, a higher preemption rate, and Tree Borrows) and natively (60 runs of
//! the file, 200 more of the two tests that chain from the worker's scheduler): no undefined behaviour, every
//! result routed to its own continuation or caller with its exact value, requests run in issue order (those
//! a worker's scheduler issues after its queued ones included), every capture, result and value dropped
//! exactly once, the value back from `try_unwrap` with the effect of the `apply_then`s issued before it.
//!
//! Found (no undefined behaviour, no drop lost or doubled anywhere):
//! - `every_late_destructors_wait_pending_runs_its_continuations` (fixed in the same session; failed natively
//!   and under Miri alike): past eight delegating thread-local destructors that run after the thread's client,
//!   each call gets a fresh client context of its own (`call.rs:130`, once `arm_sweeper`, `call.rs:67-80`,
//!   finds its eight sweepers spent), so the ninth and later destructors' `apply_then` continuations are
//!   dropped unrun when that call returns and their `wait_pending` returns at once, breaking `wait_pending`'s
//!   contract and docs/delegation.md's "so `wait_pending` runs their continuations and resumes their panics
//!   there as anywhere". Measured: destructors 10-12 saw only their markers (`{10: [0], 11: [0], 12: [0], 13:
//!   [15, 16, 0], ...}`). Known to review 32's author ("past them, a fresh context per call as before"), but
//!   said nowhere a user reads. Now such an `apply_then` is a blocking call whose continuation runs at once
//!   (`call::then_with_no_client_left`), a panic of either coming out of it; docs/delegation.md says so.
//!
//! The runtime has two workers (the second a thread Miri interprets too: the file takes about 34 s of Miri's
//! clock, about 40 s of wall time); every test but `two_trustees_from_a_thread_and_from_each_other` uses
//! trustee 0 only. Not here: fibers, `spawn`, `launch` and `may` (stack switching: not under Miri), and
//! `Runtime::shutdown` (one runtime per process, shared by the tests).
//!
//! Run as `.ci/run` does: `MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-ignore-leaks" cargo +nightly miri test
//! -p trust-core --no-default-features --test miri_review52` (without `may`, for the reason given at the top
//! of `miri_delegation.rs`; leaks ignored: the workers never stop under Miri). Also an ordinary test file.

use std::cell::RefCell;
use std::fmt::Debug;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;

mod common;
use common::{CountsDrops, PanicsOnDrop, panic_message, rt};
use trust_core::{Trust, local_trustee, wait_pending};

/// Rounds of the loops: small under Miri, which interprets every step.
const ROUNDS: u64 = if cfg!(miri) { 1 } else { 20 };

fn load(n: &AtomicUsize) -> usize {
    n.load(Ordering::SeqCst)
}

/// Waits until `done()` holds, making round trips to the trustee meanwhile (each lets its loop go round at
/// least once; Miri's clock is virtual, so a time bound would not do there).
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let probe = rt().trustee(0).entrust(());
    let rounds = if cfg!(miri) { 300 } else { 100_000 };
    for _ in 0..rounds {
        if done() {
            return;
        }
        probe.apply(|_| thread::yield_now());
    }
    assert!(done(), "never happened: {what}");
}

/// `N` bytes made from `seed`: a fill with its first, middle and last bytes marked, so that a value read at a
/// wrong offset or from another request shows (a fill and three stores: cheap under Miri, where building
/// 4 KiB byte by byte costs a tenth of a second).
fn pattern<const N: usize>(seed: u64) -> [u8; N] {
    let s = seed as u8;
    let mut a = [s.wrapping_mul(3); N];
    if N > 0 {
        a[0] = s;
        a[N / 2] = s.wrapping_add(1);
        a[N - 1] = s.wrapping_add(2);
    }
    a
}

fn unit(_: u64) {}
fn word(v: u64) -> u64 {
    v * 3 + 1
}
fn bytes300(v: u64) -> [u8; 300] {
    pattern(v)
}
fn bytes600(v: u64) -> [u8; 600] {
    pattern(v)
}

// ---- mixed sizes from one plain thread ----------------------------------------------------------------

type Log = Rc<RefCell<Vec<u64>>>;

/// Issues on `t` (a counter only this thread changes, now at `n - 1`) an `apply_then` whose closure captures
/// `K` bytes (plus 16) and returns `make(n)`, and whose continuation captures `CK` bytes (plus 24), checks
/// both and logs `n`.
fn then_sized<const K: usize, const CK: usize, R>(
    t: &Trust<u64>,
    log: &Log,
    n: u64,
    make: fn(u64) -> R,
) where
    R: PartialEq + Debug + Send + 'static,
{
    let cap = pattern::<K>(n);
    let ccap = pattern::<CK>(n + 1);
    let log = log.clone();
    t.apply_then(
        move |c| {
            assert_eq!(cap, pattern::<K>(n), "capture of request {n}");
            *c += 1;
            assert_eq!(*c, n, "request {n} ran out of order");
            make(*c)
        },
        move |r| {
            assert_eq!(ccap, pattern::<CK>(n + 1), "continuation capture of {n}");
            assert_eq!(r, make(n), "result of request {n}");
            log.borrow_mut().push(n);
        },
    );
}

/// One thread's batches filled with records of mixed sizes: closures of 16 B, 200 B, 600 B and 4 KiB
/// (the last two boxed by `apply_then`), results of 0 B, 8 B, 300 B (boxed in the response) and 600 B
/// (boxed where made), continuations of 24 B and 600 B (boxed), with blocking `apply` and `apply_with`
/// calls (600 B and 8 B arguments, 600 B and 300 B results) among them. The trustee is held by the first
/// request until the thread has issued 9 more: the 216-byte records fill the batch in flight on the other
/// lane (published three quarters full) and then the one being built, so the 10th waits for room
/// (`make_room`). Every continuation gets its own result, in issue order; every caller its own; the
/// requests run in issue order.
#[test]
fn records_of_mixed_sizes_fill_batches_and_each_result_finds_its_taker() {
    const HELD_UNTIL: usize = 9;
    let t = rt().trustee(0).entrust(0u64);
    let log: Log = Rc::default();
    let issued = Arc::new(AtomicUsize::new(0));
    let gate = issued.clone();
    // Alone on an idle channel: published at once. Released once the 9th record is being issued (bounded, so
    // that a layout that needs room earlier makes this test slow, not hung).
    t.apply_then(
        move |_| {
            let mut spins = 0;
            while load(&gate) < HELD_UNTIL && spins < 100_000 {
                thread::yield_now();
                spins += 1;
            }
            for _ in 0..20 {
                thread::yield_now();
            }
        },
        |()| (),
    );
    let mut n = 0;
    let mut thens = Vec::new();
    macro_rules! then {
        ($k:literal, $ck:literal, $make:expr) => {{
            n += 1;
            thens.push(n);
            issued.fetch_add(1, Ordering::SeqCst);
            then_sized::<$k, $ck, _>(&t, &log, n, $make);
        }};
    }
    // 216-byte records: four make a batch three quarters full, five fill it.
    for _ in 0..3 {
        then!(184, 0, unit);
        then!(184, 0, word);
        then!(184, 576, bytes300);
        then!(184, 0, bytes600);
    }
    for _ in 0..ROUNDS {
        then!(0, 0, unit);
        then!(184, 0, word);
        then!(584, 0, bytes300);
        then!(4080, 0, bytes600);
        then!(184, 0, unit);
        then!(4080, 576, word);
        then!(0, 576, bytes300);
        then!(184, 0, bytes600);
        // A caller among the continuations: its result lies between theirs in the response body.
        n += 1;
        let m = n;
        assert_eq!(
            t.apply(move |c| {
                *c += 1;
                assert_eq!(*c, m);
                bytes600(*c)
            }),
            bytes600(n)
        );
        then!(584, 576, unit);
        then!(0, 0, word);
        then!(4080, 0, bytes300);
        then!(584, 0, bytes600);
        n += 1;
        let m = n;
        let got = t.apply_with(
            move |c, arg: [u8; 600]| {
                *c += 1;
                assert_eq!(*c, m);
                assert_eq!(arg, bytes600(m + 7));
                bytes300(*c)
            },
            bytes600(n + 7),
        );
        assert_eq!(got, bytes300(n));
        then!(0, 576, bytes600);
        then!(184, 576, bytes300);
        n += 1;
        let m = n;
        let w = t.apply_with(
            move |c, arg: u64| {
                *c += 1;
                assert_eq!(*c, m);
                *c * arg
            },
            5,
        );
        assert_eq!(w, 5 * n);
        then!(4080, 576, unit);
        then!(0, 0, bytes600);
        then!(584, 0, word);
    }
    wait_pending();
    assert_eq!(*log.borrow(), thens);
    assert_eq!(t.apply(|c| *c), n);
}

// ---- the worker's backlog ---------------------------------------------------------------------------

type Seen = Arc<Mutex<Vec<(u64, bool)>>>;

/// On the trustee, inside a closure applied to `t`'s property: issues on `t` itself an `apply_then` whose
/// closure captures `K` bytes and a drop counter, panics if `panics`, else returns `make(want)`; its
/// continuation (run by the worker's scheduler) records `(i, result == make(want))`.
fn queue_then<const K: usize, R>(
    t: &Trust<u64>,
    seen: &Seen,
    drops: &Arc<AtomicUsize>,
    i: u64,
    want: u64,
    panics: bool,
    make: fn(u64) -> R,
) where
    R: PartialEq + Send + 'static,
{
    let (cap, token, later) = (
        pattern::<K>(i),
        CountsDrops(drops.clone()),
        CountsDrops(drops.clone()),
    );
    let seen = seen.clone();
    // The first one's continuation, on the worker's scheduler, issues one more, which must run after every
    // request issued before it (issue order): tagged 100, its result checked against what it saw.
    let chain = (i == 0).then(|| t.clone());
    t.apply_then(
        move |c| {
            let _token = token;
            assert_eq!(cap, pattern::<K>(i));
            if panics {
                panic!("queued request {i} panics");
            }
            *c += 1;
            make(*c)
        },
        move |r| {
            let _later = later;
            seen.lock().unwrap().push((i, r == make(want)));
            if let Some(t) = chain {
                t.apply_then(
                    |c| {
                        *c += 1;
                        (*c, word(*c))
                    },
                    move |(v, w)| seen.lock().unwrap().push((100, w == word(v))),
                );
            }
        },
    );
}

/// `apply_then`s issued on the trustee to the property it is applying a closure to: the property is in use,
/// so they go by the worker's channel to itself, and past the first two (432-byte records) the batch is full
/// and the rest wait in the worker's backlog, boxed (`Box<dyn Queued>`), sent as batches free. They run after
/// the closure, in issue order, each continuation with its own result; the one that panics has its
/// continuation dropped unrun; each closure and continuation capture is dropped once.
#[test]
fn apply_thens_past_a_full_batch_on_the_trustee_queue_boxed_and_run_in_order() {
    const N: u64 = 12;
    const PANICS: u64 = 6;
    let t = rt().trustee(0).entrust(0u64);
    let seen: Seen = Arc::default();
    let drops = Arc::new(AtomicUsize::new(0));
    let (t2, s, d) = (t.clone(), seen.clone(), drops.clone());
    let issued = t.apply(move |c| {
        *c = 1000;
        let mut want = 1000;
        for i in 0..N {
            let panics = i == PANICS;
            want += u64::from(!panics);
            match i % 4 {
                0 => queue_then::<400, _>(&t2, &s, &d, i, want, panics, word),
                1 => queue_then::<400, _>(&t2, &s, &d, i, want, panics, bytes300),
                2 => queue_then::<584, _>(&t2, &s, &d, i, want, panics, bytes600),
                _ => queue_then::<0, _>(&t2, &s, &d, i, want, panics, unit),
            }
        }
        // Nothing ran yet: the property is this closure's.
        assert_eq!(*c, 1000);
        N
    });
    assert_eq!(issued, N);
    // Closure and continuation captures: 2 per request, the panicking one's continuation dropped unrun.
    wait_until(
        "every queued request ran and every capture was dropped",
        || seen.lock().unwrap().len() == N as usize && load(&drops) == 2 * N as usize,
    );
    let mut want: Vec<(u64, bool)> = (0..N).filter(|&i| i != PANICS).map(|i| (i, true)).collect();
    want.push((100, true));
    assert_eq!(*seen.lock().unwrap(), want);
    assert_eq!(t.apply(|c| *c), 1000 + N);
    assert_eq!(load(&drops), 2 * N as usize);

    // The issuing closure panics once its requests are queued: the caller gets its panic, and what it queued
    // still runs (the worker's outbox holds it), each capture dropped once.
    seen.lock().unwrap().clear();
    drops.store(0, Ordering::SeqCst);
    let (t2, s, d) = (t.clone(), seen.clone(), drops.clone());
    let caught = catch_unwind(AssertUnwindSafe(|| {
        t.apply(move |c| {
            *c = 2000;
            for i in 0..8 {
                queue_then::<400, _>(&t2, &s, &d, i, 2001 + i, false, word);
            }
            panic!("the issuer fails after queuing");
        })
    }));
    assert_eq!(
        panic_message(caught.unwrap_err()),
        "the issuer fails after queuing"
    );
    wait_until("the requests of a closure that panicked ran", || {
        seen.lock().unwrap().len() == 9 && load(&drops) == 16
    });
    let mut want: Vec<(u64, bool)> = (0..8).map(|i| (i, true)).collect();
    want.push((100, true));
    assert_eq!(*seen.lock().unwrap(), want);
    assert_eq!(t.apply(|c| *c), 2009);
}

// ---- values over 512 bytes --------------------------------------------------------------------------

/// 648 bytes: written straight into its allocation by `entrust`, taken back boxed.
#[derive(Debug)]
struct Big {
    words: [u64; 80],
    token: Option<CountsDrops>,
}

impl Big {
    fn new(seed: u64, drops: &Arc<AtomicUsize>) -> Self {
        Big {
            words: std::array::from_fn(|i| seed + i as u64),
            token: Some(CountsDrops(drops.clone())),
        }
    }
}

/// `entrust` of a 648-byte value (written in place), `apply` returning a 640-byte copy, `try_unwrap` refused
/// while a clone lives and then granted with the effect of an `apply_then` issued just before (unpublished:
/// the take waits for it), `into_inner` from three threads (one `Some`), a value entrusted on the trustee and
/// one entrusted and dropped by a thread that never called: each value dropped once, when its taker drops it
/// or its last handle goes.
#[test]
fn values_over_512_bytes_entrusted_taken_back_and_dropped_once() {
    assert!(size_of::<Big>() > 512);
    let drops = Arc::new(AtomicUsize::new(0));
    let big = rt().trustee(0).entrust(Big::new(10, &drops));
    big.apply(|b| b.words[3] += 100);
    let copy = big.apply(|b| b.words);
    assert_eq!((copy[0], copy[3], copy[79]), (10, 113, 89));
    let other = big.clone();
    let big = big.try_unwrap().expect_err("a clone is alive");
    assert_eq!(big.apply(|b| b.words[79]), 89);
    drop(other);
    // Unpublished when `try_unwrap` is called (a lone apply_then on an idle channel goes at once: the second
    // waits in the batch); the take waits behind both.
    let ran = Rc::new(RefCell::new(Vec::new()));
    for k in 0..2u64 {
        let ran = ran.clone();
        big.apply_then(
            move |b| {
                b.words[0] += 1000 * (k + 1);
                b.words[0]
            },
            move |v| ran.borrow_mut().push(v),
        );
    }
    let Ok(mut taken) = big.try_unwrap() else {
        panic!("the last handle")
    };
    assert_eq!((taken.words[0], taken.words[3]), (3010, 113));
    assert_eq!(load(&drops), 0);
    wait_pending();
    assert_eq!(*ran.borrow(), [1010, 3010]);
    taken.token.take();
    assert_eq!(load(&drops), 1);
    drop(taken);

    // `into_inner` from three threads: exactly one gets it.
    let shared = rt().trustee(0).entrust(Big::new(500, &drops));
    let handles: Vec<Trust<Big>> = (0..3).map(|_| shared.clone()).collect();
    drop(shared);
    let got: Vec<Option<Big>> = thread::scope(|s| {
        let hs: Vec<_> = handles
            .into_iter()
            .map(|h| s.spawn(move || h.into_inner()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut values: Vec<Big> = got.into_iter().flatten().collect();
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].words[79], 579);
    assert_eq!(load(&drops), 1);
    values.clear();
    assert_eq!(load(&drops), 2);

    // Entrusted on the trustee (in place, adopted at once), handed back, taken with `into_inner`.
    let home = rt().trustee(0).entrust(());
    let d = drops.clone();
    let made: Vec<Trust<Big>> = home.apply(move |_| {
        (0..2)
            .map(|i| local_trustee().entrust(Big::new(1000 * (i + 1), &d)))
            .collect()
    });
    let mut made = made.into_iter();
    let (first, second) = (made.next().unwrap(), made.next().unwrap());
    let first = first.into_inner().expect("the only handle");
    assert_eq!(first.words[1], 1001);
    drop(first);
    assert_eq!(load(&drops), 3);
    drop(second); // its last handle: dropped on the trustee
    wait_until("the value made on the trustee was dropped", || {
        load(&drops) == 4
    });

    // Entrusted and dropped by a thread that never called: registration and drop by mail.
    let d = drops.clone();
    thread::spawn(move || drop(rt().trustee(0).entrust(Big::new(7, &d))))
        .join()
        .unwrap();
    wait_until("the value of a thread without a client was dropped", || {
        load(&drops) == 5
    });
    assert_eq!(load(&drops), 5);
}

// ---- apply_async at every step --------------------------------------------------------------------

/// Counts its wakes and unparks the thread that made it.
struct CountWakes(AtomicUsize, thread::Thread);

impl Wake for CountWakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
        self.1.unpark();
    }
}

/// Polls `f` to completion on this thread, parking between polls.
fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(CountWakes(AtomicUsize::new(0), thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}

fn poll_once<F: Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(waker))
}

/// `apply_async` futures whose closures capture `K` bytes and a drop counter, and whose results are a drop
/// counter and `M` bytes, at every step: dropped unpolled (never run, capture dropped at once), polled once
/// and dropped (run once, result dropped once by whoever lets go last), answered and then dropped unpolled
/// (the result waits in the node: dropped by the drop, at once), awaited, and polled on the trustee itself
/// (the local shortcut, ready at the first poll).
fn async_steps<const K: usize, const M: usize>(t: &Trust<u64>) {
    let (caps, results) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let request = {
        let (caps, results) = (caps.clone(), results.clone());
        move |seed: u64| {
            let (cap, token, r) = (
                pattern::<K>(seed),
                CountsDrops(caps.clone()),
                results.clone(),
            );
            t.apply_async(move |c| {
                let _token = token;
                assert_eq!(cap, pattern::<K>(seed));
                *c += 1;
                (CountsDrops(r), pattern::<M>(seed + *c))
            })
        }
    };
    let before = t.apply(|c| *c);
    // Dropped before the first poll: never sent, its closure dropped here.
    drop(request(1));
    assert_eq!((load(&caps), load(&results)), (1, 0));
    // Polled once (sent), dropped at once: the result is dropped once, here or on the trustee.
    let idle = Waker::noop();
    let mut sent = request(2);
    if let Poll::Ready(r) = poll_once(&mut sent, idle) {
        drop(r);
    }
    drop(sent);
    wait_until("the dropped future's request ran", || {
        load(&caps) == 2 && load(&results) == 1
    });
    // Answered, then dropped without another poll: the result waits in the node until the drop.
    let wakes = Arc::new(CountWakes(AtomicUsize::new(0), thread::current()));
    let waker = Waker::from(wakes.clone());
    let mut answered = request(3);
    assert!(poll_once(&mut answered, &waker).is_pending());
    wait_until("the trustee answered and woke the task", || {
        wakes.0.load(Ordering::SeqCst) > 0
    });
    assert_eq!((load(&caps), load(&results)), (3, 1));
    drop(answered);
    assert_eq!(load(&results), 2, "dropped with the future, at once");
    // Awaited.
    let c = before + 3;
    let (token, bytes) = block_on(request(4));
    assert_eq!(bytes, pattern::<M>(4 + c));
    assert_eq!(load(&results), 2);
    drop(token);
    assert_eq!((load(&caps), load(&results)), (4, 3));
    // Polled on the trustee, inside a closure on another of its properties: ready at once.
    let (t2, caps2, results2) = (t.clone(), caps.clone(), results.clone());
    let local = rt().trustee(0).entrust(());
    let ok = local.apply(move |_| {
        let (cap, token, r) = (pattern::<K>(5), CountsDrops(caps2), results2);
        let mut f = t2.apply_async(move |c| {
            let _token = token;
            assert_eq!(cap, pattern::<K>(5));
            *c += 1;
            (CountsDrops(r), pattern::<M>(5 + *c))
        });
        match poll_once(&mut f, Waker::noop()) {
            Poll::Ready((_token, bytes)) => bytes == pattern::<M>(5 + c + 1),
            Poll::Pending => false,
        }
    });
    assert!(ok, "the local shortcut's result");
    assert_eq!((load(&caps), load(&results)), (5, 4));
    // Polled on the trustee inside a closure on its own property: the local shortcut's re-entrant apply
    // panics; the closure never runs and its capture is dropped once, by the unwind.
    let (t2, caps2, results2) = (t.clone(), caps.clone(), results.clone());
    let refused = t.apply(move |c| {
        let (cap, token, r) = (pattern::<K>(6), CountsDrops(caps2), results2);
        let mut f = t2.apply_async(move |c| {
            let _token = token;
            assert_eq!(cap, pattern::<K>(6));
            *c += 1;
            (CountsDrops(r), pattern::<M>(6))
        });
        let caught = catch_unwind(AssertUnwindSafe(|| poll_once(&mut f, Waker::noop())));
        (caught.is_err(), *c)
    });
    assert_eq!(refused, (true, before + 4));
    assert_eq!((load(&caps), load(&results)), (6, 4));
    assert_eq!(t.apply(|c| *c), before + 4);
}

/// `apply_async` with results of 8 B, 300 B and 600 B (`poll_large`: boxed out of the node) and closures of
/// 16 B and 4 KiB, at every step (see `async_steps`).
#[test]
fn apply_async_futures_dropped_at_every_step_drop_captures_and_results_once() {
    let t = rt().trustee(0).entrust(0u64);
    async_steps::<0, 0>(&t);
    async_steps::<4096, 292>(&t);
    async_steps::<0, 592>(&t);
    async_steps::<4096, 592>(&t);
    assert_eq!(t.apply(|c| *c), 16);
}

// ---- chains and waits inside continuations ----------------------------------------------------------

/// Link `k` of a chain of `len`: its result alternates 8 and 600 bytes, its continuation's capture 0 and
/// 600 bytes (boxed); the continuation logs `k`, issues the next link, and link `waits` then calls
/// `wait_pending`, which runs the rest of the chain inside it.
fn link(t: Trust<u64>, log: Log, k: u64, len: u64, waits: u64) {
    let t2 = t.clone();
    let after = move |log: &Log| {
        log.borrow_mut().push(k);
        if k + 1 < len {
            link(t2, log.clone(), k + 1, len, waits);
        }
        if k == waits {
            wait_pending();
            log.borrow_mut().push(100 + k);
        }
    };
    if k.is_multiple_of(2) {
        t.apply_then(
            move |c| {
                *c += 1;
                *c
            },
            move |v| {
                assert_eq!(v, k + 1);
                after(&log);
            },
        );
    } else {
        let big = pattern::<600>(k);
        t.apply_then(
            move |c| {
                *c += 1;
                bytes600(*c)
            },
            move |v| {
                assert_eq!((v, big), (bytes600(k + 1), pattern::<600>(k)));
                after(&log);
            },
        );
    }
}

/// A chain of `apply_then`s, each issued by the previous continuation, of alternating sizes, with
/// `wait_pending` inside one link's continuation: that wait runs the rest of the chain, then returns.
#[test]
fn a_chain_of_mixed_sizes_with_wait_pending_inside_a_link() {
    let t = rt().trustee(0).entrust(0u64);
    let log: Log = Rc::default();
    link(t.clone(), log.clone(), 0, 7, 2);
    wait_pending();
    assert_eq!(*log.borrow(), [0, 1, 2, 3, 4, 5, 6, 102]);
    assert_eq!(t.apply(|c| *c), 7);
}

// ---- panics in a mixed batch ------------------------------------------------------------------------

/// Panicking closures in the middle of a batch of mixed sizes: request 3 (a 600-byte closure, boxed) panics
/// with a message, request 5 (4 KiB) with a payload whose `Drop` panics. The others run and their
/// continuations get their results; `wait_pending` resumes the first panic with its payload, the second's
/// payload is dropped once by the runtime (its panic contained); every closure and continuation capture is
/// dropped once; a second `wait_pending` returns.
#[test]
fn panics_in_the_middle_of_a_mixed_batch() {
    let t = rt().trustee(0).entrust(0u64);
    let caps = Arc::new(AtomicUsize::new(0));
    let conts = Arc::new(AtomicUsize::new(0));
    let payloads = Arc::new(AtomicUsize::new(0));
    let ran = Rc::new(RefCell::new(Vec::new()));
    for i in 0..8u64 {
        let (token, later, ran) = (
            CountsDrops(caps.clone()),
            CountsDrops(conts.clone()),
            ran.clone(),
        );
        let p = payloads.clone();
        match i {
            3 => {
                let big = pattern::<584>(i);
                t.apply_then(
                    move |c| -> [u8; 300] {
                        let _token = token;
                        *c += 1;
                        panic!("request {} of {}", i, big.len())
                    },
                    move |_| {
                        let _later = later;
                        ran.borrow_mut().push(i);
                    },
                );
            }
            5 => {
                let big = pattern::<4080>(i);
                t.apply_then(
                    move |c| -> u64 {
                        let _token = token;
                        *c += 1;
                        assert_eq!(big, pattern::<4080>(i));
                        std::panic::panic_any(PanicsOnDrop(p))
                    },
                    move |_| {
                        let _later = later;
                        ran.borrow_mut().push(i);
                    },
                );
            }
            _ if i % 2 == 0 => {
                let big = pattern::<184>(i);
                t.apply_then(
                    move |c| {
                        let _token = token;
                        *c += 1;
                        (big[0], bytes600(*c))
                    },
                    move |(b, r)| {
                        let _later = later;
                        assert_eq!((b, r), (i as u8, bytes600(i + 1)));
                        ran.borrow_mut().push(i);
                    },
                );
            }
            _ => {
                let big = pattern::<576>(i);
                t.apply_then(
                    move |c| {
                        let _token = token;
                        *c += 1;
                        bytes300(*c)
                    },
                    move |r| {
                        let _later = later;
                        assert_eq!((r, big), (bytes300(i + 1), pattern::<576>(i)));
                        ran.borrow_mut().push(i);
                    },
                );
            }
        }
    }
    // A blocking `apply_with` among them, whose 600-byte argument (boxed) carries a token and whose closure
    // panics: the argument is dropped once, by the unwind on the trustee.
    let caught = catch_unwind(AssertUnwindSafe(|| {
        t.apply_with(
            |c, (arg, _token): ([u8; 592], CountsDrops)| -> u64 {
                *c += 1;
                panic!("argument of {} bytes refused", arg.len())
            },
            (pattern::<592>(9), CountsDrops(caps.clone())),
        )
    }));
    assert_eq!(
        panic_message(caught.unwrap_err()),
        "argument of 592 bytes refused"
    );
    let first = catch_unwind(AssertUnwindSafe(wait_pending)).unwrap_err();
    assert_eq!(panic_message(first), "request 3 of 584");
    assert_eq!(*ran.borrow(), [0, 1, 2, 4, 6, 7]);
    assert_eq!((load(&caps), load(&conts), load(&payloads)), (9, 8, 1));
    wait_pending();
    assert_eq!(t.apply(|c| *c), 9);
}

// ---- handles cloned and dropped while requests are in flight ---------------------------------------

/// Handles of one value cloned and dropped from four threads while `apply_then`s and `apply`s are in flight
/// (one thread never calls: its changes go by the count mail), from a continuation and from a delegated
/// closure on another property: the value is never dropped while a handle lives, every request runs once,
/// and `try_unwrap` gets it back, dropped by nobody.
#[test]
fn clones_and_drops_from_threads_while_requests_are_in_flight() {
    const EACH: u64 = if cfg!(miri) { 6 } else { 200 };
    let drops = Arc::new(AtomicUsize::new(0));
    let value = rt().trustee(0).entrust((0u64, CountsDrops(drops.clone())));
    let other = rt().trustee(0).entrust(());
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (mine, other) = (value.clone(), other.clone());
            thread::spawn(move || {
                let ran = Rc::new(std::cell::Cell::new(0));
                for i in 0..EACH {
                    let (ran, again) = (ran.clone(), mine.clone());
                    mine.apply_then(
                        |v| v.0 += 1,
                        move |()| {
                            ran.set(ran.get() + 1);
                            drop(again); // a handle dropped by a continuation
                        },
                    );
                    let c = mine.clone();
                    if i % 3 == 0 {
                        assert!(c.apply(|v| v.0) >= 1);
                    }
                    if i % 3 == 1 {
                        let on_trustee = mine.clone();
                        // Dropped inside a delegated closure, on the trustee.
                        other.apply(move |_| drop(on_trustee));
                    }
                    drop(c);
                }
                wait_pending();
                ran.get()
            })
        })
        .collect();
    let mailer = {
        let mine = value.clone();
        thread::spawn(move || {
            for _ in 0..2 * EACH {
                drop(mine.clone());
            }
        })
    };
    for _ in 0..EACH {
        drop(value.clone());
    }
    mailer.join().unwrap();
    for w in workers {
        assert_eq!(w.join().unwrap(), EACH);
    }
    assert_eq!(load(&drops), 0, "dropped while a handle lived");
    assert_eq!(value.apply(|v| v.0), 2 * EACH);
    let (n, token) = value.try_unwrap().map_err(|_| "the count is off").unwrap();
    assert_eq!((n, load(&drops)), (2 * EACH, 0));
    drop(token);
    assert_eq!(load(&drops), 1);
}

// ---- a thread that exits with everything in flight -------------------------------------------------

/// A thread that exits, without `wait_pending`, with `apply_then`s of every size above unsent and in flight
/// (closure captures, results and continuation captures each carrying a drop counter) and an `apply_async`
/// future sent and dropped: every request runs once, and every capture and result is dropped once, run or
/// not, on whichever side.
#[test]
fn a_thread_exiting_with_mixed_sizes_unsent_and_in_flight() {
    const N: u64 = 12;
    let t = rt().trustee(0).entrust(0u64);
    let (caps, results, conts) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (t2, c1, r1, k1) = (t.clone(), caps.clone(), results.clone(), conts.clone());
    thread::spawn(move || {
        for i in 0..N {
            let (token, r, later) = (CountsDrops(c1.clone()), r1.clone(), CountsDrops(k1.clone()));
            match i % 4 {
                0 => t2.apply_then(
                    move |c| {
                        let _token = token;
                        *c += 1;
                        CountsDrops(r)
                    },
                    move |res| drop((later, res)),
                ),
                1 => {
                    let big = pattern::<184>(i);
                    t2.apply_then(
                        move |c| {
                            let _token = token;
                            *c += 1;
                            (CountsDrops(r), big, [0u8; 100])
                        },
                        move |res| drop((later, res)),
                    )
                }
                2 => {
                    let big = pattern::<584>(i);
                    let cbig = pattern::<600>(i);
                    t2.apply_then(
                        move |c| {
                            let _token = token;
                            *c += 1;
                            (CountsDrops(r), big)
                        },
                        move |res| drop((later, res, cbig)),
                    )
                }
                _ => {
                    let big = pattern::<4080>(i);
                    t2.apply_then(
                        move |c| {
                            let _token = token;
                            assert_eq!(big, pattern::<4080>(i));
                            *c += 1;
                            drop(r);
                        },
                        move |()| drop(later),
                    )
                }
            }
        }
        let token = CountsDrops(c1.clone());
        let mut f = t2.apply_async(move |c| {
            let _token = token;
            *c += 1;
            CountsDrops(r1)
        });
        if let Poll::Ready(r) = poll_once(&mut f, Waker::noop()) {
            drop(r);
        }
        // Leaves: the rest of its batch goes out as its client is dropped, which waits for the answers
        // carrying results to drop (its continuations'), not for the future's.
    })
    .join()
    .expect("the thread leaves cleanly");
    wait_until(
        "the future's request ran and its result was dropped",
        || load(&results) == 3 * N as usize / 4 + 1,
    );
    assert_eq!(t.apply(|c| *c), N + 1);
    assert_eq!(load(&caps), N as usize + 1, "every closure capture once");
    assert_eq!(load(&conts), N as usize, "every continuation capture once");
    assert_eq!(load(&results), 3 * N as usize / 4 + 1, "every result once");
}

// ---- thread-local destructors that delegate -------------------------------------------------------

/// What a delegating thread-local destructor shares with the test.
#[derive(Clone)]
struct Shared {
    t: Arc<Trust<u64>>,
    caps: Arc<AtomicUsize>,
    conts: Arc<AtomicUsize>,
    results: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(u8, u64)>>>,
}

impl Shared {
    /// A counter on trustee 0 and nothing counted yet.
    fn new() -> Self {
        Shared {
            t: Arc::new(rt().trustee(0).entrust(0u64)),
            caps: Arc::default(),
            conts: Arc::default(),
            results: Arc::default(),
            seen: Arc::default(),
        }
    }
}

/// A thread-local whose destructor issues up to four `apply_then`s of mixed sizes (an 8-byte result with a drop
/// counter, a 600-byte closure with a 308-byte result, a 4 KiB closure with a 600-byte result and a 600-byte
/// continuation, a 200-byte closure), then, if `wait`, `wait_pending` and a marker. Nothing in it may panic
/// (a panic out of a thread-local destructor aborts): a wrong result is recorded as such.
struct Delegates {
    tag: u8,
    wait: bool,
    /// How many of the four requests it issues (the first ones).
    requests: u64,
    shared: Shared,
}

impl Drop for Delegates {
    fn drop(&mut self) {
        let Shared {
            t,
            caps,
            conts,
            results,
            seen,
        } = self.shared.clone();
        let tag = self.tag;
        for i in 0..self.requests {
            let (token, later, r, seen) = (
                CountsDrops(caps.clone()),
                CountsDrops(conts.clone()),
                results.clone(),
                seen.clone(),
            );
            match i {
                0 => t.apply_then(
                    move |c| {
                        let _token = token;
                        *c += 1;
                        (CountsDrops(r), *c)
                    },
                    move |(_r, v)| {
                        let _later = later;
                        seen.lock().unwrap().push((tag, v));
                    },
                ),
                1 => {
                    let cap = pattern::<584>(i);
                    t.apply_then(
                        move |c| {
                            let _token = token;
                            *c += 1;
                            (*c, bytes300(*c + u64::from(cap != pattern::<584>(1))))
                        },
                        move |(v, bytes)| {
                            let _later = later;
                            let ok = bytes == bytes300(v);
                            seen.lock()
                                .unwrap()
                                .push((tag, if ok { v } else { u64::MAX }));
                        },
                    )
                }
                2 => {
                    let (cap, ccap) = (pattern::<4080>(i), pattern::<600>(i));
                    t.apply_then(
                        move |c| {
                            let _token = token;
                            *c += 1;
                            let good = cap == pattern::<4080>(2);
                            (*c, bytes600(if good { *c } else { 0 }))
                        },
                        move |(v, bytes)| {
                            let _later = later;
                            let ok = bytes == bytes600(v) && ccap == pattern::<600>(2);
                            seen.lock()
                                .unwrap()
                                .push((tag, if ok { v } else { u64::MAX }));
                        },
                    )
                }
                _ => {
                    let cap = pattern::<184>(i);
                    t.apply_then(
                        move |c| {
                            let _token = token;
                            *c += u64::from(cap == pattern::<184>(3));
                            *c
                        },
                        move |v| {
                            let _later = later;
                            seen.lock().unwrap().push((tag, v));
                        },
                    )
                }
            }
        }
        if self.wait && catch_unwind(wait_pending).is_ok() {
            seen.lock().unwrap().push((tag, 0));
        }
    }
}

thread_local! {
    static FIRST: RefCell<Option<Delegates>> = const { RefCell::new(None) };
    static SECOND: RefCell<Option<Delegates>> = const { RefCell::new(None) };
    static THIRD: RefCell<Option<Delegates>> = const { RefCell::new(None) };
}

/// Thread-local destructors that delegate, without and with `wait_pending`: one registered after the
/// runtime's thread client (destroyed before it: the thread's own client), two registered before (destroyed
/// after it: the late client, `LATE_CLIENT`, and a sweeper per destructor). Every request runs once, every
/// continuation that runs gets its result, the waiting destructor's four have run before its `wait_pending`
/// returns, and every capture and result is dropped once.
#[test]
fn thread_local_destructors_that_delegate_before_and_after_the_client_goes() {
    let shared = Shared::new();
    let s = shared.clone();
    thread::spawn(move || {
        let set = |cell: &'static std::thread::LocalKey<RefCell<Option<Delegates>>>, tag, wait| {
            let shared = s.clone();
            cell.with(|c| {
                *c.borrow_mut() = Some(Delegates {
                    tag,
                    wait,
                    requests: 4,
                    shared,
                })
            });
        };
        // Registered before the thread's client: destroyed after it (in reverse order of registration).
        set(&FIRST, 1, true);
        set(&SECOND, 2, false);
        assert_eq!(s.t.apply(|c| *c), 0); // the thread's client is made (and registered) here
        set(&THIRD, 3, false);
    })
    .join()
    .expect("the thread leaves cleanly");
    assert_eq!(shared.t.apply(|c| *c), 12, "every request ran once");
    assert_eq!(load(&shared.caps), 12, "every closure capture once");
    assert_eq!(load(&shared.conts), 12, "every continuation capture once");
    assert_eq!(load(&shared.results), 3, "every counted result once");
    let seen = shared.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|&(_, v)| v != u64::MAX),
        "a wrong result: {seen:?}"
    );
    // The waiting destructor (tag 1, the last to run) saw its four continuations run before its marker.
    let first: Vec<u64> = seen
        .iter()
        .filter(|&&(tag, _)| tag == 1)
        .map(|&(_, v)| v)
        .collect();
    assert_eq!(first, [9, 10, 11, 12, 0], "{seen:?}");
}

// ---- two trustees ---------------------------------------------------------------------------------

/// Two trustees. From a plain thread: `apply_then`s of 216-byte records pipelined to trustee 0 while it is
/// held, so that a batch is left unsent with both lanes busy, then a blocking `apply` to trustee 1 that
/// releases it: the call waits with trustee 0's outbox among its `others`, which goes out as lanes free.
/// From a delegated closure on trustee 0: `apply_then`s to trustee 1 past a full batch (worker 0's outbox to
/// trustee 1, then its backlog), clones and drops of a trustee-1 handle (count changes from a worker, netted
/// in the count mail once the batch is full), and a blocking `apply` to trustee 1, which panics naming
/// `apply_then`. Every result exact, every capture and the value dropped once.
#[test]
fn two_trustees_from_a_thread_and_from_each_other() {
    let zero = rt().trustee(0).entrust(0u64);
    let drops = Arc::new(AtomicUsize::new(0));
    let one = rt().trustee(1).entrust((0u64, CountsDrops(drops.clone())));
    let released = Arc::new(AtomicUsize::new(0));
    let gate = released.clone();
    zero.apply_then(
        move |_| {
            let mut spins = 0;
            while load(&gate) == 0 && spins < 100_000 {
                thread::yield_now();
                spins += 1;
            }
        },
        |()| (),
    );
    let log: Log = Rc::default();
    // Four fill the batch on the other lane (published three quarters full), five the batch being built,
    // left unsent: both lanes are busy.
    for n in 1..=9 {
        then_sized::<184, 0, _>(&zero, &log, n, word);
    }
    let r = released.clone();
    let seen_by_one = one.apply(move |v| {
        r.store(1, Ordering::SeqCst);
        v.0 += 1;
        v.0
    });
    assert_eq!(seen_by_one, 1);
    wait_pending();
    assert_eq!(*log.borrow(), (1..=9).collect::<Vec<u64>>());

    // From trustee 0's closures to trustee 1.
    const N: u64 = 10;
    let seen: Seen = Arc::default();
    let caps = Arc::new(AtomicUsize::new(0));
    let (one2, s, c2) = (one.clone(), seen.clone(), caps.clone());
    let refused = zero.apply(move |z| {
        *z += 100;
        let mut clones = Vec::new();
        for i in 0..N {
            let (cap, token, s) = (pattern::<400>(i), CountsDrops(c2.clone()), s.clone());
            // The first continuation (on worker 0's scheduler) clones a handle and issues one more request
            // to trustee 1, which runs after the others.
            let chain = (i == 0).then(|| one2.clone());
            one2.apply_then(
                move |v| {
                    let _token = token;
                    v.0 += 1;
                    (v.0, bytes300(v.0 + u64::from(cap != pattern::<400>(i))))
                },
                move |(v, bytes)| {
                    s.lock().unwrap().push((v, bytes == bytes300(v)));
                    if let Some(one) = chain {
                        let again = one.clone();
                        one.apply_then(
                            |v| {
                                v.0 += 1;
                                v.0
                            },
                            move |v| {
                                drop(again);
                                s.lock().unwrap().push((v, true));
                            },
                        );
                    }
                },
            );
            clones.push(one2.clone());
        }
        drop(clones);
        let blocked = catch_unwind(AssertUnwindSafe(|| one2.apply(|v| v.0)));
        blocked.map_err(panic_message).unwrap_err()
    });
    assert!(refused.contains("apply_then"), "{refused}");
    wait_until("trustee 1 ran what trustee 0 sent it", || {
        seen.lock().unwrap().len() == N as usize + 1 && load(&caps) == N as usize
    });
    let want: Vec<(u64, bool)> = (2..=2 + N).map(|v| (v, true)).collect();
    assert_eq!(*seen.lock().unwrap(), want);
    assert_eq!(zero.apply(|z| *z), 109);
    assert_eq!(load(&drops), 0, "dropped while a handle lived");
    let Ok((n, token)) = one.try_unwrap() else {
        panic!("the count is off")
    };
    assert_eq!((n, load(&drops)), (2 + N, 0));
    drop(token);
    assert_eq!(load(&drops), 1);
}

macro_rules! late_keys {
    ($($name:ident)*) => {
        thread_local! {
            $(static $name: RefCell<Option<Delegates>> = const { RefCell::new(None) };)*
        }
        /// Every key of `late_keys!`, in declaration order.
        const LATE_KEYS: &[&std::thread::LocalKey<RefCell<Option<Delegates>>>] = &[$(&$name),*];
    };
}
late_keys!(L1 L2 L3 L4 L5 L6 L7 L8 L9 L10 L11);

/// Runs a thread that sets the eleven `late_keys!` to destructors that issue two requests (an 8-byte result with
/// a drop counter, a 600-byte closure with a 308-byte result) and wait (tags 10 to 20, in
/// registration order), all registered before the thread's client and so destroyed after it, in reverse order
/// (tag 20 first). Checks that every request ran once and every capture and counted result was dropped once;
/// returns, per tag, what its continuations saw (then 0, the marker of its `wait_pending`'s return).
fn eleven_late_destructors() -> std::collections::BTreeMap<u8, Vec<u64>> {
    let shared = Shared::new();
    let s = shared.clone();
    thread::spawn(move || {
        for (k, key) in LATE_KEYS.iter().enumerate() {
            let shared = s.clone();
            key.with(|c| {
                *c.borrow_mut() = Some(Delegates {
                    tag: 10 + k as u8,
                    wait: true,
                    requests: 2,
                    shared,
                })
            });
        }
        assert_eq!(s.t.apply(|c| *c), 0);
    })
    .join()
    .expect("the thread leaves cleanly");
    let n = LATE_KEYS.len();
    assert_eq!(
        shared.t.apply(|c| *c),
        2 * n as u64,
        "every request ran once"
    );
    assert_eq!(load(&shared.caps), 2 * n, "every closure capture once");
    assert_eq!(
        load(&shared.conts),
        2 * n,
        "every continuation capture once"
    );
    assert_eq!(load(&shared.results), n, "every counted result once");
    let seen = shared.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|&(_, v)| v != u64::MAX),
        "a wrong result: {seen:?}"
    );
    let mut per_tag = std::collections::BTreeMap::<u8, Vec<u64>>::new();
    for &(tag, v) in &seen {
        per_tag.entry(tag).or_default().push(v);
    }
    per_tag
}

/// Eleven thread-local destructors that delegate, run after the thread's client: every request runs once and
/// every capture and result is dropped once, however many there are, and each destructor's `wait_pending`
/// returns once its two continuations have run: the first eight to run (tags 20 to 13) with the late client
/// and a sweeper of their own, the ninth and later (tags 12 to 10) too.
///
/// Finding (review 52): past the eight sweepers, such a destructor got a fresh client context per call
/// (`call::with_thread_client`, once `arm_sweeper` found all eight spent): its `apply_then`'s context was
/// dropped when the call returned, which waited for the answer and dropped the continuation unrun, and its
/// `wait_pending` looked at another fresh context, found nothing outstanding, and returned at once, while
/// docs/delegation.md said a late destructor's `wait_pending` "runs their continuations and resumes their
/// panics there as anywhere". Measured: `{10: [0], 11: [0], 12: [0], 13..=20: [v, v, 0]}`. Fixed: past the
/// sweepers an `apply_then` runs as a blocking call and its continuation at once
/// (`call::then_with_no_client_left`).
#[test]
fn every_late_destructors_wait_pending_runs_its_continuations() {
    let per_tag = eleven_late_destructors();
    for tag in 10..=20u8 {
        let vs = &per_tag[&tag];
        assert_eq!(
            (vs.len(), vs.last()),
            (3, Some(&0)),
            "destructor {tag}'s continuations ran before its wait_pending returned: {per_tag:?}"
        );
    }
}

/// A late thread-local destructor whose request panics: it catches what its `apply_then` and `wait_pending`
/// resume and records the message, with its tag.
struct PanicsLate {
    tag: u8,
    t: Arc<Trust<u64>>,
    caught: Arc<Mutex<Vec<(u8, String)>>>,
}

impl Drop for PanicsLate {
    fn drop(&mut self) {
        let tag = self.tag;
        let caught = catch_unwind(AssertUnwindSafe(|| {
            self.t.apply_then(
                move |_| panic!("late {tag}"),
                |()| unreachable!("the request panicked"),
            );
            wait_pending();
        }));
        if let Err(payload) = caught {
            self.caught
                .lock()
                .unwrap()
                .push((tag, panic_message(payload)));
        }
    }
}

thread_local! {
    static P1: RefCell<Option<PanicsLate>> = const { RefCell::new(None) };
    static P2: RefCell<Option<PanicsLate>> = const { RefCell::new(None) };
    static P3: RefCell<Option<PanicsLate>> = const { RefCell::new(None) };
    static P4: RefCell<Option<PanicsLate>> = const { RefCell::new(None) };
    static P5: RefCell<Option<PanicsLate>> = const { RefCell::new(None) };
    static P6: RefCell<Option<PanicsLate>> = const { RefCell::new(None) };
    static P7: RefCell<Option<PanicsLate>> = const { RefCell::new(None) };
    static P8: RefCell<Option<PanicsLate>> = const { RefCell::new(None) };
    static P9: RefCell<Option<PanicsLate>> = const { RefCell::new(None) };
    static P10: RefCell<Option<PanicsLate>> = const { RefCell::new(None) };
}

/// Ten late thread-local destructors whose `apply_then` panics on the trustee: the eight with a sweeper get
/// the panic from their `wait_pending`, the two after them (tags 2 and 1: destroyed last) from the
/// `apply_then` itself (`call::then_with_no_client_left`); none is lost, each with its own message.
#[test]
fn every_late_destructors_request_panic_comes_back_to_it() {
    let t = Arc::new(rt().trustee(0).entrust(0u64));
    let caught = Arc::new(Mutex::new(Vec::new()));
    let (t2, c2) = (t.clone(), caught.clone());
    thread::spawn(move || {
        let keys = [&P1, &P2, &P3, &P4, &P5, &P6, &P7, &P8, &P9, &P10];
        for (k, key) in keys.iter().enumerate() {
            let late = PanicsLate {
                tag: 1 + k as u8,
                t: t2.clone(),
                caught: c2.clone(),
            };
            key.with(|c| *c.borrow_mut() = Some(late));
        }
        assert_eq!(t2.apply(|c| *c), 0);
    })
    .join()
    .expect("the thread leaves cleanly");
    let mut caught = caught.lock().unwrap().clone();
    caught.sort();
    let want: Vec<(u8, String)> = (1..=10).map(|tag| (tag, format!("late {tag}"))).collect();
    assert_eq!(caught, want);
    assert_eq!(t.apply(|c| *c), 0, "the trustee still serves");
}
