// A `&T` argument is cloned into the request, so `T` must be `Clone` (E0277); the error names the fix.
use trust_core::entrust;

pub struct Key(u64);

#[entrust]
pub struct Table {
    total: u64,
}

#[entrust]
impl Table {
    pub fn add(&mut self, key: &Key) -> u64 {
        self.total += key.0;
        self.total
    }
}

fn main() {}
