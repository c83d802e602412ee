// `with_slice` borrows the caller's slice mutably for as long as the lock lives: the closure cannot read or
// write the slice directly beside the lock's guards (a `&[T]` beside a `WriteGuard`'s `&mut [T]`); it goes
// through the lock (E0502).
use trust_core::interval::IntervalRwLock;

fn main() {
    let mut cells = [0u8; 4];
    IntervalRwLock::with_slice(&mut cells, |lock| {
        let mut guard = lock.write(..2);
        guard[0] = cells[0] + 1;
    });
}
