// A `ReadGuard` is a shared `&[T]`: it can go to another thread only if `T: Sync` (E0277). Another
// reader of the same range could be touching the same `Cell`s at the same time.
use std::cell::Cell;
use trust_core::interval::IntervalRwLock;

fn main() {
    let lock = IntervalRwLock::new(vec![Cell::new(0)]);
    let guard = lock.read(..);
    std::thread::scope(|s| {
        s.spawn(move || guard[0].set(1));
    });
}
