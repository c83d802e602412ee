// REVIEW 39 FINDING. docs/entrust.md: stubs keep the method's "`#[cfg]`s ... and `#[allow]`s". An `#[allow]`
// written under `#[cfg_attr(..)]` (as `#[cfg_attr(test, allow(..))]` is) is dropped from the stubs, so the
// lint the method allows fires on every stub (this program should compile: `allow-attributes.rs` is the same
// with a plain `#[allow]`, and passes).
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
