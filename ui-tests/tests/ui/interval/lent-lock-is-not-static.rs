// A lock lent a slice (`with_slice`) is borrowed for the closure only: `std::thread::spawn` (or
// `trust_core::spawn`), which needs `'static`, cannot take it, or the thread could write the caller's slice
// after `with_slice` gave it back. Share it with threads of a `std::thread::scope` inside the closure (E0521).
use trust_core::interval::IntervalRwLock;

fn main() {
    let mut cells = [0u8; 4];
    IntervalRwLock::with_slice(&mut cells, |lock| {
        std::thread::spawn(move || lock.write(..).fill(1));
    });
    println!("{cells:?}");
}
