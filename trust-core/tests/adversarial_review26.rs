//! Review 26: hostile tests of the changes in 51e53c0..907179c: `apply_async`'s request written in place in its
//! node (`trustee/oneshot.rs`: `Unsent::new_apply`, `without_job`, `into_boxed_closure`), the local shortcut of
//! a large closure (`api/future.rs`), `Fiber::join` publishing a plain thread's unsent `apply_then`s always,
//! and the lock module's `Debug` peek (`key::Peek`).
//!
//! Tests that may abort (a fiber stack overflow) or whose allocation counts must not see other tests run in a
//! child process of their own.

#[macro_use]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, mpsc};
use std::time::{Duration, Instant};

use common::{CountsDrops, PanicsOnDrop, block_on, panic_message, rt, within};
use trust_core::lock::{Mutex, RwLock, ThreadKey};
use trust_core::{Fiber, Trust, local_trustee, spawn};

// ---------------------------------------------------------------------------------------------------------
// A global allocator that counts live allocations aligned to 8192 bytes: only the requests (and boxes) of
// closures capturing an `Align8K` are, so a leaked request node shows as a live one (in a child process).
// ---------------------------------------------------------------------------------------------------------

struct CountingAlloc;

static LIVE_8K: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to `System`, counting on the side.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() == 8192 {
            LIVE_8K.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.align() == 8192 {
            LIVE_8K.fetch_sub(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[repr(align(8192))]
struct Align8K(u8);

/// A page-aligned capture: 4096 bytes, aligned to 4096.
#[repr(align(4096))]
struct Page([u8; 4096]);

/// Runs `f` on a fiber of worker `w` of `rt()`, without `spawn_on`'s calibration (usable in the shared
/// process): spawns fibers until one lands there (`spawn` goes round-robin), the others return at once.
fn on_worker<R: Send + 'static>(w: usize, f: impl FnOnce() -> R + Send + 'static) -> R {
    // The tests' `f`s `block_on` a future to the other worker's trustee, parking this worker until it answers:
    // two at once, one on each worker, each waiting for the other's trustee, deadlocked both (it happened in a
    // CI run, with two tests running side by side). One at a time.
    static ONE_WORKER_BLOCKED: StdMutex<()> = StdMutex::new(());
    let _one = ONE_WORKER_BLOCKED.lock().unwrap_or_else(|e| e.into_inner());
    rt();
    let f = Arc::new(StdMutex::new(Some(f)));
    loop {
        let fibers: Vec<Fiber<Option<R>>> = (0..2)
            .map(|_| {
                let f = f.clone();
                spawn(move || {
                    if local_trustee().index() != w {
                        return None;
                    }
                    let f = f.lock().unwrap().take()?;
                    Some(f())
                })
            })
            .collect();
        let mut got = None;
        for fiber in fibers {
            if let Some(r) = fiber.join().unwrap() {
                got = Some(r);
            }
        }
        if let Some(r) = got {
            return r;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// apply_async: the request written in place (oneshot.rs), sent, taken back, or dropped unsent.
// ---------------------------------------------------------------------------------------------------------

/// A future whose closure captures a page and a drop counter; it answers (page address % 4096, page's sum).
fn page_future(
    t: &'static Trust<u64>,
    d: &Arc<AtomicUsize>,
) -> impl Future<Output = (usize, u64)> + Send + 'static {
    let page = Page([3; 4096]);
    let c = CountsDrops(d.clone());
    t.apply_async(move |v| {
        let _c = &c;
        *v += 1;
        let addr = &page as *const Page as usize;
        (addr % 4096, page.0.iter().map(|&b| b as u64).sum::<u64>())
    })
}

/// HOLDS: `Unsent::new_apply` writes the closure straight into its node, whose layout must keep the
/// closure's alignment; `into_boxed_closure` (the local shortcut of a closure over 512 bytes) copies it into a
/// `Box<F>` of its own. A closure capturing a `#[repr(align(4096))]` page and a drop counter, by every path:
/// from a plain thread (mailed, run on the worker), from a fiber on the other worker (mailed), from a fiber on
/// the trustee's own worker (the local shortcut, boxed), and dropped unpolled. Expected: each closure that runs
/// sees its page at a 4096-aligned address with its bytes intact (sum 4096 * 3), and each capture is dropped
/// exactly once: 4 drops.
#[test]
fn over_aligned_captures_keep_their_alignment_on_every_path_and_drop_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let make = page_future;
    let t0: &'static Trust<u64> = Box::leak(Box::new(rt().trustee(0).entrust(0u64)));
    let d = drops.clone();
    let from_thread = within(10, move || block_on(make(t0, &d)));
    let d = drops.clone();
    let remote = on_worker(1, move || block_on(make(t0, &d)));
    let d = drops.clone();
    let local = on_worker(0, move || block_on(make(t0, &d)));
    drop(make(t0, &drops));
    assert_eq!(
        [from_thread, remote, local],
        [(0, 4096 * 3); 3],
        "(address % 4096, sum of the page) from a thread, a remote fiber, the local shortcut"
    );
    assert_eq!(
        (drops.load(Ordering::SeqCst), t0.apply(|v| *v)),
        (4, 3),
        "(captures dropped, runs)"
    );
}

static ZST_RUNS: AtomicUsize = AtomicUsize::new(0);

fn zst_closure() -> impl FnOnce(&mut u64) -> u64 + Send + 'static {
    |v: &mut u64| {
        ZST_RUNS.fetch_add(1, Ordering::SeqCst);
        *v += 10;
        *v
    }
}

/// HOLDS: a zero-sized closure (`size_of::<F>() == 0`: `new_apply` writes nothing, `into_job` reads nothing)
/// through `apply_async` from a plain thread, from a fiber on the trustee's worker (local shortcut) and from
/// one on the other worker; a fourth future is dropped unpolled. Expected: three runs, the value 30, the
/// results 10, 20, 30 in that order.
#[test]
fn zero_sized_closures_through_apply_async_run_once_on_every_path() {
    assert_eq!(size_of_val(&zst_closure()), 0);
    let t1: &'static Trust<u64> = Box::leak(Box::new(rt().trustee(1).entrust(0u64)));
    let a = within(10, move || block_on(t1.apply_async(zst_closure())));
    let b = on_worker(1, move || block_on(t1.apply_async(zst_closure())));
    let c = on_worker(0, move || block_on(t1.apply_async(zst_closure())));
    drop(t1.apply_async(zst_closure()));
    assert_eq!(
        (a, b, c, t1.apply(|v| *v), ZST_RUNS.load(Ordering::SeqCst)),
        (10, 20, 30, 30, 3)
    );
}

/// A 1 KiB result whose every word is `seed + index`.
fn big_result(seed: u64) -> [u64; 128] {
    std::array::from_fn(|i| seed + i as u64)
}

/// HOLDS: a result over 512 bytes travels inline in the node's `output` (remote) or through `apply`'s boxed
/// result (local shortcut). A `[u64; 128]` (1 KiB) from a plain thread, a fiber on the other worker and a
/// fiber on the trustee's own: every word intact. Then a future whose result is 1 KiB plus a drop counter,
/// dropped after its first poll (sent): the trustee drops the result exactly once.
#[test]
fn results_over_512_bytes_come_back_whole_and_unclaimed_ones_drop_once() {
    let t0: &'static Trust<u64> = Box::leak(Box::new(rt().trustee(0).entrust(5u64)));
    let a = within(10, move || block_on(t0.apply_async(|v| big_result(*v))));
    let b = on_worker(1, move || block_on(t0.apply_async(|v| big_result(*v + 1))));
    let c = on_worker(0, move || block_on(t0.apply_async(|v| big_result(*v + 2))));
    assert!(a == big_result(5) && b == big_result(6) && c == big_result(7));
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    within(10, move || {
        let mut fut = Box::pin(t0.apply_async(move |v| (big_result(*v), CountsDrops(d))));
        let waker = std::task::Waker::noop();
        let polled = fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker));
        assert!(
            polled.is_pending(),
            "a remote request is pending after its first poll"
        );
        drop(fut);
    });
    // A blocking round trip from this thread queues behind nothing of that future's: wait for the count.
    let start = Instant::now();
    while drops.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the unclaimed result's drops"
    );
}

/// Found a bug, fixed in the same session: a future dropped before its first poll drops its closure in
/// `Unsent::drop` (oneshot.rs): `ManuallyDrop::drop(job)` then `free`. When a capture's `Drop` panics, the panic
/// leaves `drop` between the two, and the node (the whole request allocation) is never freed. `Box<F>` of the same
/// closure frees its allocation on that unwind (the control below). Expected: the panic reaches the dropper
/// ("PanicsOnDrop", counted once) and no 8192-aligned allocation is left live, as with the box. Found before the
/// fix: the box frees its allocation, the unsent request leaked its node (1 live).
#[test]
fn an_unpolled_future_whose_capture_panics_on_drop_frees_its_request() {
    in_child!(
        "an_unpolled_future_whose_capture_panics_on_drop_frees_its_request",
        20
    );
    let t0 = rt().trustee(0).entrust(0u64);
    let panics = Arc::new(AtomicUsize::new(0));
    let closure = |p: &Arc<AtomicUsize>| {
        let (a, b) = (Align8K(1), PanicsOnDrop(p.clone()));
        move |v: &mut u64| {
            let (a, _b) = (&a, &b);
            *v += u64::from(a.0)
        }
    };
    // Drops `x`, whose drop panics: (the panic's message, captures dropped so far, live 8192-aligned blocks).
    fn dropped<X>(x: X, panics: &AtomicUsize) -> (String, usize, usize) {
        let message = panic_message(catch_unwind(AssertUnwindSafe(|| drop(x))).unwrap_err());
        (
            message,
            panics.load(Ordering::SeqCst),
            LIVE_8K.load(Ordering::SeqCst),
        )
    }
    // Control: a box of the same closure, dropped.
    let boxed = Box::new(closure(&panics));
    assert_eq!(
        LIVE_8K.load(Ordering::SeqCst),
        1,
        "the box is one 8192-aligned allocation"
    );
    assert_eq!(
        dropped(boxed, &panics),
        ("PanicsOnDrop".to_string(), 1, 0),
        "a Box<F> frees its allocation when F's drop panics"
    );
    let fut = t0.apply_async(closure(&panics));
    assert_eq!(
        LIVE_8K.load(Ordering::SeqCst),
        1,
        "the request is one 8192-aligned allocation"
    );
    assert_eq!(
        dropped(fut, &panics),
        ("PanicsOnDrop".to_string(), 2, 0),
        "(the panic, captures dropped, live request nodes) after dropping an unpolled future"
    );
    common::child_ok();
}

const KIB160: usize = 160 * 1024;

/// A future for a closure capturing 160 KiB, made on a plain thread with a large stack (the future itself is
/// small: README, "apply_async puts its closure in the request's allocation when the future is made").
fn future_of_160_kib(
    t: &'static Trust<u64>,
) -> trust_core::ApplyFuture<'static, u64, impl FnOnce(&mut u64) -> u64 + Send, u64> {
    std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(move || {
            let big = [1u8; KIB160];
            t.apply_async(move |_| big.iter().map(|&b| b as u64).sum::<u64>())
        })
        .unwrap()
        .join()
        .unwrap()
}

/// Found a bug, fixed in the same session: README: "`apply_async` puts its closure in the request's allocation
/// when the future is made, so the future is small"; api/future.rs:76-79: the local shortcut moves a large closure
/// "Out of the node into a box, not through this fiber's stack". A future for a closure capturing 160 KiB is made
/// on a plain thread with a large stack (the closure never touches a fiber's stack), and is 64 bytes or less. It
/// is then polled in a fiber (default 256 KiB stack) on the *other* worker: the request is only mailed, the
/// closure runs on the trustee's 8 MiB worker stack. Expected: 163,840 from that poll, and from a poll on the
/// trustee's own worker (local shortcut). Found before the fix: the remote poll aborted the process: "fiber on
/// thread 'trust-worker-1' has overflowed its 256 KiB stack", at the entry of `ApplyFuture::poll`
/// (api/future.rs:69, gdb): in a debug build `poll`'s frame reserves slots for the by-value moves of the
/// small-closure local path (`this.trust.apply(unsent.into_job().f)`, future.rs:84: the `Apply` and its `f`, about
/// 2 x 160 KiB) whichever branch runs, so every poll of such a future needs twice the closure's size of stack (120
/// KiB fits, 160 KiB does not), local or not. (Passes under AddressSanitizer, whose fake stack frames hold such
/// locals off the fiber's stack.) The local path is now out of `poll`'s frame (`apply_here`).
#[test]
fn polling_a_large_closures_future_needs_no_stack_for_the_closure() {
    in_child!(
        "polling_a_large_closures_future_needs_no_stack_for_the_closure",
        20
    );
    let t0: &'static Trust<u64> = Box::leak(Box::new(rt().trustee(0).entrust(0u64)));
    let fut = future_of_160_kib(t0);
    assert!(size_of_val(&fut) <= 64);
    let remote = on_worker(1, move || block_on(fut));
    let fut = future_of_160_kib(t0);
    let local = on_worker(0, move || block_on(fut));
    assert_eq!((remote, local), (KIB160 as u64, KIB160 as u64));
    common::child_ok();
}

/// HOLDS: the local shortcut of a closure over 512 bytes (`into_boxed_closure`, then `apply` of the box): a
/// closure that panics has its panic resumed in the poller with its payload, and its captures (a 1 KiB array
/// and a drop counter) are dropped exactly once; the value stays usable. Also a capture whose own `Drop`
/// panics, run remotely from a plain thread: the panic comes back from the future, dropped once. Expected:
/// ("boom", 1 drop), ("PanicsOnDrop", 1), and the value then 2.
#[test]
fn a_panicking_large_closure_on_the_local_shortcut_drops_its_captures_once() {
    let t0: &'static Trust<u64> = Box::leak(Box::new(rt().trustee(0).entrust(0u64)));
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    let local = on_worker(0, move || {
        let big = [1u8; 1024];
        let c = CountsDrops(d);
        let fut = t0.apply_async(move |v| {
            let _c = &c;
            *v += u64::from(big[1023]);
            if *v == 1 {
                panic!("boom");
            }
        });
        catch_unwind(AssertUnwindSafe(|| block_on(fut))).map_err(panic_message)
    });
    let panics = Arc::new(AtomicUsize::new(0));
    let p = panics.clone();
    let remote = within(10, move || {
        let c = PanicsOnDrop(p);
        let fut = t0.apply_async(move |v| {
            let _c = &c;
            *v += 1;
        });
        catch_unwind(AssertUnwindSafe(|| block_on(fut))).map_err(panic_message)
    });
    assert_eq!(
        (
            local,
            drops.load(Ordering::SeqCst),
            remote,
            panics.load(Ordering::SeqCst),
            t0.apply(|v| *v)
        ),
        (
            Err("boom".to_owned()),
            1,
            Err("PanicsOnDrop".to_owned()),
            1,
            2
        )
    );
}

// ---------------------------------------------------------------------------------------------------------
// Fiber::join publishes the thread's unsent apply_thens.
// ---------------------------------------------------------------------------------------------------------

/// HOLDS: README, "the last few of a burst go out at its next publish to any trustee, its next blocking call
/// (to any trustee) or `Fiber::join`". A plain thread issues 3 `apply_then`s (fewer than the 48 that publish
/// by themselves), joins a fiber that has already finished, then only waits on a channel. Expected: another
/// thread sees the 3 increments applied (within 5 s), and the issuer's `wait_pending` then runs 3
/// continuations.
#[test]
fn joining_a_finished_fiber_sends_the_threads_unsent_apply_thens() {
    let t = rt().trustee(1).entrust(0u64);
    let (t2, t3) = (t.clone(), t.clone());
    let (go, wait) = mpsc::channel::<()>();
    let issuer = std::thread::spawn(move || {
        let fiber = spawn(|| 7);
        while !fiber.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let ran = std::rc::Rc::new(std::cell::Cell::new(0));
        for _ in 0..3 {
            let r = ran.clone();
            t2.apply_then(|v| *v += 1, move |()| r.set(r.get() + 1));
        }
        assert_eq!(fiber.join().unwrap(), 7);
        wait.recv().unwrap();
        trust_core::wait_pending();
        ran.get()
    });
    let start = Instant::now();
    let mut seen = 0;
    while start.elapsed() < Duration::from_secs(5) {
        seen = t3.apply(|v| *v);
        if seen == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    go.send(()).unwrap();
    assert_eq!(
        (seen, issuer.join().unwrap()),
        (3, 3),
        "(applied before the issuer's next call, continuations)"
    );
}

/// HOLDS: `Fiber::join` now publishes before its loop, also for a finished fiber; called inside a continuation
/// on a plain thread (which runs outside the client's borrow), it must not meet the client borrowed. A
/// continuation joins one fiber that finished and one that sleeps 50 ms. Expected: both joins return (1, 2),
/// and the continuation runs once.
#[test]
fn fiber_join_inside_a_continuation_on_a_plain_thread() {
    let t = rt().trustee(0).entrust(0u64);
    let got = within(10, move || {
        let out = std::rc::Rc::new(RefCell::new(Vec::new()));
        let done = spawn(|| 1u32);
        while !done.is_finished() {
            std::thread::yield_now();
        }
        let slow = spawn(|| {
            trust_core::sleep(Duration::from_millis(50));
            2u32
        });
        let o = out.clone();
        t.apply_then(
            |v| *v += 1,
            move |()| {
                o.borrow_mut()
                    .push((done.join().unwrap(), slow.join().unwrap()))
            },
        );
        trust_core::wait_pending();
        out.take()
    });
    assert_eq!(got, vec![(1, 2)]);
}

// ---------------------------------------------------------------------------------------------------------
// lock: a blocking acquisition inside a `Debug` peek panics (key::Peek).
// ---------------------------------------------------------------------------------------------------------

thread_local! {
    static PARKED: RefCell<Option<ThreadKey>> = const { RefCell::new(None) };
}

/// Data whose `Debug` takes the key parked in this thread's thread-local and blocks on `other`.
struct LocksInDebug {
    other: Arc<Mutex<u32>>,
    shared: bool,
}

impl std::fmt::Debug for LocksInDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = PARKED.with(|p| p.borrow_mut().take());
        let Some(key) = key else {
            return f.write_str("no key");
        };
        // Put back whatever happens (the lock below panics).
        struct Back(Option<ThreadKey>);
        impl Drop for Back {
            fn drop(&mut self) {
                PARKED.with(|p| *p.borrow_mut() = self.0.take());
            }
        }
        let mut back = Back(Some(key));
        let n = *self.other.lock(back.0.as_mut().unwrap());
        drop(back);
        write!(f, "{n}{}", self.shared)
    }
}

const PEEK_PANIC: &str = "a blocking lock inside the `Debug` of a `Mutex`'s or `RwLock`'s data";

/// HOLDS: docs/lock.md, "a *blocking* lock inside the data's own `Debug` (through a key the program keeps
/// where that code can reach it, say a thread-local) panics, naming the problem". A `Mutex` and a `RwLock`
/// whose data's `Debug` blocks on another mutex through the parked key. Expected: both prints panic with the
/// message; afterwards nothing is left locked (the printed locks and the other mutex lock again, blocking, on
/// this thread), and the thread is no longer "peeking": a blocking lock outside `Debug` works, and a print of
/// data whose `Debug` does not lock prints it.
#[test]
fn a_blocking_lock_in_a_debug_peek_panics_and_leaves_nothing_held() {
    let got = within(10, || {
        PARKED.with(|p| *p.borrow_mut() = ThreadKey::get());
        let other = Arc::new(Mutex::new(4u32));
        let m = Mutex::new(LocksInDebug {
            other: other.clone(),
            shared: false,
        });
        let rw = RwLock::new(LocksInDebug {
            other: other.clone(),
            shared: true,
        });
        let a = catch_unwind(AssertUnwindSafe(|| format!("{m:?}"))).map_err(panic_message);
        let b = catch_unwind(AssertUnwindSafe(|| format!("{rw:?}"))).map_err(panic_message);
        let mut key = PARKED
            .with(|p| p.borrow_mut().take())
            .expect("the key was put back");
        // One statement each: a guard made with `&mut key` keeps the key until it drops.
        let m_shared = m.lock(&mut key).shared;
        let rw_shared = rw.read(&mut key).shared;
        let other_value = *other.lock(&mut key);
        let after = (
            m_shared,
            rw_shared,
            other_value,
            format!("{:?}", Mutex::new(9u8)),
        );
        let starts =
            |r: &Result<String, String>| r.as_ref().is_err_and(|e| e.starts_with(PEEK_PANIC));
        (starts(&a), starts(&b), after)
    });
    assert_eq!(
        got,
        (
            true,
            true,
            (false, true, 4, "Mutex { data: 9, .. }".to_owned())
        )
    );
}
