//! The futures of `read_async` / `write_async`: [`ReadFuture`] and [`WriteFuture`].
//!
//! A future takes its ticket on its first poll (futures are lazy) and, if it must queue, leaves its
//! `Waker` with the lock, refreshed on every later poll. Dropping it while queued withdraws the request,
//! which grants the requests queued behind it that waited only for it. If the grant arrived but the
//! future was dropped before it was polled again, the drop releases the granted borrow the same way.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::state::{Request, Wake};
use super::{IntervalRwLock, ReadGuard, WriteGuard};
use crate::delegation::stack;

/// Where a lock request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Not polled yet: nothing recorded.
    Start,
    /// Recorded under this ticket, not yet handed out (queued, or granted since the last poll).
    Recorded(u64),
    /// Handed out to a guard, which now owns the borrow.
    Done,
}

/// The request shared by both futures.
struct Acquire<'a, T> {
    lock: &'a IntervalRwLock<T>,
    range: Range<usize>,
    write: bool,
    priority: u32,
    step: Step,
}

impl<'a, T> Acquire<'a, T> {
    fn new(lock: &'a IntervalRwLock<T>, range: Range<usize>, write: bool, priority: u32) -> Self {
        Acquire {
            lock,
            range,
            write,
            priority,
            step: Step::Start,
        }
    }

    /// Polls for the ticket of a granted borrow (0 for an empty range); the caller wraps it in a guard.
    fn poll_ticket(&mut self, cx: &mut Context<'_>, what: &str) -> Poll<u64> {
        let ticket = match self.step {
            Step::Start if self.range.is_empty() => 0,
            Step::Start => {
                // Cloned before the mutex is locked and, if unused, dropped after: a waker is user code.
                let mut waker = Some(cx.waker().clone());
                let request =
                    self.lock
                        .state()
                        .request(
                            self.range.start,
                            self.range.end,
                            self.write,
                            self.priority,
                            stack::stack_pointer(),
                            || Wake::Task(waker.take().expect("the waker is taken once")),
                        );
                let (Request::Granted(ticket) | Request::Queued(ticket)) = request;
                // Noted before the unused clone is dropped: that drop is executor code and may panic, and the
                // future must still own the borrow then, for its drop to release it (review 42: a granted
                // first poll whose waker drop panicked leaked the range).
                self.step = Step::Recorded(ticket);
                drop(waker);
                if let Request::Queued(_) = request {
                    return Poll::Pending;
                }
                ticket
            }
            Step::Recorded(ticket) => {
                // The future may have moved to another task since the last poll. The waker is cloned before
                // the mutex is locked, and the one not kept dropped after: a waker is user code.
                let waker = cx.waker().clone();
                let mut state = self.lock.state();
                if !state.is_granted(ticket) {
                    let unused = state.set_waker(ticket, waker);
                    drop(state);
                    drop(unused);
                    return Poll::Pending;
                }
                drop(state);
                drop(waker);
                ticket
            }
            Step::Done => panic!("{what} polled after it completed"),
        };
        self.step = Step::Done;
        Poll::Ready(ticket)
    }
}

impl<T> Drop for Acquire<'_, T> {
    fn drop(&mut self) {
        if let Step::Recorded(ticket) = self.step {
            self.lock.cancel(&self.range, ticket, self.write);
        }
    }
}

/// Resolves to a [`ReadGuard`]; returned by [`IntervalRwLock::read_async`]. Cancel-safe: dropping it
/// withdraws the request.
#[must_use = "futures do nothing unless polled"]
pub struct ReadFuture<'a, T>(Acquire<'a, T>);

/// Resolves to a [`WriteGuard`]; returned by [`IntervalRwLock::write_async`]. Cancel-safe: dropping it
/// withdraws the request.
#[must_use = "futures do nothing unless polled"]
pub struct WriteFuture<'a, T>(Acquire<'a, T>);

impl<'a, T> ReadFuture<'a, T> {
    pub(super) fn new(lock: &'a IntervalRwLock<T>, range: Range<usize>, priority: u32) -> Self {
        ReadFuture(Acquire::new(lock, range, false, priority))
    }
}

impl<'a, T> WriteFuture<'a, T> {
    pub(super) fn new(lock: &'a IntervalRwLock<T>, range: Range<usize>, priority: u32) -> Self {
        WriteFuture(Acquire::new(lock, range, true, priority))
    }
}

impl<'a, T> Future for ReadFuture<'a, T> {
    type Output = ReadGuard<'a, T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // `Acquire` holds no self-references, so the future is `Unpin`.
        let acquire = &mut self.get_mut().0;
        acquire
            .poll_ticket(cx, "ReadFuture")
            .map(|ticket| ReadGuard::new(acquire.lock, acquire.range.clone(), ticket))
    }
}

impl<'a, T> Future for WriteFuture<'a, T> {
    type Output = WriteGuard<'a, T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let acquire = &mut self.get_mut().0;
        acquire
            .poll_ticket(cx, "WriteFuture")
            .map(|ticket| WriteGuard::new(acquire.lock, acquire.range.clone(), ticket))
    }
}

impl<T> fmt::Debug for ReadFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadFuture")
            .field("range", &self.0.range)
            .field("step", &self.0.step)
            .finish()
    }
}

impl<T> fmt::Debug for WriteFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteFuture")
            .field("range", &self.0.range)
            .field("step", &self.0.step)
            .finish()
    }
}
