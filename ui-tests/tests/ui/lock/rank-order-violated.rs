// Holding a lock of rank `High`, a lock of the lower rank `Low` cannot be taken: the error names
// both ranks (E0277 through `LockAfter`).
use trust_core::lock::{Mutex, ThreadKey};
use trust_core::{lock_all, lock_ranks};

lock_ranks! { Low; High; }

fn main() {
    let low: Mutex<i32, Low> = Mutex::ranked(1);
    let high: Mutex<i32, High> = Mutex::ranked(2);
    let mut key = ThreadKey::get().unwrap();
    let (h, mut key) = lock_all!(&mut key, high; nest);
    let (l,) = lock_all!(&mut key, low);
    println!("{} {}", *h, *l);
}
