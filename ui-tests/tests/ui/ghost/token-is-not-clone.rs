// The token is a linear capability: it cannot be cloned (nor copied), or two `&mut` could exist.
// Expected: E0599 (no method named `clone` found for struct `GhostToken`).
use trust_core::ghost::GhostToken;

fn main() {
    GhostToken::new(|token| {
        let _second = token.clone();
    });
}
