//! Tests for `trust_core::ghost`: exact values, drops counted, aliasing refused, threads (parallel reads,
//! baton passing). Touches only the ghost module, so it runs under Miri:
//! `MIRIFLAGS=-Zmiri-strict-provenance cargo +nightly miri test -p trust-core --test ghost`.

use std::cell::Cell;
use std::mem::{align_of, size_of};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use trust_core::ghost::{
    GhostAliasingError, GhostBorrow, GhostBorrowMut, GhostCell, GhostLazyCell, GhostOnceCell,
    GhostToken, Shard, parallel_read_then_commit, parallel_read_then_commit_with,
};

/// Sizes of the threaded tests: Miri runs threads thousands of times slower.
const ROUNDS: usize = if cfg!(miri) { 4 } else { 1000 };
const THREADS: usize = if cfg!(miri) { 2 } else { 4 };

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}

/// Counts drops through a shared counter, so each test checks "dropped exactly once".
struct DropCounter<'c>(&'c Cell<usize>, u32);

impl Drop for DropCounter<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

// ---- token and layout ---------------------------------------------------------------------------------

#[test]
fn token_is_zero_sized_and_cell_is_exactly_its_value() {
    GhostToken::new(|token| {
        assert_eq!(size_of::<GhostToken<'_>>(), 0);
        assert_eq!(size_of_val(&token), 0);
    });
    assert_eq!(size_of::<GhostCell<'_, u64>>(), size_of::<u64>());
    assert_eq!(align_of::<GhostCell<'_, u64>>(), align_of::<u64>());
    assert_eq!(size_of::<GhostCell<'_, [u8; 3]>>(), 3);
    assert_eq!(size_of::<&GhostCell<'_, [u8]>>(), size_of::<&[u8]>());
}

#[test]
fn send_and_sync_follow_the_paper() {
    assert_send::<GhostToken<'static>>();
    assert_sync::<GhostToken<'static>>();
    assert_send::<GhostCell<'static, Vec<u8>>>();
    assert_sync::<GhostCell<'static, Vec<u8>>>();
    // `Cell<u8>` is Send but not Sync: the cell is Send (the negative cases are UI tests).
    assert_send::<GhostCell<'static, Cell<u8>>>();
    assert_send::<GhostOnceCell<'static, String>>();
    assert_sync::<GhostOnceCell<'static, String>>();
    assert_sync::<GhostLazyCell<'static, String>>();
}

#[test]
fn new_returns_the_closure_result() {
    assert_eq!(GhostToken::new(|_| 42), 42);
    let s = GhostToken::new(|token| format!("{token:?}"));
    assert_eq!(s, "GhostToken");
}

// ---- GhostCell ---------------------------------------------------------------------------------------

#[test]
fn borrow_and_borrow_mut_through_many_aliases() {
    let out = GhostToken::new(|mut token| {
        let cell = GhostCell::new(0u64);
        let aliases: Vec<&GhostCell<'_, u64>> = (0..10).map(|_| &cell).collect();
        for (i, alias) in aliases.iter().enumerate() {
            *alias.borrow_mut(&mut token) += i as u64;
        }
        // Many shared borrows coexist.
        let reads: Vec<&u64> = aliases.iter().map(|a| a.borrow(&token)).collect();
        assert!(reads.iter().all(|r| **r == 45));
        *cell.borrow(&token)
    });
    assert_eq!(out, 45);
}

#[test]
fn cells_of_one_brand_share_one_token() {
    GhostToken::new(|mut token| {
        let a = GhostCell::new(String::from("a"));
        let b = GhostCell::new(vec![1, 2]);
        let c = GhostCell::new(3.5f64);
        a.borrow_mut(&mut token).push('!');
        b.borrow_mut(&mut token).push(3);
        *c.borrow_mut(&mut token) *= 2.0;
        assert_eq!(
            (
                a.borrow(&token).as_str(),
                b.borrow(&token).as_slice(),
                *c.borrow(&token)
            ),
            ("a!", &[1, 2, 3][..], 7.0)
        );
    });
}

#[test]
fn two_tokens_are_independent() {
    GhostToken::new(|mut outer| {
        let x = GhostCell::new(1);
        GhostToken::new(|mut inner| {
            let y = GhostCell::new(10);
            // A `&mut` from each brand at the same time: different brands, different cells.
            let (rx, ry) = (x.borrow_mut(&mut outer), y.borrow_mut(&mut inner));
            std::mem::swap(rx, ry);
            assert_eq!(*y.borrow(&inner), 1);
        });
        assert_eq!(*x.borrow(&outer), 10);
    });
}

#[test]
fn owned_access_needs_no_token() {
    let mut value = 5;
    GhostToken::new(|mut token| {
        let mut cell = GhostCell::new(1);
        *cell.get_mut() += 1;
        *cell.as_mut() += 1;
        assert_eq!(*cell.borrow(&token), 3);
        assert_eq!(cell.into_inner(), 3);

        let view = GhostCell::from_mut(&mut value);
        *view.borrow_mut(&mut token) *= 10;
        assert_eq!(*view.get_mut(), 50);
    });
    assert_eq!(value, 50);
}

#[test]
fn replace_take_swap() {
    let drops = Cell::new(0);
    GhostToken::new(|mut token| {
        let a = GhostCell::new(DropCounter(&drops, 1));
        let old = a.replace(DropCounter(&drops, 2), &mut token);
        assert_eq!((old.1, a.borrow(&token).1, drops.get()), (1, 2, 0));
        drop(old);
        assert_eq!(drops.get(), 1);

        let v = GhostCell::new(vec![7, 8]);
        assert_eq!(v.take(&mut token), [7, 8]);
        assert!(v.borrow(&token).is_empty());

        let (x, y) = (GhostCell::new(1), GhostCell::new(2));
        x.swap(&y, &mut token).unwrap();
        assert_eq!((*x.borrow(&token), *y.borrow(&token)), (2, 1));
        // Swapping a cell with itself is a no-op, not an error.
        x.swap(&x, &mut token).unwrap();
        assert_eq!(*x.borrow(&token), 2);
    });
    assert_eq!(drops.get(), 2);
}

#[test]
fn cell_drops_its_value_exactly_once() {
    let drops = Cell::new(0);
    GhostToken::new(|_token| {
        let cells: Vec<_> = (0..5)
            .map(|i| GhostCell::new(DropCounter(&drops, i)))
            .collect();
        let kept = GhostCell::new(DropCounter(&drops, 99)).into_inner();
        drop(cells);
        assert_eq!(drops.get(), 5);
        drop(kept);
    });
    assert_eq!(drops.get(), 6);
}

#[test]
fn default_from_as_ptr() {
    GhostToken::new(|mut token| {
        let d: GhostCell<'_, Vec<u8>> = GhostCell::default();
        assert!(d.borrow(&token).is_empty());
        let f = GhostCell::from(9u8);
        assert_eq!(*f.borrow(&token), 9);
        let p = f.as_ptr();
        // SAFETY: no reference into `f` is alive; the pointer comes from the cell's `UnsafeCell`.
        unsafe { *p = 10 };
        assert_eq!(*f.borrow(&token), 10);
        *f.borrow_mut(&mut token) += 1;
        // SAFETY: as above; the `&mut` from `borrow_mut` ended on the line before.
        assert_eq!(unsafe { *p }, 11);
    });
}

#[test]
fn debug_never_reads_the_value() {
    GhostToken::new(|mut token| {
        let cell = GhostCell::new(5);
        let r = cell.borrow_mut(&mut token);
        // A `&mut` is alive: formatting must not read (Miri would flag the frankencell bug here).
        assert_eq!(format!("{cell:?}"), "GhostCell { .. }");
        *r = 6;
        assert_eq!(format!("{:?}", cell.borrow(&token)), "6");
        let once: GhostOnceCell<'_, u8> = GhostOnceCell::new();
        assert_eq!(format!("{once:?}"), "GhostOnceCell { .. }");
        let lazy = GhostLazyCell::new(|| 1);
        assert_eq!(format!("{lazy:?}"), "GhostLazyCell { .. }");
    });
}

// ---- slices and arrays of cells --------------------------------------------------------------------------

#[test]
fn slice_of_cells_round_trip() {
    let mut values = vec![1, 2, 3, 4, 5];
    GhostToken::new(|mut token| {
        let whole = GhostCell::from_mut(&mut values[..]);
        let cells = whole.as_slice_of_cells();
        assert_eq!(cells.len(), 5);
        // Mutate element 1 through its own cell while other elements are read in between.
        let sum_others: i32 = cells
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, c)| *c.borrow(&token))
            .sum();
        *cells[1].borrow_mut(&mut token) = sum_others;
        let middle = GhostCell::from_slice_of_cells(&cells[1..4]);
        middle.borrow_mut(&mut token).reverse();
        assert_eq!(whole.borrow(&token), &[1, 4, 3, 13, 5]);
    });
    assert_eq!(values, [1, 4, 3, 13, 5]);
}

#[test]
fn array_of_cells_round_trip_and_unsizing() {
    GhostToken::new(|mut token| {
        let cell = GhostCell::new([10, 20, 30]);
        let cells = cell.as_array_of_cells();
        *cells[2].borrow_mut(&mut token) += 3;
        let back = GhostCell::from_array_of_cells(cells);
        assert_eq!(back.borrow(&token), &[10, 20, 33]);
        // `GhostCell<[T; N]>` unsizes to `GhostCell<[T]>`.
        let unsized_cell: &GhostCell<'_, [i32]> = &cell;
        assert_eq!(unsized_cell.as_slice_of_cells().len(), 3);
        unsized_cell.borrow_mut(&mut token)[0] = 0;
        assert_eq!(cell.into_inner(), [0, 20, 33]);
    });
}

// ---- several cells at once -------------------------------------------------------------------------------

#[test]
fn tuple_borrow_mut_of_distinct_cells() {
    GhostToken::new(|mut token| {
        let (a, b, c) = (
            GhostCell::new(1),
            GhostCell::new(String::from("b")),
            GhostCell::new(vec![3]),
        );
        let (ra, rb, rc) = (&a, &b, &c).borrow_mut(&mut token).unwrap();
        *ra += 1;
        rb.push('!');
        rc.push(*ra);
        let (ra, rb, rc) = (&a, &b, &c).borrow(&token);
        assert_eq!((*ra, rb.as_str(), rc.as_slice()), (2, "b!", &[3, 2][..]));
    });
}

#[test]
fn tuple_of_twelve() {
    GhostToken::new(|mut token| {
        let cells: [GhostCell<'_, u32>; 12] = std::array::from_fn(|i| GhostCell::new(i as u32));
        let [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11] = &cells;
        let all = (c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11);
        let (r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11) =
            all.borrow_mut(&mut token).unwrap();
        for r in [r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11] {
            *r *= 2;
        }
        let sum: u32 = cells.iter().map(|c| *c.borrow(&token)).sum();
        assert_eq!(sum, 2 * 66);
        let err = (c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c3)
            .borrow_mut(&mut token)
            .unwrap_err();
        assert_eq!((err.first(), err.second()), (3, 11));
    });
}

#[test]
fn aliasing_is_an_error_naming_both_positions() {
    GhostToken::new(|mut token| {
        let (a, b) = (GhostCell::new(1), GhostCell::new(2));
        assert_eq!(
            (&a, &a).borrow_mut(&mut token).unwrap_err(),
            (&b, &b).borrow_mut(&mut token).unwrap_err()
        );
        let err = (&a, &b, &a).borrow_mut(&mut token).unwrap_err();
        assert_eq!((err.first(), err.second()), (0, 2));
        assert_eq!(
            err.to_string(),
            "GhostCell arguments #0 and #2 of borrow_mut are the same cell (or overlap in memory), so they \
             cannot both be borrowed mutably; pass distinct cells, or borrow them one after the other"
        );
        let dynamic: Box<dyn std::error::Error> = Box::new(err);
        assert!(
            dynamic
                .to_string()
                .starts_with("GhostCell arguments #0 and #2")
        );
        // Nothing was changed by the failed calls.
        assert_eq!((*a.borrow(&token), *b.borrow(&token)), (1, 2));
    });
}

#[test]
fn overlap_is_checked_by_byte_range_not_just_address() {
    GhostToken::new(|mut token| {
        let whole = GhostCell::new([1u32, 2, 3, 4]);
        let unsized_whole: &GhostCell<'_, [u32]> = &whole;
        let cells = unsized_whole.as_slice_of_cells();
        // The whole array and its last element: different addresses, overlapping bytes.
        let err = (unsized_whole, &cells[3])
            .borrow_mut(&mut token)
            .unwrap_err();
        assert_eq!((err.first(), err.second()), (0, 1));
        // Two overlapping sub-slices.
        let left = GhostCell::from_slice_of_cells(&cells[0..2]);
        let middle = GhostCell::from_slice_of_cells(&cells[1..3]);
        let right = GhostCell::from_slice_of_cells(&cells[2..4]);
        let err = (right, left, middle).borrow_mut(&mut token).unwrap_err();
        assert_eq!((err.first(), err.second()), (1, 2));
        // Adjacent sub-slices do not overlap.
        let (l, r) = (left, right).borrow_mut(&mut token).unwrap();
        l.swap_with_slice(r);
        assert_eq!(whole.borrow(&token), &[3, 4, 1, 2]);
    });
}

#[test]
fn zero_sized_cell_twice_is_refused() {
    GhostToken::new(|mut token| {
        let unit = GhostCell::new(());
        assert!((&unit, &unit).borrow_mut(&mut token).is_err());
        assert!([&unit, &unit, &unit].borrow_mut(&mut token).is_err());
        // Zero-sized cells in one slice are distinct elements, borrowed as one `&mut [()]`.
        let units = [GhostCell::new(()), GhostCell::new(())];
        assert_eq!(units.as_slice().borrow_mut(&mut token).unwrap().len(), 2);
    });
}

#[test]
fn arrays_and_slices_of_references() {
    GhostToken::new(|mut token| {
        let cells: Vec<GhostCell<'_, i32>> = (0..6).map(GhostCell::new).collect();
        // Array of references: checked.
        let [x, y] = [&cells[5], &cells[0]].borrow_mut(&mut token).unwrap();
        std::mem::swap(x, y);
        let err = [&cells[1], &cells[2], &cells[1]]
            .borrow_mut(&mut token)
            .unwrap_err();
        assert_eq!((err.first(), err.second()), (0, 2));
        // Slice of references (any length, result in a Vec): checked.
        let picks: Vec<&GhostCell<'_, i32>> = vec![&cells[4], &cells[2], &cells[0]];
        for r in picks.as_slice().borrow_mut(&mut token).unwrap() {
            *r += 100;
        }
        let dup: Vec<&GhostCell<'_, i32>> = vec![&cells[4], &cells[3], &cells[2], &cells[3]];
        let err = dup.as_slice().borrow_mut(&mut token).unwrap_err();
        assert_eq!((err.first(), err.second()), (1, 3));
        let empty: &[&GhostCell<'_, i32>] = &[];
        assert!(empty.borrow_mut(&mut token).unwrap().is_empty());
        // Contiguous cells: no check needed, `Error = Infallible`.
        let all: &mut [i32] = cells.as_slice().borrow_mut(&mut token).unwrap();
        all[1] += 1000;
        let read: &[i32] = cells.as_slice().borrow(&token);
        assert_eq!(read, &[105, 1001, 102, 3, 104, 0]);
        let reads: Vec<&i32> = picks.as_slice().borrow(&token);
        assert_eq!(reads, [&104, &102, &105]);
        let [p, q] = [&cells[0], &cells[0]].borrow(&token);
        assert_eq!((*p, *q), (105, 105));
    });
}

#[test]
fn array_of_cells_borrow_mut_is_infallible() {
    GhostToken::new(|mut token| {
        let cells = [GhostCell::new(1u8), GhostCell::new(2), GhostCell::new(3)];
        let whole: &mut [u8; 3] = (&cells).borrow_mut(&mut token).unwrap();
        whole.rotate_left(1);
        assert_eq!((&cells).borrow(&token), &[2, 3, 1]);
        // The unchecked form, with distinctness proven by hand.
        // SAFETY: three different cells.
        let [a, b, c] =
            unsafe { [&cells[0], &cells[1], &cells[2]].borrow_mut_unchecked(&mut token) };
        (*a, *b, *c) = (*c, *a, *b);
        assert_eq!((&cells).borrow(&token), &[1, 2, 3]);
    });
}

/// Generic code can handle infallible and checked multi-borrows alike through `Into<GhostAliasingError>`.
fn borrow_all_mut<'a, 'brand, B: GhostBorrowMut<'a, 'brand>>(
    cells: B,
    token: &'a mut GhostToken<'brand>,
) -> Result<B::Result, GhostAliasingError> {
    cells.borrow_mut(token).map_err(Into::into)
}

#[test]
fn errors_convert_to_one_type() {
    GhostToken::new(|mut token| {
        let cells = [GhostCell::new(1), GhostCell::new(2)];
        borrow_all_mut(&cells, &mut token).unwrap()[0] = 5;
        let err = borrow_all_mut((&cells[1], &cells[1]), &mut token)
            .map(|_| ())
            .unwrap_err();
        assert_eq!((err.first(), err.second()), (0, 1));
        assert_eq!((&cells).borrow(&token), &[5, 2]);
    });
}

/// The message of a panic payload, whether it was a literal (`&str`) or formatted (`String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .expect("panic payload is a string")
}

// ---- threads ---------------------------------------------------------------------------------------------

#[test]
fn parallel_reads_share_the_token() {
    GhostToken::new(|mut token| {
        let cells: Vec<GhostCell<'_, u64>> = (0..ROUNDS as u64).map(GhostCell::new).collect();
        for cell in &cells {
            *cell.borrow_mut(&mut token) += 1;
        }
        let token = &token;
        let sums: Vec<u64> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let cells = &cells;
                    s.spawn(move || {
                        cells
                            .iter()
                            .skip(t)
                            .step_by(THREADS)
                            .map(|c| *c.borrow(token))
                            .sum::<u64>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let n = ROUNDS as u64;
        assert_eq!(sums.iter().sum::<u64>(), n * (n + 1) / 2);
    });
}

#[test]
fn baton_passing_hands_the_write_right_from_thread_to_thread() {
    GhostToken::new(|token| {
        let counter = GhostCell::new(0usize);
        let log = GhostCell::new(Vec::new());
        let mut token = Some(token);
        thread::scope(|s| {
            for t in 0..THREADS {
                let mut baton = token.take().unwrap();
                let (counter, log) = (&counter, &log);
                let handle = s.spawn(move || {
                    for _ in 0..ROUNDS {
                        *counter.borrow_mut(&mut baton) += 1;
                    }
                    log.borrow_mut(&mut baton).push(t);
                    baton
                });
                token = Some(handle.join().unwrap());
            }
        });
        let token = token.unwrap();
        assert_eq!(*counter.borrow(&token), THREADS * ROUNDS);
        assert_eq!(*log.borrow(&token), (0..THREADS).collect::<Vec<_>>());
    });
}

#[test]
fn parallel_read_then_commit_exact_values() {
    for shards in 1..=THREADS {
        GhostToken::new(|mut token| {
            let n = ROUNDS;
            let cells: Vec<GhostCell<'_, u64>> = (0..n as u64).map(GhostCell::new).collect();
            let seen = AtomicUsize::new(0);
            let result = parallel_read_then_commit_with(
                shards,
                &mut token,
                |shard, token| {
                    seen.fetch_add(1, Ordering::Relaxed);
                    let range = shard.range(cells.len());
                    // Each reader proposes "add the sum of my part to the first cell of my part".
                    let sum: u64 = cells[range.clone()].iter().map(|c| *c.borrow(token)).sum();
                    (shard, range.start, sum)
                },
                |proposals, token| {
                    assert_eq!(
                        proposals.iter().map(|p| p.0.index).collect::<Vec<_>>(),
                        (0..shards).collect::<Vec<_>>()
                    );
                    for (_, start, sum) in &proposals {
                        if *start < cells.len() {
                            *cells[*start].borrow_mut(token) += sum;
                        }
                    }
                    proposals.len()
                },
            );
            assert_eq!((result, seen.load(Ordering::Relaxed)), (shards, shards));
            let total: u64 = cells.iter().map(|c| *c.borrow(&token)).sum();
            let base = (n as u64) * (n as u64 - 1) / 2;
            assert_eq!(total, 2 * base);
        });
    }
}

#[test]
fn parallel_read_then_commit_default_shards() {
    GhostToken::new(|mut token| {
        let cell = GhostCell::new(3u32);
        let shards = parallel_read_then_commit(
            &mut token,
            |shard, token| (shard.count, *cell.borrow(token)),
            |reads, token| {
                assert!(
                    reads
                        .iter()
                        .all(|&(count, value)| count == reads.len() && value == 3)
                );
                *cell.borrow_mut(token) = reads.len() as u32;
                reads.len()
            },
        );
        assert!(shards >= 1);
        assert_eq!(*cell.borrow(&token), shards as u32);
    });
}

#[test]
fn a_panicking_reader_skips_the_commit_and_keeps_the_token() {
    GhostToken::new(|mut token| {
        let cell = GhostCell::new(1);
        let committed = Cell::new(false);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            parallel_read_then_commit_with(
                2,
                &mut token,
                |shard, token| {
                    assert!(shard.index != 1, "reader 1 failed");
                    *cell.borrow(token)
                },
                |_, _| committed.set(true),
            )
        }));
        let payload = outcome.unwrap_err();
        assert_eq!(panic_message(&*payload), "reader 1 failed");
        assert!(!committed.get());
        // The token is still ours.
        *cell.borrow_mut(&mut token) += 1;
        assert_eq!(*cell.borrow(&token), 2);
    });
}

#[test]
fn zero_shards_is_a_clear_panic() {
    let outcome = catch_unwind(|| {
        GhostToken::new(|mut token| {
            parallel_read_then_commit_with(0, &mut token, |_, _| (), |_, _| ())
        })
    });
    let payload = outcome.unwrap_err();
    let message = panic_message(&*payload);
    assert!(
        message.starts_with("parallel_read_then_commit_with: shards must be at least 1 (got 0)"),
        "{message}"
    );
}

#[test]
fn shard_ranges_cover_everything_once() {
    for len in [0, 1, 5, 10, 17] {
        for count in 1..=6 {
            let ranges: Vec<_> = (0..count)
                .map(|index| Shard { index, count }.range(len))
                .collect();
            assert_eq!(ranges.first().unwrap().start, 0);
            assert_eq!(ranges.last().unwrap().end, len);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
                assert!(pair[0].len() >= pair[1].len() && pair[0].len() - pair[1].len() <= 1);
            }
        }
    }
    assert_eq!(Shard { index: 1, count: 4 }.range(6), 2..4);
    assert_eq!(Shard { index: 3, count: 4 }.range(6), 5..6);
}

// ---- once and lazy ---------------------------------------------------------------------------------------

#[test]
fn once_cell_is_set_once() {
    GhostToken::new(|mut token| {
        let cell = GhostOnceCell::new();
        assert_eq!(cell.get(&token), None);
        assert_eq!(cell.set(1, &mut token), Ok(()));
        assert_eq!(cell.set(2, &mut token), Err(2));
        assert_eq!(cell.try_insert(3, &mut token), Err((&1, 3)));
        let calls = Cell::new(0);
        assert_eq!(
            *cell.get_or_init(&mut token, || {
                calls.set(calls.get() + 1);
                4
            }),
            1
        );
        assert_eq!(calls.get(), 0);
        assert_eq!(cell.get(&token), Some(&1));
    });
}

#[test]
fn once_cell_reference_outlives_the_token_borrow() {
    GhostToken::new(|mut token| {
        let cell = GhostOnceCell::new();
        let value: &String = cell.get_or_init(&mut token, || String::from("v"));
        // The token is free again: a later writer finds the cell full and writes nothing.
        assert_eq!(
            cell.set(String::from("w"), &mut token),
            Err(String::from("w"))
        );
        assert_eq!(value, "v");
    });
}

#[test]
fn once_cell_failed_or_panicking_init_leaves_it_empty() {
    GhostToken::new(|mut token| {
        let cell: GhostOnceCell<'_, u8> = GhostOnceCell::new();
        assert_eq!(cell.get_or_try_init(&mut token, || Err("no")), Err("no"));
        assert_eq!(cell.get(&token), None);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            cell.get_or_init(&mut token, || panic!("init failed"))
        }));
        assert!(outcome.is_err());
        assert_eq!(cell.get(&token), None);
        assert_eq!(cell.get_or_try_init(&mut token, || Ok::<_, ()>(7)), Ok(&7));
    });
}

#[test]
fn once_cell_owned_access_and_drops() {
    let drops = Cell::new(0);
    GhostToken::new(|mut token| {
        let mut cell = GhostOnceCell::with_value(DropCounter(&drops, 1));
        assert_eq!(cell.get_mut().map(|d| d.1), Some(1));
        let taken = cell.take().unwrap();
        assert!(cell.get(&token).is_none());
        drop(taken);
        assert_eq!(drops.get(), 1);
        cell.set(DropCounter(&drops, 2), &mut token).ok().unwrap();
        assert_eq!(cell.into_inner().map(|d| d.1), Some(2));
        assert_eq!(drops.get(), 2);
        let full = GhostOnceCell::from(DropCounter(&drops, 3));
        let empty: GhostOnceCell<'_, DropCounter<'_>> = GhostOnceCell::default();
        drop((full, empty));
        assert_eq!(drops.get(), 3);
    });
}

#[test]
fn once_cell_initialised_by_one_thread_read_by_all() {
    GhostToken::new(|mut token| {
        let cell = GhostOnceCell::new();
        let inits = AtomicUsize::new(0);
        let got = parallel_read_then_commit_with(
            THREADS,
            &mut token,
            |_, token| cell.get(token).copied(),
            |reads, token| {
                assert!(reads.iter().all(Option::is_none));
                *cell.get_or_init(token, || {
                    inits.fetch_add(1, Ordering::Relaxed);
                    41 + 1
                })
            },
        );
        assert_eq!(got, 42);
        let token = &token;
        let reads: Vec<Option<u32>> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| s.spawn(|| cell.get(token).copied()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(reads, vec![Some(42); THREADS]);
        assert_eq!(inits.load(Ordering::Relaxed), 1);
    });
}

#[test]
fn lazy_cell_computes_once() {
    GhostToken::new(|mut token| {
        let calls = Cell::new(0);
        let lazy = GhostLazyCell::new(|| {
            calls.set(calls.get() + 1);
            vec![1, 2, 3]
        });
        assert_eq!(lazy.get(&token), None);
        assert_eq!(calls.get(), 0);
        let first = lazy.force(&mut token);
        let second = lazy.force(&mut token);
        assert!(std::ptr::eq(first, second));
        assert_eq!((first.as_slice(), calls.get()), (&[1, 2, 3][..], 1));
        assert_eq!(lazy.get(&token).map(Vec::len), Some(3));
    });
}

#[test]
fn lazy_cell_force_mut() {
    GhostToken::new(|token| {
        let mut lazy: GhostLazyCell<'_, u32> = GhostLazyCell::new(|| 5);
        *lazy.force_mut() += 1;
        *lazy.force_mut() += 1;
        assert_eq!(lazy.get(&token), Some(&7));
    });
}

#[test]
fn lazy_cell_poisoned_by_a_panicking_initialiser() {
    GhostToken::new(|mut token| {
        let lazy: GhostLazyCell<'_, u8, _> = GhostLazyCell::new(|| panic!("init failed"));
        let first = catch_unwind(AssertUnwindSafe(|| *lazy.force(&mut token))).unwrap_err();
        assert_eq!(panic_message(&*first), "init failed");
        let second = catch_unwind(AssertUnwindSafe(|| *lazy.force(&mut token))).unwrap_err();
        let message = panic_message(&*second);
        assert!(
            message
                .starts_with("GhostLazyCell::force: the initialiser panicked on an earlier call"),
            "{message}"
        );
        assert_eq!(lazy.get(&token), None);
    });
}

#[test]
fn lazy_cell_drops_the_initialiser_or_the_value() {
    let drops = Cell::new(0);
    GhostToken::new(|mut token| {
        let captured = DropCounter(&drops, 1);
        // Moves the whole `captured` in (a closure using only `captured.1` would capture just the field).
        let never_forced = GhostLazyCell::new(move || {
            let whole = captured;
            whole.1
        });
        drop(never_forced);
        assert_eq!(drops.get(), 1); // the closure (and what it captured) was dropped

        let forced = GhostLazyCell::new(|| DropCounter(&drops, 2));
        assert_eq!(forced.force(&mut token).1, 2);
        drop(forced);
        assert_eq!(drops.get(), 2);
    });
}

// ---- a data structure: doubly linked list in an arena ----------------------------------------------------

struct Node<'arena, 'brand> {
    value: u32,
    prev: Option<&'arena GhostCell<'brand, Node<'arena, 'brand>>>,
    next: Option<&'arena GhostCell<'brand, Node<'arena, 'brand>>>,
}

type NodeRef<'arena, 'brand> = &'arena GhostCell<'brand, Node<'arena, 'brand>>;

fn values_forward<'arena, 'brand>(
    head: NodeRef<'arena, 'brand>,
    token: &GhostToken<'brand>,
) -> Vec<u32> {
    let mut out = vec![];
    let mut node = Some(head);
    while let Some(n) = node {
        out.push(n.borrow(token).value);
        node = n.borrow(token).next;
    }
    out
}

#[test]
fn doubly_linked_list_unlink_with_three_way_borrow() {
    GhostToken::new(|mut token| {
        let arena: Vec<GhostCell<'_, Node<'_, '_>>> = (0..5)
            .map(|value| {
                GhostCell::new(Node {
                    value,
                    prev: None,
                    next: None,
                })
            })
            .collect();
        for pair in arena.windows(2) {
            let (left, right) = (&pair[0], &pair[1]).borrow_mut(&mut token).unwrap();
            left.next = Some(&pair[1]);
            right.prev = Some(&pair[0]);
        }
        assert_eq!(values_forward(&arena[0], &token), [0, 1, 2, 3, 4]);

        // Unlink node 2: its neighbours and itself are mutated together.
        let middle = &arena[2];
        let (prev, next) = (
            middle.borrow(&token).prev.unwrap(),
            middle.borrow(&token).next.unwrap(),
        );
        let (p, m, n) = (prev, middle, next).borrow_mut(&mut token).unwrap();
        p.next = m.next.take();
        n.prev = m.prev.take();
        assert_eq!(values_forward(&arena[0], &token), [0, 1, 3, 4]);
        assert_eq!(
            arena[3].borrow(&token).prev.map(|p| p.borrow(&token).value),
            Some(1)
        );

        // Passing a node twice is caught, not turned into two `&mut`.
        let err = (&arena[1], &arena[3], &arena[1])
            .borrow_mut(&mut token)
            .err()
            .unwrap();
        assert_eq!((err.first(), err.second()), (0, 2));
    });
}
