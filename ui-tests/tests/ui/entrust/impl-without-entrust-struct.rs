// `#[entrust]` on an impl block needs `#[entrust]` on its struct (E0277 names the fix).
use trust_core::entrust;

pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    pub fn balance(&self) -> i64 {
        self.balance
    }
}

fn main() {}
