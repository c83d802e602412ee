//! Parallel read, then sequential commit: compute on every core under `&GhostToken`, then apply the
//! results under `&mut GhostToken`, with no lock and no atomic on the cells.
//!
//! The read phase runs on scoped threads that share `&token`, so they can `borrow` any cell of the brand
//! but cannot `borrow_mut` one (that needs `&mut GhostToken`, which the compiler refuses them). Their
//! results are collected in shard order and handed, with `&mut token`, to the commit phase on the
//! calling thread. The token never leaves the caller's borrow, so a panicking reader cannot lose it:
//! the panic propagates out of this call after every reader has stopped, and the commit does not run.

use core::ops::Range;
use std::num::NonZeroUsize;
use std::thread;

use super::token::GhostToken;

/// Which part of the work a read-phase call should do: shard `index` of `count` (`index < count`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 0-based position of this shard; results are returned in this order.
    pub index: usize,
    /// How many shards run in this read phase.
    pub count: usize,
}

impl Shard {
    /// This shard's part of `0..len`: contiguous, in order, sizes differing by at most one.
    ///
    /// Panics unless `index < count` (a hand-made `Shard` outside its read phase's).
    ///
    /// ```
    /// use trust_core::ghost::Shard;
    ///
    /// let parts: Vec<_> = (0..3).map(|index| Shard { index, count: 3 }.range(10)).collect();
    /// assert_eq!(parts, [0..4, 4..7, 7..10]);
    /// ```
    pub fn range(self, len: usize) -> Range<usize> {
        assert!(
            self.index < self.count,
            "`Shard {{ index: {}, count: {} }}` is not a shard: `index` must be below `count`",
            self.index,
            self.count
        );
        let (base, extra) = (len / self.count, len % self.count);
        let start = self.index * base + self.index.min(extra);
        let size = base + usize::from(self.index < extra);
        start..start + size
    }
}

/// Runs `read_phase` on every available core under `&token`, then `commit_phase` with the results (in
/// shard order) under `&mut token`; returns what `commit_phase` returns.
///
/// The number of shards is `std::thread::available_parallelism()`; use
/// [`parallel_read_then_commit_with`] to choose it.
///
/// ```
/// use trust_core::ghost::{parallel_read_then_commit, GhostCell, GhostToken};
///
/// GhostToken::new(|mut token| {
///     let cells: Vec<GhostCell<u64>> = (1..=100).map(GhostCell::new).collect();
///     // Read phase: each shard sums its part. Commit: store every value's share of the total.
///     let total = parallel_read_then_commit(
///         &mut token,
///         |shard, token| cells[shard.range(cells.len())].iter().map(|c| *c.borrow(token)).sum::<u64>(),
///         |partial_sums, token| {
///             let total: u64 = partial_sums.iter().sum();
///             for cell in &cells {
///                 *cell.borrow_mut(token) *= 1000;
///                 *cell.borrow_mut(token) /= total;
///             }
///             total
///         },
///     );
///     assert_eq!(total, 5050);
///     assert_eq!(*cells[99].borrow(&token), 100 * 1000 / 5050);
/// });
/// ```
pub fn parallel_read_then_commit<'brand, U: Send, R>(
    token: &mut GhostToken<'brand>,
    read_phase: impl Fn(Shard, &GhostToken<'brand>) -> U + Sync,
    commit_phase: impl FnOnce(Vec<U>, &mut GhostToken<'brand>) -> R,
) -> R {
    let shards = thread::available_parallelism().map_or(1, NonZeroUsize::get);
    parallel_read_then_commit_with(shards, token, read_phase, commit_phase)
}

/// [`parallel_read_then_commit`] with `shards` read-phase calls: shard 0 on the calling thread, the
/// others on scoped threads.
///
/// # Panics
///
/// If `shards` is 0, if a read-phase call panics (after all of them have finished; the commit phase
/// does not run then), or if the system cannot start a thread for a shard (`std::thread::scope`'s `spawn`
/// panics then; the shards already started finish first): one thread per shard, so ask for about as many
/// as there are cores, not thousands.
pub fn parallel_read_then_commit_with<'brand, U: Send, R>(
    shards: usize,
    token: &mut GhostToken<'brand>,
    read_phase: impl Fn(Shard, &GhostToken<'brand>) -> U + Sync,
    commit_phase: impl FnOnce(Vec<U>, &mut GhostToken<'brand>) -> R,
) -> R {
    assert!(
        shards > 0,
        "parallel_read_then_commit_with: shards must be at least 1 (got 0); pass the number of read-phase \
         calls to run, e.g. std::thread::available_parallelism()"
    );
    let shared: &GhostToken<'brand> = token;
    let read_phase = &read_phase;
    let results = thread::scope(|scope| {
        let others: Vec<_> = (1..shards)
            .map(|index| {
                scope.spawn(move || {
                    read_phase(
                        Shard {
                            index,
                            count: shards,
                        },
                        shared,
                    )
                })
            })
            .collect();
        let mut results = Vec::with_capacity(shards);
        results.push(read_phase(
            Shard {
                index: 0,
                count: shards,
            },
            shared,
        ));
        for handle in others {
            match handle.join() {
                Ok(result) => results.push(result),
                // Re-raise the reader's own panic payload, so its message reaches the caller.
                Err(payload) => std::panic::resume_unwind(payload),
            }
        }
        results
    });
    commit_phase(results, token)
}
