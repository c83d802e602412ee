//! Review 94: the code `#[entrust]` generates, attacked for hygiene and lints as a hostile user writes around
//! it, past review 73 (shapes, receivers, generics, `_async` captures, deprecated structs, `macro_rules!`
//! fragments) and the lint cases catalogued before it (`forbid(unsafe_code)`, `forbid(dead_code, deprecated,
//! unused_lifetimes)`, `unused_qualifications`, carried `allow`/`expect`/`cfg`).
//!
//! Attacked (about 40 shapes): constants, unit structs and glob imports named like every name the expansion
//! uses (its locals, `Box`, `Option`, `Some`, `Result`, `Ok`, `Send`, `Sized`, `FnOnce`, `Vec`, `Trust`,
//! `Entrusted`, `drop`, `arg`, `ret`, `trust_of`); crate-root `mod core` / `std` / `trust_core`;
//! `#![no_implicit_prelude]`; `pub(in path)`, `pub(super)`, private methods on a `pub(in path)` struct; 20
//! rustc lints and groups denied at once (`warnings`, allow-by-default ones); clippy `pedantic`, `nursery` and
//! `restriction` on a crate using the macro (counting each lint per location: one for the method is the
//! user's, two is a stub's); rustdoc with `rustdoc::all` denied; the same stubs from a crate of edition 2015,
//! 2018 and 2021.
//!
//! Findings, fixed in trust-macros:
//! - A lower-case constant (or unit struct) named like a local of the generated code broke the stubs: mixed-site
//!   hygiene keeps locals apart from variables, not from constants, so `|this: &mut S|` was a constant pattern
//!   (E0308 at `#[entrust]`; `this`, `args`, `result`, `future`, and `f` in the stubs type's `Debug`). Fixed:
//!   those locals are `__`-prefixed. UI `pass/names-in-scope.rs`. Not fixed, catalogued: `then` and `argN`,
//!   which callers read in the stubs' signatures (`constant-named-then.rs`).
//! - `#![deny(impl_trait_redundant_captures)]` refused every `_async` stub of a method with no borrowed
//!   argument: `+ use<'_>` named everything edition 2024 captures anyway. Fixed: `use<..>` only where it leaves
//!   a lifetime out (`expand::async_captures`; edition 2021 has the receiver's lifetime from `+ '_`). Still
//!   refused, not fixed: a method whose `where` clause or bounds name a lifetime and no argument borrows (there
//!   `use<..>` is what edition 2021 needs). UI `pass/allow-by-default-lints.rs`.
//! - Clippy fires on functions a proc macro makes (its lints report in external macros): `too_many_arguments`
//!   on the `_then` stub of a method of seven parameters, at the method's name ("8/7": `then` is the eighth);
//!   `used_underscore_binding` where the stubs pass an `_amount` on, `shadow_unrelated` / `shadow_reuse` where
//!   their closures rebind the parameters. Fixed: the stubs' parameters are the macro's (where the user wrote
//!   them), and only a seven-parameter method's `_then` stub allows `too_many_arguments` (a crate that forbids
//!   that lint now gets E0453 there instead of the lint). Checked below: this file denies those lints, and the
//!   workspace's `cargo clippy --all-targets -- -D warnings` builds it.
//! - rustdoc: the `_then` / `_async` docs of a raw-identifier method linked `Self::r#type`, a dead link (rustdoc
//!   reads `#` as a fragment); and a `#[doc(hidden)]` method's `_then` / `_async` stubs were listed. Fixed:
//!   `Self::type`, and the variants keep `#[doc(hidden)]`.
//!
//! Held: every glob import and module name above; `no_implicit_prelude` and restricted visibilities (UI
//! `pass/no-implicit-prelude.rs`); a method returning `Infallible`; editions 2015 to 2021; the clippy
//! `pedantic` / `nursery` lints, which fire on the user's methods only; clippy's `allow_attributes*` and
//! rustc's `unnameable_types` (a stubs type reached only through a re-exported struct), quiet; a parameter
//! named `then`, `args` or `this` beside the stubs' own. Seen, not fixed: clippy's `impl_trait_in_params`
//! (restriction) on every `_then` stub's `then: impl FnOnce(..)` (a type parameter instead would change the
//! stubs' signatures); `too_many_arguments` with a lower configured threshold.
//!
//! The tests below call the stubs these findings touched, through all three kinds, against direct calls.

use std::sync::{Arc, Mutex};

#[macro_use]
mod common;
use common::*;
use trust_core::wait_pending;

/// The lints the findings tripped, denied where the stubs are (not on the shared helpers).
mod ledger {
    #![deny(
        clippy::too_many_arguments,
        clippy::used_underscore_binding,
        clippy::shadow_unrelated,
        clippy::shadow_reuse,
        clippy::shadow_same,
        impl_trait_redundant_captures
    )]

    use trust_core::entrust;

    #[entrust]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Ledger {
        pub total: u64,
    }

    #[entrust]
    impl Ledger {
        /// Seven parameters with the receiver: the most `too_many_arguments` allows, one fewer than the `_then`
        /// stub has. `_fee` is passed on by every stub, read by none.
        pub fn post(&mut self, a: u64, b: u64, c: u64, d: u64, e: u64, _fee: u64) -> u64 {
            self.total += a + b + c + d + e;
            self.total
        }

        /// A raw identifier: its variants' docs link `Self::type`.
        pub fn r#type(&self, memo: &str) -> u64 {
            self.total + memo.len() as u64
        }

        /// Hidden, and so are its variants.
        #[doc(hidden)]
        pub fn hidden(&mut self, (a, b): (u64, u64)) -> u64 {
            self.total += a * b;
            self.total
        }
    }
}
use ledger::Ledger;

/// Blocking, `_then` + `wait_pending`, `_async` via `block_on`, on a fresh `Ledger { total: 1 }` each: the
/// same results as the direct calls on a local copy.
#[test]
fn stubs_whose_parameters_and_docs_changed_agree_with_direct_calls() {
    within(30, || {
        quiet();
        let mut local = Ledger { total: 1 };
        let want = vec![
            local.post(1, 2, 3, 4, 5, 99),
            local.r#type("abc"),
            local.hidden((2, 3)),
        ];
        for kind in 0..3 {
            let ledger = rt().trustee(1).entrust(Ledger { total: 1 });
            let out = Arc::new(Mutex::new(Vec::new()));
            match kind {
                0 => {
                    let mut o = out.lock().unwrap();
                    o.push(ledger.post(1, 2, 3, 4, 5, 99));
                    o.push(ledger.r#type("abc"));
                    o.push(ledger.hidden((2, 3)));
                }
                1 => {
                    let [o1, o2, o3] = [out.clone(), out.clone(), out.clone()];
                    ledger.post_then(1, 2, 3, 4, 5, 99, move |r| o1.lock().unwrap().push(r));
                    wait_pending();
                    ledger.type_then("abc", move |r| o2.lock().unwrap().push(r));
                    wait_pending();
                    ledger.hidden_then((2, 3), move |r| o3.lock().unwrap().push(r));
                    wait_pending();
                }
                _ => {
                    let mut o = out.lock().unwrap();
                    o.push(block_on(ledger.post_async(1, 2, 3, 4, 5, 99)));
                    o.push(block_on(ledger.type_async("abc")));
                    o.push(block_on(ledger.hidden_async((2, 3))));
                }
            }
            assert_eq!(*out.lock().unwrap(), want, "stub kind {kind}");
        }
    });
}

/// An `_async` stub without `use<..>` (no borrowed argument) still borrows the handle only: its future
/// outlives nothing but the handle, and runs when polled later.
#[test]
fn async_stub_without_use_bound_runs_when_polled_later() {
    within(30, || {
        quiet();
        let ledger = rt().trustee(0).entrust(Ledger { total: 0 });
        let futures: Vec<_> = (1..=3)
            .map(|i| ledger.post_async(i, 0, 0, 0, 0, 0))
            .collect();
        let results: Vec<u64> = futures.into_iter().map(block_on).collect();
        assert_eq!(results, [1, 3, 6]);
    });
}
