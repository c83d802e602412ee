// An `IntervalMutex` only writes, with a priority too: `prioritized(p)` gives `lock` and `lock_async`,
// no `read`, so no two borrows of one mutex overlap.
// Expected: E0599 (no method named `read` on `PrioritizedMutex`).
use trust_core::interval::IntervalMutex;

fn main() {
    let rows = IntervalMutex::new(vec![0u8; 4]);
    let first = rows.prioritized(1).lock(0..2);
    let second = rows.prioritized(1).read(1..3);
    drop((first, second));
}
