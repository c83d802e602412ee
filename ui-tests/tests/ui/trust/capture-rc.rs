// Rule: a delegated closure is sent to the trustee's thread, so everything it captures must be `Send`:
// an `Rc` is not (use `Arc`, or keep the value inside the property).
use std::rc::Rc;
use trust_core::entrust;

fn main() {
    let counter = entrust(0u64);
    let step = Rc::new(5u64);
    counter.apply(move |c| *c += *step);
}
