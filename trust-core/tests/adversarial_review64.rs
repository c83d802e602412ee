//! Review 64 (ghost): a hostile soundness pass over `trust_core::ghost`, looking for safe programs that
//! duplicate a brand's token, break the overlap check of the multi-borrow, race on a cell, or lose or
//! duplicate a worklist element.
//!
//! The compile-time half (39 programs that must not compile: two brands swapped, the token returned in a
//! closure, an async block, an async closure, an `impl Trait`, a `Box<dyn Any>`, an iterator or a GAT
//! projection, a `'static` coercion, brand covariance of the cell and of the token, `thread::scope`
//! smuggling, the deque owner shared, non-`Sync` once/lazy/lock contents shared, a read phase returning a
//! borrow, `Default`/`Copy` on the token, recursion re-using the brand, an `FnMut` slot or a `static`
//! keeping the token, two `from_mut` views, a lending iterator of `&mut token`, an HRTB trait object,
//! brands unified through `dyn Holder<'_>`, a once cell's reference across `replace` of its outer cell, a
//! commit leaking `&mut token`, `force` across `into_inner`, a fn pointer or an early-bound fn item choosing
//! the brand, ...) was run in a scratch crate; every one was rejected. This file pins the run-time half.
//!
//! Findings: none (no program broke a promise; see the report of review 64).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use trust_core::ghost::{
    GhostAliasingError, GhostAtomicBitset, GhostBorrow, GhostBorrowMut, GhostCell,
    GhostChaseLevDeque, GhostLazyCell, GhostOnceCell, GhostToken, GhostTreiberStack, Shard,
    parallel_read_then_commit_with,
};

const ROUNDS: usize = if cfg!(miri) { 20 } else { 5_000 };
const THREADS: usize = if cfg!(miri) { 3 } else { 4 };

fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("should panic");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn positions(e: GhostAliasingError) -> (usize, usize) {
    (e.first(), e.second())
}

struct Counted<'a>(&'a AtomicUsize, u64);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

// ---- the overlap check --------------------------------------------------------------------------------

/// Two *distinct* zero-sized cells that share an address (neighbours in an array of ZST cells) are refused
/// by the multi-borrow (conservative: a ZST counts as one byte), while `swap` takes its `ptr::eq` shortcut
/// and returns `Ok` (nothing to swap). A zero-sized cell one past the end of a byte cell does not overlap it.
#[test]
fn zero_sized_cells_sharing_an_address() {
    GhostToken::new(|mut token| {
        let units: [GhostCell<'_, ()>; 2] = [GhostCell::new(()), GhostCell::new(())];
        assert!(core::ptr::eq(&units[0], &units[1]));
        let err = (&units[0], &units[1]).borrow_mut(&mut token).unwrap_err();
        assert_eq!(positions(err), (0, 1));
        assert_eq!(units[0].swap(&units[1], &mut token), Ok(()));
        // The whole array of ZST cells is infallible and hands out one `&mut ()` per element.
        let all: &mut [(); 2] = (&units).borrow_mut(&mut token).unwrap();
        assert_eq!(all.len(), 2);

        #[repr(C)]
        struct Pair<'b> {
            byte: GhostCell<'b, u8>,
            unit: GhostCell<'b, ()>,
        }
        let pair = Pair {
            byte: GhostCell::new(7),
            unit: GhostCell::new(()),
        };
        let (b, ()) = (&pair.byte, &pair.unit).borrow_mut(&mut token).unwrap();
        *b += 1;
        assert_eq!(*pair.byte.borrow(&token), 8);
    });
}

/// With three or more arguments the check sorts by address; a view covering several cells, passed last,
/// is caught against the lowest cell it covers, and the error names the two argument positions.
#[test]
fn a_wide_view_passed_last_is_caught_by_the_sorted_check() {
    GhostToken::new(|mut token| {
        let whole = GhostCell::new([1u8, 2, 3, 4]);
        let cells = whole.as_array_of_cells();
        let view: &GhostCell<'_, [u8]> = GhostCell::from_slice_of_cells(&cells[..]);
        let err = (&cells[3], &cells[1], view)
            .borrow_mut(&mut token)
            .unwrap_err();
        assert_eq!(positions(err), (1, 2));
        // Slices of references report the same pair, lower position first, whatever the order.
        let spare = GhostCell::new([9u8; 4]);
        let spare: &GhostCell<'_, [u8]> = &spare;
        let refs: [&GhostCell<'_, [u8]>; 4] = [
            spare,
            GhostCell::from_slice_of_cells(&cells[2..4]),
            GhostCell::from_slice_of_cells(&cells[0..2]),
            GhostCell::from_slice_of_cells(&cells[1..3]),
        ];
        assert_eq!(positions(refs.borrow_mut(&mut token).unwrap_err()), (2, 3));
        assert_eq!(
            positions((&refs[..]).borrow_mut(&mut token).unwrap_err()),
            (2, 3)
        );
        // Without the overlapping one, every view is handed out and writes land in place.
        let [a, b, c] = [refs[0], refs[1], refs[2]].borrow_mut(&mut token).unwrap();
        a[0] = 0;
        b[1] = 40;
        c[0] = 10;
        assert_eq!(*whole.borrow(&token), [10, 2, 3, 40]);
        // A twelve-tuple: the duplicate at positions 3 and 11.
        let xs: Vec<GhostCell<'_, u32>> = (0..11).map(GhostCell::new).collect();
        let err = (
            &xs[0], &xs[1], &xs[2], &xs[3], &xs[4], &xs[5], &xs[6], &xs[7], &xs[8], &xs[9],
            &xs[10], &xs[3],
        )
            .borrow_mut(&mut token)
            .unwrap_err();
        assert_eq!(positions(err), (3, 11));
    });
}

/// Unsized cells made by unsizing a `Box`: a `GhostCell<[T]>` and a `GhostCell<dyn Trait>`.
#[test]
fn boxed_unsized_cells() {
    trait Bump {
        fn bump(&mut self) -> u32;
    }
    impl Bump for u32 {
        fn bump(&mut self) -> u32 {
            *self += 1;
            *self
        }
    }
    GhostToken::new(|mut token| {
        let slice: Box<GhostCell<'_, [u32]>> = Box::new(GhostCell::new([1u32, 2, 3]));
        let dynamic: Box<GhostCell<'_, dyn Bump>> = Box::new(GhostCell::new(10u32));
        let (s, d) = (&*slice, &*dynamic).borrow_mut(&mut token).unwrap();
        s[2] = d.bump();
        assert_eq!(slice.borrow(&token), &[1, 2, 11]);
        let Err(err) = (&*dynamic, &*dynamic).borrow_mut(&mut token) else {
            panic!("one dyn cell twice was accepted")
        };
        assert_eq!(positions(err), (0, 1));
        let cells = slice.as_slice_of_cells();
        let all: &mut [u32] = cells.borrow_mut(&mut token).unwrap();
        all.reverse();
        assert_eq!(cells.borrow(&token), &[11, 2, 1]);
        assert_eq!(dynamic.borrow_mut(&mut token).bump(), 12);
    });
}

// ---- once and lazy cells -------------------------------------------------------------------------------

#[test]
fn once_cell_try_insert_and_a_failing_initialiser() {
    GhostToken::new(|mut token| {
        let once: GhostOnceCell<'_, String> = GhostOnceCell::new();
        assert_eq!(
            once.get_or_try_init(&mut token, || Err::<String, u8>(3)),
            Err(3)
        );
        assert_eq!(once.get(&token), None);
        let first = once.try_insert("a".to_string(), &mut token).unwrap();
        assert_eq!(first, "a");
        let (current, back) = once.try_insert("b".to_string(), &mut token).unwrap_err();
        assert_eq!((current.as_str(), back.as_str()), ("a", "b"));
        // The first reference outlived both token borrows and still reads the one value.
        assert_eq!(first, "a");
    });
}

#[test]
fn lazy_cell_runs_its_initialiser_once_and_poisons_on_panic() {
    let runs = AtomicUsize::new(0);
    GhostToken::new(|mut token| {
        let lazy = GhostLazyCell::new(|| {
            runs.fetch_add(1, Ordering::Relaxed);
            vec![1u8, 2]
        });
        let first: &Vec<u8> = lazy.force(&mut token);
        assert_eq!(lazy.force(&mut token), &[1, 2]);
        assert_eq!(first, &[1, 2]);

        let poisoned: GhostLazyCell<'_, u8, _> = GhostLazyCell::new(|| panic!("init boom"));
        assert_eq!(
            panic_message(|| {
                let _ = poisoned.force(&mut token);
            }),
            "init boom"
        );
        assert_eq!(poisoned.get(&token), None);
        assert!(
            panic_message(|| {
                let _ = poisoned.force(&mut token);
            })
            .starts_with("GhostLazyCell::force: the initialiser panicked on an earlier call")
        );
    });
    assert_eq!(runs.load(Ordering::Relaxed), 1);
}

// ---- parallel read, then commit ------------------------------------------------------------------------

/// Shard 0 runs on the calling thread; when it panics, its own payload comes out, the commit does not run,
/// every other shard's result is dropped exactly once, and the token is usable again afterwards.
#[test]
fn a_panic_in_shard_zero_keeps_its_payload_and_drops_the_other_results() {
    let drops = AtomicUsize::new(0);
    let commits = AtomicUsize::new(0);
    GhostToken::new(|mut token| {
        let cell = GhostCell::new(5u64);
        let message = panic_message(|| {
            parallel_read_then_commit_with(
                THREADS,
                &mut token,
                |shard, token| {
                    if shard.index == 0 {
                        panic!("shard zero failed");
                    }
                    Counted(&drops, *cell.borrow(token) + shard.index as u64)
                },
                |results, _| {
                    commits.fetch_add(1, Ordering::Relaxed);
                    results.iter().map(|c| c.1).sum::<u64>()
                },
            );
        });
        assert_eq!(message, "shard zero failed");
        *cell.borrow_mut(&mut token) += 1;
        assert_eq!(*cell.borrow(&token), 6);
        // And a normal run after it, in shard order.
        let got = parallel_read_then_commit_with(
            THREADS,
            &mut token,
            |shard, token| *cell.borrow(token) * 10 + shard.index as u64,
            |results, token| {
                *cell.borrow_mut(token) = results.iter().sum();
                results
            },
        );
        assert_eq!(got, (0..THREADS as u64).map(|i| 60 + i).collect::<Vec<_>>());
    });
    assert_eq!(drops.load(Ordering::Relaxed), THREADS - 1);
    assert_eq!(commits.load(Ordering::Relaxed), 0);
}

/// `Shard::range` partitions `0..len` exactly, in order, for every small length and shard count.
#[test]
fn shard_ranges_partition_every_small_length() {
    for count in 1..=9 {
        for len in 0..=60 {
            let mut next = 0;
            for index in 0..count {
                let r = Shard { index, count }.range(len);
                assert_eq!(r.start, next, "len {len} count {count} index {index}");
                assert!(r.len() == len / count || r.len() == len / count + 1);
                next = r.end;
            }
            assert_eq!(next, len);
        }
    }
}

// ---- worklists -----------------------------------------------------------------------------------------

/// The owner of a capacity-2 ring pushes distinct sequence numbers (never indices, never reused), pops some
/// itself, and two thieves steal the rest while the ring wraps thousands of times: every value is taken
/// exactly once.
#[test]
fn deque_ring_wraps_under_two_thieves_every_value_once() {
    let total = ROUNDS * 4;
    let taken: Vec<AtomicUsize> = (0..total).map(|_| AtomicUsize::new(0)).collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    GhostToken::new(|_token| {
        let owner = GhostChaseLevDeque::new(2);
        thread::scope(|s| {
            for _ in 0..2 {
                let thief = owner.stealer();
                let (taken, done) = (&taken, &done);
                s.spawn(move || {
                    loop {
                        let finished = done.load(Ordering::Acquire);
                        match thief.steal() {
                            Some(v) => {
                                taken[v].fetch_add(1, Ordering::Relaxed);
                            }
                            None if finished => break,
                            None => thread::yield_now(),
                        }
                    }
                });
            }
            for v in 0..total {
                let mut value = v;
                while let Err(back) = owner.push_bottom(value) {
                    value = back;
                    if let Some(mine) = owner.pop_bottom() {
                        taken[mine].fetch_add(1, Ordering::Relaxed);
                    }
                }
                if v % 3 == 0
                    && let Some(mine) = owner.pop_bottom()
                {
                    taken[mine].fetch_add(1, Ordering::Relaxed);
                }
            }
            while let Some(mine) = owner.pop_bottom() {
                taken[mine].fetch_add(1, Ordering::Relaxed);
            }
            done.store(true, Ordering::Release);
        });
        assert!(owner.is_empty());
    });
    let counts: Vec<usize> = taken.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert_eq!(counts, vec![1; total]);
}

/// Four threads share a Treiber stack of 64 indices: each pops up to three, then gives them back, by
/// `push_batch` on even rounds and one by one on odd ones. At the end every index is in the stack once.
#[test]
fn treiber_pop_and_push_batch_under_contention_keeps_every_index_once() {
    const CAP: usize = 64;
    GhostToken::new(|_token| {
        let stack = GhostTreiberStack::new(CAP);
        stack.push_batch(&(0..CAP).collect::<Vec<_>>());
        thread::scope(|s| {
            for _ in 0..THREADS {
                let stack = &stack;
                s.spawn(move || {
                    let mut mine = Vec::with_capacity(3);
                    for round in 0..ROUNDS {
                        mine.extend(std::iter::from_fn(|| stack.pop()).take(3));
                        if round % 2 == 0 {
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
        let mut seen = [0u32; CAP];
        while let Some(i) = stack.pop() {
            seen[i] += 1;
        }
        assert_eq!(seen, [1; CAP]);
        assert!(stack.is_empty());
    });
}

/// The bitset's iterator at word boundaries: lengths 0, 1, 63, 64, 65, 128, 129, with the first and last
/// bit set; `reset` and `count_ones` exact.
#[test]
fn bitset_iter_at_word_boundaries() {
    GhostToken::new(|_token| {
        let empty = GhostAtomicBitset::new(0);
        assert_eq!(empty.iter().count(), 0);
        assert_eq!(empty.count_ones(), 0);
        for len in [1usize, 63, 64, 65, 128, 129] {
            let set = GhostAtomicBitset::new(len);
            assert!(!set.test_and_set(len - 1));
            assert!(!set.test_and_set(0) || len == 1);
            let expected: Vec<usize> = if len == 1 { vec![0] } else { vec![0, len - 1] };
            assert_eq!(set.iter().collect::<Vec<_>>(), expected, "len {len}");
            assert_eq!(set.count_ones(), expected.len());
            assert!(set.reset(len - 1));
            assert!(!set.reset(len - 1));
            assert_eq!(set.count_ones(), expected.len() - 1);
            assert_eq!(
                panic_message(|| {
                    let _ = set.test(len);
                }),
                format!(
                    "GhostAtomicBitset: bit index {len} is out of range for a bitset of {len} bits"
                )
            );
        }
    });
}

/// Review 64's minor finding: a hand-made `Shard` outside its phase's count is refused by name (before: `3..3`
/// of 3 gave `10..13` of a length 10, and a count of 0 divided by zero).
#[test]
fn a_shard_outside_its_count_is_refused_by_name() {
    use trust_core::ghost::Shard;
    let past = std::panic::catch_unwind(|| Shard { index: 3, count: 3 }.range(10)).unwrap_err();
    assert_eq!(
        past.downcast_ref::<String>().map(String::as_str),
        Some("`Shard { index: 3, count: 3 }` is not a shard: `index` must be below `count`")
    );
    let none = std::panic::catch_unwind(|| Shard { index: 0, count: 0 }.range(10)).unwrap_err();
    assert_eq!(
        none.downcast_ref::<String>().map(String::as_str),
        Some("`Shard { index: 0, count: 0 }` is not a shard: `index` must be below `count`")
    );
}
