//! `#[entrust]`: on a struct, declares it delegable; on one of its inherent impl blocks, generates a stub on
//! `Trust<Struct>` for every `&self` / `&mut self` method. Three stages, one file each, read top to bottom:
//! [`parse`] (what the item is), [`validate`] (what may not be delegated, and why), [`expand`] (the stubs).
//!
//! Errors are collected, not returned at the first one, so a user sees every problem at once; and the user's
//! item is always emitted (without our helper attributes), so IDEs keep working while it has errors. Methods
//! that fail a rule get no stub; the others still do.

mod expand;
mod parse;
mod types;
mod validate;

#[cfg(test)]
mod snapshots;

use proc_macro2::TokenStream;
use quote::ToTokens;

/// Errors of one expansion, combined into one `syn::Error` (one `compile_error!` each when emitted).
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// An error on `tokens` (its span covers them all).
    pub(crate) fn at(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    pub(crate) fn count(&self) -> usize {
        self.0.as_ref().map_or(0, |e| e.into_iter().count())
    }

    fn into_compile_errors(self) -> TokenStream {
        self.0
            .map(syn::Error::into_compile_error)
            .unwrap_or_default()
    }
}

/// The whole macro, on `proc_macro2` streams (so unit tests and the expansion snapshots can run it).
pub(crate) fn entrust(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let mut output = match parse::parse(args, item, &mut errors) {
        parse::Parsed::Struct(input) => {
            validate::structure(&input, &mut errors);
            expand::structure(&input, errors.count() == 0)
        }
        parse::Parsed::Impl(mut input) => {
            validate::implementation(&mut input, &mut errors);
            expand::implementation(&input)
        }
        parse::Parsed::Unsupported(item) => item,
    };
    output.extend(errors.into_compile_errors());
    output
}
