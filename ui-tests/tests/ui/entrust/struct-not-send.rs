// An `#[entrust]` struct must be `Send`: its value moves to a trustee thread (E0277).
use std::rc::Rc;
use trust_core::entrust;

#[entrust]
pub struct Cache {
    shared: Rc<String>,
}

fn main() {}
