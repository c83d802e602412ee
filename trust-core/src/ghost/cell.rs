//! `GhostCell`: a value whose access is gated by the `GhostToken` of its brand, with no runtime state.
//!
//! This is the `GhostCell` of the RustBelt paper (Yanovski, Dang, Jung, Dreyer; ICFP 2021), proven sound
//! there, with the API of the `ghost-cell` crate 0.2. All the `unsafe` of the module lives here and in
//! `multi.rs`/`once.rs`; each block states the invariant it relies on.

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::mem;

use super::multi::{GhostAliasingError, GhostBorrowMut};
use super::token::{GhostToken, InvariantLifetime};

/// A `T` that anyone holding a `&GhostCell` can read with `&GhostToken<'brand>` and write with
/// `&mut GhostToken<'brand>`.
///
/// The cell itself is exactly a `T` in memory (`repr(transparent)`, no flag, no counter): aliasing XOR
/// mutability is enforced on the token at compile time, for all the cells of a brand at once.
///
/// ```
/// use trust_core::ghost::{GhostCell, GhostToken};
///
/// GhostToken::new(|mut token| {
///     let a = GhostCell::new(vec![1, 2]);
///     let b = &a; // any number of shared references
///     b.borrow_mut(&mut token).push(3);
///     assert_eq!(a.borrow(&token), &[1, 2, 3]);
/// });
/// ```
///
/// `Debug` prints `GhostCell { .. }` and never reads the value: without the token it cannot know
/// whether a `&mut` to it is alive (the bug `frankencell` 0.1 had). Print `cell.borrow(&token)` instead.
#[repr(transparent)]
pub struct GhostCell<'brand, T: ?Sized> {
    _brand: InvariantLifetime<'brand>,
    // Last, so that `GhostCell<[T; N]>` unsizes to `GhostCell<[T]>`.
    value: UnsafeCell<T>,
}

// SAFETY: the paper's rule. `&GhostCell<T>` shared between threads yields `&T` (with `&token`) on
// several threads at once, which needs `T: Sync`; and one thread holding `&mut token` can `replace`
// the `T` inside a cell owned by another thread, moving a `T` across threads, which needs `T: Send`.
// `Send` needs no impl: `UnsafeCell<T>: Send` iff `T: Send`, and the brand marker is `Send`.
unsafe impl<'brand, T: ?Sized + Send + Sync> Sync for GhostCell<'brand, T> {}

impl<'brand, T> GhostCell<'brand, T> {
    /// Wraps `value` in a cell of brand `'brand` (inferred from the token it is later used with).
    pub const fn new(value: T) -> Self {
        Self {
            _brand: PhantomData,
            value: UnsafeCell::new(value),
        }
    }

    /// Unwraps the value. Owning the cell proves nobody borrows it, so no token is needed.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }

    /// Replaces the value with `value` and returns the old one.
    pub fn replace(&self, value: T, token: &mut GhostToken<'brand>) -> T {
        mem::replace(self.borrow_mut(token), value)
    }

    /// Takes the value, leaving `T::default()` in its place.
    pub fn take(&self, token: &mut GhostToken<'brand>) -> T
    where
        T: Default,
    {
        self.replace(T::default(), token)
    }

    /// Swaps the values of two cells.
    ///
    /// Swapping a cell with itself is a no-op and returns `Ok`, and so is swapping two zero-sized cells at
    /// one address (there is nothing to swap). `Err` when the two cells overlap at different addresses, which
    /// views of one slice can: `GhostCell::from_array_of_cells` over `cells[0..2]` and over `cells[1..3]` give
    /// two `GhostCell<[u8; 2]>` that share a byte (`(a, b).borrow_mut(&mut token)` refuses them, and two
    /// zero-sized cells at one address, the same way).
    pub fn swap(
        &self,
        other: &Self,
        token: &mut GhostToken<'brand>,
    ) -> Result<(), GhostAliasingError> {
        if core::ptr::eq(self, other) {
            return Ok(());
        }
        let (a, b) = (self, other).borrow_mut(token)?;
        mem::swap(a, b);
        Ok(())
    }
}

impl<'brand, T: ?Sized> GhostCell<'brand, T> {
    /// Reads the value. Any number of cells can be read at once with the same `&token`.
    ///
    /// The result borrows both the cell and the token, so no `borrow_mut` of the brand can happen while
    /// it is alive (`E0502`).
    #[inline(always)]
    pub fn borrow<'a>(&'a self, token: &'a GhostToken<'brand>) -> &'a T {
        let _ = token;
        // SAFETY: a `&mut T` into this cell can only come from `borrow_mut` (which would hold
        // `&mut token`, impossible while we hold `&token`), from `get_mut` (which would hold `&mut self`,
        // impossible while we hold `&self`) or from `GhostBorrowMut`/`GhostOnceCell` paths, which also
        // hold `&mut token`. The brand ties this token to this cell. So no `&mut T` is alive for `'a`.
        unsafe { &*self.value.get() }
    }

    /// Writes the value. The result borrows the token mutably, so it is the only reference into any cell
    /// of the brand for its lifetime (`E0499`, `E0502` otherwise).
    #[inline(always)]
    #[allow(clippy::mut_from_ref)] // the exclusivity comes from `&mut GhostToken`
    pub fn borrow_mut<'a>(&'a self, token: &'a mut GhostToken<'brand>) -> &'a mut T {
        let _ = token;
        // SAFETY: every other reference into this cell's value needs either the token (we hold it
        // exclusively for `'a`) or `&mut self` (impossible while we hold `&self`); the brand ties this
        // token to this cell. So this `&mut T` is unique for `'a`.
        unsafe { &mut *self.value.get() }
    }

    /// A raw pointer to the value. Dereferencing it is `unsafe` and follows the usual raw-pointer rules;
    /// the token does not protect accesses through it.
    #[inline(always)]
    pub const fn as_ptr(&self) -> *mut T {
        self.value.get()
    }

    /// The value, through exclusive access to the cell itself (no token needed).
    #[inline(always)]
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    /// Views a `&mut T` as a cell of any brand, for as long as the `&mut T` is borrowed.
    ///
    /// ```
    /// use trust_core::ghost::{GhostCell, GhostToken};
    ///
    /// let mut values = [1, 2, 3];
    /// GhostToken::new(|mut token| {
    ///     let cells = GhostCell::from_mut(&mut values[..]).as_slice_of_cells();
    ///     let (first, last) = (&cells[0], &cells[2]);
    ///     *first.borrow_mut(&mut token) += *last.borrow(&token);
    /// });
    /// assert_eq!(values, [4, 2, 3]);
    /// ```
    #[inline(always)]
    pub fn from_mut(t: &mut T) -> &mut Self {
        // SAFETY: `GhostCell<T>` is `repr(transparent)` over `UnsafeCell<T>`, itself `repr(transparent)`
        // over `T`, so the pointee layouts and pointer metadata match. The `&mut T` is borrowed for the
        // result's lifetime, so nothing else touches the value meanwhile.
        unsafe { &mut *(t as *mut T as *mut Self) }
    }
}

impl<'brand, T> GhostCell<'brand, [T]> {
    /// Views a cell holding a slice as a slice of cells, one per element, of the same brand.
    #[inline(always)]
    pub fn as_slice_of_cells(&self) -> &[GhostCell<'brand, T>] {
        // SAFETY: `GhostCell<[T]>` has the layout of `[T]` and `GhostCell<T>` that of `T`, so
        // `[GhostCell<T>]` has the layout of `[T]` with the same length (the metadata carries over in the
        // cast). Both views are `UnsafeCell` throughout and gated by the same brand, so reads and writes
        // through either still need the one token.
        unsafe { &*(self.as_ptr() as *const [GhostCell<'brand, T>]) }
    }

    /// The inverse of [`as_slice_of_cells`](Self::as_slice_of_cells).
    #[inline(always)]
    pub fn from_slice_of_cells<'a>(slice: &'a [GhostCell<'brand, T>]) -> &'a Self {
        // SAFETY: same layout argument as `as_slice_of_cells`, in the other direction.
        unsafe { &*(slice as *const [GhostCell<'brand, T>] as *const Self) }
    }
}

impl<'brand, T, const N: usize> GhostCell<'brand, [T; N]> {
    /// Views a cell holding an array as an array of cells of the same brand.
    #[inline(always)]
    pub fn as_array_of_cells(&self) -> &[GhostCell<'brand, T>; N] {
        // SAFETY: as for `as_slice_of_cells`: `[GhostCell<T>; N]` has the layout of `[T; N]`.
        unsafe { &*(self.as_ptr() as *const [GhostCell<'brand, T>; N]) }
    }

    /// The inverse of [`as_array_of_cells`](Self::as_array_of_cells).
    #[inline(always)]
    pub fn from_array_of_cells<'a>(array: &'a [GhostCell<'brand, T>; N]) -> &'a Self {
        // SAFETY: same layout argument as `as_array_of_cells`, in the other direction.
        unsafe { &*(array as *const [GhostCell<'brand, T>; N] as *const Self) }
    }
}

impl<T: Default> Default for GhostCell<'_, T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> From<T> for GhostCell<'_, T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: ?Sized> AsMut<T> for GhostCell<'_, T> {
    fn as_mut(&mut self) -> &mut T {
        self.get_mut()
    }
}

impl<T: ?Sized> fmt::Debug for GhostCell<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never read the value here: a `&mut T` from `borrow_mut` may be alive (see the type's docs).
        f.debug_struct("GhostCell").finish_non_exhaustive()
    }
}
