//! Poisoning policy, and the "broken" flag for a raw lock that panicked.
//!
//! **No data poisoning.** A panic while guards are held unwinds through the guards, whose `Drop`
//! releases every lock; a key held by value is dropped and so returns to its thread, and a key lent
//! as `&mut` is simply no longer borrowed. The next locker sees the data as the panicking thread
//! left it, exactly as with `parking_lot`. Reasons: `lock_all!` returns plain guards, and a
//! `Result` per guard would turn every multi-lock call into N unwraps for a condition most
//! programs never recover from; and a thread that wants to detect a half-finished update can keep
//! a "dirty" flag in the data itself, set before and cleared after the update.
//!
//! **Broken raw locks.** A raw lock is outside our control (any `lock_api::RawMutex` or
//! `RawRwLock` can be plugged in). If one panics inside its own `lock`, `try_lock` or `unlock`, its
//! state is unknown: it may be held by nobody forever. Waiting on it could hang, so the lock is
//! marked *broken* and every later acquisition panics with a message instead. Collections and
//! `lock_all!` release the locks they already took before the panic continues, and the key
//! survives. Reading the data through `&mut` (`get_mut`, `into_inner`) still works.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the raw lock beside it panicked; checked before every acquisition.
#[derive(Debug)]
pub(crate) struct BrokenFlag(AtomicBool);

impl BrokenFlag {
    #[inline]
    pub(crate) const fn new() -> Self {
        BrokenFlag(AtomicBool::new(false))
    }

    /// Whether a raw-lock operation panicked. `Relaxed`: the flag guards no data; a thread that
    /// misses a fresh `true` just meets the raw lock in whatever state the panic left it.
    #[inline]
    pub(crate) fn is_broken(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Panics if the raw lock is broken; call before acquiring.
    #[inline]
    pub(crate) fn check(&self) {
        if self.is_broken() {
            broken_lock();
        }
    }

    /// Runs one raw-lock operation; if it unwinds, the lock is marked broken on the way out.
    #[inline]
    pub(crate) fn guard<R>(&self, op: impl FnOnce() -> R) -> R {
        let bomb = BreakOnUnwind(&self.0);
        let result = op();
        std::mem::forget(bomb);
        result
    }
}

/// Marks the flag broken when dropped, i.e. only when the operation it watches unwinds.
struct BreakOnUnwind<'a>(&'a AtomicBool);

impl Drop for BreakOnUnwind<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn broken_lock() -> ! {
    panic!(
        "this lock is broken: its raw lock panicked inside an earlier lock or unlock, so whether it \
         is held is unknown and waiting on it could hang forever; take the data out with \
         `get_mut`/`into_inner` and build a new lock"
    )
}
