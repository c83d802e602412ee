// The token cannot leave `GhostToken::new`: its brand exists only inside the closure. Expected: E0521
// (borrowed data escapes outside of closure).
use trust_core::ghost::GhostToken;

fn main() {
    let mut escaped = None;
    GhostToken::new(|token| {
        escaped = Some(token);
    });
    drop(escaped);
}
