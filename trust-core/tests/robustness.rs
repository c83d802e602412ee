//! Programs a hostile tester writes against the delegation runtime (issue 14): waiting for oneself, blocking
//! where the trustee cannot wait, user code that panics where the trustee runs it (also with a payload that
//! panics when dropped), and big or over-aligned by-value arguments and results. Each must either work or
//! panic with a message that names the problem, and the trustee must keep serving afterwards. Tests of what
//! used to hang run under a deadline, so they fail instead.

use std::cell::Cell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

mod common;
use common::*;
use trust_core::{Latch, Trust, spawn, wait_pending};

/// Runs `f` on a thread of its own and fails the test if it takes more than 10 s (it used to hang).
fn within_deadline<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(move || {
            let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
        })
        .unwrap();
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(r)) => r,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("hung: no answer within 10 s"),
    }
}

/// The trustee still serves: a fresh property on it answers.
fn assert_serves(trustee: usize) {
    let t = rt().trustee(trustee).entrust(41u32);
    assert_eq!(within_deadline(move || t.apply(|v| *v + 1)), 42);
}

/// Waits up to 10 s for `count` to reach `expected`, then checks it is exactly that.
fn wait_for(count: &AtomicUsize, expected: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count.load(Ordering::SeqCst) < expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(count.load(Ordering::SeqCst), expected);
}

#[test]
fn wait_pending_inside_a_continuation_on_a_plain_thread_waits_for_the_others() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    let order = within_deadline(|| {
        let counter = rt().trustee(0).entrust(0u64);
        let seen = Rc::new(Cell::new(0u64));
        let inner = seen.clone();
        let c = counter.clone();
        counter.apply_then(
            |c| *c += 1,
            move |()| {
                for _ in 0..10 {
                    let inner = inner.clone();
                    c.apply_then(|c| *c += 1, move |()| inner.set(inner.get() + 1));
                }
                wait_pending(); // waits for the ten, not for itself
                assert_eq!(inner.get(), 10); // a panic here is resumed by the outer `wait_pending`
            },
        );
        wait_pending();
        (seen.get(), counter.apply(|c| *c))
    });
    assert_eq!(order, (10, 11));
}

#[test]
fn wait_pending_inside_a_continuation_on_a_worker_panics_naming_the_way_out() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    let message = within_deadline(|| {
        spawn(|| {
            let counter = rt().trustee(1).entrust(0u64);
            let c = counter.clone();
            counter.apply_then(
                |c| *c += 1,
                move |()| {
                    c.apply_then(|c| *c += 1, |()| {});
                    wait_pending();
                },
            );
            // The continuation's panic is kept and resumed here.
            catch_unwind(wait_pending)
                .map_err(panic_message)
                .unwrap_err()
        })
        .join()
        .unwrap()
    });
    assert!(
        message.contains("`wait_pending` inside an `apply_then` continuation on a worker"),
        "{message}"
    );
    assert!(message.contains("apply_then"), "{message}");
    assert_serves(0);
    assert_serves(1);
}

/// A blocking `apply` to another trustee inside a continuation on a worker: refused, naming where it is and
/// the ways out (it named a delegated closure before), the panic resumed by the fiber's `wait_pending`.
#[test]
fn blocking_apply_inside_a_continuation_on_a_worker_panics_naming_the_way_out() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    let message = within_deadline(|| {
        spawn(|| {
            let other = rt()
                .trustee(1 - trust_core::local_trustee().index())
                .entrust(0u64);
            let c = other.clone();
            other.apply_then(|c| *c += 1, move |()| c.apply(|c| *c += 1));
            catch_unwind(wait_pending)
                .map_err(panic_message)
                .unwrap_err()
        })
        .join()
        .unwrap()
    });
    assert!(
        message.contains("blocking delegation inside an `apply_then` continuation on a worker")
            && message.contains("from a fiber (`spawn`)"),
        "{message}"
    );
    assert_serves(0);
    assert_serves(1);
}

#[test]
fn a_launched_fiber_applying_to_its_own_latch_panics() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    let message = within_deadline(|| {
        let account: Trust<Latch<i64>> = rt().trustee(0).entrust(Latch::new(100));
        let me = account.clone();
        let err = catch_unwind(AssertUnwindSafe(|| {
            account.launch(move |_latch| me.apply(|l| *l.get_mut() += 1))
        }))
        .unwrap_err();
        // The property stays usable.
        assert_eq!(account.apply(|l| *l.get_mut()), 100);
        panic_message(err)
    });
    assert!(
        message.contains("whose `launch` runs this fiber"),
        "{message}"
    );
    assert!(message.contains("lock the latch instead"), "{message}");
    assert_serves(0);
}

#[test]
fn fiber_join_inside_a_delegated_closure_panics_and_the_trustee_keeps_serving() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    for trustee in 0..2 {
        let message = within_deadline(move || {
            let property = rt().trustee(trustee).entrust(0u8);
            let err = catch_unwind(AssertUnwindSafe(|| {
                property.apply(|_| {
                    let fiber = spawn(|| std::thread::sleep(Duration::from_millis(5)));
                    fiber.join().unwrap();
                })
            }))
            .unwrap_err();
            panic_message(err)
        });
        assert!(
            message.contains("waiting for a fiber inside a delegated closure"),
            "{message}"
        );
        assert!(
            message.contains("apply_then") && message.contains("launch"),
            "{message}"
        );
        assert_serves(trustee);
    }
}

#[test]
fn launch_inside_a_delegated_closure_panics_and_the_trustee_keeps_serving() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    let message = within_deadline(|| {
        let latch: Trust<Latch<u8>> = rt().trustee(1).entrust(Latch::new(0));
        let other = rt().trustee(1).entrust(0u8);
        let launch = || other.apply(move |_| latch.launch(|l| *l.lock() += 1));
        let err = catch_unwind(AssertUnwindSafe(launch)).unwrap_err();
        panic_message(err)
    });
    assert!(message.contains("apply_then"), "{message}");
    assert_serves(1);
}

#[test]
fn a_dropped_future_whose_result_panics_on_drop_does_not_kill_the_trustee() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    let drops = Arc::new(AtomicUsize::new(0));
    for round in 1..=3 {
        let d = drops.clone();
        drop_future_before_its_answer(move || PanicsOnDrop(d));
        // The orphaned result is dropped on the trustee.
        wait_for(&drops, round);
        assert_serves(0);
    }
}

struct PanickingWaker;

impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("a user waker that panics");
    }
}

#[test]
fn a_panicking_user_waker_does_not_kill_the_trustee() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    within_deadline(|| {
        let property = rt().trustee(1).entrust(5u8);
        let mut future = Box::pin(property.apply_async(|v| {
            std::thread::sleep(Duration::from_millis(10));
            *v
        }));
        let waker = Waker::from(Arc::new(PanickingWaker));
        assert!(
            future
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        // The trustee wakes our waker, which panics on the trustee: contained.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(poll_once(future.as_mut()), Poll::Ready(5));
    });
    assert_serves(1);
}

#[test]
fn an_unjoined_fiber_whose_result_panics_on_drop_does_not_kill_the_worker() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    let drops = Arc::new(AtomicUsize::new(0));
    // The fibers finish only after their handles are gone, so each result is dropped on its worker.
    let gate = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for _ in 0..4 {
        let (d, gate) = (drops.clone(), gate.clone());
        drop(spawn(move || {
            while !gate.load(Ordering::SeqCst) {
                trust_core::yield_now();
            }
            PanicsOnDrop(d)
        }));
    }
    gate.store(true, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while drops.load(Ordering::SeqCst) < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(drops.load(Ordering::SeqCst), 4);
    assert_serves(0);
    assert_serves(1);
    assert_eq!(within_deadline(|| spawn(|| 7).join().unwrap()), 7);
}

/// 1 MiB in release, 256 KiB in debug (where each by-value move is a copy on the stack).
const BIG: usize = if cfg!(debug_assertions) {
    256 << 10
} else {
    1 << 20
};

#[test]
fn a_big_array_by_value_from_a_plain_thread() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    // A plain thread with a main thread's stack (8 MiB); the test harness's threads have 2 MiB.
    let sum = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(|| {
            let t = rt().trustee(0).entrust(0u64);
            let big = [3u8; BIG];
            t.apply_with(
                |c, a: [u8; BIG]| {
                    *c += a.iter().map(|&b| u64::from(b)).sum::<u64>();
                    *c
                },
                big,
            )
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(sum, 3 * BIG as u64);
}

#[test]
fn a_big_capture_from_a_plain_thread() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    let sum = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(|| {
            let t = rt().trustee(1).entrust(0u64);
            let big = [2u8; 200 << 10];
            t.apply(move |c| {
                *c += big.iter().map(|&b| u64::from(b)).sum::<u64>();
                *c
            })
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(sum, 2 * (200 << 10));
}

/// 64 KiB in release. In a debug build the array literal alone takes 128 KiB of the fiber's 256 KiB stack
/// (a temporary plus the local) and each by-value move copies it again, so the debug run uses 32 KiB.
const FIBER_BIG: usize = if cfg!(debug_assertions) {
    32 << 10
} else {
    64 << 10
};

#[test]
fn a_64_kib_array_by_value_from_a_fiber() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    // Remote (trustee 1 from a fiber on either worker) and through the local shortcut.
    for trustee in [0, 1] {
        let sums: Vec<u64> = (0..2)
            .map(|_| {
                spawn(move || {
                    let t = rt().trustee(trustee).entrust(0u64);
                    let big = [1u8; FIBER_BIG];
                    t.apply_with(
                        |c, a: [u8; FIBER_BIG]| a.iter().map(|&b| u64::from(b)).sum::<u64>() + *c,
                        big,
                    )
                })
            })
            .map(|f| f.join().unwrap())
            .collect();
        assert_eq!(sums, [FIBER_BIG as u64; 2]);
    }
}

/// Calls `apply` on another trustee from its destructor, which runs on its own trustee.
struct AppliesWhenDropped(Arc<Trust<u64>>, Arc<AtomicUsize>);

impl Drop for AppliesWhenDropped {
    fn drop(&mut self) {
        let refused = catch_unwind(AssertUnwindSafe(|| self.0.apply(|v| *v += 1))).unwrap_err();
        assert!(
            panic_message(refused).contains("blocking delegation from inside a delegated closure")
        );
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_property_destructor_that_applies_to_another_trustee_is_refused_with_the_way_out() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    let other = Arc::new(rt().trustee(1).entrust(0u64));
    let refused = Arc::new(AtomicUsize::new(0));
    drop(
        rt().trustee(0)
            .entrust(AppliesWhenDropped(other.clone(), refused.clone())),
    );
    wait_for(&refused, 1);
    assert_eq!(other.apply(|v| *v), 0);
    assert_serves(0);
}

#[repr(align(128))]
#[derive(Clone, Copy, Debug, PartialEq)]
struct Align128([u64; 3]);

#[repr(align(32))]
#[derive(Clone, Copy, Debug, PartialEq)]
struct Align32(u8);

fn is_aligned<T>(value: &T) -> bool {
    (value as *const T as usize).is_multiple_of(align_of::<T>())
}

#[test]
fn over_aligned_results_arguments_and_captures_arrive_intact_and_aligned() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    within_deadline(|| {
        let t = rt().trustee(0).entrust(Align128([1, 2, 3]));
        for i in 0..1000 {
            let r = t.apply(move |v| Align128([v.0[0] + i, v.0[1], v.0[2]]));
            assert_eq!(r, Align128([1 + i, 2, 3]));
            assert!(is_aligned(&r));
        }
        let capture = Align32(7);
        let r = t.apply(move |v| {
            assert!(is_aligned(&capture));
            v.0[0] + capture.0 as u64
        });
        assert_eq!(r, 8);
        assert_eq!(
            t.apply_with(|v, a: Align128| v.0[1] + a.0[2], Align128([0, 0, 40])),
            42
        );
        // Many in flight: the results are packed in the response slot, which is only 8-aligned.
        let sum = Rc::new(Cell::new(0));
        for i in 0..10_000 {
            let sum = sum.clone();
            t.apply_then(
                move |_| (Align128([i, i + 1, i + 2]), Align32(i as u8)),
                move |(a, b)| {
                    assert!(is_aligned(&a) && is_aligned(&b));
                    assert_eq!((a, b), (Align128([i, i + 1, i + 2]), Align32(i as u8)));
                    sum.set(sum.get() + i);
                },
            );
        }
        wait_pending();
        assert_eq!(sum.get(), (0..10_000).sum::<u64>());
    });
    let t: &'static Trust<Align128> =
        Box::leak(Box::new(rt().trustee(1).entrust(Align128([5, 0, 0]))));
    let fibers: Vec<_> = (0..64)
        .map(|f| {
            spawn(move || {
                (0..200)
                    .map(|i| {
                        let r = t.apply(move |v| Align128([v.0[0] + i + f, 0, 0]));
                        assert!(is_aligned(&r));
                        r.0[0]
                    })
                    .sum::<u64>()
            })
        })
        .collect();
    for (f, fiber) in (0..).zip(fibers) {
        assert_eq!(
            fiber.join().unwrap(),
            (0..200).map(|i| 5 + i + f).sum::<u64>()
        );
    }
}

/// Three `apply_then`s whose closures panic with a `PanicsOnDrop`: `wait_pending` resumes the first, and the
/// runtime drops the other two payloads (each panics, contained). Checked from the caller: the first is a
/// `PanicsOnDrop`, kept from dropping.
fn three_bombs_then_wait(t: &Trust<u8>, drops: &Arc<AtomicUsize>) -> bool {
    for _ in 0..3 {
        let d = drops.clone();
        t.apply_then(
            move |_| -> u8 { panic_any(PanicsOnDrop(d)) },
            |_| unreachable!(),
        );
    }
    let first = catch_unwind(wait_pending).unwrap_err();
    let is_bomb = first.downcast_ref::<PanicsOnDrop>().is_some();
    std::mem::forget(first);
    is_bomb
}

#[test]
fn panic_payloads_that_panic_when_dropped_kill_nothing() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    let drops = Arc::new(AtomicUsize::new(0));
    // The caller of `apply` gets the payload itself.
    let d = drops.clone();
    within_deadline(move || {
        let t = rt().trustee(0).entrust(0u8);
        let p = catch_unwind(AssertUnwindSafe(|| {
            t.apply(move |_| panic_any(PanicsOnDrop(d)))
        }))
        .unwrap_err();
        assert!(p.downcast_ref::<PanicsOnDrop>().is_some());
        std::mem::forget(p);
    });
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    // `apply_then` from a plain thread: the continuations run there (this aborted the process: the second
    // payload was dropped outside any catch, and the third while the thread's client unwound).
    let d = drops.clone();
    assert!(within_deadline(move || three_bombs_then_wait(
        &rt().trustee(1).entrust(0),
        &d
    )));
    wait_for(&drops, 2);
    // From a fiber: the continuations run on its worker's scheduler.
    let d = drops.clone();
    assert!(
        spawn(move || three_bombs_then_wait(&rt().trustee(0).entrust(0), &d))
            .join()
            .unwrap()
    );
    wait_for(&drops, 4);
    // The result of a dropped future: the payload is dropped where the answer lands.
    let d = drops.clone();
    within_deadline(move || {
        let t = rt().trustee(1).entrust(0u8);
        let mut future = Box::pin(t.apply_async(move |_| -> u8 {
            std::thread::sleep(Duration::from_millis(10));
            panic_any(PanicsOnDrop(d))
        }));
        assert!(poll_once(future.as_mut()).is_pending());
    });
    wait_for(&drops, 5);
    assert_serves(0);
    assert_serves(1);
}

/// A destructor that panics with a [`PanicsOnDrop`].
struct BombOnDrop(Arc<AtomicUsize>);

impl Drop for BombOnDrop {
    fn drop(&mut self) {
        panic_any(PanicsOnDrop(self.0.clone()))
    }
}

struct BombingWaker(Arc<AtomicUsize>);

impl Wake for BombingWaker {
    fn wake(self: Arc<Self>) {
        panic_any(PanicsOnDrop(self.0.clone()))
    }
}

#[test]
fn user_code_on_a_trustee_panicking_with_a_payload_that_panics_when_dropped_kills_nothing() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    let bombs = Arc::new(AtomicUsize::new(0));
    // A property's destructor (this killed the trustee: the payload was dropped outside the catch).
    drop(rt().trustee(0).entrust(BombOnDrop(bombs.clone())));
    wait_for(&bombs, 1);
    assert_serves(0);
    // A task's waker, woken by the trustee.
    let b = bombs.clone();
    within_deadline(move || {
        let t = rt().trustee(1).entrust(5u8);
        let mut future = Box::pin(t.apply_async(|v| {
            std::thread::sleep(Duration::from_millis(10));
            *v
        }));
        let waker = Waker::from(Arc::new(BombingWaker(b)));
        assert!(
            future
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        std::thread::sleep(Duration::from_millis(50));
    });
    wait_for(&bombs, 2);
    assert_serves(1);
    // The result of a dropped future, dropped on the trustee.
    let b = bombs.clone();
    drop_future_before_its_answer(move || BombOnDrop(b));
    wait_for(&bombs, 3);
    assert_serves(0);
    // The result of a fiber nobody joins, dropped on its worker.
    let b = bombs.clone();
    drop(spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        BombOnDrop(b)
    }));
    wait_for(&bombs, 4);
    assert_serves(0);
    assert_serves(1);
}

#[test]
fn a_property_whose_destructor_panics_however_its_last_handle_goes() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    let drops = Arc::new(AtomicUsize::new(0));
    // Dropped by a plain thread.
    let t = rt().trustee(0).entrust(PanicsOnDrop(drops.clone()));
    within_deadline(move || drop(t));
    // Dropped inside a closure on the property's own trustee.
    let inner = rt().trustee(1).entrust(PanicsOnDrop(drops.clone()));
    let outer = rt().trustee(1).entrust(Some(inner));
    within_deadline(move || outer.apply(|o| drop(o.take())));
    // Dropped by a fiber on either worker.
    let t = rt().trustee(0).entrust(PanicsOnDrop(drops.clone()));
    spawn(move || drop(t)).join().unwrap();
    // Taken back: its destructor runs here, where the panic is the caller's.
    let t = rt().trustee(1).entrust(PanicsOnDrop(drops.clone()));
    let value = t.into_inner().expect("the only handle");
    assert!(catch_unwind(AssertUnwindSafe(move || drop(value))).is_err());
    wait_for(&drops, 4);
    assert_serves(0);
    assert_serves(1);
}

#[test]
fn a_chain_of_100_000_apply_then_issued_by_continuations_on_workers() {
    rt(); // this file's 2-worker runtime, before anything can start a default one
    let a: &'static Trust<u64> = Box::leak(Box::new(rt().trustee(0).entrust(0)));
    let b: &'static Trust<u64> = Box::leak(Box::new(rt().trustee(1).entrust(0)));
    // Each link's continuation issues the next to the other trustee; it runs on the worker's scheduler, so
    // the chain nests no stack frames, and each link counts for the fiber that started the chain: its
    // `wait_pending` returns once the last continuation has run, and resumes a panic of any link.
    fn link(to: &'static Trust<u64>, next: &'static Trust<u64>, left: u32) {
        if left > 0 {
            to.apply_then(|v| *v += 1, move |_| link(next, to, left - 1));
        } else {
            panic!("the chain's end");
        }
    }
    let waited = spawn(move || {
        link(a, b, 100_000);
        let end = catch_unwind(wait_pending).map_err(panic_message);
        (end, a.apply(|v| *v), b.apply(|v| *v))
    });
    assert_eq!(
        waited.join().unwrap(),
        (Err("the chain's end".to_string()), 50_000, 50_000)
    );
}

/// An `apply_async` on trustee 0 whose closure returns `result()` after 10 ms, its future dropped after the
/// first poll (which sends the request): the result is orphaned, and dropped on the trustee.
fn drop_future_before_its_answer<R: Send + 'static>(result: impl FnOnce() -> R + Send + 'static) {
    within_deadline(move || {
        let property = rt().trustee(0).entrust(0u8);
        let mut future = Box::pin(property.apply_async(move |_| {
            std::thread::sleep(Duration::from_millis(10));
            result()
        }));
        assert!(poll_once(future.as_mut()).is_pending());
    });
}

fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// An `apply_then` whose closure panics, so its continuation is dropped unrun, and whose continuation's
/// capture panics when dropped; nine more after it. From a plain thread and from a fiber on either trustee:
/// the capture's panic is contained (it escaped into the loop running continuations: `wait_pending` returned
/// before the nine ran, and a worker thread died), the closure's panic is the one resumed, and the trustees
/// keep serving.
#[test]
fn a_continuation_dropped_unrun_whose_capture_panics_loses_nothing() {
    rt();
    fn issue(c: Trust<u64>) -> (Result<(), String>, u32, Result<(), String>, u64, usize) {
        let ran = Rc::new(Cell::new(0));
        let drops = Arc::new(AtomicUsize::new(0));
        let bomb = PanicsOnDrop(drops.clone());
        c.apply_then(|_| -> u64 { panic!("closure boom") }, move |_| drop(bomb));
        for _ in 0..9 {
            let ran = ran.clone();
            c.apply_then(|v| *v += 1, move |()| ran.set(ran.get() + 1));
        }
        let first = catch_unwind(wait_pending).map_err(panic_message);
        let ran_by_first = ran.get();
        let second = catch_unwind(wait_pending).map_err(panic_message);
        (
            first,
            ran_by_first,
            second,
            c.apply(|v| *v),
            drops.load(Ordering::SeqCst),
        )
    }
    let expected = (Err("closure boom".to_string()), 9, Ok(()), 9, 1);
    assert_eq!(
        issue(rt().trustee(1).entrust(0)),
        expected,
        "from a plain thread"
    );
    for fiber in 0..4 {
        // Spawned round-robin: fibers on both workers, each to both trustees.
        let c = rt().trustee(fiber % 2).entrust(0);
        assert_eq!(
            within_deadline(move || spawn(move || issue(c)).join().unwrap()),
            expected,
            "fiber {fiber}"
        );
    }
    assert_serves(0);
    assert_serves(1);
}
