// A struct may have several `#[entrust]` impl blocks (and plain ones); each adds its stubs.
use trust_core::entrust;

#[entrust]
pub struct Counter {
    n: u64,
}

#[entrust]
impl Counter {
    pub fn bump(&mut self) -> u64 {
        self.n += 1;
        self.n
    }
}

#[entrust]
impl Counter {
    pub fn get(&self) -> u64 {
        self.n
    }
}

impl Counter {
    /// Not `#[entrust]`: reached through `apply`.
    pub fn reset(&mut self) {
        self.n = 0;
    }
}

fn main() {
    let c = entrust(Counter { n: 0 });
    c.bump();
    assert_eq!(c.get(), 1);
    c.apply(Counter::reset);
    assert_eq!(c.get(), 0);
}
