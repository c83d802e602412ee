//! Review 81: what review 79 did not reach, under the same cancellation storm.
//!
//! - `IntervalMutex::lock_async` (`PrioritizedMutex::lock_async`): thousands of tasks lock seeded random
//!   overlapping ranges, cancelled by `tokio::time::timeout`, the losing branch of a biased `select!`, a
//!   drop after one poll (even when granted), a move after the first poll to another task, and `abort`.
//! - Locks lent by `with_slice` (`IntervalRwLock::with_slice`, `IntervalMutex::with_slice`) on a caller's
//!   `&mut [T]`, stormed inside the closure: a runtime built in the closure, every task (moved futures'
//!   ones too) joined in it, the runtime dropped in it; then the caller's slice is checked against the log.
//! - The same storms on a tokio `current_thread` runtime.
//! - Wakers whose *drop* withdraws another queued request of the same lock, at every place a future drops
//!   a waker: the unused clone of a first poll that is granted, of a re-poll with the same waker, the old
//!   waker replaced by a re-poll with a new one, the own waker of a withdrawn request, and the waker
//!   consumed by a grant's wake.
//!
//! Checks, as review 79's: every completed write is in every element of its range exactly once, no other
//! id is, commit numbers per element increase, nothing held or queued afterwards, and a whole-range lock
//! is ready on its first poll. Every wait has a deadline; nothing is timed.
//!
//! - A seeded single-threaded random walk on a mutex mixing all of the above re-entrant drops (chains of
//!   hooks), checking that held guards never overlap, no grant goes unwoken, and nothing is stuck.
//!
//! Findings: none.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::Duration;

use tokio::time::timeout;
use trust_core::interval::{IntervalMutex, IntervalRwLock, ReadFuture, WriteFuture};

mod interval_storm;
use interval_storm::{
    Count, DEADLINE, Log, Rng, counting, poll_once, read_and_hold, runtime, write_and_hold,
};

type E = Vec<(u32, u64)>;

/// The lock a storm runs on: a readers-writer lock (reads and writes) or a mutex (every request locks).
#[derive(Clone, Copy)]
enum Lock {
    Rw(&'static IntervalRwLock<E>),
    Mx(&'static IntervalMutex<E>),
}

enum Fut {
    W(WriteFuture<'static, E>),
    R(ReadFuture<'static, E>),
}

impl Lock {
    /// A request; `write` is ignored by a mutex (all its requests lock exclusively).
    fn request(self, write: bool, priority: u32, start: usize, end: usize) -> Fut {
        match self {
            Lock::Rw(l) if write => Fut::W(l.prioritized(priority).write_async(start..end)),
            Lock::Rw(l) => Fut::R(l.prioritized(priority).read_async(start..end)),
            Lock::Mx(m) if priority == 0 => Fut::W(m.lock_async(start..end)),
            Lock::Mx(m) => Fut::W(m.prioritized(priority).lock_async(start..end)),
        }
    }

    fn held_queued(self) -> (usize, usize) {
        match self {
            Lock::Rw(l) => (l.held(), l.queued()),
            Lock::Mx(m) => (m.held(), m.queued()),
        }
    }

    fn whole(self) -> WriteFuture<'static, E> {
        match self {
            Lock::Rw(l) => l.write_async(..),
            Lock::Mx(m) => m.lock_async(..),
        }
    }

    fn try_whole(self) -> trust_core::interval::WriteGuard<'static, E> {
        match self {
            Lock::Rw(l) => l.try_write(..),
            Lock::Mx(m) => m.try_lock(..),
        }
        .expect("a range stayed taken")
    }
}

struct Shared {
    lock: Lock,
    seq: AtomicU64,
    log: Log,
    /// The tasks that finish a moved future: their spawner may be aborted, so the end awaits them too.
    moved: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

async fn finish(f: Fut, id: u32, s: &'static Shared, hold: u64) {
    match f {
        Fut::W(f) => write_and_hold(f.await, id, &s.seq, &s.log, hold).await,
        Fut::R(f) => read_and_hold(f.await, hold).await,
    }
}

/// Polls once; `Some` of the finishing future if it is still pending, after running it if it was ready.
fn poll_first(
    f: &mut Fut,
    cx: &mut Context<'_>,
) -> Poll<
    Result<
        trust_core::interval::WriteGuard<'static, E>,
        trust_core::interval::ReadGuard<'static, E>,
    >,
> {
    match f {
        Fut::W(w) => std::pin::Pin::new(w).poll(cx).map(Ok),
        Fut::R(r) => std::pin::Pin::new(r).poll(cx).map(Err),
    }
}

/// One task: a random range, kind, priority and way of being cancelled.
#[allow(clippy::too_many_arguments)]
async fn one_task(
    s: &'static Shared,
    id: u32,
    start: usize,
    end: usize,
    write: bool,
    priority: u32,
    mode: u64,
    hold: u64,
    patience: u64,
) {
    let f = s.lock.request(write, priority, start, end);
    match mode {
        0 => finish(f, id, s, hold).await,
        1 => {
            let _ = timeout(Duration::from_millis(patience), finish(f, id, s, hold)).await;
        }
        2 => {
            tokio::select! {
                biased;
                () = finish(f, id, s, hold) => {}
                () = tokio::task::yield_now() => {}
            }
        }
        3 => {
            let mut f = f;
            poll_fn(|cx| {
                drop(poll_first(&mut f, cx));
                Poll::Ready(())
            })
            .await;
            tokio::task::yield_now().await;
            drop(f);
        }
        _ => {
            let mut f = f;
            match poll_fn(|cx| Poll::Ready(poll_first(&mut f, cx))).await {
                Poll::Ready(Ok(g)) => write_and_hold(g, id, &s.seq, &s.log, hold).await,
                Poll::Ready(Err(g)) => read_and_hold(g, hold).await,
                Poll::Pending => {
                    let other = tokio::spawn(finish(f, id, s, hold));
                    s.moved.lock().unwrap().push(other);
                }
            }
        }
    }
}

fn check_joined(joined: Result<(), tokio::task::JoinError>) {
    match joined {
        Ok(()) => {}
        Err(e) if e.is_cancelled() => {}
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[derive(Clone, Copy)]
struct Storm {
    seed: u64,
    tasks: u32,
    aborts: bool,
    current_thread: bool,
}

/// Runs the storm on `lock` (of `len` elements) on a runtime built and dropped here; returns the log of
/// completed writes after checking the lock's contents against it.
fn storm(lock: Lock, len: usize, st: Storm) -> Vec<(u32, usize, usize)> {
    let shared: &'static Shared = Box::leak(Box::new(Shared {
        lock,
        seq: AtomicU64::new(0),
        log: Mutex::new(Vec::new()),
        moved: Mutex::new(Vec::new()),
    }));
    let rt = if st.current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    } else {
        runtime()
    };
    let mut rng = Rng(st.seed);
    rt.block_on(async {
        let mut handles = Vec::new();
        for id in 0..st.tasks {
            let (start, end) = match rng.below(10) {
                0 => {
                    let a = rng.below(len as u64 + 1) as usize;
                    (a, a)
                }
                1 => {
                    let a = rng.below(len as u64) as usize;
                    (a, a + 1)
                }
                2 => (0, len),
                3 => {
                    let b = 1 + rng.below(len as u64 - 1) as usize;
                    if rng.below(2) == 0 { (0, b) } else { (b, len) }
                }
                _ => {
                    let a = rng.below(len as u64) as usize;
                    let b = a + 1 + rng.below(12) as usize;
                    (a, b.min(len))
                }
            };
            let write = rng.below(2) == 0;
            let priority = if rng.below(5) == 0 {
                1 + rng.below(2) as u32
            } else {
                0
            };
            let mode = rng.below(5);
            let hold = if rng.below(8) == 0 { 1 } else { 0 };
            let patience = [1, 4, 16][rng.below(3) as usize];
            handles.push(tokio::spawn(one_task(
                shared, id, start, end, write, priority, mode, hold, patience,
            )));
            if st.aborts && rng.below(7) == 0 {
                let victim = rng.below(handles.len() as u64) as usize;
                handles[victim].abort();
            }
            if rng.below(16) == 0 {
                tokio::task::yield_now().await;
            }
        }
        for h in handles {
            check_joined(timeout(DEADLINE, h).await.expect("a task hung"));
        }
        let moved = std::mem::take(&mut *shared.moved.lock().unwrap());
        for h in moved {
            check_joined(timeout(DEADLINE, h).await.expect("a moved task hung"));
        }
        assert_eq!(shared.lock.held_queued(), (0, 0));
        let mut all = pin!(shared.lock.whole());
        let (_, waker) = counting();
        assert!(poll_once(&mut all, &waker).is_ready());
    });
    drop(rt);
    let log = std::mem::take(&mut *shared.log.lock().unwrap());
    assert_eq!(
        shared.seq.load(Ordering::SeqCst),
        log.len() as u64,
        "a commit went unlogged"
    );
    assert!(!log.is_empty());
    check(&shared.lock.try_whole(), &log);
    assert_eq!(shared.lock.held_queued(), (0, 0));
    log
}

/// Each element holds exactly the completed writes over it, in commit order.
fn check(elements: &[E], log: &[(u32, usize, usize)]) {
    for (e, element) in elements.iter().enumerate() {
        let mut expected: Vec<u32> = log
            .iter()
            .filter(|&&(_, a, b)| a <= e && e < b)
            .map(|&(id, ..)| id)
            .collect();
        let mut got: Vec<u32> = element.iter().map(|&(id, _)| id).collect();
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected, "element {e}: completed writes, each once");
        assert!(
            element.windows(2).all(|w| w[0].1 < w[1].1),
            "element {e}: overlapping writes not serialized: {element:?}"
        );
    }
}

fn owned_rw(len: usize, st: Storm) {
    let lock: &'static IntervalRwLock<E> =
        Box::leak(Box::new(IntervalRwLock::new(vec![Vec::new(); len])));
    storm(Lock::Rw(lock), len, st);
}

fn owned_mutex(len: usize, st: Storm) {
    let lock: &'static IntervalMutex<E> =
        Box::leak(Box::new(IntervalMutex::new(vec![Vec::new(); len])));
    storm(Lock::Mx(lock), len, st);
}

/// The storm inside `with_slice`: the lent lock is made `'static` for `tokio::spawn`, which is sound here
/// because the runtime, every task and every future are gone before `storm` returns, inside the closure.
fn lent(mutex: bool, len: usize, st: Storm) {
    let mut caller: Vec<E> = vec![Vec::new(); len];
    let log = if mutex {
        IntervalMutex::with_slice(&mut caller, |lock| {
            // SAFETY: nothing borrowing the lock survives `storm` (see above).
            let lock: &'static IntervalMutex<E> = unsafe { &*std::ptr::from_ref(lock) };
            storm(Lock::Mx(lock), len, st)
        })
    } else {
        IntervalRwLock::with_slice(&mut caller, |lock| {
            // SAFETY: as above.
            let lock: &'static IntervalRwLock<E> = unsafe { &*std::ptr::from_ref(lock) };
            storm(Lock::Rw(lock), len, st)
        })
    };
    // The caller's slice, after the closure: exactly what the lock held.
    check(&caller, &log);
}

const MANY: Storm = Storm {
    seed: 0x9e37_79b9_7f4a_7c15,
    tasks: 3000,
    aborts: true,
    current_thread: false,
};

#[test]
fn mutex_lock_async_under_the_storm() {
    owned_mutex(
        48,
        Storm {
            aborts: false,
            ..MANY
        },
    );
    owned_mutex(
        48,
        Storm {
            seed: 0x2545_f491_4f6c_dd1d,
            ..MANY
        },
    );
}

#[test]
fn mutex_on_a_tiny_buffer() {
    owned_mutex(
        4,
        Storm {
            seed: 0x5851_f42d_4c95_7f2d,
            tasks: 2000,
            ..MANY
        },
    );
}

#[test]
fn lent_rwlock_under_the_storm() {
    lent(false, 48, MANY);
    lent(
        false,
        3,
        Storm {
            seed: 0x1234_5678_9abc_def1,
            tasks: 1500,
            ..MANY
        },
    );
}

#[test]
fn lent_mutex_under_the_storm() {
    lent(
        true,
        48,
        Storm {
            seed: 0x2545_f491_4f6c_dd1d,
            ..MANY
        },
    );
    lent(
        true,
        3,
        Storm {
            seed: 0x1234_5678_9abc_def1,
            tasks: 1500,
            ..MANY
        },
    );
}

#[test]
fn current_thread_runtime() {
    let ct = Storm {
        current_thread: true,
        ..MANY
    };
    owned_rw(48, ct);
    owned_mutex(
        48,
        Storm {
            seed: 0x2545_f491_4f6c_dd1d,
            ..ct
        },
    );
    lent(
        false,
        5,
        Storm {
            seed: 0x5851_f42d_4c95_7f2d,
            tasks: 1500,
            ..ct
        },
    );
    lent(
        true,
        5,
        Storm {
            seed: 0x5851_f42d_4c95_7f2d,
            tasks: 1500,
            ..ct
        },
    );
}

#[test]
fn several_seeds_small() {
    for seed in 1..=8u64 {
        let st = Storm {
            seed: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            tasks: 300,
            aborts: seed % 2 == 0,
            current_thread: seed % 4 < 2,
        };
        let len = [2, 5, 48][seed as usize % 3];
        owned_mutex(len, st);
        lent(seed % 3 == 0, len, st);
    }
}

/// Every handle of this waker (clones share it) runs `on_drop` when dropped or consumed by `wake`: it
/// withdraws the parked requests (futures of the same lock), re-entering the lock.
struct Hook {
    victims: Mutex<Vec<WriteFuture<'static, u8>>>,
    drops: AtomicUsize,
    wakes: AtomicUsize,
    /// Also withdraw on every clone (a waker's clone is executor code too).
    on_clone: std::sync::atomic::AtomicBool,
}

impl Hook {
    fn new() -> &'static Hook {
        Box::leak(Box::new(Hook {
            victims: Mutex::new(Vec::new()),
            drops: AtomicUsize::new(0),
            wakes: AtomicUsize::new(0),
            on_clone: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    fn on_drop(&self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        // Taken first, dropped after the hook's own mutex is released.
        let victims = std::mem::take(&mut *self.victims.lock().unwrap());
        drop(victims);
    }

    fn waker(&'static self) -> Waker {
        // SAFETY: the vtable's functions treat the data as `&'static Hook`, which it is.
        unsafe { Waker::from_raw(raw(self)) }
    }

    fn parked(&self) -> usize {
        self.victims.lock().unwrap().len()
    }
}

fn raw(hook: &'static Hook) -> RawWaker {
    RawWaker::new(std::ptr::from_ref(hook).cast(), &VTABLE)
}

fn hook(data: *const ()) -> &'static Hook {
    // SAFETY: every data pointer of this vtable is a leaked `Hook`.
    unsafe { &*data.cast::<Hook>() }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(
    |d| {
        if hook(d).on_clone.load(Ordering::SeqCst) {
            let victims = std::mem::take(&mut *hook(d).victims.lock().unwrap());
            drop(victims);
        }
        raw(hook(d))
    },
    |d| {
        hook(d).wakes.fetch_add(1, Ordering::SeqCst);
        hook(d).on_drop();
    },
    |d| {
        hook(d).wakes.fetch_add(1, Ordering::SeqCst);
    },
    |d| hook(d).on_drop(),
);

/// A lock with `0..2` held, B (write `1..5`) queued behind it and parked in `hook`, and C (read `4..6`)
/// queued behind B only: withdrawing B grants C.
struct Scene {
    lock: &'static IntervalRwLock<u8>,
    held: Option<trust_core::interval::WriteGuard<'static, u8>>,
    c: ReadFuture<'static, u8>,
    c_count: Arc<Count>,
    c_waker: Waker,
    hook: &'static Hook,
}

fn scene() -> Scene {
    let lock: &'static IntervalRwLock<u8> = Box::leak(Box::new(IntervalRwLock::new(vec![0; 10])));
    let held = lock.try_write(0..2).unwrap();
    let hook = Hook::new();
    let (c_count, c_waker) = counting();
    let mut b = lock.write_async(1..5);
    // B's own waker is a hook too (with nothing parked): its drop on withdrawal re-enters nothing.
    assert!(poll_once(&mut b, &Hook::new().waker()).is_pending());
    hook.victims.lock().unwrap().push(b);
    let mut c = lock.read_async(4..6);
    assert!(poll_once(&mut c, &c_waker).is_pending());
    assert_eq!((lock.held(), lock.queued()), (1, 2));
    Scene {
        lock,
        held: Some(held),
        c,
        c_count,
        c_waker,
        hook,
    }
}

impl Scene {
    /// B was withdrawn by a waker drop: C is granted and woken once; then everything is released.
    fn b_withdrawn(mut self, others_held: usize) {
        assert_eq!(self.hook.parked(), 0, "B still parked");
        assert_eq!(self.c_count.0.load(Ordering::SeqCst), 1, "C not woken");
        assert_eq!(self.lock.queued(), 0);
        assert_eq!(self.lock.held(), 2 + others_held);
        let Poll::Ready(c) = poll_once(&mut self.c, &self.c_waker) else {
            panic!("C woken but not granted");
        };
        assert_eq!(c.range(), 4..6);
        drop((c, self.held.take()));
    }
}

#[test]
fn a_granted_first_poll_drops_its_unused_waker_clone_which_withdraws_b() {
    let s = scene();
    let waker = s.hook.waker();
    let mut a = s.lock.write_async(8..10);
    let Poll::Ready(a_guard) = poll_once(&mut a, &waker) else {
        panic!("8..10 is free");
    };
    assert!(s.hook.drops.load(Ordering::SeqCst) >= 1);
    let lock = s.lock;
    s.b_withdrawn(1);
    drop(a_guard);
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    let mut all = lock.write_async(..);
    assert!(poll_once(&mut all, &waker).is_ready());
}

#[test]
fn a_repoll_with_the_same_waker_drops_the_new_clone_which_withdraws_b() {
    let s = scene();
    let waker = s.hook.waker();
    let mut a = s.lock.write_async(0..1); // behind the held 0..2
    // The first poll keeps its clone; B is parked only after it, so nothing is withdrawn yet.
    let parked = s.hook.victims.lock().unwrap().pop().unwrap();
    assert!(poll_once(&mut a, &waker).is_pending());
    s.hook.victims.lock().unwrap().push(parked);
    assert!(poll_once(&mut a, &waker).is_pending());
    assert_eq!(
        (s.lock.held(), s.lock.queued()),
        (2, 1),
        "C granted, A queued"
    );
    assert_eq!(s.hook.parked(), 0);
    assert_eq!(s.c_count.0.load(Ordering::SeqCst), 1);
    let Scene {
        lock,
        held,
        mut c,
        c_waker,
        ..
    } = s;
    assert!(poll_once(&mut c, &c_waker).is_ready());
    drop(held);
    assert!(poll_once(&mut a, &waker).is_ready());
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

#[test]
fn a_repoll_with_a_new_waker_drops_the_old_one_which_withdraws_b() {
    let s = scene();
    let mut a = s.lock.write_async(0..1);
    let parked = s.hook.victims.lock().unwrap().pop().unwrap();
    assert!(poll_once(&mut a, &s.hook.waker()).is_pending()); // the test's handle dropped here: nothing parked
    s.hook.victims.lock().unwrap().push(parked);
    let (a_count, a_waker) = counting();
    assert!(poll_once(&mut a, &a_waker).is_pending()); // the stored hook handle goes
    assert_eq!(s.hook.parked(), 0);
    assert_eq!(s.c_count.0.load(Ordering::SeqCst), 1);
    let Scene {
        lock,
        held,
        mut c,
        c_waker,
        ..
    } = s;
    assert!(poll_once(&mut c, &c_waker).is_ready());
    drop(held);
    assert_eq!(a_count.0.load(Ordering::SeqCst), 1);
    assert!(poll_once(&mut a, &a_waker).is_ready());
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

#[test]
fn a_withdrawn_request_drops_its_own_waker_which_withdraws_b() {
    let s = scene();
    let mut a = s.lock.write_async(0..1);
    let parked = s.hook.victims.lock().unwrap().pop().unwrap();
    assert!(poll_once(&mut a, &s.hook.waker()).is_pending());
    s.hook.victims.lock().unwrap().push(parked);
    assert_eq!(s.lock.queued(), 3);
    drop(a); // its own waker, the hook, withdraws B, which grants C
    s.b_withdrawn(0);
}

#[test]
fn a_grant_consumes_the_waker_whose_drop_withdraws_b() {
    let s = scene();
    // A (write 0..1) waits for the held 0..2 only; B waits for it too (and for A? no: 0..1 and 1..5 are
    // disjoint), so releasing 0..2 grants A and B at once unless B is gone first. Use A over 8..10 behind
    // its own holder instead, released separately.
    let blocker = s.lock.try_write(9..10).unwrap();
    let mut a = s.lock.write_async(8..10);
    let parked = s.hook.victims.lock().unwrap().pop().unwrap();
    assert!(poll_once(&mut a, &s.hook.waker()).is_pending());
    s.hook.victims.lock().unwrap().push(parked);
    let wakes = s.hook.wakes.load(Ordering::SeqCst);
    drop(blocker); // grants A: wake(self) consumes the hook handle, whose drop withdraws B
    assert_eq!(s.hook.wakes.load(Ordering::SeqCst), wakes + 1);
    let lock = s.lock;
    s.b_withdrawn(1);
    assert!(poll_once(&mut a, &Waker::noop().clone()).is_ready());
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

/// The same re-entrant drop on a mutex lent by `with_slice`, on a `current_thread` runtime: A, first polled
/// with the hook, moves to a task (tokio's waker replaces the hook's handle, whose drop withdraws B); C, queued
/// only behind B, completes; then A. The caller's slice holds what they wrote.
#[test]
fn a_moved_future_drops_its_old_waker_in_a_lent_mutex() {
    let mut caller = [0u8; 10];
    IntervalMutex::with_slice(&mut caller, |lock| {
        // SAFETY: the runtime, its tasks and every future of the lock are gone before the closure returns.
        let lock: &'static IntervalMutex<u8> = unsafe { &*std::ptr::from_ref(lock) };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let hook = Hook::new();
        rt.block_on(async {
            let held = lock.try_lock(0..2).unwrap();
            let mut b = lock.lock_async(1..5);
            assert!(poll_once(&mut b, &Waker::noop().clone()).is_pending());
            let c = tokio::spawn(async {
                let mut g = lock.lock_async(4..6).await;
                g.fill(3);
            });
            tokio::task::yield_now().await; // C queues behind B
            assert_eq!((lock.held(), lock.queued()), (1, 2));
            let mut a = lock.lock_async(0..1);
            assert!(poll_once(&mut a, &hook.waker()).is_pending());
            hook.victims.lock().unwrap().push(b);
            let a = tokio::spawn(async move {
                let mut g = a.await;
                g.fill(1);
            });
            timeout(DEADLINE, c).await.expect("C hung").unwrap();
            assert_eq!(hook.parked(), 0, "B still parked");
            drop(held);
            timeout(DEADLINE, a).await.expect("A hung").unwrap();
            assert_eq!((lock.held(), lock.queued()), (0, 0));
            let mut all = lock.lock_async(..);
            assert!(poll_once(&mut all, &Waker::noop().clone()).is_ready());
        });
        drop(rt);
    });
    assert_eq!(caller, [1, 0, 0, 0, 3, 3, 0, 0, 0, 0]);
}

/// A waker whose consumption by the grant drops the very future it was given to (granted, never polled
/// again): that drop releases the range at once, and D, queued behind it, is granted and woken.
#[test]
fn a_grant_whose_waker_drops_the_granted_future_itself() {
    let lock: &'static IntervalRwLock<u8> = Box::leak(Box::new(IntervalRwLock::new(vec![0; 10])));
    let held = lock.try_write(2..4).unwrap();
    let hook = Hook::new();
    let mut a = lock.write_async(0..6);
    assert!(poll_once(&mut a, &hook.waker()).is_pending());
    let (d_count, d_waker) = counting();
    let mut d = lock.write_async(5..7);
    assert!(poll_once(&mut d, &d_waker).is_pending());
    hook.victims.lock().unwrap().push(a);
    assert_eq!((lock.held(), lock.queued()), (1, 2));
    drop(held); // grants A; its waker drops A; that grants D
    assert_eq!(hook.parked(), 0);
    assert_eq!(d_count.0.load(Ordering::SeqCst), 1);
    assert_eq!((lock.held(), lock.queued()), (1, 0));
    let Poll::Ready(d) = poll_once(&mut d, &d_waker) else {
        panic!("D woken but not granted");
    };
    drop(d);
    assert!(lock.try_write(..).is_ok());
}

/// A pending future of the random walk below, and the counting waker of its last poll (`None`: a hook).
type Pending = (WriteFuture<'static, u8>, Option<Arc<Count>>);

/// A seeded single-threaded walk on a mutex: futures polled with counting wakers or hooks, re-polled, dropped,
/// parked in hooks (whose handles' drops and wakes withdraw them, in chains), and guards released. Held
/// guards never overlap; a future granted after a poll with a counting waker was woken; at the end every
/// pending future is granted in turn, and nothing is held or queued.
#[test]
fn a_random_walk_of_reentrant_waker_drops_on_a_mutex() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        let len = 3 + rng.below(10) as usize;
        let lock: &'static IntervalMutex<u8> =
            Box::leak(Box::new(IntervalMutex::new(vec![0; len])));
        let hooks: Vec<&'static Hook> = (0..4).map(|_| Hook::new()).collect();
        let mut pending: Vec<Pending> = Vec::new();
        let mut guards: Vec<trust_core::interval::WriteGuard<'static, u8>> = Vec::new();
        let poll = |f: &mut WriteFuture<'static, u8>,
                    last: &Option<Arc<Count>>,
                    rng: &mut Rng,
                    guards: &mut Vec<trust_core::interval::WriteGuard<'static, u8>>|
         -> Option<Option<Arc<Count>>> {
            let was_woken = last.as_ref().map(|c| c.0.load(Ordering::SeqCst) > 0);
            let (waker, count) = if rng.below(3) == 0 {
                (hooks[rng.below(4) as usize].waker(), None)
            } else {
                let (c, w) = counting();
                (w, Some(c))
            };
            match poll_once(f, &waker) {
                Poll::Ready(g) => {
                    assert_ne!(was_woken, Some(false), "granted without a wake");
                    for h in guards.iter() {
                        let (a, b) = (h.range(), g.range());
                        assert!(
                            a.is_empty() || b.is_empty() || a.end <= b.start || b.end <= a.start,
                            "overlapping guards {a:?} {b:?}"
                        );
                    }
                    guards.push(g);
                    None
                }
                Poll::Pending => Some(count),
            }
        };
        for _ in 0..400 {
            match rng.below(6) {
                0 | 1 => {
                    let a = rng.below(len as u64) as usize;
                    let b = (a + 1 + rng.below(4) as usize).min(len);
                    let mut f = if rng.below(4) == 0 {
                        lock.prioritized(1).lock_async(a..b)
                    } else {
                        lock.lock_async(a..b)
                    };
                    if let Some(count) = poll(&mut f, &None, &mut rng, &mut guards) {
                        pending.push((f, count));
                    }
                }
                2 if !pending.is_empty() => {
                    let i = rng.below(pending.len() as u64) as usize;
                    let (mut f, last) = pending.swap_remove(i);
                    if let Some(count) = poll(&mut f, &last, &mut rng, &mut guards) {
                        pending.push((f, count));
                    }
                }
                3 if !pending.is_empty() => {
                    let i = rng.below(pending.len() as u64) as usize;
                    let (f, _) = pending.swap_remove(i);
                    if rng.below(2) == 0 {
                        drop(f);
                    } else {
                        hooks[rng.below(4) as usize].victims.lock().unwrap().push(f);
                    }
                }
                _ if !guards.is_empty() => {
                    let i = rng.below(guards.len() as u64) as usize;
                    drop(guards.swap_remove(i));
                }
                _ => {}
            }
        }
        drop(std::mem::take(&mut guards));
        for hook in &hooks {
            let victims = std::mem::take(&mut *hook.victims.lock().unwrap());
            drop(victims);
        }
        // Every pending future is granted in turn: each round at least one is (none is stuck behind nothing).
        while !pending.is_empty() {
            let before = pending.len();
            for (mut f, last) in std::mem::take(&mut pending) {
                if let Some(count) = poll(&mut f, &last, &mut rng, &mut guards) {
                    pending.push((f, count));
                }
                drop(std::mem::take(&mut guards));
            }
            assert!(
                pending.len() < before,
                "seed {seed}: {} stuck",
                pending.len()
            );
        }
        for hook in &hooks {
            assert_eq!(hook.parked(), 0);
        }
        assert_eq!((lock.held(), lock.queued()), (0, 0), "seed {seed}");
        assert!(lock.try_lock(..).is_ok());
    }
}

/// A waker whose *clone* withdraws B: A's first poll (queued behind the held `0..2`) and its re-poll clone
/// it; the withdrawal runs before A's request is recorded, and C is granted.
#[test]
fn a_waker_clone_that_withdraws_another_request() {
    let s = scene();
    s.hook.on_clone.store(true, Ordering::SeqCst);
    let waker = s.hook.waker();
    let mut a = s.lock.write_async(0..5);
    assert!(poll_once(&mut a, &waker).is_pending());
    assert_eq!(s.hook.parked(), 0);
    assert_eq!(s.c_count.0.load(Ordering::SeqCst), 1);
    // A queued after C (4..6): it waits for the held 0..2 and for C.
    assert_eq!((s.lock.held(), s.lock.queued()), (2, 1));
    let Scene {
        lock,
        held,
        mut c,
        c_waker,
        ..
    } = s;
    assert!(poll_once(&mut a, &waker).is_pending());
    let Poll::Ready(c) = poll_once(&mut c, &c_waker) else {
        panic!("C woken but not granted");
    };
    drop(held);
    assert!(
        poll_once(&mut a, &waker).is_pending(),
        "A still waits for C"
    );
    drop(c);
    assert!(poll_once(&mut a, &waker).is_ready());
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}
