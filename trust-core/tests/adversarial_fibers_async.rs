//! Adversarial fibers and `apply_async`: 100,000 fibers near the live-fiber budget, `spawn` in odd places,
//! futures dropped unpolled, half-polled or cancelled by timeouts, results of every size and alignment through
//! every path. Attacks "dropping an `apply_async` future early is harmless" and "past that, `spawn` panics
//! *in the caller*" (README).

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

mod common;
use common::*;
use trust_core::{Trust, spawn, wait_pending, yield_now};

/// Wakes a thread parked in [`block_on`].
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A minimal executor: polls `f` on this thread, parking between polls; fails after 30 s.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(Instant::now() < deadline, "block_on: HANG");
        std::thread::park_timeout(Duration::from_secs(5));
    }
}

/// The two 100,000-fiber tests run one at a time (they once passed the ~57,000 live-fiber budget together;
/// `spawn` past a budget still panics, which they tolerate).
static BIG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Fibers each of them spawns: 100,000, but 20,000 under AddressSanitizer, whose own memory mappings count
/// against `vm.max_map_count` too (with tens of thousands of fiber stacks live, its allocator's `mmap` failed).
const FIBERS: u64 = if cfg!(feature = "sanitizer") {
    20_000
} else {
    100_000
};

/// "Past that, `spawn` panics *in the caller*, naming the limit": 100,000 fibers from a plain thread; a
/// refused `spawn` names `vm.max_map_count`, and after joining, every fiber's result and effect is there.
#[test]
fn a_hundred_thousand_fibers_spawned_then_joined() {
    quiet();
    let _big = BIG.lock().unwrap_or_else(|e| e.into_inner());
    let c = [rt().trustee(0).entrust(0u64), rt().trustee(1).entrust(0u64)];
    let mut fibers = Vec::new();
    let mut sum = 0;
    let mut i = 0u64;
    // If the spawner outruns the workers past the stack budget, `spawn` panics naming the limit: join what
    // runs, then go on (the documented way out: "let fibers finish first").
    while i < FIBERS {
        let t = c[(i % 2) as usize].clone();
        let k = i;
        match catch_unwind(AssertUnwindSafe(|| {
            spawn(move || {
                t.apply(move |v| {
                    *v += k;
                    k
                })
            })
        })) {
            Ok(f) => {
                fibers.push(f);
                i += 1;
            }
            Err(p) => {
                let m = panic_message(p);
                assert!(m.contains("vm.max_map_count"), "{m}");
                for f in fibers.drain(..) {
                    sum += f.join().unwrap();
                }
            }
        }
    }
    for f in fibers {
        sum += f.join().unwrap();
    }
    let want: u64 = (0..FIBERS).sum();
    assert_eq!(sum, want);
    assert_eq!(c[0].apply(|v| *v) + c[1].apply(|v| *v), want);
}

/// The same from a fiber that yields every 1000 spawns: all 100,000 run and are joined there.
#[test]
fn a_hundred_thousand_fibers_spawned_by_a_fiber_and_joined_there() {
    quiet();
    let _big = BIG.lock().unwrap_or_else(|e| e.into_inner());
    let c = rt().trustee(1).entrust(0u64);
    let c2 = c.clone();
    let n = spawn(move || {
        let fibers: Vec<_> = (0..FIBERS)
            .map(|i| {
                let t = c2.clone();
                if i % 1000 == 0 {
                    // Let this worker's share run: else ~50,000 would be alive at once on it, near the
                    // documented ~57,000 budget (under ASan the other worker lags and the budget is hit).
                    yield_now();
                }
                spawn(move || {
                    yield_now();
                    t.apply(|v| *v += 1)
                })
            })
            .collect();
        let n = fibers.len();
        for f in fibers {
            f.join().unwrap();
        }
        n
    })
    .join()
    .map_err(panic_message)
    .unwrap();
    assert_eq!(n as u64, FIBERS);
    assert_eq!(c.apply(|v| *v), FIBERS);
}

/// `spawn` is not among the calls that "panic inside a delegated closure": fibers spawned from a delegated
/// closure and from a continuation run and are joined with the right results.
#[test]
fn spawn_inside_a_delegated_closure_and_inside_a_continuation() {
    quiet();
    let c = rt().trustee(0).entrust(0u64);
    let c2 = c.clone();
    let fiber = c.apply(move |v| {
        *v += 1;
        let c3 = c2.clone();
        spawn(move || c3.apply(|v| *v + 100))
    });
    let r = catch_unwind(AssertUnwindSafe(|| fiber.join().unwrap())).map_err(panic_message);
    assert_eq!(r, Ok(101));
    let got = Arc::new(AtomicUsize::new(0));
    let (g, c4) = (got.clone(), c.clone());
    c.apply_then(
        |v| *v,
        move |x| {
            let f = spawn(move || c4.apply(|v| *v) + x);
            g.store(f.join().unwrap() as usize, Ordering::SeqCst);
        },
    );
    wait_pending();
    assert_eq!(load(&got), 2);
}

/// "`join()` gives the result or the panic": a non-string payload comes back as itself, dropped once.
#[test]
fn join_reports_a_non_string_panic_payload_and_drops_it_once() {
    quiet();
    let drops = Arc::new(AtomicUsize::new(0));
    for i in 0..200 {
        let d = drops.clone();
        let f = spawn(move || -> u8 {
            if i % 2 == 0 {
                yield_now();
            }
            panic_any(CountsDrops(d))
        });
        let p = f.join().unwrap_err();
        assert!(p.downcast_ref::<CountsDrops>().is_some());
        drop(p);
    }
    assert_eq!(load(&drops), 200);
}

/// "The request is sent on first poll": 1000 futures dropped unpolled never run; each capture drops once.
#[test]
fn apply_async_futures_never_polled_run_nothing_and_drop_captures_once() {
    quiet();
    let c = rt().trustee(0).entrust(0u64);
    let drops = Arc::new(AtomicUsize::new(0));
    for _ in 0..1000 {
        let tok = CountsDrops(drops.clone());
        let f = c.apply_async(move |v| {
            let _t = &tok;
            *v += 1;
        });
        drop(f);
    }
    assert_eq!(load(&drops), 1000);
    assert_eq!(c.apply(|v| *v), 0, "never sent, never run");
}

/// "Dropping an `apply_async` future early is harmless: the result is dropped when it arrives": 10,000
/// futures polled once then dropped all run; each capture, result and panic payload drops exactly once.
#[test]
fn apply_async_polled_once_then_dropped_from_a_plain_thread_ten_thousand() {
    quiet();
    let c = rt().trustee(1).entrust(0u64);
    let caps = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(AtomicUsize::new(0));
    let payloads = Arc::new(AtomicUsize::new(0));
    let waker = Waker::noop();
    for i in 0..10_000u64 {
        let (cap, r, p) = (CountsDrops(caps.clone()), results.clone(), payloads.clone());
        let mut f = Box::pin(c.apply_async(move |v| {
            let _cap = cap;
            *v += 1;
            if i % 7 == 0 {
                panic_any(CountsDrops(p));
            }
            (CountsDrops(r), [i; 40])
        }));
        let _ = f.as_mut().poll(&mut Context::from_waker(waker));
        drop(f);
    }
    eventually("all ran", || c.apply(|v| *v) == 10_000);
    let panics = (0..10_000u64).filter(|i| i % 7 == 0).count();
    eventually("drops", || {
        load(&caps) == 10_000 && load(&results) == 10_000 - panics && load(&payloads) == panics
    });
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        (load(&caps), load(&results), load(&payloads)),
        (10_000, 10_000 - panics, panics)
    );
}

/// "Futures awaited one after another apply in that order": 2000 under a minimal executor, 512-byte results.
#[test]
fn apply_async_with_a_plain_block_on_in_order_and_with_big_results() {
    quiet();
    let c = rt().trustee(0).entrust(Vec::<u64>::new());
    let got = block_on(async {
        let mut sums = 0u64;
        for i in 0..2000u64 {
            let big: [u64; 64] = c
                .apply_async(move |v| {
                    v.push(i);
                    [i; 64]
                })
                .await;
            sums += big.iter().sum::<u64>();
        }
        sums
    });
    assert_eq!(got, 64 * (0..2000u64).sum::<u64>());
    assert_eq!(c.apply(|v| v.clone()), (0..2000).collect::<Vec<u64>>());
}

/// "Dropping an `apply_async` future early is harmless": 10,000 futures under 50 µs tokio timeouts; every
/// request runs once and every result is dropped once, delivered or not.
#[test]
fn apply_async_cancelled_by_tokio_timeouts_under_load() {
    quiet();
    let c = rt().trustee(1).entrust(0u64);
    let drops = Arc::new(AtomicUsize::new(0));
    let rtk = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .enable_time()
        .build()
        .unwrap();
    rtk.block_on(async {
        let tasks: Vec<_> = (0..500)
            .map(|i| {
                let (c, d) = (c.clone(), drops.clone());
                tokio::spawn(async move {
                    for _ in 0..20 {
                        let d = d.clone();
                        let fut = c.apply_async(move |v| {
                            if i % 50 == 0 {
                                std::thread::sleep(Duration::from_micros(200));
                            }
                            *v += 1;
                            CountsDrops(d)
                        });
                        let _ = tokio::time::timeout(Duration::from_micros(50), fut).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    drop(rtk);
    // Every future was polled at least once (sent): all 10,000 run, every result dropped once.
    eventually("all ran", || c.apply(|v| *v) == 10_000);
    eventually("all results dropped", || load(&drops) == 10_000);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(load(&drops), 10_000);
}

/// Only blocking calls "panic inside a delegated closure": an `apply_async` to the other trustee, polled
/// there without blocking, completes with its value.
#[test]
fn apply_async_polled_inside_a_delegated_closure_completes() {
    quiet();
    let a = rt().trustee(0).entrust(0u64);
    let b = rt().trustee(1).entrust(7u64);
    let b2 = b.clone();
    let r = catch_unwind(AssertUnwindSafe(|| {
        a.apply(move |_| {
            // A waker that does nothing: poll a few times, then give up.
            let mut f = Box::pin(b2.apply_async(|v| *v));
            for _ in 0..20_000 {
                if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    return Some(v);
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            None
        })
    }));
    assert_eq!(r.map_err(panic_message), Ok(Some(7)));
    assert_eq!(b.apply(|v| *v), 7);
    assert_eq!(a.apply(|v| *v), 0);
}

/// Over-aligned (64).
#[repr(align(64))]
#[derive(Clone, Copy, PartialEq, Debug)]
struct A64([u8; 64]);
/// Over-aligned (16), with padding.
#[repr(align(16))]
#[derive(Clone, Copy, PartialEq, Debug)]
struct A16(u128, u8);
/// Zero-sized.
#[derive(Clone, Copy, PartialEq, Debug)]
struct Zst;

/// Whether `v` sits at an address aligned for `T`.
fn aligned<T>(v: &T) -> bool {
    (v as *const T as usize).is_multiple_of(align_of::<T>())
}

/// Results of every shape through every path (apply, apply_then, apply_async, launch_then, apply_with),
/// from a plain thread and from fibers on both workers, with captures over 1 KiB.
fn shapes(t: &Trust<u64>, l: &Trust<trust_core::Latch<u64>>) {
    let cap = [3u8; 1500];
    let r: A64 = t.apply(move |v| {
        *v += cap.iter().map(|&b| b as u64).sum::<u64>();
        A64([9; 64])
    });
    assert_eq!(r, A64([9; 64]));
    let r: (Zst, ()) = t.apply(|_| (Zst, ()));
    assert_eq!(r, (Zst, ()));
    let r: [A16; 40] = t.apply(|_| [A16(u128::MAX - 1, 7); 40]);
    assert!(r.iter().all(|x| *x == A16(u128::MAX - 1, 7)));
    let seen = std::rc::Rc::new(std::cell::Cell::new(0u32));
    for k in 0..50u32 {
        let (s, big) = (seen.clone(), [k as u8; 1200]);
        let cap = [k as u64; 200];
        t.apply_then(
            move |v| {
                *v += cap[199];
                (A64([k as u8; 64]), [A16(k as u128, 1); 20])
            },
            move |(a, b)| {
                assert!(aligned(&a) && aligned(&b));
                assert_eq!(a, A64([k as u8; 64]));
                assert!(b.iter().all(|x| *x == A16(k as u128, 1)));
                assert_eq!(big[1199], k as u8);
                s.set(s.get() + 1);
            },
        );
        let s = seen.clone();
        t.apply_then(
            |_| Zst,
            move |z| {
                assert_eq!(z, Zst);
                s.set(s.get() + 1);
            },
        );
        let s = seen.clone();
        l.launch_then(
            move |latch| {
                *latch.lock() += 1;
                [A64([k as u8; 64]); 5]
            },
            move |r| {
                assert!(aligned(&r));
                assert_eq!(r[4], A64([k as u8; 64]));
                s.set(s.get() + 1);
            },
        );
    }
    wait_pending();
    assert_eq!(seen.get(), 150);
    let r = block_on_or_fiber(t.apply_async(|_| A64([5; 64])));
    assert_eq!(r, A64([5; 64]));
    let r: A16 = t.apply_with(
        |_, a: [A64; 20]| A16(a[19].0[0] as u128, 2),
        [A64([4; 64]); 20],
    );
    assert_eq!(r, A16(4, 2));
    let r: Zst = t.apply_with(|_, z: Zst| z, Zst);
    assert_eq!(r, Zst);
}

/// Awaits `f`: by polling and yielding on a fiber (a worker must not park), else with [`block_on`].
fn block_on_or_fiber<F: Future>(f: F) -> F::Output {
    if in_fiber() {
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                return v;
            }
            yield_now();
        }
    }
    block_on(f)
}

/// Whether this runs on a worker (in a fiber, for [`shapes`]'s callers).
fn in_fiber() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("trust-worker"))
}

/// Results and captures of every size and alignment through `apply`, `apply_then`, `launch_then`,
/// `apply_async` and `apply_with`, from a plain thread and fibers: each arrives intact and aligned.
#[test]
fn results_of_every_shape_through_every_path_and_caller() {
    quiet();
    let t = rt().trustee(0).entrust(0u64);
    let l = rt().trustee(1).entrust(trust_core::Latch::new(0u64));
    shapes(&t, &l);
    for _ in 0..2 {
        let (t2, l2) = (t.clone(), l.clone());
        spawn(move || shapes(&t2, &l2)).join().unwrap();
    }
    assert_eq!(l.apply(|l| *l.get_mut()), 150);
    assert_eq!(t.apply(|v| *v), 3 * (1500 * 3 + (0..50u64).sum::<u64>()));
}

/// Trustees serve independently: while trustee 0 runs a 2 s closure, 200 applies to trustee 1 finish
/// before it ends (1,000 took longer than 2 s when the whole suite ran beside other builds on 2 cores), and
/// 100 fibers (half of them queued on the busy worker) finish after.
#[test]
fn long_blocking_closure_on_one_trustee_does_not_stall_the_other() {
    quiet();
    let slow = rt().trustee(0).entrust(0u64);
    let fast = rt().trustee(1).entrust(0u64);
    let (started, finished) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (st, fi) = (started.clone(), finished.clone());
    let s2 = slow.clone();
    let h = std::thread::spawn(move || {
        s2.apply(move |v| {
            st.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(2));
            *v += 1;
            fi.store(true, Ordering::SeqCst);
        })
    });
    while !started.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    for _ in 0..200 {
        fast.apply(|v| *v += 1);
    }
    assert!(
        !finished.load(Ordering::SeqCst),
        "200 applies waited for the other trustee"
    );
    let fibers: Vec<_> = (0..100)
        .map(|_| {
            let f = fast.clone();
            spawn(move || f.apply(|v| *v += 1))
        })
        .collect();
    // Fibers spawned round-robin: half land on the blocked worker 0 and run only after the sleep.
    for f in fibers {
        f.join().unwrap();
    }
    h.join().unwrap();
    assert_eq!(fast.apply(|v| *v), 300);
    assert_eq!(slow.apply(|v| *v), 1);
}
