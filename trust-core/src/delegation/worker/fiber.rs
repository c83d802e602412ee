//! The fiber scheduler of one worker: stackful coroutines (switched with `corosensei`) that never leave the
//! worker running them, so everything a worker owns without atomics stays on one thread. An `apply` inside a
//! fiber suspends just that fiber (`call`); its worker keeps serving requests and running other fibers (a
//! fiber whose request is the only thing its worker has going sends it alone and waits for the answer in
//! place instead: `call_alone`). What users call — `spawn`, `Fiber`, `yield_now` — is `api::fiber`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::sync::Weak;
use std::time::{Duration, Instant};

use corosensei::{Coroutine, CoroutineResult};

use crate::delegation::worker::context::{self, Yielder};
use crate::delegation::client::outbox::{Blocked, Outbox};
use crate::delegation::trustee::job::{Job, Reply};
use crate::delegation::stack::{self, overflow};
use crate::delegation::stack::{FiberStack, GuardPage, StackPool};
use crate::delegation::client::then::Pending;
use crate::delegation::trustee::metrics::Metrics;
use crate::delegation::trustee::shared::{self, Abandon, TrusteeShared};
use crate::delegation::trustee::unwind;
use crate::delegation::worker::run::Worker;

type FiberJob = Box<dyn FnOnce()>;

/// A fiber's job until it starts: dropped unrun, with a panic in a destructor contained.
struct QuietDrop(Option<FiberJob>);

impl Drop for QuietDrop {
    fn drop(&mut self) {
        if unwind::drop_quietly(self.0.take()) {
            eprintln!("trust: a fiber that never ran panicked when dropped at shutdown");
        }
    }
}
type FiberCoroutine = Coroutine<(), (), (), FiberStack>;

/// A suspended fiber with its guard page (for the overflow report, see `stack::overflow`) and its handle (for
/// `abandon`).
type Suspended = Box<(FiberCoroutine, GuardPage, Weak<dyn Abandon>)>;

/// Suspends the running fiber until the scheduler resumes it (someone made it ready).
pub(crate) fn suspend() {
    suspend_on(context::worker().expect("only a fiber can suspend"));
}

/// `suspend` for a caller that already has its worker (a fiber never leaves it).
#[inline(always)]
pub(crate) fn suspend_on(worker: &Worker) {
    // A fiber forked (`fork` called in it, or in a closure it runs): the child is a copy of the worker's thread
    // alone, its trustees closed (`TrusteeShared::close_in_forked_child`). Suspending would run the copied
    // worker loop there, which would shut its trustee down: drop the parent's values and shut down the parent's
    // sockets (shared with the child). The fiber panics instead, as every other use of the runtime there does.
    shared::panic_if_forked();
    let (yielder, id) = worker.fiber.get().expect("only a fiber can suspend");
    // Where the fiber suspends: near the lines its resume reads first (`prefetch_next`).
    worker.scheduler.suspended_at.set(stack::stack_pointer());
    // Counted while suspended if it unwinds, so that the fibers that run meanwhile, which see
    // `thread::panicking()` too, know the panic is not theirs (`Worker::unwinding_here`). One load of std's
    // global panic count where nothing panics.
    let unwinding = worker.unwinding_here();
    if unwinding {
        worker.suspended_unwinding.set(worker.suspended_unwinding.get() + 1);
    }
    // SAFETY: the yielder belongs to the fiber running this code and lives as long as the fiber.
    unsafe { (*yielder).suspend(()) };
    if unwinding {
        worker.suspended_unwinding.set(worker.suspended_unwinding.get() - 1);
    }
    worker.fiber.set(Some((yielder, id)));
}

/// Asks the CPU to bring the line at `p` into its cache; a hint only (it never faults, whatever `p` is).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: a prefetch reads nothing the program sees and never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

/// Inline applies a fiber may run back to back before it lets its worker serve others.
const INLINE_BURST: u32 = 32;

/// Fibers resumed per turn of the worker loop, at most: a turn's length bounds how long the worker's clients
/// (and its own requests' answers) wait.
const FIBERS_PER_TURN: usize = 64;

/// Fibers resumed between two polls of the worker's channels and outboxes within a turn (a poll is one load
/// per channel when nothing is pending). With the next fiber's state fetched ahead (`prefetch_next`) a resume
/// got cheaper, and the turn was retuned with it: 64 and 8 against 32 and 4, in one build, 13 alternating
/// `paired` runs: 2 x 256 fibers on one counter 1.81x -> 1.98x `parking_lot` (better in 10 runs) and on 1,024
/// counters 0.38x -> 0.42x (12 runs; medians), the round trips within the noise (1.01x -> 1.06x and 1.27x ->
/// 1.32x the ring's), the memcached example's mixed load unchanged (110 k op/s either way, five pairs).
const SERVE_EVERY: usize = 8;

/// Called before an inline (local-shortcut) apply: a fiber waits while its worker owes remote clients their
/// share of the trustee (see `fairness`).
#[inline]
pub(crate) fn before_inline_apply(worker: &Worker) {
    if !worker.fairness.may_apply_inline() {
        hold(worker);
    }
}

/// Out of line, like every suspension of the local shortcut: the remote path's one switch is what gets inlined
/// into the caller (see `call::call_from`).
#[cold]
#[inline(never)]
fn hold(worker: &Worker) {
    // A child forked by this worker's thread, whose fork handler spent the credit (`Fairness`): whoever calls
    // (a fiber, a delegated closure, a continuation) gets the fork panic, before the value (the child's copy)
    // is touched (review 71: a closure's child applied).
    shared::panic_if_forked();
    // Not a fiber (a delegated closure, a continuation): nothing to suspend, it applies at once. Nor a fiber
    // that unwinds: suspended, it would leave `thread::panicking()` true for the fibers that run meanwhile (as
    // `yield_burst` says); it applies at once, over its share.
    if let Some((_, id)) = worker.fiber.get()
        && !worker.in_delegated()
        && !worker.unwinding_here()
    {
        worker.fairness.hold(id);
        suspend_on(worker);
    }
}

/// Called after an inline (local-shortcut) apply: a fiber that applies inline never suspends, so every
/// `INLINE_BURST` of them it yields once, letting its worker serve remote clients and other fibers.
#[inline]
pub(crate) fn after_inline_apply(worker: &Worker) {
    worker.fairness.applied_inline();
    let n = worker.inline_burst.get() + 1;
    if n < INLINE_BURST {
        worker.inline_burst.set(n);
        return;
    }
    worker.inline_burst.set(0);
    yield_burst(worker);
}

/// Socket operations (`api::net`) that find their socket ready, without waiting, that a worker's fibers run
/// before the one running yields: as many as inline applies.
const IO_BURST: u32 = 32;

/// Called after a socket operation of a fiber that did not wait for its socket: a fiber whose peer never
/// stops writing (or reading) finds its socket ready every time and never suspends, so every `IO_BURST` of
/// them it yields once, as an inline apply does. Before review 90 such a fiber held its worker (its trustee,
/// every other fiber there) for as long as its peer kept writing: a plain thread's round trip to that trustee
/// took the whole 1.2 s of an upload (`tests/adversarial_review90.rs`). Not while the fiber unwinds (a
/// destructor's socket I/O: see `yield_burst`). Nor in a child forked by the fiber, where its ready I/O works
/// as before and a suspension would panic.
#[inline]
pub(crate) fn after_ready_io(worker: &Worker) {
    let n = worker.io_burst.get() + 1;
    if n < IO_BURST {
        worker.io_burst.set(n);
        return;
    }
    worker.io_burst.set(0);
    if !shared::in_forked_child() {
        yield_burst(worker);
    }
}

/// Not while the fiber unwinds (a destructor's inline applies or socket I/O): std keeps `thread::panicking()`
/// per thread, so the worker's other fibers would run with it true, and a `Mutex` guard they drop poisons its
/// lock. Checked here, for both bursts: review 90 checked it for the socket burst only, and a destructor's
/// 100 inline applies let another fiber see `panicking()` 3 times (review 92).
#[inline(never)]
fn yield_burst(worker: &Worker) {
    if let Some((_, id)) = worker.fiber.get()
        && !worker.in_delegated()
        && !worker.unwinding_here()
    {
        worker.scheduler.make_ready(id);
        suspend_on(worker);
    }
}

/// Delegation from a worker fiber: the request joins the worker's batch to `trustee` and the fiber suspends
/// until the batch is answered (and first, if the batch being built is full, until there is room). Inlined
/// into the caller, with the switch: see `call::call_from`.
#[inline(always)]
pub(crate) fn call<J: Job<Output: Send>>(
    worker: &Worker,
    id: usize,
    trustee: &'static TrusteeShared,
    job: J,
) -> J::Output {
    // A fiber that unwinds waits in place (out of line), but for its own trustee, which only its own loop serves
    // (a request behind its queued ones, a launch).
    if worker.unwinding_here() && !std::ptr::eq(trustee, worker.shared) {
        return call_unwinding(worker, id, trustee, job);
    }
    call_job(worker, id, trustee, job)
}

/// `call`, for a fiber that does not unwind.
#[inline(always)]
fn call_job<J: Job<Output: Send>>(worker: &Worker, id: usize, trustee: &'static TrusteeShared, job: J) -> J::Output {
    let mut result = None;
    let mut client = worker.client.borrow_mut();
    let outbox = client.outbox(trustee);
    // The only request of this worker to that trustee, and nothing else to run: sent on its own, out of line
    // (inlined here, the same shortcut slowed the `counter` fiber rows even where it never ran).
    if outbox.is_idle()
        && outbox.answered_fibers.is_empty()
        && !worker.scheduler.has_ready()
        && !worker.reactor.is_waiting()
    {
        drop(client);
        return call_alone(worker, id, trustee, Reply(job));
    }
    // Moved out by whoever pushes it: this fiber now, or its worker later (see `Blocked`).
    let mut record = MaybeUninit::new(Reply(job));
    // Behind the fibers already waiting for room, if any.
    let pushed = outbox.blocked.is_empty()
        // SAFETY: initialized above and read once; written back if it does not fit.
        && match outbox.try_push_call(unsafe { record.assume_init_read() }, &raw mut result) {
            Ok(()) => true,
            Err(r) => {
                record.write(r);
                false
            }
        };
    if pushed {
        outbox.staged.push(id);
    } else {
        // SAFETY: the record and the result's place are in this frame, and this fiber stays suspended until
        // `result` is set, which happens only once the record was pushed and answered.
        let blocked = unsafe { Blocked::with_record(id, record.as_mut_ptr(), &raw mut result) };
        outbox.blocked.push_back(blocked);
    }
    drop(client);
    // One switch site (the inliner then keeps it, and corosensei's `suspend`, inline), until the answer.
    while result.is_none() {
        suspend_on(worker);
    }
    result.expect("the trustee answered the batch holding this request")
}

/// Rounds a lone fiber watches for its answer in `call_alone`, each a look at the worker's other work and
/// `PEEKS_PER_SPIN` looks at the answer: together about as long as the old wait in place (16 rounds of one look
/// at each, 30-40 ns a round here), about a round trip in the VM's slow mode.
const IN_PLACE_SPINS: u32 = 8;

/// Looks at the answer per look at the worker's other work (`Worker::has_work`, which reads every hot channel
/// and outbox): the answer is seen within a few nanoseconds of its arrival.
const PEEKS_PER_SPIN: u32 = 4;

/// A fiber's request that is the only thing its worker has going (no other request to that trustee, no fiber
/// ready, no socket waited on), sent as a plain thread's lone call is (`Outbox::call_alone`): published at
/// once as a batch of its own, its result read straight from the response slot when the fiber sees the
/// answer, which it watches for in place instead of suspending and letting the worker's loop publish the
/// batch, notice the answer and resume it. None of a batch's bookkeeping for waiting callers is needed unless
/// the fiber gives up: as soon as its worker has anything else to do (`Worker::has_work`: mail, a request, an
/// answer for an older batch, a continuation), or after `IN_PLACE_SPINS` rounds, it records the batch as
/// `poll` expects and suspends until its worker's loop has the answer.
#[inline(never)]
fn call_alone<J: Job<Output: Send>>(
    worker: &Worker,
    id: usize,
    trustee: &'static TrusteeShared,
    record: Reply<J>,
) -> J::Output {
    let mut result = None;
    let alone = match worker.client.borrow_mut().outbox(trustee).publish_alone(record) {
        Ok(alone) => alone,
        // A record always fits an empty batch (a big closure travels boxed, a big result is boxed).
        Err(_) => unreachable!("a lone record did not fit an empty batch"),
    };
    for _ in 0..IN_PLACE_SPINS {
        // Other work first: the answer cannot be back yet the first time, and work waiting goes first later.
        if worker.has_work() {
            break;
        }
        let mut client = worker.client.borrow_mut();
        let outbox = client.outbox(trustee);
        for _ in 0..PEEKS_PER_SPIN {
            if let Some(output) = outbox.take_alone(&alone) {
                return output;
            }
            std::hint::spin_loop();
        }
    }
    {
        let mut client = worker.client.borrow_mut();
        let outbox = client.outbox(trustee);
        if let Some(output) = outbox.take_alone(&alone) {
            return output;
        }
        outbox.await_alone(alone, Some(id), &raw mut result);
    }
    while result.is_none() {
        suspend_on(worker);
    }
    result.expect("the trustee answered the batch holding this request")
}

/// How long a fiber that unwinds waits in place (`call_unwinding`) before it suspends all the same.
const UNWINDING_PATIENCE: Duration = Duration::from_secs(2);

/// A blocking call from a fiber that is unwinding or running the panic hook (`std::thread::panicking()`). std
/// keeps the panic state per thread, and every fiber of a worker shares its thread: a fiber that suspended there
/// would leave `thread::panicking()` true for the fibers that run meanwhile (a `Mutex` guard one of them drops
/// is poisoned: review 29), and inside the hook, std's in-hook flag set, so that the next panic on the worker
/// aborts the process (review 31). So the fiber waits in place, and its worker runs nothing else meanwhile:
/// the worker's batches to that trustee are sent and answered first (issue order with the requests in them;
/// fibers that waited for room are only made ready, and their requests go after this one; the worker's loop
/// wakes the answered fibers afterwards), then this one goes alone, and the fiber watches for its answer.
/// `thread::panicking()` is per thread: while a fiber of the worker is suspended mid-unwind all the same (see
/// below), the worker's other fibers see it too, and are told apart by `Worker::unwinding_here`.
/// It suspends all the same, as any call does, if the trustee shuts down meanwhile or after
/// `UNWINDING_PATIENCE` (two unwinding fibers on two workers, each calling the other's trustee, would otherwise
/// wait for each other for good); a record not sent by then takes the usual way.
#[cold]
#[inline(never)]
fn call_unwinding<J: Job<Output: Send>>(
    worker: &Worker,
    id: usize,
    trustee: &'static TrusteeShared,
    job: J,
) -> J::Output {
    let mut patience = Patience::new(trustee);
    let mut record = Some(Reply(job));
    let alone = loop {
        {
            let mut client = worker.client.borrow_mut();
            let outbox = client.outbox(trustee);
            while outbox.poll() {}
            if outbox.is_idle() {
                match outbox.publish_alone(record.take().expect("sent once")) {
                    Ok(alone) => break alone,
                    Err(_) => unreachable!("a lone record did not fit an empty batch"),
                }
            }
            flush_unwinding(worker, outbox);
        }
        if patience.is_out() {
            let Reply(job) = record.take().expect("not sent");
            return call_job(worker, id, trustee, job);
        }
        patience.pause();
    };
    let mut result = None;
    loop {
        let mut client = worker.client.borrow_mut();
        let outbox = client.outbox(trustee);
        if let Some(output) = outbox.take_alone(&alone) {
            return output;
        }
        if patience.is_out() {
            outbox.await_alone(alone, Some(id), &raw mut result);
            break;
        }
        drop(client);
        patience.pause();
    }
    while result.is_none() {
        suspend_on(worker);
    }
    result.expect("the trustee answered the batch holding this request")
}

/// How long `call_unwinding` waits for its trustee before it takes the usual way (kept out of the generic
/// function: one copy for every job type).
struct Patience {
    trustee: &'static TrusteeShared,
    deadline: Instant,
    spins: u32,
}

impl Patience {
    fn new(trustee: &'static TrusteeShared) -> Self {
        Patience { trustee, deadline: Instant::now() + UNWINDING_PATIENCE, spins: 0 }
    }

    fn is_out(&self) -> bool {
        self.trustee.is_closed() || Instant::now() >= self.deadline
    }

    /// Spins, then yields its core between looks: the trustee's worker may need it (more workers than cores).
    fn pause(&mut self) {
        self.spins = self.spins.saturating_add(1);
        if self.spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// As the worker's loop does, for `call_unwinding`: fibers that waited for room go into the next batch, and the
/// batch goes out.
fn flush_unwinding(worker: &Worker, outbox: &mut Outbox) {
    if !outbox.blocked.is_empty() {
        outbox.flush();
        outbox.take_blocked(|other| worker.scheduler.make_ready(other));
    }
    outbox.flush();
}

/// The fibers of one worker. Only its worker thread touches it.
pub(crate) struct Scheduler {
    /// Suspended fibers by id. Boxed: a resume moves one pointer out and back, where moving the coroutine
    /// itself (64 bytes, copied through the stack in pieces of different widths) stalled on store forwarding
    /// (`perf`: the resume loop 27% -> 21% of the samples; no wall-time change measurable on its own).
    fibers: RefCell<Vec<Option<Suspended>>>,
    /// By id (as long as `fibers`), the stack pointer of each suspended fiber when it suspended (0: not yet),
    /// and of the one that suspended last (set by `suspend_on`): where its resume will read first (see
    /// `prefetch_next`).
    stack_hints: RefCell<Vec<usize>>,
    pub(crate) suspended_at: Cell<usize>,
    free: RefCell<Vec<usize>>,
    ready: RefCell<VecDeque<usize>>,
    /// Where finished fibers' stacks go, and `launch` takes new ones.
    pub(crate) stacks: &'static StackPool,
    live: Cell<usize>,
    /// Where `live` is published for `Runtime::metrics`.
    metrics: &'static Metrics,
    /// Each fiber's `apply_then` bookkeeping, by fiber id (created on first use).
    pending: RefCell<Vec<Option<Rc<Pending>>>>,
    /// For fibers started by `launch`: the address of the property they share, by fiber id (0: none).
    launched: RefCell<Vec<usize>>,
    /// Fibers waiting until no launched fiber shares a property: (the property's address, fiber id).
    latch_waiters: RefCell<Vec<(usize, usize)>>,
    /// Each fiber's serial number, by fiber id: ids are reused, serials never (see [`Self::serial_of`]).
    serials: RefCell<Vec<u64>>,
    next_serial: Cell<u64>,
    /// By fiber id: the fiber of this worker suspended joining it, and the joined fiber's serial then (the
    /// link holds while that serial runs under the id: no clearing needed). `NOT_JOINED`: none recorded.
    joiners: RefCell<Vec<(usize, u64)>>,
    /// By fiber id: the ticket of its wait in `Latch::lock` (0: none; `WOKEN`: made ready by
    /// `recheck_lock_waiters`, not resumed yet, so a latch handed to it must not make it ready again).
    lock_waits: RefCell<Vec<u64>>,
    /// The fibers waiting in `Latch::lock`, with their wait's ticket: an entry whose ticket is no longer the
    /// fiber's is stale, and dropped lazily (by the recheck, or when they outnumber the waits two to one).
    lock_waiters: RefCell<Vec<(usize, u64)>>,
    /// How many fibers wait in `Latch::lock` now (a ticket in `lock_waits`).
    lock_waiting: Cell<usize>,
    next_ticket: Cell<u64>,
}

/// A `Scheduler::lock_waits` entry: made ready by `recheck_lock_waiters`.
const WOKEN: u64 = u64::MAX;

/// A `Scheduler::joiners` entry with no joiner.
const NOT_JOINED: (usize, u64) = (usize::MAX, u64::MAX);

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("live", &self.live.get())
            .field("ready", &self.ready.borrow().len())
            .finish()
    }
}

impl Scheduler {
    pub(crate) fn new(stacks: &'static StackPool, metrics: &'static Metrics) -> Self {
        Scheduler {
            fibers: RefCell::new(Vec::new()),
            stack_hints: RefCell::new(Vec::new()),
            suspended_at: Cell::new(0),
            free: RefCell::new(Vec::new()),
            ready: RefCell::new(VecDeque::new()),
            stacks,
            live: Cell::new(0),
            metrics,
            pending: RefCell::new(Vec::new()),
            launched: RefCell::new(Vec::new()),
            latch_waiters: RefCell::new(Vec::new()),
            serials: RefCell::new(Vec::new()),
            next_serial: Cell::new(0),
            joiners: RefCell::new(Vec::new()),
            lock_waits: RefCell::new(Vec::new()),
            lock_waiters: RefCell::new(Vec::new()),
            lock_waiting: Cell::new(0),
            next_ticket: Cell::new(1),
        }
    }

    /// The serial number of fiber `id`: unique among the fibers this worker ever ran, where the id of a fiber
    /// that ended is given to the next (a latch tells its holder by it).
    pub(crate) fn serial_of(&self, id: usize) -> u64 {
        self.serials.borrow().get(id).copied().unwrap_or(u64::MAX)
    }

    /// The stacks of this worker's fibers — the suspended ones, and the one running now (on this worker's thread
    /// only) — for the rare caller that must tell a fiber's borrow from others (`IntervalRwLock`, in a delegated
    /// closure that must wait): one O(f log f) snapshot, then O(log f) per look-up ([`FiberStacks::contains`]).
    /// A scan of the fibers per look-up made that caller's check O(n f) for n borrows looked at, under its
    /// lock's mutex (review 35). Empty of the suspended ones while the list is being changed, which no caller
    /// can observe (it changes only between fibers, on this thread).
    pub(crate) fn fiber_stacks(&self) -> FiberStacks {
        let running = overflow::running();
        let mut stacks: Vec<(usize, usize)> = self.fibers.try_borrow().map_or_else(
            |_| Vec::new(),
            |fibers| fibers.iter().flatten().map(|fiber| fiber.1.stack_bounds()).collect(),
        );
        if running != GuardPage::NONE {
            stacks.push(running.stack_bounds());
        }
        stacks.sort_unstable();
        FiberStacks(stacks)
    }

    /// Creates a fiber for `job` on `stack` and makes it ready.
    pub(crate) fn start(&self, stack: FiberStack, job: FiberJob, handle: Weak<dyn Abandon>) {
        let guard = stack.guard_page();
        let id = match self.free.borrow_mut().pop() {
            Some(id) => {
                // A reused id: the hint was the last fiber's.
                self.stack_hints.borrow_mut()[id] = 0;
                id
            }
            None => {
                let mut fibers = self.fibers.borrow_mut();
                fibers.push(None);
                self.stack_hints.borrow_mut().push(0);
                fibers.len() - 1
            }
        };
        // Dropped unrun (never resumed, at shutdown: `abandon`), the job is dropped on the fiber's stack, where
        // a panic cannot unwind (it would abort the process): contained there.
        let job = QuietDrop(Some(job));
        let fiber = Coroutine::with_stack(stack, move |yielder: &Yielder, ()| {
            let mut job = job;
            let job = job.0.take().expect("a fiber runs once");
            context::set_fiber(Some((yielder as *const Yielder, id)));
            // The job catches the user's panic; what is left is the drop of an unjoined result.
            if unwind::panicked(job) {
                eprintln!("trust: a fiber's result panicked when dropped; the worker keeps running");
            }
        });
        self.fibers.borrow_mut()[id] = Some(Box::new((fiber, guard, handle)));
        let serial = self.next_serial.get();
        self.next_serial.set(serial + 1);
        let mut serials = self.serials.borrow_mut();
        if serials.len() <= id {
            serials.resize(id + 1, u64::MAX);
        }
        serials[id] = serial;
        drop(serials);
        self.live.set(self.live.get() + 1);
        self.metrics.set_fibers(self.live.get());
        self.make_ready(id);
    }

    /// The running fiber is about to settle its result: it no longer counts as alive in the metrics, so that
    /// its joiner, which may look as soon as the result is settled, does not see it (its slot and stack come
    /// back when it returns, right after).
    pub(crate) fn ending(&self) {
        self.metrics.set_fibers(self.live.get() - 1);
    }

    /// The running fiber, after `ending`, has a destructor to run (its detached result's), which may suspend it:
    /// it counts as alive again until it returns.
    pub(crate) fn not_ending(&self) {
        self.metrics.set_fibers(self.live.get());
    }

    /// The `apply_then` bookkeeping of fiber `id`.
    pub(crate) fn pending_of(&self, id: usize) -> Rc<Pending> {
        let mut pending = self.pending.borrow_mut();
        if pending.len() <= id {
            pending.resize(id + 1, None);
        }
        pending[id].get_or_insert_with(Rc::default).clone()
    }

    /// The fiber whose `apply_then` bookkeeping `owner` is, if a live fiber's (a continuation's issuer, say;
    /// looked up only on the rare paths that ask).
    pub(crate) fn fiber_of(&self, owner: &Rc<Pending>) -> Option<usize> {
        self.pending
            .borrow()
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| Rc::ptr_eq(p, owner)))
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

    /// Fiber `joiner` of this worker suspends joining fiber `joined`, also of this worker, until `joined` ends
    /// (written on the join's slow path only: a join that suspends, or a joined fiber's start).
    pub(crate) fn set_joiner(&self, joined: usize, joiner: usize) {
        let serial = self.serial_of(joined);
        let mut joiners = self.joiners.borrow_mut();
        if joiners.len() <= joined {
            joiners.resize(joined + 1, NOT_JOINED);
        }
        joiners[joined] = (joiner, serial);
    }

    /// The fiber of this worker that joins fiber `id` (running or suspended), if one does.
    fn joiner_of(&self, id: usize) -> Option<usize> {
        let (joiner, serial) = self.joiners.borrow().get(id).copied().unwrap_or(NOT_JOINED);
        (joiner != usize::MAX && serial == self.serial_of(id)).then_some(joiner)
    }

    /// Fiber `id`, then the fiber of this worker that joins it, the one that joins that one, and so on: the
    /// fibers that wait for `id` to end. The chain stops at a joiner on another worker or a plain thread (not
    /// recorded). A chain from a live fiber visits each of the worker's live fibers at most once (a fiber joins
    /// one fiber at a time, and a join of its own handle is refused), so the walk is bounded by their number,
    /// not by a fixed cap: capped at 64 links, the 65th fiber down a chain from a latch's holder was not
    /// refused, and waited for good (review 98).
    pub(crate) fn joined_chain(&self, id: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(Some(id), |&id| self.joiner_of(id)).take(self.live.get() + 1)
    }

    /// True when fiber `id` is joined, directly or through fibers joining each other on this worker, by a fiber
    /// launched on the property at `property`: whatever of it waits for that property's launched fibers to end
    /// waits for its joiner, which waits for it.
    pub(crate) fn joined_by_launched_on(&self, id: usize, property: usize) -> bool {
        self.joined_chain(id).skip(1).any(|joiner| self.is_launched_on(joiner, property))
    }

    /// A fiber of this worker now joins another one here: a fiber waiting for a latch's launched fibers to end
    /// (`wait_for_launched`) may now wait, through that join, for a joiner launched on that latch, which waits
    /// for it. Those are made ready (and no other waiter): `trust::wait_for_launched` looks at its join chain
    /// after every wake-up and refuses the apply. Only on a join that suspends; one look at an empty list while
    /// no fiber waits so.
    pub(crate) fn recheck_latch_waiters(&self) {
        self.latch_waiters.borrow_mut().retain(|&(property, id)| {
            let waits_for_joiner = self.joined_by_launched_on(id, property);
            if waits_for_joiner {
                self.make_ready(id);
            }
            !waits_for_joiner
        });
    }

    /// Fiber `id` is about to suspend in `Latch::lock` (on its contended path only), until the latch is handed
    /// to it (`hand_latch_to`) or a join up its chain makes it ready to look again (`recheck_lock_waiters`).
    pub(crate) fn wait_in_lock(&self, id: usize) {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        let mut waits = self.lock_waits.borrow_mut();
        if waits.len() <= id {
            waits.resize(id + 1, 0);
        }
        waits[id] = ticket;
        self.lock_waiting.set(self.lock_waiting.get() + 1);
        let mut waiters = self.lock_waiters.borrow_mut();
        waiters.push((id, ticket));
        if waiters.len() > 2 * self.lock_waiting.get() + 32 {
            waiters.retain(|&(id, ticket)| waits[id] == ticket);
        }
    }

    /// Fiber `id` no longer waits in `Latch::lock` (resumed, or handed the latch); returns what it was.
    fn end_lock_wait(&self, id: usize) -> u64 {
        let Some(wait) = self.lock_waits.borrow_mut().get_mut(id).map(std::mem::take) else {
            return 0;
        };
        if wait != 0 && wait != WOKEN {
            self.lock_waiting.set(self.lock_waiting.get() - 1);
        }
        wait
    }

    /// Fiber `id`, suspended in `Latch::lock`, has resumed.
    pub(crate) fn lock_resumed(&self, id: usize) {
        self.end_lock_wait(id);
    }

    /// A latch's guard hands the latch to fiber `id`, which waits in `Latch::lock`: made ready, unless a
    /// recheck made it ready already (it would be resumed twice).
    pub(crate) fn hand_latch_to(&self, id: usize) {
        if self.end_lock_wait(id) != WOKEN {
            self.make_ready(id);
        }
    }

    /// Fiber `joiner` of this worker now joins another one here: a fiber waiting in `Latch::lock` whose join
    /// chain now reaches `joiner` may wait, through it, for the latch's holder. Those are made ready, once
    /// (`Latch::lock` looks at the holder and its chain after every wake-up, and waits again or refuses); a
    /// lock waiter whose chain the join does not extend is left alone. One look at a counter while no fiber
    /// waits in `Latch::lock`.
    pub(crate) fn recheck_lock_waiters(&self, joiner: usize) {
        if self.lock_waiting.get() == 0 {
            return;
        }
        self.lock_waiters.borrow_mut().retain(|&(id, ticket)| {
            if self.lock_waits.borrow()[id] != ticket {
                return false;
            }
            if !self.joined_chain(id).skip(1).any(|j| j == joiner) {
                return true;
            }
            self.lock_waits.borrow_mut()[id] = WOKEN;
            self.lock_waiting.set(self.lock_waiting.get() - 1);
            self.make_ready(id);
            false
        });
    }

    /// Fiber `id` waits until the launched fibers sharing the property at `property` have ended; the caller
    /// suspends it, and `launched_ended` makes it ready.
    pub(crate) fn wait_for_launched(&self, property: usize, id: usize) {
        let mut waiters = self.latch_waiters.borrow_mut();
        // Once: a fiber made ready twice would be resumed while running.
        if !waiters.contains(&(property, id)) {
            waiters.push((property, id));
        }
    }

    /// The last launched fiber sharing the property at `property` has ended: the fibers waiting for that run.
    pub(crate) fn launched_ended(&self, property: usize) {
        self.latch_waiters.borrow_mut().retain(|&(p, id)| {
            if p == property {
                self.make_ready(id);
            }
            p != property
        });
    }

    #[inline]
    pub(crate) fn make_ready(&self, id: usize) {
        self.ready.borrow_mut().push_back(id);
    }

    #[inline]
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.borrow().is_empty()
    }

    /// Resumes the fibers at the front of the ready queue, each once, calling `between` after every
    /// `SERVE_EVERY` of them. True if any ran.
    pub(crate) fn run_ready(
        &self,
        running: &Cell<Option<(*const Yielder, usize)>>,
        budget_left: impl Fn() -> bool,
        between: impl Fn(),
    ) -> bool {
        // Each fiber ready now runs once, while the turn's budget of local-shortcut applies lasts, so a
        // remote client waits for at most that many inline applies, while fibers that send requests (and use
        // none of the budget) all run, filling whole batches. `between` serves the channels, collects answers
        // and publishes: a fiber may take microseconds (a socket's system calls), and neither a remote
        // request nor this worker's own must wait for a whole turn.
        let n = self.ready.borrow().len().min(FIBERS_PER_TURN);
        // With one fiber to run there is no next one to fetch while it runs.
        let prefetch = n > 1;
        for i in 0..n {
            if !budget_left() {
                break;
            }
            if i > 0 && i % SERVE_EVERY == 0 {
                between();
            }
            let Some(id) = self.ready.borrow_mut().pop_front() else {
                break;
            };
            let mut fiber = self.fibers.borrow_mut()[id]
                .take()
                .expect("a ready fiber is suspended");
            if prefetch {
                self.prefetch_next();
            }
            overflow::set_running(fiber.1);
            let state = fiber.0.resume(());
            overflow::set_running(GuardPage::NONE);
            running.set(None);
            match state {
                CoroutineResult::Yield(()) => {
                    self.fibers.borrow_mut()[id] = Some(fiber);
                    self.stack_hints.borrow_mut()[id] = self.suspended_at.get();
                }
                CoroutineResult::Return(()) => {
                    // Every fiber's job calls `stack::returning` (`api::fiber`) before it ends.
                    self.stacks.give_back(fiber.0.into_stack());
                    self.free.borrow_mut().push(id);
                    if let Some(p) = self.pending.borrow_mut().get_mut(id) {
                        *p = None;
                    }
                    if let Some(l) = self.launched.borrow_mut().get_mut(id) {
                        *l = 0;
                    }
                    self.live.set(self.live.get() - 1);
                    self.metrics.set_fibers(self.live.get());
                }
            }
        }
        n > 0
    }

    /// Fetches what resuming the next ready fiber reads first while this one runs: its boxed coroutine (which
    /// holds its saved stack pointer) and the stack lines around where it suspended (its saved registers and
    /// the frames it returns through). With hundreds of fibers per worker these are cache misses, and they
    /// were the largest part of a resume (`perf`: 29% of the `counters-1024` fiber samples on loading the
    /// saved stack pointer, 18% on the first instruction after the switch). Measured with `paired` in one
    /// build, prefetching switched on and off at run time, six alternating runs: 2 x 256 fibers on one counter
    /// 1.32x -> 1.70x `parking_lot`, on 1,024 counters 0.35x -> 0.42x (medians; faster with it in every run);
    /// more lines, or the fiber after the next, did no better. Against the build before, six alternating runs:
    /// 1,024 counters 0.39x -> 0.45x, one counter unchanged (2.08x, 2.03x): the fiber path's speed also moves
    /// with code layout (a build that prefetched with no `n > 1` guard lost that much elsewhere).
    #[inline]
    fn prefetch_next(&self) {
        let Some(&next) = self.ready.borrow().front() else {
            return;
        };
        if let Some(Some(fiber)) = self.fibers.borrow().get(next) {
            prefetch((&raw const **fiber).cast());
        }
        let sp = self.stack_hints.borrow()[next];
        if sp != 0 {
            for line in -2..=1 {
                prefetch(std::ptr::without_provenance(sp.wrapping_add_signed(64 * line)));
            }
        }
    }

    /// At shutdown: suspended fibers are leaked, not unwound (they wait for answers that will not come, and
    /// unwinding them would run user code after the runtime stopped); their handles are completed with the
    /// shutdown panic, so a `join` waiting for one returns. Fibers never resumed (started by the close itself,
    /// from mail or records it served) are dropped with their closures, unrun, as mail that comes after the
    /// close is.
    pub(crate) fn abandon(&self) {
        let fibers: Vec<Suspended> = self.fibers.borrow_mut().drain(..).flatten().collect();
        for fiber in fibers {
            let handle = fiber.2.upgrade();
            if fiber.0.started() {
                std::mem::forget(fiber);
            } else {
                // Its job's destructors run here, contained (`QuietDrop`).
                drop(fiber);
            }
            // The fiber's leaked promise still holds the handle's state: this is never its last reference.
            if let Some(handle) = handle {
                handle.abandon();
            }
        }
        // None of them will run again: the metrics count no fiber alive on a stopped worker.
        self.live.set(0);
        self.metrics.set_fibers(0);
    }
}

/// A snapshot of a worker's fiber stacks ([`Scheduler::fiber_stacks`]), sorted; they never overlap.
#[derive(Debug)]
pub(crate) struct FiberStacks(Vec<(usize, usize)>);

impl FiberStacks {
    /// Whether `addr` lies on one of the stacks: a binary search.
    pub(crate) fn contains(&self, addr: usize) -> bool {
        let after = self.0.partition_point(|&(start, _)| start <= addr);
        after > 0 && addr < self.0[after - 1].1
    }
}

#[cfg(test)]
mod fiber_stacks_tests {
    use super::FiberStacks;

    #[test]
    fn contains_finds_exactly_the_addresses_on_a_stack() {
        let stacks = FiberStacks(vec![(100, 200), (200, 260), (400, 500)]);
        let on: Vec<usize> = (0..600).filter(|&a| stacks.contains(a)).collect();
        let want: Vec<usize> = (100..260).chain(400..500).collect();
        assert_eq!(on, want);
        assert!(!FiberStacks(Vec::new()).contains(0));
    }
}
