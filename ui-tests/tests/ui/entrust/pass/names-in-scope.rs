// The generated code names nothing the user's scope can take over (review 94): constants named like its
// locals (a pattern `this` would match a `const this` instead of binding it), a glob import of types, traits
// and functions named like what it uses (`Box`, `Option`, `Send`, `FnOnce`, `Trust`, `Entrusted`, `drop`, ...),
// and modules named `core`, `std` and `trust_core` at the crate root.
// The glob import is unused: nothing in the expansion takes a name from it.
#![allow(non_upper_case_globals, dead_code, unused_imports)]

mod core {}
mod std {}
mod trust_core {}

mod shadows {
    pub struct Box;
    pub struct Option;
    pub struct Some;
    pub struct Result;
    pub struct Ok;
    pub struct Vec;
    pub struct String;
    pub struct Trust;
    pub struct Arg;
    pub struct Formatter;
    pub trait Send {}
    pub trait Sized {}
    pub trait FnOnce {}
    pub trait Future {}
    pub trait Debug {}
    pub trait Clone {}
    pub trait Entrusted {}
    pub fn drop() {}
    pub fn arg() {}
    pub fn ret() {}
    pub fn trust_of() {}
}

mod model {
    use crate::shadows::*;

    const f: u8 = 0;
    const this: u8 = 0;
    const args: u8 = 0;
    const result: u8 = 0;
    const future: u8 = 0;

    #[::trust_core::entrust]
    #[derive(::core::fmt::Debug)]
    pub struct Account {
        balance: i64,
    }

    #[::trust_core::entrust]
    impl Account {
        pub fn deposit(&mut self, amount: i64) -> i64 {
            self.balance += amount;
            self.balance
        }
        pub fn balance(&self) -> i64 {
            self.balance
        }
        pub fn tag(&mut self, memo: &str, codes: &[u8], extra: &i64) -> usize {
            memo.len() + codes.len() + *extra as usize
        }
        pub fn reset(&mut self) {
            self.balance = 0;
        }
    }

    pub fn new() -> Account {
        Account { balance: 0 }
    }
}

fn main() {
    let account = ::trust_core::entrust(model::new());
    assert_eq!(account.deposit(5), 5);
    account.deposit_then(1, |b| assert_eq!(b, 6));
    ::trust_core::wait_pending();
    assert_eq!(account.tag("ab", &[1], &1), 4);
    let _ = account.balance_async();
    let _ = account.tag_async("ab", &[1], &1);
    account.reset_then(|| ());
    ::trust_core::wait_pending();
    assert_eq!(account.balance(), 0);
}
