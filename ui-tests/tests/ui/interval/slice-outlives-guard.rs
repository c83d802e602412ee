// What a guard derefs to borrows the guard: a reference into a temporary guard cannot outlive the
// statement (E0716). The range is released when the guard drops, and a writer may then take it.
use trust_core::interval::IntervalRwLock;

fn main() {
    let lock = IntervalRwLock::new(vec![0u8; 4]);
    let first: Option<&u8> = lock.read(..).first();
    let _writer = lock.write(..);
    println!("{first:?}");
}
