// `#[entrust]` cannot go on a union: wrap it in a struct.
use trust_core::entrust;

#[entrust]
pub union Bits {
    int: u32,
    float: f32,
}

fn main() {}
