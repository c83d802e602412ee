// The generated code is accepted in a crate that denies allow-by-default lints on top of `warnings`
// (review 94). `impl_trait_redundant_captures` refused the `_async` stubs' `+ use<'_>` where that named
// everything in scope (no argument borrowed): it is now written only where it leaves a lifetime out.
#![deny(
    warnings,
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    unused_qualifications,
    unused_results,
    unused_lifetimes,
    redundant_lifetimes,
    elided_lifetimes_in_paths,
    rust_2018_idioms,
    rust_2024_compatibility,
    impl_trait_redundant_captures,
    trivial_casts,
    trivial_numeric_casts,
    unit_bindings,
    let_underscore_drop,
    unsafe_code,
    unnameable_types,
    meta_variable_misuse,
    variant_size_differences
)]
//! A documented crate.

use trust_core::{Trust, entrust};

/// A documented, delegable account.
#[entrust]
#[derive(Debug)]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    /// No argument: the receiver's lifetime is all there is.
    pub fn balance(&self) -> i64 {
        self.balance
    }
    /// A receiver lifetime named.
    pub fn balance_named<'a>(&'a self) -> i64 {
        self.balance
    }
    /// Owned arguments only.
    pub fn deposit(&mut self, amount: i64, (a, b): (i64, i64)) -> i64 {
        self.balance += amount + a + b;
        self.balance
    }
    /// Borrowed arguments: `use<'_>` leaves their lifetimes out.
    pub fn tag(&mut self, memo: &str, codes: &[u8], extra: &i64) -> usize {
        memo.len() + codes.len() + usize::from(*extra > 0)
    }
    /// A `'static` reference moves as it is.
    pub fn label(&mut self, label: &'static str) -> usize {
        label.len()
    }
    /// Returns nothing.
    pub fn reset(&mut self) {
        self.balance = 0;
    }
}

/// A generic one.
#[entrust]
#[derive(Debug)]
pub struct Cell<T> {
    value: T,
}

#[entrust]
impl<T: Clone + Send + 'static> Cell<T> {
    /// A clone of the value.
    pub fn get(&self) -> T {
        self.value.clone()
    }
}

fn main() {
    let account: Trust<Account> = entrust(Account { balance: 0 });
    assert_eq!(account.deposit(1, (1, 1)), 3);
    let futures = (
        account.balance_async(),
        account.balance_named_async(),
        account.deposit_async(1, (0, 0)),
        account.tag_async("ab", &[1], &1),
        account.label_async("x"),
        account.reset_async(),
    );
    drop(futures);
    let cell = entrust(Cell { value: 7_u8 });
    drop(cell.get_async());
    assert_eq!(cell.get(), 7);
}
