// The `Account` of ../shared/DESIGN.md section 3.2.
use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
    memo: String,
}

#[entrust]
impl Account {
    /// Adds `amount` and returns the new balance.
    pub fn deposit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.balance
    }

    pub fn balance(&self) -> i64 {
        self.balance
    }

    pub fn set_memo(&mut self, memo: &str) {
        self.memo = memo.to_owned()
    }
}
