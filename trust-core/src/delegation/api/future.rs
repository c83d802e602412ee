//! `Trust::apply_async`: delegation as a `Future`, for tokio or any executor. The request is sent on the
//! first poll; the trustee stores the result in a shared slot and wakes the task. Dropping the future early
//! is harmless: the slot outlives it, and the result is dropped when it arrives. After `Runtime::shutdown` the
//! future panics when polled, with the message a blocking `apply` gives.

use std::future::Future;
use std::panic::resume_unwind;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;

use crate::delegation::call;
use crate::delegation::trustee::job::{self, Apply};
use crate::delegation::trustee::property::SendPtr;
use crate::delegation::api::trust::Trust;
use crate::delegation::trustee::shared::SHUT_DOWN;

struct Slot<R> {
    result: Option<thread::Result<R>>,
    waker: Option<Waker>,
}

/// The future returned by [`Trust::apply_async`].
#[must_use = "futures do nothing unless polled: the request is sent on the first poll"]
pub struct ApplyFuture<'a, T, F, R> {
    trust: &'a Trust<T>,
    f: Option<F>,
    slot: Option<Arc<Mutex<Slot<R>>>>,
}

impl<T, F, R> std::fmt::Debug for ApplyFuture<'_, T, F, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyFuture")
            .field("sent", &self.slot.is_some())
            .finish()
    }
}

// Nothing is pinned in place: the closure is moved out by value on the first poll.
impl<T, F, R> Unpin for ApplyFuture<'_, T, F, R> {}

impl<'a, T, F, R> ApplyFuture<'a, T, F, R> {
    pub(crate) fn new(trust: &'a Trust<T>, f: F) -> Self {
        ApplyFuture {
            trust,
            f: Some(f),
            slot: None,
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
        let this = &mut *self;
        let trustee = this.trust.trustee().shared;
        if let Some(f) = this.f.take() {
            trustee.check_running();
            if this.trust.is_local() {
                return Poll::Ready(this.trust.apply(f));
            }
            let slot = Arc::new(Mutex::new(Slot {
                result: None,
                waker: Some(cx.waker().clone()),
            }));
            this.slot = Some(slot.clone());
            let property = SendPtr(this.trust.property_ptr());
            // The property outlives the request even if the handle is dropped first: see `Worker::retire`.
            let job = Apply { property, f };
            let record = job::Deliver { job, done: move |result: job::Outcome<R>| {
                let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
                slot.result = Some(result.into_result());
                let waker = slot.waker.take();
                drop(slot);
                if let Some(w) = waker {
                    w.wake();
                }
            }};
            call::post(this.trust.trustee().shared, record);
            return Poll::Pending;
        }
        let slot = this.slot.as_ref().expect("polled after completion");
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        match slot.result.take() {
            Some(result) => {
                drop(slot);
                this.slot = None;
                Poll::Ready(result.unwrap_or_else(|p| resume_unwind(p)))
            }
            // Stopped for good without answering: nothing will wake this future.
            None if trustee.is_closed() => panic!("{SHUT_DOWN}"),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
