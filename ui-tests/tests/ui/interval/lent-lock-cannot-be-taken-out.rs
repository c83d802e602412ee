// The closure gets the lent lock by `&` only: `into_inner` (by value) cannot take the caller's elements out
// of it, as it would from an owned lock, so a lent buffer is never rebuilt into a `Box` (E0507).
use trust_core::interval::IntervalRwLock;

fn main() {
    let mut cells = vec![0u8; 4];
    let taken = IntervalRwLock::with_slice(&mut cells, |lock| lock.into_inner());
    println!("{taken:?} {cells:?}");
}
