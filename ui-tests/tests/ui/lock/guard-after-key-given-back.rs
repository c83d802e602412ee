// `Mutex::unlock` consumes the guard to give the key back: the guard cannot be used after (E0382).
use trust_core::lock::{Mutex, ThreadKey};

fn main() {
    let m = Mutex::new(0);
    let mut guard = m.lock(ThreadKey::get().unwrap());
    let _key = Mutex::unlock(guard);
    *guard += 1;
}
