//! `limit`: the physical limit of delegation on this machine, with no runtime at all: a bare single-producer /
//! single-consumer ring between a client thread and a server thread that owns a counter. A request that
//! crosses threads costs at least what it costs here, so the later tables compare their rows with the ring
//! (`vs ring`).
//!
//! - `ring_pipelined`: the client writes requests into the ring, publishes its tail every
//!   [`PUBLISH_EVERY`] requests and keeps at most [`RING`] in flight; the server applies them as they come
//!   and publishes how far it got.
//! - `ring_roundtrip`: one request in flight; the client spins until the server has applied it. Reported as
//!   ns per round trip (median of batches, as the `latency` rows) and, in the table, as M ops/s.
//! - `ring_closures`: `ring_pipelined` carrying what an `apply_then` carries, and nothing more: each request
//!   names a function the server calls through a pointer, each answer is a result the server writes back,
//!   and the client calls a continuation through a pointer with it. The least a closure-based delegation
//!   API costs on this machine, whatever its runtime does.
//!
//! The ring holds only plain loads and stores: each side writes its own index with a `Release` store and
//! reads the other's with an `Acquire` load; there is no read-modify-write anywhere (DESIGN.md section 4).

use std::hint::spin_loop;
use std::panic::resume_unwind;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;

use trust_core::Runtime;

use crate::harness::{
    Bench, Padded, RingLimit, Stop, Unit, check, latency_ops, median_ns, print_result,
};

const SCENARIO: &str = "limit";

/// Slots in the ring: the most requests in flight.
const RING: u64 = 64;

/// The client publishes its tail once per this many requests.
const PUBLISH_EVERY: u64 = 16;

/// Fruitless spins before a waiting side yields its core.
const YIELD_AFTER: u32 = 128;

/// One step of waiting for the other side: a spin, and every [`YIELD_AFTER`] spins a yield. On an idle
/// machine the other side answers long before the first yield; on a loaded one, where the client and the
/// server may share a core, the yield lets them take turns within microseconds instead of timeslices.
#[inline]
fn wait(spins: &mut u32) {
    *spins += 1;
    if spins.is_multiple_of(YIELD_AFTER) {
        thread::yield_now();
    } else {
        spin_loop();
    }
}

/// One request, 16 bytes: its sequence number (checked by the server) and the value to add. `Relaxed`
/// atomics compile to plain `mov`s; the `Release`/`Acquire` pair on the indices orders them.
#[derive(Default)]
struct Request {
    seq: AtomicU64,
    value: AtomicU64,
}

/// The shared state of one client and one server; each index on its own cache lines.
struct Ring {
    /// Requests published by the client (only the client writes it).
    tail: Padded<AtomicU64>,
    /// Requests applied by the server (only the server writes it).
    head: Padded<AtomicU64>,
    /// Raised by the client after its last publish: the server returns once it has applied everything.
    closed: Padded<AtomicBool>,
    /// Request `i` lives in `slots[i % RING]`.
    slots: Padded<[Request; RING as usize]>,
}

impl Default for Ring {
    fn default() -> Self {
        Ring {
            tail: Padded::default(),
            head: Padded::default(),
            closed: Padded::default(),
            slots: Padded(std::array::from_fn(|_| Request::default())),
        }
    }
}

impl Ring {
    /// The client's side: writes request `seq` into its slot (the caller has checked there is room).
    #[inline]
    fn write(&self, seq: u64) {
        let slot = &self.slots[(seq % RING) as usize];
        slot.seq.store(seq, Ordering::Relaxed);
        slot.value.store(1, Ordering::Relaxed);
    }

    /// The client's side, once it is done: after its last `tail` store.
    fn close(&self) {
        // Release: the server that sees `closed` also sees the final tail.
        self.closed.store(true, Ordering::Release);
    }

    /// The server's loop: applies every published request to a counter it owns, and returns the counter
    /// once the client has closed the ring and every request is applied.
    fn serve(&self) -> u64 {
        let (mut counter, mut head, mut spins) = (0u64, 0u64, 0);
        loop {
            // Acquire: the client's writes of the slots below `tail` are visible.
            let tail = self.tail.load(Ordering::Acquire);
            if tail == head {
                if self.closed.load(Ordering::Acquire) && self.tail.load(Ordering::Acquire) == head
                {
                    return counter;
                }
                wait(&mut spins);
                continue;
            }
            spins = 0;
            while head < tail {
                let slot = &self.slots[(head % RING) as usize];
                assert_eq!(
                    slot.seq.load(Ordering::Relaxed),
                    head,
                    "the ring delivered a request out of order"
                );
                counter += slot.value.load(Ordering::Relaxed);
                head += 1;
            }
            // Release: the server's reads of these slots are done before the client may reuse them.
            self.head.store(head, Ordering::Release);
        }
    }
}

/// The pipelining client: requests in groups of [`PUBLISH_EVERY`], at most [`RING`] in flight.
fn pipelined(ring: &Ring, stop: &Stop) -> u64 {
    let (mut tail, mut head) = (0u64, 0u64);
    while stop.running() {
        let mut spins = 0;
        while tail + PUBLISH_EVERY - head > RING {
            wait(&mut spins);
            // Acquire: the server has read the slots below `head`; they may be overwritten.
            head = ring.head.load(Ordering::Acquire);
        }
        for _ in 0..PUBLISH_EVERY {
            ring.write(tail);
            tail += 1;
        }
        // Release: the slots below `tail` are written before the server reads them.
        ring.tail.store(tail, Ordering::Release);
    }
    ring.close();
    tail
}

/// A `ring_closures` request: which function the server calls (an index into [`OPS`], which it calls
/// through a pointer: the compiler cannot see which) and its argument.
#[derive(Default)]
struct Call {
    op: AtomicUsize,
    arg: AtomicU64,
}

/// The functions a `ring_closures` client may send: a request's closure, type-erased.
static OPS: [fn(&mut u64, u64) -> u64; 2] = [
    |c, n| {
        *c += n;
        *c
    },
    |c, _| *c,
];

/// The continuations a `ring_closures` client may run with a result: type-erased the same way.
static THENS: [fn(&mut u64, u64); 2] = [|ran, _| *ran += 1, |_, _| {}];

/// A continuation waiting on the client: its function and its capture (here, the request's number).
type Then = (fn(&mut u64, u64), u64);

/// [`Ring`] with a function per request and a result per answer (`ring_closures`).
struct ClosureRing {
    tail: Padded<AtomicU64>,
    head: Padded<AtomicU64>,
    closed: Padded<AtomicBool>,
    slots: Padded<[Call; RING as usize]>,
    /// The result of request `i`, in `results[i % RING]`.
    results: Padded<[AtomicU64; RING as usize]>,
}

impl Default for ClosureRing {
    fn default() -> Self {
        ClosureRing {
            tail: Padded::default(),
            head: Padded::default(),
            closed: Padded::default(),
            slots: Padded(std::array::from_fn(|_| Call::default())),
            results: Padded(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

impl ClosureRing {
    /// The server: as [`Ring::serve`], calling each request's function and writing its result back.
    fn serve(&self) -> u64 {
        let (mut counter, mut head, mut spins) = (0u64, 0u64, 0);
        loop {
            let tail = self.tail.load(Ordering::Acquire);
            if tail == head {
                if self.closed.load(Ordering::Acquire) && self.tail.load(Ordering::Acquire) == head
                {
                    return counter;
                }
                wait(&mut spins);
                continue;
            }
            spins = 0;
            while head < tail {
                let i = (head % RING) as usize;
                let call = &self.slots[i];
                let f = OPS[call.op.load(Ordering::Relaxed)];
                let result = f(&mut counter, call.arg.load(Ordering::Relaxed));
                self.results[i].store(result, Ordering::Relaxed);
                head += 1;
            }
            // Release: the results are written before the client reads them (and the slots read before
            // it reuses them).
            self.head.store(head, Ordering::Release);
        }
    }

    /// The client: as [`pipelined`], also keeping a continuation per request (a function and its
    /// capture) and running each with its result once the server's head passes it. Checks that every
    /// continuation ran once, with the counter's value after its own request.
    fn pipelined(&self, stop: &Stop) -> u64 {
        let op = std::hint::black_box(0);
        let then = std::hint::black_box(0);
        let mut thens: [Then; RING as usize] = [(THENS[1], 0); RING as usize];
        let (mut tail, mut head, mut ran, mut count) = (0u64, 0u64, 0u64, 0u64);
        while stop.running() {
            let mut spins = 0;
            while tail + PUBLISH_EVERY - head > RING {
                wait(&mut spins);
                head = self.head.load(Ordering::Acquire);
                self.run_answered(&thens, head, &mut ran, &mut count);
            }
            for _ in 0..PUBLISH_EVERY {
                let i = (tail % RING) as usize;
                self.slots[i].op.store(op, Ordering::Relaxed);
                self.slots[i].arg.store(1, Ordering::Relaxed);
                thens[i] = (THENS[then], tail);
                tail += 1;
            }
            self.tail.store(tail, Ordering::Release);
            head = self.head.load(Ordering::Acquire);
            self.run_answered(&thens, head, &mut ran, &mut count);
        }
        self.closed.store(true, Ordering::Release);
        let mut spins = 0;
        while ran < tail {
            wait(&mut spins);
            self.run_answered(
                &thens,
                self.head.load(Ordering::Acquire),
                &mut ran,
                &mut count,
            );
        }
        assert_eq!(count, tail, "every continuation ran once");
        tail
    }

    /// Runs the continuations of the requests below `head` not run yet (`ran` onwards), in order.
    #[inline]
    fn run_answered(&self, thens: &[Then], head: u64, ran: &mut u64, count: &mut u64) {
        while *ran < head {
            let i = (*ran % RING) as usize;
            let (f, capture) = thens[i];
            let result = self.results[i].load(Ordering::Relaxed);
            assert_eq!(
                result,
                capture + 1,
                "each result belongs to its own request"
            );
            f(count, result);
            *ran += 1;
        }
    }
}

/// One request in flight: the median ns of a round trip, measured on a client thread against a server
/// thread; checks that the server applied every request.
pub fn roundtrip(samples: usize) -> f64 {
    let ring = Ring::default();
    let barrier = Barrier::new(2);
    let (ns, applied) = thread::scope(|s| {
        let server = s.spawn(|| {
            barrier.wait();
            ring.serve()
        });
        let client = s.spawn(|| {
            barrier.wait();
            let mut seq = 0;
            let ns = median_ns(samples, || {
                ring.write(seq);
                seq += 1;
                ring.tail.store(seq, Ordering::Release);
                let mut spins = 0;
                while ring.head.load(Ordering::Acquire) != seq {
                    wait(&mut spins);
                }
            });
            ring.close();
            ns
        });
        let ns = client.join().unwrap_or_else(|p| resume_unwind(p));
        (ns, server.join().unwrap_or_else(|p| resume_unwind(p)))
    });
    check(SCENARIO, "ring_roundtrip", 2, latency_ops(samples), applied);
    ns
}

/// `ring_pipelined` measured again, as a row of `scenario`, and made the ring that scenario's `vs ring`
/// compares with: this VM's speed drifts severalfold between minutes (the ring ran at 67 and at 434 M ops/s
/// in two runs of one morning), so a ratio is only worth something between rows measured seconds apart.
pub fn pipelined_again(b: &mut Bench, scenario: &'static str) {
    let (issued, applied) = b.pair(
        scenario,
        "ring_pipelined",
        Ring::default,
        pipelined,
        Ring::serve,
    );
    check(scenario, "ring_pipelined", 2, issued, applied);
    let mops = b.rows.last().expect("just recorded").value;
    if let Some(ring) = &mut b.ring {
        ring.pipelined_mops = mops;
    }
}

pub fn run(b: &mut Bench, _rt: &Runtime) {
    let (issued, applied) = b.pair(
        SCENARIO,
        "ring_pipelined",
        Ring::default,
        pipelined,
        Ring::serve,
    );
    check(SCENARIO, "ring_pipelined", 2, issued, applied);
    let pipelined_mops = b.rows.last().expect("just recorded").value;

    let (issued, applied) = b.pair(
        SCENARIO,
        "ring_closures",
        ClosureRing::default,
        ClosureRing::pipelined,
        ClosureRing::serve,
    );
    check(SCENARIO, "ring_closures", 2, issued, applied);

    let roundtrip_ns = roundtrip(b.cfg.latency_samples);
    print_result(SCENARIO, "ring_roundtrip", 2, roundtrip_ns, Unit::Ns);
    b.record(
        SCENARIO,
        "ring_roundtrip",
        2,
        1e3 / roundtrip_ns,
        Unit::Mops,
    );

    b.table_vs(
        SCENARIO,
        "ring_pipelined",
        &format!(
            "A bare SPSC ring between two threads, no runtime: the physical limit of delegation. \
             `ring_pipelined`: one client, a publish every {PUBLISH_EVERY} requests, at most {RING} in \
             flight; `ring_roundtrip`: one request in flight, {roundtrip_ns:.1} ns per round trip (median); `ring_closures`: \
             `ring_pipelined` with a function called through a pointer per request, its result written \
             back, and a continuation called through a pointer with it on the client (the least a \
             closure-based API costs)."
        ),
    );
    b.ring = Some(RingLimit {
        pipelined_mops,
        roundtrip_ns,
    });
}
