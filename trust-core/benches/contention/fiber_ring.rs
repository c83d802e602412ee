//! `ring_fibers`: the floor of fiber delegation for `counters-1024`, with no runtime: what any design that
//! runs its clients as fibers beside the trustees must do, and nothing more.
//!
//! Two threads each own half of 1,024 counters (counter i on thread i mod 2, each on its own 128 bytes, as
//! the runtime's properties are) and run 256 `corosensei` coroutines. A coroutine increments counters picked
//! uniformly at random through an array of handles (as the bench's `Trust<u64>`s: each names its counter and
//! the thread that owns it): its own thread's directly; the other thread's by writing a request (which
//! function to call, on which counter, for which coroutine) into a bare ring to that thread and suspending
//! until the answer comes back. Each thread loops: resume up to 64 ready coroutines, publish the requests they wrote,
//! serve the requests the other thread published (each through a function pointer, the answer written into
//! a ring back), publish the answers, and make ready the coroutines whose answers arrived.
//!
//! What it leaves out, and the runtime pays for: records of any size and type, results of any size, panics
//! caught on both sides, fairness between local and remote clients, fibers that block on anything else,
//! sleeping when idle. So the runtime's `counters-1024` row cannot reach this one; the ratio between them is
//! what the runtime's generality costs there, and this row's ratio to `parking_lot` is the most delegation
//! with fibers can get on this machine, whatever its runtime.
//!
//! `counter`'s floor (`Layout::One`) is the same program on one counter, owned by thread 0, so thread 0's
//! coroutines apply inline and thread 1's only remotely, with the fairness the issue asks of the runtime's
//! `counter` row (the slowest fiber at least half the mean): inline applies are paid for by served remote
//! requests, `CREDIT` each, and a coroutine without credit waits (held) until the next requests are served.
//! Three is the most fairness 0.5 allows (local fibers at 3 times the remote ones' rate: the mean is twice the
//! remote rate), so this row is the most any fiber delegation on one counter can do on this machine at that
//! fairness: four times the rate at which thread 1's coroutines get their requests served.
//!
//! The rings need no room check: a coroutine has at most one request in flight, so with a slot per
//! coroutine, the request (or answer) a slot last held was consumed before its coroutine, or another, could
//! send the one that reuses it. Only plain loads and stores: each side publishes its tail with a `Release`
//! store and reads the other's with an `Acquire` load.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::resume_unwind;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult};

use crate::counter::FIBERS_PER_WORKER as FIBERS_PER_THREAD;
use crate::harness::{Bench, Padded, check};
use crate::limit;
use crate::rng::Rng;

/// Counters, as in `counters-1024`.
const COUNTERS: usize = 1024;

/// Inline applies each served remote request pays for, in `Layout::One` (see the module docs).
const CREDIT: u64 = 3;

/// Which counters there are, and where.
#[derive(Clone, Copy)]
pub enum Layout {
    /// `counters-1024`: 1,024 counters, counter i on thread i mod 2, inline applies unlimited.
    Spread,
    /// `counter`: one counter on thread 0, inline applies paid for by served remote requests.
    One,
}

/// Coroutines resumed between two looks at the rings (the runtime's turn is 64 too).
const TURN: usize = 64;

/// Stack of one coroutine.
const STACK: usize = 64 * 1024;

/// The functions a request may name, called through a pointer (the server cannot see which): the type-erased
/// closure of a delegated `|c| *c += 1`.
static OPS: [fn(&AtomicU64) -> u64; 2] = [
    |c| {
        let v = c.load(Ordering::Relaxed) + 1;
        c.store(v, Ordering::Relaxed);
        v
    },
    |c| c.load(Ordering::Relaxed),
];

/// One ring slot, two words: a request (`op << 32 | counter`, coroutine) or an answer (coroutine, value).
/// `Relaxed` atomics compile to plain `mov`s; the tails' `Release`/`Acquire` order them.
#[derive(Default)]
struct Slot(AtomicU64, AtomicU64);

/// A one-way ring: `slots[i % len]` holds message `i`; only the producer writes `tail`.
struct Ring {
    slots: Box<[Slot]>,
    tail: Padded<AtomicU64>,
}

impl Ring {
    fn new(len: usize) -> Self {
        Ring {
            slots: (0..len).map(|_| Slot::default()).collect(),
            tail: Padded(AtomicU64::new(0)),
        }
    }

    #[inline]
    fn write(&self, at: u64, a: u64, b: u64) {
        let slot = &self.slots[at as usize % self.slots.len()];
        slot.0.store(a, Ordering::Relaxed);
        slot.1.store(b, Ordering::Relaxed);
    }

    #[inline]
    fn read(&self, at: u64) -> (u64, u64) {
        let slot = &self.slots[at as usize % self.slots.len()];
        (
            slot.0.load(Ordering::Relaxed),
            slot.1.load(Ordering::Relaxed),
        )
    }
}

/// What the two threads share.
struct Shared {
    counters: Box<[Padded<AtomicU64>]>,
    /// By counter: its index and the thread that owns it (16 bytes, as a `Trust<u64>`).
    handles: Box<[(usize, usize)]>,
    /// `requests[t]`: from thread t to the other; `answers[t]`: from thread t back to the other.
    requests: [Ring; 2],
    answers: [Ring; 2],
    stop: AtomicBool,
    /// Coroutines that have returned, on both threads: a thread leaves when all have (none waits any more).
    done: AtomicUsize,
}

/// Measures `ring_fibers` as a row of `scenario` under the label `threads` (it always runs on two threads,
/// as the runtime's fiber rows run on its two workers), the counters checked; returns its M ops/s.
pub fn row(b: &mut Bench, scenario: &'static str, threads: usize, layout: Layout) -> f64 {
    b.measure(scenario, "ring_fibers", threads, |duration| {
        run(duration, FIBERS_PER_THREAD, layout)
    });
    b.rows.last().expect("just recorded").value
}

/// Runs the floor for `duration` with `per_thread` coroutines on each of two threads; returns each
/// coroutine's operations and the seconds measured, after checking the counters against them.
pub fn run(duration: Duration, per_thread: usize, layout: Layout) -> (Vec<u64>, f64) {
    let (counters, owner): (usize, fn(usize) -> usize) = match layout {
        Layout::Spread => (COUNTERS, |i| i % 2),
        Layout::One => (1, |_| 0),
    };
    let shared = Arc::new(Shared {
        counters: (0..counters).map(|_| Padded(AtomicU64::new(0))).collect(),
        // 1,024 handles either way: a coroutine picks one as in `counters-1024`.
        handles: (0..COUNTERS).map(|i| (i % counters, owner(i))).collect(),
        requests: [Ring::new(per_thread), Ring::new(per_thread)],
        answers: [Ring::new(per_thread), Ring::new(per_thread)],
        stop: AtomicBool::new(false),
        done: AtomicUsize::new(0),
    });
    let ready = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (shared, ready) = (shared.clone(), ready.clone());
            thread::spawn(move || side(&shared, t, per_thread, layout, &ready))
        })
        .collect();
    ready.wait();
    let start = Instant::now();
    thread::sleep(duration);
    shared.stop.store(true, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let per_fiber: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_else(|p| resume_unwind(p)))
        .collect();
    let counted: u64 = shared
        .counters
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum();
    check(
        match layout {
            Layout::Spread => "counters-1024",
            Layout::One => "counter",
        },
        "ring_fibers",
        2,
        per_fiber.iter().sum(),
        counted,
    );
    (per_fiber, secs)
}

/// What a thread's coroutines share with their scheduler: the tail of the requests they wrote, the inline
/// applies paid for, and the coroutines waiting for credit.
struct Side {
    requests: Cell<u64>,
    credit: Cell<u64>,
    held: RefCell<VecDeque<u32>>,
}

/// One thread: its coroutines and its loop. Returns the operations of each of its coroutines.
fn side(
    shared: &Arc<Shared>,
    t: usize,
    per_thread: usize,
    layout: Layout,
    ready_to_go: &Barrier,
) -> Vec<u64> {
    let (credit, per_served) = match layout {
        Layout::Spread => (u64::MAX, 0),
        Layout::One => (0, CREDIT),
    };
    let mine = Rc::new(Side {
        requests: Cell::new(0),
        credit: Cell::new(credit),
        held: RefCell::new(VecDeque::new()),
    });
    let mut fibers: Vec<Coroutine<u64, (), u64>> = (0..per_thread)
        .map(|f| {
            let (shared, mine) = (shared.clone(), mine.clone());
            let stack = DefaultStack::new(STACK).expect("a coroutine stack");
            Coroutine::with_stack(stack, move |yielder, _: u64| {
                let mut rng = Rng::new((t * per_thread + f) as u64 + 1);
                let mut ops = 0;
                while !shared.stop.load(Ordering::Relaxed) {
                    let (i, owner) = shared.handles[(rng.next_u64() >> 54) as usize];
                    if owner == t {
                        if mine.credit.get() == 0 {
                            mine.held.borrow_mut().push_back(f as u32);
                            yielder.suspend(());
                            continue;
                        }
                        mine.credit.set(mine.credit.get() - 1);
                        OPS[0](&shared.counters[i]);
                    } else {
                        let at = mine.requests.get();
                        shared.requests[t].write(at, i as u64, f as u64);
                        mine.requests.set(at + 1);
                        std::hint::black_box(yielder.suspend(()));
                    }
                    ops += 1;
                }
                ops
            })
        })
        .collect();
    let mut queue: VecDeque<u32> = (0..per_thread as u32).collect();
    let mut answer_of = vec![0u64; per_thread];
    let mut ops = vec![0; per_thread];
    let mut idle = 0;
    let (mut served, mut answered, mut collected, mut returned) = (0u64, 0u64, 0u64, 0);
    let (inbox, replies) = (&shared.requests[1 - t], &shared.answers[1 - t]);
    ready_to_go.wait();
    loop {
        for _ in 0..TURN {
            let Some(f) = queue.pop_front() else { break };
            if let CoroutineResult::Return(n) = fibers[f as usize].resume(answer_of[f as usize]) {
                ops[f as usize] = n;
                returned += 1;
                shared.done.fetch_add(1, Ordering::Release);
            }
        }
        // Release: the requests below the tail are written.
        shared.requests[t]
            .tail
            .store(mine.requests.get(), Ordering::Release);
        // Serve the other thread's requests; Acquire: they are written.
        let (tail, before) = (inbox.tail.load(Ordering::Acquire), served);
        while served < tail {
            let (request, fiber) = inbox.read(served);
            let value = OPS[(request >> 32) as usize](&shared.counters[request as u32 as usize]);
            shared.answers[t].write(answered, fiber, value);
            (served, answered) = (served + 1, answered + 1);
        }
        shared.answers[t].tail.store(answered, Ordering::Release);
        // Served requests pay for inline applies: one coroutine waiting for credit goes on (it applies until
        // the credit is spent; the others take their turns in order). At the stop, all go on, to return.
        if per_served > 0 {
            mine.credit
                .set(mine.credit.get() + per_served * (served - before));
            let stopping = shared.stop.load(Ordering::Relaxed);
            if mine.credit.get() > 0 || stopping {
                let mut held = mine.held.borrow_mut();
                let n = if stopping {
                    held.len()
                } else {
                    held.len().min(1)
                };
                queue.extend(held.drain(..n));
            }
        }
        let tail = replies.tail.load(Ordering::Acquire);
        while collected < tail {
            let (fiber, value) = replies.read(collected);
            answer_of[fiber as usize] = value;
            queue.push_back(fiber as u32);
            collected += 1;
        }
        if queue.is_empty() {
            if returned == per_thread && shared.done.load(Ordering::Acquire) == 2 * per_thread {
                return ops;
            }
            // As the rings of `limit` wait: a yield now and then, for a loaded machine.
            limit::wait(&mut idle);
        } else {
            idle = 0;
        }
    }
}
