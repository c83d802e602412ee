//! What a trustee's own thread keeps while it runs requests: how deep it is in delegated closures (they must
//! not block), and the record that paused its batch (see `job`). Thread-locals of this floor, so that code
//! running on the trustee needs nothing from the floors above.

use std::cell::{Cell, RefCell};

use crate::delegation::trustee::property::Header;

/// A record that must run again later (see `job::run_job`).
pub(crate) type Paused = Box<dyn FnOnce()>;

thread_local! {
    static DELEGATED: Cell<u32> = const { Cell::new(0) };
    static PAUSED: RefCell<Option<(Paused, *mut Header)>> = const { RefCell::new(None) };
    static CLOSING: Cell<bool> = const { Cell::new(false) };
}

/// This thread's trustee is dropping its values at shutdown (see `property::drop_all_at_shutdown`).
pub(crate) fn closing() -> bool {
    CLOSING.with(Cell::get)
}

/// Called by a worker when it starts dropping its values at shutdown.
pub(crate) fn set_closing() {
    CLOSING.with(|c| c.set(true));
}

/// True inside a closure a trustee is applying (or a property's destructor) on this thread.
#[inline]
pub(crate) fn in_delegated() -> bool {
    DELEGATED.with(Cell::get) > 0
}

#[inline]
pub(crate) fn enter_delegated() {
    DELEGATED.with(|d| d.set(d.get() + 1));
}

#[inline]
pub(crate) fn leave_delegated() {
    DELEGATED.with(|d| d.set(d.get() - 1));
}

/// Called by a record that cannot run yet, on the property `on`: its batch stops after it, and `record` runs
/// again first when the batch resumes.
pub(crate) fn pause(record: Paused, on: *mut Header) {
    let previous = PAUSED.with(|p| p.replace(Some((record, on))));
    debug_assert!(previous.is_none(), "one record pauses a batch at a time");
}

/// The record that paused its batch, if any, and the property it waits on.
pub(crate) fn take_paused() -> Option<(Paused, *mut Header)> {
    PAUSED.with(RefCell::take)
}
