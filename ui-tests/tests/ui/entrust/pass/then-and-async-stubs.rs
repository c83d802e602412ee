// Every method also gets `NAME_then(args.., continuation)` and `NAME_async(args..)`.
use std::cell::Cell;
use std::rc::Rc;
use trust_core::{entrust, wait_pending};

#[entrust]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    pub fn deposit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.balance
    }

    pub fn reset(&mut self) {
        self.balance = 0;
    }
}

fn main() {
    let acct = entrust(Account { balance: 0 });
    let seen = Rc::new(Cell::new(0));
    let s = seen.clone();
    acct.deposit_then(5, move |b| s.set(b));
    acct.reset_then(|| ());
    wait_pending();
    assert_eq!(seen.get(), 5);
    let future = acct.deposit_async(2);
    fn is_send<F: Send>(_: &F) {}
    is_send(&future);
    drop(future);
    assert_eq!(acct.deposit(1), 1);
}
