// `; nest` must name the highest rank it took, so every rank in the call must come from one
// `lock_ranks!` list: ranks of two lists cannot be compared (E0277 through `MaxRank`).
use trust_core::lock::{Mutex, ThreadKey};
use trust_core::{lock_all, lock_ranks};

mod storage {
    trust_core::lock_ranks! { pub Disk; }
}
lock_ranks! { Cache; }

fn main() {
    let disk: Mutex<u8, storage::Disk> = Mutex::ranked(0);
    let cache: Mutex<u8, Cache> = Mutex::ranked(0);
    let mut key = ThreadKey::get().unwrap();
    let (_d, _c, _inner) = lock_all!(&mut key, disk, cache; nest);
}
