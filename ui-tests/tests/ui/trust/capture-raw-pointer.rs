// Rule: a delegated closure cannot capture a raw pointer: it is not `Send`, and the trustee could not know
// what it points to. Send the data itself.
use trust_core::entrust;

fn main() {
    let counter = entrust(0u64);
    let mut local = 5u64;
    let ptr: *mut u64 = &mut local;
    counter.apply(move |c| *c += unsafe { *ptr });
}
