//! Review 82: what reviews 79 and 81 left.
//!
//! - A `with_slice` closure (`IntervalRwLock::with_slice`, `IntervalMutex::with_slice`) that panics while
//!   tokio tasks, on a runtime built inside the closure (as review 81's), hold guards (parked forever on a
//!   pending future) and have queued futures, while the closure itself holds a guard it wrote through and a
//!   queued future of its own. The panic happens after `block_on` or inside it, on a `current_thread` or a
//!   multi-thread runtime; the runtime and the closure's locals drop while unwinding. Checks: the panic
//!   propagates out of `with_slice` with its payload; every task's future is dropped exactly once; every
//!   written value (a drop-counted token with a unique id) is dropped exactly once and none is leaked; and
//!   the caller's slice holds exactly the completed writes (the logged ones and the closure's own).
//! - A seeded single-threaded random walk on an `IntervalRwLock` mixing reads and writes (some prioritized):
//!   polls, re-polls with the same or a new waker, drops of pending and of granted-but-unpolled futures,
//!   and guard releases. After every step: held guards never conflict; every granted request was woken
//!   (`held` = guards + woken pending, `queued` = unwoken pending); a woken request is ready on its next
//!   poll; an unwoken request conflicts with something held or queued (none is stuck behind nothing). At
//!   the end every pending request is granted in turn.
//!
//! Deterministic, every wait has a deadline, nothing is timed.
//!
//! Findings: none.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use trust_core::interval::{
    IntervalMutex, IntervalRwLock, ReadFuture, ReadGuard, WriteFuture, WriteGuard,
};

mod interval_storm;
use interval_storm::{Count, DEADLINE, Rng, counting, poll_once};

// ---------------------------------------------------------------------------------------------------------
// (1) A panicking `with_slice` closure.

/// Drop bookkeeping of one scene: values written, task futures, and every id dropped (to catch doubles).
#[derive(Default)]
struct Counters {
    created: AtomicUsize,
    dropped: AtomicUsize,
    doubles: AtomicUsize,
    ids: Mutex<HashSet<u64>>,
    tasks_started: AtomicUsize,
    tasks_dropped: AtomicUsize,
}

/// A written value: unique `id`, drop-counted.
struct D {
    id: u64,
    c: Arc<Counters>,
}

impl D {
    fn new(id: u64, c: &Arc<Counters>) -> D {
        c.created.fetch_add(1, Ordering::SeqCst);
        D { id, c: c.clone() }
    }
}

impl Drop for D {
    fn drop(&mut self) {
        self.c.dropped.fetch_add(1, Ordering::SeqCst);
        let fresh = self
            .c
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(self.id);
        if !fresh {
            self.c.doubles.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Lives in a task's future: counts the future's drop.
struct Tok(Arc<Counters>);

impl Tok {
    fn new(c: &Arc<Counters>) -> Tok {
        c.tasks_started.fetch_add(1, Ordering::SeqCst);
        Tok(c.clone())
    }
}

impl Drop for Tok {
    fn drop(&mut self) {
        self.0.tasks_dropped.fetch_add(1, Ordering::SeqCst);
    }
}

type E = Vec<D>;

#[derive(Clone, Copy)]
enum Lock {
    Rw(&'static IntervalRwLock<E>),
    Mx(&'static IntervalMutex<E>),
}

enum G {
    W(WriteGuard<'static, E>),
    R(ReadGuard<'static, E>),
}

impl Lock {
    async fn acquire(self, write: bool, priority: u32, a: usize, b: usize) -> G {
        match self {
            Lock::Rw(l) if write => G::W(l.prioritized(priority).write_async(a..b).await),
            Lock::Rw(l) => G::R(l.prioritized(priority).read_async(a..b).await),
            Lock::Mx(m) => G::W(m.prioritized(priority).lock_async(a..b).await),
        }
    }

    fn write_async(self, a: usize, b: usize) -> WriteFuture<'static, E> {
        match self {
            Lock::Rw(l) => l.write_async(a..b),
            Lock::Mx(m) => m.lock_async(a..b),
        }
    }

    fn try_write(self, a: usize, b: usize) -> WriteGuard<'static, E> {
        match self {
            Lock::Rw(l) => l.try_write(a..b),
            Lock::Mx(m) => m.try_lock(a..b),
        }
        .expect("free")
    }

    fn held_queued(self) -> (usize, usize) {
        match self {
            Lock::Rw(l) => (l.held(), l.queued()),
            Lock::Mx(m) => (m.held(), m.queued()),
        }
    }
}

/// Writes logged as (id, start, end).
type Log = Arc<Mutex<Vec<(u64, usize, usize)>>>;

const OWN: u64 = u64::MAX;
const PAYLOAD: &str = "review 82: the closure panics";

#[derive(Clone, Copy)]
struct Scene {
    seed: u64,
    len: usize,
    tasks: u32,
    multi: bool,
    /// Panic inside `block_on` (the runtime alive while unwinding out of it) rather than after it.
    inside: bool,
}

/// The closure's body: returns only by panicking.
fn body(lock: Lock, sc: Scene, c: &Arc<Counters>, log: &Log) {
    let rt = if sc.multi {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    };
    // The closure's own write, held through the panic: tasks over element 0 queue behind it.
    let mut own = lock.try_write(0, 1);
    own[0].push(D::new(OWN, c));
    let mut rng = Rng(sc.seed);
    let mut next_id = 0u64;
    rt.block_on(async {
        for _ in 0..sc.tasks {
            let a = rng.below(sc.len as u64) as usize;
            let b = (a + 1 + rng.below(4) as usize).min(sc.len);
            let write = rng.below(3) != 0;
            let priority = u32::from(rng.below(5) == 0);
            let forever = rng.below(3) == 0;
            let (c, log) = (c.clone(), log.clone());
            let id = next_id;
            next_id += 1;
            tokio::spawn(async move {
                let _tok = Tok::new(&c);
                let mut g = lock.acquire(write, priority, a, b).await;
                if let G::W(g) = &mut g {
                    // No await between the writes and the log: a drop cannot split them.
                    for (k, e) in g.iter_mut().enumerate() {
                        e.push(D::new(id << 8 | k as u64, &c));
                    }
                    log.lock().unwrap().push((id, a, b));
                }
                let before: Option<Vec<usize>> = match &g {
                    G::R(r) => Some(r.iter().map(Vec::len).collect()),
                    G::W(_) => None,
                };
                if forever {
                    std::future::pending::<()>().await;
                }
                tokio::task::yield_now().await;
                if let (G::R(r), Some(before)) = (&g, before) {
                    let after: Vec<usize> = r.iter().map(Vec::len).collect();
                    assert_eq!(before, after, "a write overlapped a held read");
                }
                drop(g);
            });
        }
        // Let the tasks run until some hold and some queue (bounded, by a deadline).
        let settled = tokio::time::timeout(DEADLINE, async {
            loop {
                tokio::task::yield_now().await;
                let (held, queued) = lock.held_queued();
                if held > 1
                    && queued > 0
                    && c.tasks_started.load(Ordering::SeqCst) == sc.tasks as usize
                {
                    break;
                }
            }
        })
        .await;
        settled.expect("the tasks never got going");
        if sc.inside {
            let mut mine = lock.write_async(0, sc.len);
            assert!(poll_once(&mut mine, &Waker::noop().clone()).is_pending());
            panic!("{PAYLOAD}");
        }
    });
    // A queued future of the closure's own, dropped while unwinding.
    let mut mine = lock.write_async(0, sc.len);
    assert!(poll_once(&mut mine, &Waker::noop().clone()).is_pending());
    let (held, queued) = lock.held_queued();
    assert!(held > 1 && queued > 1, "{held} held, {queued} queued");
    own[0].push(D::new(OWN - 1, c));
    panic!("{PAYLOAD}");
}

fn panicking_closure(mutex: bool, sc: Scene) {
    let c = Arc::new(Counters::default());
    let log: Log = Arc::default();
    let mut caller: Vec<E> = (0..sc.len).map(|_| Vec::new()).collect();
    let result = catch_unwind(AssertUnwindSafe(|| {
        if mutex {
            IntervalMutex::with_slice(&mut caller, |lock| {
                // SAFETY: the runtime (with every task and future) and the closure's guard and future are
                // locals of `body`, dropped while unwinding out of it, inside the closure.
                let lock: &'static IntervalMutex<E> = unsafe { &*std::ptr::from_ref(lock) };
                body(Lock::Mx(lock), sc, &c, &log);
            });
        } else {
            IntervalRwLock::with_slice(&mut caller, |lock| {
                // SAFETY: as above.
                let lock: &'static IntervalRwLock<E> = unsafe { &*std::ptr::from_ref(lock) };
                body(Lock::Rw(lock), sc, &c, &log);
            });
        }
    }));
    let payload = result.expect_err("the panic did not propagate");
    let msg = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied());
    assert_eq!(msg, Some(PAYLOAD), "another panic came out");
    // Every task started and its future was dropped exactly once.
    assert_eq!(c.tasks_started.load(Ordering::SeqCst), sc.tasks as usize);
    assert_eq!(c.tasks_dropped.load(Ordering::SeqCst), sc.tasks as usize);
    // Nothing written was dropped: the values are the caller's.
    assert_eq!(
        c.dropped.load(Ordering::SeqCst),
        0,
        "a written value was dropped"
    );
    // The caller's slice holds exactly the completed writes.
    let log = std::mem::take(&mut *log.lock().unwrap());
    assert!(!log.is_empty());
    for (e, element) in caller.iter().enumerate() {
        let mut expected: Vec<u64> = log
            .iter()
            .filter(|&&(_, a, b)| a <= e && e < b)
            .map(|&(id, a, _)| id << 8 | (e - a) as u64)
            .collect();
        if e == 0 {
            expected.push(OWN);
            if !sc.inside {
                expected.push(OWN - 1);
            }
        }
        let mut got: Vec<u64> = element.iter().map(|d| d.id).collect();
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected, "element {e}");
    }
    let in_slice: usize = caller.iter().map(Vec::len).sum();
    assert_eq!(c.created.load(Ordering::SeqCst), in_slice, "a value leaked");
    drop(caller);
    assert_eq!(c.dropped.load(Ordering::SeqCst), in_slice);
    assert_eq!(c.doubles.load(Ordering::SeqCst), 0, "a value dropped twice");
}

const SCENE: Scene = Scene {
    seed: 0x9e37_79b9_7f4a_7c15,
    len: 12,
    tasks: 200,
    multi: false,
    inside: false,
};

#[test]
fn a_lent_rwlock_whose_closure_panics_with_tasks_holding_and_queued() {
    for (i, (multi, inside)) in [(false, false), (false, true), (true, false), (true, true)]
        .into_iter()
        .enumerate()
    {
        panicking_closure(
            false,
            Scene {
                seed: SCENE.seed + i as u64,
                multi,
                inside,
                ..SCENE
            },
        );
    }
}

#[test]
fn a_lent_mutex_whose_closure_panics_with_tasks_holding_and_queued() {
    for (i, (multi, inside)) in [(false, false), (false, true), (true, false), (true, true)]
        .into_iter()
        .enumerate()
    {
        panicking_closure(
            true,
            Scene {
                seed: 0x2545_f491_4f6c_dd1d + i as u64,
                len: 5,
                ..SCENE
            }
            .with(multi, inside),
        );
    }
}

impl Scene {
    fn with(self, multi: bool, inside: bool) -> Scene {
        Scene {
            multi,
            inside,
            ..self
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// (2) A random walk on an `IntervalRwLock`.

enum F {
    W(WriteFuture<'static, u8>),
    R(ReadFuture<'static, u8>),
}

enum H {
    W(WriteGuard<'static, u8>),
    R(ReadGuard<'static, u8>),
}

impl H {
    fn range(&self) -> std::ops::Range<usize> {
        match self {
            H::W(g) => g.range(),
            H::R(g) => g.range(),
        }
    }
    fn write(&self) -> bool {
        matches!(self, H::W(_))
    }
}

/// A pending request: its future, kind, range, and the count and waker of its last poll.
struct P {
    f: F,
    write: bool,
    range: std::ops::Range<usize>,
    count: Arc<Count>,
    waker: Waker,
}

fn conflict(w1: bool, r1: &std::ops::Range<usize>, w2: bool, r2: &std::ops::Range<usize>) -> bool {
    // An empty range is never recorded and conflicts with nothing.
    (w1 || w2) && !r1.is_empty() && !r2.is_empty() && r1.start < r2.end && r2.start < r1.end
}

/// Polls `p` (with its last waker or a new one): `Err` of the guard if granted, after checking it was woken
/// if it was polled before, and that it conflicts with no held guard.
fn poll_p(mut p: P, fresh: bool, first: bool, guards: &mut Vec<H>) -> Option<P> {
    let woken = p.count.0.load(Ordering::SeqCst) > 0;
    if fresh {
        (p.count, p.waker) = counting();
    }
    let r = match &mut p.f {
        F::W(f) => poll_once(f, &p.waker).map(H::W),
        F::R(f) => poll_once(f, &p.waker).map(H::R),
    };
    match r {
        Poll::Ready(g) => {
            assert!(first || woken, "granted without a wake");
            assert_eq!(g.range(), p.range);
            for h in guards.iter() {
                assert!(
                    !conflict(h.write(), &h.range(), g.write(), &g.range()),
                    "conflicting guards {:?} {:?}",
                    h.range(),
                    g.range()
                );
            }
            guards.push(g);
            None
        }
        Poll::Pending => {
            assert!(!woken, "woken but not granted");
            Some(p)
        }
    }
}

fn check_step(lock: &IntervalRwLock<u8>, guards: &[H], pending: &[P], what: &str) {
    let woken = pending
        .iter()
        .filter(|p| p.count.0.load(Ordering::SeqCst) > 0)
        .count();
    let recorded = guards.iter().filter(|h| !h.range().is_empty()).count();
    assert_eq!(lock.held(), recorded + woken, "{what}: granted unwoken");
    assert_eq!(lock.queued(), pending.len() - woken, "{what}");
    for (i, p) in pending.iter().enumerate() {
        if p.count.0.load(Ordering::SeqCst) > 0 {
            continue;
        }
        let blocked = guards
            .iter()
            .any(|h| conflict(h.write(), &h.range(), p.write, &p.range))
            || pending
                .iter()
                .enumerate()
                .any(|(j, q)| j != i && conflict(q.write, &q.range, p.write, &p.range));
        assert!(blocked, "{what}: {:?} stuck behind nothing", p.range);
    }
}

#[test]
fn a_random_walk_of_reads_and_writes_on_a_rwlock() {
    for seed in 1..=80u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let len = 2 + rng.below(10) as usize;
        let lock: &'static IntervalRwLock<u8> =
            Box::leak(Box::new(IntervalRwLock::new(vec![0; len])));
        let mut pending: Vec<P> = Vec::new();
        let mut guards: Vec<H> = Vec::new();
        for step in 0..500 {
            let what = format!("seed {seed} step {step}");
            match rng.below(7) {
                0..=2 => {
                    let a = rng.below(len as u64 + 1) as usize;
                    let b = (a + rng.below(4) as usize).min(len);
                    let (a, b) = if rng.below(12) == 0 { (0, len) } else { (a, b) };
                    let write = rng.below(2) == 0;
                    let prio = if rng.below(5) == 0 {
                        1 + rng.below(2) as u32
                    } else {
                        0
                    };
                    let l = lock.prioritized(prio);
                    let f = if write {
                        F::W(l.write_async(a..b))
                    } else {
                        F::R(l.read_async(a..b))
                    };
                    let (count, waker) = counting();
                    let p = P {
                        f,
                        write,
                        range: a..b,
                        count,
                        waker,
                    };
                    if let Some(p) = poll_p(p, false, true, &mut guards) {
                        pending.push(p);
                    }
                }
                3 if !pending.is_empty() => {
                    let i = rng.below(pending.len() as u64) as usize;
                    let p = pending.swap_remove(i);
                    let fresh = rng.below(2) == 0;
                    if let Some(p) = poll_p(p, fresh, false, &mut guards) {
                        pending.push(p);
                    }
                }
                4 if !pending.is_empty() => {
                    // Dropped, pending or granted but not yet polled.
                    let i = rng.below(pending.len() as u64) as usize;
                    drop(pending.swap_remove(i));
                }
                _ if !guards.is_empty() => {
                    let i = rng.below(guards.len() as u64) as usize;
                    drop(guards.swap_remove(i));
                }
                _ => {}
            }
            check_step(lock, &guards, &pending, &what);
        }
        guards.clear();
        check_step(lock, &guards, &pending, "released");
        // Every pending request is granted in turn: each round at least one is.
        let mut rounds = 0;
        while !pending.is_empty() {
            rounds += 1;
            assert!(rounds < 10_000, "seed {seed}: no progress");
            let before = pending.len();
            // Round-robin, so that `pending` holds every request but the one being polled.
            for _ in 0..before {
                let p = pending.remove(0);
                let fresh = rng.below(2) == 0;
                if let Some(p) = poll_p(p, fresh, false, &mut guards) {
                    pending.push(p);
                }
                guards.clear();
                check_step(lock, &guards, &pending, "draining");
            }
            assert!(
                pending.len() < before,
                "seed {seed}: {} stuck",
                pending.len()
            );
        }
        assert_eq!((lock.held(), lock.queued()), (0, 0), "seed {seed}");
        assert!(lock.try_write(..).is_ok());
    }
}
