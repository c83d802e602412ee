// KNOWN LIMIT (review 39). docs/entrust.md: "every `&self` / `&mut self` method becomes callable on
// `Trust<Struct>`". A method written by a macro inside the `#[entrust]` impl block gets no stub and no error
// (a proc macro sees the macro call, not the method); the call on the handle fails far from the cause,
// without naming `#[entrust]`.
use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

macro_rules! getter {
    ($name:ident) => {
        pub fn $name(&self) -> i64 {
            self.$name
        }
    };
}

#[entrust]
impl Account {
    getter!(balance);
}

fn main() {
    let acct = entrust(Account { balance: 3 });
    assert_eq!(acct.balance(), 3);
}
