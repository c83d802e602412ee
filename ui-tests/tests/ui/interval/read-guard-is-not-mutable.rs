// A `ReadGuard` derefs to `&[T]` only: writing through it needs `write` (E0594).
use trust_core::interval::IntervalRwLock;

fn main() {
    let lock = IntervalRwLock::new(vec![0u8; 4]);
    let guard = lock.read(..2);
    guard[0] = 1;
}
