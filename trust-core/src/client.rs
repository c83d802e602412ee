//! The client side of delegation: one [`Outbox`] per trustee a client talks to, holding its [`Channel`], and the
//! ways a client waits for an answer — a worker fiber suspends (the worker's scheduler resumes it), a `may`
//! coroutine yields to `may`, and a plain thread spins, yields, then parks until the trustee wakes it.
//!
//! Which client context a request uses: a worker uses its own (shared by its fibers, so their requests batch
//! together); a plain thread uses a thread-local one; a `may` coroutine borrows one from its current thread's
//! pool for the length of the call, because `may` may move the coroutine to another thread mid-call and a
//! channel must keep exactly one consumer.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::context;
use crate::fiber;
use crate::parker::{Backoff, Parker};
use crate::slot::SlotPair;
use crate::trustee::TrusteeShared;

/// The memory one client shares with one trustee.
#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) slots: SlotPair,
    /// Woken when a batch is answered; `None` for clients that poll instead of parking.
    pub(crate) parker: Option<Arc<Parker>>,
    /// The client is gone; the trustee forgets the channel once its last batch is served.
    pub(crate) closed: AtomicBool,
}

type Boxed = Box<dyn FnOnce() + Send>;

/// A client's end of one channel.
pub(crate) struct Outbox {
    channel: Arc<Channel>,
    trustee: &'static TrusteeShared,
    /// Bytes of records in the batch being built.
    len: usize,
    /// Number of the last published batch.
    sent: u32,
    in_flight: bool,
    /// Fire-and-forget records that found the slot busy where the caller could not wait; sent first.
    backlog: VecDeque<Boxed>,
    /// Worker fibers whose requests are in the in-flight batch, in the batch being built, or waiting for room.
    pub(crate) waiting: Vec<usize>,
    pub(crate) staged: Vec<usize>,
    pub(crate) blocked: Vec<usize>,
}

impl Outbox {
    fn new(trustee: &'static TrusteeShared, parker: Option<Arc<Parker>>) -> Self {
        let channel = Arc::new(Channel {
            slots: SlotPair::new(),
            parker,
            closed: AtomicBool::new(false),
        });
        trustee.register(channel.clone());
        Outbox {
            channel,
            trustee,
            len: 0,
            sent: 0,
            in_flight: false,
            backlog: VecDeque::new(),
            waiting: Vec::new(),
            staged: Vec::new(),
            blocked: Vec::new(),
        }
    }

    /// True when the in-flight batch has just been answered (the event happens once per batch).
    #[inline]
    pub(crate) fn poll(&mut self) -> bool {
        if self.in_flight && self.channel.slots.is_answered(self.sent) {
            self.in_flight = false;
            true
        } else {
            false
        }
    }

    /// True when the in-flight batch is answered, without consuming the event.
    pub(crate) fn poll_peek(&self) -> bool {
        self.in_flight && self.channel.slots.is_answered(self.sent)
    }

    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// True when there is something to publish.
    pub(crate) fn has_unsent(&self) -> bool {
        self.len > 0 || !self.backlog.is_empty()
    }

    /// Adds a record to the batch being built; gives it back when the slot is busy or full, or older
    /// records are still queued (order per client is issue order).
    #[inline]
    pub(crate) fn try_push<F: FnOnce() + Send>(&mut self, record: F) -> Result<(), F> {
        if self.in_flight || !self.backlog.is_empty() {
            return Err(record);
        }
        // SAFETY: this outbox is the channel's only client and no batch is in flight.
        unsafe { self.channel.slots.push(&mut self.len, record) }
    }

    /// Queues a fire-and-forget record without waiting; `flush` sends it before anything newer.
    pub(crate) fn push_or_queue(&mut self, record: impl FnOnce() + Send + 'static) {
        if let Err(record) = self.try_push(record) {
            self.backlog.push_back(Box::new(record));
        }
    }

    /// Publishes the batch being built, topped up from the backlog, if the slot is free.
    pub(crate) fn flush(&mut self) -> bool {
        if self.in_flight {
            return false;
        }
        while let Some(record) = self.backlog.pop_front() {
            // SAFETY: as in `try_push`.
            if let Err(record) = unsafe { self.channel.slots.push(&mut self.len, record) } {
                self.backlog.push_front(record);
                break;
            }
        }
        if self.len == 0 {
            return false;
        }
        self.sent = self.sent.wrapping_add(1);
        // SAFETY: as in `try_push`.
        unsafe { self.channel.slots.publish(self.sent, self.len) };
        self.len = 0;
        self.in_flight = true;
        self.waiting.append(&mut self.staged);
        self.trustee.wake();
        true
    }

    /// Waits (as a plain thread or a `may` coroutine) until the in-flight batch, if any, is answered.
    fn wait(&mut self, parker: Option<&Parker>) {
        let mut backoff = Backoff::default();
        while self.in_flight && !self.poll() {
            if self.trustee.is_closed() {
                // Checked again after seeing the trustee closed: a batch it finished before closing counts.
                if self.poll() {
                    break;
                }
                panic!(
                    "the trust runtime was shut down while this request was waiting for its trustee"
                );
            }
            if context::in_may_coroutine() {
                may_yield();
            } else if backoff.snooze() {
                let parker = parker.expect("a plain thread's client has a parker");
                let (slots, sent) = (&self.channel.slots, self.sent);
                parker.park_unless(|| slots.is_answered(sent), Duration::from_millis(10));
                backoff.reset();
            }
        }
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("trustee", &self.trustee.index())
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.flush();
        self.channel.closed.store(true, Ordering::Release);
        self.trustee.wake();
    }
}

#[cfg(feature = "may")]
fn may_yield() {
    may::coroutine::yield_now();
}

#[cfg(not(feature = "may"))]
fn may_yield() {
    std::thread::yield_now();
}

/// One client context: an outbox per trustee, created on first use.
#[derive(Debug)]
pub(crate) struct Client {
    outboxes: Vec<Option<Outbox>>,
    parker: Option<Arc<Parker>>,
}

impl Client {
    pub(crate) fn new(parker: Option<Arc<Parker>>) -> Self {
        Client {
            outboxes: Vec::new(),
            parker,
        }
    }

    #[inline]
    pub(crate) fn outbox(&mut self, trustee: &'static TrusteeShared) -> &mut Outbox {
        let i = trustee.index();
        if i >= self.outboxes.len() {
            self.outboxes.resize_with(i + 1, || None);
        }
        let parker = &self.parker;
        self.outboxes[i].get_or_insert_with(|| Outbox::new(trustee, parker.clone()))
    }

    pub(crate) fn outboxes(&mut self) -> impl Iterator<Item = &mut Outbox> {
        self.outboxes.iter_mut().flatten()
    }

    /// Sends `job` to `trustee` and waits for its result, as a plain thread or `may` coroutine.
    fn call<R: Send>(
        &mut self,
        trustee: &'static TrusteeShared,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> R {
        let mut result = None;
        let record = answer_into(&raw mut result, job);
        let parker = self.parker.clone();
        let outbox = self.outbox(trustee);
        outbox.wait(parker.as_deref());
        if outbox.try_push(record).is_err() {
            unreachable!("an idle slot has room for one record (large ones are boxed)");
        }
        outbox.flush();
        let guard = WaitGuard(outbox, parker.as_deref());
        guard.0.wait(guard.1);
        std::mem::forget(guard);
        result.expect("the trustee answered the batch holding this request")
    }

    /// Sends fire-and-forget `job` to `trustee`, waiting only for room.
    fn post(&mut self, trustee: &'static TrusteeShared, job: impl FnOnce() + Send + 'static) {
        let parker = self.parker.clone();
        let outbox = self.outbox(trustee);
        outbox.wait(parker.as_deref());
        outbox.push_or_queue(job);
        outbox.flush();
    }
}

/// Keeps an unwinding caller (a cancelled `may` coroutine) from freeing the memory its answer will be written
/// to: it waits for the answer first.
struct WaitGuard<'a>(&'a mut Outbox, Option<&'a Parker>);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        while self.0.in_flight && !self.0.poll() && !self.0.trustee.is_closed() {
            std::thread::yield_now();
        }
    }
}

struct Answer<R>(*mut Option<R>);
// SAFETY: the record holding it writes the answer once on the trustee, while the caller waits without reading
// it; the caller reads it after the batch is answered (Acquire), which orders the write before the read.
unsafe impl<R: Send> Send for Answer<R> {}

/// A record that runs `job` and stores its result in `*out`. The caller must keep `out` alive and unread until
/// the batch holding the record is answered. `job` must not unwind (delegated closures are run through
/// `property::apply_caught`).
pub(crate) fn answer_into<R: Send, J: FnOnce() -> R + Send>(
    out: *mut Option<R>,
    job: J,
) -> impl FnOnce() + Send + use<R, J> {
    let out = Answer(out);
    move || {
        let out = out;
        let r = job();
        // SAFETY: see `Answer`.
        unsafe { *out.0 = Some(r) }
    }
}

thread_local! {
    static THREAD_CLIENT: RefCell<Option<Client>> = const { RefCell::new(None) };
    static MAY_POOL: RefCell<Vec<Client>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with the calling thread's client context (a worker's, or a plain thread's), or with a fresh one
/// if the thread-local is already destroyed (a handle dropped by another thread-local's destructor).
fn with_thread_client<R>(f: impl FnOnce(&mut Client) -> R) -> R {
    if let Some(worker) = context::worker() {
        return f(&mut worker.client.borrow_mut());
    }
    let mut f = Some(f);
    let r = THREAD_CLIENT.try_with(|c| {
        let mut c = c.borrow_mut();
        let client = c.get_or_insert_with(|| Client::new(Some(Arc::new(Parker::current()))));
        (f.take().unwrap())(client)
    });
    match r {
        Ok(r) => r,
        Err(_) => (f.take().unwrap())(&mut Client::new(Some(Arc::new(Parker::current())))),
    }
}

/// Runs `f` with a client context borrowed from the current thread's `may` pool, returned to the pool of the
/// thread the coroutine is on when `f` is done.
fn with_may_client<R>(f: impl FnOnce(&mut Client) -> R) -> R {
    let mut client = may_pool_pop().unwrap_or_else(|| Client::new(None));
    let r = f(&mut client);
    may_pool_push(client);
    r
}

#[inline(never)]
fn may_pool_pop() -> Option<Client> {
    MAY_POOL.with(|p| p.borrow_mut().pop())
}

/// Not inlined: the coroutine may be on another thread than at `may_pool_pop`, and the thread-local's address
/// must be computed anew.
#[inline(never)]
fn may_pool_push(client: Client) {
    MAY_POOL.with(|p| p.borrow_mut().push(client))
}

/// Runs `job` on `trustee` (a different trustee from the caller's own) and returns its result, suspending the
/// calling fiber or coroutine, or blocking the calling thread, meanwhile.
pub(crate) fn call<R: Send>(
    trustee: &'static TrusteeShared,
    job: impl FnOnce() -> R + Send + 'static,
) -> R {
    if context::worker().is_some() {
        if context::in_delegated() || context::fiber().is_none() {
            panic!("{}", context::NESTED_BLOCKING);
        }
        return fiber::call(trustee, job);
    }
    trustee.check_running();
    if context::in_may_coroutine() {
        with_may_client(|c| c.call(trustee, job))
    } else {
        with_thread_client(|c| c.call(trustee, job))
    }
}

/// Sends fire-and-forget `job` to `trustee`. Never blocks on a worker (the record is queued if the slot is
/// busy); elsewhere waits at most for the previous batch to be answered.
pub(crate) fn post(trustee: &'static TrusteeShared, job: impl FnOnce() + Send + 'static) {
    if let Some(worker) = context::worker() {
        worker
            .client
            .borrow_mut()
            .outbox(trustee)
            .push_or_queue(job);
        return;
    }
    if context::in_may_coroutine() {
        with_may_client(|c| c.post(trustee, job))
    } else {
        with_thread_client(|c| c.post(trustee, job))
    }
}
