// A crate that forbids `dead_code`, `deprecated` and `unused_lifetimes` compiles: no stub carries an `allow` the
// `forbid` would refuse (an unused stub is quiet as any item a macro makes), and each method is called one way.
#![forbid(dead_code, deprecated, unused_lifetimes)]
#![deny(warnings)]

use trust_core::{Trust, entrust};

#[entrust]
struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    fn deposit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.balance
    }

    fn balance(&self) -> i64 {
        self.balance
    }
}

fn main() {
    let account: Trust<Account> = entrust(Account { balance: 0 });
    account.deposit_then(5, |b| assert_eq!(b, 5));
    assert_eq!(account.balance(), 5);
}
