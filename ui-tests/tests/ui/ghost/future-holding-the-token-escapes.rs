// An `async` block that holds the token (and a `borrow_mut` across an `.await`) can run inside
// `GhostToken::new`, but cannot be returned from it to be polled later, outside the brand's scope: its type
// names the brand. Expected: rustc's code-less "lifetime may not live long enough".
use trust_core::ghost::{GhostCell, GhostToken};

fn main() {
    let future = GhostToken::new(|mut token| {
        async move {
            let cell = GhostCell::new(1);
            let value = cell.borrow_mut(&mut token);
            std::future::ready(()).await;
            *value += 1;
            *cell.borrow(&token)
        }
    });
    drop(future);
}
