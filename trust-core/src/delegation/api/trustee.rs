//! Trustees: the public [`Trustee`] handle, and what clients share with a worker — its mailbox (new channels,
//! fibers to start, fibers to wake), its parker, and its run state.

use std::fmt;

use crate::delegation::api::fiber;
use crate::delegation::call;
use crate::delegation::trustee::job;
use crate::delegation::worker::context;
use crate::delegation::trustee::property::Property;
use crate::delegation::trustee::shared::{self, SHUT_DOWN, TrusteeShared};
use crate::delegation::api::trust::{BOX_ABOVE, Trust};

/// A trustee: one worker thread that owns entrusted properties and applies closures to them.
#[derive(Clone, Copy)]
pub struct Trustee {
    pub(crate) shared: &'static TrusteeShared,
}

impl fmt::Debug for Trustee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Trustee").field(&self.shared.index()).finish()
    }
}

impl PartialEq for Trustee {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.shared, other.shared)
    }
}

impl Eq for Trustee {}

impl Trustee {
    /// Hands `value` to this trustee. From now on it is touched only by closures the trustee applies.
    ///
    /// Never waits, unless 256 values entrusted from other threads wait for this trustee to register them:
    /// then, from a thread, a `may` coroutine or a fiber, it waits for the trustee to register this one (sent
    /// by the trustee's mailbox, not behind the caller's own earlier requests; no continuation runs
    /// meanwhile), so a loop that entrusts values goes at the trustee's pace. A delegated closure or an
    /// `apply_then` continuation on a worker cannot wait for good: it waits while that trustee keeps answering
    /// (not past 2 ms without an answer) until it has caught up. That wait is a wait for the trustee,
    /// as a blocking `apply` is: a thread that holds something a closure on that trustee is waiting for (a
    /// lock, an interval range) must not entrust there past the queue, as it must not `apply` there.
    ///
    /// Panics if the runtime has been shut down, or shuts down while this waits.
    pub fn entrust<T: Send + 'static>(&self, value: T) -> Trust<T> {
        // A large value is written straight into the allocation (`allocate` builds the property on the stack).
        let fresh = if const { size_of::<T>() > BOX_ABOVE } {
            Property::allocate_in_place(value)
        } else {
            Property::allocate(value)
        };
        if !self.shared.is_running() {
            // The value is dropped with the fresh property, once.
            shared::refuse(fresh, shared::closed_message(SHUT_DOWN));
        }
        if let Some(worker) = context::worker().filter(|w| std::ptr::eq(w.shared, self.shared)) {
            return Trust::from_handle(worker.adopt_fresh(fresh));
        }
        // Made before the registration goes: a `may` coroutine cancelled while its registration waits (past
        // `REGISTERING_MAX`) unwinds out of `register` with the record sent, which the trustee runs later; the
        // handle dropped by the unwind then gives up the value's one count as any early drop does (review 34:
        // without it, each such cancel left its value registered with a count nobody held, alive until
        // shutdown). A registration dropped unrun (a shutdown) drops the value itself, and the handle's drop
        // does nothing then (the runtime is no longer running).
        let (handle, registration) = fresh.entrust_to(self.shared);
        let handle = Trust::from_handle(handle);
        let shared = self.shared;
        register(shared, move || {
            shared.registered();
            context::worker()
                .expect("property bookkeeping runs on its trustee's worker")
                .adopt(registration);
        });
        handle
    }

    /// This trustee's position among the runtime's workers.
    pub fn index(&self) -> usize {
        self.shared.index()
    }
}

/// Sends a property's registration, `adopt`, to `trustee` (not the caller's own): without waiting, while
/// fewer than `REGISTERING_MAX` registrations are queued for it. Past that, a caller that can wait (a plain
/// thread, a `may` coroutine, a fiber) waits for its own to run, so a loop that entrusts values to another
/// trustee goes at that trustee's pace instead of queuing them all, with their values. A delegated closure or
/// a continuation on a worker's scheduler cannot wait for good: it waits up to a couple of milliseconds for
/// the trustee to catch up (`call::pace_registrations`), and queues its registration either way.
fn register(trustee: &'static TrusteeShared, adopt: impl FnOnce() + Send + 'static) {
    if trustee.registering() {
        if call::caller_can_wait() {
            return register_and_wait(trustee, adopt);
        }
        call::pace_registrations(trustee);
    }
    call::post(trustee, job::post(adopt));
}

/// `register` for a caller that waits: the registration goes by the trustee's mailbox, and the caller waits
/// for it to run as it would for a fiber (`Fiber::join`: a thread parks, a fiber suspends, a `may` coroutine
/// yields, and none runs a continuation). Not as a request on the caller's channel: there it would go behind
/// the caller's own earlier requests, and one of those may wait for what the caller does after this `entrust`
/// (review 34: an `apply_then` on a latch that a launched fiber holds until then pauses the channel, and the
/// entrust waited for good). The mailbox is never paused, and holds at most one such registration per waiting
/// caller. After a shutdown the mail is dropped unrun, with the value; the wait ends with the shutdown panic.
#[cold]
#[inline(never)]
fn register_and_wait(trustee: &'static TrusteeShared, adopt: impl FnOnce() + Send + 'static) {
    let (registered, promise) = fiber::promise::<()>();
    trustee.run_later(move || {
        adopt();
        promise.keep(());
    });
    if let Err(payload) = registered.join() {
        std::panic::resume_unwind(payload);
    }
}

/// True when the calling thread is the worker of `shared` (the local shortcut applies).
#[inline]
pub(crate) fn is_current(shared: &TrusteeShared) -> bool {
    context::worker().is_some_and(|w| std::ptr::eq(w.shared, shared))
}
