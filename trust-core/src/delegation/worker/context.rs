//! Which worker (and which of its fibers) runs on this thread: one thread-local, read through an
//! `#[inline(never)]` function so that a value read before a suspension is never reused after it (../shared/DESIGN.md
//! §4); the running fiber is a field of the worker. A fiber never leaves its worker, so code holding the
//! `&Worker` may keep it across suspensions.

use std::cell::Cell;
use std::ptr;

use crate::delegation::trustee::local;
use crate::delegation::trustee::property::Registry;
use crate::delegation::worker::fiber::Scheduler;
use crate::delegation::worker::run::Worker;

pub(crate) type Yielder = corosensei::Yielder<(), ()>;

thread_local! {
    static WORKER: Cell<*const Worker> = const { Cell::new(ptr::null()) };
}

pub(crate) const NESTED_BLOCKING: &str = "blocking delegation from inside a delegated closure: the trustee would wait \
     for another trustee, and two trustees waiting on each other deadlock. Use `apply_then` (an `#[entrust]` \
     type's `_then` stub) to continue asynchronously, or `launch` to run blocking code in a fiber on the trustee";

/// The worker running on this thread, if this is a worker thread. The one thread-local of the runtime's
/// context: the running fiber and the delegated-closure depth are fields of the worker (`Worker::fiber`,
/// `Worker::delegated`), so a caller is classified with one thread-local read.
#[inline(never)]
pub(crate) fn worker() -> Option<&'static Worker> {
    let w = WORKER.with(Cell::get);
    // SAFETY: set by the worker thread for its whole life to a leaked (hence 'static) `Worker`, and cleared
    // before the thread ends.
    unsafe { w.as_ref() }
}

pub(crate) fn set_worker(w: Option<&'static Worker>) {
    WORKER.with(|c| c.set(w.map_or(ptr::null(), |w| w as *const Worker)));
}

/// The fiber running on this thread: its yielder and id.
pub(crate) fn fiber() -> Option<(*const Yielder, usize)> {
    worker()?.fiber.get()
}

pub(crate) fn set_fiber(f: Option<(*const Yielder, usize)>) {
    if let Some(w) = worker() {
        w.fiber.set(f);
    }
}

/// True inside a closure a trustee is applying (or a property's destructor) on this thread.
pub(crate) fn in_delegated() -> bool {
    local::in_delegated()
}

/// In a closure delegated to a worker (applied by its trustee, or inline by one of its fibers: neither can
/// suspend), where a wait parks the worker's thread and with it every fiber of the worker: their scheduler,
/// which tells their stacks (`Scheduler::fiber_stacks`). `None` elsewhere.
pub(crate) fn fibers_stopped_by_a_delegated_wait() -> Option<&'static Scheduler> {
    let worker = worker()?;
    in_delegated().then_some(&worker.scheduler)
}

/// Runs `f` on this worker's property registry. Only trustee-side code calls it, which runs on a worker.
pub(crate) fn with_registry<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let w = worker().expect("property bookkeeping runs on its trustee's worker");
    f(&mut w.registry.borrow_mut())
}
