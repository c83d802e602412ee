// The one way to write `'static`-branded cells, `with_static_token_mut`, is an `unsafe fn`: it does not
// keep readers holding `&T`s from `static_token()` out, so the caller promises there are none.
// Expected: E0133 (call to unsafe function requires unsafe block).
use trust_core::ghost::{GhostCell, with_static_token_mut};

static LIMIT: GhostCell<'static, u32> = GhostCell::new(0);

fn main() {
    with_static_token_mut(|token| *LIMIT.borrow_mut(token) = 1);
}
