//! Waking `apply_async` tasks in bulk. A trustee that woke each answered task itself paid, per request, the
//! executor's wake-up from a foreign thread (tokio: its inject queue under a mutex, and the unpark of an idle
//! executor thread). Instead, while the trustee reads its mail (`Relay::collect`), it wakes the first task it
//! answers itself, at once, and collects the wakers of the answers after it; when the mail is read it leaves
//! them on its relay and wakes the last itself. Every `apply_async` poll drains the relay first
//! (`Relay::drain`), so the rest are woken from an executor's own thread, where a wake-up is a push on a local
//! queue.
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
//!
//! The hand-over is model-checked with loom (`loom_model` below: every task of a mail woken once, whatever
//! the interleaving of the trustee, an executor and another poll). Tried and not kept (thirty-fourth
//! session): the last wake-up skipped unless the first task's poll had begun during the mail (a Dekker
//! handshake of two flags and two fences with the polls, also model-checked): the trustee's foreign wake-ups
//! fell from two per mail to one in 99.6% of the mails, and the bench's row did not move (medians of 10
//! alternating probe runs: 7.1 before, 6.9 M ops/s after; CPU time and context switches the same).

use std::cell::{Cell, RefCell};
use std::task::Waker;

use crate::delegation::protocol::sync::{AtomicBool, Mutex, Ordering};
use crate::delegation::trustee::unwind;

/// The answers' wakers of the mail the trustee on this thread reads (`Relay::collect`).
struct Collecting {
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
    wakers: Mutex<Vec<Waker>>,
}

impl Relay {
    /// Runs `f` (the trustee reading its mail): the first answer it gives wakes its task at once; the others'
    /// wakers are left on the relay when it is done, but for the last, which it wakes: that task's poll drains
    /// the relay.
    pub(crate) fn collect(&self, f: impl FnOnce()) {
        let fresh = Collecting {
            woke_first: false,
            rest: take_spare(),
        };
        let outer = COLLECTING.with(|c| c.replace(Some(fresh)));
        f();
        let mine = COLLECTING.with(|c| c.replace(outer));
        let mut rest = mine.map_or_else(Vec::new, |c| c.rest);
        let last = rest.pop();
        if !rest.is_empty() {
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
        // After the others are on the relay: the poll this wakes finds them.
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

    #[test]
    fn the_first_answered_is_woken_at_once_the_last_when_the_mail_is_read_and_the_rest_by_a_drain()
    {
        let counts: Vec<_> = (0..4)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        let woken = || {
            counts
                .iter()
                .map(|c| c.0.load(Ordering::SeqCst))
                .collect::<Vec<_>>()
        };
        let relay = Relay::default();
        relay.collect(|| {
            for c in &counts {
                wake(Waker::from(c.clone()));
                // The first at once: a closure after it in the mail that blocks does not hold its task back.
                assert_eq!(woken()[0], 1);
            }
            assert_eq!(woken(), [1, 0, 0, 0], "the others collected");
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
        assert_eq!(
            woken(),
            [2, 2, 1, 1],
            "a lone answer is woken at once, once"
        );
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
        let relay = Relay::default();
        relay.collect(|| {
            for w in [
                Waker::from(Arc::new(Panics)),
                Waker::from(count.clone()),
                Waker::from(Arc::new(Panics)),
            ] {
                wake(w);
            }
        });
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            0,
            "the first and the last woken, and contained"
        );
        relay.drain();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(!relay.is_pending());
    }
}

/// The relay's hand-over between the trustee and the polls that drain it, model-checked: whatever the
/// interleaving, every task of a mail is woken exactly once, given an executor that polls each task it is
/// woken for, and another future of that trustee polled at any moment — without the trustee's own drain after
/// `RELAY_PATIENCE` rounds (`Worker::run`), which is only a safety net. A lost wake-up leaves the executor
/// waiting for good, which loom reports as a deadlock.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::{Arc, Notify};
    use std::collections::VecDeque;
    use std::task::Wake;

    /// The tasks' executor: the tasks woken, in order, and a wake-up for its thread.
    struct Executor {
        woken: Mutex<VecDeque<usize>>,
        notify: Notify,
    }

    /// Task `id`: a wake-up schedules a poll of it.
    struct Task {
        id: usize,
        executor: Arc<Executor>,
    }

    impl Wake for Task {
        fn wake(self: std::sync::Arc<Self>) {
            self.executor.woken.lock().unwrap().push_back(self.id);
            self.executor.notify.notify();
        }
    }

    fn answers(tasks: usize, other_poll: bool) {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(move || {
            let relay: &'static Relay = Box::leak(Box::default());
            let executor = Arc::new(Executor {
                woken: Mutex::new(VecDeque::new()),
                notify: Notify::new(),
            });
            let wakers: Vec<_> = (1..=tasks)
                .map(|id| {
                    Waker::from(std::sync::Arc::new(Task {
                        id,
                        executor: executor.clone(),
                    }))
                })
                .collect();
            // The executor's thread: polls each task woken (a poll drains the relay first, as
            // `TrusteeShared::drain_relay` does), until every task was woken; records them.
            let polls = {
                let executor = executor.clone();
                loom::thread::spawn(move || {
                    let mut polled = Vec::new();
                    while polled.len() < tasks {
                        executor.notify.wait();
                        loop {
                            // Not held while polling: a poll wakes tasks, which takes it.
                            let Some(id) = executor.woken.lock().unwrap().pop_front() else {
                                break;
                            };
                            polled.push(id);
                            relay.drain();
                        }
                    }
                    polled
                })
            };
            // A future of that trustee outside the mail (a task sending its next request), polled at any moment.
            let other = other_poll.then(|| loom::thread::spawn(move || relay.drain()));
            relay.collect(|| wakers.into_iter().for_each(wake));
            let mut polled = polls.join().unwrap();
            if let Some(other) = other {
                other.join().unwrap();
            }
            polled.sort_unstable();
            assert_eq!(
                polled,
                (1..=tasks).collect::<Vec<_>>(),
                "every task woken once"
            );
            assert!(
                executor.woken.lock().unwrap().is_empty(),
                "and no task twice"
            );
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
