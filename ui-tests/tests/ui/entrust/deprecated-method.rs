// REVIEW 39 FINDING. docs/entrust.md: stubs keep the method's "`#[deprecated]`". Deprecating a method of an
// `#[entrust]` impl block makes the crate that declares it warn (here, with `deprecated` denied, fail) though
// nothing calls it: the generated stubs call the method, and the use is reported at the method's own name.
#![deny(deprecated)]

use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    #[deprecated = "use `balance`"]
    pub fn old_balance(&self) -> i64 {
        self.balance
    }

    pub fn balance(&self) -> i64 {
        self.balance
    }
}

fn main() {
    let acct = entrust(Account { balance: 3 });
    assert_eq!(acct.balance(), 3);
}
