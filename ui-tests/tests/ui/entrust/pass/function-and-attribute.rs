// The function `trust_core::entrust` and the attribute `#[trust_core::entrust]` live side by side.
#[trust_core::entrust]
pub struct Counter(u64);

#[trust_core::entrust]
impl Counter {
    pub fn bump(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

fn main() {
    let c = trust_core::entrust(Counter(5));
    assert_eq!(c.bump(), 6);
    let n = trust_core::entrust(5u8);
    assert_eq!(n.apply(|n| *n), 5);
}
