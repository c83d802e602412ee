//! Review 85 (hostile): what reviews 79, 81 and 82 left.
//!
//! 1. Every kind of client on ONE lock at once. An `IntervalRwLock` (then an `IntervalMutex`) of drop-counted
//!    tokens is locked, for reading and writing over seeded random overlapping ranges, at the same time by:
//!    blocking OS threads (with `try_*` mixed in); fibers of the delegation runtime on both workers (blocking
//!    borrows held across `trust_core::yield_now`, and futures polled by a fiber that yields between polls,
//!    some dropped while queued); `may` coroutines (blocking borrows held across coroutine yields; some
//!    coroutines loop until they are cancelled, while waiting or while holding); tokio tasks on a
//!    multi-thread runtime and on a `current_thread` runtime (timeouts, the losing branch of a biased `select!`,
//!    futures dropped after one poll, aborted tasks); and a plain thread that keeps making `apply` round trips to
//!    both trustees (a fiber that parked its worker would stall them). Each element records, through atomics,
//!    the readers and the writer that hold it, so any overlap of a write with another borrow is seen by both
//!    sides; a reader checks that the last write of each element it sees is in every element of its range that
//!    the write covered (no torn write) and that nothing changed while it held the range. At the end: every
//!    client finished all of its operations (no kind starved), nothing is held or queued, every element holds
//!    exactly the completed writes over it in commit order, and every token is dropped exactly once.
//! 2. Grant chains across kinds: one range is held, requests of every kind queue behind it one after another
//!    (writes: a FIFO chain; then a batch of reads of every kind between two writes), in all rotations of the
//!    kinds; the grants must come in queue order and all complete (no lost wake-up between kinds), while the
//!    waiting fibers' worker keeps serving `apply` and running its other fibers.
//! 3. The `IntervalRwLock` queue walk with hostile wakers: deterministic scenes (a batch of reads whose first
//!    woken waker withdraws a granted sibling, or a still-queued writer, or releases a guard, or makes a new
//!    request, or calls `try_*`; a withdrawn request's own waker doing the same; a clone that does it) and a
//!    seeded random walk on a readers-writer lock whose wakers run such re-entrant actions on `clone`, `wake`,
//!    `wake_by_ref` and `drop`, in chains, checked against an exact model of the grant rule after every step.
//!    The walk and the scenes run under Miri (small size).
//!
//! Every wait has a deadline: a hang fails with a message naming what hung and the lock's counts.
//!
//! Finding (fixed: `Wake::drop_then_wake_all` now wakes threads and fibers first): the walk that woke the requests a
//! release or a withdrawal granted called them in tree order, so a task's `Waker` (executor code) could run before
//! the `unpark` of a thread (or the mail to a fiber) granted in the same walk. A waker that waits (for this lock, or
//! for anything that thread does once it has its borrow) then waited for good, and the thread, granted but never
//! woken, with it (`a_waker_that_waits_in_a_batch_for_a_granted_thread` / `_fiber`; a withdrawn request's own waker
//! whose drop waits: `a_withdrawn_requests_waker_whose_drop_waits_for_the_thread_it_let_through`; a `may`
//! coroutine, which polls, is not affected: `a_waker_that_waits_in_a_batch_for_a_granted_coroutine`). Everything
//! else held: exact contents, no torn or overlapping borrow, no lost wake-up, no starved kind, every token dropped
//! once, every re-entrant waker action consistent with the grant rule.

#[macro_use]
mod common;
mod interval_storm;

use std::cell::{Cell as StdCell, RefCell};
use std::collections::HashSet;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

use interval_storm::{Count, Rng, counting, poll_once};
use trust_core::interval::{
    IntervalMutex, IntervalRwLock, ReadFuture, ReadGuard, TryLockError, WriteFuture, WriteGuard,
};

const SEQ: Ordering = Ordering::SeqCst;

/// Starts `f` in a fiber of worker `w` (spawning until one lands there: other tests of this binary spawn
/// fibers at the same time, so the round-robin cannot be predicted); `f` runs on no other worker.
fn spawn_on_worker<R: Send + 'static>(
    w: usize,
    f: impl FnOnce() -> R + Send + 'static,
) -> trust_core::Fiber<Option<R>> {
    let mut f = Some(f);
    loop {
        let landed = Arc::new(AtomicBool::new(false));
        let (l, mut g) = (landed.clone(), f.take());
        let (tx, rx) = std::sync::mpsc::channel();
        let fiber = trust_core::spawn(move || {
            if trust_core::local_trustee().index() != w {
                tx.send(g.take()).unwrap();
                return None;
            }
            l.store(true, SEQ);
            Some(g.take().unwrap()())
        });
        loop {
            if landed.load(SEQ) {
                return fiber;
            }
            if let Ok(back) = rx.try_recv() {
                f = back;
                break;
            }
            std::thread::yield_now();
        }
    }
}

/// Waits for `done` up to `secs`, or fails naming `what` and `status()`.
fn wait_until(what: &str, secs: u64, done: impl Fn() -> bool, status: impl Fn() -> String) {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > Duration::from_secs(secs) {
            panic!("HUNG: {what} not done within {secs} s; {}", status());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

// =========================================================================================================
// 1. Every kind of client on one lock.
// =========================================================================================================

/// Drop bookkeeping of the tokens of one storm.
#[derive(Default)]
struct Counters {
    created: AtomicUsize,
    dropped: AtomicUsize,
    dropped_keys: Mutex<HashSet<(u64, u32)>>,
    doubles: AtomicUsize,
}

/// One write's mark on one element: drop-counted, unique by `(seq, idx)`.
struct Tok {
    seq: u64,
    id: u32,
    start: u32,
    end: u32,
    idx: u32,
    c: &'static Counters,
}

impl Drop for Tok {
    fn drop(&mut self) {
        self.c.dropped.fetch_add(1, SEQ);
        if !self
            .c
            .dropped_keys
            .lock()
            .unwrap()
            .insert((self.seq, self.idx))
        {
            self.c.doubles.fetch_add(1, SEQ);
        }
    }
}

/// An element: the writes over it, and who holds it now (seen through atomics by both sides of an overlap).
#[derive(Default)]
struct Elem {
    toks: Vec<Tok>,
    readers: AtomicUsize,
    writer: AtomicU32,
}

/// The client kinds, for progress reports.
const KINDS: [&str; 7] = [
    "thread",
    "fiber",
    "fiber-async",
    "coroutine",
    "tokio-mt",
    "tokio-ct",
    "cancelled-coroutine",
];

struct Shared {
    rw: Option<IntervalRwLock<Elem>>,
    mx: Option<IntervalMutex<Elem>>,
    len: usize,
    c: &'static Counters,
    seq: AtomicU64,
    next_id: AtomicU32,
    /// Completed writes: (id, start, end, seq).
    log: Mutex<Vec<(u32, usize, usize, u64)>>,
    violations: Mutex<Vec<String>>,
    /// Set once every client is started: they all begin together.
    go: AtomicBool,
    /// Completed operations per kind (`KINDS`).
    ops: [AtomicUsize; 7],
    /// Longest wait for a grant per kind, in microseconds (reported, not asserted).
    max_wait_us: [AtomicU64; 7],
}

impl Shared {
    fn new(mutex: bool, len: usize) -> &'static Shared {
        let elems = || (0..len).map(|_| Elem::default()).collect::<Vec<_>>();
        Box::leak(Box::new(Shared {
            rw: (!mutex).then(|| IntervalRwLock::new(elems())),
            mx: mutex.then(|| IntervalMutex::new(elems())),
            len,
            c: Box::leak(Box::default()),
            seq: AtomicU64::new(0),
            next_id: AtomicU32::new(1),
            log: Mutex::default(),
            violations: Mutex::default(),
            go: AtomicBool::new(false),
            ops: Default::default(),
            max_wait_us: Default::default(),
        }))
    }

    fn violation(&self, what: String) {
        let mut v = self.violations.lock().unwrap();
        if v.len() < 20 {
            v.push(what);
        }
    }

    fn held_queued(&self) -> (usize, usize) {
        match (&self.rw, &self.mx) {
            (Some(l), _) => (l.held(), l.queued()),
            (_, Some(m)) => (m.held(), m.queued()),
            _ => unreachable!(),
        }
    }

    fn status(&self) -> String {
        let ops: Vec<_> = KINDS
            .iter()
            .zip(&self.ops)
            .map(|(k, n)| format!("{k}={}", n.load(SEQ)))
            .collect();
        format!(
            "(held, queued) = {:?}; ops done: {}",
            self.held_queued(),
            ops.join(" ")
        )
    }

    /// A random request: (write, range). A mutex only writes.
    fn pick(&self, rng: &mut Rng) -> (bool, Range<usize>) {
        let write = self.mx.is_some() || rng.below(5) < 2;
        if rng.below(60) == 0 {
            return (write, 0..self.len);
        }
        let start = rng.below(self.len as u64) as usize;
        let end = (start + 1 + rng.below(8) as usize).min(self.len);
        (write, start..end)
    }

    fn blocking(&'static self, write: bool, r: Range<usize>) -> G {
        match (&self.rw, &self.mx) {
            (Some(l), _) if write => G::W(l.write(r)),
            (Some(l), _) => G::R(l.read(r)),
            (_, Some(m)) => G::W(m.lock(r)),
            _ => unreachable!(),
        }
    }

    fn try_(&'static self, write: bool, r: Range<usize>) -> Result<G, TryLockError> {
        match (&self.rw, &self.mx) {
            (Some(l), _) if write => l.try_write(r).map(G::W),
            (Some(l), _) => l.try_read(r).map(G::R),
            (_, Some(m)) => m.try_lock(r).map(G::W),
            _ => unreachable!(),
        }
    }

    fn future(&'static self, write: bool, r: Range<usize>) -> F {
        match (&self.rw, &self.mx) {
            (Some(l), _) if write => F::W(l.write_async(r)),
            (Some(l), _) => F::R(l.read_async(r)),
            (_, Some(m)) => F::W(m.lock_async(r)),
            _ => unreachable!(),
        }
    }

    fn note_wait(&self, kind: usize, since: Instant) {
        let us = since.elapsed().as_micros() as u64;
        self.max_wait_us[kind].fetch_max(us, SEQ);
    }
}

enum G {
    R(ReadGuard<'static, Elem>),
    W(WriteGuard<'static, Elem>),
}

enum F {
    R(ReadFuture<'static, Elem>),
    W(WriteFuture<'static, Elem>),
}

impl Future for F {
    type Output = G;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<G> {
        match self.get_mut() {
            F::R(f) => Pin::new(f).poll(cx).map(G::R),
            F::W(f) => Pin::new(f).poll(cx).map(G::W),
        }
    }
}

/// A granted borrow under watch: marks its elements on grant (a write also writes its tokens and logs itself,
/// in one synchronous step, so a cancellation cannot split it), checks them on `check`, unmarks on drop.
struct Held {
    g: Option<G>,
    id: u32,
    lens: Vec<usize>,
    s: &'static Shared,
}

impl Held {
    fn new(g: G, s: &'static Shared) -> Held {
        let id = s.next_id.fetch_add(1, SEQ);
        let mut lens = Vec::new();
        let g = match g {
            G::R(g) => {
                let r = g.range();
                for e in g.iter() {
                    if e.writer.load(SEQ) != 0 {
                        s.violation(format!(
                            "read {r:?} granted while write {} holds an element",
                            e.writer.load(SEQ)
                        ));
                    }
                    e.readers.fetch_add(1, SEQ);
                }
                // No torn write: the last write of every element is in every element of ours it covered.
                for e in g.iter() {
                    if let Some(t) = e.toks.last() {
                        let (a, b) = ((t.start as usize).max(r.start), (t.end as usize).min(r.end));
                        for k in a..b {
                            if g[k - r.start]
                                .toks
                                .binary_search_by_key(&t.seq, |x| x.seq)
                                .is_err()
                            {
                                s.violation(format!(
                                    "torn write: read {r:?} sees write {} ({}..{}) at {} but not at {k}",
                                    t.id, t.start, t.end, t.idx
                                ));
                            }
                        }
                    }
                }
                lens = g.iter().map(|e| e.toks.len()).collect();
                G::R(g)
            }
            G::W(mut g) => {
                let r = g.range();
                for e in g.iter() {
                    if e.readers.load(SEQ) != 0 {
                        s.violation(format!(
                            "write {r:?} granted while {} readers hold an element",
                            e.readers.load(SEQ)
                        ));
                    }
                    let was = e.writer.swap(id, SEQ);
                    if was != 0 {
                        s.violation(format!(
                            "write {r:?} granted while write {was} holds an element"
                        ));
                    }
                }
                let seq = s.seq.fetch_add(1, SEQ);
                for (i, e) in g.iter_mut().enumerate() {
                    e.toks.push(Tok {
                        seq,
                        id,
                        start: r.start as u32,
                        end: r.end as u32,
                        idx: (r.start + i) as u32,
                        c: s.c,
                    });
                }
                s.c.created.fetch_add(r.len(), SEQ);
                s.log.lock().unwrap().push((id, r.start, r.end, seq));
                G::W(g)
            }
        };
        Held {
            g: Some(g),
            id,
            lens,
            s,
        }
    }

    /// Nothing else wrote meanwhile (a read: no length changed; a write: its token is still the last).
    fn check(&self) {
        match self.g.as_ref().unwrap() {
            G::R(g) => {
                let now: Vec<usize> = g.iter().map(|e| e.toks.len()).collect();
                if now != self.lens {
                    self.s.violation(format!(
                        "read {:?} saw a write while it held the range",
                        g.range()
                    ));
                }
            }
            G::W(g) => {
                for e in g.iter() {
                    if e.toks.last().map(|t| t.id) != Some(self.id) || e.readers.load(SEQ) != 0 {
                        self.s
                            .violation(format!("write {:?} overlapped while held", g.range()));
                    }
                }
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        match self.g.take().unwrap() {
            G::R(g) => {
                for e in g.iter() {
                    e.readers.fetch_sub(1, SEQ);
                }
            }
            G::W(g) => {
                for e in g.iter() {
                    let was = e.writer.swap(0, SEQ);
                    if was != self.id {
                        self.s
                            .violation(format!("write {:?}: its mark became {was}", g.range()));
                    }
                }
            }
        }
    }
}

/// Blocking operations of a thread, a fiber or a coroutine: `ops` borrows, each held across `hold()`.
fn blocking_client(
    s: &'static Shared,
    kind: usize,
    seed: u64,
    ops: usize,
    hold: impl Fn(&mut Rng),
) {
    let mut rng = Rng(seed);
    while !s.go.load(SEQ) {
        trust_core::yield_now(); // a fiber's, a coroutine's or a thread's yield
    }
    for _ in 0..ops {
        let (write, r) = s.pick(&mut rng);
        let since = Instant::now();
        let g = if kind == 0 && rng.below(4) == 0 {
            // A thread tries first, then waits.
            match s.try_(write, r.clone()) {
                Ok(g) => g,
                Err(e) => {
                    assert_eq!(e.range(), r);
                    s.blocking(write, r)
                }
            }
        } else {
            s.blocking(write, r)
        };
        s.note_wait(kind, since);
        let h = Held::new(g, s);
        hold(&mut rng);
        h.check();
        drop(h);
        s.ops[kind].fetch_add(1, SEQ);
    }
}

/// A fiber's futures: polled with a counting waker, the fiber yielding between polls; a third of them are given
/// up (dropped) after a few yields, queued or granted.
fn fiber_async_client(s: &'static Shared, seed: u64, ops: usize) {
    let mut rng = Rng(seed);
    while !s.go.load(SEQ) {
        trust_core::yield_now();
    }
    let mut done = 0;
    while done < ops {
        let (write, r) = s.pick(&mut rng);
        let patience = if rng.below(3) == 0 {
            rng.below(4)
        } else {
            u64::MAX
        };
        let (count, waker) = counting();
        let mut f = s.future(write, r);
        let since = Instant::now();
        let mut yields = 0;
        let mut seen = 0;
        let g = loop {
            if let Poll::Ready(g) = poll_once(&mut f, &waker) {
                break Some(g);
            }
            loop {
                trust_core::yield_now();
                yields += 1;
                if count.0.load(SEQ) != seen || yields > patience {
                    break;
                }
            }
            seen = count.0.load(SEQ);
            if yields > patience {
                break None;
            }
        };
        drop(f); // completed or given up (withdrawn, or a grant released unused)
        if let Some(g) = g {
            s.note_wait(2, since);
            let h = Held::new(g, s);
            trust_core::yield_now();
            h.check();
            drop(h);
            done += 1;
            s.ops[2].fetch_add(1, SEQ);
        }
    }
}

/// One tokio task: a request cancelled in one of several ways.
async fn tokio_task(s: &'static Shared, kind: usize, seed: u64) {
    let mut rng = Rng(seed);
    let (write, r) = s.pick(&mut rng);
    let hold = rng.below(3);
    let body = async move {
        let since = Instant::now();
        let g = s.future(write, r).await;
        s.note_wait(kind, since);
        let h = Held::new(g, s);
        if hold == 0 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(hold)).await;
        }
        h.check();
        drop(h);
        s.ops[kind].fetch_add(1, SEQ);
    };
    match rng.below(5) {
        0 | 1 => body.await,
        2 => {
            let _ = tokio::time::timeout(Duration::from_millis(rng.below(4)), body).await;
        }
        3 => {
            tokio::select! {
                biased;
                () = body => {}
                () = tokio::task::yield_now() => {}
            }
        }
        _ => {
            // Polled once by hand, then dropped (queued: withdrawn; granted: released unused).
            let mut f = s.future(write, s.pick(&mut rng).1);
            let _ = std::future::poll_fn(|cx| {
                let _ = Pin::new(&mut f).poll(cx);
                Poll::Ready(())
            })
            .await;
            tokio::task::yield_now().await;
            drop(f);
        }
    }
}

/// Tokio tasks on `rt`, some aborted; returns once every task is joined.
fn tokio_client(
    s: &'static Shared,
    rt: tokio::runtime::Runtime,
    kind: usize,
    seed: u64,
    tasks: u64,
) {
    let mut rng = Rng(seed);
    while !s.go.load(SEQ) {
        std::thread::sleep(Duration::from_micros(100));
    }
    rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..tasks {
            handles.push(tokio::spawn(tokio_task(s, kind, seed ^ (i * 0x9e37_79b9))));
            if rng.below(8) == 0 && !handles.is_empty() {
                let k = rng.below(handles.len() as u64) as usize;
                handles[k].abort();
            }
            if i % 16 == 0 {
                tokio::task::yield_now().await;
            }
        }
        for h in handles {
            match h.await {
                Ok(()) => {}
                Err(e) if e.is_cancelled() => {}
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
    });
    drop(rt);
}

fn may_setup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        may::config().set_workers(2).set_stack_size(0x8000);
        let old = std::panic::take_hook();
        // Cancelled coroutines and the runtime's workers panic on purpose: keep them off stderr.
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().map(str::to_owned);
            if name
                .as_deref()
                .is_some_and(|n| n.starts_with("trust-worker"))
                || may::coroutine::is_coroutine()
            {
                return;
            }
            old(info);
        }));
    });
}

struct Scale {
    len: usize,
    threads: usize,
    thread_ops: usize,
    fibers: usize,
    fiber_ops: usize,
    coroutines: usize,
    coroutine_ops: usize,
    victims: usize,
    tokio_mt: u64,
    tokio_ct: u64,
}

fn storm(mutex: bool, seed: u64, sc: Scale) {
    may_setup();
    let rt = common::rt();
    let s = Shared::new(mutex, sc.len);
    let stop = Arc::new(AtomicBool::new(false));

    // Fibers, round-robin on both workers: blocking borrows, and polled futures (every third fiber).
    let mut fibers = Vec::new();
    for i in 0..sc.fibers {
        let fseed = seed ^ ((0x1000 + i as u64) * 0x2545_f491);
        fibers.push(trust_core::spawn(move || {
            let worker = trust_core::local_trustee().index();
            if i % 3 == 2 {
                fiber_async_client(s, fseed, sc.fiber_ops);
            } else {
                blocking_client(s, 1, fseed, sc.fiber_ops, |rng| {
                    for _ in 0..rng.below(3) {
                        trust_core::yield_now();
                    }
                });
            }
            worker
        }));
    }
    // `may` coroutines: finite ones, and victims that loop until cancelled.
    let mut coroutines = Vec::new();
    for i in 0..sc.coroutines {
        let cseed = seed ^ ((0x2000 + i as u64) * 0x2545_f491);
        coroutines.push(common::coroutine(move || {
            blocking_client(s, 3, cseed, sc.coroutine_ops, |rng| {
                for _ in 0..rng.below(3) {
                    may::coroutine::yield_now();
                }
            })
        }));
    }
    let mut victims = Vec::new();
    for i in 0..sc.victims {
        let vseed = seed ^ ((0x3000 + i as u64) * 0x2545_f491);
        victims.push(common::coroutine(move || {
            blocking_client(s, 6, vseed, usize::MAX, |rng| {
                for _ in 0..rng.below(2) {
                    may::coroutine::yield_now();
                }
            })
        }));
    }
    // Threads.
    let mut threads = Vec::new();
    for i in 0..sc.threads {
        let tseed = seed ^ ((0x4000 + i as u64) * 0x2545_f491);
        threads.push(std::thread::spawn(move || {
            blocking_client(s, 0, tseed, sc.thread_ops, |rng| {
                if rng.below(2) == 0 {
                    std::thread::yield_now();
                }
            })
        }));
    }
    // Tokio, both flavours.
    let (mt_seed, ct_seed) = (seed ^ 0x5555, seed ^ 0x6666);
    let (tokio_mt, tokio_ct) = (sc.tokio_mt, sc.tokio_ct);
    threads.push(std::thread::spawn(move || {
        tokio_client(s, interval_storm::runtime(), 4, mt_seed, tokio_mt)
    }));
    threads.push(std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        tokio_client(s, rt, 5, ct_seed, tokio_ct)
    }));
    // Both trustees must keep serving while fibers wait on the lock.
    let counters = [rt.trustee(0).entrust(0u64), rt.trustee(1).entrust(0u64)];
    let applier = {
        let stop = stop.clone();
        let counters = counters.clone();
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut n = 0u64;
            while !stop.load(SEQ) {
                for c in &counters {
                    let t = Instant::now();
                    c.apply(|v| *v += 1);
                    worst = worst.max(t.elapsed());
                }
                n += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            (n, worst)
        })
    };

    // Everyone starts together; the victims run a while, then are cancelled (waiting or holding).
    std::thread::sleep(Duration::from_millis(20));
    s.go.store(true, SEQ);
    std::thread::sleep(Duration::from_millis(150));
    for v in &victims {
        // SAFETY: a victim holds nothing whose forced unwinding at its next yield is unsound (guards release).
        unsafe { v.coroutine().cancel() };
    }
    let finished = || {
        s.ops[0].load(SEQ) == sc.threads * sc.thread_ops
            && s.ops[1].load(SEQ) + s.ops[2].load(SEQ) == sc.fibers * sc.fiber_ops
            && s.ops[3].load(SEQ) == sc.coroutines * sc.coroutine_ops
            && threads.iter().all(|t| t.is_finished())
            && fibers.iter().all(|f| f.is_finished())
            && victims.iter().all(|v| v.is_done())
            && coroutines.iter().all(|c| c.is_done())
    };
    wait_until("the storm", 40, finished, || s.status());
    stop.store(true, SEQ);
    let (applies, worst_apply) = applier.join().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    let mut on = [0, 0];
    for f in fibers {
        on[f.join().unwrap()] += 1;
    }
    for c in coroutines {
        c.join().unwrap();
    }
    let cancelled = victims.into_iter().filter(|v| v.is_done()).count();
    assert_eq!(cancelled, sc.victims);
    assert!(on[0] > 0 && on[1] > 0, "fibers on both workers: {on:?}");
    assert_eq!(
        counters[0].apply(|v| *v) + counters[1].apply(|v| *v),
        2 * applies
    );

    let violations = s.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "violations: {violations:#?}");
    assert_eq!(s.held_queued(), (0, 0), "{}", s.status());
    // Exact contents: each element holds the completed writes over it, in commit order.
    let mut whole = match s.try_(true, 0..s.len) {
        Ok(G::W(g)) => g,
        _ => panic!("a range stayed taken: {}", s.status()),
    };
    let mut log = s.log.lock().unwrap().clone();
    log.sort_by_key(|&(.., seq)| seq);
    for (i, e) in whole.iter().enumerate() {
        let want: Vec<(u32, u64)> = log
            .iter()
            .filter(|&&(_, a, b, _)| a <= i && i < b)
            .map(|&(id, .., seq)| (id, seq))
            .collect();
        let got: Vec<(u32, u64)> = e.toks.iter().map(|t| (t.id, t.seq)).collect();
        assert_eq!(got, want, "element {i}");
        assert_eq!(
            (e.readers.load(SEQ), e.writer.load(SEQ)),
            (0, 0),
            "element {i} still marked"
        );
    }
    let created = s.c.created.load(SEQ);
    assert_eq!(
        created,
        log.iter().map(|&(_, a, b, _)| b - a).sum::<usize>()
    );
    for e in whole.iter_mut() {
        drop(std::mem::take(&mut e.toks));
    }
    drop(whole);
    assert_eq!(
        (s.c.dropped.load(SEQ), s.c.doubles.load(SEQ)),
        (created, 0),
        "every token dropped once"
    );
    let waits: Vec<_> = KINDS
        .iter()
        .zip(&s.max_wait_us)
        .map(|(k, w)| format!("{k} {} ms", w.load(SEQ) / 1000))
        .collect();
    eprintln!(
        "storm (mutex: {mutex}): {} writes, ops {:?}, {applies} apply rounds (worst {worst_apply:?}); longest waits: {}",
        log.len(),
        s.ops.iter().map(|n| n.load(SEQ)).collect::<Vec<_>>(),
        waits.join(", ")
    );
}

fn scale() -> Scale {
    Scale {
        len: 48,
        threads: 3,
        thread_ops: 500,
        fibers: 18,
        fiber_ops: 80,
        coroutines: 8,
        coroutine_ops: 60,
        victims: 4,
        tokio_mt: 3000,
        tokio_ct: 1000,
    }
}

#[cfg(not(miri))]
#[test]
fn every_client_kind_on_one_rwlock_leaves_exact_data() {
    storm(false, 0x85_0001, scale());
}

#[cfg(not(miri))]
#[test]
fn every_client_kind_on_one_interval_mutex_leaves_exact_data() {
    storm(true, 0x85_0002, scale());
}

/// A tiny lock: nearly every request conflicts, so the chains of waiters cross every kind.
#[cfg(not(miri))]
#[test]
fn every_client_kind_on_a_tiny_rwlock() {
    storm(
        false,
        0x85_0003,
        Scale {
            len: 3,
            threads: 2,
            thread_ops: 60,
            fibers: 8,
            fiber_ops: 15,
            coroutines: 4,
            coroutine_ops: 12,
            victims: 2,
            tokio_mt: 200,
            tokio_ct: 100,
        },
    );
}

// =========================================================================================================
// 2. Grant chains across kinds.
// =========================================================================================================

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Thread,
    Fiber0,
    Fiber1,
    Coroutine,
    TokioMt,
    TokioCt,
    FiberFuture,
}

const CHAIN: [Kind; 7] = [
    Kind::Thread,
    Kind::Fiber0,
    Kind::Fiber1,
    Kind::Coroutine,
    Kind::TokioMt,
    Kind::TokioCt,
    Kind::FiberFuture,
];

type Order = Arc<Mutex<Vec<usize>>>;

/// Starts a request of `kind` for `range` that, once granted, appends `me` to `order`, holds briefly and
/// releases. Returns a "finished?" probe.
#[allow(clippy::too_many_arguments)]
fn start_request(
    kind: Kind,
    lock: &'static IntervalRwLock<u64>,
    write: bool,
    range: Range<usize>,
    me: usize,
    order: Order,
    mt: &tokio::runtime::Runtime,
    ct: &tokio::sync::mpsc::UnboundedSender<Pin<Box<dyn Future<Output = ()> + Send>>>,
) -> Box<dyn Fn() -> bool> {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let finish = move |v: &mut dyn FnMut() -> u64| {
        order.lock().unwrap().push(me);
        v();
        d.store(true, SEQ);
    };
    match kind {
        Kind::Thread => {
            std::thread::spawn(move || {
                if write {
                    let mut g = lock.write(range);
                    finish(&mut || {
                        g[0] += 1;
                        g[0]
                    });
                } else {
                    let g = lock.read(range);
                    finish(&mut || g[0]);
                }
            });
        }
        Kind::Fiber0 | Kind::Fiber1 => {
            let w = if kind == Kind::Fiber0 { 0 } else { 1 };
            let _ = spawn_on_worker(w, move || {
                if write {
                    let mut g = lock.write(range);
                    trust_core::yield_now();
                    finish(&mut || {
                        g[0] += 1;
                        g[0]
                    });
                } else {
                    let g = lock.read(range);
                    trust_core::yield_now();
                    finish(&mut || g[0]);
                }
            });
        }
        Kind::Coroutine => {
            let _ = common::coroutine(move || {
                if write {
                    let mut g = lock.write(range);
                    may::coroutine::yield_now();
                    finish(&mut || {
                        g[0] += 1;
                        g[0]
                    });
                } else {
                    let g = lock.read(range);
                    may::coroutine::yield_now();
                    finish(&mut || g[0]);
                }
            });
        }
        Kind::TokioMt | Kind::TokioCt => {
            let fut = async move {
                if write {
                    let mut g = lock.write_async(range).await;
                    tokio::task::yield_now().await;
                    finish(&mut || {
                        g[0] += 1;
                        g[0]
                    });
                } else {
                    let g = lock.read_async(range).await;
                    tokio::task::yield_now().await;
                    finish(&mut || g[0]);
                }
            };
            if kind == Kind::TokioMt {
                mt.spawn(fut);
            } else {
                ct.send(Box::pin(fut)).unwrap();
            }
        }
        Kind::FiberFuture => {
            // A future polled by a fiber of worker 0 that yields between polls (not woken by the waker).
            let _ = spawn_on_worker(0, move || {
                let waker = Waker::noop();
                if write {
                    let mut f = lock.write_async(range);
                    let mut g = loop {
                        if let Poll::Ready(g) = poll_once(&mut f, waker) {
                            break g;
                        }
                        trust_core::yield_now();
                    };
                    finish(&mut || {
                        g[0] += 1;
                        g[0]
                    });
                } else {
                    let mut f = lock.read_async(range);
                    let g = loop {
                        if let Poll::Ready(g) = poll_once(&mut f, waker) {
                            break g;
                        }
                        trust_core::yield_now();
                    };
                    finish(&mut || g[0]);
                }
            });
        }
    }
    Box::new(move || done.load(SEQ))
}

/// A `current_thread` runtime on a thread of its own, fed futures through a channel.
#[allow(clippy::type_complexity)]
fn current_thread_feeder() -> (
    tokio::sync::mpsc::UnboundedSender<Pin<Box<dyn Future<Output = ()> + Send>>>,
    std::thread::JoinHandle<()>,
) {
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<Pin<Box<dyn Future<Output = ()> + Send>>>();
    let h = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async move {
            while let Some(f) = rx.recv().await {
                tokio::spawn(f);
            }
        });
    });
    (tx, h)
}

/// One range held by the test; requests of every kind queue behind it in a rotation of `CHAIN`, then it is
/// released. Writes: granted one at a time in queue order. Then: a write, a batch of reads of every kind, a
/// write: the reads are granted together after the first write, the last write after all of them. Meanwhile
/// worker 0 (two or three fibers waiting) keeps serving `apply` and running a new fiber.
#[cfg(not(miri))]
#[test]
fn grant_chains_cross_every_kind_in_queue_order() {
    may_setup();
    let rt = common::quiet();
    let lock: &'static IntervalRwLock<u64> =
        Box::leak(Box::new(IntervalRwLock::new(vec![0u64; 8])));
    let mt = interval_storm::runtime();
    let (ct, ct_thread) = current_thread_feeder();
    let on0 = rt.trustee(0).entrust(0u64);
    let status = || format!("held {}, queued {}", lock.held(), lock.queued());
    let mut total_writes = 0u64;
    for round in 0..2 * CHAIN.len() {
        let mut kinds = CHAIN.to_vec();
        kinds.rotate_left(round % CHAIN.len());
        let batch = round >= CHAIN.len();
        let held = lock.try_write(2..6).expect("free between rounds");
        let order: Order = Arc::default();
        let mut probes = Vec::new();
        // (kind index in queue order, write)
        let mut plan: Vec<(Kind, bool, Range<usize>)> = Vec::new();
        if batch {
            plan.push((kinds[0], true, 0..8));
            for (i, &k) in kinds.iter().enumerate() {
                plan.push((k, false, i % 4..i % 4 + 3));
            }
            plan.push((kinds[1], true, 0..8));
        } else {
            for (i, &k) in kinds.iter().enumerate() {
                plan.push((k, true, (i % 3)..(i % 3) + 4));
            }
        }
        for (me, (k, write, r)) in plan.iter().cloned().enumerate() {
            total_writes += u64::from(write);
            probes.push(start_request(
                k,
                lock,
                write,
                r,
                me,
                order.clone(),
                &mt,
                &ct,
            ));
            // Queued before the next one asks: the queue order is the plan's.
            wait_until(
                &format!("request {me} ({k:?}) to queue"),
                10,
                || lock.queued() == me + 1,
                status,
            );
        }
        // Worker 0 still serves and runs fibers while its fibers wait.
        assert_eq!(
            on0.apply(|v| {
                *v += 1;
                *v
            }),
            round as u64 + 1
        );
        assert_eq!(spawn_on_worker(0, || 7).join().unwrap(), Some(7));
        drop(held);
        wait_until(
            &format!("round {round} ({kinds:?})"),
            20,
            || probes.iter().all(|p| p()),
            status,
        );
        let order = order.lock().unwrap().clone();
        if batch {
            let n = plan.len();
            assert_eq!(order[0], 0, "round {round}: first write first: {order:?}");
            assert_eq!(
                order[n - 1],
                n - 1,
                "round {round}: last write last: {order:?}"
            );
            let mut mid = order[1..n - 1].to_vec();
            mid.sort();
            assert_eq!(mid, (1..n - 1).collect::<Vec<_>>(), "round {round}");
        } else {
            assert_eq!(
                order,
                (0..plan.len()).collect::<Vec<_>>(),
                "round {round} ({kinds:?}): FIFO across kinds"
            );
        }
        assert_eq!((lock.held(), lock.queued()), (0, 0));
    }
    assert_eq!(
        lock.read(..).iter().sum::<u64>(),
        total_writes,
        "each write added 1 to its first element"
    );
    drop(ct);
    ct_thread.join().unwrap();
    drop(mt);
}

// =========================================================================================================
// 3. The readers-writer lock's queue walk with hostile wakers.
// =========================================================================================================

/// A waker whose handles (clones share it) run an action, once, on an event, and count their events. The action
/// re-enters the lock (withdraws a future, releases a guard, requests, tries). Lives in a frame; every handle must be
/// gone before it does (`live`).
struct Hook<'a> {
    on: StdCell<Option<Ev>>,
    fired_on: StdCell<Option<Ev>>,
    action: RefCell<Option<Box<dyn FnOnce() + 'a>>>,
    wakes: StdCell<usize>,
    clones: StdCell<usize>,
    drops: StdCell<usize>,
    live: StdCell<isize>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ev {
    Clone,
    Wake,
    WakeByRef,
    Drop,
}

impl<'a> Hook<'a> {
    fn new(on: Option<Ev>, action: impl FnOnce() + 'a) -> Hook<'a> {
        Hook {
            on: StdCell::new(on),
            fired_on: StdCell::new(None),
            action: RefCell::new(Some(Box::new(action))),
            wakes: StdCell::new(0),
            clones: StdCell::new(0),
            drops: StdCell::new(0),
            live: StdCell::new(0),
        }
    }

    /// Sets the event the action waits for (handles the test itself drops must not fire a `Drop` action).
    fn arm(&self, ev: Ev) {
        self.on.set(Some(ev));
    }

    /// A handle; the caller keeps `self` alive until every handle is gone.
    fn waker(&self) -> Waker {
        self.live.set(self.live.get() + 1);
        // SAFETY: the vtable's functions treat the data as `&Hook`, which outlives every handle (checked by
        // `live` at the end of each test), and the handles stay on this thread.
        unsafe { Waker::from_raw(RawWaker::new(self as *const Hook as *const (), &VTABLE)) }
    }

    fn fire(&self, ev: Ev) {
        if self.on.get() == Some(ev) {
            self.on.set(None);
            self.fired_on.set(Some(ev));
            let action = self.action.borrow_mut().take();
            if let Some(action) = action {
                action();
            }
        }
    }
}

static VTABLE: RawWakerVTable =
    RawWakerVTable::new(hook_clone, hook_wake, hook_wake_by_ref, hook_drop);

/// # Safety
/// `data` is a live `Hook`'s (see `Hook::waker`).
unsafe fn hook_of<'x>(data: *const ()) -> &'x Hook<'x> {
    // SAFETY: see above.
    unsafe { &*(data as *const Hook<'x>) }
}

unsafe fn hook_clone(data: *const ()) -> RawWaker {
    // SAFETY: every handle's data is a live `Hook` (`Hook::waker`).
    let h = unsafe { hook_of(data) };
    h.clones.set(h.clones.get() + 1);
    h.live.set(h.live.get() + 1);
    h.fire(Ev::Clone);
    RawWaker::new(data, &VTABLE)
}

unsafe fn hook_wake(data: *const ()) {
    // SAFETY: every handle's data is a live `Hook` (`Hook::waker`).
    let h = unsafe { hook_of(data) };
    h.wakes.set(h.wakes.get() + 1);
    h.fire(Ev::Wake);
    h.live.set(h.live.get() - 1);
}

unsafe fn hook_wake_by_ref(data: *const ()) {
    // SAFETY: every handle's data is a live `Hook` (`Hook::waker`).
    let h = unsafe { hook_of(data) };
    h.wakes.set(h.wakes.get() + 1);
    h.fire(Ev::WakeByRef);
}

unsafe fn hook_drop(data: *const ()) {
    // SAFETY: every handle's data is a live `Hook` (`Hook::waker`).
    let h = unsafe { hook_of(data) };
    h.drops.set(h.drops.get() + 1);
    h.fire(Ev::Drop);
    h.live.set(h.live.get() - 1);
}

type L = IntervalRwLock<u32>;
type Slot<X> = RefCell<Option<X>>;

fn ready<X>(p: Poll<X>, what: &str) -> X {
    match p {
        Poll::Ready(x) => x,
        Poll::Pending => panic!("{what}: still pending"),
    }
}

/// The batch scene on a lock of 16: a write of the whole lock held; reads A (0..4, polled with a hook acting on
/// its `wake`), B (2..6), C (8..10) queued behind it; W (a write of 3..9) behind all three; X (a read of
/// 12..14) behind the held write only. Releasing the write grants A, B, C and X together (a batch of reads;
/// the walk wakes them in start order, A first). Counting wakers: B 0, C 1, W 2, X 3, and 4 for the action.
struct Batch<'a> {
    lock: &'a L,
    a: Slot<ReadFuture<'a, u32>>,
    b: Slot<ReadFuture<'a, u32>>,
    c: Slot<ReadFuture<'a, u32>>,
    w: Slot<WriteFuture<'a, u32>>,
    x: Slot<ReadFuture<'a, u32>>,
    extra_r: Slot<ReadGuard<'a, u32>>,
    extra_w: Slot<WriteFuture<'a, u32>>,
    extra_g: Slot<WriteGuard<'a, u32>>,
    tried: StdCell<Option<(bool, bool, bool)>>,
    counts: [(Arc<Count>, Waker); 5],
}

impl<'a> Batch<'a> {
    fn woke(&self, i: usize) -> usize {
        self.counts[i].0.0.load(SEQ)
    }

    fn take<X>(slot: &Slot<X>) -> X {
        slot.borrow_mut().take().expect("in its slot")
    }

    fn held_queued(&self) -> (usize, usize) {
        (self.lock.held(), self.lock.queued())
    }
}

fn batch_scene(act: for<'b, 'a> fn(&'b Batch<'a>), check: for<'b, 'a> fn(&'b Batch<'a>)) {
    let lock = L::new(vec![0u32; 16]);
    let s = Batch {
        lock: &lock,
        a: RefCell::new(None),
        b: RefCell::new(None),
        c: RefCell::new(None),
        w: RefCell::new(None),
        x: RefCell::new(None),
        extra_r: RefCell::new(None),
        extra_w: RefCell::new(None),
        extra_g: RefCell::new(None),
        tried: StdCell::new(None),
        counts: [counting(), counting(), counting(), counting(), counting()],
    };
    {
        let s = &s;
        let hook = Hook::new(None, move || act(s));
        let mut held = lock.try_write(..).unwrap();
        held[3] = 1;
        let mut a = lock.read_async(0..4);
        let h = hook.waker();
        assert!(poll_once(&mut a, &h).is_pending());
        drop(h);
        hook.arm(Ev::Wake);
        *s.a.borrow_mut() = Some(a);
        for (slot, r, i) in [(&s.b, 2..6, 0), (&s.c, 8..10, 1)] {
            let mut f = lock.read_async(r);
            assert!(poll_once(&mut f, &s.counts[i].1).is_pending());
            *slot.borrow_mut() = Some(f);
        }
        let mut w = lock.write_async(3..9);
        assert!(poll_once(&mut w, &s.counts[2].1).is_pending());
        *s.w.borrow_mut() = Some(w);
        let mut x = lock.read_async(12..14);
        assert!(poll_once(&mut x, &s.counts[3].1).is_pending());
        *s.x.borrow_mut() = Some(x);
        assert_eq!(s.held_queued(), (1, 5));
        drop(held); // the walk
        assert_eq!(hook.wakes.get(), 1, "A woken");
        assert!(hook.on.get().is_none(), "the action ran");
        check(s);
        for slot in [&s.a, &s.b, &s.c, &s.x] {
            drop(slot.borrow_mut().take());
        }
        drop(s.w.borrow_mut().take());
        drop(s.extra_r.borrow_mut().take());
        drop(s.extra_w.borrow_mut().take());
        drop(s.extra_g.borrow_mut().take());
        assert_eq!(s.held_queued(), (0, 0), "everything released");
        assert!(lock.try_write(..).is_ok());
        assert_eq!(hook.live.get(), 0, "every handle of the hook is gone");
    }
}

/// Polls the future in `slot` with a no-op waker: it must be ready.
fn grant<X: Future + Unpin>(slot: &Slot<X>, what: &str) -> X::Output {
    let mut f = Batch::take(slot);
    ready(poll_once(&mut f, Waker::noop()), what)
}

/// A's `wake` (the first of the batch) withdraws B, granted in the same batch and not yet woken: B's grant is
/// released at once; W, which counted B, still waits for A and C; B's waker is still called (harmless); C and
/// X are woken; W is granted once A and C release, and sees A's... the held write's value.
#[test]
fn batch_first_wake_withdraws_a_granted_sibling() {
    batch_scene(
        |s| drop(Batch::take(&s.b)),
        |s| {
            assert_eq!(s.held_queued(), (3, 1), "A, C, X held; W queued");
            assert_eq!((s.woke(0), s.woke(1), s.woke(2), s.woke(3)), (1, 1, 0, 1));
            let (ga, gc, gx) = (grant(&s.a, "A"), grant(&s.c, "C"), grant(&s.x, "X"));
            assert_eq!(ga[3], 1);
            let mut w = Batch::take(&s.w);
            drop((ga, gx));
            assert_eq!(s.woke(2), 0, "W still waits for C");
            assert!(poll_once(&mut w, &s.counts[2].1).is_pending());
            drop(gc);
            assert_eq!(s.woke(2), 1);
            let gw = ready(poll_once(&mut w, Waker::noop()), "W");
            assert_eq!((gw.range(), gw[0]), (3..9, 1));
        },
    );
}

/// A's `wake` withdraws W, still queued behind A, B and C: the rest of the batch is woken, nothing waits.
#[test]
fn batch_first_wake_withdraws_the_queued_writer_behind_it() {
    batch_scene(
        |s| drop(Batch::take(&s.w)),
        |s| {
            assert_eq!(s.held_queued(), (4, 0));
            assert_eq!((s.woke(0), s.woke(1), s.woke(2), s.woke(3)), (1, 1, 0, 1));
            let _all = (
                grant(&s.a, "A"),
                grant(&s.b, "B"),
                grant(&s.c, "C"),
                grant(&s.x, "X"),
            );
        },
    );
}

/// A's `wake` calls `try_*` while the batch is half woken: a read of 4..5 (B's range, where the write W is
/// queued) is refused (no jumping the queue); a write of 8..9 (C's, granted and not yet woken) is refused; a
/// read of 14..16 (nobody's) is granted and kept.
#[test]
fn batch_first_wake_tries_the_lock() {
    batch_scene(
        |s| {
            let r1 = s.lock.try_read(4..5).is_ok();
            let r2 = s.lock.try_write(8..9).is_ok();
            let r3 = s.lock.try_read(14..16);
            s.tried.set(Some((r1, r2, r3.is_ok())));
            *s.extra_r.borrow_mut() = r3.ok();
        },
        |s| {
            assert_eq!(s.tried.get(), Some((false, false, true)));
            assert_eq!(
                s.held_queued(),
                (5, 1),
                "A, B, C, X and the tried read held; W queued"
            );
            assert_eq!((s.woke(0), s.woke(1), s.woke(3)), (1, 1, 1));
            let all = (
                grant(&s.a, "A"),
                grant(&s.b, "B"),
                grant(&s.c, "C"),
                grant(&s.x, "X"),
            );
            assert_eq!(s.woke(2), 0);
            drop(all);
            assert_eq!(s.woke(2), 1, "W granted once A, B and C are gone");
        },
    );
}

/// A's `wake` makes a new request, a write of 1..3 (conflicting with A and B, granted and not yet woken): it
/// queues behind them and is granted once both release, not before; the walk goes on to wake B, C and X.
#[test]
fn batch_first_wake_makes_a_new_conflicting_request() {
    batch_scene(
        |s| {
            let mut f = s.lock.write_async(1..3);
            assert!(
                poll_once(&mut f, &s.counts[4].1).is_pending(),
                "a new write behind A and B"
            );
            *s.extra_w.borrow_mut() = Some(f);
        },
        |s| {
            assert_eq!(s.held_queued(), (4, 2));
            assert_eq!((s.woke(0), s.woke(1), s.woke(3), s.woke(4)), (1, 1, 1, 0));
            let (ga, gb) = (grant(&s.a, "A"), grant(&s.b, "B"));
            drop((grant(&s.c, "C"), grant(&s.x, "X")));
            drop(ga);
            assert_eq!(s.woke(4), 0, "the new write still waits for B");
            drop(gb);
            assert_eq!(s.woke(4), 1, "granted once A and B are gone");
            let g = grant(&s.extra_w, "new write");
            assert_eq!(g.range(), 1..3);
            assert_eq!(
                s.woke(2),
                1,
                "W granted with A, B, C gone (the new write does not overlap it)"
            );
        },
    );
}

/// A's `wake` runs A's task inline (polls A: ready) and releases A's guard at once: a walk nested in the outer
/// one, which grants nothing (W still waits for B and C, which the outer walk then wakes); then it takes a write
/// of 0..2, granted (nothing else there), and keeps it.
#[test]
fn batch_first_wake_runs_the_task_inline_and_releases_its_guard() {
    batch_scene(
        |s| {
            let g = grant(&s.a, "A, inline in its own wake");
            assert_eq!(g[3], 1);
            drop(g);
            *s.extra_g.borrow_mut() = Some(s.lock.try_write(0..2).expect("0..2 is free"));
        },
        |s| {
            assert_eq!(
                s.held_queued(),
                (4, 1),
                "B, C, X and the write of 0..2 held; W queued"
            );
            assert_eq!((s.woke(0), s.woke(1), s.woke(2), s.woke(3)), (1, 1, 0, 1));
            let (gb, gc) = (grant(&s.b, "B"), grant(&s.c, "C"));
            drop(gb);
            assert_eq!(s.woke(2), 0);
            drop(gc);
            assert_eq!(s.woke(2), 1);
        },
    );
}

/// A's `wake` drops A's own future (granted, never polled again): that releases A at once; the rest as above.
#[test]
fn batch_first_wake_drops_its_own_granted_future() {
    batch_scene(
        |s| drop(Batch::take(&s.a)),
        |s| {
            assert_eq!(s.held_queued(), (3, 1));
            let (gb, gc, gx) = (grant(&s.b, "B"), grant(&s.c, "C"), grant(&s.x, "X"));
            drop((gb, gx));
            assert_eq!(s.woke(2), 0);
            drop(gc);
            assert_eq!(s.woke(2), 1);
        },
    );
}

/// A guard released from inside a grant's `wake`, in the middle of a walk: held writes H1 (0..4) and H2 (8..12);
/// A (read 0..2, hook) behind H1; B (write 1..11) behind H1, A and H2; C (read 10..12) behind H2 and B. Releasing
/// H1 grants A, whose wake releases H2 (a nested walk: B still waits for A, C for B). Then A's release grants B,
/// B's grants C.
#[test]
fn a_wake_that_releases_another_guard_mid_walk() {
    let lock = L::new(vec![0u32; 12]);
    let h2: Slot<WriteGuard<'_, u32>> = RefCell::new(Some(lock.try_write(8..12).unwrap()));
    let (cb, wb) = counting();
    let (cc, wc) = counting();
    {
        let hook = Hook::new(None, || drop(h2.borrow_mut().take()));
        let h1 = lock.try_write(0..4).unwrap();
        let mut a = lock.read_async(0..2);
        let h = hook.waker();
        assert!(poll_once(&mut a, &h).is_pending());
        drop(h);
        hook.arm(Ev::Wake);
        let mut b = lock.write_async(1..11);
        assert!(poll_once(&mut b, &wb).is_pending());
        let mut c = lock.read_async(10..12);
        assert!(poll_once(&mut c, &wc).is_pending());
        assert_eq!((lock.held(), lock.queued()), (2, 3));
        drop(h1);
        assert!(h2.borrow().is_none(), "the hook released H2");
        assert_eq!(
            (hook.wakes.get(), cb.0.load(SEQ), cc.0.load(SEQ)),
            (1, 0, 0)
        );
        assert_eq!((lock.held(), lock.queued()), (1, 2));
        let ga = ready(poll_once(&mut a, Waker::noop()), "A");
        assert!(poll_once(&mut b, &wb).is_pending());
        drop(ga);
        assert_eq!((cb.0.load(SEQ), cc.0.load(SEQ)), (1, 0));
        let gb = ready(poll_once(&mut b, Waker::noop()), "B");
        drop(gb);
        assert_eq!(cc.0.load(SEQ), 1);
        drop(ready(poll_once(&mut c, Waker::noop()), "C"));
        drop((a, b, c));
        assert_eq!(hook.live.get(), 0);
    }
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

/// A withdrawn request's own waker (dropped by the withdrawal, before the grants it made are woken) withdraws the
/// write that the withdrawal just granted, which lets a third request through; both grants are woken.
#[test]
fn a_withdrawn_reads_own_waker_drop_withdraws_the_write_it_let_through() {
    let lock = L::new(vec![0u32; 8]);
    let w_slot: Slot<WriteFuture<'_, u32>> = RefCell::new(None);
    let (cy, wy) = counting();
    let (cw, ww) = counting();
    {
        let hook = Hook::new(None, || drop(w_slot.borrow_mut().take()));
        let held = lock.try_write(0..4).unwrap();
        // R (read 2..6) behind `held`; W (write 4..8) behind R only; Y (read 6..8) behind W only.
        let mut r = lock.read_async(2..6);
        let h = hook.waker();
        assert!(poll_once(&mut r, &h).is_pending());
        drop(h);
        hook.arm(Ev::Drop);
        let mut w = lock.write_async(4..8);
        assert!(poll_once(&mut w, &ww).is_pending());
        *w_slot.borrow_mut() = Some(w);
        let mut y = lock.read_async(6..8);
        assert!(poll_once(&mut y, &wy).is_pending());
        assert_eq!((lock.held(), lock.queued()), (1, 3));
        drop(r);
        assert!(w_slot.borrow().is_none(), "the own waker's drop withdrew W");
        assert_eq!(
            (cw.0.load(SEQ), cy.0.load(SEQ)),
            (1, 1),
            "W's grant and Y's woken"
        );
        let gy = ready(poll_once(&mut y, &wy), "Y");
        assert_eq!((lock.held(), lock.queued()), (2, 0));
        drop((gy, held));
        assert_eq!(hook.live.get(), 0);
    }
    assert!(lock.try_write(..).is_ok());
}

/// The clone of a first poll (before its request is recorded) releases the guard the request would wait for and
/// withdraws the write granted by that release: the read is granted on that very poll.
#[test]
fn a_clone_that_releases_what_the_request_would_wait_for() {
    let lock = L::new(vec![0u32; 8]);
    let g_slot: Slot<WriteGuard<'_, u32>> = RefCell::new(Some(lock.try_write(0..4).unwrap()));
    let b_slot: Slot<WriteFuture<'_, u32>> = RefCell::new(None);
    let (cb, wb) = counting();
    {
        let hook = Hook::new(None, || {
            drop(g_slot.borrow_mut().take());
            drop(b_slot.borrow_mut().take());
        });
        let mut b = lock.write_async(2..6);
        assert!(poll_once(&mut b, &wb).is_pending());
        *b_slot.borrow_mut() = Some(b);
        let mut a = lock.read_async(0..8);
        let h = hook.waker();
        hook.arm(Ev::Clone);
        let ga = ready(poll_once(&mut a, &h), "A granted on its first poll");
        assert_eq!((lock.held(), lock.queued()), (1, 0));
        assert_eq!(
            cb.0.load(SEQ),
            1,
            "B was granted (and woken) before it was withdrawn"
        );
        drop((ga, a, h));
        assert_eq!(hook.live.get(), 0);
    }
    assert!(lock.try_write(..).is_ok());
}

/// A re-poll with a new waker drops the old one, whose drop releases the guard the request waits for: the request
/// is granted and woken through the new waker (stored before the old one was dropped).
#[test]
fn a_replaced_wakers_drop_releases_what_the_request_waits_for() {
    let lock = L::new(vec![0u32; 8]);
    let g_slot: Slot<WriteGuard<'_, u32>> = RefCell::new(Some(lock.try_write(0..4).unwrap()));
    let (cn, wn) = counting();
    {
        let hook = Hook::new(None, || drop(g_slot.borrow_mut().take()));
        let mut a = lock.write_async(2..3);
        let h = hook.waker();
        assert!(poll_once(&mut a, &h).is_pending());
        drop(h);
        hook.arm(Ev::Drop);
        assert!(
            poll_once(&mut a, &wn).is_pending(),
            "re-polled with a new waker: still queued then"
        );
        assert!(g_slot.borrow().is_none());
        assert_eq!(
            cn.0.load(SEQ),
            1,
            "granted by the old waker's drop, woken through the new one"
        );
        drop(ready(poll_once(&mut a, &wn), "A"));
        drop(a);
        assert_eq!(hook.live.get(), 0);
    }
    assert!(lock.try_write(..).is_ok());
}

// ---------------------------------------------------------------------------------------------------------
// The random walk: hooks acting on `clone`, `wake` and `drop`, checked against the grant rule.

/// Where an entry stands in the grant order: a future's ticket (read from its `Debug`, `Recorded(t)`), `(t, 0)`;
/// a borrow granted at once (`try_*`, or a future ready on its first poll) gets `(last ticket seen before it,
/// k)`: it conflicted with nothing recorded then, so only its place before every later request matters.
type Key = (u64, u32);

enum WFut {
    R(ReadFuture<'static, u32>),
    W(WriteFuture<'static, u32>),
}

enum WGuard {
    R(#[allow(dead_code)] ReadGuard<'static, u32>),
    W(#[allow(dead_code)] WriteGuard<'static, u32>),
}

/// The waker a pending future was last polled with, and its wake count then.
enum Wk {
    Count(Arc<Count>),
    Hook(*const Hook<'static>),
}

impl Wk {
    fn wakes(&self) -> usize {
        match self {
            Wk::Count(c) => c.0.load(SEQ),
            // SAFETY: hooks live in the walk's arena until its end.
            Wk::Hook(h) => unsafe { (**h).wakes.get() },
        }
    }
}

struct Pend {
    f: WFut,
    range: Range<usize>,
    write: bool,
    key: Option<Key>,
    wk: Option<(Wk, usize)>,
}

struct Held2 {
    _g: WGuard,
    range: Range<usize>,
    write: bool,
    key: Key,
}

struct World {
    lock: &'static L,
    pend: RefCell<Vec<Pend>>,
    held: RefCell<Vec<Held2>>,
    /// Shared (`Rc`): the handles point into them while the vector grows (a moved `Box` would assert
    /// uniqueness over its hook, which Miri's borrow model holds against the handles).
    hooks: RefCell<Vec<std::rc::Rc<Hook<'static>>>>,
    rng: RefCell<Rng>,
    seen: StdCell<u64>,
    sub: StdCell<u32>,
    depth: StdCell<usize>,
    actions: StdCell<usize>,
}

fn conflict(w1: bool, r1: &Range<usize>, w2: bool, r2: &Range<usize>) -> bool {
    (w1 || w2) && r1.start < r2.end && r2.start < r1.end
}

fn ticket_of(debug: &str) -> u64 {
    let at = debug.find("Recorded(").expect("a recorded future") + "Recorded(".len();
    debug[at..].split(')').next().unwrap().parse().unwrap()
}

impl World {
    fn below(&self, n: u64) -> u64 {
        self.rng.borrow_mut().below(n)
    }

    fn range(&self) -> (bool, Range<usize>) {
        let len = self.lock.len() as u64;
        let start = self.below(len);
        let end = (start + 1 + self.below(4)).min(len);
        (self.below(2) == 0, start as usize..end as usize)
    }

    fn provisional(&self) -> Key {
        self.sub.set(self.sub.get() + 1);
        (self.seen.get(), self.sub.get())
    }

    /// A waker for a poll: a counting one, or (below depth 3) a hook with a random action on a random event.
    fn waker(&'static self) -> (Waker, Wk) {
        if self.depth.get() >= 3 || self.below(3) == 0 {
            let (c, w) = counting();
            return (w, Wk::Count(c));
        }
        let ev = [Ev::Clone, Ev::Wake, Ev::Drop, Ev::Wake, Ev::Wake][self.below(5) as usize];
        let what = self.below(5);
        let hook = std::rc::Rc::new(Hook::new(None, move || {
            self.depth.set(self.depth.get() + 1);
            self.actions.set(self.actions.get() + 1);
            self.act(what);
            self.depth.set(self.depth.get() - 1);
        }));
        let h: *const Hook<'static> = std::rc::Rc::as_ptr(&hook);
        self.hooks.borrow_mut().push(hook);
        // SAFETY: the hook is in the arena until the walk ends, after every handle is gone.
        let w = unsafe { (*h).waker() };
        // SAFETY: as above.
        unsafe { (*h).arm(ev) };
        (w, Wk::Hook(h))
    }

    /// One re-entrant action (from a hook) or top-level step.
    fn act(&'static self, what: u64) {
        match what {
            // Withdraw (drop) a pending future.
            0 => {
                let n = self.pend.borrow().len();
                if n > 0 {
                    let p = self
                        .pend
                        .borrow_mut()
                        .swap_remove(self.below(n as u64) as usize);
                    drop(p);
                }
            }
            // Release a guard.
            1 => {
                let n = self.held.borrow().len();
                if n > 0 {
                    let g = self
                        .held
                        .borrow_mut()
                        .swap_remove(self.below(n as u64) as usize);
                    drop(g);
                }
            }
            // try_read / try_write.
            2 => {
                let (write, range) = self.range();
                let key = self.provisional();
                let g = if write {
                    self.lock.try_write(range.clone()).ok().map(WGuard::W)
                } else {
                    self.lock.try_read(range.clone()).ok().map(WGuard::R)
                };
                if let Some(g) = g {
                    self.held.borrow_mut().push(Held2 {
                        _g: g,
                        range,
                        write,
                        key,
                    });
                }
            }
            // A new request, polled once.
            3 => {
                let (write, range) = self.range();
                let f = if write {
                    WFut::W(self.lock.write_async(range.clone()))
                } else {
                    WFut::R(self.lock.read_async(range.clone()))
                };
                self.poll(Pend {
                    f,
                    range,
                    write,
                    key: None,
                    wk: None,
                });
            }
            // Re-poll a pending future (with a new waker, or the same counting one).
            _ => {
                let n = self.pend.borrow().len();
                if n > 0 {
                    let p = self
                        .pend
                        .borrow_mut()
                        .swap_remove(self.below(n as u64) as usize);
                    self.poll(p);
                }
            }
        }
    }

    fn poll(&'static self, mut p: Pend) {
        let provisional = self.provisional();
        let same = matches!(p.wk, Some((Wk::Count(_), _))) && self.below(3) == 0;
        let (waker, wk) = match (&p.wk, same) {
            (Some((Wk::Count(c), _)), true) => (Waker::from(c.clone()), Wk::Count(c.clone())),
            _ => self.waker(),
        };
        let before = wk.wakes();
        let mut cx = Context::from_waker(&waker);
        let out = match &mut p.f {
            WFut::R(f) => Pin::new(f).poll(&mut cx).map(WGuard::R),
            WFut::W(f) => Pin::new(f).poll(&mut cx).map(WGuard::W),
        };
        match out {
            Poll::Ready(g) => {
                let key = p.key.unwrap_or(provisional);
                self.held.borrow_mut().push(Held2 {
                    _g: g,
                    range: p.range.clone(),
                    write: p.write,
                    key,
                });
                drop(p);
            }
            Poll::Pending => {
                if p.key.is_none() {
                    let debug = match &p.f {
                        WFut::R(f) => format!("{f:?}"),
                        WFut::W(f) => format!("{f:?}"),
                    };
                    let t = ticket_of(&debug);
                    self.seen.set(self.seen.get().max(t));
                    p.key = Some((t, 0));
                }
                p.wk = Some((wk, before));
                self.pend.borrow_mut().push(p);
            }
        }
        drop(waker); // the test's own handle: a hook armed on `Drop` may fire here (top level of this poll)
    }

    /// The grant rule against the lock: guards never conflict; a pending request is granted iff no earlier
    /// recorded request conflicts with it, and then (only then) its last waker was woken; the lock's counts agree.
    fn check(&self, step: usize) {
        let held = self.held.borrow();
        let pend = self.pend.borrow();
        for (i, a) in held.iter().enumerate() {
            for b in &held[i + 1..] {
                assert!(
                    !conflict(a.write, &a.range, b.write, &b.range),
                    "step {step}: held {:?} and {:?} conflict",
                    a.range,
                    b.range
                );
            }
        }
        let mut granted = 0;
        for p in pend.iter() {
            let key = p.key.expect("pending futures were polled");
            let blocked = held
                .iter()
                .any(|h| h.key < key && conflict(h.write, &h.range, p.write, &p.range))
                || pend.iter().any(|q| {
                    q.key.unwrap() < key && conflict(q.write, &q.range, p.write, &p.range)
                });
            let (wk, before) = p.wk.as_ref().unwrap();
            let woken = wk.wakes() > *before;
            assert_eq!(
                woken,
                !blocked,
                "step {step}: {} {:?} key {key:?}: woken {woken}, blocked {blocked}",
                if p.write { "write" } else { "read" },
                p.range
            );
            granted += usize::from(!blocked);
        }
        assert_eq!(
            (self.lock.held(), self.lock.queued()),
            (held.len() + granted, pend.len() - granted),
            "step {step}: counts"
        );
    }
}

fn walk(seed: u64, steps: usize) {
    let lock = L::new(vec![0u32; 10]);
    // SAFETY (the two `'static`s): `lock` and `world` outlive everything made from them: every future, guard and
    // waker handle is gone (checked) before this frame returns, the arena's hooks last.
    // SAFETY: see above.
    let lock_ref: &'static L = unsafe { &*(&lock as *const L) };
    let world = World {
        lock: lock_ref,
        pend: RefCell::default(),
        held: RefCell::default(),
        hooks: RefCell::default(),
        rng: RefCell::new(Rng(seed)),
        seen: StdCell::new(0),
        sub: StdCell::new(0),
        depth: StdCell::new(0),
        actions: StdCell::new(0),
    };
    // SAFETY: see above.
    let w: &'static World = unsafe { &*(&world as *const World) };
    for step in 0..steps {
        let what = match w.below(10) {
            0..=2 => 3,
            3 | 4 => 4,
            5 | 6 => 1,
            7 => 0,
            _ => 2,
        };
        w.act(what);
        w.check(step);
    }
    // Drain: release everything held, then grant every pending request in turn.
    // New wakers are counting ones from here (hooks made before still act when their event comes).
    w.depth.set(3);
    let mut rounds = 0;
    loop {
        let held = std::mem::take(&mut *w.held.borrow_mut());
        let none_held = held.is_empty();
        drop(held);
        let pend = std::mem::take(&mut *w.pend.borrow_mut());
        if pend.is_empty() && none_held {
            assert!(w.held.borrow().is_empty() && w.pend.borrow().is_empty());
            break;
        }
        for p in pend {
            w.poll(p);
        }
        w.check(steps + rounds);
        rounds += 1;
        assert!(rounds < 10_000, "a request stayed queued");
    }
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    assert!(lock.try_write(..).is_ok());
    for h in w.hooks.borrow().iter() {
        assert_eq!(h.live.get(), 0, "a hook's handle outlived the walk");
    }
    assert!(w.actions.get() > 0 || steps < 50, "no hook ever acted");
    let hooks = w.hooks.borrow();
    let fired = |ev: Ev| {
        hooks
            .iter()
            .filter(|h| {
                h.on.get().is_none() && h.action.borrow().is_none() && h.fired_on.get() == Some(ev)
            })
            .count()
    };
    eprintln!(
        "walk {seed:#x}: {} hooks, {} actions (on clone {}, wake {}, drop {}), tickets up to {}",
        hooks.len(),
        w.actions.get(),
        fired(Ev::Clone),
        fired(Ev::Wake),
        fired(Ev::Drop),
        w.seen.get()
    );
    drop(hooks);
    drop(world);
    drop(lock);
}

/// Seeded walks: requests (reads and writes) polled with counting wakers or hooks, re-polled, withdrawn, granted and
/// released, `try_*`; every hook acts once, re-entrantly, on its `clone`, `wake` or `drop`, and may itself poll with
/// hooks (three deep). Checked after every step against the grant rule.
#[test]
fn a_random_walk_of_reentrant_wakers_on_a_rwlock() {
    let (seeds, steps) = if cfg!(miri) { (2, 120) } else { (12, 1500) };
    for seed in 0..seeds as u64 {
        walk(
            0x85_5eed_0000 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            steps,
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// A waker that waits, in a batch, for a request the same walk granted but has not woken yet.

/// A task's waker that, when woken, takes a blocking write of `range` on `lock` and releases it (an executor
/// whose `wake` waits for something: here the lock itself, as a stand-in for a bounded queue drained by a thread
/// that is itself waiting for the lock).
struct BlockingWake {
    lock: &'static IntervalRwLock<u32>,
    range: Range<usize>,
    done: AtomicBool,
}

impl std::task::Wake for BlockingWake {
    fn wake(self: Arc<Self>) {
        drop(self.lock.write(self.range.clone()));
        self.done.store(true, SEQ);
    }
}

/// The scene: a write of 0..8 held; a blocking read of 4..6 by `waiter` (a thread, a fiber or a `may` coroutine)
/// queued behind it; a future's read of 0..2 queued behind it too, its waker a `BlockingWake` for 4..5. Releasing
/// the write grants both reads in one batch. The future's read starts first, so a walk in tree order ran its waker
/// first, which waits for the write of 4..5, which waits for the granted read of 4..6, whose owner was not woken yet
/// (later in the same batch). Returns whether the release finished within 3 s (with the waiter's read done).
fn batch_with_a_waiting_waker(waiter: &str) -> bool {
    may_setup();
    common::quiet();
    let lock: &'static IntervalRwLock<u32> =
        Box::leak(Box::new(IntervalRwLock::new(vec![0u32; 8])));
    let held = lock.try_write(..).unwrap();
    let read_done = Arc::new(AtomicBool::new(false));
    let rd = read_done.clone();
    let read = move || {
        let g = lock.read(4..6);
        rd.store(true, SEQ);
        drop(g);
    };
    match waiter {
        "thread" => drop(std::thread::spawn(read)),
        "fiber" => drop(spawn_on_worker(0, read)),
        _ => drop(common::coroutine(read)),
    }
    wait_until(
        "the blocking read to queue",
        10,
        || lock.queued() == 1,
        String::new,
    );
    let hook = Arc::new(BlockingWake {
        lock,
        range: 4..5,
        done: AtomicBool::new(false),
    });
    let mut a = lock.read_async(0..2);
    assert!(poll_once(&mut a, &Waker::from(hook.clone())).is_pending());
    assert_eq!(lock.queued(), 2);
    let released = Arc::new(AtomicBool::new(false));
    let r = released.clone();
    std::thread::spawn(move || {
        drop(held); // the walk, which calls the waker
        r.store(true, SEQ);
    });
    let start = Instant::now();
    while !(released.load(SEQ) && read_done.load(SEQ) && hook.done.load(SEQ)) {
        if start.elapsed() > Duration::from_secs(3) {
            eprintln!(
                "{waiter}: after 3 s: release returned {}, the waiter's read done {}, waker done {}; held {}, queued {}",
                released.load(SEQ),
                read_done.load(SEQ),
                hook.done.load(SEQ),
                lock.held(),
                lock.queued()
            );
            std::mem::forget(a); // its request stays recorded; the lock is leaked anyway
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(ready(poll_once(&mut a, Waker::noop()), "the future's read"));
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    true
}

/// A `may` coroutine polls for its grant (it has nothing to wake): the waker's wait ends when it notices.
#[cfg(not(miri))]
#[test]
fn a_waker_that_waits_in_a_batch_for_a_granted_coroutine() {
    assert!(batch_with_a_waiting_waker("coroutine"), "the walk hung");
}

/// Review 85's finding: with a parked thread as the other member of the batch, the walk hung for good: the
/// thread's grant was recorded but its `unpark` was queued behind the user's waker in the same walk. The walk
/// now wakes the threads and fibers it granted (code of this crate, which cannot wait or re-enter) before it
/// runs any waker (`Wake::drop_then_wake_all`).
#[cfg(not(miri))]
#[test]
fn a_waker_that_waits_in_a_batch_for_a_granted_thread() {
    assert!(
        batch_with_a_waiting_waker("thread"),
        "HUNG: the walk's waker waits for a thread it has not woken"
    );
}

/// The same with a fiber of worker 0 as the other member of the batch.
#[cfg(not(miri))]
#[test]
fn a_waker_that_waits_in_a_batch_for_a_granted_fiber() {
    assert!(
        batch_with_a_waiting_waker("fiber"),
        "HUNG: the walk's waker waits for a fiber it has not woken"
    );
}

/// A task's `Waker` whose last drop waits (up to 3 s) for `flag`.
struct DropWaits {
    flag: Arc<AtomicBool>,
}

impl std::task::Wake for DropWaits {
    fn wake(self: Arc<Self>) {}
}

impl Drop for DropWaits {
    fn drop(&mut self) {
        let start = Instant::now();
        while !self.flag.load(SEQ) && start.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The withdrawal's side of review 85's finding: a withdrawn request's own `Waker` is executor code too, and its
/// drop (the last reference, which the lock held) may wait for a thread that the withdrawal let through. The
/// thread is woken before that drop (`Wake::drop_then_wake_all`); dropped first, the waker waited out its own
/// deadline, the thread granted but parked meanwhile.
#[cfg(not(miri))]
#[test]
fn a_withdrawn_requests_waker_whose_drop_waits_for_the_thread_it_let_through() {
    common::quiet();
    let lock: &'static IntervalRwLock<u32> =
        Box::leak(Box::new(IntervalRwLock::new(vec![0u32; 8])));
    let held = lock.try_read(0..4).unwrap();
    let read_done = Arc::new(AtomicBool::new(false));
    let mut write = lock.write_async(0..4);
    let hook = Waker::from(Arc::new(DropWaits {
        flag: read_done.clone(),
    }));
    assert!(poll_once(&mut write, &hook).is_pending());
    drop(hook); // the lock holds the last reference
    let rd = read_done.clone();
    let reader = std::thread::spawn(move || {
        let g = lock.read(2..6);
        rd.store(true, SEQ);
        drop(g);
    });
    wait_until(
        "the blocking read to queue behind the write",
        10,
        || lock.queued() == 2,
        String::new,
    );
    let start = Instant::now();
    drop(write); // withdrawn: the read is granted, and the waker dropped
    let took = start.elapsed();
    reader.join().unwrap();
    assert!(read_done.load(SEQ));
    drop(held);
    assert!(
        took < Duration::from_secs(2),
        "the waker's drop waited {took:?} for the thread the withdrawal let through"
    );
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}
