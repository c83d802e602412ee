// An `async fn` cannot be delegated: the trustee never awaits (callers await the `_async` stub instead).
use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    pub async fn balance(&self) -> i64 {
        self.balance
    }
}

fn main() {}
