//! Waking `apply_async` tasks in bulk. A trustee that woke each answered task itself paid, per request, the
//! executor's wake-up from a foreign thread (tokio: its inject queue under a mutex, and the unpark of an idle
//! executor thread). Instead, while the trustee reads its mail (`Relay::collect`), it wakes the first task it
//! answers itself, at once, and collects the wakers of the answers after it; when the mail is read it leaves
//! them on its relay. Every `apply_async` poll drains the relay first (`Relay::drain`), so the rest are woken
//! from an executor's own thread, where a wake-up is a push on a local queue. The task woken first drains them
//! when it is polled; only if some poll began since that wake (the first task's, which may have found the
//! relay still empty, or another's) does the trustee wake one of them itself, whose poll then drains the rest.
//! So a mail costs the trustee one foreign wake-up, not two, when its first task has not run yet (the usual
//! case under load: the mail's closures are quicker than an executor's turn).
//!
//! The first wake-up goes out at once (review 45): a closure later in the same mail that blocks (for up to
//! seconds, or until the task it answered before goes on) must not hold that task back. The others are
//! collected on the trustee's thread and handed over with one lock: handing each to the relay as it was given
//! (a lock per answer, and polls draining the relay while the trustee still fills it) made the bench's
//! `apply_async` row a third slower (medians of five alternating runs: 4.97 -> 3.43 M ops/s). So a task
//! answered second or later in a mail waits for the mail's closures to return (the limit docs/delegation.md
//! states).
//!
//! A relay left undrained (the tasks woken by the trustee belong to an executor that is busy, or dropped their
//! futures unpolled) is drained by the trustee itself after a few idle rounds or before it sleeps
//! (`Worker::run`): nobody waits on another executor for long.

use std::cell::{Cell, RefCell};
use std::task::Waker;

use crate::delegation::protocol::sync::{AtomicBool, Mutex, Ordering, fence};
use crate::delegation::trustee::unwind;

/// The answers' wakers of the mail the trustee on this thread reads (`Relay::collect`).
struct Collecting {
    /// The relay the mail's wakers are left on.
    relay: &'static Relay,
    /// True once the mail's first answer has woken its task.
    woke_first: bool,
    /// The wakers of the answers after the first.
    rest: Vec<Waker>,
}

thread_local! {
    /// Open while the trustee reads its mail.
    static COLLECTING: RefCell<Option<Collecting>> = const { RefCell::new(None) };
    /// An empty vector of wakers whose capacity this thread reuses: the trustee collects into it, a drain
    /// swaps it for the relay's. So the vectors pass between the trustee and the executors' threads, and none
    /// is allocated or freed per mail (each was, and freed on another thread than its own).
    static SPARE: Cell<Vec<Waker>> = const { Cell::new(Vec::new()) };
}

/// This thread's spare vector (a new one in a thread-local destructor).
fn take_spare() -> Vec<Waker> {
    SPARE.try_with(Cell::take).unwrap_or_default()
}

/// Keeps `wakers` (empty) as this thread's spare, unless it grew past `SPARE_WAKERS`.
fn keep_spare(wakers: Vec<Waker>) {
    debug_assert!(wakers.is_empty());
    if wakers.capacity() <= SPARE_WAKERS {
        let _ = SPARE.try_with(|spare| spare.set(wakers));
    }
}

/// The most wakers a spare vector keeps room for (16 bytes each).
const SPARE_WAKERS: usize = 4096;

/// Wakes `waker`, or collects it if `Relay::collect` is running on this thread (the first of each `collect` is
/// woken at once all the same).
pub(crate) fn wake(waker: Waker) {
    // Woken outside the borrow: a waker is user code.
    let now = COLLECTING.with(|c| match &mut *c.borrow_mut() {
        None => Some((waker, false)),
        Some(collecting) if !collecting.woke_first => {
            collecting.woke_first = true;
            // Before the wake-up: the task's poll clears it (`Relay::polled`).
            collecting.relay.unpolled.store(true, Ordering::Relaxed);
            Some((waker, true))
        }
        Some(collecting) => {
            collecting.rest.push(waker);
            None
        }
    });
    match now {
        Some((waker, true)) => wake_contained(waker),
        Some((waker, false)) => waker.wake(),
        None => {}
    }
}

/// Wakers a trustee left for the tasks it answered, to be woken by whoever polls an `apply_async` future next.
#[derive(Default)]
pub(crate) struct Relay {
    /// True while `wakers` holds some: checked with one load before taking the lock.
    pending: AtomicBool,
    /// True from the wake-up of a mail's first task until an `apply_async` poll begins (`Relay::polled`).
    unpolled: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Relay {
    /// Runs `f` (the trustee reading its mail): the first answer it gives wakes its task at once; the others'
    /// wakers are left on the relay when it is done, for that task's poll to drain. If a poll began meanwhile
    /// (it may have drained before they were there), the trustee wakes one of them itself.
    pub(crate) fn collect(&'static self, f: impl FnOnce()) {
        let fresh = Collecting {
            relay: self,
            woke_first: false,
            rest: take_spare(),
        };
        let outer = COLLECTING.with(|c| c.replace(Some(fresh)));
        f();
        let mine = COLLECTING.with(|c| c.replace(outer));
        let mut rest = mine.map_or_else(Vec::new, |c| c.rest);
        if rest.is_empty() {
            return keep_spare(rest);
        }
        {
            let mut relayed = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            if relayed.is_empty() {
                // The relay's empty vector becomes the spare.
                std::mem::swap(&mut *relayed, &mut rest);
            } else {
                relayed.append(&mut rest);
            }
            self.pending.store(true, Ordering::Release);
        }
        keep_spare(rest);
        // Against `polled`'s fence: either a poll that began since the first wake-up finds `pending` (and
        // drains), or this finds that it began (and wakes a task whose poll will drain). If none began, the
        // first task's poll is still to come, and finds them.
        fence(Ordering::SeqCst);
        if !self.unpolled.load(Ordering::Relaxed) {
            self.wake_one();
        }
    }

    /// Says that an `apply_async` poll begins (before it looks at `pending`, in `drain`).
    #[inline]
    pub(crate) fn polled(&self) {
        if self.unpolled.load(Ordering::Relaxed) {
            self.unpolled.store(false, Ordering::Relaxed);
            // Against `collect`'s fence: this poll's look at `pending` below, or `collect`'s at `unpolled`, sees
            // the other's store.
            fence(Ordering::SeqCst);
        }
    }

    /// Wakes the task of the last waker left on the relay, if any is still there (a poll may have drained it).
    #[cold]
    fn wake_one(&self) {
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
        let mut wakers = take_spare();
        {
            let mut relayed = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            self.pending.store(false, Ordering::Relaxed);
            std::mem::swap(&mut *relayed, &mut wakers);
        }
        for waker in wakers.drain(..) {
            wake_contained(waker);
        }
        keep_spare(wakers);
    }
}

/// Wakes a task for someone else (the trustee, or another task's poll): a user `Waker` that panics must take
/// down neither the trustee nor the task that happened to drain the relay.
fn wake_contained(waker: Waker) {
    if unwind::panicked(|| waker.wake()) {
        eprintln!(
            "trust: a task's `Waker` panicked when woken; the other tasks were woken all the same"
        );
    }
}

#[cfg(all(test, not(loom)))]
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

    /// What a poll of an `apply_async` future does first (`TrusteeShared::drain_relay`).
    fn poll(relay: &Relay) {
        relay.polled();
        relay.drain();
    }

    fn counts(n: usize) -> Vec<Arc<Count>> {
        (0..n)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect()
    }

    fn woken(counts: &[Arc<Count>]) -> Vec<usize> {
        counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect()
    }

    #[test]
    fn the_first_answered_is_woken_at_once_and_its_poll_wakes_the_rest() {
        let counts = counts(4);
        let relay: &'static Relay = Box::leak(Box::default());
        relay.collect(|| {
            for c in &counts {
                wake(Waker::from(c.clone()));
                // The first at once: a closure after it in the mail that blocks does not hold its task back.
                assert_eq!(woken(&counts)[0], 1);
            }
            assert_eq!(woken(&counts), [1, 0, 0, 0], "the others collected");
        });
        assert_eq!(
            woken(&counts),
            [1, 0, 0, 0],
            "left for the first task's poll, which has not begun"
        );
        assert!(relay.is_pending());
        poll(relay);
        assert_eq!(woken(&counts), [1, 1, 1, 1]);
        assert!(!relay.is_pending());
        poll(relay);
        assert_eq!(woken(&counts), [1, 1, 1, 1], "each once");
        wake(Waker::from(counts[0].clone()));
        assert_eq!(woken(&counts), [2, 1, 1, 1], "outside `collect`, at once");
        relay.collect(|| wake(Waker::from(counts[1].clone())));
        assert_eq!(
            woken(&counts),
            [2, 2, 1, 1],
            "a lone answer is woken at once, once"
        );
        assert!(!relay.is_pending());
    }

    /// A poll that began before the others were on the relay found it empty: the trustee wakes one of them,
    /// whose poll wakes the rest.
    #[test]
    fn a_poll_during_the_mail_makes_the_trustee_wake_the_last() {
        let counts = counts(4);
        let relay: &'static Relay = Box::leak(Box::default());
        relay.collect(|| {
            wake(Waker::from(counts[0].clone()));
            poll(relay);
            for c in &counts[1..] {
                wake(Waker::from(c.clone()));
            }
        });
        assert_eq!(
            woken(&counts),
            [1, 0, 0, 1],
            "the last, once the mail is read"
        );
        assert!(relay.is_pending());
        poll(relay);
        assert_eq!(woken(&counts), [1, 1, 1, 1]);
        assert!(!relay.is_pending());
        // The next mail's first wake-up waits for a poll again.
        relay.collect(|| counts.iter().for_each(|c| wake(Waker::from(c.clone()))));
        assert_eq!(woken(&counts), [2, 1, 1, 1]);
        poll(relay);
        assert_eq!(woken(&counts), [2, 2, 2, 2]);
    }

    /// Two answers, a poll between them: the trustee wakes the second itself, and nothing is left pending.
    #[test]
    fn waking_the_only_one_left_empties_the_relay() {
        let counts = counts(2);
        let relay: &'static Relay = Box::leak(Box::default());
        relay.collect(|| {
            wake(Waker::from(counts[0].clone()));
            poll(relay);
            wake(Waker::from(counts[1].clone()));
        });
        assert_eq!(woken(&counts), [1, 1]);
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
        let relay: &'static Relay = Box::leak(Box::default());
        relay.collect(|| {
            for w in [
                Waker::from(Arc::new(Panics)),
                Waker::from(count.clone()),
                Waker::from(Arc::new(Panics)),
            ] {
                wake(w);
                poll(relay);
            }
        });
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            0,
            "the first and the last woken, and contained"
        );
        poll(relay);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(!relay.is_pending());
    }
}

/// The handshake between the trustee leaving wakers on its relay and the polls that drain it, model-checked:
/// whatever the interleaving (and whichever stale values the loads may see), every task is woken exactly once,
/// given an executor that polls after it is woken, and at times another task of that trustee polled — without
/// the trustee's own drain after `RELAY_PATIENCE` rounds (`Worker::run`), which is only a safety net. A lost
/// wake-up leaves the executor waiting for good, which loom reports as a deadlock.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::{Arc, Notify};
    use std::task::Wake;

    /// A task's waker: counts its wake-ups and wakes the executor.
    struct Task {
        woken: AtomicUsize,
        executor: Arc<Notify>,
    }

    impl Wake for Task {
        fn wake(self: std::sync::Arc<Self>) {
            self.woken.fetch_add(1, Ordering::Relaxed);
            self.executor.notify();
        }
    }

    /// What an `apply_async` poll does first (`TrusteeShared::drain_relay`).
    fn poll(relay: &Relay) {
        relay.polled();
        relay.drain();
    }

    fn answers(tasks: usize, other_poll: bool) {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(move || {
            let relay: &'static Relay = Box::leak(Box::default());
            let executor = Arc::new(Notify::new());
            let tasks: Vec<_> = (0..tasks)
                .map(|_| {
                    std::sync::Arc::new(Task {
                        woken: AtomicUsize::new(0),
                        executor: executor.clone(),
                    })
                })
                .collect();
            let woken = {
                let tasks = tasks.clone();
                move || {
                    tasks
                        .iter()
                        .map(|t| t.woken.load(Ordering::Relaxed))
                        .collect::<Vec<_>>()
                }
            };
            // The tasks' executor (one thread): polls after each wake-up (two at once may make one poll), until
            // every task was woken.
            let n = tasks.len();
            let executor = loom::thread::spawn(move || {
                while woken().iter().sum::<usize>() < n {
                    executor.wait();
                    poll(relay);
                }
            });
            // Another task of that trustee, polled at any moment.
            let other = other_poll.then(|| loom::thread::spawn(move || poll(relay)));
            relay.collect(|| tasks.iter().for_each(|t| wake(Waker::from(t.clone()))));
            executor.join().unwrap();
            if let Some(other) = other {
                other.join().unwrap();
            }
            let woken: Vec<_> = tasks
                .iter()
                .map(|t| t.woken.load(Ordering::Relaxed))
                .collect();
            assert_eq!(woken, vec![1; tasks.len()]);
        });
    }

    #[test]
    fn every_task_of_a_mail_is_woken_once() {
        answers(3, false);
    }

    #[test]
    fn every_task_is_woken_once_with_another_poll_at_any_moment() {
        answers(3, true);
    }
}
