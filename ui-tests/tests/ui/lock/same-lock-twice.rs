// Naming the same lock twice in one `lock_all!` would make the thread wait for itself: when the
// macro can see it (the same place expression), it is a compile error.
use trust_core::lock::{Mutex, ThreadKey};
use trust_core::lock_all;

fn main() {
    let mut key = ThreadKey::get().unwrap();
    let accounts = [Mutex::new(1), Mutex::new(2)];
    let _guards = lock_all!(&mut key, accounts[0], accounts[1], accounts[0]);
}
