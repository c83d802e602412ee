// A stub keeps its method's visibility: a private method's stub is private to its module (E0624).
mod bank {
    use trust_core::entrust;

    #[entrust]
    pub struct Account {
        balance: i64,
    }

    #[entrust]
    impl Account {
        pub fn new() -> Self {
            Account { balance: 0 }
        }

        fn audit(&self) -> i64 {
            self.balance
        }
    }
}

fn main() {
    let acct = trust_core::entrust(bank::Account::new());
    acct.audit();
}
