// `'static`-branded cells are read-only to safe code because `GhostToken::new` only makes *fresh* brands:
// its token cannot be used as a `GhostToken<'static>`, so it cannot write a `static` cell (only the
// `unsafe fn with_static_token_mut` can). Expected: E0521 (borrowed data escapes outside of closure).
use trust_core::ghost::{GhostCell, GhostToken};

static LIMIT: GhostCell<'static, u32> = GhostCell::new(0);

fn main() {
    GhostToken::new(|mut token| {
        *LIMIT.borrow_mut(&mut token) = 1;
    });
}
