// `RetryingLockCollection::child_mut` needs a child that owns its locks: `try_new` checked a child of
// references for duplicates once, and through `&mut` it could come to name one lock twice (`lock` would then
// retry forever). Take the child out with `into_child` and build again with `try_new` instead.
use trust_core::lock::{Mutex, RetryingLockCollection};

fn main() {
    let (a, b) = (Mutex::new(1), Mutex::new(2));
    let mut both = RetryingLockCollection::try_new(vec![&a, &b]).unwrap();
    both.child_mut().push(&a);
}
