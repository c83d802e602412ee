// The generated code is accepted in a crate that forbids `unsafe` code and denies warnings.
#![forbid(unsafe_code)]
#![deny(warnings, missing_docs, missing_debug_implementations)]
//! A documented crate.

use trust_core::entrust;

/// A documented, delegable counter.
#[entrust]
#[derive(Debug)]
pub struct Counter {
    n: u64,
}

#[entrust]
impl Counter {
    /// Adds one.
    pub fn bump(&mut self) -> u64 {
        self.n += 1;
        self.n
    }

    fn private_twice(&mut self) -> u64 {
        self.n *= 2;
        self.n
    }
}

fn main() {
    let c = entrust(Counter { n: 0 });
    assert_eq!(c.bump(), 1);
    assert_eq!(c.private_twice(), 2);
}
