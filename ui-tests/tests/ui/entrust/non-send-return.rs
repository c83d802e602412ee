// A delegated method's return type must be `Send`: the result comes back from the trustee's thread (E0277).
use std::rc::Rc;
use trust_core::entrust;

#[entrust]
pub struct Registry {
    count: usize,
}

#[entrust]
impl Registry {
    pub fn shared_count(&self) -> Rc<usize> {
        Rc::new(self.count)
    }
}

fn main() {}
