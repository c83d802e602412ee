//! Sleeping without losing a wake-up: a thread that found nothing to do parks, and whoever gives it work
//! unparks it. Used by idle workers and by plain OS threads waiting for an answer.
//!
//! The protocol is Dekker's: the sleeper announces `sleeping` and then re-checks for work; the waker publishes
//! work and then checks `sleeping`; a SeqCst fence on each side between the store and the load guarantees that at
//! least one of them sees the other's store. No read-modify-write is involved, and the waker's cost when nobody
//! sleeps is one fence and one load.

use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::thread::{self, Thread};
use std::time::Duration;

#[derive(Debug)]
pub(crate) struct Parker {
    sleeping: AtomicBool,
    thread: Thread,
}

impl Parker {
    /// A parker for the calling thread.
    pub(crate) fn current() -> Self {
        Parker {
            sleeping: AtomicBool::new(false),
            thread: thread::current(),
        }
    }

    /// Called after publishing work the parker's thread may be waiting for.
    #[inline]
    pub(crate) fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            self.thread.unpark();
        }
    }

    /// Parks the calling thread (which must own this parker) unless `has_work` says there is something to do.
    /// The timeout is a safety net only: every producer calls `wake`.
    pub(crate) fn park_unless(&self, has_work: impl FnOnce() -> bool, timeout: Duration) {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if !has_work() {
            thread::park_timeout(timeout);
        }
        self.sleeping.store(false, Ordering::Relaxed);
    }
}

/// How a waiting thread spends its time: spin, then yield the core, then sleep.
#[derive(Debug)]
pub(crate) struct Backoff {
    step: u32,
    spins: u32,
    yields: u32,
}

impl Backoff {
    /// For a client waiting for an answer: short, because on an oversubscribed machine the trustee it waits
    /// for may need this very core.
    pub(crate) fn client() -> Self {
        Backoff {
            step: 0,
            spins: 64,
            yields: 32,
        }
    }

    /// For an idle worker: longer, because its next request usually comes within microseconds, and waking a
    /// parked worker costs a system call on both sides.
    pub(crate) fn worker() -> Self {
        Backoff {
            step: 0,
            spins: 300,
            yields: 50,
        }
    }

    /// One round of waiting; returns true when the caller should now park.
    #[inline]
    pub(crate) fn snooze(&mut self) -> bool {
        self.step += 1;
        if self.step <= self.spins {
            std::hint::spin_loop();
            false
        } else if self.step <= self.spins + self.yields {
            thread::yield_now();
            false
        } else {
            true
        }
    }

    pub(crate) fn reset(&mut self) {
        self.step = 0;
    }
}
