// The frankencell 0.1 bug: its `Debug`/`Display` read the cell without the token, so a value could be
// printed while a `&mut` to it was alive. Here the only way to read the value is `borrow(&token)`, which
// the live `&mut` (holding `&mut token`) forbids; `{:?}` on the cell itself prints `GhostCell { .. }`.
// Expected: E0502 (cannot borrow `token` as immutable because it is also borrowed as mutable).
use trust_core::ghost::{GhostCell, GhostToken};

fn main() {
    GhostToken::new(|mut token| {
        let cell = GhostCell::new(String::from("Hello"));
        let s = cell.borrow_mut(&mut token);
        println!("{cell:?} {}", cell.borrow(&token));
        s.push('!');
    });
}
