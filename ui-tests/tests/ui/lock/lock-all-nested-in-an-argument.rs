// The key is taken before the arguments are evaluated, so a `lock_all!` inside an argument of
// another (on the same key) does not compile (E0499): the outer call already borrows the key.
use trust_core::lock::{Mutex, ThreadKey};
use trust_core::lock_all;

fn main() {
    let mut key = ThreadKey::get().unwrap();
    let (a, b) = (Mutex::new(0), [Mutex::new(1), Mutex::new(2)]);
    let (gb,) = lock_all!(&mut key, b[*lock_all!(&mut key, a).0]);
    println!("{}", *gb);
}
