// A crate that forbids `dead_code`, `deprecated` and `unused_lifetimes` compiles: no stub carries an `allow` the
// `forbid` would refuse. An unused stub is quiet, as any item a macro makes; a stub repeats its method's
// receiver lifetime (`&'a self`); a method deprecated only under a `cfg_attr` that is off is not deprecated.
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

    fn balance<'a>(&'a self) -> i64 {
        self.balance
    }

    fn find<'a>(&'a self, name: &'a str) -> usize {
        name.len()
    }

    #[cfg_attr(any(), deprecated)]
    fn reset(&mut self) {
        self.balance = 0;
    }
}

fn main() {
    let account: Trust<Account> = entrust(Account { balance: 0 });
    account.deposit_then(5, |b| assert_eq!(b, 5));
    assert_eq!(account.balance(), 5);
    assert_eq!(account.find("abc"), 3);
    account.reset();
    assert_eq!(account.balance(), 0);
}
