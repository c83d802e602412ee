// `GhostOnceCell<T>: Sync` needs `T: Send` as well as `T: Sync`, as `GhostCell` does: a thread holding
// `&mut token` can `set` a `T` it made into a cell that another thread owns and drops. `MutexGuard` is
// `Sync` but not `Send`. Expected: E0277 (`MutexGuard<'_, i32>` cannot be sent between threads safely).
use std::sync::{Mutex, MutexGuard};
use trust_core::ghost::{GhostOnceCell, GhostToken};

fn share<T: Sync>(_: &T) {}

fn main() {
    let mutex = Mutex::new(1);
    GhostToken::new(|_token| {
        let cell: GhostOnceCell<'_, MutexGuard<'_, i32>> =
            GhostOnceCell::with_value(mutex.lock().unwrap());
        share(&cell);
    });
}
