// A future from `prioritized(p)` borrows the lock (not the temporary `Prioritized`): it cannot outlive
// the lock, so a queued request never points at a dropped lock.
// Expected: E0597 (`lock` does not live long enough).
use trust_core::interval::IntervalRwLock;

fn main() {
    let future;
    {
        let lock = IntervalRwLock::new(vec![0u8; 4]);
        future = lock.prioritized(3).write_async(0..2);
    }
    drop(future);
}
