//! Every case under `tests/ui/` documents one rule; `README.md` indexes them.
//! Regenerate `.stderr` files with `TRYBUILD=overwrite cargo test -p ui-tests` and read every diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*/*.rs");
    t.pass("tests/ui/*/pass/*.rs");
}
