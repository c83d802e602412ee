// Unranked locks sit below every rank and tie with each other: one cannot be taken while another
// is held. Take them all in one `lock_all!` (E0277 through `LockAfter`).
use trust_core::lock::{Mutex, ThreadKey};
use trust_core::lock_all;

fn main() {
    let (a, b) = (Mutex::new(1), Mutex::new(2));
    let mut key = ThreadKey::get().unwrap();
    let (ga, mut key) = lock_all!(&mut key, a; nest);
    let (gb,) = lock_all!(&mut key, b);
    println!("{} {}", *ga, *gb);
}
