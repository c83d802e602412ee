// The stubs of `save` include `save_then`: a method of that name in the same block would clash.
use trust_core::entrust;

#[entrust]
pub struct Doc {
    saved: u32,
}

#[entrust]
impl Doc {
    pub fn save(&mut self) -> u32 {
        self.saved += 1;
        self.saved
    }

    pub fn save_then(&mut self, extra: u32) -> u32 {
        self.saved += extra;
        self.saved
    }
}

fn main() {}
