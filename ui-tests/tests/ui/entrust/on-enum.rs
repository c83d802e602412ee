// `#[entrust]` cannot go on an enum: wrap it in a struct.
use trust_core::entrust;

#[entrust]
pub enum State {
    Idle,
    Busy(u32),
}

fn main() {}
