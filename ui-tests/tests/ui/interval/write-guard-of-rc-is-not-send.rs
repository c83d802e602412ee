// A `WriteGuard` is an exclusive `&mut [T]`: it can go to another thread only if `T: Send` (E0277).
use std::rc::Rc;
use trust_core::interval::IntervalRwLock;

fn main() {
    let lock = IntervalRwLock::new(vec![Rc::new(0)]);
    let guard = lock.write(..);
    std::thread::scope(|s| {
        s.spawn(move || drop(guard));
    });
}
