// `lock_ranks!` takes only a whole list of ranks: its steps cannot be called alone, for a step alone
// (`@pairs A2 B1` across two lists) could order a rank above one of a higher `RANK`, against the order
// `lock_all!` sorts by, and two threads could deadlock.
mod list_a {
    trust_core::lock_ranks! {
        pub A1;
        pub A2;
    }
}
mod list_b {
    trust_core::lock_ranks! {
        pub B1;
    }
}
use list_a::A2;
use list_b::B1;

trust_core::lock_ranks!(@pairs A2 B1);

fn main() {}
