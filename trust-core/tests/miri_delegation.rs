//! Delegation from plain threads to one worker, sized for Miri: the whole client/trustee path — slots,
//! batches, results coming back through the response slot, reference counts on the trustee, caught panics,
//! the sleep/wake handshake — with no stack switching (fibers and `may` coroutines cannot run under Miri).
//! Exact totals, drops counted once. Also an ordinary test file: `cargo test` runs it natively.
//!
//! `.ci/run` runs it as
//! `MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-ignore-leaks" cargo +nightly miri test -p trust-core
//! --no-default-features --test miri_delegation`:
//! - `--no-default-features` (no `may` feature): with it, every plain-thread call asks
//!   `may::coroutine::is_coroutine()`, whose thread-local context stack in `generator` 0.8.12 (`rt.rs:227`,
//!   `ContextStack::top`) violates Stacked Borrows (Tree Borrows accepts it) — not this crate's code;
//! - `-Zmiri-ignore-leaks`: the workers never stop (under Miri no `atexit` hook shuts the runtime down) and
//!   each leaks its `Worker` on purpose.
//!
//! `a_thread_exiting_with_requests_in_flight` is issue 14's use-after-free: a thread that ends right after its
//! `apply_then`s, without `wait_pending`.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;

mod common;
use common::{CountsDrops, PanicsOnDrop, inline_and_boxed_continuations, panic_message};
use trust_core::{Runtime, Trust, wait_pending};

/// This process's runtime: one worker (each worker is a thread Miri must interpret).
fn rt() -> &'static Runtime {
    static RT: OnceLock<&'static Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::builder()
            .workers(1)
            .build()
            .expect("first runtime of this process")
    })
}

/// Waits for the trustee to drop a value whose last handle is gone. The drop is asynchronous: the worker loop
/// does it after serving the request that released the handle. Each round trip to the same trustee lets the
/// loop go round at least once (a time bound would not do: Miri's clock is virtual, driven by instructions).
fn wait_for_drops(drops: &AtomicUsize, expected: usize) {
    let probe = rt().trustee(0).entrust(());
    for _ in 0..100 {
        if drops.load(Ordering::SeqCst) >= expected {
            break;
        }
        probe.apply(|_| thread::yield_now());
    }
    assert_eq!(drops.load(Ordering::SeqCst), expected);
}

#[test]
fn apply_returns_each_result() {
    let counter = rt().trustee(0).entrust(0u64);
    for i in 1..=5 {
        assert_eq!(
            counter.apply(|c| {
                *c += 1;
                *c
            }),
            i
        );
    }
    let text = rt().trustee(0).entrust(String::from("dele"));
    assert_eq!(
        text.apply(|s| {
            s.push_str("gation");
            s.clone()
        }),
        "delegation"
    );
}

#[test]
fn three_threads_increment_exactly() {
    const PER_THREAD: u64 = 10;
    let counter = rt().trustee(0).entrust(0u64);
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let counter = counter.clone();
            thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    counter.apply(|c| *c += 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(counter.apply(|c| *c), 3 * PER_THREAD);
}

#[test]
fn apply_then_continuations_run_here_in_issue_order() {
    let counter = rt().trustee(0).entrust(0u64);
    let seen = Rc::new(RefCell::new(Vec::new()));
    let me = thread::current().id();
    for _ in 0..8 {
        let seen = seen.clone();
        counter.apply_then(
            |c| {
                *c += 1;
                *c
            },
            move |v| {
                assert_eq!(thread::current().id(), me);
                seen.borrow_mut().push(v);
            },
        );
    }
    wait_pending();
    assert_eq!(*seen.borrow(), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(counter.apply(|c| *c), 8);
}

#[test]
fn apply_then_from_another_thread_then_wait_pending() {
    let counter = rt().trustee(0).entrust(0u64);
    let c = counter.clone();
    let total = thread::spawn(move || {
        let sum = Rc::new(RefCell::new(0));
        for i in 1..=6 {
            let sum = sum.clone();
            c.apply_then(move |c| *c += i, move |()| *sum.borrow_mut() += i);
        }
        wait_pending(); // nothing is in flight when this thread ends
        *sum.borrow()
    })
    .join()
    .unwrap();
    assert_eq!(total, 21);
    assert_eq!(counter.apply(|c| *c), 21);
}

#[test]
fn apply_with_moves_its_argument_and_big_captures_go_out_of_line() {
    let sum = rt().trustee(0).entrust(0u64);
    let data: Vec<u8> = (0..100).collect();
    let got = sum.apply_with(
        |s, v: Vec<u8>| {
            *s = v.iter().map(|&b| u64::from(b)).sum();
            *s
        },
        data,
    );
    assert_eq!(got, 4950);
    // A 2 KiB capture does not fit the slot's 1136-byte body: it travels boxed.
    let big = [3u8; 2048];
    assert_eq!(
        sum.apply(move |_| big.iter().map(|&b| u64::from(b)).sum::<u64>()),
        3 * 2048
    );
}

#[test]
fn clones_across_threads_drop_the_value_exactly_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let original = rt().trustee(0).entrust(CountsDrops(drops.clone()));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let mine: Vec<Trust<CountsDrops>> = (0..4).map(|_| original.clone()).collect();
            thread::spawn(move || {
                let more: Vec<_> = mine.iter().map(Trust::clone).collect();
                drop(mine);
                drop(more);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // A round trip: every decrement sent before it has been served.
    assert_eq!(original.apply(|_| 7), 7);
    assert_eq!(drops.load(Ordering::SeqCst), 0, "one handle is still alive");
    drop(original);
    wait_for_drops(&drops, 1);
}

/// Clone/drop pairs from two threads while the trustee is behind: the changes that find the slot busy are
/// netted in the trustee's count mail, and a clone's decrement often arrives before its increment; the value
/// survives every dip of the count, and `try_unwrap` then gets it back, dropped by nobody.
#[test]
fn clone_drop_pairs_through_the_count_mail_keep_the_count_exact() {
    let drops = Arc::new(AtomicUsize::new(0));
    let original = rt().trustee(0).entrust((5u8, CountsDrops(drops.clone())));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let mine = original.clone();
            thread::spawn(move || {
                for _ in 0..50 {
                    drop(mine.clone());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "dropped while a handle lived"
    );
    let (five, token) = original
        .try_unwrap()
        .map_err(|_| "the count is off")
        .unwrap();
    assert_eq!(five, 5);
    drop(token);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn a_panic_reaches_the_caller_and_the_trustee_keeps_serving() {
    let counter = rt().trustee(0).entrust(41u64);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        counter.apply(|c| {
            *c += 1;
            panic!("boom {}", *c)
        })
    }));
    assert_eq!(panic_message(caught.unwrap_err()), "boom 42");
    assert_eq!(counter.apply(|c| *c), 42);
    // The same through `apply_then`: kept, and resumed by `wait_pending`; the other requests complete.
    let ran = Rc::new(RefCell::new(0));
    for i in 0..3 {
        let ran = ran.clone();
        counter.apply_then(
            move |c| {
                *c += 1;
                if i == 1 {
                    panic!("request {i} failed");
                }
            },
            move |()| *ran.borrow_mut() += 1,
        );
    }
    let err = catch_unwind(AssertUnwindSafe(wait_pending)).unwrap_err();
    assert_eq!(panic_message(err), "request 1 failed");
    assert_eq!(*ran.borrow(), 2);
    assert_eq!(counter.apply(|c| *c), 45);
}

#[test]
fn a_thread_exiting_with_requests_in_flight() {
    let drops = Arc::new(AtomicUsize::new(0));
    let counter = rt().trustee(0).entrust(0u64);
    let c = counter.clone();
    let d = drops.clone();
    thread::spawn(move || {
        for _ in 0..20 {
            let token = CountsDrops(d.clone());
            c.apply_then(|c| *c += 1, move |()| drop(token));
        }
        // No `wait_pending`: the thread's client goes away with the requests unsent or in flight.
    })
    .join()
    .unwrap();
    assert_eq!(counter.apply(|c| *c), 20, "every request ran");
    assert_eq!(
        drops.load(Ordering::SeqCst),
        20,
        "every continuation dropped once, on its thread"
    );
}

#[test]
fn continuations_inline_and_boxed_run_in_place_or_are_dropped_with_their_results() {
    // Those that run see their own capture and result (checked inside the helper); those left behind by a
    // thread that exits are dropped once, each with its (boxed) result.
    let counter = rt().trustee(0).entrust(0u64);
    let drops = Arc::new(AtomicUsize::new(0));
    let (c, d) = (counter.clone(), drops.clone());
    thread::spawn(move || {
        inline_and_boxed_continuations(&c, 6);
        // Left unrun: the thread ends with these in flight or unsent.
        for i in 0..3u64 {
            let (token, big) = (CountsDrops(d.clone()), [i; 16]);
            c.apply_then(move |_| [i; 40], move |r| drop((token, big, r)));
        }
    })
    .join()
    .unwrap();
    assert_eq!(counter.apply(|c| *c), 6);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        3,
        "every capture left behind dropped once"
    );
}

#[test]
fn payloads_and_captures_that_panic_when_dropped_are_each_dropped_once() {
    let counter = rt().trustee(0).entrust(0u64);
    let drops = Arc::new(AtomicUsize::new(0));
    // Three closures panic with such a payload: `wait_pending` resumes the first (kept from dropping here),
    // the runtime drops the other two.
    for _ in 0..3 {
        let d = drops.clone();
        counter.apply_then(
            move |_| -> () { std::panic::panic_any(PanicsOnDrop(d)) },
            |()| unreachable!(),
        );
    }
    let first = catch_unwind(wait_pending).unwrap_err();
    assert!(first.downcast_ref::<PanicsOnDrop>().is_some());
    std::mem::forget(first);
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    // A thread exits with continuations unrun whose captures panic when dropped, and whose results are such
    // payloads: each dropped once, one at a time, on that thread.
    let (c, d) = (counter.clone(), drops.clone());
    thread::spawn(move || {
        for _ in 0..3 {
            let (capture, payload) = (PanicsOnDrop(d.clone()), d.clone());
            c.apply_then(
                move |_| -> () { std::panic::panic_any(PanicsOnDrop(payload)) },
                move |()| drop(capture),
            );
        }
    })
    .join()
    .unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 8);
    assert_eq!(counter.apply(|c| *c), 0);
}

/// Polls `f` to completion on this thread, parking between polls: the smallest executor, so that
/// `apply_async`'s future and its waker run under Miri (tokio does not).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}

#[test]
fn apply_async_from_two_threads_answers_each_and_drops_unawaited_results_once() {
    const EACH: u64 = if cfg!(miri) { 10 } else { 1_000 };
    let counter = Arc::new(rt().trustee(0).entrust(0u64));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let counter = counter.clone();
            thread::spawn(move || {
                for i in 1..=EACH {
                    let seen = block_on(counter.apply_async(|c| {
                        *c += 1;
                        *c
                    }));
                    assert!(
                        seen >= i,
                        "the counter only grows, and this thread added {i}"
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(counter.apply(|c| *c), 2 * EACH);

    // Sent (polled once), then dropped before the answer: the closure still runs, its result is dropped once.
    let drops = Arc::new(AtomicUsize::new(0));
    let values = rt().trustee(0).entrust(());
    for _ in 0..3 {
        let drops = drops.clone();
        let mut future = Box::pin(values.apply_async(move |_| CountsDrops(drops)));
        let waker = std::task::Waker::noop();
        let _ = future
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker));
    }
    wait_for_drops(&drops, 3);
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        block_on(values.apply_async(|_| panic!("async boom")))
    }));
    assert_eq!(panic_message(panicked.unwrap_err()), "async boom");
}
