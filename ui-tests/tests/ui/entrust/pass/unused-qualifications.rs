// The generated code is accepted in a crate that denies `unused_qualifications`, `rust_2018_idioms`,
// `unused_lifetimes` and `unused_results` (none of them in `warnings` by default).
#![deny(unused_qualifications, rust_2018_idioms, unused_lifetimes, unused_results)]

use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
    memo: String,
}

#[entrust]
impl Account {
    pub fn deposit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.balance
    }
    pub fn set_memo(&mut self, memo: &str) {
        self.memo = memo.to_owned();
    }
    pub fn memo_len(&self) -> usize {
        self.memo.len()
    }
}

fn main() {
    let acct = entrust(Account { balance: 0, memo: String::new() });
    assert_eq!(acct.deposit(5), 5);
    acct.set_memo("rent");
    acct.deposit_then(1, |b| assert_eq!(b, 6));
    trust_core::wait_pending();
    let f = acct.memo_len_async();
    drop(f);
}
