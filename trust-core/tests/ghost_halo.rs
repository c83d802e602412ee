//! Tests for the branded concurrency of `trust_core::ghost` (halo parity): branded atomics, the atomic
//! bitset, the Treiber stack, the Chase-Lev deque, the static token and `GhostLazyLock`. Exact accounting:
//! every index pushed is taken exactly once, every bit set is seen by exactly one winner.
//! Runs under Miri: `MIRIFLAGS=-Zmiri-strict-provenance cargo +nightly miri test -p trust-core --test ghost_halo`.

use std::mem::{align_of, size_of};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;

use trust_core::ghost::{
    GhostAtomicBitset, GhostAtomicBool, GhostAtomicU32, GhostAtomicU64, GhostAtomicUsize,
    GhostCell, GhostChaseLevDeque, GhostLazyLock, GhostStealer, GhostToken, GhostTreiberStack,
    static_token, with_static_token, with_static_token_mut,
};

/// Sizes of the threaded tests: Miri runs threads thousands of times slower.
const OPS: usize = if cfg!(miri) { 200 } else { 200_000 };
const THREADS: usize = if cfg!(miri) { 3 } else { 4 };

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}

fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("should panic");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

// ---- branded atomics ----------------------------------------------------------------------------------

#[test]
fn branded_atomics_have_the_layout_of_std_atomics() {
    assert_eq!(size_of::<GhostAtomicUsize<'_>>(), size_of::<AtomicUsize>());
    assert_eq!(
        align_of::<GhostAtomicUsize<'_>>(),
        align_of::<AtomicUsize>()
    );
    assert_eq!(size_of::<GhostAtomicU64<'_>>(), size_of::<AtomicU64>());
    assert_eq!(align_of::<GhostAtomicU64<'_>>(), align_of::<AtomicU64>());
    assert_eq!(size_of::<GhostAtomicBool<'_>>(), size_of::<AtomicBool>());
    assert_eq!(size_of::<GhostAtomicU32<'_>>(), 4);
    assert_send::<GhostAtomicUsize<'static>>();
    assert_sync::<GhostAtomicUsize<'static>>();
    assert_sync::<GhostAtomicBool<'static>>();
}

#[test]
fn branded_atomics_follow_the_std_api() {
    GhostToken::new(|_token| {
        let a = GhostAtomicUsize::new(5);
        assert_eq!(a.fetch_add(3, Ordering::Relaxed), 5);
        assert_eq!(a.fetch_sub(1, Ordering::Relaxed), 8);
        assert_eq!(a.swap(10, Ordering::Relaxed), 7);
        assert_eq!(
            a.compare_exchange(10, 11, Ordering::AcqRel, Ordering::Acquire),
            Ok(10)
        );
        assert_eq!(
            a.compare_exchange(10, 12, Ordering::AcqRel, Ordering::Acquire),
            Err(11)
        );
        assert_eq!(a.fetch_max(20, Ordering::Relaxed), 11);
        assert_eq!(a.fetch_min(3, Ordering::Relaxed), 20);
        assert_eq!(a.fetch_or(0b100, Ordering::Relaxed), 3);
        assert_eq!(a.fetch_and(0b110, Ordering::Relaxed), 7);
        assert_eq!(a.fetch_xor(0b010, Ordering::Relaxed), 6);
        assert_eq!(
            a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v * 10)),
            Ok(4)
        );
        assert_eq!(a.load(Ordering::Relaxed), 40);
        assert_eq!(format!("{a:?}"), "40");
        let mut a = a;
        *a.get_mut() += 2;
        assert_eq!(a.into_inner(), 42);

        let b = GhostAtomicBool::new(false);
        assert!(!b.fetch_or(true, Ordering::Relaxed));
        assert!(b.fetch_not(Ordering::Relaxed));
        assert!(!b.load(Ordering::Relaxed));
        let c = GhostAtomicU64::from(u64::MAX);
        assert_eq!(c.fetch_add(1, Ordering::Relaxed), u64::MAX);
        assert_eq!(c.load(Ordering::Relaxed), 0);
    });
}

#[test]
fn branded_counter_counts_every_increment() {
    GhostToken::new(|_token| {
        let counter = GhostAtomicU64::new(0);
        thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for _ in 0..OPS {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(counter.load(Ordering::Relaxed), (THREADS * OPS) as u64);
    });
}

// ---- bitset -------------------------------------------------------------------------------------------

#[test]
fn bitset_sets_tests_clears_and_iterates() {
    GhostToken::new(|_token| {
        let set = GhostAtomicBitset::new(130);
        assert_eq!(set.len_bits(), 130);
        for i in [0, 63, 64, 129] {
            assert!(!set.test(i));
            assert!(!set.test_and_set(i), "first set of {i}");
            assert!(set.test_and_set(i), "second set of {i}");
            assert!(set.test(i));
        }
        assert!(!set.test(1) && !set.test(128));
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 63, 64, 129]);
        assert_eq!((&set).into_iter().count(), 4);
        assert_eq!(set.count_ones(), 4);
        assert!(set.reset(63));
        assert!(!set.reset(63));
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 64, 129]);
        set.clear();
        assert_eq!(set.count_ones(), 0);
        assert_eq!(set.iter().next(), None);
        let mut set = set;
        set.test_and_set(5);
        set.clear_mut();
        assert!(!set.test(5));
        // SAFETY: 129 < 130.
        unsafe {
            assert!(!set.test_and_set_unchecked(129));
            assert!(set.test_unchecked(129));
        }
        assert_eq!(GhostAtomicBitset::new(0).iter().next(), None);
    });
}

#[test]
fn bitset_index_out_of_range_panics_naming_index_and_length() {
    let set = GhostAtomicBitset::<'static>::new(100);
    let message = panic_message(|| {
        set.test_and_set(100);
    });
    assert_eq!(
        message,
        "GhostAtomicBitset: bit index 100 is out of range for a bitset of 100 bits"
    );
    let message = panic_message(|| {
        set.test(1000);
    });
    assert!(
        message.contains("1000") && message.contains("100 bits"),
        "{message}"
    );
}

#[test]
fn bitset_race_has_exactly_one_winner_per_bit() {
    let bits = if cfg!(miri) { 256 } else { 100_000 };
    GhostToken::new(|_token| {
        let set = GhostAtomicBitset::new(bits);
        let wins = GhostAtomicUsize::new(0);
        let barrier = Barrier::new(THREADS);
        let per_thread: Vec<Vec<usize>> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (set, barrier, wins) = (&set, &barrier, &wins);
                    s.spawn(move || {
                        barrier.wait();
                        let mut mine = Vec::new();
                        // Each thread walks all bits from a different start, so threads collide everywhere.
                        for k in 0..bits {
                            let i = (k + t * bits / THREADS) % bits;
                            if !set.test_and_set(i) {
                                mine.push(i);
                                wins.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        mine
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(wins.load(Ordering::Relaxed), bits);
        let mut all: Vec<usize> = per_thread.into_iter().flatten().collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..bits).collect::<Vec<_>>(),
            "every bit won exactly once"
        );
        assert_eq!(set.count_ones(), bits);
        assert_eq!(set.iter().count(), bits);
    });
}

// ---- Treiber stack ------------------------------------------------------------------------------------

#[test]
fn treiber_stack_is_lifo_and_push_batch_keeps_order() {
    let stack = GhostTreiberStack::<'static>::new(10);
    assert!(stack.is_empty());
    assert_eq!(stack.capacity(), 10);
    assert_eq!(stack.pop(), None);
    stack.push(1);
    stack.push(2);
    stack.push_batch(&[7, 8, 9]);
    stack.push_batch(&[]);
    let popped: Vec<_> = std::iter::from_fn(|| stack.pop()).collect();
    assert_eq!(popped, [7, 8, 9, 2, 1]);
    assert!(stack.is_empty());
    // Indices come back and can be pushed again.
    stack.push(9);
    assert_eq!(stack.pop(), Some(9));
}

#[test]
fn treiber_stack_index_out_of_range_panics() {
    let stack = GhostTreiberStack::<'static>::new(4);
    let message = panic_message(|| stack.push(4));
    assert_eq!(
        message,
        "GhostTreiberStack: index 4 is out of range for a stack of capacity 4"
    );
    // A bad index in a batch panics before anything is pushed.
    let message = panic_message(|| stack.push_batch(&[0, 1, 9]));
    assert!(message.contains("index 9"), "{message}");
    assert_eq!(stack.pop(), None);
}

/// Every thread owns a share of the indices, and pops and pushes them back (single and in batches) many
/// times; at the end every index is in the stack exactly once, and no index was ever held twice at once.
#[test]
fn treiber_stack_stress_every_index_exactly_once() {
    let capacity = THREADS * 8;
    let stack = GhostTreiberStack::<'static>::new(capacity);
    let held: Vec<AtomicBool> = (0..capacity).map(|_| AtomicBool::new(false)).collect();
    for i in 0..capacity {
        stack.push(i);
    }
    let rounds = OPS / 10;
    thread::scope(|s| {
        for t in 0..THREADS {
            let (stack, held) = (&stack, &held);
            s.spawn(move || {
                let mut mine = Vec::new();
                for round in 0..rounds {
                    // Take up to three, then give them back, alone or as a batch.
                    for _ in 0..3 {
                        if let Some(i) = stack.pop() {
                            assert!(
                                !held[i].swap(true, Ordering::Relaxed),
                                "index {i} held twice"
                            );
                            mine.push(i);
                        }
                    }
                    for &i in &mine {
                        held[i].store(false, Ordering::Relaxed);
                    }
                    if (round + t) % 2 == 0 {
                        stack.push_batch(&mine);
                    } else {
                        for &i in &mine {
                            stack.push(i);
                        }
                    }
                    mine.clear();
                }
            });
        }
    });
    let mut left: Vec<_> = std::iter::from_fn(|| stack.pop()).collect();
    left.sort_unstable();
    assert_eq!(left, (0..capacity).collect::<Vec<_>>());
}

// ---- Chase-Lev deque ----------------------------------------------------------------------------------

#[test]
fn deque_owner_is_lifo_stealers_fifo() {
    let owner = GhostChaseLevDeque::<'static>::new(4);
    let stealer = owner.stealer();
    assert_eq!(owner.capacity(), 4);
    assert!(owner.is_empty() && stealer.is_empty());
    assert_eq!(owner.pop_bottom(), None);
    assert_eq!(stealer.steal(), None);
    for i in 0..4 {
        owner.push_bottom(i).unwrap();
    }
    assert_eq!(owner.push_bottom(4), Err(4), "full");
    assert_eq!(owner.len(), 4);
    assert_eq!(stealer.steal(), Some(0));
    assert_eq!(stealer.clone().steal(), Some(1));
    assert_eq!(owner.pop_bottom(), Some(3));
    // The ring wraps: slots of stolen values are reused.
    owner.push_bottom(10).unwrap();
    owner.push_bottom(11).unwrap();
    owner.push_bottom(12).unwrap();
    assert_eq!(owner.push_bottom(13), Err(13));
    assert_eq!(stealer.steal(), Some(2));
    let rest: Vec<_> = std::iter::from_fn(|| owner.pop_bottom()).collect();
    assert_eq!(rest, [12, 11, 10]);
    assert_eq!(stealer.steal(), None);
}

#[test]
fn deque_rejects_none_and_bad_capacities() {
    let owner = GhostChaseLevDeque::<'static>::new(2);
    let message = panic_message(|| {
        let _ = owner.push_bottom(GhostChaseLevDeque::NONE);
    });
    assert!(
        message.contains("NONE") && message.contains("cannot be pushed"),
        "{message}"
    );
    assert!(owner.is_empty());
    let message = panic_message(|| {
        GhostChaseLevDeque::<'static>::new(3);
    });
    assert!(
        message.contains("capacity 3 must be a power of two"),
        "{message}"
    );
}

#[test]
fn deque_handles_are_send_and_the_owner_is_not_sync() {
    assert_send::<GhostChaseLevDeque<'static>>();
    assert_send::<GhostStealer<'static>>();
    assert_sync::<GhostStealer<'static>>();
    // Not `Sync`, not `Clone`: `ui-tests/tests/ui/ghost/deque-owner-is-not-sync.rs` and
    // `push-bottom-through-a-stealer.rs`.
}

/// The owner pushes `OPS` values, popping some of them itself, while the other threads steal; every value
/// is taken exactly once (counted per value), and the sum of everything taken is the sum pushed.
#[test]
fn deque_stress_every_value_taken_exactly_once() {
    let values = OPS;
    let taken: Vec<AtomicBool> = (0..values).map(|_| AtomicBool::new(false)).collect();
    let owner = GhostChaseLevDeque::<'static>::new(64);
    let stealer = owner.stealer();
    let done = AtomicBool::new(false);
    let count = AtomicUsize::new(0);
    let take = |v: usize| {
        assert!(
            !taken[v].swap(true, Ordering::Relaxed),
            "value {v} taken twice"
        );
        count.fetch_add(1, Ordering::Relaxed);
    };
    thread::scope(|s| {
        for _ in 1..THREADS {
            let (stealer, done, take) = (stealer.clone(), &done, &take);
            s.spawn(move || {
                loop {
                    match stealer.steal() {
                        Some(v) => take(v),
                        None if done.load(Ordering::Acquire) => {
                            if stealer.is_empty() {
                                break;
                            }
                        }
                        None => thread::yield_now(),
                    }
                }
            });
        }
        for v in 0..values {
            let mut v = v;
            while let Err(back) = owner.push_bottom(v) {
                v = back;
                if let Some(mine) = owner.pop_bottom() {
                    take(mine);
                }
            }
            if v % 3 == 0
                && let Some(mine) = owner.pop_bottom()
            {
                take(mine);
            }
        }
        while let Some(mine) = owner.pop_bottom() {
            take(mine);
        }
        done.store(true, Ordering::Release);
    });
    assert_eq!(count.load(Ordering::Relaxed), values);
    assert!(taken.iter().all(|t| t.load(Ordering::Relaxed)));
}

// ---- static token -------------------------------------------------------------------------------------

static SETTING: GhostCell<'static, u32> = GhostCell::new(1);
/// Serializes the tests that write `SETTING` (the test harness runs tests on several threads).
static SETTING_TESTS: Mutex<()> = Mutex::new(());

#[test]
fn static_token_reads_from_many_threads() {
    let _one_at_a_time = SETTING_TESTS.lock().unwrap();
    thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                let a = *SETTING.borrow(static_token());
                let b = with_static_token(|token| *SETTING.borrow(token));
                assert_eq!(a, b);
            });
        }
    });
}

#[test]
fn static_token_mut_writes_during_bootstrap() {
    let _one_at_a_time = SETTING_TESTS.lock().unwrap();
    // SAFETY: `SETTING_TESTS` keeps every other reader of `SETTING` out while we write it.
    unsafe { with_static_token_mut(|token| *SETTING.borrow_mut(token) += 41) };
    assert_eq!(*SETTING.borrow(static_token()), 42);
    // SAFETY: as above.
    unsafe { with_static_token_mut(|token| *SETTING.borrow_mut(token) = 1) };
}

// ---- GhostLazyLock ------------------------------------------------------------------------------------

#[test]
fn lazy_lock_initialises_exactly_once_across_threads() {
    let runs = AtomicUsize::new(0);
    GhostToken::new(|token| {
        let lazy = GhostLazyLock::new(|| {
            runs.fetch_add(1, Ordering::Relaxed);
            vec![1u64, 2, 3]
        });
        assert_eq!(lazy.get(&token), None);
        let token = &token;
        let barrier = Barrier::new(THREADS);
        thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    barrier.wait();
                    assert_eq!(lazy.force(token).iter().sum::<u64>(), 6);
                });
            }
        });
        assert_eq!(lazy.get(token).map(Vec::len), Some(3));
        assert_eq!(lazy.into_inner().ok(), Some(vec![1, 2, 3]));
    });
    assert_eq!(runs.load(Ordering::Relaxed), 1);
}

#[test]
fn lazy_lock_poisoned_by_a_panicking_initialiser() {
    GhostToken::new(|token| {
        let lazy: GhostLazyLock<'_, u32, _> = GhostLazyLock::new(|| panic!("boom"));
        assert_eq!(
            panic_message(|| {
                lazy.force(&token);
            }),
            "boom"
        );
        let message = panic_message(|| {
            lazy.force(&token);
        });
        assert!(message.contains("panicked on an earlier call"), "{message}");
        let mut fresh = GhostLazyLock::<'_, u32>::new(|| 7);
        *fresh.force_mut() += 1;
        assert_eq!(fresh.get(&token), Some(&8));
        let untouched = GhostLazyLock::<'_, u32>::new(|| 7);
        assert!(matches!(untouched.into_inner(), Err(Some(_))));
    });
}
