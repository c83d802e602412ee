//! A worker thread: its loop, its fiber scheduler, its sockets' reactor, and the thread-local that says which
//! worker runs here.

pub(crate) mod context;
pub(crate) mod fairness;
pub(crate) mod fiber;
#[cfg(not(miri))]
pub(crate) mod process;
pub(crate) mod reactor;
pub(crate) mod run;
