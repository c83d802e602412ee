//! [`Latch<T>`]: mutual exclusion among the fibers of one trustee, with no atomics, and
//! [`Trust::launch`](crate::Trust::launch), which runs a closure in a fiber *on the trustee* so that it may
//! block — lock a latch, delegate to other trustees — while the trustee keeps serving.
//!
//! Where a launched fiber would wait for itself, the call panics naming the mistake (a closure it was given is
//! dropped first, unrun): a second `lock` by the fiber that holds the latch; an `apply`, `apply_then`,
//! `try_unwrap` or `into_inner` on the fiber's own `Trust<Latch<T>>`; a blocking `launch` there while it holds
//! the latch (see [`Trust::launch`](crate::Trust::launch)). So do a blocking `launch` (or `apply`) there by a
//! fiber that the holder (or a fiber launched there) joins, through joins on the trustee's worker, and a `lock`
//! by a fiber that the holder waits for so (a blocking `launch` joins its fiber), also when it waits already as
//! the join that closes the cycle is made.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::panic::{self, AssertUnwindSafe, resume_unwind};

use crate::delegation::worker::context;
use crate::delegation::api::fiber::{self, Fiber};
use crate::delegation::trustee::job::{Launch, Outcome};
use crate::delegation::trustee::latch_cell::{CellGuard, LatchCell};
use crate::delegation::trustee::handle::{self, Local};
use crate::delegation::trustee::property::SendPtr;
use crate::Trust;
use crate::delegation::api::trust::{BOX_ABOVE, MAY_INLINE, unboxed};
use crate::delegation::call;
use crate::delegation::worker::fiber::suspend;
use crate::delegation::trustee::shared::{SHUT_DOWN, closed_message, refuse, refuse_both};

/// A launched closure over `BOX_ABOVE` bytes, boxed where the API receives it.
type BoxedLaunch<T, R> = Box<dyn FnOnce(&Latch<T>) -> R + Send>;

/// A launched closure whose result is boxed as it returns (see `launch_then`).
fn boxed_launch_result<T, R>(f: impl FnOnce(&Latch<T>) -> R) -> impl FnOnce(&Latch<T>) -> Box<R> {
    move |latch| Box::new(f(latch))
}

/// `Latch::holder` when no fiber holds the latch.
const NO_FIBER: (usize, u64) = (usize::MAX, u64::MAX);

const LAUNCH_BY_HOLDER: &str = "`launch` on the `Trust<Latch<T>>` whose `launch` runs this fiber, while this \
     fiber holds the latch: the new fiber would wait for the latch, and this fiber for the new fiber, for good. \
     Drop the guard first, or use `launch_then` (which does not wait)";

const LAUNCH_JOINED_BY_HOLDER: &str = "`launch` on a `Trust<Latch<T>>` from a fiber that a fiber holding the \
     latch joins (directly, or through fibers joining each other on this worker): the new fiber would wait for \
     the latch, and the holder for this fiber, for good. Drop the guard before joining, or use `launch_then` \
     (which does not wait)";

const LOCK_WAITED_FOR_BY_HOLDER: &str = "`Latch::lock` would wait for good: the latch is held by a fiber that \
     waits, through joins or blocking launches on this worker, for this fiber. Drop the guard before joining, or \
     use `launch_then`";

/// A lock for the fibers of one trustee: `lock` suspends the calling fiber while another holds it. It lives
/// inside an entrusted property (`Trust<Latch<T>>`) and is used by fibers started with
/// [`Trust::launch`]; being `!Sync`, it never leaves its trustee's thread, so plain `Cell`s suffice.
pub struct Latch<T> {
    /// The fiber that holds the lock, by id and serial number (ids are reused: a holder that forgot its guard
    /// and ended is not the next fiber given its id), to refuse a second `lock` by it. `NO_FIBER`: none, or
    /// not a fiber.
    holder: OnItsThread<Cell<(usize, u64)>>,
    waiters: OnItsThread<RefCell<VecDeque<usize>>>,
    /// The value, and whether a guard holds it (locked).
    value: OnItsThread<LatchCell<T>>,
    /// The one reason `Latch` is `!Sync`: a latch (or its guard, a `&Latch`) sent across threads is one
    /// error naming `Cell<()>`, not one per field (review 93 found four for `launch(|l| l.lock())`).
    _not_sync: PhantomData<Cell<()>>,
}

/// A field of `Latch`, which only its own thread touches: `Sync` by itself so that the marker above is
/// the only reason `Latch` is not.
struct OnItsThread<X>(X);

// SAFETY: `OnItsThread` is only a field of `Latch`, which is `!Sync` (`_not_sync`): no `&OnItsThread`
// crosses threads.
unsafe impl<X: Send> Sync for OnItsThread<X> {}

impl<X> Deref for OnItsThread<X> {
    type Target = X;
    fn deref(&self) -> &X {
        &self.0
    }
}

// SAFETY: moving a latch moves its value; the waiter ids are plain numbers. No `&Latch` can cross threads
// (`Latch` is `!Sync`).
unsafe impl<T: Send> Send for Latch<T> {}

impl<T> fmt::Debug for Latch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Latch")
            .field("locked", &self.value.is_locked())
            .finish_non_exhaustive()
    }
}

impl<T> Latch<T> {
    pub fn new(value: T) -> Self {
        Latch {
            holder: OnItsThread(Cell::new(NO_FIBER)),
            waiters: OnItsThread(RefCell::new(VecDeque::new())),
            value: OnItsThread(LatchCell::new(value)),
            _not_sync: PhantomData,
        }
    }

    /// Locks the latch, suspending the calling fiber while another fiber holds it (waiters are served first
    /// come, first served).
    ///
    /// Panics when the latch is held and the caller is not a fiber that may suspend (a delegated closure, or
    /// a plain thread), or is the fiber that holds it: it could only wait forever. Panics too when the holder
    /// waits, through joins or blocking `launch`es on this worker, for the caller (a holder that joins a fiber
    /// whose blocking `launch` locks the latch): when it would wait, or later, once the join that closes the
    /// cycle is made. Joins across workers are not followed.
    pub fn lock(&self) -> LatchGuard<'_, T> {
        if let Some(value) = self.value.try_lock() {
            return self.take(value);
        }
        let fiber = context::fiber().filter(|_| context::worker().is_some() && !context::in_delegated());
        let Some((_, id)) = fiber else {
            panic!(
                "`Latch::lock` on a held latch outside a launched fiber: only a fiber can wait for it. \
                 Lock latches inside `Trust::launch`"
            );
        };
        let me = current_fiber(id);
        assert!(
            self.holder.get() != me,
            "`Latch::lock` by the fiber that holds the latch already: it would wait for itself. Use the \
             guard it has, or drop that guard first"
        );
        assert!(!self.holder_waits_for(id), "{LOCK_WAITED_FOR_BY_HOLDER}");
        let scheduler = &context::worker().expect("a fiber runs on a worker").scheduler;
        self.waiters.borrow_mut().push_back(id);
        loop {
            scheduler.wait_in_lock(id);
            suspend();
            scheduler.lock_resumed(id);
            // Handed over by the guard's drop, still locked: a holder that locks again at once queues behind.
            if self.holder.get() == me {
                let value = self.value.take_handed().expect("handed over to this fiber");
                return LatchGuard { latch: self, value };
            }
            if let Some(value) = self.value.try_lock() {
                self.waiters.borrow_mut().retain(|&w| w != id);
                return self.take(value);
            }
            // Made ready by a join that closed a cycle through this fiber (`Scheduler::recheck_lock_waiters`).
            if self.holder_waits_for(id) {
                self.waiters.borrow_mut().retain(|&w| w != id);
                panic!("{LOCK_WAITED_FOR_BY_HOLDER}");
            }
        }
    }

    /// Locks the latch if it is free.
    pub fn try_lock(&self) -> Option<LatchGuard<'_, T>> {
        self.value.try_lock().map(|value| self.take(value))
    }

    /// The guard of the latch, just locked by the caller.
    fn take<'a>(&'a self, value: CellGuard<'a, T>) -> LatchGuard<'a, T> {
        self.holder.set(context::fiber().map_or(NO_FIBER, |(_, id)| current_fiber(id)));
        LatchGuard { latch: self, value }
    }

    /// The value, through exclusive access to the latch (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.value.0.get_mut()
    }

    pub fn into_inner(self) -> T {
        self.value.0.into_inner()
    }

    /// True when the latch's holder is a fiber of this worker that waits for fiber `id` to end, through joins
    /// (a blocking `launch` joins its fiber) on this worker (see `Scheduler::joined_chain`).
    fn holder_waits_for(&self, id: usize) -> bool {
        let holder = self.holder.get();
        holder != NO_FIBER
            && context::worker().is_some_and(|w| {
                let scheduler = &w.scheduler;
                scheduler.joined_chain(id).skip(1).any(|j| holder == (j, scheduler.serial_of(j)))
            })
    }

    /// Where fiber `id` of this worker, or a fiber that waits for it to end through joins on this worker (see
    /// `Scheduler::joined_chain`), is one launched on the property at `property` that holds the latch: how
    /// many joins from `id` (0: `id` itself). Joins from another worker or a plain thread are not followed.
    fn held_along_joins(&self, id: usize, property: usize) -> Option<usize> {
        let holder = self.holder.get();
        if holder == NO_FIBER {
            return None;
        }
        let scheduler = &context::worker()?.scheduler;
        scheduler
            .joined_chain(id)
            .position(|id| holder == (id, scheduler.serial_of(id)) && scheduler.is_launched_on(id, property))
    }
}

/// The running fiber `id` of this worker, as a latch's holder.
fn current_fiber(id: usize) -> (usize, u64) {
    context::worker().map_or(NO_FIBER, |w| (id, w.scheduler.serial_of(id)))
}

/// Access to a latch's value; unlocks (and resumes the next waiting fiber) when dropped.
pub struct LatchGuard<'a, T> {
    latch: &'a Latch<T>,
    /// The latch's value, held.
    value: CellGuard<'a, T>,
}

impl<T: fmt::Debug> fmt::Debug for LatchGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T> Deref for LatchGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for LatchGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> Drop for LatchGuard<'_, T> {
    /// Hands the latch, still locked, to the first waiting fiber (first come, first served: unlocked, the
    /// holder could lock it again before the woken fiber runs, and starve it), or unlocks it.
    fn drop(&mut self) {
        let latch = self.latch;
        if let Some(worker) = context::worker() {
            let next = latch.waiters.borrow_mut().pop_front();
            if let Some(id) = next {
                self.value.hand_over_on_drop();
                latch.holder.set((id, worker.scheduler.serial_of(id)));
                worker.scheduler.hand_latch_to(id);
                return;
            }
        }
        // Unlocked as the value's guard drops, next.
        latch.holder.set(NO_FIBER);
    }
}

impl<T: Send + 'static> Trust<Latch<T>> {
    /// Runs `f(&latch)` in a new fiber on this property's trustee and returns its result. Inside, `f` may
    /// block: lock the latch, `apply` to other trustees, wait for fibers. The trustee keeps serving other
    /// requests meanwhile; a plain `apply` on this property (which hands out `&mut Latch<T>`) waits until
    /// every launched fiber of the property has finished. Fiber stacks are pooled and reused.
    ///
    /// A panic in `f` resumes here. So does the panic of [`spawn`](crate::spawn) when no fiber stack can be
    /// had (then `f` does not run); the trustee is not affected. Panics inside a delegated closure or an
    /// `apply_then` continuation on a worker (it waits for the fiber, and the trustee cannot wait): use
    /// `apply_then` there. Panics too, `f` dropped unrun, in a fiber launched on this latch that holds it (the
    /// new fiber would wait for the latch, and the caller for the new fiber): drop the guard first, or use
    /// [`launch_then`](Self::launch_then), which does not wait; and so from a fiber that such a holder joins,
    /// directly or through fibers joining each other, all on the trustee's worker (drop the guard before
    /// joining). Joins across workers are not followed: the holder's join of a fiber on another worker that
    /// launches here a closure that locks the latch still waits for good.
    pub fn launch<R, F>(&self, f: F) -> R
    where
        F: FnOnce(&Latch<T>) -> R + Send + 'static,
        R: Send + 'static,
    {
        if context::worker().is_some()
            && (context::in_delegated() || context::fiber().is_none())
        {
            refuse(f, fiber::JOIN_ON_TRUSTEE);
        }
        if const { size_of::<F>() > BOX_ABOVE } || (const { size_of::<F>() > MAY_INLINE } && call::in_coroutine()) {
            // Boxed at the boundary, as `apply` does: the layers below (and the fiber's stack) move a pointer.
            let f: BoxedLaunch<T, R> = Box::new(f);
            return self.launch_sized(f);
        }
        self.launch_sized(f)
    }

    /// `launch` for a closure small enough to move by value.
    fn launch_sized<R, F>(&self, f: F) -> R
    where
        F: FnOnce(&Latch<T>) -> R + Send + 'static,
        R: Send + 'static,
    {
        let shared = self.trustee().shared;
        // On its own trustee, where the handle keeps the property live while we wait for the fiber.
        let here = self.on_trustee(context::worker());
        let own = here.map(|(w, _)| w);
        // The calling fiber, on its own trustee, which may hold the latch: then the new fiber refuses `f` (see
        // `start_launched`).
        let launcher = own.and_then(|w| w.fiber.get()).map(|(_, id)| id);
        // On its own trustee, started at once, unless its fiber's requests to that trustee still wait in the
        // worker's channel to itself (the start would overtake them: it goes behind them, as `apply` does).
        let queued = own.is_some_and(call::queued_to_self);
        let fiber = if let Some((_, local)) = here
            && !queued
            && !self.launch_waits()
        {
            start_launched(local, launcher, f)
        } else {
            // On the trustee: the record runs there, and the handle keeps the property live meanwhile.
            let start = move |local: Local<'_, Latch<T>>| start_launched(local, launcher, f);
            match own.filter(|_| queued) {
                Some(worker) => call::call_to_self(worker, self.launch_job(start)),
                None => call::call(shared, self.launch_job(start)),
            }
        };
        fiber.join().unwrap_or_else(|p| resume_unwind(p))
    }
}

impl<T: Send + 'static> Trust<Latch<T>> {
    /// [`launch`](Self::launch) without waiting, as [`apply_then`](Trust::apply_then) is `apply` without
    /// waiting: returns at once, `f(&latch)` runs in a new fiber on the trustee (where it may block), and
    /// `then(result)` runs later on this thread once the fiber has finished — on a worker, its scheduler
    /// runs it; on a plain thread, later trust-core calls and [`wait_pending`](crate::wait_pending) run it.
    /// Never on the trustee.
    ///
    /// The fiber starts after the requests this thread (or worker) sent the trustee before, like an
    /// `apply_then` issued now; and, like one, from a plain thread it goes at once only when its channel is
    /// idle, else with the thread's next publish (see `apply_then`): a thread that spins waiting for the fiber
    /// to start must call [`wait_pending`](crate::wait_pending) or make a blocking call first. Nothing waits for it: later requests — to the latch (which wait only
    /// while launched fibers share it, as always), or another `launch_then` — go ahead, so many launched
    /// fibers can run at once, and one may wait for something a later request does. Continuations run in
    /// the order their fibers finish. A panic in `f` (or in `then`) is kept and resumed by the issuer's next
    /// `wait_pending`. Allowed inside delegated closures and continuations. From a `may` coroutine it waits
    /// like `launch` and runs `then` at once, on the coroutine (see [`apply_then`](Trust::apply_then)). A
    /// closure, continuation or result over 512 bytes is boxed, as by `apply_then`.
    pub fn launch_then<R, F, C>(&self, f: F, then: C)
    where
        F: FnOnce(&Latch<T>) -> R + Send + 'static,
        R: Send + 'static,
        C: FnOnce(R) + 'static,
    {
        if const { size_of::<F>() > BOX_ABOVE || size_of::<C>() > BOX_ABOVE }
            || (const { size_of::<F>() > MAY_INLINE || size_of::<C>() > MAY_INLINE } && call::in_coroutine())
        {
            // Both boxed at the boundary, in this frame, as `apply_then` boxes them (a 32 KiB continuation
            // capture by value overflowed the issuing fiber's 256 KiB stack in a debug build: review 38).
            let f: BoxedLaunch<T, R> = Box::new(f);
            let then: Box<dyn FnOnce(R)> = Box::new(then);
            return self.launch_then_result(f, then);
        }
        self.launch_then_result(f, then)
    }

    /// `launch_then` for a closure and a continuation small enough to move by value (a function of its own,
    /// for the reason `Trust::apply_then_result` gives).
    #[inline]
    fn launch_then_result<R, F, C>(&self, f: F, then: C)
    where
        F: FnOnce(&Latch<T>) -> R + Send + 'static,
        R: Send + 'static,
        C: FnOnce(R) + 'static,
    {
        if const { size_of::<R>() > BOX_ABOVE } || (const { size_of::<R>() > MAY_INLINE } && call::in_coroutine()) {
            // Boxed as the launched fiber's closure returns it, as `launch`'s result is (`fiber_job`), and moved
            // out of its box for `then`: by value through the catch and the sender, a 32 KiB result overflowed
            // the launched fiber's 256 KiB stack in a debug build (review 38).
            return self.launch_then_sized(boxed_launch_result(f), unboxed(then));
        }
        self.launch_then_sized(f, then)
    }

    /// `launch_then` for a closure small enough to move by value.
    fn launch_then_sized<R, F, C>(&self, f: F, then: C)
    where
        F: FnOnce(&Latch<T>) -> R + Send + 'static,
        R: Send + 'static,
        C: FnOnce(R) + 'static,
    {
        let caller = context::worker();
        if caller.is_none() && call::in_coroutine() {
            let result = panic::catch_unwind(AssertUnwindSafe(|| self.launch(f)));
            return call::then_in_coroutine(result, then);
        }
        let shared = self.trustee().shared;
        // Also on its own worker, where the fiber would start at once: at shutdown (a destructor's call) it
        // would never run, and what `f` holds would be forgotten with it.
        if !shared.is_running() {
            refuse_both(f, then, closed_message(SHUT_DOWN));
        }
        let sender = call::expect_later(caller, shared, then);
        let body = move |latch: &Latch<T>| {
            let result = panic::catch_unwind(AssertUnwindSafe(|| f(latch)));
            // The fiber's work is done: it leaves the count before its result goes, as a joined fiber does
            // (`fiber_job`), since the continuation may run and look at once (review 74).
            if let Some(worker) = context::worker() {
                worker.scheduler.ending();
            }
            sender.send(result);
        };
        // On its own trustee, with no request of this worker to itself still queued (the start would overtake
        // it): started at once.
        let here = self.on_trustee(caller);
        let own = here.map(|(w, _)| w);
        // The launched count keeps plain applies away while the fiber runs, and the property outlives it
        // (retired properties are dropped only once no launched fiber uses them).
        if let Some((worker, local)) = here
            && !call::queued_to_self(worker)
            && !self.launch_waits()
        {
            drop(start_launched(local, None, body));
            return;
        }
        // On the trustee (records run there): the issuing handle keeps the property live until its requests are
        // served, and the launched count keeps it live after that.
        let start = move |local: Local<'_, Latch<T>>| {
            drop(start_launched(local, None, body));
            Outcome::new(Ok(()))
        };
        // An `apply_then` with nothing to continue: the start keeps its place in this client's order.
        let start = self.launch_job(start);
        match own {
            Some(worker) => call::post_then_to_self(worker, start, |()| ()),
            None => call::post_then(caller, shared, start, |()| ()),
        }
    }

    /// The request that starts a launched fiber on the trustee: it waits while a plain apply on the property
    /// waits (see `property::applies_wait`).
    fn launch_job<R, S>(&self, start: S) -> Launch<Latch<T>, S>
    where
        S: FnOnce(Local<'_, Latch<T>>) -> R + Send + 'static,
    {
        Launch {
            property: SendPtr(self.property_ptr()),
            start,
        }
    }

    /// On the trustee: a launch must wait, behind a plain apply that waits for the launched fibers. Not one
    /// made by a fiber launched on this property itself (the apply waits for that fiber, which would wait
    /// for its launch).
    fn launch_waits(&self) -> bool {
        let Some((worker, local)) = self.on_trustee(context::worker())
        else {
            return false;
        };
        // Nor one by a fiber that a fiber launched here joins: that fiber waits for it too.
        local.applies_wait() && !worker.runs_launched_on(local.addr()) && !worker.joined_by_launched_on(local.addr())
    }
}

/// Counts a launched fiber out when it ends, even by panicking; the last one tells the scheduler.
struct Launched<T>(Option<handle::Launched<Latch<T>>>);

impl<T> Launched<T> {
    fn latch(&self) -> &Latch<T> {
        self.0.as_ref().expect("counted until dropped").value()
    }
}

impl<T> Drop for Launched<T> {
    fn drop(&mut self) {
        let Some(share) = self.0.take() else {
            return;
        };
        let property = share.addr();
        if share.end()
            && let Some(worker) = context::worker()
        {
            worker.scheduler.launched_ended(property);
        }
    }
}

/// `launcher`: the fiber of the trustee that waits for this one (a blocking `launch`'s caller there), if any.
/// On the property's trustee (`local`), which the caller keeps live until the fiber ends.
fn start_launched<T, R, F>(local: Local<'_, Latch<T>>, launcher: Option<usize>, f: F) -> Fiber<R>
where
    T: 'static,
    F: FnOnce(&Latch<T>) -> R + 'static,
    R: Send + 'static,
{
    let property = local.addr();
    let counted = Launched(Some(local.launch()));
    fiber::start_here(move || {
        let counted = counted;
        if let (Some(worker), Some((_, id))) = (context::worker(), context::fiber()) {
            worker.scheduler.set_launched(id, property);
        }
        // While launched fibers exist, nobody takes `&mut` to the value (plain applies wait).
        let latch = counted.latch();
        // A fiber launched on this latch that holds it waits for this one, which could never lock it: refused
        // as its `apply` on the latch is (review 93: it hung). Checked here, where the latch is at hand; the
        // launcher, suspended until this fiber ends, holds it still or not. The panic resumes in its `launch`.
        // So is a launch by a fiber that such a holder joins, through joins on this worker (helper 122).
        match launcher.and_then(|id| latch.held_along_joins(id, property)) {
            Some(0) => refuse(f, LAUNCH_BY_HOLDER),
            Some(_) => refuse(f, LAUNCH_JOINED_BY_HOLDER),
            None => {}
        }
        f(latch)
    })
}
