// KNOWN LIMIT (review 39). docs/entrust.md: stubs keep the method's "`#[cfg]`s" and its "signature". A `#[cfg]` on a
// parameter is dropped: the stubs keep a parameter the method compiled without, so the stub's call has one
// argument too many (E0061 at `#[entrust]`), and the caller is asked for an argument that does not exist.
use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    pub fn deposit(&mut self, #[cfg(any())] audit: String, amount: i64) -> i64 {
        self.balance += amount;
        self.balance
    }
}

fn main() {
    let acct = entrust(Account { balance: 0 });
    assert_eq!(acct.deposit(5), 5);
}
