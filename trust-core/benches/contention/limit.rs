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
//! reads the other's with an `Acquire` load; there is no read-modify-write anywhere (../shared/DESIGN.md section 4).

use std::cell::Cell;
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
pub fn wait(spins: &mut u32) {
    *spins += 1;
    if spins.is_multiple_of(YIELD_AFTER) {
        thread::yield_now();
    } else {
        spin_loop();
    }
}

/// What a client and its server share besides the requests: how far each has got, and whether the client is
/// done; each on its own cache lines. Both rings below run on it.
#[derive(Default)]
struct Indices {
    /// Requests published by the client (only the client writes it).
    tail: Padded<AtomicU64>,
    /// Requests applied by the server (only the server writes it).
    head: Padded<AtomicU64>,
    /// Raised by the client after its last publish: the server returns once it has applied everything.
    closed: Padded<AtomicBool>,
}

impl Indices {
    /// The server's loop: `apply(i)` for every published request `i`, in order, then publishes how far it got;
    /// returns once the client has closed the ring and every request is applied.
    fn serve(&self, mut apply: impl FnMut(u64)) {
        let (mut head, mut spins) = (0u64, 0);
        loop {
            // Acquire: the client's writes of the requests below `tail` are visible.
            let tail = self.tail.load(Ordering::Acquire);
            if tail == head {
                if self.closed.load(Ordering::Acquire) && self.tail.load(Ordering::Acquire) == head
                {
                    return;
                }
                wait(&mut spins);
                continue;
            }
            spins = 0;
            while head < tail {
                apply(head);
                head += 1;
            }
            // Release: the server is done with these slots (and wrote their results) before the client
            // reuses them.
            self.head.store(head, Ordering::Release);
        }
    }

    /// The pipelining client: `write(i)` for requests in groups of [`PUBLISH_EVERY`], at most [`RING`] in
    /// flight; `answered(head)` each time it learns how far the server got: when it needs room, and, if
    /// `answers` (a client that has something to do with them), after every publish too. Returns the
    /// requests issued, once the server has applied them all.
    fn pipeline(
        &self,
        stop: &Stop,
        answers: bool,
        mut write: impl FnMut(u64),
        mut answered: impl FnMut(u64),
    ) -> u64 {
        let (mut tail, mut head) = (0u64, 0u64);
        while stop.running() {
            let mut spins = 0;
            while tail + PUBLISH_EVERY - head > RING {
                wait(&mut spins);
                // Acquire: the server is done with the slots below `head`; they may be overwritten.
                head = self.head.load(Ordering::Acquire);
                answered(head);
            }
            for _ in 0..PUBLISH_EVERY {
                write(tail);
                tail += 1;
            }
            // Release: the slots below `tail` are written before the server reads them.
            self.tail.store(tail, Ordering::Release);
            if answers {
                head = self.head.load(Ordering::Acquire);
                answered(head);
            }
        }
        // Release: the server that sees `closed` also sees the final tail.
        self.closed.store(true, Ordering::Release);
        let mut spins = 0;
        while head < tail {
            wait(&mut spins);
            head = self.head.load(Ordering::Acquire);
            answered(head);
        }
        tail
    }
}

/// One request, 16 bytes: its sequence number (checked by the server) and the value to add. `Relaxed`
/// atomics compile to plain `mov`s; the `Release`/`Acquire` pair on the indices orders them.
#[derive(Default)]
struct Request {
    seq: AtomicU64,
    value: AtomicU64,
}

/// The bare ring: request `i` lives in `slots[i % RING]`.
struct Ring {
    at: Indices,
    slots: Padded<[Request; RING as usize]>,
}

impl Default for Ring {
    fn default() -> Self {
        Ring {
            at: Indices::default(),
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

    /// The server: applies every request to a counter it owns, and returns the counter.
    fn serve(&self) -> u64 {
        let mut counter = 0;
        self.at.serve(|i| {
            let slot = &self.slots[(i % RING) as usize];
            assert_eq!(
                slot.seq.load(Ordering::Relaxed),
                i,
                "the ring delivered a request out of order"
            );
            counter += slot.value.load(Ordering::Relaxed);
        });
        counter
    }

    /// The pipelining client.
    fn pipelined(&self, stop: &Stop) -> u64 {
        self.at.pipeline(stop, false, |i| self.write(i), |_| {})
    }
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
    at: Indices,
    slots: Padded<[Call; RING as usize]>,
    /// The result of request `i`, in `results[i % RING]`.
    results: Padded<[AtomicU64; RING as usize]>,
}

impl Default for ClosureRing {
    fn default() -> Self {
        ClosureRing {
            at: Indices::default(),
            slots: Padded(std::array::from_fn(|_| Call::default())),
            results: Padded(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

impl ClosureRing {
    /// The server: calls each request's function on a counter it owns and writes the result back.
    fn serve(&self) -> u64 {
        let mut counter = 0;
        self.at.serve(|i| {
            let i = (i % RING) as usize;
            let f = OPS[self.slots[i].op.load(Ordering::Relaxed)];
            let result = f(&mut counter, self.slots[i].arg.load(Ordering::Relaxed));
            self.results[i].store(result, Ordering::Relaxed);
        });
        counter
    }

    /// The client: keeps a continuation per request (a function and its capture) and runs each with its
    /// result once the server's head passes it, in order. Checks that every continuation ran once, with the
    /// counter's value after its own request.
    fn pipelined(&self, stop: &Stop) -> u64 {
        let op = std::hint::black_box(0);
        let then = std::hint::black_box(0);
        let thens: [Cell<Then>; RING as usize] = std::array::from_fn(|_| Cell::new((THENS[1], 0)));
        let (ran, count) = (Cell::new(0u64), Cell::new(0u64));
        let issued = self.at.pipeline(
            stop,
            true,
            |i| {
                let slot = (i % RING) as usize;
                self.slots[slot].op.store(op, Ordering::Relaxed);
                self.slots[slot].arg.store(1, Ordering::Relaxed);
                thens[slot].set((THENS[then], i));
            },
            |head| {
                let mut counted = count.get();
                while ran.get() < head {
                    let slot = (ran.get() % RING) as usize;
                    let (f, capture) = thens[slot].get();
                    let result = self.results[slot].load(Ordering::Relaxed);
                    assert_eq!(
                        result,
                        capture + 1,
                        "each result belongs to its own request"
                    );
                    f(&mut counted, result);
                    ran.set(ran.get() + 1);
                }
                count.set(counted);
            },
        );
        assert_eq!(count.get(), issued, "every continuation ran once");
        issued
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
                ring.at.tail.store(seq, Ordering::Release);
                let mut spins = 0;
                while ring.at.head.load(Ordering::Acquire) != seq {
                    wait(&mut spins);
                }
            });
            ring.at.closed.store(true, Ordering::Release);
            ns
        });
        let ns = client.join().unwrap_or_else(|p| resume_unwind(p));
        (ns, server.join().unwrap_or_else(|p| resume_unwind(p)))
    });
    check(SCENARIO, "ring_roundtrip", 2, latency_ops(samples), applied);
    ns
}

/// `ring_pipelined` and `ring_closures` measured again, as rows of `scenario`, and the first made the ring that
/// scenario's `vs ring` compares with: this VM's speed drifts severalfold between minutes (the ring ran at 67
/// and at 434 M ops/s in two runs of one morning), so a ratio is only worth something between rows measured
/// seconds apart.
pub fn rings_again(b: &mut Bench, scenario: &'static str) {
    let mops = ring_row(b, scenario);
    if let Some(ring) = &mut b.ring {
        ring.pipelined_mops = mops;
    }
    closure_ring_row(b, scenario);
}

/// Measures `ring_pipelined` as a row of `scenario` (checked: the server applied every request); returns its
/// M ops/s.
pub fn ring_row(b: &mut Bench, scenario: &'static str) -> f64 {
    let (issued, applied) = b.pair(
        scenario,
        "ring_pipelined",
        Ring::default,
        Ring::pipelined,
        Ring::serve,
    );
    check(scenario, "ring_pipelined", 2, issued, applied);
    b.rows.last().expect("just recorded").value
}

/// Measures `ring_closures` as a row of `scenario` (checked); returns its M ops/s.
pub fn closure_ring_row(b: &mut Bench, scenario: &'static str) -> f64 {
    let (issued, applied) = b.pair(
        scenario,
        "ring_closures",
        ClosureRing::default,
        ClosureRing::pipelined,
        ClosureRing::serve,
    );
    check(scenario, "ring_closures", 2, issued, applied);
    b.rows.last().expect("just recorded").value
}

pub fn run(b: &mut Bench, _rt: &Runtime) {
    let pipelined_mops = ring_row(b, SCENARIO);
    closure_ring_row(b, SCENARIO);

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
