// The paper's rule: `GhostCell<T>: Sync` needs `T: Send` as well as `T: Sync`, because a thread holding
// `&mut token` can `replace` the value inside a cell it only borrows, moving a `T` between threads.
// `MutexGuard` is `Sync` but not `Send`. Expected: E0277 (`MutexGuard<'_, i32>` cannot be sent between
// threads safely).
use std::sync::{Mutex, MutexGuard};
use trust_core::ghost::{GhostCell, GhostToken};

fn share<T: Sync>(_: &T) {}

fn main() {
    let mutex = Mutex::new(1);
    GhostToken::new(|_token| {
        let cell: GhostCell<'_, MutexGuard<'_, i32>> = GhostCell::new(mutex.lock().unwrap());
        share(&cell);
    });
}
