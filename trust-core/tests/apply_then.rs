//! `apply_then` and `wait_pending`: order, exact totals, chains, panics, flow control, and the nesting rules.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

mod common;
use common::*;
use trust_core::{Trust, spawn, wait_pending};

#[test]
fn continuations_run_on_the_issuing_thread_in_issue_order() {
    let counter = rt().trustee(1).entrust(0u64);
    let seen = Rc::new(RefCell::new(Vec::new()));
    let me = std::thread::current().id();
    for _ in 0..10_000 {
        let seen = seen.clone();
        counter.apply_then(
            |c| {
                *c += 1;
                *c
            },
            move |v| {
                assert_eq!(std::thread::current().id(), me);
                seen.borrow_mut().push(v)
            },
        );
    }
    wait_pending();
    assert_eq!(*seen.borrow(), (1..=10_000).collect::<Vec<u64>>());
    assert_eq!(counter.apply(|c| *c), 10_000);
}

#[test]
fn a_blocking_call_sees_every_apply_then_issued_before_it_whichever_lane_it_took() {
    // Up to 149 `apply_then`s, then a blocking read: they fill several batches, two of them in flight at once
    // (one per lane of the channel). The read must run after all of them, and the trustee must never run a
    // later batch before an earlier one.
    let counter = rt().trustee(1).entrust(0u64);
    let mut issued = 0;
    for round in 1..=300u64 {
        for _ in 0..round % 150 {
            counter.apply_then(|c| *c += 1, |()| {});
            issued += 1;
        }
        assert_eq!(counter.apply(|c| *c), issued, "round {round}");
    }
    wait_pending();
    assert_eq!(issued, 22_350);
}

/// Peak resident memory of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn millions_without_waiting_keep_memory_bounded() {
    // 10 million in a release build; a million in debug, where each costs ten times as much.
    let n: u64 = if cfg!(debug_assertions) {
        1_000_000
    } else {
        10_000_000
    };
    let counter = rt().trustee(0).entrust(0u64);
    let sum = Rc::new(Cell::new(0u64));
    let before = peak_rss_kib();
    for _ in 0..n {
        let sum = sum.clone();
        counter.apply_then(
            |c| {
                *c += 1;
                1u64
            },
            move |one| sum.set(sum.get() + one),
        );
    }
    wait_pending();
    let grown = peak_rss_kib().saturating_sub(before);
    assert_eq!(sum.get(), n);
    assert_eq!(counter.apply(|c| *c), n);
    assert!(
        grown < 32 * 1024,
        "peak memory grew by {grown} KiB for {n} requests"
    );
}

#[test]
fn continuations_can_chain() {
    let counter = rt().trustee(1).entrust(0u64);
    fn step(counter: Trust<u64>, left: u32, done: Rc<Cell<u32>>) {
        let next = counter.clone();
        counter.apply_then(
            |c| *c += 1,
            move |()| {
                done.set(done.get() + 1);
                if left > 1 {
                    step(next, left - 1, done);
                }
            },
        );
    }
    let done = Rc::new(Cell::new(0));
    step(counter.clone(), 1000, done.clone());
    wait_pending();
    assert_eq!(done.get(), 1000);
    assert_eq!(counter.apply(|c| *c), 1000);
}

#[test]
fn a_long_chain_does_not_grow_the_stack() {
    // Each continuation issues the next request: 100,000 links on a 256 KiB thread stack. Continuations
    // run from the loop of `wait_pending`, never nested inside the `apply_then` of the previous link.
    let total = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(|| {
            let counter = rt().trustee(0).entrust(0u64);
            chain_of_increments(counter.clone(), 100_000);
            wait_pending();
            counter.apply(|c| *c)
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(total, 100_000);
}

#[test]
fn a_panic_reaches_wait_pending_and_the_rest_still_completes() {
    let counter = rt().trustee(1).entrust(0u64);
    let ran = Rc::new(Cell::new(0));
    for i in 0..10 {
        let ran = ran.clone();
        counter.apply_then(
            move |c| {
                *c += 1;
                if i == 3 {
                    panic!("request {i} failed");
                }
            },
            move |()| ran.set(ran.get() + 1),
        );
    }
    let err = catch_unwind(AssertUnwindSafe(wait_pending)).unwrap_err();
    assert_eq!(*err.downcast::<String>().unwrap(), "request 3 failed");
    assert_eq!(ran.get(), 9, "every other continuation ran");
    assert_eq!(counter.apply(|c| *c), 10);
    wait_pending(); // the panic was reported once
}

#[test]
fn fibers_pipeline_and_wait_for_their_own_requests() {
    let counter = rt().trustee(0).entrust(0u64);
    let fibers: Vec<_> = (0..128)
        .map(|_| {
            let counter = counter.clone();
            spawn(move || {
                let done = Rc::new(Cell::new(0u32));
                for _ in 0..1000 {
                    let done = done.clone();
                    counter.apply_then(|c| *c += 1, move |()| done.set(done.get() + 1));
                }
                wait_pending();
                done.get()
            })
        })
        .collect();
    for f in fibers {
        assert_eq!(f.join().unwrap(), 1000);
    }
    assert_eq!(counter.apply(|c| *c), 128_000);
}

#[test]
fn apply_then_inside_a_delegated_closure_is_fine() {
    let a = rt().trustee(0).entrust(0u64);
    let b = rt().trustee(1).entrust(0u64);
    let b2 = b.clone();
    a.apply(move |_| {
        for _ in 0..100 {
            b2.apply_then(|v| *v += 1, |()| {});
        }
    });
    // The requests were queued by trustee 0 and are applied in order; a blocking read from here sees them
    // once trustee 0 has flushed its batch.
    let mut seen = 0;
    for _ in 0..1000 {
        seen = b.apply(|v| *v);
        if seen == 100 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(seen, 100);
}

/// A request issued through a handle that then moves to another thread and is dropped there: the
/// drop's decrement may overtake the request, and the value must still outlive it.
#[test]
fn a_handle_dropped_elsewhere_never_frees_the_value_before_its_requests() {
    use std::sync::{Arc, Mutex};
    struct Logged(Arc<Mutex<Vec<&'static str>>>);
    impl Drop for Logged {
        fn drop(&mut self) {
            self.0.lock().unwrap().push("drop");
        }
    }
    for _ in 0..200 {
        let log = Arc::new(Mutex::new(Vec::new()));
        let value = rt().trustee(1).entrust(Logged(log.clone()));
        value.apply_then(|v| v.0.lock().unwrap().push("apply"), |()| {});
        std::thread::spawn(move || drop(value)).join().unwrap();
        wait_pending();
        let mut waited = 0;
        while log.lock().unwrap().len() < 2 && waited < 1000 {
            std::thread::sleep(std::time::Duration::from_millis(1));
            waited += 1;
        }
        assert_eq!(*log.lock().unwrap(), ["apply", "drop"]);
    }
}

/// One request of a mixed sequence: its kind and the result it must see.
fn mixed_round(t: &Trust<Vec<u64>>, round: u64, seen: &Rc<RefCell<Vec<String>>>) {
    // Results of three sizes (16-byte, 40-byte, and boxed: over 256 bytes) interleaved with blocking calls
    // in the same batch: each must reach its own continuation or caller.
    let s = seen.clone();
    t.apply_then(
        move |v| {
            v.push(round);
            v.len() as u8
        },
        move |n| s.borrow_mut().push(format!("a{round}:{n}")),
    );
    let s = seen.clone();
    t.apply_then(
        move |v| format!("s{}", v.last().unwrap()),
        move |x| s.borrow_mut().push(x),
    );
    let len = t.apply(|v| v.len());
    seen.borrow_mut().push(format!("c{round}:{len}"));
    let s = seen.clone();
    t.apply_then(
        move |v| [v.len() as u64; 40],
        move |big| {
            s.borrow_mut()
                .push(format!("b{round}:{}", big.iter().sum::<u64>()))
        },
    );
}

#[test]
fn continuations_and_blocking_calls_in_one_batch_each_get_their_own_result() {
    let t = rt().trustee(1).entrust(Vec::<u64>::new());
    let seen = Rc::new(RefCell::new(Vec::new()));
    for round in 0..500 {
        mixed_round(&t, round, &seen);
    }
    wait_pending();
    let expected: Vec<String> = (0..500u64)
        .flat_map(|r| {
            let n = r + 1;
            [
                format!("a{r}:{}", n as u8),
                format!("s{r}"),
                format!("c{r}:{n}"),
                format!("b{r}:{}", 40 * n),
            ]
        })
        .collect();
    // Continuations run at some later call or at `wait_pending`, so only the order within each kind is fixed.
    let pick = |p: char| -> Vec<String> {
        let s = seen.borrow();
        s.iter().filter(|x| x.starts_with(p)).cloned().collect()
    };
    for p in ['a', 's', 'c', 'b'] {
        let want: Vec<String> = expected
            .iter()
            .filter(|x| x.starts_with(p))
            .cloned()
            .collect();
        assert_eq!(pick(p), want, "results of kind {p}");
    }
}

#[test]
fn fibers_mixing_continuations_and_blocking_calls_share_batches_correctly() {
    let t: &'static Trust<Vec<u64>> =
        Box::leak(Box::new(rt().trustee(1).entrust(Vec::<u64>::new())));
    // Eight fibers (spawned round robin: those on worker 0 interleave in its batches to trustee 1, those on
    // worker 1 take the local shortcut); each checks its own results.
    let fibers: Vec<_> = (0..8u64)
        .map(|f| {
            spawn(move || {
                let seen = Rc::new(RefCell::new(Vec::new()));
                for i in 0..200u64 {
                    let round = f * 1_000 + i;
                    let s = seen.clone();
                    t.apply_then(
                        move |v| {
                            v.push(round);
                            format!("{round}")
                        },
                        move |x| s.borrow_mut().push(x),
                    );
                    let last = t.apply(move |v| *v.iter().rev().find(|&&x| x == round).unwrap());
                    assert_eq!(last, round);
                    let s = seen.clone();
                    t.apply_then(
                        move |_| [round; 40],
                        move |big| s.borrow_mut().push(format!("{}", big[39])),
                    );
                }
                wait_pending();
                let want: Vec<String> = (0..200)
                    .flat_map(|i| {
                        let r = f * 1_000 + i;
                        [format!("{r}"), format!("{r}")]
                    })
                    .collect();
                assert_eq!(*seen.borrow(), want);
            })
        })
        .collect();
    for f in fibers {
        f.join().unwrap();
    }
    assert_eq!(t.apply(|v| v.len()), 1_600);
}

/// `wait_pending` inside a continuation waits for the other continuations, including those answered in the
/// same batch and queued behind it: they run inside it, in issue order.
#[test]
fn wait_pending_inside_a_continuation_runs_the_rest_of_its_batch() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let counter = rt().trustee(1).entrust(0u64);
        let seen = Rc::new(RefCell::new(Vec::new()));
        for i in 0..10u64 {
            let seen = seen.clone();
            counter.apply_then(
                |c| {
                    *c += 1;
                    *c
                },
                move |v| {
                    seen.borrow_mut().push(v);
                    if i == 0 {
                        // The other nine were answered in the same batch as this one.
                        wait_pending();
                        assert_eq!(
                            seen.borrow().len(),
                            10,
                            "the other continuations ran inside"
                        );
                    }
                },
            );
        }
        wait_pending();
        done_tx.send(seen.borrow().clone()).unwrap();
    });
    let seen = done_rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("wait_pending inside a continuation returned");
    assert_eq!(seen, (1..=10).collect::<Vec<u64>>());
}

#[test]
fn inline_and_boxed_continuations_from_a_thread() {
    let t = rt().trustee(1).entrust(0u64);
    inline_and_boxed_continuations(&t, 3_000);
    assert_eq!(t.apply(|c| *c), 3_000);
}

#[test]
fn inline_and_boxed_continuations_from_fibers_local_and_remote() {
    let t: &'static Trust<u64> = Box::leak(Box::new(rt().trustee(0).entrust(0u64)));
    // Spawned round robin: half the fibers are on the counter's worker (local shortcut), half are not.
    let fibers: Vec<_> = (0..4)
        .map(|_| spawn(move || inline_and_boxed_continuations(t, 1_000)))
        .collect();
    for f in fibers {
        f.join().unwrap();
    }
    assert_eq!(t.apply(|c| *c), 4_000);
}

/// The index of the worker a fiber runs on (its thread is named `trust-worker-N`).
fn this_worker() -> usize {
    let name = std::thread::current()
        .name()
        .map(str::to_owned)
        .unwrap_or_default();
    name.strip_prefix("trust-worker-")
        .and_then(|n| n.parse().ok())
        .expect("runs on a worker")
}

/// An `apply_then` issued inside a closure on its own property is queued in the worker's channel to itself (it
/// runs once the closure has returned). A later `apply` on that property by a fiber of the same worker must not
/// take the local shortcut past it: it sees the increment. It read 10, not 11, when the shortcut overtook it.
#[test]
fn an_apply_after_an_apply_then_queued_to_its_own_worker_sees_it() {
    let r = within(20, || {
        let fibers: Vec<_> = (0..4)
            .map(|_| {
                spawn(|| {
                    let t = rt().trustee(this_worker()).entrust(0u64);
                    let t2 = t.clone();
                    t.apply(move |v| {
                        t2.apply_then(|v| *v += 1, |()| ());
                        *v += 10;
                    });
                    let seen = t.apply(|v| *v);
                    wait_pending();
                    (seen, t.apply(|v| *v))
                })
            })
            .collect();
        fibers
            .into_iter()
            .map(|f| f.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(r, vec![(11, 11); 4]);
}

/// A fiber's `apply_then` on a latch of its own worker while launched fibers share it is queued (it runs once
/// they have ended); the same fiber's `apply` right after goes behind it, not past it by the local shortcut
/// once the launched fibers end.
#[test]
fn an_apply_goes_behind_an_apply_then_queued_beside_launched_fibers() {
    let r = within(20, || {
        spawn(|| {
            let latch = rt()
                .trustee(this_worker())
                .entrust(trust_core::Latch::new(0u64));
            latch.launch_then(
                |l| {
                    trust_core::yield_now();
                    *l.lock() += 10;
                },
                |()| (),
            );
            latch.apply_then(|l| *l.get_mut() += 1, |()| ());
            let seen = latch.apply(|l| *l.get_mut());
            wait_pending();
            seen
        })
        .join()
        .unwrap()
    });
    assert_eq!(r, 11);
}

/// Pipelines 59 `apply_then`s from this thread to a counter on worker 1 so that the last 10 stay unsent with
/// both lanes busy: the first (alone on the idle channel, so published at once) holds the worker 200 ms, the
/// next 48 fill the second lane, and 10 are fewer than a publish's 48. Returns a fiber's view of the counter:
/// it polls until all 59 have run.
fn pipeline_with_both_lanes_busy() -> (Trust<u64>, impl FnOnce() -> u64 + Send + 'static) {
    let counter = rt().trustee(1).entrust(0u64);
    let slow = |c: &mut u64| {
        std::thread::sleep(std::time::Duration::from_millis(200));
        *c += 1;
    };
    counter.apply_then(slow, |()| ());
    for _ in 0..58 {
        counter.apply_then(|c| *c += 1, |()| ());
    }
    let seen = counter.clone();
    let until_all_ran = move || loop {
        let v = seen.apply(|c| *c);
        if v == 59 {
            return v;
        }
        trust_core::sleep(std::time::Duration::from_millis(2));
    };
    (counter, until_all_ran)
}

/// docs/delegation.md: a burst's last `apply_then`s go out at `Fiber::join`. They went out only where a lane
/// was free at that moment; with both busy they stayed unsent while the thread parked, and a fiber that waited
/// for them (here: for the counter to reach 59) was joined for good. Now they go out as lanes free.
#[test]
fn joining_a_fiber_that_waits_for_the_threads_unsent_requests_ends() {
    within(20, || {
        let (counter, until_all_ran) = pipeline_with_both_lanes_busy();
        assert_eq!(spawn(until_all_ran).join().unwrap(), 59);
        wait_pending();
        assert_eq!(counter.apply(|c| *c), 59);
    });
}

/// As above, through `Latch::launch` (a blocking call that starts the fiber, then a join).
#[test]
fn launching_a_fiber_that_waits_for_the_threads_unsent_requests_ends() {
    within(20, || {
        let latch = rt().trustee(0).entrust(trust_core::Latch::new(0u64));
        let (counter, until_all_ran) = pipeline_with_both_lanes_busy();
        assert_eq!(latch.launch(move |_| until_all_ran()), 59);
        wait_pending();
        assert_eq!(counter.apply(|c| *c), 59);
    });
}

/// As above, while the thread waits for an interval lock that a fiber holds until the unsent requests ran.
#[test]
fn waiting_for_an_interval_lock_held_until_the_threads_unsent_requests_ran_ends() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use trust_core::interval::IntervalRwLock;
    within(20, || {
        let lock = Arc::new(IntervalRwLock::new(vec![0u64; 4]));
        let held = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let holder = {
            let (lock, held) = (lock.clone(), held.clone());
            spawn(move || {
                let mut guard = lock.write(..);
                held.store(true, Ordering::Release);
                let until_all_ran: Box<dyn FnOnce() -> u64 + Send> = rx.recv().unwrap();
                guard[0] = until_all_ran();
            })
        };
        while !held.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (counter, until_all_ran) = pipeline_with_both_lanes_busy();
        tx.send(Box::new(until_all_ran)).unwrap();
        assert_eq!(lock.write(0..1)[0], 59);
        holder.join().unwrap();
        wait_pending();
        assert_eq!(counter.apply(|c| *c), 59);
    });
}

/// As above, in a blocking call: an `apply` to a latch waits for the fiber launched on it, which waits for the
/// thread's unsent requests to another trustee (the call published them only where a lane was free).
#[test]
fn a_blocking_call_that_waits_for_a_fiber_waiting_for_the_threads_unsent_requests_ends() {
    within(20, || {
        let latch = rt().trustee(0).entrust(trust_core::Latch::new(0u64));
        let (counter, until_all_ran) = pipeline_with_both_lanes_busy();
        latch.launch_then(move |l| *l.lock() = until_all_ran(), |()| ());
        assert_eq!(latch.apply(|l| *l.get_mut()), 59);
        wait_pending();
        assert_eq!(counter.apply(|c| *c), 59);
    });
}
