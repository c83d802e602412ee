// A method taking `self` by value cannot be delegated: the value stays on its trustee.
use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    pub fn into_balance(self) -> i64 {
        self.balance
    }
}

fn main() {}
