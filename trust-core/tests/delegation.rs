//! Delegation end to end: exact totals from every kind of client, reference counting, panics, large
//! arguments, the local shortcut and the nested-delegation rules.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

mod common;
use common::*;
use trust_core::{Trust, entrust, local_trustee, spawn};

const OPS: u64 = 10_000;

/// 4 OS threads and 2 workers x 64 fibers increment through `apply`; every increment must land.
fn hammer(counters: &[Trust<u64>]) {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let counters = counters.to_vec();
            thread::spawn(move || {
                for i in 0..OPS as usize {
                    counters[(i + t) % counters.len()].apply(|c| *c += 1);
                }
            })
        })
        .collect();
    let fibers: Vec<_> = (0..128)
        .map(|f| {
            let counters = counters.to_vec();
            spawn(move || {
                for i in 0..OPS as usize {
                    counters[(i * 7 + f) % counters.len()].apply(|c| *c += 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for f in fibers {
        f.join().unwrap();
    }
}

#[test]
fn one_counter_from_threads_and_fibers_is_exact() {
    let counter = rt().trustee(0).entrust(0u64);
    hammer(std::slice::from_ref(&counter));
    assert_eq!(counter.apply(|c| *c), (4 + 128) * OPS);
}

#[test]
fn sixty_four_counters_over_all_trustees_are_exact() {
    let counters: Vec<_> = (0..64)
        .map(|i| rt().trustee(i % rt().workers()).entrust(0u64))
        .collect();
    hammer(&counters);
    let total: u64 = counters.iter().map(|c| c.apply(|c| *c)).sum();
    assert_eq!(total, (4 + 128) * OPS);
}

#[test]
fn thousands_of_fibers_per_worker() {
    rt();
    let counter = entrust(0u64);
    let fibers: Vec<_> = (0..10_000)
        .map(|_| {
            let counter = counter.clone();
            spawn(move || {
                for _ in 0..10 {
                    counter.apply(|c| *c += 1);
                }
            })
        })
        .collect();
    for f in fibers {
        f.join().unwrap();
    }
    assert_eq!(counter.apply(|c| *c), 100_000);
}

/// 300 fibers per worker send to one trustee: more than the two batches in flight hold (71 small requests
/// each), so most requests wait for room and their worker moves them into a later batch without waking the
/// fiber. Each request carries a value with a destructor and answers a `Vec`; one of every 50 fibers has a
/// request panic on the trustee (before taking a number), every tenth request carries 1 KiB (boxed). Every other
/// request is applied once (the fetched numbers are exactly 0..N), every panic reaches its fiber, every carried
/// value is dropped once.
#[test]
fn requests_that_wait_for_room_are_sent_once_each() {
    rt();
    struct Carried(Arc<AtomicUsize>);
    impl Drop for Carried {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    const FIBERS: usize = 600;
    const EACH: usize = 50;
    const PANICS: usize = FIBERS / 50;
    let next = local_trustee().entrust(0u64);
    let dropped = Arc::new(AtomicUsize::new(0));
    let fibers: Vec<_> = (0..FIBERS)
        .map(|f| {
            let (next, dropped) = (next.clone(), dropped.clone());
            spawn(move || {
                let mut got = Vec::new();
                for j in 0..EACH {
                    let carried = Carried(dropped.clone());
                    if f % 50 == 0 && j == 3 {
                        let refused = catch_unwind(AssertUnwindSafe(|| {
                            next.apply(move |_| -> Vec<u64> {
                                let _keep = &carried;
                                panic!("request {j} refused")
                            })
                        }));
                        assert_eq!(
                            panic_message(refused.unwrap_err()),
                            format!("request {j} refused")
                        );
                        continue;
                    }
                    let big = [j as u64; 128];
                    let answer = if j % 10 == 9 {
                        next.apply(move |n| {
                            let _keep = &carried;
                            assert_eq!(big[127], j as u64);
                            *n += 1;
                            vec![*n - 1]
                        })
                    } else {
                        next.apply(move |n| {
                            let _keep = &carried;
                            *n += 1;
                            vec![*n - 1]
                        })
                    };
                    assert_eq!(answer.len(), 1);
                    got.push(answer[0]);
                }
                got
            })
        })
        .collect();
    let mut all: Vec<u64> = fibers.into_iter().flat_map(|f| f.join().unwrap()).collect();
    all.sort_unstable();
    assert_eq!(all.len(), FIBERS * EACH - PANICS);
    assert!(
        all.iter().enumerate().all(|(i, &n)| n == i as u64),
        "the numbers taken are exactly 0..N"
    );
    assert_eq!(dropped.load(Ordering::Relaxed), FIBERS * EACH);
}

#[test]
fn thousand_clones_across_threads_drop_the_value_once() {
    rt();
    let drops = Arc::new(AtomicUsize::new(0));
    let original = rt().trustee(1).entrust(CountsDrops(drops.clone()));
    let clones: Vec<_> = (0..1000).map(|_| original.clone()).collect();
    let mut chunks: Vec<Vec<_>> = vec![Vec::new(); 4];
    for (i, c) in clones.into_iter().enumerate() {
        chunks[i % 4].push(c);
    }
    let threads: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            thread::spawn(move || {
                // Clone again on this thread, then drop everything.
                let more: Vec<_> = chunk.iter().map(Trust::clone).collect();
                drop(chunk);
                drop(more);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(drops.load(Ordering::SeqCst), 0, "one handle is still alive");
    // Dropping the last handle is asynchronous: a round trip to the same trustee flushes it.
    let probe = rt().trustee(1).entrust(());
    drop(original);
    probe.apply(|_| ());
    let mut waited = 0;
    while drops.load(Ordering::SeqCst) == 0 && waited < 1000 {
        thread::sleep(std::time::Duration::from_millis(1));
        waited += 1;
    }
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn a_panic_reaches_the_caller_and_the_trustee_keeps_serving() {
    let counter = rt().trustee(0).entrust(41u64);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        counter.apply(|c| {
            *c += 1;
            panic!("boom {}", *c)
        })
    }));
    assert_eq!(panic_message(caught.unwrap_err()), "boom 42");
    // The property stays usable, and the trustee still serves.
    assert_eq!(counter.apply(|c| *c), 42);
    assert_eq!(rt().trustee(0).entrust(5u8).apply(|v| *v + 1), 6);
    // The same from a fiber: the payload reaches `join`.
    let c2 = counter.clone();
    let joined = spawn(move || c2.apply(|_| -> u8 { std::panic::panic_any(7u32) })).join();
    assert_eq!(*joined.unwrap_err().downcast::<u32>().unwrap(), 7);
    assert_eq!(counter.apply(|c| *c), 42);
}

#[test]
fn apply_with_moves_a_mebibyte_and_large_captures_go_out_of_line() {
    let sum = rt().trustee(1).entrust(0u64);
    let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let expected: u64 = data.iter().map(|&b| b as u64).sum();
    let got = sum.apply_with(
        |s, v: Vec<u8>| {
            *s = v.iter().map(|&b| b as u64).sum();
            *s
        },
        data,
    );
    assert_eq!(got, expected);
    // A 64 KiB array captured by value cannot fit a slot: it travels boxed.
    let big = [3u8; 64 * 1024];
    assert_eq!(
        sum.apply(move |_| big.iter().map(|&b| b as u64).sum::<u64>()),
        3 * 64 * 1024
    );
}

#[test]
fn apply_on_the_own_trustee_runs_inline() {
    let counter = rt().trustee(0).entrust(0u64);
    // Round-robin spawning puts fibers on both workers; a fiber on worker 0 runs the closure itself, on its
    // own thread; a fiber on worker 1 sends it to worker 0's thread.
    let fibers: Vec<_> = (0..4)
        .map(|_| {
            let counter = counter.clone();
            spawn(move || {
                let here = thread::current().id();
                let ran_here = counter.apply(move |_| thread::current().id() == here);
                (local_trustee().index(), ran_here)
            })
        })
        .collect();
    let seen: Vec<_> = fibers.into_iter().map(|f| f.join().unwrap()).collect();
    assert!(
        seen.contains(&(0, true)) && seen.contains(&(1, false)),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|&(worker, inline)| inline == (worker == 0)),
        "{seen:?}"
    );
    // Nested apply on the same trustee from inside a delegated closure is the local shortcut too.
    let other = rt().trustee(0).entrust(10u64);
    assert_eq!(
        counter.apply(move |c| {
            *c += 1;
            other.apply(|v| *v + 1)
        }),
        11
    );
}

#[test]
fn re_entering_the_same_property_panics_with_a_clear_message() {
    let counter = rt().trustee(0).entrust(0u64);
    let again = counter.clone();
    let err = catch_unwind(AssertUnwindSafe(|| {
        counter.apply(move |_| again.apply(|c| *c))
    }))
    .unwrap_err();
    assert!(panic_message(err).starts_with("re-entrant `apply`"));
    assert_eq!(counter.apply(|c| *c), 0, "the property stays usable");
}

#[test]
fn blocking_apply_to_another_trustee_inside_a_closure_panics_naming_the_way_out() {
    let a = rt().trustee(0).entrust(0u64);
    let b = rt().trustee(1).entrust(0u64);
    let err = catch_unwind(AssertUnwindSafe(|| a.apply(move |_| b.apply(|v| *v)))).unwrap_err();
    let msg = panic_message(err);
    assert!(
        msg.contains("apply_then") && msg.contains("launch"),
        "{msg}"
    );
}

#[test]
fn may_coroutines_are_clients() {
    rt();
    let counter = entrust(0u64);
    may::config().set_workers(2);
    let handles: Vec<_> = (0..64)
        .map(|_| {
            let counter = counter.clone();
            // SAFETY: the coroutine uses no thread-local storage of its own.
            unsafe {
                may::coroutine::spawn(move || {
                    for _ in 0..1000 {
                        counter.apply(|c| *c += 1);
                    }
                })
            }
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(counter.apply(|c| *c), 64_000);
}

/// `apply_then` from `may` coroutines, more at once than a batch holds: a coroutine that finds the batch
/// full waits for room holding its thread's client, so it must not yield to `may` there (another coroutine
/// on the thread would find the client borrowed, and the coroutine could resume on another thread).
#[test]
fn may_coroutines_pipeline_more_apply_then_than_a_batch_holds() {
    rt();
    let counter = rt().trustee(1).entrust(0u64);
    let ran = Arc::new(AtomicU64::new(0));
    may::config().set_workers(2);
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let (counter, ran) = (counter.clone(), ran.clone());
            // SAFETY: the coroutine uses no thread-local storage of its own.
            unsafe {
                may::coroutine::spawn(move || {
                    for _ in 0..2000 {
                        let ran = ran.clone();
                        counter.apply_then(
                            |c| {
                                *c += 1;
                                for i in 0..50 {
                                    std::hint::black_box(i);
                                }
                            },
                            move |()| {
                                ran.fetch_add(1, Ordering::Relaxed);
                            },
                        );
                    }
                    trust_core::wait_pending();
                })
            }
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(counter.apply(|c| *c), 64_000);
    assert_eq!(ran.load(Ordering::Relaxed), 64_000);
}

#[test]
fn a_waiting_thread_sleeps_instead_of_spinning() {
    let slow = rt().trustee(1).entrust(());
    let before = thread_cpu();
    slow.apply(|_| thread::sleep(std::time::Duration::from_millis(300)));
    let used = thread_cpu() - before;
    assert!(
        used < std::time::Duration::from_millis(100),
        "waiting for 300 ms burnt {used:?} of CPU"
    );
}

/// Runs `f` in a fiber on worker `w` (spawn is round-robin: retries until one lands there).
fn on_worker<R: Send + 'static>(w: usize, f: impl Fn() -> R + Send + Sync + 'static) -> R {
    let f = Arc::new(f);
    loop {
        let f = f.clone();
        let fiber = spawn(move || (local_trustee().index() == w).then(|| f()));
        if let Some(r) = fiber.join().unwrap() {
            return r;
        }
    }
}

/// A lone fiber (its worker's only request to that trustee, nothing else to run) publishes its batch itself
/// and watches for the answer instead of suspending (`fiber::call_alone`). It must give up as soon as its
/// worker has other work: here a plain thread keeps calling the fiber's own trustee, which only that worker
/// serves, while the fiber makes 20,000 round trips to the other trustee; an `apply_then` answered in the
/// same batch as its round trip must still have its continuation run (by the worker, afterwards); and a request
/// that panics on the trustee must bring its panic back to the fiber waiting in place.
#[test]
fn a_lone_fiber_waiting_in_place_leaves_its_worker_to_others_and_loses_nothing() {
    let mine = rt().trustee(0).entrust(0u64);
    let theirs = rt().trustee(1).entrust(0u64);
    const TRIPS: u64 = 20_000;
    let caller = {
        let mine = mine.clone();
        thread::spawn(move || {
            for _ in 0..TRIPS {
                mine.apply(|c| *c += 1);
            }
        })
    };
    let remote = theirs.clone();
    let (last, thens) = on_worker(0, move || {
        let thens = Arc::new(AtomicUsize::new(0));
        let mut last = 0;
        for i in 0..TRIPS {
            if i % 100 == 0 {
                let thens = thens.clone();
                remote.apply_then(
                    |c| *c += 1,
                    move |()| {
                        thens.fetch_add(1, Ordering::SeqCst);
                    },
                );
            }
            last = remote.apply(|c| {
                *c += 1;
                *c
            });
            if i % 1000 == 999 {
                let panicked = catch_unwind(AssertUnwindSafe(|| {
                    remote.apply(move |_| -> u64 { panic!("request {i} refused") })
                }));
                let message = panic_message(panicked.expect_err("the request panicked"));
                assert_eq!(message, format!("request {i} refused"));
            }
        }
        trust_core::wait_pending();
        (last, thens.load(Ordering::SeqCst) as u64)
    });
    caller.join().unwrap();
    assert_eq!(thens, TRIPS / 100, "every continuation ran once");
    assert_eq!(
        last,
        TRIPS + TRIPS / 100,
        "each answer is its own request's"
    );
    assert_eq!(theirs.apply(|c| *c), TRIPS + TRIPS / 100);
    assert_eq!(
        mine.apply(|c| *c),
        TRIPS,
        "the plain thread's requests were all served"
    );
}

/// Two lone fibers, one on each worker, each calling the other worker's trustee: each waits in place while
/// its own worker must serve the other's requests, so each must notice the other's request and suspend.
#[test]
fn two_lone_fibers_calling_each_others_trustee_both_finish_exactly() {
    let on_0 = rt().trustee(0).entrust(0u64);
    let on_1 = rt().trustee(1).entrust(0u64);
    const TRIPS: u64 = 20_000;
    /// Increments `counter` `TRIPS` times from a fiber on worker `w`; the last value it saw.
    fn calls(w: usize, counter: Trust<u64>) -> thread::JoinHandle<u64> {
        thread::spawn(move || {
            on_worker(w, move || {
                let mut last = 0;
                for _ in 0..TRIPS {
                    last = counter.apply(|c| {
                        *c += 1;
                        *c
                    });
                }
                last
            })
        })
    }
    let a = calls(0, on_1.clone());
    let b = calls(1, on_0.clone());
    assert_eq!(a.join().unwrap(), TRIPS);
    assert_eq!(b.join().unwrap(), TRIPS);
    assert_eq!(on_0.apply(|c| *c), TRIPS);
    assert_eq!(on_1.apply(|c| *c), TRIPS);
}

/// A request alone on its channel whose answer is slow (the closure sleeps 100 us, longer than its caller
/// watches for it): the caller stops watching and waits as any other — a plain thread parks
/// (`Outbox::call_alone` records its batch for `poll`), a fiber suspends (`fiber::call_alone` gives up) —
/// and still gets its own result, a heap value moved out of the response slot once.
#[test]
fn a_lone_request_whose_answer_is_slow_still_gets_its_own_result() {
    let log = rt().trustee(1).entrust(Vec::<u64>::new());
    fn calls(log: &Trust<Vec<u64>>, from: u64) -> Vec<String> {
        (from..from + 100)
            .map(|i| {
                log.apply(move |log| {
                    thread::sleep(Duration::from_micros(100));
                    log.push(i);
                    format!("request {i}")
                })
            })
            .collect()
    }
    let expected = |from: u64| {
        (from..from + 100)
            .map(|i| format!("request {i}"))
            .collect::<Vec<_>>()
    };
    // A caller whose answer is lost (nobody moves it, or wakes the fiber) would wait forever: a deadline.
    let (done, results) = std::sync::mpsc::channel();
    let from = log.clone();
    thread::spawn(move || {
        let from_thread = calls(&from, 0);
        let from_fiber = on_worker(0, move || calls(&from, 1000));
        done.send((from_thread, from_fiber)).unwrap();
    });
    let (from_thread, from_fiber) = results
        .recv_timeout(Duration::from_secs(30))
        .expect("a lone request with a slow answer never got it");
    assert_eq!(from_thread, expected(0), "from a plain thread");
    assert_eq!(
        from_fiber,
        expected(1000),
        "from a fiber alone on its worker"
    );
    let all: Vec<u64> = (0..100).chain(1000..1100).collect();
    assert_eq!(log.apply(|log| log.clone()), all, "each ran once, in order");
}
