// `static_token()` is a shared `&'static GhostToken<'static>`: it reads `'static`-branded cells from
// any thread, but cannot write them (writing needs `&mut`, which safe code cannot get for `'static`).
// Expected: E0308 (mismatched types: expected `&mut GhostToken<'_>`, found `&GhostToken<'static>`).
use trust_core::ghost::{GhostCell, static_token};

static LIMIT: GhostCell<'static, u32> = GhostCell::new(0);

fn main() {
    *LIMIT.borrow_mut(static_token()) = 1;
}
