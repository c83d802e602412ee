// `lock_all!` borrows the key (`&mut key`), so its guards can give it back; passing the key by value
// is a type error (E0308).
use trust_core::lock::{Mutex, ThreadKey};
use trust_core::lock_all;

fn main() {
    let key = ThreadKey::get().unwrap();
    let m = Mutex::new(1);
    let _guards = lock_all!(key, m);
}
