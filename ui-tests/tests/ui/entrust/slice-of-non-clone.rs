// A `&[T]` argument is cloned into the request, so `T` must be `Clone` (E0277).
use std::sync::Mutex;
use trust_core::entrust;

#[entrust]
pub struct Pool {
    size: usize,
}

#[entrust]
impl Pool {
    pub fn add(&mut self, locks: &[Mutex<u8>]) -> usize {
        self.size += locks.len();
        self.size
    }
}

fn main() {}
