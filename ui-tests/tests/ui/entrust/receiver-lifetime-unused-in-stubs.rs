// REVIEW 39 FINDING. docs/entrust.md: "lifetime parameters are fine". A lifetime the method uses only on its
// receiver (`fn peek<'a>(&'a self)`) is declared again on the stubs, whose receiver is `&self`: in a crate
// that denies `unused_lifetimes`, the stubs' unused `'a` is reported at the user's `'a`, which is used.
// This program should compile.
#![deny(unused_lifetimes)]

use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    pub fn peek<'a>(&'a self) -> i64 {
        self.balance
    }
}

fn main() {
    let acct = entrust(Account { balance: 6 });
    assert_eq!(acct.peek(), 6);
}
