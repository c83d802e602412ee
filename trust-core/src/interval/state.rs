//! The lock's bookkeeping: which ranges are borrowed or queued, and who waits for whom.
//!
//! Every borrow, held or waiting, is an [`Entry`] with a FIFO ticket. Two borrows *conflict* when their
//! ranges overlap and at least one of them writes. The whole policy is one rule:
//!
//! > a borrow is granted once no *earlier* (smaller-ticket) conflicting borrow is recorded.
//!
//! That is first come, first served among conflicting borrows, and it never lets a borrow overtake an
//! earlier one it conflicts with, so a writer queued behind readers is not starved by later readers.
//! It implies the invariant that makes the bookkeeping cheap: **a held borrow never conflicts with an
//! earlier waiting one** (it would have counted it and still be waiting). Hence a new request, whose
//! ticket is the largest, waits for exactly the recorded borrows it conflicts with, and each waiter keeps
//! only a *count* of its blockers:
//!
//! - request: count the conflicting borrows (two rank queries, [`State::conflicts`]); zero means granted.
//! - release or cancel of `x`: every waiting borrow after `x` that conflicts with it loses one blocker;
//!   those reaching zero are granted and woken. Granting a waiter removes nobody's blocker (the granted
//!   borrow is still recorded), so grants never cascade.
//!
//! **Priorities** (`IntervalRwLock::prioritized`) refine "earlier" among *waiting* borrows: the order is
//! `(higher priority first, then ticket)`; every borrow has priority 0 unless asked otherwise, and then
//! the order is the ticket order above. A held borrow still counts for every conflicting request
//! (priority never preempts). Two facts keep the counts exact:
//!
//! - a request with priority `p > 0` counts the recorded conflicting borrows *except* the waiting ones of
//!   lower priority, and each of those gains it as one more blocker (it overtakes them): O(k log n) for
//!   the k conflicting waiters it visits, and only when `p > 0`;
//! - every waiting borrow that conflicts with a *held* borrow counted it (if the waiter came first and was
//!   ahead in the order, the held one would have counted the waiter and could not have been granted), so
//!   a release decrements every conflicting waiter; a withdrawn *waiting* borrow decrements only the
//!   conflicting waiters after it in the order.
//!
//! Each borrow also records where it was requested ([`Entry::origin`], a stack address), which nothing above
//! reads: only [`State::waits_for`] does, for a delegated closure that must wait (is what it waits for a
//! fiber of its own worker?).

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::panic::{self, AssertUnwindSafe};
use std::task::Waker;
use std::thread;

use super::tree::{ByEnd, ByStart, Entry};
use crate::delegation::api::fiber::Waiter as Blocked;

/// How to wake a queued borrow once it is granted.
#[derive(Debug)]
pub(super) enum Wake {
    /// A blocking `read`/`write`: a parked thread, or a suspended fiber (its worker runs the others).
    Blocked(Blocked),
    /// A `read_async`/`write_async` future.
    Task(Waker),
    /// A blocking `read`/`write` in a `may` coroutine, parked on a parker of its own (its thread runs its other
    /// coroutines; see `IntervalRwLock::wait_as_coroutine`). Not a [`Wake::Task`]: like a thread or a fiber in
    /// `read`/`write` it waits until granted, so [`State::waits_for`] follows it (review 35: a chain through a
    /// coroutine hung a delegated closure).
    Coroutine(CoroutineParker),
}

/// What a `may` coroutine waiting in `read`/`write` parks on: a `may::sync::Blocker` of its own for each wait,
/// the parker `may`'s own mutex and condition variable give a waiting coroutine (review 96: why not the
/// coroutine's handle).
#[cfg(feature = "may")]
pub(super) type CoroutineParker = std::sync::Arc<may::sync::Blocker>;

/// Without `may` no caller is a coroutine: no parker exists.
#[cfg(not(feature = "may"))]
#[derive(Clone, Debug)]
pub(super) enum CoroutineParker {}

impl Wake {
    pub(super) fn wake(self) {
        match self {
            Wake::Blocked(waiter) => waiter.wake(),
            Wake::Task(waker) => waker.wake(),
            #[cfg(feature = "may")]
            Wake::Coroutine(parker) => parker.unpark(),
            #[cfg(not(feature = "may"))]
            Wake::Coroutine(never) => match never {},
        }
    }

    /// Wakes them all, even when a task's waker panics (the others, and threads parked for good, must
    /// not stay asleep); then the first panic goes on unwinding, unless this thread already unwinds (a
    /// second panic would abort the process: the payload is dropped instead, and if that panics too, leaked).
    pub(super) fn wake_all(wakes: Vec<Wake>) {
        Wake::drop_then_wake_all(None, wakes);
    }

    /// Drops `unused` (the own waker of a withdrawn request) and wakes `wakes` as [`Wake::wake_all`] does,
    /// also if that drop panics: a waker's drop is executor code too, and a granted request that is never
    /// woken stays parked for good (review 42: a withdrawn future whose waker drop panicked left the thread
    /// it had let through parked).
    ///
    /// The threads, fibers and `may` coroutines granted are woken first, before any executor code runs (the
    /// drop of `unused`, the tasks' wakers): waking them runs only this crate's code and `may`'s unpark (which
    /// schedules the coroutine, it does not run it), which neither waits nor re-enters the lock, whereas a waker
    /// may wait, for this lock or for something such a thread does once it has its borrow; had the thread's wake
    /// been queued behind that waker in the same walk, both would wait for good (review 85).
    pub(super) fn drop_then_wake_all(unused: Option<Wake>, mut wakes: Vec<Wake>) {
        let mut first = FirstPanic(None);
        for wake in wakes.extract_if(.., |wake| !matches!(wake, Wake::Task(_))) {
            first.keep(panic::catch_unwind(AssertUnwindSafe(|| wake.wake())));
        }
        first.keep(panic::catch_unwind(AssertUnwindSafe(|| drop(unused))));
        for wake in wakes {
            first.keep(panic::catch_unwind(AssertUnwindSafe(|| wake.wake())));
        }
        first.resume();
    }
}

/// The first of several contained panics (of executor code: wakers), the others' payloads dropped quietly.
struct FirstPanic(Option<Box<dyn Any + Send>>);

impl FirstPanic {
    fn keep(&mut self, result: thread::Result<()>) {
        if let Err(payload) = result {
            match self.0 {
                None => self.0 = Some(payload),
                Some(_) => drop_quietly(payload),
            }
        }
    }

    /// Goes on unwinding with the first panic, unless this thread already unwinds (a second panic would
    /// abort the process: the payload is dropped instead, and if that panics too, leaked).
    fn resume(self) {
        if let Some(payload) = self.0 {
            if thread::panicking() {
                drop_quietly(payload);
            } else {
                panic::resume_unwind(payload);
            }
        }
    }
}

/// Drops a panic's payload, whose destructor may panic in turn: that one's payload is leaked.
fn drop_quietly(payload: Box<dyn Any + Send>) {
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(|| drop(payload))) {
        std::mem::forget(again);
    }
}

/// A queued borrow: the range and kind (to find its tree entry), how many recorded borrows it still
/// waits for, and how to wake it.
#[derive(Debug)]
struct Waiter {
    entry: Entry,
    priority: u32,
    blockers: usize,
    wake: Wake,
}

impl Waiter {
    /// Whether this waiter comes after a waiting borrow of `priority` and `ticket` in the grant order.
    fn is_after(&self, priority: u32, ticket: u64) -> bool {
        (self.priority, u64::MAX - self.entry.ticket) < (priority, u64::MAX - ticket)
    }
}

/// The outcome of [`State::request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Request {
    /// Held now.
    Granted(u64),
    /// Queued behind conflicting borrows; poll [`State::is_granted`] after being woken.
    Queued(u64),
}

/// Held and queued borrows of one lock. Guarded by the lock's mutex; nothing in here calls user code.
#[derive(Debug)]
pub(super) struct State {
    /// Every recorded borrow by `(start, ticket)`; also tracks which are waiting.
    by_start: ByStart,
    /// Every recorded borrow by `(end, ticket)`.
    by_end: ByEnd,
    /// The waiting borrows by ticket.
    waiters: HashMap<u64, Waiter>,
    /// The next ticket. Ticket 0 is never issued: it marks the empty range, which is never recorded.
    next_ticket: u64,
}

/// The wakes of requests still queued when the bookkeeping goes (with its lock, or replaced by
/// `replace_container`) belong to leaked futures: their wakers are executor code, and their drops may panic.
/// Each is dropped on its own, as [`Wake::drop_then_wake_all`] does: a lock lent by `with_slice` goes while
/// its closure unwinds, where one panicking waker aborted the process, and so did two after a normal return
/// (review 70).
impl Drop for State {
    fn drop(&mut self) {
        let mut first = FirstPanic(None);
        for (_, waiter) in self.waiters.drain() {
            first.keep(panic::catch_unwind(AssertUnwindSafe(|| drop(waiter))));
        }
        first.resume();
    }
}

impl State {
    pub(super) fn new() -> Self {
        State {
            by_start: ByStart::new(),
            by_end: ByEnd::new(),
            waiters: HashMap::new(),
            next_ticket: 1,
        }
    }

    /// Recorded borrows that conflict with a `write` (or read) of `start..end`.
    ///
    /// A recorded range `s..e` overlaps `start..end` iff `s < end` and `e > start`; the ones with
    /// `e <= start` all have `s < end` too, so the overlapping ones number
    /// `#{s < end} - #{e <= start}`: one descent in each tree. A read conflicts with writes only.
    fn conflicts(&self, start: usize, end: usize, write: bool) -> usize {
        let writes_only = !write;
        self.by_start.count_below(end, writes_only)
            - self.by_end.count_below(start + 1, writes_only)
    }

    fn record(&mut self, entry: Entry) {
        self.by_start.insert(entry);
        // The end-ordered tree only counts; it never looks at `waiting`.
        self.by_end.insert(Entry {
            waiting: false,
            ..entry
        });
    }

    fn issue_ticket(&mut self) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        ticket
    }

    /// Takes `start..end` (non-empty) if nothing recorded conflicts with it; otherwise records nothing.
    /// `origin` is where it is requested (see [`Entry::origin`]).
    ///
    /// Queued borrows count as conflicts: a `try_` call does not jump the queue.
    pub(super) fn try_request(
        &mut self,
        start: usize,
        end: usize,
        write: bool,
        origin: usize,
    ) -> Option<u64> {
        if self.conflicts(start, end, write) > 0 {
            return None;
        }
        let ticket = self.issue_ticket();
        self.record(Entry {
            start,
            end,
            ticket,
            write,
            waiting: false,
            origin,
        });
        Some(ticket)
    }

    /// Takes `start..end` (non-empty) now, or queues it; `wake` is called only if it must queue.
    /// `priority` 0 is the default; a higher one overtakes waiting conflicting requests of lower
    /// priority (see the module docs). `origin` is where it is requested (see [`Entry::origin`]).
    pub(super) fn request(
        &mut self,
        start: usize,
        end: usize,
        write: bool,
        priority: u32,
        origin: usize,
        wake: impl FnOnce() -> Wake,
    ) -> Request {
        let mut blockers = self.conflicts(start, end, write);
        // The waiting conflicting requests this one goes ahead of (none at priority 0, the lowest).
        let mut overtaken = Vec::new();
        if priority > 0 && blockers > 0 && !self.waiters.is_empty() {
            let waiters = &self.waiters;
            self.by_start
                .for_each_waiting_overlapping(start, end, !write, &mut |waiting| {
                    if waiters[&waiting.ticket].priority < priority {
                        overtaken.push(waiting.ticket);
                    }
                });
            blockers -= overtaken.len();
        }
        // Before anything is recorded: cloning a `Waker` runs executor code, which might panic.
        let wake = (blockers > 0).then(wake);
        let ticket = self.issue_ticket();
        let entry = Entry {
            start,
            end,
            ticket,
            write,
            waiting: blockers > 0,
            origin,
        };
        self.record(entry);
        for t in overtaken {
            self.waiters
                .get_mut(&t)
                .expect("IntervalRwLock bug: a waiting entry without a waiter")
                .blockers += 1;
        }
        let Some(wake) = wake else {
            return Request::Granted(ticket);
        };
        self.waiters.insert(
            ticket,
            Waiter {
                entry,
                priority,
                blockers,
                wake,
            },
        );
        Request::Queued(ticket)
    }

    /// Whether the borrow with `ticket` (issued by [`State::request`]) has been granted.
    pub(super) fn is_granted(&self, ticket: u64) -> bool {
        !self.waiters.contains_key(&ticket)
    }

    /// Whether the queued request `ticket` waits for a borrow requested where `from` says (by its
    /// [`Entry::origin`]): directly — a conflicting held borrow, or a conflicting queued one ahead of it in
    /// the grant order, exactly the blockers it counts (every waiter counted each conflicting held borrow: see
    /// the module docs) — or through a queued *blocking* request it waits for, which waits for one in turn
    /// (and does not give up: a thread or fiber in `read`/`write` has no way to withdraw, and a `may` coroutine
    /// in one does only if someone cancels it, where a future is commonly dropped: `select!`, timeouts). False
    /// once it is granted.
    ///
    /// Cost: O(n) per queued request visited ([`ByStart::for_each_overlapping`]), and one allocation; only a
    /// delegated closure that must wait asks.
    pub(super) fn waits_for(&self, ticket: u64, from: impl Fn(usize) -> bool) -> bool {
        if !self.waiters.contains_key(&ticket) {
            return false;
        }
        let mut seen = HashSet::from([ticket]);
        let mut to_visit = vec![ticket];
        while let Some(waiting) = to_visit.pop() {
            let me = &self.waiters[&waiting];
            let mine = me.entry;
            let mut found = false;
            self.by_start
                .for_each_overlapping(mine.start, mine.end, !mine.write, &mut |other| {
                    let other_waiter = other.waiting.then(|| &self.waiters[&other.ticket]);
                    let blocks = other.ticket != waiting
                        && other_waiter.is_none_or(|o| me.is_after(o.priority, other.ticket));
                    if !blocks || found {
                        return;
                    }
                    if from(other.origin) {
                        found = true;
                    } else if other_waiter.is_some_and(|o| !matches!(o.wake, Wake::Task(_)))
                        && seen.insert(other.ticket)
                    {
                        to_visit.push(other.ticket);
                    }
                });
            if found {
                return true;
            }
        }
        false
    }

    /// Replaces the waker of a queued future, unless the old one would wake the same task. Returns the
    /// waker not kept (the old one, or `waker`), for the caller to drop after unlocking the mutex: a waker
    /// is user code, cloned (by the caller) and dropped outside it.
    #[must_use = "drop the waker not kept after unlocking"]
    pub(super) fn set_waker(&mut self, ticket: u64, waker: Waker) -> Wake {
        match self.waiters.get_mut(&ticket) {
            Some(waiter) if !matches!(&waiter.wake, Wake::Task(old) if old.will_wake(&waker)) => {
                std::mem::replace(&mut waiter.wake, Wake::Task(waker))
            }
            _ => Wake::Task(waker),
        }
    }

    /// Forgets the *held* borrow `ticket` of `start..end` (a dropped guard) and grants whatever only it
    /// was holding back. Returns how to wake the granted borrows; call [`Wake::wake`] on them after
    /// unlocking the mutex.
    ///
    /// Cost: O((1 + k) log n) expected, for the k queued borrows behind it that it conflicts with.
    #[must_use = "wake the granted requests after unlocking"]
    pub(super) fn release(
        &mut self,
        start: usize,
        end: usize,
        ticket: u64,
        write: bool,
    ) -> Vec<Wake> {
        self.forget(
            Entry {
                start,
                end,
                ticket,
                write,
                waiting: false,
                // Not part of the key: removal finds the entry by `(start, ticket)` / `(end, ticket)`.
                origin: 0,
            },
            None,
        )
    }

    /// Forgets the borrow `ticket` of `start..end`, queued or already granted (a dropped future: it
    /// cannot know whether a grant arrived since it was last polled). As [`State::release`] otherwise,
    /// and also returns the withdrawn request's own waker, if it was queued.
    ///
    /// The caller drops that waker after unlocking the mutex: dropping a `Waker` runs executor code,
    /// which may drop a task, whose futures may hold guards or requests of this very lock, whose drops
    /// would then lock the mutex again.
    #[must_use = "wake the granted requests and drop the old waker after unlocking"]
    pub(super) fn cancel(
        &mut self,
        start: usize,
        end: usize,
        ticket: u64,
        write: bool,
    ) -> (Vec<Wake>, Option<Wake>) {
        match self.waiters.remove(&ticket) {
            Some(waiter) => (
                self.forget(waiter.entry, Some(waiter.priority)),
                Some(waiter.wake),
            ),
            None => (self.release(start, end, ticket, write), None),
        }
    }

    /// `queued`: the priority of `entry` if it was still waiting, `None` if it was held.
    fn forget(&mut self, entry: Entry, queued: Option<u32>) -> Vec<Wake> {
        self.by_start.remove(&entry);
        self.by_end.remove(&Entry {
            waiting: false,
            ..entry
        });
        if self.waiters.is_empty() {
            return Vec::new();
        }

        // Every waiter that conflicts with a held `entry` counted it as a blocker; of a waiting `entry`,
        // only the conflicting waiters after it in the grant order did (see the module docs). A write
        // conflicts with every overlapping borrow; a read only with overlapping writes.
        let mut granted = Vec::new();
        let waiters = &mut self.waiters;
        self.by_start.for_each_waiting_overlapping(
            entry.start,
            entry.end,
            !entry.write,
            &mut |behind| {
                let waiter = waiters
                    .get_mut(&behind.ticket)
                    .expect("IntervalRwLock bug: a waiting entry without a waiter");
                if queued.is_none_or(|priority| waiter.is_after(priority, entry.ticket)) {
                    waiter.blockers -= 1;
                    if waiter.blockers == 0 {
                        granted.push(behind.ticket);
                    }
                }
            },
        );
        granted
            .into_iter()
            .map(|ticket| {
                let waiter = self.waiters.remove(&ticket).expect("collected above");
                self.by_start.mark_granted(&waiter.entry);
                waiter.wake
            })
            .collect()
    }

    /// Number of held borrows (non-empty ranges only).
    pub(super) fn held(&self) -> usize {
        self.by_start.len() - self.waiters.len()
    }

    /// Number of queued borrows.
    pub(super) fn queued(&self) -> usize {
        self.waiters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random requests (with priorities), releases and withdrawals, each borrow's origin its own number:
    /// for every queued request, the borrows `waits_for` names (futures only, so no blocking request is
    /// followed through) are exactly as many as its counted blockers.
    #[test]
    fn waits_for_names_exactly_the_counted_blockers() {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut below = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut state = State::new();
        // (start, end, write, ticket) of every recorded borrow; origin = index of the request.
        let mut recorded: Vec<(usize, usize, bool, u64)> = Vec::new();
        let mut origins = HashMap::new();
        let steps = if cfg!(miri) { 100 } else { 1_000 };
        for step in 0..steps {
            if below(2) == 0 || recorded.len() < 8 {
                let start = below(24) as usize;
                let end = start + 1 + below(6) as usize;
                let write = below(2) == 0;
                let priority = if below(4) == 0 { below(3) as u32 } else { 0 };
                let ticket = match state.request(start, end, write, priority, step, || {
                    Wake::Task(Waker::noop().clone())
                }) {
                    Request::Granted(t) | Request::Queued(t) => t,
                };
                recorded.push((start, end, write, ticket));
                origins.insert(ticket, step);
            } else {
                let (start, end, write, ticket) =
                    recorded.swap_remove(below(recorded.len() as u64) as usize);
                let _ = state.cancel(start, end, ticket, write);
            }
            for (&ticket, waiter) in &state.waiters {
                let named = recorded
                    .iter()
                    .filter(|&&(.., t)| state.waits_for(ticket, |o| o == origins[&t]))
                    .count();
                assert_eq!(named, waiter.blockers, "ticket {ticket} at step {step}");
            }
            for &(.., t) in &recorded {
                assert_eq!(
                    state.waits_for(t, |_| true),
                    !state.is_granted(t),
                    "ticket {t} at step {step}"
                );
            }
        }
    }
}
