//! Waking `apply_async` tasks in bulk. A trustee that woke each answered task itself paid, per request, the
//! executor's wake-up from a foreign thread (tokio: its inject queue under a mutex, and the unpark of an idle
//! executor thread). Instead, while the trustee reads its mail (`Relay::collect`), it wakes the first task it
//! answers itself, at once, and leaves the wakers of the answers after it on its relay, as it gives them; every
//! `apply_async` poll drains the relay first (`Relay::drain`), so the task woken first wakes the rest from the
//! executor's own thread, where a wake-up is a push on a local queue. When the mail is read, the trustee wakes
//! the last task still on the relay itself, whose poll drains what the first one's did not find.
//!
//! The first wake-up goes out at once, not when the mail is read (review 45): a closure later in the same mail
//! that blocks (for up to seconds, or until a task it answered before goes on) must not hold that task back.
//! A relay left undrained (the tasks woken by the trustee belong to an executor that is busy, or dropped their
//! futures unpolled) is drained by the trustee itself after a few idle rounds or before it sleeps
//! (`Worker::run`): nobody waits on another executor for long. (Tasks answered second and later in a mail,
//! while the first task's executor never polls, still wait for the mail's closures to return.)

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Waker;

use crate::delegation::trustee::unwind;

/// The relay of the trustee reading its mail on this thread (`Relay::collect`), and whether it has woken a
/// task itself yet.
struct Collecting {
    relay: &'static Relay,
    woke_first: bool,
}

thread_local! {
    /// Open while the trustee reads its mail.
    static COLLECTING: Cell<Option<Collecting>> = const { Cell::new(None) };
}

/// Wakes `waker`, or relays it if `Relay::collect` is running on this thread (the first of each `collect` is
/// woken at once all the same).
pub(crate) fn wake(waker: Waker) {
    match COLLECTING.take() {
        None => waker.wake(),
        Some(Collecting { relay, woke_first }) => {
            COLLECTING.set(Some(Collecting { relay, woke_first: true }));
            if woke_first {
                relay.push(waker);
            } else {
                wake_contained(waker);
            }
        }
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
    /// Runs `f` (the trustee reading its mail): the answers it gives wake their tasks through this relay (see
    /// the module doc); when it is done, the last task left on the relay is woken, whose poll drains the rest.
    pub(crate) fn collect(&'static self, f: impl FnOnce()) {
        struct Restore(Option<Collecting>);
        impl Drop for Restore {
            fn drop(&mut self) {
                COLLECTING.set(self.0.take());
            }
        }
        let outer = Restore(COLLECTING.replace(Some(Collecting { relay: self, woke_first: false })));
        f();
        drop(outer);
        if self.is_pending() {
            let last = {
                let mut relayed = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
                let last = relayed.pop();
                if relayed.is_empty() {
                    self.pending.store(false, Ordering::Relaxed);
                }
                last
            };
            if let Some(last) = last {
                wake_contained(last);
            }
        }
    }

    /// Leaves `waker` on the relay, for the next drain.
    fn push(&self, waker: Waker) {
        let mut relayed = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        relayed.push(waker);
        self.pending.store(true, Ordering::Release);
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

    /// A relay of the process's own, as a trustee's is.
    fn relay() -> &'static Relay {
        Box::leak(Box::default())
    }

    #[test]
    fn the_first_answered_is_woken_at_once_the_last_when_the_mail_is_read_and_the_rest_by_a_drain() {
        let counts: Vec<_> = (0..4).map(|_| Arc::new(Count(AtomicUsize::new(0)))).collect();
        let woken = || counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect::<Vec<_>>();
        let relay = relay();
        relay.collect(|| {
            for c in &counts {
                wake(Waker::from(c.clone()));
                // The first at once: a closure after it in the mail that blocks does not hold its task back.
                assert_eq!(woken()[0], 1);
            }
            assert_eq!(woken(), [1, 0, 0, 0], "the others relayed");
        });
        assert_eq!(woken(), [1, 0, 0, 1], "the last, once the mail is read");
        assert!(relay.is_pending());
        relay.drain();
        assert_eq!(woken(), [1, 1, 1, 1]);
        assert!(!relay.is_pending());
        relay.drain();
        assert_eq!(woken(), [1, 1, 1, 1], "each once");
        wake(Waker::from(counts[0].clone()));
        assert_eq!(woken(), [2, 1, 1, 1], "outside `collect`, at once");
        relay.collect(|| wake(Waker::from(counts[1].clone())));
        assert_eq!(woken(), [2, 2, 1, 1], "a lone answer is woken at once, once");
        assert!(!relay.is_pending());
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
        let relay = relay();
        relay.collect(|| {
            for w in [Waker::from(Arc::new(Panics)), Waker::from(count.clone()), Waker::from(Arc::new(Panics))] {
                wake(w);
            }
        });
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "the first and the last woken, and contained");
        relay.drain();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(!relay.is_pending());
    }
}
