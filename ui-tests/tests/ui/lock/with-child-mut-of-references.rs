// `LockCollection::with_child_mut` needs a child that owns its locks: re-sorting is then the whole
// re-validation. A child of references could be changed to name one lock twice; rebuild it with
// `into_child` and `try_new` instead. (There is no `child_mut`: the cached order points into the child.)
use trust_core::lock::{LockCollection, Mutex};

fn main() {
    let (a, b) = (Mutex::new(1), Mutex::new(2));
    let mut both = LockCollection::try_new((&a, &b)).unwrap();
    both.with_child_mut(|child| child.1 = &a);
}
