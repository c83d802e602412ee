// KNOWN LIMIT (review 39). docs/entrust.md: "Put it on a struct and on its inherent `impl` blocks". The stubs type is
// named after the path written after `impl`, so an impl block that names an `#[entrust]` struct through a
// renamed import (or a type alias) looks for a stubs type that does not exist, and the error suggests nothing:
// the struct has `#[entrust]`, and `impl model::Account` would work.
use trust_core::entrust;

mod model {
    #[trust_core::entrust]
    pub struct Account {
        pub balance: i64,
    }
}

use model::Account as Ledger;

#[entrust]
impl Ledger {
    pub fn balance(&self) -> i64 {
        self.balance
    }
}

fn main() {
    let acct = entrust(Ledger { balance: 3 });
    assert_eq!(acct.balance(), 3);
}
