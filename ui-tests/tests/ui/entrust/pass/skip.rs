// `#[entrust(skip)]` leaves a method out (here one that could not be delegated); associated functions
// without a receiver stay as they are.
use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    pub fn new(balance: i64) -> Self {
        Account { balance }
    }

    pub fn balance(&self) -> i64 {
        self.balance
    }

    #[entrust(skip)]
    pub fn balance_ref(&self) -> &i64 {
        &self.balance
    }
}

fn main() {
    let acct = entrust(Account::new(7));
    assert_eq!(acct.balance(), 7);
    assert_eq!(acct.apply(|a| *a.balance_ref()), 7);
}
