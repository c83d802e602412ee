//! What a request record runs on the trustee. A [`Job`] may decline to run *now*: an `apply` on a
//! `Trust<Latch<T>>` waits while launched fibers share the latch (they hold `&Latch<T>`, and `apply` hands out
//! `&mut Latch<T>`). Then the batch holding it pauses — later records of the same client wait behind it, so
//! issue order holds — and the worker resumes it once the job can run; other clients are served meanwhile.

use std::any::Any;
use std::mem::ManuallyDrop;
use std::panic::{self, AssertUnwindSafe};
use std::thread;

use crate::delegation::trustee::{local, unwind};
use crate::delegation::trustee::handle::Local;
use crate::delegation::trustee::property::{self, Header, Property, SendPtr};
use crate::delegation::protocol::slot::{self, Record};

pub(crate) trait Job: Send + 'static {
    type Output;
    /// Runs the job, or gives it back when it must wait.
    fn run(self) -> Result<Self::Output, Self>
    where
        Self: Sized;

    /// The property a job that must wait waits on (null for one that never waits).
    fn waits_on(&self) -> *mut Header {
        std::ptr::null_mut()
    }

    /// True for a job that, while it waits, holds new launches on its property back (a plain apply).
    const HOLDS_LAUNCHES: bool = false;
}

/// The start of a launched fiber: waits while a plain apply waits on the property (see
/// [`property::applies_wait`]), then runs `start` with the property, on its trustee.
pub(crate) struct Launch<T, F> {
    pub(crate) property: SendPtr<Property<T>>,
    pub(crate) start: F,
}

impl<T: 'static, R, F: FnOnce(Local<'_, T>) -> R + Send + 'static> Job for Launch<T, F> {
    type Output = R;
    fn run(self) -> Result<R, Self> {
        // SAFETY: runs on the property's trustee; the launching handle keeps it live until served.
        let local = unsafe { Local::new(self.property.get()) };
        if local.applies_wait() {
            return Err(self);
        }
        Ok((self.start)(local))
    }

    fn waits_on(&self) -> *mut Header {
        self.property.get().cast()
    }
}

/// A job that always runs at once.
pub(crate) struct Always<F>(pub(crate) F);

impl<R, F: FnOnce() -> R + Send + 'static> Job for Always<F> {
    type Output = R;
    fn run(self) -> Result<R, Self> {
        Ok((self.0)())
    }
}

/// What a delegated closure's request answers through the response slot: its result, or its panic boxed once
/// more. A panic's payload is a fat pointer (two words), the box around it one: a closure that returns `()`
/// (an increment, an insert) then answers in one word, a null pointer, not two, and a batch's results take
/// half the cache lines back to the client.
pub(crate) struct Outcome<R>(Result<R, Box<Box<dyn Any + Send>>>);

impl<R> Outcome<R> {
    #[inline]
    pub(crate) fn new(result: thread::Result<R>) -> Self {
        Outcome(result.map_err(Box::new))
    }

    /// The result, or the panic to resume.
    #[inline]
    pub(crate) fn into_result(self) -> thread::Result<R> {
        self.0.map_err(|p| *p)
    }

    /// The result of a boxed outcome, moved out of the box once (a large result: `into_result` moves it by
    /// value through more frames); a panic is resumed.
    #[allow(clippy::boxed_local)] // the box is the point: the result moves out of it, not through the stack
    pub(crate) fn unbox_or_resume(self: Box<Self>) -> R {
        match *self {
            Outcome(Ok(result)) => result,
            Outcome(Err(payload)) => std::panic::resume_unwind(*payload),
        }
    }
}

/// A delegated closure on a property; a panic in it is caught and returned.
pub(crate) struct Apply<T, F> {
    pub(crate) property: SendPtr<Property<T>>,
    pub(crate) f: F,
}

impl<T: 'static, R, F: FnOnce(&mut T) -> R + Send + 'static> Job for Apply<T, F> {
    type Output = Outcome<R>;
    #[inline]
    fn run(self) -> Result<Self::Output, Self> {
        let p = self.property.get();
        // SAFETY: records run on the property's trustee, and the issuing handle keeps the property live
        // until its requests are served (see `Worker::retire`).
        if unsafe { property::launched(p.cast()) } {
            return Err(self);
        }
        // SAFETY: as above.
        Ok(Outcome::new(unsafe { property::apply_caught(p, self.f) }))
    }

    fn waits_on(&self) -> *mut Header {
        self.property.get().cast()
    }

    const HOLDS_LAUNCHES: bool = true;
}

/// The record of a request whose caller waits for the output: it comes back through the response slot.
pub(crate) struct Reply<J>(pub(crate) J);

impl<J: Job<Output: Send>> Record for Reply<J> {
    const RESULT: usize = slot::result_bytes::<J::Output>();

    #[inline]
    fn run(self, out: *mut u8) -> bool {
        let out = Out(out);
        let ran = panic::catch_unwind(AssertUnwindSafe(move || {
            run_job(self.0, move |output| {
                let out = out;
                // SAFETY: `out` is the room the batch reserved for this record's result; written once.
                unsafe { slot::write_result(out.0, output) }
            })
        }));
        ran.unwrap_or_else(unanswered::<J::Output>)
    }
}

/// A `Reply` whose job panicked before its result was written. Every job a `Reply` carries catches its user
/// code's panics (an `Apply` answers them as its `Outcome`; a launch's start contains a capture's panicking
/// destructor), so this is a bug in trust. A result of no size is not read: the panic is contained as in
/// [`contained`]. Any other would be read from room the trustee never wrote, so the process aborts instead.
#[cold]
#[inline(never)]
fn unanswered<O>(payload: Box<dyn Any + Send>) -> bool {
    unwind::drop_payload(payload);
    if size_of::<O>() != 0 {
        eprintln!(
            "trust: a request panicked on its trustee before its result was written (a bug in trust: please \
             report it); aborting, as its caller would read a result that is not there"
        );
        std::process::abort();
    }
    escaped();
    false
}

/// The record of a request that answers nothing through the slot: `done` gets the output on the trustee
/// (fire-and-forget requests: count changes, registrations).
pub(crate) struct Deliver<J, D> {
    pub(crate) job: J,
    pub(crate) done: D,
}

impl<J: Job, D: FnOnce(J::Output) + Send + 'static> Record for Deliver<J, D> {
    const RESULT: usize = 0;

    #[inline]
    fn run(self, _: *mut u8) -> bool {
        contained(move || run_job(self.job, self.done))
    }
}

/// A fire-and-forget record running `f`.
pub(crate) fn post<F: FnOnce() + Send + 'static>(f: F) -> Deliver<Always<F>, fn(())> {
    Deliver {
        job: Always(f),
        done: drop,
    }
}

/// Where a record's result goes: a place in the response body, which only the trustee writes until the
/// answer.
struct Out(*mut u8);
// SAFETY: the pointer is used only on the trustee, by the record it was made for.
unsafe impl Send for Out {}

/// Runs a record's work. Everything user code can do from a record — a result whose `Drop` panics because its
/// receiver is gone, a user `Waker` that panics — is contained here, so a record can never unwind into the
/// trustee's loop. Returns what `f` returns, or the default if it panicked.
#[inline]
pub(crate) fn contained<R: Default>(f: impl FnOnce() -> R) -> R {
    panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        unwind::drop_payload(payload);
        escaped();
        R::default()
    })
}

#[cold]
#[inline(never)]
fn escaped() {
    eprintln!(
        "trust: a panic escaped a request's bookkeeping on its trustee (a result's `Drop` or a `Waker`); the \
         trustee keeps serving"
    );
}

/// Runs `job` and hands its output to `done`; a job that must wait pauses its batch (see the module docs):
/// then it returns true. Inline down to the user's closure, the pause out of line: a record's run is then one
/// call from the batch loop (it was three nested calls, with their register saves, about 12 instructions per
/// record).
#[inline]
pub(crate) fn run_job<J: Job, D: FnOnce(J::Output) + 'static>(job: J, done: D) -> bool {
    match job.run() {
        Ok(output) => {
            done(output);
            false
        }
        Err(job) => {
            pause_job(job, done);
            true
        }
    }
}

#[cold]
#[inline(never)]
fn pause_job<J: Job, D: FnOnce(J::Output) + 'static>(job: J, done: D) {
    let on = job.waits_on();
    let holds = J::HOLDS_LAUNCHES && !on.is_null();
    if holds {
        // SAFETY: a paused job's property stays live until it has run (see `Worker::retire`); on its trustee.
        unsafe { property::set_applies_waiting(on, 1) };
    }
    let parts = PausedParts(ManuallyDrop::new(job), ManuallyDrop::new(done));
    local::pause(
        Box::new(move || {
            if holds {
                // SAFETY: as above; counted in again if it pauses again.
                unsafe { property::set_applies_waiting(on, -1) };
            }
            let (job, done) = parts.into_parts();
            contained(move || run_job(job, done));
        }),
        on,
    );
}

/// A paused job and what answers it, dropped each on its own if dropped unrun (at shutdown): dropped together, a
/// capture's destructor that panics would unwind into the answer's (which wakes a task: user code too), and two
/// panics abort the process (review 69).
struct PausedParts<J, D>(ManuallyDrop<J>, ManuallyDrop<D>);

impl<J, D> PausedParts<J, D> {
    fn into_parts(self) -> (J, D) {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: each part is taken once, and `this` is never dropped (its `Drop` would take them again).
        unsafe { (ManuallyDrop::take(&mut this.0), ManuallyDrop::take(&mut this.1)) }
    }
}

impl<J, D> Drop for PausedParts<J, D> {
    fn drop(&mut self) {
        // SAFETY: dropped once, untaken (`into_parts` forgets `self`).
        let (job, done) = unsafe { (ManuallyDrop::take(&mut self.0), ManuallyDrop::take(&mut self.1)) };
        let _ = unwind::drop_quietly(job);
        drop(done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_outcome_answers_in_one_word() {
        assert_eq!(slot::result_bytes::<Outcome<()>>(), 8);
        assert_eq!(slot::result_bytes::<thread::Result<()>>(), 16);
        assert_eq!(slot::result_bytes::<Outcome<u64>>(), 16);
        let panicked = Outcome::<()>::new(panic::catch_unwind(|| panic!("boom")));
        let payload = panicked.into_result().unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
        assert_eq!(Outcome::new(Ok(7u64)).into_result().unwrap(), 7);
    }
}
