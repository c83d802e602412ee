// The commit phase of `parallel_read_then_commit` gets `&mut GhostToken` for its call only: the `&mut T`
// it writes through cannot be returned, where it would outlive the token borrow and alias a later `borrow`.
// Expected: rustc's code-less "lifetime may not live long enough".
use trust_core::ghost::{GhostCell, GhostToken, parallel_read_then_commit};

fn main() {
    GhostToken::new(|mut token| {
        let cell = GhostCell::new(1u32);
        let kept: &mut u32 =
            parallel_read_then_commit(&mut token, |_, _| (), |_, token| cell.borrow_mut(token));
        let seen = cell.borrow(&token);
        *kept += 1;
        println!("{seen}");
    });
}
