// Stubs of two `#[entrust]` impl blocks of one struct live side by side: `save` in one block and `save_then` in
// another both want a stub named `save_then`. Each block is expanded alone, so rustc reports the clash
// (E0592), at the two methods' names.
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
}

#[entrust]
impl Doc {
    pub fn save_then(&mut self, extra: u32) -> u32 {
        self.saved += extra;
        self.saved
    }
}

fn main() {}
