// `scoped_lock` unlocks when the closure returns, so the data reference it lends cannot be
// returned out of the closure (lifetime error). (`happylock` 0.5.2's `scoped_lock` allows this.)
use trust_core::lock::{Mutex, ThreadKey};

fn main() {
    let mut key = ThreadKey::get().unwrap();
    let m = Mutex::new(1);
    let escaped: &mut i32 = m.scoped_lock(&mut key, |data| data);
    *escaped += 1;
}
