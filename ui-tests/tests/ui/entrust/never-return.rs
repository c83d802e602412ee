// KNOWN LIMIT (review 39). A method returning `!` (it always panics) is neither excluded by docs/entrust.md nor
// delegated: the stub packs the result with `ret::<!>`, and rustc reports the never type as experimental
// (E0658), an error that names neither `#[entrust]` nor a fix (`#[entrust(skip)]`, or return `()`).
use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    pub fn crash(&self) -> ! {
        panic!("balance {}", self.balance)
    }
}

fn main() {}
