// KNOWN LIMIT (review 73). `#[entrust]` twice on one struct declares its stubs type twice: rustc's E0428 and
// E0119 (conflicting `Debug` and `Entrusted` impls), none naming the repeated attribute.
use trust_core::entrust;

#[entrust]
#[entrust]
pub struct Account {
    balance: i64,
}

fn main() {}
