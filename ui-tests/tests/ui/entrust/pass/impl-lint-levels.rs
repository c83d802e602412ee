// An impl's lint levels hold for its stubs, which repeat its methods' types: methods that take a deprecated
// type, under `#[allow(deprecated)]` on the impl, compile with warnings denied.
#![deny(warnings)]

use trust_core::{Trust, entrust};

#[deprecated(note = "use `Id`")]
pub struct OldId(pub u32);

#[entrust]
pub struct Directory {
    hits: u32,
}

#[allow(deprecated)]
#[entrust]
impl Directory {
    pub fn lookup(&mut self, id: OldId) -> u32 {
        self.hits += 1;
        id.0 + self.hits
    }
}

#[allow(deprecated)]
fn main() {
    let directory: Trust<Directory> = entrust(Directory { hits: 0 });
    assert_eq!(directory.lookup(OldId(10)), 11);
}
