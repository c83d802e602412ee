//! Items that macro-generated code names by absolute path (`::trust_core::__private::...`).
//! Not public API: no stability promise.

use std::ops::Deref;
use std::ptr;

// lock_all!
pub use crate::lock::__private::*;

// #[entrust]
pub use crate::delegation::api::entrust::{
    Arg, DelegatedArg, DelegatedReturn, DelegatedSliceElem, Entrusted, Returned, arg, ret, slice_arg, str_arg,
};
pub use crate::delegation::api::trust::Trust;
pub use crate::delegation::protocol::copied::{CopiedSlice, CopiedStr};

// The two casts `Entrusted`'s contract allows, here rather than in `api::entrust` (which keeps no `unsafe {}`,
// `../shared/DESIGN.md` 2.1): they rely on code `#[entrust]` generates, which names this module.
impl<T: Entrusted> Deref for Trust<T> {
    type Target = T::Stubs;

    /// The stubs `#[entrust]` generated for `T`: `acct.deposit(5)` on a `Trust<Account>` finds `deposit` here.
    #[inline]
    fn deref(&self) -> &T::Stubs {
        // SAFETY: by the `Entrusted` contract `T::Stubs` is `#[repr(transparent)]` over `Trust<T>`: same size,
        // alignment and validity, so the reference may be reinterpreted; it borrows `self` for its lifetime.
        unsafe { &*ptr::from_ref(self).cast::<T::Stubs>() }
    }
}

/// The handle inside a stubs value: what a generated stub delegates through.
#[inline]
pub fn trust_of<T: Entrusted>(stubs: &T::Stubs) -> &Trust<T> {
    // SAFETY: the inverse of `Deref for Trust<T>`: every `T::Stubs` is a transparent `Trust<T>` (contract).
    unsafe { &*ptr::from_ref(stubs).cast::<Trust<T>>() }
}

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
