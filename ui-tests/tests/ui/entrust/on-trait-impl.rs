// `#[entrust]` cannot go on a trait impl: stubs are generated for inherent methods only.
use trust_core::entrust;

#[entrust]
#[derive(Default)]
pub struct Account {
    balance: i64,
}

#[entrust]
impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.balance)
    }
}

fn main() {}
