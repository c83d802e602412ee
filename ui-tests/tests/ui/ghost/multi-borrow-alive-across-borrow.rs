// The `&mut`s of `(&a, &b).borrow_mut(&mut token)` hold the token for as long as they live: no cell of
// the brand can be read meanwhile, not even one of the borrowed ones. Expected: E0502 (cannot borrow
// `token` as immutable because it is also borrowed as mutable).
use trust_core::ghost::{GhostBorrowMut, GhostCell, GhostToken};

fn main() {
    GhostToken::new(|mut token| {
        let (a, b) = (GhostCell::new(1), GhostCell::new(2));
        let (x, _y) = (&a, &b).borrow_mut(&mut token).unwrap();
        let seen = *a.borrow(&token);
        *x = seen + 1;
    });
}
