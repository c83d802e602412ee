// A method with a generic type parameter cannot be delegated: a stub sends one monomorphic function pointer.
use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    pub fn add<N: Into<i64>>(&mut self, amount: N) {
        self.balance += amount.into();
    }
}

fn main() {}
