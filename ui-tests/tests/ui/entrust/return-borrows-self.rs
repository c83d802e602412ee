// A method returning a reference into `self` cannot be delegated: the value stays on its trustee.
use trust_core::entrust;

#[entrust]
pub struct Account {
    memo: String,
}

#[entrust]
impl Account {
    pub fn memo(&self) -> &str {
        &self.memo
    }
}

fn main() {}
