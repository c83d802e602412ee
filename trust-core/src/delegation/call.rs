//! The client hot path, for every kind of caller: classify the caller once — a worker fiber, a worker's
//! scheduler or delegated closure, a `may` coroutine, a plain thread — then push the request, publish it, and
//! wait (suspend the fiber, yield the coroutine, or spin then park the thread). Also `post` and `count`
//! (registrations and count changes, never waiting), `post_then` (`apply_then`) and `wait_pending`.
//!
//! Which client context a request uses: a worker uses its own (shared by its fibers, so their requests batch
//! together); a plain thread uses a thread-local one; a `may` coroutine borrows one from its current thread's
//! pool for the length of the call, because `may` may move the coroutine to another thread mid-call and a
//! channel must keep exactly one consumer.

use std::cell::{Cell, RefCell};
use std::mem::ManuallyDrop;
use std::rc::Rc;
use std::sync::Arc;
use std::thread;

use crate::delegation::client::outbox::{Blocked, Client, WAITED_PAST_SHUTDOWN};
use crate::delegation::client::then::{self, Cont, Pending, Sender};
use crate::delegation::protocol::parker::Parker;
use crate::delegation::protocol::slot::Record;
use crate::delegation::trustee::job::{self, Job, Outcome, Reply};
use crate::delegation::trustee::handle::Handle;
use crate::delegation::trustee::property::{Header, SendPtr};
use crate::delegation::trustee::shared::{self, TrusteeShared};
use crate::delegation::client::outbox;
use crate::delegation::stack;
use crate::delegation::worker::context;
use crate::delegation::worker::fiber;
use crate::delegation::worker::run::Worker;

thread_local! {
    static THREAD_CLIENT: RefCell<Option<Client>> = const { RefCell::new(None) };
    static RUNNING_CONTINUATIONS: Cell<bool> = const { Cell::new(false) };
    static MAY_POOL: RefCell<Vec<Client>> = const { RefCell::new(Vec::new()) };
    /// The client context of a plain thread whose `THREAD_CLIENT` is destroyed already: made on the first
    /// call from a thread-local destructor that runs after it (std runs them in reverse order of registration),
    /// so the destructor's `apply_then`s and `wait_pending` share one context and its continuations run (each
    /// call with a context of its own would drop them unrun). Never destroyed itself (no destructor: every late
    /// destructor can reach it, however many there are); a sweeper drops the client after each destructor.
    static LATE_CLIENT: ManuallyDrop<RefCell<Option<Client>>> = const { ManuallyDrop::new(RefCell::new(None)) };
    static SWEEP_1: Sweeper = const { Sweeper };
    static SWEEP_2: Sweeper = const { Sweeper };
    static SWEEP_3: Sweeper = const { Sweeper };
    static SWEEP_4: Sweeper = const { Sweeper };
    static SWEEP_5: Sweeper = const { Sweeper };
    static SWEEP_6: Sweeper = const { Sweeper };
    static SWEEP_7: Sweeper = const { Sweeper };
    static SWEEP_8: Sweeper = const { Sweeper };
}

/// Drops `LATE_CLIENT`'s client when destroyed. Armed (first touched) by a late destructor's call, so that std
/// runs it right after that destructor (a destructor registered while they run goes next): the client's
/// in-flight answers are waited for and its continuations dropped there, as a thread's are at its exit, and the
/// next late destructor (registered before the first, run after) starts afresh with a sweeper of its own.
struct Sweeper;

impl Drop for Sweeper {
    fn drop(&mut self) {
        // One by one: dropping a client drops continuations whose captures may delegate, making another.
        while let Some(client) = LATE_CLIENT.with(|c| c.borrow_mut().take()) {
            drop(client);
        }
    }
}

/// Arms a sweeper not yet destroyed (see `Sweeper`); false once all are spent (eight late destructors that
/// delegate, or eight captures dropped by sweepers that delegate again, on one thread).
fn arm_sweeper() -> bool {
    [&SWEEP_1, &SWEEP_2, &SWEEP_3, &SWEEP_4, &SWEEP_5, &SWEEP_6, &SWEEP_7, &SWEEP_8]
        .iter()
        .any(|s| s.try_with(|_| ()).is_ok())
}

/// Runs `f` with the calling plain thread's client cell: `THREAD_CLIENT`, else (destroyed) `LATE_CLIENT`, with
/// a sweeper armed; `None` once both are out of reach.
#[inline]
fn with_client_cell<R>(f: impl FnOnce(&RefCell<Option<Client>>) -> R) -> Option<R> {
    let mut f = Some(f);
    match THREAD_CLIENT.try_with(|c| (f.take().unwrap())(c)) {
        Ok(r) => Some(r),
        Err(_) if arm_sweeper() => Some(LATE_CLIENT.with(|c| (f.take().unwrap())(c))),
        Err(_) => None,
    }
}

/// Before a plain thread waits (`Fiber::join`), and before an `apply_async` future sends its request (an
/// executor's thread that only awaits futures would keep them for good: review 37): its unsent requests go
/// out where a lane is free. Makes no client (one thread-local read where there is none: a worker, an
/// executor's thread that never pipelined); does nothing where the client is in use already (a future polled
/// by a destructor that runs inside a call).
pub(crate) fn publish_thread_unsent() {
    let _ = with_client_cell(|c| {
        if let Some(client) = c.try_borrow_mut().ok().as_deref_mut().and_then(Option::as_mut) {
            client.publish_unsent(None);
        }
    });
}

/// Parks a plain thread that waits for a signal from elsewhere (a fiber's end: `Fiber::join`, `Latch::launch`;
/// an interval lock), until it is unparked or spuriously. Meanwhile its unsent requests go out as lanes free:
/// what it waits for may wait for them (a fiber that waits until a counter this thread pipelined to reaches a
/// value), and a publish that found both lanes busy just before would leave them unsent for as long as the
/// thread waits: for good, in that case. Makes no client; does nothing special where the client is in use
/// (a destructor run inside a call).
pub(crate) fn park_thread() {
    let sending = with_client_cell(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        Some(c.as_mut()?.park_sending_unsent())
    });
    if sending.flatten() != Some(true) {
        thread::park();
    }
}

/// Runs `f` with the calling plain thread's client context (`LATE_CLIENT` in a thread-local destructor that
/// runs after `THREAD_CLIENT`'s), or with a fresh one once no sweeper is left to drop `LATE_CLIENT`'s. Not for
/// workers: they have their own (`Worker::client`).
#[inline]
fn with_thread_client<R>(f: impl FnOnce(&mut Client) -> R) -> R {
    let mut f = Some(f);
    let r = with_client_cell(|c| {
        let mut c = c.borrow_mut();
        let client = match &mut *c {
            Some(client) => client,
            None => c.insert(new_thread_client()),
        };
        (f.take().unwrap())(client)
    });
    match r {
        Some(r) => r,
        None => (f.take().unwrap())(&mut new_thread_client()),
    }
}

/// A plain thread's client context, made on its first call (out of line: the call path stays small).
#[cold]
#[inline(never)]
fn new_thread_client() -> Client {
    let mut client = Client::new(Some(Arc::new(Parker::current())));
    client.stack = stack::thread_stack();
    client
}

/// Runs `f` with a client context borrowed from the current thread's `may` pool, returned to the pool of the
/// thread the coroutine is on when `f` is done. When it unwinds (a cancelled coroutine) with a request in
/// flight, a thread of its own takes the client over until the answer comes (`settle_cancelled`): dropped
/// here, the client would wait for it, holding the `may` thread; pooled, the next call would wait behind it.
fn with_may_client<R>(f: impl FnOnce(&mut Client) -> R) -> R {
    let mut client = Pooled::pop();
    f(client.0.as_mut().expect("returned once"))
}

/// A `may` coroutine's client, back to the pool (or to the thread that settles it) when dropped.
struct Pooled(Option<Client>);

impl Pooled {
    /// Out of `with_may_client`, which is generic: one copy of this for every result type.
    #[inline]
    fn pop() -> Self {
        Pooled(Some(may_pool_pop().unwrap_or_else(|| Client::new(None))))
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let client = self.0.take().expect("returned once");
        if client.is_idle() {
            may_pool_push(client);
        } else {
            settle_cancelled(client);
        }
    }
}

/// A client a cancelled coroutine left with a request in flight, handed to the thread that settles them.
#[cfg(feature = "may")]
struct Cancelled(Client);

// SAFETY: a `may` client is used by one coroutine at a time and already moves between threads with the
// coroutine that borrows it (`may` steals work); it holds no continuation (a coroutine's `apply_then` waits for
// its result), and its `Pending` is its own.
#[cfg(feature = "may")]
unsafe impl Send for Cancelled {}

/// Clients cancelled coroutines left with requests in flight, waiting for the settling thread.
#[cfg(feature = "may")]
static CANCELLED: std::sync::Mutex<Vec<Cancelled>> = std::sync::Mutex::new(Vec::new());

/// Settles `client` on a thread of its own, started on first use: it sends what is unsent, takes the answers
/// as they come (dropping the results, which nobody waits for), and drops the client once it is settled. Not a
/// `may` coroutine: a settling coroutine sleeps on `may`'s timer right after the cancel, where `may`'s sleep
/// races with its timer thread (see `MayWait`): AddressSanitizer reported a use after free in one run of three
/// of 400 racing cancels when they settled in coroutines.
#[cfg(feature = "may")]
fn settle_cancelled(client: Client) {
    static SETTLER: std::sync::OnceLock<thread::Thread> = std::sync::OnceLock::new();
    CANCELLED.lock().unwrap_or_else(|e| e.into_inner()).push(Cancelled(client));
    let settler = SETTLER.get_or_init(|| {
        thread::Builder::new()
            .name("trust-settle".into())
            .spawn(settle_loop)
            .expect("the thread that settles cancelled coroutines' requests could not start")
            .thread()
            .clone()
    });
    settler.unpark();
}

#[cfg(feature = "may")]
fn settle_loop() {
    use std::time::Duration;
    // Clients settle when their trustees answer; while none does, the thread looks less and less often, 16 ms
    // apart at most. Stepping a thousand clients every millisecond took 6-10% of a core (review 15's test:
    // 3-5 ticks of 10 ms in 500 ms beside the workers'; 0-1 now).
    const NAP: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(16));
    let mut settling: Vec<Client> = Vec::new();
    let mut nap = NAP.0;
    loop {
        let handed = std::mem::take(&mut *CANCELLED.lock().unwrap_or_else(|e| e.into_inner()));
        let new = !handed.is_empty();
        settling.extend(handed.into_iter().map(|c| c.0));
        let before = settling.len();
        if settling.is_empty() {
            thread::park();
            nap = NAP.0;
            continue;
        }
        // A settled client is dropped here, on this thread. A result whose `Drop` panics must not end the
        // thread (the clients handed to it later would never settle): contained, the client looked at again.
        settling.retain_mut(|c| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.settle_step())).map_or_else(
                |p| {
                    crate::delegation::trustee::unwind::drop_payload(p);
                    eprintln!("trust: a cancelled coroutine's result panicked when dropped");
                    true
                },
                |settled| !settled,
            )
        });
        nap = if new || settling.len() < before {
            NAP.0
        } else {
            (nap * 2).min(NAP.1)
        };
        thread::sleep(nap);
    }
}

#[cfg(not(feature = "may"))]
fn settle_cancelled(client: Client) {
    drop(client);
}

#[inline(never)]
fn may_pool_pop() -> Option<Client> {
    MAY_POOL.with(|p| p.borrow_mut().pop())
}

/// The most client contexts a thread's `may` pool keeps. A coroutine returns its client to the pool of the
/// thread it ends on, which need not be the one it took it from: `may`'s timer thread resumes a coroutine whose
/// sleep ended (a call's wait sleeps after 4 ms), and there it ends, while coroutines start (and pop) only on
/// `may`'s workers. Without a bound the timer thread's pool grew by every call that ended there, each client
/// with a channel to every trustee it called, for the life of the process (review 33: 600 more channels and
/// 5 MiB per burst of 600 waiting coroutines). Past it, an idle client is dropped, closing its channels.
const MAY_POOL_MAX: usize = 1024;

/// Not inlined: the coroutine may be on another thread than at `may_pool_pop`, and the thread-local's address
/// must be computed anew.
#[inline(never)]
fn may_pool_push(client: Client) {
    // Dropped instead when the thread-local is gone (a coroutine unwinding as its thread exits), or when the
    // pool is full: after the pool's borrow has ended.
    let extra = MAY_POOL.try_with(move |p| {
        let mut pool = p.borrow_mut();
        if pool.len() < MAY_POOL_MAX {
            pool.push(client);
            None
        } else {
            Some(client)
        }
    });
    drop(extra);
}

/// Runs `job` on `trustee` (a different trustee from the caller's own) and returns its result, suspending the
/// calling fiber or coroutine, or blocking the calling thread, meanwhile.
pub(crate) fn call<J: Job<Output: Send>>(trustee: &'static TrusteeShared, job: J) -> J::Output {
    call_from(context::worker(), trustee, job)
}

/// `call` for a caller already classified: `worker` is the calling thread's worker, if it is one.
///
/// Inlined down to the fiber switch (with `fiber::call`): a fiber that suspends calls deeper than the frame
/// it resumes in mispredicts one return per level in between, each way (the CPU's return-stack predictor
/// expects the scheduler's frames). Measured with fibers that only yield: 46 ns per yield with the switch two
/// calls deep, 20 ns inlined.
#[inline(always)]
pub(crate) fn call_from<J: Job<Output: Send>>(
    worker: Option<&'static Worker>,
    trustee: &'static TrusteeShared,
    job: J,
) -> J::Output {
    if let Some(worker) = worker {
        let Some((_, id)) = worker.fiber.get().filter(|_| !worker.in_delegated()) else {
            // After a shutdown, the shutdown's message (a value's destructor run then may call): neither
            // remedy the nesting message names helps then.
            nested_blocking(trustee, worker.in_delegated(), job);
        };
        return fiber::call(worker, id, trustee, job);
    }
    call_from_thread(trustee, job)
}

/// A blocking call on a worker outside a fiber: inside a delegated closure, or on the scheduler (an
/// `apply_then` continuation).
#[cold]
#[inline(never)]
fn nested_blocking<J>(trustee: &TrusteeShared, delegated: bool, job: J) -> ! {
    let job = trustee.check_running_holding(job);
    let message = if delegated { context::NESTED_BLOCKING } else { BLOCKING_ON_SCHEDULER };
    // Already panicking: in a panic hook (a hook that logs through a `Trust`, run where a delegated closure
    // panicked), where std aborts on this panic without printing its message, or in a destructor during an
    // unwind, which aborts too. Say why first.
    if std::thread::panicking() {
        eprintln!("trust: {message}");
    }
    shared::refuse(job, message);
}

const BLOCKING_ON_SCHEDULER: &str = "blocking delegation inside an `apply_then` continuation on a worker (or in \
     a destructor the worker's scheduler runs, such as a result's whose `apply_async` future was dropped, or \
     in an async task that its executor polls inside `wake`, which the worker called): they run on the \
     worker's scheduler, which would stop serving while it waits. Chain another `apply_then` from the \
     continuation instead, await an `apply_async` in the task, or make the call from a fiber (`spawn`)";

/// `call_from` for a plain thread or a `may` coroutine.
#[inline(never)]
fn call_from_thread<J: Job<Output: Send>>(trustee: &'static TrusteeShared, job: J) -> J::Output {
    let job = trustee.check_running_holding(job);
    if outbox::in_may_coroutine() {
        with_may_client(|c| c.call(trustee, job)).unwrap_or_else(|unsent| waited_past_shutdown(unsent))
    } else {
        let (r, ready) = with_thread_client(|c| {
            let r = c.call(trustee, job);
            (r, c.has_ready())
        });
        if ready {
            run_thread_continuations();
        }
        r.unwrap_or_else(|unsent| waited_past_shutdown(unsent))
    }
}

/// A request whose trustee shut down while its caller waited for room in a batch: dropped here, unrun, once
/// the client's borrow has ended (a destructor that calls the runtime meets the shutdown panic, not a borrowed
/// client), then the caller's panic.
#[cold]
#[inline(never)]
fn waited_past_shutdown<T>(unsent: T) -> ! {
    drop(unsent);
    panic!("{}", shared::closed_message(WAITED_PAST_SHUTDOWN));
}

/// Sends a record that answers nothing — a property's registration — without ever waiting. A worker queues it
/// in its outbox (its loop publishes it). A plain thread puts it in a slot when one is free, else mails it to
/// the trustee: an idle thread (an executor's, parked) must not hold it unpublished until it calls again. So
/// such records are not ordered among themselves.
pub(crate) fn post<F: Record + 'static>(trustee: &'static TrusteeShared, record: F) {
    if let Some(worker) = context::worker() {
        return worker.client.borrow_mut().outbox(trustee).push_or_queue(record);
    }
    post_from_thread(trustee, record, |record| {
        trustee.run_later(move || {
            record.run(std::ptr::null_mut());
        })
    });
}

/// True when the caller may wait for another trustee: a plain thread, a `may` coroutine, a fiber; not a
/// delegated closure nor a continuation on a worker's scheduler (the worker would stop serving meanwhile).
pub(crate) fn caller_can_wait() -> bool {
    match context::worker() {
        None => true,
        Some(worker) => worker.fiber.get().is_some() && !worker.in_delegated(),
    }
}

/// An `entrust` to `trustee` from a caller that cannot wait for its registration (a worker's delegated
/// closure or continuation) while `REGISTERING_MAX` are queued there already: waits a little for the trustee
/// to catch up (`Outbox::pace`).
pub(crate) fn pace_registrations(trustee: &'static TrusteeShared) {
    if let Some(worker) = context::worker() {
        worker
            .client
            .borrow_mut()
            .outbox(trustee)
            .pace(|| !trustee.registrations_behind());
    }
}

/// Counts `delta` handles of the property `h` in or out on `trustee`, without ever waiting: as a record where
/// the slot has room now (the batch a worker builds, a plain thread's free lane), else netted in the trustee's
/// count mail (`TrusteeShared::count_later`), so that memory stays bounded however much faster than its
/// trustee a client clones and drops. Count changes need no order among themselves (see `Worker::retire`).
pub(crate) fn count(trustee: &'static TrusteeShared, h: SendPtr<Header>, delta: isize) {
    // SAFETY: the record runs on `h`'s trustee, and the handle that sends it is counted there until it runs.
    let record = job::post(move || unsafe {
        context::worker()
            .expect("reference counts change on the trustee")
            .count(h.get(), delta)
    });
    match context::worker() {
        Some(worker) => {
            let mut client = worker.client.borrow_mut();
            let outbox = client.outbox(trustee);
            let record = match outbox.try_push(record) {
                Ok(()) => return,
                Err(record) => record,
            };
            outbox.send_what_fits();
            if outbox.try_push(record).is_err() {
                trustee.count_later(h, delta);
            }
        }
        None => post_from_thread(trustee, record, |_| trustee.count_later(h, delta)),
    }
}

/// The count of a `Trust<T>`'s handle (see `Trust`'s `Clone` and `Drop`), here because it needs the caller's
/// channel to the trustee: inline on the trustee's own worker, else a fire-and-forget change (`count`).
impl<T> Clone for Handle<T> {
    /// Counts the new handle on the trustee without waiting: the increment is sent before the clone can escape,
    /// so it is ordered before anything the clone is used for on this thread, and the trustee never drops the
    /// value while it is on its way (see `Worker::retire`).
    fn clone(&self) -> Self {
        let shared = self.shared();
        if let Some(clone) = context::worker().and_then(|w| self.clone_here(w.on_trustee())) {
            return clone;
        }
        if shared.is_running() {
            count(shared, self.header(), 1);
        }
        // SAFETY: the increment was just sent, by the channel this thread's requests take (`self` is counted
        // there until after it runs); or the runtime has shut down.
        unsafe { self.counted_copy() }
    }
}

impl<T> Drop for Handle<T> {
    /// Uncounts the handle without waiting; the last one retires the value on its trustee. After the runtime
    /// has shut down this does nothing: shutdown already dropped the value.
    fn drop(&mut self) {
        let shared = self.shared();
        if !shared.is_running() {
            return;
        }
        let header = self.header();
        match context::worker() {
            // SAFETY: on the trustee thread, for a reference this handle owned.
            Some(worker) if std::ptr::eq(worker.shared, shared) => unsafe { worker.count(header.get(), -1) },
            _ => count(shared, header, -1),
        }
    }
}

/// A plain thread's (or `may` coroutine's) record: sent now if the thread has a client and its slot is free,
/// else given to `unsent`. Never makes a client (a thread that only clones and drops handles needs none), and
/// never runs the thread's arrived continuations: a handle's `clone` and `drop` never block, and a
/// continuation may (a blocking `apply` in it).
fn post_from_thread<F: Record + 'static>(trustee: &'static TrusteeShared, record: F, unsent: impl FnOnce(F)) {
    let mut record = Some(record);
    if !outbox::in_may_coroutine() {
        let _ = THREAD_CLIENT.try_with(|c| {
            if let Some(client) = c.borrow_mut().as_mut() {
                record = client.try_post_now(trustee, record.take().unwrap());
            }
        });
    }
    if let Some(record) = record {
        unsent(record);
    }
}

/// Runs the continuations that arrived for this plain thread, one at a time and outside any borrow of its
/// client. Not from inside a continuation: a chain of `apply_then`s, each issued by the previous one's
/// continuation, would nest one stack frame per link; the loop already running picks them up instead. Out of
/// line, as `thread_client_cell`: it reads a thread-local, and `apply_then`'s callers inline its path.
#[inline(never)]
fn run_thread_continuations() {
    if !RUNNING_CONTINUATIONS.with(Cell::get) {
        run_continuations_now();
    }
}

/// Runs this plain thread's ready continuations even inside one (`wait_pending` waits for the others): one
/// at a time, outside any borrow of the client (they may issue more), until none is left.
fn run_continuations_now() {
    let outer = RUNNING_CONTINUATIONS.with(|r| r.replace(true));
    let _ = with_client_cell(|c| loop {
        // One statement: the client's borrow ends before the continuation runs.
        let Some(next) = c.borrow_mut().as_mut().and_then(Client::next_ready) else {
            break;
        };
        // A panicking continuation is caught inside `run`. A plain thread has no fiber to wake.
        // SAFETY: run right after it was taken; the client's borrow ended with the statement above.
        let _ = unsafe { next.run() };
    });
    RUNNING_CONTINUATIONS.with(|r| r.set(outer));
}

/// Issues an `apply_then`: `job` runs on `trustee`, and `then` later on this thread with its result.
/// A worker fiber waits for room by suspending; a worker's scheduler or delegated closure queues without
/// waiting; a plain thread (or `may` coroutine, which counts as its current thread) serves its own
/// completions until there is room. A plain thread comes here only for its first `apply_then` (its client
/// is made then) or after its thread-locals are gone: `post_then_from_thread` takes the others.
#[inline]
pub(crate) fn post_then<J, R, C>(caller: Option<&'static Worker>, trustee: &'static TrusteeShared, job: J, then: C)
where
    J: Job<Output = Outcome<R>>,
    R: Send + 'static,
    C: FnOnce(R) + 'static,
{
    match caller {
        Some(worker) => post_then_on_worker(worker, trustee, job, then),
        None => post_then_first(trustee, job, then),
    }
}

/// `post_then` from a plain thread without a client yet (out of line: it is made once per thread), or from a
/// `may` coroutine (which never has one: see [`then_in_coroutine`]).
#[inline(never)]
fn post_then_first<J, R, C>(trustee: &'static TrusteeShared, job: J, then: C)
where
    J: Job<Output = Outcome<R>>,
    R: Send + 'static,
    C: FnOnce(R) + 'static,
{
    if !trustee.is_running() {
        shared::refuse_both(job, then, shared::closed_message(shared::SHUT_DOWN));
    }
    if in_coroutine() {
        let outcome = with_may_client(|c| c.call(trustee, job)).unwrap_or_else(|unsent| waited_past_shutdown(unsent));
        return then_in_coroutine(outcome.into_result(), then);
    }
    let mut args = Some((job, then));
    let posted = with_client_cell(|c| {
        let (job, then) = args.take().expect("taken once");
        let mut c = c.borrow_mut();
        c.get_or_insert_with(new_thread_client).post_then(trustee, Reply(job), then)
    });
    match posted {
        Some(Ok(true)) => run_thread_continuations(),
        Some(Ok(false)) => {}
        Some(Err(unsent)) => waited_past_shutdown(unsent),
        None => {
            let (job, then) = args.take().expect("not posted");
            then_with_no_client_left(trustee, job, then);
        }
    }
}

/// `apply_then` in a thread-local destructor that runs after every sweeper is spent (more than eight that
/// delegate on one thread): no client context outlives the call, so one made for it would drop the
/// continuation unrun when it goes, and a `wait_pending` after it would find nothing to wait for (review 52).
/// The request is a blocking call instead and its continuation runs at once; a panic of either comes out
/// here, since no `wait_pending` could resume it.
#[cold]
#[inline(never)]
fn then_with_no_client_left<J, R, C>(trustee: &'static TrusteeShared, job: J, then: C)
where
    J: Job<Output = Outcome<R>>,
    R: Send + 'static,
    C: FnOnce(R) + 'static,
{
    let outcome = new_thread_client()
        .call(trustee, job)
        .unwrap_or_else(|unsent| waited_past_shutdown(unsent));
    let owner = Rc::new(Pending::default());
    then::run_now(then, owner.clone(), outcome.into_result());
    if let Some(panic) = owner.take_panic() {
        std::panic::resume_unwind(panic);
    }
}

/// True when the caller is a `may` coroutine.
#[inline]
pub(crate) fn in_coroutine() -> bool {
    outbox::in_may_coroutine()
}

/// A `may` coroutine's continuations, kept in the coroutine's own storage (it moves with the coroutine between
/// threads): the panics for its `wait_pending`, and the continuations issued by one that is running, which run
/// after it, in issue order.
#[derive(Default)]
struct CoroutineThens {
    pending: Rc<Pending>,
    running: Cell<bool>,
    queued: RefCell<std::collections::VecDeque<Box<dyn FnOnce()>>>,
}

#[cfg(feature = "may")]
may::coroutine_local!(static COROUTINE_THENS: Rc<CoroutineThens> = Rc::default());

/// Ends an `apply_then` or `launch_then` of a `may` coroutine, whose request was made as a blocking call (the
/// coroutine yielded meanwhile, its thread went on): `then` runs now, on the coroutine, with the result, and a
/// panic in either is kept for the coroutine's `wait_pending`. Not left for later with a thread's client:
/// `may` moves a coroutine between threads at any yield, and the continuation (not `Send`: it may share an `Rc`
/// with the coroutine) then ran on the thread left behind, beside the coroutine, while `wait_pending` on the
/// new thread did not wait for it. Issued by a continuation that is running, it runs once that one has
/// returned: a chain of them (each issuing the next) runs in constant stack, as on a thread.
pub(crate) fn then_in_coroutine<R: 'static, C: FnOnce(R) + 'static>(result: thread::Result<R>, then: C) {
    let thens = coroutine_thens();
    let owner = thens.pending.clone();
    if thens.running.get() {
        let run = move || then::run_now(then, owner, result);
        thens.queued.borrow_mut().push_back(Box::new(run));
        return;
    }
    thens.running.set(true);
    then::run_now(then, owner, result);
    run_queued(&thens);
    thens.running.set(false);
}

/// Runs the calling coroutine's queued continuations, one at a time, until none is left (those they issue
/// join the queue).
fn run_queued(thens: &CoroutineThens) {
    loop {
        // One statement: the queue's borrow ends before the continuation runs (it may issue more).
        let next = thens.queued.borrow_mut().pop_front();
        let Some(next) = next else {
            break;
        };
        next();
    }
}

/// The calling coroutine's continuations.
fn coroutine_thens() -> Rc<CoroutineThens> {
    #[cfg(feature = "may")]
    {
        COROUTINE_THENS.with(Rc::clone)
    }
    #[cfg(not(feature = "may"))]
    unreachable!("no `may` coroutine runs without the `may` feature")
}

/// `post_then` for a plain thread that has a client context already (made by an earlier call): the usual
/// pipelining caller, classified by the one thread-local read that also finds its context (a worker thread
/// never has one: `with_thread_client` runs only where `context::worker` is `None`). Gives `job` and `then`
/// back to any other caller, for `post_then`.
#[inline]
pub(crate) fn post_then_from_thread<J, R, C>(trustee: &'static TrusteeShared, job: J, then: C) -> Result<(), (J, C)>
where
    J: Job<Output = Outcome<R>>,
    R: Send + 'static,
    C: FnOnce(R) + 'static,
{
    // SAFETY: this thread's own `THREAD_CLIENT`, alive (not destroyed: the accessor gives null then), and the
    // reference lives only in this call, on this thread: the path below never suspends (a `may` coroutine,
    // which could resume on another thread, is not on its thread's own stack and goes elsewhere first).
    let Some(cell) = (unsafe { thread_client_cell().as_ref() }) else {
        return Err((job, then));
    };
    let mut c = cell.borrow_mut();
    // Not for a `may` coroutine on a thread that has a client (made outside any coroutine): `post_then` tells it
    // apart and makes its request a blocking call. After a shutdown the arguments go back, and the caller's slow
    // path refuses them once the client's borrow has ended (their destructors may call the runtime).
    let Some(client) = c.as_mut().filter(|client| client.on_own_stack() && trustee.is_running()) else {
        return Err((job, then));
    };
    let posted = client.post_then(trustee, Reply(job), then);
    drop(c);
    match posted {
        Ok(true) => run_thread_continuations(),
        Ok(false) => {}
        Err(unsent) => waited_past_shutdown(unsent),
    }
    Ok(())
}

/// This thread's `THREAD_CLIENT`, or null once it is destroyed. Out of line on purpose (../shared/DESIGN.md
/// §4): `post_then_from_thread` is inlined into `apply_then`'s callers, and a `may` coroutine that loops over
/// `apply_then` may resume on another thread between two of its calls (its requests wait as blocking calls), so
/// the thread-local's address must be found afresh by each call, never kept from an earlier one in a register.
/// It reads the thread-local's state, so two calls are not merged into one either.
#[inline(never)]
fn thread_client_cell() -> *const RefCell<Option<Client>> {
    THREAD_CLIENT.try_with(|c| c as *const _).unwrap_or(std::ptr::null())
}

/// `post_then` from a worker: its fiber, scheduler or delegated closure (out of line: a plain thread's
/// call path stays one function).
fn post_then_on_worker<J, R, C>(worker: &'static Worker, trustee: &'static TrusteeShared, job: J, then: C)
where
    J: Job<Output = Outcome<R>>,
    R: Send + 'static,
    C: FnOnce(R) + 'static,
{
    let fiber = worker.fiber.get().filter(|_| !worker.in_delegated());
    let owner = worker.issuer();
    let record = Reply(job);
    let Some((_, id)) = fiber else {
        worker
            .client
            .borrow_mut()
            .outbox(trustee)
            .push_or_queue_then(record, Cont::new(then, owner));
        return;
    };
    loop {
        let mut client = worker.client.borrow_mut();
        let outbox = client.outbox(trustee);
        if outbox.has_room::<Reply<J>>() {
            // SAFETY: room checked just above.
            return unsafe { outbox.push_then(record, then, owner) };
        }
        outbox.blocked.push_back(Blocked::to_wake(id));
        drop(client);
        fiber::suspend();
    }
}

/// A request of a worker to its own trustee, sent through the worker's channel to itself: counted in
/// `Worker::to_self` and in its issuer's `Pending` from its issue until it has run, so that the issuer's
/// later applies to the worker's own properties wait behind it instead of taking the local shortcut past it
/// (requests from one issuer to one trustee apply in issue order). Only the issuer's: another fiber's
/// requests need not wait for it, and must not (it may wait for them: a request on a latch waits for the
/// fibers launched on it, which may be the ones applying).
pub(crate) struct ToSelf<J> {
    job: J,
    issuer: Issuer,
}

/// A `ToSelf` request's issuer.
struct Issuer(Rc<Pending>);

// SAFETY: a `ToSelf` request goes only through its worker's channel to itself, so it is made, run or dropped
// on that worker's thread only (its outbox is the worker's, dropped there; the worker serves it), where the
// `Rc` was made.
unsafe impl Send for Issuer {}

impl<J> ToSelf<J> {
    /// `job` from the worker's current issuer, counted in until it has run.
    fn new(worker: &Worker, job: J) -> Self {
        let issuer = worker.to_self_issuer();
        issuer.add_to_self(1);
        worker.to_self.set(worker.to_self.get() + 1);
        ToSelf {
            job,
            issuer: Issuer(issuer),
        }
    }
}

impl<J: Job> Job for ToSelf<J> {
    type Output = J::Output;

    fn run(self) -> Result<J::Output, Self> {
        let ToSelf { job, issuer } = self;
        let out = match job.run() {
            Ok(out) => out,
            Err(job) => return Err(ToSelf { job, issuer }),
        };
        // Runs on the worker that issued it: its own trustee.
        let worker = context::worker().expect("a request to a worker's own trustee runs on that worker");
        worker.to_self.set(worker.to_self.get() - 1);
        issuer.0.add_to_self(-1);
        Ok(out)
    }

    fn waits_on(&self) -> *mut Header {
        self.job.waits_on()
    }

    /// As the job it carries: a paused `apply` holds new launches back on its way through the channel to
    /// itself too (without it a launch went ahead of such an apply on a held latch, review 22's
    /// `a_local_blocking_launch_waits_behind_an_apply_queued_...`).
    const HOLDS_LAUNCHES: bool = J::HOLDS_LAUNCHES;
}

/// True when the worker's current issuer has requests queued in its channel to itself (see [`ToSelf`]): its
/// applies to the worker's own properties go behind them. The worker-wide count is looked at first: zero on
/// the local shortcut's usual path.
#[inline]
pub(crate) fn queued_to_self(worker: &Worker) -> bool {
    worker.to_self.get() != 0 && issuer_queued_to_self(worker)
}

#[cold]
#[inline(never)]
fn issuer_queued_to_self(worker: &Worker) -> bool {
    worker.to_self_issuer().queued_to_self() != 0
}

/// `post_then` from a worker to its own trustee, through its channel to itself (see [`ToSelf`]).
pub(crate) fn post_then_to_self<J, R, C>(worker: &'static Worker, job: J, then: C)
where
    J: Job<Output = Outcome<R>>,
    R: Send + 'static,
    C: FnOnce(R) + 'static,
{
    post_then_on_worker(worker, worker.shared, ToSelf::new(worker, job), then);
}

/// `call` from a worker fiber to its own trustee, through its channel to itself (see [`ToSelf`]): the fiber
/// suspends until its worker has served the requests queued there before it, then this one.
pub(crate) fn call_to_self<J: Job<Output: Send>>(worker: &'static Worker, job: J) -> J::Output {
    call_from(Some(worker), worker.shared, ToSelf::new(worker, job))
}

/// Issues a continuation whose result will come from `trustee` later, through the returned sender, by
/// another way than a batch's answer (a `launch_then` fiber sends it when it ends). Counted for
/// `wait_pending` like an `apply_then` of the caller: the calling fiber's, else the worker's or the plain
/// thread's.
///
/// Not for a `may` coroutine: its `launch_then` waits for the launched fiber (see [`then_in_coroutine`]).
pub(crate) fn expect_later<R: Send + 'static, C: FnOnce(R) + 'static>(
    caller: Option<&'static Worker>,
    trustee: &'static TrusteeShared,
    then: C,
) -> Sender<R> {
    if let Some(worker) = caller {
        let owner = worker.issuer();
        return worker.client.borrow_mut().inbox.expect(then, owner, trustee);
    }
    let then = trustee.check_running_holding(then);
    with_thread_client(|c| {
        let owner = c.pending.clone();
        c.inbox.expect(then, owner, trustee)
    })
}

const WAIT_PENDING_ON_SCHEDULER: &str = "`wait_pending` inside an `apply_then` continuation on a worker: \
     continuations run on the worker's scheduler, which must not wait. Chain another `apply_then` from the \
     continuation instead, or call `wait_pending` from a fiber (`spawn`)";

/// Waits until every `apply_then` issued by the calling thread or fiber has completed and its continuation
/// has run; then resumes the first panic among their closures and continuations, if any.
///
/// Inside a continuation on a plain thread it waits for the other continuations (not for itself). Panics
/// inside a delegated closure, and in a continuation running on a worker (either would block a trustee).
pub fn wait_pending() {
    if let Some(worker) = context::worker() {
        if worker.in_delegated() {
            panic!("{}", context::NESTED_BLOCKING);
        }
        let Some((_, id)) = worker.fiber.get() else {
            panic!("{WAIT_PENDING_ON_SCHEDULER}");
        };
        let pending = worker.scheduler.pending_of(id);
        while pending.outstanding() > 0 {
            pending.set_waiter(id);
            fiber::suspend();
        }
        if let Some(p) = pending.take_panic() {
            std::panic::resume_unwind(p);
        }
        return;
    }
    if in_coroutine() {
        // Inside a continuation, the others issued meanwhile run now; elsewhere all have run already.
        let thens = coroutine_thens();
        run_queued(&thens);
        if let Some(p) = thens.pending.take_panic() {
            std::panic::resume_unwind(p);
        }
        return;
    }
    loop {
        run_continuations_now();
        if with_thread_client(|c| c.pending.outstanding()) == 0 {
            break;
        }
        with_thread_client(Client::progress);
    }
    if let Some(p) = with_thread_client(|c| c.pending.take_panic()) {
        std::panic::resume_unwind(p);
    }
}
