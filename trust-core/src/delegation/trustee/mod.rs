//! What runs on a trustee: entrusted properties (their values, counts and borrow flags), the handles through
//! which the floors above reach them safely (`handle`), a latch's value cell (`latch_cell`), and the jobs a
//! request record runs on them.

pub(crate) mod handle;
pub(crate) mod job;
pub(crate) mod latch_cell;
pub(crate) mod local;
pub(crate) mod metrics;
pub(crate) mod oneshot;
pub(crate) mod property;
pub(crate) mod relay;
pub(crate) mod shared;
pub(crate) mod unwind;
