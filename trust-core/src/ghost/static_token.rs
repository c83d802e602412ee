//! The global static token: one `GhostToken<'static>` for global singletons and bootstrapping, as halo's
//! "Global Static Token".
//!
//! - [`static_token`] / [`with_static_token`]: shared `&'static GhostToken<'static>`, from any thread, lock-free.
//!   Sound because shared access to a token only ever yields `&T` from `GhostCell`s (`GhostToken` is `Sync`),
//!   exactly like sharing `&token` among scoped threads.
//! - [`with_static_token_mut`]: `&mut GhostToken<'static>`, `unsafe`. Safe code cannot otherwise get a
//!   `&mut GhostToken<'static>` (`GhostToken::new` only makes fresh brands), so `'static` cells are
//!   read-only to safe code; the `unsafe` function is the one door to writing them.
//!
//! The token is zero-sized, so "created lazily and leaked" (the seed's words) costs nothing here: it is a
//! plain `static` of size 0.

use std::sync::{Mutex, PoisonError};

use super::token::GhostToken;

static STATIC_TOKEN: GhostToken<'static> = GhostToken::static_brand();

/// Serializes [`with_static_token_mut`] callers (it does not stop readers: see its safety contract).
static MUTABLE_ACCESS: Mutex<()> = Mutex::new(());

/// The global token of brand `'static`, shared: read any `GhostCell<'static, T>` with it, from any thread.
///
/// ```
/// use trust_core::ghost::{GhostCell, static_token};
///
/// static GREETING: GhostCell<'static, &str> = GhostCell::new("hello");
/// assert_eq!(*GREETING.borrow(static_token()), "hello");
/// ```
pub fn static_token() -> &'static GhostToken<'static> {
    &STATIC_TOKEN
}

/// Runs `f` with the shared global token ([`static_token`] in closure form).
pub fn with_static_token<R>(f: impl FnOnce(&'static GhostToken<'static>) -> R) -> R {
    f(&STATIC_TOKEN)
}

/// Runs `f` with `&mut GhostToken<'static>`, to write `GhostCell<'static, _>`s, typically to set up global
/// state before any thread reads it. Callers are serialized by a global `Mutex`.
///
/// # Safety
///
/// The returned `&mut` token may coexist with the shared `&'static GhostToken<'static>` that
/// [`static_token`] hands to everybody, and the `Mutex` does **not** keep readers out. So while `f` runs, no
/// other thread (and no code inside `f`, through a reference obtained before) may read a cell that `f`
/// writes through [`static_token`]: hold a `&T` from `borrow(static_token())` into it, or run
/// `GhostOnceCell::get`/`GhostLazyCell::get` on it (they read the flag that `set`/`force` write: a data
/// race). The simple way to keep this: call it only during single-threaded initialization
/// (bootstrapping), before any reader exists, and do not keep `&T`s from [`static_token`] across the call.
///
/// Calling it again from inside `f` never returns normally (it deadlocks, or panics: the `Mutex` is not
/// reentrant), which is what keeps a second `&mut GhostToken<'static>` from existing.
///
/// ```
/// use trust_core::ghost::{GhostCell, static_token, with_static_token_mut};
///
/// static LIMIT: GhostCell<'static, u32> = GhostCell::new(0);
///
/// // SAFETY: single-threaded start-up: no reader of LIMIT exists yet.
/// unsafe { with_static_token_mut(|token| *LIMIT.borrow_mut(token) = 64) };
/// assert_eq!(*LIMIT.borrow(static_token()), 64);
/// ```
pub unsafe fn with_static_token_mut<R>(f: impl FnOnce(&mut GhostToken<'static>) -> R) -> R {
    // A panic in an earlier `f` left no broken invariant here (the guard protects `()`), so go on.
    let _serialized = MUTABLE_ACCESS.lock().unwrap_or_else(PoisonError::into_inner);
    let mut token = GhostToken::static_brand();
    f(&mut token)
}
