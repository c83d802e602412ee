// Compiles: a `WriteGuard<Cell<_>>` is `Send` (like `&mut [Cell<_>]`), though the lock is not `Sync`.
// The other thread owns that range exclusively; this thread keeps using the rest.
use std::cell::Cell;
use trust_core::interval::IntervalRwLock;

fn main() {
    let lock = IntervalRwLock::new(vec![Cell::new(0); 4]);
    let left = lock.write(..2);
    std::thread::scope(|s| {
        s.spawn(move || left[0].set(1));
        lock.read(2..)[0].set(2);
    });
    assert_eq!(lock.into_inner().iter().map(Cell::get).collect::<Vec<_>>(), [1, 0, 2, 0]);
}
