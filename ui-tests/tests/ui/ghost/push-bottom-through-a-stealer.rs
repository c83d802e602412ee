// Rule: only the owner handle of a `GhostChaseLevDeque` pushes and pops at the bottom; a `GhostStealer` has
// only `steal` (E0599). Push through the `GhostChaseLevDeque` itself, on the thread that owns it.
use trust_core::ghost::{GhostChaseLevDeque, GhostToken};

fn main() {
    GhostToken::new(|_token| {
        let owner = GhostChaseLevDeque::new(8);
        let stealer = owner.stealer();
        std::thread::scope(|s| {
            s.spawn(move || stealer.push_bottom(1));
        });
        let _ = owner.pop_bottom();
    });
}
