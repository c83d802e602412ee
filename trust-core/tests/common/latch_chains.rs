//! Shared by the test binaries of the latch refusals that follow join chains (reviews 93, 98 and 99): the exact
//! messages they assert, the counters of a closure that should be refused, and ways to spawn on the calling
//! fiber's own worker.

#![allow(dead_code)] // each binary uses part of it

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use trust_core::{Fiber, Latch, local_trustee};

use crate::common::{CountsDrops, load};

/// The message of a blocking `launch` on a latch by a fiber that the latch's holder joins.
pub const LAUNCH_JOINED_BY_HOLDER: &str = "`launch` on a `Trust<Latch<T>>` from a fiber that a fiber holding the \
     latch joins (directly, or through fibers joining each other on this worker): the new fiber would wait for \
     the latch, and the holder for this fiber, for good. Drop the guard before joining, or use `launch_then` \
     (which does not wait)";

/// The message of a blocking `apply` on a latch by a fiber that a fiber launched on the latch joins.
pub const APPLY_JOINED_BY_LAUNCHED: &str = "`apply` (or `apply_with`) on a `Trust<Latch<T>>` from a fiber that a \
     fiber launched on that latch joins (directly, or through fibers joining each other on this worker): it \
     hands out `&mut Latch<T>`, so it would wait for every launched fiber to end, the joining one included, \
     which waits for this fiber. Use `apply_then`, or `launch` and lock the latch";

/// The message of a `Latch::lock` whose holder waits for the caller through joins or blocking launches.
pub const LOCK_WAITED_FOR_BY_HOLDER: &str = "`Latch::lock` would wait for good: the latch is held by a fiber that \
     waits, through joins or blocking launches on this worker, for this fiber. Drop the guard before joining, or \
     use `launch_then`";

/// The message of `try_unwrap`/`into_inner` on a latch by a fiber that a fiber launched on the latch joins.
pub const TAKE_JOINED_BY_LAUNCHED: &str = "`Trust::try_unwrap`/`into_inner` on a `Trust<Latch<T>>` from a fiber that \
     a fiber launched on that latch joins (directly, or through fibers joining each other on this worker): the \
     value comes back only once every launched fiber has ended, the joining one included, which waits for this \
     fiber. Take the value after the launched fibers have returned";

/// In a fiber: spawns `f` on this fiber's own worker. `spawn` goes round-robin over the two workers: probes
/// are spawned (and joined) until one lands on the other worker, so the next lands here (nothing else spawns
/// in these tests' child processes).
pub fn spawn_here<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Fiber<R> {
    let here = local_trustee().index();
    while trust_core::spawn(|| local_trustee().index())
        .join()
        .unwrap()
        == here
    {}
    trust_core::spawn(f)
}

/// Counters of a closure that should be refused (never run), or that runs in a control: its runs and its
/// capture's drops.
#[derive(Clone, Default)]
pub struct Counted {
    pub runs: Arc<AtomicUsize>,
    drops: Arc<AtomicUsize>,
}

impl Counted {
    /// A launched closure that counts its run, holds a capture that counts its drop, and locks the latch (+100).
    pub fn launched(&self) -> impl FnOnce(&Latch<u64>) -> u64 + Send + 'static {
        let (runs, capture) = (self.runs.clone(), CountsDrops(self.drops.clone()));
        move |latch| {
            let _capture = capture;
            runs.fetch_add(1, Ordering::SeqCst);
            let mut g = latch.lock();
            *g += 100;
            *g
        }
    }

    /// The same for `apply` (+1,000).
    pub fn applied(&self) -> impl FnOnce(&mut Latch<u64>) -> u64 + Send + 'static {
        let (runs, capture) = (self.runs.clone(), CountsDrops(self.drops.clone()));
        move |latch| {
            let _capture = capture;
            runs.fetch_add(1, Ordering::SeqCst);
            *latch.get_mut() += 1000;
            *latch.get_mut()
        }
    }

    /// (runs, drops).
    pub fn counts(&self) -> (usize, usize) {
        (load(&self.runs), load(&self.drops))
    }
}

/// In a fiber: `spawn_here(f)`, then yields until the new fiber has begun, and once more: a wait `f` makes at
/// once (an `apply` or a take on a latch whose launched fibers run) is then suspended.
pub fn spawn_waiting_here<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Fiber<R> {
    let begun = Arc::new(AtomicBool::new(false));
    let b2 = begun.clone();
    let fiber = spawn_here(move || {
        b2.store(true, Ordering::SeqCst);
        f()
    });
    while !begun.load(Ordering::SeqCst) {
        trust_core::yield_now();
    }
    trust_core::yield_now();
    fiber
}
