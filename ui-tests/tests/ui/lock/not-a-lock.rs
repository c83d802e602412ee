// `lock_all!` takes locks: a plain value is refused with a message saying what it accepts (E0277).
use trust_core::lock::ThreadKey;
use trust_core::lock_all;

fn main() {
    let mut key = ThreadKey::get().unwrap();
    let counter = 5;
    let _guards = lock_all!(&mut key, counter);
}
