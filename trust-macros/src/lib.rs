//! Procedural macros of `trust-core`. Use them through `trust_core`, which re-exports them;
//! generated code names runtime items only through `::trust_core::__private`.

use proc_macro::TokenStream;

mod entrust;

/// Declares a struct delegable (`#[entrust] struct S`) or generates delegated stubs for the methods of one of
/// its inherent impl blocks (`#[entrust] impl S`). Documented in `trust_core` and `docs/entrust.md`.
#[proc_macro_attribute]
pub fn entrust(args: TokenStream, input: TokenStream) -> TokenStream {
    entrust::entrust(args.into(), input.into()).into()
}
