// KNOWN LIMIT (review 39). docs/entrust.md: methods keep their signatures on the handle, and `Self` in them names
// the struct (parse.rs replaces it in types). `Self` in an array length (`[u8; Self::LEN]`, an associated const
// of the impl) is an expression and is not replaced: in the stubs it names the generated stubs type, which
// has no `LEN`, and rustc reports that at the user's `Self::LEN`.
use trust_core::entrust;

#[entrust]
pub struct Table {
    key: [u8; 4],
}

#[entrust]
impl Table {
    pub const LEN: usize = 4;

    pub fn set_key(&mut self, key: [u8; Self::LEN]) -> usize {
        self.key = key;
        Self::LEN
    }
}

fn main() {
    let t = entrust(Table { key: [0; 4] });
    assert_eq!(t.set_key([1, 2, 3, 4]), 4);
}
