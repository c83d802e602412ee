// `Any` needs `'static`, and a fresh brand is not: the token cannot be boxed as `dyn Any` (to be stored or
// downcast elsewhere). Expected: rustc's code-less "lifetime may not live long enough".
use std::any::Any;

use trust_core::ghost::GhostToken;

fn main() {
    GhostToken::new(|token| {
        let any: Box<dyn Any> = Box::new(token);
        drop(any);
    });
}
