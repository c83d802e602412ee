// Rule: only `Send` values can be entrusted: the value moves to the trustee's thread and is dropped there.
// An `Rc` cannot be entrusted; use `Arc` or an owned value.
use std::rc::Rc;
use trust_core::entrust;

fn main() {
    let shared = entrust(Rc::new(5u64));
    drop(shared);
}
