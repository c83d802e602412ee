// A method returning `impl Trait` cannot be delegated: the result must be a nameable `Send + 'static` type.
use trust_core::entrust;

#[entrust]
pub struct Log {
    lines: Vec<String>,
}

#[entrust]
impl Log {
    pub fn count(&self) -> impl Fn() -> usize {
        let n = self.lines.len();
        move || n
    }
}

fn main() {}
