// A `&mut T` from `borrow_mut` cannot outlive the token borrow it came from: giving the token away (to
// another thread, or dropping it) ends every borrow of the brand. Expected: E0505 (cannot move out of
// `token` because it is borrowed).
use trust_core::ghost::{GhostCell, GhostToken};

fn main() {
    GhostToken::new(|mut token| {
        let cell = GhostCell::new(1);
        let r = cell.borrow_mut(&mut token);
        drop(token);
        *r = 2;
    });
}
