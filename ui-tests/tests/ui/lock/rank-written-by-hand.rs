// Ranks come only from `lock_ranks!`: `Rank` is sealed. A rank written by hand could break the order
// (review 89: a `RANK` of 0 marked `DeclaredRank` nested above unranked locks yet tied with them in
// `lock_all!`, and two threads deadlocked); the error names `lock_ranks!`.
use trust_core::lock::{DeclaredRank, Rank};

struct Zero;

impl Rank for Zero {
    const RANK: u32 = 0;
}

impl DeclaredRank for Zero {}

fn main() {}
