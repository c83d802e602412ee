//! `lock_all!` and `try_lock_all!`: parse -> validate -> expand, one file each.
//!
//! The macro sees only tokens, not types, so everything that depends on a lock's type (its rank,
//! whether it can be read-locked, whether nesting is allowed) is left to the type checker through
//! the generated bounds; the macro itself checks the syntax and the one rule visible in the tokens:
//! the same place expression named twice.

mod expand;
mod parse;
mod validate;

use proc_macro2::TokenStream;
use syn::parse::Parser;

pub use expand::Blocking;

/// Runs the three stages; a syntax or validation error becomes a `compile_error!`.
pub fn lock_all(input: TokenStream, blocking: Blocking) -> TokenStream {
    let name = match blocking {
        Blocking::Wait => "lock_all",
        Blocking::Try => "try_lock_all",
    };
    (|input: syn::parse::ParseStream<'_>| parse::LockAllInput::parse(input, name))
        .parse2(input)
        .and_then(|input| validate::validate(&input, name).map(|()| input))
        .map(|input| expand::expand(&input, blocking))
        .unwrap_or_else(syn::Error::into_compile_error)
}
