// Compiles: threads share `&IntervalRwLock<T>` (`T: Send + Sync`) and write disjoint ranges at once.
use trust_core::interval::IntervalRwLock;

fn main() {
    let lock = IntervalRwLock::new(vec![0u32; 8]);
    std::thread::scope(|s| {
        for half in [0..4, 4..8] {
            let lock = &lock;
            s.spawn(move || lock.write(half.clone()).fill(half.start as u32));
        }
    });
    assert_eq!(lock.into_inner(), [0, 0, 0, 0, 4, 4, 4, 4]);
}
