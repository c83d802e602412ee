// Review 73 found this failing to compile (fixed). docs/entrust.md: "every `&self` / `&mut self` method
// becomes callable on `Trust<Struct>`". `self: &Counter` and `self: &mut Counter` are `&self` and `&mut self`
// spelled with the type's name (as `self: &Self` is, which adversarial_entrust_more.rs holds): they were
// rejected with "has a `self: &Counter` receiver, which cannot be delegated ... take one of those".
use trust_core::entrust;

#[entrust]
pub struct Counter {
    n: u64,
}

#[entrust]
impl Counter {
    pub fn get(self: &Counter) -> u64 {
        self.n
    }
    pub fn bump<'a>(self: &'a mut Counter, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

fn main() {
    let c = entrust(Counter { n: 1 });
    assert_eq!(c.bump(2), 3);
    assert_eq!(c.get(), 3);
}
