// `get_mut` skips the locking because `&mut self` proves that no guard is alive (E0502).
use trust_core::interval::IntervalRwLock;

fn main() {
    let mut lock = IntervalRwLock::new(vec![0u8; 4]);
    let guard = lock.read(0..2);
    lock.get_mut()[3] = 1;
    println!("{}", guard[0]);
}
