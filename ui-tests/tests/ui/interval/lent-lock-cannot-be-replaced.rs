// The closure gets the lent lock by `&` only: `take_container`, `replace_container` and `get_mut` need
// `&mut`, so none can swap the caller's elements for a boxed slice (which the caller would then free as its
// own) or reach them unlocked (E0596).
use trust_core::interval::IntervalMutex;

fn main() {
    let mut cells = [0u8; 4];
    let taken = IntervalMutex::with_slice(&mut cells, |lock| lock.take_container());
    println!("{taken:?} {cells:?}");
}
