//! Procedural macros of `trust-core`. Use them through `trust_core`, which re-exports them;
//! generated code names runtime items only through `::trust_core::__private`.

use proc_macro::TokenStream;

mod entrust;
mod lock_all;

/// Takes several locks at once, all or nothing, in a deadlock-free order; returns a tuple of
/// guards.
///
/// `lock_all!(&mut key, a, b, read c)`: the first argument is `&mut ThreadKey` (or `&mut
/// NestedKey`), then the locks (`Mutex`es, `RwLock`s, or references to them), each optionally
/// prefixed by `read` (shared) or `write` (the default). Ranked locks are taken in rank order
/// decided at compile time; equal ranks by address at run time. The same place named twice is a
/// compile error; the same lock reached twice otherwise panics with a message. Ending the list with
/// `; nest` also returns a `NestedKey` for locking strictly higher ranks while these guards live.
/// See `trust_core::lock` for examples.
#[proc_macro]
pub fn lock_all(input: TokenStream) -> TokenStream {
    lock_all::lock_all(input.into(), lock_all::Blocking::Wait).into()
}

/// `lock_all!` that never waits: `Ok(guards)`, or `Err(LockAllError)` with nothing held
/// (`WouldBlock` if a lock was busy, `Duplicate` if a lock appeared twice).
#[proc_macro]
pub fn try_lock_all(input: TokenStream) -> TokenStream {
    lock_all::lock_all(input.into(), lock_all::Blocking::Try).into()
}

/// Declares a struct delegable (`#[entrust] struct S`) or generates delegated stubs for the methods of one of
/// its inherent impl blocks (`#[entrust] impl S`). Documented in `trust_core` and `docs/entrust.md`.
#[proc_macro_attribute]
pub fn entrust(args: TokenStream, input: TokenStream) -> TokenStream {
    entrust::entrust(args.into(), input.into()).into()
}
