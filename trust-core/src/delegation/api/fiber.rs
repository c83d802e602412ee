//! The fibers users start: [`spawn`] and its [`Fiber`] handle (also named [`JoinHandle`], as in std and
//! tokio), [`yield_now`], [`sleep`], and `start_here` for `launch`. The scheduler that runs them is
//! `worker::fiber`.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::delegation::api::runtime::runtime;
use crate::delegation::api::trust::BOX_ABOVE;
use crate::delegation::trustee::shared::{self, Abandon, IN_FORKED_CHILD, SHUT_DOWN, TrusteeShared};
use crate::delegation::trustee::unwind;
use crate::delegation::call;
use crate::delegation::client::outbox::{self, MayWait};
use crate::delegation::stack;
use crate::delegation::worker::context;
use crate::delegation::worker::fiber::{suspend, suspend_on};
use crate::delegation::worker::run::Worker;

/// A fiber started with [`spawn`]; [`Fiber::join`] waits for its result.
#[must_use = "a fiber runs whether or not it is joined; join it to see its result or its panic"]
pub struct Fiber<R> {
    state: Arc<JoinState<R>>,
}

impl<R> fmt::Debug for Fiber<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fiber")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Who waits for a signal from another thread (a fiber's end, a lock outside the runtime: `interval`): a fiber,
/// which suspends and is woken by mail to its worker (the worker runs its other fibers meanwhile, one of which
/// may be the one to signal), or a thread, which parks. A waiter may be woken spuriously: it checks again.
#[derive(Clone, Debug)]
pub(crate) enum Waiter {
    Thread(Thread),
    Fiber(&'static TrusteeShared, usize),
}

impl Waiter {
    /// The caller: its fiber, unless it runs a delegated closure there (which cannot suspend), else its thread.
    pub(crate) fn current() -> Waiter {
        match (context::worker(), context::fiber()) {
            (Some(worker), Some((_, id))) if !context::in_delegated() => Waiter::Fiber(worker.shared, id),
            _ => Waiter::Thread(thread::current()),
        }
    }

    /// Waits until woken, or spuriously; the caller is `self` (made by `current`).
    pub(crate) fn wait(&self) {
        match self {
            Waiter::Thread(_) => call::park_thread(),
            Waiter::Fiber(..) => suspend(),
        }
    }

    pub(crate) fn wake(self) {
        match self {
            Waiter::Thread(t) => t.unpark(),
            Waiter::Fiber(trustee, id) => trustee.wake_fiber(id),
        }
    }
}

struct JoinState<R> {
    /// Boxed by the fiber as it returns (see `fiber_job`): a large result moves as a pointer from there on.
    result: Mutex<Option<thread::Result<Box<R>>>>,
    /// Set under the `joiner` lock, so a joiner registers at most once and is woken exactly once.
    done: AtomicBool,
    joiner: Mutex<Option<Waiter>>,
    /// The fiber that keeps the promise, once it runs: its worker's address and its id plus one (0 before). Ids
    /// are reused, but not while the fiber is unfinished, which is when `join` looks (review 93: a fiber that
    /// joined its own handle waited for good; std's thread panics). Written and read by that fiber's thread
    /// when it joins itself; any other joiner is another fiber or a thread, which no value here matches.
    runs_on: AtomicUsize,
    runs_as: AtomicUsize,
    /// The fiber that joins this one, when it joined before this one started: its worker's address and its id
    /// plus one (0: none). This fiber, starting on that worker, records the link in its scheduler (see
    /// `link_joiner`); on another worker it ignores it.
    joined_on: AtomicUsize,
    joined_as: AtomicUsize,
}

impl<R: Send> Abandon for JoinState<R> {
    /// The fiber was abandoned suspended at shutdown: its promise is leaked with it, never kept nor dropped.
    fn abandon(&self) {
        if !self.done.load(Ordering::Acquire) {
            self.complete(Err(Box::new(SHUT_DOWN)));
        }
    }
}

impl<R> JoinState<R> {
    fn complete(&self, result: thread::Result<Box<R>>) {
        *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        let joiner = {
            let mut joiner = self.joiner.lock().unwrap_or_else(|e| e.into_inner());
            self.done.store(true, Ordering::Release);
            joiner.take()
        };
        if let Some(joiner) = joiner {
            joiner.wake();
        }
    }

    /// Fiber `id` of `worker`, registered as the joiner, is about to suspend: when the joined fiber runs on the
    /// same worker, that worker's scheduler records who joins it (see `Scheduler::joined_chain`: a latch's
    /// refusals follow the chain). One not started yet finds the link here when it starts (`Promise::runs_as`).
    /// A joiner on another worker, or a plain thread, is not recorded. Relaxed: the link matters only between
    /// fibers of one worker, which run on one thread; a value from another worker never names this one.
    fn link_joiner(&self, worker: &Worker, id: usize, runs_as: usize, runs_on: usize) {
        let here = std::ptr::from_ref(worker.shared).addr();
        if runs_as == 0 {
            self.joined_on.store(here, Ordering::Relaxed);
            self.joined_as.store(id + 1, Ordering::Relaxed);
        } else if runs_on == here {
            worker.scheduler.set_joiner(runs_as - 1, id);
            // A fiber down the chain that waits for a latch's launched fibers, in `Latch::lock`, or for a take
            // of a latch to settle, may be waiting for this one now.
            worker.scheduler.recheck_latch_waiters();
            worker.scheduler.recheck_lock_waiters(id);
            worker.refuse_joined_takes();
        }
    }

    /// Registers the caller to be woken; false if the fiber is already done.
    fn register(&self, joiner: Waiter) -> bool {
        let mut slot = self.joiner.lock().unwrap_or_else(|e| e.into_inner());
        if self.done.load(Ordering::Acquire) {
            return false;
        }
        *slot = Some(joiner);
        true
    }
}

/// Starts `f` in a new fiber on a worker chosen round-robin. Inside it, `apply` suspends only the fiber.
///
/// The fiber's stack ([`fiber_stack_size`](crate::RuntimeBuilder::fiber_stack_size), 256 KiB by default) is
/// taken here, on the calling thread: a finished fiber's if one is pooled, else a new one, carved with up to 63
/// others out of one memory mapping. A fiber's stack costs only the pages it touches: measured on Linux
/// 6.18, a million waiting fibers take 4.1 GiB of RSS (4.2 KiB each, plus 0.5 KiB of page tables) in 64
/// mappings, so memory is the limit. Linux also caps the mappings of a process (`vm.max_map_count`, 65,530
/// by default): under the default cap 3.6 million stacks fit (28,669 before Linux 6.13, whose guard pages
/// need a mapping of their own). When fibers finish, their stacks' pages go back to the OS, but for the
/// 1,024 stacks kept ready for the next fibers.
///
/// # Panics
///
/// When no stack can be had — the limit is reached, or `mmap` fails — with a message that names
/// `vm.max_map_count` and the `sysctl` that raises it. Fibers already running are not affected, and `spawn`
/// works again once some finish. Also panics after [`Runtime::shutdown`](crate::Runtime::shutdown).
#[track_caller]
pub fn spawn<F, R>(f: F) -> Fiber<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if const { size_of::<F>() > BOX_ABOVE } {
        // Boxed at the boundary, as `apply` does: the layers below (and the fiber's stack) move a pointer.
        let f: Box<dyn FnOnce() -> R + Send> = Box::new(f);
        return spawn_sized(f);
    }
    spawn_sized(f)
}

/// `spawn` for a closure small enough to move by value.
#[track_caller]
fn spawn_sized<F, R>(f: F) -> Fiber<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let rt = runtime();
    // In a forked child, before the stack pool: its locks may have been held by a parent's thread at the fork
    // (a fiber ending, another `spawn`), and nothing would release them there (review 68: the child hung).
    if shared::in_forked_child() {
        shared::refuse(f, IN_FORKED_CHILD);
    }
    // A worker waits for a finishing fiber's stack only briefly: that fiber may be its own (see `take`).
    let patience = if context::worker().is_some() {
        Duration::from_millis(1)
    } else {
        Duration::from_millis(100)
    };
    let stack = match rt.stacks.take(patience) {
        Ok(stack) => stack,
        Err(e) => shared::refuse(f, &e.to_string()),
    };
    let (fiber, job) = fiber_job(f);
    rt.next_spawn_trustee()
        .spawn_fiber(stack, Box::new(job), fiber.abandon_handle());
    fiber
}

/// Starts `f` in a new fiber on the calling worker (for `launch`: the fiber must run on the trustee). If no
/// stack can be had, `f` is dropped unrun and the fiber's result is that panic, for its joiner to raise: the
/// worker itself must not panic.
pub(crate) fn start_here<F, R>(f: F) -> Fiber<R>
where
    F: FnOnce() -> R + 'static,
    R: Send + 'static,
{
    let worker = context::worker().expect("start_here runs on a worker");
    // No waiting on the trustee, inside a delegated closure.
    match worker.scheduler.stacks.take(Duration::ZERO) {
        Ok(stack) => {
            let (fiber, job) = fiber_job(f);
            worker.scheduler.start(stack, Box::new(job), fiber.abandon_handle());
            fiber
        }
        Err(e) => {
            // First, so whatever `f` holds is released before the joiner wakes. Contained: a capture whose
            // destructor panics must not unwind out of a launch's start on the trustee, whose request then
            // answers no fiber handle at all (the caller read a result never written).
            if unwind::drop_quietly(f) {
                eprintln!("trust: a fiber's closure panicked when dropped unrun (no fiber stack); the fiber reports the limit");
            }
            let (fiber, promise) = promise();
            drop(promise.settle(Err(Box::new(e.to_string()))));
            fiber
        }
    }
}

fn fiber_job<F, R>(f: F) -> (Fiber<R>, impl FnOnce() + 'static)
where
    F: FnOnce() -> R + 'static,
    R: Send + 'static,
{
    // A job dropped unrun (its mail came after the shutdown) drops its promise, which completes the handle.
    let (fiber, promise) = promise();
    let job = move || {
        if let (Some(worker), Some((_, id))) = (context::worker(), context::fiber()) {
            promise.runs_as(worker, id);
        }
        // Boxed as `f` returns it: by value through the layers below, on the fiber's stack, a 32 KiB result
        // overflowed 256 KiB in a debug build.
        let result = panic::catch_unwind(AssertUnwindSafe(move || Box::new(f())));
        // Before the joiner can see the result: a `spawn` right after the join waits for this stack.
        stack::returning();
        if let Some(worker) = context::worker() {
            worker.scheduler.ending();
        }
        if let Some(unjoined) = promise.settle(result) {
            // Detached: nobody can see the result, and its destructor runs here, where it may block (an `apply`
            // in a `Drop`). The fiber is alive until it returns (review 47: it counted as ended meanwhile). Not
            // a result with no destructor to run: a `launch_then`'s fiber (always detached) has delivered its
            // result already, and its continuation may have run and looked (review 74: counted alive then).
            let inert = !std::mem::needs_drop::<R>() && unjoined.is_ok();
            if !inert && let Some(worker) = context::worker() {
                worker.scheduler.not_ending();
            }
            drop(unjoined);
        }
    };
    (fiber, job)
}

/// The other end of a [`Fiber`] that no fiber runs: whoever holds it completes the handle's result, from any
/// thread, and the handle's `join` waits for it as for a fiber (suspending a fiber, yielding a coroutine,
/// parking a thread). Dropped without completing, it completes the handle with the shutdown panic: only a
/// runtime shutting down discards a promise unkept.
pub(crate) struct Promise<R: Send + 'static> {
    state: Option<Arc<JoinState<R>>>,
}

impl<R: Send + 'static> fmt::Debug for Promise<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Promise").finish_non_exhaustive()
    }
}

/// A handle and the promise that completes it.
pub(crate) fn promise<R: Send + 'static>() -> (Fiber<R>, Promise<R>) {
    let state = Arc::new(JoinState {
        result: Mutex::new(None),
        done: AtomicBool::new(false),
        joiner: Mutex::new(None),
        runs_on: AtomicUsize::new(0),
        runs_as: AtomicUsize::new(0),
        joined_on: AtomicUsize::new(0),
        joined_as: AtomicUsize::new(0),
    });
    (
        Fiber {
            state: state.clone(),
        },
        Promise { state: Some(state) },
    )
}

impl<R: Send + 'static> Promise<R> {
    /// Records the fiber that keeps this promise (`JoinState::runs_as`), and a fiber of its worker that joined
    /// it before it started (`JoinState::link_joiner`): one relaxed load when none did.
    fn runs_as(&self, worker: &Worker, id: usize) {
        if let Some(state) = &self.state {
            let here = std::ptr::from_ref(worker.shared).addr();
            state.runs_on.store(here, Ordering::Relaxed);
            state.runs_as.store(id + 1, Ordering::Relaxed);
            let joiner = state.joined_as.load(Ordering::Relaxed);
            if joiner != 0 && state.joined_on.load(Ordering::Relaxed) == here {
                worker.scheduler.set_joiner(id, joiner - 1);
            }
        }
    }

    /// Completes the handle with `value`. When nobody will join it (the handle is gone: a cancelled `may`
    /// coroutine's, say), the value is dropped here, maybe on a trustee, with a destructor's panic contained:
    /// uncontained, it unwound out of the worker's loop and ended its thread (review 53).
    pub(crate) fn keep(self, value: R) {
        if let Some(unjoined) = self.settle(Ok(Box::new(value)))
            && unwind::drop_quietly(unjoined)
        {
            eprintln!("trust: a value nobody waited for any more panicked when dropped; the runtime goes on");
        }
    }

    /// Completes the handle with a panic's `payload`, for its joiner to raise (a take refused while it waited:
    /// `trust::TakeRefused`). When nobody will join it the payload is dropped here, uncontained: the caller's
    /// has no destructor.
    pub(crate) fn fail(self, payload: Box<dyn std::any::Any + Send>) {
        drop(self.settle(Err(payload)));
    }

    /// Completes the handle with `result`; returns the result when the handle is gone (nobody will join it),
    /// for the caller to drop.
    fn settle(mut self, result: thread::Result<Box<R>>) -> Option<thread::Result<Box<R>>> {
        let state = self.state.take()?;
        state.complete(result);
        let state = Arc::into_inner(state)?;
        state.result.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<R: Send + 'static> Drop for Promise<R> {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            state.complete(Err(Box::new(SHUT_DOWN)));
        }
    }
}

/// Lets the worker run its other fibers and serve its clients before the calling fiber continues. Outside a
/// fiber (a plain thread, a `may` coroutine), yields the thread or coroutine.
#[inline]
pub fn yield_now() {
    if let Some(worker) = context::worker()
        && let Some((_, id)) = worker.fiber.get()
        && !worker.in_delegated()
    {
        worker.scheduler.make_ready(id);
        return suspend_on(worker);
    }
    yield_outside_fiber();
}

/// Suspends the calling fiber for at least `duration`: its worker meanwhile runs its other fibers and serves
/// its clients. Outside a fiber it sleeps the thread (`std::thread::sleep`; in a `may` coroutine, may's own
/// sleep), and so inside a delegated closure it stops that trustee for as long. A fiber asleep at
/// [`Runtime::shutdown`](crate::Runtime::shutdown) is abandoned with the others.
pub fn sleep(duration: Duration) {
    if let Some(worker) = context::worker()
        && let Some((_, id)) = worker.fiber.get()
        && !worker.in_delegated()
    {
        // `None` past `Instant`'s range: asleep until the runtime abandons the fiber.
        let deadline = Instant::now().checked_add(duration);
        while deadline.is_none_or(|at| Instant::now() < at) {
            worker.reactor.sleep_until(id, deadline);
        }
        return;
    }
    #[cfg(feature = "may")]
    if outbox::in_may_coroutine() {
        return may::coroutine::sleep(duration);
    }
    thread::sleep(duration);
}

#[inline(never)]
fn yield_outside_fiber() {
    #[cfg(feature = "may")]
    if outbox::in_may_coroutine() {
        return may::coroutine::yield_now();
    }
    thread::yield_now();
}

impl<R: Send + 'static> Fiber<R> {
    /// What the scheduler holds to complete this handle if it abandons the fiber (weakly: see `Abandon`).
    fn abandon_handle(&self) -> std::sync::Weak<dyn Abandon> {
        Arc::downgrade(&self.state) as std::sync::Weak<dyn Abandon>
    }
}

impl<R> Fiber<R> {
    /// True once the fiber has returned or panicked.
    pub fn is_finished(&self) -> bool {
        self.state.done.load(Ordering::Acquire)
    }

    /// Waits for the fiber and returns its result, or the payload of its panic. From a fiber this suspends the
    /// fiber; from a `may` coroutine it yields, and after 4 ms sleeps 16 ms at a time; from a plain thread it
    /// parks.
    ///
    /// Panics inside a delegated closure and in an `apply_then` continuation on a worker: the worker would
    /// wait for a fiber that only it can run. Panics in the fiber itself (its handle passed to it), which would
    /// wait for its own end, as std's thread does.
    pub fn join(self) -> thread::Result<R> {
        // A plain thread's unsent `apply_then`s go out first, finished fiber or not (README: a burst's last
        // requests go out at `Fiber::join`); while it waits, the fiber may wait for them (`try_unwrap`), so
        // those that find both lanes busy go out as lanes free (`call::park_thread`).
        if context::worker().is_none() && !outbox::in_may_coroutine() {
            call::publish_thread_unsent();
        }
        let mut may_wait = MayWait::default();
        while !self.is_finished() {
            if let Some(worker) = context::worker() {
                let fiber = context::fiber().filter(|_| !context::in_delegated());
                let Some((_, id)) = fiber else {
                    panic!("{JOIN_ON_TRUSTEE}");
                };
                let runs_as = self.state.runs_as.load(Ordering::Relaxed);
                let runs_on = self.state.runs_on.load(Ordering::Relaxed);
                if runs_as == id + 1 && runs_on == std::ptr::from_ref(worker.shared).addr() {
                    panic!("{JOIN_SELF}");
                }
                if self.state.register(Waiter::Fiber(worker.shared, id)) {
                    self.state.link_joiner(worker, id, runs_as, runs_on);
                    suspend();
                }
            } else if outbox::in_may_coroutine() {
                // As a coroutine's other waits: it yields for 4 ms, then sleeps 16 ms at a time (nothing here
                // can wake a coroutine; yielding alone kept its `may` thread busy for the whole wait, a core for
                // a `launch` on a held latch: review 27).
                may_wait.snooze();
            } else {
                // No worker was copied into a forked child: nothing would ever finish the fiber there.
                shared::panic_if_forked();
                if self.state.register(Waiter::Thread(thread::current())) {
                    call::park_thread();
                }
            }
        }
        self.state
            .result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("a finished fiber left its result")
            .map(|result| *result)
    }
}

const JOIN_SELF: &str = "a fiber joined its own handle: it would wait for its own end for good. Join it from \
     another fiber or thread, or let the handle go (a fiber runs to its end unjoined)";

pub(crate) const JOIN_ON_TRUSTEE: &str = "waiting for a fiber inside a delegated closure (or an `apply_then` \
     continuation on a worker): the worker would wait for a fiber that only it can run. Use `apply_then` to \
     continue asynchronously, or `launch` to run blocking code in a fiber on the trustee";


/// The handle of a spawned fiber, under the name std and tokio use.
pub type JoinHandle<R> = Fiber<R>;
