// Review 73 found this failing to compile (fixed). A `#[deprecated]` `#[entrust]` struct: the stubs type
// and the `Entrusted` impl that `#[entrust]` generates name the struct, and each use warned "use of deprecated
// struct `Old`" at the struct's name, in items the user cannot put an `allow` on (a deprecated method's stubs
// allow it: `deprecated-method.rs`). Its impl block allows `deprecated`, as any impl of a deprecated type must.
#![deny(deprecated)]

use trust_core::entrust;

#[entrust]
#[deprecated = "use `New`"]
pub struct Old {
    n: u64,
}

#[entrust]
#[allow(deprecated)]
impl Old {
    pub fn get(&self) -> u64 {
        self.n
    }
}

#[allow(deprecated)]
fn main() {
    let old = entrust(Old { n: 3 });
    assert_eq!(old.get(), 3);
}
