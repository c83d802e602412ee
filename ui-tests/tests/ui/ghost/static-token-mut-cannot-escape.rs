// The `&mut GhostToken<'static>` of `with_static_token_mut` lives only for the call: `f` cannot return it
// (it would be a second `&mut` token next to the next caller's, with no `Mutex` held).
// Expected: rustc's code-less "lifetime may not live long enough".
use trust_core::ghost::{GhostToken, with_static_token_mut};

fn main() {
    // SAFETY: (it does not compile)
    let _kept: &mut GhostToken<'static> = unsafe { with_static_token_mut(|token| token) };
}
