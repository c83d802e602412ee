// The key a guard borrowed cannot be dropped while the guard lives (E0505): `ThreadKey::get` would then hand
// the thread a second key while the guard still holds its lock. Drop the guard first.
use trust_core::lock::{Mutex, ThreadKey};

fn main() {
    let a = Mutex::new(1);
    let mut key = ThreadKey::get().unwrap();
    let _guard = a.lock(&mut key);
    drop(key);
    let _second = ThreadKey::get();
}
