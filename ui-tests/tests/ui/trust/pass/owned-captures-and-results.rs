// Passes: closures that move owned, `Send` data in and return owned data out.
use std::sync::Arc;
use trust_core::entrust;

fn main() {
    let names = entrust(Vec::<String>::new());
    let name = String::from("trust");
    let shared = Arc::new(1u64);
    names.apply(move |v| v.push(name));
    let first: String = names.apply(move |v| format!("{}{}", v[0], shared));
    assert_eq!(first, "trust1");
    let len = names.apply_with(|v, extra: Vec<String>| { v.extend(extra); v.len() }, vec!["x".into()]);
    assert_eq!(len, 2);
}
