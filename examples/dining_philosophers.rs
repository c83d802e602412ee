//! Five philosophers, five forks, each needs the two forks beside them. With plain mutexes, "take
//! the left fork, then the right" deadlocks as soon as everyone holds their left fork. With
//! `lock_all!` each philosopher takes both forks at once, in the one global order, so every meal
//! gets eaten.
//!
//! Run: `cargo run --release --example dining_philosophers`

use std::thread;

use trust_core::lock::{Mutex, ThreadKey};
use trust_core::lock_all;

const PHILOSOPHERS: [&str; 5] = ["Aristotle", "Kant", "Spinoza", "Marx", "Russell"];
const MEALS: usize = 1_000;

fn main() {
    // Each fork counts how often it was used.
    let forks: Vec<Mutex<usize>> = (0..PHILOSOPHERS.len()).map(|_| Mutex::new(0)).collect();
    thread::scope(|s| {
        for (seat, name) in PHILOSOPHERS.iter().enumerate() {
            let forks = &forks;
            s.spawn(move || {
                let mut key = ThreadKey::get().expect("a fresh thread has its key");
                let (left, right) = (seat, (seat + 1) % forks.len());
                for _ in 0..MEALS {
                    // Everyone names the left fork first; lock_all! still takes them in address
                    // order, so the circle of waiting philosophers can never close.
                    let (mut l, mut r) = lock_all!(&mut key, forks[left], forks[right]);
                    *l += 1;
                    *r += 1;
                }
                println!("{name} ate {MEALS} meals");
            });
        }
    });
    let mut key = ThreadKey::get().unwrap();
    let uses: Vec<usize> = forks.iter().map(|f| *f.lock(&mut key)).collect();
    println!("fork uses: {uses:?}");
    // Every meal used two forks; each fork serves its two neighbours.
    assert_eq!(uses, vec![2 * MEALS; PHILOSOPHERS.len()]);
}
