// KNOWN LIMIT (review 73). docs/entrust.md lists "an impl block naming the struct through an alias or a renamed
// import"; a plain `use` of the struct is enough: the stubs type is named after the path written after `impl`,
// and `AccountStubs` is not imported. rustc's help names the import to add (`use crate::model::AccountStubs;`),
// and `impl model::Account` works.
use trust_core::entrust;

mod model {
    #[trust_core::entrust]
    pub struct Account {
        pub balance: i64,
    }
}

use model::Account;

#[entrust]
impl Account {
    pub fn balance(&self) -> i64 {
        self.balance
    }
}

fn main() {
    let acct = entrust(Account { balance: 3 });
    assert_eq!(acct.balance(), 3);
}
