//! `GhostTreiberStack<'brand>`: a lock-free multi-producer multi-consumer stack of indices.
//!
//! The algorithm is Treiber's ("Systems Programming: Coping with Parallelism", R. K. Treiber, IBM Almaden
//! RJ 5118, 1986), over a fixed pool of nodes named by their index, as halo's `GhostTreiberStack`:
//! `next[i]` is the index below `i`, and `head` is the top. The elements *are* the indices `0..capacity`,
//! so there is no allocation per push and nothing to reclaim.
//!
//! **ABA.** A plain index head is not enough: thread A reads `head = a` and `next[a] = b`; thread B pops `a`,
//! pops `b`, pushes `a` back; A's `compare_exchange(a -> b)` would succeed and put `b`, which B holds,
//! back on top. So `head` is one `AtomicU64` holding a 32-bit *tag* next to the 32-bit index, and every
//! successful update increments the tag: A's CAS compares the tag too, and fails because B's three updates
//! moved it. The tag wraps after 2^32 updates; ABA then needs a thread to stall between its load and its
//! CAS for exactly a multiple of 2^32 updates of this stack. The loom model `loom_model::aba_schedule`
//! runs that schedule.
//!
//! **Contract.** An index is in the stack at most once: push an index you popped (or never pushed). Pushing
//! an index that is already in the stack links it twice and loses elements (or makes a cycle that pops
//! forever) but never breaks memory safety: every access is atomic.

use core::fmt;
use core::marker::PhantomData;

use super::sync::{AtomicU32, AtomicU64, CachePadded, Ordering};
use super::token::InvariantLifetime;

/// The "no index" value of `head` and `next`.
const NIL: u32 = u32::MAX;

#[inline(always)]
fn pack(tag: u32, index: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(index)
}

#[inline(always)]
fn index_of(head: u64) -> u32 {
    head as u32
}

#[inline(always)]
fn tag_of(head: u64) -> u32 {
    (head >> 32) as u32
}

/// A lock-free stack of the indices `0..capacity`, shared by any number of threads.
///
/// ```
/// use trust_core::ghost::{GhostToken, GhostTreiberStack};
///
/// GhostToken::new(|_token| {
///     let free = GhostTreiberStack::new(8);
///     free.push(3);
///     free.push_batch(&[5, 6]); // one CAS for the whole batch; 5 ends on top
///     assert_eq!(free.pop(), Some(5));
///     assert_eq!(free.pop(), Some(6));
///     assert_eq!(free.pop(), Some(3));
///     assert_eq!(free.pop(), None);
/// });
/// ```
pub struct GhostTreiberStack<'brand> {
    /// Tag (high 32 bits) and index (low 32 bits) of the top.
    head: CachePadded<AtomicU64>,
    next: Box<[AtomicU32]>,
    _brand: InvariantLifetime<'brand>,
}

impl<'brand> GhostTreiberStack<'brand> {
    /// An empty stack for the indices `0..capacity`.
    ///
    /// # Panics
    ///
    /// If `capacity >= u32::MAX` (indices are stored in 32 bits, next to the tag).
    pub fn new(capacity: usize) -> Self {
        assert!(
            capacity < NIL as usize,
            "GhostTreiberStack::new: capacity {capacity} is too large: indices are stored in 32 bits, so at \
             most {} indices",
            NIL - 1
        );
        Self {
            head: CachePadded(AtomicU64::new(pack(0, NIL))),
            next: (0..capacity).map(|_| AtomicU32::new(NIL)).collect(),
            _brand: PhantomData,
        }
    }

    /// How many indices the stack can hold (valid indices are `0..capacity()`).
    pub fn capacity(&self) -> usize {
        self.next.len()
    }

    #[inline(always)]
    #[track_caller]
    fn slot(&self, index: usize) -> (u32, &AtomicU32) {
        match self.next.get(index) {
            Some(next) => (index as u32, next),
            None => out_of_range(index, self.next.len()),
        }
    }

    /// Whether the stack was empty at some moment during the call.
    pub fn is_empty(&self) -> bool {
        // Relaxed: a snapshot; nothing is read through it.
        index_of(self.head.load(Ordering::Relaxed)) == NIL
    }

    /// Pushes `index` on top.
    ///
    /// # Panics
    ///
    /// If `index >= capacity()`, naming both.
    #[track_caller]
    pub fn push(&self, index: usize) {
        let (index, next) = self.slot(index);
        // Relaxed: the CAS below re-checks the head; a stale value only costs a retry.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // Relaxed: published by the Release CAS below, which a popper acquires.
            next.store(index_of(head), Ordering::Relaxed);
            // Release: a popper that acquires this head sees `next[index]` (and whatever the caller wrote
            // before pushing the index). Failure Relaxed: we only retry with the value.
            match self.head.compare_exchange_weak(
                head,
                pack(tag_of(head).wrapping_add(1), index),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Pushes all of `indices` with one successful CAS: `indices[0]` ends on top, `indices[len - 1]` just
    /// above the old top. The batch is linked privately first, so the shared head is touched once (plus
    /// retries under contention) instead of once per index.
    ///
    /// # Panics
    ///
    /// If an index is `>= capacity()`, naming it (before anything is pushed).
    #[track_caller]
    pub fn push_batch(&self, indices: &[usize]) {
        let Some((&first, rest)) = indices.split_first() else {
            return;
        };
        let (first, mut last) = self.slot(first);
        for &index in rest {
            let (index, _) = self.slot(index);
            // Relaxed: these nodes are ours until the Release CAS below publishes them.
            last.store(index, Ordering::Relaxed);
            last = &self.next[index as usize];
        }
        // Relaxed: as in `push`.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // Relaxed: published by the Release CAS.
            last.store(index_of(head), Ordering::Relaxed);
            // Release: publishes the whole chain, as in `push`.
            match self.head.compare_exchange_weak(
                head,
                pack(tag_of(head).wrapping_add(1), first),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Pops the top index, or `None` if the stack is empty.
    pub fn pop(&self) -> Option<usize> {
        // Acquire: synchronizes with the Release CAS that pushed this top, so `next[top]` below is the
        // value that push wrote (or a later one, which the tag check then rejects).
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let top = index_of(head);
            if top == NIL {
                return None;
            }
            // Relaxed: ordered by the Acquire on `head`. It may be overwritten meanwhile by a thread that
            // popped `top` and pushed it again; then the tag has moved and the CAS fails.
            let below = self.next[top as usize].load(Ordering::Relaxed);
            // Success Acquire: we take ownership of `top` and of what its pusher published (the release
            // sequence of the pushing CAS continues through every later CAS on `head`). Failure Acquire:
            // the new head is read through on the next round, as by the load above.
            match self.head.compare_exchange_weak(
                head,
                pack(tag_of(head).wrapping_add(1), below),
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(top as usize),
                Err(now) => head = now,
            }
        }
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn out_of_range(index: usize, capacity: usize) -> ! {
    panic!("GhostTreiberStack: index {index} is out of range for a stack of capacity {capacity}")
}

impl fmt::Debug for GhostTreiberStack<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GhostTreiberStack")
            .field("capacity", &self.capacity())
            .field("is_empty", &self.is_empty())
            .finish()
    }
}

/// Loom models of the stack: `RUSTFLAGS="--cfg loom" cargo test -p trust-core --lib --release loom_model`.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;

    /// The ABA schedule: the stack holds `0` over `1`. Thread A pops once; thread B pops `0`, pops `1` and
    /// pushes `0` back. In the interleaving where A reads `head = 0, next[0] = 1` and stalls while B runs,
    /// an untagged CAS would succeed and hand out `1` twice. Every index must end up in exactly one place.
    #[test]
    fn aba_schedule() {
        loom::model(|| {
            let stack = Arc::new(GhostTreiberStack::<'static>::new(2));
            stack.push(1);
            stack.push(0);
            let a = {
                let stack = stack.clone();
                loom::thread::spawn(move || stack.pop())
            };
            let b = {
                let stack = stack.clone();
                loom::thread::spawn(move || {
                    let first = stack.pop();
                    let second = stack.pop();
                    if let Some(first) = first {
                        stack.push(first);
                    }
                    second
                })
            };
            let mut seen = [0u32; 2];
            for taken in [a.join().unwrap(), b.join().unwrap()].into_iter().flatten() {
                seen[taken] += 1;
            }
            while let Some(left) = stack.pop() {
                seen[left] += 1;
            }
            assert_eq!(seen, [1, 1], "every index exactly once");
        });
    }

    /// Two pushers (one with a batch) and a popper: every index is popped exactly once in the end.
    #[test]
    fn push_batch_races_push_and_pop() {
        loom::model(|| {
            let stack = Arc::new(GhostTreiberStack::<'static>::new(3));
            stack.push(0);
            let batch = {
                let stack = stack.clone();
                loom::thread::spawn(move || stack.push_batch(&[1, 2]))
            };
            let popper = {
                let stack = stack.clone();
                loom::thread::spawn(move || stack.pop())
            };
            batch.join().unwrap();
            let mut seen = [0u32; 3];
            if let Some(taken) = popper.join().unwrap() {
                seen[taken] += 1;
            }
            while let Some(left) = stack.pop() {
                seen[left] += 1;
            }
            assert_eq!(seen, [1, 1, 1]);
        });
    }
}
