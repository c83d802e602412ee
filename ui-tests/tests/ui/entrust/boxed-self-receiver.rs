// Only `&self` and `&mut self` receivers can be delegated (not `self: Box<Self>` and the like).
use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    pub fn balance(self: Box<Self>) -> i64 {
        self.balance
    }
}

fn main() {}
