//! Fibers: stackful coroutines (switched with `corosensei`) owned by one worker's scheduler. A fiber never
//! leaves the worker that runs it, so everything a worker owns without atomics stays on one thread. An `apply`
//! inside a fiber suspends just that fiber; its worker keeps serving requests and running other fibers.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};

use corosensei::{Coroutine, CoroutineResult};

use crate::context::{self, Yielder};
use crate::job::{Job, Reply};
use crate::runtime::runtime;
use crate::stack::overflow;
use crate::stack::{FiberStack, GuardPage, StackPool};
use crate::then::Pending;
use crate::trustee::TrusteeShared;
use crate::worker::Worker;

type FiberJob = Box<dyn FnOnce()>;
type FiberCoroutine = Coroutine<(), (), (), FiberStack>;

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

enum Joiner {
    Thread(Thread),
    Fiber(&'static TrusteeShared, usize),
}

struct JoinState<R> {
    result: Mutex<Option<thread::Result<R>>>,
    /// Set under the `joiner` lock, so a joiner registers at most once and is woken exactly once.
    done: AtomicBool,
    joiner: Mutex<Option<Joiner>>,
}

impl<R> JoinState<R> {
    fn complete(&self, result: thread::Result<R>) {
        *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        let joiner = {
            let mut joiner = self.joiner.lock().unwrap_or_else(|e| e.into_inner());
            self.done.store(true, Ordering::Release);
            joiner.take()
        };
        match joiner {
            Some(Joiner::Thread(t)) => t.unpark(),
            Some(Joiner::Fiber(trustee, id)) => trustee.wake_fiber(id),
            None => {}
        }
    }

    /// Registers the caller to be woken; false if the fiber is already done.
    fn register(&self, joiner: Joiner) -> bool {
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
/// taken here, on the calling thread: a finished fiber's if one is pooled, else a new memory mapping. Linux
/// caps the mappings of a process (`vm.max_map_count`, 65,530 by default) and each stack is one (two before
/// Linux 6.13, whose guard pages need a mapping of their own), so the live fibers of a process are limited:
/// under the default cap, 57,339 (28,669 before 6.13). Measured on Linux 6.18: 57,339 waiting fibers take
/// 231 MiB of RSS, about 4.1 KiB each plus 0.5 KiB of page tables; a fiber's stack costs only the pages it
/// touches.
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
    let rt = runtime();
    let stack = match rt.stacks.take() {
        Ok(stack) => stack,
        Err(e) => panic!("{e}"),
    };
    let (fiber, job) = fiber_job(f);
    rt.next_spawn_trustee().spawn_fiber(stack, Box::new(job));
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
    let (fiber, job) = fiber_job(f);
    let worker = context::worker().expect("start_here runs on a worker");
    match worker.scheduler.stacks.take() {
        Ok(stack) => worker.scheduler.start(stack, Box::new(job)),
        Err(e) => {
            drop(job); // first: whatever `f` holds is released before the joiner wakes
            fiber.state.complete(Err(Box::new(e.to_string())));
        }
    }
    fiber
}

fn fiber_job<F, R>(f: F) -> (Fiber<R>, impl FnOnce() + 'static)
where
    F: FnOnce() -> R + 'static,
    R: Send + 'static,
{
    let state = Arc::new(JoinState {
        result: Mutex::new(None),
        done: AtomicBool::new(false),
        joiner: Mutex::new(None),
    });
    let done = state.clone();
    let job = move || done.complete(panic::catch_unwind(AssertUnwindSafe(f)));
    (Fiber { state }, job)
}

/// Lets the worker run its other fibers and serve its clients before the calling fiber continues. Outside a
/// fiber (a plain thread, a `may` coroutine), yields the thread or coroutine.
pub fn yield_now() {
    match (context::worker(), context::fiber()) {
        (Some(worker), Some((_, id))) if !context::in_delegated() => {
            worker.scheduler.make_ready(id);
            suspend();
        }
        #[cfg(feature = "may")]
        _ if context::in_may_coroutine() => may::coroutine::yield_now(),
        _ => thread::yield_now(),
    }
}

impl<R> Fiber<R> {
    /// True once the fiber has returned or panicked.
    pub fn is_finished(&self) -> bool {
        self.state.done.load(Ordering::Acquire)
    }

    /// Waits for the fiber and returns its result, or the payload of its panic. From a fiber this suspends the
    /// fiber; from a `may` coroutine it yields; from a plain thread it parks.
    ///
    /// Panics inside a delegated closure and in an `apply_then` continuation on a worker: the worker would
    /// wait for a fiber that only it can run.
    pub fn join(self) -> thread::Result<R> {
        while !self.is_finished() {
            if let Some(worker) = context::worker() {
                let fiber = context::fiber().filter(|_| !context::in_delegated());
                let Some((_, id)) = fiber else {
                    panic!("{JOIN_ON_TRUSTEE}");
                };
                if self.state.register(Joiner::Fiber(worker.shared, id)) {
                    suspend();
                }
            } else if context::in_may_coroutine() {
                #[cfg(feature = "may")]
                may::coroutine::yield_now();
            } else if self.state.register(Joiner::Thread(thread::current())) {
                thread::park();
            }
        }
        self.state
            .result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("a finished fiber left its result")
    }
}

pub(crate) const JOIN_ON_TRUSTEE: &str = "waiting for a fiber inside a delegated closure (or an `apply_then` \
     continuation on a worker): the worker would wait for a fiber that only it can run. Use `apply_then` to \
     continue asynchronously, or `launch` to run blocking code in a fiber on the trustee";

/// Suspends the running fiber until the scheduler resumes it (someone made it ready).
pub(crate) fn suspend() {
    suspend_on(context::worker().expect("only a fiber can suspend"));
}

/// `suspend` for a caller that already has its worker (a fiber never leaves it).
fn suspend_on(worker: &Worker) {
    let (yielder, id) = worker.fiber.get().expect("only a fiber can suspend");
    // SAFETY: the yielder belongs to the fiber running this code and lives as long as the fiber.
    unsafe { (*yielder).suspend(()) };
    worker.fiber.set(Some((yielder, id)));
}

/// Inline applies a fiber may run back to back before it lets its worker serve others.
const INLINE_BURST: u32 = 32;

/// Fibers resumed per turn of the worker loop, at most: a turn's length bounds how long the worker's clients
/// (and its own requests' answers) wait.
const FIBERS_PER_TURN: usize = 32;

/// Called after an inline (local-shortcut) apply: a fiber that applies inline never suspends, so every
/// `INLINE_BURST` of them it yields once, letting its worker serve remote clients and other fibers.
#[inline]
pub(crate) fn after_inline_apply(worker: &crate::worker::Worker) {
    worker.turn_applies.set(worker.turn_applies.get() + 1);
    let n = worker.inline_burst.get() + 1;
    if n < INLINE_BURST {
        worker.inline_burst.set(n);
        return;
    }
    worker.inline_burst.set(0);
    if let Some((_, id)) = worker.fiber.get()
        && !worker.in_delegated()
    {
        worker.scheduler.make_ready(id);
        suspend();
    }
}

/// Delegation from a worker fiber: the request joins the worker's batch to `trustee` and the fiber suspends
/// until the batch is answered (and first, if the slot is busy, until there is room).
pub(crate) fn call<J: Job<Output: Send>>(
    worker: &Worker,
    id: usize,
    trustee: &'static TrusteeShared,
    job: J,
) -> J::Output {
    let mut result = None;
    let mut record = Reply(job);
    loop {
        let mut client = worker.client.borrow_mut();
        let outbox = client.outbox(trustee);
        match outbox.try_push_call(record, &raw mut result) {
            Ok(()) => {
                outbox.staged.push(id);
                break;
            }
            Err(r) => {
                record = r;
                outbox.blocked.push(id);
            }
        }
        drop(client);
        suspend_on(worker);
    }
    suspend_on(worker);
    result.expect("the trustee answered the batch holding this request")
}

/// The fibers of one worker. Only its worker thread touches it.
pub(crate) struct Scheduler {
    /// Suspended fibers by id, with their guard pages (for the overflow report, see `stack::overflow`).
    fibers: RefCell<Vec<Option<(FiberCoroutine, GuardPage)>>>,
    free: RefCell<Vec<usize>>,
    ready: RefCell<VecDeque<usize>>,
    /// Where finished fibers' stacks go, and `launch` takes new ones.
    pub(crate) stacks: &'static StackPool,
    live: Cell<usize>,
    /// Each fiber's `apply_then` bookkeeping, by fiber id (created on first use).
    pending: RefCell<Vec<Option<Rc<Pending>>>>,
    /// For fibers started by `launch`: the address of the property they share, by fiber id (0: none).
    launched: RefCell<Vec<usize>>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("live", &self.live.get())
            .field("ready", &self.ready.borrow().len())
            .finish()
    }
}

impl Scheduler {
    pub(crate) fn new(stacks: &'static StackPool) -> Self {
        Scheduler {
            fibers: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            ready: RefCell::new(VecDeque::new()),
            stacks,
            live: Cell::new(0),
            pending: RefCell::new(Vec::new()),
            launched: RefCell::new(Vec::new()),
        }
    }

    /// Creates a fiber for `job` on `stack` and makes it ready.
    pub(crate) fn start(&self, stack: FiberStack, job: FiberJob) {
        let guard = stack.guard_page();
        let id = self.free.borrow_mut().pop().unwrap_or_else(|| {
            let mut fibers = self.fibers.borrow_mut();
            fibers.push(None);
            fibers.len() - 1
        });
        let fiber = Coroutine::with_stack(stack, move |yielder: &Yielder, ()| {
            context::set_fiber(Some((yielder as *const Yielder, id)));
            // The job catches the user's panic; what is left is the drop of an unjoined result.
            if panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                eprintln!("trust: a fiber's result panicked when dropped; the worker keeps running");
            }
        });
        self.fibers.borrow_mut()[id] = Some((fiber, guard));
        self.live.set(self.live.get() + 1);
        self.make_ready(id);
    }

    /// The `apply_then` bookkeeping of fiber `id`.
    pub(crate) fn pending_of(&self, id: usize) -> Rc<Pending> {
        let mut pending = self.pending.borrow_mut();
        if pending.len() <= id {
            pending.resize(id + 1, None);
        }
        pending[id].get_or_insert_with(Rc::default).clone()
    }

    /// Fiber `id` was started by `launch` on the property at `property`, until it ends.
    pub(crate) fn set_launched(&self, id: usize, property: usize) {
        let mut launched = self.launched.borrow_mut();
        if launched.len() <= id {
            launched.resize(id + 1, 0);
        }
        launched[id] = property;
    }

    /// True when fiber `id` was started by `launch` on the property at `property`.
    pub(crate) fn is_launched_on(&self, id: usize, property: usize) -> bool {
        self.launched.borrow().get(id) == Some(&property)
    }

    pub(crate) fn make_ready(&self, id: usize) {
        self.ready.borrow_mut().push_back(id);
    }

    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.borrow().is_empty()
    }

    /// Resumes the fibers at the front of the ready queue, each once. True if any ran.
    pub(crate) fn run_ready(&self, budget_left: impl Fn() -> bool) -> bool {
        // Each fiber ready now runs once, while the turn's budget of local-shortcut applies lasts: the loop
        // polls its channels between turns, so a remote client waits for at most that many inline applies,
        // while fibers that send requests (and use none of the budget) all run, filling whole batches.
        let n = self.ready.borrow().len().min(FIBERS_PER_TURN);
        for _ in 0..n {
            if !budget_left() {
                break;
            }
            let Some(id) = self.ready.borrow_mut().pop_front() else {
                break;
            };
            let (mut fiber, guard) = self.fibers.borrow_mut()[id]
                .take()
                .expect("a ready fiber is suspended");
            overflow::set_running(guard);
            let state = fiber.resume(());
            overflow::set_running(GuardPage::NONE);
            context::set_fiber(None);
            match state {
                CoroutineResult::Yield(()) => self.fibers.borrow_mut()[id] = Some((fiber, guard)),
                CoroutineResult::Return(()) => {
                    self.stacks.give(fiber.into_stack());
                    self.free.borrow_mut().push(id);
                    if let Some(p) = self.pending.borrow_mut().get_mut(id) {
                        *p = None;
                    }
                    if let Some(l) = self.launched.borrow_mut().get_mut(id) {
                        *l = 0;
                    }
                    self.live.set(self.live.get() - 1);
                }
            }
        }
        n > 0
    }

    /// At shutdown: suspended fibers are leaked, not unwound (they wait for answers that will not come, and
    /// unwinding them would run user code after the runtime stopped).
    pub(crate) fn abandon(&self) {
        for fiber in self.fibers.borrow_mut().drain(..).flatten() {
            std::mem::forget(fiber);
        }
    }
}
