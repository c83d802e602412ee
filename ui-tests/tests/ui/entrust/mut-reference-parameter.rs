// A `&mut` parameter cannot be delegated: the trustee would write into the caller's memory.
use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    pub fn read_into(&self, out: &mut i64) {
        *out = self.balance;
    }
}

fn main() {}
