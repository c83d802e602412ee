// Rule: a launched closure cannot return the `LatchGuard` it took (E0277): the result goes back to the
// caller's thread, and a guard borrows the `Latch`, which stays on its trustee (`!Sync`). Return what
// the guard reads (`*latch.lock()`), or do the work inside the closure.
use trust_core::{Latch, entrust};

fn main() {
    let shared = entrust(Latch::new(0u64));
    let guard = shared.launch(|latch| latch.lock());
    drop(guard);
}
