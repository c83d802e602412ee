// `lock_all!` needs at least one lock after the key.
use trust_core::lock::ThreadKey;
use trust_core::lock_all;

fn main() {
    let mut key = ThreadKey::get().unwrap();
    let () = lock_all!(&mut key);
}
