//! Adversarial `apply_then` / `wait_pending`: panicking and nested continuations, deep and fanned-out chains,
//! threads exiting with continuations that own `Trust` handles, handles in thread-local destructors. Attacks
//! "a panic ... is kept and resumed by the issuer's next `wait_pending()`; the other requests still complete"
//! and "continuations that can no longer run are dropped on it" (README).

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod common;
use common::*;
use trust_core::{Trust, spawn, wait_pending};

/// "The other requests still complete": one continuation of 100 panics; `wait_pending` resumes its message
/// after the other 99 ran, and a second `wait_pending` has nothing left.
#[test]
fn a_panicking_continuation_among_a_hundred_on_a_plain_thread() {
    rt();
    within(60, || {
        let c = rt().trustee(0).entrust(0u64);
        let ran = Rc::new(Cell::new(0u64));
        for i in 0..100u64 {
            let ran = ran.clone();
            c.apply_then(
                |c| {
                    *c += 1;
                    *c
                },
                move |v| {
                    if i == 50 {
                        panic!("boom at {v}");
                    }
                    ran.set(ran.get() + 1);
                },
            );
        }
        let msg = panic_message(catch_unwind(wait_pending).unwrap_err());
        assert_eq!(msg, "boom at 51");
        assert_eq!(ran.get(), 99, "the others ran");
        assert_eq!(c.apply(|c| *c), 100);
        wait_pending();
    });
}

/// "Resumes the first panic": three panics (two closures, one continuation) before one `wait_pending`; the
/// first resumes the first payload, the next two return, and each payload is dropped exactly once.
#[test]
fn two_panics_before_one_wait_pending_drop_each_payload_once() {
    rt();
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    within(60, move || {
        let c = rt().trustee(1).entrust(0u64);
        let d1 = d.clone();
        c.apply_then(move |_| panic_any(CountsDrops(d1)), |()| {});
        let d2 = d.clone();
        c.apply_then(|c| *c += 1, move |()| panic_any(CountsDrops(d2)));
        let d3 = d.clone();
        c.apply_then(move |_| panic_any(CountsDrops(d3)), |()| {});
        let first = catch_unwind(wait_pending).unwrap_err();
        assert!(first.downcast_ref::<CountsDrops>().is_some());
        assert!(catch_unwind(wait_pending).is_ok());
        assert!(catch_unwind(wait_pending).is_ok());
        drop(first);
        assert_eq!(c.apply(|c| *c), 1);
    });
    eventually("3 payloads dropped", || load(&drops) >= 3);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(load(&drops), 3, "each payload dropped exactly once");
}

/// "`wait_pending` inside a continuation on a plain thread works": the nested one resumes a sibling's panic
/// inside the first continuation; the outer one resumes that original payload after everything ran.
#[test]
fn a_panic_resumed_by_a_nested_wait_pending_reaches_the_outer_one() {
    rt();
    within(60, || {
        let c = rt().trustee(0).entrust(0u64);
        let ran = Rc::new(Cell::new(0u32));
        let (c2, r2) = (c.clone(), ran.clone());
        c.apply_then(
            |c| *c += 1,
            move |()| {
                let r3 = r2.clone();
                c2.apply_then(|c| *c += 1, |()| panic!("inner boom"));
                c2.apply_then(|c| *c += 1, move |()| r3.set(r3.get() + 1));
                wait_pending();
                unreachable!("the nested wait_pending resumes the inner panic");
            },
        );
        let r4 = ran.clone();
        c.apply_then(|c| *c += 1, move |()| r4.set(r4.get() + 1));
        let msg = panic_message(catch_unwind(wait_pending).unwrap_err());
        assert_eq!(msg, "inner boom");
        assert_eq!(ran.get(), 2);
        assert_eq!(c.apply(|c| *c), 4);
        wait_pending();
    });
}

/// Same promise, 200 deep: each continuation issues the next and calls `wait_pending`; all 200 run once.
#[test]
fn nested_wait_pending_in_continuations_200_deep() {
    rt();
    within(60, || {
        let c = rt().trustee(1).entrust(0u64);
        let depth = Rc::new(Cell::new(0u32));
        fn step(c: Trust<u64>, depth: Rc<Cell<u32>>, left: u32) {
            let c2 = c.clone();
            c.apply_then(
                |c| *c += 1,
                move |()| {
                    depth.set(depth.get() + 1);
                    if left > 0 {
                        step(c2, depth, left - 1);
                        wait_pending();
                    }
                },
            );
        }
        step(c.clone(), depth.clone(), 199);
        wait_pending();
        assert_eq!(depth.get(), 200);
        assert_eq!(c.apply(|c| *c), 200);
    });
}

/// "Continuations may issue more `apply_then`s (chains)": binary fan-out 10 levels deep, alternating
/// trustees, from 4 fibers and a plain thread at once; each caller sees its 1023 continuations.
#[test]
fn fan_out_chains_from_fibers_and_plain_thread() {
    rt();
    fn fan(a: Trust<u64>, b: Trust<u64>, level: u32, count: Rc<Cell<u64>>) {
        let (a2, b2) = (a.clone(), b.clone());
        a.apply_then(
            |v| *v += 1,
            move |()| {
                count.set(count.get() + 1);
                if level > 0 {
                    fan(b2.clone(), a2.clone(), level - 1, count.clone());
                    fan(b2, a2, level - 1, count);
                }
            },
        );
    }
    let a = rt().trustee(0).entrust(0u64);
    let b = rt().trustee(1).entrust(0u64);
    let fibers: Vec<_> = (0..4)
        .map(|_| {
            let (a, b) = (a.clone(), b.clone());
            spawn(move || {
                let count = Rc::new(Cell::new(0));
                fan(a, b, 9, count.clone());
                wait_pending();
                count.get()
            })
        })
        .collect();
    let (a2, b2) = (a.clone(), b.clone());
    let from_thread = within(60, move || {
        let count = Rc::new(Cell::new(0));
        fan(a2, b2, 9, count.clone());
        wait_pending();
        count.get()
    });
    assert_eq!(from_thread, 1023);
    for f in fibers {
        assert_eq!(f.join().unwrap(), 1023);
    }
    assert_eq!(a.apply(|v| *v) + b.apply(|v| *v), 5 * 1023);
}

/// "Waiting where the trustee cannot wait panics with a message that names the way out": a blocking `apply`
/// in a continuation run by a worker's scheduler panics naming `apply_then`; both values are untouched.
#[test]
fn blocking_apply_in_a_continuation_on_a_worker() {
    rt();
    let (r, a, b) = within(30, || {
        let a = rt().trustee(0).entrust(0u64);
        let host = rt().trustee(0).entrust(0u64);
        let b = rt().trustee(1).entrust(5u64);
        let res = Arc::new(std::sync::Mutex::new(None::<Result<u64, String>>));
        let (a2, b2, r2) = (a.clone(), b.clone(), res.clone());
        // Issued inside a closure on worker 0: the continuation runs on worker 0's scheduler.
        host.apply(move |_| {
            a2.apply_then(
                |v| *v += 1,
                move |()| {
                    let r = catch_unwind(AssertUnwindSafe(|| b2.apply(|v| *v + 1)))
                        .map_err(panic_message);
                    *r2.lock().unwrap() = Some(r);
                },
            );
        });
        eventually("continuation ran", || res.lock().unwrap().is_some());
        let r = res.lock().unwrap().take().unwrap();
        (r, a.apply(|v| *v), b.apply(|v| *v))
    });
    let m = r.unwrap_err();
    assert!(
        m.contains("blocking delegation inside an `apply_then` continuation on a worker"),
        "{m}"
    );
    assert!(m.contains("Chain another `apply_then`"), "{m}");
    assert_eq!((a, b), (1, 5));
}

/// "A thread may exit with requests in flight ... continuations that can no longer run are dropped on it":
/// 5000 continuations each own a `Trust` clone of another value; all requests run, every continuation is
/// dropped once, and the other value is dropped once, only after its last handle goes.
#[test]
fn a_thread_exits_with_thousands_of_continuations_owning_trust_handles() {
    rt();
    for round in 0..5 {
        let tokens = Arc::new(AtomicUsize::new(0));
        let value_drops = Arc::new(AtomicUsize::new(0));
        let counter = rt().trustee(round % 2).entrust(0u64);
        let held = rt()
            .trustee(1 - round % 2)
            .entrust(CountsDrops(value_drops.clone()));
        let (c, h, t) = (counter.clone(), held.clone(), tokens.clone());
        std::thread::spawn(move || {
            for i in 0..5000u64 {
                let (h2, tok) = (h.clone(), CountsDrops(t.clone()));
                c.apply_then(
                    move |c| {
                        *c += 1;
                        i
                    },
                    move |_| {
                        let _ = (h2, tok);
                    },
                );
            }
            drop(h);
        })
        .join()
        .expect("thread exit is clean");
        assert_eq!(counter.apply(|c| *c), 5000, "every request ran");
        assert_eq!(load(&tokens), 5000, "every continuation dropped once");
        assert_eq!(load(&value_drops), 0, "a handle is still alive");
        drop(held);
        eventually("value dropped", || load(&value_drops) == 1);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(load(&value_drops), 1);
    }
}

thread_local! {
    static HELD: RefCell<Option<Trust<CountsDrops>>> = const { RefCell::new(None) };
    static CLONER: RefCell<Option<CloneOnDrop>> = const { RefCell::new(None) };
}

/// Clones its handle, drops both, and counts that it ran.
struct CloneOnDrop(Option<Trust<CountsDrops>>, Arc<AtomicUsize>);

impl Drop for CloneOnDrop {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            let c = t.clone();
            drop(t);
            drop(c);
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// "`clone` and `drop` never block and never panic, wherever they run": handles cloned and dropped in
/// thread-local destructors at thread exit, before or after the thread's own client; the value drops once.
#[test]
fn trust_handles_cloned_and_dropped_in_thread_local_destructors() {
    rt();
    for round in 0..20 {
        let drops = Arc::new(AtomicUsize::new(0));
        let dtor_ran = Arc::new(AtomicUsize::new(0));
        let v = rt().trustee(round % 2).entrust(CountsDrops(drops.clone()));
        let (v1, v2, d) = (v.clone(), v.clone(), dtor_ran.clone());
        drop(v);
        std::thread::spawn(move || {
            // The runtime's client thread-local is registered before ours (delegation first) or after.
            if round % 4 < 2 {
                v1.apply(|_| ());
                v1.apply_then(|_| (), |()| {});
            }
            HELD.with(|h| *h.borrow_mut() = Some(v1));
            CLONER.with(|c| *c.borrow_mut() = Some(CloneOnDrop(Some(v2), d)));
            if round % 4 >= 2 {
                HELD.with(|h| h.borrow().as_ref().unwrap().apply(|_| ()));
            }
        })
        .join()
        .expect("thread exits cleanly");
        assert_eq!(load(&dtor_ran), 1, "the destructor ran");
        eventually("value dropped once", || load(&drops) == 1);
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(load(&drops), 1);
    }
}

/// "The last handle drops the value on its trustee, exactly once": a continuation holding the last handle
/// issues 100 more requests, each continuation dropping a clone; all run, the value drops once.
#[test]
fn continuations_that_clone_and_drop_handles_of_their_own_value() {
    rt();
    within(60, || {
        let drops = Arc::new(AtomicUsize::new(0));
        let v = rt().trustee(0).entrust((0u64, CountsDrops(drops.clone())));
        let seen = Rc::new(Cell::new(0u64));
        let (s, v3) = (seen.clone(), v.clone());
        v.apply_then(
            |v| {
                v.0 += 1;
                v.0
            },
            move |n| {
                for _ in 0..100 {
                    let (c, s) = (v3.clone(), s.clone());
                    v3.apply_then(
                        move |v| {
                            v.0 += 1;
                            v.0
                        },
                        move |n| {
                            drop(c);
                            s.set(s.get().max(n));
                        },
                    );
                }
                drop(v3);
                assert_eq!(n, 1);
            },
        );
        drop(v); // the last handle outside; the continuation still holds one
        wait_pending();
        assert_eq!(seen.get(), 101);
        eventually("value dropped", || load(&drops) == 1);
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(load(&drops), 1);
    });
}

/// "Resumed by the issuer's next `wait_pending()`" on fibers: 20 fibers per worker each get their own
/// continuation's payload; all 1000 requests ran.
#[test]
fn a_panicking_continuation_on_a_fiber_reaches_its_wait_pending() {
    rt();
    for w in 0..2 {
        let c = rt().trustee(w).entrust(0u64);
        let fibers: Vec<_> = (0..20)
            .map(|i| {
                let c = c.clone();
                spawn(move || {
                    for j in 0..50 {
                        c.apply_then(
                            |c| *c += 1,
                            move |()| {
                                if j == 25 {
                                    panic_any(i as u64);
                                }
                            },
                        );
                    }
                    *catch_unwind(wait_pending)
                        .unwrap_err()
                        .downcast::<u64>()
                        .unwrap()
                })
            })
            .collect();
        let ids: Vec<u64> = fibers.into_iter().map(|f| f.join().unwrap()).collect();
        assert_eq!(ids, (0..20).collect::<Vec<u64>>());
        assert_eq!(c.apply(|c| *c), 1000);
    }
}

/// "Continuations that can no longer run are dropped on it": capture destructors that delegate (`apply`) at
/// thread exit; every closure ran and every destructor's `apply` arrived.
#[test]
fn apply_then_issued_from_a_destructor_run_at_thread_exit() {
    rt();
    let counter = rt().trustee(1).entrust(0u64);
    struct Issues(Trust<u64>);
    impl Drop for Issues {
        fn drop(&mut self) {
            self.0.apply(|c| *c += 1000);
        }
    }
    let c = counter.clone();
    std::thread::spawn(move || {
        for _ in 0..100 {
            let cap = Issues(c.clone());
            c.apply_then(
                |c| {
                    std::thread::sleep(Duration::from_micros(100));
                    *c += 1;
                },
                move |()| drop(cap),
            );
        }
    })
    .join()
    .expect("thread exits cleanly");
    assert_eq!(counter.apply(|c| *c), 100 + 100 * 1000);
}

/// "Every apply_then of this thread (or fiber) is done and its continuation ran": a fiber's `wait_pending`
/// waits for a chained request to the other trustee and resumes the chained continuation's panic.
#[test]
fn a_fibers_wait_pending_and_chained_continuations() {
    rt();
    for on in 0..2 {
        let a = rt().trustee(on).entrust(0u64);
        let b = rt().trustee(1 - on).entrust(0u64);
        let r = spawn(move || {
            let seen = Rc::new(Cell::new(0u32));
            let (s, b2) = (seen.clone(), b.clone());
            a.apply_then(
                |v| {
                    std::thread::sleep(Duration::from_millis(5));
                    *v += 1;
                },
                move |()| {
                    s.set(s.get() + 1);
                    let s2 = s.clone();
                    b2.apply_then(
                        |v| {
                            std::thread::sleep(Duration::from_millis(20));
                            *v += 1;
                        },
                        move |()| {
                            s2.set(s2.get() + 1);
                            panic!("chained boom");
                        },
                    );
                },
            );
            let waited = catch_unwind(wait_pending).map_err(panic_message);
            (seen.get(), waited, b.apply(|v| *v))
        })
        .join()
        .unwrap();
        assert_eq!(
            r,
            (2, Err("chained boom".to_string()), 1),
            "fiber on worker {on}"
        );
    }
}
