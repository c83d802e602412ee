// KNOWN LIMIT (review 39). docs/entrust.md: generic structs work, and "`Self` in signatures" is replaced (a method's
// `where Self: ..` names the struct). `Self` in the impl block's own `where` clause is copied as is onto the
// stubs' impl, where it names the stubs type: `where Self: Clone` (true of `Pile<T>`) becomes
// `PileStubs<T>: Clone`, so every stub of the block is uncallable, and rustc suggests deriving `Clone` for the
// generated type.
use trust_core::{Trust, entrust};

#[entrust]
#[derive(Clone, Default)]
pub struct Pile<T> {
    items: Vec<T>,
}

#[entrust]
impl<T: Clone + Send + 'static> Pile<T>
where
    Self: Clone,
{
    pub fn len(&self) -> usize {
        self.items.len()
    }
}

fn main() {
    let p: Trust<Pile<u64>> = entrust(Pile { items: vec![1, 2] });
    assert_eq!(p.len(), 2);
}
