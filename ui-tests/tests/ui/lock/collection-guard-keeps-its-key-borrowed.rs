// A collection's guard and an `RwLock`'s guards made with `&mut key` keep it borrowed until they drop
// (E0499), as a `Mutex`'s does: no lock is taken while one of them still holds its locks.
use trust_core::lock::{LockCollection, Mutex, RwLock, ThreadKey};

fn main() {
    let pair = LockCollection::new((Mutex::new(1), Mutex::new(2)));
    let rw = RwLock::new(3);
    let mut key = ThreadKey::get().unwrap();
    let mut both = pair.lock(&mut key);
    *both.0 += 10;
    let mut w = rw.write(&mut key);
    *w += 10;
    let _r = rw.read(&mut key);
}
