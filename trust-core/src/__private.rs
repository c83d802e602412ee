//! Items that macro-generated code names by absolute path (`::trust_core::__private::...`).
//! Not public API: no stability promise.

// lock_all!
pub use crate::lock::__private::*;

// #[entrust]
pub use crate::delegation::api::entrust::{
    Arg, CopiedSlice, CopiedStr, DelegatedArg, DelegatedReturn, DelegatedSliceElem, Entrusted, Returned, arg,
    ret, slice_arg, str_arg, trust_of,
};
pub use crate::delegation::api::trust::Trust;

/// The most fiber stacks this process may have alive at once (tests size themselves by it).
pub fn fiber_stack_limit() -> usize {
    crate::delegation::stack::budget().max_stacks()
}
