// A lock is taken only with the thread's key: `RawLock::raw_lock` (which takes one without a key, outside the
// lock order) is an `unsafe fn`, for collections and `lock_all!`, which call it while they hold the key.
// Expected: E0133 (call to unsafe function requires an unsafe block).
use trust_core::lock::{Mutex, RawLock};

fn main() {
    let m = Mutex::new(0u8);
    m.raw_lock();
}
