// A `&T` from `borrow(&token)` pins the token: no `borrow_mut` of the brand while it is alive.
// Expected: E0502 (cannot borrow `token` as mutable because it is also borrowed as immutable).
use trust_core::ghost::{GhostCell, GhostToken};

fn main() {
    GhostToken::new(|mut token| {
        let cell = GhostCell::new(vec![1]);
        let first = &cell.borrow(&token)[0];
        cell.borrow_mut(&mut token).clear();
        println!("{first}");
    });
}
