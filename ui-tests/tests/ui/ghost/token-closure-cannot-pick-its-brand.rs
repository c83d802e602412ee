// A second token of an existing brand cannot be made: the closure of `GhostToken::new` must accept a token
// of *every* brand (`for<'new> FnOnce(GhostToken<'new>)`), so it cannot ask for `GhostToken<'static>` (the
// brand of `static_token()` and of every `static` cell). Expected: rustc's code-less "lifetime may not
// live long enough" (the closure's brand would have to outlive `'static`).
use trust_core::ghost::{GhostCell, GhostToken};

static LIMIT: GhostCell<'static, u32> = GhostCell::new(0);

fn main() {
    GhostToken::new(|mut token: GhostToken<'static>| {
        *LIMIT.borrow_mut(&mut token) = 1;
    });
}
