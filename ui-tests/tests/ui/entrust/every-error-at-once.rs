// Errors are collected: every method that cannot be delegated is reported in one build, and the others
// still get their stubs.
use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    pub fn close(self) -> i64 {
        self.balance
    }

    pub fn swap(&mut self, other: &mut i64) {
        std::mem::swap(&mut self.balance, other);
    }

    pub fn balance_ref(&self) -> &i64 {
        &self.balance
    }

    pub fn balance(&self) -> i64 {
        self.balance
    }
}

fn main() {
    let acct = trust_core::entrust(Account { balance: 1 });
    assert_eq!(acct.balance(), 1);
}
