// `get_mut` needs the cell itself exclusively (no token), so no `&T` from `borrow` may be alive.
// Expected: E0502 (cannot borrow `cell` as mutable because it is also borrowed as immutable).
use trust_core::ghost::{GhostCell, GhostToken};

fn main() {
    GhostToken::new(|token| {
        let mut cell = GhostCell::new(1);
        let r = cell.borrow(&token);
        *cell.get_mut() = 2;
        println!("{r}");
    });
}
