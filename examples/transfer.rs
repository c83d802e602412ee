//! Transfers between two accounts entrusted to two different trustees, each written once with `launch`:
//! a fiber on the first account's trustee locks its latch, delegates the other half of the transfer to the
//! second account (a nested `launch` that locks that latch), and unlocks. Latches are always taken in
//! account order, so opposite transfers cannot deadlock. Under 100,000 concurrent transfers each balance
//! ends as its opening one plus exactly the transfers reported done, and none ever goes below zero: the
//! accounts open with little money, so many transfers are refused, and each update checks its balance.
//! The first account's fiber checks its balance, waits for the second account, then pays, all under its
//! latch: without the latch, two fibers could both pass the check before either paid, and overdraw it.
//!
//! Run: `cargo run --release --example transfer`

use std::time::Instant;

use trust_core::{Latch, Runtime, Trust, spawn};

type Account = Trust<Latch<i64>>;

/// Each account's opening balance: small, so that transfers are refused and the latch's exclusion matters.
const OPENING: i64 = 100;

/// Moves `amount` from `from` to `to` (indices into `accounts`) if `from` has it; returns whether it moved.
fn transfer(accounts: &[Account; 2], from: usize, amount: i64) -> bool {
    let (first, second) = (accounts[0].clone(), accounts[1].clone());
    // `delta` is what the first account gains; the second gains its opposite.
    let delta = if from == 0 { -amount } else { amount };
    first.launch(move |latch| {
        let mut mine = latch.lock();
        if delta < 0 && *mine < amount {
            return false;
        }
        let moved = second.launch(move |latch| {
            let mut theirs = latch.lock();
            if delta > 0 && *theirs < amount {
                return false;
            }
            *theirs -= delta;
            assert!(*theirs >= 0, "the second account overdrawn: {}", *theirs);
            true
        });
        if moved {
            *mine += delta;
            assert!(*mine >= 0, "the first account overdrawn: {}", *mine);
        }
        moved
    })
}

fn main() {
    let rt = Runtime::builder()
        .workers(2)
        .build()
        .unwrap_or_else(|e| panic!("cannot start the runtime: {e}"));
    let accounts: [Account; 2] = [
        rt.trustee(0).entrust(Latch::new(OPENING)),
        rt.trustee(1).entrust(Latch::new(OPENING)),
    ];
    let (fibers, each) = (200, 500);
    let start = Instant::now();
    let handles: Vec<_> = (0..fibers)
        .map(|f| {
            let accounts = accounts.clone();
            spawn(move || {
                // The transfers that went through, and what they gave the first account in all.
                let (mut moved, mut gained) = (0, 0);
                for i in 0..each {
                    let (from, amount) = ((f + i) % 2, 1 + (i % 7) as i64);
                    if transfer(&accounts, from, amount) {
                        moved += 1;
                        gained += if from == 0 { -amount } else { amount };
                    }
                }
                (moved, gained)
            })
        })
        .collect();
    let (moved, gained) = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold((0, 0), |(m, g), (moved, gained)| (m + moved, g + gained));
    let secs = start.elapsed().as_secs_f64();
    // A plain `apply` hands out `&mut Latch`: it runs once no launched fiber shares the latch.
    let balances: Vec<i64> = accounts.iter().map(|a| a.apply(|l| *l.get_mut())).collect();
    println!(
        "{} transfers ({moved} moved) in {secs:.2} s: {:.0} transfers/s",
        fibers * each,
        (fibers * each) as f64 / secs
    );
    println!(
        "balances {balances:?}, total {}",
        balances.iter().sum::<i64>()
    );
    // Exactly the transfers reported as moved moved, each once: so money is conserved too.
    assert_eq!(
        balances,
        [OPENING + gained, OPENING - gained],
        "the balances are the opening ones plus the transfers that went through"
    );
}
