// A guard made with `&mut key` keeps the key borrowed until it is dropped, not only until its last use:
// while `first` still holds `a` (it drops at the end of `main`), the thread cannot lock `b` with the same
// key (E0499), for that would be a thread waiting for one lock while it holds another, in any order.
// Drop the first guard (or `Mutex::unlock` it) before taking the next lock, or take both with `lock_all!`.
use trust_core::lock::{Mutex, ThreadKey};

fn main() {
    let (a, b) = (Mutex::new(1), Mutex::new(2));
    let mut key = ThreadKey::get().unwrap();
    let mut first = a.lock(&mut key);
    *first += 1;
    let second = b.lock(&mut key);
    drop(second);
}
