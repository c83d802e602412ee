//! Adversarial odds and ends: page-aligned and zero-sized properties, captures whose destructors panic (also
//! in continuations discarded unrun), 64 threads exiting at once, metrics after a fiber storm. Attacks "any
//! user code the trustee runs ... is contained: a panic there never stops a trustee" and "the other requests
//! still complete" (README).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::*;
use trust_core::{Latch, Trust, spawn, wait_pending};

/// A page-aligned property that checks its alignment when dropped.
#[repr(align(4096))]
struct Page {
    bytes: [u8; 100],
    drops: Arc<AtomicUsize>,
}
impl Drop for Page {
    fn drop(&mut self) {
        assert!(
            (self as *const Self as usize).is_multiple_of(4096),
            "misaligned at drop"
        );
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// A zero-sized property with a destructor.
struct Nothing(&'static AtomicUsize);
impl Drop for Nothing {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Properties of any alignment and size: a 4096-aligned one stays aligned on its trustee, in a fiber, back
/// from `try_unwrap` and at drop; zero-sized ones and a `Latch<()>` work; each value drops exactly once.
#[test]
fn page_aligned_and_zero_sized_properties() {
    quiet();
    let drops = Arc::new(AtomicUsize::new(0));
    for i in 0..50 {
        let p: Trust<Page> = rt().trustee(i % 2).entrust(Page {
            bytes: [i as u8; 100],
            drops: drops.clone(),
        });
        let (aligned, b) = p.apply(|p| {
            (
                (p as *const Page as usize).is_multiple_of(4096),
                p.bytes[99],
            )
        });
        assert!(aligned, "property misaligned on its trustee");
        assert_eq!(b, i as u8);
        let p2 = p.clone();
        let f = spawn(move || p2.apply(|p| (p as *const Page as usize).is_multiple_of(4096)));
        assert!(f.join().unwrap());
        if i % 3 == 0 {
            let v = p.try_unwrap().map_err(|_| ()).unwrap();
            assert!((&v as *const Page as usize).is_multiple_of(4096));
            assert_eq!(v.bytes[0], i as u8);
        } else {
            drop(p);
        }
    }
    eventually("50 drops", || load(&drops) == 50);

    static ZST_DROPS: AtomicUsize = AtomicUsize::new(0);
    for i in 0..100 {
        let z = rt().trustee(i % 2).entrust(Nothing(&ZST_DROPS));
        let z2 = z.clone();
        z.apply_then(|_| (), |()| ());
        assert_eq!(z2.apply(|_| 5), 5);
        drop(z);
        if i % 2 == 0 {
            assert!(z2.into_inner().is_some());
        } else {
            drop(z2);
        }
    }
    wait_pending();
    eventually("100 zst drops", || ZST_DROPS.load(Ordering::SeqCst) == 100);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(ZST_DROPS.load(Ordering::SeqCst), 100);
    let l = rt().trustee(0).entrust(Latch::new(()));
    assert_eq!(
        l.launch(|l| {
            let _g = l.lock();
            3
        }),
        3
    );
}

/// An `apply_then` adding `add` whose closure captures `bomb` (dropped on the trustee).
fn bomb_in_closure(c: &Trust<u64>, bomb: PanicsOnDrop, add: u64) {
    c.apply_then(
        move |v| {
            let _b = &bomb;
            *v += add;
        },
        |()| (),
    );
}

/// An `apply_then` adding `add` whose continuation captures `bomb` (dropped on the issuing thread).
fn bomb_in_continuation(c: &Trust<u64>, bomb: PanicsOnDrop, add: u64) {
    c.apply_then(
        move |v| *v += add,
        move |()| {
            let _b = &bomb;
        },
    );
}

/// "A panic there never stops a trustee": captures whose destructors panic, in `apply`, `apply_then`
/// closures and continuations (plain thread and fiber) and `apply_async`; each panic reaches the caller, each
/// capture drops once, and the closures' effects stay.
#[test]
fn captures_that_panic_when_dropped_everywhere() {
    quiet();
    let c = rt().trustee(0).entrust(0u64);
    let drops = Arc::new(AtomicUsize::new(0));
    let bomb = PanicsOnDrop(drops.clone());
    let r = catch_unwind(AssertUnwindSafe(|| {
        c.apply(move |v| {
            let _b = &bomb;
            *v += 1;
            7
        })
    }));
    assert_eq!(panic_message(r.unwrap_err()), "PanicsOnDrop");
    assert_eq!(load(&drops), 1);
    assert_eq!(
        c.apply(|v| *v),
        1,
        "the closure's effect stays, the trustee lives"
    );
    // Closure and continuation bombs in separate requests (both in one is the discard path, tested below).
    for i in 0..10 {
        let (b1, b2) = (PanicsOnDrop(drops.clone()), PanicsOnDrop(drops.clone()));
        if i % 2 == 0 {
            bomb_in_closure(&c, b1, 1);
            bomb_in_continuation(&c, b2, 0);
        } else {
            bomb_in_continuation(&c, b2, 1);
            bomb_in_closure(&c, b1, 0);
        }
    }
    let w = catch_unwind(wait_pending).map_err(panic_message);
    assert_eq!(w, Err("PanicsOnDrop".into()));
    assert_eq!(load(&drops), 21);
    assert_eq!(c.apply(|v| *v), 11);
    let (c2, d2) = (c.clone(), drops.clone());
    let w = spawn(move || {
        for _ in 0..10 {
            let (b1, b2) = (PanicsOnDrop(d2.clone()), PanicsOnDrop(d2.clone()));
            bomb_in_closure(&c2, b1, 1);
            bomb_in_continuation(&c2, b2, 0);
        }
        catch_unwind(wait_pending).map_err(panic_message)
    })
    .join()
    .unwrap();
    assert_eq!(w, Err("PanicsOnDrop".into()));
    assert_eq!(load(&drops), 41);
    let tk = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let b = PanicsOnDrop(drops.clone());
    let c3 = c.clone();
    let r = tk.block_on(async move {
        tokio::spawn(async move {
            c3.apply_async(move |v| {
                let _b = &b;
                *v += 1;
            })
            .await
        })
        .await
    });
    assert_eq!(panic_message(r.unwrap_err().into_panic()), "PanicsOnDrop");
    assert_eq!(load(&drops), 42);
    assert_eq!(c.apply(|v| *v), 22);
}

/// "A thread may exit with requests in flight ... its requests still run": 64 threads issue 500 `apply_then`s
/// each and exit at once; `into_inner` then gets the value with all 32,000 applied.
#[test]
fn sixty_four_threads_exit_at_once_while_main_takes_the_value() {
    quiet();
    for round in 0..5 {
        let v = rt().trustee(round % 2).entrust(0u64);
        let barrier = Arc::new(std::sync::Barrier::new(65));
        let threads: Vec<_> = (0..64)
            .map(|_| {
                let (v, b) = (v.clone(), barrier.clone());
                std::thread::spawn(move || {
                    b.wait();
                    for _ in 0..500 {
                        v.apply_then(|v| *v += 1, |()| ());
                    }
                })
            })
            .collect();
        barrier.wait();
        for t in threads {
            t.join().unwrap();
        }
        // Every thread has exited (its unsent apply_thens went out at exit) and dropped its clone.
        assert_eq!(v.into_inner(), Some(64 * 500), "round {round}");
    }
}

/// `metrics()` reports "fibers alive": after 20,000 fibers are joined, it is back to 0 on both trustees.
#[test]
fn metrics_count_fibers_back_to_zero_after_a_storm() {
    quiet();
    let c = rt().trustee(0).entrust(0u64);
    let fibers: Vec<_> = (0..20_000)
        .map(|_| {
            let c = c.clone();
            spawn(move || c.apply(|v| *v += 1))
        })
        .collect();
    for f in fibers {
        f.join().unwrap();
    }
    assert_eq!(c.apply(|v| *v), 20_000);
    eventually("fibers alive back to 0", || {
        rt().metrics().iter().map(|m| m.fibers).sum::<u64>() == 0
    });
}

/// `trustee(i)` out of range panics naming the worker count.
#[test]
fn trustee_index_out_of_range_names_the_count() {
    quiet();
    let m = panic_message(catch_unwind(|| rt().trustee(2)).unwrap_err());
    assert_eq!(m, "no trustee 2: this runtime has 2 workers (indices 0..2)");
}

/// "The other requests still complete": a closure panics and its discarded continuation's capture panics when
/// dropped; on a plain thread and a fiber, `wait_pending` resumes the closure's panic after the other 9
/// continuations ran, the next returns, and the capture drops once.
#[test]
#[ignore = "miscompiled by rustc 1.95.0 (LLVM 22.1.2) in release: the landing pad of the first \
            `catch_unwind(wait_pending)` passes `__rust_panic_cleanup` a callee-saved register (holding \
            `wait_pending`'s address) instead of the exception, a SIGSEGV; nightly 1.97 (LLVM 22.1.4) builds it \
            right and it passes. `robustness::a_continuation_dropped_unrun_whose_capture_panics_loses_nothing` \
            checks the same promise"]
fn a_discarded_continuation_whose_capture_panics_does_not_cut_wait_pending_short() {
    quiet();
    for on_fiber in [false, true] {
        let c = rt().trustee(1).entrust(0u64);
        let body = move || {
            let ran = std::rc::Rc::new(std::cell::Cell::new(0u32));
            let drops = Arc::new(AtomicUsize::new(0));
            let bomb = PanicsOnDrop(drops.clone());
            c.apply_then(
                |_| -> u64 { panic!("closure boom") },
                move |_| {
                    let _b = &bomb;
                },
            );
            for _ in 0..9 {
                let r = ran.clone();
                c.apply_then(|v| *v += 1, move |()| r.set(r.get() + 1));
            }
            let first = catch_unwind(wait_pending).map_err(panic_message);
            let ran_after_first = ran.get();
            let second = catch_unwind(wait_pending).map_err(panic_message);
            (first, ran_after_first, second, ran.get(), load(&drops))
        };
        let got = if on_fiber {
            spawn(body).join().unwrap()
        } else {
            body()
        };
        assert_eq!(
            got,
            (Err("closure boom".into()), 9, Ok(()), 9, 1),
            "on_fiber={on_fiber}"
        );
    }
}

/// Names of this process's worker threads, sorted.
fn worker_threads() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| {
            let n = std::fs::read_to_string(e.ok()?.path().join("comm")).ok()?;
            let n = n.trim().to_string();
            n.starts_with("trust-worker").then_some(n)
        })
        .collect();
    v.sort();
    v
}

/// "A panic there never stops a trustee": a fiber's discarded continuation's capture panics on the worker's
/// scheduler; both worker threads live and the fiber's `wait_pending` resumes the closure's panic. In a child
/// process, as it may take a worker down.
#[test]
fn a_discarded_continuation_capture_panicking_on_a_fiber_never_stops_the_worker() {
    if !is_child() {
        return expect_child_ok(
            "a_discarded_continuation_capture_panicking_on_a_fiber_never_stops_the_worker",
            &[],
        );
    }
    rt();
    let workers = vec!["trust-worker-0".to_string(), "trust-worker-1".to_string()];
    assert_eq!(worker_threads(), workers);
    for w in 0..2 {
        let c = rt().trustee(1 - w).entrust(0u64);
        // Spawned round-robin; the fiber's issuing worker is where the continuation is discarded.
        let f = spawn(move || {
            let drops = Arc::new(AtomicUsize::new(0));
            let bomb = PanicsOnDrop(drops.clone());
            c.apply_then(
                |_| -> u64 { panic!("closure boom") },
                move |_| {
                    let _b = &bomb;
                },
            );
            catch_unwind(wait_pending).map_err(panic_message)
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(worker_threads(), workers, "a worker thread died");
        assert!(f.is_finished(), "the fiber never finished");
        assert_eq!(f.join().unwrap(), Err("closure boom".into()));
    }
    println!("CHILD-OK");
}

/// The same discard path for `launch_then` ("`wait_pending` waits for it"): the launched fiber panics and its
/// discarded continuation's capture panics; `wait_pending` resumes the fiber's panic after the other 5 ran.
#[test]
fn a_discarded_launch_then_continuation_whose_capture_panics() {
    quiet();
    let l = rt().trustee(0).entrust(Latch::new(0u64));
    let drops = Arc::new(AtomicUsize::new(0));
    let bomb = PanicsOnDrop(drops.clone());
    let ran = std::rc::Rc::new(std::cell::Cell::new(0u32));
    l.launch_then(
        |_| -> u64 { panic!("launched boom") },
        move |_| {
            let _b = &bomb;
        },
    );
    for _ in 0..5 {
        let r = ran.clone();
        l.launch_then(
            |l| {
                std::thread::sleep(Duration::from_millis(20));
                *l.lock() += 1;
            },
            move |()| r.set(r.get() + 1),
        );
    }
    let first = catch_unwind(wait_pending).map_err(panic_message);
    let ran_first = ran.get();
    let second = catch_unwind(wait_pending).map_err(panic_message);
    assert_eq!(
        (first, ran_first, second, load(&drops)),
        (Err("launched boom".into()), 5, Ok(()), 1)
    );
    assert_eq!(l.apply(|l| *l.get_mut()), 5);
}
