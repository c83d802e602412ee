// A `NestedKey` only serves `lock_all!` (and contexts), where its held rank is checked: a single lock's
// `lock` takes a `ThreadKey` or `&mut ThreadKey`, so a nested key cannot smuggle a lower rank in there.
// Expected: E0277 (`&mut NestedKey<'_, High>` is not a thread key).
use trust_core::lock::{Mutex, ThreadKey};
use trust_core::{lock_all, lock_ranks};

lock_ranks! { Low; High; }

fn main() {
    let low: Mutex<i32, Low> = Mutex::ranked(1);
    let high: Mutex<i32, High> = Mutex::ranked(2);
    let mut key = ThreadKey::get().unwrap();
    let (h, mut nested) = lock_all!(&mut key, high; nest);
    let l = low.lock(&mut nested);
    println!("{} {}", *h, *l);
}
