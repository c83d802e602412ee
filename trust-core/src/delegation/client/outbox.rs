//! A client's end of its channels: one [`Outbox`] per trustee it talks to — building the next batch while up
//! to two are in flight (one per lane), publishing, copying results out of the response slots, or sending a
//! plain thread's blocking call that is alone on its channel at once, with none of that bookkeeping
//! (`call_alone`) — and
//! [`Client`], a client context's outboxes with the ways a non-worker client waits for an answer (a `may`
//! coroutine yields to `may`; a plain thread spins, yields, then parks until the trustee wakes it). No
//! thread-locals and no fibers here: which context a caller uses is decided in `call.rs`.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::rc::Rc;

use crate::delegation::trustee::job::{Job, Reply};
use crate::delegation::protocol::parker::{Backoff, Parker};
use crate::delegation::protocol::slot::{self, Batch, Cursor, LANES, Queued, Record};
use crate::delegation::client::then::{Answered, Cont, Inbox, Next, Pending, Ready};
use crate::delegation::protocol::channel::Channel;
use crate::delegation::stack;
use crate::delegation::trustee::shared::{self, TrusteeShared};
use crate::delegation::trustee::unwind;

/// A lone call's batch of one record, of a `J`, in flight (`Outbox::publish_alone`): its result is read once,
/// either by `take_alone` or, after `await_alone` took this, by `poll`.
pub(crate) struct Alone<J> {
    seq: u32,
    job: PhantomData<fn() -> J>,
}

/// A caller waiting for the result of a record (a plain thread, a `may` coroutine or a worker fiber): `take`
/// moves it into the caller's `Option<R>` at `dst`, which the caller keeps alive, and `None`, until then, or
/// drops it when `dst` is null (a caller that stopped waiting, see `WaitGuard`).
struct Caller {
    /// Where the result is in the batch's response body.
    at: usize,
    bytes: usize,
    dst: *mut (),
    take: unsafe fn(*const u8, *mut ()),
}

impl Caller {
    /// The receiver of a caller waiting for an `R` in `*dst`, at `at` in the response body.
    fn new<R>(at: usize, dst: *mut Option<R>) -> Self {
        /// # Safety
        /// `src` holds a result written by `write_result::<R>`, read once; `dst` is a live `Option<R>` that
        /// is `None`, or null.
        unsafe fn take<R>(src: *const u8, dst: *mut ()) {
            // SAFETY: by the contract.
            let result = unsafe { slot::read_result::<R>(src) };
            if dst.is_null() {
                // Nobody waits for it any more (a cancelled `may` coroutine's call): dropped here, in the middle
                // of reading a batch's results, where a destructor's panic must not unwind (review 53).
                if unwind::drop_quietly(result) {
                    eprintln!("trust: a result nobody waited for any more panicked when dropped");
                }
                return;
            }
            // Written without reading: `None` has nothing to drop, and with hundreds of fibers the waiting
            // fiber's frame is a cache miss, which an assignment (a load, to drop the old value) waited for.
            // SAFETY: by the contract.
            unsafe { dst.cast::<Option<R>>().write(Some(result)) }
        }
        Caller {
            at,
            bytes: slot::result_bytes::<R>(),
            dst: dst.cast(),
            take: take::<R>,
        }
    }
}

/// What the client keeps about one published batch until it is answered.
#[derive(Debug, Default)]
struct Flight {
    /// Callers waiting for its records, at the front of `Outbox::callers` when it is the oldest in flight.
    callers: usize,
    /// Bytes of results its records write.
    results: usize,
    /// Continuations of its `apply_then` records, in issue order.
    thens: Vec<Cont>,
    /// Worker fibers whose requests it holds.
    fibers: Vec<usize>,
}

/// A client's end of one channel.
pub(crate) struct Outbox {
    channel: Arc<Channel>,
    trustee: &'static TrusteeShared,
    /// The next batch, built in the client's memory while earlier ones are in flight.
    batch: Batch,
    /// A plain thread's `apply_then` tries to publish again only once the batch holds this many records
    /// (`Client::post_then`): set past the count when both lanes were busy.
    retry_at: usize,
    /// Numbers of the last published batch and of the last answered one; the batches between (at most
    /// `LANES`) are in flight.
    sent: u32,
    done: u32,
    /// The batches in flight, by lane (`seq % LANES`).
    flights: [Flight; LANES as usize],
    /// Records that found the batch full where the caller could not wait (a worker's scheduler or delegated
    /// closure): sent first, in order, each with its continuation if it is an `apply_then`'s.
    backlog: VecDeque<(Box<dyn Queued>, Option<Cont>)>,
    /// Callers waiting for records of the batches in flight (oldest first), then of the batch being built
    /// (the last `callers_building`), in record order.
    callers: VecDeque<Caller>,
    callers_building: usize,
    /// Continuations of `apply_then` (in issue order): of the batch being built, and of answered batches,
    /// with their results, waiting to run; then emptied batches kept for reuse.
    building: Vec<Cont>,
    answered: VecDeque<Answered>,
    spare: Vec<Answered>,
    /// Worker fibers whose batches were answered (to wake), whose requests are in the batch being built, or
    /// that wait for room (oldest first).
    pub(crate) answered_fibers: Vec<usize>,
    pub(crate) staged: Vec<usize>,
    pub(crate) blocked: VecDeque<Blocked>,
    /// Bytes of results the backlog's records reserve (`linger`'s bound).
    backlog_results: usize,
    /// Set when `pace` gave up waiting for the trustee, to the last batch answered then; cleared once it
    /// answers another.
    impatient: Option<u32>,
}

/// A worker fiber waiting for room in the batch being built.
pub(crate) struct Blocked {
    fiber: usize,
    /// Its request, when the worker can move it into a batch for it: then the fiber wakes only with its answer,
    /// not once more just to push (with 256 fibers per worker and two batches of at most 71 requests in flight,
    /// nearly half the requests of a saturated worker waited for room, each costing two more switches).
    /// `None`: the fiber pushes its request itself when woken (an `apply_then`, whose continuation goes too).
    record: Option<BlockedRecord>,
}

struct BlockedRecord {
    /// The record, in the suspended fiber's frame, and where its result goes.
    record: *mut (),
    dst: *mut (),
    /// Moves the record into the batch being built if it fits (`push_blocked::<J>`).
    push: unsafe fn(&mut Outbox, *mut (), *mut ()) -> bool,
}

impl Blocked {
    /// A fiber that pushes its own request when woken.
    pub(crate) fn to_wake(fiber: usize) -> Self {
        Blocked { fiber, record: None }
    }

    /// A fiber whose request waits at `record`, its result to go to `dst`, until the worker moves it into a
    /// batch ([`Outbox::take_blocked`]).
    ///
    /// # Safety
    /// `record` holds a `Reply<J>` and `dst` an `Option<J::Output>`, both in the frame of the fiber, which
    /// stays suspended until its answer (or forever: abandoned at shutdown, the record is then leaked); the
    /// fiber does not use the record again.
    pub(crate) unsafe fn with_record<J: Job<Output: Send>>(
        fiber: usize,
        record: *mut Reply<J>,
        dst: *mut Option<J::Output>,
    ) -> Self {
        /// # Safety
        /// As for `with_record`, and the record is still there (not pushed yet).
        unsafe fn push_blocked<J: Job<Output: Send>>(outbox: &mut Outbox, record: *mut (), dst: *mut ()) -> bool {
            // SAFETY: by the contract; the record is moved out, and written back if it does not fit.
            let r = unsafe { std::ptr::read(record.cast::<Reply<J>>()) };
            match outbox.try_push_call(r, dst.cast()) {
                Ok(()) => true,
                // SAFETY: as above.
                Err(r) => unsafe {
                    std::ptr::write(record.cast::<Reply<J>>(), r);
                    false
                },
            }
        }
        Blocked {
            fiber,
            record: Some(BlockedRecord {
                record: record.cast(),
                dst: dst.cast(),
                push: push_blocked::<J>,
            }),
        }
    }
}

impl Outbox {
    fn new(trustee: &'static TrusteeShared, parker: Option<Arc<Parker>>) -> Self {
        let channel = Channel::new(parker);
        trustee.register(channel.clone());
        Outbox {
            channel,
            trustee,
            batch: Batch::new(),
            retry_at: 0,
            sent: 0,
            done: 0,
            flights: Default::default(),
            backlog: VecDeque::new(),
            callers: VecDeque::new(),
            callers_building: 0,
            building: Vec::new(),
            answered: VecDeque::new(),
            spare: Vec::new(),
            answered_fibers: Vec::new(),
            staged: Vec::new(),
            blocked: VecDeque::new(),
            backlog_results: 0,
            impatient: None,
        }
    }

    /// True when the oldest batch in flight has just been answered (once per batch). Its results are copied
    /// out of the response slot: each waiting caller's into its place, and the continuations' all at once into
    /// an [`Answered`] batch, which waits with them until the caller takes it (`take_answered`) to run once it
    /// holds no borrow of the client. Its fibers move to `answered_fibers`, for the worker to wake.
    #[inline]
    pub(crate) fn poll(&mut self) -> bool {
        if !self.poll_peek() {
            return false;
        }
        let seq = self.next_answered();
        self.done = seq;
        // The lane the next publish writes is free now (this one, or the other if it was already).
        self.channel
            .slots
            .prefetch_for_publish(self.sent.wrapping_add(1), self.batch.len());
        let flight = &mut self.flights[(seq % LANES) as usize];
        self.answered_fibers.append(&mut flight.fibers);
        // SAFETY: the batch is answered, and its lane is not published to again before its results are read,
        // once each (here).
        let src = unsafe { self.channel.slots.results(seq) };
        let callers = self.callers.drain(..std::mem::take(&mut flight.callers));
        if flight.thens.is_empty() {
            for c in callers {
                // SAFETY: the caller's record reserved `c.bytes` at `c.at` for its result.
                unsafe { (c.take)(src.add(c.at), c.dst) };
            }
            return true;
        }
        let mut answered = self.spare.pop().unwrap_or_default();
        answered.refill(&mut flight.thens);
        // The results are packed in record order: the continuations' are what the callers' leave.
        let mut from = 0;
        for c in callers {
            // SAFETY: as above; the continuations' results before this caller's are copied once.
            unsafe {
                answered.push_results(src.add(from), c.at - from);
                (c.take)(src.add(c.at), c.dst);
            }
            from = c.at + c.bytes;
        }
        // SAFETY: as above.
        unsafe { answered.push_results(src.add(from), flight.results - from) };
        self.answered.push_back(answered);
        true
    }

    /// True when continuations have their results and wait to run.
    #[inline]
    pub(crate) fn has_answered(&self) -> bool {
        !self.answered.is_empty()
    }

    /// Swaps the oldest answered batch into `into` (which has run: it is empty), to run there; false when
    /// there is none. The emptied batch is kept for its capacity.
    #[inline]
    pub(crate) fn take_answered(&mut self, into: &mut Answered) -> bool {
        let Some(mut ran) = self.answered.pop_front() else {
            return false;
        };
        // Swapped, not moved: the runner's batch stays in place (see `Client::next_ready`). Taken out of the
        // queue first: swapping it in place and then popping it read back, 16 bytes at a time, the lines just
        // stored 16 bytes at a time at other offsets, a store-forwarding stall that `perf` put at 5% of a
        // pipelining thread's samples.
        std::mem::swap(&mut ran, into);
        if ran.is_empty() && self.spare.len() < 4 {
            self.spare.push(ran);
        }
        true
    }

    /// True when the oldest batch in flight is answered, without consuming the event.
    #[inline]
    pub(crate) fn poll_peek(&self) -> bool {
        self.in_flight() && self.channel.slots.is_answered(self.next_answered())
    }

    /// The number of the batch whose answer comes next (the oldest in flight, if any).
    #[inline]
    pub(crate) fn next_answered(&self) -> u32 {
        self.done.wrapping_add(1)
    }

    /// True when a published batch is not answered yet.
    #[inline]
    pub(crate) fn in_flight(&self) -> bool {
        self.sent != self.done
    }

    /// True when a lane is free for the next batch.
    #[inline]
    pub(crate) fn can_publish(&self) -> bool {
        self.sent.wrapping_sub(self.done) < LANES
    }

    /// True when there is something to publish.
    pub(crate) fn has_unsent(&self) -> bool {
        !self.batch.is_empty() || !self.backlog.is_empty()
    }

    /// Adds a record to the batch being built; gives it back when the batch is full or older records are
    /// still queued (order per client is issue order).
    #[inline]
    pub(crate) fn try_push<F: Record>(&mut self, record: F) -> Result<(), F> {
        if !self.backlog.is_empty() {
            return Err(record);
        }
        self.batch.push(record)?;
        self.announce_first();
        Ok(())
    }

    /// Announces the batch once its first record is in. After the push (no user code runs between the two):
    /// the announcement's Release store would make the compiler load the batch's fields again, and check the
    /// room twice.
    #[inline]
    fn announce_first(&self) {
        if self.batch.count() == 1 {
            self.linger();
        }
    }

    /// Adds a record whose caller waits for its result in `*dst`.
    #[inline]
    pub(crate) fn try_push_call<J: Job<Output: Send>>(
        &mut self,
        record: Reply<J>,
        dst: *mut Option<J::Output>,
    ) -> Result<(), Reply<J>> {
        let at = self.batch.reserved();
        self.try_push(record)?;
        self.callers.push_back(Caller::new(at, dst));
        self.callers_building += 1;
        Ok(())
    }

    /// Announces unpublished records, before the caller can let any handle escape. Release: a trustee that
    /// learns of the escape (through another client's batch) then sees the announcement, or the batch
    /// published. The batch being built and the backlog are all sent by batch `sent + 1 +
    /// backlog_batches(..)`: a bound, announced before the flag. A retired property waits for it, so a loose one
    /// keeps values alive for nothing: `sent + 1 + backlog.len()` (a record per batch), with a backlog of a few
    /// hundred, kept 300,000 values dropped by a delegated closure alive until it returned (review 33).
    #[inline]
    fn linger(&self) {
        let backlog = match self.backlog.len() {
            0 => 0,
            n => backlog_batches(n, self.backlog_results),
        };
        let through = self.sent.wrapping_add(1 + backlog as u32);
        self.channel.linger.through.store(through, Ordering::Relaxed);
        self.channel.linger.lingering.store(true, Ordering::Release);
        // A trustee that no longer looks at this channel is told (`protocol::cold`): its retires read only the
        // channels it looks at.
        self.trustee.announced(&self.channel);
    }

    /// True when a record of type `F` can join the batch being built now.
    #[inline]
    pub(crate) fn has_room<F: Record>(&self) -> bool {
        self.backlog.is_empty() && self.batch.has_room::<F>()
    }

    /// Moves the requests of blocked fibers into the batch being built, oldest first, while they fit; a fiber
    /// that pushes its own request is handed to `wake`. Their fibers then wait for the batch's answer.
    pub(crate) fn take_blocked(&mut self, mut wake: impl FnMut(usize)) {
        while let Some(blocked) = self.blocked.front() {
            let fiber = blocked.fiber;
            match &blocked.record {
                Some(r) => {
                    let (push, record, dst) = (r.push, r.record, r.dst);
                    // SAFETY: `Blocked::with_record`'s contract; the entry is removed once its record is moved.
                    if !unsafe { push(self, record, dst) } {
                        return;
                    }
                    self.staged.push(fiber);
                }
                None => wake(fiber),
            }
            self.blocked.pop_front();
        }
    }

    /// Adds the record of an `apply_then` and its continuation `then`, issued by `owner`.
    ///
    /// # Safety
    /// `self.has_room::<F>()`: the caller checked (the only checks of this path).
    #[inline(always)]
    pub(crate) unsafe fn push_then<F: Record, R: 'static, C: FnOnce(R) + 'static>(
        &mut self,
        record: F,
        then: C,
        owner: Rc<Pending>,
    ) {
        // SAFETY: room by the contract (`has_room` includes an empty backlog, so the order is kept).
        unsafe { self.batch.push_unchecked(record) };
        self.announce_first();
        Cont::push_new(&mut self.building, then, owner);
    }

    /// Adds the record of an `apply_then` and its continuation.
    fn try_push_then<F: Record>(
        &mut self,
        record: F,
        then: Cont,
    ) -> Result<(), (F, Cont)> {
        match self.try_push(record) {
            Ok(()) => {
                self.building.push(then);
                Ok(())
            }
            Err(record) => Err((record, then)),
        }
    }

    /// Queues a record that answers nothing, without waiting; `flush` sends it before anything newer.
    pub(crate) fn push_or_queue<F: Record + 'static>(&mut self, record: F) {
        let Err(record) = self.try_push(record) else {
            return;
        };
        self.send_what_fits();
        if let Err(record) = self.try_push(record) {
            self.backlog_results += F::RESULT;
            self.backlog.push_back((Box::new(record), None));
            self.linger();
        }
    }

    /// `push_or_queue` for an `apply_then`.
    pub(crate) fn push_or_queue_then<F: Record + 'static>(&mut self, record: F, then: Cont) {
        let Err((record, then)) = self.try_push_then(record, then) else {
            return;
        };
        self.send_what_fits();
        if let Err((record, then)) = self.try_push_then(record, then) {
            self.backlog_results += F::RESULT;
            self.backlog.push_back((Box::new(record), Some(then)));
            self.linger();
        }
    }

    /// For a caller that found the batch full and cannot wait (a worker's delegated closure, continuation or
    /// scheduler): takes in the answers that have come and publishes the batch if that freed a lane, without
    /// waiting. Else a long delegated closure that keeps entrusting to (or `apply_then`-ing on) another
    /// trustee queued every record from the first full batch on until it returned, however fast that trustee
    /// was: 300,000 entrust/drop pairs of 256-byte values grew the worker's backlog, and the values it kept
    /// alive, by 226 MiB (review 33). What the poll answers waits for the worker's loop (`collect_answers`):
    /// the fibers to wake, the continuations to run.
    #[cold]
    pub(crate) fn send_what_fits(&mut self) {
        while self.poll() {}
        self.flush();
    }

    /// For a caller that cannot wait for good (a worker's delegated closure or continuation) when the trustee
    /// has fallen behind it (`caught_up` is false): takes answers in and publishes what fits
    /// (`send_what_fits`) until the trustee has caught up, so that a closure that keeps entrusting values to
    /// another trustee goes at that trustee's pace, as a thread or a fiber does, instead of queuing them all
    /// (review 33). It waits only while the trustee answers: one that answers none of this outbox's batches
    /// for `PACING_PATIENCE` may be waiting for the caller's own (two closures feeding each other's trustees),
    /// so this outbox stops pacing until it answers one, and the caller's records queue meanwhile.
    #[cold]
    pub(crate) fn pace(&mut self, caught_up: impl Fn() -> bool) {
        if let Some(stuck_at) = self.impatient {
            self.send_what_fits();
            if self.done == stuck_at {
                return;
            }
            self.impatient = None;
        }
        let (mut done, mut since) = (self.done, Instant::now());
        while !caught_up() && !self.trustee.is_closed() {
            self.send_what_fits();
            if self.done != done {
                (done, since) = (self.done, Instant::now());
            } else if since.elapsed() >= PACING_PATIENCE {
                self.impatient = Some(done);
                return;
            }
            std::hint::spin_loop();
        }
    }

    /// Publishes the batch being built, topped up from the backlog, if a lane is free.
    #[inline]
    pub(crate) fn flush(&mut self) -> bool {
        if !self.can_publish() {
            return false;
        }
        while let Some((record, then)) = self.backlog.pop_front() {
            let result = record.result_bytes();
            if let Err(record) = self.batch.push_queued(record) {
                self.backlog.push_front((record, then));
                break;
            }
            self.backlog_results -= result;
            self.building.extend(then);
        }
        if self.batch.is_empty() {
            return false;
        }
        let results = self.batch.reserved();
        let seq = self.publish();
        // `linger`'s bound holds: each batch published with records left in the backlog took a batch's worth.
        debug_assert!(
            self.backlog.is_empty()
                || self.channel.linger.through.load(Ordering::Relaxed).wrapping_sub(seq) as i32
                    >= backlog_batches(self.backlog.len(), self.backlog_results) as i32,
            "records left in the backlog must go by the batch `linger` announced"
        );
        if self.backlog.is_empty() {
            // After the publication: a trustee that reads `false` also sees the batch.
            self.channel.linger.lingering.store(false, Ordering::Release);
        }
        let flight = &mut self.flights[(seq % LANES) as usize];
        flight.callers = std::mem::take(&mut self.callers_building);
        flight.results = results;
        // The flight's vector is empty (its batch ran): the next batch is built in its capacity.
        std::mem::swap(&mut flight.thens, &mut self.building);
        flight.fibers.append(&mut self.staged);
        self.trustee.published(&self.channel);
        true
    }

    /// Publishes the batch being built as the next batch and returns its number; the caller has checked that a
    /// lane is free (`can_publish`).
    #[inline]
    fn publish(&mut self) -> u32 {
        debug_assert!(self.can_publish());
        let seq = self.sent.wrapping_add(1);
        self.sent = seq;
        self.retry_at = 0;
        // SAFETY: this outbox is the channel's only client, and the lane's previous batch is answered and its
        // results read (`poll` counted it done): the caller checked `can_publish`.
        unsafe { self.channel.slots.publish(seq, &mut self.batch) };
        seq
    }

    /// True when a batch in flight carries something of this outbox's to take back when it is answered: a
    /// waiting caller's result, a continuation (and its result), or a fiber to wake.
    fn awaits_answer(&self) -> bool {
        let mut seq = self.done;
        while seq != self.sent {
            seq = seq.wrapping_add(1);
            let flight = &self.flights[(seq % LANES) as usize];
            if flight.callers != 0 || !flight.thens.is_empty() || !flight.fibers.is_empty() {
                return true;
            }
        }
        false
    }

    /// True when nothing goes on on this channel: nothing unsent, nothing in flight, no fiber waiting for room.
    #[inline]
    pub(crate) fn is_idle(&self) -> bool {
        !self.in_flight() && self.batch.is_empty() && self.backlog.is_empty() && self.blocked.is_empty()
    }

    /// A plain thread's blocking call alone on its channel (`is_idle`): the record is published at once as a
    /// batch of its own, and the result read straight from the response slot when the answer is seen. None of
    /// the bookkeeping that lets a batch carry waiting callers and continuations is needed: no caller queue, no
    /// flight record, no announcement of unpublished records (no user code runs between the push and the
    /// publish, so no handle escapes meanwhile). That took 12-15 ns off a 150 ns round trip (`paired`, eight
    /// alternating runs: 1.14x -> 0.98x the ring's round trip, the median of their medians). After
    /// `LONE_SPINS` looks the batch is recorded as `poll` expects (the caller, whose result it moves into place)
    /// and the thread waits as every caller does (`wait`: yield, park, a closed trustee noticed). Gives the
    /// record back when the channel is busy.
    ///
    /// Not for `may` coroutines: one cancelled while it waits would leave its result in the slot, undropped,
    /// where the general path moves it into the caller's frame (`WaitGuard`). A lone fiber has its own version,
    /// out of line (`fiber::call_alone`, with `publish_alone`): this one inlined in the remote path of a fiber's
    /// `apply` took a fifth off the `counter` fiber rows, even in a build where it never ran (`--quick
    /// counter`, alternating runs: 77 M ops/s against 96).
    #[inline]
    fn call_alone<J: Job<Output: Send>>(&mut self, record: Reply<J>, parker: &Parker) -> Result<J::Output, Reply<J>> {
        let alone = self.publish_alone(record)?;
        for _ in 0..LONE_SPINS {
            if let Some(output) = self.take_alone(&alone) {
                return Ok(output);
            }
            std::hint::spin_loop();
        }
        let mut result = None;
        self.await_alone(alone, None, &raw mut result);
        while self.in_flight() {
            self.wait(Some(parker), &mut []);
        }
        Ok(result.expect("the trustee answered the batch holding this request"))
    }

    /// A blocking call alone on its channel (a plain thread's `call_alone`, a fiber's `fiber::call_alone`): the
    /// record published at once as a batch of its own when the channel is idle, else given back. The batch's
    /// [`Alone`] then says where its result is: `take_alone` reads it once answered, or `await_alone` leaves it
    /// to `poll`.
    #[inline]
    pub(crate) fn publish_alone<J: Job<Output: Send>>(&mut self, record: Reply<J>) -> Result<Alone<J>, Reply<J>> {
        if !self.is_idle() {
            return Err(record);
        }
        self.batch.push(record)?;
        let seq = self.publish();
        self.trustee.published(&self.channel);
        Ok(Alone { seq, job: PhantomData })
    }

    /// The one result of `alone`'s batch, once it is answered; then `alone` is done with.
    #[inline]
    pub(crate) fn take_alone<J: Job<Output: Send>>(&mut self, alone: &Alone<J>) -> Option<J::Output> {
        debug_assert!(alone.seq == self.sent && alone.seq == self.next_answered(), "not this outbox's lone batch");
        if !self.channel.slots.is_answered(alone.seq) {
            return None;
        }
        self.done = alone.seq;
        // SAFETY: an `Alone<J>` is made only by `publish_alone`, for its batch of one `Reply<J>` record, and
        // taken by `await_alone` (which hands the result to `poll`): the batch is answered, its lane is not
        // published to before this read (it was the only one in flight), and its one result, a `J::Output`
        // written at offset 0, is read once, here (`done` moved past it).
        Some(unsafe { slot::read_result::<J::Output>(self.channel.slots.results(alone.seq)) })
    }

    /// `alone`'s batch, unanswered yet, recorded as `poll` expects, as the oldest (only) batch in flight: its
    /// caller first, its result at the start of the body. `poll` moves the result into `*dst` and, for a fiber,
    /// hands its worker `fiber` to wake.
    pub(crate) fn await_alone<J: Job<Output: Send>>(
        &mut self,
        alone: Alone<J>,
        fiber: Option<usize>,
        dst: *mut Option<J::Output>,
    ) {
        debug_assert!(alone.seq == self.sent && alone.seq == self.next_answered(), "not this outbox's lone batch");
        self.callers.push_front(Caller::new(0, dst));
        let flight = &mut self.flights[(alone.seq % LANES) as usize];
        debug_assert!(flight.callers == 0 && flight.fibers.is_empty() && flight.thens.is_empty());
        flight.callers = 1;
        flight.fibers.extend(fiber);
    }

    /// Publishes and waits (as a plain thread or a `may` coroutine) until a record of type `F` can join the
    /// batch being built; false when the trustee has shut down instead (see [`Outbox::try_wait`]).
    #[inline(never)]
    fn make_room<F: Record>(&mut self, parker: Option<&Parker>) -> bool {
        while !self.has_room::<F>() {
            if !self.flush() && !self.try_wait(parker, &mut []) {
                return false;
            }
        }
        true
    }

    /// [`Outbox::try_wait`], with the shutdown panic when the trustee has shut down.
    fn wait(&mut self, parker: Option<&Parker>, others: &mut [&mut Outbox]) {
        if !self.try_wait(parker, others) {
            panic!("{}", shared::closed_message(WAITED_PAST_SHUTDOWN));
        }
    }

    /// Waits until the oldest batch in flight, if any, is answered: a `may` coroutine's borrowed client (no
    /// `parker`) yields to `may`; a thread's client (`parker`) spins, then parks its thread, even when a `may`
    /// coroutine uses it (its `apply_then`, `wait_pending`): the thread's client stays borrowed meanwhile, so
    /// the coroutine must not let another run on the thread, nor move to another thread. False when the
    /// trustee shut down first: nothing more will be answered. A caller still holding a request then returns
    /// it, to be dropped once the client's borrow has ended (its destructors may call the runtime).
    ///
    /// Meanwhile the unsent records of `others` (the client's other outboxes: see `Client::call`) go out as
    /// their lanes free, and their answers end a park too.
    fn try_wait(&mut self, parker: Option<&Parker>, others: &mut [&mut Outbox]) -> bool {
        let mut backoff = Backoff::client();
        let mut may = (parker.is_none()).then(MayWait::default);
        while self.in_flight() && !self.poll() {
            if self.trustee.is_closed() {
                // Checked again after seeing the trustee closed: a batch it finished before closing counts.
                return self.poll();
            }
            for other in others.iter_mut().filter(|o| o.has_unsent()) {
                other.poll();
                other.flush();
            }
            if let Some(may) = &mut may {
                may.snooze();
            } else if let Some(parker) = parker.filter(|_| backoff.snooze()) {
                let (slots, next) = (&self.channel.slots, self.next_answered());
                let others = &*others;
                parker.park_unless(
                    || slots.is_answered(next) || others.iter().any(|o| o.has_unsent() && o.poll_peek()),
                    Duration::from_millis(10),
                );
                backoff.reset();
            }
        }
        true
    }
}

/// The panic of a caller whose trustee shut down while it waited for an answer or for room.
pub(crate) const WAITED_PAST_SHUTDOWN: &str =
    "the trust runtime was shut down while this request was waiting for its trustee";

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("trustee", &self.trustee.index())
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// Drops, unrun, the records of the batches in flight that the trustee, now closed, never took (see
    /// `Worker::close`): published while or after it shut down. True when a destructor panicked.
    fn drop_untaken(&mut self) -> bool {
        // Batches it answered first: one that forgot this channel (closed, every batch served) stored no
        // `taken` in it.
        while self.poll() {}
        let taken = self.channel.taken.load(Ordering::Acquire);
        let mut panicked = false;
        let mut seq = self.next_answered();
        while self.in_flight() {
            if seq == taken {
                // Taken, not answered: paused, its records from the pause on dropped by the trustee.
                panicked |= self.drop_written(seq);
            // Batch numbers wrap: `seq` comes after `taken` when the distance is less than half the range.
            } else if seq.wrapping_sub(taken).wrapping_sub(1) < u32::MAX / 2 {
                // SAFETY: published, and never taken by the trustee, which has stopped for good.
                panicked |= unsafe { self.channel.slots.drop_batch(seq, Cursor::default()) } > 0;
            }
            self.done = seq;
            seq = seq.wrapping_add(1);
        }
        panicked
    }

    /// Batch `seq` in flight, which the trustee paused and then shut down in: drops the continuations whose
    /// records ran before the pause with the results they wrote (the channel's `written` bytes at the front of
    /// its answer); the others (no result) are dropped with the flight. True when a destructor panicked.
    fn drop_written(&mut self, seq: u32) -> bool {
        let written = self.channel.written.load(Ordering::Relaxed) as usize;
        let flight = &mut self.flights[(seq % LANES) as usize];
        // SAFETY: the trustee stopped for good after it wrote these results (its store of `taken`, which
        // `drop_untaken` acquired, came after); each is read once, here.
        let src = unsafe { self.channel.slots.results(seq) };
        // Results are packed in record order: waiting callers' rooms lie between the continuations'. A caller
        // whose record ran is a worker fiber, abandoned at shutdown with its frame (see `Scheduler::abandon`).
        let mut callers = self.callers.iter().take(flight.callers).peekable();
        let (mut at, mut panicked) = (0, false);
        for then in std::mem::take(&mut flight.thens) {
            while let Some(c) = callers.next_if(|c| c.at == at) {
                at += c.bytes;
            }
            let bytes = then.result_bytes();
            if at + bytes > written {
                // This one's record and all later ones never ran: dropped without results.
                break;
            }
            // SAFETY: its record ran and wrote its result at `at` (before `written`), read once.
            panicked |= unsafe { then.discard(src.add(at)) };
            at += bytes;
        }
        panicked
    }
}

impl Drop for Outbox {
    /// The client is going away (its thread exits): send what it still holds, and wait until the trustee has
    /// answered every batch that carries something of this outbox's — a continuation, whose result must be
    /// dropped here with it, or a waiting fiber. Only a trustee that has stopped for good answers nothing more.
    /// A batch of records that answer nothing (count changes) is not waited for: the trustee serves it after
    /// the channel is closed (see `Worker::serve`), so a thread leaving such records to a trustee stuck in a
    /// long closure leaves at once (at `exit`, main's thread-locals are dropped before the runtime's shutdown,
    /// which gives up after its bound). Then close the channel. Continuations not yet run are dropped here, on
    /// the issuing thread, with a panic in a destructor contained: nobody is left on this thread to run them.
    fn drop(&mut self) {
        let mut backoff = Backoff::client();
        'send: loop {
            let must_wait = |o: &Self| o.awaits_answer() || (o.has_unsent() && !o.can_publish());
            while self.in_flight() && must_wait(self) && !self.poll() {
                if self.trustee.is_closed() {
                    // Checked again: batches answered just before the trustee stopped count.
                    while self.poll() {}
                    break 'send;
                }
                if backoff.snooze() {
                    match &self.channel.parker {
                        Some(parker) => {
                            let (slots, next) = (&self.channel.slots, self.next_answered());
                            parker.park_unless(|| slots.is_answered(next), Duration::from_millis(10));
                        }
                        None => std::thread::yield_now(),
                    }
                    backoff.reset();
                }
            }
            if self.in_flight() && must_wait(self) {
                // An answer came: look again.
                continue;
            }
            if self.trustee.is_closing() || !self.flush() {
                break;
            }
        }
        self.channel.closed.store(true, Ordering::Release);
        self.trustee.published(&self.channel);
        // Records never published (the batch being built, the backlog) wait for that too: dropped unrun, a
        // property's registration among them drops its value, and the closing trustee may still be serving
        // other clients' requests on it (a worker's fiber entrusted it while both lanes were in flight, and
        // sent a clone away: review 100 saw the value dropped under a closure's `&mut`).
        if (self.in_flight() || self.has_unsent()) && self.trustee.is_closing() {
            // It may have taken them (its last serve) or not: only once it has closed is that settled. It
            // never waits for anyone meanwhile (a worker dropping its own client has closed already).
            while !self.trustee.is_closed() {
                std::thread::yield_now();
            }
        }
        // Not in a forked child: its trustees closed without storing what they took (`close_in_forked_child`),
        // and the parent's worker runs and drops those records; the child's copy of them may be freed already.
        if self.trustee.is_closed() && !shared::in_forked_child() && self.drop_untaken() {
            eprintln!("trust: a destructor panicked while a closed trustee's unrun requests were dropped");
        }
        let thens = (
            std::mem::take(&mut self.answered),
            std::mem::take(&mut self.flights),
            std::mem::take(&mut self.building),
        );
        let backlog = std::mem::take(&mut self.backlog);
        // Each value on its own: a second panic while one unwinds would abort.
        let panicked = backlog
            .into_iter()
            .fold(unwind::drop_quietly(thens), |p, (record, then)| {
                p | unwind::drop_quietly(record) | unwind::drop_quietly(then)
            });
        if panicked {
            eprintln!("trust: a destructor panicked while a client thread's unrun continuations were dropped");
        }
    }
}

/// True when the caller is a `may` coroutine. Out of line on purpose (../shared/DESIGN.md §4): `may` tells it
/// by a thread-local (`generator`'s root context), and some callers are inlined into a user's loop
/// (`on_own_stack` on `apply_then`'s path where the thread's stack is unknown, `apply_then`'s boxing of a
/// closure over `MAY_INLINE` bytes, generic `Fiber::join`), which a `may` coroutine may run while `may` moves it
/// between threads. Inlined, only `generator`'s own `#[inline(never)]` on `ContextStack::current` (0.8.12) kept
/// that read out of the loop; other 0.8 releases, which `may` 0.3 accepts in a user's build, do not mark it so
/// (review 99).
#[inline(never)]
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

/// How a `may` coroutine waits for an answer: it yields to `may` (other coroutines run) for up to 4 ms, then
/// sleeps on `may`'s timer, 16 ms at a time. Nothing wakes a coroutine when its answer comes (its client has
/// no parker), and one that only yields keeps its thread busy when nothing else is ready (a request paused on
/// a held latch waits as long as the latch is held: a coroutine waiting so took a whole core), and keeps the
/// coroutines spawned from outside `may` off its thread (they wait in a global queue, taken only when the
/// thread's own queue is empty). Yielding first keeps a wait on a trustee busy for some hundreds of
/// microseconds about as short as a thread's.
///
/// Few and long sleeps, because `may` 0.3.51's sleep (and park) has a race of its own: `Sleep::subscribe` adds
/// the timer before it records the coroutine's cancel data, so if its thread is preempted for longer than the
/// sleep, the timer thread can wake the coroutine elsewhere, run it to its end and let it be freed before the
/// record is written, a use after free (AddressSanitizer: `CancelImpl::set_co`; and once a heap-corruption
/// abort in a plain CI run, with sleeps of 1 ms, then doubling). A sleep only after 4 ms of waiting, and
/// preempted for over 16 ms: much rarer than every 1 ms wait preempted for 1 ms. Nothing in `may` avoids it
/// (every blocking primitive there parks the same way). Cancelled coroutines' clients settle on a thread
/// (`call::settle_cancelled`), not in sleeping coroutines.
///
/// A cancelled coroutine is never suspended again: once its cancel flag is set, `may`'s yield and sleep return
/// at once (`yield_with`), and raise no second cancel panic while the first unwinds (`check_cancel`). A call
/// made while it unwinds (a destructor's `apply`) then waited in a hot loop, a whole core for as long as the
/// answer took (review 74). A sleep that returns at once while the coroutine unwinds means exactly that: the
/// wait then sleeps the thread instead, as nothing else can run on it meanwhile anyway.
#[derive(Default)]
pub(crate) struct MayWait {
    yields: u32,
    since: Option<Instant>,
    /// True once yielding is over.
    sleeping: bool,
    /// True once `may` has refused to suspend the coroutine (cancelled, and unwinding).
    unsuspendable: bool,
}

impl MayWait {
    const YIELD_FOR: Duration = Duration::from_millis(4);
    /// Each sleep: a thousand coroutines waiting on a held latch, each woken every millisecond, took half a
    /// core.
    const SLEEP: Duration = Duration::from_millis(16);
    /// Each sleep of a thread whose cancelled coroutine `may` no longer suspends: as a plain thread's park
    /// times out, short enough that the answer is seen soon after it comes.
    const THREAD_NAP: Duration = Duration::from_millis(1);

    pub(crate) fn snooze(&mut self) {
        if !self.sleeping {
            self.yields += 1;
            // The clock is read every 64 yields only.
            let long = self.yields.is_multiple_of(64)
                && self.since.get_or_insert_with(Instant::now).elapsed() >= Self::YIELD_FOR;
            if !long {
                return may_yield();
            }
            self.sleeping = true;
        }
        if self.unsuspendable {
            return std::thread::sleep(Self::THREAD_NAP);
        }
        let before = Instant::now();
        may_sleep(Self::SLEEP);
        self.unsuspendable = std::thread::panicking() && before.elapsed() < Self::SLEEP / 4;
    }
}

#[cfg(feature = "may")]
fn may_sleep(d: Duration) {
    may::coroutine::sleep(d);
}

#[cfg(not(feature = "may"))]
fn may_sleep(d: Duration) {
    std::thread::sleep(d);
}

#[cfg(feature = "may")]
pub(crate) fn may_yield() {
    may::coroutine::yield_now();
}

#[cfg(not(feature = "may"))]
pub(crate) fn may_yield() {
    std::thread::yield_now();
}

/// A plain thread's `apply_then`s are published in batches of at least this many, or three quarters of a
/// batch's room (see `Client::post_then`). Measured with one thread pipelining small requests: 16 -> 32 gained
/// 23-28%; 32 -> 48 (and half a batch -> three quarters, which had kept 16-byte records at 36 a batch)
/// gained 8-10% in the VM's slow mode, where two lanes in flight over the cross-core latency bound the row.
const PUBLISH_EVERY: usize = 48;

/// How many more requests a plain thread's `apply_then` adds to a batch it could not publish (both lanes
/// busy) before it tries again.
const RETRY_EVERY: usize = 8;

/// Looks at the answer a lone blocking call takes before it waits as other callers do (`Outbox::wait`, which
/// spins 64 more before it yields): with a `pause` each, about 500 ns, a round trip in this VM's slow mode
/// (its fast one is 120 ns).
const LONE_SPINS: u32 = 16;

/// The most batches a backlog of `n` records, whose results take `results` bytes, needs once the batch being
/// built has gone: `flush` fills each batch from the backlog until the next record does not fit, and a queued
/// record takes `QUEUED` bytes and reserves at most `slot::MAX_INLINE_RESULT` of results, so every batch but
/// the last holds at least `BODY / QUEUED` records or more than `BODY - MAX_INLINE_RESULT` bytes of results.
fn backlog_batches(n: usize, results: usize) -> usize {
    const QUEUED: usize = slot::queued_size();
    n / (slot::BODY / QUEUED) + results / (slot::BODY - slot::MAX_INLINE_RESULT + 1) + 1
}

/// The longest `Outbox::pace` waits for an answer from a trustee before it lets the caller's records queue: a
/// few batches' service even in a debug build, and short enough that two closures feeding each other's
/// trustees lose only this.
const PACING_PATIENCE: Duration = Duration::from_millis(2);

/// One client context: an outbox per trustee, created on first use.
#[derive(Debug)]
pub(crate) struct Client {
    outboxes: Vec<Option<Outbox>>,
    parker: Option<Arc<Parker>>,
    /// Continuations whose results arrived by another way than an outbox's batch (a `launch_then` result, a
    /// worker's local shortcut), waiting to run on this thread.
    pub(crate) ready: Ready,
    /// This thread's `apply_then` bookkeeping (a worker's fibers have their own, in the scheduler).
    pub(crate) pending: Rc<Pending>,
    /// Continuations whose results come later, from `launch_then` fibers.
    pub(crate) inbox: Inbox,
    /// The answered batch whose continuations are being run (see `next_ready`), kept for its capacity.
    running: Answered,
    /// A plain thread's own stack (see [`on_own_stack`](Self::on_own_stack)); `None` for a `may` client, or
    /// where it cannot be told.
    pub(crate) stack: Option<std::ops::Range<usize>>,
}

impl Drop for Client {
    /// Continuations whose results arrived but that never ran: dropped on the issuing thread (the outboxes go
    /// first, each waiting for its in-flight batch), with a panic in a destructor contained.
    fn drop(&mut self) {
        let ready = std::mem::take(&mut self.ready);
        let outboxes = std::mem::take(&mut self.outboxes);
        if unwind::drop_quietly(outboxes) | unwind::drop_quietly(ready) {
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
            running: Answered::default(),
            stack: None,
        }
    }

    /// True when the caller runs on its thread's own stack: not a `may` coroutine that a thread with a client
    /// of its own runs (its continuations must run on the coroutine, which `may` moves between threads). An
    /// address comparison: the pipelining caller's path makes no call into `may` for it.
    #[inline]
    pub(crate) fn on_own_stack(&self) -> bool {
        match &self.stack {
            Some(stack) => stack.contains(&stack::stack_pointer()),
            None => !in_may_coroutine(),
        }
    }

    #[inline]
    pub(crate) fn outbox(&mut self, trustee: &'static TrusteeShared) -> &mut Outbox {
        outbox_in(&mut self.outboxes, &self.parker, trustee)
    }

    pub(crate) fn outboxes(&mut self) -> impl Iterator<Item = &mut Outbox> {
        self.outboxes.iter_mut().flatten()
    }

    /// True when continuations wait to run (their results have arrived).
    #[inline]
    pub(crate) fn has_ready(&self) -> bool {
        !self.running.is_empty()
            || !self.ready.is_empty()
            || self.inbox.has_arrived()
            || self.outboxes.iter().flatten().any(Outbox::has_answered)
    }

    /// The next continuation to run, holding its result, once the caller holds no borrow of the client:
    /// the rest of the batch being run first (a continuation that waits in `wait_pending` runs the others
    /// of its batch this way, in order), then one whose result came by another way than a batch, then the
    /// next answered batch, swapped into `running` (not moved by value: moving a batch right after a
    /// publish made the CPU wait for the publish's stores to reach the trustee's cache, a failed
    /// store-to-load forward, ~9% of the time).
    #[inline]
    pub(crate) fn next_ready(&mut self) -> Option<Next> {
        if let Some(next) = self.running.pop() {
            return Some(next);
        }
        self.next_ready_elsewhere()
    }

    fn next_ready_elsewhere(&mut self) -> Option<Next> {
        self.inbox.collect(&mut self.ready);
        if let Some(then) = self.ready.pop_front() {
            return Some(Next::held(then));
        }
        let running = &mut self.running;
        self.outboxes
            .iter_mut()
            .flatten()
            .any(|o| o.take_answered(running))
            .then(|| running.pop())
            .flatten()
    }

    /// Sends `job` to `trustee` and waits for its result, as a plain thread or `may` coroutine; the request
    /// given back when the trustee shut down while this waited for room (to be dropped outside the client's
    /// borrow).
    pub(crate) fn call<J: Job<Output: Send>>(
        &mut self,
        trustee: &'static TrusteeShared,
        job: J,
    ) -> Result<J::Output, Reply<J>> {
        let mut result = None;
        let mut record = Reply(job);
        // What waits unsent to other trustees goes first: the thread is about to wait, and what it waits for
        // may wait for those requests (a fiber taking a value with `try_unwrap`, or one launched on a latch
        // that this call applies to). What finds both lanes busy goes out while the thread waits.
        let (outbox, mut others, parker) = self.split_for_call(trustee);
        if let Some(parker) = parker.filter(|_| others.is_empty()) {
            match outbox.call_alone(record, parker) {
                Ok(result) => return Ok(result),
                Err(r) => record = r,
            }
        }
        // Room first (the batch may hold `apply_then` records), then send, then wait for this batch.
        while let Err(r) = outbox.try_push_call(record, &raw mut result) {
            record = r;
            if !outbox.flush() && !outbox.try_wait(parker, &mut others) {
                return Err(record);
            }
        }
        let guard = WaitGuard {
            outbox,
            dst: (&raw mut result).cast(),
        };
        // Publish the batch holding the request (once a lane is free), then wait for every batch in flight,
        // this one last.
        while !guard.outbox.flush() && guard.outbox.has_unsent() {
            guard.outbox.wait(parker, &mut others);
        }
        while guard.outbox.in_flight() {
            guard.outbox.wait(parker, &mut others);
        }
        std::mem::forget(guard);
        Ok(result.expect("the trustee answered the batch holding this request"))
    }

    /// Before a call to `trustee` waits: publishes what waits unsent to other trustees, and splits the outboxes
    /// into the one to `trustee` (opened if need be) and the others that still hold unsent records, which go
    /// out while the call waits. Not generic: one copy per crate, not one per job type (inlined in release).
    #[inline]
    fn split_for_call(
        &mut self,
        trustee: &'static TrusteeShared,
    ) -> (&mut Outbox, Vec<&mut Outbox>, Option<&Parker>) {
        let unsent_elsewhere = self.publish_unsent(Some(trustee));
        outbox_in(&mut self.outboxes, &self.parker, trustee);
        let (before, rest) = self.outboxes.split_at_mut(trustee.index());
        let (own, after) = rest.split_first_mut().expect("opened above");
        let others = match unsent_elsewhere {
            false => Vec::new(),
            true => before.iter_mut().chain(after).flatten().filter(|o| o.has_unsent()).collect(),
        };
        (own.as_mut().expect("opened above"), others, self.parker.as_deref())
    }

    /// Sends `record` now if the slot to `trustee` is free and nothing is queued before it; else gives it back.
    pub(crate) fn try_post_now<F: Record + 'static>(&mut self, trustee: &'static TrusteeShared, record: F) -> Option<F> {
        let outbox = outbox_in(&mut self.outboxes, &self.parker, trustee);
        outbox.poll();
        if !outbox.can_publish() || outbox.has_unsent() {
            return Some(record);
        }
        outbox.push_or_queue(record);
        outbox.flush();
        None
    }

    /// Issues an `apply_then` from a plain thread: when the batch is full, waits for the batch in flight
    /// (flow control: memory stays bounded however many are issued; the caller then runs the continuations
    /// answered meanwhile). True when continuations wait to run; the record and the continuation given back
    /// when the trustee shut down while this waited for room. Inlined into `Trust::apply_then`, with the
    /// waiting and the publishing out of line: what is left is the push and two checks.
    #[inline(always)]
    pub(crate) fn post_then<F: Record, R: 'static, C: FnOnce(R) + 'static>(
        &mut self,
        trustee: &'static TrusteeShared,
        record: F,
        then: C,
    ) -> Result<bool, (F, C)> {
        // Cloned first: the count's increment is a store the compiler cannot tell from the outbox's fields, and
        // between the room check and the push it made the push check the room again.
        let owner = self.pending.clone();
        let outbox = outbox_in(&mut self.outboxes, &self.parker, trustee);
        let waited = !outbox.has_room::<F>();
        if waited && !outbox.make_room::<F>(self.parker.as_deref()) {
            // Shut down meanwhile: given back, to be dropped outside the client's borrow.
            return Err((record, then));
        }
        // SAFETY: room checked, or made, just above.
        unsafe { outbox.push_then(record, then, owner) };
        // Publish every `PUBLISH_EVERY` requests (or once three quarters of the batch's room are used, for
        // large records), as a pipelining ring does: a publish costs cache-line transfers both ways, too much
        // to pay per request. The rest goes at the next publish to any trustee (below), blocking call,
        // `wait_pending`, or when the thread exits.
        // Continuations are run from here only then too: answers arrive only by a poll, and others that came
        // meanwhile (a `launch_then` result) wait at most that many requests, or until `wait_pending`.
        // When both lanes are busy, the batch grows and the next try comes `RETRY_EVERY` requests later: trying
        // on each request (a poll and a flush of every outbox) cost a seventh of the thread's instructions.
        // Three quarters of the room can be used before `PUBLISH_EVERY` records only if some are larger than
        // this one, so a small record's push (the usual case) looks at the count only.
        let count = outbox.batch.count();
        let small = 4 * PUBLISH_EVERY * slot::pushed_size::<F>().max(F::RESULT) <= 3 * slot::BODY;
        let mostly_full = || !small && outbox.batch.is_mostly_full();
        if (count >= PUBLISH_EVERY || mostly_full()) && count >= outbox.retry_at {
            return Ok(self.publish_all());
        }
        // The first record of a batch on an idle channel (nothing in flight: every earlier answer taken) goes
        // at once: it may be the thread's last for a long while (a `_then` stub in a `Drop` that gives a permit
        // back, on an executor's thread that then only waits), and an unsent record would wait with it, and
        // keep every value its trustee retires meanwhile waiting for it (review 37). A pipelining thread has a
        // batch in flight when it starts the next one, or has just waited for room (and taken an answer: the
        // rule is not for it), so it still publishes every `PUBLISH_EVERY`, for a compare per request. Not
        // covered: a record issued while an earlier answer is in but not taken (the thread has not called
        // since), and the rest of a burst; they go at the thread's next publish, call or `wait_pending`.
        // Looking at the answers here too made one thread's `apply_then` 6-14% slower (tiny batches), and a
        // client slower than the round trip (under AddressSanitizer, say) publish each request alone.
        if count == 1 && !waited && !outbox.in_flight() {
            return Ok(self.publish_all());
        }
        Ok(false)
    }

    /// Publishes the unsent records of every outbox (but `except`'s) where a lane is free, without waiting:
    /// before the thread blocks (a call, `Fiber::join`). True when some are left unsent (both lanes busy).
    pub(crate) fn publish_unsent(&mut self, except: Option<&'static TrusteeShared>) -> bool {
        let mut left = false;
        for outbox in self.outboxes.iter_mut().flatten() {
            if outbox.has_unsent() && !except.is_some_and(|t| std::ptr::eq(t, outbox.trustee)) {
                outbox.poll();
                outbox.flush();
                left |= outbox.has_unsent();
            }
        }
        left
    }

    /// Parks the calling plain thread, which waits for a signal from elsewhere (a fiber's end, an interval lock),
    /// unless nothing of its own stays unsent: the unsent records go out where a lane is free, and while some
    /// must wait for one (both lanes busy), the thread parks until a trustee's answer frees one (the answer
    /// wakes this parker) or it is unparked, and returns true so that its caller looks again (and calls this
    /// again). False, without parking, when nothing waits for a lane (then the caller parks its usual way): a
    /// trustee that shut down takes nothing more.
    pub(crate) fn park_sending_unsent(&mut self) -> bool {
        self.publish_unsent(None);
        let waits = |o: &Outbox| o.has_unsent() && !o.trustee.is_closed();
        let Some(parker) = self.parker.as_deref().filter(|_| self.outboxes.iter().flatten().any(waits)) else {
            return false;
        };
        let outboxes = &self.outboxes;
        // The timeout notices a trustee that shut down meanwhile (it answers nothing more).
        parker.park_unless(
            || outboxes.iter().flatten().any(|o| waits(o) && o.poll_peek()),
            Duration::from_millis(10),
        );
        true
    }

    /// `post_then`'s publish: the batches for every trustee go out, where a lane is free (a record for one
    /// trustee, a `launch_then` say, must not wait unpublished while the thread goes on with another); one
    /// that could not is tried again `RETRY_EVERY` records later. True when continuations wait to run.
    #[inline(never)]
    fn publish_all(&mut self) -> bool {
        for outbox in self.outboxes.iter_mut().flatten() {
            if outbox.has_unsent() {
                outbox.poll();
                if !outbox.flush() {
                    outbox.retry_at = outbox.batch.count() + RETRY_EVERY;
                }
            }
        }
        self.has_ready()
    }

    /// One step of settling a `may` client that a cancelled coroutine left with a request in flight (see
    /// `WaitGuard`, `call::settle_cancelled`): what is unsent goes out, and the answers that came are taken, the
    /// results nobody waits for any more dropped. True once it is settled: nothing is left in flight, or what
    /// is left waits on trustees that have shut down (dropping the client then drops what they never took,
    /// without waiting, as it would wait for a trustee still running).
    #[cfg(feature = "may")]
    pub(crate) fn settle_step(&mut self) -> bool {
        let mut waiting = false;
        for outbox in self.outboxes.iter_mut().flatten() {
            while outbox.poll() {}
            outbox.flush();
            waiting |= !outbox.is_idle() && !outbox.trustee.is_closed();
        }
        !waiting
    }

    /// True when no outbox holds a request unsent or in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.outboxes.iter().flatten().all(Outbox::is_idle)
    }

    /// Flushes every outbox and waits for one answer; false when nothing is in flight.
    pub(crate) fn progress(&mut self) -> bool {
        let parker = self.parker.clone();
        let mut any = false;
        let mut ready = std::mem::take(&mut self.ready);
        self.inbox.collect(&mut ready);
        let mut answered = false;
        for outbox in self.outboxes() {
            outbox.poll();
            outbox.flush();
            any |= outbox.in_flight();
            answered |= outbox.has_answered();
        }
        if !any && !answered && ready.is_empty() && self.inbox.is_expecting() {
            // Only results from launched fibers are awaited: sleep until one arrives.
            assert!(
                !self.inbox.closed_trustee(),
                "{}",
                shared::closed_message(
                    "the trust runtime was shut down while `wait_pending` waited for a `launch_then` fiber"
                )
            );
            // The fiber's delivery wakes the parker; the timeout only notices a trustee that closed, so it is
            // long (every 1 ms cost 19-28 ms of CPU per second of waiting: review 27).
            if let Some(p) = parker.as_deref() {
                p.park_unless(|| self.inbox.has_arrived(), Duration::from_millis(50));
            } else {
                may_yield();
            }
            self.inbox.collect(&mut ready);
        }
        if any && !answered && ready.is_empty() {
            let mut backoff = Backoff::client();
            let mut may = MayWait::default();
            'wait: loop {
                for outbox in self.outboxes() {
                    if outbox.poll() {
                        break 'wait;
                    }
                    if outbox.trustee.is_closed() && outbox.in_flight() {
                        panic!(
                            "{}",
                            shared::closed_message(
                                "the trust runtime was shut down while `wait_pending` waited for its trustee"
                            )
                        );
                    }
                }
                // A `launch_then` result that arrives meanwhile ends the wait too: its continuation may be what
                // the batch in flight waits for (review 28: a batch queued behind a launched fiber that waited
                // for such a continuation hung `wait_pending` for good).
                if self.inbox.has_arrived() {
                    self.inbox.collect(&mut ready);
                    break;
                }
                // As in `Outbox::wait`: a thread's client parks its thread, even under a `may` coroutine, until a
                // trustee that answers one of its batches, or a fiber that delivers a result, wakes it (the
                // timeout notices a trustee that closed). Not timed naps: 200 us ones burned 43-51 ms of CPU in
                // a 300 ms wait (docs/performance.md, sixteenth session).
                match parker.as_deref() {
                    None => may.snooze(),
                    Some(parker) if backoff.snooze() => {
                        let (outboxes, inbox) = (&self.outboxes, &self.inbox);
                        parker.park_unless(
                            || inbox.has_arrived() || outboxes.iter().flatten().any(Outbox::poll_peek),
                            Duration::from_millis(10),
                        );
                        backoff.reset();
                    }
                    Some(_) => {}
                }
            }
        }
        self.ready = ready;
        any
    }
}
/// The outbox to `trustee`, created on first use (a free function so callers can borrow other fields).
#[inline]
fn outbox_in<'a>(
    outboxes: &'a mut Vec<Option<Outbox>>,
    parker: &Option<Arc<Parker>>,
    trustee: &'static TrusteeShared,
) -> &'a mut Outbox {
    let i = trustee.index();
    // Two steps for the borrow checker: the first use is the cold path.
    if !matches!(outboxes.get(i), Some(Some(_))) {
        open_outbox(outboxes, parker, trustee);
    }
    // SAFETY: `outboxes[i]` is there and `Some` (checked, or opened, just above): not checked twice on the
    // hot path.
    unsafe { outboxes.get_unchecked_mut(i).as_mut().unwrap_unchecked() }
}

#[cold]
fn open_outbox(outboxes: &mut Vec<Option<Outbox>>, parker: &Option<Arc<Parker>>, trustee: &'static TrusteeShared) {
    let i = trustee.index();
    if i >= outboxes.len() {
        outboxes.resize_with(i + 1, || None);
    }
    outboxes[i] = Some(Outbox::new(trustee, parker.clone()));
}

/// Keeps an unwinding caller (a cancelled `may` coroutine) from having its result moved into its frame once
/// that is gone: the result will be dropped instead, when the batch is answered. Not waited for: a cancelled
/// coroutine cannot yield to `may` while it unwinds (`may` returns at once), so waiting would hold its thread,
/// and the other coroutines there, for as long as the request waits (on a held latch, say). A thread of its own
/// takes the client over until the request is answered (`call::with_may_client`, `call::settle_cancelled`).
struct WaitGuard<'a> {
    outbox: &'a mut Outbox,
    /// The caller's `Option` for the result.
    dst: *mut (),
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if let Some(caller) = self.outbox.callers.iter_mut().find(|c| c.dst == self.dst) {
            caller.dst = std::ptr::null_mut();
        }
    }
}
