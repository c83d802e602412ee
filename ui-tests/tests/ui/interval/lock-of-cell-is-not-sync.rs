// `IntervalRwLock<T>: Sync` needs `T: Sync` (E0277), as `RwLock<T>` does: threads sharing the lock
// could hold overlapping read guards of the same `Cell`s.
use std::cell::Cell;
use trust_core::interval::IntervalRwLock;

fn main() {
    let lock = IntervalRwLock::new(vec![Cell::new(0); 4]);
    std::thread::scope(|s| {
        s.spawn(|| lock.read(..2)[0].set(1));
    });
}
