//! The request/response slot pair between one client and one trustee: the delegation hot path.
//!
//! A client builds a [`Batch`] of *records* in its own memory (a type-erased `FnOnce()` each: a monomorphic
//! `run` function pointer followed by the closure's bytes), then publishes it: copies it into the body of its
//! [`RequestSlot`] and stores a new sequence number. Building the next batch while the previous one is in
//! flight is what lets one client keep many requests going. The trustee notices the new number, runs every record in place, and answers by storing the
//! same number in the [`ResponseSlot`]. Results do not travel back through the slot: each record carries a
//! pointer to where its caller waits for the result (see `client.rs`), and the answer's Release store makes
//! those writes visible to the caller's Acquire load.
//!
//! Layout follows the paper: the request slot's primary block is 128 bytes (one aligned pair of cache lines)
//! holding the sequence number, the batch length and the first records; the overflow block continues it for
//! 1 KiB more, so a batch of small records costs one or two cache-line transfers. A record that cannot fit in
//! the body at all (or needs more than 8-byte alignment) is boxed and its box travels instead: the explicit
//! out-of-line path, never a panic.
//!
//! No read-modify-write instruction is used: each atomic has exactly one writer (the client writes
//! `RequestSlot::seq`, the trustee writes `ResponseSlot::seq`), so plain Release stores and Acquire loads are
//! enough. Checked on `objdump -d target/release/examples/roundtrip`: on the request/response path the only
//! `lock`-prefixed instruction is `lock or $0, (%rsp)`, the SeqCst fence of the sleep/wake handshake
//! (`parker.rs`, once per published batch and per answer), which touches no shared data. The protocol is
//! model-checked under loom (`loom_model` below) and run under Miri (the tests at the bottom of this file).

use std::mem::{MaybeUninit, align_of, size_of};
use std::ptr;

use crate::sync::{AtomicU32, Ordering, UnsafeCell};

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

/// Reads the closure that follows the header, calls it, and returns the record's size (the offset of the next
/// record), which it knows statically.
type Run = unsafe fn(*mut u8) -> usize;

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

/// True when closures of type `F` travel inline (false: they are boxed first).
pub(crate) const fn fits_inline<F>() -> bool {
    align_of::<F>() <= RECORD_ALIGN && record_size(size_of::<F>()) <= BODY
}

unsafe fn run_inline<F: FnOnce()>(payload: *mut u8) -> usize {
    // SAFETY: `Batch::push` wrote an `F` at `payload` (aligned to RECORD_ALIGN >= align_of::<F>()), and each
    // record is run exactly once, so reading it out moves the closure.
    let f = unsafe { ptr::read(payload.cast::<F>()) };
    f();
    record_size(size_of::<F>())
}

unsafe fn run_boxed<F: FnOnce()>(payload: *mut u8) -> usize {
    // SAFETY: as in `run_inline`, with a `Box<F>` in place of the closure.
    let f = unsafe { ptr::read(payload.cast::<Box<F>>()) };
    f();
    record_size(size_of::<Box<F>>())
}

/// A batch of records being built by a client, in the client's own memory: the client can fill the next batch
/// while the trustee runs the previous one (double buffering), and `SlotPair::publish` copies it over.
/// Records are plain moved values, so copying their bytes moves them.
pub(crate) struct Batch {
    body: Box<Body>,
    len: usize,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("len", &self.len).finish()
    }
}

impl Batch {
    pub(crate) fn new() -> Self {
        Batch {
            body: Box::new(Body([MaybeUninit::uninit(); BODY])),
            len: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the record `f`; gives it back when the batch has no room for it. A closure too large or too
    /// aligned to travel inline is boxed and its box travels instead.
    pub(crate) fn push<F: FnOnce() + Send>(&mut self, f: F) -> Result<(), F> {
        if fits_inline::<F>() {
            if self.len + record_size(size_of::<F>()) > BODY {
                return Err(f);
            }
            // SAFETY: it fits, and `run_inline::<F>` reads an `F`.
            unsafe { self.write(run_inline::<F>, f) };
        } else {
            if self.len + record_size(size_of::<Box<F>>()) > BODY {
                return Err(f);
            }
            // SAFETY: as above, for the box.
            unsafe { self.write(run_boxed::<F>, Box::new(f)) };
        }
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

impl SlotPair {
    pub(crate) fn new() -> Self {
        SlotPair {
            request: RequestSlot {
                seq: AtomicU32::new(0),
                len: UnsafeCell::new(0),
                body: UnsafeCell::new(Body([MaybeUninit::uninit(); BODY])),
            },
            response: ResponseSlot {
                seq: AtomicU32::new(0),
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
        self.request.body.with_mut(|body| {
            // SAFETY: both bodies are BODY bytes; the trustee is not reading this one (contract). Copying the
            // bytes moves the records: `batch` forgets them (its length is now 0).
            unsafe { ptr::copy_nonoverlapping(batch.body.0.as_ptr(), (*body).0.as_mut_ptr(), len) }
        });
        // SAFETY: the trustee reads `len` only after seeing the new `seq`, which this Release store orders.
        self.request.len.with_mut(|l| unsafe { *l = len as u32 });
        self.request.seq.store(seq, Ordering::Release);
    }

    /// Client side: true once the trustee has run batch `seq`. Acquire: pairs with `answer`'s Release, so
    /// every write the records made is visible afterwards, and the body may be rewritten.
    #[inline]
    pub(crate) fn is_answered(&self, seq: u32) -> bool {
        self.response.seq.load(Ordering::Acquire) == seq
    }

    /// Trustee side: the number of a published batch not yet served, given the last number served.
    /// Acquire: pairs with `publish`'s Release, so the records are visible.
    #[inline]
    pub(crate) fn pending(&self, served: u32) -> Option<u32> {
        let seq = self.request.seq.load(Ordering::Acquire);
        (seq != served).then_some(seq)
    }

    /// Trustee side: the number of the last published batch.
    #[inline]
    pub(crate) fn published(&self) -> u32 {
        self.request.seq.load(Ordering::Acquire)
    }

    /// Trustee side: runs the records of the pending batch in order, from byte `from` (0, or where a paused
    /// run stopped). After each record, `pause()` may stop the run: then the offset of the next record is
    /// returned, to resume from later. `None`: the batch is done. Records must not unwind (the runtime's
    /// records catch panics themselves).
    ///
    /// # Safety
    /// Trustee only, after `pending` returned a number and before `answer` for it; each record is run once
    /// (`from` is 0 or an offset this method returned for the same batch).
    pub(crate) unsafe fn run_batch(&self, from: usize, pause: impl Fn() -> bool) -> Option<usize> {
        // SAFETY: published before `seq`, which `pending` acquired.
        let len = self.request.len.with(|l| unsafe { *l }) as usize;
        self.request.body.with_mut(|body| {
            let base = body.cast::<u8>();
            let mut offset = from;
            while offset < len {
                // SAFETY: the client wrote a header at each offset up to `len`, and the payload after it,
                // and does not touch the body until `answer`.
                unsafe {
                    let run = ptr::read(base.add(offset).cast::<Run>());
                    offset += run(base.add(offset + RECORD_HEADER));
                }
                if pause() {
                    return Some(offset);
                }
            }
            None
        })
    }

    /// Trustee side: batch `seq` is done; its records' results are written.
    #[inline]
    pub(crate) fn answer(&self, seq: u32) {
        self.response.seq.store(seq, Ordering::Release);
    }
}

// SAFETY: the body is accessed by one side at a time, handed over by the Release/Acquire pairs on the two
// sequence numbers; records are `Send` closures.
unsafe impl Send for SlotPair {}
// SAFETY: as above: the protocol, not a lock, keeps client and trustee out of each other's way.
unsafe impl Sync for SlotPair {}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

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
            match batch.push(move || _ = h.fetch_add(1, Ordering::Relaxed)) {
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
            pair.run_batch(0, || false);
        }
        pair.answer(1);
        assert!(pair.is_answered(1));
        assert_eq!(hits.load(Ordering::Relaxed), 71);
        assert!(batch.is_empty());

        // A 4 KiB capture cannot be inline: it is boxed, and its checksum survives.
        let big = [7u8; 4096];
        let sum = Arc::new(AtomicUsize::new(0));
        let s = sum.clone();
        assert!(!fits_inline::<[u8; 4096]>());
        let record =
            move || _ = s.fetch_add(big.iter().map(|&b| b as usize).sum(), Ordering::Relaxed);
        assert!(batch.push(record).is_ok());
        // SAFETY: as above.
        unsafe {
            pair.publish(2, &mut batch);
            pair.run_batch(0, || false);
        }
        pair.answer(2);
        assert_eq!(sum.load(Ordering::Relaxed), 7 * 4096);
    }

    #[test]
    fn two_threads_exchange_batches() {
        // Two real threads, 200 batches of 1..=8 records each, results written through raw pointers the way
        // the runtime does it. Under Miri this checks the protocol's data-race freedom.
        let rounds: u32 = if cfg!(miri) { 20 } else { 200 };
        let pair = Arc::new(SlotPair::new());
        let trustee = {
            let pair = pair.clone();
            std::thread::spawn(move || {
                let mut served = 0;
                while served != rounds {
                    if let Some(seq) = pair.pending(served) {
                        // SAFETY: trustee side of a published batch.
                        unsafe { pair.run_batch(0, || false) };
                        pair.answer(seq);
                        served = seq;
                    } else {
                        std::thread::yield_now();
                    }
                }
            })
        };
        struct Out(*mut u64);
        // SAFETY: the pointee outlives the batch and is written only by the record.
        unsafe impl Send for Out {}
        let mut results = [0u64; 8];
        for seq in 1..=rounds {
            let n = (seq % 8 + 1) as usize;
            let mut batch = Batch::new();
            for (i, slot) in results.iter_mut().enumerate().take(n) {
                let out = Out(slot);
                let payload = [seq as u64; 12]; // 8 records of 128 bytes: the batch spills into the overflow block
                let record = move || {
                    let out = out;
                    // SAFETY: the client waits for the answer before reading `results`.
                    unsafe { *out.0 = payload.iter().sum::<u64>() + i as u64 }
                };
                assert!(batch.push(record).is_ok());
            }
            // SAFETY: client side.
            unsafe { pair.publish(seq, &mut batch) };
            while !pair.is_answered(seq) {
                std::thread::yield_now();
            }
            for (i, r) in results.iter().enumerate().take(n) {
                assert_eq!(*r, 12 * seq as u64 + i as u64);
            }
        }
        trustee.join().unwrap();
    }
}

/// The protocol under loom: one client and one trustee exchange two batches — two inline records, one of them
/// spilling into the overflow block, then a boxed one — and every result the records write through raw
/// pointers must be visible to the client after the answer. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p trust-core --lib --release loom_model`.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::cell::UnsafeCell as Cell;
    use loom::sync::Arc;

    struct Results([Cell<u64>; 3]);
    // SAFETY: each cell is written by one record on the trustee and read by the client after the answer;
    // loom checks exactly that.
    unsafe impl Sync for Results {}
    unsafe impl Send for Results {}

    #[test]
    fn client_and_trustee_exchange_batches() {
        loom::model(|| {
            let pair = Arc::new(SlotPair::new());
            let results = Arc::new(Results([Cell::new(0), Cell::new(0), Cell::new(0)]));
            let trustee = {
                let pair = pair.clone();
                loom::thread::spawn(move || {
                    let mut served = 0;
                    while served != 2 {
                        match pair.pending(served) {
                            Some(seq) => {
                                // SAFETY: trustee side of a published batch.
                                unsafe { pair.run_batch(0, || false) };
                                pair.answer(seq);
                                served = seq;
                            }
                            None => loom::thread::yield_now(),
                        }
                    }
                })
            };
            let record = |i: usize, payload: Vec<u64>| {
                let results = results.clone();
                // SAFETY: see `Results`.
                move || results.0[i].with_mut(|r| unsafe { *r = payload.iter().sum() })
            };
            let mut batch = Batch::new();
            let small = record(0, vec![1, 2]);
            let spill = {
                let r = record(1, vec![3; 4]);
                let pad = [0u8; 200];
                move || {
                    std::hint::black_box(&pad);
                    r()
                }
            };
            assert!(batch.push(small).is_ok());
            assert!(batch.push(spill).is_ok());
            assert!(batch.len > PRIMARY);
            // SAFETY: nothing is in flight.
            unsafe { pair.publish(1, &mut batch) };
            while !pair.is_answered(1) {
                loom::thread::yield_now();
            }
            let boxed = {
                let r = record(2, vec![5; 3]);
                let pad = [0u8; 2 * BODY];
                move || {
                    std::hint::black_box(&pad);
                    r()
                }
            };
            assert!(!fits_inline_val(&boxed));
            assert!(batch.push(boxed).is_ok());
            // SAFETY: batch 1 is answered.
            unsafe { pair.publish(2, &mut batch) };
            while !pair.is_answered(2) {
                loom::thread::yield_now();
            }
            // SAFETY: answered: the records' writes happen-before these reads.
            let got: Vec<u64> = results
                .0
                .iter()
                .map(|c| c.with(|r| unsafe { *r }))
                .collect();
            assert_eq!(got, [3, 12, 15]);
            trustee.join().unwrap();
        });
    }

    fn fits_inline_val<F>(_: &F) -> bool {
        fits_inline::<F>()
    }
}
