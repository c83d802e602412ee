// The generated code compiles in a `#![no_implicit_prelude]` module, with `pub(in path)`, `pub(super)` and
// private methods on a struct visible only `pub(in path)` (review 94: it names every item by its full path).
#[no_implicit_prelude]
mod outer {
    pub mod model {
        #[::trust_core::entrust]
        #[derive(::core::fmt::Debug)]
        pub(in crate::outer) struct Account {
            pub(in crate::outer) balance: i64,
        }

        #[::trust_core::entrust]
        impl Account {
            pub(in crate::outer) fn deposit(&mut self, amount: i64) -> i64 {
                self.balance += amount;
                self.balance
            }
            pub(super) fn memo_len(&self, memo: &str) -> usize {
                memo.len()
            }
            fn double(&mut self) -> i64 {
                self.balance *= 2;
                self.balance
            }
        }

        pub(in crate::outer) fn double(account: &::trust_core::Trust<Account>) -> i64 {
            account.double()
        }
    }

    pub fn run() -> i64 {
        let account = ::trust_core::entrust(model::Account { balance: 1 });
        let deposited = account.deposit(2);
        let memo = account.memo_len("abc");
        let doubled = model::double(&account);
        account.deposit_then(1, |_| ());
        ::trust_core::wait_pending();
        deposited + memo as i64 + doubled
    }
}

fn main() {
    assert_eq!(outer::run(), 3 + 3 + 6);
}
