// Two locks of the same rank must be taken in one `lock_all!` (ordered by address): nesting one
// inside the other is a compile error naming the rank twice (E0277 through `LockAfter`).
use trust_core::lock::{Mutex, ThreadKey};
use trust_core::{lock_all, lock_ranks};

lock_ranks! { Account; }

fn main() {
    let alice: Mutex<i64, Account> = Mutex::ranked(10);
    let bob: Mutex<i64, Account> = Mutex::ranked(0);
    let mut key = ThreadKey::get().unwrap();
    let (a, mut key) = lock_all!(&mut key, alice; nest);
    let (b,) = lock_all!(&mut key, bob);
    println!("{} {}", *a, *b);
}
