//! Examples live beside this package; run them with `cargo run --release --example NAME`.
