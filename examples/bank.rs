//! A bank written with `#[entrust]`: 64 accounts spread over every trustee, 200 fibers moving money between
//! them through the generated stubs. A transfer is two stub calls from the fiber — `withdraw` on one account,
//! then `deposit` on the other — each a blocking call that suspends only the fiber. (Calling a stub from
//! inside another account's delegated method would block a trustee on another trustee: that panics by
//! design.) The total is checked at the end.
//!
//! Run: `cargo run --release --example bank`

use std::time::Instant;

use trust_core::{Trust, entrust, runtime, spawn};

#[entrust]
#[derive(Debug)]
pub struct Account {
    balance: i64,
    deposits: u64,
    withdrawals: u64,
    owner: String,
}

/// Why a withdrawal was refused.
#[derive(Debug, PartialEq)]
pub struct Overdraft {
    pub short_by: i64,
}

#[entrust]
impl Account {
    pub fn open(owner: &str, balance: i64) -> Self {
        Account {
            balance,
            deposits: 0,
            withdrawals: 0,
            owner: owner.to_owned(),
        }
    }

    /// Takes `amount` out if the balance covers it; returns the new balance.
    pub fn withdraw(&mut self, amount: i64) -> Result<i64, Overdraft> {
        if amount > self.balance {
            return Err(Overdraft {
                short_by: amount - self.balance,
            });
        }
        self.balance -= amount;
        self.withdrawals += 1;
        Ok(self.balance)
    }

    /// Puts `amount` in; returns the new balance.
    pub fn deposit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.deposits += 1;
        self.balance
    }

    pub fn balance(&self) -> i64 {
        self.balance
    }

    /// Balance and counts, in one request.
    pub fn statement(&self) -> (i64, u64, u64) {
        (self.balance, self.deposits, self.withdrawals)
    }

    /// A `&str` argument is copied into the request.
    pub fn rename(&mut self, owner: &str) {
        self.owner = owner.to_owned();
    }

    pub fn owner(&self) -> String {
        self.owner.clone()
    }
}

const ACCOUNTS: usize = 64;
const OPENING: i64 = 1_000;
const FIBERS: usize = 200;
const TRANSFERS: usize = 2_500;

/// xorshift64*: reproducible, no dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn main() {
    let rt = runtime();
    let accounts: Vec<Trust<Account>> = (0..ACCOUNTS)
        .map(|i| {
            rt.trustee(i % rt.workers())
                .entrust(Account::open(&format!("customer {i}"), OPENING))
        })
        .collect();
    accounts[0].rename("the bank itself");

    let start = Instant::now();
    let fibers: Vec<_> = (0..FIBERS)
        .map(|f| {
            let accounts = accounts.clone();
            spawn(move || {
                let mut rng = 0x9e37_79b9_7f4a_7c15 ^ (f as u64 + 1);
                let mut moved = 0u64;
                for _ in 0..TRANSFERS {
                    let from = next(&mut rng) as usize % ACCOUNTS;
                    let to = (from + 1 + next(&mut rng) as usize % (ACCOUNTS - 1)) % ACCOUNTS;
                    let amount = 1 + (next(&mut rng) % 50) as i64;
                    // Two requests, to two trustees; the money is in flight between them for a moment.
                    if accounts[from].withdraw(amount).is_ok() {
                        accounts[to].deposit(amount);
                        moved += 1;
                    }
                }
                moved
            })
        })
        .collect();
    let moved: u64 = fibers
        .into_iter()
        .map(|f| f.join().expect("no fiber panics"))
        .sum();
    let elapsed = start.elapsed();

    let statements: Vec<_> = accounts.iter().map(|a| a.statement()).collect();
    let total: i64 = statements.iter().map(|s| s.0).sum();
    let deposits: u64 = statements.iter().map(|s| s.1).sum();
    let withdrawals: u64 = statements.iter().map(|s| s.2).sum();
    assert_eq!(
        total,
        ACCOUNTS as i64 * OPENING,
        "money was created or lost"
    );
    assert_eq!(
        (deposits, withdrawals),
        (moved, moved),
        "every withdrawal was deposited"
    );
    let richest = (0..ACCOUNTS).max_by_key(|&i| statements[i].0).unwrap();

    println!(
        "{moved} of {} transfers went through ({} refused for lack of funds) between {ACCOUNTS} accounts on {} \
         trustees, from {FIBERS} fibers",
        FIBERS * TRANSFERS,
        FIBERS * TRANSFERS - moved as usize,
        rt.workers()
    );
    println!(
        "total balance {total} (unchanged); richest: {} with {}",
        accounts[richest].owner(),
        accounts[richest].balance()
    );
    println!(
        "{:.2} s, {:.0} transfers/s ({:.0} stub calls/s)",
        elapsed.as_secs_f64(),
        moved as f64 / elapsed.as_secs_f64(),
        (FIBERS * TRANSFERS) as f64 / elapsed.as_secs_f64() + moved as f64 / elapsed.as_secs_f64()
    );
}
