//! Review 92 (hostile): reviews 90 and 91's fixes — the yield every 32 ready socket operations of a worker's
//! fibers (`fiber::after_ready_io`) and the boxing of values over 128 bytes from a `may` coroutine
//! (`MAY_INLINE`): their tests mutated, the other burst that yields a fiber beside the new one, and the entry
//! points a coroutine can reach with a large value that review 91 did not test.
//!
//! Found, fixed: `inline_applies_while_a_fiber_unwinds_do_not_yield`. Review 90 kept its socket burst from
//! suspending a fiber that unwinds (the worker's other fibers would run with `thread::panicking()` true), but
//! the inline-apply burst, which yields the same way (`yield_burst`), did not check: a destructor's 100
//! inline applies during a panic let another fiber of the worker see `panicking()` 3 times (and poison the
//! `Mutex` whose guard it dropped then). The check is in `yield_burst` now, for both bursts.
//!
//! Found later (thirty-seventh session), fixed: `the_fairness_hold_does_not_suspend_a_fiber_that_unwinds`. The
//! third way an inline apply suspends a fiber, the fairness hold (`fiber::hold`), did not check either: with a
//! remote client saturating the trustee, a destructor's 20,000 inline applies during a panic let another fiber
//! see `panicking()` 173 times. `hold` now lets a fiber that unwinds apply at once.
//!
//! Found, tests added (the code was right, nothing tested it):
//! - `ready_socket_writes_in_a_forked_child_do_not_yield`: with `after_ready_io`'s `in_forked_child()` clause
//!   removed, review 90's tests passed, yet a forked fiber's 32nd ready write panicked naming `fork`.
//! - `then_calls_with_only_a_496_byte_result_from_a_coroutine_coroutine`: with the result clause of
//!   `apply_then_result` and `launch_then_result` removed, review 91's tests passed (its `_then` calls also
//!   captured 496 bytes, so their closures were boxed and the unboxed result fit). Unboxed, such a call
//!   needs more than 12 KiB of a coroutine's stack, boxed less than 10: the test runs on 12 KiB. On `may`'s
//!   default 32 KiB the unboxed result fits (16 KiB did), so that clause is a margin, not a fix.
//!
//! Held: from a coroutine on `may`'s default 32 KiB stack, `spawn` of a closure capturing 496 bytes,
//! `try_unwrap` of a 496-byte value and `apply_with` of a 496-byte capture (none checks `MAY_INLINE`: `spawn`
//! and `try_unwrap` box only over 512 bytes; `apply_with`'s closure reaches `apply`'s boxing) each ran there
//! in a debug build.
//!
//! Every test runs in a child process of its own (2 workers, a watchdog).

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};

#[macro_use]
mod common;
use common::*;

/// 496 bytes: over `MAY_INLINE` (128), under `BOX_ABOVE` (512).
#[derive(Clone, Debug, PartialEq)]
struct Big([u64; 62]);

/// A fiber forks; in the child its copy writes 100 bytes, one at a time, to a socket whose peer has room for
/// them all, so every write is ready. The child has no worker loop to yield to (suspending there panics
/// naming `fork`), so review 90's yield must not run there: the writes work, as before review 90. With the
/// `in_forked_child()` clause removed from `after_ready_io`, the child's 32nd write at the latest panicked.
#[test]
fn ready_socket_writes_in_a_forked_child_do_not_yield() {
    in_child!("ready_socket_writes_in_a_forked_child_do_not_yield", 30);
    calibrate();
    let (s, peer) = pair();
    let (pid, s) = spawn_on(0, move || {
        let pid = fork_running(|| {
            std::panic::set_hook(Box::new(|_| {}));
            let r = catch_unwind(AssertUnwindSafe(|| {
                for _ in 0..100 {
                    (&s).write_all(b"f").unwrap();
                }
            }));
            if r.is_ok() {
                7
            } else if names_fork(r) {
                8
            } else {
                9
            }
        });
        (pid, s)
    })
    .join()
    .unwrap();
    let (code, took) = reap(pid, 10);
    drop((s, peer));
    assert_eq!(
        code,
        Some(7),
        "the forked fiber's ready writes after {took:?} (8: panicked naming fork; 9: another panic; None: hung)"
    );
    child_ok();
}

/// Entry points that review 91's `MAY_INLINE` does not cover, from a coroutine on `may`'s default stack
/// (32 KiB) with 496-byte values: `spawn` of a large capture (and its result), `try_unwrap` of a large
/// value, `apply_with` whose closure captures one.
#[test]
fn uncovered_entry_points_with_496_byte_values_from_a_coroutine_coroutine() {
    in_child!(
        "uncovered_entry_points_with_496_byte_values_from_a_coroutine_coroutine",
        20
    );
    may::config().set_workers(1);
    assert_eq!(may::config().get_stack_size(), 0x1000);
    let t = rt().trustee(0).entrust(0u64);
    let r = within(15, move || {
        coroutine(move || {
            let cap = Big([3; 62]);
            let spawned = trust_core::spawn(move || Big([cap.0.iter().sum::<u64>(); 62]))
                .join()
                .unwrap();
            let e = rt().trustee(1).entrust(Big([4; 62]));
            let Ok(unwrapped) = e.try_unwrap() else {
                panic!("the only handle")
            };
            let cap = Big([5; 62]);
            let with = t.apply_with(
                move |v, a: u64| {
                    *v += cap.0[0] + a;
                    *v
                },
                1,
            );
            (spawned.0[61], unwrapped.0[0], with)
        })
        .join()
    });
    let r = r.unwrap_or_else(|p| panic!("the coroutine failed: {}", panic_message(p)));
    assert_eq!(r, (3 * 62, 4, 6));
    child_ok();
}

/// A coroutine's stack for `then_calls_with_only_a_496_byte_result_from_a_coroutine_coroutine`, in words:
/// 12 KiB. Both calls there took less than 10 KiB with their results boxed (they passed on 0x500 words) and
/// more than 12 KiB without (they overflowed 0x600 words, not 0x800), in a debug build. Under AddressSanitizer,
/// whose redzones make every frame larger, the boxed calls overflowed 12 KiB too: `may`'s default there.
const STACK_WORDS: usize = if cfg!(feature = "sanitizer") {
    0x1000
} else {
    0x600
};

/// `apply_then` and `launch_then` from a coroutine whose closure and continuation are small and whose result
/// is 496 bytes: only `MAY_INLINE`'s result clause (`apply_then_result`, `launch_then_result`) boxes it, and
/// review 91's test reached those clauses only with a large closure too (boxed, so removing them went
/// unnoticed). On a stack of 12 KiB, which the boxed calls fit and the unboxed ones overflow.

#[test]
fn then_calls_with_only_a_496_byte_result_from_a_coroutine_coroutine() {
    in_child!(
        "then_calls_with_only_a_496_byte_result_from_a_coroutine_coroutine",
        20
    );
    may::config().set_workers(1);
    may::config().set_stack_size(STACK_WORDS);
    let t = rt().trustee(0).entrust(7u64);
    let l = rt().trustee(1).entrust(trust_core::Latch::new(9u64));
    let r = within(15, move || {
        coroutine(move || {
            let got = std::rc::Rc::new(std::cell::Cell::new(0u64));
            let g = got.clone();
            t.apply_then(
                |v| Big([*v; 62]),
                move |r: Big| g.set(g.get() + r.0.iter().sum::<u64>()),
            );
            let g = got.clone();
            l.launch_then(
                |l| Big([*l.lock(); 62]),
                move |r: Big| g.set(g.get() + r.0.iter().sum::<u64>()),
            );
            trust_core::wait_pending();
            got.get()
        })
        .join()
    });
    let r = r.unwrap_or_else(|p| panic!("the coroutine failed: {}", panic_message(p)));
    assert_eq!(r, (7 + 9) * 62);
    child_ok();
}

/// Makes this many applies to a property of its own worker's trustee when dropped: from a fiber there, each
/// takes the local shortcut (inline, no suspension), so every 32 of them the fiber yields
/// (`after_inline_apply`).
struct AppliesOnDrop(trust_core::Trust<u64>, u64);

impl Drop for AppliesOnDrop {
    fn drop(&mut self) {
        for _ in 0..self.1 {
            self.0.apply(|v| *v += 1);
        }
    }
}

/// Review 90's `ready_socket_writes_while_a_fiber_unwinds_do_not_yield`, with inline applies for the ready
/// writes: the other burst that yields a fiber (`after_inline_apply`) must not suspend one that unwinds
/// either, or the worker's other fibers run with `thread::panicking()` true (a guard they drop poisons its
/// `Mutex`).
#[test]
fn inline_applies_while_a_fiber_unwinds_do_not_yield() {
    in_child!("inline_applies_while_a_fiber_unwinds_do_not_yield", 20);
    calibrate();
    let m = std::sync::Arc::new(std::sync::Mutex::new(0u32));
    let other = common::counts_panicking_turns(m.clone());
    let t = rt().trustee(0).entrust(0u64);
    let t2 = t.clone();
    let unwinding = spawn_on(0, move || {
        let _a = AppliesOnDrop(t2, 100);
        trust_core::yield_now();
        panic!("unwinds through the applies");
    });
    let p = within(10, move || unwinding.join().unwrap_err());
    assert_eq!(panic_message(p), "unwinds through the applies");
    assert_eq!(
        within(10, move || other.join().unwrap()),
        0,
        "a fiber ran while another unwound"
    );
    assert!(
        !m.is_poisoned(),
        "a fiber's guard was dropped while another unwound"
    );
    assert_eq!(*m.lock().unwrap(), 500);
    assert_eq!(t.apply(|v| *v), 100);
    child_ok();
}

/// The fairness hold is the third way an inline apply can suspend a fiber (`fiber::hold`: while a remote client
/// is saturated, a fiber out of credit waits for the next remote batch to pay for its apply). A fiber that
/// unwinds must not be held either: a plain thread keeps trustee 0 saturated with slow records (about a
/// microsecond each, so they pay for far fewer inline applies than the destructor makes), and a fiber unwinds
/// through 20,000 inline applies. Before the fix the hold suspended it within the first thousand, and the
/// worker's other fiber saw `panicking()` and poisoned its `Mutex`.
#[test]
fn the_fairness_hold_does_not_suspend_a_fiber_that_unwinds() {
    use std::sync::atomic::{AtomicBool, Ordering};
    in_child!(
        "the_fairness_hold_does_not_suspend_a_fiber_that_unwinds",
        30
    );
    calibrate();
    let t = rt().trustee(0).entrust(0u64);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let remote = {
        let (t, stop) = (t.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    t.apply_then(
                        |v| {
                            let start = std::time::Instant::now();
                            while start.elapsed() < std::time::Duration::from_micros(1) {}
                            *v += 1;
                        },
                        |()| {},
                    );
                }
                sent += 64;
            }
            trust_core::wait_pending();
            sent
        })
    };
    while t.apply(|v| *v) < 1_000 {}
    let m = std::sync::Arc::new(std::sync::Mutex::new(0u32));
    let other = common::counts_panicking_turns(m.clone());
    let t2 = t.clone();
    let unwinding = spawn_on(0, move || {
        let _a = AppliesOnDrop(t2, 20_000);
        trust_core::yield_now();
        panic!("unwinds through the applies");
    });
    let p = within(20, move || unwinding.join().unwrap_err());
    assert_eq!(panic_message(p), "unwinds through the applies");
    assert_eq!(
        within(20, move || other.join().unwrap()),
        0,
        "a fiber ran while another unwound"
    );
    assert!(
        !m.is_poisoned(),
        "a fiber's guard was dropped while another unwound"
    );
    stop.store(true, Ordering::Relaxed);
    let sent = within(20, move || remote.join().unwrap());
    assert_eq!(t.apply(|v| *v), sent + 20_000);
    child_ok();
}
