// `#[entrust]` takes no arguments on a struct or impl block, and only `skip` on a method.
use trust_core::entrust;

#[entrust(fast)]
pub struct Account {
    balance: i64,
}

fn main() {}
