//! The run-time half of `lock_all!` / `try_lock_all!`: the acquisition [`Plan`] (computed in a
//! `const` block), the address tie-break, the per-lock acquire calls, and [`LockAllError`].
//!
//! What the macro generates for `lock_all!(&mut key, a, read b)` is, in outline (the real
//! expansion is shown in `docs/lock.md`):
//!
//! ```text
//! fn __trust_lock_all<'k, K, L0, L1, G0, G1>(key: &'k mut K, l0: &'k L0, l1: &'k L1) -> (G0, G1)
//! where K: LockKey, L0: Lock + Lockable<Guard<'k> = G0>, L1: Lock + Sharable<ReadGuard<'k> = G1>,
//!       L0::Rank: LockAfter<K::Held>, L1::Rank: LockAfter<K::Held>      // the nesting rule
//! {
//!     let plan = const { Plan::<2>::new([rank_of::<L0>(), rank_of::<L1>()]) }; // by rustc
//!     let order = match order(&plan, [lock_id(l0), lock_id(l1)]) { .. };   // ties: by address
//!     let (mut g0, mut g1) = (None, None);
//!     match order[0] { 0 => g0 = Some(acquire(l0)), 1 => g1 = Some(acquire_read(l1)), _ => .. }
//!     match order[1] { 0 => g0 = Some(acquire(l0)), 1 => g1 = Some(acquire_read(l1)), _ => .. }
//!     (acquired(g0), acquired(g1))
//! }
//! __trust_lock_all(key(&mut key), &(a), &(b))
//! ```
//!
//! No heap, no `dyn`: each lock keeps its own type, the order is a `[usize; N]` on the stack, and
//! each `match` dispatches statically. When no two ranks tie, `plan` is a constant and every
//! `match` folds to one direct call: the acquisition is straight-line code, in rank order. A panic
//! part-way (a raw lock that panics) drops the guards already in their `Option`s, which releases
//! those locks.
//!
//! Deadlock freedom: every multi-lock acquisition, here and in the sorting collections, takes its
//! locks in increasing `(RANK, address)` order, and a thread holding locks (through a
//! [`NestedKey`]) only takes strictly higher ranks. So all threads acquire along
//! one global order and no cycle of waiters can form. (The two collections that do not sort stay
//! out of cycles another way: `OwnedLockCollection`'s locks are reachable only through it, in its
//! one order, and `RetryingLockCollection` never waits while it holds a lock.)

use std::fmt;

use super::key::{LockKey, NestedKey};
use super::lockable::{Lock, Sharable};
use super::rank::Rank;

/// Why `try_lock_all!` took nothing (and what `lock_all!` panics with, for `Duplicate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockAllError {
    /// Some lock was held elsewhere; every lock taken so far was released.
    WouldBlock,
    /// Two arguments (0-based positions after the key) are the same lock; nothing was taken.
    Duplicate {
        /// The earlier argument.
        first: usize,
        /// The later argument.
        second: usize,
    },
}

impl fmt::Display for LockAllError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LockAllError::WouldBlock => f.write_str(
                "a lock was held elsewhere, so nothing was taken (try again, or use `lock_all!` to wait)",
            ),
            LockAllError::Duplicate { first, second } => write!(
                f,
                "locks #{} and #{} (counting from 1 after the key) are the same lock; a thread \
                 would wait for itself forever: pass each lock once",
                first + 1,
                second + 1
            ),
        }
    }
}

impl std::error::Error for LockAllError {}

impl LockAllError {
    /// `lock_all!`'s response to an error: panic with its message, at the caller's line.
    #[cold]
    #[inline(never)]
    #[track_caller]
    pub fn panic(self) -> ! {
        panic!("lock_all!: {self}")
    }
}

/// The acquisition order of one `lock_all!` call, computed from the ranks at compile time.
#[derive(Debug, Clone, Copy)]
pub struct Plan<const N: usize> {
    /// Argument positions, sorted by rank (stable).
    order: [usize; N],
    /// `ranks[order[i]]`, for finding runs of equal rank.
    sorted_ranks: [u32; N],
    /// Whether two locks share a rank: only then is there work left for run time.
    ties: bool,
}

impl<const N: usize> Plan<N> {
    /// Sorts the argument positions by rank. A `const fn`: the macro evaluates it in a `const`
    /// block, so no sorting of ranks happens at run time.
    pub const fn new(ranks: [u32; N]) -> Self {
        let mut order = [0; N];
        let mut i = 0;
        while i < N {
            order[i] = i;
            i += 1;
        }
        // Insertion sort: N is the number of arguments of one call, and this runs in the compiler.
        let mut i = 1;
        while i < N {
            let mut j = i;
            while j > 0 && ranks[order[j - 1]] > ranks[order[j]] {
                let swap = order[j];
                order[j] = order[j - 1];
                order[j - 1] = swap;
                j -= 1;
            }
            i += 1;
        }
        let mut sorted_ranks = [0; N];
        let mut ties = false;
        let mut i = 0;
        while i < N {
            sorted_ranks[i] = ranks[order[i]];
            if i > 0 && sorted_ranks[i - 1] == sorted_ranks[i] {
                ties = true;
            }
            i += 1;
        }
        Plan {
            order,
            sorted_ranks,
            ties,
        }
    }

    /// The positions in acquisition order, for a plan without ties (used by tests).
    pub const fn rank_order(&self) -> [usize; N] {
        self.order
    }

    /// Whether some locks share a rank and so need the run-time address order.
    pub const fn has_ties(&self) -> bool {
        self.ties
    }
}

/// The final order: the plan's, with each run of equal rank sorted by lock address. Errs if two
/// positions are the same lock (same address; a lock has one type, so it can only tie with itself).
#[inline]
pub fn order<const N: usize>(plan: &Plan<N>, ids: [usize; N]) -> Result<[usize; N], LockAllError> {
    let mut order = plan.order;
    if !plan.ties {
        return Ok(order);
    }
    // Insertion sort inside each run of equal rank: runs are short (they are arguments of one
    // macro call), and sorted input, the common case, costs one comparison per element.
    for i in 1..N {
        let mut j = i;
        while j > 0 && plan.sorted_ranks[j - 1] == plan.sorted_ranks[j] {
            let (earlier, later) = (ids[order[j - 1]], ids[order[j]]);
            if earlier == later {
                let (a, b) = (order[j - 1], order[j]);
                return Err(LockAllError::Duplicate {
                    first: a.min(b),
                    second: a.max(b),
                });
            }
            if earlier < later {
                break;
            }
            order.swap(j - 1, j);
            j -= 1;
        }
    }
    Ok(order)
}

/// A lock's rank number, for the `const` plan.
pub const fn rank_of<L: Lock + ?Sized>() -> u32 {
    <L::Rank as Rank>::RANK
}

/// A lock's address, for ordering ties and spotting duplicates.
#[inline]
pub fn lock_id<L: Lock + ?Sized>(lock: &L) -> usize {
    lock.lock_id()
}

/// Blocks until `lock` is held exclusively; returns its guard. For `lock_all!`'s expansion only (this and
/// the three below), which calls it in the planned order while it holds the key it was given.
#[inline]
pub fn acquire<L: Lock + ?Sized>(lock: &L) -> L::Guard<'_> {
    // SAFETY: the expansion holds the key (above). A `Lock` reports exactly itself as its raw lock, which
    // we then hold exclusively; the guard takes over releasing it.
    unsafe {
        lock.raw_lock();
        lock.guard()
    }
}

/// Takes `lock` exclusively if it is free.
#[inline]
pub fn try_acquire<L: Lock + ?Sized>(lock: &L) -> Option<L::Guard<'_>> {
    // SAFETY: as in `acquire`, once the try succeeded.
    unsafe { lock.raw_try_lock().then(|| lock.guard()) }
}

/// Blocks until `lock` is held shared; returns its read guard.
#[inline]
pub fn acquire_read<L: Lock + Sharable + ?Sized>(lock: &L) -> L::ReadGuard<'_> {
    // SAFETY: the expansion holds the key. A `Lock` reports exactly itself, which we then hold shared;
    // the guard releases it.
    unsafe {
        lock.raw_lock_shared();
        lock.read_guard()
    }
}

/// Takes `lock` shared if no writer holds it.
#[inline]
pub fn try_acquire_read<L: Lock + Sharable + ?Sized>(lock: &L) -> Option<L::ReadGuard<'_>> {
    // SAFETY: as in `acquire_read`, once the try succeeded.
    unsafe { lock.raw_try_lock_shared().then(|| lock.read_guard()) }
}

/// Unwraps a guard slot that the acquisition loop filled (every position appears once in the
/// order, so it always is).
#[inline]
#[track_caller]
pub fn acquired<G>(slot: Option<G>) -> G {
    match slot {
        Some(guard) => guard,
        None => unreachable_step(),
    }
}

/// The acquisition loop met a position outside the call's arguments: a bug in `lock_all!`.
#[cold]
#[inline(never)]
#[track_caller]
pub fn unreachable_step() -> ! {
    unreachable!("lock_all!: the acquisition order does not match the arguments (a trust-core bug)")
}

/// Reborrows the key argument; its signature is what rejects a key passed by value or a non-key.
#[inline]
pub fn key<K: LockKey + ?Sized>(key: &mut K) -> &mut K {
    key
}

/// The key for the next level down, holding rank `H` (the highest rank this call took).
#[inline]
pub fn nested_key<'k, K: LockKey + ?Sized, H: Rank>(key: &'k mut K) -> NestedKey<'k, H> {
    NestedKey::new(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_sorts_by_rank_and_keeps_argument_order_for_ties() {
        let plan = Plan::new([3, 1, 2, 1]);
        assert_eq!(plan.rank_order(), [1, 3, 2, 0]);
        assert!(plan.has_ties());
        let plan = Plan::new([5, 4, 0]);
        assert_eq!(plan.rank_order(), [2, 1, 0]);
        assert!(!plan.has_ties());
    }

    #[test]
    fn ties_are_ordered_by_address_and_distinct_ranks_are_not() {
        // Ranks [1, 0, 1, 0]: the rank-0 run {1, 3} and the rank-1 run {0, 2}, each by address.
        let plan = Plan::new([1, 0, 1, 0]);
        assert_eq!(order(&plan, [40, 30, 10, 20]), Ok([3, 1, 2, 0]));
        // Without ties the addresses do not matter.
        let plan = Plan::new([2, 1]);
        assert_eq!(order(&plan, [1, 2]), Ok([1, 0]));
    }

    #[test]
    fn duplicates_are_reported_by_argument_position() {
        let plan = Plan::new([0, 0, 0]);
        assert_eq!(
            order(&plan, [7, 9, 7]),
            Err(LockAllError::Duplicate {
                first: 0,
                second: 2
            })
        );
    }
}
