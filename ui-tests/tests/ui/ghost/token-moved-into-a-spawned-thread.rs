// Baton passing goes through scoped threads: a `std::thread::spawn` closure must be `'static`, and the
// token's brand is not, so the token (and with it the right to write) cannot outlive `GhostToken::new` on
// another thread. Expected: E0521 (borrowed data escapes outside of closure).
use trust_core::ghost::{GhostCell, GhostToken};

fn main() {
    GhostToken::new(|mut token| {
        let cell = GhostCell::new(1);
        *cell.borrow_mut(&mut token) += 1;
        std::thread::spawn(move || drop(token));
    });
}
