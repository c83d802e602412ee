// `try_lock_all!` has `lock_all!`'s rules, and its errors name it: the same lock twice is a compile
// error too (trying it would always fail, and the message says which macro to fix).
use trust_core::lock::{Mutex, ThreadKey};
use trust_core::try_lock_all;

fn main() {
    let mut key = ThreadKey::get().unwrap();
    let (a, b) = (Mutex::new(1), Mutex::new(2));
    let _guards = try_lock_all!(&mut key, a, b, a);
}
