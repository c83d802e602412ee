// A lifetime used only on the receiver (`fn peek<'a>(&'a self)`) is fine under `unused_lifetimes`: the stubs,
// whose receiver is `&self`, allow it (review 39 found the lint fired at the user's `'a`).
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
