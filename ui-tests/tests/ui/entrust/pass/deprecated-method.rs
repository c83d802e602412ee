// A `#[deprecated]` method that nothing calls does not warn in the crate that declares it: the stubs that call
// it allow `deprecated` (review 39 found the stubs' calls reported at the method's name). Callers of the
// stubs are still warned: each stub keeps the attribute.
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
