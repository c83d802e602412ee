// Compiles: formatting a cell with `{:?}` is allowed while a `&mut` to its value is alive, because it
// prints `GhostCell { .. }` and never reads the value (the frankencell bug cannot happen).
use trust_core::ghost::{GhostCell, GhostToken};

fn main() {
    GhostToken::new(|mut token| {
        let cell = GhostCell::new(1);
        let r = cell.borrow_mut(&mut token);
        assert_eq!(format!("{cell:?}"), "GhostCell { .. }");
        *r = 2;
    });
}
