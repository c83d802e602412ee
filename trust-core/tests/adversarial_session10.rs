//! Hostile tests, session 10: `#[entrust]` methods of odd but valid signatures, the exactness and monotonicity of `Runtime::metrics`, the caller's stack a blocking `apply`
//! needs for its result, `local_trustee` round-robin, and the `Latch` accessors. Each test runs in a child
//! process of its own (this binary again, a fresh runtime of two workers) with a watchdog, so a hang or an
//! abort is a failure of that test only.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

#[macro_use]
mod common;
use common::*;
use trust_core::{Latch, Trust, TrusteeMetrics, entrust, local_trustee, wait_pending};

/// Polls `f` to completion on this thread (a plain thread: `apply_async` needs no executor of its own).
fn block_on<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

// ---------------------------------------------------------------------------------------------------------
// `#[entrust]`: signatures that are unusual but delegable.

// `#[allow]` on a method is not copied to its stubs, which repeat its argument types: the lints of `strings`
// fire on the generated stubs too, so they are allowed for the whole module.
#[allow(clippy::borrowed_box, clippy::ptr_arg)]
mod odd {
    use trust_core::{Trust, entrust};

    /// A generic struct with a default type parameter.
    #[entrust]
    pub struct Defaulted<T = u64> {
        pub v: T,
    }

    #[entrust]
    impl<T: Send + Clone + 'static> Defaulted<T> {
        pub fn get(&self) -> T {
            self.v.clone()
        }
    }

    /// A tuple struct with a `where` clause.
    #[entrust]
    pub struct Wrapped<T>(pub T)
    where
        T: Send + 'static;

    #[entrust]
    impl<T> Wrapped<T>
    where
        T: Send + Copy + std::ops::Add<Output = T> + 'static,
    {
        pub fn add(&mut self, x: T) -> T {
            self.0 = self.0 + x;
            self.0
        }
    }

    /// A unit struct.
    #[entrust]
    pub struct Unit;

    #[entrust]
    impl Unit {
        pub fn three(&self) -> u64 {
            3
        }
    }

    pub mod inner {
        use trust_core::entrust;

        #[entrust]
        pub struct Far {
            pub n: u64,
        }
    }

    /// An impl block naming its struct by path, in another module.
    #[entrust]
    impl inner::Far {
        pub fn n(&self) -> u64 {
            self.n
        }
    }

    #[entrust]
    #[derive(Clone, Debug, PartialEq)]
    pub struct Odd {
        pub n: u64,
        pub log: Vec<String>,
    }

    #[entrust]
    impl Odd {
        const STEP: u64 = 7;

        /// Not a method: stays as it is.
        pub fn new() -> Self {
            Odd {
                n: 0,
                log: Vec::new(),
            }
        }

        /// Raw identifiers, for the method and its argument.
        pub fn r#match(&mut self, r#in: u64) -> u64 {
            self.n += r#in;
            self.n
        }

        /// Named `then`: its stubs are `then`, `then_then` and `then_async`.
        pub fn then(&self) -> u64 {
            self.n + 1
        }

        /// Parameters named like the generated code's locals (`this`, `args`, `then`, `result`, `future`).
        pub fn locals(&self, this: u64, args: u64, then: u64, result: u64, future: u64) -> u64 {
            this + 10 * args + 100 * then + 1000 * result + 10_000 * future + self.n
        }

        pub fn merged(&self, other: &Self) -> Self {
            let mut log = self.log.clone();
            log.extend(other.log.iter().cloned());
            Odd {
                n: self.n + other.n,
                log,
            }
        }

        pub const fn constant(&self) -> u64 {
            self.n * 2
        }

        pub fn sized(&self) -> u64
        where
            Self: Sized,
        {
            self.n + Self::STEP
        }

        pub fn name(&self) -> &'static str {
            "odd"
        }

        pub fn strings(
            &mut self,
            a: &[&'static str],
            b: &&'static str,
            c: &Box<str>,
            d: &String,
        ) -> usize {
            self.log.extend(a.iter().map(|s| s.to_string()));
            self.log.push(b.to_string());
            self.log.push(c.to_string());
            self.log.push(d.clone());
            self.log.len()
        }

        pub fn functions(&self, f: Box<dyn Fn(u64) -> u64 + Send>, g: fn(u64) -> u64) -> u64 {
            g(f(self.n))
        }

        pub fn patterns(&self, (x, y): (u64, u64), _: u64, mut z: u64) -> u64 {
            z += 1;
            x * 100 + y * 10 + z
        }

        pub fn unit_in_a_tuple(&self) -> ((),) {
            ((),)
        }

        pub fn fallible(&self) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
            if self.n == 0 {
                Err("zero".into())
            } else {
                Ok(self.n)
            }
        }

        pub fn handle(&self, t: Trust<u64>) -> u64 {
            // A handle as an argument, used on the trustee (a `_then` from inside: nothing waits).
            t.apply_then(|v| *v += 1, |()| ());
            self.n
        }
    }
}

/// The entrust guide's promises for generic structs, `Self` in signatures, pattern arguments, `&str`/`&[T]`/`&T`
/// copies and the mixed-site hygiene of the generated locals ("they never clash with parameter names"), pushed
/// to raw identifiers, a method named `then`, parameters named `this`/`args`/`then`/`result`/`future`, a default
/// type parameter, a tuple struct with a `where` clause, a unit struct, an impl naming its struct by path,
/// `&[&'static str]`, `&&'static str`, `&Box<str>`, boxed closures and fn pointers: every stub gives exactly what
/// the direct call gives, through the blocking, `_then` and `_async` stubs.
#[test]
fn entrust_stubs_of_odd_but_valid_signatures_give_exact_results() {
    in_child!(
        "entrust_stubs_of_odd_but_valid_signatures_give_exact_results",
        10
    );
    let d: Trust<odd::Defaulted> = rt().trustee(1).entrust(odd::Defaulted { v: 5 });
    assert_eq!(d.get(), 5u64);
    let w = rt().trustee(0).entrust(odd::Wrapped(1.5f64));
    assert_eq!(w.add(2.0), 3.5);
    assert_eq!(rt().trustee(1).entrust(odd::Unit).three(), 3);
    assert_eq!(rt().trustee(1).entrust(odd::inner::Far { n: 9 }).n(), 9);

    let o = rt().trustee(1).entrust(odd::Odd::new());
    assert_eq!(o.r#match(4), 4);
    assert_eq!(o.then(), 5);
    assert_eq!(o.locals(1, 2, 3, 4, 5), 54_321 + 4);
    let merged = o.merged(&odd::Odd {
        n: 10,
        log: vec!["x".into()],
    });
    assert_eq!((merged.n, merged.log), (14, vec!["x".to_string()]));
    assert_eq!((o.constant(), o.sized(), o.name()), (8, 11, "odd"));
    let boxed: Box<str> = "boxed".into();
    assert_eq!(o.strings(&["a", "b"], &"c", &boxed, &"d".to_string()), 5);
    assert_eq!(o.apply(|s| s.log.join("")), "abcboxedd");
    assert_eq!(o.functions(Box::new(|n| n * 3), |n| n + 1), 13);
    assert_eq!(o.patterns((1, 2), 99, 3), 124);
    assert_eq!(o.unit_in_a_tuple(), ((),));
    let counter = rt().trustee(0).entrust(0u64);
    assert_eq!(o.handle(counter.clone()), 4);
    eventually("the _then issued inside the method ran", || {
        counter.apply(|v| *v) == 1
    });

    // The non-blocking stubs of the same methods.
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let s = seen.clone();
    o.r#match_then(1, move |n| s.borrow_mut().push(n));
    let s = seen.clone();
    o.then_then(move |n| s.borrow_mut().push(n));
    let s = seen.clone();
    o.locals_then(1, 1, 1, 1, 1, move |n| s.borrow_mut().push(n));
    let s = seen.clone();
    o.patterns_then((0, 0), 0, 0, move |n| s.borrow_mut().push(n));
    wait_pending();
    assert_eq!(*seen.borrow(), [5, 6, 11_116, 1]);
    assert_eq!(block_on(o.locals_async(0, 0, 0, 0, 1)), 10_005);
    assert_eq!(block_on(o.then_async()), 6);
    assert_eq!(block_on(o.fallible_async()).unwrap(), 5);
    let zero = rt().trustee(0).entrust(odd::Odd::new());
    assert_eq!(zero.fallible().unwrap_err().to_string(), "zero");
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// `Runtime::metrics`.

/// Waits until no trustee's request count moves for 30 ms (count changes are sent without waiting, and a
/// mailed request is counted after it ran), then returns trustee `i`'s counters.
fn settled(i: usize) -> TrusteeMetrics {
    let requests = || {
        rt().metrics()
            .iter()
            .map(|m| m.requests)
            .collect::<Vec<_>>()
    };
    let mut last = requests();
    loop {
        std::thread::sleep(Duration::from_millis(30));
        let now = requests();
        if now == last {
            return rt().metrics()[i];
        }
        last = now;
    }
}

/// `(requests, batches)` served by trustee 1 while `f` ran (settled before and after).
fn served_by_1(f: impl FnOnce()) -> (u64, u64) {
    let before = settled(1);
    f();
    let after = settled(1);
    (
        after.requests - before.requests,
        after.batches - before.batches,
    )
}

/// `TrusteeMetrics::requests`: "every record that reached the trustee by its slots or its mailbox — `apply`,
/// `apply_with`, `apply_then`, `apply_async`, `launch`, `try_unwrap`, and the count changes of `clone`, `drop`
/// and `entrust` sent from other threads. Closures that ran inline (the local shortcut) are not requests."
/// Each kind from a plain thread to trustee 1, counted exactly; blocking calls are one batch each; inline
/// applies from a fiber on trustee 1 count nothing.
#[test]
fn metrics_count_every_kind_of_request_exactly() {
    in_child!("metrics_count_every_kind_of_request_exactly", 15);
    let t = rt().trustee(1).entrust(0u64);
    t.apply(|v| *v += 1); // the channel's registration is behind us
    assert_eq!(
        served_by_1(|| {
            for i in 0..10 {
                t.apply_with(|v, x: u64| *v += x, i);
            }
        }),
        (10, 10),
        "10 apply_with"
    );
    assert_eq!(
        served_by_1(|| {
            for _ in 0..10 {
                t.apply(|v| *v += 1);
            }
        }),
        (10, 10),
        "10 apply"
    );
    let (requests, _) = served_by_1(|| {
        for _ in 0..10 {
            block_on(t.apply_async(|v| *v += 1));
        }
    });
    assert_eq!(requests, 10, "10 apply_async, awaited one after another");
    let (requests, _) = served_by_1(|| {
        for _ in 0..100 {
            t.apply_then(|v| *v += 1, |()| ());
        }
        wait_pending();
    });
    assert_eq!(requests, 100, "100 apply_then");
    let mut clones = Vec::new();
    let (requests, _) = served_by_1(|| clones.extend((0..10).map(|_| t.clone())));
    assert_eq!(requests, 10, "10 clones");
    let (requests, _) = served_by_1(|| drop(clones));
    assert_eq!(requests, 10, "10 drops");
    let mut lone = None;
    let (requests, _) = served_by_1(|| lone = Some(rt().trustee(1).entrust(7u32)));
    assert_eq!(requests, 1, "an entrust");
    assert_eq!(
        served_by_1(|| assert_eq!(lone.take().unwrap().try_unwrap().ok(), Some(7))),
        (1, 1),
        "a try_unwrap"
    );
    let latch = rt().trustee(1).entrust(Latch::new(0u64));
    latch.apply(|_| ());
    assert_eq!(
        served_by_1(|| {
            for _ in 0..5 {
                latch.launch(|l| *l.lock() += 1);
            }
        }),
        (5, 5),
        "5 launch"
    );
    calibrate();
    let t1 = t.clone();
    let inline = spawn_on(1, move || {
        let before = rt().metrics()[1].requests;
        for _ in 0..100 {
            t1.apply(|v| *v += 1);
        }
        rt().metrics()[1].requests - before
    })
    .join()
    .unwrap();
    assert_eq!(inline, 0, "100 applies through the local shortcut");
    assert_eq!(t.apply(|v| *v), 1 + 45 + 10 + 10 + 100 + 100);
    child_ok();
}

/// `TrusteeMetrics` counts "since its worker started": `busy` and `idle` are durations that only grow, and the
/// example `examples/metrics.rs` subtracts two snapshots (`m.busy - b.busy`, `m.idle - b.idle`: `Duration`
/// subtraction, which panics on underflow). A worker parks and wakes every ~200 us (a plain thread applies,
/// then sleeps) while another thread takes snapshots for 2.5 s: none may be lower than the one before.
/// Before the fix, 6,516 of 10.3 M went backwards (e.g. `busy: 26.374457ms -> 26.123938ms`, about one park):
/// the snapshot read `parked_at_ns` and `idle_ns` one after the other while the worker, ending a park, added
/// it to `idle_ns` and then cleared `parked_at_ns`, so a reader in between counted the park twice.
#[test]
fn metrics_snapshots_never_go_backwards() {
    in_child!("metrics_snapshots_never_go_backwards", 20);
    let t = rt().trustee(1).entrust(0u64);
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let (t, stop) = (t.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                t.apply(|v| *v += 1);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    // At least 2.5 s, and longer (up to 10 s) until the worker has parked 100 times: on a loaded machine the
    // pinger may be scheduled rarely.
    let start = Instant::now();
    let mut prev = rt().metrics()[1];
    let (mut snapshots, mut backwards) = (0u64, Vec::new());
    while start.elapsed() < Duration::from_millis(2500)
        || (prev.parks <= 100 && start.elapsed() < Duration::from_secs(10))
    {
        let cur = rt().metrics()[1];
        snapshots += 1;
        if cur.busy < prev.busy
            || cur.idle < prev.idle
            || cur.requests < prev.requests
            || cur.batches < prev.batches
            || cur.parks < prev.parks
        {
            backwards.push(format!(
                "busy {:?} -> {:?}, idle {:?} -> {:?}",
                prev.busy, cur.busy, prev.idle, cur.idle
            ));
        }
        prev = cur;
    }
    stop.store(true, Ordering::Relaxed);
    pinger.join().unwrap();
    assert!(prev.parks > 100, "the worker parked {} times", prev.parks);
    assert!(
        backwards.is_empty(),
        "{} of {snapshots} snapshots went backwards, e.g. {:?}",
        backwards.len(),
        &backwards[..backwards.len().min(3)]
    );
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// The caller's stack a blocking `apply` needs for its result.

const RESULT: usize = 32 << 10;

#[inline(never)]
fn make_result(byte: u8) -> [u8; RESULT] {
    std::hint::black_box([byte; RESULT])
}

fn sum(r: &[u8; RESULT]) -> u64 {
    r.iter().map(|&b| u64::from(b)).sum()
}

// One function each: a debug build gives a function's every temporary a stack slot of its own.
#[inline(never)]
fn made_here() -> u64 {
    sum(&make_result(1))
}

#[inline(never)]
fn by_apply(t: &Trust<u8>) -> u64 {
    sum(&t.apply(|_| make_result(2)))
}

#[inline(never)]
fn by_apply_with(t: &Trust<u8>) -> u64 {
    sum(&t.apply_with(|_, b| make_result(b), 2))
}

#[inline(never)]
fn by_apply_then(t: &Trust<u8>) -> u64 {
    let got = std::rc::Rc::new(std::cell::Cell::new(0));
    let g = got.clone();
    t.apply_then(|_| make_result(2), move |r| g.set(sum(&r)));
    wait_pending();
    got.get()
}

/// The sum of the bytes of a locally made result and of those returned by trustee 1's `apply`, `apply_with`
/// and `apply_then` (into its continuation).
fn local_and_delegated(t: &Trust<u8>) -> (u64, [u64; 3]) {
    (
        made_here(),
        [by_apply(t), by_apply_with(t), by_apply_then(t)],
    )
}

/// Results "come back by value". A 32 KiB result (an eighth of a 256 KiB stack, the fibers' default) from
/// `apply`, `apply_with` and `apply_then`, to a plain thread with a 256 KiB stack and to a fiber. Before the
/// fix, the process aborted with a stack overflow (plain thread: release and debug builds; fiber: debug): the
/// result moved by value through every layer of the call path, about 7 (release) to 20 (debug) copies on the
/// caller's stack (measured: a blocking `apply` of a 32 KiB result needed 296 KiB of a plain thread's stack
/// in release, 784 KiB in debug, against 72 and 112 for a plain call returning the array). Now results over
/// 512 bytes come back boxed, as closures and arguments over 512 bytes already went.
#[test]
fn a_result_of_an_eighth_of_the_callers_stack_comes_back() {
    in_child!("a_result_of_an_eighth_of_the_callers_stack_comes_back", 10);
    let t = rt().trustee(1).entrust(0u8);
    let want = (RESULT as u64, [2 * RESULT as u64; 3]);
    let on_thread = {
        let t = t.clone();
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || local_and_delegated(&t))
            .unwrap()
            .join()
            .unwrap()
    };
    assert_eq!(on_thread, want, "from a plain thread with a 256 KiB stack");
    calibrate();
    let on_fiber = spawn_on(0, move || local_and_delegated(&t)).join().unwrap();
    assert_eq!(on_fiber, want, "from a fiber (256 KiB stack)");
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// `local_trustee`.

/// `local_trustee()`: "this worker's trustee; from a non-worker thread: one chosen round-robin"; `entrust(v)`
/// is `local_trustee().entrust(v)`. From one plain thread (nothing else choosing meanwhile) the choices
/// alternate exactly over the two trustees; on a worker (a fiber, a delegated closure) it is that worker.
#[test]
fn local_trustee_is_round_robin_off_the_workers_and_the_worker_on_them() {
    in_child!(
        "local_trustee_is_round_robin_off_the_workers_and_the_worker_on_them",
        10
    );
    let first = local_trustee().index();
    let picks: Vec<usize> = (0..7)
        .map(|i| {
            if i % 2 == 0 {
                local_trustee().index()
            } else {
                entrust(i).trustee().index()
            }
        })
        .collect();
    let want: Vec<usize> = (1..8).map(|i| (first + i) % 2).collect();
    assert_eq!(picks, want);
    let t = rt().trustee(1).entrust(0u64);
    assert_eq!(t.apply(|_| local_trustee().index()), 1);
    assert_eq!(t.apply(|_| entrust(5u8).trustee().index()), 1);
    calibrate();
    for w in [0, 1, 1, 0] {
        assert_eq!(spawn_on(w, || local_trustee().index()).join().unwrap(), w);
    }
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// `Latch`.

/// `Latch::try_lock` fails at once while another launched fiber holds the latch (suspended in `sleep`), and
/// takes it when free; a plain `apply` waits for the launched fibers, then `get_mut` sees every write; the
/// value comes back through `try_unwrap` + `Latch::into_inner`.
#[test]
fn latch_try_lock_get_mut_and_into_inner_see_exact_values() {
    in_child!("latch_try_lock_get_mut_and_into_inner_see_exact_values", 10);
    let latch = rt().trustee(0).entrust(Latch::new(Vec::<u32>::new()));
    let holding = Arc::new(AtomicUsize::new(0));
    let h = holding.clone();
    latch.launch_then(
        move |l| {
            let mut g = l.lock();
            g.push(1);
            h.store(1, Ordering::SeqCst);
            trust_core::sleep(Duration::from_millis(100));
            g.push(2);
        },
        |()| (),
    );
    // `launch_then` returned at once (a plain thread sends it with its next blocking call, this `launch`):
    // the first fiber starts first and holds the latch while it sleeps.
    let h = holding.clone();
    let refused = latch.launch(move |l| (h.load(Ordering::SeqCst), l.try_lock().is_none()));
    assert_eq!(
        refused,
        (1, true),
        "try_lock while another launched fiber holds it"
    );
    let got = latch.launch(|l| {
        let mut g = l.lock();
        g.push(3);
        g.len()
    });
    assert_eq!(got, 3);
    assert_eq!(
        latch.launch(|l| l.try_lock().map(|mut g| {
            g.push(4);
            g.clone()
        })),
        Some(vec![1, 2, 3, 4])
    );
    wait_pending();
    assert_eq!(
        latch.apply(|l| {
            l.get_mut().push(5);
            l.get_mut().len()
        }),
        5
    );
    let inner = latch.try_unwrap().ok().map(Latch::into_inner);
    assert_eq!(inner, Some(vec![1, 2, 3, 4, 5]));
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// Interval locks used from fibers.

/// `IntervalRwLock::read`/`write` block; in a fiber they must suspend only that fiber, as `apply` does. Fiber A
/// on worker 0 holds `write(0..4)` across a fiber `sleep`; fiber B on worker 0 asks for `write(2..6)`. Before
/// the fix, B parked the worker's OS thread (`thread::park`), so A was never resumed to release the range,
/// and trustee 0 stopped serving every client (a plain thread's `apply` to it never returned). Now B waits
/// suspended, trustee 0 serves, and B sees A's write (a guard indexes its own range: B's `g[1]` is element 3).
#[test]
fn a_blocking_interval_write_in_a_fiber_does_not_hang_its_worker() {
    in_child!(
        "a_blocking_interval_write_in_a_fiber_does_not_hang_its_worker",
        5
    );
    static LOCK: std::sync::LazyLock<trust_core::interval::IntervalRwLock<u32>> =
        std::sync::LazyLock::new(|| trust_core::interval::IntervalRwLock::new(vec![0u32; 8]));
    calibrate();
    let holding = Arc::new(AtomicBool::new(false));
    let h = holding.clone();
    let a = spawn_on(0, move || {
        let mut g = LOCK.write(0..4);
        h.store(true, Ordering::SeqCst);
        trust_core::sleep(Duration::from_millis(50));
        g[3] = 1;
    });
    eventually("fiber A holds 0..4", || holding.load(Ordering::SeqCst));
    let b = spawn_on(0, || {
        let mut g = LOCK.write(2..6);
        g[0] = 2;
        g[1] + g[0]
    });
    let t0 = rt().trustee(0).entrust(0u64);
    let served = within(3, move || t0.apply(|v| *v + 1));
    assert_eq!(served, 1, "trustee 0 still serves");
    a.join().unwrap();
    assert_eq!(b.join().unwrap(), 3);
    child_ok();
}
