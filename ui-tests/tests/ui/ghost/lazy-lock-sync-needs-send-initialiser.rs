// `GhostLazyLock` is `Sync` only if its initialiser is `Send` (whichever thread forces it first runs it),
// as `std::sync::LazyLock`. An initialiser holding an `Rc` is not. Expected: E0277 (`Rc<u32>` cannot be
// sent between threads safely).
use std::rc::Rc;
use trust_core::ghost::{GhostLazyLock, GhostToken};

fn share<T: Sync>(_: &T) {}

fn main() {
    GhostToken::new(|_token| {
        let shared = Rc::new(5u32);
        let lazy = GhostLazyLock::new(move || *shared + 1);
        share(&lazy);
    });
}
