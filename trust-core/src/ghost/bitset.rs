//! `GhostAtomicBitset<'brand>`: a word-packed visited set over branded atomic words.
//!
//! The structure of halo's `GhostAtomicBitset` and of the `AtomicBitSet`s of `hibitset` and `uniset`
//! (flat here, no hierarchy): bit `i` is bit `i % 64` of word `i / 64`. `test_and_set` is one `fetch_or`
//! on that word, so it is linearizable per bit: of any number of threads setting the same bit, exactly one
//! sees `false`. Against `Vec<AtomicBool>` it uses an eighth of the memory, so a dense visited set stays in
//! cache longer and one cache line covers 512 vertices instead of 64.

use core::fmt;
use core::sync::atomic::Ordering;

use super::atomic::GhostAtomicUsize;

const WORD_BITS: usize = usize::BITS as usize;

/// A fixed-length set of bits that any number of threads may test and set at once.
///
/// ```
/// use trust_core::ghost::{GhostAtomicBitset, GhostToken};
///
/// GhostToken::new(|_token| {
///     let visited = GhostAtomicBitset::new(1000);
///     assert!(!visited.test_and_set(7)); // first visit
///     assert!(visited.test_and_set(7)); // already visited
///     assert!(visited.test(7) && !visited.test(8));
///     assert_eq!(visited.iter().collect::<Vec<_>>(), [7]);
/// });
/// ```
pub struct GhostAtomicBitset<'brand> {
    words: Box<[GhostAtomicUsize<'brand>]>,
    len_bits: usize,
}

impl<'brand> GhostAtomicBitset<'brand> {
    /// A set of `len_bits` bits, all clear: `len_bits.div_ceil(64)` words (64-bit targets). Like
    /// `Vec::with_capacity`, it aborts the process (no panic) if that allocation fails, as
    /// `new(usize::MAX)` does (2^61 bytes).
    pub fn new(len_bits: usize) -> Self {
        let words = len_bits.div_ceil(WORD_BITS);
        Self {
            words: (0..words).map(|_| GhostAtomicUsize::new(0)).collect(),
            len_bits,
        }
    }

    /// How many bits the set holds (valid indices are `0..len_bits()`).
    #[inline]
    pub fn len_bits(&self) -> usize {
        self.len_bits
    }

    #[inline(always)]
    #[track_caller]
    fn check(&self, index: usize) {
        if index >= self.len_bits {
            out_of_range(index, self.len_bits);
        }
    }

    /// Whether bit `index` is set.
    ///
    /// Acquire: if the bit was set by `test_and_set` (`AcqRel`), whatever the setter wrote before setting it
    /// (say, the vertex's distance) is visible after this returns `true`.
    ///
    /// # Panics
    ///
    /// If `index >= len_bits()`, naming both.
    #[inline]
    #[track_caller]
    pub fn test(&self, index: usize) -> bool {
        self.check(index);
        // SAFETY: checked just above.
        unsafe { self.test_unchecked(index) }
    }

    /// Sets bit `index`; returns whether it was already set. Exactly one of several racing callers for
    /// the same bit gets `false` (one `fetch_or`: the read-modify-write is atomic).
    ///
    /// `AcqRel`: Release publishes the caller's writes before the set (what a later `test` acquires);
    /// Acquire makes the first setter's writes visible to a loser. On x86 it is the same `lock or` as
    /// `Relaxed`.
    ///
    /// # Panics
    ///
    /// If `index >= len_bits()`, naming both.
    #[inline]
    #[track_caller]
    pub fn test_and_set(&self, index: usize) -> bool {
        self.check(index);
        // SAFETY: checked just above.
        unsafe { self.test_and_set_unchecked(index) }
    }

    /// Clears bit `index`; returns whether it was set (one `fetch_and`, `AcqRel` as `test_and_set`).
    ///
    /// # Panics
    ///
    /// If `index >= len_bits()`, naming both.
    #[inline]
    #[track_caller]
    pub fn reset(&self, index: usize) -> bool {
        self.check(index);
        let (word, mask) = split(index);
        self.words[word].fetch_and(!mask, Ordering::AcqRel) & mask != 0
    }

    /// [`test`](Self::test) without the bounds check.
    ///
    /// # Safety
    ///
    /// `index < self.len_bits()`.
    #[inline(always)]
    pub unsafe fn test_unchecked(&self, index: usize) -> bool {
        let (word, mask) = split(index);
        // SAFETY: the caller promises `index < len_bits`, so `word < words.len()` (`new` allocates
        // `len_bits.div_ceil(64)` words).
        let word = unsafe { self.words.get_unchecked(word) };
        // Acquire: see `test`.
        word.load(Ordering::Acquire) & mask != 0
    }

    /// [`test_and_set`](Self::test_and_set) without the bounds check.
    ///
    /// # Safety
    ///
    /// `index < self.len_bits()`.
    #[inline(always)]
    pub unsafe fn test_and_set_unchecked(&self, index: usize) -> bool {
        let (word, mask) = split(index);
        // SAFETY: as in `test_unchecked`.
        let word = unsafe { self.words.get_unchecked(word) };
        // AcqRel: see `test_and_set`.
        word.fetch_or(mask, Ordering::AcqRel) & mask != 0
    }

    /// Clears every bit.
    ///
    /// Word by word (`Release` stores), not one atomic step: bits set concurrently may survive. Clear
    /// between phases (after the traversal's threads are joined), or through `&mut` with
    /// [`clear_mut`](Self::clear_mut).
    pub fn clear(&self) {
        for word in self.words.iter() {
            // Release: a thread that later acquires a word sees the clear and what preceded it.
            word.store(0, Ordering::Release);
        }
    }

    /// Clears every bit through exclusive access (plain writes).
    pub fn clear_mut(&mut self) {
        for word in self.words.iter_mut() {
            *word.get_mut() = 0;
        }
    }

    /// How many bits are set (word by word, `Acquire` loads: exact when no thread is setting bits).
    pub fn count_ones(&self) -> usize {
        self.words
            .iter()
            .map(|w| w.load(Ordering::Acquire).count_ones() as usize)
            .sum()
    }

    /// The indices of the set bits, in increasing order. Each word is read once (`Acquire`), so bits
    /// set during the iteration may or may not appear.
    pub fn iter(&self) -> GhostAtomicBitsetIter<'_, 'brand> {
        GhostAtomicBitsetIter {
            words: self.words.iter(),
            base: 0,
            current: 0,
            next_base: 0,
        }
    }
}

#[inline(always)]
fn split(index: usize) -> (usize, usize) {
    (index / WORD_BITS, 1 << (index % WORD_BITS))
}

#[cold]
#[inline(never)]
#[track_caller]
fn out_of_range(index: usize, len_bits: usize) -> ! {
    panic!("GhostAtomicBitset: bit index {index} is out of range for a bitset of {len_bits} bits")
}

impl fmt::Debug for GhostAtomicBitset<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GhostAtomicBitset")
            .field("len_bits", &self.len_bits)
            .field("count_ones", &self.count_ones())
            .finish()
    }
}

impl<'a, 'brand> IntoIterator for &'a GhostAtomicBitset<'brand> {
    type Item = usize;
    type IntoIter = GhostAtomicBitsetIter<'a, 'brand>;
    fn into_iter(self) -> GhostAtomicBitsetIter<'a, 'brand> {
        self.iter()
    }
}

/// The set bits of a [`GhostAtomicBitset`], in increasing order (from [`GhostAtomicBitset::iter`]).
#[derive(Debug)]
pub struct GhostAtomicBitsetIter<'a, 'brand> {
    words: core::slice::Iter<'a, GhostAtomicUsize<'brand>>,
    /// Index of bit 0 of `current`.
    base: usize,
    /// The bits of the current word not yet returned.
    current: usize,
    next_base: usize,
}

impl Iterator for GhostAtomicBitsetIter<'_, '_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.current == 0 {
            // Acquire: see `GhostAtomicBitset::test`.
            self.current = self.words.next()?.load(Ordering::Acquire);
            self.base = self.next_base;
            self.next_base += WORD_BITS;
        }
        let bit = self.current.trailing_zeros() as usize;
        self.current &= self.current - 1;
        Some(self.base + bit)
    }
}
