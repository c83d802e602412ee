//! `GhostChaseLevDeque<'brand>`: a fixed-capacity work-stealing deque of `usize`, with an owner handle and
//! any number of stealers.
//!
//! The algorithm is Chase and Lev's ("Dynamic Circular Work-Stealing Deque", SPAA 2005) with the C11
//! orderings and fences of Lê, Pop, Cohen and Zappa Nardelli, "Correct and Efficient Work-Stealing for
//! Weak Memory Models" (PPoPP 2013, figure 1), without the resizing: the ring has a fixed power-of-two
//! capacity and `push_bottom` reports a full deque instead of growing (halo's `GhostChaseLevDeque` does the
//! same). `top` and `bottom` are monotone counters; slot `i` of the ring is `i & mask`.
//!
//! The owner pushes and pops at the bottom (LIFO, cache-warm); stealers take from the top (FIFO, the oldest
//! work). Only the last element is contended: owner and stealers race for it with a CAS on `top`. The
//! two `SeqCst` fences (owner: after lowering `bottom`, before reading `top`; stealer: after reading `top`,
//! before reading `bottom`) make sure that when both go for the last element, at least one of them sees the
//! other and backs off.
//!
//! The owner-only rule is in the types: [`GhostChaseLevDeque`] *is* the owner handle (`Send`, so it can move
//! to its worker thread, but neither `Sync` nor `Clone`, so only one thread at a time can push or pop), and
//! [`GhostStealer`] (`Clone + Send + Sync`) has only [`steal`](GhostStealer::steal) (and `is_empty`).

use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;

use super::sync::{Arc, AtomicIsize, AtomicUsize, CachePadded, Ordering, fence};
use super::token::InvariantLifetime;

struct Inner {
    /// Next index to steal; only ever increases (by a CAS).
    top: CachePadded<AtomicIsize>,
    /// Next index to push; written only by the owner.
    bottom: CachePadded<AtomicIsize>,
    slots: Box<[AtomicUsize]>,
    mask: usize,
}

impl Inner {
    #[inline(always)]
    fn slot(&self, index: isize) -> &AtomicUsize {
        // In bounds: `index & mask < slots.len()`. The compiler sees the mask, so no bounds check remains
        // in practice; keeping the check keeps this module free of `unsafe`.
        &self.slots[index as usize & self.mask]
    }
}

/// The owner handle of a work-stealing deque of `usize` values of brand `'brand`: `push_bottom` and
/// `pop_bottom`. Hand out [`GhostStealer`]s with [`stealer`](Self::stealer).
///
/// ```
/// use trust_core::ghost::{GhostChaseLevDeque, GhostToken};
///
/// GhostToken::new(|_token| {
///     let owner = GhostChaseLevDeque::new(4);
///     let stealer = owner.stealer();
///     for job in 1..=3 {
///         owner.push_bottom(job).unwrap();
///     }
///     let stolen = std::thread::scope(|s| s.spawn(|| stealer.steal()).join().unwrap());
///     assert_eq!(stolen, Some(1)); // stealers take the oldest
///     assert_eq!(owner.pop_bottom(), Some(3)); // the owner the newest
///     assert_eq!(owner.pop_bottom(), Some(2));
///     assert_eq!(owner.pop_bottom(), None);
/// });
/// ```
pub struct GhostChaseLevDeque<'brand> {
    inner: Arc<Inner>,
    _brand: InvariantLifetime<'brand>,
    /// `Cell` is `Send` but not `Sync`: the owner moves between threads but is never shared.
    _not_sync: PhantomData<Cell<()>>,
}

/// A handle that steals from the top of a [`GhostChaseLevDeque`]; clone it for every thief.
pub struct GhostStealer<'brand> {
    inner: Arc<Inner>,
    _brand: InvariantLifetime<'brand>,
}

impl<'brand> GhostChaseLevDeque<'brand> {
    /// The one value that cannot be pushed: the initial content of every slot, so a stealer that read a
    /// slot nobody wrote would be caught by a debug assertion.
    pub const NONE: usize = usize::MAX;

    /// The largest capacity [`new`](Self::new) accepts: the largest power of two whose slots (one `usize`
    /// each) fit in `isize::MAX` bytes, the most any allocation can hold (2^59 on 64-bit targets). It also
    /// keeps `bottom - top` far from overflowing `isize`.
    pub const MAX_CAPACITY: usize = (isize::MAX as usize / size_of::<usize>()).div_ceil(2);

    /// An empty deque that holds at most `capacity` values.
    ///
    /// # Panics
    ///
    /// If `capacity` is not a power of two, or exceeds [`MAX_CAPACITY`](Self::MAX_CAPACITY) (2^59 on
    /// 64-bit targets), naming it.
    pub fn new(capacity: usize) -> Self {
        assert!(
            capacity.is_power_of_two(),
            "GhostChaseLevDeque::new: capacity {capacity} must be a power of two (the ring index is `i & (capacity - 1)`)"
        );
        // Checked before allocating: a larger ring cannot be allocated at all (its size overflows
        // `isize`), and the allocation would fail with a message that does not name the deque.
        assert!(
            capacity <= Self::MAX_CAPACITY,
            "GhostChaseLevDeque::new: capacity {capacity} is too large: at most {} (2^{}) values, whose slots fit \
             in isize::MAX bytes",
            Self::MAX_CAPACITY,
            Self::MAX_CAPACITY.trailing_zeros()
        );
        Self {
            inner: Arc::new(Inner {
                top: CachePadded(AtomicIsize::new(0)),
                bottom: CachePadded(AtomicIsize::new(0)),
                slots: (0..capacity)
                    .map(|_| AtomicUsize::new(Self::NONE))
                    .collect(),
                mask: capacity - 1,
            }),
            _brand: PhantomData,
            _not_sync: PhantomData,
        }
    }

    /// A new stealer of this deque.
    pub fn stealer(&self) -> GhostStealer<'brand> {
        GhostStealer {
            inner: self.inner.clone(),
            _brand: PhantomData,
        }
    }

    /// How many values the deque can hold.
    pub fn capacity(&self) -> usize {
        self.inner.slots.len()
    }

    /// How many values the deque holds (exact for the owner up to concurrent steals, which only lower it).
    pub fn len(&self) -> usize {
        // Relaxed: `bottom` is ours; `top` is a snapshot.
        let b = self.inner.bottom.load(Ordering::Relaxed);
        let t = self.inner.top.load(Ordering::Relaxed);
        (b - t).max(0) as usize
    }

    /// Whether [`len`](Self::len) is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pushes `value` at the bottom; gives it back as `Err` if the deque is full.
    ///
    /// # Panics
    ///
    /// If `value == GhostChaseLevDeque::NONE`.
    #[inline]
    #[track_caller]
    pub fn push_bottom(&self, value: usize) -> Result<(), usize> {
        if value == Self::NONE {
            pushed_none();
        }
        let inner = &*self.inner;
        // Relaxed: only the owner (this thread) writes `bottom`.
        let b = inner.bottom.load(Ordering::Relaxed);
        // Acquire: pairs with the stealers' CAS on `top`; a stealer that moved `top` past slot `t - 1`
        // has finished reading that slot before we overwrite it below.
        let t = inner.top.load(Ordering::Acquire);
        if b - t >= inner.slots.len() as isize {
            return Err(value);
        }
        // Relaxed: published by the Release fence and the `bottom` store below.
        inner.slot(b).store(value, Ordering::Relaxed);
        // Release fence: a stealer that reads the new `bottom` (Acquire) also sees the slot written above.
        fence(Ordering::Release);
        // Relaxed: ordered after the slot write by the fence.
        inner.bottom.store(b + 1, Ordering::Relaxed);
        Ok(())
    }

    /// Pops the newest value, or `None` if the deque is empty.
    #[inline]
    pub fn pop_bottom(&self) -> Option<usize> {
        let inner = &*self.inner;
        // Relaxed: only the owner writes `bottom`.
        let b = inner.bottom.load(Ordering::Relaxed) - 1;
        // Relaxed: reserve slot `b` before looking at `top`; the SeqCst fence orders the two.
        inner.bottom.store(b, Ordering::Relaxed);
        // SeqCst fence: the store to `bottom` above and the load of `top` below must not be reordered
        // (store-load); with the stealer's fence, a stealer racing for slot `b` either sees the lowered
        // `bottom` and backs off, or we see its raised `top`.
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence.
        let t = inner.top.load(Ordering::Relaxed);
        if t > b {
            // Empty: restore `bottom`. Relaxed: only the owner reads it without a fence-pairing.
            inner.bottom.store(b + 1, Ordering::Relaxed);
            return None;
        }
        // Relaxed: we wrote this slot ourselves (or a push on this thread did).
        let value = inner.slot(b).load(Ordering::Relaxed);
        if t == b {
            // The last value: race the stealers for it. SeqCst as in Lê et al.; failure Relaxed (we give
            // up). Only one CAS from `t` to `t + 1` succeeds, so the value goes to exactly one taker.
            let won = inner
                .top
                .compare_exchange(t, t + 1, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok();
            // Relaxed: the deque is empty either way (`top == b + 1`).
            inner.bottom.store(b + 1, Ordering::Relaxed);
            return won.then_some(value);
        }
        debug_assert_ne!(value, Self::NONE, "read a slot nobody wrote");
        Some(value)
    }
}

impl<'brand> GhostStealer<'brand> {
    /// Steals the oldest value, or `None` if the deque looked empty. Lock-free: it retries only when
    /// another taker won the value it went for (so some thread made progress).
    #[inline]
    pub fn steal(&self) -> Option<usize> {
        let inner = &*self.inner;
        loop {
            // Acquire: pairs with other takers' CAS on `top`, as in Lê et al.
            let t = inner.top.load(Ordering::Acquire);
            // SeqCst fence: the load of `top` above and of `bottom` below must not be reordered; pairs
            // with the owner's fence in `pop_bottom` (see there).
            fence(Ordering::SeqCst);
            // Acquire: pairs with the owner's Release fence in `push_bottom`, so slot `t` is written.
            let b = inner.bottom.load(Ordering::Acquire);
            if t >= b {
                return None;
            }
            // Relaxed: made visible by the Acquire load of `bottom`. If the owner overwrites this slot
            // meanwhile (after the ring wrapped), `top` has moved past `t` and the CAS below fails.
            let value = inner.slot(t).load(Ordering::Relaxed);
            // SeqCst as in Lê et al.: the CAS decides which taker gets slot `t`. Failure Relaxed: retry.
            if inner
                .top
                .compare_exchange(t, t + 1, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            {
                debug_assert_ne!(value, GhostChaseLevDeque::NONE, "read a slot nobody wrote");
                return Some(value);
            }
        }
    }

    /// Whether the deque looked empty (a snapshot).
    pub fn is_empty(&self) -> bool {
        // Relaxed: a snapshot, nothing is read through it.
        let t = self.inner.top.load(Ordering::Relaxed);
        let b = self.inner.bottom.load(Ordering::Relaxed);
        t >= b
    }
}

impl Clone for GhostStealer<'_> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _brand: PhantomData,
        }
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn pushed_none() -> ! {
    panic!(
        "GhostChaseLevDeque::push_bottom: `GhostChaseLevDeque::NONE` (usize::MAX) is the empty-slot sentinel \
         and cannot be pushed"
    )
}

impl fmt::Debug for GhostChaseLevDeque<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GhostChaseLevDeque")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

impl fmt::Debug for GhostStealer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GhostStealer").finish_non_exhaustive()
    }
}

/// Loom models of the deque: `RUSTFLAGS="--cfg loom" cargo test -p trust-core --lib --release loom_model`.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;

    /// The owner pops racing two stealers: every pushed index is taken exactly once.
    #[test]
    fn owner_pop_races_two_stealers() {
        let mut builder = loom::model::Builder::new();
        // Three threads with fences: bound the preemptions (3: about a second; unbounded: not done after 6 minutes).
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let owner = GhostChaseLevDeque::<'static>::new(2);
            owner.push_bottom(0).unwrap();
            owner.push_bottom(1).unwrap();
            let thieves: Vec<_> = (0..2)
                .map(|_| {
                    let stealer = owner.stealer();
                    loom::thread::spawn(move || stealer.steal())
                })
                .collect();
            let mut seen = [0u32; 2];
            while let Some(mine) = owner.pop_bottom() {
                seen[mine] += 1;
            }
            for thief in thieves {
                if let Some(stolen) = thief.join().unwrap() {
                    seen[stolen] += 1;
                }
            }
            assert_eq!(seen, [1, 1], "every index taken exactly once");
        });
    }

    /// The owner pushes while a stealer steals (the Release fence publishes the slot), then the ring wraps.
    #[test]
    fn push_races_steal_and_wraps() {
        loom::model(|| {
            let owner = GhostChaseLevDeque::<'static>::new(2);
            let stealer = owner.stealer();
            let thief = loom::thread::spawn(move || [stealer.steal(), stealer.steal()]);
            let mut seen = [0u32; 4];
            let mut pushed = 0;
            for value in 0..4 {
                match owner.push_bottom(value) {
                    Ok(()) => pushed += 1,
                    Err(full) => {
                        // Full: make room ourselves (unless the thief just did), then push again.
                        if let Some(mine) = owner.pop_bottom() {
                            seen[mine] += 1;
                        }
                        owner.push_bottom(full).unwrap();
                        pushed += 1;
                    }
                }
            }
            for stolen in thief.join().unwrap().into_iter().flatten() {
                seen[stolen] += 1;
            }
            while let Some(mine) = owner.pop_bottom() {
                seen[mine] += 1;
            }
            assert_eq!(pushed, 4);
            assert_eq!(seen, [1, 1, 1, 1]);
        });
    }
}
