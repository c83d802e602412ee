//! Items that macro-generated code names by absolute path (`::trust_core::__private::...`).
//! Not public API: no stability promise.

// lock_all!
pub use crate::lock::__private::*;
