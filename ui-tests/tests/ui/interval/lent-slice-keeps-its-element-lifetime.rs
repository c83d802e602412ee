// `with_slice` takes `&mut [T]`, invariant in `T`: a slice of `&'static str` lends a lock of
// `&'static str`, never of a shorter `&'a str`, so a write guard cannot store a reference to a local that the
// caller would later read as `&'static str` (E0597).
use trust_core::interval::IntervalRwLock;

fn main() {
    let mut names: [&'static str; 1] = ["static"];
    IntervalRwLock::with_slice(&mut names, |lock| {
        let local = String::from("local");
        lock.write(..)[0] = &local;
    });
    println!("{names:?}");
}
