// REVIEW 39 FINDING. docs/entrust.md: stubs keep the method's "`#[allow]`s (a stub repeats the method's
// parameters, so a lint the method allows would fire on it again)". `#[expect(lint)]`, the form clippy's
// `allow_attributes` lint asks for, is not carried over: the stubs repeat the parameter `W` and the lint the
// method expects fires on each of them (this program should compile; `allow-attributes.rs` is the same with
// `#[allow]`, and passes).
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
