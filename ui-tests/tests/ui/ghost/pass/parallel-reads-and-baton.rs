// Compiles: `&token` shared by scoped threads for parallel reads of `Sync` cells, then the token itself
// moved to another thread to write, and moved back.
use trust_core::ghost::{GhostCell, GhostToken};

fn main() {
    GhostToken::new(|mut token| {
        let cells = [GhostCell::new(1u64), GhostCell::new(2)];
        let total: u64 = std::thread::scope(|s| {
            let token = &token;
            let handles = cells.each_ref().map(|cell| s.spawn(move || *cell.borrow(token)));
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        token = std::thread::scope(|s| {
            s.spawn(|| {
                *cells[0].borrow_mut(&mut token) = total;
                token
            })
            .join()
            .unwrap()
        });
        assert_eq!(*cells[0].borrow(&token), 3);
    });
}
