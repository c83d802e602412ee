// `GhostCell<T>: Sync` needs `T: Sync`: sharing a cell of `std::cell::Cell` with other threads would let
// them all read it through `&token` while one `Cell::set`s it. Expected: E0277 (`Cell<i32>` cannot be
// shared between threads safely).
use std::cell::Cell;
use trust_core::ghost::{GhostCell, GhostToken};

fn main() {
    GhostToken::new(|token| {
        let cell = GhostCell::new(Cell::new(1));
        let (cell, token) = (&cell, &token);
        std::thread::scope(|s| {
            s.spawn(move || cell.borrow(token).set(2));
        });
    });
}
