// Stubs keep the method's `#[expect(lint)]` as `#[allow(lint)]` (review 39 found it dropped: the lint the
// method expects fired on every stub, which repeats the parameter `W`; an `expect` copied as is could be
// unfulfilled on a stub).
#![deny(non_snake_case)]

use trust_core::entrust;

#[entrust]
pub struct Grid {
    width: u32,
}

#[entrust]
impl Grid {
    #[expect(non_snake_case)]
    pub fn set_width(&mut self, W: u32) -> u32 {
        self.width = W;
        self.width
    }
}

fn main() {
    let grid = entrust(Grid { width: 1 });
    assert_eq!(grid.set_width(7), 7);
}
