// Returning the token from `GhostToken::new` is rejected: the result type cannot name the brand.
// Expected: no error code (rustc gives this one none): "lifetime may not live long enough", the brand
// `'1` would have to outlive the result's lifetime `'2`. (Storing it outside instead is E0521, see
// token-escapes-closure.rs.)
use trust_core::ghost::GhostToken;

fn main() {
    let _token = GhostToken::new(|token| token);
}
