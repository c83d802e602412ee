// A Chase-Lev deque has exactly one owner (the only one who pushes and pops at the bottom): the owner
// handle is not `Clone`. Share `stealer()`s instead.
// Expected: E0599 (no method named `clone` found for `GhostChaseLevDeque`).
use trust_core::ghost::{GhostChaseLevDeque, GhostToken};

fn main() {
    GhostToken::new(|_token| {
        let owner = GhostChaseLevDeque::new(4);
        let second = owner.clone();
        second.push_bottom(1).unwrap();
    });
}
