// A return type with a lifetime (an iterator over `self`) borrows from `self` and cannot be delegated.
use trust_core::entrust;

#[entrust]
pub struct Log {
    lines: Vec<String>,
}

#[entrust]
impl Log {
    pub fn lines(&self) -> std::slice::Iter<'_, String> {
        self.lines.iter()
    }
}

fn main() {}
