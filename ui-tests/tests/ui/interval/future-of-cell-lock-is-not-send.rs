// A `read_async`/`write_async` future borrows the lock, so it moves to another thread (another executor
// thread) only if the lock is `Sync`: for `Cell`s it is not (E0277), since the future's guard would be a
// `&[Cell<_>]` on that thread while the owner may read the same cells through another read.
use std::cell::Cell;
use trust_core::interval::IntervalRwLock;

fn assert_send<F: Send>(_: F) {}

fn main() {
    let lock = IntervalRwLock::new(vec![Cell::new(0i32)]);
    assert_send(lock.read_async(..));
}
