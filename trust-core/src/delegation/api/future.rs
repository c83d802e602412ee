//! `Trust::apply_async`: delegation as a `Future`, for tokio or any executor. The request is made with the
//! future, in one allocation that also holds the answer (`trustee::oneshot`), and mailed to the trustee on
//! the first poll (a plain thread's unpublished `apply_then`s go out first). Once the answer is there the task
//! is woken: by the trustee for the first answer of each mail it reads (and the last, once the mail is read),
//! by the next poll of any of that trustee's futures for the others (`trustee::relay`). Dropping the future after its first poll is
//! harmless: the closure still runs, and its result is dropped. After `Runtime::shutdown` the future panics
//! when polled, with the message a blocking `apply` gives.

use std::future::Future;
use std::panic::resume_unwind;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::delegation::api::trust::{BOX_ABOVE, Trust};
use crate::delegation::call;
use crate::delegation::trustee::job::{Apply, Outcome};
use crate::delegation::trustee::oneshot::{Answer, Unsent};
use crate::delegation::trustee::shared::{SHUT_DOWN, closed_message};

/// The future returned by [`Trust::apply_async`].
#[must_use = "futures do nothing unless polled: the request is sent on the first poll"]
pub struct ApplyFuture<'a, T, F, R> {
    trust: &'a Trust<T>,
    step: Step<T, F, R>,
}

enum Step<T, F, R> {
    /// The request, made when the future is: its closure is moved out of line at once (see `Unsent`).
    Unsent(Unsent<Apply<T, F>, Outcome<R>>),
    Sent(Answer<Outcome<R>>),
    Done,
}

impl<T, F, R> std::fmt::Debug for ApplyFuture<'_, T, F, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let step = match self.step {
            Step::Unsent(_) => "unsent",
            Step::Sent(_) => "sent",
            Step::Done => "done",
        };
        f.debug_struct("ApplyFuture").field("step", &step).finish()
    }
}

// Nothing is pinned in place: the request is out of line.
impl<T, F, R> Unpin for ApplyFuture<'_, T, F, R> {}

impl<'a, T: 'static, F, R> ApplyFuture<'a, T, F, R>
where
    F: FnOnce(&mut T) -> R + Send + 'static,
    R: Send + 'static,
{
    /// The future of `unsent`, a request to `trust`'s property made by `Trust::apply_async`.
    pub(crate) fn new(trust: &'a Trust<T>, unsent: Unsent<Apply<T, F>, Outcome<R>>) -> Self {
        ApplyFuture {
            trust,
            step: Step::Unsent(unsent),
        }
    }
}

impl<T, F, R> Future for ApplyFuture<'_, T, F, R>
where
    T: Send + 'static,
    F: FnOnce(&mut T) -> R + Send + 'static,
    R: Send + 'static,
{
    type Output = R;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        if const { size_of::<R>() > BOX_ABOVE } {
            return self.poll_large(cx);
        }
        self.poll_sized(cx)
    }
}

impl<T, F, R> ApplyFuture<'_, T, F, R>
where
    T: Send + 'static,
    F: FnOnce(&mut T) -> R + Send + 'static,
    R: Send + 'static,
{
    /// `poll` for a result small enough to move by value. A function of its own (not inlined in a debug
    /// build): a debug frame reserves a slot for every value its function moves, on the branch taken or not, and
    /// `poll`'s frame would hold these for a large result too.
    #[inline]
    fn poll_sized(&mut self, cx: &mut Context<'_>) -> Poll<R> {
        let this = self;
        let trustee = this.trust.trustee().shared;
        // Tasks the trustee answered are woken by the next poll of any of its futures (`trustee::relay`).
        trustee.drain_relay();
        let answered = match std::mem::replace(&mut this.step, Step::Done) {
            Step::Unsent(unsent) => {
                let unsent = trustee.check_running_holding(unsent);
                if this.trust.is_local() {
                    return Poll::Ready(apply_here(this.trust, unsent));
                }
                // A plain thread's unsent `apply_then`s go out first, as before a blocking call: an executor's
                // thread may only ever await futures from now on, and would hold them for good (a `_then`
                // stub in a `Drop` that gives a permit back, say, starving every task waiting for it).
                call::publish_thread_unsent();
                this.step = Step::Sent(unsent.send(trustee, cx.waker().clone()));
                return Poll::Pending;
            }
            Step::Sent(mut answer) => match answer.poll(cx.waker()) {
                Poll::Ready(output) => output,
                // Stopped for good without answering: nothing will wake this future.
                Poll::Pending if trustee.is_closed() => panic!("{}", closed_message(SHUT_DOWN)),
                Poll::Pending => {
                    this.step = Step::Sent(answer);
                    return Poll::Pending;
                }
            },
            Step::Done => panic!("`ApplyFuture` polled after completion"),
        };
        match answered {
            Some(outcome) => Poll::Ready(outcome.into_result().unwrap_or_else(|p| resume_unwind(p))),
            None => panic!("{}", closed_message(SHUT_DOWN)),
        }
    }

    /// `poll` for a result over 512 bytes: the same steps, with the result moved out of the node into a box
    /// and out of the box once, into the `Poll` (by value through `poll`'s temporaries, a 32 KiB result
    /// overflowed a fiber's 256 KiB stack in a debug build: review 38). No result passes through this frame:
    /// each path that makes one is a function of its own.
    #[inline(never)]
    fn poll_large(&mut self, cx: &mut Context<'_>) -> Poll<R> {
        let trustee = self.trust.trustee().shared;
        trustee.drain_relay();
        match std::mem::replace(&mut self.step, Step::Done) {
            Step::Unsent(unsent) => {
                let unsent = trustee.check_running_holding(unsent);
                if self.trust.is_local() {
                    return ready_here(self.trust, unsent);
                }
                call::publish_thread_unsent();
                self.step = Step::Sent(unsent.send(trustee, cx.waker().clone()));
                Poll::Pending
            }
            Step::Sent(mut answer) => {
                if answer.poll_done(cx.waker()).is_ready() {
                    return ready_boxed(answer);
                }
                if trustee.is_closed() {
                    panic!("{}", closed_message(SHUT_DOWN));
                }
                self.step = Step::Sent(answer);
                Poll::Pending
            }
            Step::Done => panic!("`ApplyFuture` polled after completion"),
        }
    }
}

/// `poll_large`'s answer: the output boxed out of the node, the result moved out of its box once.
#[inline(never)]
fn ready_boxed<R: Send + 'static>(mut answer: Answer<Outcome<R>>) -> Poll<R> {
    match answer.take_boxed() {
        Some(outcome) => Poll::Ready(outcome.unbox_or_resume()),
        None => panic!("{}", closed_message(SHUT_DOWN)),
    }
}

/// `poll_large`'s local shortcut (`apply_here`, whose result comes back boxed from `apply`).
#[inline(never)]
fn ready_here<T: Send + 'static, F, R>(trust: &Trust<T>, unsent: Unsent<Apply<T, F>, Outcome<R>>) -> Poll<R>
where
    F: FnOnce(&mut T) -> R + Send + 'static,
    R: Send + 'static,
{
    Poll::Ready(apply_here(trust, unsent))
}

/// The local shortcut of an unsent request: its closure runs here, as a blocking `apply`. Out of `poll`'s frame:
/// a debug build reserves stack for every value a function moves, on the branch taken or not, and a 160 KiB
/// closure moved by value made every poll, remote ones too, overflow a fiber's 256 KiB stack (review 26).
#[inline(never)]
fn apply_here<T: Send + 'static, F, R>(trust: &Trust<T>, unsent: Unsent<Apply<T, F>, Outcome<R>>) -> R
where
    F: FnOnce(&mut T) -> R + Send + 'static,
    R: Send + 'static,
{
    if const { size_of::<F>() > BOX_ABOVE } {
        // Out of the node into a box, not through this fiber's stack (`apply` boxes such a closure too).
        let f = unsent.into_boxed_closure();
        return trust.apply(move |t| f(t));
    }
    apply_small(trust, unsent)
}

/// `apply_here` for a closure small enough to move by value (its own frame, for the reason above).
#[inline(never)]
fn apply_small<T: Send + 'static, F, R>(trust: &Trust<T>, unsent: Unsent<Apply<T, F>, Outcome<R>>) -> R
where
    F: FnOnce(&mut T) -> R + Send + 'static,
    R: Send + 'static,
{
    trust.apply(unsent.into_job().f)
}
