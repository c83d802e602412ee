// A reader of `parallel_read_then_commit` gets `&GhostToken` for its call only (`for<'t> Fn(Shard, &'t
// GhostToken) -> U`): it cannot return a reference it read through the token, which would still be alive
// when the commit phase writes the same cell with `&mut token`. Expected: rustc's code-less "lifetime may
// not live long enough".
use trust_core::ghost::{GhostCell, GhostToken, parallel_read_then_commit};

fn main() {
    GhostToken::new(|mut token| {
        let cell = GhostCell::new(1u32);
        parallel_read_then_commit(
            &mut token,
            |_shard, token| cell.borrow(token),
            |seen: Vec<&u32>, token| {
                *cell.borrow_mut(token) += 1;
                println!("{seen:?}");
            },
        );
    });
}
