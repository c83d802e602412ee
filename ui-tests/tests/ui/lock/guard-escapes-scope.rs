// A guard borrows its lock (and the key): it cannot outlive the scope the lock lives in (E0597).
use trust_core::lock::{Mutex, ThreadKey};
use trust_core::lock_all;

fn main() {
    let mut key = ThreadKey::get().unwrap();
    let escaped = {
        let local = Mutex::new(5);
        let (guard,) = lock_all!(&mut key, local);
        guard
    };
    println!("{}", *escaped);
}
