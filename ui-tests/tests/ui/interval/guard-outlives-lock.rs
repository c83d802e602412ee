// A guard borrows its lock: the lock cannot be dropped while a guard is alive (E0505).
use trust_core::interval::IntervalRwLock;

fn main() {
    let lock = IntervalRwLock::new(vec![0u8; 4]);
    let guard = lock.write(..);
    drop(lock);
    println!("{:?}", &*guard);
}
