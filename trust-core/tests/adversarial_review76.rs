//! Review 76 (ghost): a hostile pass over `trust_core::ghost` aimed at what reviews 17, 41 and 64 did not
//! pin: user code that panics in the middle of a token's scope or of a cell operation, async code holding a
//! `borrow_mut` across `.await` (the future moved to another thread between polls), the worklists used as the
//! free list / work queue of a slab of `Drop` values with exact create/drop counts (the worklists carry
//! indices, so there is no `Clone`/`Drop` of an item inside `push`/`pop` to panic, and nothing to drop or
//! reclaim when they are dropped: the slab owns the values), a deque owner handle passed from thread to
//! thread while thieves steal, the global static token's writers serialized across threads, the read phase's
//! shards really running at once (a rendezvous with a deadline), a commit phase that nests another
//! read-then-commit, and the multi-borrow's error naming a duplicate among a thousand references.
//!
//! The compile-time half is five new trybuild cases under `ui-tests/tests/ui/ghost/`: a future holding the
//! token returned from `GhostToken::new`, a `Box::leak`ed cell written from two token scopes (rejected in
//! both: a cell made outside a scope cannot take its fresh brand), two tokens of nested brands
//! `mem::swap`ped, a token and a cell re-typed to a shorter brand (invariance), the token boxed as `dyn Any`.
//! All rejected. Miri (Stacked and Tree Borrows, strict provenance) runs this file clean.
//!
//! Findings: none in `src/` (no safe program broke a promise). One coverage gap, outside this file: the
//! worklists' loom models were run against mutants of copies of `deque.rs`/`treiber.rs` (a scratch crate;
//! docs/ghost.md lists the result). Every Treiber mutant (pop's Acquire loads made Relaxed, either push CAS made
//! Relaxed) and two deque mutants (the stealer's `SeqCst` fence or the pusher's Release fence removed) fail
//! a model; four deque mutants pass both models: the stealer's CAS or `pop_bottom`'s CAS made `Relaxed`,
//! `push_bottom`'s load of `top` or `steal`'s load of `top` made `Relaxed`. What the first and third
//! guard (a stealer's relaxed read of a slot must not see the owner's overwrite after the ring wraps) is a
//! load-buffering outcome, which neither loom nor Miri can produce; those orderings rest on Lê et al. only.
//!
//! Every loop that waits has a deadline; the file runs in well under a second in debug and shrinks under
//! `cfg(miri)`.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use trust_core::ghost::{
    GhostBorrowMut, GhostCell, GhostChaseLevDeque, GhostLazyCell, GhostLazyLock, GhostOnceCell,
    GhostToken, GhostTreiberStack, parallel_read_then_commit_with, static_token,
    with_static_token_mut,
};

const SMALL: bool = cfg!(miri);
const DEADLINE: Duration = Duration::from_secs(if cfg!(miri) { 600 } else { 20 });

fn message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

/// Counts creations and drops into two counters.
struct Counted<'c> {
    drops: &'c AtomicUsize,
    value: u64,
}

impl<'c> Counted<'c> {
    fn new(created: &AtomicUsize, drops: &'c AtomicUsize, value: u64) -> Self {
        created.fetch_add(1, Ordering::SeqCst);
        Counted { drops, value }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

// ---- panics in user code ---------------------------------------------------------------------------------

/// A closure that panics halfway through a three-cell update inside `GhostToken::new`: the cells it owns are
/// dropped exactly once each during the unwind, and the panic reaches the caller with its message. Caught
/// inside the scope instead, the token is still usable and the cells hold exactly the writes done before
/// the panic (no rollback, no double drop).
#[test]
fn a_panic_halfway_through_an_update_drops_each_cell_once() {
    let (created, drops) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        GhostToken::new(|mut token| {
            let cells: Vec<GhostCell<Counted>> = (0..3)
                .map(|i| GhostCell::new(Counted::new(&created, &drops, i)))
                .collect();
            let [a, b, c] = [&cells[0], &cells[1], &cells[2]];
            let (x, y, z) = (a, b, c).borrow_mut(&mut token).unwrap();
            x.value = 10;
            y.value = 20;
            if z.value == 2 {
                panic!("halfway");
            }
            z.value = 30;
        })
    }));
    assert_eq!(message(outcome.unwrap_err()), "halfway");
    assert_eq!(created.load(Ordering::SeqCst), 3);
    assert_eq!(drops.load(Ordering::SeqCst), 3);

    let (created, drops) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let values = GhostToken::new(|mut token| {
        let cells: Vec<GhostCell<Counted>> = (0..3)
            .map(|i| GhostCell::new(Counted::new(&created, &drops, i)))
            .collect();
        let caught = catch_unwind(AssertUnwindSafe(|| {
            for (i, cell) in cells.iter().enumerate() {
                if i == 2 {
                    panic!("third");
                }
                // A replaced value is dropped by us, here, exactly once.
                drop(cell.replace(Counted::new(&created, &drops, 100 + i as u64), &mut token));
            }
        }));
        assert_eq!(message(caught.unwrap_err()), "third");
        *cells[2].borrow_mut(&mut token) = Counted::new(&created, &drops, 7);
        cells
            .iter()
            .map(|c| c.borrow(&token).value)
            .collect::<Vec<_>>()
    });
    assert_eq!(values, [100, 101, 7]);
    assert_eq!(created.load(Ordering::SeqCst), 6);
    assert_eq!(drops.load(Ordering::SeqCst), 6);
}

/// `take` builds `T::default()` before it touches the cell: a panicking `Default` leaves the old value in
/// place, and nothing is dropped twice. A replaced value whose `Drop` panics panics in the caller, after the
/// new value is in.
#[test]
fn take_with_a_panicking_default_and_replace_of_a_value_whose_drop_panics() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    struct Hostile(u32);
    impl Default for Hostile {
        fn default() -> Self {
            panic!("no default")
        }
    }
    impl Drop for Hostile {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
            if self.0 == 13 {
                panic!("unlucky drop");
            }
        }
    }
    GhostToken::new(|mut token| {
        let cell = GhostCell::new(Hostile(1));
        let err = catch_unwind(AssertUnwindSafe(|| drop(cell.take(&mut token)))).unwrap_err();
        assert_eq!(message(err), "no default");
        assert_eq!(
            (cell.borrow(&token).0, DROPS.load(Ordering::SeqCst)),
            (1, 0)
        );

        let old = cell.replace(Hostile(13), &mut token);
        assert_eq!((old.0, DROPS.load(Ordering::SeqCst)), (1, 0));
        drop(old);
        assert_eq!(DROPS.load(Ordering::SeqCst), 1);
        let old = cell.replace(Hostile(2), &mut token);
        let err = catch_unwind(AssertUnwindSafe(|| drop(old))).unwrap_err();
        assert_eq!(message(err), "unlucky drop");
        assert_eq!(
            (cell.borrow(&token).0, DROPS.load(Ordering::SeqCst)),
            (2, 2)
        );
        // `swap` of two cells moves values only; nothing is dropped.
        let other = GhostCell::new(Hostile(3));
        cell.swap(&other, &mut token).unwrap();
        assert_eq!(
            (
                cell.borrow(&token).0,
                other.borrow(&token).0,
                DROPS.load(Ordering::SeqCst)
            ),
            (3, 2, 2)
        );
    });
    assert_eq!(DROPS.load(Ordering::SeqCst), 4);
}

/// The initialisers' captures of the lazy cells and locks are dropped exactly once whatever happens: run
/// to completion, panicking (dropped during the unwind; the cell is then poisoned and never runs anything
/// again), never run (dropped with the cell, or handed back by `into_inner`).
#[test]
fn lazy_initialiser_captures_are_dropped_exactly_once() {
    let (created, drops) = (AtomicUsize::new(0), AtomicUsize::new(0));
    GhostToken::new(|mut token| {
        // Runs: the capture is consumed by the call.
        let capture = Counted::new(&created, &drops, 5);
        let lazy = GhostLazyCell::new(move || {
            let capture = capture; // the whole value, not a copy of its field
            capture.value * 2
        });
        assert_eq!(*lazy.force(&mut token), 10);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        // Panics: the capture is dropped by the unwind, once; later forces panic with the poison message.
        let capture = Counted::new(&created, &drops, 6);
        let lazy = GhostLazyCell::new(move || -> u64 {
            let capture = capture;
            if capture.value == 6 {
                panic!("init failed");
            }
            0
        });
        let err = catch_unwind(AssertUnwindSafe(|| *lazy.force(&mut token))).unwrap_err();
        assert_eq!(message(err), "init failed");
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        for _ in 0..2 {
            let err = catch_unwind(AssertUnwindSafe(|| *lazy.force(&mut token))).unwrap_err();
            assert!(message(err).contains("panicked on an earlier call"));
        }
        assert_eq!(lazy.get(&token), None);
        // Never run: dropped with the cell.
        let capture = Counted::new(&created, &drops, 7);
        drop(GhostLazyCell::<u64, _>::new(move || {
            let capture = capture;
            capture.value
        }));
        assert_eq!(drops.load(Ordering::SeqCst), 3);

        // The same three paths for `GhostLazyLock`, plus `into_inner`.
        let capture = Counted::new(&created, &drops, 8);
        let lock = GhostLazyLock::new(move || {
            let capture = capture;
            capture.value + 1
        });
        assert_eq!(*lock.force(&token), 9);
        assert_eq!(drops.load(Ordering::SeqCst), 4);
        assert_eq!(lock.into_inner().ok(), Some(9));
        let capture = Counted::new(&created, &drops, 9);
        let lock = GhostLazyLock::new(move || -> u64 {
            let capture = capture;
            panic!("lock init {}", capture.value)
        });
        let err = catch_unwind(AssertUnwindSafe(|| *lock.force(&token))).unwrap_err();
        assert_eq!(message(err), "lock init 9");
        assert_eq!(drops.load(Ordering::SeqCst), 5);
        assert!(matches!(lock.into_inner(), Err(None)));
        let capture = Counted::new(&created, &drops, 10);
        let lock = GhostLazyLock::new(move || {
            let capture = capture;
            capture.value
        });
        let init = lock
            .into_inner()
            .err()
            .flatten()
            .expect("the initialiser, unrun");
        assert_eq!(drops.load(Ordering::SeqCst), 5);
        assert_eq!(init(), 10);
        assert_eq!(drops.load(Ordering::SeqCst), 6);

        // A once cell whose initialiser panics stays empty, and the next initialiser fills it.
        let once = GhostOnceCell::new();
        let err = catch_unwind(AssertUnwindSafe(|| {
            once.get_or_init(&mut token, || -> Counted { panic!("once init") });
        }))
        .unwrap_err();
        assert_eq!(message(err), "once init");
        assert!(once.get(&token).is_none());
        assert_eq!(
            once.get_or_init(&mut token, || Counted::new(&created, &drops, 11))
                .value,
            11
        );
        let rejected = once
            .set(Counted::new(&created, &drops, 12), &mut token)
            .unwrap_err();
        assert_eq!((rejected.value, drops.load(Ordering::SeqCst)), (12, 6));
    });
    assert_eq!(created.load(Ordering::SeqCst), 8);
    assert_eq!(drops.load(Ordering::SeqCst), 8);
}

// ---- async -----------------------------------------------------------------------------------------------

/// Returns `Pending` once, then `Ready`.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

fn assert_send<T: Send>(_: &T) {}

/// An async block that holds `borrow_mut` of one cell across `.await`s, and the `&mut token` with it, inside
/// `GhostToken::new`: it is `Send` (the token is `Sync`, the cell's `T` is `Send + Sync`), is polled once on
/// this thread, moved to a scoped thread and finished there, and its writes are exact when the token comes
/// back. (Returning such a future from the closure is the UI case `ghost/future-holding-the-token-escapes`.)
#[test]
fn a_future_holding_borrow_mut_across_await_moves_between_threads() {
    let total = GhostToken::new(|mut token| {
        let cells: Vec<GhostCell<u64>> = (0..4).map(GhostCell::new).collect();
        let token_ref = &mut token;
        let cells_ref = &cells;
        let mut future = Box::pin(async move {
            let first = cells_ref[0].borrow_mut(token_ref);
            *first += 100;
            YieldOnce(false).await;
            *first += 1000; // still the same `&mut`, across the suspension
            YieldOnce(false).await;
            let (b, c) = (&cells_ref[1], &cells_ref[2])
                .borrow_mut(token_ref)
                .unwrap();
            std::mem::swap(b, c);
            cells_ref.iter().map(|c| *c.borrow(token_ref)).sum::<u64>()
        });
        assert_send(&future);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(future.as_mut().poll(&mut cx).is_pending());
        let sum = std::thread::scope(|s| {
            s.spawn(move || {
                let mut cx = Context::from_waker(Waker::noop());
                for _ in 0..3 {
                    if let Poll::Ready(sum) = future.as_mut().poll(&mut cx) {
                        return sum;
                    }
                }
                panic!("the future did not finish in three polls");
            })
            .join()
            .unwrap()
        });
        let values: Vec<u64> = cells.iter().map(|c| *c.borrow(&token)).collect();
        assert_eq!(values, [1100, 2, 1, 3]);
        sum
    });
    assert_eq!(total, 1100 + 2 + 1 + 3);
}

// ---- the worklists as free list and work queue of a slab of `Drop` values -----------------------------------

/// The Treiber stack as the free list of a slab of `Mutex<Option<Counted>>` slots: each thread pops a free
/// index, fills its slot (`try_lock` must succeed and the slot must be empty: a second owner of the index
/// would fail one of the two), empties it, drops the value and pushes the index back, alone or in batches.
/// In the end every index is free exactly once and every value created was dropped exactly once.
#[test]
fn treiber_free_list_of_a_slab_of_drop_values_exact_counts() {
    let (cap, threads, rounds) = if SMALL { (4, 3, 30) } else { (16, 6, 20_000) };
    let (created, drops) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let double_owner = AtomicUsize::new(0);
    let deadline = Instant::now() + DEADLINE;
    GhostToken::new(|_token| {
        let free = GhostTreiberStack::new(cap);
        free.push_batch(&(0..cap).collect::<Vec<_>>());
        let slab: Vec<Mutex<Option<Counted>>> = (0..cap).map(|_| Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for t in 0..threads {
                let (free, slab, created, drops, double_owner) =
                    (&free, &slab, &created, &drops, &double_owner);
                s.spawn(move || {
                    let mut held = Vec::new();
                    for r in 0..rounds {
                        assert!(Instant::now() < deadline, "treiber slab: deadline");
                        if let Some(i) = free.pop() {
                            match slab[i].try_lock() {
                                Ok(mut slot) if slot.is_none() => {
                                    *slot =
                                        Some(Counted::new(created, drops, (t * rounds + r) as u64));
                                    held.push(i);
                                }
                                _ => {
                                    double_owner.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                        if held.len() == 3 || (!held.is_empty() && (r + t) % 5 == 0) {
                            for &i in &held {
                                let value = slab[i].try_lock().expect("our slot").take();
                                assert!(value.is_some(), "our slot was emptied by someone else");
                                drop(value);
                            }
                            if r % 2 == 0 {
                                free.push_batch(&held);
                            } else {
                                held.iter().for_each(|&i| free.push(i));
                            }
                            held.clear();
                        }
                    }
                    for &i in &held {
                        drop(slab[i].try_lock().expect("our slot").take());
                    }
                    free.push_batch(&held);
                });
            }
        });
        assert_eq!(
            double_owner.load(Ordering::SeqCst),
            0,
            "an index had two owners"
        );
        let mut seen = vec![0u32; cap];
        while let Some(i) = free.pop() {
            seen[i] += 1;
            assert!(seen[i] == 1, "index {i} free twice");
        }
        assert_eq!(seen, vec![1; cap], "lost indices");
        assert!(slab.iter().all(|s| s.lock().unwrap().is_none()));
    });
    assert!(created.load(Ordering::SeqCst) > 0);
    assert_eq!(created.load(Ordering::SeqCst), drops.load(Ordering::SeqCst));
}

/// A deque whose owner handle is passed from thread to thread (four owners in turn, each pushing its part and
/// popping some back; the deque is tiny, so it is full often and its ring wraps thousands of times) while two
/// thieves steal all along. The values are indices into a slab of `Counted`: whoever takes an index takes the
/// value out of its slot, so a value taken twice (an empty slot) or never (left in the slab) shows.
#[test]
fn deque_owner_handed_between_threads_while_thieves_steal_exact() {
    let (n, cap) = if SMALL { (48, 4) } else { (40_000, 4) };
    let (created, drops) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let deadline = Instant::now() + DEADLINE;
    let slab: Vec<Mutex<Option<Counted>>> = (0..n)
        .map(|i| Mutex::new(Some(Counted::new(&created, &drops, i as u64))))
        .collect();
    let taken_twice = AtomicUsize::new(0);
    let take = |i: usize| {
        if slab[i].lock().unwrap().take().is_none() {
            taken_twice.fetch_add(1, Ordering::SeqCst);
        }
    };
    let (take, taken_twice) = (&take, &taken_twice);
    GhostToken::new(|_token| {
        let mut owner = GhostChaseLevDeque::new(cap);
        let stealer = owner.stealer();
        let done = AtomicBool::new(false);
        let stolen = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                let (stealer, done, stolen) = (stealer.clone(), &done, &stolen);
                s.spawn(move || {
                    loop {
                        assert!(Instant::now() < deadline, "thief: deadline");
                        match stealer.steal() {
                            Some(i) => {
                                take(i);
                                stolen.fetch_add(1, Ordering::Relaxed);
                            }
                            None if done.load(Ordering::Acquire) && stealer.is_empty() => break,
                            None => std::thread::yield_now(),
                        }
                    }
                });
            }
            let per_owner = n / 4;
            for part in 0..4 {
                owner = s
                    .spawn(move || {
                        for i in part * per_owner..(part + 1) * per_owner {
                            let mut value = i;
                            loop {
                                assert!(Instant::now() < deadline, "owner: deadline");
                                match owner.push_bottom(value) {
                                    Ok(()) => break,
                                    Err(back) => {
                                        value = back;
                                        if let Some(mine) = owner.pop_bottom() {
                                            take(mine);
                                        }
                                    }
                                }
                            }
                            if i % 7 == 0
                                && let Some(mine) = owner.pop_bottom()
                            {
                                take(mine);
                            }
                        }
                        owner
                    })
                    .join()
                    .unwrap();
            }
            // The last owner (this thread) drains what is left; the thieves stop once it is empty.
            while let Some(mine) = owner.pop_bottom() {
                take(mine);
            }
            done.store(true, Ordering::Release);
        });
        assert!(stolen.load(Ordering::Relaxed) <= n);
    });
    assert_eq!(
        taken_twice.load(Ordering::SeqCst),
        0,
        "a value was taken twice"
    );
    assert!(
        slab.iter().all(|s| s.lock().unwrap().is_none()),
        "a value was never taken"
    );
    assert_eq!(
        (created.load(Ordering::SeqCst), drops.load(Ordering::SeqCst)),
        (n, n)
    );
}

// ---- the static token's writers, the read phase, the multi-borrow -----------------------------------------

/// `with_static_token_mut` serializes its callers with its `Mutex`: four threads each add 1 to a `static`
/// `GhostCell<'static, u64>` a few hundred times (nobody reads it through `static_token()` meanwhile, as the
/// contract asks). Exact total, and Miri sees no race: the `Mutex` orders the writers.
#[test]
fn static_token_writers_are_serialized_across_threads() {
    static COUNTER: GhostCell<'static, u64> = GhostCell::new(0);
    let (threads, rounds) = if SMALL { (3, 20) } else { (4, 500) };
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(move || {
                for _ in 0..rounds {
                    // SAFETY: no thread reads COUNTER through `static_token()` until the scope has ended.
                    unsafe { with_static_token_mut(|token| *COUNTER.borrow_mut(token) += 1) };
                }
            });
        }
    });
    assert_eq!(*COUNTER.borrow(static_token()), (threads * rounds) as u64);
}

/// The read phase's shards run at once, not one after the other: each shard waits (with a deadline) until
/// all of them have arrived. The commit phase then nests a second read-then-commit with its `&mut token`,
/// whose values are exact.
#[test]
fn shards_meet_at_a_rendezvous_and_a_commit_nests_another_round() {
    let shards = if SMALL { 3 } else { 6 };
    let deadline = Instant::now() + DEADLINE;
    GhostToken::new(|mut token| {
        let cells: Vec<GhostCell<u64>> = (1..=60).map(GhostCell::new).collect();
        let arrived = AtomicUsize::new(0);
        let sums = parallel_read_then_commit_with(
            shards,
            &mut token,
            |shard, token| {
                arrived.fetch_add(1, Ordering::SeqCst);
                while arrived.load(Ordering::SeqCst) < shards {
                    assert!(
                        Instant::now() < deadline,
                        "shard {} waited alone",
                        shard.index
                    );
                    std::thread::yield_now();
                }
                cells[shard.range(cells.len())]
                    .iter()
                    .map(|c| *c.borrow(token))
                    .sum::<u64>()
            },
            |partial, token| {
                let total: u64 = partial.iter().sum();
                for c in &cells {
                    *c.borrow_mut(token) *= 2;
                }
                // A nested round, with the commit's own `&mut token`.
                let doubled = parallel_read_then_commit_with(
                    2,
                    token,
                    |shard, token| {
                        cells[shard.range(cells.len())]
                            .iter()
                            .map(|c| *c.borrow(token))
                            .sum::<u64>()
                    },
                    |partial, token| {
                        *cells[0].borrow_mut(token) = 0;
                        partial.iter().sum::<u64>()
                    },
                );
                (total, doubled)
            },
        );
        assert_eq!(sums, (1830, 3660));
        assert_eq!(arrived.load(Ordering::SeqCst), shards);
        assert_eq!(*cells[0].borrow(&token), 0);
        assert_eq!(*cells[59].borrow(&token), 120);
    });
}

/// A slice of a thousand cell references with one duplicate far apart: the error names exactly those two
/// positions; without the duplicate, all thousand `&mut`s are handed out and write where they should.
#[test]
fn one_duplicate_among_a_thousand_references_is_named() {
    let n = if SMALL { 40 } else { 1000 };
    GhostToken::new(|mut token| {
        let cells: Vec<GhostCell<u32>> = (0..n as u32).map(GhostCell::new).collect();
        let mut refs: Vec<&GhostCell<u32>> = cells.iter().rev().collect();
        refs[n - 3] = refs[3]; // refs[3] is cells[n - 4]; position n - 3 now repeats it
        let err = refs.as_slice().borrow_mut(&mut token).unwrap_err();
        assert_eq!((err.first(), err.second()), (3, n - 3));
        refs[n - 3] = &cells[2];
        let all = refs.as_slice().borrow_mut(&mut token).unwrap();
        assert_eq!(all.len(), n);
        for value in all {
            *value += 1;
        }
        assert!(
            cells
                .iter()
                .enumerate()
                .all(|(i, c)| *c.borrow(&token) == i as u32 + 1)
        );
    });
}
