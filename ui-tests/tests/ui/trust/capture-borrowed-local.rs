// Rule: a delegated closure runs later, on another thread: it cannot borrow the caller's locals.
// Move an owned copy into the closure (`move`, or clone first) instead.
use trust_core::entrust;

fn main() {
    let counter = entrust(0u64);
    let step = 5u64;
    let step_ref = &step;
    counter.apply(|c| *c += *step_ref);
}
