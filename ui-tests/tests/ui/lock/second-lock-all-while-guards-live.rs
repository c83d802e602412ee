// While `lock_all!` guards live, the key stays borrowed: a second `lock_all!` on the same key does
// not compile (E0499). Take everything in one call, or nest higher ranks with `; nest`.
use trust_core::lock::{Mutex, ThreadKey};
use trust_core::lock_all;

fn main() {
    let mut key = ThreadKey::get().unwrap();
    let (a, b) = (Mutex::new(1), Mutex::new(2));
    let (ga,) = lock_all!(&mut key, a);
    let (gb,) = lock_all!(&mut key, b);
    println!("{} {}", *ga, *gb);
}
