// A generic helper over any key cannot lock a rank without saying it may: the nesting rule is a bound
// (`Low: LockAfter<K::Held>`), so a helper that omits it does not compile, whatever key it is called with.
// Expected: E0277 naming the rank and the key's held rank.
use trust_core::lock::{LockKey, Mutex};
use trust_core::{lock_all, lock_ranks};

lock_ranks! { Low; High; }

fn bump<K: LockKey>(key: &mut K, low: &Mutex<i32, Low>) {
    let (mut l,) = lock_all!(&mut *key, low);
    *l += 1;
}

fn main() {
    let low: Mutex<i32, Low> = Mutex::ranked(1);
    let _ = (bump::<trust_core::lock::ThreadKey>, &low);
}
