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

/// The `T` of a `&T` argument: cloned into the request, then read (as `&T`) on the trustee's thread.
#[diagnostic::on_unimplemented(
    message = "`&{Self}` cannot be an argument of a delegated method: `{Self}` must be `Clone + Send`",
    label = "a `&T` argument is cloned into the request and read on the trustee's thread",
    note = "derive or implement `Clone` for `{Self}`, take it by value (`{Self}`), or mark the method \
            `#[entrust(skip)]` and call it through `apply`"
)]
pub trait DelegatedRefArg: Clone + Send + 'static {}
impl<T: Clone + Send + 'static> DelegatedRefArg for T {}

/// Packs a `&T` argument: the value cloned into the request (checked `Clone + Send + 'static` here, at the
/// user's type); the trustee passes the method a reference to the clone.
#[inline]
pub fn ref_arg<T: DelegatedRefArg>(value: &T) -> Arg<T> {
    arg(value.clone())
}

/// The most fiber stacks this process may have alive at once (tests size themselves by it).
pub fn fiber_stack_limit() -> usize {
    crate::delegation::stack::budget().max_stacks()
}
