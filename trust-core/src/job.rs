//! What a request record runs on the trustee. A [`Job`] may decline to run *now*: an `apply` on a
//! `Trust<Latch<T>>` waits while launched fibers share the latch (they hold `&Latch<T>`, and `apply` hands out
//! `&mut Latch<T>`). Then the batch holding it pauses — later records of the same client wait behind it, so
//! issue order holds — and the worker resumes it once the job can run; other clients are served meanwhile.

use std::panic::{self, AssertUnwindSafe};
use std::thread;

use crate::context;
use crate::property::{self, Property, SendPtr};

pub(crate) trait Job: Send + 'static {
    type Output;
    /// Runs the job, or gives it back when it must wait.
    fn run(self) -> Result<Self::Output, Self>
    where
        Self: Sized;
}

/// A job that always runs at once.
pub(crate) struct Always<F>(pub(crate) F);

impl<R, F: FnOnce() -> R + Send + 'static> Job for Always<F> {
    type Output = R;
    fn run(self) -> Result<R, Self> {
        Ok((self.0)())
    }
}

/// A delegated closure on a property; a panic in it is caught and returned.
pub(crate) struct Apply<T, F> {
    pub(crate) property: SendPtr<Property<T>>,
    pub(crate) f: F,
}

impl<T: 'static, R, F: FnOnce(&mut T) -> R + Send + 'static> Job for Apply<T, F> {
    type Output = thread::Result<R>;
    fn run(self) -> Result<Self::Output, Self> {
        let p = self.property.get();
        // SAFETY: records run on the property's trustee, and the issuing handle keeps the property live
        // until its requests are served (see `Worker::retire`).
        if unsafe { property::launched(p.cast()) } {
            return Err(self);
        }
        let worker = context::worker().expect("records run on a worker");
        // SAFETY: as above.
        Ok(unsafe { property::apply_caught(worker, p, self.f) })
    }
}

/// The record for `job`: runs it and hands its output to `done`, on the trustee. Everything user code can do
/// from a record — a result whose `Drop` panics because its receiver is gone, a user `Waker` that panics — is
/// contained here, so a record can never unwind into the trustee's loop.
pub(crate) fn record<J: Job, D: FnOnce(J::Output) + Send + 'static>(
    job: J,
    done: D,
) -> impl FnOnce() + Send + 'static {
    move || {
        if panic::catch_unwind(AssertUnwindSafe(|| run_record(job, done))).is_err() {
            eprintln!(
                "trust: a panic escaped a request's bookkeeping on its trustee (a result's `Drop` or a \
                 `Waker`); the trustee keeps serving"
            );
        }
    }
}

fn run_record<J: Job, D: FnOnce(J::Output) + Send + 'static>(job: J, done: D) {
    match job.run() {
        Ok(output) => done(output),
        Err(job) => context::worker()
            .expect("records run on a worker")
            .pause_batch(Box::new(move || run_record(job, done))),
    }
}
