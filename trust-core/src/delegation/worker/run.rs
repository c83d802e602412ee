//! A worker thread: the trustee that serves its channels and the scheduler that runs its fibers, interleaved
//! in one loop. Everything here is touched only by the worker's own thread.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::delegation::client::outbox::Client;
use crate::delegation::client::then::Pending;
use crate::delegation::protocol::channel::Channel;
use crate::delegation::worker::context::{self, Yielder};
use crate::delegation::worker::fairness::Fairness;
use crate::delegation::worker::fiber::Scheduler;
use crate::delegation::worker::reactor::{self, Reactor};
use crate::delegation::protocol::parker::{Backoff, Parker};
use crate::delegation::trustee::local;
use crate::delegation::trustee::unwind;
use crate::delegation::trustee::handle::{Fresh, Handle, OnTrustee, Registration};
use crate::delegation::trustee::property::{self, Header, Registry};
use crate::delegation::protocol::slot::Cursor;
use crate::delegation::stack::StackPool;
#[cfg(not(miri))]
use crate::delegation::stack::overflow::WorkerSignals;
use crate::delegation::trustee::shared::{self, Counted, HeldMail, Mail, TrusteeShared};

/// A channel this trustee serves, with the number of the last batch it answered.
struct Served {
    channel: Arc<Channel>,
    served: u32,
    /// The loop's round when it last had a batch (or was registered, or warmed): see `Worker::cool_quiet`.
    busy_at: u64,
    /// A batch stopped at a record that must wait (see `trustee::job`).
    paused: Option<Paused>,
}

struct Paused {
    seq: u32,
    /// Where the rest of the batch starts.
    offset: Cursor,
    /// The waiting record, run again first.
    record: Box<dyn FnOnce()>,
    /// The property it is a request on, which it waits for (null: not known).
    on: *mut Header,
    /// No record follows it in its batch: a retire may pass the batch by (see `Worker::retire`).
    last: bool,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("served", &self.served)
            .field("paused", &self.paused.is_some())
            .finish()
    }
}

/// Properties whose last handle is gone, waiting for requests that may still refer to them: for each channel
/// that had records unpublished or unserved when they were retired, the batch number that must be served
/// first. Properties retired one after the other while the channels stay as they were share a group.
struct Retired {
    /// Numbers the groups, from 1 (a property's `retiring` names its latest).
    group: u64,
    waits: Vec<(Arc<Channel>, u32)>,
    /// Mail postponed by then (see `Worker::postponed_in`): all of it must have run.
    mail: u64,
    headers: Vec<*mut Header>,
}

impl Retired {
    fn waits_for(&self, waits: &[(Arc<Channel>, u32)], mail: u64) -> bool {
        self.mail == mail
            && self.waits.len() == waits.len()
            && self.waits.iter().zip(waits).all(|((a, m), (b, n))| Arc::ptr_eq(a, b) && m == n)
    }
}

/// Gets a retired property once it is settled, or is told why it will not (see `Settled`).
pub(crate) type Taker = Box<dyn FnOnce(Settled)>;

/// How a take's wait for its retired property (`Worker::retire_to`) ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Settled {
    /// Unreferenced once settled: unregistered, and the taker moves the value out.
    Unreferenced,
    /// A handle is counted again once settled, or a later take displaced this one.
    Referenced,
    /// Refused before it settled: a fiber launched on the latch now joins the fiber that waits for the take,
    /// and the settlement would wait for that joiner to end (`Worker::refuse_joined_takes`). The property
    /// stays retired, its count given up, as a plain drop of the handle leaves it.
    JoinedByLaunched,
}

/// What a take (`Worker::take`) gets once its property settles: the value, moved out; a handle counted again
/// (when it asked for one back); or no: referenced, or refused (see `Settled`).
#[derive(Debug)]
pub(crate) enum Taken<T> {
    Value(T),
    GivenBack(Handle<T>),
    Referenced,
    JoinedByLaunched,
}

/// A take waiting for its retired property to settle (`Worker::retire_to`).
struct Take {
    taker: Taker,
    /// The fiber of this worker that waits for the verdict, and its serial (ids are reused): a join may make it
    /// wait for good (`Worker::refuse_joined_takes`). `None` for a plain thread, or a fiber of another worker
    /// (a join chain is followed on one worker only).
    fiber: Option<(usize, u64)>,
}

impl std::fmt::Debug for Retired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retired")
            .field("group", &self.group)
            .field("headers", &self.headers.len())
            .finish_non_exhaustive()
    }
}

/// Idle rounds a worker spins before it sleeps in `epoll_wait`, while its fibers wait on sockets: a server
/// shares the machine with its clients, and a socket wakes the worker anyway (a request too).
const IO_SPIN: u32 = 16;

/// While count changes come by the count mail, the loop looks for more every `POLL_EVERY` rounds, and stops
/// after `IDLE_POLLS` looks in a row found none (then the next change comes with mail). Looking every round
/// took the map's lock from under a plain thread that cloned and dropped without pause (a pair of those cost
/// 430-550 ns; 70-85 ns so, where the mailbox took 100 ns and memory without bound).
const POLL_EVERY: u32 = 16;
const IDLE_POLLS: u32 = 8;

/// A worker serving more channels than this stops looking every round at those quiet for `QUIET_ROUNDS`
/// rounds (`protocol::cold`): each look is a load of another client's line, and with a thousand idle client
/// threads alive a blocking `apply` from one more thread took 5.9 us instead of 0.5 (a look per channel per
/// round), and one thread's `apply_then` half its rate. With as few as this, looking costs less than the
/// doorbell's ring would add to a quiet client's next call, so small programs never see it.
const COOL_ABOVE: usize = 16;

/// Rounds without a batch after which a channel is quiet, and rounds between two sweeps for quiet channels
/// (the sweep that cools any pays for a `membarrier`, a few microseconds: at most once per this many rounds,
/// 0.3 ms of an idle worker's spinning, more of a busy one's).
const QUIET_ROUNDS: u64 = 4096;

/// Rounds of its loop after which a worker wakes the tasks still on its relay itself (`trustee::relay`):
/// 2-3 us when it is idle, up to a few hundred when it is busy; an executor polls the task woken first, which
/// drains them, well within that when it is running.
const RELAY_PATIENCE: u32 = 32;

/// The most records whose room the loop keeps for the next take of its mail: a take of a larger backlog
/// gives its vector back. 1,024 records of 64 bytes stay below glibc's threshold for a mapping of their own
/// (128 KiB): 4,096 kept one mapping more for good after a burst of spawns, which
/// `adversarial_stacks`' count of mappings caught.
const SPARE_MAIL: usize = 1024;

pub(crate) struct Worker {
    pub(crate) shared: &'static TrusteeShared,
    pub(crate) registry: RefCell<Registry>,
    /// This worker as a client of other trustees; shared by its fibers so their requests batch together.
    pub(crate) client: RefCell<Client>,
    pub(crate) scheduler: Scheduler,
    /// Inline applies since the running fiber last yielded (see `fiber::after_inline_apply`).
    pub(crate) inline_burst: Cell<u32>,
    /// Socket operations of its fibers that found their socket ready since the last yield for them (see
    /// `fiber::after_ready_io`).
    pub(crate) io_burst: Cell<u32>,
    /// The share of the trustee its own fibers get (see `fairness`).
    pub(crate) fairness: Fairness,
    /// The fiber running now (its yielder and id), set by the fiber each time it is resumed.
    pub(crate) fiber: Cell<Option<(*const Yielder, usize)>>,
    /// Fibers suspended while they unwind (see `unwinding_here`).
    pub(crate) suspended_unwinding: Cell<u32>,
    /// The sockets its fibers wait on; the worker sleeps in it.
    pub(crate) reactor: Reactor,
    parker: Arc<Parker>,
    /// The channels it serves: the first `hot` it looks at every round, the others are cold (see
    /// `cool_quiet`, `answer_doorbell`).
    served: RefCell<Vec<Served>>,
    hot: Cell<usize>,
    /// Rounds of the loop so far.
    rounds: Cell<u64>,
    /// Mail taken out of turn (by `register_channels`) and left for the loop's next `read_mail`, oldest first.
    postponed: RefCell<Vec<Mail>>,
    /// The vector the last mail came in, emptied: the next take fills it (see `SPARE_MAIL`).
    spare_mail: RefCell<Vec<Mail>>,
    /// Mail taken but held until a sender writes its link (`trustee::shared::HeldMail`); the loop keeps
    /// serving meanwhile, and does not sleep.
    held: RefCell<Option<HeldMail>>,
    /// Mail postponed so far, and postponed mail run so far: a retired group waits only for what was
    /// postponed before it (mail postponed later, under a steady load, would otherwise hold every drop off).
    postponed_in: Cell<u64>,
    postponed_run: Cell<u64>,
    /// Count changes came by the count mail lately: the loop looks at it (see `POLL_EVERY`).
    counting: Cell<bool>,
    idle_polls: Cell<u32>,
    poll_every: Cell<u32>,
    /// Oldest first: a group's waits are over only once the older groups' are (batch numbers only grow).
    retired: RefCell<VecDeque<Retired>>,
    /// The takes waiting for retired properties (`retire_to`).
    takers: RefCell<HashMap<*mut Header, Take>>,
    /// The last retired group's number.
    retired_groups: Cell<u64>,
    /// Entries in `retired`, and those among them whose property was retired again since (see
    /// `compact_retired`).
    retired_entries: Cell<usize>,
    stale_entries: Cell<usize>,
    /// Mailed requests that had to wait (an `apply_async` on a latch that launched fibers share), retried
    /// each turn.
    deferred: RefCell<Vec<(local::Paused, *mut Header)>>,
    /// Whom the continuation running now on the scheduler counts for (see `issuer`).
    continuing: RefCell<Option<Rc<Pending>>>,
    /// Requests of this worker to its own trustee that wait in its channel to itself (see `call::ToSelf`):
    /// while there are any, its fibers' applies to its own properties go behind them, not inline.
    pub(crate) to_self: Cell<usize>,
}

/// The cores this process may run on (its affinity mask), in order.
pub(crate) fn allowed_cores() -> Vec<usize> {
    // SAFETY: `set` is a plain bit mask; `sched_getaffinity` writes at most `size_of` bytes of it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        set
    };
    // SAFETY: reading bits of an initialised mask, below its size in bits.
    (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
}

/// Pins the calling thread to `core` (one of `allowed_cores`). A refusal leaves the thread unpinned: pinning
/// is a placement hint, not a condition of correctness.
pub(crate) fn pin_to_core(core: usize) {
    // SAFETY: as in `allowed_cores`; `core` is below CPU_SETSIZE since it came from `allowed_cores`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The body of a worker thread; returns after shutdown.
pub(crate) fn run(shared: &'static TrusteeShared, stacks: &'static StackPool, (reactor, waker): (Reactor, mio::Waker)) {
    #[cfg(not(miri))]
    let _signals = WorkerSignals::enter(shared.index());
    let parker = Arc::new(Parker::polling(waker));
    // Leaked: fibers and closures on this thread refer to it as 'static. One per worker, for the process.
    let worker: &'static Worker = Box::leak(Box::new(Worker {
        shared,
        registry: RefCell::default(),
        client: RefCell::new(Client::new(Some(parker.clone()))),
        scheduler: Scheduler::new(stacks, &shared.metrics),
        inline_burst: Cell::new(0),
        io_burst: Cell::new(0),
        fairness: Fairness::default(),
        fiber: Cell::new(None),
        suspended_unwinding: Cell::new(0),
        reactor,
        parker: parker.clone(),
        served: RefCell::default(),
        hot: Cell::new(0),
        rounds: Cell::new(0),
        postponed: RefCell::default(),
        spare_mail: RefCell::default(),
        held: RefCell::default(),
        postponed_in: Cell::new(0),
        postponed_run: Cell::new(0),
        counting: Cell::new(false),
        idle_polls: Cell::new(0),
        poll_every: Cell::new(0),
        retired: RefCell::default(),
        takers: RefCell::default(),
        retired_groups: Cell::new(0),
        retired_entries: Cell::new(0),
        stale_entries: Cell::new(0),
        deferred: RefCell::default(),
        continuing: RefCell::default(),
        to_self: Cell::new(0),
    }));
    context::set_worker(Some(worker));
    shared.set_parker(parker);
    worker.run();
    context::set_worker(None);
}

impl Worker {
    /// Proof that this is this worker's trustee's thread, for the property handles (`Handle::local`).
    #[inline(always)]
    pub(crate) fn on_trustee(&self) -> OnTrustee {
        // SAFETY: a `&Worker` is had only on its own thread: the worker thread-local hands it out there
        // (`context::worker`), and `Worker` is `!Sync` (its `RefCell`s), so no reference to it crosses threads.
        unsafe { OnTrustee::new(self.shared) }
    }

    /// Entrusts a fresh property to this worker's trustee, on its thread: registered at once.
    pub(crate) fn adopt_fresh<T>(&self, fresh: Fresh<T>) -> Handle<T> {
        let property = fresh.into_raw();
        // SAFETY: a fresh property, not registered, now this trustee's, on its thread.
        unsafe { self.registry.borrow_mut().adopt(property.as_ptr().cast()) };
        // SAFETY: live and registered with this trustee; the one count is the handle's.
        unsafe { Handle::from_raw(property, self.shared) }
    }

    /// Registers a property entrusted from another thread (`Fresh::entrust_to`), as its registration record
    /// runs on this trustee.
    pub(crate) fn adopt(&self, registration: Registration) {
        assert!(
            std::ptr::eq(registration.shared(), self.shared),
            "a registration runs on its own trustee"
        );
        let h = registration.into_header();
        // SAFETY: a fresh property of this trustee (checked above), on its thread, registered only by its one
        // registration: this.
        unsafe { self.registry.borrow_mut().adopt(h) };
    }

    /// On the property's trustee (this worker's): gives up `handle`'s count and retires the property to
    /// `taker` (`Trust::try_unwrap`/`into_inner`): once settled, the value if no handle is counted then, else
    /// (with `give_back`) a handle counted again, or nothing; or the refusal (`Settled::JoinedByLaunched`).
    /// `fiber`: the fiber of this worker that waits for the verdict, if the take is its own, inline.
    pub(crate) fn take<T: 'static>(
        &self,
        handle: Handle<T>,
        give_back: bool,
        fiber: Option<usize>,
        taker: impl FnOnce(Taken<T>) + 'static,
    ) {
        let shared = self.shared;
        // Whether the count reached zero is decided at settlement, below.
        let p = handle.give_up(self.on_trustee());
        let h: *mut Header = p.as_ptr().cast();
        let settle = move |settled: Settled| match settled {
            // SAFETY: the worker unregistered it, unreferenced and settled: nobody uses it again.
            Settled::Unreferenced => taker(Taken::Value(unsafe { property::take_unregistered(p.as_ptr()) })),
            Settled::Referenced if give_back => {
                // SAFETY: still registered (referenced), on its trustee: the new count is the handle's.
                let handle = unsafe {
                    property::incref(h);
                    Handle::from_raw(p, shared)
                };
                taker(Taken::GivenBack(handle));
            }
            Settled::Referenced => taker(Taken::Referenced),
            Settled::JoinedByLaunched => taker(Taken::JoinedByLaunched),
        };
        self.retire_to(h, Box::new(settle), fiber);
    }

    /// Whom an `apply_then` or `launch_then` issued on this worker counts for (whose `wait_pending` waits for
    /// it): the running fiber; outside a fiber, the issuer of the continuation running now, so that a chain
    /// of them counts for the fiber (or thread) that started it; inside a delegated closure (even one a fiber
    /// or a continuation applies inline), or else, the worker itself, for whom nothing waits.
    pub(crate) fn issuer(&self) -> Rc<Pending> {
        if !self.in_delegated() {
            if let Some((_, id)) = self.fiber.get() {
                return self.scheduler.pending_of(id);
            }
            if let Some(owner) = &*self.continuing.borrow() {
                return owner.clone();
            }
        }
        self.client.borrow().pending.clone()
    }

    /// Whom a request to this worker's own trustee counts for in issue order (see `call::ToSelf`): the
    /// running fiber, even inside a closure it applies inline (which runs within its `apply`); else the
    /// worker itself. Not a continuation's chain: a continuation runs apart from the fiber that issued the
    /// chain, which need not wait for its requests (and must not: one may wait for that fiber, on a latch
    /// the fiber was launched on).
    pub(crate) fn to_self_issuer(&self) -> Rc<Pending> {
        match self.fiber.get() {
            Some((_, id)) => self.scheduler.pending_of(id),
            None => self.client.borrow().pending.clone(),
        }
    }

    /// True when the code running on this worker unwinds (or runs the panic hook). std counts panics per
    /// thread, so `thread::panicking()` is also true for every fiber of the worker while one is suspended
    /// mid-unwind (a `sleep` in a destructor during a panic): those are counted (`fiber::suspend_on`), and
    /// while one is, the others are taken for not unwinding. (Two fibers of one worker unwinding at once, one
    /// of them suspended, are beyond what std lets us tell apart: the other one is then taken for not
    /// unwinding, and may yield.)
    #[inline]
    pub(crate) fn unwinding_here(&self) -> bool {
        std::thread::panicking() && self.suspended_unwinding.get() == 0
    }

    /// True when the running fiber, or a closure it applies inline (which runs within its `apply`), is one
    /// launched on `property` (a `Trust<Latch<T>>`'s): a request that waits for the launched fibers to end
    /// would wait for itself.
    pub(crate) fn fiber_launched_on(&self, property: usize) -> bool {
        self.fiber
            .get()
            .is_some_and(|(_, id)| self.scheduler.is_launched_on(id, property))
    }

    /// True when a continuation of the chain of a fiber launched on `property` runs now (on the scheduler).
    pub(crate) fn chain_launched_on(&self, property: usize) -> bool {
        self.fiber.get().is_none()
            && self
                .continuing
                .borrow()
                .as_ref()
                .and_then(|owner| self.scheduler.fiber_of(owner))
                .is_some_and(|id| self.scheduler.is_launched_on(id, property))
    }

    /// True when the code running now acts for a fiber launched on `property`: that fiber, a closure it
    /// applies inline, or a continuation of its chain.
    pub(crate) fn runs_launched_on(&self, property: usize) -> bool {
        self.fiber_launched_on(property) || self.chain_launched_on(property)
    }

    /// True when the running fiber is joined, directly or through fibers joining each other on this worker, by
    /// a fiber launched on `property`: a request of it that waits for the launched fibers to end would wait for
    /// its joiner, which waits for it. Looked at only on the paths that would wait so.
    pub(crate) fn joined_by_launched_on(&self, property: usize) -> bool {
        self.fiber
            .get()
            .is_some_and(|(_, id)| self.scheduler.joined_by_launched_on(id, property))
    }

    /// Runs `f` outside the chain of the continuation running now: what it issues counts for the worker.
    pub(crate) fn outside_chain<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore<'a>(&'a RefCell<Option<Rc<Pending>>>, Option<Rc<Pending>>);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                *self.0.borrow_mut() = self.1.take();
            }
        }
        let _restore = Restore(&self.continuing, self.continuing.take());
        f()
    }

    /// True when a fiber runs, outside a delegated closure: the caller may suspend.
    pub(crate) fn in_fiber(&self) -> bool {
        self.fiber.get().is_some() && !self.in_delegated()
    }

    /// True inside a delegated closure (or a property's destructor) on this worker: it must not block.
    #[inline]
    pub(crate) fn in_delegated(&self) -> bool {
        local::in_delegated()
    }

    fn run(&self) {
        self.shared.metrics.start();
        let mut backoff = Backoff::worker();
        let mut relay_rounds = 0;
        loop {
            let round = self.rounds.get() + 1;
            self.rounds.set(round);
            if round.is_multiple_of(QUIET_ROUNDS) {
                self.cool_quiet();
            }
            let mut busy = self.read_mail();
            if self.shared.is_closing() {
                if shared::in_forked_child() {
                    forked_worker_loop();
                }
                return self.close();
            }
            busy |= self.run_deferred();
            busy |= self.serve();
            busy |= self.collect_answers();
            // Sockets are polled after a busy turn (or a sleep), not in the idle rounds: an idle worker spinning
            // for delegation requests must not make a system call per round, and it sleeps in `epoll_wait`.
            if backoff.rounds() == 0 {
                busy |= self.reactor.turn(&self.scheduler);
            }
            self.fairness.new_turn();
            for id in self.fairness.release() {
                self.scheduler.make_ready(id);
            }
            busy |= self.scheduler.run_ready(
                &self.fiber,
                || self.fairness.turn_open(),
                || {
                    self.serve();
                    // Fibers doing socket I/O take microseconds each: their requests go out, and their answers
                    // come in, without waiting for the turn's end. Fibers that only compute batch better
                    // whole turns (measured: `counters-1024` loses a quarter when they do this too).
                    if self.reactor.is_waiting() {
                        self.collect_answers();
                        self.flush();
                    }
                },
            );
            busy |= self.flush();
            // A value dropped here may hold the last handle of another (a chain of them): the next round drops
            // that one at once, not after a back-off.
            busy |= self.drop_retired();
            // Wakers that no task's poll drained within a few rounds: nobody waits on another executor's turn
            // for long, whether this worker is idle or not (`trustee::relay`).
            if self.shared.relay.is_pending() {
                relay_rounds += 1;
                if relay_rounds >= RELAY_PATIENCE {
                    self.shared.relay.drain();
                    relay_rounds = 0;
                }
            } else {
                relay_rounds = 0;
            }
            if busy {
                backoff.reset();
            } else if backoff.snooze()
                || (self.reactor.is_waiting() && backoff.rounds() > IO_SPIN)
            {
                // The timeout is a safety net: whoever gives the worker work wakes it. A park is counted only
                // if the last look finds no work (review 58: counted before it, some parks never slept).
                let _parked = self.shared.metrics.park();
                self.parker.sleep_unless(
                    || self.has_work(),
                    || {
                        self.shared.metrics.slept();
                        self.reactor.sleep(&self.scheduler, Duration::from_millis(100));
                    },
                );
                backoff.reset();
            }
        }
    }

    fn read_mail(&self) -> bool {
        let counted = self.counting.get() && self.poll_due() && self.poll_counts();
        let mut held = self.held.borrow_mut();
        let mut mail = self.shared.take_mail_or_hold(&mut held, self.spare_mail.take());
        let holding = held.is_some();
        drop(held);
        let postponed = self.postponed.take();
        let postponed_len = postponed.len() as u64;
        if postponed_len > 0 {
            mail.splice(0..0, postponed);
        }
        if mail.is_empty() {
            self.spare_mail.replace(mail);
            return counted | holding;
        }
        // The answers to `apply_async`s wake their tasks through the relay (`trustee::relay`).
        self.shared.relay.collect(|| self.run_mail(&mut mail));
        if mail.capacity() <= SPARE_MAIL {
            self.spare_mail.replace(mail);
        }
        self.postponed_run.set(self.postponed_run.get() + postponed_len);
        true
    }

    /// Runs `mail`, leaving it empty.
    fn run_mail(&self, mail: &mut Vec<Mail>) {
        // Channels first: count changes netted in the count mail may come from a client whose channel's
        // registration is later in this mail, and a property they retire must wait for that channel too
        // (`retire` registers only the channels still in the mailbox).
        for m in mail.extract_if(.., |m| matches!(m, Mail::Register(_))) {
            if let Mail::Register(channel) = m {
                self.serve_channel(channel);
            }
        }
        for m in mail.drain(..) {
            match m {
                Mail::Register(channel) => self.serve_channel(channel),
                Mail::Run(f) => {
                    self.shared.metrics.mailed(1);
                    self.run_mailed(|| f.run())
                }
                Mail::Spawn(stack, job, handle) => self.scheduler.start(stack, job, handle),
                Mail::Wake(id) => self.scheduler.make_ready(id),
                Mail::Counts => {
                    // Its sender set no flag: the changes are taken under the lock at once, and the next ones
                    // looked for every `POLL_EVERY` rounds.
                    if let Some(counted) = self.shared.poll_counts(true) {
                        self.counting.set(true);
                        self.idle_polls.set(0);
                        self.count_all(counted);
                    }
                }
                Mail::Counted(counted) => self.count_all(counted),
            }
        }
    }

    /// True every `POLL_EVERY` calls.
    fn poll_due(&self) -> bool {
        let r = self.poll_every.get().wrapping_add(1);
        self.poll_every.set(r);
        r.is_multiple_of(POLL_EVERY)
    }

    /// Counts the changes in the count mail; false when there were none.
    fn poll_counts(&self) -> bool {
        let stop = self.idle_polls.get() >= IDLE_POLLS;
        match self.shared.poll_counts(stop) {
            Some(counted) => {
                self.idle_polls.set(0);
                self.count_all(counted);
                true
            }
            None if stop => {
                self.idle_polls.set(0);
                self.counting.set(false);
                false
            }
            None => {
                self.idle_polls.set(self.idle_polls.get() + 1);
                false
            }
        }
    }

    fn count_all(&self, counted: Counted) {
        self.shared.metrics.mailed(counted.changes);
        for (h, delta) in counted.deltas {
            // SAFETY: each was counted by a client that held a handle (see `call::count`): the property is live
            // until the change is counted, on this trustee, this thread.
            unsafe { self.count(h.get(), delta) };
        }
    }

    /// A new channel, looked at every round (the first cold one, if any, moves to the end).
    fn serve_channel(&self, channel: Arc<Channel>) {
        let mut served = self.served.borrow_mut();
        served.push(Served {
            channel,
            served: 0,
            busy_at: self.rounds.get(),
            paused: None,
        });
        let (hot, last) = (self.hot.get(), served.len() - 1);
        served.swap(hot, last);
        self.hot.set(hot + 1);
        self.count_channels(&served);
    }

    /// Publishes the number of channels served, and of cold ones, in the metrics.
    fn count_channels(&self, served: &[Served]) {
        self.shared.metrics.set_channels(served.len(), served.len() - self.hot.get());
    }

    /// Stops looking every round at the channels quiet for `QUIET_ROUNDS` rounds, when it serves more than
    /// `COOL_ABOVE`: each is marked cold, and its client rings the doorbell when it publishes again. A
    /// batch published before its client could see the mark is looked for once more after the heavy fence
    /// (the handshake of `protocol::cold`). A channel with a paused batch stays: its batch is retried each
    /// round.
    fn cool_quiet(&self) {
        let mut served = self.served.borrow_mut();
        if served.len() <= COOL_ABOVE {
            return;
        }
        let before = self.hot.get();
        let now = self.rounds.get();
        let (mut hot, mut i) = (before, 0);
        while i < hot {
            let s = &served[i];
            // Not one announcing unpublished records: a retire must read its bound (see `retire_with`).
            let quiet = s.paused.is_none()
                && now - s.busy_at >= QUIET_ROUNDS
                && !s.channel.closed.load(Ordering::Relaxed)
                && !s.channel.linger.lingering.load(Ordering::Relaxed)
                && s.channel.slots.pending(s.served).is_none();
            if quiet {
                s.channel.cold.cool();
                hot -= 1;
                // The entry swapped in is looked at next.
                served.swap(i, hot);
            } else {
                i += 1;
            }
        }
        if hot == before {
            return;
        }
        self.parker.fence_heavy();
        self.hot.set(hot);
        self.warm_pending(&mut served, hot..before);
    }

    /// Takes the doorbell's ring, if any, and looks at every cold channel: those with a batch, announcing
    /// records, or closed are looked at every round again.
    #[inline]
    fn answer_doorbell(&self) {
        // A load first, the swap (a write) only when rung. A ring that happened before the caller's reason to
        // look (a decrement, in `retire_with`) is seen by the load, unless answered since.
        if self.shared.doorbell.is_rung() {
            self.answer_ring();
        }
    }

    #[cold]
    #[inline(never)]
    fn answer_ring(&self) {
        if !self.shared.doorbell.answer() {
            return;
        }
        let mut served = self.served.borrow_mut();
        let len = served.len();
        self.warm_pending(&mut served, self.hot.get()..len);
    }

    /// Warms the cold channels in `range` (all past `hot`) that have a batch pending, announce records not yet
    /// published, or are closed.
    fn warm_pending(&self, served: &mut [Served], range: std::ops::Range<usize>) {
        let mut hot = self.hot.get();
        debug_assert!(hot <= range.start);
        for i in range {
            let s = &mut served[i];
            if s.channel.slots.pending(s.served).is_some()
                || s.channel.linger.lingering.load(Ordering::Acquire)
                || s.channel.closed.load(Ordering::Acquire)
            {
                s.channel.cold.warm();
                s.busy_at = self.rounds.get();
                // Position `hot` holds a cold channel looked at already (or this one).
                served.swap(i, hot);
                hot += 1;
            }
        }
        self.hot.set(hot);
        self.count_channels(served);
    }

    /// Serves the channels registered in the mail so far, and postpones the rest of the mail to the loop's next
    /// `read_mail`. For `retire`, which runs wherever a last handle is dropped on this worker: inside a
    /// delegated closure, or in a fiber, on its small stack. Running mailed requests there would nest them in
    /// that closure (where they find its property borrowed) or on that stack.
    fn register_channels(&self) {
        let mut postponed = self.postponed.borrow_mut();
        // Mail held by the loop is older than what the mailbox has now: waited for, and taken first.
        let held = self.held.take().map(HeldMail::into_mail).unwrap_or_default();
        for m in held.into_iter().chain(self.shared.take_mail()) {
            match m {
                Mail::Register(channel) => self.serve_channel(channel),
                other => {
                    postponed.push(other);
                    self.postponed_in.set(self.postponed_in.get() + 1);
                }
            }
        }
    }

    /// `register_channels`, and the count mail taken and postponed too: a change can be in it before its
    /// announcement is in the mailbox (its sender about to link it), and a retire must wait for it.
    fn take_all_mail(&self) {
        self.register_channels();
        let counted = self.shared.take_counts();
        if !counted.deltas.is_empty() {
            self.postponed.borrow_mut().push(Mail::Counted(counted));
            self.postponed_in.set(self.postponed_in.get() + 1);
        } else if counted.changes > 0 {
            self.shared.metrics.mailed(counted.changes);
        }
    }

    /// Runs a request that came by mail; one that must wait is retried in later turns (it is in no batch to
    /// pause).
    fn run_mailed(&self, f: impl FnOnce()) {
        f();
        shared::end_if_forked();
        if let Some(waiting) = local::take_paused() {
            self.deferred.borrow_mut().push(waiting);
        }
    }

    /// Retries the mailed requests that had to wait.
    fn run_deferred(&self) -> bool {
        if self.deferred.borrow().is_empty() {
            return false;
        }
        let deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        let before = deferred.len();
        for (f, _) in deferred {
            self.run_mailed(f);
        }
        // Busy only if one ran: the rest wait for launched fibers of this worker, whose end is a busy round
        // of its own, so an idle worker may sleep meanwhile.
        self.deferred.borrow().len() < before
    }

    /// Trustee side: runs one pending batch per channel and answers it (a paused batch resumes where it
    /// stopped, once its waiting record can run); forgets channels whose client is gone.
    fn serve(&self) -> bool {
        self.answer_doorbell();
        let mut busy = false;
        let mut closed = false;
        // The cold channels are not looked at: their clients ring.
        let n = self.hot.get();
        for i in 0..n {
            let (channel, served, paused) = {
                let s = &mut self.served.borrow_mut()[i];
                // A paused record is not run again while launched fibers still share its property: it would
                // only pause again (the check it makes first). With a thousand batches paused so, running each
                // again every round (a boxed closure, and a new one when it pauses) took most of a core.
                let still_launched = |p: &Paused| {
                    // SAFETY: a paused record's property stays live until the record has run
                    // (`drop_retired` keeps it), and this is its trustee.
                    !p.on.is_null() && unsafe { property::launched(p.on) }
                };
                if s.paused.as_ref().is_some_and(still_launched) {
                    continue;
                }
                (Arc::as_ptr(&s.channel), s.served, s.paused.take())
            };
            // SAFETY: `served` keeps the channel alive, and only this function removes entries, after the loop.
            let channel = unsafe { &*channel };
            let (seq, from) = match paused {
                Some(p) => {
                    (p.record)();
                    if let Some((record, on)) = local::take_paused() {
                        self.served.borrow_mut()[i].paused = Some(Paused { record, on, ..p });
                        continue;
                    }
                    (p.seq, p.offset)
                }
                None => match channel.slots.pending(served) {
                    Some(seq) => (seq, Cursor::default()),
                    None => {
                        // Re-checked after `closed`: a last batch published before closing is still served.
                        closed |= channel.closed.load(Ordering::Acquire)
                            && channel.slots.pending(served).is_none();
                        continue;
                    }
                },
            };
            busy = true;
            // SAFETY: we are the channel's trustee, `seq` is pending, and `from` is where its run stopped.
            let (stopped, ran) = unsafe { channel.slots.run_batch(seq, from) };
            self.shared.metrics.ran(ran as u64, stopped.is_none());
            self.fairness.served(ran);
            match stopped {
                Some(offset) => {
                    let (record, on) = local::take_paused().expect("paused by a waiting record");
                    // SAFETY: as above: `seq` stays pending (unanswered) while it is paused.
                    let last = unsafe { channel.slots.ends_at(seq, offset) };
                    self.served.borrow_mut()[i].paused = Some(Paused {
                        seq,
                        offset,
                        record,
                        on,
                        last,
                    });
                }
                None => {
                    channel.slots.answer(seq);
                    if let Some(p) = &channel.parker {
                        p.wake();
                    }
                    let s = &mut self.served.borrow_mut()[i];
                    s.served = seq;
                    s.busy_at = self.rounds.get();
                }
            }
        }
        if closed {
            // Only hot channels are found closed here (a cold one is warmed by its client's ring first), and
            // `retain` keeps the order: the hot ones stay in front.
            let (hot, mut i, mut gone) = (self.hot.get(), 0, 0);
            self.served.borrow_mut().retain(|s| {
                let keep = s.paused.is_some()
                    || !(s.channel.closed.load(Ordering::Acquire)
                        && s.channel.slots.pending(s.served).is_none());
                gone += usize::from(!keep && i < hot);
                i += 1;
                keep
            });
            self.hot.set(hot - gone);
            self.count_channels(&self.served.borrow());
        }
        busy
    }

    /// A decrement left the count of `h` at zero or below. Requests for `h`, and count changes, sent before it
    /// may still be on their way on other channels: a handle was alive when its request (or a clone's
    /// increment) was issued, then moved to another client whose decrement overtook it. Each of them was
    /// published, announced by its channel (`lingering` with the bound `through`), or put in the mail or the
    /// count mail before the handle escaped, hence before the decrement; so the batch numbers read now, and
    /// the mail taken now, bound every one of them. The value is dropped once those are served, no closure
    /// runs on it, and the count is zero then.
    ///
    /// Every decrement that leaves the count at zero or below retires it again, with the bounds of that
    /// moment, even one that finds it retired already. So when it settles at zero, only increments were
    /// counted since the last such decrement: every handle counted before it was dropped before it, and no
    /// handle is left to make another. (Retiring only at the step from one to zero let a clone's decrement
    /// that overtook its own increment, both sent after that step, settle a zero the increment belied.)
    ///
    /// A channel whose batch is paused (a request on a latch that launched fibers share, see `trustee::job`)
    /// is not waited for when the paused record is the last of the bound's batch: everything up to the bound
    /// has run but that record, and it can refer to this property in no way the above does not cover. It is a
    /// request on the property it waits on, which stays until it has run (`drop_retired` keeps it, as it keeps
    /// a deferred request's); it carries no count change (those are records of their own, which never pause);
    /// and what its closure captures is what a client's stack holds while it waits: live handles, which the
    /// count shows as it shows every live handle (the argument above does not ask where a handle is kept), and
    /// which the closure can use only while they live. Records after it, or in a later batch up to the bound,
    /// could be anything (their kinds are not known here): those are waited for, as is a paused record that
    /// does not say what it waits on. So a plain thread's blocking call on a busy latch, always the last record
    /// of its batch, holds back no other property's drop.
    pub(crate) fn retire(&self, h: *mut Header) {
        self.retire_with(h, None);
    }

    /// `retire`, for a caller that takes the value instead of dropping it (`Trust::try_unwrap`/`into_inner`,
    /// whose handle's count it has already given up): once settled as `retire` says, `taker` gets the
    /// property if its count is zero then, else is told no. A taker already waiting on `h` is told no at once:
    /// the later call is the last. `fiber`: the fiber of this worker that waits for the verdict, if one does
    /// (a join may yet refuse its take: `refuse_joined_takes`).
    pub(crate) fn retire_to(&self, h: *mut Header, taker: Taker, fiber: Option<usize>) {
        let fiber = fiber.map(|id| (id, self.scheduler.serial_of(id)));
        self.retire_with(h, Some(Take { taker, fiber }));
    }

    /// A fiber of this worker now joins another one here: a take by a fiber of this worker that waits for its
    /// latch to settle (which waits for the latch's launched fibers to end) may now be joined, through joins on
    /// this worker, by a fiber launched on that latch, which waits for it. Those takes are refused now: the
    /// taker is told so (its fiber wakes and panics) and forgotten, and the property stays retired, as a plain
    /// drop of the handle leaves it. The others wait on. Only on a join that suspends; one look at an empty map
    /// while no take waits.
    pub(crate) fn refuse_joined_takes(&self) {
        let refused: Vec<Take> = {
            let mut takers = self.takers.borrow_mut();
            if takers.is_empty() {
                return;
            }
            let scheduler = &self.scheduler;
            takers
                .extract_if(|&h, take| {
                    take.fiber.is_some_and(|(id, serial)| {
                        scheduler.serial_of(id) == serial && scheduler.joined_by_launched_on(id, h as usize)
                    })
                })
                .map(|(_, take)| take)
                .collect()
        };
        // Out of the borrow: a taker completes a promise, which mails a wake-up (no take is looked at again).
        for take in refused {
            (take.taker)(Settled::JoinedByLaunched);
        }
    }

    fn retire_with(&self, h: *mut Header, taker: Option<Take>) {
        // A channel registered, or a count change mailed, before the escape must be waited for too.
        self.take_all_mail();
        // Only the channels looked at every round are read (a thousand cold ones made each drop microseconds):
        // a client that published or announced records on a cold channel rang before the handle could escape,
        // so its channel is warm once the doorbell is answered (`protocol::cold`), and a cold channel has
        // nothing pending, nothing announced.
        self.answer_doorbell();
        let hot = self.hot.get();
        let waits: Vec<_> = self.served.borrow()[..hot]
            .iter()
            .filter_map(|s| {
                let need = if s.channel.linger.lingering.load(Ordering::Acquire) {
                    s.channel.linger.through.load(Ordering::Relaxed)
                } else {
                    s.channel.slots.published()
                };
                (need != s.served).then(|| (s.channel.clone(), need))
            })
            .collect();
        let mail = self.postponed_in.get();
        let mut retired = self.retired.borrow_mut();
        // SAFETY: `h` is live (its retirement is what drops it), on its trustee: this thread.
        let latest = unsafe { property::retiring(h) };
        let group = match retired.back_mut() {
            Some(last) if last.waits_for(&waits, mail) => {
                if latest != last.group {
                    last.headers.push(h);
                }
                last.group
            }
            _ => {
                let group = self.retired_groups.get() + 1;
                self.retired_groups.set(group);
                retired.push_back(Retired {
                    group,
                    waits,
                    mail,
                    headers: vec![h],
                });
                group
            }
        };
        if latest != group {
            self.retired_entries.set(self.retired_entries.get() + 1);
            if latest != 0 {
                // Retired again: it waits for the later group; its entry in an earlier one is left behind,
                // skipped there.
                self.stale_entries.set(self.stale_entries.get() + 1);
            }
        }
        // SAFETY: as above.
        unsafe { property::set_retiring(h, group) };
        drop(retired);
        self.compact_retired();
        let displaced = taker.and_then(|t| self.takers.borrow_mut().insert(h, t));
        if let Some(displaced) = displaced {
            (displaced.taker)(Settled::Referenced);
        }
    }

    /// Counts `delta` handles of `h` in or out; a count out that leaves zero or less retires the property.
    ///
    /// # Safety
    /// `h` is a live property of this worker's trustee, this is its thread, and a count out is of handles the
    /// caller owned.
    pub(crate) unsafe fn count(&self, h: *mut Header, delta: isize) {
        // SAFETY: by the contract.
        if unsafe { property::add_refs(h, delta) } {
            self.retire(h);
        }
    }

    /// Removes the entries of properties retired again since, once they are most of `retired`: a live value
    /// whose count dips to zero again and again (a clone's decrement overtaking its increment) while a thread
    /// keeps its requests unpublished would otherwise leave an entry, and often a group, per dip.
    fn compact_retired(&self) {
        let stale = self.stale_entries.get();
        if stale < 64 || 2 * stale < self.retired_entries.get() {
            return;
        }
        self.retired.borrow_mut().retain_mut(|group| {
            // SAFETY: a property is dropped only by its latest group, and only after every earlier group has
            // been rid of its stale entries (`drop_retired` goes oldest first): each entry here is live.
            group.headers.retain(|&h| unsafe { property::retiring(h) } == group.group);
            !group.headers.is_empty()
        });
        self.retired_entries.set(self.retired_entries.get() - stale);
        self.stale_entries.set(0);
    }

    /// Drops retired properties whose possible requests have all been served; true if it settled any.
    fn drop_retired(&self) -> bool {
        // A postponed request may refer to a retired property: each group waits for the mail postponed before
        // it, below. A deferred one, or one that paused its batch, waits on its property, which stays (the
        // others need not wait for a deferred one, nor for a paused one that ends its batch: see `retire`).
        if self.retired.borrow().is_empty() {
            return false;
        }
        let mail_run = self.postponed_run.get();
        let mut ready: Vec<(*mut Header, bool, Option<Take>)> = {
            let served = self.served.borrow();
            // Served through `need`; or `need` is paused at its last record, which says what it waits on (see
            // `retire`); or drained: nothing unpublished and nothing pending on the channel now.
            let done = |(channel, need): &(Arc<Channel>, u32)| {
                served
                    .iter()
                    .find(|s| Arc::ptr_eq(&s.channel, channel))
                    .is_none_or(|s| {
                        s.served.wrapping_sub(*need) < u32::MAX / 2
                            || s.paused
                                .as_ref()
                                .is_some_and(|p| p.seq == *need && p.last && !p.on.is_null())
                            || (!s.channel.linger.lingering.load(Ordering::Acquire)
                                && s.channel.slots.pending(s.served).is_none())
                    })
            };
            let mut retired = self.retired.borrow_mut();
            let mut takers = self.takers.borrow_mut();
            let deferred = self.deferred.borrow();
            // A request that waits on its property, deferred or pausing its batch.
            let waited_on = |h: *mut Header| {
                deferred.iter().any(|&(_, on)| on == h)
                    || served.iter().any(|s| s.paused.as_ref().is_some_and(|p| p.on == h))
            };
            let mut ready = Vec::new();
            let mut i = 0;
            // Oldest first, up to the first group that must still wait: the groups after it wait for as much.
            // Each round then costs what it settles, not what waits (100,000 values retired behind a thread
            // that keeps its requests unpublished cost every round 100,000 checks).
            while let Some(group) = retired.get_mut(i) {
                if group.mail > mail_run || !group.waits.iter().all(done) {
                    break;
                }
                let number = group.group;
                group.headers.retain(|&h| {
                    // SAFETY: retired properties stay live until dropped below; an entry whose property was
                    // retired again is skipped here before the later group (its own) can drop it.
                    unsafe {
                        if (property::in_use(h) || waited_on(h)) && property::retiring(h) == number {
                            return true; // its closure, a launched fiber, or a waiting request is still on it
                        }
                        self.retired_entries.set(self.retired_entries.get() - 1);
                        if property::retiring(h) != number {
                            self.stale_entries.set(self.stale_entries.get() - 1);
                            return false;
                        }
                        property::set_retiring(h, 0);
                        let unreferenced = property::unreferenced(h);
                        let taker = takers.remove(&h);
                        if unreferenced || taker.is_some() {
                            ready.push((h, unreferenced, taker));
                        }
                    }
                    false
                });
                if group.headers.is_empty() {
                    retired.remove(i);
                } else {
                    i += 1;
                }
            }
            ready
        };
        let settled = !ready.is_empty();
        // Every verdict before any destructor: a value's `Drop` is user code, and may wait for a thread whose
        // `try_unwrap`/`into_inner` was settled in this same pass, its verdict decided already (review 86: both
        // hung while the destructor waited). The verdicts do not depend on the order (`unreferenced` was read
        // above, for each).
        ready.sort_by_key(|(_, _, taker)| taker.is_none()); // stable: retirement order within each kind
        for (h, unreferenced, taker) in ready {
            if unreferenced {
                context::with_registry(|r| r.remove(h));
            }
            match taker {
                Some(take) if unreferenced => (take.taker)(Settled::Unreferenced),
                Some(take) => (take.taker)(Settled::Referenced),
                // SAFETY: unregistered, unreferenced, and no request for it is left: this is the one drop.
                None => unsafe { property::drop_unregistered(h) },
            }
        }
        settled
    }

    /// Client side: fibers whose batch was answered, or that waited for room, become ready.
    /// Continuations whose results arrived run here, on the worker that issued them.
    fn collect_answers(&self) -> bool {
        let mut busy = false;
        for outbox in self.client.borrow_mut().outboxes() {
            // Answers taken in already, by a caller that could not wait (`Outbox::send_what_fits`), count too.
            let mut answered = !outbox.answered_fibers.is_empty();
            while outbox.poll() {
                answered = true;
            }
            if answered {
                // Fibers that waited for room go first: the answered ones would otherwise take all the room
                // again, and the same fibers would fill every batch while the others starve. The batch being
                // built was full if any waited: it goes out now, and their requests fill the next one.
                if !outbox.blocked.is_empty() {
                    outbox.flush();
                    outbox.take_blocked(|id| self.scheduler.make_ready(id));
                }
                for id in outbox.answered_fibers.drain(..) {
                    self.scheduler.make_ready(id);
                }
                busy = true;
            }
        }
        // Each continuation runs outside any borrow of the client: it may issue more.
        loop {
            let next = self.client.borrow_mut().next_ready();
            let Some(then) = next else {
                return busy;
            };
            let outer = self.continuing.replace(Some(then.owner()));
            // SAFETY: run right after it was taken; the client's borrow ended with the statement above.
            let fiber = unsafe { then.run() };
            shared::end_if_forked();
            self.continuing.replace(outer);
            if let Some(fiber) = fiber {
                self.scheduler.make_ready(fiber);
            }
            busy = true;
        }
    }

    fn flush(&self) -> bool {
        let mut busy = false;
        for outbox in self.client.borrow_mut().outboxes() {
            if outbox.flush() {
                busy = true;
                outbox.take_blocked(|id| self.scheduler.make_ready(id));
            }
        }
        busy
    }

    /// Checked after announcing sleep: anything that would have made the loop busy.
    pub(crate) fn has_work(&self) -> bool {
        self.shared.has_mail()
            || self.shared.doorbell.is_rung()
            || !self.postponed.borrow().is_empty()
            || self.held.borrow().is_some()
            || self.counting.get()
            || self.shared.is_closing()
            || self.scheduler.has_ready()
            || self.fairness.has_held()
            || self.client.borrow().has_ready()
            // A paused batch waits for launched fibers of this worker, not for anyone else (see `run_deferred`).
            // Cold channels are not looked at (a thousand of them made each look microseconds): their clients
            // ring the doorbell, and then wake the worker.
            || self.served.borrow()[..self.hot.get()]
                .iter()
                .any(|s| s.paused.is_none() && s.channel.slots.pending(s.served).is_some())
            || self
                .client
                .borrow_mut()
                .outboxes()
                .any(|o| o.poll_peek() || (o.has_unsent() && o.can_publish()))
    }

    /// Shutdown: answer what was already sent, drop every property still entrusted (exactly once), stop.
    fn close(&self) {
        // What was sent before the close began is answered, all of it: the mail, and every batch published (a
        // turn serves one per channel, and a channel may have two). A sender checks that the runtime runs
        // before it sends, so this ends.
        while self.read_mail() | self.serve() {}
        // Requests deferred behind launched fibers can never run (those fibers are abandoned below): dropped
        // unrun, as mail that comes after the close is, so that an `apply_async` among them ends with the
        // shutdown panic instead of waiting forever.
        let deferred = self.deferred.take();
        let mut panicked = deferred.into_iter().fold(false, |p, (d, _)| p | unwind::drop_quietly(d));
        // So are the rest of the batches paused behind them (never answered: their results are not all
        // written). Each channel then says which batch was the last taken, so that its client drops the
        // records of later ones itself, unrun, once it sees this trustee closed (`Outbox::drop`), and how
        // many bytes of results a paused one holds, which it drops with their continuations.
        for served in self.served.borrow_mut().iter_mut() {
            let mut taken = served.served;
            if let Some(paused) = served.paused.take() {
                panicked |= unwind::drop_quietly(paused.record);
                // SAFETY: the rest of a batch this trustee took and stopped in; nothing of it runs again.
                panicked |= unsafe { served.channel.slots.drop_batch(paused.seq, paused.offset) } > 0;
                taken = paused.seq;
                let written = u32::try_from(paused.offset.written()).expect("a response body's offset");
                served.channel.written.store(written, Ordering::Relaxed);
            }
            // Before `close_mailbox` stores `CLOSED`, which the client reads first.
            served.channel.taken.store(taken, Ordering::Release);
        }
        if panicked {
            eprintln!("trust: a request deferred at shutdown panicked when dropped");
        }
        self.retired.borrow_mut().clear(); // still registered: dropped below
        self.retired_entries.set(0);
        self.stale_entries.set(0);
        drop(self.takers.take());
        let live = context::with_registry(Registry::take_all);
        local::set_closing();
        // SAFETY: registered properties are live; shutdown is the last use of each.
        let dropped = unsafe { property::drop_values_at_shutdown(live) };
        reactor::shut_down_sockets(self.shared);
        // Mail that came after the last read is dropped unrun (see `TrusteeShared::mailed`); then every task
        // answered is woken, whether or not another poll would have.
        self.shared.close_mailbox();
        self.shared.relay.drain();
        self.scheduler.abandon();
        drop(self.client.replace(Client::new(None)));
        self.served.borrow_mut().clear();
        self.hot.set(0);
        self.count_channels(&[]);
        // Last: what was dropped just above (unrun mail, continuations and their captures) runs destructors
        // that may still reach a value of this trustee through a handle.
        // SAFETY: their values are dropped, and nothing runs on this worker any more.
        unsafe { property::free_at_shutdown(dropped) };
        self.shared.metrics.stop();
    }
}

/// The worker loop runs in a child forked from this worker's thread (a fiber or a delegated closure called
/// `fork`, and then its fiber ended, or the closure returned). Closing would drop the parent's values there
/// and shut down the parent's sockets (the child shares them); nothing else can run: the process ends.
#[cold]
#[inline(never)]
fn forked_worker_loop() -> ! {
    eprintln!("trust: a worker's loop reached in a forked child: {}", shared::IN_FORKED_CHILD);
    std::process::abort();
}
