// A cell leaked to `'static` (`Box::leak`) is made outside every token scope, so its brand cannot be a fresh
// one: neither the first scope's token nor a later scope's (that would be a second token of one brand) can
// write it. Expected: E0521 (borrowed data escapes outside of closure), once for each scope.
use trust_core::ghost::{GhostCell, GhostToken};

fn main() {
    let cell = Box::leak(Box::new(GhostCell::new(1)));
    GhostToken::new(|mut first| {
        *cell.borrow_mut(&mut first) += 1;
    });
    GhostToken::new(|mut second| {
        *cell.borrow_mut(&mut second) += 1;
    });
}
