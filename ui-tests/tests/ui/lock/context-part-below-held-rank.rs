// A context made with a `NestedKey` holding rank `High` cannot lock a part of the lower rank `Low`:
// the same nesting rule as `lock_all!` (E0277 through `LockAfter`, naming both ranks).
use trust_core::lock::{Mutex, OwnedLockCollection, ThreadKey};
use trust_core::{lock_all, lock_ranks};

lock_ranks! { Low; High; }

fn main() {
    let high: Mutex<i32, High> = Mutex::ranked(1);
    let lows = OwnedLockCollection::new([Mutex::<i32, Low>::ranked(2)]);
    let mut key = ThreadKey::get().unwrap();
    let (h, mut nested) = lock_all!(&mut key, high; nest);
    let mut ctx = lows.context(&mut nested);
    let l = ctx.lock_next();
    println!("{} {:?}", *h, l.map(|l| *l));
}
