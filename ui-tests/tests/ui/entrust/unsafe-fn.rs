// An `unsafe fn` cannot be delegated: its safety contract would have to hold on the trustee's thread.
use trust_core::entrust;

#[entrust]
pub struct Buffer {
    bytes: Vec<u8>,
}

#[entrust]
impl Buffer {
    pub unsafe fn get_unchecked(&self, i: usize) -> u8 {
        unsafe { *self.bytes.get_unchecked(i) }
    }
}

fn main() {}
