// `mem::swap` of two tokens of different brands (nested scopes) would hand each scope the other's token.
// The brands are invariant and distinct, so the two `&mut GhostToken<_>` do not have one type.
// Expected: E0521 (borrowed data escapes outside of closure).
use trust_core::ghost::GhostToken;

fn main() {
    GhostToken::new(|mut outer| {
        GhostToken::new(|mut inner| {
            std::mem::swap(&mut outer, &mut inner);
        });
    });
}
