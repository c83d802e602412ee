// `IntervalRwLock<T>: Send` needs `T: Send`, as `RwLock<T>` does: moving the lock moves its elements (E0277).
use std::rc::Rc;
use trust_core::interval::IntervalRwLock;

fn main() {
    let lock = IntervalRwLock::new(vec![Rc::new(0)]);
    std::thread::spawn(move || lock.len());
}
