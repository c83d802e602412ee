//! Transfers between two accounts entrusted to two different trustees, each written once with `launch`:
//! a fiber on the first account's trustee locks its latch, delegates the other half of the transfer to the
//! second account (a nested `launch` that locks that latch), and unlocks. Latches are always taken in
//! account order, so opposite transfers cannot deadlock. Money is conserved under 100,000 concurrent
//! transfers.
//!
//! Run: `cargo run --release --example transfer`

use std::time::Instant;

use trust_core::{Latch, Runtime, Trust, spawn};

type Account = Trust<Latch<i64>>;

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
            true
        });
        if moved {
            *mine += delta;
        }
        moved
    })
}

fn main() {
    let rt = Runtime::builder()
        .workers(2)
        .build()
        .expect("the first runtime of this process");
    let accounts: [Account; 2] = [
        rt.trustee(0).entrust(Latch::new(500_000)),
        rt.trustee(1).entrust(Latch::new(500_000)),
    ];
    let (fibers, each) = (200, 500);
    let start = Instant::now();
    let handles: Vec<_> = (0..fibers)
        .map(|f| {
            let accounts = accounts.clone();
            spawn(move || {
                (0..each)
                    .filter(|i| transfer(&accounts, (f + i) % 2, 1 + (i % 7) as i64))
                    .count()
            })
        })
        .collect();
    let moved: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
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
    assert_eq!(
        balances.iter().sum::<i64>(),
        1_000_000,
        "money is conserved"
    );
}
