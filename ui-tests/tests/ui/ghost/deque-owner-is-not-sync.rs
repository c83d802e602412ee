// Rule: the owner handle of a `GhostChaseLevDeque` is `Send` but not `Sync` (E0277): it can move to its
// worker thread, but two threads cannot share it, so only one thread ever runs `push_bottom`/`pop_bottom`.
// Give other threads `owner.stealer()` instead.
use trust_core::ghost::{GhostChaseLevDeque, GhostToken};

fn main() {
    GhostToken::new(|_token| {
        let owner = GhostChaseLevDeque::new(8);
        std::thread::scope(|s| {
            s.spawn(|| owner.push_bottom(1));
            s.spawn(|| owner.pop_bottom());
        });
    });
}
