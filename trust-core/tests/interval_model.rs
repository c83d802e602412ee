//! A randomized model test of `IntervalRwLock`: random `try_*`, blocking, and async requests, guard
//! drops and future cancellations, checked after every step against a reference model of the recorded
//! borrows.
//!
//! The model is the lock's specification: requests in arrival order, each with a priority (0, the
//! default, most of the time), and a waiting request is granted iff no recorded request that conflicts
//! with it (overlaps it, with at least one of the two writing) is held or waits ahead of it, in the order
//! (higher priority first, then arrival); a `try_*` succeeds iff nothing recorded conflicts. After every step, every request the model holds
//! must have been granted (and woken, for futures), and every request the model queues must still be
//! queued and not woken: every grant is legal and every wait is necessary.

use std::future::Future;
use std::io::{self, Write};
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, ScopedJoinHandle};
use std::time::{Duration, Instant};

use trust_core::interval::{IntervalRwLock, ReadFuture, ReadGuard, WriteFuture, WriteGuard};

const LEN: usize = 16;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// A waker that records whether it was woken.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What the test holds for one recorded request.
enum Handle<'s, 'l> {
    Read(ReadGuard<'l, u32>),
    Write(WriteGuard<'l, u32>),
    ReadFuture(Pin<Box<ReadFuture<'l, u32>>>, Arc<Flag>),
    WriteFuture(Pin<Box<WriteFuture<'l, u32>>>, Arc<Flag>),
    /// A thread blocked in (or returned from) `read`/`write`; it drops its guard when told to.
    Thread {
        granted: Arc<AtomicBool>,
        release: mpsc::Sender<()>,
        join: ScopedJoinHandle<'s, ()>,
    },
}

struct Request<'s, 'l> {
    range: Range<usize>,
    write: bool,
    priority: u32,
    /// What the model says.
    held: bool,
    handle: Handle<'s, 'l>,
}

fn conflict(a: &Range<usize>, a_write: bool, b: &Range<usize>, b_write: bool) -> bool {
    (a_write || b_write) && a.start < b.end && b.start < a.end
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        thread::yield_now();
    }
}

/// Polls a future once with its flag waker, clearing the flag first.
fn poll<F: Future>(future: Pin<&mut F>, flag: &Arc<Flag>) -> Poll<F::Output> {
    flag.0.store(false, Ordering::SeqCst);
    let waker = Waker::from(flag.clone());
    future.poll(&mut Context::from_waker(&waker))
}

struct Model<'s, 'l> {
    lock: &'l IntervalRwLock<u32>,
    requests: Vec<Request<'s, 'l>>,
    rng: Rng,
    coverage: Coverage,
}

/// How often the interesting paths ran, so that the test cannot silently degenerate.
#[derive(Debug, Default)]
struct Coverage {
    try_failed: usize,
    async_queued: usize,
    blocking_queued: usize,
    cancelled_queued: usize,
    dropped_granted_unpolled: usize,
    /// Async requests of priority > 0 that met a conflict (and so may have overtaken someone).
    overtook: usize,
}

impl<'s, 'l> Model<'s, 'l> {
    /// Whether nothing recorded conflicts with a new request.
    fn free(&self, range: &Range<usize>, write: bool) -> bool {
        !self
            .requests
            .iter()
            .any(|r| conflict(&r.range, r.write, range, write))
    }

    /// Whether a new request of `priority` is granted at once: nothing conflicting is held, and nothing
    /// conflicting waits with a priority at least as high (it came earlier).
    fn grantable(&self, range: &Range<usize>, write: bool, priority: u32) -> bool {
        !self.requests.iter().any(|r| {
            conflict(&r.range, r.write, range, write) && (r.held || r.priority >= priority)
        })
    }

    /// 0 three times in four, else 1 or 2.
    fn random_priority(&mut self) -> u32 {
        match self.rng.below(8) {
            0 => 1,
            1 => 2,
            _ => 0,
        }
    }

    fn random_range(&mut self) -> Range<usize> {
        let start = self.rng.below(LEN);
        let end = (start + 1 + self.rng.below(5)).min(LEN);
        start..end
    }

    fn try_lock(&mut self) {
        let (range, write) = (self.random_range(), self.rng.below(2) == 0);
        let expected = self.free(&range, write);
        let handle = if write {
            self.lock.try_write(range.clone()).ok().map(Handle::Write)
        } else {
            self.lock.try_read(range.clone()).ok().map(Handle::Read)
        };
        assert_eq!(
            handle.is_some(),
            expected,
            "try of {range:?} (write: {write})"
        );
        self.coverage.try_failed += usize::from(!expected);
        if let Some(handle) = handle {
            self.requests.push(Request {
                range,
                write,
                priority: 0,
                held: true,
                handle,
            });
        }
    }

    fn request_async(&mut self) {
        let (range, write) = (self.random_range(), self.rng.below(2) == 0);
        let priority = self.random_priority();
        let expected = self.grantable(&range, write, priority);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let lock = self.lock.prioritized(priority);
        let handle = if write {
            let mut future = Box::pin(lock.write_async(range.clone()));
            match poll(future.as_mut(), &flag) {
                Poll::Ready(guard) => Handle::Write(guard),
                Poll::Pending => Handle::WriteFuture(future, flag),
            }
        } else {
            let mut future = Box::pin(lock.read_async(range.clone()));
            match poll(future.as_mut(), &flag) {
                Poll::Ready(guard) => Handle::Read(guard),
                Poll::Pending => Handle::ReadFuture(future, flag),
            }
        };
        let granted = matches!(handle, Handle::Read(_) | Handle::Write(_));
        assert_eq!(
            granted, expected,
            "first poll of {range:?} (write: {write})"
        );
        self.coverage.async_queued += usize::from(!granted);
        self.coverage.overtook += usize::from(priority > 0 && !self.free(&range, write));
        self.requests.push(Request {
            range,
            write,
            priority,
            held: granted,
            handle,
        });
    }

    fn request_blocking(&mut self, scope: &'s thread::Scope<'s, '_>)
    where
        'l: 's,
    {
        let (range, write) = (self.random_range(), self.rng.below(2) == 0);
        let priority = self.random_priority();
        let expected = self.grantable(&range, write, priority);
        let queued_before = self.lock.queued();
        let granted = Arc::new(AtomicBool::new(false));
        let (release, released) = mpsc::channel::<()>();
        let lock = self.lock;
        let join = {
            let (granted, range) = (granted.clone(), range.clone());
            scope.spawn(move || {
                let lock = lock.prioritized(priority);
                let guard = if write {
                    Handle::Write(lock.write(range))
                } else {
                    Handle::Read(lock.read(range))
                };
                granted.store(true, Ordering::SeqCst);
                released.recv().unwrap();
                drop(guard);
            })
        };
        // Wait until the thread has taken its ticket, so that arrival order is the model's order.
        if expected {
            wait_until("a free blocking request to be granted", || {
                granted.load(Ordering::SeqCst)
            });
        } else {
            wait_until("a blocking request to queue", || {
                self.lock.queued() == queued_before + 1
            });
            self.coverage.blocking_queued += 1;
        }
        self.requests.push(Request {
            range,
            write,
            priority,
            held: expected,
            handle: Handle::Thread {
                granted,
                release,
                join,
            },
        });
    }

    /// Drops a guard, cancels or drops a future, or tells a thread holding its guard to drop it.
    fn remove(&mut self) {
        // Mostly releases of held requests (so that queued ones get granted), sometimes cancellations.
        let prefer_held = self.rng.below(3) > 0;
        let candidates: Vec<usize> = (0..self.requests.len())
            .filter(|&i| {
                let r = &self.requests[i];
                if prefer_held {
                    r.held
                } else {
                    !matches!(r.handle, Handle::Thread { .. }) || r.held
                }
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let i = candidates[self.rng.below(candidates.len())];
        let request = self.requests.remove(i);
        match request.handle {
            Handle::Thread { release, join, .. } => {
                release.send(()).unwrap();
                join.join().unwrap();
            }
            Handle::ReadFuture(..) | Handle::WriteFuture(..) if request.held => {
                self.coverage.dropped_granted_unpolled += 1;
            }
            Handle::ReadFuture(..) | Handle::WriteFuture(..) => self.coverage.cancelled_queued += 1,
            Handle::Read(_) | Handle::Write(_) => {}
        }
    }

    /// Model step: in grant order (higher priority first, then arrival), every queued request with no
    /// conflicting request held or waiting ahead of it becomes held. Granting removes nothing, and a
    /// request behind a waiting conflicting one cannot be granted before it, so one pass is enough.
    fn grant(&mut self) {
        let mut order: Vec<usize> = (0..self.requests.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(self.requests[i].priority), i));
        for (k, &i) in order.iter().enumerate() {
            let r = &self.requests[i];
            if r.held {
                continue;
            }
            let ahead = &order[..k];
            let blocked = self.requests.iter().enumerate().any(|(j, q)| {
                j != i
                    && conflict(&q.range, q.write, &r.range, r.write)
                    && (q.held || ahead.contains(&j))
            });
            self.requests[i].held = !blocked;
        }
    }

    /// Compares the lock with the model; sometimes turns a granted future into its guard.
    fn check(&mut self, step: usize) {
        self.grant();
        for r in &mut self.requests {
            let what = format!(
                "step {step}: {:?} (write: {}, model held: {})",
                r.range, r.write, r.held
            );
            let poll_now = self.rng.below(4) == 0;
            let handle = std::mem::replace(&mut r.handle, Handle::Read(self.lock.read(0..0)));
            r.handle = match handle {
                Handle::ReadFuture(mut future, flag) => {
                    assert_eq!(flag.0.load(Ordering::SeqCst), r.held, "woken: {what}");
                    if r.held && !poll_now {
                        // Left granted but unpolled: a later drop must release it.
                        Handle::ReadFuture(future, flag)
                    } else {
                        match poll(future.as_mut(), &flag) {
                            Poll::Ready(guard) if r.held => Handle::Read(guard),
                            Poll::Pending if !r.held => Handle::ReadFuture(future, flag),
                            _ => panic!("poll disagrees with the model: {what}"),
                        }
                    }
                }
                Handle::WriteFuture(mut future, flag) => {
                    assert_eq!(flag.0.load(Ordering::SeqCst), r.held, "woken: {what}");
                    if r.held && !poll_now {
                        Handle::WriteFuture(future, flag)
                    } else {
                        match poll(future.as_mut(), &flag) {
                            Poll::Ready(guard) if r.held => Handle::Write(guard),
                            Poll::Pending if !r.held => Handle::WriteFuture(future, flag),
                            _ => panic!("poll disagrees with the model: {what}"),
                        }
                    }
                }
                Handle::Thread {
                    granted,
                    release,
                    join,
                } => {
                    if r.held {
                        wait_until(&what, || granted.load(Ordering::SeqCst));
                    } else {
                        assert!(!granted.load(Ordering::SeqCst), "granted too early: {what}");
                    }
                    Handle::Thread {
                        granted,
                        release,
                        join,
                    }
                }
                Handle::Read(guard) => {
                    assert!(r.held && guard.range() == r.range, "{what}");
                    Handle::Read(guard)
                }
                Handle::Write(guard) => {
                    assert!(r.held && guard.range() == r.range, "{what}");
                    Handle::Write(guard)
                }
            };
        }
        let queued = self.requests.iter().filter(|r| !r.held).count();
        assert_eq!(
            (self.lock.held(), self.lock.queued()),
            (self.requests.len() - queued, queued),
            "step {step}: (held, queued) of the lock vs the model"
        );
    }
}

/// Runs `f`; if it panics, prints the message and aborts. A failing check would otherwise hang the test:
/// the scope joins its threads, and a thread blocked in `read`/`write` cannot be cancelled.
fn abort_on_panic<R>(f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            // Straight to the file descriptor: the test harness's output capture dies with the abort.
            let _ = writeln!(
                io::stderr(),
                "interval model test failed: {message}\n(aborting: threads blocked in the lock \
                 could otherwise hang the test)"
            );
            std::process::abort();
        }
    }
}

#[test]
fn random_operations_match_the_reference_model() {
    let (seeds, steps) = if cfg!(miri) { (1, 60) } else { (8, 1500) };
    let lock = IntervalRwLock::new(vec![0u32; LEN]);
    for seed in 0..seeds {
        thread::scope(|scope| {
            abort_on_panic(|| {
                let mut model = Model {
                    lock: &lock,
                    requests: Vec::new(),
                    rng: Rng(0x9e37_79b9_7f4a_7c15 ^ (seed * 0x1000_0000_01b3 + 1)),
                    coverage: Coverage::default(),
                };
                for step in 0..steps {
                    let threads = model
                        .requests
                        .iter()
                        .filter(|r| matches!(r.handle, Handle::Thread { .. }))
                        .count();
                    // Keep about a dozen requests recorded, so that conflicts are common but not total.
                    let choice = if model.requests.len() > 12 {
                        9
                    } else {
                        model.rng.below(10)
                    };
                    match choice {
                        0..=2 => model.try_lock(),
                        3..=5 => model.request_async(),
                        6 if threads < 3 => model.request_blocking(scope),
                        _ => model.remove(),
                    }
                    model.check(step);
                }
                // Wind down: release everything, the oldest held request first (with priorities the
                // oldest may still wait), checking as we go.
                while !model.requests.is_empty() {
                    let i = model
                        .requests
                        .iter()
                        .position(|r| r.held)
                        .expect("some recorded request is always held");
                    let request = model.requests.remove(i);
                    match request.handle {
                        Handle::Thread { release, join, .. } => {
                            release.send(()).unwrap();
                            join.join().unwrap();
                        }
                        other => drop(other),
                    }
                    model.check(steps);
                }
                let c = &model.coverage;
                eprintln!("seed {seed}: {c:?}");
                let least = if cfg!(miri) { 1 } else { 20 };
                assert!(
                    [
                        c.try_failed,
                        c.async_queued,
                        c.blocking_queued,
                        c.cancelled_queued,
                        c.dropped_granted_unpolled,
                        c.overtook
                    ]
                    .iter()
                    .all(|&n| n >= least),
                    "seed {seed} left a path untested: {c:?}"
                );
            })
        });
        assert_eq!((lock.held(), lock.queued()), (0, 0));
    }
}
