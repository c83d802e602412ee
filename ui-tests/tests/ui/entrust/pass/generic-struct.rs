// A generic struct: its stubs are generic with the struct's bounds, callable on `Trust<Stack<T>>`.
use trust_core::{Trust, entrust};

#[entrust]
pub struct Stack<T: Send + 'static> {
    items: Vec<T>,
}

#[entrust]
impl<T: Send + 'static> Stack<T> {
    pub fn push(&mut self, item: T) -> usize {
        self.items.push(item);
        self.items.len()
    }

    pub fn pop(&mut self) -> Option<T> {
        self.items.pop()
    }
}

fn main() {
    let stack: Trust<Stack<String>> = entrust(Stack { items: Vec::new() });
    assert_eq!(stack.push("a".to_owned()), 1);
    assert_eq!(stack.pop().as_deref(), Some("a"));
}
