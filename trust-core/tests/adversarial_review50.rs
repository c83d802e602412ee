//! Review 50: the runtime driven by real executors and thread pools from crates.io other than tokio (review 45
//! did tokio): `futures-executor` (`block_on`, a `LocalPool` of 1,000 local tasks spawning more, its
//! `ThreadPool` with 1,000 tasks and its handle dropped while they wait), `pollster::block_on` (on a thread, on a
//! fiber, inside a continuation), `async-executor` + `futures-lite` (smol's executor: 1,000 tasks on three
//! threads, futures dropped after their first poll, raced against a timer, tasks cancelled and the executor
//! dropped with requests in flight, 110,000 abandoned futures against memory growth), `async-task` with a
//! schedule function that polls inside `wake` (tasks run on the trustees' threads), `rayon` (`par_iter` closures
//! calling `apply`, `apply_with`, `apply_then` + `wait_pending` from the pool's threads, plain threads to the
//! runtime; continuations that run rayon work which waits again; `rayon::scope`; `broadcast` of
//! `wait_pending`; 24 threads whose channels go cold; 40 pools of 4 threads exiting with `apply_then`s in
//! flight; handles cloned, dropped and `into_inner`'d on pool threads; a delegated closure that runs
//! `par_iter` on its property) and `std::thread::scope` threads that pipeline `apply_then` and exit without
//! `wait_pending`. Each test counts exactly: final values, closures run, continuations run (on the issuing
//! thread), results and captures dropped once; each runs under a deadline (`within`), so a hang fails.
//!
//! Findings (the traps the docs did not state are in docs/delegation.md now):
//! - `middle_answers_of_a_mail_are_not_held_back_by_a_later_closure` (ignored, fails): of 10 `apply_async`s
//!   answered by one mail, the 8 the trustee leaves on its relay stay unwoken for the whole length of a later
//!   closure from another client (1 s here: 2 of 10 woken throughout) when the executors of the two it woke do
//!   not poll at once; the relay is drained by a poll or "after a few idle rounds" (`worker/run.rs`), and a
//!   long closure is one round. A closure that waits for one of those tasks waits for itself.
//! - `std::thread::scope` returns before its threads' thread-locals are destroyed, and so before a thread that
//!   returned without `wait_pending` has sent its last `apply_then`s: read right after the scope, a counter that
//!   4 threads x 100 `apply_then`s increment was short in 45 of 50 runs (exact shortly after; `JoinHandle::join`
//!   waits for the thread-locals). `scoped_threads_pipeline_apply_then_and_exit_without_wait_pending`.
//! - A rayon pool's threads go back to the pool with their last `apply_then`s unsent: after a `par_iter` of 100
//!   on 3 threads the counter read 1, and a `try_unwrap` waited until `pool.broadcast(|_| wait_pending())`.
//!   `rayon_broadcast_of_wait_pending_releases_a_waiting_try_unwrap`.
//! - An executor that polls inside `wake` (async-task) runs the task on the trustee's thread: a blocking call
//!   to another trustee there panicked with the message for "an `apply_then` continuation on a worker", a case
//!   the program does not have; the message names this case too now (`call.rs`).
//!   `async_task_polled_inside_wake_runs_on_the_trustees`.
//! - Deadlocks the runtime cannot see (ignored tests): `block_on` of an `apply_async` inside delegated closures
//!   to each other's trustee (`block_on_inside_delegated_closures_to_each_others_trustee`), and a delegated
//!   closure that waits for a rayon pool whose threads wait on its trustee
//!   (`rayon_delegated_closure_waiting_for_the_pool_that_waits_on_it`).
//! - Also stated now: an async task that awaits what an `apply_then` continuation of its own thread provides
//!   waits for good (an executor's park or an `apply_async` poll runs no continuation).
//!
//! Held: a `LocalPool` loop that alternates `run_until_stalled` and `wait_pending` to drive tasks woken by
//! continuations; every count exact under `futures-executor`, `pollster`, `async-executor`, `async-task` and `rayon`;
//! cancellation at every stage (each closure polled once ran once, each result dropped once); a dropped pool
//! handle; thread exits with requests in flight; cold channels; channels of 160 exited threads forgotten;
//! 110,000 abandoned futures grow memory by less than 16 MiB; `wait_pending` nested in continuations and rayon
//! work stealing.

#[macro_use]
mod common;

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use async_executor::Executor;
use futures_lite::future;
use futures_task::{LocalFutureObj, LocalSpawn};
use rayon::prelude::*;
use trust_core::{Trust, spawn, wait_pending};

use common::{CountsDrops, Gate, child_ok, eventually, load, panic_message, quiet, rt, within};

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// Blocks `t`'s trustee on a new gate (from a thread of its own), and returns once the gate's closure runs.
fn hold<T: Send + 'static>(t: &Trust<T>) -> (Arc<Gate>, std::thread::JoinHandle<()>) {
    let gate = Arc::new(Gate::default());
    let (g, t) = (gate.clone(), t.clone());
    let h = std::thread::spawn(move || t.apply(move |_| g.wait()));
    eventually("the gate's closure runs", || {
        gate.entered.load(Ordering::SeqCst)
    });
    (gate, h)
}

/// A one-shot signal for executor threads to stop on (`Executor::run` until it fires).
#[derive(Default)]
struct Stop {
    fired: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Stop {
    fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        for w in std::mem::take(&mut *self.wakers.lock().unwrap()) {
            w.wake();
        }
    }
    async fn fired(&self) {
        poll_fn(|cx| {
            let mut wakers = self.wakers.lock().unwrap();
            if self.fired.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            wakers.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Runs `fut` on `ex`, driven by this thread and `helpers` more threads that run `ex` too (smol's pattern for
/// a multi-threaded executor); the helpers stop and are joined once `fut` is done.
fn drive<T>(ex: &Executor<'_>, helpers: usize, fut: impl Future<Output = T>) -> T {
    let stop = Stop::default();
    std::thread::scope(|s| {
        for _ in 0..helpers {
            s.spawn(|| future::block_on(ex.run(stop.fired())));
        }
        let r = future::block_on(ex.run(fut));
        stop.fire();
        r
    })
}

/// A timer future (the part of smol not pulled in: `async-io`'s reactor): a thread of its own sleeps, then wakes it.
struct Timer {
    after: Duration,
    state: Option<Arc<(AtomicBool, Mutex<Option<Waker>>)>>,
}

fn timer(after: Duration) -> Timer {
    Timer { after, state: None }
}

impl Future for Timer {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let after = self.after;
        let state = self.state.get_or_insert_with(|| {
            let state = Arc::new((AtomicBool::new(false), Mutex::new(None::<Waker>)));
            let s = state.clone();
            std::thread::spawn(move || {
                std::thread::sleep(after);
                s.0.store(true, Ordering::SeqCst);
                if let Some(w) = s.1.lock().unwrap().take() {
                    w.wake();
                }
            });
            state
        });
        let mut slot = state.1.lock().unwrap();
        if state.0.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        *slot = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Counts the continuations that ran, and those that ran on a thread other than their issuer's.
#[derive(Default)]
struct Ran {
    ran: AtomicUsize,
    elsewhere: AtomicUsize,
}

impl Ran {
    /// To call in a continuation issued on thread `issuer`.
    fn here(&self, issuer: ThreadId) {
        self.ran.fetch_add(1, Ordering::SeqCst);
        if std::thread::current().id() != issuer {
            self.elsewhere.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn counts(&self) -> (usize, usize) {
        (load(&self.ran), load(&self.elsewhere))
    }
}

fn me() -> ThreadId {
    std::thread::current().id()
}

// ---------------------------------------------------------------------------------------------------------
// futures-executor

/// `futures_executor::block_on` of `apply_async` from a plain thread: 2,000 futures awaited one after another,
/// alternating between the two trustees, each applied once and in order (each sees the value the one before it
/// left), each result (a drop counter) dropped once; a result over 512 bytes (boxed) comes back intact; a panic
/// in the closure resumes in `block_on`'s caller with its payload, and the property stays usable.
#[test]
fn futures_block_on_applies_in_order_and_drops_each_result_once() {
    quiet();
    within(30, || {
        let a = rt().trustee(0).entrust(0u64);
        let b = rt().trustee(1).entrust(0u64);
        let drops = counter();
        for i in 1..=1000u64 {
            for t in [&a, &b] {
                let d = drops.clone();
                let (now, token) = futures_executor::block_on(t.apply_async(move |c| {
                    *c += 1;
                    (*c, CountsDrops(d))
                }));
                assert_eq!(now, i, "each applied once, in order");
                drop(token);
            }
        }
        assert_eq!(load(&drops), 2000, "each result dropped once");
        let big = futures_executor::block_on(b.apply_async(|c| [*c; 100]));
        assert_eq!(big, [1000u64; 100]);
        let r = catch_unwind(AssertUnwindSafe(|| {
            futures_executor::block_on(a.apply_async(|c| {
                *c += 1;
                if *c > 0 {
                    panic!("boom {c}");
                }
            }))
        }));
        assert_eq!(r.map_err(panic_message), Err("boom 1001".to_string()));
        assert_eq!(futures_executor::block_on(a.apply_async(|c| *c)), 1001);
        assert_eq!((a.apply(|c| *c), b.apply(|c| *c)), (1001, 1000));
    });
}

/// A `futures_executor::LocalPool` (one thread, `!Send` tasks sharing an `Rc`) running 1,000 tasks, each awaiting
/// three `apply_async`s on two trustees and spawning a second task that awaits one more; `run_until_stalled`
/// first (it returns with every task waiting for a trustee: no lost wake-up when it parks after), then `run`.
/// Exact: every increment applied once (each value seen exactly once), every task finished, each result dropped
/// once.
#[test]
fn futures_local_pool_runs_a_thousand_tasks_that_spawn_more() {
    const N: u64 = 1000;
    within(30, || {
        let a = rt().trustee(0).entrust(0u64);
        let b = rt().trustee(1).entrust(0u64);
        let drops = counter();
        let seen_a = Rc::new(RefCell::new(Vec::new()));
        let seen_b = Rc::new(RefCell::new(Vec::new()));
        let finished = Rc::new(Cell::new(0u64));
        let mut pool = futures_executor::LocalPool::new();
        let spawner = pool.spawner();
        for _ in 0..N {
            let (a, b, drops) = (a.clone(), b.clone(), drops.clone());
            let (seen_a, seen_b, finished) = (seen_a.clone(), seen_b.clone(), finished.clone());
            let inner = spawner.clone();
            let task = async move {
                let d = drops.clone();
                let (x, token) = a
                    .apply_async(move |c| {
                        *c += 1;
                        (*c, CountsDrops(d))
                    })
                    .await;
                drop(token);
                seen_a.borrow_mut().push(x);
                let y = b
                    .apply_async(|c| {
                        *c += 1;
                        *c
                    })
                    .await;
                seen_b.borrow_mut().push(y);
                // Read back from the other trustee: at least what this task added.
                assert!(a.apply_async(|c| *c).await >= x);
                let (a2, f2) = (a.clone(), finished.clone());
                inner
                    .spawn_local_obj(LocalFutureObj::new(Box::new(async move {
                        a2.apply_async(|c| *c += 1_000_000).await;
                        f2.set(f2.get() + 1);
                    })))
                    .unwrap();
                finished.set(finished.get() + 1);
            };
            spawner
                .spawn_local_obj(LocalFutureObj::new(Box::new(task)))
                .unwrap();
        }
        pool.run_until_stalled();
        pool.run();
        assert_eq!(
            finished.get(),
            2 * N,
            "every task and every spawned task finished"
        );
        let mut sa = seen_a.borrow().clone();
        let mut sb = seen_b.borrow().clone();
        sa.sort_unstable();
        sb.sort_unstable();
        // The spawned tasks' increments interleave with the first ones': `x` counts both.
        assert_eq!(sa.len(), N as usize);
        assert_eq!(
            sb,
            (1..=N).collect::<Vec<_>>(),
            "each increment of b seen once"
        );
        sa.dedup_by_key(|x| *x % 1_000_000);
        assert_eq!(sa.len(), N as usize, "each increment of a seen once");
        assert_eq!(a.apply(|c| *c), N + N * 1_000_000);
        assert_eq!(load(&drops), N as usize, "each result dropped once");
    });
}

/// `futures_executor::ThreadPool` (3 threads) with 1,000 tasks awaiting an increment that a held trustee answers
/// only after the pool's handle was dropped: the tasks keep their pool alive (their wakers hold it), every one
/// completes, each value 1..=1000 is seen once, each result dropped once, and the pool's threads stop after.
#[test]
fn futures_thread_pool_of_a_thousand_tasks_outlives_its_dropped_handle() {
    const N: usize = 1000;
    within(30, || {
        let t = rt().trustee(0).entrust(0u64);
        let (drops, stopped) = (counter(), counter());
        let (gate, holder) = hold(&t);
        let s = stopped.clone();
        let pool = futures_executor::ThreadPool::builder()
            .pool_size(3)
            .before_stop(move |_| {
                s.fetch_add(1, Ordering::SeqCst);
            })
            .create()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let sent = counter();
        for _ in 0..N {
            let (t, tx, d, sent) = (t.clone(), tx.clone(), drops.clone(), sent.clone());
            pool.spawn_ok(async move {
                let fut = t.apply_async(move |c| {
                    *c += 1;
                    (*c, CountsDrops(d))
                });
                sent.fetch_add(1, Ordering::SeqCst);
                let (v, token) = fut.await;
                drop(token);
                tx.send(v).unwrap();
            });
        }
        eventually("every task made its request", || load(&sent) == N);
        drop(pool);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(load(&stopped), 0, "the tasks keep the pool running");
        gate.open();
        holder.join().unwrap();
        let mut got: Vec<u64> = (0..N)
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(20))
                    .expect("a task never finished")
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, (1..=N as u64).collect::<Vec<_>>());
        assert_eq!(t.apply(|c| *c), N as u64);
        eventually("each result dropped", || load(&drops) == N);
        eventually("the pool's threads stop once no task holds it", || {
            load(&stopped) == 3
        });
        assert_eq!(load(&drops), N, "each result dropped once");
    });
}

// ---------------------------------------------------------------------------------------------------------
// pollster

/// `pollster::block_on` of `apply_async`: 1,000 from a plain thread to each trustee (in order, exact), a boxed
/// result, on a fiber (to its own trustee: the local shortcut; to the other: the worker thread waits on
/// pollster's condvar until answered), and inside an `apply_then` continuation that `wait_pending` runs on a
/// plain thread (its poll publishes and waits while the thread's client is in use).
#[test]
fn pollster_block_on_from_a_thread_a_fiber_and_a_continuation() {
    within(30, || {
        let a = rt().trustee(0).entrust(0u64);
        let b = rt().trustee(1).entrust(0u64);
        for i in 1..=1000u64 {
            assert_eq!(
                pollster::block_on(a.apply_async(|c| {
                    *c += 1;
                    *c
                })),
                i
            );
            assert_eq!(
                pollster::block_on(b.apply_async(|c| {
                    *c += 2;
                    *c
                })),
                2 * i
            );
        }
        assert_eq!(pollster::block_on(a.apply_async(|c| [*c; 70])), [1000; 70]);
        let (a2, b2) = (a.clone(), b.clone());
        let on_fiber = spawn(move || {
            let mine = trust_core::local_trustee().index();
            let (own, other) = if mine == 0 { (&a2, &b2) } else { (&b2, &a2) };
            let x = pollster::block_on(own.apply_async(|c| {
                *c += 10;
                *c
            }));
            let y = pollster::block_on(other.apply_async(|c| {
                *c += 10;
                *c
            }));
            (mine, x, y)
        })
        .join()
        .unwrap();
        let (mine, x, y) = on_fiber;
        let (ax, bx) = if mine == 0 { (x, y) } else { (y, x) };
        assert_eq!((ax, bx), (1010, 2010));
        let ran = Arc::new(Ran::default());
        let drops = counter();
        let issuer = me();
        for _ in 0..100 {
            let (b3, ran, d) = (b.clone(), ran.clone(), CountsDrops(drops.clone()));
            a.apply_then(
                |c| {
                    *c += 1;
                    *c
                },
                move |_| {
                    let _d = d;
                    pollster::block_on(b3.apply_async(|c| *c += 1));
                    ran.here(issuer);
                },
            );
        }
        wait_pending();
        assert_eq!(ran.counts(), (100, 0), "each continuation ran once, here");
        assert_eq!(load(&drops), 100);
        assert_eq!((a.apply(|c| *c), b.apply(|c| *c)), (1110, 2110));
    });
}

// ---------------------------------------------------------------------------------------------------------
// async-executor + futures-lite (smol's executor)

/// 1,000 tasks on an `async_executor::Executor` run by three threads, all incrementing one counter with
/// `apply_async` (every tenth with a blocking `apply` instead, which blocks its executor thread: allowed), each
/// also awaiting a read of a second property: the counter ends at exactly 1,000 and the values the tasks saw
/// are 1..=1000, each once.
#[test]
fn async_executor_thousand_tasks_on_three_threads_count_exactly() {
    const N: u64 = 1000;
    within(30, || {
        let t = rt().trustee(1).entrust(0u64);
        let other = rt().trustee(0).entrust(7u64);
        let ex = Executor::new();
        let mut got = drive(&ex, 2, async {
            let tasks: Vec<_> = (0..N)
                .map(|i| {
                    let (t, other) = (t.clone(), other.clone());
                    ex.spawn(async move {
                        let v = if i % 10 == 0 {
                            t.apply(|c| {
                                *c += 1;
                                *c
                            })
                        } else {
                            t.apply_async(|c| {
                                *c += 1;
                                *c
                            })
                            .await
                        };
                        assert_eq!(other.apply_async(|o| *o).await, 7);
                        v
                    })
                })
                .collect();
            let mut got = Vec::new();
            for task in tasks {
                got.push(task.await);
            }
            got
        });
        got.sort_unstable();
        assert_eq!(got, (1..=N).collect::<Vec<_>>());
        assert_eq!(t.apply(|c| *c), N);
    });
}

/// Futures cancelled mid-flight on `async-executor`, with the trustee held so that none is answered yet:
/// 300 futures polled once (`futures_lite::future::poll_once`) and dropped; 300 raced (`future::or`) against a
/// 1 ms timer, which wins; 300 tasks cancelled (`Task` dropped) after their request went out; 300 tasks left
/// waiting when the executor itself is dropped. Every closure polled once runs exactly once (the counter ends at
/// 1,200), each result is dropped exactly once (on arrival, nobody waiting), each capture once, and nothing
/// hangs.
#[test]
fn async_executor_cancels_futures_mid_flight_each_closure_once() {
    const N: usize = 300;
    within(40, || {
        let t = rt().trustee(0).entrust(0u64);
        let (results, captures) = (counter(), counter());
        let (gate, holder) = hold(&t);
        let request = |t: &Trust<u64>| {
            let (r, cap) = (results.clone(), CountsDrops(captures.clone()));
            let t = t.clone();
            async move {
                t.apply_async(move |c| {
                    let _cap = cap;
                    *c += 1;
                    CountsDrops(r)
                })
                .await
            }
        };
        // 1: polled once, dropped.
        for _ in 0..N {
            assert!(future::block_on(future::poll_once(request(&t))).is_none());
        }
        // 2: raced against a timer that wins.
        let ex = Executor::new();
        let lost = drive(&ex, 1, async {
            let races: Vec<_> = (0..N)
                .map(|_| {
                    let req = request(&t);
                    ex.spawn(async move {
                        future::or(
                            async {
                                req.await;
                                false
                            },
                            async {
                                timer(Duration::from_millis(1)).await;
                                true
                            },
                        )
                        .await
                    })
                })
                .collect();
            let mut lost = 0;
            for r in races {
                lost += usize::from(r.await);
            }
            lost
        });
        assert_eq!(lost, N, "the held trustee answered none: every timer won");
        // 3: tasks cancelled once their request is out.
        let sent = counter();
        let tasks: Vec<_> = (0..N)
            .map(|_| {
                let (req, sent) = (request(&t), sent.clone());
                ex.spawn(async move {
                    let mut req = Box::pin(req);
                    assert!(future::poll_once(&mut req).await.is_none());
                    sent.fetch_add(1, Ordering::SeqCst);
                    req.await;
                })
            })
            .collect();
        while load(&sent) < N {
            assert!(ex.try_tick(), "a task is ready until every request is out");
        }
        drop(tasks);
        // 4: the executor dropped with tasks awaiting.
        let sent = counter();
        for _ in 0..N {
            let (req, sent) = (request(&t), sent.clone());
            ex.spawn(async move {
                let mut req = Box::pin(req);
                assert!(future::poll_once(&mut req).await.is_none());
                sent.fetch_add(1, Ordering::SeqCst);
                req.await;
            })
            .detach();
        }
        while load(&sent) < N {
            assert!(ex.try_tick());
        }
        drop(ex);
        assert_eq!(load(&results), 0, "nothing answered yet");
        gate.open();
        holder.join().unwrap();
        assert_eq!(t.apply(|c| *c), 4 * N as u64, "each closure ran once");
        eventually("every result dropped on arrival", || {
            load(&results) == 4 * N
        });
        eventually("every capture dropped", || load(&captures) == 4 * N);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            (load(&results), load(&captures)),
            (4 * N, 4 * N),
            "once each"
        );
    });
}

/// Memory: 100,000 `apply_async` futures polled once and dropped (`poll_once`), 1,000 at a time between two
/// awaited ones, grow the process's resident memory by less than 16 MiB: abandoned requests are freed when
/// their answers arrive (a leak of their ~200-byte allocations would be 20 MiB).
#[test]
fn abandoned_futures_do_not_grow_memory() {
    in_child!("abandoned_futures_do_not_grow_memory", 40);
    fn rss_kib() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
    let t = rt().trustee(1).entrust(0u64);
    let results = counter();
    let round = |n: usize| {
        for _ in 0..n {
            let r = results.clone();
            let fut = t.apply_async(move |c| {
                *c += 1;
                CountsDrops(r)
            });
            assert!(future::block_on(future::poll_once(fut)).is_none());
        }
        future::block_on(t.apply_async(|_| ()));
    };
    for _ in 0..10 {
        round(1000);
    }
    let before = rss_kib();
    for _ in 0..100 {
        round(1000);
    }
    eventually("every result dropped", || load(&results) == 110_000);
    let grown = rss_kib().saturating_sub(before);
    assert_eq!(t.apply(|c| *c), 110_000);
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB");
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// rayon

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// `par_iter` on a 3-thread rayon pool whose closures call blocking `apply` and `apply_with` on properties of
/// both trustees (rayon's threads are plain threads to the runtime): 3,000 increments, 3,000 `apply_with`s of
/// a `Vec` argument, each applied once; the values returned are each seen once.
#[test]
fn rayon_par_iter_with_blocking_apply() {
    const N: u64 = 3000;
    within(30, || {
        let a = rt().trustee(0).entrust(0u64);
        let b = rt().trustee(1).entrust(Vec::<u64>::new());
        let mut seen: Vec<u64> = pool(3).install(|| {
            (0..N)
                .into_par_iter()
                .map(|i| {
                    let v = a.apply(|c| {
                        *c += 1;
                        *c
                    });
                    let len = b.apply_with(
                        |v, more: Vec<u64>| {
                            v.extend(more);
                            v.len()
                        },
                        vec![i; 2],
                    );
                    assert!(len >= 2);
                    v
                })
                .collect()
        });
        seen.sort_unstable();
        assert_eq!(seen, (1..=N).collect::<Vec<_>>());
        let mut all = b.apply(std::mem::take);
        all.sort_unstable();
        assert_eq!(all, (0..N).flat_map(|i| [i, i]).collect::<Vec<_>>());
    });
}

/// `par_iter` whose closures each issue 10 `apply_then`s (continuations capturing an `Rc` of the job and a drop
/// counter) and end with `wait_pending`: once `wait_pending` returns, the job's own 10 continuations have run (on
/// its thread); then jobs that issue without waiting, followed by `broadcast(|_| wait_pending())` on the pool
/// (the way to drain a pool's threads, which go idle with their last few `apply_then`s unsent). Exact: 2 x 3,000
/// increments, every continuation ran once on its issuing thread, each capture dropped once.
#[test]
fn rayon_par_iter_with_apply_then_and_wait_pending() {
    const JOBS: u64 = 300;
    within(30, || {
        let a = rt().trustee(0).entrust(0u64);
        let b = rt().trustee(1).entrust(0u64);
        let (ran, drops) = (Arc::new(Ran::default()), counter());
        let p = pool(3);
        p.install(|| {
            (0..JOBS).into_par_iter().for_each(|_| {
                let mine = Rc::new(Cell::new(0));
                let issuer = me();
                for k in 0..10 {
                    let (mine, ran, d) = (mine.clone(), ran.clone(), CountsDrops(drops.clone()));
                    let t = if k % 2 == 0 { &a } else { &b };
                    t.apply_then(
                        |c| {
                            *c += 1;
                            *c
                        },
                        move |_| {
                            let _d = d;
                            mine.set(mine.get() + 1);
                            ran.here(issuer);
                        },
                    );
                }
                wait_pending();
                assert_eq!(
                    mine.get(),
                    10,
                    "the job's continuations ran in its wait_pending"
                );
            })
        });
        assert_eq!(ran.counts(), (10 * JOBS as usize, 0));
        assert_eq!(load(&drops), 10 * JOBS as usize);
        assert_eq!((a.apply(|c| *c), b.apply(|c| *c)), (5 * JOBS, 5 * JOBS));
        p.install(|| {
            (0..JOBS).into_par_iter().for_each(|_| {
                let issuer = me();
                for k in 0..10 {
                    let (ran, d) = (ran.clone(), CountsDrops(drops.clone()));
                    let t = if k % 2 == 0 { &a } else { &b };
                    t.apply_then(
                        |c| *c += 1,
                        move |()| {
                            let _d = d;
                            ran.here(issuer);
                        },
                    );
                }
            })
        });
        p.broadcast(|_| wait_pending());
        assert_eq!(ran.counts(), (20 * JOBS as usize, 0));
        assert_eq!(load(&drops), 20 * JOBS as usize);
        assert_eq!((a.apply(|c| *c), b.apply(|c| *c)), (10 * JOBS, 10 * JOBS));
    });
}

/// `rayon::scope` spawning 200 jobs, each issuing an `apply_then` whose continuation (run by the job's
/// `wait_pending`, on a rayon thread) runs `rayon::join` of two halves that each issue 5 more `apply_then`s and
/// `wait_pending` themselves: a `wait_pending` inside a continuation inside a `wait_pending`, and rayon stealing
/// jobs (which wait too) into a thread while it is inside one. Exact: 200 + 2,000 increments, every continuation
/// once, on its issuing thread.
#[test]
fn rayon_scope_continuations_that_run_rayon_work_and_wait_again() {
    const JOBS: usize = 200;
    within(30, || {
        let t = rt().trustee(1).entrust(0u64);
        let (outer, inner) = (Arc::new(Ran::default()), Arc::new(Ran::default()));
        let p = pool(3);
        let half = |t: &Trust<u64>, inner: &Arc<Ran>| {
            let issuer = me();
            for _ in 0..5 {
                let inner = inner.clone();
                t.apply_then(|c| *c += 1, move |()| inner.here(issuer));
            }
            wait_pending();
        };
        p.scope(|s| {
            for _ in 0..JOBS {
                let (t, outer, inner) = (t.clone(), outer.clone(), inner.clone());
                s.spawn(move |_| {
                    let issuer = me();
                    let t2 = t.clone();
                    t.apply_then(
                        |c| *c += 1,
                        move |()| {
                            rayon::join(|| half(&t2, &inner), || half(&t2, &inner));
                            outer.here(issuer);
                        },
                    );
                    wait_pending();
                });
            }
        });
        assert_eq!(outer.counts(), (JOBS, 0));
        assert_eq!(inner.counts(), (10 * JOBS, 0));
        assert_eq!(t.apply(|c| *c), 11 * JOBS as u64);
    });
}

/// A rayon pool whose 3 threads are dropped (the pool's handle dropped, the threads joined through a spawn
/// handler) while each has 100 `apply_then`s in flight to a held trustee and no `wait_pending`: the threads
/// exit, waiting for their answers; every request ran (300), each continuation and its capture were dropped
/// exactly once (run before the thread left, or dropped unrun on it), none ran on another thread.
#[test]
fn rayon_pool_threads_exit_with_apply_then_in_flight() {
    within(30, || {
        let t = rt().trustee(0).entrust(0u64);
        let (ran, drops) = (Arc::new(Ran::default()), counter());
        let handles = Arc::new(Mutex::new(Vec::new()));
        let h = handles.clone();
        let p = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .spawn_handler(move |thread| {
                h.lock()
                    .unwrap()
                    .push(std::thread::Builder::new().spawn(|| thread.run())?);
                Ok(())
            })
            .build()
            .unwrap();
        let (gate, holder) = hold(&t);
        let issued = p.broadcast(|_| {
            let issuer = me();
            for _ in 0..100 {
                let (ran, d) = (ran.clone(), CountsDrops(drops.clone()));
                t.apply_then(
                    |c| {
                        *c += 1;
                        *c
                    },
                    move |_| {
                        let _d = d;
                        ran.here(issuer);
                    },
                );
            }
            100
        });
        assert_eq!(issued.iter().sum::<usize>(), 300);
        drop(p);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            load(&drops),
            0,
            "the exiting threads wait for their answers"
        );
        gate.open();
        holder.join().unwrap();
        for h in std::mem::take(&mut *handles.lock().unwrap()) {
            h.join().unwrap();
        }
        assert_eq!(t.apply(|c| *c), 300, "every request ran");
        assert_eq!(
            load(&drops),
            300,
            "each continuation dropped once, by its thread's exit"
        );
        let (r, elsewhere) = ran.counts();
        assert!(r <= 300 && elsewhere == 0, "ran {r}, elsewhere {elsewhere}");
    });
}

/// A delegated closure that runs `par_iter_mut` over its property on a rayon pool (the trustee's thread waits
/// for rayon's threads; they do not delegate), from the test thread and from the pool's own threads' jobs on
/// another pool: exact sums.
#[test]
fn rayon_inside_a_delegated_closure() {
    within(30, || {
        let v = rt().trustee(1).entrust(vec![0u64; 10_000]);
        let inner = Arc::new(pool(2));
        for _ in 0..5 {
            let inner = inner.clone();
            v.apply(move |v| inner.install(|| v.par_iter_mut().for_each(|x| *x += 1)));
        }
        pool(2).install(|| {
            (0..20).into_par_iter().for_each(|_| {
                let inner = inner.clone();
                v.apply(move |v| inner.install(|| v.par_iter_mut().for_each(|x| *x += 1)));
            })
        });
        assert_eq!(v.apply(|v| v.iter().sum::<u64>()), 25 * 10_000);
    });
}

// ---------------------------------------------------------------------------------------------------------
// std::thread::scope

/// Four scoped threads each pipeline 1,001 `apply_then`s to each trustee (not a multiple of the 48 a thread
/// publishes at a time); two end with `wait_pending`, two exit without it. `scope` returns once their closures
/// have returned, before their thread-locals (their clients, holding the last unpublished `apply_then`s) are
/// destroyed: the waiting threads' requests have all run when it returns, the others' last requests land shortly
/// after (docs/delegation.md says so now). Exact in the end: 8,008 increments, each continuation dropped once
/// (the waiting threads' all run, on their thread), none run on another thread.
#[test]
fn scoped_threads_pipeline_apply_then_and_exit_without_wait_pending() {
    const PER: u64 = 1001;
    within(30, || {
        let a = rt().trustee(0).entrust(0u64);
        let b = rt().trustee(1).entrust(0u64);
        let (ran, drops) = (Arc::new(Ran::default()), counter());
        let waited = Arc::new(Ran::default());
        std::thread::scope(|s| {
            for i in 0..4 {
                let (a, b, ran, drops, waited) = (&a, &b, &ran, &drops, &waited);
                s.spawn(move || {
                    let issuer = me();
                    for _ in 0..PER {
                        for t in [a, b] {
                            let (ran, d) = (ran.clone(), CountsDrops(drops.clone()));
                            let waited = (i < 2).then(|| waited.clone());
                            t.apply_then(
                                |c| *c += 1,
                                move |()| {
                                    let _d = d;
                                    ran.here(issuer);
                                    if let Some(w) = waited {
                                        w.here(issuer);
                                    }
                                },
                            );
                        }
                    }
                    if i < 2 {
                        wait_pending();
                    }
                });
            }
        });
        assert_eq!(
            waited.counts(),
            (4 * PER as usize, 0),
            "the threads that waited: every continuation ran before scope returned"
        );
        let (now_a, now_b) = (a.apply(|c| *c), b.apply(|c| *c));
        assert!(
            now_a >= 2 * PER && now_b >= 2 * PER,
            "right after scope: {now_a}, {now_b}"
        );
        eventually("every request ran", || {
            a.apply(|c| *c) == 4 * PER && b.apply(|c| *c) == 4 * PER
        });
        eventually("every continuation dropped", || {
            load(&drops) == 8 * PER as usize
        });
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!((a.apply(|c| *c), b.apply(|c| *c)), (4 * PER, 4 * PER));
        assert_eq!(load(&drops), 8 * PER as usize, "once each");
        let (r, elsewhere) = ran.counts();
        assert!(
            (4 * PER as usize..=8 * PER as usize).contains(&r) && elsewhere == 0,
            "ran {r}, elsewhere {elsewhere}"
        );
    });
}

/// A pool's threads go back to rayon with their last `apply_then`s unsent (fewer than the 48 a thread publishes
/// at a time: documented, "call `wait_pending()` before a thread goes idle"): a `try_unwrap` on another thread
/// waits for them, as its rustdoc says. `broadcast(|_| wait_pending())` on the pool publishes them, and that
/// waiting `try_unwrap` then returns the value with every increment in it (no lost wake-up).
#[test]
fn rayon_broadcast_of_wait_pending_releases_a_waiting_try_unwrap() {
    const N: u64 = 100;
    within(30, || {
        let t = rt().trustee(0).entrust(0u64);
        let ran = Arc::new(Ran::default());
        let p = pool(3);
        p.install(|| {
            (0..N).into_par_iter().for_each(|_| {
                let (ran, issuer) = (ran.clone(), me());
                t.apply_then(|c| *c += 1, move |()| ran.here(issuer));
            })
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(t.try_unwrap().ok()).unwrap());
        // It waits for the pool's unsent requests (or has them all, if the pool's threads published them).
        let early = rx.recv_timeout(Duration::from_millis(100)).ok();
        p.broadcast(|_| wait_pending());
        let got = early.or_else(|| rx.recv_timeout(Duration::from_secs(10)).ok());
        assert_eq!(
            got,
            Some(Some(N)),
            "try_unwrap gives the value, every increment in it"
        );
        assert_eq!(ran.counts(), (N as usize, 0));
    });
}

/// 24 rayon threads (more than the 16 channels a worker looks at on every round: the others go cold after 4,096
/// quiet rounds and ring its doorbell) in 5 bursts of `par_iter` with blocking `apply` and `apply_then` +
/// `wait_pending`, 30 ms of silence between bursts so that their channels cool: exact counts, no request
/// stranded on a cold channel.
#[test]
fn rayon_many_threads_whose_channels_go_cold_between_bursts() {
    within(40, || {
        let a = rt().trustee(0).entrust(0u64);
        let b = rt().trustee(1).entrust(0u64);
        let p = pool(24);
        for burst in 1..=5u64 {
            p.install(|| {
                (0..480).into_par_iter().for_each(|i| {
                    if i % 2 == 0 {
                        a.apply(|c| *c += 1);
                    } else {
                        b.apply_then(|c| *c += 1, |()| {});
                        wait_pending();
                    }
                })
            });
            assert_eq!(
                (a.apply(|c| *c), b.apply(|c| *c)),
                (240 * burst, 240 * burst)
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    });
}

/// Thread churn: 40 rayon pools of 4 threads, one after another; each thread issues 60 `apply_then`s to each
/// trustee (not a multiple of 48: some unsent) and exits with them (the pool dropped, its threads joined). Every
/// request runs (9,600 per trustee), each continuation is dropped once, and the trustees forget the 160 exited
/// threads' channels (their `channels` metric back where it was, give or take this process's other threads).
#[test]
fn rayon_pool_churn_leaves_no_channel_behind() {
    in_child!("rayon_pool_churn_leaves_no_channel_behind", 40);
    let a = rt().trustee(0).entrust(0u64);
    let b = rt().trustee(1).entrust(0u64);
    let drops = counter();
    let channels = || rt().metrics().iter().map(|m| m.channels).sum::<u64>();
    let before = channels();
    for _ in 0..40 {
        let handles = Arc::new(Mutex::new(Vec::new()));
        let h = handles.clone();
        let p = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .spawn_handler(move |thread| {
                h.lock()
                    .unwrap()
                    .push(std::thread::Builder::new().spawn(|| thread.run())?);
                Ok(())
            })
            .build()
            .unwrap();
        p.broadcast(|_| {
            for _ in 0..60 {
                for t in [&a, &b] {
                    let d = CountsDrops(drops.clone());
                    t.apply_then(|c| *c += 1, move |()| drop(d));
                }
            }
        });
        drop(p);
        for h in std::mem::take(&mut *handles.lock().unwrap()) {
            h.join().unwrap();
        }
    }
    assert_eq!((a.apply(|c| *c), b.apply(|c| *c)), (9600, 9600));
    assert_eq!(load(&drops), 2 * 9600);
    eventually("the exited threads' channels are forgotten", || {
        channels() <= before + 2
    });
    child_ok();
}

/// **Known limitation** (review 50): a delegated closure that hands work to a rayon pool deadlocks when that
/// pool's threads are the ones waiting on the trustee. With a `Mutex` the same program works: the pool thread
/// holding the lock runs `install` on its own pool inline. Delegated, the closure runs on the trustee's thread,
/// which is no pool thread: `install` queues the job and blocks, and every pool thread is parked in `apply` on
/// that trustee (one waiting for this closure, the other queued behind it), so no thread is left to run it.
/// Stated in docs/delegation.md; ignored because it hangs (here: `within` fails after 5 s, in a child process).
#[test]
#[ignore = "review 50: deadlocks by design: a delegated closure that waits for a rayon pool whose threads wait on its trustee"]
fn rayon_delegated_closure_waiting_for_the_pool_that_waits_on_it() {
    in_child!(
        "rayon_delegated_closure_waiting_for_the_pool_that_waits_on_it",
        15
    );
    let v = rt().trustee(1).entrust(vec![1u64; 1000]);
    let p = Arc::new(pool(2));
    let p2 = p.clone();
    let sums = within(5, move || {
        p2.install(|| {
            (0..4)
                .into_par_iter()
                .map(|_| {
                    let p3 = p.clone();
                    v.apply(move |v| p3.install(|| v.par_iter().sum::<u64>()))
                })
                .collect::<Vec<_>>()
        })
    });
    assert_eq!(sums, vec![1000; 4]);
    child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// Handles from pool threads, and an executor that polls inside `wake`

/// Handles cloned and dropped 10,000 times on a fresh rayon pool's threads (threads that never made a call:
/// their count changes go by the trustee's count mail), then `try_unwrap` from this thread: `Ok` with the value
/// intact, never dropped. Then 1,000 clones each ending in `into_inner` on the pool's threads: exactly one gets
/// `Some`, and the value (a drop counter) is dropped exactly once, by whoever got it.
#[test]
fn rayon_threads_clone_drop_and_into_inner() {
    within(30, || {
        let drops = counter();
        let t = rt().trustee(1).entrust((7u64, CountsDrops(drops.clone())));
        pool(3).install(|| {
            (0..10_000).into_par_iter().for_each(|_| drop(t.clone()));
        });
        let Ok(value) = t.try_unwrap() else {
            panic!("no other handle is counted: try_unwrap must succeed");
        };
        assert_eq!((value.0, load(&drops)), (7, 0));
        let t = rt().trustee(0).entrust(value);
        let handles: Vec<_> = (0..1000).map(|_| t.clone()).collect();
        drop(t);
        let got = pool(3).install(|| {
            handles
                .into_par_iter()
                .filter_map(|h| h.into_inner())
                .map(|(v, d)| {
                    drop(d);
                    v
                })
                .collect::<Vec<_>>()
        });
        assert_eq!(got, vec![7], "exactly one `into_inner` gets the value");
        assert_eq!(load(&drops), 1, "dropped once");
    });
}

/// An executor that polls its task inside `wake` (`async_task::spawn` with a schedule function that runs the
/// task at once): the trustee wakes the task of an `apply_async` answer on its own thread, so the task runs
/// there, outside any fiber. 10 tasks x 100 awaits on each trustee count exactly (an `apply_async` to the
/// trustee the task now runs on takes the local shortcut). A blocking `apply` to the other trustee from there
/// panics in the task (it would stop the worker's serving) with the message of a continuation on a worker,
/// which named only a continuation, which the program does not have (review 50's report), and names this case
/// too now; the trustees keep serving. Where a blocking task runs is up to the wakes: an answer after the
/// first of a mail is woken from the relay by whichever thread polls next (once, under AddressSanitizer, trustee
/// 1's, where the blocking `apply` to its own trustee runs inline), so the counts add up what those tasks did.
#[test]
fn async_task_polled_inside_wake_runs_on_the_trustees() {
    quiet();
    within(30, || {
        let a = rt().trustee(0).entrust(0u64);
        let b = rt().trustee(1).entrust(0u64);
        let (done, panics) = (counter(), Arc::new(Mutex::new(Vec::new())));
        // The increments of the two blocking tasks, of `a` and of `b`.
        let (extra_a, extra_b) = (counter(), counter());
        let mut tasks = Vec::new();
        for i in 0..12 {
            let (a, b, done, panics) = (a.clone(), b.clone(), done.clone(), panics.clone());
            let (extra_a, extra_b) = (extra_a.clone(), extra_b.clone());
            let body = async move {
                for _ in 0..100 {
                    a.apply_async(|c| *c += 1).await;
                    if i >= 10 {
                        extra_a.fetch_add(1, Ordering::SeqCst);
                        // Woken by trustee 0's answer, on its thread: a blocking call to trustee 1 from there.
                        b.apply(|c| *c += 1);
                        extra_b.fetch_add(1, Ordering::SeqCst);
                    }
                    b.apply_async(|c| *c += 1).await;
                    if i >= 10 {
                        extra_b.fetch_add(1, Ordering::SeqCst);
                    }
                }
            };
            let (runnable, task) = async_task::spawn(
                async move {
                    if let Err(p) =
                        futures_lite::FutureExt::catch_unwind(AssertUnwindSafe(body)).await
                    {
                        panics.lock().unwrap().push(panic_message(p));
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                },
                |r: async_task::Runnable| {
                    r.run();
                },
            );
            runnable.schedule();
            tasks.push(task);
        }
        eventually("every task finished", || load(&done) == 12);
        assert!(tasks.iter().all(|t| t.is_finished()));
        // The ten others counted 1,000 on each; the two blocking tasks stopped at their blocking call on
        // trustee 0's thread (right after their first increment of `a`, unless a wake-up from the relay ran
        // them elsewhere before).
        assert_eq!(
            (a.apply(|c| *c), b.apply(|c| *c)),
            (1000 + load(&extra_a) as u64, 1000 + load(&extra_b) as u64)
        );
        assert!(load(&extra_a) >= 2, "{}", load(&extra_a));
        let panics = panics.lock().unwrap();
        assert_eq!(panics.len(), 2);
        assert!(
            panics
                .iter()
                .all(|m| m.starts_with(
                    "blocking delegation inside an `apply_then` continuation on a worker"
                ) && m.contains("in an async task that its executor polls inside `wake`")),
            "{panics:?}"
        );
    });
}

/// **Known limitation** (review 50): `pollster::block_on` (or any executor's) of an `apply_async` inside a
/// delegated closure escapes the check that makes a blocking `apply` to another trustee panic there: it parks
/// the trustee's thread until the other trustee answers. Two closures doing it to each other's trustee at once
/// deadlock both trustees, silently. Stated in docs/delegation.md; ignored because it hangs (in a child
/// process, `within` fails after 5 s).
#[test]
#[ignore = "review 50: deadlocks: two delegated closures each block_on an apply_async to the other's trustee"]
fn block_on_inside_delegated_closures_to_each_others_trustee() {
    in_child!(
        "block_on_inside_delegated_closures_to_each_others_trustee",
        15
    );
    let a = rt().trustee(0).entrust(1u64);
    let b = rt().trustee(1).entrust(2u64);
    let (tx, rx) = mpsc::channel();
    for (x, y) in [(a.clone(), b.clone()), (b, a)] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let r = x.apply(move |_| {
                std::thread::sleep(Duration::from_millis(50));
                pollster::block_on(y.apply_async(|c| *c))
            });
            tx.send(r).unwrap();
        });
    }
    let got = within(5, move || {
        let mut got = [rx.recv().unwrap(), rx.recv().unwrap()];
        got.sort_unstable();
        got
    });
    assert_eq!(got, [1, 2]);
    child_ok();
}

/// An executor loop that drives continuations itself: a `LocalPool` whose 500 tasks each await a future that
/// an `apply_then` continuation completes (an `Rc` cell and the task's waker), twice; the loop runs the pool
/// until it stalls, then `wait_pending()` (which runs the continuations, waking tasks), until every task is done.
/// Exact: 1,000 increments, each continuation once, on this thread, each task finished.
#[test]
fn local_pool_whose_tasks_await_continuations_driven_by_wait_pending() {
    const N: usize = 500;
    within(30, || {
        let t = rt().trustee(1).entrust(0u64);
        let ran = Arc::new(Ran::default());
        let finished = Rc::new(Cell::new(0));
        let mut pool = futures_executor::LocalPool::new();
        let spawner = pool.spawner();
        let issuer = me();
        for _ in 0..N {
            let (t, ran, finished) = (t.clone(), ran.clone(), finished.clone());
            let task = async move {
                for _ in 0..2 {
                    let slot: Rc<RefCell<(Option<u64>, Option<Waker>)>> = Rc::default();
                    let (s, ran) = (slot.clone(), ran.clone());
                    t.apply_then(
                        |c| {
                            *c += 1;
                            *c
                        },
                        move |v| {
                            ran.here(issuer);
                            let waker = {
                                let mut s = s.borrow_mut();
                                s.0 = Some(v);
                                s.1.take()
                            };
                            if let Some(w) = waker {
                                w.wake();
                            }
                        },
                    );
                    let v = poll_fn(|cx| {
                        let mut s = slot.borrow_mut();
                        match s.0 {
                            Some(v) => Poll::Ready(v),
                            None => {
                                s.1 = Some(cx.waker().clone());
                                Poll::Pending
                            }
                        }
                    })
                    .await;
                    assert!((1..=2 * N as u64).contains(&v));
                }
                finished.set(finished.get() + 1);
            };
            spawner
                .spawn_local_obj(LocalFutureObj::new(Box::new(task)))
                .unwrap();
        }
        let mut turns = 0;
        while finished.get() < N {
            pool.run_until_stalled();
            wait_pending();
            turns += 1;
            assert!(
                turns < 10_000,
                "no progress: {} tasks finished",
                finished.get()
            );
        }
        assert_eq!(ran.counts(), (2 * N, 0));
        assert_eq!(t.apply(|c| *c), 2 * N as u64);
    });
}

/// Tasks on a 3-thread `async-executor` cancelled (`Task::cancel`) from this thread while the trustee answers
/// them (not held: the cancel races the answer; in 5 runs, 0 to 2 of the 3,000 were cancelled unpolled), 10
/// rounds of 300: every closure that ran had its result dropped exactly once, every capture was dropped once,
/// and the counter equals the closures that ran.
#[test]
fn async_executor_tasks_cancelled_while_answered() {
    const N: usize = 300;
    within(30, || {
        let t = rt().trustee(0).entrust(0u64);
        let (ran, results, captures) = (counter(), counter(), counter());
        let ex = Executor::new();
        drive(&ex, 2, async {
            for round in 0..10 {
                let tasks: Vec<_> = (0..N)
                    .map(|_| {
                        let t = t.clone();
                        let (ran, r, cap) =
                            (ran.clone(), results.clone(), CountsDrops(captures.clone()));
                        ex.spawn(async move {
                            let _ = t
                                .apply_async(move |c| {
                                    let _cap = cap;
                                    ran.fetch_add(1, Ordering::SeqCst);
                                    *c += 1;
                                    CountsDrops(r)
                                })
                                .await;
                        })
                    })
                    .collect();
                for _ in 0..round {
                    future::yield_now().await;
                }
                for task in tasks {
                    let _ = task.cancel().await;
                }
            }
        });
        drop(ex);
        eventually("every capture dropped", || load(&captures) == 10 * N);
        let runs = load(&ran);
        assert_eq!(
            t.apply(|c| *c),
            runs as u64,
            "the counter counts the closures that ran"
        );
        eventually("every result dropped", || load(&results) == runs);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            (load(&results), load(&captures)),
            (runs, 10 * N),
            "once each"
        );
    });
}

/// Counts its wakes (a task whose executor does not poll it now: busy, or blocked elsewhere).
struct CountWakes(AtomicUsize);

impl std::task::Wake for CountWakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// **Review 50, found**: tasks answered in the middle of a mail are held back by a *later* closure, one from
/// another client that is not in the mail, for as long as it runs, when the two tasks the trustee wakes itself
/// (the mail's first and last) are not polled at once (their executor is busy, or blocked in a call of its
/// own). docs/delegation.md says the others of a mail wait only for the mail's closures, and the relay's design
/// (`trustee/relay.rs`) that a relay no poll drains is drained by the trustee "after a few idle rounds", but a
/// long closure is one round: here 10 futures are answered by one mail; a closure queued behind it by a blocking
/// `apply` from another thread watches their wakers for 1 s and sees 2 of 10 woken throughout (all 10 right
/// after it returns). A closure that waits for one of those tasks waits for itself. Expected: the 8 woken
/// within a few rounds of the mail, whatever the trustee runs next.
#[test]
#[ignore = "review 50: the middle answers of an apply_async mail wait for a later, unrelated closure when no poll drains the relay"]
fn middle_answers_of_a_mail_are_not_held_back_by_a_later_closure() {
    within(20, || {
        let t = rt().trustee(0).entrust(0u64);
        let (gate, holder) = hold(&t);
        let counts: Vec<Arc<CountWakes>> = (0..10)
            .map(|_| Arc::new(CountWakes(AtomicUsize::new(0))))
            .collect();
        let mut futs: Vec<_> = (0..10)
            .map(|_| Box::pin(t.apply_async(|c| *c += 1)))
            .collect();
        for (f, c) in futs.iter_mut().zip(&counts) {
            let waker = Waker::from(c.clone());
            assert!(
                f.as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending()
            );
        }
        let (watched, t2) = (counts.clone(), t.clone());
        let later = std::thread::spawn(move || {
            t2.apply(move |_| {
                let start = Instant::now();
                loop {
                    let woken = watched.iter().filter(|c| load(&c.0) > 0).count();
                    if woken == 10 || start.elapsed() > Duration::from_secs(1) {
                        return woken;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        });
        // The later closure is queued behind the gate's closure, after the mail.
        std::thread::sleep(Duration::from_millis(50));
        gate.open();
        holder.join().unwrap();
        let woken_meanwhile = later.join().unwrap();
        eventually("all woken once the later closure returned", || {
            counts.iter().all(|c| load(&c.0) == 1)
        });
        drop(futs);
        assert_eq!(t.apply(|c| *c), 10);
        assert_eq!(
            woken_meanwhile, 10,
            "tasks answered by the mail, still unwoken while a later closure ran for 1 s"
        );
    });
}
