// `IntervalMutex<T>: Sync` needs `T: Send + Sync`, as the readers-writer lock it wraps does: stricter than
// `std::sync::Mutex<T>`, which needs only `T: Send` (E0277). Share an `IntervalMutex` of `Cell`s through a
// thread of its own, or use `Mutex<Vec<Cell<_>>>`.
use std::cell::Cell;
use trust_core::interval::IntervalMutex;

fn main() {
    let mutex = IntervalMutex::new(vec![Cell::new(0i32); 4]);
    std::thread::scope(|s| {
        s.spawn(|| mutex.lock(0..2)[0].set(1));
    });
}
