//! `GhostOnceCell` and `GhostLazyCell`: write-once cells whose single write is gated by `&mut GhostToken`.
//!
//! Unlike `std::cell::OnceCell` they are `Sync` (for `T: Send + Sync`) without any atomic: the token
//! makes "who may initialise" a compile-time question. Readers hold `&token`, the initialiser holds
//! `&mut token`, so they never run at the same time, even on different threads of a `thread::scope`.
//!
//! Once a value is in, it is never written again through a shared reference (only `get_mut`/`take`
//! with `&mut self` change it), so a reference obtained from `get` may outlive the token borrow that
//! produced it: it borrows the cell only.

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;

use super::cell::GhostCell;
use super::token::{GhostToken, InvariantLifetime};

/// A cell of brand `'brand` that is set at most once, with `&mut GhostToken<'brand>`, and then read with
/// `&GhostToken<'brand>`.
///
/// ```
/// use trust_core::ghost::{GhostOnceCell, GhostToken};
///
/// GhostToken::new(|mut token| {
///     let cell = GhostOnceCell::new();
///     assert_eq!(cell.get(&token), None);
///     let first = cell.get_or_init(&mut token, || String::from("first"));
///     assert_eq!(cell.set(String::from("second"), &mut token), Err(String::from("second")));
///     assert_eq!(first, "first"); // `first` borrows the cell, not the token
/// });
/// ```
pub struct GhostOnceCell<'brand, T> {
    _brand: InvariantLifetime<'brand>,
    // Invariant: goes from `None` to `Some` at most once while shared, and only under `&mut token`.
    value: UnsafeCell<Option<T>>,
}

// SAFETY: as for `GhostCell`: shared across threads it hands out `&T` on several threads (`T: Sync`),
// and a thread holding `&mut token` may put a `T` it created into a cell another thread owns and will
// drop (`T: Send`). The `Option` flag is only written under `&mut token`, so readers (`&token`) never
// race with it. `Send` is automatic (`UnsafeCell<Option<T>>: Send` iff `T: Send`).
unsafe impl<'brand, T: Send + Sync> Sync for GhostOnceCell<'brand, T> {}

impl<'brand, T> GhostOnceCell<'brand, T> {
    /// An empty cell.
    pub const fn new() -> Self {
        Self {
            _brand: PhantomData,
            value: UnsafeCell::new(None),
        }
    }

    /// A cell that already holds `value`.
    pub const fn with_value(value: T) -> Self {
        Self {
            _brand: PhantomData,
            value: UnsafeCell::new(Some(value)),
        }
    }

    /// The value if set. The result borrows the cell only, not the token.
    pub fn get<'a>(&'a self, token: &GhostToken<'brand>) -> Option<&'a T> {
        let _ = token;
        // SAFETY: the `Option` is written only under `&mut token` (not held by anyone while we hold
        // `&token`) or through `&mut self` (not possible while we hold `&self`). If it is `Some`, it is
        // never written again through `&self`, so the `&T` stays valid for `'a` even after the token is
        // released.
        unsafe { (*self.value.get()).as_ref() }
    }

    /// Sets the value if the cell is empty; otherwise gives `value` back as `Err`.
    pub fn set(&self, value: T, token: &mut GhostToken<'brand>) -> Result<(), T> {
        match self.try_insert(value, token) {
            Ok(_) => Ok(()),
            Err((_, value)) => Err(value),
        }
    }

    /// Sets the value if the cell is empty and returns it; otherwise returns the current value and
    /// `value`.
    pub fn try_insert(&self, value: T, token: &mut GhostToken<'brand>) -> Result<&T, (&T, T)> {
        if let Some(current) = self.get(token) {
            return Err((current, value));
        }
        // SAFETY: the cell is empty, so no `&T` into it exists (`get` only hands out `Some` contents);
        // we hold `&mut token`, so no other thread is reading the `Option` (reads need `&token`).
        // A plain raw-pointer write: no `&mut` to the `Option` is created.
        unsafe { self.value.get().write(Some(value)) };
        Ok(self.get(token).expect("just set"))
    }

    /// The value, initialising it with `f` first if the cell is empty.
    ///
    /// `f` cannot reach this cell (the token is borrowed for the call), so there is no re-entrant
    /// initialisation to guard against. If `f` panics, the cell stays empty.
    pub fn get_or_init(&self, token: &mut GhostToken<'brand>, f: impl FnOnce() -> T) -> &T {
        match self.get_or_try_init(token, || Ok::<T, core::convert::Infallible>(f())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// Like [`get_or_init`](Self::get_or_init), for a fallible `f`; on `Err` the cell stays empty.
    pub fn get_or_try_init<E>(
        &self,
        token: &mut GhostToken<'brand>,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<&T, E> {
        if let Some(value) = self.get(token) {
            return Ok(value);
        }
        let value = f()?;
        match self.try_insert(value, token) {
            Ok(value) => Ok(value),
            Err(_) => unreachable!("f cannot reach the cell while the token is borrowed"),
        }
    }

    /// The value, through exclusive access to the cell (no token needed).
    pub fn get_mut(&mut self) -> Option<&mut T> {
        self.value.get_mut().as_mut()
    }

    /// Empties the cell, returning its value (exclusive access, no token needed).
    pub fn take(&mut self) -> Option<T> {
        self.value.get_mut().take()
    }

    /// The value, if set.
    pub fn into_inner(self) -> Option<T> {
        self.value.into_inner()
    }
}

impl<T> Default for GhostOnceCell<'_, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> From<T> for GhostOnceCell<'_, T> {
    fn from(value: T) -> Self {
        Self::with_value(value)
    }
}

impl<T> fmt::Debug for GhostOnceCell<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Reading even the flag without the token could race with an initialiser on another thread.
        f.debug_struct("GhostOnceCell").finish_non_exhaustive()
    }
}

/// A value computed on first use by `F`, under `&mut GhostToken<'brand>`; then read with `&token`.
///
/// ```
/// use trust_core::ghost::{GhostLazyCell, GhostToken};
///
/// GhostToken::new(|mut token| {
///     let table = GhostLazyCell::new(|| (0..5).map(|i| i * i).collect::<Vec<u32>>());
///     assert_eq!(table.get(&token), None); // not computed yet
///     assert_eq!(table.force(&mut token)[4], 16);
///     assert_eq!(table.get(&token).map(Vec::len), Some(5));
/// });
/// ```
///
/// If `F` panics, the cell is poisoned: later `force` calls panic too (`F` was consumed).
///
/// `Sync` for `T: Send + Sync` and `F: Send + Sync` (the initialiser is kept in a `GhostCell`).
pub struct GhostLazyCell<'brand, T, F = fn() -> T> {
    value: GhostOnceCell<'brand, T>,
    init: GhostCell<'brand, Option<F>>,
}

impl<'brand, T, F: FnOnce() -> T> GhostLazyCell<'brand, T, F> {
    /// A cell that will compute its value with `init` on first [`force`](Self::force).
    pub const fn new(init: F) -> Self {
        Self {
            value: GhostOnceCell::new(),
            init: GhostCell::new(Some(init)),
        }
    }

    /// The value, computing it first if needed. The result borrows the cell only, not the token.
    ///
    /// # Panics
    ///
    /// If the initialiser panicked on an earlier call.
    pub fn force(&self, token: &mut GhostToken<'brand>) -> &T {
        if let Some(value) = self.value.get(token) {
            return value;
        }
        let init = self.init.take(token).expect(
            "GhostLazyCell::force: the initialiser panicked on an earlier call, so the value can never be \
             computed; catch that panic where it happened, or build a new GhostLazyCell",
        );
        self.value.get_or_init(token, init)
    }

    /// The value, computing it first if needed, through exclusive access (no token needed).
    ///
    /// # Panics
    ///
    /// If the initialiser panicked on an earlier call.
    pub fn force_mut(&mut self) -> &mut T {
        if self.value.get_mut().is_none() {
            let init = self.init.get_mut().take().expect(
                "GhostLazyCell::force_mut: the initialiser panicked on an earlier call, so the value can never \
                 be computed; catch that panic where it happened, or build a new GhostLazyCell",
            );
            self.value = GhostOnceCell::with_value(init());
        }
        self.value.get_mut().expect("set above")
    }

    /// The value if it was already computed; never runs the initialiser.
    pub fn get<'a>(&'a self, token: &GhostToken<'brand>) -> Option<&'a T> {
        self.value.get(token)
    }
}

impl<T, F> fmt::Debug for GhostLazyCell<'_, T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GhostLazyCell").finish_non_exhaustive()
    }
}
