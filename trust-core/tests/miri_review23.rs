//! Review 23 (r23miri): the unsafe code outside delegation, pushed under Miri through the public API:
//! lock collections (boxed, by reference, owned, retrying), `Poisonable`, `lock_all!`, ghost cells and their
//! views, `GhostLazyLock`, the interval locks (guards moved across threads, futures polled by hand), and
//! `Latch` on a plain thread, and (module `delegation`) plain-thread delegation: `apply_async` futures moved
//! between threads, `into_inner`/`try_unwrap`, an entrusted `Latch`, over-aligned captures and results,
//! `#[entrust]` slice and string stubs, destructors that delegate. Every test is also an ordinary native test.
//!
//! Run under Miri (all clean as committed):
//! - `cargo +nightly miri test -p trust-core --test miri_review23` (Stacked Borrows; the `delegation` module
//!   is compiled out with the `may` feature), also with `MIRIFLAGS=-Zmiri-tree-borrows`;
//! - `MIRIFLAGS="-Zmiri-ignore-leaks" cargo +nightly miri test -p trust-core --no-default-features --test
//!   miri_review23` (everything; add `-Zmiri-tree-borrows`, or `-Zmiri-strict-provenance` with the filter
//!   `delegation ghost interval`: parking_lot's contended path casts integers to pointers).

use std::cell::Cell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;

use trust_core::ghost::{
    GhostBorrowMut, GhostCell, GhostLazyLock, GhostOnceCell, GhostToken, static_token,
};
use trust_core::interval::{IntervalMutex, IntervalRwLock};
use trust_core::lock::{
    LockCollection, Mutex, OwnedLockCollection, Poisonable, RefLockCollection,
    RetryingLockCollection, RwLock, ThreadKey,
};
use trust_core::lock_all;

/// Rounds of the concurrent loops: small under Miri, which interprets every step.
const ROUNDS: usize = if cfg!(miri) { 8 } else { 500 };

// ---- lock collections -------------------------------------------------------------------------------

#[test]
fn boxed_collection_over_references_locked_from_two_threads_in_opposite_orders() {
    let (a, b) = (Mutex::new(0u64), Mutex::new(0u64));
    let ab = LockCollection::try_new((&a, &b)).expect("distinct");
    let ba = LockCollection::try_new((&b, &a)).expect("distinct");
    thread::scope(|s| {
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            for _ in 0..ROUNDS {
                let mut g = ab.lock(&mut key);
                *g.0 += 1;
                *g.1 += 2;
            }
        });
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            for _ in 0..ROUNDS {
                let mut g = ba.lock(&mut key);
                *g.0 += 10;
                *g.1 += 20;
            }
        });
    });
    drop((ab, ba));
    let n = ROUNDS as u64;
    assert_eq!(a.into_inner(), n + 20 * n);
    assert_eq!(b.into_inner(), 2 * n + 10 * n);
}

#[test]
fn boxed_collection_moved_to_another_thread_and_grown_in_place() {
    let mut all = LockCollection::new(vec![Mutex::new(1u32), Mutex::new(2)]);
    for i in 3..=6 {
        // Pushing reallocates the vector under the cached order: the re-sort must see the new addresses.
        all.with_child_mut(|v| v.push(Mutex::new(i)));
    }
    let all = thread::spawn(move || {
        let mut key = ThreadKey::get().unwrap();
        {
            let mut g = all.lock(&mut key);
            for m in g.iter_mut() {
                **m *= 10;
            }
        }
        all
    })
    .join()
    .unwrap();
    let mut key = ThreadKey::get().unwrap();
    let sum: u32 = all.scoped_lock(&mut key, |g| g.iter().map(|m| **m).sum());
    assert_eq!(sum, 210);
    assert_eq!(&*all.into_inner(), &[10, 20, 30, 40, 50, 60]);
}

#[test]
fn boxed_collection_resorts_after_a_panicking_child_edit() {
    let mut all = LockCollection::new(vec![Mutex::new(String::from("a"))]);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        all.with_child_mut(|v| {
            v.push(Mutex::new(String::from("b")));
            v.push(Mutex::new(String::from("c")));
            panic!("edit fails half-way");
        })
    }));
    assert!(caught.is_err());
    let mut key = ThreadKey::get().unwrap();
    let joined = all.scoped_lock(&mut key, |g| {
        g.iter().map(|m| m.as_str()).collect::<Vec<_>>().join("")
    });
    assert_eq!(joined, "abc");
    let child = all.into_child();
    assert_eq!(child.len(), 3);
}

#[test]
fn boxed_collection_of_rwlocks_read_on_two_threads_then_written() {
    let locks = LockCollection::new([RwLock::new(1u32), RwLock::new(2), RwLock::new(3)]);
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut key = ThreadKey::get().unwrap();
                for _ in 0..ROUNDS {
                    let g = locks.read(&mut key);
                    assert_eq!(g.iter().map(|r| **r).sum::<u32>() % 6, 0);
                }
            });
        }
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            for _ in 0..ROUNDS {
                let mut g = locks.lock(&mut key);
                *g[0] += 1;
                *g[1] += 2;
                *g[2] += 3;
            }
        });
    });
    let n = ROUNDS as u32;
    assert_eq!(locks.into_inner(), [1 + n, 2 + 2 * n, 3 + 3 * n]);
}

#[test]
fn ref_collection_and_lock_all_contend_on_the_same_locks() {
    let locks = [Mutex::new(0usize), Mutex::new(0), Mutex::new(0)];
    thread::scope(|s| {
        s.spawn(|| {
            let all = RefLockCollection::new(&locks);
            let mut key = ThreadKey::get().unwrap();
            for _ in 0..ROUNDS {
                let mut guard = all.lock(&mut key);
                for g in guard.iter_mut() {
                    **g += 1;
                }
            }
        });
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            for _ in 0..ROUNDS {
                let (mut x, mut z) = lock_all!(&mut key, locks[2], locks[0]);
                *x += 100;
                *z += 100;
            }
        });
    });
    let [a, b, c] = locks;
    let n = ROUNDS;
    assert_eq!(
        (a.into_inner(), b.into_inner(), c.into_inner()),
        (101 * n, n, 101 * n)
    );
}

#[test]
fn retrying_collections_over_shared_locks_in_opposite_orders() {
    let (a, b, c) = (Mutex::new(0u32), Mutex::new(0u32), Mutex::new(0u32));
    let abc = RetryingLockCollection::try_new((&a, &b, &c)).expect("distinct");
    let cba = RetryingLockCollection::try_new((&c, &b, &a)).expect("distinct");
    assert!(RetryingLockCollection::try_new((&a, &b, &a)).is_none());
    thread::scope(|s| {
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            for _ in 0..ROUNDS {
                let mut g = abc.lock(&mut key);
                *g.0 += 1;
                *g.1 += 1;
                *g.2 += 1;
            }
        });
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            for _ in 0..ROUNDS {
                if let Ok(mut g) = cba.try_lock(&mut key) {
                    *g.0 += 1;
                    *g.1 += 1;
                    *g.2 += 1;
                }
                let mut g = cba.lock(&mut key);
                *g.1 += 1;
            }
        });
    });
    let (a, b, c) = (a.into_inner(), b.into_inner(), c.into_inner());
    assert_eq!(a, c);
    assert_eq!(b - a, ROUNDS as u32);
    assert!(a >= ROUNDS as u32 && a <= 2 * ROUNDS as u32);
}

#[test]
fn owned_collection_context_then_whole_lock() {
    let owned = OwnedLockCollection::new((Mutex::new(3u8), RwLock::new(4u8), Mutex::new(5u8)));
    let mut key = ThreadKey::get().unwrap();
    {
        let ctx = owned.context(&mut key);
        let (first, ctx) = ctx.lock_0();
        let (second, ctx) = ctx.read_1();
        let (mut third, _ctx) = ctx.lock_2();
        *third += *first + *second;
    }
    let sum = owned.scoped_lock(&mut key, |(a, b, c)| u32::from(**a + **b + **c));
    assert_eq!(sum, 3 + 4 + 12);
    assert_eq!(owned.into_inner(), (3, 4, 12));
}

#[test]
fn poisonable_collection_poisoned_by_a_panic_on_another_thread() {
    let p = Poisonable::new((Mutex::new(vec![1u8]), Mutex::new(0u32)));
    thread::scope(|s| {
        let r = s
            .spawn(|| {
                let key = ThreadKey::get().unwrap();
                let mut g = p.lock(key).unwrap();
                g.0.push(2);
                *g.1 += 1;
                panic!("half-way");
            })
            .join();
        assert!(r.is_err());
    });
    assert!(p.is_poisoned());
    let mut key = ThreadKey::get().unwrap();
    let g = p.lock(&mut key).unwrap_err().into_inner();
    assert_eq!((&**g.0, *g.1), (&[1u8, 2][..], 1));
    drop(g);
    p.clear_poison();
    let (v, n) = p.into_inner().unwrap();
    assert_eq!((v, n), (vec![1, 2], 1));
}

#[test]
fn mutex_debug_peeks_only_when_free() {
    let m = Mutex::new(7u8);
    assert_eq!(format!("{m:?}"), "Mutex { data: 7, .. }");
    let mut key = ThreadKey::get().unwrap();
    let g = m.lock(&mut key);
    let shown = thread::scope(|s| s.spawn(|| format!("{m:?}")).join().unwrap());
    assert_eq!(shown, "Mutex { data: <locked>, .. }");
    drop(g);
}

#[test]
fn guards_of_a_vec_collection_stay_in_its_guard_until_unlock() {
    // The review found that the guards of a `Vec`/`[T]`/`Box<[T]>` child were a `Box<[MutexRef]>`, which is
    // `Default`: `mem::take(&mut *guard)` moved every guard out, and `unlock` gave the key back with every lock
    // still held (the "no lock held while the key is free" rule that makes collections deadlock-free, gone
    // in safe code). They are a `Guards` now, used as a slice and not `Default`: `mem::take` does not compile
    // (ui-tests/tests/ui/lock/guards-cannot-be-taken.rs). What a slice of guards still allows, reordering
    // them, is harmless: `unlock` and `scoped_lock` release every lock.
    let all = LockCollection::new(vec![Mutex::new(1u8), Mutex::new(2u8)]);
    let key = ThreadKey::get().unwrap();
    let mut guard = all.lock(key);
    guard.swap(0, 1);
    *guard[0] += 10;
    let key = LockCollection::<Vec<Mutex<u8>>>::unlock(guard);
    let held_after_unlock = all.child().iter().filter(|m| m.is_locked()).count();
    let slice = [Mutex::new(3u8), Mutex::new(4u8)];
    let by_ref = RefLockCollection::new(&slice[..]);
    let mut key = key;
    let sum = by_ref.scoped_lock(&mut key, |g| {
        g.reverse();
        g.iter().map(|m| **m).sum::<u8>()
    });
    let held_after_scoped = slice.iter().filter(|m| m.is_locked()).count();
    assert_eq!((held_after_unlock, held_after_scoped, sum), (0, 0, 7));
    let values: Vec<u8> = all.into_inner().into_iter().collect();
    assert_eq!(values, [1, 12]);
}

trust_core::lock_ranks! {
    Table;
    Row;
}

#[test]
fn nested_ranks_and_a_context_over_a_vec_from_two_threads() {
    let table: Mutex<u32, Table> = Mutex::ranked(0);
    let rows = OwnedLockCollection::new((0..4).map(RwLock::<u32, Row>::ranked).collect::<Vec<_>>());
    thread::scope(|s| {
        for t in 0..2u32 {
            let (table, rows) = (&table, &rows);
            s.spawn(move || {
                let mut key = ThreadKey::get().unwrap();
                for _ in 0..ROUNDS {
                    let (mut count, mut nested) = lock_all!(&mut key, *table; nest);
                    let mut ctx = rows.context(&mut nested);
                    // Read row 0, skip row 1, write rows 2 and 3.
                    let first = ctx.read_next().unwrap();
                    assert!(ctx.skip_next());
                    let mut third = ctx.lock_next().unwrap();
                    let mut fourth = ctx.lock_next().unwrap();
                    assert!(ctx.lock_next().is_none());
                    *third += *first + t;
                    *fourth += 1;
                    *count += 1;
                }
            });
        }
    });
    let n = ROUNDS as u32;
    assert_eq!(table.into_inner(), 2 * n);
    // Row 2 gained row 0's value (0) plus the thread number (0 or 1) per round.
    assert_eq!(rows.into_inner().into_vec(), [0, 1, 2 + n, 3 + 2 * n]);
}

// ---- ghost cells ------------------------------------------------------------------------------------

#[test]
fn slice_and_array_views_of_cells_write_through_disjoint_borrows() {
    let mut values = [1u32, 2, 3, 4];
    GhostToken::new(|mut token| {
        let cells = GhostCell::from_mut(&mut values[..]).as_slice_of_cells();
        let (x, y, z) = (&cells[0], &cells[2], &cells[3])
            .borrow_mut(&mut token)
            .unwrap();
        std::mem::swap(x, y);
        *z += *x + *y;
        let whole = GhostCell::from_slice_of_cells(cells);
        let err = (whole, &cells[1]).borrow_mut(&mut token).unwrap_err();
        assert_eq!((err.first(), err.second()), (0, 1));
        whole.borrow_mut(&mut token).reverse();
    });
    assert_eq!(values, [8, 1, 2, 3]);
}

#[test]
fn overlapping_array_views_are_refused_by_swap() {
    // Two `GhostCell<[u8; 2]>` of one type at different addresses that share a byte: `swap` must not
    // form two `&mut [u8; 2]` over them (its docs say this never gives `Err`; it does, and must).
    let mut bytes = [1u8, 2, 3];
    GhostToken::new(|mut token| {
        let cells = GhostCell::from_mut(&mut bytes[..]).as_slice_of_cells();
        let low: &[GhostCell<'_, u8>; 2] = cells[0..2].try_into().unwrap();
        let high: &[GhostCell<'_, u8>; 2] = cells[1..3].try_into().unwrap();
        let (low, high) = (
            GhostCell::from_array_of_cells(low),
            GhostCell::from_array_of_cells(high),
        );
        assert!(low.swap(high, &mut token).is_err());
    });
    assert_eq!(bytes, [1, 2, 3]);
}

#[test]
fn ghost_cells_read_on_scoped_threads_then_written() {
    GhostToken::new(|mut token| {
        let cells: Vec<GhostCell<'_, u64>> = (0..4).map(GhostCell::new).collect();
        let once = GhostOnceCell::new();
        once.set(String::from("set"), &mut token).unwrap();
        let lazy = GhostLazyLock::new(|| 40u64 + 2);
        let sums: Vec<u64> = {
            let token = &token;
            thread::scope(|s| {
                let handles: Vec<_> = (0..2)
                    .map(|_| {
                        s.spawn(|| {
                            assert_eq!(once.get(token).map(String::as_str), Some("set"));
                            cells.iter().map(|c| *c.borrow(token)).sum::<u64>() + *lazy.force(token)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            })
        };
        assert_eq!(sums, [48, 48]);
        for c in &cells {
            *c.borrow_mut(&mut token) += 1;
        }
        assert_eq!(cells.iter().map(|c| *c.borrow(&token)).sum::<u64>(), 10);
    });
}

#[test]
fn ghost_lazy_lock_whose_initialiser_panics_poisons_every_thread() {
    GhostToken::new(|token| {
        let lazy: GhostLazyLock<'_, String, _> =
            GhostLazyLock::new(|| -> String { panic!("init") });
        let token = &token;
        let first = catch_unwind(AssertUnwindSafe(|| lazy.force(token).len()));
        assert!(first.is_err());
        let again = thread::scope(|s| {
            s.spawn(|| catch_unwind(AssertUnwindSafe(|| lazy.force(token).len())).is_err())
                .join()
                .unwrap()
        });
        assert!(again);
        assert_eq!(lazy.get(token), None);
    });
}

#[test]
fn static_brand_cells_read_everywhere() {
    static GREETING: GhostCell<'static, &str> = GhostCell::new("hi");
    let n = thread::scope(|s| {
        s.spawn(|| GREETING.borrow(static_token()).len())
            .join()
            .unwrap()
    });
    assert_eq!(n + GREETING.borrow(static_token()).len(), 4);
}

// ---- interval locks ---------------------------------------------------------------------------------

#[test]
fn interval_write_guards_on_disjoint_ranges_written_on_other_threads() {
    let lock = IntervalRwLock::new(vec![0u32; 8]);
    let (mut left, mut right) = (lock.write(0..4), lock.write(4..8));
    // The threads keep their guards until the checks below are done (a thread that ended first would have
    // released its range: Miri's scheduler did run them first, in CI).
    let checked = std::sync::Barrier::new(3);
    thread::scope(|s| {
        s.spawn(|| {
            for (i, x) in left.iter_mut().enumerate() {
                *x = i as u32;
            }
            checked.wait();
            drop(left);
        });
        s.spawn(|| {
            for (i, x) in right.iter_mut().enumerate() {
                *x = 10 + i as u32;
            }
            checked.wait();
            drop(right);
        });
        // Meanwhile, a read of nothing held and a try of a held range.
        assert!(lock.try_read(3..5).is_err());
        assert_eq!(lock.read(8..8).len(), 0);
        checked.wait();
    });
    assert_eq!(&*lock.read(..), &[0, 1, 2, 3, 10, 11, 12, 13]);
    assert_eq!(lock.into_inner(), [0, 1, 2, 3, 10, 11, 12, 13]);
}

#[test]
fn interval_mutex_of_cells_guards_sent_to_threads() {
    // `Cell` is `Send` but not `Sync`: a `WriteGuard<Cell<_>>` may move to another thread.
    let lock = IntervalMutex::new((0..6).map(Cell::new).collect::<Vec<_>>());
    let guards = [lock.lock(0..2), lock.lock(2..4), lock.lock(4..6)];
    thread::scope(|s| {
        for g in guards {
            s.spawn(move || {
                for c in g.iter() {
                    c.set(c.get() * 3);
                }
            });
        }
    });
    let values: Vec<i32> = lock
        .into_inner()
        .into_iter()
        .map(Cell::into_inner)
        .collect();
    assert_eq!(values, [0, 3, 6, 9, 12, 15]);
}

struct CountWakes(AtomicUsize);

impl Wake for CountWakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn poll<F: Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(waker))
}

#[test]
fn interval_futures_polled_by_hand_cancelled_queued_and_granted() {
    let lock = IntervalRwLock::new(vec![
        String::from("a"),
        String::from("b"),
        String::from("c"),
    ]);
    let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
    let waker = Waker::from(wakes.clone());
    let held = lock.write(0..2);
    let mut queued = lock.read_async(1..3);
    let mut behind = lock.write_async(2..3);
    assert!(poll(&mut queued, &waker).is_pending());
    assert!(poll(&mut behind, &waker).is_pending());
    assert_eq!(lock.queued(), 2);
    drop(held); // grants `queued`, which is then dropped without being polled
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    drop(queued); // releases the granted read: `behind` is granted
    let Poll::Ready(mut w) = poll(&mut behind, &waker) else {
        panic!("granted once the read was withdrawn")
    };
    w[0].push('!');
    drop(w);
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    // A future moved to another thread, polled there with another waker.
    let other = lock.write_async(..);
    let got = thread::scope(|s| {
        s.spawn(move || {
            let mut other = other;
            let Poll::Ready(mut g) = poll(
                &mut other,
                &Waker::from(Arc::new(CountWakes(AtomicUsize::new(0)))),
            ) else {
                panic!("free")
            };
            g.iter_mut().for_each(|s| s.push('.'));
            g.concat()
        })
        .join()
        .unwrap()
    });
    assert_eq!(got, "a.b.c!.");
}

#[test]
fn interval_replace_container_after_a_leaked_guard() {
    let mut lock = IntervalRwLock::new(vec![1u8, 2, 3]);
    std::mem::forget(lock.write(0..3));
    assert!(lock.try_read(0..1).is_err());
    let old = lock.replace_container(vec![9u8; 2]);
    assert_eq!(&*old, &[1, 2, 3]);
    assert_eq!(&*lock.read(..), &[9, 9]);
    assert_eq!(lock.take_container().len(), 2);
    assert!(lock.is_empty());
}

#[test]
fn interval_locks_of_zero_sized_and_empty_elements() {
    let units = IntervalRwLock::new(vec![(); 1000]);
    {
        let (mut a, mut b) = (units.write(0..500), units.write(500..1000));
        assert_eq!((a.len(), b.len()), (500, 500));
        a[499] = ();
        b[0] = ();
        assert!(units.try_read(499..501).is_err());
        let empty = units.write(1000..1000);
        assert_eq!(empty.len(), 0);
    }
    assert_eq!(units.read(..).len(), 1000);
    let none: IntervalRwLock<String> = IntervalRwLock::new(Vec::new());
    assert!(none.is_empty());
    assert_eq!((none.read(..).len(), none.write(0..0).len()), (0, 0));
    let caught = catch_unwind(AssertUnwindSafe(|| drop(none.read(0..1))));
    assert!(caught.is_err());
    assert_eq!(units.into_inner().len(), 1000);
}

// ---- latch on a plain thread --------------------------------------------------------------------------

#[test]
fn latch_on_a_plain_thread() {
    let latch = trust_core::Latch::new(vec![1u8]);
    {
        let mut g = latch.lock();
        g.push(2);
        assert!(latch.try_lock().is_none());
    }
    latch.try_lock().expect("free again").push(3);
    let held = latch.lock();
    let refused = catch_unwind(AssertUnwindSafe(|| drop(latch.lock())));
    assert!(refused.is_err());
    drop(held);
    assert_eq!(latch.into_inner(), [1, 2, 3]);
}

// ---- delegation from plain threads --------------------------------------------------------------------
//
// Compiled out under Miri with the `may` feature (a plain-thread call asks `may` whether it is a coroutine,
// which trips Stacked Borrows inside `generator`, not this crate): run these under Miri with
// `--no-default-features` and `MIRIFLAGS=-Zmiri-ignore-leaks` (the workers never stop), as `.ci/run` does for
// `miri_delegation`. Drops are counted, so a lost value still fails.

#[cfg(not(all(miri, feature = "may")))]
mod delegation {
    use super::*;
    use std::sync::OnceLock;
    use trust_core::{Latch, Runtime, Trust};

    fn rt() -> &'static Runtime {
        static RT: OnceLock<&'static Runtime> = OnceLock::new();
        RT.get_or_init(|| {
            Runtime::builder()
                .workers(1)
                .build()
                .expect("first runtime of this process")
        })
    }

    #[derive(Debug)]
    struct CountsDrops(Arc<AtomicUsize>);

    impl Drop for CountsDrops {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls `f` to completion on this thread, parking between polls.
    fn block_on<F: Future>(f: F) -> F::Output {
        struct Unpark(thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
                return out;
            }
            thread::park();
        }
    }

    #[test]
    fn apply_async_made_on_one_thread_completed_on_another() {
        let counter = rt().trustee(0).entrust(0u64);
        let drops = Arc::new(AtomicUsize::new(0));
        // Made here, first polled there.
        let token = CountsDrops(drops.clone());
        let unsent = counter.apply_async(move |c| {
            let _token = token;
            *c += 1;
            *c
        });
        // Made and polled once here (sent), completed there.
        let mut sent = counter.apply_async(|c| {
            *c += 10;
            *c
        });
        let idle = Waker::from(Arc::new(CountWakes(AtomicUsize::new(0))));
        let early = poll(&mut sent, &idle);
        let (a, b) = thread::scope(|s| {
            let a = s.spawn(move || block_on(unsent)).join().unwrap();
            let b = match early {
                Poll::Ready(b) => b,
                Poll::Pending => s.spawn(move || block_on(sent)).join().unwrap(),
            };
            (a, b)
        });
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(a + b, if a == 1 { 1 + 11 } else { 10 + 11 });
        assert_eq!(counter.apply(|c| *c), 11);
    }

    #[test]
    fn apply_async_dropped_unpolled_drops_its_closure_once_and_never_runs_it() {
        let counter = rt().trustee(0).entrust(0u64);
        let drops = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let token = CountsDrops(drops.clone());
            drop(counter.apply_async(move |c| {
                let _token = token;
                *c += 1;
            }));
        }
        assert_eq!(drops.load(Ordering::SeqCst), 3);
        assert_eq!(counter.apply(|c| *c), 0);
    }

    #[test]
    fn into_inner_from_every_clone_on_threads_returns_the_value_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let value = rt().trustee(0).entrust((CountsDrops(drops.clone()), 7u32));
        let clones: Vec<Trust<(CountsDrops, u32)>> = (0..3).map(|_| value.clone()).collect();
        drop(value);
        let got: Vec<Option<u32>> = thread::scope(|s| {
            let hs: Vec<_> = clones
                .into_iter()
                .map(|t| s.spawn(move || t.into_inner().map(|(_token, n)| n)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(got.iter().flatten().collect::<Vec<_>>(), [&7]);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn try_unwrap_fails_while_a_clone_lives_then_succeeds() {
        let drops = Arc::new(AtomicUsize::new(0));
        let value = rt().trustee(0).entrust(vec![CountsDrops(drops.clone())]);
        let other = value.clone();
        let value = value.try_unwrap().expect_err("a clone is alive");
        assert_eq!(value.apply(|v| v.len()), 1);
        drop(other);
        let Ok(v) = value.try_unwrap() else {
            panic!("last handle")
        };
        assert_eq!((v.len(), drops.load(Ordering::SeqCst)), (1, 0));
        drop(v);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_entrusted_latch_locked_from_delegated_closures() {
        let latch = rt().trustee(0).entrust(Latch::new(Vec::<u32>::new()));
        thread::scope(|s| {
            for t in 0..2u32 {
                let latch = &latch;
                s.spawn(move || {
                    for i in 0..3 {
                        latch.apply(move |l| l.lock().push(t * 10 + i));
                    }
                });
            }
        });
        let mut all = latch.apply(|l| l.try_lock().expect("free").clone());
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2, 10, 11, 12]);
        let Ok(latch) = latch.try_unwrap() else {
            panic!("last handle")
        };
        let inner = latch.into_inner();
        assert_eq!(inner.len(), 6);
    }

    #[test]
    fn apply_with_a_big_argument_and_a_droppy_result() {
        let drops = Arc::new(AtomicUsize::new(0));
        let sum = rt().trustee(0).entrust(0u64);
        let big = [3u64; 80]; // over 512 bytes: boxed
        let (total, token) = sum.apply_with(
            |s, (arr, token): ([u64; 80], CountsDrops)| {
                *s += arr.iter().sum::<u64>();
                (*s, token)
            },
            (big, CountsDrops(drops.clone())),
        );
        assert_eq!((total, drops.load(Ordering::SeqCst)), (240, 0));
        drop(token);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
    #[test]
    fn reentrant_apply_on_the_same_value_is_refused_and_other_values_run_inline() {
        let a = rt().trustee(0).entrust(1u64);
        let b = rt().trustee(0).entrust(100u64);
        let (a2, b2) = (a.clone(), b.clone());
        // Another value of the same trustee, from inside a delegated closure: runs inline.
        let sum = a.apply(move |x| {
            *x += 1;
            *x + b2.apply(|y| {
                *y += 1;
                *y
            })
        });
        assert_eq!(sum, 2 + 101);
        // The same value again: two `&mut` to it; must panic, and the value stays usable.
        let caught = catch_unwind(AssertUnwindSafe(|| {
            a.apply(move |x| {
                *x += 1;
                a2.apply(|again| *again += 1000)
            })
        }));
        assert!(caught.is_err());
        assert_eq!((a.apply(|x| *x), b.apply(|y| *y)), (3, 101));
    }

    #[test]
    fn a_trust_of_trusts_drops_the_inner_values_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let inner = rt().trustee(0).entrust(CountsDrops(drops.clone()));
        let outer = rt().trustee(0).entrust(vec![inner.clone(), inner]);
        let d = drops.clone();
        // From inside the outer value's closure: the inner value lives on the same trustee.
        let seen = outer.apply(move |v| {
            let n = v[0].apply(|t| Arc::strong_count(&t.0));
            v.pop();
            (n, d.load(Ordering::SeqCst))
        });
        assert_eq!(seen, (3, 0)); // `drops`, its clone `d` and the one in the inner value
        drop(outer);
        // The drop runs on the trustee after the last handle goes: wait for it with round trips.
        let probe = rt().trustee(0).entrust(());
        for _ in 0..100 {
            if drops.load(Ordering::SeqCst) == 1 {
                break;
            }
            probe.apply(|_| thread::yield_now());
        }
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn apply_then_issued_inside_a_delegated_closure_runs_later() {
        let a = rt().trustee(0).entrust(0u64);
        let b = rt().trustee(0).entrust(0u64);
        let b2 = b.clone();
        a.apply(move |x| {
            *x += 1;
            for _ in 0..3 {
                b2.apply_then(|y| *y += 1, |()| ());
            }
        });
        trust_core::wait_pending();
        assert_eq!((a.apply(|x| *x), b.apply(|y| *y)), (1, 3));
    }
    #[derive(Clone, Copy, Debug, PartialEq)]
    #[repr(align(64))]
    struct Wide([u64; 3]);

    #[derive(Clone, Copy, Debug, PartialEq)]
    #[repr(align(16))]
    struct Narrow(u128);

    fn aligned<R>(r: &R) -> bool {
        (std::ptr::from_ref(r) as usize).is_multiple_of(align_of::<R>())
    }

    #[test]
    fn over_aligned_captures_arguments_and_results_through_apply_async_and_apply_with() {
        let t = rt().trustee(0).entrust(Wide([1, 2, 3]));
        let cap = Wide([10, 20, 30]);
        let narrow = Narrow(u128::MAX - 1);
        let r = t.apply(move |w| {
            assert!(aligned(w) && aligned(&cap) && aligned(&narrow));
            w.0[0] += cap.0[0];
            (*w, narrow, Narrow(7))
        });
        assert!(aligned(&r.0) && aligned(&r.1));
        assert_eq!(r, (Wide([11, 2, 3]), Narrow(u128::MAX - 1), Narrow(7)));
        let big = [Wide([5, 5, 5]); 12]; // 768 bytes: out of line
        let r = t.apply_with(
            |w, (arr, n): ([Wide; 12], Narrow)| {
                assert!(aligned(&arr) && aligned(&n));
                w.0[1] += arr.iter().map(|x| x.0[2]).sum::<u64>() + n.0 as u64;
                [*w; 9]
            },
            (big, Narrow(1)),
        );
        assert!(aligned(&r));
        assert_eq!(r, [Wide([11, 63, 3]); 9]);
        let r = block_on(t.apply_async(move |w| {
            assert!(aligned(&cap));
            (Narrow(u128::from(w.0[1])), [cap; 2])
        }));
        assert!(aligned(&r.0) && aligned(&r.1));
        assert_eq!(r, (Narrow(63), [cap; 2]));
    }
    /// Slices and strings through `#[entrust]` stubs: inline (up to 64 bytes) and boxed copies, elements with
    /// destructors, zero-sized and 16-aligned elements (too aligned for the inline buffer).
    #[trust_core::entrust]
    #[derive(Default)]
    pub struct Bag {
        names: Vec<String>,
        wides: Vec<u128>,
        units: usize,
        text: String,
    }

    #[trust_core::entrust]
    impl Bag {
        pub fn add_names(&mut self, names: &[String]) -> usize {
            self.names.extend_from_slice(names);
            self.names.len()
        }

        pub fn add_wides(&mut self, wides: &[u128]) -> u128 {
            self.wides.extend_from_slice(wides);
            self.wides.iter().sum()
        }

        pub fn add_units(&mut self, units: &[()]) -> usize {
            self.units += units.len();
            self.units
        }

        pub fn push_str(&mut self, s: &str) -> usize {
            self.text.push_str(s);
            self.text.len()
        }

        pub fn fail_with(&mut self, names: &[String]) -> usize {
            panic!("refused {} names", names.len())
        }

        pub fn joined(&self) -> String {
            format!("{}|{}", self.names.join(","), self.text)
        }
    }

    #[test]
    fn entrust_stubs_copy_slices_and_strings_inline_and_boxed() {
        let bag = rt().trustee(0).entrust(Bag::default());
        let short: Vec<String> = vec!["a".into(), "b".into()]; // 48 bytes: inline
        let long: Vec<String> = (0..4).map(|i| i.to_string()).collect(); // 96 bytes: boxed
        assert_eq!(bag.add_names(&short), 2);
        assert_eq!(bag.add_names(&long), 6);
        assert_eq!(bag.add_wides(&[1, 2, 3]), 6);
        assert_eq!(bag.add_wides(&[u128::MAX - 10]), u128::MAX - 4);
        assert_eq!(bag.add_units(&[(); 1000]), 1000);
        assert_eq!(bag.push_str("short"), 5);
        let long_text = "x".repeat(100);
        assert_eq!(bag.push_str(&long_text), 105);
        let caught = catch_unwind(AssertUnwindSafe(|| bag.fail_with(&short)));
        assert!(caught.is_err());
        let caught = catch_unwind(AssertUnwindSafe(|| bag.fail_with(&long)));
        assert!(caught.is_err());
        let joined = bag.joined();
        assert_eq!(joined, format!("a,b,0,1,2,3|short{long_text}"));
        // The caller's slices are untouched (the stubs cloned them).
        assert_eq!((short.len(), long[3].as_str()), (2, "3"));
    }
    #[test]
    fn apply_async_sent_here_and_dropped_on_another_thread_before_its_answer() {
        let drops = Arc::new(AtomicUsize::new(0));
        let value = rt().trustee(0).entrust(0u64);
        let idle = Waker::from(Arc::new(CountWakes(AtomicUsize::new(0))));
        for _ in 0..3 {
            let d = drops.clone();
            let mut fut = value.apply_async(move |v| {
                *v += 1;
                // The result carries a drop counter: dropped once, wherever the future went.
                (CountsDrops(d), *v)
            });
            match poll(&mut fut, &idle) {
                Poll::Ready(r) => drop(r),
                Poll::Pending => thread::scope(|s| {
                    s.spawn(move || drop(fut));
                }),
            }
            // A future in flight is not ordered with this thread's later requests (README): no check here.
        }
        let probe = rt().trustee(0).entrust(());
        for _ in 0..100 {
            if drops.load(Ordering::SeqCst) == 3 {
                break;
            }
            probe.apply(|_| thread::yield_now());
        }
        // Every request ran once and every result was dropped once.
        assert_eq!(drops.load(Ordering::SeqCst), 3);
        assert_eq!(value.apply(|v| *v), 3);
    }
    /// A value whose destructor delegates to another value of the same trustee (it runs on the trustee).
    struct DropsInto(Trust<Vec<u32>>, u32);

    impl Drop for DropsInto {
        fn drop(&mut self) {
            let n = self.1;
            self.0.apply(move |log| log.push(n));
        }
    }

    #[test]
    fn values_entrusted_on_the_trustee_and_destructors_that_delegate() {
        let log = rt().trustee(0).entrust(Vec::<u32>::new());
        let home = rt().trustee(0).entrust(0u8);
        let l = log.clone();
        // Entrusted from inside a delegated closure, handed back to this thread.
        let made: Vec<Trust<DropsInto>> = home.apply(move |_| {
            (1..=3)
                .map(|i| trust_core::local_trustee().entrust(DropsInto(l.clone(), i)))
                .collect()
        });
        let again = made[1].clone();
        drop(made);
        // Two values went with their last handles; their destructors ran on the trustee and delegated.
        let probe = rt().trustee(0).entrust(());
        for _ in 0..100 {
            if log.apply(|v| v.len()) == 2 {
                break;
            }
            probe.apply(|_| thread::yield_now());
        }
        let mut seen = log.apply(|v| v.clone());
        seen.sort_unstable();
        assert_eq!(seen, [1, 3]);
        let Ok(last) = again.try_unwrap() else {
            panic!("last handle")
        };
        drop(last); // here, on this thread: its destructor delegates from a plain thread
        let mut seen = log.apply(|v| v.clone());
        seen.sort_unstable();
        assert_eq!(seen, [1, 2, 3]);
    }

    #[test]
    fn values_entrusted_and_dropped_by_threads_that_never_call_are_dropped_without_a_probe() {
        const THREADS: usize = 4;
        const EACH: usize = if cfg!(miri) { 50 } else { 2_000 };
        let drops = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let d = drops.clone();
                thread::spawn(move || {
                    for _ in 0..EACH {
                        drop(rt().trustee(0).entrust(CountsDrops(d.clone())));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // No round trip to the trustee here (a probe would wake it): only the mail must get the drops done.
        let wait = |secs| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
            while drops.load(Ordering::SeqCst) < THREADS * EACH
                && std::time::Instant::now() < deadline
            {
                thread::sleep(std::time::Duration::from_millis(1));
            }
            drops.load(Ordering::SeqCst)
        };
        // Under Miri the clock is virtual and slow to interpret: 40 s of it, unprobed, for the last drop.
        let unprobed = wait(40);
        let probed = {
            rt().trustee(0).entrust(()).apply(|_| ());
            wait(20)
        };
        assert_eq!((unprobed, probed), (THREADS * EACH, THREADS * EACH));
    }
}
