// A lock lent a slice (`with_slice`) lives only as long as the closure: a guard cannot be taken out of
// it, or the caller would hold the slice and a `&mut` into it at once (lifetime error).
use trust_core::interval::IntervalRwLock;

fn main() {
    let mut cells = [0u8; 4];
    let guard = IntervalRwLock::with_slice(&mut cells, |lock| lock.write(..2));
    println!("{:?} {:?}", cells, &*guard);
}
