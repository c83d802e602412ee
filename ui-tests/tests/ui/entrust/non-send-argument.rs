// A delegated method's argument types must be `Send`: arguments move to the trustee's thread (E0277).
use std::rc::Rc;
use trust_core::entrust;

#[entrust]
pub struct Registry {
    count: usize,
}

#[entrust]
impl Registry {
    pub fn register(&mut self, name: Rc<str>) -> usize {
        self.count += name.len();
        self.count
    }
}

fn main() {}
