// Inside an `#[entrust]` impl block, a method takes only `#[entrust(skip)]`.
use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    #[entrust(inline)]
    pub fn balance(&self) -> i64 {
        self.balance
    }
}

fn main() {}
