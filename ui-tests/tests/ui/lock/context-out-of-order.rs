// A `LockContext` only moves forward: after `lock_1`, part 0 cannot be locked through the context it
// returned (every thread takes an owned collection's parts in one order, so none waits for a part
// another holds while holding a later one). E0277 through `Reaches`, in our words.
use trust_core::lock::{Mutex, OwnedLockCollection, ThreadKey};

fn main() {
    let mut key = ThreadKey::get().unwrap();
    let locks = OwnedLockCollection::new((Mutex::new(1), Mutex::new(2)));
    let ctx = locks.context(&mut key);
    let (second, ctx) = ctx.lock_1();
    let (first, _) = ctx.lock_0();
    println!("{} {}", *first, *second);
}
