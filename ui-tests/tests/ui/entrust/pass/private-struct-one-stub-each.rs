// A private struct whose methods are each called one way only (one through its blocking stub, one through its
// `_then` stub) compiles without a "never used" warning: a stub's name is the macro's, and `dead_code` is quiet
// about items a macro makes, as for any (here `dead_code` is denied for the whole file).
#![deny(dead_code)]

use trust_core::entrust;

#[entrust]
struct Hits {
    count: u64,
}

#[entrust]
impl Hits {
    fn bump(&mut self) -> u64 {
        self.count += 1;
        self.count
    }

    fn count(&self) -> u64 {
        self.count
    }
}

fn main() {
    let hits = entrust(Hits { count: 0 });
    hits.bump_then(|n| assert_eq!(n, 1));
    trust_core::wait_pending();
    assert_eq!(hits.count(), 1);
}
