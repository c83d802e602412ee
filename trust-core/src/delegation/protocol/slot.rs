//! The request/response slot pairs between one client and one trustee: the delegation hot path.
//!
//! A client builds a [`Batch`] of *records* in its own memory (a [`Record`] each: a monomorphic `run` function
//! pointer followed by the record's bytes), then publishes it: copies it into the body of its [`RequestSlot`]
//! and stores a new sequence number. Building the next batch while earlier ones are in flight is what lets
//! one client keep many requests going. The trustee notices the new number, runs every record in place, and
//! answers by storing the same number in the [`ResponseSlot`]. Results come back through the response slot,
//! as in the paper: each record that answers writes its result into the response body, packed in request
//! order (the batch reserved the room when the record was pushed), and the client copies them out after the
//! answer, in the same order. So the trustee writes only memory of the channel, never the client's own, and
//! the results of a batch arrive on a few consecutive cache lines.
//!
//! A channel has two slot pairs ([`Lanes`]), used in turn by consecutive batches, so a client may have two
//! batches in flight: it publishes the next one while the trustee runs the previous, and the trustee, done
//! with one, finds the next already there. The trustee serves them in the order of their numbers.
//!
//! Layout follows the paper: the request slot's primary block is 128 bytes (one aligned pair of cache lines)
//! holding the sequence number, the batch length and the first records; the overflow block continues it for
//! 1 KiB more, so a batch of small records costs one or two cache-line transfers. The response body has the
//! same size. A record that cannot fit in the body at all (or needs more than 8-byte alignment) is boxed and
//! its box travels instead; a result over [`MAX_INLINE_RESULT`] bytes travels boxed too: the explicit
//! out-of-line paths, never a panic.
//!
//! No read-modify-write instruction is used: each atomic has exactly one writer (the client writes
//! `RequestSlot::seq`, the trustee writes `ResponseSlot::seq`), so plain Release stores and Acquire loads are
//! enough. No `lock`-prefixed instruction is on the request/response path either: the sleep/wake handshake's
//! fence (`parker.rs`, once per published batch and per answer) is a compiler fence there, its hardware half
//! paid by the sleeper (`membarrier`), or a SeqCst fence where `membarrier` is unavailable.
//! The protocol is model-checked under loom (`loom_model` below) and run under Miri (the tests at the bottom
//! of this file).

use std::mem::{ManuallyDrop, MaybeUninit, align_of, size_of};
use std::ptr;

use crate::delegation::protocol::sync::{AtomicU32, Ordering, UnsafeCell};

/// Size of the primary block, header included.
pub(crate) const PRIMARY: usize = 128;
/// Size of the overflow block that continues the primary block.
pub(crate) const OVERFLOW: usize = 1024;
/// Bytes of the slot header (sequence number, batch length, padding) at the start of the primary block.
const SLOT_HEADER: usize = 16;
/// Bytes available for records in one batch.
pub(crate) const BODY: usize = PRIMARY - SLOT_HEADER + OVERFLOW;
/// Every record starts at a multiple of this, and this is the largest closure alignment stored inline.
const RECORD_ALIGN: usize = 8;
/// Bytes of a record header: the `run` pointer.
const RECORD_HEADER: usize = 8;

/// Results larger than this (or more than 8-aligned) travel boxed.
pub(crate) const MAX_INLINE_RESULT: usize = 256;

/// A value a client sends to a trustee, which runs it once.
pub(crate) trait Record: Send + Sized {
    /// Bytes of the response body this record writes its result into: [`result_bytes`] of the result type,
    /// or 0 for a record that answers nothing.
    const RESULT: usize;
    /// Runs the record on the trustee. `out` points at `RESULT` bytes of the response body reserved for this
    /// record, 8-aligned; the record must write its result there with [`write_result`] (if `RESULT > 0`).
    /// Returns true when the record paused its batch instead (see `trustee::job`): the batch stops after it.
    fn run(self, out: *mut u8) -> bool;
}

/// Bytes a result of type `T` takes in the response body.
pub(crate) const fn result_bytes<T>() -> usize {
    if result_inline::<T>() {
        size_of::<T>().next_multiple_of(RECORD_ALIGN)
    } else {
        size_of::<Box<T>>()
    }
}

const fn result_inline<T>() -> bool {
    size_of::<T>() <= MAX_INLINE_RESULT && align_of::<T>() <= RECORD_ALIGN
}

/// Writes a result into the room a record reserved for it.
///
/// # Safety
/// `out` points at `result_bytes::<T>()` writable bytes, 8-aligned, that hold no value.
pub(crate) unsafe fn write_result<T>(out: *mut u8, value: T) {
    // SAFETY: by the contract (a box when the value is too big to travel inline).
    unsafe {
        if result_inline::<T>() {
            ptr::write(out.cast::<T>(), value)
        } else {
            ptr::write(out.cast::<Box<T>>(), Box::new(value))
        }
    }
}

/// Moves a result out of the response body.
///
/// # Safety
/// `src` is where a record wrote a `T` with `write_result`, and it is read once.
pub(crate) unsafe fn read_result<T>(src: *const u8) -> T {
    // SAFETY: by the contract.
    unsafe {
        if result_inline::<T>() {
            ptr::read(src.cast::<T>())
        } else {
            *ptr::read(src.cast::<Box<T>>())
        }
    }
}

/// Reads the record that follows the header, runs it with the room reserved for its result, and returns the
/// record's size and its result's size (the offsets of the next record and result), which it knows statically.
/// The size's lowest bit (a size is a multiple of `RECORD_ALIGN`) says the record paused its batch: the batch
/// loop learns it from the value it reads anyway, not from a thread-local after every record. A null room
/// means the record is to be dropped unrun (`Batch::drop`); then the second value is 1 if its destructor
/// panicked, else 0.
type Run = unsafe fn(*mut u8, *mut u8) -> (usize, usize);

/// The bit of a [`Run`]'s size that says the record paused its batch.
const PAUSED: usize = 1;
const _: () = assert!(RECORD_ALIGN > PAUSED);

#[repr(C, align(16))]
struct Body([MaybeUninit<u8>; BODY]);

/// Written by the client, read by the trustee.
#[repr(C, align(128))]
struct RequestSlot {
    /// Number of the last published batch (wrapping).
    seq: AtomicU32,
    /// Bytes of records in the last published batch; written before `seq` is published.
    len: UnsafeCell<u32>,
    body: UnsafeCell<Body>,
}

/// Written by the trustee, read by the client; on its own cache lines so polling it does not disturb the
/// request slot.
#[repr(C, align(128))]
struct ResponseSlot {
    /// Number of the last batch the trustee has finished.
    seq: AtomicU32,
    /// The results of that batch, packed in request order; the client reads them before it publishes again.
    body: UnsafeCell<Body>,
}

/// One client's channel to one trustee. Exactly one client and one trustee use it; see each method's
/// contract.
#[derive(Debug)]
pub(crate) struct SlotPair {
    request: RequestSlot,
    response: ResponseSlot,
}

impl std::fmt::Debug for RequestSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSlot")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ResponseSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseSlot")
            .field("seq", &self.seq)
            .finish()
    }
}

const fn record_size(payload: usize) -> usize {
    (RECORD_HEADER + payload).next_multiple_of(RECORD_ALIGN)
}

/// Bytes of the body a record queued boxed (`Batch::push_queued`) takes.
pub(crate) const fn queued_size() -> usize {
    record_size(size_of::<Box<dyn Queued>>())
}

/// Bytes of the body a record of type `F` takes (boxed first if it does not fit inline).
pub(crate) const fn pushed_size<F: Record>() -> usize {
    if const { fits_inline::<F>() } {
        record_size(size_of::<F>())
    } else {
        record_size(size_of::<Box<F>>())
    }
}

/// True when records of type `F` travel inline (false: they are boxed first).
pub(crate) const fn fits_inline<F>() -> bool {
    align_of::<F>() <= RECORD_ALIGN && record_size(size_of::<F>()) <= BODY
}

unsafe fn run_inline<F: Record>(payload: *mut u8, out: *mut u8) -> (usize, usize) {
    // SAFETY: `Batch::push` wrote an `F` at `payload` (aligned to RECORD_ALIGN >= align_of::<F>()), and each
    // record is run (or dropped) exactly once, so reading it out moves the record.
    let f = unsafe { ptr::read(payload.cast::<F>()) };
    if out.is_null() {
        return (record_size(size_of::<F>()), discard(f));
    }
    let paused = f.run(out);
    (record_size(size_of::<F>()) | usize::from(paused), F::RESULT)
}

unsafe fn run_boxed<F: Record>(payload: *mut u8, out: *mut u8) -> (usize, usize) {
    // SAFETY: as in `run_inline`, with a `Box<F>` in place of the record.
    let f = unsafe { ptr::read(payload.cast::<Box<F>>()) };
    if out.is_null() {
        return (record_size(size_of::<Box<F>>()), discard(f));
    }
    let paused = f.run(out);
    (
        record_size(size_of::<Box<F>>()) | usize::from(paused),
        F::RESULT,
    )
}

/// Drops a record unrun; 1 if its destructor panicked. A record without drop glue has nothing to drop, and
/// this folds to 0 where it is inlined (the batch loop's `run_inline`).
#[cold]
fn discard<T>(record: T) -> usize {
    if const { !std::mem::needs_drop::<T>() } {
        return 0; // `record` has no destructor to run
    }
    discard_dropping(record)
}

/// `discard` for a record with drop glue: generic only down to an erased pointer and its type's drop shim, the
/// catching (`discard_erased`) is one copy for every record type. Out of line: inlined into `run_inline`'s cold
/// branch, it would change the frame and registers of the batch loop's per-record code.
#[cold]
#[inline(never)]
fn discard_dropping<T>(record: T) -> usize {
    let mut record = ManuallyDrop::new(record);
    // SAFETY: `record` is a live `T` that nothing else drops (in a `ManuallyDrop` never dropped), and
    // `drop_record::<T>` is the drop shim of its own type.
    // (`as`, not `.cast()` and `DerefMut`: no more generic calls per type; `ManuallyDrop` is transparent.)
    unsafe { discard_erased(&raw mut record as *mut u8, drop_record::<T>) }
}

/// Drops the `T` at `p` in place, for `discard_erased`.
///
/// # Safety
/// `p` points to a live, aligned `T` that is never used or dropped again.
unsafe fn drop_record<T>(p: *mut u8) {
    // SAFETY: the caller's contract.
    unsafe { ptr::drop_in_place(p as *mut T) }
}

/// Drops the record at `p` with `drop`; 1 if its destructor panicked. The panic's payload is dropped the same
/// way: its own destructor may panic too (that second payload is leaked: a panic escaping here would abort the
/// process).
///
/// # Safety
/// `drop` is the `drop_record` of the type of the record at `p`, which is live and dropped by nothing else.
#[cold]
#[inline(never)]
unsafe fn discard_erased(p: *mut u8, drop: unsafe fn(*mut u8)) -> usize {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    // SAFETY: the caller's contract; the closure runs once.
    let Err(payload) = catch_unwind(AssertUnwindSafe(|| unsafe { drop(p) })) else {
        return 0;
    };
    if let Err(again) = catch_unwind(AssertUnwindSafe(|| std::mem::drop(payload))) {
        std::mem::forget(again);
    }
    1
}

/// A record kept boxed in a client's queue because the batch had no room when it was issued.
pub(crate) trait Queued: Send {
    fn result_bytes(&self) -> usize;
    fn run(self: Box<Self>, out: *mut u8) -> bool;
}

impl<F: Record> Queued for F {
    fn result_bytes(&self) -> usize {
        F::RESULT
    }
    fn run(self: Box<Self>, out: *mut u8) -> bool {
        Record::run(*self, out)
    }
}

unsafe fn run_queued(payload: *mut u8, out: *mut u8) -> (usize, usize) {
    // SAFETY: `Batch::push_queued` wrote a `Box<dyn Queued>` at `payload`; each record is run (or dropped) once.
    let q = unsafe { ptr::read(payload.cast::<Box<dyn Queued>>()) };
    if out.is_null() {
        return (record_size(size_of::<Box<dyn Queued>>()), discard(q));
    }
    let result = q.result_bytes();
    let paused = q.run(out);
    (
        record_size(size_of::<Box<dyn Queued>>()) | usize::from(paused),
        result,
    )
}

/// A batch of records being built by a client, in the client's own memory: the client can fill the next batch
/// while the trustee runs the previous one (double buffering), and `SlotPair::publish` copies it over.
/// Records are plain moved values, so copying their bytes moves them.
pub(crate) struct Batch {
    body: Box<Body>,
    len: usize,
    /// Bytes of the response body the batch's records will write.
    results: usize,
    /// Records in the batch.
    count: usize,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("len", &self.len)
            .field("results", &self.results)
            .finish()
    }
}

impl Batch {
    pub(crate) fn new() -> Self {
        Batch {
            body: Box::new(Body([MaybeUninit::uninit(); BODY])),
            len: 0,
            results: 0,
            count: 0,
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True once the records, or the results they reserve, take three quarters of the body.
    #[inline]
    pub(crate) fn is_mostly_full(&self) -> bool {
        4 * self.len.max(self.results) >= 3 * BODY
    }

    /// Bytes of records in the batch.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the response body reserved so far: where the next record's result will be.
    #[inline]
    pub(crate) fn reserved(&self) -> usize {
        self.results
    }

    /// Number of records in the batch.
    #[inline]
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// True when a record of type `F` and its result fit in the batch.
    #[inline]
    pub(crate) fn has_room<F: Record>(&self) -> bool {
        // The sizes subtracted at compile time (a record and a result each fit an empty body): a compare with a
        // constant each, where the sums made the compiler guard them against wrapping.
        self.results <= const { BODY - F::RESULT }
            && self.len <= const { BODY - pushed_size::<F>() }
    }

    /// Appends the record `f`; gives it back when the batch has no room for it or its result. A record too
    /// large or too aligned to travel inline is boxed and its box travels instead.
    #[inline]
    pub(crate) fn push<F: Record>(&mut self, f: F) -> Result<(), F> {
        if !self.has_room::<F>() {
            return Err(f);
        }
        // SAFETY: checked just above.
        unsafe { self.push_unchecked(f) };
        Ok(())
    }

    /// `push` of a record the caller made sure has room: `apply_then`'s path checks it before it counts the
    /// issue, and the compiler could not tell that check from `push`'s (it made both, some ten instructions
    /// per request).
    ///
    /// # Safety
    /// `self.has_room::<F>()`.
    #[inline]
    pub(crate) unsafe fn push_unchecked<F: Record>(&mut self, f: F) {
        debug_assert!(self.has_room::<F>());
        if const { fits_inline::<F>() } {
            // SAFETY: it fits (the contract), and `run_inline::<F>` reads an `F`.
            unsafe { self.write(run_inline::<F>, f) };
        } else {
            // SAFETY: as above, for the box.
            unsafe { self.write(run_boxed::<F>, Box::new(f)) };
        }
        self.results += F::RESULT;
        self.count += 1;
    }

    /// Appends a record that waited in a queue, boxed; gives it back when there is no room.
    pub(crate) fn push_queued(&mut self, q: Box<dyn Queued>) -> Result<(), Box<dyn Queued>> {
        let result = q.result_bytes();
        debug_assert!(
            result <= MAX_INLINE_RESULT,
            "a result reserves at most MAX_INLINE_RESULT bytes"
        );
        if self.results + result > BODY || self.len + queued_size() > BODY {
            return Err(q);
        }
        // SAFETY: it fits, and `run_queued` reads a `Box<dyn Queued>`.
        unsafe { self.write(run_queued, q) };
        self.results += result;
        self.count += 1;
        Ok(())
    }

    /// # Safety
    /// The record fits (`len + record_size(size_of::<P>()) <= BODY`), `align_of::<P>() <= RECORD_ALIGN`, and
    /// `run` reads a `P`.
    unsafe fn write<P>(&mut self, run: Run, payload: P) {
        // SAFETY: in bounds and aligned by the contract (the body is 16-aligned, offsets are multiples of 8).
        unsafe {
            let at = self.body.0.as_mut_ptr().cast::<u8>().add(self.len);
            ptr::write(at.cast::<Run>(), run);
            ptr::write(at.add(RECORD_HEADER).cast::<P>(), payload);
        }
        self.len += record_size(size_of::<P>());
    }
}

impl Drop for Batch {
    /// Records never published (their client went away once the trustee had stopped): each dropped unrun, with
    /// what it captured, a panic in a destructor contained.
    fn drop(&mut self) {
        let (mut at, mut panicked) = (0, false);
        while at < self.len {
            // SAFETY: `write` laid the records out back to back from offset 0 to `len`, each a `Run` then its
            // payload; each is read once, here (the batch is going away, and a published batch has `len` 0).
            let (size, panic) = unsafe {
                let record = self.body.0.as_mut_ptr().cast::<u8>().add(at);
                let run = ptr::read(record.cast::<Run>());
                run(record.add(RECORD_HEADER), ptr::null_mut())
            };
            at += size;
            panicked |= panic != 0;
        }
        if panicked {
            eprintln!("trust: a request that was never sent panicked when dropped");
        }
    }
}

impl SlotPair {
    #[cfg(any(test, loom))]
    pub(crate) fn new() -> Self {
        SlotPair {
            request: RequestSlot {
                seq: AtomicU32::new(0),
                len: UnsafeCell::new(0),
                body: UnsafeCell::new(Body([MaybeUninit::uninit(); BODY])),
            },
            response: ResponseSlot {
                seq: AtomicU32::new(0),
                body: UnsafeCell::new(Body([MaybeUninit::uninit(); BODY])),
            },
        }
    }

    /// Moves the records of `batch` into the request slot and publishes them as batch number `seq` (the
    /// previous number plus one); `batch` is left empty.
    ///
    /// # Safety
    /// Client only, and only while no published batch is unanswered (`is_answered` returned true for the last
    /// published number): the trustee is then not reading the body.
    pub(crate) unsafe fn publish(&self, seq: u32, batch: &mut Batch) {
        let len = std::mem::take(&mut batch.len);
        batch.results = 0;
        batch.count = 0;
        self.request.body.with_mut(|body| {
            // SAFETY: both bodies are BODY bytes; the trustee is not reading this one (contract). Copying the
            // bytes moves the records: `batch` forgets them (its length is now 0).
            unsafe { ptr::copy_nonoverlapping(batch.body.0.as_ptr(), (*body).0.as_mut_ptr(), len) }
        });
        // SAFETY: the trustee reads `len` only after seeing the new `seq`, which this Release store orders.
        self.request.len.with_mut(|l| unsafe { *l = len as u32 });
        self.request.seq.store(seq, Ordering::Release);
    }

    /// Client side, after `is_answered` for the last published batch: the client will write the request slot
    /// next, so the overflow lines its next `bytes` of body will take are fetched for writing now. Without
    /// this, the publish's stores wait for those lines to leave the trustee's cache, and with x86's in-order
    /// store commit every later store of the client waits behind them (the store buffer fills within a few
    /// dozen stores). Not the primary block: the trustee polls the sequence number there, and taking that
    /// line away early would only make it move one more time.
    #[inline]
    pub(crate) fn prefetch_for_publish(&self, bytes: usize) {
        #[cfg(all(target_arch = "x86_64", not(miri), not(loom)))]
        {
            let base = (&raw const self.request).cast::<u8>();
            let end = (SLOT_HEADER + bytes).min(PRIMARY + OVERFLOW);
            for off in (PRIMARY..end).step_by(64) {
                // SAFETY: `prefetchw` only hints the cache (it never faults, and is a no-op on CPUs without
                // it); the address is inside the request slot.
                unsafe {
                    std::arch::asm!("prefetchw [{}]", in(reg) base.add(off), options(nostack, preserves_flags, readonly))
                };
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri), not(loom))))]
        let _ = bytes;
    }

    /// Client side: the results of the last answered batch, packed in request order (see [`Record`]).
    ///
    /// # Safety
    /// Client only, after `is_answered` returned true for the last published batch and before the next
    /// `publish`; each result is read once.
    pub(crate) unsafe fn results(&self) -> *const u8 {
        self.response.body.with(|body| body.cast::<u8>())
    }

    /// Client side: true once the trustee has run batch `seq`. Acquire: pairs with `answer`'s Release, so
    /// every write the records made (their results included) is visible afterwards, and the body may be
    /// rewritten.
    #[inline]
    pub(crate) fn is_answered(&self, seq: u32) -> bool {
        self.response.seq.load(Ordering::Acquire) == seq
    }

    /// Trustee side: the number of a published batch not yet served, given the last number served.
    /// Acquire: pairs with `publish`'s Release, so the records are visible. (The runtime asks [`Lanes`].)
    #[cfg(all(test, not(loom)))]
    pub(crate) fn pending(&self, served: u32) -> Option<u32> {
        let seq = self.request.seq.load(Ordering::Acquire);
        (seq != served).then_some(seq)
    }

    /// Trustee side: the number of the last published batch.
    #[inline]
    pub(crate) fn published(&self) -> u32 {
        self.request.seq.load(Ordering::Acquire)
    }

    /// Trustee side: runs the records of the pending batch in order, from `from` (the start, or where a paused
    /// run stopped), each with the room reserved for its result. A record that pauses its batch (`Record::run`
    /// returns true) stops the run: then the position of the next record is returned, to resume from later;
    /// `None`: the batch is done. Also returns how many records ran. Records must not unwind (the runtime's
    /// records catch panics themselves).
    ///
    /// # Safety
    /// Trustee only, after `pending` returned a number and before `answer` for it; each record is run once
    /// (`from` is the start or a position this method returned for the same batch).
    pub(crate) unsafe fn run_batch(&self, from: Cursor) -> (Option<Cursor>, usize) {
        // SAFETY: published before `seq`, which `pending` acquired.
        let len = self.request.len.with(|l| unsafe { *l }) as usize;
        let out = self.response.body.with_mut(|body| body.cast::<u8>());
        self.request.body.with_mut(|body| {
            let base = body.cast::<u8>();
            let Cursor {
                mut record,
                mut result,
                ..
            } = from;
            let mut ran = 0;
            while record < len {
                // SAFETY: the client wrote a header at each offset up to `len`, and the payload after it, and
                // does not touch the body until `answer`; it reserved each record's result room in order, and
                // does not read the response body until `answer` either.
                let (size, answer) = unsafe {
                    let run = ptr::read(base.add(record).cast::<Run>());
                    run(base.add(record + RECORD_HEADER), out.add(result))
                };
                record += size & !PAUSED;
                result += answer;
                ran += 1;
                if size & PAUSED != 0 {
                    // The paused record's room is the last `answer` bytes: it writes there once it runs.
                    let written = result - answer;
                    return (
                        Some(Cursor {
                            record,
                            result,
                            written,
                        }),
                        ran,
                    );
                }
            }
            (None, ran)
        })
    }

    /// Trustee side: true when no record of the pending batch lies at or after `at` (a position `run_batch`
    /// returned): a run that paused there stopped at the batch's last record.
    ///
    /// # Safety
    /// Trustee only, after `pending` returned a number and before `answer` for it.
    pub(crate) unsafe fn ends_at(&self, at: Cursor) -> bool {
        // SAFETY: published before `seq`, which `pending` acquired; the client does not write it until `answer`.
        let len = self.request.len.with(|l| unsafe { *l }) as usize;
        at.record >= len
    }

    /// Trustee side: batch `seq` is done; its records' results are written.
    #[inline]
    pub(crate) fn answer(&self, seq: u32) {
        self.response.seq.store(seq, Ordering::Release);
    }

    /// Drops the records of the published batch from `from` on, unrun (a destructor's panic is contained);
    /// returns how many destructors panicked.
    ///
    /// # Safety
    /// The batch was published and its records from `from` on were neither run nor dropped: by the trustee
    /// before `answer`, or by the client once the trustee has stopped for good without taking the batch; each
    /// record is dropped once.
    unsafe fn drop_batch(&self, from: Cursor) -> usize {
        // SAFETY: published before `seq`, which the caller saw (contract).
        let len = self.request.len.with(|l| unsafe { *l }) as usize;
        self.request.body.with_mut(|body| {
            let base = body.cast::<u8>();
            let (mut record, mut panicked) = (from.record, 0);
            while record < len {
                // SAFETY: as in `run_batch`; a null result pointer makes the record drop itself unrun.
                let (size, panics) = unsafe {
                    let run = ptr::read(base.add(record).cast::<Run>());
                    run(base.add(record + RECORD_HEADER), ptr::null_mut())
                };
                record += size;
                panicked += panics;
            }
            panicked
        })
    }
}

/// Batches one client may have in flight to one trustee: each goes through a slot pair of its own (a *lane*),
/// batch `seq` through lane `seq % LANES`. With two, the client publishes its next batch while the trustee
/// still runs the previous one, and the trustee finds it waiting when it is done: neither side idles through
/// the other's notice of a handover, which is what bounded one thread's `apply_then` with a single pair (the
/// client waited for answers and the trustee for batches, each about half the time).
pub(crate) const LANES: u32 = 2;

// `Lanes::published` reads the two lanes by name.
const _: () = assert!(LANES == 2);

/// One client's channel to one trustee: [`LANES`] slot pairs, used in turn. The trustee serves the batches in
/// the order of their numbers, whichever lane each is in, so records still run in the order the client issued
/// them. Exactly one client and one trustee use it; see each method's contract.
#[derive(Debug)]
pub(crate) struct Lanes {
    lanes: [SlotPair; LANES as usize],
}

impl Lanes {
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Lanes {
            lanes: std::array::from_fn(|_| SlotPair::new()),
        }
    }

    /// Makes lanes in place at `p`, writing only their sequence numbers and lengths: the bodies (4.5 KB of
    /// `MaybeUninit` bytes) are valid uninitialized. Built as a value and moved instead, an unoptimized build
    /// copied them through the stack several times, which overflowed a `may` coroutine's stack on its first
    /// call to a trustee.
    ///
    /// # Safety
    /// `p` is valid for writes and aligned; whatever it held is overwritten without being dropped.
    pub(crate) unsafe fn init(p: *mut Lanes) {
        for i in 0..LANES as usize {
            // SAFETY: in bounds of the array at `p`, by the contract.
            let pair = unsafe { (&raw mut (*p).lanes).cast::<SlotPair>().add(i) };
            // Loom's cells carry state of their own: there, each pair is written whole.
            #[cfg(loom)]
            // SAFETY: as above.
            unsafe {
                pair.write(SlotPair::new())
            };
            #[cfg(not(loom))]
            // SAFETY: as above; the fields not written hold `MaybeUninit` bytes only.
            unsafe {
                (&raw mut (*pair).request.seq).write(AtomicU32::new(0));
                (&raw mut (*pair).request.len).write(UnsafeCell::new(0));
                (&raw mut (*pair).response.seq).write(AtomicU32::new(0));
            }
        }
    }

    #[inline]
    fn lane(&self, seq: u32) -> &SlotPair {
        &self.lanes[(seq % LANES) as usize]
    }

    /// Moves the records of `batch` into lane `seq % LANES` and publishes them as batch `seq` (the previous
    /// number plus one); `batch` is left empty.
    ///
    /// # Safety
    /// Client only, and only once batch `seq - LANES` (the lane's previous one, if any) is answered and its
    /// results read: the trustee is then done with the lane.
    #[inline]
    pub(crate) unsafe fn publish(&self, seq: u32, batch: &mut Batch) {
        // SAFETY: by the contract, the lane is free.
        unsafe { self.lane(seq).publish(seq, batch) }
    }

    /// Client side, once the lane of batch `seq` is free: see [`SlotPair::prefetch_for_publish`].
    #[inline]
    pub(crate) fn prefetch_for_publish(&self, seq: u32, bytes: usize) {
        self.lane(seq).prefetch_for_publish(bytes);
    }

    /// Client side: the results of batch `seq`, packed in request order.
    ///
    /// # Safety
    /// Client only, after `is_answered(seq)` returned true and before batch `seq + LANES` is published; each
    /// result is read once.
    #[inline]
    pub(crate) unsafe fn results(&self, seq: u32) -> *const u8 {
        // SAFETY: by the contract.
        unsafe { self.lane(seq).results() }
    }

    /// Client side: true once the trustee has run batch `seq` (Acquire, as [`SlotPair::is_answered`]).
    #[inline]
    pub(crate) fn is_answered(&self, seq: u32) -> bool {
        self.lane(seq).is_answered(seq)
    }

    /// Trustee side: the number of the batch after `served` (the last number served), if it is published.
    /// Acquire: pairs with `publish`'s Release, so its records are visible.
    #[inline]
    pub(crate) fn pending(&self, served: u32) -> Option<u32> {
        let next = served.wrapping_add(1);
        (self.lane(next).published() == next).then_some(next)
    }

    /// Trustee side: the number of the last published batch, or a later one. Consecutive batches alternate
    /// lanes, so the two lanes hold consecutive numbers (0 and 0 before the first): the later of the two.
    /// Each load is Acquire and numbers only grow, so the value is at least what was published before the call.
    pub(crate) fn published(&self) -> u32 {
        let [a, b] = [self.lanes[0].published(), self.lanes[1].published()];
        if a.wrapping_sub(b) == 1 { a } else { b }
    }

    /// Trustee side: runs batch `seq` from `from`, as [`SlotPair::run_batch`].
    ///
    /// # Safety
    /// Trustee only, after `pending` returned `seq` and before `answer(seq)`; each record is run once.
    #[inline]
    pub(crate) unsafe fn run_batch(&self, seq: u32, from: Cursor) -> (Option<Cursor>, usize) {
        // SAFETY: by the contract.
        unsafe { self.lane(seq).run_batch(from) }
    }

    /// Trustee side: true when batch `seq` has no record at or after `at`, as [`SlotPair::ends_at`].
    ///
    /// # Safety
    /// Trustee only, after `pending` returned `seq` and before `answer(seq)`.
    pub(crate) unsafe fn ends_at(&self, seq: u32, at: Cursor) -> bool {
        // SAFETY: by the contract.
        unsafe { self.lane(seq).ends_at(at) }
    }

    /// Trustee side: batch `seq` is done; its records' results are written.
    #[inline]
    pub(crate) fn answer(&self, seq: u32) {
        self.lane(seq).answer(seq);
    }

    /// Drops the records of batch `seq` from `from` on, unrun; returns how many destructors panicked.
    ///
    /// # Safety
    /// As for [`SlotPair::drop_batch`]: batch `seq` is published, and those records were neither run nor
    /// dropped.
    pub(crate) unsafe fn drop_batch(&self, seq: u32, from: Cursor) -> usize {
        // SAFETY: by the contract.
        unsafe { self.lane(seq).drop_batch(from) }
    }
}

/// Where a run of a batch stands: the offsets of the next record and of its result.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cursor {
    record: usize,
    result: usize,
    /// Where a paused run stopped: bytes of results the records before the paused one wrote (that one's
    /// room follows).
    written: usize,
}

impl Cursor {
    /// Bytes at the front of the batch's response body that hold results, when a run paused here: the
    /// records before the one that paused have run (see `Worker::close`).
    pub(crate) fn written(&self) -> usize {
        self.written
    }
}

// SAFETY: the body is accessed by one side at a time, handed over by the Release/Acquire pairs on the two
// sequence numbers; records are `Send` closures.
unsafe impl Send for SlotPair {}
// SAFETY: as above: the protocol, not a lock, keeps client and trustee out of each other's way.
unsafe impl Sync for SlotPair {}

/// Records for the tests below: `Answer` runs a closure and answers its result through the slot, `Effect`
/// answers nothing, `Pauses` pauses its batch.
#[cfg(test)]
mod records {
    use super::*;

    pub(super) struct Answer<F>(pub(super) F);

    impl<R: Send, F: FnOnce() -> R + Send> Record for Answer<F> {
        const RESULT: usize = result_bytes::<R>();
        fn run(self, out: *mut u8) -> bool {
            // SAFETY: `out` is this record's reserved room.
            unsafe { write_result(out, (self.0)()) };
            false
        }
    }

    pub(super) struct Effect<F>(pub(super) F);

    impl<F: FnOnce() + Send> Record for Effect<F> {
        const RESULT: usize = 0;
        fn run(self, _: *mut u8) -> bool {
            (self.0)();
            false
        }
    }

    /// Pauses its batch, as a request on a busy latch does.
    pub(super) struct Pauses;

    impl Record for Pauses {
        const RESULT: usize = 0;
        fn run(self, _: *mut u8) -> bool {
            true
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::records::{Answer, Effect, Pauses};
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    /// Counts its drops; panics in its destructor when `panics`.
    struct Noisy<'a> {
        drops: &'a AtomicUsize,
        panics: bool,
    }

    impl Drop for Noisy<'_> {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::Relaxed);
            if self.panics {
                panic!("a record's destructor panicked");
            }
        }
    }

    #[test]
    fn discard_drops_each_record_once_and_contains_its_panic() {
        let drops = AtomicUsize::new(0);
        assert_eq!(
            discard(Noisy {
                drops: &drops,
                panics: false
            }),
            0
        );
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        assert_eq!(
            discard(Box::new(Noisy {
                drops: &drops,
                panics: true
            })),
            1
        );
        assert_eq!(drops.load(Ordering::Relaxed), 2);
        assert_eq!(discard(7u64), 0);
    }

    #[test]
    fn layout_is_the_papers() {
        assert_eq!(std::mem::offset_of!(RequestSlot, body), SLOT_HEADER);
        assert_eq!(size_of::<RequestSlot>(), PRIMARY + OVERFLOW);
        assert_eq!(align_of::<RequestSlot>(), 128);
        assert_eq!(size_of::<Run>(), RECORD_HEADER);
        assert_eq!(BODY, 1136);
    }

    #[test]
    fn small_records_batch_and_large_ones_go_out_of_line() {
        let pair = SlotPair::new();
        let hits = Arc::new(AtomicUsize::new(0));
        let mut batch = Batch::new();
        let mut pushed = 0;
        loop {
            let h = hits.clone();
            match batch.push(Effect(move || _ = h.fetch_add(1, Ordering::Relaxed))) {
                Ok(()) => pushed += 1,
                Err(_) => break,
            }
        }
        // An Arc capture is 8 bytes: a 16-byte record, 71 of them in 1136 bytes.
        assert_eq!(pushed, 71);
        // SAFETY: single-threaded: client and trustee roles alternate.
        unsafe {
            pair.publish(1, &mut batch);
            assert_eq!(pair.pending(0), Some(1));
            pair.run_batch(Cursor::default());
        }
        pair.answer(1);
        assert!(pair.is_answered(1));
        assert_eq!(hits.load(Ordering::Relaxed), 71);
        assert!(batch.is_empty());

        // A 4 KiB capture cannot be inline: it is boxed, and its checksum comes back through the slot.
        let big = [7u8; 4096];
        assert!(!fits_inline::<[u8; 4096]>());
        assert!(
            batch
                .push(Answer(move || big.iter().map(|&b| b as u64).sum::<u64>()))
                .is_ok()
        );
        // So is a result over MAX_INLINE_RESULT bytes.
        assert!(batch.push(Answer(|| [9u8; 1000])).is_ok());
        // SAFETY: as above.
        unsafe {
            pair.publish(2, &mut batch);
            pair.run_batch(Cursor::default());
        }
        pair.answer(2);
        // SAFETY: answered; read in request order, once each.
        unsafe {
            let src = pair.results();
            assert_eq!(read_result::<u64>(src), 7 * 4096);
            assert_eq!(
                read_result::<[u8; 1000]>(src.add(result_bytes::<u64>())),
                [9u8; 1000]
            );
        }
    }

    /// A batch dropped unpublished (its client left after its trustee stopped) drops each record unrun, once:
    /// inline, boxed and queued ones, and the rest after one whose capture panics when dropped.
    #[test]
    fn an_unpublished_batch_drops_its_records_unrun() {
        struct Counted(Arc<AtomicUsize>, bool);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
                assert!(!self.1, "a capture that panics when dropped");
            }
        }
        let (ran, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let record = |panics: bool| {
            let (ran, c) = (ran.clone(), Counted(dropped.clone(), panics));
            Effect(move || {
                let _c = c;
                ran.fetch_add(1, Ordering::Relaxed);
            })
        };
        let mut batch = Batch::new();
        assert!(batch.push(record(false)).is_ok());
        assert!(batch.push(record(true)).is_ok());
        let (big, c) = ([1u8; 4096], Counted(dropped.clone(), false));
        assert!(batch.push(Answer(move || (big[0], &c).0)).is_ok());
        assert!(batch.push_queued(Box::new(record(false))).is_ok());
        drop(batch);
        assert_eq!(
            (ran.load(Ordering::Relaxed), dropped.load(Ordering::Relaxed)),
            (0, 4)
        );
    }

    #[test]
    fn a_batch_is_full_when_its_results_would_not_fit() {
        let mut batch = Batch::new();
        let mut pushed = 0;
        while batch.push(Answer(|| [1u64; 32])).is_ok() {
            pushed += 1;
        }
        // 256-byte results: 4 fit in the 1136-byte response body, though 71 records would fit the request.
        assert_eq!(pushed, BODY / 256);
    }

    #[test]
    fn two_threads_exchange_batches() {
        // Two real threads, batches of 1..=8 records each answering through the response slot. Under Miri
        // this checks the protocol's data-race freedom.
        let rounds: u32 = if cfg!(miri) { 20 } else { 200 };
        let pair = Arc::new(SlotPair::new());
        let trustee = {
            let pair = pair.clone();
            std::thread::spawn(move || {
                let mut served = 0;
                while served != rounds {
                    if let Some(seq) = pair.pending(served) {
                        // SAFETY: trustee side of a published batch.
                        unsafe { pair.run_batch(Cursor::default()) };
                        pair.answer(seq);
                        served = seq;
                    } else {
                        std::thread::yield_now();
                    }
                }
            })
        };
        for seq in 1..=rounds {
            let n = (seq % 8 + 1) as usize;
            let mut batch = Batch::new();
            for i in 0..n {
                let payload = [seq as u64; 12]; // 8 records of 112 bytes: the batch spills into the overflow block
                assert!(
                    batch
                        .push(Answer(move || payload.iter().sum::<u64>() + i as u64))
                        .is_ok()
                );
            }
            // SAFETY: client side.
            unsafe { pair.publish(seq, &mut batch) };
            while !pair.is_answered(seq) {
                std::thread::yield_now();
            }
            for i in 0..n {
                // SAFETY: answered; each result read once, in order.
                let r = unsafe { read_result::<u64>(pair.results().add(i * 8)) };
                assert_eq!(r, 12 * seq as u64 + i as u64);
            }
        }
        trustee.join().unwrap();
    }

    #[test]
    fn two_lanes_keep_two_batches_in_flight_and_serve_them_in_order() {
        // The client publishes without waiting while a lane is free (two batches in flight), reads each
        // batch's results once it is answered, oldest first; every record checks it runs right after the
        // previous one, across batches and lanes. Under Miri this checks the lanes' data-race freedom.
        let rounds: u32 = if cfg!(miri) { 24 } else { 400 };
        let lanes = Arc::new(Lanes::new());
        let ran = Arc::new(AtomicUsize::new(0));
        let trustee = {
            let lanes = lanes.clone();
            std::thread::spawn(move || {
                let mut served = 0;
                while served != rounds {
                    match lanes.pending(served) {
                        Some(seq) => {
                            assert_eq!(seq, served + 1, "batches are served in order");
                            // SAFETY: trustee side of the published batch `seq`.
                            unsafe { lanes.run_batch(seq, Cursor::default()) };
                            lanes.answer(seq);
                            served = seq;
                        }
                        None => std::thread::yield_now(),
                    }
                }
            })
        };
        let per_batch = |seq: u32| (seq % 5 + 1) as usize;
        let (mut sent, mut done, mut in_flight_max) = (0u32, 0u32, 0);
        let mut issued = 0;
        while done != rounds {
            if sent != rounds && sent - done < LANES {
                let seq = sent + 1;
                let mut batch = Batch::new();
                for _ in 0..per_batch(seq) {
                    let (ran, nth) = (ran.clone(), issued);
                    issued += 1;
                    assert!(
                        batch
                            .push(Answer(move || ran.fetch_add(1, Ordering::Relaxed) == nth))
                            .is_ok()
                    );
                }
                // SAFETY: client side; the lane's previous batch (`seq - 2`) is answered and read.
                unsafe { lanes.publish(seq, &mut batch) };
                sent = seq;
                in_flight_max = in_flight_max.max(sent - done);
            } else if lanes.is_answered(done + 1) {
                let seq = done + 1;
                for i in 0..per_batch(seq) {
                    // SAFETY: answered; each result read once, before the lane is published to again.
                    let in_order = unsafe { read_result::<bool>(lanes.results(seq).add(8 * i)) };
                    assert!(in_order, "record {i} of batch {seq} ran out of order");
                }
                done = seq;
            } else {
                std::thread::yield_now();
            }
        }
        trustee.join().unwrap();
        assert_eq!(ran.load(Ordering::Relaxed), issued);
        assert_eq!(lanes.published(), rounds);
        assert_eq!(
            in_flight_max, LANES,
            "the client had two batches in flight at once"
        );
    }

    /// A run stops after a record that pauses it, and `ends_at` tells whether that record was the batch's last
    /// (what `Worker::drop_retired` relies on to let a retire pass a paused batch).
    #[test]
    fn a_paused_run_knows_whether_records_follow() {
        let lanes = Lanes::new();
        let hits = Arc::new(AtomicUsize::new(0));
        let effect = || {
            let h = hits.clone();
            Effect(move || _ = h.fetch_add(1, Ordering::Relaxed))
        };
        let mut batch = Batch::new();
        assert!(batch.push(effect()).is_ok());
        assert!(batch.push(Pauses).is_ok());
        assert!(batch.push(effect()).is_ok());
        // SAFETY: single-threaded: client and trustee roles alternate; each record runs once.
        unsafe {
            lanes.publish(1, &mut batch);
            let (stopped, ran) = lanes.run_batch(1, Cursor::default());
            let at = stopped.expect("paused");
            assert_eq!((ran, hits.load(Ordering::Relaxed)), (2, 1));
            assert!(!lanes.ends_at(1, at), "a record follows the paused one");
            assert!(!lanes.ends_at(1, Cursor::default()));
            let (stopped, ran) = lanes.run_batch(1, at);
            assert_eq!((stopped.is_none(), ran), (true, 1));
        }
        lanes.answer(1);
        assert_eq!(hits.load(Ordering::Relaxed), 2);
        assert!(batch.push(effect()).is_ok());
        assert!(batch.push(Pauses).is_ok());
        // SAFETY: as above; batch 1 is answered.
        unsafe {
            lanes.publish(2, &mut batch);
            let (stopped, _) = lanes.run_batch(2, Cursor::default());
            assert!(
                lanes.ends_at(2, stopped.expect("paused")),
                "the paused record is the last"
            );
        }
        lanes.answer(2);
    }

    #[test]
    fn published_is_the_later_of_the_two_lanes() {
        let lanes = Lanes::new();
        assert_eq!(lanes.published(), 0);
        for seq in 1..=5 {
            // SAFETY: single-threaded; each batch is published and served before the next.
            unsafe {
                lanes.publish(seq, &mut Batch::new());
                assert_eq!(lanes.published(), seq);
                assert_eq!(lanes.pending(seq - 1), Some(seq));
                lanes.run_batch(seq, Cursor::default());
            }
            lanes.answer(seq);
            assert_eq!(lanes.pending(seq), None);
        }
    }
}

/// The protocol under loom, through the lanes the runtime uses: one client and one trustee exchange two batches
/// one at a time — two inline records, one of them spilling into the overflow block, then a boxed one — and
/// every result must come back through the response slot, visible to the client after the answer; then two
/// batches in flight at once must run in their numbers' order. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p trust-core --lib --release loom_model`.
#[cfg(all(test, loom))]
mod loom_model {
    use super::records::Answer;
    use super::*;
    use loom::sync::Arc;

    /// The trustee's side of both models: serves batches 1 to `batches` in order, as `Worker::serve` does.
    fn spawn_trustee(lanes: &Arc<Lanes>, batches: u32) -> loom::thread::JoinHandle<()> {
        let lanes = lanes.clone();
        loom::thread::spawn(move || {
            let mut served = 0;
            while served != batches {
                match lanes.pending(served) {
                    Some(seq) => {
                        // SAFETY: trustee side of the published batch `seq`.
                        unsafe { lanes.run_batch(seq, Cursor::default()) };
                        lanes.answer(seq);
                        served = seq;
                    }
                    None => loom::thread::yield_now(),
                }
            }
        })
    }

    #[test]
    fn client_and_trustee_exchange_batches() {
        loom::model(|| {
            let lanes = Arc::new(Lanes::new());
            let trustee = spawn_trustee(&lanes, 2);
            let mut batch = Batch::new();
            let small = Answer(|| 3u64);
            let pad = [4u64; 25];
            let spill = Answer(move || pad.iter().sum::<u64>());
            assert!(batch.push(small).is_ok());
            assert!(batch.push(spill).is_ok());
            assert!(batch.len > PRIMARY);
            // SAFETY: nothing is in flight.
            unsafe { lanes.publish(1, &mut batch) };
            while !lanes.is_answered(1) {
                loom::thread::yield_now();
            }
            // SAFETY: answered: the records' writes happen-before these reads.
            let got = unsafe {
                [
                    read_result::<u64>(lanes.results(1)),
                    read_result::<u64>(lanes.results(1).add(8)),
                ]
            };
            assert_eq!(got, [3, 100]);
            let pad = [5u8; 2 * BODY];
            let boxed = Answer(move || pad.iter().map(|&b| u64::from(b)).sum::<u64>());
            assert!(!fits_inline_val(&boxed));
            assert!(batch.push(boxed).is_ok());
            // SAFETY: batch 1 is answered and its results read (and batch 2 has a lane of its own).
            unsafe { lanes.publish(2, &mut batch) };
            while !lanes.is_answered(2) {
                loom::thread::yield_now();
            }
            // SAFETY: as above.
            assert_eq!(
                unsafe { read_result::<u64>(lanes.results(2)) },
                5 * 2 * BODY as u64
            );
            trustee.join().unwrap();
        });
    }

    #[test]
    fn two_batches_in_flight_through_two_lanes() {
        loom::model(|| {
            let lanes = Arc::new(Lanes::new());
            let trustee = spawn_trustee(&lanes, 2);
            let order = Arc::new(AtomicU32::new(0));
            for seq in 1..=2 {
                let order = order.clone();
                let mut batch = Batch::new();
                assert!(
                    batch
                        .push(Answer(
                            move || order.fetch_add(1, Ordering::Relaxed) + 10 * seq
                        ))
                        .is_ok()
                );
                // SAFETY: client side; each lane is used once here.
                unsafe { lanes.publish(seq, &mut batch) };
            }
            let mut got = [0; 2];
            for seq in 1..=2 {
                while !lanes.is_answered(seq) {
                    loom::thread::yield_now();
                }
                // SAFETY: answered: the record's writes happen-before this read, done once.
                got[seq as usize - 1] = unsafe { read_result::<u32>(lanes.results(seq)) };
            }
            // Batch 1 ran first (its record saw 0), then batch 2 (saw 1).
            assert_eq!(got, [10, 21]);
            trustee.join().unwrap();
        });
    }

    fn fits_inline_val<F>(_: &F) -> bool {
        fits_inline::<F>()
    }
}
