// `GhostOnceCell::get` returns a reference that borrows the cell (not the token): it outlives the token
// borrow, so the cell itself must stay borrowed: `take` (through `&mut self`) cannot empty it meanwhile.
// Expected: E0502 (cannot borrow `once` as mutable because it is also borrowed as immutable).
use trust_core::ghost::{GhostOnceCell, GhostToken};

fn main() {
    GhostToken::new(|token| {
        let mut once = GhostOnceCell::with_value(String::from("kept"));
        let kept = once.get(&token).unwrap();
        let _taken = once.take();
        println!("{kept}");
    });
}
