// `impl Trait` in argument position is a generic parameter, and cannot be delegated either.
use trust_core::entrust;

#[entrust]
pub struct Account {
    memo: String,
}

#[entrust]
impl Account {
    pub fn set_memo(&mut self, memo: impl Into<String>) {
        self.memo = memo.into();
    }
}

fn main() {}
