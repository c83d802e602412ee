// The brand is invariant: neither a token nor a cell can be re-typed to a shorter brand (which would let two
// brands meet at a common lower bound). Expected: rustc's code-less "lifetime may not live long enough",
// once for the token and once for the cell.
use trust_core::ghost::{GhostCell, GhostToken};

fn shorten_token<'short, 'long: 'short>(token: GhostToken<'long>) -> GhostToken<'short> {
    token
}

fn shorten_cell<'a, 'short, 'long: 'short>(cell: &'a GhostCell<'long, u8>) -> &'a GhostCell<'short, u8> {
    cell
}

fn main() {
    GhostToken::new(|token| {
        let cell = GhostCell::new(1u8);
        let _ = cell.borrow(&token);
        let _ = shorten_cell(&cell);
        drop(shorten_token(token));
    });
}
