// `read` asks for shared access, which only an `RwLock` has (E0277 through `Sharable`).
use trust_core::lock::{Mutex, ThreadKey};
use trust_core::lock_all;

fn main() {
    let mut key = ThreadKey::get().unwrap();
    let m = Mutex::new(1);
    let _guards = lock_all!(&mut key, read m);
}
