// A cell used with the token cannot leave `GhostToken::new`: it carries the brand, which exists only
// inside the closure. Expected: E0521 (borrowed data escapes outside of closure).
use trust_core::ghost::{GhostCell, GhostToken};

fn main() {
    let mut escaped = None;
    GhostToken::new(|mut token| {
        let cell = GhostCell::new(1);
        *cell.borrow_mut(&mut token) = 2;
        escaped = Some(cell);
    });
    drop(escaped);
}
