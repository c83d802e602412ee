// Stubs keep an `#[allow]` written under `#[cfg_attr(..)]` (review 39 found it dropped from the `_then` and
// `_async` stubs: the lint the method allows fired on them).
#![deny(non_snake_case)]

use trust_core::entrust;

#[entrust]
pub struct Grid {
    width: u32,
}

#[entrust]
impl Grid {
    #[cfg_attr(all(), allow(non_snake_case))]
    pub fn set_width(&mut self, W: u32) -> u32 {
        self.width = W;
        self.width
    }
}

fn main() {
    let grid = entrust(Grid { width: 1 });
    assert_eq!(grid.set_width(7), 7);
}
