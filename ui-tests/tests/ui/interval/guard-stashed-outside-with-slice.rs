// A lock lent a slice (`with_slice`) is borrowed for the closure only, whatever the closure captures: a guard
// cannot be stored in a variable of the caller's (here an `Option` the closure writes), any more than
// returned (E0521).
use trust_core::interval::IntervalRwLock;

fn main() {
    let mut cells = [0u8; 4];
    let mut stash = None;
    IntervalRwLock::with_slice(&mut cells, |lock| stash = Some(lock.write(..2)));
    println!("{cells:?} {stash:?}");
}
