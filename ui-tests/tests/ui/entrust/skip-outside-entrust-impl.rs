// `#[entrust(skip)]` only means something inside an `#[entrust]` impl block.
use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

impl Account {
    #[entrust(skip)]
    pub fn balance(&self) -> i64 {
        self.balance
    }
}

fn main() {}
