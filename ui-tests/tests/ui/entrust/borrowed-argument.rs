// An argument that borrows from the caller cannot be delegated; only `&str`, `&[T]` and `&T` (`T: Clone`,
// borrowing nothing) are copied.
use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    pub fn add(&mut self, amount: &Option<&i64>) {
        self.balance += amount.copied().unwrap_or(0);
    }
}

fn main() {}
