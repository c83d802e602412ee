// An argument that borrows from the caller cannot be delegated; only `&str` and `&[T]` are copied.
use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    pub fn add(&mut self, amount: &i64) {
        self.balance += *amount;
    }
}

fn main() {}
