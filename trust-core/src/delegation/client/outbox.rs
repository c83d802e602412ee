//! A client's end of its channels: one [`Outbox`] per trustee it talks to — building the next batch while one
//! is in flight, publishing, copying results out of the response slot — and [`Client`], a client context's
//! outboxes with the ways a non-worker client waits for an answer (a `may` coroutine yields to `may`; a plain
//! thread spins, yields, then parks until the trustee wakes it). No thread-locals and no fibers here: which
//! context a caller uses is decided in `call.rs`.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use std::rc::Rc;

use crate::delegation::trustee::job::{Job, Reply};
use crate::delegation::protocol::parker::{Backoff, Parker};
use crate::delegation::protocol::slot::{self, Batch, Queued, Record, SlotPair};
use crate::delegation::client::then::{Cont, Inbox, Pending, Ready};
use crate::delegation::protocol::channel::Channel;
use crate::delegation::trustee::shared::TrusteeShared;

/// Who takes the result of a record that answers, in the order of the records.
enum Receiver {
    /// A caller waiting for the result (a plain thread, a `may` coroutine or a worker fiber): `take` moves it
    /// into the caller's `Option<R>` at `dst`, which the caller keeps alive until then (see `WaitGuard`).
    Caller {
        dst: *mut (),
        take: unsafe fn(*const u8, *mut ()),
        bytes: usize,
    },
    /// The next `apply_then` continuation of the outbox.
    Then,
}

impl Receiver {
    /// The receiver of a caller waiting for a `J::Output` in `*dst`.
    fn caller<R>(dst: *mut Option<R>) -> Self {
        /// # Safety
        /// `src` holds a result written by `write_result::<R>`, read once; `dst` is a live `Option<R>`.
        unsafe fn take<R>(src: *const u8, dst: *mut ()) {
            // SAFETY: by the contract.
            unsafe { *dst.cast::<Option<R>>() = Some(slot::read_result::<R>(src)) }
        }
        Receiver::Caller {
            dst: dst.cast(),
            take: take::<R>,
            bytes: slot::result_bytes::<R>(),
        }
    }
}

/// A client's end of one channel.
pub(crate) struct Outbox {
    channel: Arc<Channel>,
    trustee: &'static TrusteeShared,
    /// The next batch, built in the client's memory while the previous one is in flight.
    batch: Batch,
    /// Number of the last published batch.
    sent: u32,
    in_flight: bool,
    /// Records that found the batch full where the caller could not wait (a worker's scheduler or delegated
    /// closure): sent first, in order, each with its receiver.
    backlog: VecDeque<(Box<dyn Queued>, Option<Receiver>)>,
    /// Receivers of the records in the in-flight batch (the first `receivers_in_flight`), then of the batch
    /// being built.
    receivers: VecDeque<Receiver>,
    receivers_in_flight: usize,
    /// Continuations of `apply_then`, in issue order (the in-flight ones first).
    thens: VecDeque<Cont>,
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
            lingering: AtomicBool::new(false),
            through: AtomicU32::new(0),
        });
        trustee.register(channel.clone());
        Outbox {
            channel,
            trustee,
            batch: Batch::new(),
            sent: 0,
            in_flight: false,
            backlog: VecDeque::new(),
            receivers: VecDeque::new(),
            receivers_in_flight: 0,
            thens: VecDeque::new(),
            waiting: Vec::new(),
            staged: Vec::new(),
            blocked: Vec::new(),
        }
    }

    /// True when the in-flight batch has just been answered (once per batch). Its results are copied out of
    /// the response slot, in order: to waiting callers, and into continuations, which move to `ready`, to be
    /// run by the caller once it holds no borrow of the client.
    #[inline]
    pub(crate) fn poll(&mut self, ready: &mut Ready) -> bool {
        if !self.poll_peek() {
            return false;
        }
        self.in_flight = false;
        // SAFETY: the batch is answered and nothing is published before its results are read, once each.
        let mut src = unsafe { self.channel.slots.results() };
        for receiver in self.receivers.drain(..self.receivers_in_flight) {
            // SAFETY: the receivers are in the order of the records that reserved the results.
            unsafe {
                match receiver {
                    Receiver::Caller { dst, take, bytes } => {
                        take(src, dst);
                        src = src.add(bytes);
                    }
                    Receiver::Then => {
                        let mut then = self.thens.pop_front().expect("a continuation per `Then`");
                        src = src.add(then.receive(src));
                        ready.push_back(then);
                    }
                }
            }
        }
        self.receivers_in_flight = 0;
        true
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
        !self.batch.is_empty() || !self.backlog.is_empty()
    }

    /// Adds a record (and who takes its result) to the batch being built; gives it back when the batch is
    /// full or older records are still queued (order per client is issue order).
    #[inline]
    fn try_push_to<F: Record>(&mut self, record: F, receiver: Option<Receiver>) -> Result<(), F> {
        if !self.backlog.is_empty() {
            return Err(record);
        }
        if self.batch.is_empty() {
            self.linger();
        }
        self.batch.push(record)?;
        if let Some(receiver) = receiver {
            self.receivers.push_back(receiver);
        }
        Ok(())
    }

    /// Adds a record whose caller waits for its result in `*dst`.
    #[inline]
    pub(crate) fn try_push_call<J: Job<Output: Send>>(
        &mut self,
        record: Reply<J>,
        dst: *mut Option<J::Output>,
    ) -> Result<(), Reply<J>> {
        self.try_push_to(record, Some(Receiver::caller(dst)))
    }

    /// Announces unpublished records, before the caller can let any handle escape. Release: a trustee that
    /// learns of the escape (through another client's batch) then sees the announcement, or the batch
    /// published. Each publish sends at least one record, so the batch being built and the backlog are all
    /// sent by batch `sent + 1 + backlog.len()`: a bound, announced before the flag.
    #[inline]
    fn linger(&self) {
        let through = self.sent.wrapping_add(1 + self.backlog.len() as u32);
        self.channel.through.store(through, Ordering::Relaxed);
        self.channel.lingering.store(true, Ordering::Release);
    }

    /// Adds the record of an `apply_then` and its continuation.
    pub(crate) fn try_push_then<F: Record>(
        &mut self,
        record: F,
        then: Cont,
    ) -> Result<(), (F, Cont)> {
        match self.try_push_to(record, Some(Receiver::Then)) {
            Ok(()) => {
                self.thens.push_back(then);
                Ok(())
            }
            Err(record) => Err((record, then)),
        }
    }

    /// Queues a record that answers nothing, without waiting; `flush` sends it before anything newer.
    pub(crate) fn push_or_queue<F: Record + 'static>(&mut self, record: F) {
        if let Err(record) = self.try_push_to(record, None) {
            self.backlog.push_back((Box::new(record), None));
            self.linger();
        }
    }

    /// `push_or_queue` for an `apply_then`.
    pub(crate) fn push_or_queue_then<F: Record + 'static>(&mut self, record: F, then: Cont) {
        if let Err((record, then)) = self.try_push_then(record, then) {
            self.backlog.push_back((Box::new(record), Some(Receiver::Then)));
            self.thens.push_back(then);
            self.linger();
        }
    }

    /// Publishes the batch being built, topped up from the backlog, if the slot is free.
    pub(crate) fn flush(&mut self) -> bool {
        if self.in_flight {
            return false;
        }
        while let Some((record, receiver)) = self.backlog.pop_front() {
            if let Err(record) = self.batch.push_queued(record) {
                self.backlog.push_front((record, receiver));
                break;
            }
            self.receivers.extend(receiver);
        }
        if self.batch.is_empty() {
            return false;
        }
        self.sent = self.sent.wrapping_add(1);
        // SAFETY: this outbox is the channel's only client and no batch is in flight.
        unsafe { self.channel.slots.publish(self.sent, &mut self.batch) };
        if self.backlog.is_empty() {
            // After the publication: a trustee that reads `false` also sees the batch.
            self.channel.lingering.store(false, Ordering::Release);
        }
        self.in_flight = true;
        self.receivers_in_flight = self.receivers.len();
        self.waiting.append(&mut self.staged);
        self.trustee.wake();
        true
    }

    /// Waits (as a plain thread or a `may` coroutine) until the in-flight batch, if any, is answered.
    fn wait(&mut self, parker: Option<&Parker>, ready: &mut Ready) {
        let mut backoff = Backoff::client();
        while self.in_flight && !self.poll(ready) {
            if self.trustee.is_closed() {
                // Checked again after seeing the trustee closed: a batch it finished before closing counts.
                if self.poll(ready) {
                    break;
                }
                panic!(
                    "the trust runtime was shut down while this request was waiting for its trustee"
                );
            }
            if in_may_coroutine() {
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
    /// The client is going away (its thread exits): send what it still holds and wait until the trustee has
    /// answered all of it, because until then the trustee may write results into memory this outbox owns (the
    /// continuations' result slots). Only a trustee that has stopped for good writes nothing more. Then close
    /// the channel. Continuations not yet run are dropped here, on the issuing thread, with a panic in a
    /// destructor contained: nobody is left on this thread to run them.
    fn drop(&mut self) {
        let mut ready = Ready::new();
        let mut backoff = Backoff::client();
        loop {
            while self.in_flight && !self.poll(&mut ready) {
                if self.trustee.is_closed() {
                    // Checked again: a batch answered just before the trustee stopped counts.
                    self.poll(&mut ready);
                    break;
                }
                if backoff.snooze() {
                    match &self.channel.parker {
                        Some(parker) => {
                            let (slots, sent) = (&self.channel.slots, self.sent);
                            parker.park_unless(|| slots.is_answered(sent), Duration::from_millis(10));
                        }
                        None => std::thread::yield_now(),
                    }
                    backoff.reset();
                }
            }
            if self.in_flight || self.trustee.is_closing() || !self.flush() {
                break;
            }
        }
        self.channel.closed.store(true, Ordering::Release);
        self.trustee.wake();
        let thens = std::mem::take(&mut self.thens);
        let backlog = std::mem::take(&mut self.backlog);
        if panic::catch_unwind(AssertUnwindSafe(|| drop((ready, thens, backlog)))).is_err() {
            eprintln!("trust: a destructor panicked while a client thread's unrun continuations were dropped");
        }
    }
}

/// True when the caller is a `may` coroutine.
#[inline]
pub(crate) fn in_may_coroutine() -> bool {
    #[cfg(feature = "may")]
    {
        may::coroutine::is_coroutine()
    }
    #[cfg(not(feature = "may"))]
    {
        false
    }
}

#[cfg(feature = "may")]
pub(crate) fn may_yield() {
    may::coroutine::yield_now();
}

#[cfg(not(feature = "may"))]
pub(crate) fn may_yield() {
    std::thread::yield_now();
}

/// A plain thread's `apply_then`s are published in batches of at least this many (see `Client::post_then`).
const PUBLISH_EVERY: usize = 16;

/// One client context: an outbox per trustee, created on first use.
#[derive(Debug)]
pub(crate) struct Client {
    outboxes: Vec<Option<Outbox>>,
    parker: Option<Arc<Parker>>,
    /// Continuations whose results arrived, waiting to run on this thread.
    pub(crate) ready: Ready,
    /// This thread's `apply_then` bookkeeping (a worker's fibers have their own, in the scheduler).
    pub(crate) pending: Rc<Pending>,
    /// Continuations whose results come later, from `launch_then` fibers.
    pub(crate) inbox: Inbox,
}

impl Drop for Client {
    /// Continuations whose results arrived but that never ran: dropped on the issuing thread (the outboxes go
    /// first, each waiting for its in-flight batch), with a panic in a destructor contained.
    fn drop(&mut self) {
        let ready = std::mem::take(&mut self.ready);
        let outboxes = std::mem::take(&mut self.outboxes);
        if panic::catch_unwind(AssertUnwindSafe(|| drop((outboxes, ready)))).is_err() {
            eprintln!("trust: a destructor panicked while a client thread's continuations were dropped");
        }
    }
}

impl Client {
    pub(crate) fn new(parker: Option<Arc<Parker>>) -> Self {
        Client {
            outboxes: Vec::new(),
            inbox: Inbox::new(parker.clone()),
            parker,
            ready: Ready::new(),
            pending: Rc::default(),
        }
    }

    #[inline]
    pub(crate) fn outbox(&mut self, trustee: &'static TrusteeShared) -> &mut Outbox {
        outbox_in(&mut self.outboxes, &self.parker, trustee)
    }

    pub(crate) fn outboxes(&mut self) -> impl Iterator<Item = &mut Outbox> {
        self.outboxes.iter_mut().flatten()
    }

    /// Sends `job` to `trustee` and waits for its result, as a plain thread or `may` coroutine.
    pub(crate) fn call<J: Job<Output: Send>>(&mut self, trustee: &'static TrusteeShared, job: J) -> J::Output {
        let mut result = None;
        let mut record = Reply(job);
        let parker = self.parker.as_deref();
        let outbox = outbox_in(&mut self.outboxes, &self.parker, trustee);
        let ready = &mut self.ready;
        // Room first (the batch may hold `apply_then` records), then send, then wait for this batch.
        while let Err(r) = outbox.try_push_call(record, &raw mut result) {
            record = r;
            outbox.wait(parker, ready);
            outbox.flush();
        }
        let guard = WaitGuard { outbox, ready };
        guard.outbox.wait(parker, guard.ready);
        guard.outbox.flush();
        guard.outbox.wait(parker, guard.ready);
        std::mem::forget(guard);
        result.expect("the trustee answered the batch holding this request")
    }

    /// Sends `record` now if the slot to `trustee` is free and nothing is queued before it; else gives it back.
    pub(crate) fn try_post_now<F: Record + 'static>(&mut self, trustee: &'static TrusteeShared, record: F) -> Option<F> {
        let ready = &mut self.ready;
        let outbox = outbox_in(&mut self.outboxes, &self.parker, trustee);
        outbox.poll(ready);
        if outbox.in_flight || outbox.has_unsent() {
            return Some(record);
        }
        outbox.push_or_queue(record);
        outbox.flush();
        None
    }

    /// Issues an `apply_then` from a plain thread: when the batch is full, serves its own completions until
    /// there is room (flow control: memory stays bounded however many are issued).
    pub(crate) fn post_then<F: Record>(
        &mut self,
        trustee: &'static TrusteeShared,
        record: F,
        then: Cont,
    ) {
        let parker = self.parker.as_deref();
        let outbox = outbox_in(&mut self.outboxes, &self.parker, trustee);
        let ready = &mut self.ready;
        let (mut record, mut then) = (record, then);
        while let Err((r, t)) = outbox.try_push_then(record, then) {
            (record, then) = (r, t);
            outbox.wait(parker, ready);
            outbox.flush();
        }
        // Publish every `PUBLISH_EVERY` requests, as a pipelining ring does: a publish costs the fence of the
        // wake-up handshake and cache-line transfers both ways, too much to pay per request. The rest goes at
        // the next blocking call, `wait_pending`, or when the thread exits.
        if outbox.batch.count() >= PUBLISH_EVERY {
            outbox.poll(ready);
            outbox.flush();
        }
    }

    /// Flushes every outbox and waits for one answer; false when nothing is in flight.
    pub(crate) fn progress(&mut self) -> bool {
        let parker = self.parker.clone();
        let mut any = false;
        let mut ready = std::mem::take(&mut self.ready);
        self.inbox.collect(&mut ready);
        for outbox in self.outboxes() {
            outbox.poll(&mut ready);
            outbox.flush();
            any |= outbox.in_flight();
        }
        if !any && ready.is_empty() && self.inbox.is_expecting() {
            // Only results from launched fibers are awaited: sleep until one arrives.
            assert!(
                !self.inbox.closed_trustee(),
                "the trust runtime was shut down while `wait_pending` waited for a `launch_then` fiber"
            );
            if let Some(p) = parker.as_deref() {
                p.park_unless(|| self.inbox.has_arrived(), Duration::from_millis(1));
            } else {
                may_yield();
            }
            self.inbox.collect(&mut ready);
        }
        if any && ready.is_empty() {
            let mut backoff = Backoff::client();
            'wait: loop {
                for outbox in self.outboxes() {
                    if outbox.poll(&mut ready) {
                        break 'wait;
                    }
                    if outbox.trustee.is_closed() && outbox.in_flight() {
                        panic!(
                            "the trust runtime was shut down while `wait_pending` waited for its trustee"
                        );
                    }
                }
                if in_may_coroutine() {
                    may_yield();
                } else if backoff.snooze() {
                    let parker = parker
                        .as_deref()
                        .expect("a plain thread's client has a parker");
                    parker.park_unless(|| false, Duration::from_micros(200));
                    backoff.reset();
                }
            }
        }
        self.ready = ready;
        any
    }
}
/// The outbox to `trustee`, created on first use (a free function so callers can borrow other fields).
fn outbox_in<'a>(
    outboxes: &'a mut Vec<Option<Outbox>>,
    parker: &Option<Arc<Parker>>,
    trustee: &'static TrusteeShared,
) -> &'a mut Outbox {
    let i = trustee.index();
    if i >= outboxes.len() {
        outboxes.resize_with(i + 1, || None);
    }
    outboxes[i].get_or_insert_with(|| Outbox::new(trustee, parker.clone()))
}

/// Keeps an unwinding caller (a cancelled `may` coroutine) from freeing the `Option` its result will be
/// moved into: it sends the request if it is still unsent and waits for the answer first.
struct WaitGuard<'a> {
    outbox: &'a mut Outbox,
    ready: &'a mut Ready,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let closed = |o: &Outbox| o.trustee.is_closed();
        while self.outbox.has_unsent() && !closed(self.outbox) {
            if !self.outbox.poll(self.ready) && !self.outbox.flush() {
                std::thread::yield_now();
            }
        }
        while self.outbox.in_flight && !self.outbox.poll(self.ready) && !closed(self.outbox) {
            std::thread::yield_now();
        }
    }
}
