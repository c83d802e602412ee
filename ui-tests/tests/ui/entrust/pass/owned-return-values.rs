// Methods returning owned values (`String`, `Vec`, `Option`, `Result`, tuples, `Self`) are delegated.
use trust_core::entrust;

#[entrust]
#[derive(Clone, Debug, PartialEq)]
pub struct Account {
    balance: i64,
    memo: String,
}

#[entrust]
impl Account {
    pub fn memo(&self) -> String {
        self.memo.clone()
    }

    pub fn history(&self) -> Vec<i64> {
        vec![self.balance]
    }

    pub fn withdraw(&mut self, amount: i64) -> Result<i64, String> {
        if amount > self.balance {
            return Err(format!("short by {}", amount - self.balance));
        }
        self.balance -= amount;
        Ok(self.balance)
    }

    pub fn both(&self) -> (i64, Option<String>) {
        (self.balance, Some(self.memo.clone()))
    }

    pub fn snapshot(&self) -> Self {
        self.clone()
    }
}

fn main() {
    let acct = entrust(Account { balance: 5, memo: "rent".into() });
    assert_eq!(acct.memo(), "rent");
    assert_eq!(acct.history(), vec![5]);
    assert_eq!(acct.withdraw(9), Err("short by 4".into()));
    assert_eq!(acct.both(), (5, Some("rent".into())));
    assert_eq!(acct.snapshot(), Account { balance: 5, memo: "rent".into() });
}
