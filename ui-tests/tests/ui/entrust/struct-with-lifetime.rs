// An `#[entrust]` struct cannot have lifetime parameters: an entrusted value must be `'static`.
use trust_core::entrust;

#[entrust]
pub struct View<'a> {
    text: &'a str,
}

fn main() {}
