// (passes) `lock_all!` and `try_lock_all!` expand to nothing a crate's `forbid`s of the naming lints refuse:
// their expansion once carried `#[allow(non_snake_case)]`, which `forbid(non_snake_case)` rejects (E0453).
#![forbid(non_snake_case, non_camel_case_types, non_upper_case_globals)]

use trust_core::lock::{Mutex, RwLock, ThreadKey};
use trust_core::{lock_all, try_lock_all};

fn main() {
    let (a, b) = (Mutex::new(1), RwLock::new(2));
    let mut key = ThreadKey::get().unwrap();
    {
        let (x, y) = lock_all!(&mut key, a, read b);
        assert_eq!(*x + *y, 3);
    }
    assert!(try_lock_all!(&mut key, a, b).is_ok());
}
