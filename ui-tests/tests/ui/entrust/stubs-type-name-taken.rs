// KNOWN LIMIT (review 73). `#[entrust] struct Account` declares `AccountStubs` beside it; a type of that name in
// the same module clashes (rustc's E0428, at both), and the message does not say which macro made the second.
use trust_core::entrust;

pub struct AccountStubs;

#[entrust]
pub struct Account {
    balance: i64,
}

fn main() {}
