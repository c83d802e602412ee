// `replace_container` (and `take_container`) need `&mut` to the lock: no guard or future is alive, so none
// can point into the elements it frees (E0502).
use trust_core::interval::IntervalRwLock;

fn main() {
    let mut lock = IntervalRwLock::new(vec![0u8; 4]);
    let guard = lock.read(0..2);
    let _old = lock.replace_container(vec![1u8; 8]);
    println!("{:?}", &*guard);
}
