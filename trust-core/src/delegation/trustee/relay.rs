//! Waking `apply_async` tasks in bulk. A trustee that woke each answered task itself paid, per request, the
//! executor's wake-up from a foreign thread (tokio: its inject queue under a mutex, and the unpark of an idle
//! executor thread). Instead, the wakers of the answers a trustee gives while it reads its mail are collected
//! (`collect`), and handed over (`Relay::hand_over`): the trustee wakes one task itself, and leaves the others
//! on its relay. Every `apply_async` poll drains the relay first (`Relay::drain`), so the task woken first
//! wakes the rest from the executor's own thread, where a wake-up is a push on a local queue.
//!
//! A relay left undrained (the task woken first belongs to an executor that is busy, or it dropped its future
//! unpolled) is drained by the trustee itself after a few idle rounds or before it sleeps
//! (`Worker::run`): nobody waits on another executor for long.

use std::cell::RefCell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Waker;

use crate::delegation::trustee::unwind;

thread_local! {
    /// Open while the trustee reads its mail: the wakers of the answers given meanwhile.
    static COLLECTING: RefCell<Option<Vec<Waker>>> = const { RefCell::new(None) };
}

/// Runs `f`, and returns the wakers that `wake` was given meanwhile on this thread instead of waking them.
pub(crate) fn collect(f: impl FnOnce()) -> Vec<Waker> {
    let outer = COLLECTING.with(|c| c.replace(Some(Vec::new())));
    f();
    COLLECTING.with(|c| c.replace(outer)).unwrap_or_default()
}

/// Wakes `waker`, or collects it if `collect` is running on this thread.
pub(crate) fn wake(waker: Waker) {
    let unwoken = COLLECTING.with(|c| match &mut *c.borrow_mut() {
        Some(wakers) => {
            wakers.push(waker);
            None
        }
        None => Some(waker),
    });
    if let Some(waker) = unwoken {
        waker.wake();
    }
}

/// Wakers a trustee left for the tasks it answered, to be woken by whoever polls an `apply_async` future next.
#[derive(Default)]
pub(crate) struct Relay {
    /// True while `wakers` holds some: checked with one load before taking the lock.
    pending: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Relay {
    /// Leaves `wakers` on the relay, but for the last, which it wakes: that task's poll drains the relay.
    pub(crate) fn hand_over(&self, mut wakers: Vec<Waker>) {
        let Some(first) = wakers.pop() else {
            return;
        };
        if !wakers.is_empty() {
            let mut relayed = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            relayed.append(&mut wakers);
            self.pending.store(true, Ordering::Release);
        }
        // After the others are on the relay: the poll this wakes finds them.
        wake_contained(first);
    }

    /// True when wakers wait on the relay.
    #[inline]
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Wakes every task left on the relay.
    #[inline]
    pub(crate) fn drain(&self) {
        if self.is_pending() {
            self.drain_now();
        }
    }

    #[cold]
    fn drain_now(&self) {
        let wakers = {
            let mut relayed = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            self.pending.store(false, Ordering::Relaxed);
            std::mem::take(&mut *relayed)
        };
        for waker in wakers {
            wake_contained(waker);
        }
    }
}

/// Wakes a task for someone else (the trustee, or another task's poll): a user `Waker` that panics must take
/// down neither the trustee nor the task that happened to drain the relay.
fn wake_contained(waker: Waker) {
    if unwind::panicked(|| waker.wake()) {
        eprintln!("trust: a task's `Waker` panicked when woken; the other tasks were woken all the same");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_last_answered_is_woken_at_once_and_the_rest_by_the_next_drain() {
        let counts: Vec<_> = (0..3).map(|_| Arc::new(Count(AtomicUsize::new(0)))).collect();
        let woken = || counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect::<Vec<_>>();
        let wakers = collect(|| {
            for c in &counts {
                wake(Waker::from(c.clone()));
            }
        });
        assert_eq!(woken(), [0, 0, 0], "collected, not woken");
        let relay = Relay::default();
        relay.hand_over(wakers);
        assert_eq!(woken(), [0, 0, 1]);
        assert!(relay.is_pending());
        relay.drain();
        assert_eq!(woken(), [1, 1, 1]);
        assert!(!relay.is_pending());
        relay.drain();
        assert_eq!(woken(), [1, 1, 1], "each once");
        wake(Waker::from(counts[0].clone()));
        assert_eq!(woken(), [2, 1, 1], "outside `collect`, at once");
    }

    struct Panics;

    impl Wake for Panics {
        fn wake(self: Arc<Self>) {
            panic!("a user waker that panics");
        }
    }

    /// Whoever drains (a trustee, another task's poll) survives a waker that panics, and wakes the rest.
    #[test]
    fn a_panicking_waker_on_the_relay_is_contained() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let relay = Relay::default();
        relay.hand_over(vec![Waker::from(count.clone()), Waker::from(Arc::new(Panics)), Waker::from(Arc::new(Panics))]);
        relay.hand_over(vec![Waker::from(Arc::new(Panics)), Waker::from(count.clone())]);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the second hand-over woke its last");
        relay.drain();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(!relay.is_pending());
    }
}
