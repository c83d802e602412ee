// `GhostCell<T>: Send` only if `T: Send`: a cell of `Rc` cannot move to another thread.
// Expected: E0277 (`Rc<i32>` cannot be sent between threads safely).
use std::rc::Rc;
use trust_core::ghost::{GhostCell, GhostToken};

fn main() {
    GhostToken::new(|_token| {
        let cell = GhostCell::new(Rc::new(1));
        std::thread::scope(|s| {
            s.spawn(move || drop(cell));
        });
    });
}
