// `read (c)` and `read(c)` read-lock `c` (review 77: they were a call to a function `read`); so
// `read` before parentheses around a `Mutex` says it cannot be read-locked. A call is never a lock
// argument anyway (its result would die while its guard lives): bind the reference first.
use trust_core::lock::{Mutex, ThreadKey};
use trust_core::lock_all;

fn main() {
    let mut key = ThreadKey::get().unwrap();
    let m = Mutex::new(1);
    let _guards = lock_all!(&mut key, read(m));
}
