// Stubs keep each method's `#[cfg]` and docs: a method compiled out has no stub, and its types need not exist.
use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

#[cfg(any())]
pub struct OnlyWithTheFeature;

#[entrust]
impl Account {
    /// The balance, in cents.
    pub fn balance(&self) -> i64 {
        self.balance
    }

    #[cfg(any())]
    pub fn audit(&self, _: OnlyWithTheFeature) {}
}

fn main() {
    let acct = entrust(Account { balance: 3 });
    assert_eq!(acct.balance(), 3);
}
