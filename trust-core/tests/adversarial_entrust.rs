//! Adversarial `#[entrust]` stubs, `into_inner`/`try_unwrap` races and `launch` misuse: methods that panic
//! through every stub, `&[T]`/`&T` arguments whose `Clone` panics half-way, clones dying inside closures and
//! continuations while `into_inner` decides. Attacks "if every handle ends in `into_inner`, exactly one gets
//! `Some`" and "`apply` resumes the panic in the caller with its original payload" (README).

use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod common;
use common::*;
use trust_core::{Latch, Trust, entrust, spawn, wait_pending};

/// Its `Clone` panics on the `fuse`-th clone; counts clones and drops.
#[derive(Debug)]
pub struct Touchy {
    id: u64,
    clones: Arc<AtomicUsize>,
    drops: Arc<AtomicUsize>,
    fuse: Arc<AtomicUsize>,
}
impl Clone for Touchy {
    fn clone(&self) -> Self {
        let n = self.clones.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fuse.load(Ordering::SeqCst) {
            panic!("clone {n} panics");
        }
        Touchy {
            id: self.id,
            clones: self.clones.clone(),
            drops: self.drops.clone(),
            fuse: self.fuse.clone(),
        }
    }
}
impl Drop for Touchy {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Its `add` panics for 13 (a message) and 666 (a `u64` payload).
#[entrust]
#[derive(Debug)]
pub struct Ledger {
    total: u64,
    ops: u64,
}

#[entrust]
impl Ledger {
    pub fn add(&mut self, n: u64) -> u64 {
        self.ops += 1;
        if n == 13 {
            panic!("unlucky {n}");
        }
        if n == 666 {
            panic_any(n);
        }
        self.total += n;
        self.total
    }
    pub fn sum_ids(&mut self, items: &[Touchy]) -> u64 {
        self.ops += 1;
        items.iter().map(|t| t.id).sum()
    }
    pub fn one(&mut self, item: &Touchy) -> u64 {
        self.ops += 1;
        item.id
    }
    pub fn text(&self, s: &str) -> usize {
        s.chars().count()
    }
    pub fn ops(&self) -> u64 {
        self.ops
    }
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// "`apply` resumes the panic in the caller with its original payload, and the value stays usable": through
/// the blocking, `_then` and `_async` stubs, with a message and a non-string payload.
#[test]
fn entrust_methods_that_panic_through_every_stub() {
    quiet();
    let l: Trust<Ledger> = rt().trustee(1).entrust(Ledger { total: 0, ops: 0 });
    assert_eq!(l.add(5), 5);
    let m = panic_message(catch_unwind(AssertUnwindSafe(|| l.add(13))).unwrap_err());
    assert_eq!(m, "unlucky 13");
    let p = catch_unwind(AssertUnwindSafe(|| l.add(666))).unwrap_err();
    assert_eq!(*p.downcast::<u64>().unwrap(), 666);
    assert_eq!(l.add(1), 6, "usable after panics");
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    for n in [1u64, 13, 2, 666, 3] {
        let s = seen.clone();
        l.add_then(n, move |t| s.borrow_mut().push(t));
    }
    let w = catch_unwind(wait_pending).map_err(panic_message);
    assert_eq!(
        w,
        Err("unlucky 13".to_string()),
        "the first panic is resumed"
    );
    assert_eq!(*seen.borrow(), vec![7, 9, 12]);
    let tk = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let r = tk.block_on(async {
        let ok = l.add_async(100).await;
        let l2 = l.clone();
        let e = tokio::spawn(async move { l2.add_async(13).await }).await;
        (ok, e.map_err(|e| panic_message(e.into_panic())))
    });
    assert_eq!(r, (112, Err("unlucky 13".to_string())));
    assert_eq!(l.ops(), 11);
    assert_eq!(l.total(), 112);
}

/// A [`Touchy`] whose clone number `fuse` panics.
fn touchy(id: u64, fuse: usize, c: &Arc<AtomicUsize>, d: &Arc<AtomicUsize>) -> Touchy {
    Touchy {
        id,
        clones: c.clone(),
        drops: d.clone(),
        fuse: Arc::new(AtomicUsize::new(fuse)),
    }
}

/// `&[T]` / `&T` stub arguments are cloned in the caller: a `Clone` panicking half-way reaches the caller, no
/// request runs, and every clone made is dropped exactly once, inline (<= 64 bytes) and boxed.
#[test]
fn slice_and_ref_arguments_whose_clone_panics_half_way() {
    quiet();
    let l: Trust<Ledger> = rt().trustee(0).entrust(Ledger { total: 0, ops: 0 });
    for len in [1usize, 2, 3, 10] {
        // size_of::<Touchy>() = 32: len 2 is inline, 3 and 10 are boxed.
        for fuse in 1..=len {
            let (c, d) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let fuse_cell = Arc::new(AtomicUsize::new(fuse));
            let items: Vec<Touchy> = (0..len as u64)
                .map(|i| Touchy {
                    id: i,
                    clones: c.clone(),
                    drops: d.clone(),
                    fuse: fuse_cell.clone(),
                })
                .collect();
            let before = l.ops();
            let r = catch_unwind(AssertUnwindSafe(|| l.sum_ids(&items)));
            let m = panic_message(r.unwrap_err());
            assert_eq!(m, format!("clone {fuse} panics"));
            assert_eq!(l.ops(), before, "no request ran");
            assert_eq!(load(&c), fuse);
            assert_eq!(
                load(&d),
                fuse - 1,
                "len {len} fuse {fuse}: each finished clone dropped once"
            );
            // Without a panic: every clone dropped once, after the method ran.
            fuse_cell.store(usize::MAX, Ordering::SeqCst);
            let want: u64 = (0..len as u64).sum();
            assert_eq!(l.sum_ids(&items), want);
            let made = load(&c) - fuse;
            assert_eq!(made, len);
            eventually("clones dropped", || load(&d) == fuse - 1 + len);
            drop(items);
            assert_eq!(load(&d), fuse - 1 + 2 * len);
        }
    }
    let (c, d) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let t = touchy(7, 1, &c, &d);
    let r = catch_unwind(AssertUnwindSafe(|| l.one(&t)));
    assert_eq!(panic_message(r.unwrap_err()), "clone 1 panics");
    assert_eq!(load(&d), 0);
    let t2 = touchy(8, usize::MAX, &c, &d);
    assert_eq!(l.one(&t2), 8);
    eventually("ref clone dropped", || load(&d) == 1);
    drop((t, t2));
    assert_eq!(load(&d), 3);
}

/// `&str` stub arguments of 0 to 300 chars of 1 to 4 bytes each arrive whole.
#[test]
fn strings_of_every_length_and_width_through_stubs() {
    quiet();
    let l: Trust<Ledger> = rt().trustee(1).entrust(Ledger { total: 0, ops: 0 });
    let mut s = String::new();
    for i in 0..300 {
        s.push(['a', 'é', '€', '𝄞'][i % 4]);
        assert_eq!(l.text(&s), i + 1);
    }
    assert_eq!(l.text(""), 0);
}

/// "If every handle ends in `into_inner`, exactly one gets `Some`", while clones die in a closure on the other
/// trustee, a continuation and a fiber: one `Some` per round, the value dropped exactly once.
#[test]
fn into_inner_racing_with_clones_dropped_inside_closures_and_continuations() {
    quiet();
    for round in 0..200 {
        let drops = Arc::new(AtomicUsize::new(0));
        let v = rt().trustee(round % 2).entrust(CountsDrops(drops.clone()));
        let other = rt().trustee(1 - round % 2).entrust(0u64);
        let mut threads = Vec::new();
        for k in 0..3 {
            let mine = v.clone();
            let other = other.clone();
            threads.push(std::thread::spawn(move || {
                match k {
                    0 => {
                        // The clone travels into a closure on the other trustee and dies there.
                        let c = mine.clone();
                        other.apply(move |_| drop(c));
                    }
                    1 => {
                        let c = mine.clone();
                        other.apply_then(|_| (), move |()| drop(c));
                        wait_pending();
                    }
                    _ => {
                        let c = mine.clone();
                        spawn(move || drop(c)).join().unwrap();
                    }
                }
                mine.into_inner().is_some()
            }));
        }
        let main = v.into_inner().is_some();
        let somes = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&b| b)
            .count()
            + main as usize;
        assert_eq!(
            somes, 1,
            "round {round}: exactly one into_inner gets the value"
        );
        assert_eq!(load(&drops), 1, "round {round}: dropped exactly once");
    }
}

/// `try_unwrap` waits for "`apply_then`s another thread issued to that trustee but has not sent yet": it
/// returns the value with every one of them applied.
#[test]
fn try_unwrap_sees_every_unpublished_apply_then_of_a_live_thread() {
    quiet();
    for round in 0..100 {
        let v = rt().trustee(round % 2).entrust(0u64);
        let c = v.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            for _ in 0..(round % 40 + 1) {
                c.apply_then(|v| *v += 1, |()| ());
            }
            drop(c);
            tx.send(()).unwrap();
            // Stays alive a while, unpublished requests in its outbox (try_unwrap documents waiting for them:
            // they go out at this thread's next publish).
            let _ = go_rx.recv_timeout(Duration::from_millis(20));
            wait_pending();
        });
        rx.recv().unwrap();
        let got = v.try_unwrap().map_err(|_| "Err");
        let _ = go_tx.send(());
        t.join().unwrap();
        assert_eq!(got, Ok((round % 40 + 1) as u64), "round {round}");
    }
}

/// `launch` misuse: a launch on the same latch from inside a launched fiber (it is a new fiber, no deadlock),
/// a launch from a continuation on a plain thread, a panic holding the latch guard (released), `try_lock`.
#[test]
fn launch_misuse() {
    quiet();
    let latch: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(0));
    let l2 = latch.clone();
    let r = catch_unwind(AssertUnwindSafe(|| {
        latch.launch(move |l| {
            *l.lock() += 1;
            l2.launch(|l| {
                *l.lock() += 10;
                5
            })
        })
    }))
    .map_err(panic_message);
    assert_eq!(r, Ok(5));
    let other = rt().trustee(0).entrust(1u8);
    assert_eq!(other.apply(|v| *v + 1), 2, "trustee 0 still serves");
    let l5 = latch.clone();
    let got = std::rc::Rc::new(std::cell::Cell::new(0));
    let g = got.clone();
    latch.launch_then(|l| *l.lock(), move |v| g.set(l5.launch(move |_| v + 1)));
    wait_pending();
    assert_eq!(got.get(), 12);
    // a panic while holding the guard releases it
    let l6 = latch.clone();
    let p = catch_unwind(AssertUnwindSafe(|| {
        l6.launch(|l| {
            let _g = l.lock();
            panic!("inside the latch");
        })
    }));
    assert_eq!(panic_message(p.unwrap_err()), "inside the latch");
    assert_eq!(latch.launch(|l| l.try_lock().map(|g| *g)), Some(11));
}

/// "Blocking delegation is fine here": a launched fiber spawns and joins a fiber, applies to another property
/// of its own trustee (the local shortcut) and to the other trustee; all results add up.
#[test]
fn launched_fibers_spawn_join_and_apply_locally() {
    quiet();
    let latch: Trust<Latch<u64>> = rt().trustee(1).entrust(Latch::new(0));
    let local = rt().trustee(1).entrust(100u64);
    let remote = rt().trustee(0).entrust(1000u64);
    let r = latch.launch(move |l| {
        let f = spawn(|| 7u64);
        let a = local.apply(|v| {
            *v += 1;
            *v
        });
        let b = remote.apply(|v| *v);
        *l.lock() = a + b + f.join().unwrap();
        *l.lock()
    });
    assert_eq!(r, 1108);
    assert_eq!(latch.apply(|l| *l.get_mut()), 1108);
}
