// Two `borrow_mut` of the same brand cannot be alive at once, even of different cells: each holds
// `&mut token`. Expected: E0499 (cannot borrow `token` as mutable more than once at a time). To change
// two cells together, use `(&a, &b).borrow_mut(&mut token)` (GhostBorrowMut).
use trust_core::ghost::{GhostCell, GhostToken};

fn main() {
    GhostToken::new(|mut token| {
        let (a, b) = (GhostCell::new(1), GhostCell::new(2));
        let ra = a.borrow_mut(&mut token);
        let rb = b.borrow_mut(&mut token);
        std::mem::swap(ra, rb);
    });
}
