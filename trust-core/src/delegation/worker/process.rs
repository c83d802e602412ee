//! The process-wide hooks of a started runtime: a function run at process exit (`atexit`), and the closing of
//! the trustees in a child forked after the runtime started (`pthread_atfork`). The foreign calls, and the fork
//! handler that must stay async-signal-safe, live here with their safety argument. Not under Miri, which
//! cannot call `atexit` or `pthread_atfork` (foreign functions).

use std::sync::OnceLock;

use crate::delegation::trustee::shared::TrusteeShared;
use crate::delegation::worker::context;

/// The trustees the fork handler closes: the runtime's, set once, when it has started.
static FORKED_TRUSTEES: OnceLock<&'static [&'static TrusteeShared]> = OnceLock::new();

/// Runs `f` at process exit (on the thread that calls `exit`, or returns from `main`).
pub(crate) fn at_exit(f: extern "C" fn()) {
    // SAFETY: registering a plain `extern "C"` function with no arguments is always sound: it is safe code,
    // and a panic cannot unwind out of it (the `extern "C"` boundary aborts).
    unsafe { libc::atexit(f) };
}

/// In a child forked from now on, closes `trustees` (only the forking thread is copied, no worker), and stops
/// the inline applies of a forking worker thread (a fiber, a closure: `Fairness`). Called once, by the runtime
/// that owns `trustees`, once it has started.
pub(crate) fn close_in_forked_children(trustees: &'static [&'static TrusteeShared]) {
    extern "C" fn close_in_forked_child() {
        if let Some(trustees) = FORKED_TRUSTEES.get() {
            for t in trustees.iter() {
                t.close_in_forked_child();
            }
        }
        if let Some(worker) = context::worker() {
            worker.fairness.stop_in_forked_child();
        }
    }
    if FORKED_TRUSTEES.set(trustees).is_err() {
        return;
    }
    // SAFETY: registering a plain `extern "C"` function with no arguments is always sound; the handler above
    // only loads and stores atomics and plain cells of its own thread (a const thread-local, no destructor),
    // and reads the clock (async-signal-safe).
    unsafe { libc::pthread_atfork(None, None, Some(close_in_forked_child)) };
}
