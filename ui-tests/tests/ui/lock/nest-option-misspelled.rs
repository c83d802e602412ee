// After `;`, `lock_all!` accepts only `nest` (return a key for higher ranks).
use trust_core::lock::{Mutex, ThreadKey};
use trust_core::lock_all;

fn main() {
    let m = Mutex::new(0);
    let mut key = ThreadKey::get().unwrap();
    let _guards = lock_all!(&mut key, m; nested);
}
