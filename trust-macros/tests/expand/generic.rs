// A generic struct: the stubs type and its impl carry the struct's parameters and bounds, and a generic impl
// states that `Stack<T>` is entrusted with these stubs.
use trust_core::entrust;

#[entrust]
pub struct Stack<T: Clone + Send + 'static> {
    items: Vec<T>,
}

#[entrust]
impl<T: Clone + Send + 'static> Stack<T> {
    pub fn extend(&mut self, items: &[T]) -> usize {
        self.items.extend_from_slice(items);
        self.items.len()
    }

    /// `Self` in the signature is replaced by `Stack<T>`: inside the stubs, `Self` is the stubs type.
    pub(crate) fn snapshot(&self) -> Self {
        Stack { items: self.items.clone() }
    }

    #[entrust(skip)]
    pub fn first(&self) -> Option<&T> {
        self.items.first()
    }

    pub fn new() -> Self {
        Stack { items: Vec::new() }
    }
}
