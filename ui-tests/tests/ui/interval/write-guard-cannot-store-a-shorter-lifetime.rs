// The lock is invariant in `T`, as a `RwLock<T>` is: a `&IntervalRwLock<&'static str>` cannot be seen as a
// `&IntervalRwLock<&'a str>`, whose write guard would store a `&'a str` that the owner later reads as
// `&'static str` after `'a` ends (a dangling reference).
use trust_core::interval::IntervalRwLock;

fn store<'a>(lock: &IntervalRwLock<&'static str>, short: &'a str) {
    let shorter: &IntervalRwLock<&'a str> = lock;
    shorter.write(..)[0] = short;
}

fn main() {
    let lock = IntervalRwLock::new(vec!["static"]);
    store(&lock, &String::from("short"));
}
