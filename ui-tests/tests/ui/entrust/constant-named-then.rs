// KNOWN LIMIT (review 94): a lower-case constant named `then` beside an `#[entrust]` impl breaks its `_then`
// stubs, whose continuation parameter callers read as `then` in the signature and docs: a pattern `then`
// names the constant instead of binding (rustc's E0308; a `const argN` does the same to a destructured
// parameter's stubs). The generated code's other names are `__`-prefixed and cannot clash
// (`pass/names-in-scope.rs`).
#![allow(non_upper_case_globals)]

use trust_core::entrust;

const then: u8 = 0;

#[entrust]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    pub fn deposit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.balance
    }
}

fn main() {
    let account = entrust(Account { balance: 0 });
    assert_eq!(account.deposit(1), 1);
}
