//! Borrowing several `GhostCell`s at once: `GhostBorrow` (shared) and `GhostBorrowMut` (exclusive, with
//! a runtime overlap check where the types cannot rule aliasing out).
//!
//! `(&a, &b, &c).borrow_mut(&mut token)` gives `(&mut A, &mut B, &mut C)` if the three cells are
//! distinct, and `Err(GhostAliasingError)` naming the two arguments that overlap otherwise. Implemented
//! for tuples of cell references up to 12, arrays `[&GhostCell<T>; N]`, slices `&[&GhostCell<T>]`
//! (result in a `Vec`), and, with no check at all, for `&[GhostCell<T>]` and `&[GhostCell<T>; N]`,
//! whose elements are distinct by construction.
//!
//! The check compares the *byte ranges* the cells cover, not just their addresses: a cell of a slice
//! and a cell of one of its elements overlap without being equal. Zero-sized values are treated as
//! covering one byte, so two references to the same zero-sized cell are refused too (a zero-sized value
//! may be a capability, e.g. a `GhostToken` of another brand; two `&mut` to it would be unsound).

use core::convert::Infallible;
use core::fmt;

use super::cell::GhostCell;
use super::token::GhostToken;

/// Two of the cells passed to [`GhostBorrowMut::borrow_mut`] are the same cell, or overlap in memory.
///
/// `first() < second()` are their 0-based positions in the tuple, array or slice.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct GhostAliasingError {
    first: usize,
    second: usize,
}

impl GhostAliasingError {
    /// Position of the earlier of the two overlapping arguments.
    pub fn first(&self) -> usize {
        self.first
    }

    /// Position of the later of the two overlapping arguments.
    pub fn second(&self) -> usize {
        self.second
    }
}

impl fmt::Display for GhostAliasingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GhostCell arguments #{} and #{} of borrow_mut are the same cell (or overlap in memory), so they \
             cannot both be borrowed mutably; pass distinct cells, or borrow them one after the other",
            self.first, self.second
        )
    }
}

impl std::error::Error for GhostAliasingError {}

// Lets generic code treat the infallible impls (`Error = Infallible`) and the checked ones alike.
impl From<Infallible> for GhostAliasingError {
    fn from(never: Infallible) -> Self {
        match never {}
    }
}

/// Borrows several cells of one brand immutably in one expression, e.g. `(&a, &b).borrow(&token)`.
///
/// Plain `a.borrow(&token)` calls can already coexist; this is the tuple/array form for convenience
/// and parity with `ghost-cell`.
pub trait GhostBorrow<'a, 'brand> {
    /// The references you get, e.g. `(&'a A, &'a B)` for `(&'a GhostCell<A>, &'a GhostCell<B>)`.
    type Result;

    /// Borrows every cell immutably for `'a`.
    fn borrow(self, token: &'a GhostToken<'brand>) -> Self::Result;
}

/// Borrows several distinct cells of one brand mutably at once, e.g. `(&a, &b).borrow_mut(&mut token)`.
///
/// ```
/// use trust_core::ghost::{GhostBorrowMut, GhostCell, GhostToken};
///
/// GhostToken::new(|mut token| {
///     let (a, b) = (GhostCell::new(1), GhostCell::new(2));
///     let (x, y) = (&a, &b).borrow_mut(&mut token).unwrap();
///     std::mem::swap(x, y);
///     assert_eq!((*a.borrow(&token), *b.borrow(&token)), (2, 1));
///
///     let err = (&a, &b, &a).borrow_mut(&mut token).unwrap_err();
///     assert_eq!((err.first(), err.second()), (0, 2));
/// });
/// ```
pub trait GhostBorrowMut<'a, 'brand> {
    /// The references you get, e.g. `(&'a mut A, &'a mut B)` for `(&'a GhostCell<A>, &'a GhostCell<B>)`.
    type Result;

    /// [`GhostAliasingError`] where the cells may alias, [`Infallible`] where the types rule it out.
    type Error: Into<GhostAliasingError>;

    /// Borrows every cell mutably for `'a`, or fails if two of them overlap (then nothing is borrowed).
    fn borrow_mut(self, token: &'a mut GhostToken<'brand>) -> Result<Self::Result, Self::Error>;

    /// Borrows every cell mutably for `'a`, without the overlap check.
    ///
    /// # Safety
    ///
    /// No two of the cells may overlap in memory (in particular, none may appear twice).
    unsafe fn borrow_mut_unchecked(self, token: &'a mut GhostToken<'brand>) -> Self::Result;
}

// ---- the overlap check -------------------------------------------------------------------------------

/// The bytes a value covers, `start..start + size`, and its argument position.
///
/// A zero-sized value counts as covering one byte, so that two references to it collide (see the module
/// docs).
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    size: usize,
    position: usize,
}

#[inline(always)]
fn span<T: ?Sized>(value: &T, position: usize) -> Span {
    // `addr()` rather than `as usize`: we only compare addresses, we never turn them back into
    // pointers, so no provenance is exposed (this runs under Miri's strict provenance).
    let start = (value as *const T).cast::<u8>().addr();
    Span {
        start,
        size: size_of_val(value).max(1),
        position,
    }
}

/// `Ok` if no two spans overlap; else the positions of an overlapping pair, lower first.
///
/// Overlap is tested as "the higher span starts less than `size` bytes after the lower one", with a
/// subtraction that cannot wrap (the lower start is subtracted), never as `start + size`, which could
/// wrap at the top of the address space. It also lets LLVM fold the test away when it can see the
/// cells are distinct (neighbours in one slice), as it does for `Cell::swap`.
#[inline]
fn check_distinct(spans: &mut [Span]) -> Result<(), GhostAliasingError> {
    let overlaps = |a: &Span, b: &Span| {
        let (low, high) = if a.start <= b.start { (a, b) } else { (b, a) };
        high.start - low.start < low.size
    };
    let error = |a: &Span, b: &Span| GhostAliasingError {
        first: a.position.min(b.position),
        second: a.position.max(b.position),
    };
    if let [a, b] = spans {
        // The common case gets no sort.
        return if overlaps(a, b) {
            Err(error(a, b))
        } else {
            Ok(())
        };
    }
    // Sorted by start, a span overlaps some later one iff it overlaps the next one.
    spans.sort_unstable_by_key(|s| s.start);
    for pair in spans.windows(2) {
        if overlaps(&pair[0], &pair[1]) {
            return Err(error(&pair[0], &pair[1]));
        }
    }
    Ok(())
}

// ---- contiguous cells: distinct by construction ------------------------------------------------------

impl<'a, 'brand, T> GhostBorrowMut<'a, 'brand> for &'a [GhostCell<'brand, T>] {
    type Result = &'a mut [T];
    type Error = Infallible;

    fn borrow_mut(self, token: &'a mut GhostToken<'brand>) -> Result<Self::Result, Self::Error> {
        // SAFETY: the elements of one slice are disjoint.
        Ok(unsafe { self.borrow_mut_unchecked(token) })
    }

    unsafe fn borrow_mut_unchecked(self, token: &'a mut GhostToken<'brand>) -> Self::Result {
        let _ = token;
        // SAFETY: `[GhostCell<T>]` has the layout of `[T]` (`repr(transparent)`), and the pointer comes
        // from `UnsafeCell`s, so writing through it is allowed. Exclusivity: we hold `&mut token` for
        // `'a`, and the elements are disjoint.
        unsafe { &mut *(GhostCell::from_slice_of_cells(self).as_ptr()) }
    }
}

impl<'a, 'brand, T, const N: usize> GhostBorrowMut<'a, 'brand> for &'a [GhostCell<'brand, T>; N] {
    type Result = &'a mut [T; N];
    type Error = Infallible;

    fn borrow_mut(self, token: &'a mut GhostToken<'brand>) -> Result<Self::Result, Self::Error> {
        // SAFETY: the elements of one array are disjoint.
        Ok(unsafe { self.borrow_mut_unchecked(token) })
    }

    unsafe fn borrow_mut_unchecked(self, token: &'a mut GhostToken<'brand>) -> Self::Result {
        let _ = token;
        // SAFETY: as for slices: same layout, `UnsafeCell` provenance, `&mut token` held for `'a`.
        unsafe { &mut *(GhostCell::from_array_of_cells(self).as_ptr()) }
    }
}

impl<'a, 'brand, T> GhostBorrow<'a, 'brand> for &'a [GhostCell<'brand, T>] {
    type Result = &'a [T];

    fn borrow(self, token: &'a GhostToken<'brand>) -> Self::Result {
        GhostCell::from_slice_of_cells(self).borrow(token)
    }
}

impl<'a, 'brand, T, const N: usize> GhostBorrow<'a, 'brand> for &'a [GhostCell<'brand, T>; N] {
    type Result = &'a [T; N];

    fn borrow(self, token: &'a GhostToken<'brand>) -> Self::Result {
        GhostCell::from_array_of_cells(self).borrow(token)
    }
}

// ---- references that may alias: checked ---------------------------------------------------------------

impl<'a, 'brand, T: ?Sized, const N: usize> GhostBorrowMut<'a, 'brand>
    for [&'a GhostCell<'brand, T>; N]
{
    type Result = [&'a mut T; N];
    type Error = GhostAliasingError;

    fn borrow_mut(self, token: &'a mut GhostToken<'brand>) -> Result<Self::Result, Self::Error> {
        let mut position = 0;
        let mut spans = self.map(|cell| {
            position += 1;
            span(cell, position - 1)
        });
        check_distinct(&mut spans)?;
        // SAFETY: just checked that the cells are pairwise disjoint.
        Ok(unsafe { self.borrow_mut_unchecked(token) })
    }

    unsafe fn borrow_mut_unchecked(self, token: &'a mut GhostToken<'brand>) -> Self::Result {
        let _ = token;
        // SAFETY: we hold `&mut token` for `'a` and the caller guarantees the cells are disjoint, so each
        // `&mut T` is unique; the pointers come from `UnsafeCell`s.
        self.map(|cell| unsafe { &mut *cell.as_ptr() })
    }
}

impl<'a, 'brand, T: ?Sized, const N: usize> GhostBorrow<'a, 'brand>
    for [&'a GhostCell<'brand, T>; N]
{
    type Result = [&'a T; N];

    fn borrow(self, token: &'a GhostToken<'brand>) -> Self::Result {
        self.map(|cell| cell.borrow(token))
    }
}

impl<'a, 'brand, T: ?Sized> GhostBorrowMut<'a, 'brand> for &[&'a GhostCell<'brand, T>] {
    type Result = Vec<&'a mut T>;
    type Error = GhostAliasingError;

    fn borrow_mut(self, token: &'a mut GhostToken<'brand>) -> Result<Self::Result, Self::Error> {
        let mut spans: Vec<Span> = self
            .iter()
            .enumerate()
            .map(|(i, cell)| span(*cell, i))
            .collect();
        check_distinct(&mut spans)?;
        // SAFETY: just checked that the cells are pairwise disjoint.
        Ok(unsafe { self.borrow_mut_unchecked(token) })
    }

    unsafe fn borrow_mut_unchecked(self, token: &'a mut GhostToken<'brand>) -> Self::Result {
        let _ = token;
        // SAFETY: as for arrays of references: `&mut token` held for `'a`, disjointness from the caller.
        self.iter()
            .map(|cell| unsafe { &mut *cell.as_ptr() })
            .collect()
    }
}

impl<'a, 'brand, T: ?Sized> GhostBorrow<'a, 'brand> for &[&'a GhostCell<'brand, T>] {
    type Result = Vec<&'a T>;

    fn borrow(self, token: &'a GhostToken<'brand>) -> Self::Result {
        self.iter().map(|cell| cell.borrow(token)).collect()
    }
}

macro_rules! tuple_impls {
    ($(($($cell:ident: $t:ident @ $pos:tt),+))+) => {$(
        impl<'a, 'brand, $($t: ?Sized),+> GhostBorrowMut<'a, 'brand> for ($(&'a GhostCell<'brand, $t>,)+) {
            type Result = ($(&'a mut $t,)+);
            type Error = GhostAliasingError;

            #[inline]
            fn borrow_mut(self, token: &'a mut GhostToken<'brand>) -> Result<Self::Result, Self::Error> {
                let ($($cell,)+) = self;
                check_distinct(&mut [$(span($cell, $pos)),+])?;
                // SAFETY: just checked that the cells are pairwise disjoint.
                Ok(unsafe { self.borrow_mut_unchecked(token) })
            }

            #[inline]
            unsafe fn borrow_mut_unchecked(self, token: &'a mut GhostToken<'brand>) -> Self::Result {
                let _ = token;
                let ($($cell,)+) = self;
                // SAFETY: `&mut token` held for `'a`, disjointness from the caller (or the check above);
                // the pointers come from `UnsafeCell`s.
                unsafe { ($(&mut *$cell.as_ptr(),)+) }
            }
        }

        impl<'a, 'brand, $($t: ?Sized),+> GhostBorrow<'a, 'brand> for ($(&'a GhostCell<'brand, $t>,)+) {
            type Result = ($(&'a $t,)+);

            #[inline]
            fn borrow(self, token: &'a GhostToken<'brand>) -> Self::Result {
                let ($($cell,)+) = self;
                ($($cell.borrow(token),)+)
            }
        }
    )+};
}

tuple_impls! {
    (a: A @ 0)
    (a: A @ 0, b: B @ 1)
    (a: A @ 0, b: B @ 1, c: C @ 2)
    (a: A @ 0, b: B @ 1, c: C @ 2, d: D @ 3)
    (a: A @ 0, b: B @ 1, c: C @ 2, d: D @ 3, e: E @ 4)
    (a: A @ 0, b: B @ 1, c: C @ 2, d: D @ 3, e: E @ 4, f: F @ 5)
    (a: A @ 0, b: B @ 1, c: C @ 2, d: D @ 3, e: E @ 4, f: F @ 5, g: G @ 6)
    (a: A @ 0, b: B @ 1, c: C @ 2, d: D @ 3, e: E @ 4, f: F @ 5, g: G @ 6, h: H @ 7)
    (a: A @ 0, b: B @ 1, c: C @ 2, d: D @ 3, e: E @ 4, f: F @ 5, g: G @ 6, h: H @ 7, i: I @ 8)
    (a: A @ 0, b: B @ 1, c: C @ 2, d: D @ 3, e: E @ 4, f: F @ 5, g: G @ 6, h: H @ 7, i: I @ 8, j: J @ 9)
    (a: A @ 0, b: B @ 1, c: C @ 2, d: D @ 3, e: E @ 4, f: F @ 5, g: G @ 6, h: H @ 7, i: I @ 8, j: J @ 9,
     k: K @ 10)
    (a: A @ 0, b: B @ 1, c: C @ 2, d: D @ 3, e: E @ 4, f: F @ 5, g: G @ 6, h: H @ 7, i: I @ 8, j: J @ 9,
     k: K @ 10, l: L @ 11)
}
