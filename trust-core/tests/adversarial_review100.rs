//! Review 100: hostile tests of the commits that moved every `unsafe` block out of `delegation/api/` into the
//! floors below (49b1d08..6e009e8): `trustee/handle.rs` (`Handle`, `OnTrustee`, `Local`, `Launched`, `Fresh`,
//! `Registration`), `trustee/latch_cell.rs` (the latch's value and lock state, handed over locked),
//! `protocol/copied.rs` (the inline argument buffer of `#[entrust]` stubs), `worker/run.rs` (`Worker::take`,
//! `adopt`, `adopt_fresh`) and `call.rs` (`Clone`/`Drop` of `Handle`). Each test's doc says what it attacks.
//!
//! Tests named `no_runtime_*` start no runtime and run under Miri
//! (`cargo +nightly miri test -p trust-core --no-default-features --test adversarial_review100 -- no_runtime_`).
//! Tests that shut the runtime down run in a child process of their own (`in_child!`).
//!
//! Everything the refactor moved held (the same tests pass on 97249e0, before it). One test found a bug older than
//! it: `registration_dropped_while_its_trustee_still_serves_at_shutdown` (a worker's unpublished registration,
//! dropped by the worker's closing client, dropped the value while the other trustee, closing too, still ran a
//! request on it: AddressSanitizer saw `Borrow::drop` write to the freed property). Fixed in `Outbox::drop`:
//! unpublished records wait, as in-flight ones did, until their trustee has closed.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

#[macro_use]
mod common;
use common::*;
use trust_core::__private::{CopiedSlice, CopiedStr};
use trust_core::{Latch, Trust, wait_pending};

/// A value whose drops are counted; `.1` is its payload.
#[derive(Debug)]
struct Counted(Arc<AtomicUsize>, u64);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counted(payload: u64) -> (Arc<AtomicUsize>, Counted) {
    let drops = Arc::new(AtomicUsize::new(0));
    (drops.clone(), Counted(drops, payload))
}

/// A value taken out of its property: still `payload`, not dropped by the runtime; dropped here, once.
fn moved_out_then_dropped_once(v: Counted, payload: u64, drops: &AtomicUsize) {
    assert_eq!((v.1, drops.load(Ordering::SeqCst)), (payload, 0));
    drop(v);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

/// Runs `f` in a fiber on worker `index`: launched on a latch of that trustee (a fiber there, not a delegated
/// closure), and joined.
fn on_worker<R: Send + 'static>(index: usize, f: impl FnOnce() -> R + Send + 'static) -> R {
    let here = rt().trustee(index).entrust(Latch::new(()));
    here.launch(move |_| f())
}

// ---------------------------------------------------------------------------------------------------------
// `LatchCell` through `Latch`, without a runtime (Miri).

/// `LatchCell`: a guard leaked with `mem::forget` leaves the cell `Held` with no guard. Attacks the cell's
/// invariant "a guard exists exactly while the state is `Held`": the latch must stay locked (no second guard,
/// so no second `&mut T`), a `lock` outside a fiber must refuse rather than hand out the value, and
/// `get_mut`/`into_inner` (exclusive access, no guard can be alive) must still give the value, dropped once.
#[test]
fn no_runtime_forgotten_latch_guard_keeps_it_locked_and_exclusive_access_still_works() {
    let (drops, value) = counted(5);
    let mut latch = Latch::new(value);
    {
        let mut guard = latch.lock();
        guard.1 += 1;
        std::mem::forget(guard);
    }
    assert!(
        latch.try_lock().is_none(),
        "a second guard while the leaked one 'holds' it"
    );
    assert!(format!("{latch:?}").contains("locked: true"), "{latch:?}");
    let refused = catch_unwind(AssertUnwindSafe(|| {
        latch.lock();
    }))
    .map_err(panic_message)
    .expect_err("a held latch outside a fiber refuses");
    assert!(refused.contains("outside a launched fiber"), "{refused}");
    latch.get_mut().1 += 10;
    assert_eq!(latch.get_mut().1, 16);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    let value = latch.into_inner();
    assert_eq!(value.1, 16);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "into_inner moves the value out"
    );
    drop(value);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

/// `CellGuard`'s drop during an unwind: a panic while the guard is held must unlock the latch (state `Free`,
/// not `HandedOver`: no waiter on a plain thread) and keep the writes made before the panic.
#[test]
fn no_runtime_panic_while_latch_guard_held_unlocks_and_keeps_the_writes() {
    let latch = Latch::new(vec![1u32]);
    let message = catch_unwind(AssertUnwindSafe(|| {
        let mut guard = latch.lock();
        guard.push(2);
        assert!(latch.try_lock().is_none());
        panic!("inside the guard");
    }))
    .map_err(panic_message)
    .expect_err("panicked");
    assert_eq!(message, "inside the guard");
    assert!(format!("{latch:?}").contains("locked: false"), "{latch:?}");
    let guard = latch.try_lock().expect("unlocked by the unwind");
    assert_eq!(*guard, vec![1, 2]);
    drop(guard);
    // Lock, unlock, lock again: the cell goes back to `Free` each time.
    for round in 3..6 {
        latch.lock().push(round);
    }
    assert_eq!(latch.into_inner(), vec![1, 2, 3, 4, 5]);
}

// ---------------------------------------------------------------------------------------------------------
// `CopiedSlice` / `CopiedStr` (moved to `protocol/copied.rs`), without a runtime (Miri).

/// The inline buffer at exactly its size: 64 bytes of `u64`s, of 8-aligned 64-byte structs, a `&str` of 64
/// bytes of two-byte characters travel inline; one byte or element more is boxed; an element aligned over 8
/// is always boxed. Contents compared exactly.
#[test]
fn no_runtime_copied_slices_at_exactly_the_inline_size() {
    let eight: Vec<u64> = (1..=8).collect();
    let c = CopiedSlice::new(&eight);
    assert!(c.is_inline());
    assert_eq!(&*c, &eight[..]);
    let nine: Vec<u64> = (1..=9).collect();
    let c = CopiedSlice::new(&nine);
    assert!(!c.is_inline());
    assert_eq!(&*c, &nine[..]);

    #[derive(Clone, Debug, PartialEq)]
    #[repr(C, align(8))]
    struct Block([u8; 64]);
    let one = [Block([7; 64])];
    let c = CopiedSlice::new(&one);
    assert!(c.is_inline(), "one 64-byte, 8-aligned element fits exactly");
    assert_eq!(&*c, &one[..]);
    let two = [Block([1; 64]), Block([2; 64])];
    let c = CopiedSlice::new(&two);
    assert!(!c.is_inline());
    assert_eq!(&*c, &two[..]);

    #[derive(Clone, Debug, PartialEq)]
    #[repr(C, align(16))]
    struct Wide(u8);
    let c = CopiedSlice::new(&[Wide(3)]);
    assert!(!c.is_inline(), "16-byte alignment exceeds the buffer's 8");
    assert_eq!(&*c, &[Wide(3)]);

    let exact = "é".repeat(32);
    assert_eq!(exact.len(), 64);
    let s = CopiedStr::new(&exact);
    assert!(s.is_inline());
    assert_eq!(&*s, exact);
    let over = format!("{exact}x");
    let s = CopiedStr::new(&over);
    assert!(!s.is_inline());
    assert_eq!(&*s, over);
    let empty = CopiedSlice::<String>::new(&[]);
    assert!(empty.is_inline());
    assert!(empty.is_empty());
}

static ZST_CLONES: AtomicUsize = AtomicUsize::new(0);
static ZST_DROPS: AtomicUsize = AtomicUsize::new(0);
static ZST_PANIC_AT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// A zero-sized element whose clones and drops are counted; its clone panics at the `ZST_PANIC_AT`th clone.
struct Unit;

impl Clone for Unit {
    fn clone(&self) -> Self {
        let n = ZST_CLONES.fetch_add(1, Ordering::SeqCst);
        if n == ZST_PANIC_AT.load(Ordering::SeqCst) {
            ZST_CLONES.fetch_sub(1, Ordering::SeqCst);
            panic!("clone {n}");
        }
        Unit
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        ZST_DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

static HEAP_DROPS: AtomicUsize = AtomicUsize::new(0);

/// An 8-byte element whose clone panics on the value 5, counting drops.
struct Eight(u64);

impl Clone for Eight {
    fn clone(&self) -> Self {
        assert_ne!(self.0, 5, "clone of 5");
        Eight(self.0)
    }
}

impl Drop for Eight {
    fn drop(&mut self) {
        HEAP_DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

/// Zero-sized elements (a thousand of them "fit" in 0 bytes, inline) are cloned and dropped exactly once each;
/// a clone that panics mid-copy drops exactly the clones made so far (at the first element: none), inline and
/// boxed alike.
#[test]
fn no_runtime_copied_slices_of_zero_sized_and_panicking_elements_drop_exactly() {
    let n = if cfg!(miri) { 100 } else { 1000 };
    let src: Vec<Unit> = (0..n).map(|_| Unit).collect();
    let copied = CopiedSlice::new(&src);
    assert!(copied.is_inline());
    assert_eq!(copied.len(), n);
    assert_eq!(ZST_CLONES.load(Ordering::SeqCst), n);
    assert_eq!(ZST_DROPS.load(Ordering::SeqCst), 0);
    let moved = copied; // bitwise, as into a request
    drop(moved);
    assert_eq!(ZST_DROPS.load(Ordering::SeqCst), n);

    for at in [0, n / 2, n - 1] {
        ZST_CLONES.store(0, Ordering::SeqCst);
        ZST_DROPS.store(0, Ordering::SeqCst);
        ZST_PANIC_AT.store(at, Ordering::SeqCst);
        let message = catch_unwind(AssertUnwindSafe(|| CopiedSlice::new(&src)))
            .map(drop)
            .map_err(panic_message)
            .expect_err("the clone panicked");
        assert_eq!(message, format!("clone {at}"));
        assert_eq!(
            ZST_CLONES.load(Ordering::SeqCst),
            at,
            "clones made before the panic"
        );
        assert_eq!(ZST_DROPS.load(Ordering::SeqCst), at, "each dropped once");
    }
    ZST_PANIC_AT.store(usize::MAX, Ordering::SeqCst);
    ZST_DROPS.store(0, Ordering::SeqCst);
    drop(src);
    assert_eq!(ZST_DROPS.load(Ordering::SeqCst), n);

    // Inline (8 elements of 8 bytes) and boxed (9): the clone of element 5 panics, 5 clones made.
    for len in [8u64, 9] {
        let src: Vec<Eight> = (0..len).map(Eight).collect();
        HEAP_DROPS.store(0, Ordering::SeqCst);
        let message = catch_unwind(AssertUnwindSafe(|| CopiedSlice::new(&src)))
            .map(drop)
            .map_err(panic_message)
            .expect_err("the clone of 5 panicked");
        assert!(message.contains("clone of 5"), "{message}");
        assert_eq!(
            HEAP_DROPS.load(Ordering::SeqCst),
            5,
            "len {len}: the 5 clones made, once each"
        );
        drop(src);
        assert_eq!(HEAP_DROPS.load(Ordering::SeqCst), 5 + len as usize);
    }
}

// ---------------------------------------------------------------------------------------------------------
// `Trust::try_unwrap` / `into_inner`: the handle now travels in the record to the trustee (`Worker::take`).

/// The take's handle moved into the record: from a fiber of the other worker (the record path) and from a
/// fiber of the property's own worker (inline, `begin_take` there), `try_unwrap` of a shared value gives the
/// handle back, still counted and usable, and of the last handle gives the value, moved out, never dropped by
/// the runtime; `into_inner` with a clone alive gives `None` and leaves the clone's value intact.
#[test]
fn take_through_the_record_and_inline_counts_exactly() {
    for (owner, from) in [(1, 0), (1, 1), (0, 1), (0, 0)] {
        let (drops, value) = counted(41);
        let t = rt().trustee(owner).entrust(value);
        let other = t.clone();
        let back = on_worker(from, move || t.try_unwrap().map(|v| v.1));
        let t = back.expect_err("a clone is alive: the handle comes back");
        assert_eq!(t.apply(|v| v.1), 41, "the handle given back is usable");
        drop(other);
        let v = on_worker(from, move || t.try_unwrap().map_err(|_| "still shared"))
            .expect("the last handle takes the value");
        assert_eq!(v.1, 41);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            0,
            "owner {owner} from {from}: moved out, not dropped"
        );
        drop(v);
        assert_eq!(drops.load(Ordering::SeqCst), 1);

        let (drops, value) = counted(7);
        let t = rt().trustee(owner).entrust(value);
        let keep = t.clone();
        assert!(on_worker(from, move || t.into_inner().is_none()));
        assert_eq!(keep.apply(|v| v.1), 7);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        let v = keep
            .into_inner()
            .expect("the last handle, from a plain thread");
        moved_out_then_dropped_once(v, 7, &drops);
    }
}

/// A take refused before its record is sent (inside a delegated closure; on a fiber launched on that very
/// latch): the handle is given up as by a drop, exactly once — the value drops once, when the other handles
/// go, and not before.
#[test]
fn take_refused_before_sending_gives_the_handle_up_once() {
    for owner in [0, 1] {
        let (drops, value) = counted(3);
        let t = rt().trustee(owner).entrust(value);
        let keep = t.clone();
        let on = rt().trustee(1 - owner).entrust(());
        let message = on.apply(move |_| {
            catch_unwind(AssertUnwindSafe(move || t.into_inner().map(|v| v.1)))
                .map_err(panic_message)
                .expect_err("refused inside a delegated closure")
        });
        assert!(message.contains("inside a delegated closure"), "{message}");
        // The given-up count is on its way: the value lives on through `keep`.
        assert_eq!(keep.apply(|v| v.1), 3);
        let v = keep
            .into_inner()
            .expect("the refused handle's count was given up");
        moved_out_then_dropped_once(v, 3, &drops);
    }

    let (drops, value) = counted(9);
    let latch = rt().trustee(1).entrust(Latch::new(value));
    let own = latch.clone();
    let message = latch.launch(move |_| {
        catch_unwind(AssertUnwindSafe(move || own.try_unwrap().is_ok()))
            .map_err(panic_message)
            .expect_err("refused on its own latch")
    });
    assert!(message.contains("whose `launch` runs"), "{message}");
    let v = latch
        .into_inner()
        .expect("the refused handle was given up")
        .into_inner();
    moved_out_then_dropped_once(v, 9, &drops);
}

/// `Worker::adopt_fresh` and `Handle::clone_here`: a value entrusted by a fiber to its own worker, cloned
/// there (counted inline), the original dropped there, then taken by the clone inline: one value, moved out,
/// dropped once by the test.
#[test]
fn local_entrust_clone_and_take_count_exactly() {
    for w in [0, 1] {
        let (drops, value) = counted(11);
        let got = on_worker(w, move || {
            let t = trust_core::local_trustee().entrust(value);
            let c = t.clone();
            drop(t);
            let c2 = c.clone();
            let refused = c2.try_unwrap().map(|_| ()).is_err();
            (refused, c.into_inner().map(|v| v.1))
        });
        assert_eq!(got, (true, Some(11)));
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "moved out in the fiber, dropped with its result"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// `Local` and `Launched`: the property seen on its trustee must outlive every use.

/// `Local::launch`'s share (`Launched`) outlives the handle that made it: a `launch_then` whose handle is
/// dropped right after issuing (from a plain thread: the `Launch` record; from a fiber of the trustee: started
/// at once from the `Local`) still reads the whole value after a sleep, and the value is dropped once, only
/// after the fiber ends.
#[test]
fn launched_fiber_outlives_every_handle_and_the_value_drops_after_it() {
    static DROPPED: AtomicBool = AtomicBool::new(false);
    struct Probe(Vec<u64>, Arc<AtomicUsize>);
    impl Drop for Probe {
        fn drop(&mut self) {
            DROPPED.store(true, Ordering::SeqCst);
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }
    let body = |latch: &Latch<Probe>| {
        trust_core::sleep(Duration::from_millis(30));
        let sum: u64 = latch.lock().0.iter().sum();
        (sum, DROPPED.load(Ordering::SeqCst))
    };

    // From a plain thread.
    DROPPED.store(false, Ordering::SeqCst);
    let drops = Arc::new(AtomicUsize::new(0));
    let l = rt()
        .trustee(1)
        .entrust(Latch::new(Probe(vec![1, 2, 3], drops.clone())));
    let (tx, rx) = mpsc::channel();
    l.launch_then(body, move |r| tx.send(r).unwrap());
    drop(l);
    wait_pending();
    assert_eq!(
        rx.recv().unwrap(),
        (6, false),
        "the fiber saw the whole value, not yet dropped"
    );
    eventually("the value dropped after its last fiber", || {
        drops.load(Ordering::SeqCst) == 1
    });

    // From a fiber of the property's own trustee (the local start).
    DROPPED.store(false, Ordering::SeqCst);
    let drops = Arc::new(AtomicUsize::new(0));
    let l = rt()
        .trustee(1)
        .entrust(Latch::new(Probe(vec![4, 5, 6], drops.clone())));
    let (tx, rx) = mpsc::channel();
    on_worker(1, move || {
        l.launch_then(body, move |r| tx.send(r).unwrap());
        drop(l);
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        (15, false)
    );
    eventually("the value dropped after its last fiber", || {
        drops.load(Ordering::SeqCst) == 1
    });
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

/// `Local` held across a suspension (`wait_for_launched`): a fiber of the trustee applies to a latch that a
/// launched fiber holds for 50 ms, while every other handle is dropped meanwhile; the apply sees the launched
/// fiber's write, and the value drops once, after the apply's handle goes.
#[test]
fn apply_waiting_for_launched_fibers_keeps_its_property_while_others_go() {
    let (drops, value) = counted(0);
    let l = rt().trustee(1).entrust(Latch::new(value));
    let (started_tx, started) = mpsc::channel();
    l.launch_then(
        move |latch| {
            let mut g = latch.lock();
            started_tx.send(()).unwrap();
            trust_core::sleep(Duration::from_millis(50));
            g.1 = 77;
        },
        |()| (),
    );
    publish(1);
    started.recv_timeout(Duration::from_secs(10)).unwrap();
    let mine = l.clone();
    let (applied_tx, applied) = mpsc::channel();
    let fiber = std::thread::spawn(move || {
        on_worker(1, move || {
            let seen = mine.apply(|latch| latch.get_mut().1);
            applied_tx.send(seen).unwrap();
            drop(mine);
        })
    });
    std::thread::sleep(Duration::from_millis(10));
    drop(l);
    assert_eq!(applied.recv_timeout(Duration::from_secs(10)).unwrap(), 77);
    fiber.join().unwrap();
    eventually("dropped once, after the apply's handle", || {
        drops.load(Ordering::SeqCst) == 1
    });
}

// ---------------------------------------------------------------------------------------------------------
// `LatchCell` on the runtime: hand-over, a forgotten guard, a panic while held.

/// A guard forgotten by a launched fiber: the cell stays `Held` with no guard, every later `try_lock` in a
/// fiber fails, a plain `apply` (`&mut Latch`, no fiber launched any more) reaches the value through
/// `get_mut`, and `into_inner` of the handle, then of the latch, gives it back, dropped once. A panic while a
/// fiber holds the guard unlocks it.
#[test]
fn forgotten_and_panicked_guards_in_launched_fibers() {
    let (drops, value) = counted(1);
    let l = rt().trustee(0).entrust(Latch::new(value));
    l.launch(|latch| {
        let mut g = latch.lock();
        g.1 += 1;
        std::mem::forget(g);
    });
    assert!(l.launch(|latch| latch.try_lock().is_none()));
    assert_eq!(
        l.apply(|latch| {
            latch.get_mut().1 += 1;
            latch.get_mut().1
        }),
        3
    );
    let v = l.into_inner().expect("the last handle").into_inner();
    moved_out_then_dropped_once(v, 3, &drops);

    let l = rt().trustee(1).entrust(Latch::new(vec![0u8]));
    let message = catch_unwind(AssertUnwindSafe(|| {
        l.launch(|latch| {
            latch.lock().push(1);
            let _g = latch.lock();
            panic!("held");
        })
    }))
    .map_err(panic_message)
    .expect_err("the fiber's panic resumes in launch");
    assert_eq!(message, "held");
    assert_eq!(
        l.launch(|latch| latch.try_lock().map(|g| (*g).clone())),
        Some(vec![0, 1])
    );
}

/// The hand-over (`CellGuard::hand_over_on_drop`, `LatchCell::take_handed`): three fibers launched with
/// `launch_then` queue on a latch a fourth holds; each receives it still locked, in arrival order, and an
/// outside fiber that keeps trying `try_lock` meanwhile never gets it before all four are done.
#[test]
fn latch_handed_over_in_order_while_locked() {
    let l = rt().trustee(1).entrust(Latch::new(Vec::<u32>::new()));
    let (held_tx, held) = mpsc::channel();
    let go = Arc::new(AtomicBool::new(false));
    let release = go.clone();
    l.launch_then(
        move |latch| {
            let mut g = latch.lock();
            held_tx.send(()).unwrap();
            g.push(0);
            while !release.load(Ordering::SeqCst) {
                trust_core::sleep(Duration::from_millis(1));
            }
        },
        |()| (),
    );
    publish(1);
    held.recv_timeout(Duration::from_secs(10)).unwrap();
    for i in 1..=3u32 {
        l.launch_then(
            move |latch| {
                let mut g = latch.lock();
                g.push(i);
                trust_core::yield_now();
            },
            |()| (),
        );
        publish(1);
        std::thread::sleep(Duration::from_millis(5));
    }
    let (seen_tx, seen) = mpsc::channel();
    l.launch_then(
        |latch| loop {
            match latch.try_lock() {
                Some(g) => return (*g).clone(),
                None => trust_core::yield_now(),
            }
        },
        move |v| seen_tx.send(v).unwrap(),
    );
    publish(1);
    std::thread::sleep(Duration::from_millis(5));
    go.store(true, Ordering::SeqCst);
    wait_pending();
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(10)).unwrap(),
        vec![0, 1, 2, 3],
        "the outside fiber got the latch only after every waiter, each in turn"
    );
}

/// Publishes this thread's requests to trustee `index` (a blocking call behind them) and waits for it.
fn publish(index: usize) {
    rt().trustee(index).entrust(()).apply(|_| ());
}

// ---------------------------------------------------------------------------------------------------------
// Around `Runtime::shutdown` (child processes).

thread_local! {
    static KEEPER: RefCell<Option<Keeper>> = const { RefCell::new(None) };
}

static KEEPER_SAW: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Held in a worker thread's thread-local: its destructor runs as that thread exits, after the shutdown.
struct Keeper(Trust<Counted>);

impl Drop for Keeper {
    fn drop(&mut self) {
        let outcome = |r: std::thread::Result<u64>| match r {
            Ok(v) => format!("ran {v}"),
            Err(p) => panic_message(p),
        };
        let mut saw = Vec::new();
        saw.push(outcome(catch_unwind(AssertUnwindSafe(|| {
            self.0.apply(|v| v.1)
        }))));
        let clone = self.0.clone();
        saw.push(outcome(catch_unwind(AssertUnwindSafe(move || {
            clone.into_inner().map_or(0, |v| v.1)
        }))));
        KEEPER_SAW.lock().unwrap().extend(saw);
    }
}

/// `Worker::on_trustee`'s argument ("a `&Worker` is had only on its own thread, while it runs"): a worker
/// thread's thread-local destructor runs after its worker has closed and freed its properties. There
/// `context::worker()` must be `None` (no `OnTrustee`, no `Local` to a freed property): an `apply` and an
/// `into_inner` on a handle of that very trustee panic with the shutdown message, the handle's clone and drop
/// do nothing, and the value was dropped exactly once, by the shutdown.
#[test]
fn thread_local_destructor_of_a_worker_after_shutdown_gets_no_local_property() {
    in_child!(
        "thread_local_destructor_of_a_worker_after_shutdown_gets_no_local_property",
        20
    );
    let (drops, value) = counted(5);
    let t = rt().trustee(1).entrust(value);
    let keep = t.clone();
    on_worker(1, move || {
        KEEPER.with(|k| *k.borrow_mut() = Some(Keeper(keep)))
    });
    assert_eq!(t.apply(|v| v.1), 5);
    rt().shutdown();
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "dropped by the shutdown, once"
    );
    let saw = KEEPER_SAW.lock().unwrap().clone();
    assert_eq!(saw.len(), 2, "{saw:?}");
    assert!(saw.iter().all(|s| s.contains("shut down")), "{saw:?}");
    drop(t);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    child_ok();
}

/// The take's handle in a record around a shutdown: a take sent while its trustee is busy is served by the
/// closing worker (`Worker::take`, its taker then dropped unrun): the caller gets the shutdown panic and the
/// value is dropped once, by the shutdown; an `entrust` whose registration is in flight likewise; after the
/// shutdown, `into_inner`, `clone` and drops of handles do nothing to the values, and `entrust` drops its value
/// once as it refuses.
#[test]
fn takes_and_registrations_in_flight_at_shutdown_drop_each_value_once() {
    in_child!(
        "takes_and_registrations_in_flight_at_shutdown_drop_each_value_once",
        20
    );
    let (taken_drops, value) = counted(1);
    let t = rt().trustee(1).entrust(value);
    let _ = t.apply(|v| v.1);
    let stalled = stall(1, 300);
    let taker = std::thread::spawn(move || {
        catch_unwind(AssertUnwindSafe(move || t.into_inner().map(|v| v.1))).map_err(panic_message)
    });
    let (entrusted_drops, value) = counted(2);
    let entrusted = rt().trustee(1).entrust(value);
    std::thread::sleep(Duration::from_millis(50));
    let shutdown = std::thread::spawn(|| rt().shutdown());
    stalled.join().unwrap();
    shutdown.join().unwrap();
    let took = taker.join().unwrap();
    assert!(
        took.as_ref().is_err_and(|m| m.contains("shut down")),
        "{took:?}"
    );
    assert_eq!(
        taken_drops.load(Ordering::SeqCst),
        1,
        "the taken value, dropped once by the shutdown"
    );
    assert_eq!(
        entrusted_drops.load(Ordering::SeqCst),
        1,
        "the value in flight, dropped once"
    );

    let again = entrusted.clone();
    let late =
        catch_unwind(AssertUnwindSafe(move || again.into_inner().is_some())).map_err(panic_message);
    assert!(
        late.as_ref().is_err_and(|m| m.contains("shut down")),
        "{late:?}"
    );
    drop(entrusted);
    assert_eq!(entrusted_drops.load(Ordering::SeqCst), 1);
    let (refused_drops, value) = counted(3);
    let refused = catch_unwind(AssertUnwindSafe(move || rt().trustee(0).entrust(value))).map(drop);
    assert!(refused.is_err());
    assert_eq!(
        refused_drops.load(Ordering::SeqCst),
        1,
        "refused and dropped once"
    );
    child_ok();
}

static RACE_DROPPED: AtomicBool = AtomicBool::new(false);
static RACE_DROPS: AtomicUsize = AtomicUsize::new(0);
static RACE_SAW: Mutex<Vec<(&'static str, bool)>> = Mutex::new(Vec::new());

/// The value whose registration the race below drops.
struct RaceProbe;

impl Drop for RaceProbe {
    fn drop(&mut self) {
        RACE_DROPPED.store(true, Ordering::SeqCst);
        RACE_DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

/// `Registration::drop` while its trustee is closing (not running, not yet closed): a fiber of worker 0
/// entrusts a value to trustee 1 while worker 0's channel to trustee 1 has both lanes in flight (trustee 1
/// stalled), so the registration waits in worker 0's batch; a clone of the handle goes to a plain thread, whose
/// two requests on the value wait in its own channel. Then the runtime shuts down. Trustee 1's close serves what
/// was sent: worker 0's two batches and the thread's two requests, one of each per turn. Worker 0, closing too,
/// drops its unpublished batch as soon as its lanes are answered, the registration with it, which (the trustee
/// no longer running) drops the value and frees the property on worker 0's thread — while trustee 1 may still
/// run the thread's second request on it. A closure must never hold `&mut T` to a value that is dropped
/// meanwhile; the value must be dropped once, after every closure on it.
///
/// Measured before the fix (also on 97249e0, before the refactor under review; 3 runs of 3): the second
/// closure saw the value dropped (`("second, on exit", true)`), and under AddressSanitizer a heap-use-after-free:
/// `Borrow::drop` (`in_use.set(false)`) on trustee 1's thread in `Worker::close` -> `serve`, the property freed by
/// worker 0's thread in `Client::drop` -> `Batch::drop` -> `drop_unregistered`.
#[test]
fn registration_dropped_while_its_trustee_still_serves_at_shutdown() {
    in_child!(
        "registration_dropped_while_its_trustee_still_serves_at_shutdown",
        20
    );
    let p1 = rt().trustee(1).entrust(());
    p1.apply(|_| ());
    let stalled = stall(1, 700);
    let (tx, rx) = mpsc::channel::<Trust<RaceProbe>>();
    let here0 = rt().trustee(0).entrust(Latch::new(()));
    here0.launch_then(
        move |_| {
            // Two batches in flight to the stalled trustee: worker 0's loop publishes one per flush.
            p1.apply_then(|_| (), |_| ());
            trust_core::sleep(Duration::from_millis(20));
            p1.apply_then(|_| (), |_| ());
            trust_core::sleep(Duration::from_millis(20));
            // Both lanes busy: the registration (and the clone's count) stay in the batch being built.
            let t = rt().trustee(1).entrust(RaceProbe);
            tx.send(t.clone()).unwrap();
            drop(t);
        },
        |()| (),
    );
    publish(0);
    let t = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let client = std::thread::spawn(move || {
        t.apply_then(
            |_| {
                let before = RACE_DROPPED.load(Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(150));
                let after = RACE_DROPPED.load(Ordering::SeqCst);
                RACE_SAW
                    .lock()
                    .unwrap()
                    .extend([("first, on entry", before), ("first, on exit", after)]);
            },
            |()| (),
        );
        let second = catch_unwind(AssertUnwindSafe(|| {
            t.apply(|_| {
                let before = RACE_DROPPED.load(Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(150));
                let after = RACE_DROPPED.load(Ordering::SeqCst);
                RACE_SAW
                    .lock()
                    .unwrap()
                    .extend([("second, on entry", before), ("second, on exit", after)]);
            })
        }));
        (second.is_ok(), t)
    });
    std::thread::sleep(Duration::from_millis(100));
    let shutdown = std::thread::spawn(|| rt().shutdown());
    stalled.join().unwrap();
    shutdown.join().unwrap();
    let (second_ran, t) = client.join().unwrap();
    drop(t);
    let saw = RACE_SAW.lock().unwrap().clone();
    eprintln!("second request ran: {second_ran}; observations: {saw:?}");
    for (when, dropped) in &saw {
        assert!(
            !dropped,
            "the value was dropped while a closure held `&mut` to it ({when}): {saw:?}"
        );
    }
    assert_eq!(RACE_DROPS.load(Ordering::SeqCst), 1, "dropped once");
    child_ok();
}

/// In a process forked after the runtime started, the trustees are closed: a take moves its handle into a
/// record that nothing will run, so it must panic naming `fork`, and the handle dropped with the record (and
/// clones made and dropped there) must change nothing — the value is the parent's. The parent's value is then
/// untouched: still 8, taken by its one handle, dropped once.
#[test]
fn take_in_a_forked_child_panics_and_drops_nothing() {
    in_child!("take_in_a_forked_child_panics_and_drops_nothing", 20);
    let (drops, value) = counted(8);
    let t = rt().trustee(1).entrust(value);
    assert_eq!(t.apply(|v| v.1), 8);
    let (code, _) = forked(10, || {
        let clone = t.clone();
        let unwrap = names_fork(catch_unwind(AssertUnwindSafe(move || {
            clone.try_unwrap().is_ok()
        })));
        let clone = t.clone();
        let inner = names_fork(catch_unwind(AssertUnwindSafe(move || {
            clone.into_inner().is_some()
        })));
        let untouched = drops.load(Ordering::SeqCst) == 0;
        if unwrap && inner && untouched { 0 } else { 1 }
    });
    assert_eq!(
        code,
        Some(0),
        "the child's takes panicked naming fork and dropped nothing"
    );
    assert_eq!(t.apply(|v| v.1), 8);
    let v = t.into_inner().expect("the parent's one handle");
    moved_out_then_dropped_once(v, 8, &drops);
    child_ok();
}
