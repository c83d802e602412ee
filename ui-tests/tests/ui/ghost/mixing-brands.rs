// A cell belongs to the token it was first used with: reading it with a token of another brand is
// rejected, because each `GhostToken::new` brand is a fresh, invariant lifetime that cannot be unified
// with another. Expected: E0521 (borrowed data escapes outside of closure), once for each brand.
use trust_core::ghost::{GhostCell, GhostToken};

fn main() {
    GhostToken::new(|first| {
        let cell = GhostCell::new(1);
        let _ = cell.borrow(&first);
        GhostToken::new(|second| {
            let _ = cell.borrow(&second);
        });
    });
}
