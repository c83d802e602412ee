// Stubs keep each method's `#[allow]`s: they repeat its parameters, so a lint the method allows must not fire
// on them (here `non_snake_case`, denied for the whole file).
#![deny(non_snake_case)]

use trust_core::entrust;

#[entrust]
pub struct Grid {
    width: u32,
}

#[entrust]
impl Grid {
    #[allow(non_snake_case)]
    pub fn set_width(&mut self, W: u32) -> u32 {
        self.width = W;
        self.width
    }
}

fn main() {
    let grid = entrust(Grid { width: 1 });
    assert_eq!(grid.set_width(7), 7);
    grid.set_width_then(9, |w| assert_eq!(w, 9));
    trust_core::wait_pending();
}
