// `MutexRef::mutex` lends the mutex for as long as the guard is borrowed, not for the whole borrow of its
// collection: an owned collection's parts cannot escape it and be locked outside it, in another order.
// Expected: E0505 (cannot move out of `guard` because it is borrowed).
use trust_core::lock::{Mutex, MutexRef, OwnedLockCollection, ThreadKey};

fn main() {
    let mut key = ThreadKey::get().unwrap();
    let pair = OwnedLockCollection::new((Mutex::new(1), Mutex::new(2)));
    let guard = pair.lock(&mut key);
    let first = MutexRef::mutex(&guard.0);
    drop(guard);
    println!("{}", first.is_locked());
}
