// `parallel_read_then_commit` gives the read phase only `&GhostToken`: it may read any cell but write
// none (that is what lets the readers run in parallel). Write in the commit phase instead.
// Expected: E0308 (mismatched types: expected `&mut GhostToken`, found `&GhostToken`).
use trust_core::ghost::{GhostCell, GhostToken, parallel_read_then_commit};

fn main() {
    GhostToken::new(|mut token| {
        let cell = GhostCell::new(1);
        parallel_read_then_commit(&mut token, |_, token| *cell.borrow_mut(token) += 1, |_, _| ());
    });
}
