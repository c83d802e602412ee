// Rule: the result of `apply` must own its data (`R: 'static`): a reference into the property would let the
// caller touch it outside the trustee. Return a copy or clone instead.
use trust_core::entrust;

fn main() {
    let name = entrust(String::from("trust"));
    let inside: &mut String = name.apply(|s| s);
    inside.push('!');
}
