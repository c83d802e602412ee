//! `GhostToken`: the zero-sized, branded capability that unlocks every `GhostCell` of its brand.

use core::fmt;
use core::marker::PhantomData;

/// Makes `'brand` invariant, so two brands never unify through subtyping.
///
/// `fn(&'brand ()) -> &'brand ()` is contravariant in its argument and covariant in its result, hence
/// invariant overall; unlike `*mut &'brand ()` it is `Send + Sync`, so the token's auto traits need no
/// `unsafe impl`.
pub(crate) type InvariantLifetime<'brand> = PhantomData<fn(&'brand ()) -> &'brand ()>;

/// The key to every [`GhostCell<'brand, _>`](super::GhostCell) that shares its brand.
///
/// The token carries no data (it is zero-sized) and is neither `Clone` nor `Copy`: it is a *linear*
/// capability. `&GhostToken<'brand>` lets you read any number of cells of the brand at once,
/// `&mut GhostToken<'brand>` lets you write one (or several distinct ones, see
/// [`GhostBorrowMut`](super::GhostBorrowMut)); the borrow checker sees to the rest, with no runtime
/// borrow state.
///
/// The only way to get a token is [`GhostToken::new`], which hands it to a closure that must work for
/// *every* lifetime `'brand`, so the brand is fresh and cannot escape the closure.
///
/// `GhostToken` is `Send + Sync` (it is stateless): share `&token` among scoped threads for parallel
/// reads, or move the token itself from thread to thread to pass the right to write along.
pub struct GhostToken<'brand> {
    _brand: InvariantLifetime<'brand>,
}

impl<'brand> GhostToken<'brand> {
    /// Creates a token with a fresh brand and runs `f` with it; returns what `f` returns.
    ///
    /// `f` is generic over the brand (`for<'new> FnOnce(GhostToken<'new>) -> R`), so `R` cannot mention
    /// it: neither the token nor any cell of its brand can leave the closure.
    ///
    /// ```
    /// use trust_core::ghost::{GhostCell, GhostToken};
    ///
    /// let sum = GhostToken::new(|mut token| {
    ///     let cell = GhostCell::new(40);
    ///     let aliases = [&cell, &cell, &cell];
    ///     *aliases[1].borrow_mut(&mut token) += 2;
    ///     *aliases[2].borrow(&token)
    /// });
    /// assert_eq!(sum, 42);
    /// ```
    #[allow(clippy::new_ret_no_self)] // the token only exists inside `f`; that is the point
    pub fn new<R>(f: impl for<'new> FnOnce(GhostToken<'new>) -> R) -> R {
        f(GhostToken {
            _brand: PhantomData,
        })
    }
}

impl GhostToken<'static> {
    /// A token of the global brand `'static`, for `static_token.rs` only: safe code never gets a
    /// `&mut GhostToken<'static>` except through the `unsafe` `with_static_token_mut`.
    pub(crate) const fn static_brand() -> Self {
        GhostToken {
            _brand: PhantomData,
        }
    }
}

impl fmt::Debug for GhostToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GhostToken")
    }
}
