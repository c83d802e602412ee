// Through a `macro_rules!`, the same lock named twice in one hygiene context is still a compile
// error: the caller's `m` passed as `$a` and `$b`, and the macro's own `m` written twice. (The
// macro's `m` beside the caller's `m` is two variables and compiles: review 77,
// `trust-core/tests/adversarial_review77.rs`.)
use trust_core::lock::{Mutex, ThreadKey};
use trust_core::lock_all;

macro_rules! both {
    ($key:ident, $a:ident, $b:ident) => {
        lock_all!(&mut $key, $a, $b)
    };
}

macro_rules! own_twice {
    ($key:ident) => {{
        let m = Mutex::new(2);
        let _guards = lock_all!(&mut $key, m, m);
    }};
}

fn main() {
    let mut key = ThreadKey::get().unwrap();
    let m = Mutex::new(1);
    let _guards = both!(key, m, m);
    own_twice!(key);
}
