//! Adversarial tests of `trust_core::ghost`: the Treiber stack and Chase-Lev deque under many threads with
//! exact push/pop accounting and bad inputs, branded atomics and bitsets, multi-borrows that overlap, lazy
//! cells whose initialisers panic (docs/ghost.md's promises).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use trust_core::ghost::{
    GhostAtomicBitset, GhostAtomicU64, GhostBorrowMut, GhostCell, GhostChaseLevDeque,
    GhostLazyCell, GhostLazyLock, GhostOnceCell, GhostToken, GhostTreiberStack, Shard,
    parallel_read_then_commit_with,
};

mod common;
use common::panic_message;

const SMALL: bool = cfg!(miri);

/// Every index handed out by `pop` is owned by exactly one thread until it pushes it back.
#[test]
fn treiber_exact_ownership_under_many_threads_with_batches() {
    let (cap, threads, rounds) = if SMALL { (8, 3, 40) } else { (64, 8, 40_000) };
    GhostToken::new(|_t| {
        let stack = GhostTreiberStack::new(cap);
        let all: Vec<usize> = (0..cap).collect();
        stack.push_batch(&all);
        let owned: Vec<AtomicBool> = (0..cap).map(|_| AtomicBool::new(false)).collect();
        let dup = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (stack, owned, dup) = (&stack, &owned, &dup);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for r in 0..rounds {
                        if (r + t) % 3 != 2
                            && let Some(i) = stack.pop()
                        {
                            if owned[i].swap(true, Ordering::AcqRel) {
                                dup.fetch_add(1, Ordering::Relaxed);
                            }
                            mine.push(i);
                        }
                        if mine.len() > 3 || (r + t) % 3 == 2 {
                            let give: Vec<usize> = std::mem::take(&mut mine);
                            for &i in &give {
                                owned[i].store(false, Ordering::Release);
                            }
                            if give.len() > 1 && r % 2 == 0 {
                                stack.push_batch(&give);
                            } else {
                                for i in give {
                                    stack.push(i);
                                }
                            }
                        }
                    }
                    for &i in &mine {
                        owned[i].store(false, Ordering::Release);
                    }
                    stack.push_batch(&mine);
                });
            }
        });
        assert_eq!(
            dup.load(Ordering::Relaxed),
            0,
            "an index was handed to two owners"
        );
        let mut seen = vec![0; cap];
        while let Some(i) = stack.pop() {
            seen[i] += 1;
            assert!(
                seen[i] <= 1,
                "index {i} popped twice from a quiescent stack"
            );
        }
        assert!(seen.iter().all(|&c| c == 1), "lost indices: {seen:?}");
    });
}

#[test]
fn treiber_bad_inputs() {
    GhostToken::new(|_t| {
        let empty = GhostTreiberStack::new(0);
        assert_eq!(empty.pop(), None);
        empty.push_batch(&[]);
        let m = panic_message(catch_unwind(AssertUnwindSafe(|| empty.push(0))).unwrap_err());
        assert!(m.contains("index 0") && m.contains("capacity 0"), "{m}");
        let s = GhostTreiberStack::new(4);
        // Out-of-range in the middle of a batch: "before anything is pushed".
        let r = catch_unwind(AssertUnwindSafe(|| s.push_batch(&[0, 1, 9, 2])));
        assert!(r.is_err());
        assert_eq!(s.pop(), None, "a failed batch pushed something");
        // A batch that failed after linking must not corrupt later pushes.
        s.push(1);
        s.push(0);
        assert_eq!((s.pop(), s.pop(), s.pop()), (Some(0), Some(1), None));
    });
}

/// docs/ghost.md: an index pushed twice "links a cycle that pops the same index forever ... but never breaks
/// memory safety": the stack keeps popping that index, nothing else, and nothing faults (Miri runs it).
#[test]
fn treiber_duplicate_push_links_a_cycle_of_that_index() {
    GhostToken::new(|_t| {
        let s = GhostTreiberStack::new(4);
        s.push(2);
        s.push(2);
        for _ in 0..100 {
            assert_eq!(s.pop(), Some(2));
        }
    });
}

#[test]
fn deque_owner_and_three_thieves_exact_accounting_with_wraparound() {
    let (cap, total) = if SMALL { (4, 200) } else { (8, 400_000) };
    GhostToken::new(|_t| {
        let owner = GhostChaseLevDeque::new(cap);
        let taken: Vec<AtomicUsize> = (0..total).map(|_| AtomicUsize::new(0)).collect();
        let done = AtomicBool::new(false);
        let stolen = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                let thief = owner.stealer();
                let (taken, done, stolen) = (&taken, &done, &stolen);
                s.spawn(move || {
                    loop {
                        match thief.steal() {
                            Some(v) => {
                                taken[v].fetch_add(1, Ordering::Relaxed);
                                stolen.fetch_add(1, Ordering::Relaxed);
                            }
                            None if done.load(Ordering::Acquire) && thief.is_empty() => break,
                            None => std::hint::spin_loop(),
                        }
                    }
                });
            }
            let mut next = 0;
            let mut popped = 0;
            while next < total {
                match owner.push_bottom(next) {
                    Ok(()) => next += 1,
                    Err(v) => {
                        assert_eq!(v, next, "Err must give the value back");
                        if let Some(v) = owner.pop_bottom() {
                            taken[v].fetch_add(1, Ordering::Relaxed);
                            popped += 1;
                        }
                    }
                }
                if next % 7 == 0
                    && let Some(v) = owner.pop_bottom()
                {
                    taken[v].fetch_add(1, Ordering::Relaxed);
                    popped += 1;
                }
            }
            while let Some(v) = owner.pop_bottom() {
                taken[v].fetch_add(1, Ordering::Relaxed);
                popped += 1;
            }
            done.store(true, Ordering::Release);
            let _ = popped;
        });
        let bad: Vec<_> = taken
            .iter()
            .enumerate()
            .filter(|(_, c)| c.load(Ordering::Relaxed) != 1)
            .take(5)
            .map(|(i, c)| (i, c.load(Ordering::Relaxed)))
            .collect();
        assert!(bad.is_empty(), "values taken != once: {bad:?}");
        assert!(owner.is_empty());
        assert_eq!(owner.len(), 0);
    });
}

#[test]
fn deque_bad_inputs() {
    GhostToken::new(|_t| {
        for bad in [0usize, 3, 6, usize::MAX] {
            assert!(
                catch_unwind(|| drop(GhostChaseLevDeque::new(bad))).is_err(),
                "capacity {bad}"
            );
        }
        let d = GhostChaseLevDeque::new(1);
        assert_eq!(d.push_bottom(5), Ok(()));
        assert_eq!(d.push_bottom(6), Err(6));
        let m = panic_message(
            catch_unwind(AssertUnwindSafe(|| d.push_bottom(GhostChaseLevDeque::NONE))).unwrap_err(),
        );
        assert!(m.contains("sentinel"), "{m}");
        assert_eq!(d.len(), 1);
        assert_eq!(d.stealer().steal(), Some(5));
        assert_eq!(d.pop_bottom(), None);
        assert_eq!(d.pop_bottom(), None);
        assert_eq!(d.len(), 0);
        // pop on empty many times must not drift `bottom`.
        for _ in 0..10 {
            assert_eq!(d.pop_bottom(), None);
        }
        assert_eq!(d.push_bottom(usize::MAX - 1), Ok(()));
        assert_eq!(d.pop_bottom(), Some(usize::MAX - 1));
        // The owner handle moved to another thread keeps working.
        let d = std::thread::scope(|s| {
            s.spawn(move || {
                d.push_bottom(1).unwrap();
                d
            })
            .join()
            .unwrap()
        });
        assert_eq!(d.pop_bottom(), Some(1));
    });
}

#[test]
fn bitset_boundaries_and_racing_winners() {
    GhostToken::new(|_t| {
        for n in [0usize, 1, 63, 64, 65, 127, 128, 129] {
            let b = GhostAtomicBitset::new(n);
            assert_eq!(b.len_bits(), n);
            assert_eq!(b.count_ones(), 0);
            assert!(catch_unwind(AssertUnwindSafe(|| b.test(n))).is_err());
            assert!(catch_unwind(AssertUnwindSafe(|| b.test_and_set(n))).is_err());
            for i in (0..n).step_by(3) {
                assert!(!b.test_and_set(i));
            }
            let want: Vec<usize> = (0..n).step_by(3).collect();
            assert_eq!(b.iter().collect::<Vec<_>>(), want, "n={n}");
            assert_eq!(b.count_ones(), want.len());
            if n > 0 {
                assert!(b.reset(0));
                assert!(!b.reset(0));
            }
            b.clear();
            assert_eq!(b.count_ones(), 0);
        }
        let n = if SMALL { 200 } else { 100_000 };
        let b = GhostAtomicBitset::new(n);
        let wins = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..4 {
                let (b, wins) = (&b, &wins);
                s.spawn(move || {
                    let mut w = 0;
                    for k in 0..n {
                        let i = if t % 2 == 0 { k } else { n - 1 - k };
                        if !b.test_and_set(i) {
                            w += 1;
                        }
                    }
                    wins.fetch_add(w, Ordering::Relaxed);
                });
            }
        });
        assert_eq!(wins.load(Ordering::Relaxed), n);
        assert_eq!(b.count_ones(), n);
        assert_eq!(b.iter().count(), n);
    });
}

#[test]
fn branded_atomic_counter_is_exact() {
    let (threads, per) = if SMALL { (3, 50) } else { (8, 100_000) };
    GhostToken::new(|_t| {
        let a = GhostAtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                let a = &a;
                s.spawn(move || {
                    for i in 0..per {
                        if i % 2 == 0 {
                            a.fetch_add(1, Ordering::Relaxed);
                        } else {
                            let _ = a
                                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v + 1));
                        }
                    }
                });
            }
        });
        assert_eq!(a.into_inner(), (threads * per) as u64);
    });
}

#[test]
fn multi_borrow_rejects_overlap_between_slice_and_element_and_zsts() {
    GhostToken::new(|mut token| {
        let mut arr = [1u32, 2, 3, 4];
        let whole: &GhostCell<[u32]> = GhostCell::from_mut(&mut arr[..]);
        let elems = whole.as_slice_of_cells();
        let e = (whole, &elems[2]).borrow_mut(&mut token).unwrap_err();
        assert_eq!((e.first(), e.second()), (0, 1));
        let (a, b) = (&elems[0], &elems[3]).borrow_mut(&mut token).unwrap();
        std::mem::swap(a, b);
        assert_eq!(*whole.borrow(&token), [4, 2, 3, 1]);
        let z = GhostCell::new(());
        assert!((&z, &z).borrow_mut(&mut token).is_err());
        // Three-way with the duplicate last pair.
        let e = (&elems[0], &elems[1], &elems[1])
            .borrow_mut(&mut token)
            .unwrap_err();
        assert_eq!((e.first(), e.second()), (1, 2));
    });
}

#[test]
fn lazy_cells_after_panicking_initialisers() {
    GhostToken::new(|mut token| {
        let lazy: GhostLazyCell<u32, _> = GhostLazyCell::new(|| -> u32 { panic!("init failed") });
        assert!(catch_unwind(AssertUnwindSafe(|| *lazy.force(&mut token))).is_err());
        let m =
            panic_message(catch_unwind(AssertUnwindSafe(|| *lazy.force(&mut token))).unwrap_err());
        assert!(m.contains("panicked on an earlier call"), "{m}");
        let once: GhostOnceCell<String> = GhostOnceCell::new();
        assert!(
            catch_unwind(AssertUnwindSafe(|| {
                once.get_or_init(&mut token, || panic!("x"));
            }))
            .is_err()
        );
        assert_eq!(once.get(&token), None);
        assert_eq!(once.get_or_init(&mut token, || "ok".into()), "ok");
        let calls = AtomicUsize::new(0);
        let ll = GhostLazyLock::new(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            42u64
        });
        let t = &token;
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| assert_eq!(*ll.force(t), 42));
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A panicking GhostLazyLock initialiser: later force must not hang.
        let bad: GhostLazyLock<u64, _> = GhostLazyLock::new(|| -> u64 { panic!("lazy lock init") });
        assert!(catch_unwind(AssertUnwindSafe(|| *bad.force(t))).is_err());
        let r = catch_unwind(AssertUnwindSafe(|| *bad.force(t)));
        assert!(
            r.is_err(),
            "second force of a poisoned lazy lock should panic"
        );
    });
}

#[test]
fn shards_partition_exactly_and_panicking_reader_leaves_token_usable() {
    for count in 1..20 {
        for len in [0usize, 1, 2, 7, 19, 20, 100] {
            let mut next = 0;
            for index in 0..count {
                let r = Shard { index, count }.range(len);
                assert_eq!(r.start, next);
                next = r.end;
            }
            assert_eq!(next, len, "count {count} len {len}");
        }
    }
    GhostToken::new(|mut token| {
        let cells: Vec<GhostCell<u64>> = (0..10).map(GhostCell::new).collect();
        let r = catch_unwind(AssertUnwindSafe(|| {
            parallel_read_then_commit_with(
                4,
                &mut token,
                |shard, tok| {
                    if shard.index == 2 || shard.index == 3 {
                        panic!("reader {}", shard.index);
                    }
                    cells[shard.range(10)]
                        .iter()
                        .map(|c| *c.borrow(tok))
                        .sum::<u64>()
                },
                |_v, _tok| panic!("commit must not run"),
            )
        }));
        let m = panic_message(r.unwrap_err());
        assert!(m.starts_with("reader"), "{m}");
        *cells[0].borrow_mut(&mut token) = 100;
        let total = parallel_read_then_commit_with(
            3,
            &mut token,
            |shard, tok| {
                cells[shard.range(10)]
                    .iter()
                    .map(|c| *c.borrow(tok))
                    .sum::<u64>()
            },
            |v, _| v.iter().sum::<u64>(),
        );
        assert_eq!(total, 145);
    });
}
