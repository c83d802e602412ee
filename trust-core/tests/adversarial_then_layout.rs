//! Hostile layouts and reentrancy for `apply_then`'s client side (`client/then.rs`, `client/outbox.rs`,
//! `protocol/slot.rs`): results copied out of the response slot as u64 words and read back typed (over-aligned,
//! zero-sized, larger than the slot's inline limit, interleaved with a blocking caller's result), continuations
//! stored inline or boxed (over-aligned, exactly at the inline limit, zero-sized), destructors that panic
//! (results, captures, a thread leaving with continuations unrun), and continuations that wait, chain, block,
//! drop the last handle or panic while their batch is half run. Exact values, drops counted once.
//!
//! Plain threads only (no fibers, no `may`), so it also runs under Miri:
//! `MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-ignore-leaks" cargo +nightly miri test -p trust-core
//! --no-default-features --test adversarial_then_layout`. The tests that need a launched fiber or a child
//! process are `cfg(not(miri))`.

use std::cell::{Cell, RefCell};
use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;

mod common;
use common::{CountsDrops, PanicsOnDrop, panic_message};
use trust_core::{Runtime, Trust, wait_pending};

/// This process's runtime: one worker under Miri (each worker is a thread Miri interprets), two natively.
fn rt() -> &'static Runtime {
    static RT: OnceLock<&'static Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::builder()
            .workers(if cfg!(miri) { 1 } else { 2 })
            .build()
            .expect("first runtime of this process")
    })
}

/// Iterations: small under Miri.
const ROUNDS: u64 = if cfg!(miri) { 2 } else { 50 };

fn load(n: &AtomicUsize) -> usize {
    n.load(Ordering::SeqCst)
}

/// Waits for the trustee to drop a value whose last handle is gone (asynchronous: after the round trips that
/// follow the release).
fn wait_for_drops(drops: &AtomicUsize, expected: usize) {
    let probe = rt().trustee(0).entrust(());
    // Many more natively: a loaded machine may need them (Miri's clock is virtual, driven by instructions).
    let rounds = if cfg!(miri) { 100 } else { 100_000 };
    for _ in 0..rounds {
        if load(drops) >= expected {
            break;
        }
        probe.apply(|_| thread::yield_now());
    }
    assert_eq!(load(drops), expected);
}

#[repr(align(16))]
#[derive(Debug, Clone, Copy, PartialEq)]
struct A16(u64, u8);

#[repr(align(64))]
#[derive(Debug, Clone, Copy, PartialEq)]
struct A64([u64; 3]);

#[repr(align(64))]
#[derive(Debug, Clone, Copy, PartialEq)]
struct ZstA64;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Zst;

/// Checks the alignment of a value the continuation received (a misaligned read would already be UB under
/// Miri; natively this catches a value built at a wrong address and moved).
fn aligned<R>(r: &R) -> bool {
    (std::ptr::from_ref(r) as usize).is_multiple_of(align_of::<R>())
}

/// Issues `f` with a continuation that checks its result against `want` and logs `tag`.
fn expect_then<R: Send + PartialEq + Debug + 'static>(
    t: &Trust<u64>,
    log: &Rc<RefCell<Vec<u32>>>,
    tag: u32,
    f: impl FnOnce(&mut u64) -> R + Send + 'static,
    want: R,
) {
    let log = log.clone();
    t.apply_then(
        move |c| {
            *c += 1;
            f(c)
        },
        move |r| {
            assert!(aligned(&r), "result of {tag} misaligned");
            assert_eq!(r, want, "result of {tag}");
            log.borrow_mut().push(tag);
        },
    );
}

/// One batch mixing results of every layout: 1-byte, over-aligned (boxed by `result_bytes`), zero-sized (of
/// alignment 1 and 64), 256 bytes (the inline limit), 257+ bytes and heap-owning ones, so each result's offset
/// in the copied words depends on every earlier one's size.
#[test]
fn results_of_every_layout_come_back_in_one_batch() {
    let t = rt().trustee(0).entrust(0u64);
    for round in 0..ROUNDS {
        let log = Rc::new(RefCell::new(Vec::new()));
        let r = round;
        expect_then(&t, &log, 0, move |_| r as u8, round as u8);
        expect_then(&t, &log, 1, move |_| A16(r, 7), A16(round, 7));
        expect_then(&t, &log, 2, move |_| r * 3, round * 3);
        expect_then(
            &t,
            &log,
            3,
            move |_| A64([r, r + 1, r + 2]),
            A64([round, round + 1, round + 2]),
        );
        expect_then(
            &t,
            &log,
            4,
            move |_| u128::from(r) << 70,
            u128::from(round) << 70,
        );
        expect_then(&t, &log, 5, |_| Zst, Zst);
        expect_then(&t, &log, 6, |_| ZstA64, ZstA64);
        expect_then(&t, &log, 7, move |_| [r as u8; 3], [round as u8; 3]);
        // `Outcome<[u64; 31]>` is exactly 256 bytes (inline); `[u64; 32]` is not (boxed).
        expect_then(&t, &log, 8, move |_| [r; 31], [round; 31]);
        expect_then(&t, &log, 9, move |_| [r + 1; 32], [round + 1; 32]);
        expect_then(&t, &log, 10, move |_| [r as u8; 4096], [round as u8; 4096]);
        expect_then(&t, &log, 11, move |_| format!("s{r}"), format!("s{round}"));
        expect_then(
            &t,
            &log,
            12,
            move |_| (r as u8, A16(1, 2), r as u16),
            (round as u8, A16(1, 2), round as u16),
        );
        expect_then(&t, &log, 13, |c| *c, 14 * round + 14);
        wait_pending();
        assert_eq!(*log.borrow(), (0..14).collect::<Vec<_>>());
    }
    assert_eq!(t.apply(|c| *c), 14 * ROUNDS);
}

/// Blocking callers read their result straight from the slot (`call_alone`) or through `Outbox::poll`, which
/// splits the copied words around them when continuations of the same batch come first.
#[test]
fn blocking_results_of_every_layout_beside_continuations() {
    let t = rt().trustee(0).entrust(0u64);
    let log = Rc::new(RefCell::new(Vec::new()));
    for round in 0..ROUNDS {
        let r = round;
        // Alone on the channel (the lone-call shortcut).
        assert_eq!(t.apply(move |_| A64([r; 3])), A64([round; 3]));
        assert_eq!(t.apply(|_| ZstA64), ZstA64);
        // Behind unpublished continuations: the caller's result follows theirs in the response body.
        expect_then(&t, &log, 1, move |_| A16(r, 1), A16(round, 1));
        expect_then(&t, &log, 2, move |_| r as u8, round as u8);
        assert_eq!(t.apply(move |_| A16(r, 9)), A16(round, 9));
        expect_then(&t, &log, 3, move |_| [r; 31], [round; 31]);
        assert_eq!(
            t.apply(move |_| (r as u8, [r; 5])),
            (round as u8, [round; 5])
        );
        expect_then(&t, &log, 4, |_| Zst, Zst);
        assert_eq!(t.apply(move |_| [r as u8; 300]), [round as u8; 300]);
        assert_eq!(t.apply(move |_| u128::from(r) + 1), u128::from(round) + 1);
        wait_pending();
    }
    let want: Vec<u32> = (0..ROUNDS).flat_map(|_| [1, 2, 3, 4]).collect();
    assert_eq!(*log.borrow(), want);
}

/// Many 256-byte results: four fill a batch's response room, so issuing waits for room (`make_room`) and the
/// results of consecutive batches arrive in turn.
#[test]
fn results_that_fill_the_response_room() {
    let t = rt().trustee(0).entrust(0u64);
    let n = if cfg!(miri) { 9 } else { 200 };
    let seen = Rc::new(RefCell::new(Vec::new()));
    for i in 0..n {
        let seen = seen.clone();
        t.apply_then(
            move |c| {
                *c += 1;
                [i; 31]
            },
            move |r: [u64; 31]| {
                assert!(r.iter().all(|&x| x == i));
                seen.borrow_mut().push(r[30]);
            },
        );
    }
    wait_pending();
    assert_eq!(*seen.borrow(), (0..n).collect::<Vec<_>>());
    assert_eq!(t.apply(|c| *c), n);
}

#[repr(align(16))]
struct Cap16(u64);

#[repr(align(64))]
struct Cap64([u64; 2]);

/// Continuations stored inline (up to 8 words with the owner) and boxed (a word over, or over-aligned), and
/// zero-sized ones; each sees its capture and result, and each capture is dropped once.
#[test]
fn continuations_of_every_layout() {
    let t = rt().trustee(0).entrust(0u64);
    let drops = Arc::new(AtomicUsize::new(0));
    let sum = Rc::new(Cell::new(0u64));
    let mut want = 0;
    for round in 0..ROUNDS {
        // 7 words of capture + the owner's `Rc`: exactly the inline room.
        let (s, d, w) = (sum.clone(), CountsDrops(drops.clone()), [round; 5]);
        t.apply_then(
            |_| 1u64,
            move |r| {
                let _d = d;
                s.set(s.get() + r + w.iter().sum::<u64>());
            },
        );
        want += 1 + 5 * round;
        // One word more: boxed.
        let (s, d, w) = (sum.clone(), CountsDrops(drops.clone()), [round; 6]);
        t.apply_then(
            |_| 2u64,
            move |r| {
                let _d = d;
                s.set(s.get() + r + w.iter().sum::<u64>());
            },
        );
        want += 2 + 6 * round;
        // Over-aligned, though small: boxed.
        let (s, d, w) = (sum.clone(), CountsDrops(drops.clone()), Cap16(round));
        t.apply_then(
            |_| A16(3, 0),
            move |r| {
                let _d = d;
                assert!(aligned(&w));
                s.set(s.get() + r.0 + w.0);
            },
        );
        want += 3 + round;
        let (s, d, w) = (sum.clone(), CountsDrops(drops.clone()), Cap64([round, 1]));
        t.apply_then(
            |_| ZstA64,
            move |ZstA64| {
                let _d = d;
                assert!(aligned(&w));
                s.set(s.get() + w.0[0] + w.0[1]);
            },
        );
        want += round + 1;
        // Zero-sized continuations (a function item, a closure capturing nothing).
        fn ignore(_: u64) {}
        t.apply_then(|c| *c, ignore);
        t.apply_then(|_| Zst, |Zst| {});
        wait_pending();
        assert_eq!(sum.get(), want);
        assert_eq!(
            load(&drops),
            4 * (round as usize + 1),
            "each capture dropped once"
        );
    }
}

/// A result whose `Drop` panics: the continuation that drops it panics, which `wait_pending` resumes; the rest
/// of the batch still runs, and only the first panic is resumed.
#[test]
fn panicking_result_drops_and_continuations() {
    let t = rt().trustee(0).entrust(0u64);
    let drops = Arc::new(AtomicUsize::new(0));
    let ran = Rc::new(RefCell::new(Vec::new()));
    for i in 0..5u32 {
        let (ran, d) = (ran.clone(), drops.clone());
        t.apply_then(
            move |_| PanicsOnDrop(d),
            move |r| {
                ran.borrow_mut().push(i);
                if i == 3 {
                    // Dropped first, on its own: a second panic while this one unwinds would abort.
                    assert!(catch_unwind(AssertUnwindSafe(|| drop(r))).is_err());
                    panic!("continuation {i}");
                }
                drop(r); // panics
            },
        );
    }
    let payload = catch_unwind(AssertUnwindSafe(wait_pending)).unwrap_err();
    assert_eq!(panic_message(payload), "PanicsOnDrop");
    assert_eq!(*ran.borrow(), [0, 1, 2, 3, 4]);
    // Result 3 was dropped while its continuation unwound.
    assert_eq!(load(&drops), 5);
    wait_pending(); // the later panics were dropped, not kept
}

/// A delegated closure that panics: its continuation is dropped unrun (its capture once, even when the capture's
/// `Drop` panics too) and the closure's panic is the one resumed.
#[test]
fn a_panicking_request_drops_its_continuation_unrun() {
    let t = rt().trustee(0).entrust(0u64);
    let drops = Arc::new(AtomicUsize::new(0));
    let ran = Rc::new(Cell::new(0));
    for i in 0..4u32 {
        let (ran, d) = (ran.clone(), drops.clone());
        let bomb = PanicsOnDrop(drops.clone());
        t.apply_then(
            move |_| {
                if i % 2 == 1 {
                    panic!("request {i}");
                }
                CountsDrops(d)
            },
            move |_r| {
                let _b = bomb; // unwinds after the count
                ran.set(ran.get() + 1);
            },
        );
    }
    let payload = catch_unwind(AssertUnwindSafe(wait_pending)).unwrap_err();
    // The first panic is continuation 0's capture's, when it ran; request 1's came second (dropped).
    assert_eq!(panic_message(payload), "PanicsOnDrop");
    assert_eq!(ran.get(), 2);
    // 4 captures + 2 results.
    assert_eq!(load(&drops), 6);
    wait_pending();
}

/// A continuation that calls `wait_pending` runs the rest of its batch (and later ones) inside, in order, then
/// goes on; a continuation that issues more `apply_then`s (a chain) and one that blocks on `apply`.
#[test]
fn reentrant_continuations_wait_chain_and_block() {
    let t = rt().trustee(0).entrust(0u64);
    let log = Rc::new(RefCell::new(Vec::new()));
    for i in 0..6u32 {
        let (log, t2) = (log.clone(), t.clone());
        t.apply_then(
            move |c| {
                *c += 1;
                *c
            },
            move |v| {
                log.borrow_mut().push(format!("{i}:{v}"));
                match i {
                    1 => {
                        wait_pending();
                        log.borrow_mut().push("1 waited".into());
                    }
                    2 => {
                        // A chain: issued from a continuation, counted for this thread.
                        let log2 = log.clone();
                        let t3 = t2.clone();
                        t2.apply_then(
                            |c| {
                                *c += 100;
                                *c
                            },
                            move |v| {
                                log2.borrow_mut().push(format!("chain:{v}"));
                                let log3 = log2.clone();
                                t3.apply_then(
                                    |c| *c,
                                    move |v| log3.borrow_mut().push(format!("chain2:{v}")),
                                );
                            },
                        );
                    }
                    3 => {
                        let now = t2.apply(|c| *c);
                        log.borrow_mut().push(format!("3 blocked:{now}"));
                    }
                    _ => {}
                }
            },
        );
    }
    wait_pending();
    let got = log.borrow().clone();
    // Continuation 1 waits for everything issued so far and by the others, the chain included.
    assert_eq!(
        got,
        [
            "0:1",
            "1:2",
            "2:3",
            "3:4",
            "3 blocked:106",
            "4:5",
            "5:6",
            "chain:106",
            "chain2:106",
            "1 waited"
        ]
    );
    assert_eq!(t.apply(|c| *c), 106);
}

/// A continuation that drops the last handle of the property it came from (and of another): each value is
/// dropped once, on its trustee.
#[test]
fn a_continuation_drops_the_last_handle() {
    let drops = Arc::new(AtomicUsize::new(0));
    let a = rt().trustee(0).entrust(CountsDrops(drops.clone()));
    let b = rt().trustee(0).entrust(CountsDrops(drops.clone()));
    let a2 = a.clone();
    a.apply_then(
        |_| 5u8,
        move |v| {
            assert_eq!(v, 5);
            drop(a2);
            drop(b);
        },
    );
    drop(a);
    wait_pending();
    wait_for_drops(&drops, 2);
}

/// A continuation that panics inside a nested `wait_pending`: the nested wait resumes the inner panic inside the
/// outer continuation, which then unwinds with it; the outer `wait_pending` resumes it once.
#[test]
fn a_panic_inside_a_nested_wait() {
    let t = rt().trustee(0).entrust(0u64);
    let ran = Rc::new(RefCell::new(Vec::new()));
    let r = ran.clone();
    t.apply_then(
        |_| (),
        move |()| {
            r.borrow_mut().push("outer");
            wait_pending();
            r.borrow_mut().push("not reached");
        },
    );
    for i in 0..3 {
        let r = ran.clone();
        t.apply_then(
            |_| (),
            move |()| {
                r.borrow_mut().push(["a", "b", "c"][i]);
                if i == 1 {
                    panic!("inner");
                }
            },
        );
    }
    let payload = catch_unwind(AssertUnwindSafe(wait_pending)).unwrap_err();
    assert_eq!(panic_message(payload), "inner");
    assert_eq!(*ran.borrow(), ["outer", "a", "b", "c"]);
    wait_pending();
}

/// A thread that leaves without `wait_pending`: its continuations are dropped unrun on it, each with its
/// result, every destructor once, even when they panic (contained, no abort), and nothing leaks.
#[test]
fn a_thread_leaving_drops_unrun_continuations_and_results_once() {
    let t = rt().trustee(0).entrust(0u64);
    let drops = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let n = if cfg!(miri) { 3 } else { 40 };
    let (t2, d, r2) = (t.clone(), drops.clone(), ran.clone());
    thread::spawn(move || {
        for i in 0..n {
            let (d1, d2, ran) = (d.clone(), d.clone(), r2.clone());
            let capture_panics = i % 3 == 0;
            let capture: Box<dyn std::any::Any> = if capture_panics {
                Box::new(PanicsOnDrop(d1))
            } else {
                Box::new(CountsDrops(d1))
            };
            // Results of both kinds too: inline (a word) and boxed (over-aligned).
            if i % 2 == 0 {
                t2.apply_then(
                    move |c| {
                        *c += 1;
                        PanicsOnDrop(d2)
                    },
                    move |r| {
                        ran.fetch_add(1, Ordering::SeqCst);
                        // Each on its own: a second panic while one unwinds would abort.
                        let _ = catch_unwind(AssertUnwindSafe(|| drop(r)));
                        let _ = catch_unwind(AssertUnwindSafe(|| drop(capture)));
                    },
                );
            } else {
                t2.apply_then(
                    move |c| {
                        *c += 1;
                        (A64([0; 3]), CountsDrops(d2))
                    },
                    move |r| {
                        ran.fetch_add(1, Ordering::SeqCst);
                        // Each on its own: a second panic while one unwinds would abort.
                        let _ = catch_unwind(AssertUnwindSafe(|| drop(r)));
                        let _ = catch_unwind(AssertUnwindSafe(|| drop(capture)));
                    },
                );
            }
        }
        // Some continuations may have run already (a publish runs those answered meanwhile); the rest are
        // dropped when this thread's client goes.
    })
    .join()
    .expect("the thread leaves without unwinding");
    assert_eq!(t.apply(|c| *c), n as u64);
    // Every capture and every result dropped exactly once, run or not.
    assert_eq!(load(&drops), 2 * n);
    assert!(load(&ran) <= n);
}

/// Over-aligned and large *closures* (the request record, boxed when it cannot travel inline) beside
/// continuations whose results follow them.
#[test]
fn over_aligned_and_large_closures() {
    let t = rt().trustee(0).entrust(0u64);
    let log = Rc::new(RefCell::new(Vec::new()));
    for round in 0..ROUNDS {
        let cap = Cap64([round, 2]);
        let big = [round; 200];
        let l = log.clone();
        t.apply_then(
            move |c| {
                assert!(aligned(&cap));
                *c += cap.0[1];
                cap.0[0]
            },
            move |v| l.borrow_mut().push(v),
        );
        let l = log.clone();
        t.apply_then(
            move |_| big.iter().sum::<u64>(),
            move |v| l.borrow_mut().push(v),
        );
        let cap = Cap16(round);
        assert_eq!(t.apply(move |_| cap.0 + 1), round + 1);
    }
    wait_pending();
    let want: Vec<u64> = (0..ROUNDS).flat_map(|r| [r, 200 * r]).collect();
    assert_eq!(*log.borrow(), want);
    assert_eq!(t.apply(|c| *c), 2 * ROUNDS);
}

/// A `launch_then` result that has arrived in a plain thread's inbox but was not collected yet when the thread
/// leaves (it made no trust call since): its continuation is dropped unrun, and the result with it, on the
/// issuing thread; a result whose `Drop` panics must be contained there like every other unrun continuation's
/// (`Client::drop`, `Inbox::drop`), not unwind out of the thread-local's destructor, which aborts the process.
/// Needs a launched fiber (not under Miri) and a child process (the abort).
#[cfg(not(miri))]
#[test]
fn an_arrived_launch_then_result_is_dropped_contained_at_thread_exit() {
    use std::sync::atomic::AtomicBool;
    use trust_core::Latch;
    const NAME: &str = "an_arrived_launch_then_result_is_dropped_contained_at_thread_exit";
    if !common::is_child() {
        let out = common::run_in_child(NAME, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "the child failed: {:?}\n--- stderr ---\n{stderr}",
            out.status
        );
        return;
    }
    // The handles stay with this thread: one dropped by the client thread would call the runtime, which runs
    // the thread's continuations first.
    let latch = Arc::new(rt().trustee(0).entrust(Latch::new(())));
    let other = Arc::new(rt().trustee(0).entrust(0u64));
    let drops = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(AtomicBool::new(false));
    let returned = Arc::new(AtomicUsize::new(0));
    let continued = Arc::new(AtomicBool::new(false));
    let (d, g, r, c) = (
        drops.clone(),
        go.clone(),
        returned.clone(),
        continued.clone(),
    );
    let (l2, o2) = (latch.clone(), other.clone());
    thread::spawn(move || {
        let r2 = r.clone();
        l2.launch_then(
            move |_| {
                while !g.load(Ordering::SeqCst) {
                    trust_core::yield_now();
                }
                r2.fetch_add(1, Ordering::SeqCst);
                PanicsOnDrop(d)
            },
            move |result| {
                c.store(true, Ordering::SeqCst);
                // Its drop panics: caught there, as a continuation's panic always is.
                drop(result);
            },
        );
        // Publishes the launch (same trustee, same batch) and runs its start's continuation; the launched
        // fiber's result has not come yet.
        o2.apply(|c| *c += 1);
        go.store(true, Ordering::SeqCst);
        while r.load(Ordering::SeqCst) == 0 {
            thread::yield_now();
        }
        // The fiber returned; its result reaches this thread's inbox right after.
        thread::sleep(std::time::Duration::from_millis(200));
        // Leaves without a trust call: the result is still in the inbox, uncollected.
    })
    .join()
    .expect("the thread leaves cleanly");
    assert!(
        !continued.load(Ordering::SeqCst),
        "the scenario: the continuation never ran"
    );
    assert_eq!(load(&drops), 1, "the result dropped once");
}

/// A continuation that issues more requests than a batch holds (256-byte results: four per batch), so it waits
/// for room from inside the batch being run; the continuations it issues run after it, in order.
#[test]
fn a_continuation_that_fills_batches() {
    let t = rt().trustee(0).entrust(0u64);
    let n: u64 = if cfg!(miri) { 9 } else { 100 };
    let seen = Rc::new(RefCell::new(Vec::new()));
    for k in 0..3u64 {
        let (t2, seen) = (t.clone(), seen.clone());
        t.apply_then(
            |_| (),
            move |()| {
                for i in 0..n {
                    let seen = seen.clone();
                    t2.apply_then(
                        move |c| {
                            *c += 1;
                            [k * 1000 + i; 31]
                        },
                        move |r| seen.borrow_mut().push(r[0]),
                    );
                }
            },
        );
    }
    wait_pending();
    let want: Vec<u64> = (0..3)
        .flat_map(|k| (0..n).map(move |i| k * 1000 + i))
        .collect();
    assert_eq!(*seen.borrow(), want);
    assert_eq!(t.apply(|c| *c), 3 * n);
}

/// Records still unpublished when a client thread leaves after `Runtime::shutdown` began: their continuations
/// are dropped (`Outbox::drop`), and so should the records' closures be, with their captures. Run in a child
/// process (it shuts its runtime down).
#[cfg(not(miri))]
#[test]
fn unsent_records_are_dropped_when_their_thread_leaves_after_shutdown() {
    const NAME: &str = "unsent_records_are_dropped_when_their_thread_leaves_after_shutdown";
    if !common::is_child() {
        let out = common::run_in_child(NAME, &[]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "the child failed: {:?}\n{stdout}\n{stderr}",
            out.status
        );
        return;
    }
    let t = Arc::new(rt().trustee(0).entrust(0u64));
    let closures = Arc::new(AtomicUsize::new(0));
    let continuations = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (t2, cl, co) = (t.clone(), closures.clone(), continuations.clone());
    let client = thread::spawn(move || {
        for _ in 0..3 {
            let (a, b) = (CountsDrops(cl.clone()), CountsDrops(co.clone()));
            // Fewer than a publish's worth: they wait, unsent, in the batch being built.
            t2.apply_then(
                move |c| {
                    let _a = a;
                    *c += 1;
                },
                move |()| drop(b),
            );
        }
        tx.send(()).unwrap();
        go_rx.recv().unwrap();
        // Leaves: the client's outbox goes, its trustee closed.
    });
    rx.recv().unwrap();
    rt().shutdown();
    go_tx.send(()).unwrap();
    client.join().expect("the client thread leaves cleanly");
    assert_eq!(
        load(&continuations),
        3,
        "the continuations were dropped unrun"
    );
    assert_eq!(load(&closures), 3, "the unsent closures were dropped too");
}

/// A `launch_then` whose issuing thread has left before the launched fiber ends: the result arrives at an inbox
/// nobody reads and is dropped on the trustee, where a panicking `Drop` must be contained (the trustee keeps
/// serving). Needs a launched fiber (not under Miri); a child process in case of an abort.
#[cfg(not(miri))]
#[test]
fn a_launch_then_result_for_a_thread_that_left_is_dropped_contained() {
    use std::sync::atomic::AtomicBool;
    use trust_core::Latch;
    const NAME: &str = "a_launch_then_result_for_a_thread_that_left_is_dropped_contained";
    if !common::is_child() {
        let out = common::run_in_child(NAME, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "the child failed: {:?}\n{stderr}",
            out.status
        );
        return;
    }
    let latch = Arc::new(rt().trustee(0).entrust(Latch::new(5u64)));
    let drops = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(AtomicBool::new(false));
    let (l2, d, g) = (latch.clone(), drops.clone(), go.clone());
    thread::spawn(move || {
        l2.launch_then(
            move |_| {
                while !g.load(Ordering::SeqCst) {
                    trust_core::yield_now();
                }
                PanicsOnDrop(d)
            },
            |_| unreachable!("the issuing thread has left"),
        );
        // Leaves: the launch is published when its outbox goes.
    })
    .join()
    .expect("the thread leaves cleanly");
    go.store(true, Ordering::SeqCst);
    for _ in 0..10_000 {
        if load(&drops) == 1 {
            break;
        }
        thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(load(&drops), 1, "the result dropped once, on the trustee");
    assert_eq!(latch.apply(|l| *l.lock()), 5, "the trustee keeps serving");
}

/// `apply_then` and `launch_then` from a `may` coroutine: `may` moves coroutines between its threads at any
/// yield (work stealing is in its default features), and a continuation need not be `Send` (here it shares an
/// `Rc` with its coroutine). It must run on its coroutine, and have run when the coroutine's `wait_pending`
/// returns, wherever the coroutine is by then; a panic in it is resumed there. It was left with the client of
/// the thread it was issued on, and ran there later, beside the coroutine that had moved on. Each coroutine
/// records whether it moved, which coroutine its continuations ran on, and what its `wait_pending` resumed.
/// Not under Miri (`may`).
#[cfg(not(miri))]
#[test]
fn a_may_coroutines_continuation_runs_with_the_coroutine() {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    use trust_core::Latch;
    let t = Arc::new(rt().trustee(0).entrust(0u64));
    let latch = Arc::new(rt().trustee(1).entrust(Latch::new(0u64)));
    may::config().set_workers(2);
    let here = || may::coroutine::current().name().map(str::to_owned);
    /// Per coroutine: whether it moved, where each continuation ran, what `wait_pending` resumed.
    type Report = Vec<(bool, Vec<Option<String>>, Result<(), String>)>;
    let report: Arc<Mutex<Report>> = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let (t, latch, report) = (t.clone(), latch.clone(), report.clone());
            let body = move || {
                let issued_on = thread::current().id();
                let ran_on = Rc::new(RefCell::new(Vec::new()));
                let (r1, r2, r3) = (ran_on.clone(), ran_on.clone(), ran_on.clone());
                t.apply_then(|c| *c += 1, move |()| r1.borrow_mut().push(here()));
                latch.launch_then(|l| *l.lock() += 1, move |()| r2.borrow_mut().push(here()));
                t.apply_then(
                    |c| *c,
                    move |_| {
                        r3.borrow_mut().push(here());
                        panic!("kept for wait_pending");
                    },
                );
                let deadline = Instant::now() + Duration::from_millis(500);
                while thread::current().id() == issued_on && Instant::now() < deadline {
                    may::coroutine::yield_now();
                }
                let moved = thread::current().id() != issued_on;
                let resumed = std::panic::catch_unwind(wait_pending).map_err(|p| {
                    p.downcast_ref::<&str>()
                        .map_or("?".to_owned(), |s| (*s).to_owned())
                });
                let ran = ran_on.borrow().clone();
                report.lock().unwrap().push((moved, ran, resumed));
            };
            // SAFETY: the coroutine uses no thread-local storage of its own.
            unsafe {
                may::coroutine::Builder::new()
                    .name(format!("c{i}"))
                    .spawn(body)
                    .unwrap()
            }
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let report = report.lock().unwrap();
    let moved = report.iter().filter(|r| r.0).count();
    eprintln!("{} coroutines, {moved} moved", report.len());
    let mut report: Vec<_> = report
        .iter()
        .map(|(_, ran, resumed)| (ran.clone(), resumed.clone()))
        .collect();
    report.sort();
    let mut expected: Vec<_> = (0..16)
        .map(|i| {
            let name = Some(format!("c{i}"));
            (
                vec![name.clone(), name.clone(), name],
                Err("kept for wait_pending".to_owned()),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(report, expected);
    assert_eq!((t.apply(|c| *c), latch.apply(|l| *l.get_mut())), (16, 16));
}
