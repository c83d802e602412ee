// An argument type with a non-`'static` lifetime inside it cannot be delegated (arguments must be `'static`).
use std::borrow::Cow;
use trust_core::entrust;

#[entrust]
pub struct Account {
    memo: String,
}

#[entrust]
impl Account {
    pub fn set_memo(&mut self, memo: Cow<'_, str>) {
        self.memo = memo.into_owned();
    }
}

fn main() {}
