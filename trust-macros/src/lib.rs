//! Procedural macros of `trust-core`. Use them through `trust_core`, which re-exports them;
//! generated code names runtime items only through `::trust_core::__private`.
