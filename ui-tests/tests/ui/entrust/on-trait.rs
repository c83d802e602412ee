// `#[entrust]` cannot go on a trait: it goes on a struct and its inherent impl blocks.
use trust_core::entrust;

#[entrust]
pub trait Ledger {
    fn balance(&self) -> i64;
}

fn main() {}
