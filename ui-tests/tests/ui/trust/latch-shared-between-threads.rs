// Rule: a `Latch` cannot be shared between threads (E0277): its fibers' queue is plain cells, which only
// its trustee's thread touches. Entrust it (`entrust(Latch::new(..))`) and share the `Trust<Latch<T>>`;
// `launch` runs closures that lock it on the trustee.
use std::sync::Arc;
use trust_core::Latch;

fn main() {
    let latch = Arc::new(Latch::new(0u64));
    let other = Arc::clone(&latch);
    std::thread::spawn(move || *other.lock() += 1).join().unwrap();
}
