// A method `#[entrust]` rejects gets no stubs, so its name clashes with no other method's stubs: `save_then`
// below is refused for being `async` (the one error), and `save` keeps its stubs, `save_then` among them.
use trust_core::entrust;

#[entrust]
struct Store {
    saved: u32,
}

#[entrust]
impl Store {
    fn save(&mut self) -> u32 {
        self.saved += 1;
        self.saved
    }

    async fn save_then(&mut self) {}
}

fn main() {}
