//! Every case under `tests/ui/` documents one rule; `README.md` indexes them.
//! Regenerate `.stderr` files with `TRYBUILD=overwrite cargo test -p ui-tests` and read every diff.

#[test]
fn ui() {
    // Two runs, one after the other: trybuild checks a run of compile-fail cases alone in one `cargo check
    // --keep-going` (11 s from a clean target here), but a run with pass cases too one case at a time, each
    // built after a `cargo clean` (49 s for this catalogue; the pass cases alone take 29).
    trybuild::TestCases::new().compile_fail("tests/ui/*/*.rs");
    trybuild::TestCases::new().pass("tests/ui/*/pass/*.rs");
}
