// Rule: the structures of one traversal share one brand. A visited set (`GhostAtomicBitset`) made for the
// brand of one token cannot serve a traversal of another brand (E0521, once for each brand): build the
// visited set inside the traversal's `GhostToken::new`.
use trust_core::ghost::{GhostAtomicBitset, GhostCell, GhostToken};

/// Marks every neighbour of `v` in `visited`; the graph and the visited set must share `'brand`.
fn visit<'brand>(
    graph: &[GhostCell<'brand, Vec<usize>>],
    token: &GhostToken<'brand>,
    visited: &GhostAtomicBitset<'brand>,
    v: usize,
) {
    for &w in graph[v].borrow(token) {
        visited.test_and_set(w);
    }
}

fn main() {
    GhostToken::new(|first| {
        let visited = GhostAtomicBitset::new(2);
        let graph = [GhostCell::new(vec![1]), GhostCell::new(vec![])];
        visit(&graph, &first, &visited, 0); // `visited` now has the first brand
        GhostToken::new(|second| {
            let graph = [GhostCell::new(vec![1]), GhostCell::new(vec![0])];
            visit(&graph, &second, &visited, 0);
        });
    });
}
